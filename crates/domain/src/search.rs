//! Search values: [`Embedding`]s of a model and dimension, the query
//! ([`SearchQuery`], scope, mode, `top_k`, neighbour window), hits, plans and
//! embedding coverage counts.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::{DomainError, Message, ResourceId, ThreadId};

/// Most hits a search may ask for.
pub const MAX_TOP_K: u32 = 100;
/// Most neighbour messages around a hit, on each side.
pub const MAX_WINDOW: u32 = 20;
/// Longest accepted query, in characters. Longer texts are rejected here;
/// the embedder itself truncates to its model's token limit.
pub const MAX_QUERY_CHARS: usize = 8_192;
/// Longest accepted embedding.
pub const MAX_DIMENSIONS: usize = 4_096;

/// A vector produced by an embedding model, tagged with that model.
///
/// Always non-empty, at most [`MAX_DIMENSIONS`] long, finite, and of the
/// dimension its model declares.
#[derive(Debug, Clone, PartialEq)]
pub struct Embedding {
    model: String,
    vector: Vec<f32>,
}

impl Embedding {
    /// Validates `vector` as an embedding of `model`, whose dimension is `dim`.
    ///
    /// # Errors
    /// [`DomainError`] on `vector` when empty, of the wrong dimension or not finite.
    pub fn new(model: impl Into<String>, vector: Vec<f32>, dim: usize) -> Result<Self, DomainError> {
        if vector.is_empty() || vector.len() > MAX_DIMENSIONS {
            return Err(DomainError::new("vector", format!("must have 1 to {MAX_DIMENSIONS} dimensions")));
        }
        if vector.len() != dim {
            return Err(DomainError::new("vector", format!("has {} dimensions, the model takes {dim}", vector.len())));
        }
        if let Some(i) = vector.iter().position(|x| !x.is_finite()) {
            return Err(DomainError::new("vector", format!("element {i} is not a finite number")));
        }
        Ok(Self { model: model.into(), vector })
    }

    /// The model that produced it.
    #[must_use]
    pub fn model(&self) -> &str {
        &self.model
    }

    /// The vector.
    #[must_use]
    pub fn vector(&self) -> &[f32] {
        &self.vector
    }

    /// Number of dimensions.
    #[must_use]
    pub fn dim(&self) -> usize {
        self.vector.len()
    }

    /// Consumes into the vector.
    #[must_use]
    pub fn into_vector(self) -> Vec<f32> {
        self.vector
    }
}

/// How a search ranks messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SearchMode {
    /// By cosine similarity of embeddings.
    Vector,
    /// By BM25 over message text.
    Lexical,
    /// Both rankings fused (the mean of their min-max normalised scores).
    #[default]
    Hybrid,
}

impl SearchMode {
    /// Lowercase name.
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Vector => "vector",
            Self::Lexical => "lexical",
            Self::Hybrid => "hybrid",
        }
    }
}

impl fmt::Display for SearchMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for SearchMode {
    type Err = DomainError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "vector" => Ok(Self::Vector),
            "lexical" => Ok(Self::Lexical),
            "hybrid" => Ok(Self::Hybrid),
            _ => Err(DomainError::new("mode", "must be `vector`, `lexical` or `hybrid`")),
        }
    }
}

/// Where a search looks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SearchScope {
    /// One thread.
    Thread(ThreadId),
    /// Every thread of one resource (user or entity).
    Resource(ResourceId),
    /// The whole tenant.
    Tenant,
}

/// A validated number of hits: 1 to [`MAX_TOP_K`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TopK(u32);

impl TopK {
    /// Validates `n`.
    ///
    /// # Errors
    /// [`DomainError`] on `top_k` when 0 or above [`MAX_TOP_K`].
    pub fn new(n: u32) -> Result<Self, DomainError> {
        if n == 0 || n > MAX_TOP_K {
            return Err(DomainError::new("top_k", format!("must be between 1 and {MAX_TOP_K}, got {n}")));
        }
        Ok(Self(n))
    }

    /// The number.
    #[must_use]
    pub const fn get(self) -> usize {
        self.0 as usize
    }
}

impl Default for TopK {
    fn default() -> Self {
        Self(10)
    }
}

/// Neighbour messages returned around each hit, in thread order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Window {
    before: u32,
    after: u32,
}

impl Window {
    /// Validates a window.
    ///
    /// # Errors
    /// [`DomainError`] on `window` when a side exceeds [`MAX_WINDOW`].
    pub fn new(before: u32, after: u32) -> Result<Self, DomainError> {
        if before > MAX_WINDOW || after > MAX_WINDOW {
            return Err(DomainError::new("window", format!("before and after must each be at most {MAX_WINDOW}")));
        }
        Ok(Self { before, after })
    }

    /// Messages before each hit.
    #[must_use]
    pub const fn before(self) -> u32 {
        self.before
    }

    /// Messages after each hit.
    #[must_use]
    pub const fn after(self) -> u32 {
        self.after
    }

    /// Whether the window is empty.
    #[must_use]
    pub const fn is_empty(self) -> bool {
        self.before == 0 && self.after == 0
    }
}

/// A validated search request.
#[derive(Debug, Clone, PartialEq)]
pub struct SearchQuery {
    text: String,
    /// Where to look.
    pub scope: SearchScope,
    /// How to rank.
    pub mode: SearchMode,
    /// How many hits; `None` for the default: within one thread, the
    /// thread's `_memory.top_k` (from its agent), else [`TopK::default`].
    pub top_k: Option<TopK>,
    /// Neighbours around each hit.
    pub window: Window,
    /// Drop hits scoring below this (cosine for vector, BM25-derived for
    /// lexical, fused score for hybrid).
    pub min_score: Option<f32>,
}

impl SearchQuery {
    /// Validates a query: non-blank text of at most [`MAX_QUERY_CHARS`]
    /// characters and a finite `min_score`. `top_k` is a [`TopK`] or
    /// `None` for the default (see [`SearchQuery::top_k`]).
    ///
    /// # Errors
    /// [`DomainError`] on `query` or `min_score`.
    pub fn new(
        text: impl Into<String>,
        scope: SearchScope,
        mode: SearchMode,
        top_k: impl Into<Option<TopK>>,
        window: Window,
        min_score: Option<f32>,
    ) -> Result<Self, DomainError> {
        let text = text.into();
        let top_k = top_k.into();
        if text.trim().is_empty() {
            return Err(DomainError::new("query", "must not be empty"));
        }
        if text.chars().count() > MAX_QUERY_CHARS {
            return Err(DomainError::new("query", format!("must be at most {MAX_QUERY_CHARS} characters")));
        }
        if min_score.is_some_and(|s| !s.is_finite()) {
            return Err(DomainError::new("min_score", "must be a finite number"));
        }
        Ok(Self { text, scope, mode, top_k, window, min_score })
    }

    /// The query text.
    #[must_use]
    pub fn text(&self) -> &str {
        &self.text
    }
}

/// One search result.
#[derive(Debug, Clone, PartialEq)]
pub struct SearchHit {
    /// The matching message, whole.
    pub message: Message,
    /// Its score under `mode` (higher is better).
    pub score: f32,
    /// The ranking that produced the score.
    pub mode: SearchMode,
    /// Up to `window.before` messages preceding it, in thread order.
    pub before: Vec<Message>,
    /// Up to `window.after` messages following it, in thread order.
    pub after: Vec<Message>,
}

/// How a search was carried out, for the response and the logs.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SearchPlan {
    /// `exact`, `hnsw`, `libsql`… or `none` for lexical-only searches.
    pub vector_index: String,
    /// The embedding model of the query and of every vector compared.
    pub model: String,
    /// Messages in scope still waiting for an embedding (not searchable by
    /// vector yet), at most [`COVERAGE_COUNT_LIMIT`] (at least that many when
    /// equal to it).
    pub pending: u64,
    /// Messages in scope embedded by another model, left out of vector
    /// ranking, at most [`COVERAGE_COUNT_LIMIT`] likewise.
    pub other_model: u64,
    /// The stages that ran, in order, each with the candidates it handed on.
    pub stages: Vec<SearchStage>,
}

impl SearchPlan {
    /// Whether `pending` or `other_model` reached [`COVERAGE_COUNT_LIMIT`]
    /// and stopped there.
    #[must_use]
    pub const fn counts_capped(&self) -> bool {
        Coverage { pending: self.pending, other_model: self.other_model }.capped()
    }
}

/// One stage of a search's ranking.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SearchStage {
    /// What ran.
    pub kind: StageKind,
    /// How many candidates it handed on (before `min_score` and `top_k`).
    pub candidates: usize,
}

/// The kinds of search stage.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum StageKind {
    /// Nearest neighbours of the query's embedding (cosine).
    Vector,
    /// BM25 (Postgres: `ts_rank`) over stemmed words.
    Lexical,
    /// The legs' candidates fused: the mean of their min-max normalised scores.
    Fusion,
}

impl StageKind {
    /// Lowercase name.
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Vector => "vector",
            Self::Lexical => "lexical",
            Self::Fusion => "fusion",
        }
    }
}

/// Where each count of a [`Coverage`] stops: a search counts the messages
/// its ranking could not see up to this many, so its cost stays bounded
/// however long the embedding backlog (a bulk import, or a worker that
/// yields to a busy server). A count at the limit means at least that many;
/// [`EmbeddingCounts`] has the exact figures.
pub const COVERAGE_COUNT_LIMIT: u64 = 1_000;

/// What a vector search must report about its scope: the two figures of
/// [`EmbeddingCounts`] that say what the ranking could not see, each at
/// most [`COVERAGE_COUNT_LIMIT`]. Cheaper to compute than the full counts,
/// since it runs on every search.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Coverage {
    /// Messages waiting for their first embedding or a retry (at most
    /// [`COVERAGE_COUNT_LIMIT`]: at least that many when equal to it).
    pub pending: u64,
    /// Messages with a vector of another model only (at most
    /// [`COVERAGE_COUNT_LIMIT`], likewise).
    pub other_model: u64,
}

impl Coverage {
    /// Whether a count reached [`COVERAGE_COUNT_LIMIT`] and stopped there.
    #[must_use]
    pub const fn capped(&self) -> bool {
        self.pending >= COVERAGE_COUNT_LIMIT || self.other_model >= COVERAGE_COUNT_LIMIT
    }
}

impl From<EmbeddingCounts> for Coverage {
    /// The counts, each cut at [`COVERAGE_COUNT_LIMIT`].
    fn from(c: EmbeddingCounts) -> Self {
        Self { pending: c.pending.min(COVERAGE_COUNT_LIMIT), other_model: c.other_model.min(COVERAGE_COUNT_LIMIT) }
    }
}

/// Embedding progress of a thread or store.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct EmbeddingCounts {
    /// Messages with a vector of the current model.
    pub embedded: u64,
    /// Messages waiting for their first embedding or a retry.
    pub pending: u64,
    /// Messages whose embedding failed at least once and is scheduled again.
    pub failing: u64,
    /// Messages with a vector of another model only.
    pub other_model: u64,
}

/// Most distinct words of a lexical query; the rest is ignored.
pub const MAX_QUERY_TERMS: usize = 64;

/// Longest stored error text of a failed embedding job, in bytes.
pub const MAX_JOB_ERROR_BYTES: usize = 1024;

/// English stop words a lexical query leaves out (the Snowball project's
/// English list, as Postgres ships it in `english.stop`): words so common
/// that matching them says little about a message. BM25 weighs them low but
/// not at zero, and Postgres's `ts_rank` not at all, so a question ("what
/// did she say about the trip") ranked long messages full of "what", "the"
/// and "about" above the one about the trip. Messages keep them: a query of
/// stop words only still finds its words.
pub const STOP_WORDS: &[&str] = &[
    "i",
    "me",
    "my",
    "myself",
    "we",
    "our",
    "ours",
    "ourselves",
    "you",
    "your",
    "yours",
    "yourself",
    "yourselves",
    "he",
    "him",
    "his",
    "himself",
    "she",
    "her",
    "hers",
    "herself",
    "it",
    "its",
    "itself",
    "they",
    "them",
    "their",
    "theirs",
    "themselves",
    "what",
    "which",
    "who",
    "whom",
    "this",
    "that",
    "these",
    "those",
    "am",
    "is",
    "are",
    "was",
    "were",
    "be",
    "been",
    "being",
    "have",
    "has",
    "had",
    "having",
    "do",
    "does",
    "did",
    "doing",
    "a",
    "an",
    "the",
    "and",
    "but",
    "if",
    "or",
    "because",
    "as",
    "until",
    "while",
    "of",
    "at",
    "by",
    "for",
    "with",
    "about",
    "against",
    "between",
    "into",
    "through",
    "during",
    "before",
    "after",
    "above",
    "below",
    "to",
    "from",
    "up",
    "down",
    "in",
    "out",
    "on",
    "off",
    "over",
    "under",
    "again",
    "further",
    "then",
    "once",
    "here",
    "there",
    "when",
    "where",
    "why",
    "how",
    "all",
    "any",
    "both",
    "each",
    "few",
    "more",
    "most",
    "other",
    "some",
    "such",
    "no",
    "nor",
    "not",
    "only",
    "own",
    "same",
    "so",
    "than",
    "too",
    "very",
    "s",
    "t",
    "can",
    "will",
    "just",
    "don",
    "should",
    "now",
];

/// The plain words of a lexical query, as every backend's full-text engine
/// gets them: the text's Unicode words (letters and digits, split at
/// everything else), lowercased, deduplicated in order of appearance, less
/// the [`STOP_WORDS`] unless nothing else is left, at most
/// [`MAX_QUERY_TERMS`]. Adapters quote each for their engine, so no
/// operator, column filter or prefix of the caller's ever reaches it.
#[must_use]
pub fn query_terms(text: &str) -> Vec<String> {
    let mut terms: Vec<String> = Vec::new();
    let mut stop: Vec<String> = Vec::new();
    for word in text.split(|c: char| !c.is_alphanumeric()).filter(|w| !w.is_empty()) {
        let word = word.to_lowercase();
        let list = if STOP_WORDS.contains(&word.as_str()) { &mut stop } else { &mut terms };
        if !list.contains(&word) && list.len() < MAX_QUERY_TERMS {
            list.push(word);
        }
    }
    if terms.is_empty() { stop } else { terms }
}

/// The error text stored with a failed embedding job: at most
/// [`MAX_JOB_ERROR_BYTES`] bytes, cut at a character boundary.
#[must_use]
pub fn job_error(mut error: String) -> String {
    if error.len() > MAX_JOB_ERROR_BYTES {
        let mut end = MAX_JOB_ERROR_BYTES;
        while !error.is_char_boundary(end) {
            end -= 1;
        }
        error.truncate(end);
    }
    error
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_terms_are_lowercased_deduplicated_words() {
        assert_eq!(query_terms("Refund, kettle! refund"), ["refund", "kettle"]);
        assert_eq!(query_terms("x:b (c) -d ^e"), ["x", "b", "c", "d", "e"]);
        assert_eq!(query_terms("café naïve 東京"), ["café", "naïve", "東京"]);
        assert!(query_terms("... --- ()").is_empty());
        let many: String = (0..200).map(|i| format!("w{i} ")).collect();
        assert_eq!(query_terms(&many).len(), MAX_QUERY_TERMS);
    }

    #[test]
    fn query_terms_leave_out_stop_words_unless_only_they_are_left() {
        assert_eq!(query_terms("What did Ada say about the Trip?"), ["ada", "say", "trip"]);
        assert_eq!(query_terms("To be, or not to be"), ["to", "be", "or", "not"]);
        assert!(STOP_WORDS.iter().all(|w| query_terms(w) == [*w]), "a stop word alone is kept");
        assert_eq!(STOP_WORDS.len(), 127);
    }

    #[test]
    fn job_errors_are_truncated_at_char_boundaries() {
        assert_eq!(job_error("abc".into()), "abc");
        assert_eq!(job_error("é".repeat(600)).len(), MAX_JOB_ERROR_BYTES);
        assert_eq!(job_error(format!("{}é", "a".repeat(MAX_JOB_ERROR_BYTES - 1))).len(), MAX_JOB_ERROR_BYTES - 1);
    }

    #[test]
    fn embeddings_are_validated() {
        assert!(Embedding::new("m", vec![0.1, 0.2], 2).is_ok());
        for (v, dim) in [(vec![], 0), (vec![0.1], 2), (vec![f32::NAN, 0.0], 2), (vec![f32::INFINITY], 1)] {
            assert_eq!(Embedding::new("m", v, dim).unwrap_err().field, "vector");
        }
    }

    #[test]
    fn query_rules() {
        let q = |text: &str, min: Option<f32>| {
            SearchQuery::new(text, SearchScope::Tenant, SearchMode::Hybrid, TopK::default(), Window::default(), min)
        };
        assert!(q("hello", None).is_ok());
        assert_eq!(q("   ", None).unwrap_err().field, "query");
        assert_eq!(q(&"x".repeat(MAX_QUERY_CHARS + 1), None).unwrap_err().field, "query");
        assert_eq!(q("x", Some(f32::NAN)).unwrap_err().field, "min_score");
        assert!(TopK::new(0).is_err() && TopK::new(MAX_TOP_K + 1).is_err() && TopK::new(MAX_TOP_K).is_ok());
        assert!(Window::new(MAX_WINDOW + 1, 0).is_err() && Window::new(2, 3).is_ok());
        assert_eq!("fuzzy".parse::<SearchMode>().unwrap_err().field, "mode");
    }
}
