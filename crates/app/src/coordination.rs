//! What several memlayer servers share through Redis (`redis.url`): rate-limit
//! budgets (one atomic GCRA script, so N servers enforce one limit) and
//! catalog invalidations (pub/sub, so a change through one server is seen
//! by the others at once instead of after `cache.ttl_secs`).
//!
//! Redis is an accelerator, never a dependency: when it cannot be reached
//! the [`Coordinator`] says so ([`Coordinator::status`], for `/ready` and
//! `doctor`), the limiter falls back to its in-process budgets, the catalog
//! to its TTL, and a call to Redis is retried only after a pause, so a dead
//! Redis costs requests nothing.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use futures_util::StreamExt as _;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use serde::{Deserialize, Serialize};

use crate::Secret;

/// Shared state through Redis (`redis.*`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RedisConfig {
    /// `redis://host:port/db` (or `rediss://` with TLS); unset: every
    /// server keeps its own budgets and relies on the cache TTL.
    pub url: Option<Secret>,
    /// Longest wait for one Redis call, in milliseconds; a slower Redis is
    /// treated as down.
    pub timeout_ms: u64,
    /// After a failed call, how long to use the in-process fallback before
    /// trying Redis again, in milliseconds.
    pub retry_after_ms: u64,
    /// Prefix of memlayer's keys and channel, so several deployments can
    /// share one Redis.
    pub prefix: String,
}

impl Default for RedisConfig {
    fn default() -> Self {
        Self { url: None, timeout_ms: 250, retry_after_ms: 2_000, prefix: "memlayer".into() }
    }
}

impl RedisConfig {
    /// Checks the settings.
    ///
    /// # Errors
    /// The key and what is wrong.
    pub fn validate(&self) -> Result<(), (&'static str, String)> {
        if let Some(url) = &self.url
            && let Err(e) = redis::Client::open(url.expose())
        {
            return Err(("redis.url", format!("not a Redis URL ({:?})", e.kind())));
        }
        if !(1..=60_000).contains(&self.timeout_ms) {
            return Err(("redis.timeout_ms", "must be between 1 and 60000".into()));
        }
        if self.prefix.is_empty() || self.prefix.len() > 64 || self.prefix.contains(char::is_whitespace) {
            return Err(("redis.prefix", "must be 1 to 64 characters without spaces".into()));
        }
        Ok(())
    }
}

/// A GCRA decision taken in Redis.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SharedDecision {
    /// Allowed; this much burst is left.
    Allowed { remaining: u32 },
    /// Refused; allowed again after this long.
    Refused { retry_after: Duration },
    /// The cost is more than the whole burst.
    TooLarge,
}

/// GCRA over a key holding the theoretical arrival time in microseconds of
/// Redis's clock, so every server decides by the same clock.
/// KEYS[1]: the budget; ARGV: emission interval (µs per unit), burst, cost.
/// Returns {allowed (1/0/-1 too large), remaining, retry after µs}.
const GCRA: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local interval = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local cost = tonumber(ARGV[3])
if cost > burst then return {-1, 0, 0} end
local tau = interval * burst
local tat = tonumber(redis.call('GET', KEYS[1]) or now)
if tat < now then tat = now end
local new_tat = tat + interval * cost
local allow_at = new_tat - tau
if allow_at > now then return {0, 0, allow_at - now} end
redis.call('SET', KEYS[1], string.format('%.0f', new_tat), 'PX', math.ceil(tau / 1000) + 1000)
return {1, math.floor((now - allow_at) / interval), 0}
";

/// The link to Redis shared by the limiter and the catalog.
#[derive(Clone)]
pub struct Coordinator {
    inner: Arc<Inner>,
}

struct Inner {
    client: redis::Client,
    manager: ConnectionManager,
    prefix: String,
    timeout: Duration,
    pause: Duration,
    script: redis::Script,
    started: Instant,
    /// Milliseconds since `started` before which Redis is not tried again.
    down_until_ms: AtomicU64,
    /// Whether the last call failed (for the log's transitions and `status`).
    down: AtomicBool,
    /// Why the last call failed.
    problem: std::sync::Mutex<Option<String>>,
}

impl std::fmt::Debug for Coordinator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Coordinator").field("prefix", &self.inner.prefix).field("status", &self.status()).finish()
    }
}

impl Coordinator {
    /// A coordinator for `config.url`, connecting lazily (a Redis down at
    /// start is not an error: the fallbacks serve until it is back).
    ///
    /// # Errors
    /// A message when the URL is not a Redis URL.
    pub fn new(config: &RedisConfig) -> Result<Option<Self>, String> {
        let Some(url) = &config.url else { return Ok(None) };
        let client = redis::Client::open(url.expose()).map_err(|e| format!("redis.url: {:?}", e.kind()))?;
        let timeout = Duration::from_millis(config.timeout_ms);
        let manager_config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(timeout))
            .set_response_timeout(Some(timeout))
            .set_number_of_retries(1);
        let manager = ConnectionManager::new_lazy_with_config(client.clone(), manager_config)
            .map_err(|e| format!("redis.url: {:?}", e.kind()))?;
        Ok(Some(Self {
            inner: Arc::new(Inner {
                client,
                manager,
                prefix: config.prefix.clone(),
                timeout,
                pause: Duration::from_millis(config.retry_after_ms),
                script: redis::Script::new(GCRA),
                started: Instant::now(),
                down_until_ms: AtomicU64::new(0),
                down: AtomicBool::new(false),
                problem: std::sync::Mutex::new(None),
            }),
        }))
    }

    /// `Ok(())` when the last call to Redis succeeded (or none was made
    /// yet), else why it failed: for `/ready` and `doctor`.
    ///
    /// # Errors
    /// The last failure.
    pub fn status(&self) -> Result<(), String> {
        if self.inner.down.load(Ordering::Relaxed) {
            let problem = self.inner.problem.lock().map(|p| p.clone()).unwrap_or_default();
            return Err(problem.unwrap_or_else(|| "unreachable".into()));
        }
        Ok(())
    }

    /// Checks that Redis answers now (a `PING`), updating [`Self::status`].
    ///
    /// # Errors
    /// Why it does not.
    pub async fn ping(&self) -> Result<(), String> {
        let mut conn = self.inner.manager.clone();
        let result: Result<String, _> =
            tokio::time::timeout(self.inner.timeout, redis::cmd("PING").query_async(&mut conn))
                .await
                .unwrap_or_else(|_| Err(redis::RedisError::from((redis::ErrorKind::Io, "timed out"))));
        match result {
            Ok(_) => {
                self.up();
                Ok(())
            }
            Err(e) => {
                self.failed(&e);
                Err(e.to_string())
            }
        }
    }

    fn now_ms(&self) -> u64 {
        u64::try_from(self.inner.started.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    /// Whether a call may be tried now (not within the pause after a failure).
    fn usable(&self) -> bool {
        self.now_ms() >= self.inner.down_until_ms.load(Ordering::Relaxed)
    }

    fn up(&self) {
        if self.inner.down.swap(false, Ordering::Relaxed) {
            tracing::info!("Redis is reachable again: limits and cache invalidations are shared again");
        }
    }

    fn failed(&self, e: &redis::RedisError) {
        let pause = u64::try_from(self.inner.pause.as_millis()).unwrap_or(u64::MAX);
        self.inner.down_until_ms.store(self.now_ms().saturating_add(pause), Ordering::Relaxed);
        if let Ok(mut p) = self.inner.problem.lock() {
            *p = Some(e.to_string());
        }
        if !self.inner.down.swap(true, Ordering::Relaxed) {
            tracing::warn!(error = %e, "Redis is unreachable: limits fall back to this server's own budgets and the \
                catalog cache to its TTL until it is back");
        }
    }

    /// Takes `cost` units of the budget `key` (`per_second` sustained, up to
    /// `burst`) in Redis; `None` when Redis cannot decide now (the caller
    /// falls back to its own budget).
    pub(crate) async fn gcra(&self, key: &str, per_second: f64, burst: u32, cost: u32) -> Option<SharedDecision> {
        if !self.usable() || per_second <= 0.0 {
            return None;
        }
        let interval = 1_000_000.0 / per_second;
        let mut conn = self.inner.manager.clone();
        let mut invocation = self.inner.script.key(format!("{}:rl:{key}", self.inner.prefix));
        invocation.arg(interval).arg(burst).arg(cost);
        let call = invocation.invoke_async::<(i64, i64, i64)>(&mut conn);
        let result = tokio::time::timeout(self.inner.timeout, call)
            .await
            .unwrap_or_else(|_| Err(redis::RedisError::from((redis::ErrorKind::Io, "timed out"))));
        match result {
            Ok((allowed, remaining, wait_us)) => {
                self.up();
                Some(match allowed {
                    1 => SharedDecision::Allowed { remaining: u32::try_from(remaining.max(0)).unwrap_or(u32::MAX) },
                    0 => SharedDecision::Refused {
                        retry_after: Duration::from_micros(u64::try_from(wait_us.max(0)).unwrap_or(0)),
                    },
                    _ => SharedDecision::TooLarge,
                })
            }
            Err(e) => {
                self.failed(&e);
                None
            }
        }
    }

    fn channel(&self) -> String {
        format!("{}:catalog", self.inner.prefix)
    }

    /// Tells the other servers that `tenant`'s catalog changed.
    pub(crate) async fn publish_invalidation(&self, tenant: &str) {
        if !self.usable() {
            return;
        }
        let mut conn = self.inner.manager.clone();
        let mut publish = redis::cmd("PUBLISH");
        publish.arg(self.channel()).arg(tenant);
        let call = publish.query_async::<i64>(&mut conn);
        match tokio::time::timeout(self.inner.timeout, call).await {
            Ok(Ok(_)) => self.up(),
            Ok(Err(e)) => self.failed(&e),
            Err(_) => self.failed(&redis::RedisError::from((redis::ErrorKind::Io, "timed out"))),
        }
    }

    /// Calls `on_change` for every catalog change another server publishes
    /// (the message names the tenant, for anyone watching the channel; the
    /// caches here drop everything, writes being rare), until `stop` turns
    /// true; resubscribes after a lost connection, and then calls
    /// `on_change` too: changes may have been missed meanwhile.
    pub(crate) async fn follow_invalidations(
        &self,
        on_change: impl Fn() + Send + Sync,
        mut stop: tokio::sync::watch::Receiver<bool>,
    ) {
        let mut first = true;
        while !*stop.borrow() {
            let subscribed = async {
                let mut pubsub = self.inner.client.get_async_pubsub().await?;
                pubsub.subscribe(self.channel()).await?;
                Ok::<_, redis::RedisError>(pubsub)
            };
            match tokio::time::timeout(self.inner.timeout * 4, subscribed).await {
                Ok(Ok(pubsub)) => {
                    if !first {
                        on_change();
                    }
                    first = false;
                    let mut messages = pubsub.into_on_message();
                    loop {
                        tokio::select! {
                            msg = messages.next() => match msg {
                                Some(_) => on_change(),
                                None => break,
                            },
                            _ = stop.changed() => return,
                        }
                    }
                    tracing::warn!("lost the Redis subscription to catalog changes; resubscribing");
                }
                Ok(Err(e)) => self.failed(&e),
                Err(_) => self.failed(&redis::RedisError::from((redis::ErrorKind::Io, "timed out"))),
            }
            tokio::select! {
                () = tokio::time::sleep(self.inner.pause) => {}
                _ = stop.changed() => return,
            }
        }
    }
}
