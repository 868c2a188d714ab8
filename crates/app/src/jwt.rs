//! JSON Web Tokens, Supabase-style: [`JwtConfig`] (`auth.jwt.*`) and the
//! [`JwtVerifier`], the [`Verifier`] of bearer JWTs.
//!
//! Rules (each one has a test below):
//! - An HS256 token is checked with the shared secret (`auth.jwt.secret`)
//!   and nothing else; an RS256 or ES256 token only with a key of that type
//!   from the JWKS (`auth.jwt.jwks_file`, `auth.jwt.jwks_url`), the one its
//!   `kid` names. So an HS256 token "signed" with a public key is refused
//!   (algorithm confusion), symmetric (`oct`) keys in a JWKS are ignored,
//!   and `alg: none` or any other algorithm is refused.
//! - `exp` is required; `exp` and `nbf` are checked with `leeway_secs`; `iss`
//!   and `aud` are required and checked when `issuer` and `audience` are set.
//! - The tenant comes from `tenant_claim` (a top-level claim of that name,
//!   else a dotted path into nested objects), the scopes from `scopes_claim`
//!   (a space- or comma-separated string or an array; an unknown scope is
//!   refused), or `default_scopes` for a token without that claim (else it
//!   is refused: see [`JwtConfig::default_scopes`]), and the resource from
//!   `resource_claim` when set.
//! - A verified token is cached, keyed by its SHA-256, until its `exp` or
//!   for `cache_ttl_secs`, whichever comes first: a client reusing its token
//!   pays for the signature once per TTL.
//! - The JWKS URL is fetched when the verifier opens, again in the
//!   background once the keys are older than `jwks_refresh_secs` (the request
//!   goes on with the keys it has), and at once when a token names a `kid`
//!   the keys lack; never more than once per `jwks_min_refetch_secs`, so a
//!   flood of made-up `kid`s cannot hammer the JWKS server. While the URL
//!   cannot be fetched the keys fetched before keep working; a token that
//!   none of them can check is then a 503 (cannot check now), not a 401.
//!
//! Verifying runs on the async worker: a signature check costs tens of
//! microseconds, less than handing it to the blocking pool would.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, Jwk, KeyAlgorithm, KeyOperations, PublicKeyUse};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use memlayer_domain::{Credential, Principal, ResourceId, Scopes, TenantId};
use memlayer_ports::StoreError;
use moka::future::Cache;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use sha2::{Digest as _, Sha256};

use crate::auth::{AuthError, Verifier};
use crate::{ConfigError, Secret};

/// Shortest accepted HS256 secret, in bytes: RFC 7518 §3.2 asks for a key
/// at least as long as the hash (256 bits).
const MIN_SECRET_BYTES: usize = 32;
/// Longest accepted token, in bytes (a Supabase token is about 1 KiB).
const MAX_TOKEN_BYTES: usize = 16 * 1024;
/// Largest accepted JWKS document, in bytes.
const MAX_JWKS_BYTES: usize = 1024 * 1024;
/// Largest accepted `auth.jwt.leeway_secs`.
const MAX_LEEWAY_SECS: u64 = 300;

/// JSON Web Token settings (`auth.jwt.*`), used when `auth.mode` includes
/// `jwt`. At least one key source is required: `secret` (HS256),
/// `jwks_url` or `jwks_file` (RS256 and ES256).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct JwtConfig {
    /// The HS256 shared secret, as text (a Supabase project's "JWT
    /// secret"); at least 32 bytes. Unset: HS256 tokens are refused.
    pub secret: Option<Secret>,
    /// A JWKS file of RS256 and ES256 public keys, read at start.
    pub jwks_file: Option<PathBuf>,
    /// A JWKS URL (Supabase:
    /// `https://<project>.supabase.co/auth/v1/.well-known/jwks.json`),
    /// fetched at start and refreshed; `https://`, or `http://` to a
    /// loopback address only (keys fetched in the clear could be swapped).
    /// Redirects are not followed.
    pub jwks_url: Option<String>,
    /// Keys fetched longer ago than this, in seconds, are fetched again in
    /// the background when a token needs a key.
    pub jwks_refresh_secs: u64,
    /// Least time between two fetches of the JWKS URL, in seconds, whatever
    /// asks for them (a `kid` the keys lack, staleness).
    pub jwks_min_refetch_secs: u64,
    /// How long one fetch of the JWKS URL may take, in milliseconds.
    pub jwks_timeout_ms: u64,
    /// When set, a token's `iss` must equal it (Supabase:
    /// `https://<project>.supabase.co/auth/v1`).
    pub issuer: Option<String>,
    /// When set, a token's `aud` must name it (Supabase: `authenticated`);
    /// unset, `aud` is not checked.
    pub audience: Option<String>,
    /// Clock skew allowed on `exp` and `nbf`, in seconds (at most 300).
    pub leeway_secs: u64,
    /// The claim naming the tenant: a top-level claim of that name, else a
    /// dotted path (`app_metadata.tenant_id`). Must be a string.
    pub tenant_claim: String,
    /// The claim listing the scopes (`read`, `write`, `admin`): a string
    /// separated by spaces or commas, or an array of strings.
    pub scopes_claim: String,
    /// Scopes granted to a token that has no `scopes_claim` (`read` or
    /// `read,write`). Unset, such a token is refused: Supabase's tokens carry
    /// a `role` but no scopes, and every token its project signs (including
    /// the public `anon` key) would otherwise get whatever the default is,
    /// so granting must be a decision written in the configuration.
    pub default_scopes: Option<String>,
    /// When set (`sub`), the claim naming the one resource the caller is
    /// bound to; a token without it is refused.
    pub resource_claim: Option<String>,
    /// How long a verified token is remembered, in seconds (never past its
    /// `exp`); 0 turns the cache off. It also bounds how long a token whose
    /// key left the JWKS is still accepted.
    pub cache_ttl_secs: u64,
    /// Most tokens remembered at once.
    pub cache_max_entries: u64,
}

impl Default for JwtConfig {
    fn default() -> Self {
        Self {
            secret: None,
            jwks_file: None,
            jwks_url: None,
            jwks_refresh_secs: 300,
            jwks_min_refetch_secs: 30,
            jwks_timeout_ms: 5_000,
            issuer: None,
            audience: None,
            leeway_secs: 30,
            tenant_claim: "tenant_id".into(),
            scopes_claim: "scope".into(),
            default_scopes: None,
            resource_claim: None,
            cache_ttl_secs: 60,
            cache_max_entries: 10_000,
        }
    }
}

impl JwtConfig {
    /// Checks the settings; called by [`crate::Config::validate`] when
    /// `auth.mode` includes `jwt`.
    ///
    /// # Errors
    /// [`ConfigError::Invalid`] naming the key to set or fix.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |key, reason: String| Err(ConfigError::Invalid { key, reason });
        if self.secret.is_none() && self.jwks_file.is_none() && self.jwks_url.is_none() {
            return invalid(
                "auth.jwt",
                "auth.mode includes `jwt` but no key is configured: set auth.jwt.secret \
                 (MEMLAYER_AUTH__JWT__SECRET, e.g. a Supabase project's JWT secret, for HS256 tokens), \
                 auth.jwt.jwks_url (e.g. https://<project>.supabase.co/auth/v1/.well-known/jwks.json, for RS256 \
                 and ES256 tokens) or auth.jwt.jwks_file"
                    .into(),
            );
        }
        if self.secret.as_ref().is_some_and(|s| s.expose().len() < MIN_SECRET_BYTES) {
            return invalid(
                "auth.jwt.secret",
                format!("must be at least {MIN_SECRET_BYTES} bytes (RFC 7518 §3.2: an HS256 key as long as its hash)"),
            );
        }
        if let Some(url) = &self.jwks_url {
            check_jwks_url(url).or_else(|reason| invalid("auth.jwt.jwks_url", reason))?;
        }
        if self.jwks_min_refetch_secs == 0 || self.jwks_refresh_secs < self.jwks_min_refetch_secs {
            return invalid(
                "auth.jwt.jwks_min_refetch_secs",
                "must be at least 1 and at most auth.jwt.jwks_refresh_secs".into(),
            );
        }
        if !(1..=60_000).contains(&self.jwks_timeout_ms) {
            return invalid("auth.jwt.jwks_timeout_ms", "must be between 1 and 60000".into());
        }
        if self.leeway_secs > MAX_LEEWAY_SECS {
            return invalid("auth.jwt.leeway_secs", format!("must be at most {MAX_LEEWAY_SECS}"));
        }
        for (key, value) in [
            ("auth.jwt.tenant_claim", Some(&self.tenant_claim)),
            ("auth.jwt.scopes_claim", Some(&self.scopes_claim)),
            ("auth.jwt.resource_claim", self.resource_claim.as_ref()),
            ("auth.jwt.issuer", self.issuer.as_ref()),
            ("auth.jwt.audience", self.audience.as_ref()),
        ] {
            if value.is_some_and(|v| v.trim().is_empty()) {
                return invalid(key, "must not be empty (unset it instead)".into());
            }
        }
        if let Some(scopes) = &self.default_scopes
            && let Err(e) = Scopes::parse_list(scopes)
        {
            return invalid("auth.jwt.default_scopes", e.reason);
        }
        if self.cache_max_entries == 0 {
            return invalid(
                "auth.jwt.cache_max_entries",
                "must be at least 1 (turn the cache off with cache_ttl_secs = 0)".into(),
            );
        }
        Ok(())
    }
}

/// `https://…`, or `http://` to a loopback address.
fn check_jwks_url(url: &str) -> Result<(), String> {
    let parsed = reqwest::Url::parse(url).map_err(|e| format!("is not a URL: {e}"))?;
    let loopback = parsed.host_str().is_some_and(|host| {
        host.eq_ignore_ascii_case("localhost")
            || host
                .trim_start_matches('[')
                .trim_end_matches(']')
                .parse::<std::net::IpAddr>()
                .is_ok_and(|ip| ip.is_loopback())
    });
    match parsed.scheme() {
        "https" => Ok(()),
        "http" if loopback => Ok(()),
        _ => Err("must be an https:// URL (http:// only to a loopback address: keys fetched in the clear could \
                  be swapped on the way)"
            .into()),
    }
}

/// How often the JWKS URL is fetched, and for how long.
#[derive(Debug, Clone, Copy)]
struct Timing {
    refresh: Duration,
    floor: Duration,
    timeout: Duration,
}

impl Timing {
    fn of(config: &JwtConfig) -> Self {
        Self {
            refresh: Duration::from_secs(config.jwks_refresh_secs),
            floor: Duration::from_secs(config.jwks_min_refetch_secs),
            timeout: Duration::from_millis(config.jwks_timeout_ms),
        }
    }
}

/// Checks bearer JWTs (see the module documentation for the rules).
pub struct JwtVerifier {
    secret: Option<DecodingKey>,
    jwks: Option<Arc<Jwks>>,
    hs256: Validation,
    rs256: Validation,
    es256: Validation,
    claims: ClaimRules,
    cache: Option<Cache<[u8; 32], Verified>>,
    cache_ttl: Duration,
}

impl std::fmt::Debug for JwtVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JwtVerifier")
            .field("secret", &self.secret.as_ref().map(|_| "***"))
            .field("jwks", &self.jwks)
            .field("claims", &self.claims)
            .field("cache_ttl", &self.cache_ttl)
            .finish_non_exhaustive()
    }
}

/// A verified token, remembered.
#[derive(Clone)]
struct Verified {
    principal: Principal,
    /// The token's `exp`, in seconds since the epoch.
    exp: u64,
    /// How long the cache keeps it.
    ttl: Duration,
}

/// Keeps each cached token for its own time ([`Verified::ttl`]).
struct UntilExp;

impl moka::Expiry<[u8; 32], Verified> for UntilExp {
    fn expire_after_create(&self, _: &[u8; 32], value: &Verified, _: Instant) -> Option<Duration> {
        Some(value.ttl)
    }
}

impl JwtVerifier {
    /// A verifier for `config`: reads the JWKS file, and fetches the JWKS
    /// URL once (a failed fetch is logged and tried again when a token
    /// needs a key).
    ///
    /// # Errors
    /// [`ConfigError`] when `config` is invalid or the JWKS file cannot be
    /// read or holds no RS256 or ES256 key.
    pub async fn open(config: &JwtConfig) -> Result<Self, ConfigError> {
        Self::open_with(config, Timing::of(config)).await
    }

    async fn open_with(config: &JwtConfig, timing: Timing) -> Result<Self, ConfigError> {
        config.validate()?;
        let secret = config
            .secret
            .as_ref()
            .map(|s| DecodingKey::from_secret(s.expose().as_bytes()))
            .transpose()
            .map_err(|e| ConfigError::Invalid { key: "auth.jwt.secret", reason: e.to_string() })?;
        let file = match &config.jwks_file {
            Some(path) => read_jwks_file(path)?,
            None => Vec::new(),
        };
        let remote = match &config.jwks_url {
            Some(url) => Some(Remote::new(url, timing)?),
            None => None,
        };
        let jwks = (config.jwks_file.is_some() || remote.is_some()).then(|| Arc::new(Jwks::new(file, remote)));
        if let Some(jwks) = &jwks
            && jwks.remote.is_some()
        {
            jwks.refetch(0).await;
        }
        let cache_ttl = Duration::from_secs(config.cache_ttl_secs);
        let cache = (!cache_ttl.is_zero())
            .then(|| Cache::builder().max_capacity(config.cache_max_entries).expire_after(UntilExp).build());
        Ok(Self {
            secret,
            jwks,
            hs256: validation(Algorithm::HS256, config),
            rs256: validation(Algorithm::RS256, config),
            es256: validation(Algorithm::ES256, config),
            claims: ClaimRules::of(config),
            cache,
            cache_ttl,
        })
    }

    /// The principal of `token` and its `exp`, checking everything.
    async fn check(&self, token: &str) -> Result<(Principal, u64), AuthError> {
        let header = header_of(token)?;
        let jwks_key;
        let (key, validation) = match header.alg.as_str() {
            "HS256" => {
                let secret = self.secret.as_ref().ok_or_else(|| {
                    invalid("HS256 tokens are not accepted: this server has no shared secret (auth.jwt.secret)")
                })?;
                (secret, &self.hs256)
            }
            name @ ("RS256" | "ES256") => {
                let (alg, validation) =
                    if name == "RS256" { (Algorithm::RS256, &self.rs256) } else { (Algorithm::ES256, &self.es256) };
                let jwks = self.jwks.as_ref().ok_or_else(|| {
                    invalid(format!(
                        "{name} tokens are not accepted: this server has no JWKS (auth.jwt.jwks_url or auth.jwt.jwks_file)"
                    ))
                })?;
                jwks_key = jwks.key(alg, header.kid.as_deref()).await?;
                (&jwks_key.key, validation)
            }
            other => {
                return Err(invalid(format!(
                    "the token's algorithm {} is not accepted; this server takes HS256, RS256 and ES256",
                    shown(other)
                )));
            }
        };
        let data = jsonwebtoken::decode::<Map<String, Value>>(token, key, validation).map_err(|e| explain(&e))?;
        let claims = data.claims;
        let principal = self.claims.principal(&claims)?;
        // `decode` required `exp` and checked that it is a number.
        let exp = claims.get("exp").and_then(|v| v.as_u64().or_else(|| v.as_f64().map(round_secs))).unwrap_or(0);
        Ok((principal, exp))
    }
}

#[async_trait]
impl Verifier for JwtVerifier {
    async fn verify(&self, token: &str) -> Result<Principal, AuthError> {
        if token.len() > MAX_TOKEN_BYTES {
            return Err(invalid(format!("the token is longer than {} KiB", MAX_TOKEN_BYTES / 1024)));
        }
        let Some(cache) = &self.cache else {
            return self.check(token).await.map(|(principal, _)| principal);
        };
        let key: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        if let Some(hit) = cache.get(&key).await
            && hit.exp > now_secs()
        {
            return Ok(hit.principal);
        }
        let (principal, exp) = self.check(token).await?;
        let ttl = self.cache_ttl.min(Duration::from_secs(exp.saturating_sub(now_secs())));
        if !ttl.is_zero() {
            cache.insert(key, Verified { principal: principal.clone(), exp, ttl }).await;
        }
        Ok(principal)
    }
}

fn invalid(message: impl Into<String>) -> AuthError {
    AuthError::Invalid(message.into())
}

fn now_secs() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

#[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss, reason = "a positive timestamp in seconds")]
fn round_secs(secs: f64) -> u64 {
    secs.max(0.0).round() as u64
}

/// `s` quoted when it is short and plain, so a message never repeats
/// arbitrary caller bytes.
fn shown(s: &str) -> String {
    if s.len() <= 32 && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_') {
        format!("`{s}`")
    } else {
        "(unprintable)".into()
    }
}

/// The fields of a token's header the verifier chooses its key by.
#[derive(Deserialize)]
struct RawHeader {
    alg: String,
    #[serde(default)]
    kid: Option<String>,
}

/// Decodes the header only, so `alg: none` and other algorithms are
/// refused by name before any key is chosen.
fn header_of(token: &str) -> Result<RawHeader, AuthError> {
    let encoded = token.split('.').next().unwrap_or_default();
    let bytes = URL_SAFE_NO_PAD.decode(encoded).map_err(|_| invalid("the token's header is not base64url"))?;
    serde_json::from_slice(&bytes)
        .map_err(|_| invalid("the token's header is not a JSON object with a string `alg` (and `kid`, if any)"))
}

/// What a failed `decode` tells the caller.
fn explain(e: &jsonwebtoken::errors::Error) -> AuthError {
    invalid(match e.kind() {
        ErrorKind::ExpiredSignature => "the token has expired (exp)".to_owned(),
        ErrorKind::ImmatureSignature => "the token is not valid yet (nbf)".to_owned(),
        ErrorKind::InvalidIssuer => "the token's issuer (iss) is not the one this server accepts".to_owned(),
        ErrorKind::InvalidAudience => "the token's audience (aud) is not the one this server accepts".to_owned(),
        ErrorKind::MissingRequiredClaim(claim) => format!("the token has no `{claim}` claim"),
        ErrorKind::InvalidClaimFormat(claim) => format!("the token's `{claim}` claim has the wrong type"),
        ErrorKind::InvalidSignature => "the token's signature does not verify".to_owned(),
        ErrorKind::InvalidAlgorithm | ErrorKind::InvalidKeyFormat => {
            "the token's algorithm does not match its key".to_owned()
        }
        _ => "the token is malformed".to_owned(),
    })
}

/// The checks of one algorithm, as configured.
fn validation(alg: Algorithm, config: &JwtConfig) -> Validation {
    let mut v = Validation::new(alg);
    v.leeway = config.leeway_secs;
    v.validate_exp = true;
    v.validate_nbf = true;
    let mut required = vec!["exp"];
    if let Some(issuer) = &config.issuer {
        v.set_issuer(&[issuer]);
        required.push("iss");
    }
    match &config.audience {
        Some(audience) => {
            v.set_audience(&[audience]);
            required.push("aud");
        }
        None => v.validate_aud = false,
    }
    v.set_required_spec_claims(&required);
    v
}

/// Where the principal's parts are read from the claims.
#[derive(Debug)]
struct ClaimRules {
    tenant: String,
    scopes: String,
    default_scopes: Option<Scopes>,
    resource: Option<String>,
}

impl ClaimRules {
    fn of(config: &JwtConfig) -> Self {
        Self {
            tenant: config.tenant_claim.clone(),
            scopes: config.scopes_claim.clone(),
            // Checked by `JwtConfig::validate`.
            default_scopes: config.default_scopes.as_deref().and_then(|s| Scopes::parse_list(s).ok()),
            resource: config.resource_claim.clone(),
        }
    }

    fn principal(&self, claims: &Map<String, Value>) -> Result<Principal, AuthError> {
        let tenant = self.text(claims, &self.tenant, "auth.jwt.tenant_claim")?;
        let tenant = TenantId::parse(tenant)
            .map_err(|e| invalid(format!("the token's `{}` claim is not a tenant id: {}", self.tenant, e.reason)))?;
        let scopes = self.scopes(claims)?;
        let resource =
            match &self.resource {
                None => None,
                Some(name) => {
                    let value = self.text(claims, name, "auth.jwt.resource_claim")?;
                    Some(ResourceId::parse(value).map_err(|e| {
                        invalid(format!("the token's `{name}` claim is not a resource id: {}", e.reason))
                    })?)
                }
            };
        let subject = claims.get("sub").and_then(Value::as_str).map(str::to_owned);
        Ok(Principal { tenant, scopes, resource, credential: Credential::Jwt { subject } })
    }

    /// The string claim `name`, or a 401 naming it and the key that chose it.
    fn text<'a>(&self, claims: &'a Map<String, Value>, name: &str, key: &str) -> Result<&'a str, AuthError> {
        match claim(claims, name) {
            Some(Value::String(s)) => Ok(s),
            None | Some(Value::Null) => Err(invalid(format!("the token has no `{name}` claim ({key})"))),
            Some(_) => Err(invalid(format!("the token's `{name}` claim must be a string ({key})"))),
        }
    }

    fn scopes(&self, claims: &Map<String, Value>) -> Result<Scopes, AuthError> {
        let name = &self.scopes;
        let bad = |reason: String| invalid(format!("the token's `{name}` claim: {reason}"));
        let scopes = match claim(claims, name) {
            None | Some(Value::Null) => {
                return self.default_scopes.ok_or_else(|| {
                    invalid(format!(
                        "the token has no `{name}` claim and this server grants no scopes by default \
                         (auth.jwt.default_scopes)"
                    ))
                });
            }
            Some(Value::String(list)) => Scopes::parse_list(list).map_err(|e| bad(e.reason))?,
            Some(Value::Array(items)) => {
                let names = items
                    .iter()
                    .map(|v| v.as_str().ok_or_else(|| bad("must hold strings only".into())))
                    .collect::<Result<Vec<_>, _>>()?;
                Scopes::from_names(names).map_err(|e| bad(e.reason))?
            }
            Some(_) => return Err(bad("must be a string or an array of strings".into())),
        };
        if scopes.is_empty() {
            return Err(bad("grants no scope (read, write, admin)".into()));
        }
        Ok(scopes)
    }
}

/// The claim `name`: a top-level claim of that very name (namespaced
/// claims such as `https://example.com/tenant` hold dots), else the dotted
/// path through nested objects.
fn claim<'a>(claims: &'a Map<String, Value>, name: &str) -> Option<&'a Value> {
    if let Some(value) = claims.get(name) {
        return Some(value);
    }
    let mut parts = name.split('.');
    let mut value = claims.get(parts.next()?)?;
    for part in parts {
        value = value.as_object()?.get(part)?;
    }
    Some(value)
}

/// A public key of the JWKS.
#[derive(Debug)]
struct JwksKey {
    kid: Option<String>,
    alg: Algorithm,
    key: DecodingKey,
}

/// The keys in use, replaced whole by each successful fetch.
struct KeySet {
    keys: Vec<Arc<JwksKey>>,
    /// Bumped by each successful fetch.
    generation: u64,
    /// When the URL was last fetched successfully.
    fetched_at: Option<Instant>,
}

impl KeySet {
    /// The key of `alg` named `kid`; without a `kid`, the only key of `alg`.
    fn find(&self, alg: Algorithm, kid: Option<&str>) -> Result<Option<Arc<JwksKey>>, AuthError> {
        let mut of_alg = self.keys.iter().filter(|k| k.alg == alg);
        match kid {
            Some(kid) => Ok(of_alg.find(|k| k.kid.as_deref() == Some(kid)).cloned()),
            None => {
                let first = of_alg.next().cloned();
                if of_alg.next().is_some() {
                    return Err(invalid(format!(
                        "the token names no key (`kid`) and the JWKS has several {alg:?} keys"
                    )));
                }
                Ok(first)
            }
        }
    }
}

/// The JWKS: the file's keys and the URL's, as last fetched.
struct Jwks {
    file: Vec<Arc<JwksKey>>,
    remote: Option<Remote>,
    current: RwLock<Arc<KeySet>>,
}

impl std::fmt::Debug for Jwks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Jwks")
            .field("file_keys", &self.file.len())
            .field("url", &self.remote.as_ref().map(|r| &r.url))
            .field("keys", &self.current().keys.len())
            .finish()
    }
}

/// The JWKS URL and the state of its fetches.
struct Remote {
    url: String,
    client: reqwest::Client,
    timing: Timing,
    /// When the last fetch started; held while a fetch runs, so concurrent
    /// callers wait for that fetch instead of starting their own.
    last_attempt: tokio::sync::Mutex<Option<Instant>>,
    /// Whether the last fetch failed.
    failing: AtomicBool,
    /// Whether a background refresh is under way.
    refreshing: AtomicBool,
}

impl Remote {
    fn new(url: &str, timing: Timing) -> Result<Self, ConfigError> {
        let client = reqwest::Client::builder()
            .timeout(timing.timeout)
            .redirect(reqwest::redirect::Policy::none())
            .https_only(url.starts_with("https://"))
            .build()
            .map_err(|e| ConfigError::Invalid { key: "auth.jwt.jwks_url", reason: chain(&e) })?;
        Ok(Self {
            url: url.to_owned(),
            client,
            timing,
            last_attempt: tokio::sync::Mutex::new(None),
            failing: AtomicBool::new(false),
            refreshing: AtomicBool::new(false),
        })
    }

    /// The URL's usable keys.
    async fn fetch(&self) -> Result<Vec<Arc<JwksKey>>, String> {
        let mut resp = self.client.get(&self.url).send().await.map_err(|e| chain(&e))?;
        if !resp.status().is_success() {
            return Err(format!("HTTP {}", resp.status()));
        }
        let mut body = Vec::new();
        while let Some(chunk) = resp.chunk().await.map_err(|e| chain(&e))? {
            if body.len() + chunk.len() > MAX_JWKS_BYTES {
                return Err(format!("the document is larger than {} KiB", MAX_JWKS_BYTES / 1024));
            }
            body.extend_from_slice(&chunk);
        }
        parse_jwks(&body)
    }
}

/// `e` with its causes, `a: b: c`.
fn chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}

impl Jwks {
    fn new(file: Vec<Arc<JwksKey>>, remote: Option<Remote>) -> Self {
        let current = KeySet { keys: file.clone(), generation: 0, fetched_at: None };
        Self { file, remote, current: RwLock::new(Arc::new(current)) }
    }

    fn current(&self) -> Arc<KeySet> {
        self.current.read().unwrap_or_else(std::sync::PoisonError::into_inner).clone()
    }

    /// The key that checks a token of `alg` naming `kid`.
    async fn key(self: &Arc<Self>, alg: Algorithm, kid: Option<&str>) -> Result<Arc<JwksKey>, AuthError> {
        let set = self.current();
        let Some(remote) = &self.remote else {
            return set.find(alg, kid)?.ok_or_else(|| unknown_key(alg));
        };
        if set.fetched_at.is_none_or(|at| at.elapsed() >= remote.timing.refresh) {
            self.refresh_in_background(set.generation);
        }
        if let Some(key) = set.find(alg, kid)? {
            return Ok(key);
        }
        let set = self.refetch(set.generation).await;
        if let Some(key) = set.find(alg, kid)? {
            return Ok(key);
        }
        if remote.failing.load(Ordering::Acquire) {
            return Err(AuthError::Unavailable(StoreError::Unavailable(format!(
                "the JWKS at {} cannot be fetched, and no key fetched before checks this token",
                remote.url
            ))));
        }
        Err(unknown_key(alg))
    }

    /// Fetches the URL unless another fetch succeeded since `seen` was
    /// current or the last one started less than the floor ago; the keys
    /// in use afterwards.
    async fn refetch(&self, seen: u64) -> Arc<KeySet> {
        let Some(remote) = &self.remote else { return self.current() };
        // Held across the fetch on purpose: one fetch at a time, the others wait for it.
        let mut last = remote.last_attempt.lock().await;
        let set = self.current();
        if set.generation != seen || last.is_some_and(|at| at.elapsed() < remote.timing.floor) {
            return set;
        }
        *last = Some(Instant::now());
        match remote.fetch().await {
            Ok(keys) => {
                remote.failing.store(false, Ordering::Release);
                tracing::debug!(url = %remote.url, keys = keys.len(), "JWKS fetched");
                let keys = self.file.iter().cloned().chain(keys).collect();
                let fresh = Arc::new(KeySet { keys, generation: set.generation + 1, fetched_at: Some(Instant::now()) });
                *self.current.write().unwrap_or_else(std::sync::PoisonError::into_inner) = fresh.clone();
                fresh
            }
            Err(error) => {
                remote.failing.store(true, Ordering::Release);
                tracing::warn!(url = %remote.url, %error, "cannot fetch the JWKS; the keys fetched before stay in use");
                set
            }
        }
    }

    /// Starts a [`Jwks::refetch`] in a task of its own, unless one runs.
    fn refresh_in_background(self: &Arc<Self>, seen: u64) {
        let Some(remote) = &self.remote else { return };
        if remote.refreshing.swap(true, Ordering::AcqRel) {
            return;
        }
        let jwks = self.clone();
        tokio::spawn(async move {
            jwks.refetch(seen).await;
            if let Some(remote) = &jwks.remote {
                remote.refreshing.store(false, Ordering::Release);
            }
        });
    }
}

fn unknown_key(alg: Algorithm) -> AuthError {
    invalid(format!("no {alg:?} key of this server's JWKS has the token's `kid`"))
}

/// Reads a JWKS file; it must hold at least one usable key.
fn read_jwks_file(path: &Path) -> Result<Vec<Arc<JwksKey>>, ConfigError> {
    let invalid = |reason: String| ConfigError::Invalid { key: "auth.jwt.jwks_file", reason };
    let bytes = std::fs::read(path).map_err(|e| invalid(format!("cannot read {}: {e}", path.display())))?;
    let keys = parse_jwks(&bytes).map_err(|e| invalid(format!("{}: {e}", path.display())))?;
    if keys.is_empty() {
        return Err(invalid(format!("{} holds no RS256 or ES256 signing key", path.display())));
    }
    Ok(keys)
}

/// The usable keys of a JWKS document; keys of other types or uses are
/// skipped (an empty set is valid: Supabase serves one to projects that
/// still sign with the shared secret).
fn parse_jwks(bytes: &[u8]) -> Result<Vec<Arc<JwksKey>>, String> {
    #[derive(Deserialize)]
    struct RawSet {
        keys: Vec<Value>,
    }
    let raw: RawSet =
        serde_json::from_slice(bytes).map_err(|e| format!("not a JWKS (a JSON object with `keys`): {e}"))?;
    let total = raw.keys.len();
    let keys: Vec<_> = raw
        .keys
        .into_iter()
        .filter_map(|v| serde_json::from_value::<Jwk>(v).ok())
        .filter_map(|jwk| usable(&jwk))
        .map(Arc::new)
        .collect();
    if keys.len() < total {
        tracing::debug!(skipped = total - keys.len(), "JWKS keys skipped: not RS256 or ES256 signing keys");
    }
    Ok(keys)
}

/// The key `jwk` describes, if it is an RS256 or ES256 signature key.
fn usable(jwk: &Jwk) -> Option<JwksKey> {
    let common = &jwk.common;
    if common.public_key_use.as_ref().is_some_and(|u| *u != PublicKeyUse::Signature)
        || common.key_operations.as_ref().is_some_and(|ops| !ops.contains(&KeyOperations::Verify))
    {
        return None;
    }
    let alg = match &jwk.algorithm {
        AlgorithmParameters::RSA(_) => Algorithm::RS256,
        AlgorithmParameters::EllipticCurve(p) if p.curve == EllipticCurve::P256 => Algorithm::ES256,
        // Never an `oct` key: HS256 is the shared secret's alone.
        _ => return None,
    };
    if common.key_algorithm.is_some_and(|a| a != KeyAlgorithm::from(alg)) {
        return None;
    }
    let key = DecodingKey::from_jwk(jwk).ok()?;
    Some(JwksKey { kid: common.key_id.clone(), alg, key })
}

/// The JWT verifier `config.auth.mode` asks for, if any.
///
/// # Errors
/// [`ConfigError`] as [`JwtVerifier::open`].
pub(crate) async fn verifier(config: &crate::Config) -> Result<Option<Arc<dyn Verifier>>, ConfigError> {
    if !config.auth.mode.has(crate::AuthMode::Jwt) {
        return Ok(None);
    }
    Ok(Some(Arc::new(JwtVerifier::open(&config.auth.jwt).await?)))
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;
    use std::sync::atomic::AtomicUsize;

    use jsonwebtoken::{EncodingKey, Header};
    use memlayer_domain::Scope;
    use serde_json::json;

    use super::*;

    const RSA_A: &str = include_str!("../tests/fixtures/jwt/rsa-a.pem");
    const RSA_A_PUB: &str = include_str!("../tests/fixtures/jwt/rsa-a.pub.pem");
    const RSA_B: &str = include_str!("../tests/fixtures/jwt/rsa-b.pem");
    const EC_A: &str = include_str!("../tests/fixtures/jwt/ec-a.pem");
    const SECRET: &str = "a shared secret of more than thirty-two bytes";
    const ISS: &str = "https://issuer.test/auth/v1";
    const AUD: &str = "authenticated";

    fn rsa_a() -> EncodingKey {
        EncodingKey::from_rsa_pem(RSA_A.as_bytes()).unwrap()
    }
    fn rsa_b() -> EncodingKey {
        EncodingKey::from_rsa_pem(RSA_B.as_bytes()).unwrap()
    }
    fn ec_a() -> EncodingKey {
        EncodingKey::from_ec_pem(EC_A.as_bytes()).unwrap()
    }
    fn secret() -> EncodingKey {
        EncodingKey::from_secret(SECRET.as_bytes()).unwrap()
    }

    fn sign(alg: Algorithm, kid: Option<&str>, key: &EncodingKey, claims: &Value) -> String {
        let mut header = Header::new(alg);
        header.kid = kid.map(str::to_owned);
        jsonwebtoken::encode(&header, claims, key).unwrap()
    }

    /// Good claims for tenant `acme`, with `changes` applied (`null` removes a claim).
    fn claims(changes: &Value) -> Value {
        let mut c = json!({
            "sub": "user-1", "tenant_id": "acme", "scope": "read write", "role": "authenticated",
            "iss": ISS, "aud": AUD, "iat": now_secs(), "exp": now_secs() + 600,
        });
        for (k, v) in changes.as_object().unwrap() {
            if v.is_null() {
                c.as_object_mut().unwrap().remove(k);
            } else {
                c[k] = v.clone();
            }
        }
        c
    }

    fn hs(changes: &Value) -> String {
        sign(Algorithm::HS256, None, &secret(), &claims(changes))
    }

    fn rs(kid: &str, changes: &Value) -> String {
        sign(Algorithm::RS256, Some(kid), &rsa_a(), &claims(changes))
    }

    /// The public JWK of `key`, named `kid`.
    fn jwk(key: &EncodingKey, alg: Algorithm, kid: &str) -> Value {
        let mut jwk = Jwk::from_encoding_key(key, alg).unwrap();
        jwk.common.key_id = Some(kid.to_owned());
        serde_json::to_value(jwk).unwrap()
    }

    fn jwks(keys: &[Value]) -> Value {
        json!({ "keys": keys })
    }

    /// A JWKS file holding `doc`; the directory lives as long as the guard.
    fn jwks_file(doc: &Value) -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("jwks.json");
        std::fs::write(&path, doc.to_string()).unwrap();
        (dir, path)
    }

    fn base_config() -> JwtConfig {
        JwtConfig {
            secret: Some(SECRET.into()),
            issuer: Some(ISS.into()),
            audience: Some(AUD.into()),
            ..JwtConfig::default()
        }
    }

    /// What verifying `token` gives, in one line: `ok <tenant> <scopes>
    /// <resource> <subject>`, `401 <message>` or `503 <message>`.
    async fn outcome(v: &JwtVerifier, token: &str) -> String {
        match v.verify(token).await {
            Ok(p) => {
                let Credential::Jwt { subject } = &p.credential else { panic!("not a JWT credential: {p:?}") };
                let resource = p.resource.as_ref().map_or("-", ResourceId::as_str);
                format!("ok {} {} {} {}", p.tenant, p.scopes, resource, subject.as_deref().unwrap_or("-"))
            }
            Err(AuthError::Invalid(m)) => format!("401 {m}"),
            Err(AuthError::Unavailable(e)) => format!("503 {e}"),
            Err(e) => format!("other {e}"),
        }
    }

    /// Checks each `(case, token, expected part of the outcome)`.
    async fn check(v: &JwtVerifier, cases: &[(&str, String, &str)]) {
        let mut failures = Vec::new();
        for (case, token, expected) in cases {
            let got = outcome(v, token).await;
            if !got.contains(expected) {
                failures.push(format!("{case}: expected `{expected}`, got `{got}`"));
            }
        }
        assert!(failures.is_empty(), "{}", failures.join("\n"));
    }

    fn unsigned(header: &Value, claims: &Value) -> String {
        let part = |v: &Value| URL_SAFE_NO_PAD.encode(v.to_string());
        format!("{}.{}.", part(header), part(claims))
    }

    #[tokio::test]
    async fn every_rule_of_a_token() {
        let (_dir, path) =
            jwks_file(&jwks(&[jwk(&rsa_a(), Algorithm::RS256, "a"), jwk(&ec_a(), Algorithm::ES256, "e")]));
        let v = JwtVerifier::open(&JwtConfig { jwks_file: Some(path), ..base_config() }).await.unwrap();
        let now = now_secs();
        let confused = EncodingKey::from_secret(RSA_A_PUB.as_bytes()).unwrap();
        let good = claims(&json!({}));
        let cases = [
            ("HS256", hs(&json!({})), "ok acme read,write - user-1"),
            ("RS256", rs("a", &json!({})), "ok acme read,write - user-1"),
            ("ES256", sign(Algorithm::ES256, Some("e"), &ec_a(), &good), "ok acme read,write"),
            ("RS256 without kid, one RSA key", sign(Algorithm::RS256, None, &rsa_a(), &good), "ok acme"),
            (
                "RS256 signed by another key",
                sign(Algorithm::RS256, Some("a"), &rsa_b(), &good),
                "401 the token's signature does not verify",
            ),
            (
                "HS256 with another secret",
                sign(Algorithm::HS256, None, &EncodingKey::from_secret(&[7; 32]).unwrap(), &good),
                "401 the token's signature does not verify",
            ),
            ("ES256 naming the RSA key", sign(Algorithm::ES256, Some("a"), &ec_a(), &good), "401 no ES256 key"),
            ("unknown kid", rs("nope", &json!({})), "401 no RS256 key"),
            (
                "alg none",
                unsigned(&json!({"alg": "none", "typ": "JWT"}), &good),
                "401 the token's algorithm `none` is not accepted",
            ),
            ("alg HS512", sign(Algorithm::HS512, None, &secret(), &good), "algorithm `HS512` is not accepted"),
            (
                "HS256 signed with the RSA public key",
                sign(Algorithm::HS256, Some("a"), &confused, &good),
                "401 the token's signature does not verify",
            ),
            ("expired beyond the leeway", hs(&json!({"exp": now - 120})), "401 the token has expired"),
            ("expired within the leeway", hs(&json!({"exp": now - 10})), "ok acme"),
            ("nbf in the future", hs(&json!({"nbf": now + 120})), "401 the token is not valid yet"),
            ("nbf within the leeway", hs(&json!({"nbf": now + 10})), "ok acme"),
            ("exp as a string", hs(&json!({"exp": "99999999999"})), "401 the token has no `exp` claim"),
            ("nbf as a string", hs(&json!({"nbf": "99999999999"})), "401 the token's `nbf` claim has the wrong type"),
            ("no exp", hs(&json!({"exp": null})), "401 the token has no `exp` claim"),
            ("wrong iss", hs(&json!({"iss": "https://evil.test"})), "401 the token's issuer (iss)"),
            ("no iss", hs(&json!({"iss": null})), "401 the token has no `iss` claim"),
            ("wrong aud", hs(&json!({"aud": "anon"})), "401 the token's audience (aud)"),
            ("aud list naming ours", hs(&json!({"aud": ["x", AUD]})), "ok acme"),
            ("no aud", hs(&json!({"aud": null})), "401 the token has no `aud` claim"),
            (
                "no tenant",
                hs(&json!({"tenant_id": null})),
                "401 the token has no `tenant_id` claim (auth.jwt.tenant_claim)",
            ),
            (
                "invalid tenant",
                hs(&json!({"tenant_id": "acme corp"})),
                "401 the token's `tenant_id` claim is not a tenant id",
            ),
            (
                "tenant not a string",
                hs(&json!({"tenant_id": 42})),
                "401 the token's `tenant_id` claim must be a string",
            ),
            ("scopes with commas", hs(&json!({"scope": "write,read"})), "ok acme read,write"),
            ("scopes as an array", hs(&json!({"scope": ["admin", "read"]})), "ok acme read,admin"),
            (
                "unknown scope",
                hs(&json!({"scope": "read owner"})),
                "401 the token's `scope` claim: `owner` is not a scope",
            ),
            ("unknown scope in an array", hs(&json!({"scope": ["read", "root"]})), "`root` is not a scope"),
            ("empty scopes", hs(&json!({"scope": ""})), "401 the token's `scope` claim"),
            ("empty scope array", hs(&json!({"scope": []})), "401 the token's `scope` claim: grants no scope"),
            ("scopes of another type", hs(&json!({"scope": 7})), "must be a string or an array of strings"),
            (
                "no scopes",
                hs(&json!({"scope": null})),
                "401 the token has no `scope` claim and this server grants no scopes by default",
            ),
            ("no subject", hs(&json!({"sub": null})), "ok acme read,write - -"),
            ("not base64", "a.b.c".to_owned(), "401 the token's header is not base64url"),
            (
                "header not JSON",
                format!("{}.e30.x", URL_SAFE_NO_PAD.encode("[]")),
                "401 the token's header is not a JSON object",
            ),
            ("signature not base64", format!("{}!", hs(&json!({}))), "401 the token is malformed"),
            ("too long", format!("{}.{}.x", "a".repeat(MAX_TOKEN_BYTES), "b"), "401 the token is longer than 16 KiB"),
        ];
        check(&v, &cases).await;
    }

    #[tokio::test]
    async fn claims_are_found_by_name_or_dotted_path() {
        let nested = JwtConfig { tenant_claim: "app_metadata.tenant_id".into(), ..base_config() };
        let v = JwtVerifier::open(&nested).await.unwrap();
        check(
            &v,
            &[
                ("dotted path", hs(&json!({"app_metadata": {"tenant_id": "t1"}})), "ok t1"),
                (
                    "missing leaf",
                    hs(&json!({"app_metadata": {"role": "x"}})),
                    "401 the token has no `app_metadata.tenant_id` claim",
                ),
                ("not an object", hs(&json!({"app_metadata": "t1"})), "has no `app_metadata.tenant_id` claim"),
            ],
        )
        .await;
        let namespaced = JwtConfig { tenant_claim: "https://memlayer.test/tenant".into(), ..base_config() };
        let v = JwtVerifier::open(&namespaced).await.unwrap();
        check(&v, &[("a claim name holding dots", hs(&json!({"https://memlayer.test/tenant": "t2"})), "ok t2")]).await;
    }

    #[tokio::test]
    async fn default_scopes_and_the_resource_claim() {
        let config = JwtConfig {
            default_scopes: Some("read".into()),
            resource_claim: Some("sub".into()),
            scopes_claim: "permissions".into(),
            ..base_config()
        };
        let v = JwtVerifier::open(&config).await.unwrap();
        check(
            &v,
            &[
                ("default scopes", hs(&json!({})), "ok acme read user-1 user-1"),
                ("own scopes win", hs(&json!({"permissions": ["write"]})), "ok acme write user-1"),
                (
                    "no resource",
                    hs(&json!({"sub": null})),
                    "401 the token has no `sub` claim (auth.jwt.resource_claim)",
                ),
                ("invalid resource", hs(&json!({"sub": "a b"})), "401 the token's `sub` claim is not a resource id"),
            ],
        )
        .await;
        let p = v.verify(&hs(&json!({}))).await.unwrap();
        assert_eq!(p.scopes, Scopes::only(Scope::Read));
        assert_eq!(p.resource, Some(ResourceId::parse("user-1").unwrap()));
        assert_eq!(p.credential, Credential::Jwt { subject: Some("user-1".into()) });
    }

    #[tokio::test]
    async fn unset_issuer_and_audience_are_not_checked() {
        let v = JwtVerifier::open(&JwtConfig { secret: Some(SECRET.into()), ..JwtConfig::default() }).await.unwrap();
        check(&v, &[("any iss and aud", hs(&json!({"iss": "x", "aud": "y"})), "ok acme")]).await;
    }

    #[tokio::test]
    async fn each_kind_of_token_needs_its_own_key_source() {
        let v = JwtVerifier::open(&base_config()).await.unwrap();
        check(&v, &[("RS256 without a JWKS", rs("a", &json!({})), "401 RS256 tokens are not accepted")]).await;
        let (_dir, path) = jwks_file(&jwks(&[jwk(&rsa_a(), Algorithm::RS256, "a")]));
        let v = JwtVerifier::open(&JwtConfig { jwks_file: Some(path), ..JwtConfig::default() }).await.unwrap();
        let confused = EncodingKey::from_secret(RSA_A_PUB.as_bytes()).unwrap();
        let token = sign(Algorithm::HS256, Some("a"), &confused, &claims(&json!({})));
        check(&v, &[("HS256 without a secret", token, "401 HS256 tokens are not accepted")]).await;
    }

    #[test]
    fn only_rs256_and_es256_signature_keys_are_taken_from_a_jwks() {
        let mut rsa = jwk(&rsa_a(), Algorithm::RS256, "a");
        let rsa_enc = {
            rsa["use"] = json!("enc");
            rsa.clone()
        };
        let rs384 = {
            let mut k = jwk(&rsa_a(), Algorithm::RS256, "b");
            k["alg"] = json!("RS384");
            k
        };
        let oct = json!({"kty": "oct", "k": URL_SAFE_NO_PAD.encode(SECRET), "kid": "s", "alg": "HS256"});
        let okp = json!({"kty": "OKP", "crv": "Ed25519", "x": URL_SAFE_NO_PAD.encode([1; 32]), "kid": "d"});
        let odd = json!({"kty": "RSA", "kid": "broken"});
        let good = [jwk(&rsa_a(), Algorithm::RS256, "ok"), jwk(&ec_a(), Algorithm::ES256, "ec")];
        let doc = jwks(&[rsa_enc, rs384, oct, okp, odd, good[0].clone(), good[1].clone()]);
        let keys = parse_jwks(doc.to_string().as_bytes()).unwrap();
        let kids: Vec<_> = keys.iter().map(|k| (k.kid.clone().unwrap(), k.alg)).collect();
        assert_eq!(kids, [("ok".to_owned(), Algorithm::RS256), ("ec".to_owned(), Algorithm::ES256)]);
        assert!(parse_jwks(br#"{"keys": []}"#).unwrap().is_empty());
        assert!(parse_jwks(b"[]").unwrap_err().contains("not a JWKS"));
    }

    #[tokio::test]
    async fn a_jwks_file_must_exist_and_hold_a_key() {
        let missing = JwtConfig { jwks_file: Some("/nonexistent/jwks.json".into()), ..JwtConfig::default() };
        let err = JwtVerifier::open(&missing).await.unwrap_err().to_string();
        assert!(err.contains("auth.jwt.jwks_file") && err.contains("cannot read"), "{err}");
        let (_dir, path) = jwks_file(&jwks(&[]));
        let err = JwtVerifier::open(&JwtConfig { jwks_file: Some(path), ..JwtConfig::default() })
            .await
            .unwrap_err()
            .to_string();
        assert!(err.contains("holds no RS256 or ES256 signing key"), "{err}");
    }

    #[test]
    fn settings_are_validated_naming_the_key() {
        let cases: [(&str, JwtConfig, &str); 11] = [
            (
                "no key source",
                JwtConfig::default(),
                "auth.jwt: auth.mode includes `jwt` but no key is configured: set auth.jwt.secret",
            ),
            (
                "short secret",
                JwtConfig { secret: Some("short".into()), ..JwtConfig::default() },
                "auth.jwt.secret: must be at least 32 bytes",
            ),
            (
                "plain http",
                JwtConfig { jwks_url: Some("http://idp.example/jwks".into()), ..JwtConfig::default() },
                "auth.jwt.jwks_url: must be an https:// URL",
            ),
            (
                "not a URL",
                JwtConfig { jwks_url: Some("jwks.json".into()), ..JwtConfig::default() },
                "auth.jwt.jwks_url: is not a URL",
            ),
            (
                "refetch floor above refresh",
                JwtConfig { jwks_min_refetch_secs: 600, ..base_config() },
                "auth.jwt.jwks_min_refetch_secs",
            ),
            (
                "no refetch floor",
                JwtConfig { jwks_min_refetch_secs: 0, ..base_config() },
                "auth.jwt.jwks_min_refetch_secs",
            ),
            (
                "long leeway",
                JwtConfig { leeway_secs: 3600, ..base_config() },
                "auth.jwt.leeway_secs: must be at most 300",
            ),
            (
                "empty tenant claim",
                JwtConfig { tenant_claim: " ".into(), ..base_config() },
                "auth.jwt.tenant_claim: must not be empty",
            ),
            (
                "empty audience",
                JwtConfig { audience: Some(String::new()), ..base_config() },
                "auth.jwt.audience: must not be empty",
            ),
            (
                "unknown default scope",
                JwtConfig { default_scopes: Some("read,owner".into()), ..base_config() },
                "auth.jwt.default_scopes: `owner` is not a scope",
            ),
            ("zero timeout", JwtConfig { jwks_timeout_ms: 0, ..base_config() }, "auth.jwt.jwks_timeout_ms"),
        ];
        for (case, config, expected) in cases {
            let got = config.validate().map_err(|e| e.to_string());
            assert!(got.as_ref().is_err_and(|e| e.contains(expected)), "{case}: expected `{expected}`, got {got:?}");
        }
        for url in [
            "https://p.supabase.co/auth/v1/.well-known/jwks.json",
            "http://127.0.0.1:9/j",
            "http://[::1]/j",
            "http://localhost:1/j",
        ] {
            let config = JwtConfig { jwks_url: Some(url.into()), ..JwtConfig::default() };
            assert!(config.validate().is_ok(), "{url}");
        }
        assert!(base_config().validate().is_ok());
    }

    #[test]
    #[allow(clippy::result_large_err, reason = "figment::Jail's closure returns figment's own error")]
    fn jwt_mode_needs_a_key_and_the_secret_comes_from_the_environment() {
        figment::Jail::expect_with(|jail| {
            jail.set_env("MEMLAYER_AUTH__MODE", "jwt");
            let err = crate::Config::load(None).unwrap_err().to_string();
            assert!(err.contains("auth.jwt.secret") && err.contains("auth.jwt.jwks_url"), "{err}");
            jail.set_env("MEMLAYER_AUTH__JWT__SECRET", SECRET);
            jail.set_env("MEMLAYER_AUTH__JWT__TENANT_CLAIM", "app_metadata.tenant_id");
            let config = crate::Config::load(None).unwrap();
            assert_eq!(config.auth.jwt.secret, Some(SECRET.into()));
            assert_eq!(config.auth.jwt.tenant_claim, "app_metadata.tenant_id");
            assert!(!format!("{config:?}").contains(SECRET), "the secret is never printed");
            Ok(())
        });
    }

    #[tokio::test]
    async fn a_cached_token_is_never_served_past_its_exp() {
        let config = JwtConfig { leeway_secs: 0, ..base_config() };
        let v = JwtVerifier::open(&config).await.unwrap();
        let exp = now_secs() + 1;
        let token = hs(&json!({"exp": exp}));
        assert!(outcome(&v, &token).await.starts_with("ok"));
        while now_secs() <= exp {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert_eq!(outcome(&v, &token).await, "401 the token has expired (exp)");
    }

    /// A JWKS server on a loopback port: what it serves (`None`: 503) and
    /// how often it was asked.
    #[derive(Clone)]
    struct Served {
        body: Arc<Mutex<Option<Value>>>,
        hits: Arc<AtomicUsize>,
    }

    impl Served {
        fn set(&self, body: Option<Value>) {
            *self.body.lock().unwrap() = body;
        }
        fn hits(&self) -> usize {
            self.hits.load(Ordering::SeqCst)
        }
        async fn wait_for_hits(&self, n: usize) {
            for _ in 0..250 {
                if self.hits() >= n {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            panic!("the JWKS server was asked {} times, expected {n}", self.hits());
        }
    }

    async fn serve_jwks(doc: Value) -> (String, Served) {
        use axum::response::IntoResponse as _;
        let served = Served { body: Arc::new(Mutex::new(Some(doc))), hits: Arc::default() };
        let state = served.clone();
        let app = axum::Router::new().route(
            "/jwks.json",
            axum::routing::get(move || {
                let state = state.clone();
                async move {
                    state.hits.fetch_add(1, Ordering::SeqCst);
                    match state.body.lock().unwrap().clone() {
                        Some(doc) => axum::Json(doc).into_response(),
                        None => axum::http::StatusCode::SERVICE_UNAVAILABLE.into_response(),
                    }
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/jwks.json", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        (url, served)
    }

    async fn remote_verifier(url: &str, refresh: Duration, floor: Duration, cache_ttl_secs: u64) -> JwtVerifier {
        let config = JwtConfig { jwks_url: Some(url.into()), cache_ttl_secs, ..base_config() };
        JwtVerifier::open_with(&config, Timing { refresh, floor, timeout: Duration::from_secs(5) }).await.unwrap()
    }

    const HOUR: Duration = Duration::from_secs(3600);

    #[tokio::test]
    async fn an_unknown_kid_triggers_one_refetch() {
        let (url, served) = serve_jwks(jwks(&[jwk(&rsa_a(), Algorithm::RS256, "a")])).await;
        let v = remote_verifier(&url, HOUR, Duration::ZERO, 60).await;
        assert_eq!(served.hits(), 1, "fetched once at start");
        assert!(outcome(&v, &rs("a", &json!({}))).await.starts_with("ok"));
        assert_eq!(served.hits(), 1, "a known kid needs no fetch");
        served.set(Some(jwks(&[jwk(&rsa_a(), Algorithm::RS256, "a"), jwk(&rsa_b(), Algorithm::RS256, "b")])));
        let by_b = |sub: &str| sign(Algorithm::RS256, Some("b"), &rsa_b(), &claims(&json!({"sub": sub})));
        assert!(outcome(&v, &by_b("u1")).await.starts_with("ok acme"));
        assert_eq!(served.hits(), 2, "the unknown kid fetched the JWKS once");
        assert!(outcome(&v, &by_b("u2")).await.starts_with("ok acme"));
        assert_eq!(served.hits(), 2, "the new key is kept");
    }

    #[tokio::test]
    async fn a_flood_of_unknown_kids_fetches_at_most_once_per_floor() {
        let (url, served) = serve_jwks(jwks(&[jwk(&rsa_a(), Algorithm::RS256, "a")])).await;
        let v = Arc::new(remote_verifier(&url, HOUR, HOUR, 60).await);
        let flood: Vec<_> = (0..50)
            .map(|i| {
                let v = v.clone();
                tokio::spawn(async move { outcome(&v, &rs(&format!("made-up-{i}"), &json!({}))).await })
            })
            .collect();
        for task in flood {
            assert!(task.await.unwrap().starts_with("401 no RS256 key"));
        }
        assert_eq!(served.hits(), 1, "only the fetch at start: the floor held");
    }

    #[tokio::test]
    async fn concurrent_unknown_kids_share_one_fetch() {
        let (url, served) = serve_jwks(jwks(&[jwk(&rsa_a(), Algorithm::RS256, "a")])).await;
        // The floor allows a fetch now, but only one: the others wait for it and find the key.
        let v = Arc::new(remote_verifier(&url, HOUR, Duration::from_millis(1), 60).await);
        tokio::time::sleep(Duration::from_millis(5)).await;
        served.set(Some(jwks(&[jwk(&rsa_b(), Algorithm::RS256, "b")])));
        let tasks: Vec<_> = (0..20)
            .map(|i| {
                let v = v.clone();
                let token = sign(Algorithm::RS256, Some("b"), &rsa_b(), &claims(&json!({"sub": format!("u{i}")})));
                tokio::spawn(async move { outcome(&v, &token).await })
            })
            .collect();
        for task in tasks {
            assert!(task.await.unwrap().starts_with("ok acme"));
        }
        assert_eq!(served.hits(), 2);
    }

    #[tokio::test]
    async fn while_the_jwks_server_is_down_the_keys_fetched_before_keep_working() {
        let (url, served) = serve_jwks(jwks(&[jwk(&rsa_a(), Algorithm::RS256, "a")])).await;
        // Always stale: every key lookup also starts a background refresh.
        let v = remote_verifier(&url, Duration::ZERO, Duration::ZERO, 0).await;
        served.set(None);
        assert!(outcome(&v, &rs("a", &json!({"sub": "u1"}))).await.starts_with("ok acme"));
        served.wait_for_hits(2).await;
        assert!(outcome(&v, &rs("a", &json!({"sub": "u2"}))).await.starts_with("ok acme"));
        let got = outcome(&v, &rs("unknown", &json!({}))).await;
        assert!(got.starts_with("503 ") && got.contains("cannot be fetched"), "{got}");
        served.set(Some(jwks(&[jwk(&rsa_a(), Algorithm::RS256, "a")])));
        assert!(outcome(&v, &rs("unknown", &json!({}))).await.starts_with("401 no RS256 key"), "back up: 401");
    }

    #[tokio::test]
    async fn without_any_key_a_token_is_503_not_401() {
        let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}/jwks.json", closed.local_addr().unwrap());
        drop(closed);
        let v = remote_verifier(&url, HOUR, Duration::ZERO, 60).await;
        let got = outcome(&v, &rs("a", &json!({}))).await;
        assert!(got.starts_with("503 ") && got.contains("the JWKS at http://127.0.0.1"), "{got}");
        assert!(outcome(&v, &hs(&json!({}))).await.starts_with("ok acme"), "the shared secret still works");
    }

    #[tokio::test]
    async fn stale_keys_are_replaced_in_the_background() {
        let (url, served) = serve_jwks(jwks(&[jwk(&rsa_a(), Algorithm::RS256, "a")])).await;
        let v = remote_verifier(&url, Duration::ZERO, Duration::ZERO, 0).await;
        served.set(Some(jwks(&[jwk(&rsa_b(), Algorithm::RS256, "b")])));
        assert!(outcome(&v, &rs("a", &json!({"sub": "u1"}))).await.starts_with("ok"), "served from the keys in use");
        served.wait_for_hits(2).await;
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(
            outcome(&v, &rs("a", &json!({"sub": "u2"}))).await.starts_with("401 no RS256 key"),
            "key a was retired"
        );
    }

    #[tokio::test]
    async fn a_verified_token_is_cached_until_the_ttl() {
        for (cache_ttl_secs, expected) in [(60, "ok acme"), (0, "401 no RS256 key")] {
            let (url, served) = serve_jwks(jwks(&[jwk(&rsa_a(), Algorithm::RS256, "a")])).await;
            let v = remote_verifier(&url, HOUR, Duration::ZERO, cache_ttl_secs).await;
            let token = rs("a", &json!({}));
            assert!(outcome(&v, &token).await.starts_with("ok"));
            // Key a leaves the JWKS; a token of key b makes the verifier fetch it.
            served.set(Some(jwks(&[jwk(&rsa_b(), Algorithm::RS256, "b")])));
            let by_b = sign(Algorithm::RS256, Some("b"), &rsa_b(), &claims(&json!({})));
            assert!(outcome(&v, &by_b).await.starts_with("ok"));
            let got = outcome(&v, &token).await;
            assert!(got.starts_with(expected), "cache_ttl_secs = {cache_ttl_secs}: {got}");
        }
    }
}
