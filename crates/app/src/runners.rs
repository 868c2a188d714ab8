//! The workflow step runners (issue 16): [`HttpRunner`] (any agent
//! framework behind a URL, Standard Webhooks signatures) and
//! [`OpenAiRunner`] (an OpenAI-compatible chat-completions endpoint).
//!
//! Both take the step's timeout as the request's (the service also bounds
//! the whole run by it); a failure is `Unavailable` (a timeout, a
//! connection failure, a non-2xx answer) or `Invalid` (a malformed reply),
//! recorded as the step's error and retried while attempts remain. Errors
//! name neither URLs' secrets nor keys.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use memlayer_domain::{DomainError, RunnerSpec};
use memlayer_ports::{StepOutcome, StepRun, StepRunner, StoreError};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::Secret;

/// Longest reply body read, in bytes.
const MAX_REPLY_BYTES: usize = 4 * 1024 * 1024;

/// HMAC-SHA256 (RFC 2104) of `msg` under `key`.
#[must_use]
pub fn hmac_sha256(key: &[u8], msg: &[u8]) -> [u8; 32] {
    let mut block = [0u8; 64];
    if key.len() > 64 {
        block[..32].copy_from_slice(&Sha256::digest(key));
    } else {
        block[..key.len()].copy_from_slice(key);
    }
    let ipad: Vec<u8> = block.iter().map(|b| b ^ 0x36).collect();
    let opad: Vec<u8> = block.iter().map(|b| b ^ 0x5c).collect();
    let inner = Sha256::new().chain_update(&ipad).chain_update(msg).finalize();
    Sha256::new().chain_update(&opad).chain_update(inner).finalize().into()
}

/// The Standard Webhooks signature header value of `body` sent with
/// `id` and `timestamp` (seconds): `v1,` and the base64 HMAC-SHA256 of
/// `{id}.{timestamp}.{body}`, under the secret's bytes (the base64 after
/// `whsec_`, or the text itself).
#[must_use]
pub fn webhook_signature(secret: &str, id: &str, timestamp: u64, body: &[u8]) -> String {
    let key = secret
        .strip_prefix("whsec_")
        .and_then(|b| STANDARD.decode(b).ok())
        .unwrap_or_else(|| secret.as_bytes().to_vec());
    let mut msg = format!("{id}.{timestamp}.").into_bytes();
    msg.extend_from_slice(body);
    format!("v1,{}", STANDARD.encode(hmac_sha256(&key, &msg)))
}

fn client() -> Result<reqwest::Client, StoreError> {
    reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(10))
        .build()
        .map_err(|e| StoreError::backend(format!("http client: {e}")))
}

fn unavailable(e: &reqwest::Error, timeout: Duration) -> StoreError {
    if e.is_timeout() {
        StoreError::Unavailable(format!("no answer within {} ms", timeout.as_millis()))
    } else if e.is_connect() {
        StoreError::Unavailable("cannot connect to the runner".into())
    } else {
        StoreError::Unavailable("the runner's answer was cut off".into())
    }
}

async fn read_json(response: reqwest::Response, timeout: Duration, what: &str) -> Result<Value, StoreError> {
    let status = response.status();
    let bytes = response.bytes().await.map_err(|e| unavailable(&e, timeout))?;
    if !status.is_success() {
        return Err(StoreError::Unavailable(format!("{what} answered HTTP {}", status.as_u16())));
    }
    if bytes.len() > MAX_REPLY_BYTES {
        return Err(DomainError::new("reply", format!("{what} replied more than {MAX_REPLY_BYTES} bytes")).into());
    }
    serde_json::from_slice(&bytes)
        .map_err(|e| DomainError::new("reply", format!("{what} replied with malformed JSON: {e}")).into())
}

/// POSTs the step to the URL of its `{"kind": "http", "url": …}` runner.
///
/// The body: `workflow_id`, `workflow`, `step_id`, `step`, `agent`,
/// `input` (resolved), `thread_id`, `attempt`, `idempotency_key` and
/// `context` (the step thread's messages as chat messages). Headers:
/// `Idempotency-Key`, and the Standard Webhooks `webhook-id` (the
/// idempotency key), `webhook-timestamp` and, with a secret,
/// `webhook-signature`. A 2xx JSON reply is the output; a JSON string is
/// also the assistant message, anything else is written as its JSON text.
#[derive(Debug, Clone)]
pub struct HttpRunner {
    client: reqwest::Client,
    secret: Option<Secret>,
}

impl HttpRunner {
    /// A runner signing with `secret` when given.
    ///
    /// # Errors
    /// When the HTTP client cannot be built.
    pub fn new(secret: Option<Secret>) -> Result<Self, StoreError> {
        Ok(Self { client: client()?, secret })
    }
}

#[async_trait::async_trait]
impl StepRunner for HttpRunner {
    async fn run(&self, run: StepRun) -> Result<StepOutcome, StoreError> {
        let Some(RunnerSpec::Http { url }) = &run.step.runner else {
            return Err(DomainError::new(
                "runner",
                "the http runner needs the step's {\"kind\": \"http\", \"url\": …}",
            )
            .into());
        };
        let body = json!({
            "workflow_id": run.workflow.id,
            "workflow": run.workflow.name,
            "step_id": run.step.id,
            "step": run.step.name.as_str(),
            "agent": run.step.agent.as_str(),
            "input": run.step.run_input(),
            "thread_id": run.thread,
            "attempt": run.step.attempts,
            "idempotency_key": run.idempotency_key,
            "context": run.context,
        });
        let body = serde_json::to_vec(&body).map_err(StoreError::backend)?;
        let timestamp = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
        let timeout = Duration::from_millis(run.step.timeout_ms);
        let mut request = self
            .client
            .post(url)
            .timeout(timeout)
            .header("content-type", "application/json")
            .header("idempotency-key", &run.idempotency_key)
            .header("webhook-id", &run.idempotency_key)
            .header("webhook-timestamp", timestamp.to_string());
        if let Some(secret) = &self.secret {
            let signature = webhook_signature(secret.expose(), &run.idempotency_key, timestamp, &body);
            request = request.header("webhook-signature", signature);
        }
        let response = request.body(body).send().await.map_err(|e| unavailable(&e, timeout))?;
        let output = read_json(response, timeout, "the step's URL").await?;
        let messages = match &output {
            Value::String(s) => vec![s.clone()],
            _ => Vec::new(),
        };
        Ok(StepOutcome { output, messages, usage: None })
    }
}

/// Runs a step as one chat completion: the agent's model (from the
/// catalog, else `workflows.openai.model`) and system prompt, then the step
/// thread's messages. The output is `{"text", "tool_calls"?, "usage"}`
/// (`usage` with `prompt_tokens`, `completion_tokens` and, when the model
/// has prices, `cost`); the reply's text is appended to the step's thread.
#[derive(Debug, Clone)]
pub struct OpenAiRunner {
    client: reqwest::Client,
    base_url: String,
    api_key: Option<Secret>,
    model: String,
}

impl OpenAiRunner {
    /// A runner calling `{base_url}/chat/completions`.
    ///
    /// # Errors
    /// When the HTTP client cannot be built.
    pub fn new(base_url: &str, api_key: Option<Secret>, model: &str) -> Result<Self, StoreError> {
        Ok(Self {
            client: client()?,
            base_url: base_url.trim_end_matches('/').to_owned(),
            api_key,
            model: model.to_owned(),
        })
    }
}

#[async_trait::async_trait]
impl StepRunner for OpenAiRunner {
    async fn run(&self, run: StepRun) -> Result<StepOutcome, StoreError> {
        let mut messages = Vec::with_capacity(run.context.len() + 1);
        if let Some(p) = &run.system_prompt {
            messages.push(json!({"role": "system", "content": p}));
        }
        messages.extend(run.context.iter().cloned());
        let model = run.model.clone().unwrap_or_else(|| self.model.clone());
        let timeout = Duration::from_millis(run.step.timeout_ms);
        let mut request = self
            .client
            .post(format!("{}/chat/completions", self.base_url))
            .timeout(timeout)
            .json(&json!({"model": model, "messages": messages}));
        if let Some(key) = &self.api_key {
            request = request.bearer_auth(key.expose());
        }
        let response = request.send().await.map_err(|e| unavailable(&e, timeout))?;
        let reply = read_json(response, timeout, "the chat-completions endpoint").await?;
        let malformed = || DomainError::new("reply", "the chat-completions reply has no choices[0].message");
        let message = reply.pointer("/choices/0/message").ok_or_else(malformed)?;
        let text = message.get("content").and_then(Value::as_str).unwrap_or_default().to_owned();
        let tool_calls = message.get("tool_calls").filter(|t| !t.is_null()).cloned();
        if text.is_empty() && tool_calls.is_none() {
            return Err(malformed().into());
        }
        let prompt = reply.pointer("/usage/prompt_tokens").and_then(Value::as_u64).unwrap_or(0);
        let completion = reply.pointer("/usage/completion_tokens").and_then(Value::as_u64).unwrap_or(0);
        let mut usage = json!({"prompt_tokens": prompt, "completion_tokens": completion});
        if let Some((input, output)) = run.prices {
            #[allow(clippy::cast_precision_loss, reason = "token counts far below 2^52")]
            let cost = (prompt as f64).mul_add(input, completion as f64 * output) / 1_000_000.0;
            usage["cost"] = json!(cost);
        }
        let mut output = json!({"text": text, "model": model, "usage": usage});
        let mut thread_text = text.clone();
        if let Some(calls) = tool_calls {
            if thread_text.is_empty() {
                thread_text = format!("tool calls: {calls}");
            }
            output["tool_calls"] = calls;
        }
        Ok(StepOutcome { output, messages: vec![thread_text], usage: Some((prompt, completion)) })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hmac_matches_rfc_4231() {
        // Test case 2 of RFC 4231.
        let mac = hmac_sha256(b"Jefe", b"what do ya want for nothing?");
        let hex: String = mac.iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(hex, "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843");
        // Test case 6: a key longer than the block is hashed first.
        let mac = hmac_sha256(&[0xaa; 131], b"Test Using Larger Than Block-Size Key - Hash Key First");
        let hex: String = mac.iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(hex, "60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54");
    }

    #[test]
    fn webhook_signatures_follow_standard_webhooks() {
        // The example of the Standard Webhooks reference libraries.
        let secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
        let body = br#"{"test": 2432232314}"#;
        let sig = webhook_signature(secret, "msg_p5jXN8AQM9LWM0D4loKWxJek", 1_614_265_330, body);
        assert_eq!(sig, "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=");
    }
}
