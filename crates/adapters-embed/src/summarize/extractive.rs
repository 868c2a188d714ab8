//! [`ExtractiveSummarizer`]: the local [`Summarizer`] that needs no network.
//!
//! It folds new messages into the previous summary by choosing sentences:
//! the previous summary's sentences and the new messages' sentences are the
//! candidates, embedded with the local model in one batch; each candidate's
//! salience is its cosine to the centroid of the new sentences, averaged
//! with its cosine to the centroid of the previous summary (so what the
//! thread was about keeps its weight, and new sentences that continue it
//! rank higher); sentences at least as salient as the average candidate are
//! then picked by maximal marginal relevance
//! (`λ·salience − (1−λ)·max similarity to those already picked`, λ = 0.7;
//! near-duplicates of a pick, cosine ≥ 0.9, never) until the token target
//! is spent, and written in their original order, one
//! per line, as `role: sentence`. The cost depends on the previous summary
//! (bounded by the target) and the new messages only, never on the thread's
//! length. Same input, same output: the embedder is deterministic for the
//! same batch, and every choice breaks ties by position.

use std::sync::Arc;

use async_trait::async_trait;
use memlayer_domain::{Message, Role};
use memlayer_ports::{Embedder, StoreError, Summarizer};

use super::sentences::{labelled, shorten, split};

/// The name recorded with its summaries.
pub const EXTRACTIVE_NAME: &str = "local:extractive";

/// How the extractive summariser chooses.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ExtractiveConfig {
    /// Weight of salience against redundancy (0 to 1).
    pub lambda: f32,
    /// Longest sentence kept, in characters (longer ones are cut, `…`).
    pub max_sentence_chars: usize,
    /// Fewest words a new sentence needs to be a candidate ("ok", "thanks"
    /// are not summaries).
    pub min_words: usize,
    /// Most sentences taken from one message (its first ones).
    pub max_sentences_per_message: usize,
    /// Most new candidates per call; beyond, an evenly spaced selection.
    pub max_new_candidates: usize,
    /// A candidate at least this similar (cosine) to a chosen sentence is a
    /// near-duplicate and never chosen.
    pub duplicate_above: f32,
}

impl Default for ExtractiveConfig {
    fn default() -> Self {
        Self {
            lambda: 0.7,
            max_sentence_chars: 320,
            min_words: 3,
            max_sentences_per_message: 8,
            max_new_candidates: 400,
            duplicate_above: 0.9,
        }
    }
}

/// The local extractive [`Summarizer`] (see the module doc).
#[derive(Debug, Clone)]
pub struct ExtractiveSummarizer {
    embedder: Arc<dyn Embedder>,
    config: ExtractiveConfig,
}

/// One sentence that may go into the summary.
#[derive(Debug, Clone, PartialEq)]
struct Candidate {
    /// `user`, `assistant`, `tool lookup_order`…; `None` for free text of a
    /// previous summary.
    label: Option<String>,
    text: String,
    /// Whether it comes from the previous summary.
    previous: bool,
}

impl Candidate {
    fn line(&self) -> String {
        match &self.label {
            Some(label) => format!("{label}: {}", self.text),
            None => self.text.clone(),
        }
    }
}

/// Tokens a summary line costs: its bytes / 4 rounded up, plus one for the
/// line break (the estimate the rest of memlayer uses for unknown models).
fn cost(line: &str) -> usize {
    line.len().div_ceil(4) + 1
}

fn label_of(m: &Message) -> String {
    match (m.role, &m.tool_name) {
        (Role::Tool, Some(name)) => format!("tool {name}"),
        (role, _) => role.as_str().to_owned(),
    }
}

fn dot(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

/// The normalised mean of `vectors` (`None` when empty or all zero).
fn centroid<'a>(vectors: impl Iterator<Item = &'a [f32]>, dim: usize) -> Option<Vec<f32>> {
    let mut sum = vec![0.0f32; dim];
    let mut any = false;
    for v in vectors {
        any = true;
        for (s, x) in sum.iter_mut().zip(v) {
            *s += x;
        }
    }
    let norm = dot(&sum, &sum).sqrt();
    (any && norm > 0.0).then(|| sum.into_iter().map(|s| s / norm).collect())
}

impl ExtractiveSummarizer {
    /// A summariser over `embedder` (the local ONNX model in the app).
    #[must_use]
    pub fn new(embedder: Arc<dyn Embedder>, config: ExtractiveConfig) -> Self {
        Self { embedder, config }
    }

    /// The candidates: the previous summary's sentences, then the new
    /// messages' (short, duplicate and surplus ones left out).
    fn candidates(&self, previous: Option<&str>, messages: &[Message]) -> Vec<Candidate> {
        let c = &self.config;
        let mut out: Vec<Candidate> = Vec::new();
        let mut seen = std::collections::HashSet::new();
        for line in previous.unwrap_or_default().lines() {
            let (label, sentences) = labelled(line);
            for s in sentences {
                let text = shorten(&s, c.max_sentence_chars);
                if seen.insert(text.to_lowercase()) {
                    out.push(Candidate { label: label.clone(), text, previous: true });
                }
            }
        }
        let mut fresh = Vec::new();
        for m in messages {
            let label = label_of(m);
            let sentences = split(&m.content);
            for s in sentences.into_iter().take(c.max_sentences_per_message) {
                if s.split_whitespace().count() < c.min_words {
                    continue;
                }
                let text = shorten(&s, c.max_sentence_chars);
                if seen.insert(text.to_lowercase()) {
                    fresh.push(Candidate { label: Some(label.clone()), text, previous: false });
                }
            }
        }
        if fresh.len() > c.max_new_candidates && c.max_new_candidates > 0 {
            let n = fresh.len();
            fresh = (0..c.max_new_candidates).map(|i| fresh[i * n / c.max_new_candidates].clone()).collect();
        }
        out.extend(fresh);
        out
    }

    /// Picks by MMR within `budget` tokens; returns the chosen indexes in
    /// the order they were picked (the most salient first).
    fn choose(&self, candidates: &[Candidate], vectors: &[Vec<f32>], budget: usize) -> Vec<usize> {
        let dim = vectors.first().map_or(0, Vec::len);
        let previous = centroid(candidates.iter().zip(vectors).filter(|(c, _)| c.previous).map(|(_, v)| &v[..]), dim);
        let fresh = centroid(candidates.iter().zip(vectors).filter(|(c, _)| !c.previous).map(|(_, v)| &v[..]), dim);
        let salience: Vec<f32> = vectors
            .iter()
            .map(|v| match (&fresh, &previous) {
                (Some(f), Some(p)) => 0.5 * dot(v, f) + 0.5 * dot(v, p),
                (Some(c), None) | (None, Some(c)) => dot(v, c),
                (None, None) => 0.0,
            })
            .collect();
        // Only sentences at least as central as the average candidate are
        // eligible: what merely fits the budget is not therefore salient.
        #[allow(clippy::cast_precision_loss, reason = "a few hundred candidates")]
        let floor = salience.iter().sum::<f32>() / salience.len().max(1) as f32;
        let costs: Vec<usize> = candidates.iter().map(|c| cost(&c.line())).collect();
        let lambda = self.config.lambda;
        let mut chosen: Vec<usize> = Vec::new();
        let mut redundancy = vec![f32::NEG_INFINITY; candidates.len()];
        let mut taken = vec![false; candidates.len()];
        let mut left = budget;
        loop {
            let mut best: Option<(usize, f32)> = None;
            for i in 0..candidates.len() {
                let duplicate = !chosen.is_empty() && redundancy[i] >= self.config.duplicate_above;
                if taken[i] || costs[i] > left || salience[i] < floor || duplicate {
                    continue;
                }
                let penalty = if chosen.is_empty() { 0.0 } else { redundancy[i] };
                let score = lambda * salience[i] - (1.0 - lambda) * penalty;
                if best.is_none_or(|(_, b)| score > b) {
                    best = Some((i, score));
                }
            }
            let Some((pick, _)) = best else { break };
            taken[pick] = true;
            left -= costs[pick];
            chosen.push(pick);
            for (i, r) in redundancy.iter_mut().enumerate() {
                *r = r.max(dot(&vectors[i], &vectors[pick]));
            }
        }
        chosen
    }
}

#[async_trait]
impl Summarizer for ExtractiveSummarizer {
    fn name(&self) -> String {
        EXTRACTIVE_NAME.to_owned()
    }

    async fn summarize(
        &self,
        previous: Option<String>,
        messages: Vec<Message>,
        target_tokens: u32,
    ) -> Result<String, StoreError> {
        let candidates = self.candidates(previous.as_deref(), &messages);
        if candidates.is_empty() {
            return Ok(previous.unwrap_or_default());
        }
        let texts = candidates.iter().map(|c| c.text.clone()).collect();
        let embedded = self.embedder.embed(texts).await.map_err(|e| match e {
            // The embedder's reason may name files of the server: logged,
            // and a reason safe to show in its place.
            StoreError::Unavailable(detail) => {
                tracing::warn!(%detail, "extractive summariser: embedder unavailable");
                StoreError::Unavailable(format!(
                    "summariser {EXTRACTIVE_NAME}: the embedding model is unavailable (the server log says why; \
                     `memlayer doctor` checks it)"
                ))
            }
            other => other,
        })?;
        let vectors: Vec<Vec<f32>> = embedded.into_iter().map(|e| e.into_vector()).collect();
        if vectors.len() != candidates.len() {
            return Err(StoreError::backend(format!(
                "embedder returned {} vectors for {} sentences",
                vectors.len(),
                candidates.len()
            )));
        }
        let budget = usize::try_from(target_tokens).unwrap_or(usize::MAX);
        let this = self.clone();
        tokio::task::spawn_blocking(move || {
            let mut chosen = this.choose(&candidates, &vectors, budget);
            chosen.sort_unstable();
            if chosen.is_empty() {
                // Not one sentence fits: the most salient one, cut to fit.
                let first = this.choose(&candidates, &vectors, usize::MAX).first().copied().unwrap_or(0);
                let line = candidates[first].line();
                let chars = budget.saturating_sub(1).saturating_mul(4).max(1);
                return shorten(&line, chars);
            }
            chosen.into_iter().map(|i| candidates[i].line()).collect::<Vec<_>>().join("\n")
        })
        .await
        .map_err(|e| StoreError::backend(format!("summary selection failed: {e}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use memlayer_domain::{Embedding, MessageId, Metadata, ThreadId};
    use memlayer_ports::EmbedderInfo;

    /// Bag of words hashed into 64 dimensions, normalised: similar words,
    /// similar vectors; deterministic.
    #[derive(Debug)]
    struct Words;

    #[async_trait]
    impl Embedder for Words {
        fn info(&self) -> EmbedderInfo {
            EmbedderInfo { model: "words".into(), dim: 64, max_tokens: 256 }
        }

        async fn embed(&self, texts: Vec<String>) -> Result<Vec<Embedding>, StoreError> {
            Ok(texts
                .iter()
                .map(|t| {
                    let mut v = vec![0.0f32; 64];
                    for w in t.to_lowercase().split(|c: char| !c.is_alphanumeric()).filter(|w| w.len() > 2) {
                        let h = w.bytes().fold(7u64, |h, b| h.wrapping_mul(31).wrapping_add(u64::from(b)));
                        v[(h % 64) as usize] += 1.0;
                    }
                    let n = v.iter().map(|x| x * x).sum::<f32>().sqrt().max(1e-6);
                    Embedding::new("words", v.into_iter().map(|x| x / n).collect(), 64).unwrap()
                })
                .collect())
        }
    }

    fn message(seq: i64, role: Role, content: &str) -> Message {
        Message {
            id: MessageId::new(),
            thread_id: ThreadId::new(),
            seq,
            role,
            content: content.into(),
            tool_call_id: None,
            tool_name: None,
            tool_calls: Vec::new(),
            metadata: Metadata::default(),
            token_count: None,
            created_at: memlayer_domain::now(),
        }
    }

    fn summarizer() -> ExtractiveSummarizer {
        ExtractiveSummarizer::new(Arc::new(Words), ExtractiveConfig::default())
    }

    fn refund_thread() -> Vec<Message> {
        vec![
            message(1, Role::User, "Hi there. My kettle order A-17 arrived broken and I want a refund for the kettle."),
            message(2, Role::Assistant, "Sorry to hear that. I can refund the broken kettle order A-17 today."),
            message(3, Role::User, "ok"),
            message(4, Role::User, "Also the weather is lovely today in Lisbon."),
            message(5, Role::Assistant, "The refund for kettle order A-17 was sent on Monday."),
        ]
    }

    #[tokio::test]
    async fn salient_sentences_win_within_the_target_in_their_order() {
        let out = summarizer().summarize(None, refund_thread(), 60).await.unwrap();
        let lines: Vec<&str> = out.lines().collect();
        assert!(!lines.is_empty());
        let total: usize = lines.iter().map(|l| cost(l)).sum();
        assert!(total <= 60, "{total} tokens: {out}");
        assert!(out.contains("refund"), "{out}");
        assert!(!out.contains("weather"), "the off-topic sentence is the least salient: {out}");
        assert!(!out.contains("user: ok"), "too short to be a candidate: {out}");
        assert!(lines.iter().all(|l| l.starts_with("user: ") || l.starts_with("assistant: ")), "{out}");
        let sentence = |l: &str| l.split_once(": ").map_or(l, |(_, s)| s).to_owned();
        let positions: Vec<usize> = lines
            .iter()
            .map(|l| refund_thread().iter().position(|m| m.content.contains(&sentence(l))).expect("from a message"))
            .collect();
        assert!(positions.windows(2).all(|w| w[0] <= w[1]), "chronological: {out}");
    }

    #[tokio::test]
    async fn the_same_input_gives_the_same_summary() {
        let s = summarizer();
        let a = s.summarize(Some("user: kettle A-17 is broken.".into()), refund_thread(), 80).await.unwrap();
        let b = s.summarize(Some("user: kettle A-17 is broken.".into()), refund_thread(), 80).await.unwrap();
        assert_eq!(a, b);
    }

    #[tokio::test]
    async fn mmr_leaves_out_a_near_duplicate() {
        let messages = vec![
            message(1, Role::User, "The kettle order A-17 arrived broken."),
            message(2, Role::User, "The kettle order A-17 arrived broken again."),
            message(3, Role::Assistant, "Refund issued for the broken kettle."),
        ];
        let out = summarizer().summarize(None, messages, 60).await.unwrap();
        assert_eq!(out.matches("arrived broken").count(), 1, "{out}");
    }

    #[tokio::test]
    async fn folding_keeps_the_previous_summary_in_play() {
        let s = summarizer();
        let first = s.summarize(None, refund_thread(), 40).await.unwrap();
        let later = vec![message(6, Role::User, "The kettle refund for A-17 arrived, thank you so much.")];
        let folded = s.summarize(Some(first.clone()), later, 60).await.unwrap();
        assert!(folded.contains("arrived, thank you"), "the new sentence: {folded}");
        let kept = first.lines().filter(|l| folded.lines().any(|f| f == *l)).count();
        assert!(kept > 0, "old lines survive where they fit: {first} → {folded}");
        let idx = |needle: &str| folded.find(needle).unwrap();
        assert!(idx(first.lines().find(|l| folded.contains(*l)).unwrap()) < idx("arrived, thank you"), "old first");
    }

    #[tokio::test]
    async fn nothing_new_keeps_the_previous_text_and_a_tiny_target_still_says_something() {
        let s = summarizer();
        assert_eq!(
            s.summarize(Some("user: a b c.".into()), vec![message(1, Role::User, "ok")], 50).await.unwrap(),
            "user: a b c."
        );
        assert_eq!(s.summarize(None, vec![], 50).await.unwrap(), "");
        let tiny = s.summarize(None, refund_thread(), 3).await.unwrap();
        assert!(!tiny.is_empty() && tiny.chars().count() <= 8, "{tiny:?}");
    }

    #[test]
    fn candidates_are_capped_and_deduplicated() {
        let s = ExtractiveSummarizer::new(
            Arc::new(Words),
            ExtractiveConfig { max_new_candidates: 5, max_sentences_per_message: 2, ..ExtractiveConfig::default() },
        );
        let many: Vec<Message> = (0..10)
            .map(|i| {
                message(i, Role::User, &format!("Sentence number {i} here. Second one {i} here. Third {i} is out."))
            })
            .collect();
        let c = s.candidates(Some("user: Sentence number 0 here."), &many);
        assert_eq!(c.iter().filter(|c| c.previous).count(), 1);
        assert_eq!(c.iter().filter(|c| !c.previous).count(), 5, "capped: {c:?}");
        assert!(!c.iter().any(|c| c.text.starts_with("Third")), "two per message");
        assert_eq!(c.iter().filter(|c| c.text == "Sentence number 0 here.").count(), 1, "deduplicated");
    }
}
