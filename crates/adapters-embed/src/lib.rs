//! Local, in-process model adapters of memlayer: the CPU-bound ports that run
//! a model's own tokenizer or network on this machine.
//!
//! [`TiktokenCounter`] is the [`memlayer_ports::TokenCounter`] for OpenAI
//! model families (tiktoken `o200k_base` and `cl100k_base`), with a
//! documented `chars / 4` estimate for every other model (module `tokens`).
//!
//! [`OnnxEmbedder`] is the [`memlayer_ports::Embedder`] on a local ONNX export
//! of all-MiniLM-L6-v2 (module `onnx`), loaded from the cache that
//! `scripts/provision` fills ([`default_cache_dir`]).
//!
//! [`ExactIndex`] and [`HnswIndex`] are the in-process
//! [`memlayer_ports::VectorIndex`] adapters (module `index`): exact cosine
//! search over per-(tenant, model) arenas, and `usearch` HNSW graphs that
//! take inserts and removals while they are searched, with an on-disk
//! snapshot.
//!
//! [`ExtractiveSummarizer`] and [`ChatSummarizer`] are the
//! [`memlayer_ports::Summarizer`] adapters (module `summarize`): the local
//! default, which picks a thread's salient sentences with the embedder and
//! needs no network, and a client of an OpenAI-compatible chat-completions
//! endpoint.
//!
//! Invariants:
//! - an estimate is never presented as exact: `TokenCount::exact` is `true`
//!   only when the model family's real encoding counted the text;
//! - the ports never fail for a bad model name or odd input: unknown models,
//!   an encoder that cannot be built or a text the tokenizer rejects all fall
//!   back to the estimate, logged with `tracing`, never a panic;
//! - expensive state is built once and shared by every clone: tiktoken
//!   encoders lazily, the ONNX Runtime library, tokenizer and sessions when
//!   the embedder is built ([`OnnxEmbedder::new`]);
//! - CPU-heavy work never runs on the async runtime's worker threads: work a
//!   caller waits for (a search query's embedding, a search) runs on tokio's
//!   blocking pool; background work (batch embedding, graph builds) runs on
//!   dedicated low-priority threads (module `background`) that the request
//!   path preempts and shutdown does not wait for.
//!
//! What it must not know: SQL or any storage, or memlayer's own HTTP API and
//! wire shapes (its one HTTP use is as a client of a chat-completions
//! endpoint); it sees only domain types and port traits, and only `app`
//! names it.

mod background;
mod index;
mod lexical;
mod onnx;
mod summarize;
mod tokens;

pub use index::{ExactIndex, HnswConfig, HnswIndex, HnswModelStats, HnswStats};
pub use lexical::TantivyLexicalIndex;
pub use onnx::{MINILM_MODEL, OnnxConfig, OnnxEmbedder, default_cache_dir};
pub use summarize::{ChatConfig, ChatKey, ChatSummarizer, EXTRACTIVE_NAME, ExtractiveConfig, ExtractiveSummarizer};
pub use tokens::TiktokenCounter;
