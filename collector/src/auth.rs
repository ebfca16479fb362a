//! Who may do what on the gRPC endpoint.
//!
//! With TLS (`tls_cert`, `tls_key`, `tls_client_ca`) every client shows a certificate signed by
//! the client CA, checked in the handshake. Then:
//! - **Ingest**: the certificate's identity (subject CN, else first DNS name) is the agent; every
//!   batch must carry it as `agent_id` (else `PERMISSION_DENIED`, nothing stored), so an agent
//!   cannot write under another agent's name; every deviation's `host` must be that identity too
//!   (an empty one is set to it). Deviations are unique per agent (`(agent_id, workload_id,
//!   run_id, id)` in the store), so no agent can pre-empt or suppress another's rows by sending
//!   their ids first. A certificate listed in `query_clients` is an operator's, not an agent's,
//!   and may not send deviations (`PERMISSION_DENIED`).
//! - **Query**: a bearer token from `query_token_file` (`authorization: Bearer <token>`) or a
//!   certificate listed in `query_clients`; anything else is `UNAUTHENTICATED`. An agent's
//!   certificate alone does not allow queries: a compromised build runner should not read what
//!   every other workload did.
//! - **Health and reflection** need only the TLS handshake, so probes and `grpcurl` work with
//!   any certificate of the deployment.
//!
//! Without TLS (allowed on loopback only) there is no identity: batches are stored under the
//! `agent_id` they carry, and queries need the token only when `query_token_file` is set.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use proto::v1::DeviationBatch;
use tonic::{Request, Status};

use crate::tls::peer_identity;

/// Longest token accepted in the token file.
const MAX_TOKEN_LEN: usize = 4096;

#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("cannot read query token file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("query token file {path} {reason}")]
    Invalid { path: PathBuf, reason: String },
}

/// The access rules of one server.
#[derive(Debug, Clone, Default)]
pub struct Access {
    /// Clients present verified certificates (TLS is on).
    pub tls: bool,
    /// Bearer tokens that allow queries.
    tokens: Vec<String>,
    /// Certificate identities allowed to query (and not to ingest).
    query_clients: BTreeSet<String>,
}

impl Access {
    /// Rules for a server with or without TLS, its query tokens and query clients.
    pub fn new(
        tls: bool,
        tokens: Vec<String>,
        query_clients: impl IntoIterator<Item = String>,
    ) -> Self {
        Access {
            tls,
            tokens,
            query_clients: query_clients.into_iter().collect(),
        }
    }

    /// Whether queries need no credential (plain text on loopback without a token).
    pub fn queries_open(&self) -> bool {
        !self.tls && self.tokens.is_empty()
    }

    /// Whether some credential can ever pass [`Access::authorize_query`].
    pub fn queries_possible(&self) -> bool {
        self.queries_open() || !self.tokens.is_empty() || !self.query_clients.is_empty()
    }

    /// Whether query tokens are configured.
    pub fn has_tokens(&self) -> bool {
        !self.tokens.is_empty()
    }

    /// Whether `token` is one of the query tokens.
    pub fn token_ok(&self, token: &str) -> bool {
        // Every token is compared, each in constant time, so timing tells nothing about them.
        self.tokens.iter().fold(false, |found, t| {
            constant_time_eq(t.as_bytes(), token.as_bytes()) | found
        })
    }

    /// Allows a Query call, or says why not.
    pub fn authorize_query<T>(&self, request: &Request<T>) -> Result<(), Status> {
        let presented = match request.metadata().get("authorization") {
            None => None,
            Some(value) => Some(value.to_str().ok().and_then(bearer).ok_or_else(|| {
                Status::unauthenticated("authorization metadata must be \"Bearer <token>\"")
            })?),
        };
        if let Some(token) = presented {
            if self.token_ok(token) {
                return Ok(());
            }
            return Err(Status::unauthenticated("invalid bearer token"));
        }
        if self.queries_open() {
            return Ok(());
        }
        if self.tls
            && let Some(identity) = peer_identity(request)
        {
            if self.query_clients.contains(&identity) {
                return Ok(());
            }
            return Err(Status::unauthenticated(format!(
                "client certificate {identity:?} is not a query client (query_clients); send \
                 `authorization: Bearer <token>` with a token from query_token_file"
            )));
        }
        Err(Status::unauthenticated(
            "the Query service needs `authorization: Bearer <token>` (a token from the \
             collector's query_token_file) or a client certificate listed in query_clients",
        ))
    }

    /// The identity batches on this Ingest stream must carry: `Some` with TLS, `None` without.
    pub fn ingest_identity<T>(&self, request: &Request<T>) -> Result<Option<String>, Status> {
        if !self.tls {
            return Ok(None);
        }
        let identity = peer_identity(request).ok_or_else(|| {
            Status::unauthenticated(
                "no usable client certificate: its subject CN or DNS name is the agent identity",
            )
        })?;
        if self.query_clients.contains(&identity) {
            return Err(Status::permission_denied(format!(
                "client certificate {identity:?} is a query client (query_clients) and may not \
                 send deviations"
            )));
        }
        Ok(Some(identity))
    }
}

/// Refuses a batch that claims another agent than the stream's certificate.
pub fn check_batch(identity: Option<&str>, batch: &DeviationBatch) -> Result<(), Status> {
    match identity {
        Some(identity) if batch.agent_id != identity => Err(Status::permission_denied(format!(
            "batch {} claims agent_id {:?} but the client certificate identifies {identity:?}; \
             an agent sends only under its certificate's identity (set the agent's host name, \
             or issue its certificate for {:?})",
            batch.sequence, batch.agent_id, batch.agent_id
        ))),
        _ => Ok(()),
    }
}

/// Binds each deviation's `host` to the stream's certificate identity: an empty host becomes the
/// identity, another host is refused (`PERMISSION_DENIED`, nothing stored). The agent's host is
/// its identity (the agent sends `agent_id` = host), so a stolen runner certificate cannot file
/// rows, or pre-empt ids, under another host's name. Without TLS nothing is known to bind to.
pub fn bind_hosts(identity: Option<&str>, batch: &mut DeviationBatch) -> Result<(), Status> {
    let Some(identity) = identity else {
        return Ok(());
    };
    for deviation in &mut batch.deviations {
        if deviation.host.is_empty() {
            deviation.host = identity.to_owned();
        } else if deviation.host != identity {
            return Err(Status::permission_denied(format!(
                "batch {}: deviation {} claims host {:?} but the client certificate identifies \
                 {identity:?}; an agent reports only its own host",
                batch.sequence, deviation.id, deviation.host
            )));
        }
    }
    Ok(())
}

/// The token of an `authorization` value `Bearer <token>` (scheme case-insensitive).
fn bearer(value: &str) -> Option<&str> {
    let (scheme, token) = value.trim().split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

/// Whether an HTTP `Authorization` header value carries one of the query tokens.
pub fn header_ok(access: &Access, header: Option<&str>) -> bool {
    header.and_then(bearer).is_some_and(|t| access.token_ok(t))
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |diff, (x, y)| diff | (x ^ y)) == 0
}

/// Reads query tokens: one per line; blank lines and lines starting with `#` are skipped.
/// Refuses an empty file (that would lock everyone out silently) and a token with spaces.
pub fn read_tokens(path: &Path) -> Result<Vec<String>, AuthError> {
    let text = std::fs::read_to_string(path).map_err(|source| AuthError::Read {
        path: path.to_owned(),
        source,
    })?;
    let invalid = |reason: String| AuthError::Invalid {
        path: path.to_owned(),
        reason,
    };
    let mut tokens = Vec::new();
    for (number, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        if line.len() > MAX_TOKEN_LEN || line.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(invalid(format!(
                "line {}: a token is one word of at most {MAX_TOKEN_LEN} characters",
                number + 1
            )));
        }
        tokens.push(line.to_owned());
    }
    if tokens.is_empty() {
        return Err(invalid("holds no token (one per line)".to_owned()));
    }
    warn_if_readable(path);
    Ok(tokens)
}

/// Tokens are secrets: warn when others can read the file.
fn warn_if_readable(path: &Path) {
    use std::os::unix::fs::PermissionsExt as _;
    if let Ok(meta) = std::fs::metadata(path)
        && meta.permissions().mode() & 0o077 != 0
    {
        tracing::warn!(
            path = %path.display(),
            mode = format!("{:o}", meta.permissions().mode() & 0o777),
            "query token file is readable by group or others; chmod 600 it"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tonic::metadata::MetadataValue;

    fn with_auth(value: &str) -> Request<()> {
        let mut request = Request::new(());
        request
            .metadata_mut()
            .insert("authorization", MetadataValue::try_from(value).unwrap());
        request
    }

    #[test]
    fn query_needs_a_token_once_one_is_configured() {
        let access = Access::new(false, vec!["s3cret".to_owned()], []);
        assert!(access.authorize_query(&with_auth("Bearer s3cret")).is_ok());
        assert!(
            access
                .authorize_query(&with_auth("bearer  s3cret "))
                .is_ok()
        );
        for bad in ["Bearer s3cre", "Bearer s3cret2", "Basic s3cret", "s3cret"] {
            let status = access.authorize_query(&with_auth(bad)).unwrap_err();
            assert_eq!(status.code(), tonic::Code::Unauthenticated, "{bad}");
        }
        let status = access.authorize_query(&Request::new(())).unwrap_err();
        assert_eq!(status.code(), tonic::Code::Unauthenticated);
        assert!(status.message().contains("query_token_file"), "{status:?}");
    }

    #[test]
    fn plaintext_without_token_is_open_and_tls_without_credentials_is_not() {
        assert!(
            Access::new(false, Vec::new(), [])
                .authorize_query(&Request::new(()))
                .is_ok()
        );
        let tls = Access::new(true, Vec::new(), []);
        assert!(!tls.queries_possible());
        assert_eq!(
            tls.authorize_query(&Request::new(())).unwrap_err().code(),
            tonic::Code::Unauthenticated
        );
    }

    #[test]
    fn batches_must_carry_the_certificate_identity() {
        let batch = DeviationBatch {
            agent_id: "agent-b".to_owned(),
            sequence: 3,
            ..DeviationBatch::default()
        };
        assert!(check_batch(None, &batch).is_ok());
        assert!(check_batch(Some("agent-b"), &batch).is_ok());
        let status = check_batch(Some("agent-a"), &batch).unwrap_err();
        assert_eq!(status.code(), tonic::Code::PermissionDenied);
        assert!(status.message().contains("\"agent-a\""), "{status:?}");
    }

    #[test]
    fn deviations_carry_the_certificate_host() {
        let mut batch = DeviationBatch {
            agent_id: "agent-a".to_owned(),
            sequence: 4,
            deviations: vec![proto::v1::Deviation::default(); 2],
            ..DeviationBatch::default()
        };
        batch.deviations[1].host = "agent-a".to_owned();
        bind_hosts(Some("agent-a"), &mut batch).unwrap();
        assert!(batch.deviations.iter().all(|d| d.host == "agent-a"));
        batch.deviations[0].host = "agent-b".to_owned();
        let status = bind_hosts(Some("agent-a"), &mut batch).unwrap_err();
        assert_eq!(status.code(), tonic::Code::PermissionDenied);
        assert!(bind_hosts(None, &mut batch).is_ok());
    }

    #[test]
    fn token_files_are_checked() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tokens");
        std::fs::write(&path, "# operators\n\nalpha\n  beta  \n").unwrap();
        assert_eq!(read_tokens(&path).unwrap(), ["alpha", "beta"]);
        std::fs::write(&path, "# nothing\n").unwrap();
        let e = read_tokens(&path).unwrap_err().to_string();
        assert!(e.contains("holds no token"), "{e}");
        std::fs::write(&path, "two words\n").unwrap();
        let e = read_tokens(&path).unwrap_err().to_string();
        assert!(e.contains("line 1"), "{e}");
    }
}
