//! TLS of the gRPC endpoint: PEM files read with errors that name the file and the problem, the
//! server's mutual-TLS configuration, the client side (`collector deviations`, tests), and the
//! identity a client certificate carries.
//!
//! rustls through tonic's `tls-ring` feature: ring builds with only a C compiler (aws-lc needs
//! more tooling on a fresh machine) and is the provider rcgen uses by default, so one crypto
//! library serves both. PEM is checked with x509-parser before it reaches rustls so that a key
//! given where a certificate belongs, or a truncated file, is reported as such.

use std::path::{Path, PathBuf};

use tonic::transport::{Certificate, ClientTlsConfig, Identity, ServerTlsConfig};
use x509_parser::extensions::GeneralName;
use x509_parser::pem::Pem;

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read {what} {path}: {source}")]
    Read {
        what: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{what} {path} is not usable: {reason}")]
    Invalid {
        what: &'static str,
        path: PathBuf,
        reason: String,
    },
    #[error("incomplete TLS settings: {0}")]
    Incomplete(String),
}

/// The server's files: its certificate chain and key, and the CA that signs client certificates.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerTlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
    pub client_ca: PathBuf,
}

impl ServerTlsFiles {
    /// All three or none; a partial set is an error naming what is missing.
    pub fn from_options(
        cert: Option<&Path>,
        key: Option<&Path>,
        client_ca: Option<&Path>,
    ) -> Result<Option<ServerTlsFiles>, TlsError> {
        match (cert, key, client_ca) {
            (None, None, None) => Ok(None),
            (Some(cert), Some(key), Some(client_ca)) => Ok(Some(ServerTlsFiles {
                cert: cert.to_owned(),
                key: key.to_owned(),
                client_ca: client_ca.to_owned(),
            })),
            _ => {
                let missing: Vec<&str> = [
                    ("tls_cert", cert.is_none()),
                    ("tls_key", key.is_none()),
                    ("tls_client_ca", client_ca.is_none()),
                ]
                .into_iter()
                .filter_map(|(name, absent)| absent.then_some(name))
                .collect();
                Err(TlsError::Incomplete(format!(
                    "TLS needs tls_cert, tls_key and tls_client_ca (--tls-cert, --tls-key, \
                     --tls-client-ca); missing {}",
                    missing.join(", ")
                )))
            }
        }
    }

    /// Reads and checks the files. Client certificates are required: a client without one
    /// signed by `client_ca` fails the handshake.
    pub fn load(&self) -> Result<ServerTlsConfig, TlsError> {
        let cert = read_certificates("server certificate (tls_cert)", &self.cert)?;
        let key = read_private_key("server key (tls_key)", &self.key)?;
        let ca = read_certificates("client CA (tls_client_ca)", &self.client_ca)?;
        let config = ServerTlsConfig::new()
            .identity(Identity::from_pem(cert, key))
            .client_ca_root(Certificate::from_pem(ca))
            .client_auth_optional(false);
        // rustls checks that the key matches the certificate when the server is built: do it
        // now, so that a mismatch stops the start instead of the running server.
        tonic::transport::Server::builder()
            .tls_config(config.clone())
            .map_err(|e| TlsError::Invalid {
                what: "server certificate and key (tls_cert, tls_key)",
                path: self.key.clone(),
                reason: crate::one_line(&e),
            })?;
        Ok(config)
    }
}

/// A client's files: the CA that signed the server's certificate, and the client's own
/// certificate and key (both or neither).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClientTlsFiles {
    pub server_ca: Option<PathBuf>,
    pub cert: Option<PathBuf>,
    pub key: Option<PathBuf>,
}

impl ClientTlsFiles {
    /// Whether any TLS setting is given.
    pub fn is_set(&self) -> bool {
        self.server_ca.is_some() || self.cert.is_some() || self.key.is_some()
    }

    /// The client configuration for a server named `domain`. Without `server_ca` the system's
    /// roots are not consulted: the collector's CA is private, so it must be named.
    pub fn load(&self, domain: &str) -> Result<ClientTlsConfig, TlsError> {
        let Some(ca_path) = &self.server_ca else {
            return Err(TlsError::Incomplete(
                "an https:// collector needs the CA that signed its certificate (--server-ca)"
                    .to_owned(),
            ));
        };
        let ca = read_certificates("collector CA", ca_path)?;
        let mut config = ClientTlsConfig::new()
            .ca_certificate(Certificate::from_pem(ca))
            .domain_name(domain);
        match (&self.cert, &self.key) {
            (None, None) => {}
            (Some(cert), Some(key)) => {
                let cert = read_certificates("client certificate", cert)?;
                let key = read_private_key("client key", key)?;
                config = config.identity(Identity::from_pem(cert, key));
            }
            _ => {
                return Err(TlsError::Incomplete(
                    "a client certificate needs its key and a key its certificate \
                     (--client-cert with --client-key)"
                        .to_owned(),
                ));
            }
        }
        Ok(config)
    }
}

fn read(what: &'static str, path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read {
        what,
        path: path.to_owned(),
        source,
    })
}

/// The PEM blocks of `bytes`, or why it is not PEM.
fn pem_blocks(bytes: &[u8]) -> Result<Vec<Pem>, String> {
    let blocks = Pem::iter_from_buffer(bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("bad PEM ({e})"))?;
    if blocks.is_empty() {
        return Err("no PEM block (expected -----BEGIN ...-----)".to_owned());
    }
    Ok(blocks)
}

/// Reads a PEM file of one or more X.509 certificates.
pub fn read_certificates(what: &'static str, path: &Path) -> Result<Vec<u8>, TlsError> {
    let bytes = read(what, path)?;
    let invalid = |reason: String| TlsError::Invalid {
        what,
        path: path.to_owned(),
        reason,
    };
    for block in pem_blocks(&bytes).map_err(invalid)? {
        if block.label != "CERTIFICATE" {
            return Err(invalid(format!(
                "holds a {:?} block where a CERTIFICATE was expected",
                block.label
            )));
        }
        block
            .parse_x509()
            .map_err(|e| invalid(format!("certificate does not parse: {e}")))?;
    }
    Ok(bytes)
}

/// Reads a PEM private key (PKCS#8, PKCS#1 RSA or SEC1 EC).
pub fn read_private_key(what: &'static str, path: &Path) -> Result<Vec<u8>, TlsError> {
    let bytes = read(what, path)?;
    let invalid = |reason: String| TlsError::Invalid {
        what,
        path: path.to_owned(),
        reason,
    };
    let blocks = pem_blocks(&bytes).map_err(invalid)?;
    match blocks.as_slice() {
        [key]
            if matches!(
                key.label.as_str(),
                "PRIVATE KEY" | "RSA PRIVATE KEY" | "EC PRIVATE KEY"
            ) =>
        {
            Ok(bytes)
        }
        [other] => Err(invalid(format!(
            "holds a {:?} block where a PRIVATE KEY was expected",
            other.label
        ))),
        _ => Err(invalid(format!(
            "holds {} PEM blocks; expected exactly one private key",
            blocks.len()
        ))),
    }
}

/// The identity a certificate (DER) names: its subject's common name, else its first DNS name.
pub fn certificate_identity(der: &[u8]) -> Option<String> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
    let common_name = cert
        .subject()
        .iter_common_name()
        .find_map(|cn| cn.as_str().ok())
        .filter(|cn| !cn.is_empty());
    if let Some(cn) = common_name {
        return Some(cn.to_owned());
    }
    let san = cert.subject_alternative_name().ok().flatten()?;
    san.value.general_names.iter().find_map(|name| match name {
        GeneralName::DNSName(dns) if !dns.is_empty() => Some((*dns).to_owned()),
        _ => None,
    })
}

/// The identity of the client certificate `request` came with, if any (TLS only).
pub fn peer_identity<T>(request: &tonic::Request<T>) -> Option<String> {
    let certs = request.peer_certs()?;
    certificate_identity(certs.first()?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partial_server_settings_name_what_is_missing() {
        let e = ServerTlsFiles::from_options(Some(Path::new("/a")), None, None)
            .unwrap_err()
            .to_string();
        assert!(e.contains("missing tls_key, tls_client_ca"), "{e}");
        assert_eq!(
            ServerTlsFiles::from_options(None, None, None).unwrap(),
            None
        );
    }

    #[test]
    fn bad_pem_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let garbage = dir.path().join("garbage.pem");
        std::fs::write(&garbage, "hello").unwrap();
        let e = read_certificates("client CA", &garbage)
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("client CA "), "{e}");
        assert!(e.contains("no PEM block"), "{e}");

        let key = dir.path().join("key.pem");
        std::fs::write(
            &key,
            "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n",
        )
        .unwrap();
        let e = read_certificates("server certificate", &key)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("\"PRIVATE KEY\" block where a CERTIFICATE"),
            "{e}"
        );
        let e = read_private_key("client key", &dir.path().join("absent.pem"))
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("cannot read client key "), "{e}");
    }
}
