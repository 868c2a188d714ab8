//! [`TokenCount`]: a message's token count, which says whether it is exact.

use serde::{Deserialize, Serialize};

/// How many tokens a text takes for a model, and how that was determined.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenCount {
    /// Number of tokens.
    pub count: u32,
    /// The model the caller asked about.
    pub model: String,
    /// The encoding used (`o200k_base`, `cl100k_base`) or the estimation
    /// method (`estimate:chars/4`).
    pub encoding: String,
    /// `true` only when a real tokenizer of that model counted it; an estimate is
    /// never presented as exact.
    pub exact: bool,
}

/// The encoding a model's texts are counted with, known before counting.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct TokenEncoding {
    /// As in [`TokenCount::encoding`]: `o200k_base`, `cl100k_base`, or an
    /// estimation method (`estimate:chars/4`).
    pub name: String,
    /// Whether its counts are exact.
    pub exact: bool,
}
