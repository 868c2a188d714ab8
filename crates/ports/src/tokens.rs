//! [`TokenCounter`]: token counts of a text for a model, exact or marked as
//! an estimate.

use async_trait::async_trait;
use memlayer_domain::{TokenCount, TokenEncoding};

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

    /// The encoding [`count`](Self::count) uses for `model`, without
    /// counting anything.
    ///
    /// MUST name the same encoding and exactness that `count` reports for
    /// that model, so counts stored per encoding can be reused for every
    /// model sharing it.
    fn encoding(&self, model: &str) -> TokenEncoding;
}
