//! Where the Postgres database is and how many connections to keep.

use std::time::Duration;

use memlayer_domain::DomainError;
use memlayer_ports::StoreError;

use crate::tls::TlsSettings;

/// How to reach a Postgres database.
#[derive(Clone)]
pub struct PgConfig {
    /// A libpq-style URL (`postgres://user:password@host:port/db`) or
    /// key-value string. The password is never logged or described.
    pub url: String,
    /// Pooled connections.
    pub pool_size: usize,
    /// How long opening one connection may take.
    pub connect_timeout: Duration,
    /// How long a call waits for a pooled connection before `Unavailable`.
    pub acquire_timeout: Duration,
    /// How long one statement of a call's transaction may run before the
    /// server cancels it (`SET LOCAL statement_timeout` in every transaction
    /// but the migrations'); the call then fails `Unavailable`. `None` sets
    /// nothing: the server's or role's own default applies.
    pub statement_timeout: Option<Duration>,
    /// Open even when the role bypasses row-level security (a superuser or
    /// `BYPASSRLS`); otherwise [`PgBackend::open`](crate::PgBackend::open)
    /// refuses such a role.
    pub allow_rls_bypass: bool,
}

impl std::fmt::Debug for PgConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgConfig")
            .field("url", &describe_url(&self.url))
            .field("pool_size", &self.pool_size)
            .field("connect_timeout", &self.connect_timeout)
            .field("acquire_timeout", &self.acquire_timeout)
            .field("statement_timeout", &self.statement_timeout)
            .field("allow_rls_bypass", &self.allow_rls_bypass)
            .finish()
    }
}

impl PgConfig {
    /// Default pool size.
    pub const DEFAULT_POOL_SIZE: usize = 8;

    /// Default statement timeout.
    pub const DEFAULT_STATEMENT_TIMEOUT: Duration = Duration::from_secs(30);

    /// Defaults for `url`: 8 connections, 5 s to connect, 10 s to wait for
    /// one, 30 s per statement, no role that bypasses row-level security.
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            pool_size: Self::DEFAULT_POOL_SIZE,
            connect_timeout: Duration::from_secs(5),
            acquire_timeout: Duration::from_secs(10),
            statement_timeout: Some(Self::DEFAULT_STATEMENT_TIMEOUT),
            allow_rls_bypass: false,
        }
    }

    /// The driver configuration and the TLS settings (`sslmode`,
    /// `sslrootcert`), which the driver does not read itself.
    ///
    /// # Errors
    /// `Invalid` when the URL does not parse, with the reason.
    pub(crate) fn driver_config(&self) -> Result<(tokio_postgres::Config, TlsSettings), StoreError> {
        let (url, tls) = crate::tls::split(&self.url)?;
        let mut config: tokio_postgres::Config = url
            .parse()
            .map_err(|e| DomainError::new("database.url", format!("is not a valid Postgres connection string: {e}")))?;
        config.connect_timeout(self.connect_timeout);
        config.ssl_mode(tls.driver_mode());
        if config.get_application_name().is_none() {
            config.application_name("memlayer");
        }
        Ok((config, tls))
    }
}

/// `postgres://user@host:port/db` without the password, for logs and
/// `doctor`; with `?sslmode=…` (and `sslrootcert`) when the URL sets them.
#[must_use]
pub fn describe_url(url: &str) -> String {
    let Ok((rest, tls)) = crate::tls::split(url) else {
        return "postgres (unparsable URL)".to_owned();
    };
    let Ok(config) = rest.parse::<tokio_postgres::Config>() else {
        return "postgres (unparsable URL)".to_owned();
    };
    let hosts: Vec<String> = config
        .get_hosts()
        .iter()
        .zip(config.get_ports().iter().chain(std::iter::repeat(&5432)))
        .map(|(h, p)| match h {
            tokio_postgres::config::Host::Tcp(h) => format!("{h}:{p}"),
            tokio_postgres::config::Host::Unix(path) => format!("{}:{p}", path.display()),
        })
        .collect();
    format!(
        "postgres://{}@{}/{}{}",
        config.get_user().unwrap_or(""),
        hosts.join(","),
        config.get_dbname().unwrap_or(""),
        crate::tls::describe(&tls)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn descriptions_never_show_the_password() {
        let d = describe_url("postgres://app:s3cret@db.example:6543/mem");
        assert_eq!(d, "postgres://app@db.example:6543/mem");
        assert!(!format!("{:?}", PgConfig::new("postgres://app:s3cret@h/db")).contains("s3cret"));
        assert_eq!(describe_url("postgres://app@h/db"), "postgres://app@h:5432/db");
        assert_eq!(
            describe_url("postgres://app:s3cret@h/db?sslmode=verify-full&sslrootcert=/etc/ca.pem"),
            "postgres://app@h:5432/db?sslmode=verify-full&sslrootcert=/etc/ca.pem"
        );
    }

    #[test]
    fn a_bad_url_is_invalid_with_the_reason() {
        let err = PgConfig::new("postgres://h:notaport/db").driver_config().unwrap_err();
        assert!(matches!(err, StoreError::Invalid(_)), "{err}");
        assert!(err.to_string().contains("database.url"), "{err}");
    }
}
