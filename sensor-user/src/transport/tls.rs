//! TLS to the collector: an `https://` collector URL with the collector's CA (`collector_ca`) and
//! this agent's certificate and key (`client_cert`, `client_key`), which a TLS collector
//! requires. The collector stores deviations under the certificate's identity (its CN) and
//! refuses batches whose agent id differs, so the certificate is issued for the agent's host
//! name (or its `host` setting): `collector certs --agent $(hostname)`.
//!
//! The files are read and checked when the transport starts, so a wrong path or a key where a
//! certificate belongs stops `sensor run` with the file named instead of failing every
//! connection later. rustls with ring, as on the collector (tonic's `tls-ring`).

use std::path::{Path, PathBuf};

use rustls_pki_types::pem::PemObject as _;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tonic::transport::{Certificate, ClientTlsConfig, Identity};

use super::TransportError;

/// The agent's TLS files.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClientTls {
    /// CA that signed the collector's certificate (PEM).
    pub collector_ca: Option<PathBuf>,
    /// This agent's certificate (PEM).
    pub client_cert: Option<PathBuf>,
    /// Its key (PEM).
    pub client_key: Option<PathBuf>,
}

impl ClientTls {
    /// `None` when no TLS setting is given.
    pub fn from_options(
        collector_ca: Option<PathBuf>,
        client_cert: Option<PathBuf>,
        client_key: Option<PathBuf>,
    ) -> Option<ClientTls> {
        let tls = ClientTls {
            collector_ca,
            client_cert,
            client_key,
        };
        (tls != ClientTls::default()).then_some(tls)
    }

    /// Reads and checks the files; `domain` is the name the collector's certificate must carry.
    pub fn load(&self, domain: &str) -> Result<ClientTlsConfig, TransportError> {
        let Some(ca) = &self.collector_ca else {
            return Err(invalid(
                "an https:// collector needs collector_ca (--collector-ca), the CA that signed \
                 its certificate",
            ));
        };
        if self.client_cert.is_some() != self.client_key.is_some() {
            return Err(invalid(
                "client_cert and client_key (--client-cert, --client-key) go together",
            ));
        }
        let mut config = ClientTlsConfig::new()
            .ca_certificate(Certificate::from_pem(certificates("collector_ca", ca)?))
            .domain_name(domain);
        if let (Some(cert), Some(key)) = (&self.client_cert, &self.client_key) {
            config = config.identity(Identity::from_pem(
                certificates("client_cert", cert)?,
                private_key("client_key", key)?,
            ));
        }
        Ok(config)
    }
}

fn invalid(reason: &str) -> TransportError {
    TransportError::InvalidConfig(reason.to_owned())
}

fn read(key: &str, path: &Path) -> Result<Vec<u8>, TransportError> {
    std::fs::read(path).map_err(|e| invalid(&format!("cannot read {key} {}: {e}", path.display())))
}

/// A PEM file of one or more certificates.
fn certificates(key: &str, path: &Path) -> Result<Vec<u8>, TransportError> {
    let bytes = read(key, path)?;
    let bad = |why: String| invalid(&format!("{key} {} is not usable: {why}", path.display()));
    let certs = CertificateDer::pem_slice_iter(&bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| bad(format!("bad PEM ({e})")))?;
    if certs.is_empty() {
        return Err(bad(
            "no CERTIFICATE block (-----BEGIN CERTIFICATE-----)".to_owned()
        ));
    }
    Ok(bytes)
}

/// A PEM private key.
fn private_key(key: &str, path: &Path) -> Result<Vec<u8>, TransportError> {
    let bytes = read(key, path)?;
    PrivateKeyDer::from_pem_slice(&bytes).map_err(|e| {
        invalid(&format!(
            "{key} {} is not usable: no private key ({e})",
            path.display()
        ))
    })?;
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unusable_files_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let text = dir.path().join("ca.pem");
        std::fs::write(&text, "not a certificate\n").unwrap();
        let tls = ClientTls::from_options(Some(text.clone()), None, None).unwrap();
        let e = tls.load("c").unwrap_err().to_string();
        assert!(e.contains("collector_ca") && e.contains("ca.pem"), "{e}");
        assert!(e.contains("no CERTIFICATE block"), "{e}");

        let missing = ClientTls::from_options(
            Some(text.clone()),
            Some(dir.path().join("absent.pem")),
            None,
        )
        .unwrap();
        let e = missing.load("c").unwrap_err().to_string();
        assert!(e.contains("go together"), "{e}");

        let e = ClientTls::from_options(None, Some(text.clone()), Some(text))
            .unwrap()
            .load("c")
            .unwrap_err()
            .to_string();
        assert!(e.contains("needs collector_ca"), "{e}");
        assert_eq!(ClientTls::from_options(None, None, None), None);
    }
}
