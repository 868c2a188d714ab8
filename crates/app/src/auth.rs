//! Who may enter: [`AuthConfig`] (`auth.*`), the [`Authenticator`] that turns
//! a request's credential into a [`Principal`], and the [`Verifier`]s it
//! delegates to (API keys, JSON Web Tokens).
//!
//! The tenant comes from the credential, never from a header: a header that
//! names another tenant is refused ([`AuthError::TenantMismatch`]). Only
//! `auth.mode = none`, allowed on loopback alone, takes the tenant from the
//! `X-Tenant-Id` header, as before authentication existed.

use std::net::SocketAddr;
use std::sync::Arc;

use async_trait::async_trait;
use memlayer_domain::{PresentedKey, Principal, TenantId};
use memlayer_ports::StoreError;
use serde::{Deserialize, Serialize};

use crate::BuildError;

/// One way of proving who one is (`auth.mode`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AuthMode {
    /// No credential: every caller may do everything in the tenant it names.
    /// Refused unless the server listens on loopback only.
    None,
    /// `Authorization: Bearer ml_<id>_<secret>` (or `X-Api-Key`).
    ApiKey,
    /// `Authorization: Bearer <JWT>`, Supabase-style.
    Jwt,
}

impl AuthMode {
    const ALL: [AuthMode; 3] = [AuthMode::None, AuthMode::ApiKey, AuthMode::Jwt];

    /// The mode's name in `auth.mode`.
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            AuthMode::None => "none",
            AuthMode::ApiKey => "api_key",
            AuthMode::Jwt => "jwt",
        }
    }
}

/// `auth.mode`: one mode or several (`"api_key,jwt"` or a TOML list); a
/// request may carry a credential of any listed kind.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct AuthModes(Vec<AuthMode>);

impl AuthModes {
    /// Whether `mode` is enabled.
    #[must_use]
    pub fn has(&self, mode: AuthMode) -> bool {
        self.0.contains(&mode)
    }

    /// The modes, as configured.
    #[must_use]
    pub fn as_slice(&self) -> &[AuthMode] {
        &self.0
    }

    /// Parses `api_key,jwt` (commas or spaces).
    ///
    /// # Errors
    /// A message naming the unknown mode.
    pub fn parse(list: &str) -> Result<Self, String> {
        let modes = list
            .split([',', ' '])
            .filter(|s| !s.is_empty())
            .map(|m| {
                let m = m.trim();
                AuthMode::ALL
                    .into_iter()
                    .find(|mode| mode.as_str() == m)
                    .ok_or_else(|| format!("`{m}` is not a mode (none, api_key, jwt)"))
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Self(modes))
    }
}

impl std::fmt::Display for AuthModes {
    /// `api_key,jwt`: the form [`AuthModes::parse`] reads back.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let names: Vec<&str> = self.0.iter().map(|m| m.as_str()).collect();
        f.write_str(&names.join(","))
    }
}

impl Default for AuthModes {
    fn default() -> Self {
        Self(vec![AuthMode::None])
    }
}

impl<'de> Deserialize<'de> for AuthModes {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            One(String),
            Many(Vec<AuthMode>),
        }
        match Raw::deserialize(d)? {
            Raw::One(s) => Self::parse(&s).map_err(serde::de::Error::custom),
            Raw::Many(v) => Ok(Self(v)),
        }
    }
}

/// Authentication settings.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuthConfig {
    /// How callers prove who they are: `none` (loopback only), `api_key`,
    /// `jwt`, or `api_key,jwt`.
    pub mode: AuthModes,
    /// With `mode = none`, the `Host` header values accepted besides
    /// `localhost`, `127.0.0.1` and `[::1]` (with any port): a guard against
    /// DNS rebinding, where a web page makes a browser send requests to a
    /// loopback server under another name.
    pub allowed_hosts: Vec<String>,
    /// API keys (`auth.keys.*`).
    pub keys: crate::keys::KeysConfig,
    /// JSON Web Tokens (`auth.jwt.*`), when `mode` includes `jwt`.
    pub jwt: crate::JwtConfig,
}

impl AuthConfig {
    /// Checks the modes' consistency.
    ///
    /// # Errors
    /// A message for `auth.mode`.
    pub fn validate(&self) -> Result<(), String> {
        let modes = self.mode.as_slice();
        if modes.is_empty() {
            return Err("must name at least one of none, api_key, jwt".into());
        }
        if self.mode.has(AuthMode::None) && modes.len() > 1 {
            return Err("`none` cannot be combined with other modes: it would let any caller in".into());
        }
        Ok(())
    }

    /// Whether the server may listen on `addr` with these settings: without
    /// authentication only on a loopback address.
    ///
    /// # Errors
    /// A message saying what to set.
    pub fn check_exposure(&self, addr: SocketAddr) -> Result<(), String> {
        if self.mode.has(AuthMode::None) && !addr.ip().is_loopback() {
            return Err(format!(
                "refusing to serve {addr} without authentication: with auth.mode = \"none\" memlayer listens on \
                 loopback only. Set auth.mode (MEMLAYER_AUTH__MODE) to \"api_key\" (create a key with \
                 `memlayer keys create --tenant T --scopes read,write`) or \"jwt\" (set auth.jwt.*), or listen \
                 on 127.0.0.1"
            ));
        }
        Ok(())
    }

    /// With `mode = none`, whether a request's `Host` header value is a
    /// loopback name or one of `allowed_hosts` (the port is ignored), or
    /// absent. Always true with authentication on.
    #[must_use]
    pub fn host_allowed(&self, host: Option<&str>) -> bool {
        if !self.mode.has(AuthMode::None) {
            return true;
        }
        // Browsers, the only clients DNS rebinding can steer, always send
        // `Host`; a request without one (HTTP/1.0, an in-process call) is
        // not such an attack.
        let Some(host) = host else { return true };
        let name = strip_port(host);
        ["localhost", "127.0.0.1", "[::1]"].iter().any(|h| name.eq_ignore_ascii_case(h))
            || self.allowed_hosts.iter().any(|h| strip_port(h).eq_ignore_ascii_case(name))
    }
}

/// `host` without a trailing `:port` (`[::1]:8080` → `[::1]`).
fn strip_port(host: &str) -> &str {
    let host = host.trim();
    if host.starts_with('[') {
        return host.find(']').map_or(host, |end| &host[..=end]);
    }
    match host.rsplit_once(':') {
        Some((name, port)) if port.bytes().all(|b| b.is_ascii_digit()) => name,
        _ => host,
    }
}

/// Why a request was not let in.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    /// No credential where one is required (HTTP 401).
    #[error("this server requires a credential: send `Authorization: Bearer <{accepted}>`")]
    Missing {
        /// What may be sent (`API key or JWT`).
        accepted: String,
    },
    /// A credential that does not let the caller in: malformed, unknown,
    /// wrong secret, bad signature, expired, revoked (HTTP 401). The message
    /// says which as far as that does not help a guesser.
    #[error("{0}")]
    Invalid(String),
    /// A valid credential, but the `X-Tenant-Id` header names another tenant
    /// (HTTP 403).
    #[error(
        "X-Tenant-Id names a tenant other than the credential's; drop the header or use a credential of that tenant"
    )]
    TenantMismatch,
    /// The credential could not be checked now (HTTP 503).
    #[error("cannot check the credential now: {0}")]
    Unavailable(#[from] StoreError),
}

/// Checks one kind of bearer token.
#[async_trait]
pub trait Verifier: Send + Sync + std::fmt::Debug {
    /// The principal `token` proves.
    ///
    /// # Errors
    /// [`AuthError::Invalid`] for a token that does not let the caller in,
    /// [`AuthError::Unavailable`] when it cannot be checked now.
    async fn verify(&self, token: &str) -> Result<Principal, AuthError>;
}

/// Turns a request's credential into a [`Principal`], by the configured modes.
#[derive(Debug, Clone)]
pub struct Authenticator {
    anonymous: bool,
    default_tenant: TenantId,
    keys: Option<Arc<dyn Verifier>>,
    jwt: Option<Arc<dyn Verifier>>,
}

impl Authenticator {
    /// An authenticator that lets anyone in (`auth.mode = none`), acting for
    /// the tenant a request names or `default_tenant`.
    #[must_use]
    pub fn anonymous(default_tenant: TenantId) -> Self {
        Self { anonymous: true, default_tenant, keys: None, jwt: None }
    }

    /// An authenticator that requires a credential checked by `keys` (API
    /// keys) or `jwt` (JSON Web Tokens); `None` disables that kind.
    #[must_use]
    pub fn new(keys: Option<Arc<dyn Verifier>>, jwt: Option<Arc<dyn Verifier>>, default_tenant: TenantId) -> Self {
        Self { anonymous: false, default_tenant, keys, jwt }
    }

    /// Whether callers need no credential.
    #[must_use]
    pub fn is_anonymous(&self) -> bool {
        self.anonymous
    }

    /// What a caller may send, for `WWW-Authenticate` and error messages.
    #[must_use]
    pub fn accepted(&self) -> String {
        match (&self.keys, &self.jwt) {
            (Some(_), Some(_)) => "API key or JWT".into(),
            (Some(_), None) => "API key".into(),
            (None, Some(_)) => "JWT".into(),
            (None, None) => "nothing".into(),
        }
    }

    /// The principal of a request that presents `bearer` (the token of an
    /// `Authorization: Bearer` or `X-Api-Key` header) and names
    /// `named_tenant` (its `X-Tenant-Id` header), if any.
    ///
    /// # Errors
    /// [`AuthError`]: a missing or invalid credential, a tenant mismatch,
    /// or a store that cannot be reached.
    pub async fn authenticate(
        &self,
        bearer: Option<&str>,
        named_tenant: Option<&TenantId>,
    ) -> Result<Principal, AuthError> {
        if self.anonymous {
            if bearer.is_some() {
                return Err(AuthError::Invalid(
                    "this server does not check credentials (auth.mode = none): send no Authorization header".into(),
                ));
            }
            let tenant = named_tenant.cloned().unwrap_or_else(|| self.default_tenant.clone());
            return Ok(Principal::anonymous(tenant));
        }
        let Some(token) = bearer.map(str::trim).filter(|t| !t.is_empty()) else {
            return Err(AuthError::Missing { accepted: self.accepted() });
        };
        let verifier = if token.starts_with(PresentedKey::PREFIX) {
            self.keys.as_ref().ok_or_else(|| AuthError::Invalid("API keys are not accepted here".into()))?
        } else if token.split('.').count() == 3 {
            self.jwt.as_ref().ok_or_else(|| AuthError::Invalid("JWTs are not accepted here".into()))?
        } else {
            return Err(AuthError::Invalid(format!(
                "the bearer token is neither an API key (`ml_…`) nor a JWT; send a {}",
                self.accepted()
            )));
        };
        let principal = verifier.verify(token).await?;
        if named_tenant.is_some_and(|named| *named != principal.tenant) {
            return Err(AuthError::TenantMismatch);
        }
        Ok(principal)
    }
}

/// The authenticator `config.auth.mode` asks for, with `keys` checking API
/// keys and `jwt` checking tokens.
///
/// # Errors
/// [`BuildError::Auth`] when a mode is asked for whose verifier is missing.
pub(crate) fn authenticator(
    config: &crate::Config,
    keys: Option<Arc<dyn Verifier>>,
    jwt: Option<Arc<dyn Verifier>>,
) -> Result<Authenticator, BuildError> {
    let default_tenant = TenantId::parse(config.memory.default_tenant.clone())
        .map_err(|e| BuildError::Auth(format!("memory.default_tenant: {}", e.reason)))?;
    let modes = &config.auth.mode;
    if modes.has(AuthMode::None) {
        return Ok(Authenticator::anonymous(default_tenant));
    }
    let keys = if modes.has(AuthMode::ApiKey) {
        Some(keys.ok_or_else(|| BuildError::Auth("api_key: no key store is wired".into()))?)
    } else {
        None
    };
    let jwt = if modes.has(AuthMode::Jwt) {
        Some(jwt.ok_or_else(|| BuildError::Auth("jwt: no token verifier is configured (auth.jwt.*)".into()))?)
    } else {
        None
    };
    Ok(Authenticator::new(keys, jwt, default_tenant))
}

#[cfg(test)]
mod tests {
    use memlayer_domain::{Credential, KeyId, Scope, Scopes};

    use super::*;

    #[derive(Debug)]
    struct Fixed(Result<Principal, &'static str>);

    #[async_trait]
    impl Verifier for Fixed {
        async fn verify(&self, _: &str) -> Result<Principal, AuthError> {
            self.0.clone().map_err(|e| AuthError::Invalid(e.into()))
        }
    }

    fn tenant(s: &str) -> TenantId {
        TenantId::parse(s).unwrap()
    }

    fn key_principal() -> Principal {
        Principal {
            tenant: tenant("acme"),
            scopes: Scopes::only(Scope::Read),
            resource: None,
            credential: Credential::ApiKey(KeyId::parse("0123456789abcdef").unwrap()),
        }
    }

    const KEY: &str = "ml_0123456789abcdef_0000";
    const JWT: &str = "aaa.bbb.ccc";

    #[tokio::test]
    async fn anonymous_mode_takes_the_named_or_default_tenant_and_refuses_tokens() {
        let auth = Authenticator::anonymous(tenant("default"));
        assert_eq!(auth.authenticate(None, None).await.unwrap().tenant, tenant("default"));
        let p = auth.authenticate(None, Some(&tenant("b"))).await.unwrap();
        assert_eq!((p.tenant, p.scopes), (tenant("b"), Scopes::ALL));
        assert!(matches!(auth.authenticate(Some(KEY), None).await, Err(AuthError::Invalid(_))));
    }

    #[tokio::test]
    async fn tokens_go_to_their_verifier_and_the_tenant_comes_from_the_credential() {
        let keys: Arc<dyn Verifier> = Arc::new(Fixed(Ok(key_principal())));
        let jwt: Arc<dyn Verifier> = Arc::new(Fixed(Err("jwt says no")));
        let auth = Authenticator::new(Some(keys), Some(jwt), tenant("default"));
        assert_eq!(auth.authenticate(Some(KEY), None).await.unwrap(), key_principal());
        assert_eq!(auth.authenticate(Some(KEY), Some(&tenant("acme"))).await.unwrap(), key_principal());
        assert!(matches!(auth.authenticate(Some(KEY), Some(&tenant("other"))).await, Err(AuthError::TenantMismatch)));
        let Err(AuthError::Invalid(msg)) = auth.authenticate(Some(JWT), None).await else { panic!() };
        assert_eq!(msg, "jwt says no");
        assert!(matches!(auth.authenticate(Some("opaque"), None).await, Err(AuthError::Invalid(_))));
        let Err(AuthError::Missing { accepted }) = auth.authenticate(None, Some(&tenant("acme"))).await else {
            panic!()
        };
        assert_eq!(accepted, "API key or JWT");
        assert!(matches!(auth.authenticate(Some("  "), None).await, Err(AuthError::Missing { .. })));
    }

    #[tokio::test]
    async fn a_disabled_kind_is_refused_by_name() {
        let keys: Arc<dyn Verifier> = Arc::new(Fixed(Ok(key_principal())));
        let auth = Authenticator::new(Some(keys), None, tenant("default"));
        let Err(AuthError::Invalid(msg)) = auth.authenticate(Some(JWT), None).await else { panic!() };
        assert!(msg.contains("JWTs are not accepted"), "{msg}");
    }

    #[test]
    fn modes_parse_from_a_string_or_a_list_and_none_stands_alone() {
        let c: AuthConfig = serde_json::from_str(r#"{"mode": "api_key,jwt"}"#).unwrap();
        assert!(c.mode.has(AuthMode::ApiKey) && c.mode.has(AuthMode::Jwt) && c.validate().is_ok());
        let c: AuthConfig = serde_json::from_str(r#"{"mode": ["jwt"]}"#).unwrap();
        assert_eq!(c.mode.as_slice(), &[AuthMode::Jwt]);
        assert!(serde_json::from_str::<AuthConfig>(r#"{"mode": "apikey"}"#).is_err());
        let c: AuthConfig = serde_json::from_str(r#"{"mode": "none,api_key"}"#).unwrap();
        assert!(c.validate().unwrap_err().contains("cannot be combined"));
        let c: AuthConfig = serde_json::from_str(r#"{"mode": ""}"#).unwrap();
        assert!(c.validate().is_err());
        assert_eq!(AuthConfig::default().mode.as_slice(), &[AuthMode::None]);
        assert_eq!(AuthModes::parse("jwt api_key").unwrap().to_string(), "jwt,api_key");
    }

    #[test]
    fn no_authentication_only_on_loopback() {
        let none = AuthConfig::default();
        assert!(none.check_exposure("127.0.0.1:8080".parse().unwrap()).is_ok());
        assert!(none.check_exposure("[::1]:8080".parse().unwrap()).is_ok());
        let err = none.check_exposure("0.0.0.0:8080".parse().unwrap()).unwrap_err();
        assert!(err.contains("auth.mode") && err.contains("0.0.0.0:8080"), "{err}");
        let keys = AuthConfig { mode: AuthModes::parse("api_key").unwrap(), ..AuthConfig::default() };
        assert!(keys.check_exposure("0.0.0.0:8080".parse().unwrap()).is_ok());
    }

    #[test]
    fn without_authentication_only_loopback_or_listed_hosts_are_served() {
        let none = AuthConfig { allowed_hosts: vec!["memlayer.internal".into()], ..AuthConfig::default() };
        for ok in ["localhost", "localhost:8080", "127.0.0.1:1", "[::1]:8080", "LOCALHOST", "memlayer.internal:80"] {
            assert!(none.host_allowed(Some(ok)), "{ok}");
        }
        for bad in ["evil.example", "evil.example:8080", "127.0.0.1.evil.example", "localhost.evil", "[::2]"] {
            assert!(!none.host_allowed(Some(bad)), "{bad}");
        }
        assert!(none.host_allowed(None));
        let keys = AuthConfig { mode: AuthModes::parse("api_key").unwrap(), ..AuthConfig::default() };
        assert!(keys.host_allowed(Some("evil.example")));
    }

    #[test]
    fn ports_are_stripped_from_hosts() {
        assert_eq!(strip_port("a:80"), "a");
        assert_eq!(strip_port("[::1]:80"), "[::1]");
        assert_eq!(strip_port("[::1]"), "[::1]");
        assert_eq!(strip_port("a"), "a");
    }
}
