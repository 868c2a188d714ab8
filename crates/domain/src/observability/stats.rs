//! Model performance and costs from model calls (spans following the GenAI
//! semantic conventions), and the cost projection.
//!
//! - [`performance`]: per (model, agent) series of time buckets, each with
//!   calls, errors, exact nearest-rank latency percentiles, tokens, output
//!   tokens per second of call time, and time-to-first-token percentiles.
//! - [`daily_costs`]: usage rows priced per million tokens, summed per day.
//! - [`project`]: the next days' costs on an ordinary least-squares line
//!   through the recent daily costs, floored at zero.

use std::collections::BTreeMap;

use super::{NANOS_PER_SEC, ns_to_ms};
use crate::DomainError;

/// Seconds in a day.
pub const DAY_SECS: i64 = 86_400;

/// One model call, as performance reads it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelCall {
    /// Its start (ns).
    pub start_ns: i64,
    /// Its duration (ns).
    pub duration_ns: i64,
    /// The model.
    pub model: String,
    /// Its agent (the span's, else its trace's).
    pub agent: Option<String>,
    /// Input tokens, if reported.
    pub input_tokens: Option<i64>,
    /// Output tokens, if reported.
    pub output_tokens: Option<i64>,
    /// Time to first token (ns), if reported.
    pub ttft_ns: Option<i64>,
    /// It failed.
    pub error: bool,
}

/// A performance query: a time range cut into buckets, optional filters,
/// and the most calls one request reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PerfQuery {
    /// Calls starting at or after (ns).
    pub from_ns: i64,
    /// Calls starting before (ns).
    pub to_ns: i64,
    /// Bucket width (ns).
    pub bucket_ns: i64,
    /// Only this model.
    pub model: Option<String>,
    /// Only this agent.
    pub agent: Option<String>,
    /// Only this `gen_ai.operation.name`.
    pub operation: Option<String>,
    /// Most calls read.
    pub max_calls: u32,
}

/// Smallest bucket of performance and costs, in seconds.
pub const MIN_BUCKET_SECS: i64 = 60;
/// Largest bucket, in seconds (30 days).
pub const MAX_BUCKET_SECS: i64 = 30 * DAY_SECS;
/// Most buckets one request may ask for.
pub const MAX_BUCKETS: i64 = 10_000;

/// `a / b` rounded up, for positive `b` (and `a` not negative).
fn ceil_div(a: i64, b: i64) -> i64 {
    a / b + i64::from(a % b != 0)
}

/// The bucket width dividing `[from, to)` into about 60, rounded up to a
/// multiple of `unit_secs` and at least `min_secs` (seconds).
#[must_use]
pub fn auto_bucket_secs(from_ns: i64, to_ns: i64, unit_secs: i64, min_secs: i64) -> i64 {
    let range = (to_ns.saturating_sub(from_ns) / NANOS_PER_SEC).max(1);
    let raw = ceil_div(range, 60);
    (ceil_div(raw, unit_secs.max(1)) * unit_secs).max(min_secs)
}

/// Checks a range and bucket (seconds) against the limits, naming
/// `bucket_secs` or `from`.
///
/// # Errors
/// A [`DomainError`].
pub fn check_buckets(
    from_ns: i64,
    to_ns: i64,
    bucket_secs: i64,
    min_secs: i64,
    max_secs: i64,
) -> Result<(), DomainError> {
    if from_ns >= to_ns {
        return Err(DomainError::new("from", "must be before `to`"));
    }
    if !(min_secs..=max_secs).contains(&bucket_secs) {
        return Err(DomainError::new("bucket_secs", format!("must be between {min_secs} and {max_secs}")));
    }
    let buckets = ceil_div(to_ns - from_ns, bucket_secs.saturating_mul(NANOS_PER_SEC));
    if buckets > MAX_BUCKETS {
        return Err(DomainError::new(
            "bucket_secs",
            format!("the range holds {buckets} buckets of this width; at most {MAX_BUCKETS}: widen the bucket"),
        ));
    }
    Ok(())
}

/// The start of the bucket holding `t` (buckets start at `from`).
#[must_use]
pub fn bucket_start(t: i64, from: i64, bucket: i64) -> i64 {
    from + (t - from).div_euclid(bucket) * bucket
}

/// Latency (or time-to-first-token) percentiles, in milliseconds.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Latency {
    /// Median.
    pub p50: f64,
    /// 90th percentile.
    pub p90: f64,
    /// 95th percentile.
    pub p95: f64,
    /// 99th percentile.
    pub p99: f64,
    /// Longest.
    pub max: f64,
}

/// Nearest-rank percentiles of `values` (ns), sorted in place; `None`
/// when empty.
#[must_use]
pub fn percentiles(values: &mut [i64]) -> Option<Latency> {
    if values.is_empty() {
        return None;
    }
    values.sort_unstable();
    let n = values.len();
    let rank = |p: usize| values[(p * n).div_ceil(100).clamp(1, n) - 1];
    Some(Latency {
        p50: ns_to_ms(rank(50)),
        p90: ns_to_ms(rank(90)),
        p95: ns_to_ms(rank(95)),
        p99: ns_to_ms(rank(99)),
        max: ns_to_ms(values[n - 1]),
    })
}

/// What a set of calls did.
#[derive(Debug, Clone, PartialEq)]
pub struct PerfStats {
    /// Calls.
    pub calls: u64,
    /// Calls that failed.
    pub errors: u64,
    /// `errors / calls`.
    pub error_rate: f64,
    /// Latency percentiles.
    pub latency_ms: Option<Latency>,
    /// Input tokens.
    pub input_tokens: i64,
    /// Output tokens.
    pub output_tokens: i64,
    /// Output tokens over the summed duration of the calls reporting them.
    pub tokens_per_second: Option<f64>,
    /// Time-to-first-token percentiles of the calls reporting it.
    pub time_to_first_token_ms: Option<Latency>,
}

#[derive(Default)]
struct Acc {
    durations: Vec<i64>,
    ttfts: Vec<i64>,
    errors: u64,
    input: i64,
    output: i64,
    output_time_ns: i64,
    output_tokens_timed: i64,
}

impl Acc {
    fn add(&mut self, c: &ModelCall) {
        self.durations.push(c.duration_ns);
        self.errors += u64::from(c.error);
        self.input = self.input.saturating_add(c.input_tokens.unwrap_or(0));
        if let Some(o) = c.output_tokens {
            self.output = self.output.saturating_add(o);
            self.output_tokens_timed = self.output_tokens_timed.saturating_add(o);
            self.output_time_ns = self.output_time_ns.saturating_add(c.duration_ns);
        }
        if let Some(t) = c.ttft_ns {
            self.ttfts.push(t);
        }
    }

    #[allow(clippy::cast_precision_loss, reason = "rates of counts far below 2^53")]
    fn stats(mut self) -> PerfStats {
        let calls = self.durations.len() as u64;
        PerfStats {
            calls,
            errors: self.errors,
            error_rate: if calls == 0 { 0.0 } else { self.errors as f64 / calls as f64 },
            latency_ms: percentiles(&mut self.durations),
            input_tokens: self.input,
            output_tokens: self.output,
            tokens_per_second: (self.output_time_ns > 0)
                .then(|| self.output_tokens_timed as f64 / (self.output_time_ns as f64 / 1e9)),
            time_to_first_token_ms: percentiles(&mut self.ttfts),
        }
    }
}

/// One bucket of a series.
#[derive(Debug, Clone, PartialEq)]
pub struct PerfBucket {
    /// Its start (ns).
    pub start_ns: i64,
    /// What its calls did.
    pub stats: PerfStats,
}

/// The buckets of one (model, agent) pair.
#[derive(Debug, Clone, PartialEq)]
pub struct PerfSeries {
    /// The model.
    pub model: String,
    /// The agent, `None` for calls of no agent.
    pub agent: Option<String>,
    /// Buckets with calls, oldest first.
    pub buckets: Vec<PerfBucket>,
    /// All its calls.
    pub total: PerfStats,
}

/// `calls` per (model, agent), ordered by model then agent, in buckets of
/// `bucket_ns` from `from_ns`.
#[must_use]
pub fn performance(calls: &[ModelCall], from_ns: i64, bucket_ns: i64) -> Vec<PerfSeries> {
    type Group = (Acc, BTreeMap<i64, Acc>);
    let mut groups: BTreeMap<(&str, Option<&str>), Group> = BTreeMap::new();
    for c in calls {
        let (total, buckets) = groups.entry((c.model.as_str(), c.agent.as_deref())).or_default();
        total.add(c);
        buckets.entry(bucket_start(c.start_ns, from_ns, bucket_ns)).or_default().add(c);
    }
    groups
        .into_iter()
        .map(|((model, agent), (total, buckets))| PerfSeries {
            model: model.to_owned(),
            agent: agent.map(str::to_owned),
            buckets: buckets.into_iter().map(|(start_ns, a)| PerfBucket { start_ns, stats: a.stats() }).collect(),
            total: total.stats(),
        })
        .collect()
}

/// A cost query: whole UTC days `[from_day, to_day)` (days since the epoch).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CostQuery {
    /// First day.
    pub from_day: i64,
    /// Day after the last.
    pub to_day: i64,
    /// Only this model.
    pub model: Option<String>,
    /// Only this agent.
    pub agent: Option<String>,
}

/// Most days one cost request covers.
pub const MAX_COST_DAYS: i64 = 3_660;

impl CostQuery {
    /// Checks the range.
    ///
    /// # Errors
    /// A [`DomainError`] on `from`.
    pub fn validate(&self) -> Result<(), DomainError> {
        if self.from_day >= self.to_day {
            return Err(DomainError::new("from", "must be at least a day before `to`"));
        }
        if self.to_day - self.from_day > MAX_COST_DAYS {
            return Err(DomainError::new("from", format!("a cost range covers at most {MAX_COST_DAYS} days")));
        }
        Ok(())
    }
}

/// Usage of one model by one agent on one day.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UsageRow {
    /// Days since the epoch (UTC).
    pub day: i64,
    /// The model.
    pub model: String,
    /// The agent, `None` for calls of no agent.
    pub agent: Option<String>,
    /// Calls.
    pub calls: i64,
    /// Input tokens.
    pub input_tokens: i64,
    /// Output tokens.
    pub output_tokens: i64,
}

/// A model's prices, per million tokens.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ModelPrice {
    /// Per million input tokens.
    pub input: f64,
    /// Per million output tokens.
    pub output: f64,
}

impl ModelPrice {
    /// What `input` and `output` tokens cost.
    #[must_use]
    #[allow(clippy::cast_precision_loss, reason = "token counts far below 2^53")]
    pub fn cost(self, input: i64, output: i64) -> f64 {
        input as f64 * self.input / 1e6 + output as f64 * self.output / 1e6
    }
}

/// One day's totals.
#[derive(Debug, Clone, PartialEq)]
pub struct CostDay {
    /// Days since the epoch.
    pub day: i64,
    /// Cost of the priced calls.
    pub cost: f64,
    /// Input tokens of every call.
    pub input_tokens: i64,
    /// Output tokens of every call.
    pub output_tokens: i64,
    /// Calls.
    pub calls: i64,
}

/// Every day of `[from_day, to_day)` with the cost of `rows` priced by
/// `price` (`None`: the model is not priced, its tokens count but not its
/// cost).
#[must_use]
pub fn daily_costs(
    rows: &[UsageRow],
    price: impl Fn(&str) -> Option<ModelPrice>,
    from_day: i64,
    to_day: i64,
) -> Vec<CostDay> {
    let mut days: Vec<CostDay> =
        (from_day..to_day).map(|day| CostDay { day, cost: 0.0, input_tokens: 0, output_tokens: 0, calls: 0 }).collect();
    for r in rows {
        let Some(d) = usize::try_from(r.day - from_day).ok().and_then(|i| days.get_mut(i)) else { continue };
        d.calls += r.calls;
        d.input_tokens += r.input_tokens;
        d.output_tokens += r.output_tokens;
        if let Some(p) = price(&r.model) {
            d.cost += p.cost(r.input_tokens, r.output_tokens);
        }
    }
    days
}

/// A projection of daily costs.
#[derive(Debug, Clone, PartialEq)]
pub struct Projection {
    /// Days the line was fitted on.
    pub basis_days: usize,
    /// The line's slope per day.
    pub slope_per_day: f64,
    /// The line's value on the first basis day.
    pub intercept: f64,
    /// Each projected day's cost (never negative).
    pub daily: Vec<f64>,
    /// Their sum.
    pub total: f64,
}

/// Projects `horizon` days after `history` (daily costs, oldest first) on
/// the ordinary least-squares line through its last `basis` days; with
/// fewer than two, flat at their mean (0 without any).
#[must_use]
#[allow(clippy::cast_precision_loss, reason = "day counts are small")]
pub fn project(history: &[f64], basis: usize, horizon: usize) -> Projection {
    let ys = &history[history.len().saturating_sub(basis)..];
    let n = ys.len();
    let mean_y = if n == 0 { 0.0 } else { ys.iter().sum::<f64>() / n as f64 };
    let (slope, intercept) = if n < 2 {
        (0.0, mean_y)
    } else {
        let mean_x = (n - 1) as f64 / 2.0;
        let (mut sxy, mut sxx) = (0.0, 0.0);
        for (x, y) in ys.iter().enumerate() {
            let dx = x as f64 - mean_x;
            sxy += dx * (y - mean_y);
            sxx += dx * dx;
        }
        let slope = sxy / sxx;
        (slope, mean_y - slope * mean_x)
    };
    let daily: Vec<f64> = (0..horizon).map(|d| (intercept + slope * (n + d) as f64).max(0.0)).collect();
    Projection { basis_days: n, slope_per_day: slope, intercept, total: daily.iter().sum(), daily }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "test code: a failed unwrap is a failed test")]

    use super::*;
    use proptest::prelude::*;

    fn call(start_s: i64, ms: i64, model: &str, agent: Option<&str>, out: Option<i64>, error: bool) -> ModelCall {
        ModelCall {
            start_ns: start_s * NANOS_PER_SEC,
            duration_ns: ms * 1_000_000,
            model: model.into(),
            agent: agent.map(str::to_owned),
            input_tokens: Some(10),
            output_tokens: out,
            ttft_ns: None,
            error,
        }
    }

    #[test]
    fn performance_groups_buckets_and_ranks() {
        let calls = vec![
            call(0, 100, "b", None, Some(50), false),
            call(10, 300, "a", Some("x"), Some(30), true),
            call(70, 200, "a", Some("x"), None, false),
            call(65, 1000, "a", Some("x"), Some(100), false),
        ];
        let series = performance(&calls, 0, 60 * NANOS_PER_SEC);
        assert_eq!(series.iter().map(|s| s.model.as_str()).collect::<Vec<_>>(), ["a", "b"]);
        let a = &series[0];
        assert_eq!(
            a.buckets.iter().map(|b| (b.start_ns / NANOS_PER_SEC, b.stats.calls)).collect::<Vec<_>>(),
            [(0, 1), (60, 2)]
        );
        let t = &a.total;
        assert_eq!((t.calls, t.errors, t.input_tokens, t.output_tokens), (3, 1, 30, 130));
        assert!((t.error_rate - 1.0 / 3.0).abs() < 1e-12);
        let l = t.latency_ms.unwrap();
        assert_eq!((l.p50, l.p90, l.max), (300.0, 1000.0, 1000.0));
        // 130 output tokens over the 1.3 s of the two calls reporting them.
        assert!((t.tokens_per_second.unwrap() - 100.0).abs() < 1e-9);
        assert_eq!(t.time_to_first_token_ms, None);
    }

    #[test]
    fn nearest_rank_percentiles() {
        let mut v: Vec<i64> = (1..=100).map(|i| i * 1_000_000).collect();
        let l = percentiles(&mut v).unwrap();
        assert_eq!((l.p50, l.p90, l.p95, l.p99, l.max), (50.0, 90.0, 95.0, 99.0, 100.0));
        assert_eq!(percentiles(&mut [7_000_000]).unwrap().p50, 7.0);
        assert!(percentiles(&mut []).is_none());
    }

    #[test]
    fn costs_price_per_million_and_leave_unpriced_tokens_uncosted() {
        let rows = vec![
            UsageRow {
                day: 10,
                model: "gpt-4o".into(),
                agent: None,
                calls: 2,
                input_tokens: 1_000_000,
                output_tokens: 500_000,
            },
            UsageRow { day: 12, model: "local".into(), agent: None, calls: 1, input_tokens: 5, output_tokens: 5 },
        ];
        let price = |m: &str| (m == "gpt-4o").then_some(ModelPrice { input: 2.5, output: 10.0 });
        let days = daily_costs(&rows, price, 10, 13);
        assert_eq!(days.len(), 3);
        assert!((days[0].cost - 7.5).abs() < 1e-12);
        assert_eq!((days[1].calls, days[2].calls, days[2].cost), (0, 1, 0.0));
    }

    #[test]
    fn buckets_are_checked_and_chosen() {
        let day = DAY_SECS * NANOS_PER_SEC;
        assert_eq!(auto_bucket_secs(0, day, 60, 60), 1440);
        assert_eq!(auto_bucket_secs(0, 3_600 * NANOS_PER_SEC, 1, 1), 60);
        assert_eq!(auto_bucket_secs(0, 60 * NANOS_PER_SEC, 60, 60), 60);
        assert!(check_buckets(0, day, 1440, 60, MAX_BUCKET_SECS).is_ok());
        assert_eq!(check_buckets(0, day, 30, 60, MAX_BUCKET_SECS).unwrap_err().field, "bucket_secs");
        assert_eq!(check_buckets(0, 1000 * day, 60, 60, MAX_BUCKET_SECS).unwrap_err().field, "bucket_secs");
        assert_eq!(check_buckets(day, day, 60, 60, MAX_BUCKET_SECS).unwrap_err().field, "from");
        assert_eq!(bucket_start(125, 5, 60), 125);
        assert_eq!(bucket_start(124, 5, 60), 65);
    }

    #[test]
    fn projection_extends_the_line_and_floors_at_zero() {
        let p = project(&[1.0, 2.0, 3.0, 4.0], 14, 3);
        assert!((p.slope_per_day - 1.0).abs() < 1e-12 && (p.intercept - 1.0).abs() < 1e-12);
        assert_eq!(p.daily, [5.0, 6.0, 7.0]);
        assert_eq!((p.total, p.basis_days), (18.0, 4));
        let down = project(&[4.0, 3.0, 2.0, 1.0], 14, 3);
        assert_eq!(down.daily, [0.0, 0.0, 0.0]);
        let one = project(&[2.5], 14, 2);
        assert_eq!((one.daily, one.slope_per_day), (vec![2.5, 2.5], 0.0));
        assert_eq!(project(&[], 14, 2).total, 0.0);
        assert_eq!(project(&[9.0, 9.0, 1.0, 1.0], 2, 1).daily, [1.0], "only the basis counts");
    }

    proptest! {
        #[test]
        fn percentiles_are_ordered(mut v in proptest::collection::vec(0_i64..10_000_000_000, 1..200)) {
            let l = percentiles(&mut v).unwrap();
            prop_assert!(l.p50 <= l.p90 && l.p90 <= l.p95 && l.p95 <= l.p99 && l.p99 <= l.max);
            prop_assert_eq!(l.max, ns_to_ms(*v.iter().max().unwrap()));
        }

        #[test]
        fn buckets_partition_the_calls(
            raw in proptest::collection::vec((0_i64..10_000, 1_i64..5_000, 0_u8..3, any::<bool>()), 0..100),
            bucket in 1_i64..5_000,
        ) {
            let calls: Vec<ModelCall> = raw.iter().map(|&(s, d, m, e)| ModelCall {
                start_ns: s, duration_ns: d, model: format!("m{m}"), agent: None,
                input_tokens: Some(1), output_tokens: Some(2), ttft_ns: None, error: e,
            }).collect();
            let series = performance(&calls, 0, bucket);
            let total: u64 = series.iter().map(|s| s.total.calls).sum();
            prop_assert_eq!(total, calls.len() as u64);
            for s in &series {
                let in_buckets: u64 = s.buckets.iter().map(|b| b.stats.calls).sum();
                prop_assert_eq!(in_buckets, s.total.calls);
                let errors: u64 = s.buckets.iter().map(|b| b.stats.errors).sum();
                prop_assert_eq!(errors, s.total.errors);
                prop_assert!(s.buckets.windows(2).all(|w| w[0].start_ns < w[1].start_ns));
                prop_assert!(s.buckets.iter().all(|b| b.start_ns % bucket == 0));
            }
        }

        #[test]
        fn projections_are_never_negative_and_sum(
            history in proptest::collection::vec(0.0_f64..1000.0, 0..40),
            basis in 1_usize..20,
            horizon in 0_usize..40,
        ) {
            let p = project(&history, basis, horizon);
            prop_assert_eq!(p.daily.len(), horizon);
            prop_assert!(p.daily.iter().all(|d| *d >= 0.0));
            prop_assert!((p.total - p.daily.iter().sum::<f64>()).abs() < 1e-6);
            prop_assert_eq!(p.basis_days, history.len().min(basis));
        }

        #[test]
        fn a_constant_history_projects_itself(c in 0.0_f64..1000.0, n in 2_usize..30) {
            let p = project(&vec![c; n], 14, 30);
            prop_assert!(p.daily.iter().all(|d| (d - c).abs() < 1e-6));
        }
    }
}
