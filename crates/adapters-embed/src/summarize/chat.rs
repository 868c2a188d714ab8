//! [`ChatSummarizer`]: a [`Summarizer`] over an OpenAI-compatible
//! chat-completions endpoint (`POST {base_url}/chat/completions`).
//!
//! One request per fold: a system prompt saying what to keep, then the
//! previous summary and the new messages (each cut so the whole stays under
//! [`ChatConfig::max_input_chars`]). Each attempt is bounded by
//! [`ChatConfig::timeout`]; a timeout, a connection failure, a 429 or a 5xx
//! is retried up to [`ChatConfig::max_retries`] times, waiting
//! [`ChatConfig::backoff`] doubled per retry, or as long as a 429's or
//! 503's `Retry-After` (delta-seconds) asks when that is longer; a
//! `Retry-After` beyond [`ChatConfig::max_backoff`] is not waited for inline
//! (the failure goes back to the caller's queue). What cannot be retried or is
//! still failing is `Unavailable`, with a reason that names the model, the
//! failure and the attempts, never the key or the URL. The key is sent only
//! in the `Authorization` header and is redacted from `Debug`.

use std::time::Duration;

use async_trait::async_trait;
use memlayer_domain::{Message, Summary};
use memlayer_ports::{StoreError, Summarizer, cut_to_bytes};
use serde_json::{Value, json};

use super::sentences::shorten;

/// An API key: sent to the endpoint, shown nowhere else.
#[derive(Clone, PartialEq, Eq)]
pub struct ChatKey(String);

impl ChatKey {
    /// Wraps a key.
    #[must_use]
    pub fn new(key: impl Into<String>) -> Self {
        Self(key.into())
    }
}

impl std::fmt::Debug for ChatKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ChatKey(***)")
    }
}

/// Where and how to call the endpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChatConfig {
    /// The API's base URL, up to and including its version
    /// (`https://api.openai.com/v1`); `/chat/completions` is appended.
    pub base_url: String,
    /// The bearer key, if the endpoint needs one.
    pub api_key: Option<ChatKey>,
    /// The model to ask (`gpt-4o-mini`).
    pub model: String,
    /// Longest one attempt may take, connecting included.
    pub timeout: Duration,
    /// Retries after a timeout, a connection failure, a 429 or a 5xx.
    pub max_retries: u32,
    /// Wait before the first retry; doubled per retry.
    pub backoff: Duration,
    /// Longest wait before a retry, a server's `Retry-After` included: one
    /// asking for longer ends the attempts.
    pub max_backoff: Duration,
    /// Most characters of previous summary and messages sent in one
    /// request; longer messages are cut (head kept, `…`).
    pub max_input_chars: usize,
}

impl ChatConfig {
    /// The endpoint at `base_url` asking `model`, with the defaults: 30 s a
    /// try, 2 retries from 500 ms waiting at most 30 s, 48,000 characters of
    /// input.
    #[must_use]
    pub fn new(base_url: impl Into<String>, model: impl Into<String>) -> Self {
        Self {
            base_url: base_url.into(),
            api_key: None,
            model: model.into(),
            timeout: Duration::from_secs(30),
            max_retries: 2,
            backoff: Duration::from_millis(500),
            max_backoff: Duration::from_secs(30),
            max_input_chars: 48_000,
        }
    }
}

/// The chat-completions [`Summarizer`] (see the module doc).
#[derive(Debug, Clone)]
pub struct ChatSummarizer {
    client: reqwest::Client,
    endpoint: String,
    config: ChatConfig,
}

/// One failed attempt: why, and whether another may succeed.
#[derive(Debug)]
struct Failure {
    reason: String,
    retry: bool,
    /// The server's `Retry-After`, when it sent one.
    retry_after: Option<Duration>,
}

impl Failure {
    fn new(reason: String, retry: bool) -> Self {
        Self { reason, retry, retry_after: None }
    }
}

/// A `Retry-After` of delta-seconds (an HTTP date is ignored: the
/// configured backoff applies).
fn retry_after(headers: &reqwest::header::HeaderMap) -> Option<Duration> {
    let value = headers.get(reqwest::header::RETRY_AFTER)?.to_str().ok()?.trim();
    value.parse::<u64>().ok().map(Duration::from_secs)
}

impl ChatSummarizer {
    /// A client for `config`.
    ///
    /// # Errors
    /// `Invalid` when the base URL is not `http://` or `https://`, or the
    /// HTTP client cannot be built.
    pub fn new(config: ChatConfig) -> Result<Self, StoreError> {
        let base = config.base_url.trim_end_matches('/');
        if !(base.starts_with("http://") || base.starts_with("https://")) {
            return Err(memlayer_domain::DomainError::new(
                "summary.openai.base_url",
                "must start with http:// or https://",
            )
            .into());
        }
        let client = reqwest::Client::builder()
            .timeout(config.timeout)
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| StoreError::backend(format!("building the HTTP client: {e}")))?;
        Ok(Self { client, endpoint: format!("{base}/chat/completions"), config })
    }

    /// The request body for one fold.
    fn body(&self, previous: Option<&str>, messages: &[Message], target_tokens: u32) -> Value {
        let system = format!(
            "You maintain the running summary of a conversation between a user and an assistant. You get the \
             previous summary (it may be empty) and the messages that came after it. Answer with the updated summary \
             only, as plain text of at most about {target_tokens} tokens: keep facts, decisions, names, numbers, \
             commitments and open questions from both; drop greetings and small talk; never invent anything."
        );
        let budget = self.config.max_input_chars.max(1_000);
        let previous = shorten(previous.unwrap_or_default(), budget / 4);
        let per_message = ((budget - previous.chars().count()) / messages.len().max(1)).max(200);
        let mut user = format!(
            "Previous summary:\n{}\n\nNewer messages, oldest first:\n",
            if previous.is_empty() { "(none)" } else { previous.as_str() }
        );
        for m in messages {
            let mut text = m.content.clone();
            for call in &m.tool_calls {
                text.push_str(&format!(" [calls {}({})]", call.name, call.arguments));
            }
            let who = match (&m.tool_name, m.role) {
                (Some(name), memlayer_domain::Role::Tool) => format!("tool {name}"),
                (_, role) => role.as_str().to_owned(),
            };
            user.push_str(&format!("[{}] {who}: {}\n", m.seq, shorten(&text, per_message)));
        }
        json!({
            "model": self.config.model,
            "temperature": 0,
            "max_tokens": target_tokens.saturating_mul(2).max(64),
            "messages": [{"role": "system", "content": system}, {"role": "user", "content": user}],
        })
    }

    async fn attempt(&self, body: &Value) -> Result<String, Failure> {
        let mut request = self.client.post(&self.endpoint).json(body);
        if let Some(ChatKey(key)) = &self.config.api_key {
            request = request.bearer_auth(key);
        }
        let response = request.send().await.map_err(|e| {
            let reason = if e.is_timeout() {
                format!("no answer within {} ms", self.config.timeout.as_millis())
            } else if e.is_connect() {
                "could not connect".to_owned()
            } else {
                "the request failed".to_owned()
            };
            tracing::debug!(error = %e, endpoint = %self.endpoint, "chat completion attempt failed");
            Failure::new(reason, true)
        })?;
        let status = response.status();
        if !status.is_success() {
            let retry = status.is_server_error() || status == reqwest::StatusCode::TOO_MANY_REQUESTS;
            let mut failure = Failure::new(format!("answered HTTP {}", status.as_u16()), retry);
            failure.retry_after = retry_after(response.headers());
            return Err(failure);
        }
        let text = response.text().await.map_err(|e| {
            let reason = if e.is_timeout() {
                format!("no whole answer within {} ms", self.config.timeout.as_millis())
            } else {
                "the answer broke off".to_owned()
            };
            Failure::new(reason, true)
        })?;
        let malformed = |what: &str| Failure::new(format!("malformed reply: {what}"), false);
        let value: Value = serde_json::from_str(&text).map_err(|_| malformed("not JSON"))?;
        let content = value
            .pointer("/choices/0/message/content")
            .and_then(Value::as_str)
            .ok_or_else(|| malformed("no choices[0].message.content string"))?
            .trim();
        if content.is_empty() {
            return Err(malformed("an empty summary"));
        }
        Ok(cut_to_bytes(content, Summary::MAX_BYTES).to_owned())
    }
}

#[async_trait]
impl Summarizer for ChatSummarizer {
    fn name(&self) -> String {
        format!("openai:{}", self.config.model)
    }

    async fn summarize(
        &self,
        previous: Option<String>,
        messages: Vec<Message>,
        target_tokens: u32,
    ) -> Result<String, StoreError> {
        let body = self.body(previous.as_deref(), &messages, target_tokens);
        let mut wait = self.config.backoff;
        let mut attempts = 0;
        loop {
            attempts += 1;
            match self.attempt(&body).await {
                Ok(summary) => return Ok(summary),
                Err(Failure { reason, retry, retry_after })
                    if retry
                        && attempts <= self.config.max_retries
                        && retry_after.is_none_or(|after| after <= self.config.max_backoff) =>
                {
                    let pause = wait.max(retry_after.unwrap_or_default()).min(self.config.max_backoff);
                    tracing::warn!(model = %self.config.model, %reason, attempt = attempts, retry_in = ?pause, "summariser failed; retrying");
                    tokio::time::sleep(pause).await;
                    wait = wait.saturating_mul(2);
                }
                Err(Failure { mut reason, retry_after, .. }) => {
                    if let Some(after) = retry_after.filter(|after| *after > self.config.max_backoff) {
                        reason.push_str(&format!(
                            ", asking to retry after {} s (more than the {} s waited inline)",
                            after.as_secs(),
                            self.config.max_backoff.as_secs()
                        ));
                    }
                    let tries = if attempts == 1 { "1 attempt".to_owned() } else { format!("{attempts} attempts") };
                    return Err(StoreError::Unavailable(format!("summariser {}: {reason} ({tries})", self.name())));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_never_shows_the_key() {
        let config =
            ChatConfig { api_key: Some(ChatKey::new("sk-very-secret")), ..ChatConfig::new("http://x/v1", "m") };
        let s = ChatSummarizer::new(config.clone()).unwrap();
        for shown in [format!("{config:?}"), format!("{s:?}")] {
            assert!(!shown.contains("sk-very-secret") && shown.contains("***"), "{shown}");
        }
    }

    #[test]
    fn only_http_urls_are_accepted() {
        for bad in ["ftp://x", "api.openai.com/v1", ""] {
            assert!(ChatSummarizer::new(ChatConfig::new(bad, "m")).is_err(), "{bad}");
        }
        let s = ChatSummarizer::new(ChatConfig::new("https://api.example/v1/", "m")).unwrap();
        assert_eq!(s.endpoint, "https://api.example/v1/chat/completions");
    }
}
