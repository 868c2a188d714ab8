//! Evaluation runs: how a model or agent did on a dataset, as named numeric
//! metrics, with optional examples (input, expected output, output,
//! per-example scores); their listing and a comparison of runs.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::Value;

use crate::seal::{fnv1a, seal, unseal};
use crate::{DomainError, EvalRunId, Timestamp, json_len};

/// Scores or metrics: name → number.
pub type Scores = BTreeMap<String, f64>;

/// Most metrics per run, and scores per example.
pub const MAX_METRICS: usize = 100;
/// Longest metric or score name, in characters.
pub const MAX_METRIC_NAME: usize = 128;
/// Longest name, model, agent or dataset, in characters.
pub const MAX_EVAL_TEXT: usize = 256;
/// Most examples per run.
pub const MAX_EVAL_EXAMPLES: usize = 1_000;
/// Most bytes of compact JSON per example (input, expected, output, scores).
pub const MAX_EVAL_EXAMPLE_BYTES: usize = 64 * 1024;
/// Most bytes of compact JSON of a run's metadata.
pub const MAX_EVAL_METADATA_BYTES: usize = 64 * 1024;
/// Most runs one comparison holds.
pub const MAX_COMPARE_RUNS: usize = 20;

/// One example of a run, as posted.
#[derive(Debug, Clone, PartialEq)]
pub struct NewEvalExample {
    /// What was asked.
    pub input: Value,
    /// What was expected, if known.
    pub expected: Option<Value>,
    /// What came back.
    pub output: Value,
    /// Per-example scores.
    pub scores: Scores,
}

/// An evaluation run, as posted.
#[derive(Debug, Clone, PartialEq)]
pub struct NewEvalRun {
    /// A name for the run.
    pub name: Option<String>,
    /// The model evaluated.
    pub model: Option<String>,
    /// The agent evaluated.
    pub agent: Option<String>,
    /// The dataset's name.
    pub dataset: String,
    /// When it ran.
    pub at: Timestamp,
    /// Its metrics.
    pub metrics: Scores,
    /// Its examples.
    pub examples: Vec<NewEvalExample>,
    /// Free-form metadata (an object).
    pub metadata: serde_json::Map<String, Value>,
}

fn text(field: &'static str, v: &str) -> Result<(), DomainError> {
    let n = v.chars().count();
    if n == 0 || n > MAX_EVAL_TEXT {
        return Err(DomainError::new(field, format!("must be 1 to {MAX_EVAL_TEXT} characters")));
    }
    if v.contains('\0') {
        return Err(DomainError::new(field, "must not contain NUL"));
    }
    Ok(())
}

/// Checks scores: at most [`MAX_METRICS`], names 1 to
/// [`MAX_METRIC_NAME`] characters, finite values.
///
/// # Errors
/// A [`DomainError`] on `field`, naming the entry.
pub fn check_scores(field: &'static str, scores: &Scores) -> Result<(), DomainError> {
    if scores.len() > MAX_METRICS {
        return Err(DomainError::new(field, format!("at most {MAX_METRICS} entries")));
    }
    for (name, v) in scores {
        let n = name.chars().count();
        if n == 0 || n > MAX_METRIC_NAME || name.contains('\0') {
            return Err(DomainError::new(field, format!("a name is 1 to {MAX_METRIC_NAME} characters without NUL")));
        }
        if !v.is_finite() {
            return Err(DomainError::new(field, format!("`{name}`: must be a finite number")));
        }
    }
    Ok(())
}

impl NewEvalExample {
    /// Its size as compact JSON.
    #[must_use]
    pub fn json_bytes(&self) -> usize {
        json_len(&self.input)
            + self.expected.as_ref().map_or(0, json_len)
            + json_len(&self.output)
            + self.scores.keys().map(|k| k.len() + 24).sum::<usize>()
    }
}

impl NewEvalRun {
    /// Checks every rule, naming the field.
    ///
    /// # Errors
    /// A [`DomainError`].
    pub fn validate(&self) -> Result<(), DomainError> {
        if self.model.is_none() && self.agent.is_none() {
            return Err(DomainError::new("model", "a run names its model, its agent, or both"));
        }
        if let Some(n) = &self.name {
            text("name", n)?;
        }
        if let Some(m) = &self.model {
            text("model", m)?;
        }
        if let Some(a) = &self.agent {
            text("agent", a)?;
        }
        text("dataset", &self.dataset)?;
        check_scores("metrics", &self.metrics)?;
        if self.examples.len() > MAX_EVAL_EXAMPLES {
            return Err(DomainError::new("examples", format!("at most {MAX_EVAL_EXAMPLES} per run")));
        }
        for e in &self.examples {
            check_scores("examples.scores", &e.scores)?;
            crate::no_nul_json("examples.input", &e.input)?;
            if let Some(expected) = &e.expected {
                crate::no_nul_json("examples.expected", expected)?;
            }
            crate::no_nul_json("examples.output", &e.output)?;
            if e.json_bytes() > MAX_EVAL_EXAMPLE_BYTES {
                return Err(DomainError::new(
                    "examples",
                    format!("an example holds at most {MAX_EVAL_EXAMPLE_BYTES} bytes of JSON"),
                ));
            }
        }
        let metadata = Value::Object(self.metadata.clone());
        if json_len(&metadata) > MAX_EVAL_METADATA_BYTES {
            return Err(DomainError::new("metadata", format!("at most {MAX_EVAL_METADATA_BYTES} bytes of JSON")));
        }
        crate::no_nul_json("metadata", &metadata)
    }
}

/// A stored evaluation run.
#[derive(Debug, Clone, PartialEq)]
pub struct EvalRun {
    /// Its id.
    pub id: EvalRunId,
    /// Its name.
    pub name: Option<String>,
    /// The model evaluated.
    pub model: Option<String>,
    /// The agent evaluated.
    pub agent: Option<String>,
    /// The dataset.
    pub dataset: String,
    /// When it ran.
    pub at: Timestamp,
    /// Its metrics.
    pub metrics: Scores,
    /// How many examples it holds.
    pub example_count: u32,
    /// Its metadata.
    pub metadata: serde_json::Map<String, Value>,
    /// When it was recorded.
    pub created_at: Timestamp,
}

/// A stored example.
#[derive(Debug, Clone, PartialEq)]
pub struct EvalExample {
    /// Its place in the run, from 0.
    pub index: u32,
    /// What was asked.
    pub input: Value,
    /// What was expected.
    pub expected: Option<Value>,
    /// What came back.
    pub output: Value,
    /// Its scores.
    pub scores: Scores,
}

/// A listing of runs, newest `at` first.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct EvalQuery {
    /// Only this model.
    pub model: Option<String>,
    /// Only this agent.
    pub agent: Option<String>,
    /// Only this dataset.
    pub dataset: Option<String>,
    /// Most runs (1–1000).
    pub limit: u32,
    /// Resume after this `at` (µs) and id.
    pub after: Option<(i64, EvalRunId)>,
}

const EVAL_CURSOR_VERSION: u8 = 0x72;

impl EvalQuery {
    fn listing(&self) -> u64 {
        let mut b = Vec::new();
        for v in [&self.model, &self.agent, &self.dataset] {
            match v {
                Some(v) => {
                    b.push(1);
                    b.extend_from_slice(&u32::try_from(v.len()).unwrap_or(u32::MAX).to_be_bytes());
                    b.extend_from_slice(v.as_bytes());
                }
                None => b.push(0),
            }
        }
        fnv1a(&b)
    }

    /// The cursor resuming after `last`.
    #[must_use]
    pub fn cursor_after(&self, last: &EvalRun) -> String {
        let mut b = vec![EVAL_CURSOR_VERSION];
        b.extend_from_slice(&self.listing().to_be_bytes());
        b.extend_from_slice(&crate::to_micros(last.at).to_be_bytes());
        b.extend_from_slice(last.id.as_uuid().as_bytes());
        seal(b)
    }

    /// Resumes after `cursor`.
    ///
    /// # Errors
    /// A [`DomainError`] on `cursor` for another listing's or a made-up cursor.
    pub fn resume(mut self, cursor: &str) -> Result<Self, DomainError> {
        let bad = || DomainError::new("cursor", "is not a cursor of this listing (filters changed?)");
        let b = unseal(cursor).ok_or_else(bad)?;
        if b.len() != 33 || b[0] != EVAL_CURSOR_VERSION {
            return Err(bad());
        }
        if u64::from_be_bytes(b[1..9].try_into().map_err(|_| bad())?) != self.listing() {
            return Err(bad());
        }
        let at = i64::from_be_bytes(b[9..17].try_into().map_err(|_| bad())?);
        let id = uuid::Uuid::from_slice(&b[17..33]).map_err(|_| bad())?;
        self.after = Some((at, EvalRunId::from_uuid(id)));
        Ok(self)
    }
}

/// One metric across compared runs.
#[derive(Debug, Clone, PartialEq)]
pub struct MetricCompare {
    /// The metric.
    pub name: String,
    /// Each run's value, in the runs' order; `None` where a run lacks it.
    pub values: Vec<Option<f64>>,
    /// The smallest value.
    pub min: f64,
    /// The largest value.
    pub max: f64,
}

/// Runs side by side.
#[derive(Debug, Clone, PartialEq)]
pub struct EvalCompare {
    /// The runs.
    pub runs: Vec<EvalRun>,
    /// Every metric any of them has, by name.
    pub metrics: Vec<MetricCompare>,
}

/// Every metric of `runs`, by name, with each run's value.
#[must_use]
pub fn compare_runs(runs: Vec<EvalRun>) -> EvalCompare {
    let names: BTreeSet<&String> = runs.iter().flat_map(|r| r.metrics.keys()).collect();
    let metrics = names
        .into_iter()
        .map(|name| {
            let values: Vec<Option<f64>> = runs.iter().map(|r| r.metrics.get(name).copied()).collect();
            let present = values.iter().flatten();
            let min = present.clone().copied().fold(f64::INFINITY, f64::min);
            let max = present.copied().fold(f64::NEG_INFINITY, f64::max);
            MetricCompare { name: name.clone(), values, min, max }
        })
        .collect();
    EvalCompare { runs, metrics }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "test code: a failed unwrap is a failed test")]

    use super::*;
    use proptest::prelude::*;
    use serde_json::json;

    fn run() -> NewEvalRun {
        NewEvalRun {
            name: None,
            model: Some("gpt-4o".into()),
            agent: None,
            dataset: "refunds".into(),
            at: crate::now(),
            metrics: Scores::from([("accuracy".into(), 0.9)]),
            examples: vec![NewEvalExample {
                input: json!("q"),
                expected: Some(json!("a")),
                output: json!("a"),
                scores: Scores::from([("accuracy".into(), 1.0)]),
            }],
            metadata: serde_json::Map::new(),
        }
    }

    #[test]
    fn every_rule_names_its_field() {
        assert!(run().validate().is_ok());
        let no_subject = NewEvalRun { model: None, ..run() };
        assert_eq!(no_subject.validate().unwrap_err().field, "model");
        assert_eq!(NewEvalRun { dataset: String::new(), ..run() }.validate().unwrap_err().field, "dataset");
        let nan = NewEvalRun { metrics: Scores::from([("a".into(), f64::NAN)]), ..run() };
        assert!(nan.validate().unwrap_err().to_string().contains("`a`: must be a finite number"));
        let many = NewEvalRun { metrics: (0..101).map(|i| (format!("m{i}"), 1.0)).collect(), ..run() };
        assert_eq!(many.validate().unwrap_err().field, "metrics");
        let long = NewEvalRun { metrics: Scores::from([("x".repeat(129), 1.0)]), ..run() };
        assert_eq!(long.validate().unwrap_err().field, "metrics");
        let mut big = run();
        big.examples[0].input = json!("x".repeat(MAX_EVAL_EXAMPLE_BYTES));
        assert_eq!(big.validate().unwrap_err().field, "examples");
        let mut bad_score = run();
        bad_score.examples[0].scores.insert("s".into(), f64::INFINITY);
        assert_eq!(bad_score.validate().unwrap_err().field, "examples.scores");
    }

    fn stored(id: u128, metrics: &[(&str, f64)]) -> EvalRun {
        EvalRun {
            id: EvalRunId::from_uuid(uuid::Uuid::from_u128(id)),
            name: None,
            model: Some("m".into()),
            agent: None,
            dataset: "d".into(),
            at: crate::from_micros(1_000),
            metrics: metrics.iter().map(|(k, v)| ((*k).to_owned(), *v)).collect(),
            example_count: 0,
            metadata: serde_json::Map::new(),
            created_at: crate::from_micros(1_000),
        }
    }

    #[test]
    fn a_comparison_lines_metrics_up_by_name() {
        let c = compare_runs(vec![stored(1, &[("acc", 0.9), ("f1", 0.5)]), stored(2, &[("acc", 0.7)])]);
        assert_eq!(c.metrics.len(), 2);
        assert_eq!(c.metrics[0].name, "acc");
        assert_eq!(c.metrics[0].values, [Some(0.9), Some(0.7)]);
        assert_eq!((c.metrics[0].min, c.metrics[0].max), (0.7, 0.9));
        assert_eq!(c.metrics[1].values, [Some(0.5), None]);
    }

    #[test]
    fn cursors_bind_their_filters() {
        let q = EvalQuery { dataset: Some("d".into()), limit: 5, ..EvalQuery::default() };
        let c = q.cursor_after(&stored(3, &[]));
        let resumed = q.clone().resume(&c).unwrap();
        assert_eq!(resumed.after.unwrap().1, EvalRunId::from_uuid(uuid::Uuid::from_u128(3)));
        let other = EvalQuery { dataset: Some("e".into()), ..q };
        assert_eq!(other.resume(&c).unwrap_err().field, "cursor");
    }

    proptest! {
        #[test]
        fn every_finite_score_set_within_limits_passes(
            scores in proptest::collection::btree_map("[a-z]{1,20}", -1e12_f64..1e12, 0..MAX_METRICS),
        ) {
            prop_assert!(check_scores("metrics", &scores).is_ok());
        }
    }
}
