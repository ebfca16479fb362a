//! TLS to PostgreSQL, configured the way libpq is: in the connection URL,
//! `postgres://user@db.example:5432/collector?sslmode=verify-full&sslrootcert=/etc/collector/pg-ca.pem`
//! and, for certificate authentication, `&sslcert=/etc/collector/pg-client.pem&sslkey=/etc/collector/pg-client.key`.
//!
//! Two modes: `disable` (the default: plain TCP or a Unix socket, for a database on the same host
//! or a private network) and `verify-full`: TLS with rustls, the server's certificate checked
//! against `sslrootcert` and its name against the URL's host. The weaker libpq modes (`prefer`,
//! `require`, `verify-ca`) are refused with a message rather than silently accepted: each lets
//! a machine in the middle read the deviations and the password. rust-postgres does not know
//! these parameters; they are taken out of the URL here and the rest is parsed by it.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio_postgres_rustls::MakeRustlsConnect;

use crate::store::{StoreError, redact};

/// The TLS parameters of a connection URL.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct PgTls {
    /// `sslmode=verify-full`; otherwise no TLS.
    pub verify_full: bool,
    /// `sslrootcert`: the CA certificates (PEM) the server's certificate must chain to.
    pub root_cert: Option<PathBuf>,
    /// `sslcert` and `sslkey`: the collector's client certificate and key (PEM).
    pub client_cert: Option<PathBuf>,
    pub client_key: Option<PathBuf>,
}

/// Splits the TLS parameters out of `url`: the URL rust-postgres parses, and the settings.
pub fn split(url: &str) -> Result<(String, PgTls), StoreError> {
    let bad = |reason: String| StoreError::BadLocation {
        value: redact(url),
        reason,
    };
    let Some((base, query)) = url.split_once('?') else {
        return Ok((url.to_owned(), PgTls::default()));
    };
    let mut tls = PgTls::default();
    let mut kept = Vec::new();
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
        let path = || Some(PathBuf::from(percent_decode(value)));
        match name {
            "sslmode" => match value {
                "disable" => tls.verify_full = false,
                "verify-full" => tls.verify_full = true,
                other => {
                    return Err(bad(format!(
                        "sslmode={other} is not supported: use sslmode=verify-full with \
                         sslrootcert=<CA file> (or sslmode=disable on a trusted network)"
                    )));
                }
            },
            "sslrootcert" => tls.root_cert = path(),
            "sslcert" => tls.client_cert = path(),
            "sslkey" => tls.client_key = path(),
            _ => kept.push(pair),
        }
    }
    if tls.verify_full && tls.root_cert.is_none() {
        return Err(bad(
            "sslmode=verify-full needs sslrootcert=<file of the CA certificates (PEM)>".into(),
        ));
    }
    if tls.client_cert.is_some() != tls.client_key.is_some() {
        return Err(bad("sslcert and sslkey go together".into()));
    }
    if !tls.verify_full && (tls.root_cert.is_some() || tls.client_cert.is_some()) {
        return Err(bad(
            "sslrootcert/sslcert/sslkey are set but sslmode is not verify-full".into(),
        ));
    }
    let rest = if kept.is_empty() {
        base.to_owned()
    } else {
        format!("{base}?{}", kept.join("&"))
    };
    Ok((rest, tls))
}

impl PgTls {
    /// The connector for these settings. Without TLS it is never used (the connection's
    /// `sslmode` is `disable`), but one connector type keeps one pool type.
    pub fn connector(&self, url: &str) -> Result<MakeRustlsConnect, StoreError> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| tls_error(url, "TLS settings", e))?;
        let mut roots = rustls::RootCertStore::empty();
        if let Some(path) = &self.root_cert {
            for cert in read_certs(url, path)? {
                roots.add(cert).map_err(|e| {
                    tls_error(url, &format!("CA certificate {}", path.display()), e)
                })?;
            }
        }
        let builder = builder.with_root_certificates(roots);
        let config = match (&self.client_cert, &self.client_key) {
            (Some(cert), Some(key)) => {
                let chain = read_certs(url, cert)?;
                let key = PrivateKeyDer::from_pem_file(key)
                    .map_err(|e| tls_error(url, &format!("client key {}", key.display()), e))?;
                builder
                    .with_client_auth_cert(chain, key)
                    .map_err(|e| tls_error(url, "client certificate and key", e))?
            }
            _ => builder.with_no_client_auth(),
        };
        Ok(MakeRustlsConnect::new(config))
    }
}

fn read_certs(url: &str, path: &Path) -> Result<Vec<CertificateDer<'static>>, StoreError> {
    let what = || format!("certificate file {}", path.display());
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| tls_error(url, &what(), e))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| tls_error(url, &what(), e))?;
    if certs.is_empty() {
        return Err(tls_error(url, &what(), "no PEM certificate in it"));
    }
    Ok(certs)
}

fn tls_error(url: &str, what: &str, e: impl std::fmt::Display) -> StoreError {
    StoreError::Connect {
        location: redact(url),
        reason: format!("TLS to PostgreSQL: {what}: {e}"),
    }
}

/// `%XX` escapes decoded (paths in URLs: `%2F` for `/`); anything malformed kept as it is.
fn percent_decode(value: &str) -> String {
    let bytes = value.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match (bytes[i], hex) {
            (b'%', Some(b)) => {
                out.push(b);
                i += 3;
            }
            (b, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tls_parameters_are_taken_out_of_the_url() {
        let (rest, tls) = split(
            "postgres://c:pw@db:5432/c?connect_timeout=5&sslmode=verify-full\
             &sslrootcert=%2Fetc%2Fca.pem&sslcert=/c.pem&sslkey=/c.key",
        )
        .unwrap();
        assert_eq!(rest, "postgres://c:pw@db:5432/c?connect_timeout=5");
        assert!(tls.verify_full);
        assert_eq!(tls.root_cert, Some("/etc/ca.pem".into()));
        assert_eq!(tls.client_key, Some("/c.key".into()));
        let (rest, tls) = split("postgres://c@db/c").unwrap();
        assert_eq!(
            (rest.as_str(), tls),
            ("postgres://c@db/c", PgTls::default())
        );
    }

    #[test]
    fn weak_or_incomplete_tls_settings_are_refused() {
        for (url, says) in [
            (
                "postgres://c:pw@db/c?sslmode=require",
                "sslmode=require is not supported",
            ),
            (
                "postgres://c@db/c?sslmode=verify-ca",
                "use sslmode=verify-full",
            ),
            ("postgres://c@db/c?sslmode=verify-full", "needs sslrootcert"),
            (
                "postgres://c@db/c?sslmode=verify-full&sslrootcert=/ca&sslcert=/c",
                "go together",
            ),
            (
                "postgres://c@db/c?sslrootcert=/ca",
                "sslmode is not verify-full",
            ),
        ] {
            let e = split(url).unwrap_err().to_string();
            assert!(e.contains(says), "{url}: {e}");
            assert!(!e.contains("pw"), "the password stays out of errors: {e}");
        }
    }
}
