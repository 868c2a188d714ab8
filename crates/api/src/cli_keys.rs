//! `memlayer keys create|list|revoke`: API keys from the command line, on
//! the configured database directly (no server needed). Output is the same
//! JSON as `/api/keys`; `create` prints the whole key once, and nothing
//! prints a secret or a hash afterwards.

use anyhow::Context as _;
use clap::Subcommand;
use memlayer_app::{KeyService, NewKey};
use memlayer_domain::{KeyId, ResourceId, Scopes, TenantId};
use serde::Serialize;

use crate::dto::{ApiKeyDto, CreatedKeyDto, KeysDto};

/// `memlayer keys …`.
#[derive(Debug, Subcommand)]
pub enum KeysAction {
    /// Create a key and print it, whole, this once (`key`); only a hash of
    /// its secret is stored.
    Create {
        /// What it allows: `read`, `write`, `admin`, comma-separated
        /// (independent: `admin` does not imply the others).
        #[arg(long)]
        scopes: String,
        /// Lifetime: a whole number and a unit, `d`, `h`, `m` or `s`
        /// (`90d`, `12h`); default: never expires.
        #[arg(long)]
        expires: Option<String>,
        /// Bind the key to one resource: it sees and creates only that
        /// resource's threads.
        #[arg(long)]
        resource: Option<String>,
        /// A label for people.
        #[arg(long)]
        name: Option<String>,
    },
    /// List the tenant's keys, newest first, revoked ones included (never
    /// a secret or a hash).
    List,
    /// Revoke a key: refused at once by a server that has not looked it up
    /// lately, within `auth.keys.cache_ttl_secs` by one that has.
    Revoke {
        /// The key's id (16 hex digits, the part after `ml_`).
        id: String,
    },
}

fn print(v: &impl Serialize) -> anyhow::Result<()> {
    use std::io::Write as _;
    writeln!(std::io::stdout().lock(), "{}", serde_json::to_string_pretty(v)?).context("writing to stdout")?;
    Ok(())
}

/// The key `create` asks for.
///
/// # Errors
/// A message naming the flag that is wrong.
pub fn new_key(
    scopes: &str,
    expires: Option<&str>,
    resource: Option<&str>,
    name: Option<&str>,
) -> anyhow::Result<NewKey> {
    let scopes = Scopes::parse_list(scopes).map_err(|e| anyhow::anyhow!("--scopes: {}", e.reason))?;
    let expires_at = expires
        .map(|e| memlayer_app::parse_lifetime(e).map(|lifetime| memlayer_domain::now() + lifetime))
        .transpose()
        .map_err(|reason| anyhow::anyhow!("--expires: {reason}"))?;
    let resource = resource
        .map(|r| ResourceId::parse(r.to_owned()))
        .transpose()
        .map_err(|e| anyhow::anyhow!("--resource: {}", e.reason))?;
    Ok(NewKey { scopes, resource, name: name.map(str::to_owned), expires_at })
}

/// Runs one `keys` command for `tenant`.
///
/// # Errors
/// Whatever the input validation or the store refused.
pub async fn run(keys: &KeyService, tenant: &TenantId, action: &KeysAction) -> anyhow::Result<()> {
    match action {
        KeysAction::Create { scopes, expires, resource, name } => {
            let new = new_key(scopes, expires.as_deref(), resource.as_deref(), name.as_deref())?;
            let created = keys.create(tenant, new).await.context("creating the key")?;
            print(&CreatedKeyDto::from(created))?;
            eprintln!("the key is shown only now: store it (send it as `Authorization: Bearer <key>`)");
            Ok(())
        }
        KeysAction::List => {
            let listed = keys.list_all(tenant).await.context("listing keys")?;
            print(&KeysDto { items: listed.into_iter().map(ApiKeyDto::from).collect(), next_cursor: None })
        }
        KeysAction::Revoke { id } => {
            let id = KeyId::parse(id.clone()).map_err(|e| anyhow::anyhow!("{}", e))?;
            let revoked = keys.revoke(tenant, None, &id).await.with_context(|| format!("revoking key {id}"))?;
            print(&ApiKeyDto::from(revoked))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_are_checked_and_named() {
        let k = new_key("read,admin", Some("12h"), Some("user-42"), Some("ci")).unwrap();
        assert_eq!(k.scopes.to_string(), "read,admin");
        assert_eq!(k.resource.map(|r| r.to_string()).as_deref(), Some("user-42"));
        assert!(k.expires_at.is_some_and(|at| at > memlayer_domain::now()));
        for (args, flag) in [
            (("read,owner", None, None), "--scopes"),
            (("", None, None), "--scopes"),
            (("read", Some("90"), None), "--expires"),
            (("read", None, Some("a b")), "--resource"),
        ] {
            let err = new_key(args.0, args.1, args.2, None).unwrap_err().to_string();
            assert!(err.starts_with(flag), "{args:?}: {err}");
        }
    }
}
