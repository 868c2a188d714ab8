//! Rate limits: no caller can hog the server. [`LimitsConfig`] (`limits.*`)
//! sets three budgets, each a [`Rate`] (a sustained rate and a burst, GCRA
//! as `governor` implements it):
//! - requests per credential (an API key, a JWT's subject; anonymous callers
//!   share their tenant's budget only);
//! - requests per tenant, whatever credential;
//! - embedding work per tenant, in estimated tokens ([`embedding_cost`]):
//!   texts embedded for `/api/embed`, search queries, appended messages;
//! - spans ingested per tenant (`POST /v1/traces`, issue 17).
//!
//! A tenant's budgets can be raised or lowered by the operator in the
//! catalog's settings (category `limits`, keys `credential`, `tenant`,
//! `embed_tokens`, `ingest_spans`, value `{"per_second": N, "burst": M}`; see
//! [`LIMITS_CATEGORY`]), read through the catalog's cache.
//!
//! Storage quotas (`limits.quota.*`: live threads, messages and their bytes
//! per tenant, unlimited by default) are configured here too, with the
//! operator's per-tenant override in the same category (key `quota`, see
//! [`parse_quota_override`]); [`Limiter::quota`] says a tenant's quota and
//! the stores check it in the transaction that writes. Quotas are about
//! storage, not callers: they apply whatever `auth.mode` and
//! `limits.enabled` (which turns rate limits alone on or off).
//!
//! With `redis.url` set the budgets live in Redis ([`crate::Coordinator`]),
//! so several servers enforce one limit; without it, or while Redis cannot
//! be reached, each server keeps its own in this process.

use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

use governor::clock::{Clock, DefaultClock};
use governor::middleware::StateInformationMiddleware;
use governor::state::{InMemoryState, NotKeyed};
use governor::{Quota as GcraQuota, RateLimiter};
use memlayer_domain::{Credential, DomainError, Principal, Quota, QuotaKind, SettingName, TenantId};
use memlayer_ports::StoreError;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::CatalogService;
use crate::coordination::SharedDecision;

/// The settings category of per-tenant budgets (written by the operator with
/// `memlayer settings set`; the HTTP API refuses it, so a tenant cannot
/// lift its own limits).
pub const LIMITS_CATEGORY: &str = "limits";

/// A budget: `per_second` sustained (fractional for slower rates: `0.5` is
/// one every two seconds), up to `burst` at once. `per_second = 0` means
/// unlimited.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rate {
    /// Sustained units per second; 0: unlimited.
    pub per_second: f64,
    /// Units available at once (at least 1, and at least `per_second`, when limited).
    pub burst: u32,
}

impl Rate {
    /// No limit.
    pub const UNLIMITED: Rate = Rate { per_second: 0.0, burst: 0 };

    /// Whether this budget limits anything.
    #[must_use]
    pub fn is_limited(self) -> bool {
        self.per_second > 0.0
    }

    /// Checks the budget's consistency.
    ///
    /// # Errors
    /// A message saying what is wrong.
    pub fn validate(self) -> Result<(), String> {
        if !self.per_second.is_finite() || self.per_second < 0.0 || self.per_second > 1e9 {
            return Err(format!("per_second ({}) must be between 0 (unlimited) and 1e9", self.per_second));
        }
        if self.is_limited() && (self.burst == 0 || f64::from(self.burst) < self.per_second) {
            return Err(format!(
                "burst ({}) must be at least 1 and at least per_second ({})",
                self.burst, self.per_second
            ));
        }
        Ok(())
    }

    /// Seconds a full burst takes to refill: the window of `RateLimit-Policy`.
    #[must_use]
    pub fn window_secs(self) -> u64 {
        if self.is_limited() {
            // Bounded by `validate`: burst ≤ u32::MAX and per_second ≥ a tiny positive rate.
            #[allow(
                clippy::cast_possible_truncation,
                clippy::cast_sign_loss,
                reason = "a positive, finite count of seconds"
            )]
            let secs = (f64::from(self.burst) / self.per_second).ceil().min(u64::MAX as f64) as u64;
            secs.max(1)
        } else {
            0
        }
    }

    fn quota(self) -> Option<GcraQuota> {
        if !self.is_limited() {
            return None;
        }
        let period = Duration::try_from_secs_f64(1.0 / self.per_second).ok()?;
        let burst = NonZeroU32::new(self.burst.max(1))?;
        Some(GcraQuota::with_period(period)?.allow_burst(burst))
    }
}

/// Rate limits (`limits.*`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LimitsConfig {
    /// Whether limits apply; unset: only when authentication is on
    /// (`auth.mode` other than `none`), so a local server is never throttled.
    pub enabled: Option<bool>,
    /// Requests per credential.
    pub credential: Rate,
    /// Requests per tenant, all credentials together.
    pub tenant: Rate,
    /// Embedding work per tenant, in estimated tokens ([`embedding_cost`]).
    pub embed_tokens: Rate,
    /// Spans ingested per tenant (OTLP).
    pub ingest_spans: Rate,
    /// Most budgets kept in memory (credentials and tenants seen recently);
    /// the least recently used are forgotten, which refills them.
    pub max_tracked: u64,
    /// Storage quotas per tenant (`limits.quota.threads`, `.messages`,
    /// `.bytes`); unset: unlimited. Applied whatever `enabled` says.
    pub quota: Quota,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        Self {
            enabled: None,
            credential: Rate { per_second: 100.0, burst: 200 },
            tenant: Rate { per_second: 500.0, burst: 1_000 },
            embed_tokens: Rate { per_second: 50_000.0, burst: 200_000 },
            ingest_spans: Rate { per_second: 50_000.0, burst: 100_000 },
            max_tracked: 100_000,
            quota: Quota::UNLIMITED,
        }
    }
}

impl LimitsConfig {
    /// Checks every budget.
    ///
    /// # Errors
    /// The key and what is wrong.
    pub fn validate(&self) -> Result<(), (&'static str, String)> {
        for (key, rate) in [
            ("limits.credential", self.credential),
            ("limits.tenant", self.tenant),
            ("limits.embed_tokens", self.embed_tokens),
            ("limits.ingest_spans", self.ingest_spans),
        ] {
            rate.validate().map_err(|e| (key, e))?;
        }
        if self.max_tracked == 0 {
            return Err(("limits.max_tracked", "must be at least 1".into()));
        }
        Ok(())
    }
}

/// Which budget.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Budget {
    /// Requests of one credential.
    Credential,
    /// Requests of one tenant.
    Tenant,
    /// Embedding work of one tenant.
    EmbedTokens,
    /// Spans ingested by one tenant.
    IngestSpans,
}

impl Budget {
    /// Every budget, in declaration order (`budget as usize` indexes it).
    pub const ALL: [Budget; 4] = [Budget::Credential, Budget::Tenant, Budget::EmbedTokens, Budget::IngestSpans];

    /// The budget's name in headers, settings and errors.
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            Budget::Credential => "credential",
            Budget::Tenant => "tenant",
            Budget::EmbedTokens => "embed_tokens",
            Budget::IngestSpans => "ingest_spans",
        }
    }
}

/// The state of one budget after a decision, for the `RateLimit` headers.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Standing {
    /// Which budget.
    pub budget: Budget,
    /// Its rate.
    pub rate: Rate,
    /// Units left at once.
    pub remaining: u32,
}

/// A refusal: the budget that ran out and when to retry.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Exceeded {
    /// The budget that ran out.
    pub budget: Budget,
    /// Its rate.
    pub rate: Rate,
    /// How long until the request would be allowed.
    pub retry_after: Duration,
    /// The request costs more than the whole burst: it can never pass.
    pub too_large: bool,
}

impl Exceeded {
    /// The refusal as a [`StoreError`] for the use cases that charge embedding work.
    #[must_use]
    pub fn into_store_error(self) -> StoreError {
        StoreError::RateLimited {
            limit: self.budget.as_str(),
            retry_after: self.retry_after,
            message: self.to_string(),
        }
    }
}

impl std::fmt::Display for Exceeded {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let Rate { per_second, burst } = self.rate;
        let what = match self.budget {
            Budget::Credential => "requests of this credential",
            Budget::Tenant => "requests of this tenant",
            Budget::EmbedTokens => "embedding work of this tenant (estimated tokens)",
            Budget::IngestSpans => "spans ingested by this tenant",
        };
        if self.too_large {
            write!(
                f,
                "limit `{}`: this request alone needs more than the burst of {burst} {what}",
                self.budget.as_str()
            )
        } else {
            write!(
                f,
                "limit `{}` exceeded: {what} are limited to {per_second}/s with bursts of {burst}; retry after {} ms",
                self.budget.as_str(),
                self.retry_after.as_millis()
            )
        }
    }
}

/// Estimated embedding tokens of `texts`: one per 4 bytes, at least one per
/// text (a cheap stand-in for the tokenizer, which costs as much CPU as a
/// small part of the embedding itself).
#[must_use]
pub fn embedding_cost<'a>(texts: impl IntoIterator<Item = &'a str>) -> u32 {
    let total: usize = texts.into_iter().map(|t| t.len().div_ceil(4).max(1)).sum();
    u32::try_from(total).unwrap_or(u32::MAX)
}

type Gcra = RateLimiter<NotKeyed, InMemoryState, DefaultClock, StateInformationMiddleware>;

/// One budget of one key, with the rate it was made for (an override may change).
#[derive(Debug)]
struct Bucket {
    rate: Rate,
    gcra: Gcra,
}

/// Keeps the budgets and decides. Clones share the budgets.
#[derive(Debug, Clone)]
pub struct Limiter {
    enabled: bool,
    config: Arc<LimitsConfig>,
    overrides: Option<Overrides>,
    shared: Option<crate::Coordinator>,
    buckets: moka::sync::Cache<(Budget, String), Arc<Bucket>>,
    clock: DefaultClock,
}

/// Where per-tenant budgets are read: the catalog's settings, under names
/// made once rather than on every request.
#[derive(Debug, Clone)]
struct Overrides {
    catalog: CatalogService,
    category: SettingName,
    /// The settings' keys, in [`Budget::ALL`] order.
    keys: Arc<[SettingName; 4]>,
    /// The key of the quota override ([`QUOTA_KEY`]).
    quota: SettingName,
}

/// The settings key (in [`LIMITS_CATEGORY`]) of a tenant's storage quota.
pub const QUOTA_KEY: &str = "quota";

impl Limiter {
    /// A limiter with `config`'s budgets, `enabled` or not, reading per-tenant
    /// overrides from `catalog` when given.
    #[must_use]
    pub fn new(config: LimitsConfig, enabled: bool, catalog: Option<CatalogService>) -> Self {
        let buckets = moka::sync::Cache::builder()
            .max_capacity(config.max_tracked)
            .time_to_idle(Duration::from_secs(3600))
            .build();
        let overrides = catalog.and_then(|catalog| {
            let category = SettingName::category(LIMITS_CATEGORY).ok()?;
            let keys = Budget::ALL.map(|b| SettingName::key(b.as_str()));
            let [Ok(a), Ok(b), Ok(c), Ok(d)] = keys else { return None };
            let quota = SettingName::key(QUOTA_KEY).ok()?;
            Some(Overrides { catalog, category, keys: Arc::new([a, b, c, d]), quota })
        });
        Self { enabled, config: Arc::new(config), overrides, shared: None, buckets, clock: DefaultClock::default() }
    }

    /// Keeps the budgets in Redis through `shared`, so every server sharing
    /// it enforces one limit (this process's budgets serve while Redis
    /// cannot be reached).
    #[must_use]
    pub fn with_shared(mut self, shared: Option<crate::Coordinator>) -> Self {
        self.shared = shared;
        self
    }

    /// A limiter that lets everything through.
    #[must_use]
    pub fn unlimited() -> Self {
        Self::new(LimitsConfig::default(), false, None)
    }

    /// Whether any limit applies.
    #[must_use]
    pub fn is_enabled(&self) -> bool {
        self.enabled
    }

    /// Admits one request of `principal`: its credential's budget and its
    /// tenant's. Returns the tighter standing for the `RateLimit` headers
    /// (`None` when nothing limits it).
    ///
    /// # Errors
    /// [`Exceeded`] naming the budget that ran out.
    pub async fn admit(&self, principal: &Principal) -> Result<Option<Standing>, Exceeded> {
        if !self.enabled {
            return Ok(None);
        }
        let tenant = &principal.tenant;
        let credential = match &principal.credential {
            Credential::Anonymous => None,
            Credential::ApiKey(id) => Some(format!("{tenant}/key/{id}")),
            Credential::Jwt { subject } => subject.as_ref().map(|s| format!("{tenant}/jwt/{s}")),
        };
        let mut tightest: Option<Standing> = None;
        if let Some(key) = credential {
            let rate = self.rate(tenant, Budget::Credential).await;
            tightest = self.take(Budget::Credential, key, rate, 1).await?;
        }
        let rate = self.rate(tenant, Budget::Tenant).await;
        if let Some(standing) = self.take(Budget::Tenant, tenant.to_string(), rate, 1).await?
            && tightest.is_none_or(|t| standing.remaining < t.remaining)
        {
            tightest = Some(standing);
        }
        Ok(tightest)
    }

    /// Charges `cost` units of embedding work to `tenant`.
    ///
    /// # Errors
    /// [`StoreError::RateLimited`] when the tenant's embedding budget is spent.
    pub async fn charge_embedding(&self, tenant: &TenantId, cost: u32) -> Result<(), StoreError> {
        if !self.enabled || cost == 0 {
            return Ok(());
        }
        let rate = self.rate(tenant, Budget::EmbedTokens).await;
        self.take(Budget::EmbedTokens, tenant.to_string(), rate, cost)
            .await
            .map(|_| ())
            .map_err(Exceeded::into_store_error)
    }

    /// Charges `spans` ingested spans to `tenant`.
    ///
    /// # Errors
    /// [`StoreError::RateLimited`] when the tenant's ingest budget is spent.
    pub async fn charge_ingest(&self, tenant: &TenantId, spans: u32) -> Result<(), StoreError> {
        if !self.enabled || spans == 0 {
            return Ok(());
        }
        let rate = self.rate(tenant, Budget::IngestSpans).await;
        self.take(Budget::IngestSpans, tenant.to_string(), rate, spans)
            .await
            .map(|_| ())
            .map_err(Exceeded::into_store_error)
    }

    /// The tenant's storage quota: the configured `limits.quota`, each of
    /// its dimensions replaced by the operator's override in the catalog
    /// when one names it. Applies whether or not rate limits are enabled.
    pub async fn quota(&self, tenant: &TenantId) -> Quota {
        let configured = self.config.quota;
        let Some(o) = &self.overrides else { return configured };
        match o.catalog.get_setting(tenant, &o.category, &o.quota).await {
            Ok(Some(setting)) => parse_quota_override(&setting.value, configured).unwrap_or_else(|e| {
                tracing::warn!(%tenant, error = %e, "ignoring an invalid quota override");
                configured
            }),
            Ok(None) => configured,
            Err(e) => {
                tracing::warn!(%tenant, error = %e, "cannot read the quota override; using the configured quota");
                configured
            }
        }
    }

    /// The tenant's rate for `budget`: its override in the catalog, else the configured one.
    async fn rate(&self, tenant: &TenantId, budget: Budget) -> Rate {
        let configured = match budget {
            Budget::Credential => self.config.credential,
            Budget::Tenant => self.config.tenant,
            Budget::EmbedTokens => self.config.embed_tokens,
            Budget::IngestSpans => self.config.ingest_spans,
        };
        let Some(o) = &self.overrides else { return configured };
        match o.catalog.get_setting(tenant, &o.category, &o.keys[budget as usize]).await {
            Ok(Some(setting)) => parse_override(&setting.value).unwrap_or_else(|e| {
                tracing::warn!(%tenant, budget = budget.as_str(), error = %e, "ignoring an invalid limits override");
                configured
            }),
            Ok(None) => configured,
            Err(e) => {
                tracing::warn!(%tenant, error = %e, "cannot read limits overrides; using the configured limits");
                configured
            }
        }
    }

    /// Takes `cost` units from the budget `key`: in Redis when shared and
    /// reachable, else in this process.
    async fn take(&self, budget: Budget, key: String, rate: Rate, cost: u32) -> Result<Option<Standing>, Exceeded> {
        if !rate.is_limited() {
            return Ok(None);
        }
        if let Some(shared) = &self.shared {
            let shared_key = format!("{}:{key}", budget.as_str());
            if let Some(decision) = shared.gcra(&shared_key, rate.per_second, rate.burst.max(1), cost).await {
                return match decision {
                    SharedDecision::Allowed { remaining } => Ok(Some(Standing { budget, rate, remaining })),
                    SharedDecision::Refused { retry_after } => {
                        Err(Exceeded { budget, rate, retry_after, too_large: false })
                    }
                    SharedDecision::TooLarge => {
                        Err(Exceeded { budget, rate, retry_after: Duration::ZERO, too_large: true })
                    }
                };
            }
        }
        self.take_here(budget, key, rate, cost)
    }

    /// Takes `cost` units from this process's budget `key`, made or remade for `rate`.
    fn take_here(&self, budget: Budget, key: String, rate: Rate, cost: u32) -> Result<Option<Standing>, Exceeded> {
        let Some(quota) = rate.quota() else { return Ok(None) };
        let cache_key = (budget, key);
        let mut bucket = self.buckets.get_with_by_ref(&cache_key, || Arc::new(Bucket { rate, gcra: gcra(quota) }));
        if bucket.rate != rate {
            bucket = Arc::new(Bucket { rate, gcra: gcra(quota) });
            self.buckets.insert(cache_key, bucket.clone());
        }
        let cost = NonZeroU32::new(cost).unwrap_or(NonZeroU32::MIN);
        match bucket.gcra.check_n(cost) {
            Ok(Ok(snapshot)) => Ok(Some(Standing { budget, rate, remaining: snapshot.remaining_burst_capacity() })),
            Ok(Err(not_until)) => Err(Exceeded {
                budget,
                rate,
                retry_after: not_until.wait_time_from(self.clock.now()),
                too_large: false,
            }),
            Err(_) => Err(Exceeded { budget, rate, retry_after: Duration::ZERO, too_large: true }),
        }
    }
}

fn gcra(quota: GcraQuota) -> Gcra {
    RateLimiter::direct(quota).with_middleware::<StateInformationMiddleware>()
}

/// Reads a per-tenant override: `{"per_second": N, "burst": M}`.
///
/// # Errors
/// A [`DomainError`] on `value` saying what is expected.
pub fn parse_override(value: &Value) -> Result<Rate, DomainError> {
    let rate: Rate = serde_json::from_value(value.clone()).map_err(|e| {
        DomainError::new("value", format!("a limits setting is {{\"per_second\": N, \"burst\": M}} ({e})"))
    })?;
    rate.validate().map_err(|e| DomainError::new("value", e))?;
    Ok(rate)
}

/// Reads a per-tenant quota override over `configured`: an object naming
/// some of `threads`, `messages`, `bytes`, each a count (the tenant's
/// limit) or `null` (unlimited for the tenant); a dimension it does not
/// name keeps the configured limit.
///
/// # Errors
/// A [`DomainError`] on `value` saying what is expected.
pub fn parse_quota_override(value: &Value, configured: Quota) -> Result<Quota, DomainError> {
    let expected =
        "a quota setting is {\"threads\": N, \"messages\": N, \"bytes\": N}, each optional, null for unlimited";
    let Some(map) = value.as_object() else {
        return Err(DomainError::new("value", expected));
    };
    let mut quota = configured;
    for (key, v) in map {
        let Some(kind) = QuotaKind::ALL.into_iter().find(|k| k.as_str() == key) else {
            return Err(DomainError::new("value", format!("`{key}` is not a quota; {expected}")));
        };
        let limit = match v {
            Value::Null => None,
            v => Some(v.as_u64().ok_or_else(|| {
                DomainError::new("value", format!("`{key}`: {v} is not a count (0 or more) or null; {expected}"))
            })?),
        };
        match kind {
            QuotaKind::Threads => quota.threads = limit,
            QuotaKind::Messages => quota.messages = limit,
            QuotaKind::Bytes => quota.bytes = limit,
        }
    }
    Ok(quota)
}

/// Checks a setting the operator writes in [`LIMITS_CATEGORY`]: a known
/// budget name and a valid rate, or [`QUOTA_KEY`] and a valid quota.
///
/// # Errors
/// A [`DomainError`] naming the key or the value.
pub fn validate_limits_setting(key: &str, value: &Value) -> Result<(), DomainError> {
    if key == QUOTA_KEY {
        return parse_quota_override(value, Quota::UNLIMITED).map(|_| ());
    }
    if !Budget::ALL.iter().any(|b| b.as_str() == key) {
        return Err(DomainError::new(
            "key",
            format!("`{key}` is not a limit (credential, tenant, embed_tokens, ingest_spans, {QUOTA_KEY})"),
        ));
    }
    parse_override(value).map(|_| ())
}

#[cfg(test)]
mod tests {
    use memlayer_domain::{KeyId, Scopes};
    use serde_json::json;

    use super::*;

    fn key_principal(tenant: &str, key: &str) -> Principal {
        Principal {
            tenant: TenantId::parse(tenant).unwrap(),
            scopes: Scopes::ALL,
            resource: None,
            credential: Credential::ApiKey(KeyId::parse(key).unwrap()),
        }
    }

    fn config(credential: Rate, tenant: Rate) -> LimitsConfig {
        LimitsConfig { credential, tenant, ..LimitsConfig::default() }
    }

    const A: &str = "000000000000000a";
    const B: &str = "000000000000000b";

    #[tokio::test]
    async fn a_credential_gets_its_burst_then_is_refused_with_a_retry_time() {
        // One unit a minute: nothing refills while the test runs, however slow the machine.
        let limiter = Limiter::new(config(Rate { per_second: 1.0 / 60.0, burst: 3 }, Rate::UNLIMITED), true, None);
        let p = key_principal("t", A);
        let remaining: Vec<u32> = {
            let mut v = Vec::new();
            for _ in 0..3 {
                v.push(limiter.admit(&p).await.unwrap().unwrap().remaining);
            }
            v
        };
        assert_eq!(remaining, [2, 1, 0]);
        let refused = limiter.admit(&p).await.unwrap_err();
        assert_eq!(refused.budget, Budget::Credential);
        assert!(
            refused.retry_after > Duration::from_secs(30) && refused.retry_after <= Duration::from_secs(60),
            "{refused:?}"
        );
        assert!(refused.to_string().contains("limit `credential` exceeded"), "{refused}");
        // Another credential of the tenant has its own budget.
        assert!(limiter.admit(&key_principal("t", B)).await.is_ok());
    }

    #[tokio::test]
    async fn the_tenant_budget_is_shared_by_its_credentials_only() {
        let limiter = Limiter::new(config(Rate::UNLIMITED, Rate { per_second: 1.0 / 60.0, burst: 2 }), true, None);
        assert!(limiter.admit(&key_principal("t", A)).await.is_ok());
        assert!(limiter.admit(&key_principal("t", B)).await.is_ok());
        let refused = limiter.admit(&key_principal("t", A)).await.unwrap_err();
        assert_eq!(refused.budget, Budget::Tenant);
        assert!(limiter.admit(&key_principal("u", A)).await.is_ok(), "another tenant is not charged");
        let anonymous = Principal::anonymous(TenantId::parse("t").unwrap());
        assert_eq!(limiter.admit(&anonymous).await.unwrap_err().budget, Budget::Tenant);
    }

    #[tokio::test]
    async fn a_disabled_limiter_or_an_unlimited_rate_refuses_nothing() {
        let p = key_principal("t", A);
        let off =
            Limiter::new(config(Rate { per_second: 1.0, burst: 1 }, Rate { per_second: 1.0, burst: 1 }), false, None);
        let unlimited = Limiter::new(config(Rate::UNLIMITED, Rate::UNLIMITED), true, None);
        for _ in 0..10 {
            assert_eq!(off.admit(&p).await, Ok(None));
            assert_eq!(unlimited.admit(&p).await, Ok(None));
        }
    }

    #[tokio::test]
    async fn embedding_work_is_charged_by_cost_and_a_request_over_the_burst_never_passes() {
        let limiter = Limiter::new(
            LimitsConfig { embed_tokens: Rate { per_second: 0.1, burst: 100 }, ..LimitsConfig::default() },
            true,
            None,
        );
        let t = TenantId::parse("t").unwrap();
        limiter.charge_embedding(&t, 60).await.unwrap();
        let err = limiter.charge_embedding(&t, 60).await.unwrap_err();
        assert!(
            matches!(err, StoreError::RateLimited { limit: "embed_tokens", retry_after, .. } if retry_after > Duration::ZERO)
        );
        let err = limiter.charge_embedding(&TenantId::parse("u").unwrap(), 101).await.unwrap_err();
        let StoreError::RateLimited { message, .. } = err else { panic!() };
        assert!(message.contains("alone"), "{message}");
    }

    #[tokio::test]
    async fn ingested_spans_are_charged_per_tenant() {
        let limiter = Limiter::new(
            LimitsConfig { ingest_spans: Rate { per_second: 0.1, burst: 1_000 }, ..LimitsConfig::default() },
            true,
            None,
        );
        let t = TenantId::parse("t").unwrap();
        limiter.charge_ingest(&t, 600).await.unwrap();
        let err = limiter.charge_ingest(&t, 600).await.unwrap_err();
        assert!(matches!(err, StoreError::RateLimited { limit: "ingest_spans", .. }), "{err:?}");
        limiter.charge_ingest(&TenantId::parse("u").unwrap(), 600).await.unwrap();
        assert!(validate_limits_setting("ingest_spans", &json!({"per_second": 10, "burst": 10})).is_ok());
    }

    #[test]
    fn costs_estimate_four_bytes_a_token_and_at_least_one_a_text() {
        assert_eq!(embedding_cost(["", "abcd", "abcde"]), 1 + 1 + 2);
    }

    #[test]
    fn overrides_and_settings_are_validated() {
        assert_eq!(
            parse_override(&json!({"per_second": 5, "burst": 10})).unwrap(),
            Rate { per_second: 5.0, burst: 10 }
        );
        assert!(parse_override(&json!({"per_second": 5, "burst": 1})).is_err());
        assert!(parse_override(&json!({"per_second": 5})).is_err());
        assert!(parse_override(&json!({"per_second": 5, "burst": 10, "x": 1})).is_err());
        assert!(validate_limits_setting("tenant", &json!({"per_second": 0, "burst": 0})).is_ok());
        assert_eq!(
            validate_limits_setting("everyone", &json!({"per_second": 1, "burst": 1})).unwrap_err().field,
            "key"
        );
        assert!(
            LimitsConfig { credential: Rate { per_second: 10.0, burst: 5 }, ..LimitsConfig::default() }
                .validate()
                .is_err()
        );
        assert!(LimitsConfig::default().validate().is_ok());
    }

    #[test]
    fn quota_overrides_replace_what_they_name() {
        let configured = Quota { threads: Some(10), messages: Some(1_000), bytes: None };
        let check = |v: Value| parse_quota_override(&v, configured);
        assert_eq!(check(json!({})).unwrap(), configured);
        assert_eq!(
            check(json!({"messages": 5, "bytes": 7})).unwrap(),
            Quota { threads: Some(10), messages: Some(5), bytes: Some(7) }
        );
        assert_eq!(check(json!({"threads": null})).unwrap(), Quota { threads: None, ..configured }, "null lifts it");
        for bad in [json!({"thread": 1}), json!({"bytes": -1}), json!({"bytes": 1.5}), json!({"bytes": "1"}), json!(5)]
        {
            let err = check(bad.clone()).unwrap_err();
            assert_eq!(err.field, "value", "{bad}");
        }
        assert!(validate_limits_setting("quota", &json!({"bytes": 1_000_000})).is_ok());
        assert!(validate_limits_setting("quota", &json!({"per_second": 1, "burst": 1})).is_err());
        let unknown = validate_limits_setting("quotas", &json!({})).unwrap_err();
        assert!(unknown.to_string().contains("quota"), "{unknown}");
    }

    #[test]
    fn the_policy_window_is_the_time_a_burst_takes_to_refill() {
        assert_eq!(Rate { per_second: 100.0, burst: 200 }.window_secs(), 2);
        assert_eq!(Rate { per_second: 0.5, burst: 1 }.window_secs(), 2);
        assert!(Rate { per_second: 0.5, burst: 1 }.validate().is_ok());
        assert!(Rate { per_second: 0.5, burst: 0 }.validate().is_err());
        assert!(Rate { per_second: -1.0, burst: 1 }.validate().is_err());
        assert!(Rate { per_second: f64::NAN, burst: 1 }.validate().is_err());
        assert_eq!(Rate { per_second: 3.0, burst: 4 }.window_secs(), 2);
        assert_eq!(Rate::UNLIMITED.window_secs(), 0);
    }
}
