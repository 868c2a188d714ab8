//! [`TiktokenCounter`]: exact token counts for OpenAI model families, a
//! documented estimate for every other model.

mod model;

use std::collections::HashSet;
use std::fmt::Display;
use std::num::NonZeroUsize;
use std::sync::{Arc, OnceLock};

use async_trait::async_trait;
use memlayer_domain::{TokenCount, TokenEncoding};
use memlayer_ports::TokenCounter;
use tiktoken_rs::CoreBPE;
use tokio::sync::Semaphore;

use self::model::{Encoding, encoding_for};

/// A batch whose texts total more than this many bytes is counted on the
/// blocking pool; smaller ones inline, where a hop would cost more than it
/// saves.
const BLOCKING_THRESHOLD_BYTES: usize = 16 * 1024;

/// `TokenCount::encoding` of an estimate.
const ESTIMATE: &str = "estimate:chars/4";

/// Counts tokens with OpenAI's tiktoken encodings.
///
/// - `o200k_base`: `gpt-4o*`, `chatgpt-4o-latest`, `gpt-4.1*`, `gpt-4.5*`,
///   `gpt-5*`, and the o-series (`o1*`, `o3*`, `o4*`);
/// - `cl100k_base`: `gpt-4` and its `gpt-4-…` variants, `gpt-3.5-turbo*`
///   (also Azure's `gpt-35-turbo*`), `text-embedding-ada-002`,
///   `text-embedding-3-small`, `text-embedding-3-large`.
///
/// Names are matched case-insensitively, after a provider prefix
/// (`openai/gpt-4o`) and a fine-tune wrapper (`ft:gpt-4o-mini-…:org::id`) are
/// removed; a dated or variant suffix (`gpt-4o-2024-08-06`) keeps the family.
///
/// Every other model (`claude-*`, `gemini-*`, `llama*`, …) gets an estimate
/// of one token per four characters, `ceil(chars / 4)` where a character is a
/// Unicode scalar value, with `exact: false` and `encoding:
/// "estimate:chars/4"`. It is the usual rule of thumb for English prose;
/// it undercounts code and most non-Latin scripts.
///
/// Texts are counted as ordinary text: a special-token string such as
/// `<|endoftext|>` in user content is counted as the characters it is made
/// of, never as the special token.
///
/// Each encoder is built once per process, on first use, and shared. Batches
/// larger than 16 KiB, and the call that builds an encoder, run on tokio's
/// blocking pool behind a semaphore with one permit per available CPU.
/// Clones share that semaphore.
#[derive(Debug, Clone)]
pub struct TiktokenCounter {
    blocking: Arc<Semaphore>,
}

impl TiktokenCounter {
    /// A counter that runs at most one blocking count per available CPU.
    pub fn new() -> Self {
        let permits = std::thread::available_parallelism().map_or(2, NonZeroUsize::get);
        Self { blocking: Arc::new(Semaphore::new(permits)) }
    }
}

impl Default for TiktokenCounter {
    fn default() -> Self {
        Self::new()
    }
}

#[async_trait]
impl TokenCounter for TiktokenCounter {
    async fn count(&self, model: &str, texts: Vec<String>) -> Vec<TokenCount> {
        let encoding = encoding_for(model);
        let total_bytes: usize = texts.iter().map(String::len).sum();
        let builds_encoder = encoding.is_some_and(|e| !e.is_built());
        if total_bytes <= BLOCKING_THRESHOLD_BYTES && !builds_encoder {
            return count_all(model, encoding, &texts);
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return count_all(model, encoding, &texts);
        };

        // The semaphore is never closed, so `ok()` only drops an impossible error.
        let permit = Arc::clone(&self.blocking).acquire_owned().await.ok();
        let texts = Arc::new(texts);
        let task = {
            let texts = Arc::clone(&texts);
            let model = model.to_owned();
            runtime.spawn_blocking(move || {
                let _permit = permit;
                count_all(&model, encoding, &texts)
            })
        };
        match task.await {
            Ok(counts) => counts,
            Err(error) => {
                tracing::warn!(
                    model,
                    %error,
                    "token counting task failed; estimating instead"
                );
                texts.iter().map(|text| estimate(model, text)).collect()
            }
        }
    }

    fn encoding(&self, model: &str) -> TokenEncoding {
        encoding_of(model)
    }
}

impl Encoding {
    fn cell(self) -> &'static OnceLock<Option<CoreBPE>> {
        static CL100K_BASE: OnceLock<Option<CoreBPE>> = OnceLock::new();
        static O200K_BASE: OnceLock<Option<CoreBPE>> = OnceLock::new();
        match self {
            Self::Cl100kBase => &CL100K_BASE,
            Self::O200kBase => &O200K_BASE,
        }
    }

    /// Whether the encoder has been built (or has failed to build) already.
    fn is_built(self) -> bool {
        self.cell().get().is_some()
    }

    /// The shared encoder, built on first use; `None` when it cannot be built.
    fn encoder(self) -> Option<&'static CoreBPE> {
        self.cell()
            .get_or_init(|| match self {
                Self::Cl100kBase => build(self.name(), tiktoken_rs::cl100k_base),
                Self::O200kBase => build(self.name(), tiktoken_rs::o200k_base),
            })
            .as_ref()
    }
}

/// Builds an encoder, turning a failure into `None` and one warning.
fn build<E: Display>(name: &str, make: impl FnOnce() -> Result<CoreBPE, E>) -> Option<CoreBPE> {
    match make() {
        Ok(bpe) => Some(bpe),
        Err(error) => {
            tracing::warn!(
                encoding = name,
                %error,
                "cannot build tiktoken encoder; its models will be estimated"
            );
            None
        }
    }
}

/// Counts every text, in order. Blocking: builds the encoder if needed.
fn count_all(model: &str, encoding: Option<Encoding>, texts: &[String]) -> Vec<TokenCount> {
    let encoder = encoding.and_then(|e| e.encoder().map(|bpe| (e, bpe)));
    texts
        .iter()
        .map(|text| match encoder {
            Some((encoding, bpe)) => count_exact(model, encoding, bpe, text),
            None => estimate(model, text),
        })
        .collect()
}

/// The encoding `count` would use for `model`: an encoding that failed to
/// build is an estimate, as `count` reports it.
fn encoding_of(model: &str) -> TokenEncoding {
    match encoding_for(model) {
        Some(e) if !e.is_built() || e.encoder().is_some() => TokenEncoding { name: e.name().to_owned(), exact: true },
        _ => TokenEncoding { name: ESTIMATE.to_owned(), exact: false },
    }
}

fn count_exact(model: &str, encoding: Encoding, bpe: &CoreBPE, text: &str) -> TokenCount {
    // With no special token allowed, `encode` treats special-token strings as
    // ordinary text, like `encode_ordinary`, but returns the regex engine's
    // backtrack-limit failure on pathological input instead of panicking.
    match bpe.encode(text, &HashSet::new()) {
        Ok((tokens, _)) => TokenCount {
            count: saturate(tokens.len()),
            model: model.to_owned(),
            encoding: encoding.name().to_owned(),
            exact: true,
        },
        Err(error) => {
            tracing::warn!(
                model,
                encoding = encoding.name(),
                bytes = text.len(),
                %error,
                "tokenizer rejected a text; estimating it instead"
            );
            estimate(model, text)
        }
    }
}

/// `ceil(chars / 4)`, never exact.
fn estimate(model: &str, text: &str) -> TokenCount {
    TokenCount {
        count: saturate(text.chars().count().div_ceil(4)),
        model: model.to_owned(),
        encoding: ESTIMATE.to_owned(),
        exact: false,
    }
}

fn saturate(n: usize) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn count(model: &str, texts: &[&str]) -> Vec<TokenCount> {
        let texts = texts.iter().map(|&t| t.to_owned()).collect();
        TiktokenCounter::new().count(model, texts).await
    }

    async fn count_one(model: &str, text: &str) -> TokenCount {
        let mut counts = count(model, &[text]).await;
        assert_eq!(counts.len(), 1);
        counts.remove(0)
    }

    /// Reference counts are published ones, not computed with this library:
    /// OpenAI's cookbook "How to count tokens with tiktoken" ("tiktoken is
    /// great!", and its `compare_encodings` examples) and the well-known
    /// two-token "hello world".
    #[tokio::test]
    async fn counts_published_examples_exactly() {
        let cases: &[(&str, &str, u32, &str)] = &[
            ("gpt-4", "hello world", 2, "cl100k_base"),
            ("gpt-4o", "hello world", 2, "o200k_base"),
            ("gpt-3.5-turbo", "tiktoken is great!", 6, "cl100k_base"),
            ("gpt-4", "antidisestablishmentarianism", 6, "cl100k_base"),
            ("gpt-4o-mini", "antidisestablishmentarianism", 6, "o200k_base"),
            ("text-embedding-3-small", "2 + 2 = 4", 7, "cl100k_base"),
            ("o3-mini", "2 + 2 = 4", 7, "o200k_base"),
            ("gpt-4-turbo", "お誕生日おめでとう", 9, "cl100k_base"),
            ("openai/gpt-4o-2024-08-06", "お誕生日おめでとう", 8, "o200k_base"),
        ];
        for &(model, text, expected, encoding) in cases {
            let got = count_one(model, text).await;
            let want =
                TokenCount { count: expected, model: model.to_owned(), encoding: encoding.to_owned(), exact: true };
            assert_eq!(got, want, "{model} on {text:?}");
        }
    }

    #[tokio::test]
    async fn o200k_and_cl100k_differ_on_japanese() {
        let text = "お誕生日おめでとう";
        let cl100k = count_one("gpt-4", text).await;
        let o200k = count_one("gpt-4o", text).await;
        assert_ne!(cl100k.count, o200k.count);
        assert_ne!(cl100k.encoding, o200k.encoding);
    }

    #[tokio::test]
    async fn unknown_models_are_estimated_never_exact() {
        let cases: &[(&str, &str, u32)] = &[
            ("claude-3-5-sonnet-20241022", "hello world", 3), // 11 chars
            ("gemini-2.0-flash", "abcd", 1),
            ("llama-3.1-8b", "abcde", 2),
            ("mistral-large", "お誕生日おめでとう", 3), // 9 chars, 27 bytes
            ("", "hello world", 3),
        ];
        for &(model, text, expected) in cases {
            let got = count_one(model, text).await;
            let want = TokenCount {
                count: expected,
                model: model.to_owned(),
                encoding: "estimate:chars/4".to_owned(),
                exact: false,
            };
            assert_eq!(got, want, "{model} on {text:?}");
        }
    }

    #[tokio::test]
    async fn special_token_strings_are_ordinary_text() {
        // As special tokens each of these would be exactly one token.
        let specials = ["<|endoftext|>", "<|endofprompt|>", "<|fim_prefix|>"];
        for model in ["gpt-4", "gpt-4o"] {
            for text in specials {
                let got = count_one(model, text).await;
                assert!(got.exact, "{model} on {text:?}");
                assert!(got.count > 1, "{model} counted {text:?} as {got:?}");
            }
            let got = count_one(model, "a <|endoftext|> b <|endofprompt|>").await;
            assert!(got.exact && got.count > 4, "{model}: {got:?}");
        }
    }

    #[tokio::test]
    async fn empty_text_is_zero_tokens() {
        for (model, exact) in [("gpt-4", true), ("gpt-4o", true), ("claude-3-opus", false)] {
            let got = count_one(model, "").await;
            assert_eq!((got.count, got.exact), (0, exact), "{model}");
        }
        assert!(count("gpt-4o", &[]).await.is_empty());
    }

    #[tokio::test]
    async fn batch_keeps_order() {
        let texts = ["tiktoken is great!", "", "hello world", "お誕生日おめでとう"];
        let got: Vec<u32> = count("gpt-4", &texts).await.iter().map(|c| c.count).collect();
        assert_eq!(got, [6, 0, 2, 9]);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn batch_over_the_blocking_threshold_keeps_order() {
        let pairs = [("tiktoken is great!", 6), ("hello world", 2)];
        let texts: Vec<&str> = pairs.iter().cycle().take(4_000).map(|p| p.0).collect();
        let total: usize = texts.iter().map(|t| t.len()).sum();
        assert!(total > BLOCKING_THRESHOLD_BYTES);

        let got = count("gpt-4", &texts).await;
        let want: Vec<u32> = pairs.iter().cycle().take(4_000).map(|p| p.1).collect();
        assert_eq!(got.iter().map(|c| c.count).collect::<Vec<_>>(), want);
        assert!(got.iter().all(|c| c.exact && c.model == "gpt-4"));

        let estimated = count("claude-3-opus", &texts).await;
        assert_eq!(estimated.len(), texts.len());
        assert!(estimated.iter().all(|c| !c.exact));
    }

    #[tokio::test]
    async fn exact_counts_follow_the_model_table() {
        for (model, exact) in [
            ("gpt-4o", true),
            ("openai/gpt-4.1-mini", true),
            ("gpt-3.5-turbo", true),
            ("text-embedding-ada-002", true),
            ("claude-3-opus", false),
            ("gemini-1.5-pro", false),
        ] {
            assert_eq!(count_one(model, "hello").await.exact, exact, "{model}");
        }
    }

    #[tokio::test]
    async fn encoding_names_what_count_reports() {
        for model in ["gpt-4o", "gpt-4", "openai/gpt-4.1-mini", "claude-3-opus", "", "llama-3"] {
            let counted = count_one(model, "hello there").await;
            let named = TiktokenCounter::new().encoding(model);
            assert_eq!((named.name.as_str(), named.exact), (counted.encoding.as_str(), counted.exact), "{model}");
        }
    }

    #[test]
    fn an_encoder_that_fails_to_build_is_none() {
        assert!(build("broken", || Err::<CoreBPE, _>("no ranks")).is_none());
    }
}
