//! TLS to the database through rustls, as libpq's `sslmode` and
//! `sslrootcert` say.
//!
//! The driver (`tokio-postgres`) knows `sslmode` `disable`, `prefer` and
//! `require` only, and no `sslrootcert`: both are taken out of the URL here,
//! the driver is told `disable`, `prefer` or `require`, and the certificate
//! checks of the stricter modes live in the rustls configuration:
//!
//! | `sslmode`     | TLS                         | server certificate checked         |
//! |---------------|-----------------------------|------------------------------------|
//! | `disable`     | never                       | –                                  |
//! | `prefer`      | if the server offers it     | no (libpq's meaning)               |
//! | `require`     | always                      | no, or chain only with sslrootcert |
//! | `verify-ca`   | always                      | chain to a trusted root            |
//! | `verify-full` | always                      | chain and host name                |
//!
//! `prefer` is the default, as in libpq. Trusted roots are the PEM file
//! `sslrootcert` names, else (or with `sslrootcert=system`) the operating
//! system's store.

use std::path::PathBuf;
use std::sync::Arc;

use memlayer_domain::DomainError;
use memlayer_ports::StoreError;
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, percent_decode_str, utf8_percent_encode};
use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::WebPkiSupportedAlgorithms;
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{CertificateError, ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};
use tokio_postgres::config::SslMode as DriverMode;

/// libpq's `sslmode`, less `allow`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SslMode {
    /// Plain connections only.
    Disable,
    /// TLS when the server offers it, unverified; plain otherwise.
    Prefer,
    /// TLS always; the certificate is checked against `sslrootcert` when
    /// one is named (as libpq does), else not at all.
    Require,
    /// TLS always, the certificate chaining to a trusted root.
    VerifyCa,
    /// As `VerifyCa`, and the certificate names the host connected to.
    VerifyFull,
}

impl SslMode {
    fn parse(value: &str) -> Result<Self, StoreError> {
        Ok(match value {
            "disable" => Self::Disable,
            "prefer" => Self::Prefer,
            "require" => Self::Require,
            "verify-ca" => Self::VerifyCa,
            "verify-full" => Self::VerifyFull,
            other => {
                return Err(invalid(format!(
                    "has sslmode `{other}`; use disable, prefer, require, verify-ca or verify-full"
                )));
            }
        })
    }

    /// The name in URLs.
    #[must_use]
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Self::Disable => "disable",
            Self::Prefer => "prefer",
            Self::Require => "require",
            Self::VerifyCa => "verify-ca",
            Self::VerifyFull => "verify-full",
        }
    }

    fn driver(self) -> DriverMode {
        match self {
            Self::Disable => DriverMode::Disable,
            Self::Prefer => DriverMode::Prefer,
            Self::Require | Self::VerifyCa | Self::VerifyFull => DriverMode::Require,
        }
    }
}

/// The TLS parameters of a connection string.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct TlsSettings {
    /// `sslmode`, `prefer` when absent.
    pub(crate) mode: SslMode,
    /// Whether the string set `sslmode` itself.
    pub(crate) explicit: bool,
    /// `sslrootcert`: a PEM file; `None` for the system's store.
    pub(crate) root_cert: Option<PathBuf>,
}

impl TlsSettings {
    /// The driver's mode for these settings.
    pub(crate) fn driver_mode(&self) -> DriverMode {
        self.mode.driver()
    }

    /// The rustls configuration, or `None` for `disable`.
    ///
    /// # Errors
    /// `Invalid` when the root certificates cannot be read.
    pub(crate) fn client_config(&self) -> Result<Option<ClientConfig>, StoreError> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|e| invalid(format!("TLS set-up failed: {e}")))?;
        let verify = match (self.mode, &self.root_cert) {
            (SslMode::Disable, _) => return Ok(None),
            (SslMode::Prefer, _) | (SslMode::Require, None) => None,
            (SslMode::Require | SslMode::VerifyCa, _) => Some(false),
            (SslMode::VerifyFull, _) => Some(true),
        };
        let config = match verify {
            None => builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(Unverified(provider.signature_verification_algorithms)))
                .with_no_client_auth(),
            Some(check_name) => {
                let roots = Arc::new(self.roots()?);
                let webpki = WebPkiServerVerifier::builder_with_provider(roots, provider)
                    .build()
                    .map_err(|e| invalid(format!("TLS set-up failed: {e}")))?;
                if check_name {
                    builder.with_webpki_verifier(webpki).with_no_client_auth()
                } else {
                    builder
                        .dangerous()
                        .with_custom_certificate_verifier(Arc::new(ChainOnly(webpki)))
                        .with_no_client_auth()
                }
            }
        };
        Ok(Some(config))
    }

    fn roots(&self) -> Result<RootCertStore, StoreError> {
        let mut roots = RootCertStore::empty();
        match &self.root_cert {
            Some(path) => {
                let certs =
                    CertificateDer::pem_file_iter(path).and_then(Iterator::collect::<Result<Vec<_>, _>>).map_err(
                        |e| invalid(format!("sslrootcert {}: cannot read PEM certificates: {e}", path.display())),
                    )?;
                let (added, _) = roots.add_parsable_certificates(certs);
                if added == 0 {
                    return Err(invalid(format!("sslrootcert {} holds no usable certificate", path.display())));
                }
            }
            None => {
                let found = rustls_native_certs::load_native_certs();
                roots.add_parsable_certificates(found.certs);
                if roots.is_empty() {
                    return Err(invalid(format!(
                        "sslmode {} needs trusted root certificates, and the system store has none{}; \
                         name a PEM file with sslrootcert=PATH",
                        self.mode.as_str(),
                        found.errors.first().map(|e| format!(" ({e})")).unwrap_or_default()
                    )));
                }
            }
        }
        Ok(roots)
    }
}

fn invalid(reason: String) -> StoreError {
    StoreError::Invalid(DomainError::new("database.url", reason))
}

/// `url` without `sslmode` and `sslrootcert` (which the caller handles),
/// and their values. Both the URL form (`postgres://…?sslmode=…`) and the
/// key-value form (`host=… sslmode=…`) are understood.
///
/// # Errors
/// `Invalid` for an unknown `sslmode` or a key-value string that does not parse.
pub(crate) fn split(url: &str) -> Result<(String, TlsSettings), StoreError> {
    let mut mode = None;
    let mut root_cert = None;
    let mut take = |key: &str, value: &str| -> Result<bool, StoreError> {
        match key {
            "sslmode" => mode = Some(SslMode::parse(value)?),
            "sslrootcert" => root_cert = (value != "system").then(|| PathBuf::from(value)),
            _ => return Ok(false),
        }
        Ok(true)
    };
    let rest = if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        match url.split_once('?') {
            None => url.to_owned(),
            Some((base, query)) => {
                let mut kept = Vec::new();
                for pair in query.split('&') {
                    let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
                    let key = percent_decode_str(key).decode_utf8_lossy();
                    let value = percent_decode_str(value).decode_utf8_lossy();
                    if !take(&key, &value)? {
                        kept.push(pair);
                    }
                }
                if kept.is_empty() { base.to_owned() } else { format!("{base}?{}", kept.join("&")) }
            }
        }
    } else {
        let mut kept = Vec::new();
        for (key, value) in key_values(url)? {
            if !take(&key, &value)? {
                kept.push(format!("{key}='{}'", value.replace('\\', "\\\\").replace('\'', "\\'")));
            }
        }
        kept.join(" ")
    };
    let explicit = mode.is_some();
    Ok((rest, TlsSettings { mode: mode.unwrap_or(SslMode::Prefer), explicit, root_cert }))
}

/// What a path keeps unescaped in a URL query.
const PATH: &AsciiSet = &NON_ALPHANUMERIC.remove(b'/').remove(b'.').remove(b'-').remove(b'_');

/// `sslmode` (and `sslrootcert`) for descriptions: `?sslmode=verify-full`,
/// empty when the string does not set them.
pub(crate) fn describe(settings: &TlsSettings) -> String {
    let mut out = String::new();
    if settings.explicit {
        out.push_str("?sslmode=");
        out.push_str(settings.mode.as_str());
    }
    if let Some(path) = &settings.root_cert {
        out.push_str(if out.is_empty() { "?" } else { "&" });
        out.push_str("sslrootcert=");
        out.extend(utf8_percent_encode(&path.to_string_lossy(), PATH));
    }
    out
}

/// The parameters of a libpq key-value string (`key=value key='quoted \' value'`),
/// as the driver reads them.
fn key_values(s: &str) -> Result<Vec<(String, String)>, StoreError> {
    let bad = |what: &str| invalid(format!("is not a valid Postgres connection string: {what}"));
    let mut out = Vec::new();
    let mut chars = s.chars().peekable();
    loop {
        while chars.next_if(|c| c.is_whitespace()).is_some() {}
        let mut key = String::new();
        while let Some(c) = chars.next_if(|c| !c.is_whitespace() && *c != '=') {
            key.push(c);
        }
        if key.is_empty() {
            break;
        }
        while chars.next_if(|c| c.is_whitespace()).is_some() {}
        if chars.next() != Some('=') {
            return Err(bad(&format!("expected `=` after `{key}`")));
        }
        while chars.next_if(|c| c.is_whitespace()).is_some() {}
        let quoted = chars.next_if_eq(&'\'').is_some();
        let mut value = String::new();
        loop {
            match chars.next() {
                Some('\'') if quoted => break,
                Some(c) if !quoted && c.is_whitespace() => break,
                Some('\\') => value.extend(chars.next()),
                Some(c) => value.push(c),
                None if quoted => return Err(bad("unterminated quoted value")),
                None => break,
            }
        }
        out.push((key, value));
    }
    Ok(out)
}

/// `prefer` and `require` without a root certificate: libpq encrypts
/// without checking who answers. The handshake's signatures are still
/// verified (the peer holds the key of the certificate it sent).
#[derive(Debug)]
struct Unverified(WebPkiSupportedAlgorithms);

impl ServerCertVerifier for Unverified {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.0)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.0)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_schemes()
    }
}

/// `verify-ca`: the chain must lead to a trusted root; the host name is not
/// compared.
#[derive(Debug)]
struct ChainOnly(Arc<WebPkiServerVerifier>);

impl ServerCertVerifier for ChainOnly {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        match self.0.verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now) {
            Err(rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) => Ok(ServerCertVerified::assertion()),
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_verify_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(url: &str) -> (String, SslMode, Option<PathBuf>) {
        let (rest, s) = split(url).unwrap();
        (rest, s.mode, s.root_cert)
    }

    #[test]
    fn ssl_parameters_leave_the_url() {
        assert_eq!(settings("postgres://u@h/db"), ("postgres://u@h/db".into(), SslMode::Prefer, None));
        assert_eq!(
            settings("postgres://u@h/db?sslmode=verify-full&sslrootcert=%2Ftmp%2Fca.pem&application_name=x"),
            ("postgres://u@h/db?application_name=x".into(), SslMode::VerifyFull, Some("/tmp/ca.pem".into()))
        );
        assert_eq!(
            settings("postgresql://u@h/db?sslmode=require"),
            ("postgresql://u@h/db".into(), SslMode::Require, None)
        );
        assert_eq!(settings("postgres://u@h/db?sslrootcert=system").2, None);
        assert_eq!(
            settings("host=h user='u s' sslmode = verify-ca sslrootcert='/a b/c.pem'"),
            ("host='h' user='u s'".into(), SslMode::VerifyCa, Some("/a b/c.pem".into()))
        );
    }

    #[test]
    fn unknown_modes_are_invalid_and_name_the_choices() {
        for url in ["postgres://u@h/db?sslmode=allow", "host=h sslmode=strict"] {
            let err = split(url).unwrap_err();
            assert!(matches!(err, StoreError::Invalid(_)), "{err}");
            assert!(err.to_string().contains("verify-full"), "{err}");
        }
        assert!(split("host='h").is_err(), "unterminated quote");
    }

    #[test]
    fn a_missing_root_file_is_invalid_and_names_it() {
        let (_, s) = split("postgres://u@h/db?sslmode=verify-full&sslrootcert=/no/such/ca.pem").unwrap();
        let err = s.client_config().unwrap_err();
        assert!(err.to_string().contains("/no/such/ca.pem"), "{err}");
    }
}
