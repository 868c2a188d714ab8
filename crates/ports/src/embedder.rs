//! [`Embedder`]: texts to unit vectors of one model, in a batch lane and an
//! interactive lane.

use async_trait::async_trait;
use memlayer_domain::Embedding;

use crate::StoreError;

/// What an embedder produces.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EmbedderInfo {
    /// Model name recorded with every vector (`sentence-transformers/all-MiniLM-L6-v2`).
    pub model: String,
    /// Dimensions of every vector.
    pub dim: usize,
    /// Longer texts are truncated to this many tokens.
    pub max_tokens: usize,
}

/// Turns texts into embeddings.
#[cfg_attr(feature = "mocks", mockall::automock)]
#[async_trait]
pub trait Embedder: Send + Sync + std::fmt::Debug {
    /// The model, dimension and token limit.
    fn info(&self) -> EmbedderInfo;

    /// Embeds `texts`, in order.
    ///
    /// MUST return one [`Embedding`] per text, of `info().model` with
    /// `info().dim` dimensions and unit L2 norm; MUST truncate a text longer
    /// than `info().max_tokens` rather than reject it; MUST return
    /// `Unavailable` with a message saying how to fix it when the model or
    /// runtime is missing or broken. CPU work MUST NOT run on the async
    /// workers.
    async fn embed(&self, texts: Vec<String>) -> Result<Vec<Embedding>, StoreError>;

    /// Embeds `texts` for a caller that is waiting (a search query), with
    /// the same guarantees as [`Embedder::embed`]. An implementation SHOULD
    /// serve it ahead of [`Embedder::embed`]'s batch work (its own lane,
    /// never queued behind a background batch) and MAY batch concurrent
    /// calls together. The default runs [`Embedder::embed`].
    async fn embed_interactive(&self, texts: Vec<String>) -> Result<Vec<Embedding>, StoreError> {
        self.embed(texts).await
    }
}
