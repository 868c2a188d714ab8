//! [`TokenCounter`]: token counts of a text for a model, exact or marked as
//! an estimate.

use async_trait::async_trait;
use memlayer_domain::TokenCount;

/// Counts tokens the way a model's tokenizer does.
#[cfg_attr(feature = "mocks", mockall::automock)]
#[async_trait]
pub trait TokenCounter: Send + Sync + std::fmt::Debug {
    /// Counts each text for `model`, in order.
    ///
    /// MUST count exactly (`exact: true`) with the model family's real
    /// encoding when it knows the model, and otherwise return an estimate
    /// marked `exact: false`. Never fails: an unknown model is estimated.
    async fn count(&self, model: &str, texts: Vec<String>) -> Vec<TokenCount>;
}
