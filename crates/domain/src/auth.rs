//! Who a caller is: [`Scope`]s, API keys ([`KeyId`], [`ApiKey`],
//! [`PresentedKey`]) and the [`Principal`] a credential resolves to.
//!
//! No secret is ever held here in a form that can be logged: a presented
//! key's secret part is kept only until it is hashed, and its `Debug` hides it.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::{DomainError, ResourceId, TenantId, Timestamp};

/// What a credential allows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Scope {
    /// Reads of memory: GET routes, search, context, embedding a text.
    Read,
    /// Changes to memory: create, append, state, delete.
    Write,
    /// The catalog (models, agents, tools, settings), keys and retention.
    Admin,
}

impl Scope {
    /// Every scope, in order.
    pub const ALL: [Scope; 3] = [Scope::Read, Scope::Write, Scope::Admin];

    /// The scope's name as written in keys, tokens and documents.
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            Scope::Read => "read",
            Scope::Write => "write",
            Scope::Admin => "admin",
        }
    }

    const fn bit(self) -> u8 {
        match self {
            Scope::Read => 1,
            Scope::Write => 2,
            Scope::Admin => 4,
        }
    }
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Scope {
    type Err = DomainError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Scope::ALL
            .into_iter()
            .find(|scope| scope.as_str() == s)
            .ok_or_else(|| DomainError::new("scopes", format!("`{s}` is not a scope (read, write, admin)")))
    }
}

/// A set of [`Scope`]s. Scopes are independent: `admin` does not imply
/// `read` or `write`, so a key is exactly as strong as what it lists.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Scopes(u8);

impl Scopes {
    /// No scope at all.
    pub const NONE: Scopes = Scopes(0);
    /// Every scope (what `auth.mode = none` grants on loopback).
    pub const ALL: Scopes = Scopes(7);

    /// The set holding `scope` alone.
    #[must_use]
    pub const fn only(scope: Scope) -> Self {
        Self(scope.bit())
    }

    /// This set with `scope` added.
    #[must_use]
    pub const fn with(self, scope: Scope) -> Self {
        Self(self.0 | scope.bit())
    }

    /// Whether `scope` is in the set.
    #[must_use]
    pub const fn contains(self, scope: Scope) -> bool {
        self.0 & scope.bit() != 0
    }

    /// Whether the set is empty.
    #[must_use]
    pub const fn is_empty(self) -> bool {
        self.0 == 0
    }

    /// The scopes in the set, in order.
    pub fn iter(self) -> impl Iterator<Item = Scope> {
        Scope::ALL.into_iter().filter(move |s| self.contains(*s))
    }

    /// Parses a comma- or space-separated list (`read,write`, as in
    /// `--scopes` and in OAuth's `scope` claim). Empty items are ignored;
    /// an unknown name is an error naming it; an empty list is an error.
    ///
    /// # Errors
    /// A [`DomainError`] on field `scopes`.
    pub fn parse_list(list: &str) -> Result<Self, DomainError> {
        let scopes = Self::from_names(list.split([',', ' ']).filter(|s| !s.is_empty()))?;
        if scopes.is_empty() {
            return Err(DomainError::new("scopes", "at least one of read, write, admin is required"));
        }
        Ok(scopes)
    }

    /// The set of `names`, each a scope's name.
    ///
    /// # Errors
    /// A [`DomainError`] naming the first unknown name.
    pub fn from_names<'a>(names: impl IntoIterator<Item = &'a str>) -> Result<Self, DomainError> {
        names.into_iter().try_fold(Self::NONE, |set, name| Ok(set.with(name.trim().parse()?)))
    }
}

impl FromIterator<Scope> for Scopes {
    fn from_iter<I: IntoIterator<Item = Scope>>(iter: I) -> Self {
        iter.into_iter().fold(Self::NONE, Self::with)
    }
}

impl fmt::Display for Scopes {
    /// `read,write`: the form [`Scopes::parse_list`] reads back.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names: Vec<&str> = self.iter().map(Scope::as_str).collect();
        f.write_str(&names.join(","))
    }
}

impl fmt::Debug for Scopes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Scopes({self})")
    }
}

impl Serialize for Scopes {
    /// A list of names: `["read", "write"]`.
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(self.iter())
    }
}

impl<'de> Deserialize<'de> for Scopes {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let names = Vec::<Scope>::deserialize(d)?;
        Ok(names.into_iter().collect())
    }
}

/// The public id of an API key: 16 lowercase hex digits, the part of the
/// key between `ml_` and the secret. It is how a key is found, so it is
/// unique across tenants.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(transparent)]
pub struct KeyId(String);

impl KeyId {
    /// Length of a key id, in hex digits (64 bits).
    pub const LEN: usize = 16;

    /// Validates `value`.
    ///
    /// # Errors
    /// A [`DomainError`] on field `key_id` unless `value` is
    /// [`KeyId::LEN`] lowercase hex digits.
    pub fn parse(value: impl Into<String>) -> Result<Self, DomainError> {
        let value = value.into();
        if is_lower_hex(&value, Self::LEN) {
            Ok(Self(value))
        } else {
            Err(DomainError::new("key_id", format!("must be {} lowercase hex digits", Self::LEN)))
        }
    }

    /// The id as text.
    #[must_use]
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl FromStr for KeyId {
    type Err = DomainError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

impl<'de> Deserialize<'de> for KeyId {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Self::parse(String::deserialize(d)?).map_err(serde::de::Error::custom)
    }
}

/// An API key as a caller presents it: `ml_<key id>_<secret>`, the secret
/// 64 lowercase hex digits (256 bits). Parsing checks the shape only;
/// whether the key exists and the secret matches is for the key store.
#[derive(Clone, PartialEq, Eq)]
pub struct PresentedKey {
    id: KeyId,
    secret: String,
}

impl PresentedKey {
    /// The prefix of every memlayer API key.
    pub const PREFIX: &'static str = "ml_";
    /// Length of the secret part, in hex digits.
    pub const SECRET_LEN: usize = 64;

    /// Splits `token` into its id and secret.
    ///
    /// # Errors
    /// A [`DomainError`] on field `api_key` saying what shape is expected;
    /// it never repeats the token.
    pub fn parse(token: &str) -> Result<Self, DomainError> {
        let bad = || {
            DomainError::new(
                "api_key",
                format!("expected `ml_<{} hex digits>_<{} hex digits>`", KeyId::LEN, Self::SECRET_LEN),
            )
        };
        let rest = token.strip_prefix(Self::PREFIX).ok_or_else(bad)?;
        let (id, secret) = rest.split_once('_').ok_or_else(bad)?;
        if !is_lower_hex(secret, Self::SECRET_LEN) {
            return Err(bad());
        }
        let id = KeyId::parse(id).map_err(|_| bad())?;
        Ok(Self { id, secret: secret.to_owned() })
    }

    /// Assembles the key a caller will present, from a fresh id and secret.
    ///
    /// # Errors
    /// A [`DomainError`] when `secret` is not [`Self::SECRET_LEN`] lowercase hex digits.
    pub fn new(id: KeyId, secret: String) -> Result<Self, DomainError> {
        if !is_lower_hex(&secret, Self::SECRET_LEN) {
            return Err(DomainError::new("secret", format!("must be {} lowercase hex digits", Self::SECRET_LEN)));
        }
        Ok(Self { id, secret })
    }

    /// The key's id.
    #[must_use]
    pub fn id(&self) -> &KeyId {
        &self.id
    }

    /// The secret part (to hash; never log it).
    #[must_use]
    pub fn secret(&self) -> &str {
        &self.secret
    }

    /// The whole key, `ml_<id>_<secret>`: shown once, when created.
    #[must_use]
    pub fn reveal(&self) -> String {
        format!("{}{}_{}", Self::PREFIX, self.id, self.secret)
    }
}

impl fmt::Debug for PresentedKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PresentedKey").field("id", &self.id).field("secret", &"<hidden>").finish()
    }
}

/// An API key's record: everything but its secret, which is stored only
/// as a hash and never read back.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApiKey {
    /// The key's public id.
    pub id: KeyId,
    /// The tenant every request made with the key acts for.
    pub tenant: TenantId,
    /// A label for people (`"ci"`, `"support bot"`), not unique.
    pub name: Option<String>,
    /// What the key allows.
    pub scopes: Scopes,
    /// When set, the key sees and creates only this resource's threads.
    pub resource: Option<ResourceId>,
    /// When the key was created.
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: Timestamp,
    /// After this moment the key is refused.
    #[serde(with = "time::serde::rfc3339::option")]
    pub expires_at: Option<Timestamp>,
    /// When the key was revoked; a revoked key is refused.
    #[serde(with = "time::serde::rfc3339::option")]
    pub revoked_at: Option<Timestamp>,
    /// When the key was last used (recorded in batches, so it may lag by
    /// the flush interval).
    #[serde(with = "time::serde::rfc3339::option")]
    pub last_used_at: Option<Timestamp>,
}

impl ApiKey {
    /// Why the key cannot be used at `now`, or `None` when it can.
    #[must_use]
    pub fn refusal(&self, now: Timestamp) -> Option<&'static str> {
        if self.revoked_at.is_some_and(|at| at <= now) {
            Some("the API key is revoked")
        } else if self.expires_at.is_some_and(|at| at <= now) {
            Some("the API key has expired")
        } else {
            None
        }
    }
}

/// Longest accepted API key name, in bytes.
pub const MAX_KEY_NAME_BYTES: usize = 200;

/// Validates an API key's `name` label.
///
/// # Errors
/// A [`DomainError`] on field `name` when it is empty, too long, or holds
/// control characters.
pub fn parse_key_name(name: &str) -> Result<String, DomainError> {
    let name = name.trim();
    if name.is_empty() || name.len() > MAX_KEY_NAME_BYTES || name.chars().any(char::is_control) {
        return Err(DomainError::new(
            "name",
            format!("must be 1 to {MAX_KEY_NAME_BYTES} bytes without control characters"),
        ));
    }
    Ok(name.to_owned())
}

/// How a caller proved who it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Credential {
    /// Nothing: `auth.mode = none`, accepted on loopback only.
    Anonymous,
    /// An API key.
    ApiKey(KeyId),
    /// A JSON Web Token; `subject` is its `sub` claim when present.
    Jwt {
        /// The token's `sub` claim.
        subject: Option<String>,
    },
}

/// Who a caller is once its credential is checked: the tenant it acts for,
/// what it may do, and the one resource it is bound to, if any.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    /// The tenant every read and write of the request is scoped to.
    pub tenant: TenantId,
    /// What the caller may do.
    pub scopes: Scopes,
    /// When set, the caller sees and creates only this resource's threads.
    pub resource: Option<ResourceId>,
    /// How the caller proved it.
    pub credential: Credential,
}

impl Principal {
    /// An anonymous caller with every scope (`auth.mode = none`).
    #[must_use]
    pub fn anonymous(tenant: TenantId) -> Self {
        Self { tenant, scopes: Scopes::ALL, resource: None, credential: Credential::Anonymous }
    }

    /// Whether the caller holds `scope`.
    #[must_use]
    pub fn may(&self, scope: Scope) -> bool {
        self.scopes.contains(scope)
    }
}

/// What a caller may reach: a whole tenant, or only the threads of one
/// resource in it. The services take any `Reach`: a bare [`TenantId`]
/// (trusted callers: the CLI, a program embedding memlayer) reaches its
/// whole tenant; a [`Principal`] bound to a resource reaches that
/// resource's threads only, and everything else is as missing to it.
pub trait Reach: Sync {
    /// The tenant.
    fn tenant(&self) -> &TenantId;

    /// The one resource reachable, or `None` for the whole tenant.
    fn resource(&self) -> Option<&ResourceId> {
        None
    }

    /// Whether a thread of resource `thread_resource` is reachable.
    fn reaches(&self, thread_resource: Option<&ResourceId>) -> bool {
        self.resource().is_none_or(|bound| thread_resource == Some(bound))
    }
}

impl Reach for TenantId {
    fn tenant(&self) -> &TenantId {
        self
    }
}

impl Reach for Principal {
    fn tenant(&self) -> &TenantId {
        &self.tenant
    }

    fn resource(&self) -> Option<&ResourceId> {
        self.resource.as_ref()
    }
}

fn is_lower_hex(s: &str, len: usize) -> bool {
    s.len() == len && s.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: &str = "0123456789abcdef";
    fn secret() -> String {
        "ab".repeat(32)
    }

    #[test]
    fn scopes_parse_print_and_refuse_unknown_names() {
        let s = Scopes::parse_list("write, read").unwrap();
        assert!(s.contains(Scope::Read) && s.contains(Scope::Write) && !s.contains(Scope::Admin));
        assert_eq!(s.to_string(), "read,write");
        assert_eq!(Scopes::parse_list(&s.to_string()).unwrap(), s);
        assert_eq!(Scopes::parse_list("read admin").unwrap(), Scopes::only(Scope::Read).with(Scope::Admin));
        let err = Scopes::parse_list("read,owner").unwrap_err();
        assert!(err.reason.contains("owner"), "{err}");
        assert!(Scopes::parse_list(" , ").is_err());
        assert_eq!(serde_json::to_string(&s).unwrap(), r#"["read","write"]"#);
        assert_eq!(serde_json::from_str::<Scopes>(r#"["admin"]"#).unwrap(), Scopes::only(Scope::Admin));
    }

    #[test]
    fn admin_does_not_imply_the_other_scopes() {
        let admin = Scopes::only(Scope::Admin);
        assert!(!admin.contains(Scope::Read) && !admin.contains(Scope::Write));
    }

    #[test]
    fn a_presented_key_round_trips_and_hides_its_secret() {
        let token = format!("ml_{ID}_{}", secret());
        let key = PresentedKey::parse(&token).unwrap();
        assert_eq!(key.id().as_str(), ID);
        assert_eq!(key.secret(), secret());
        assert_eq!(key.reveal(), token);
        assert!(!format!("{key:?}").contains(&secret()));
    }

    #[test]
    fn malformed_keys_are_refused_without_echoing_them() {
        let s = secret();
        for bad in [
            String::new(),
            format!("ml_{ID}{s}"),
            format!("mk_{ID}_{s}"),
            format!("ml_{}_{s}", &ID[1..]),
            format!("ml_{}_{s}", ID.to_uppercase()),
            format!("ml_{ID}_{}", &s[1..]),
            format!("ml_{ID}_{s}0"),
            format!("ml_{ID}_{}", s.replace('a', "g")),
            format!("ml_{ID}_{s}_x"),
        ] {
            let err = PresentedKey::parse(&bad).unwrap_err();
            assert_eq!(err.field, "api_key");
            assert!(bad.len() < 8 || !err.reason.contains(&bad), "{err}");
        }
    }

    #[test]
    fn a_key_is_refused_once_revoked_or_expired() {
        let now = crate::now();
        let key = ApiKey {
            id: KeyId::parse(ID).unwrap(),
            tenant: TenantId::parse("t").unwrap(),
            name: None,
            scopes: Scopes::ALL,
            resource: None,
            created_at: now,
            expires_at: None,
            revoked_at: None,
            last_used_at: None,
        };
        assert_eq!(key.refusal(now), None);
        let hour = time::Duration::hours(1);
        assert!(ApiKey { expires_at: Some(now - hour), ..key.clone() }.refusal(now).is_some());
        assert_eq!(ApiKey { expires_at: Some(now + hour), ..key.clone() }.refusal(now), None);
        assert!(ApiKey { revoked_at: Some(now), ..key }.refusal(now).is_some());
    }

    #[test]
    fn a_bound_principal_reaches_its_resource_only() {
        let r = ResourceId::parse("alice").unwrap();
        let other = ResourceId::parse("bob").unwrap();
        let mut p = Principal::anonymous(TenantId::parse("t").unwrap());
        assert!(p.reaches(None) && p.reaches(Some(&other)));
        p.resource = Some(r.clone());
        assert!(p.reaches(Some(&r)));
        assert!(!p.reaches(Some(&other)) && !p.reaches(None));
        assert!(TenantId::parse("t").unwrap().reaches(Some(&other)));
    }

    #[test]
    fn key_names_are_trimmed_and_bounded() {
        assert_eq!(parse_key_name("  ci  ").unwrap(), "ci");
        assert!(parse_key_name(" ").is_err());
        assert!(parse_key_name("a\nb").is_err());
        assert!(parse_key_name(&"x".repeat(MAX_KEY_NAME_BYTES + 1)).is_err());
    }
}
