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
use hmac::{Hmac, Mac};
use memlayer_domain::{DomainError, RunnerSpec, ToolCall};
use memlayer_ports::{StepOutcome, StepRun, StepRunner, StoreError};
use serde_json::{Value, json};
use sha2::Sha256;

use crate::Secret;

/// Longest reply body read, in bytes.
const MAX_REPLY_BYTES: usize = 4 * 1024 * 1024;

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
    // HMAC accepts a key of any length, so `new_from_slice` cannot fail.
    let mut mac = Hmac::<Sha256>::new_from_slice(&key).unwrap_or_else(|_| unreachable!("HMAC takes any key length"));
    mac.update(format!("{id}.{timestamp}.").as_bytes());
    mac.update(body);
    format!("v1,{}", STANDARD.encode(mac.finalize().into_bytes()))
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

/// POSTs the step to the URL of its `{"kind": "http", "url": …}` runner
/// (the step's own, else its agent's).
///
/// The body: `workflow_id`, `workflow`, `step_id`, `step`, `agent`,
/// `input` (resolved), `thread_id`, `attempt`, `idempotency_key`,
/// `context` (chat messages: the step thread's context as the context
/// engine assembles it, else the agent's system prompt and the newest
/// messages), `context_assembled`, and the agent's `model` and `tools`
/// (chat-completions `tools` entries) when the catalog has them. Headers:
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
        let RunnerSpec::Http { url } = &run.runner else {
            return Err(DomainError::new("runner", "the http runner needs {\"kind\": \"http\", \"url\": …}").into());
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
            "context_assembled": run.assembled,
            "model": run.model,
            "tools": run.tools,
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
        Ok(StepOutcome { output, messages, usage: None, tool_calls: Vec::new() })
    }
}

/// Runs a step as one chat completion: the agent's model (from the
/// catalog, else `workflows.openai.model`), the step's context (system
/// prompt first) and the agent's tools. The output is `{"text",
/// "tool_calls"?, "model", "usage"}` (`usage` with `prompt_tokens`,
/// `completion_tokens` and, when the model has prices, `cost`); the reply's
/// text is appended to the step's thread with its tool calls.
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
        let model = run.model.clone().unwrap_or_else(|| self.model.clone());
        let timeout = Duration::from_millis(run.step.timeout_ms);
        let mut request = self
            .client
            .post(format!("{}/chat/completions", self.base_url))
            .timeout(timeout)
            .json(&request_body(&model, &run));
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
        let calls = match tool_calls {
            Some(calls) => {
                let parsed = parse_tool_calls(&calls)?;
                output["tool_calls"] = calls;
                parsed
            }
            None => Vec::new(),
        };
        Ok(StepOutcome { output, messages: vec![text], usage: Some((prompt, completion)), tool_calls: calls })
    }
}

/// The chat-completions request: the model, the context, and the tools
/// when the agent has any.
fn request_body(model: &str, run: &StepRun) -> Value {
    let mut body = json!({"model": model, "messages": run.context});
    if !run.tools.is_empty() {
        body["tools"] = Value::Array(run.tools.clone());
    }
    body
}

/// The reply's `tool_calls` as stored calls: each needs an `id` and a
/// `function.name`; `function.arguments` is JSON text (kept as a string
/// when it is not JSON).
fn parse_tool_calls(calls: &Value) -> Result<Vec<ToolCall>, StoreError> {
    let malformed = |why: &str| DomainError::new("reply", format!("tool_calls: {why}"));
    let list = calls.as_array().ok_or_else(|| malformed("must be an array"))?;
    list.iter()
        .map(|c| {
            let id = c.get("id").and_then(Value::as_str).ok_or_else(|| malformed("a call has no id"))?;
            let name =
                c.pointer("/function/name").and_then(Value::as_str).ok_or_else(|| malformed("a call has no name"))?;
            let arguments = match c.pointer("/function/arguments") {
                Some(Value::String(text)) => serde_json::from_str(text).unwrap_or_else(|_| Value::String(text.clone())),
                Some(other) => other.clone(),
                None => Value::Object(serde_json::Map::new()),
            };
            Ok(ToolCall { id: id.to_owned(), name: name.to_owned(), arguments })
        })
        .collect::<Result<_, DomainError>>()
        .map_err(Into::into)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn webhook_signatures_follow_standard_webhooks() {
        // The example of the Standard Webhooks reference libraries.
        let secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
        let body = br#"{"test": 2432232314}"#;
        let sig = webhook_signature(secret, "msg_p5jXN8AQM9LWM0D4loKWxJek", 1_614_265_330, body);
        assert_eq!(sig, "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=");
    }
}
