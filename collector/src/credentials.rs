//! What `collector deviations` and `collector export` present to a collector: TLS for an
//! `https://` URL (the collector's CA, and a client certificate, which a TLS collector requires)
//! and a bearer token for the Query service.

use std::path::{Path, PathBuf};

use clap::Args;
use tonic::metadata::{Ascii, MetadataValue};
use tonic::service::Interceptor;
use tonic::transport::{Endpoint, Uri};

use crate::tls::{ClientTlsFiles, TlsError};

/// The client's credentials, as flags (`server_ca`, `client_cert`, `client_key` and
/// `token_file` also come from the configuration file).
#[derive(Debug, Clone, Default, Args)]
pub struct ClientArgs {
    /// Bearer token for the Query service (one of the collector's query_token_file tokens).
    #[arg(long, env = "COLLECTOR_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// File whose first token line (blank lines and `#` comments skipped) is the bearer token.
    #[arg(long, value_name = "PATH")]
    pub token_file: Option<PathBuf>,
    /// CA that signed the collector's certificate; needed for an https:// server.
    #[arg(long, value_name = "PATH")]
    pub server_ca: Option<PathBuf>,
    /// Client certificate (PEM) for a collector that requires one (every TLS collector).
    #[arg(long, value_name = "PATH")]
    pub client_cert: Option<PathBuf>,
    /// Key of --client-cert (PEM).
    #[arg(long, value_name = "PATH")]
    pub client_key: Option<PathBuf>,
}

#[derive(Debug, thiserror::Error)]
pub enum CredentialError {
    #[error(transparent)]
    Tls(#[from] TlsError),
    #[error("cannot read token file {path}: {source}")]
    TokenFile {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("token file {path} holds no token")]
    NoToken { path: PathBuf },
    #[error("the token is not valid in a header (printable ASCII without spaces)")]
    BadToken,
    #[error("--server-ca, --client-cert and --client-key need an https:// server URL, not {url}")]
    TlsOnPlainUrl { url: String },
    #[error("TLS settings are unusable: {0}")]
    TlsConfig(String),
    #[error("invalid server URL {url:?}: expected http://HOST:PORT or https://HOST:PORT")]
    BadUrl { url: String },
}

impl ClientArgs {
    /// `--token`, else the first token of `--token-file`, else none.
    pub fn token(&self) -> Result<Option<String>, CredentialError> {
        if let Some(token) = &self.token {
            return Ok(Some(token.trim().to_owned()));
        }
        let Some(path) = &self.token_file else {
            return Ok(None);
        };
        first_token(path).map(Some)
    }

    /// The endpoint for `url`, with TLS when it is `https://`.
    pub fn endpoint(&self, url: &str) -> Result<Endpoint, CredentialError> {
        let bad = || CredentialError::BadUrl {
            url: url.to_owned(),
        };
        let uri: Uri = url.parse().map_err(|_| bad())?;
        let host = uri.host().filter(|h| !h.is_empty()).ok_or_else(bad)?;
        // `[::1]` in a URL is the name `::1` in a certificate.
        let host = host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_owned();
        let files = ClientTlsFiles {
            server_ca: self.server_ca.clone(),
            cert: self.client_cert.clone(),
            key: self.client_key.clone(),
        };
        let endpoint = Endpoint::from(uri.clone());
        match uri.scheme_str() {
            Some("https") => endpoint
                .tls_config(files.load(&host)?)
                .map_err(|e| CredentialError::TlsConfig(crate::one_line(&e))),
            Some("http") if files.is_set() => Err(CredentialError::TlsOnPlainUrl {
                url: url.to_owned(),
            }),
            Some("http") => Ok(endpoint),
            _ => Err(bad()),
        }
    }

    /// The interceptor adding the token (if any) to every call.
    pub fn interceptor(&self) -> Result<Bearer, CredentialError> {
        let value = match self.token()? {
            None => None,
            Some(token) => Some(
                format!("Bearer {token}")
                    .parse()
                    .map_err(|_| CredentialError::BadToken)?,
            ),
        };
        Ok(Bearer(value))
    }
}

fn first_token(path: &Path) -> Result<String, CredentialError> {
    let text = std::fs::read_to_string(path).map_err(|source| CredentialError::TokenFile {
        path: path.to_owned(),
        source,
    })?;
    text.lines()
        .map(str::trim)
        .find(|l| !l.is_empty() && !l.starts_with('#'))
        .map(str::to_owned)
        .ok_or_else(|| CredentialError::NoToken {
            path: path.to_owned(),
        })
}

/// A status on one line: its code, its message, and the transport error under it (where a TLS
/// refusal shows), with a hint for the refusal a missing client certificate causes.
pub fn describe(status: &tonic::Status) -> String {
    let mut text = format!("{:?}: {}", status.code(), status.message());
    if let Some(cause) = std::error::Error::source(status) {
        let cause = crate::one_line(cause);
        if !text.contains(&cause) {
            text.push_str(&format!(" ({cause})"));
        }
    }
    if text.contains("CertificateRequired") {
        text.push_str(
            "; the collector requires a client certificate (--client-cert, --client-key)",
        );
    }
    text
}

/// Adds `authorization: Bearer <token>` to each request when a token is set.
#[derive(Debug, Clone)]
pub struct Bearer(Option<MetadataValue<Ascii>>);

impl Interceptor for Bearer {
    fn call(
        &mut self,
        mut request: tonic::Request<()>,
    ) -> Result<tonic::Request<()>, tonic::Status> {
        if let Some(value) = &self.0 {
            request
                .metadata_mut()
                .insert("authorization", value.clone());
        }
        Ok(request)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tls_options_need_https() {
        let args = ClientArgs {
            server_ca: Some("/ca.pem".into()),
            ..ClientArgs::default()
        };
        let e = args.endpoint("http://c:1").unwrap_err().to_string();
        assert!(e.contains("need an https:// server URL"), "{e}");
        let e = ClientArgs::default()
            .endpoint("https://c:1")
            .unwrap_err()
            .to_string();
        assert!(e.contains("--server-ca"), "{e}");
        assert!(ClientArgs::default().endpoint("http://c:1").is_ok());
    }

    #[test]
    fn token_comes_from_the_flag_or_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("token");
        std::fs::write(&file, "# ops\n\n  t0ken \nother\n").unwrap();
        let args = ClientArgs {
            token_file: Some(file),
            ..ClientArgs::default()
        };
        assert_eq!(args.token().unwrap().as_deref(), Some("t0ken"));
        let flag = ClientArgs {
            token: Some("flag".into()),
            ..args
        };
        assert_eq!(flag.token().unwrap().as_deref(), Some("flag"));
        assert_eq!(ClientArgs::default().token().unwrap(), None);
    }
}
