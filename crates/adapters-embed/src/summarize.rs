//! The [`memlayer_ports::Summarizer`] adapters: [`ExtractiveSummarizer`],
//! local and needing no network (sentences chosen with the embedding
//! model, diverse by MMR, deterministic), and [`ChatSummarizer`], an
//! OpenAI-compatible chat-completions client with timeouts, bounded retries
//! and a key that is never shown. `sentences` splits text into sentences
//! for both.

mod chat;
mod extractive;
mod sentences;

pub use chat::{ChatConfig, ChatKey, ChatSummarizer};
pub use extractive::{EXTRACTIVE_NAME, ExtractiveConfig, ExtractiveSummarizer};
