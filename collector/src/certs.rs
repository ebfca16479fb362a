//! `collector certs`: a private CA and the certificates of a deployment, written as PEM files.
//!
//! | file | what |
//! |------|------|
//! | `ca.pem`, `ca.key` | the CA: `tls_client_ca` of the collector, `collector_ca` of agents |
//! | `server.pem`, `server.key` | the collector (`tls_cert`, `tls_key`) |
//! | `agent-NAME.pem`, `.key` | an agent whose identity is NAME (its host name by default) |
//! | `query-NAME.pem`, `.key` | a query client NAME (list it in `query_clients`) |
//!
//! Keys are ECDSA P-256, written with mode 0600; certificates 0644. An existing CA in the
//! directory is reused, so running the command again with new `--agent` names adds agents to the
//! same deployment; existing files are never overwritten. The identity is the subject common
//! name, repeated as a DNS name. rcgen (with ring) generates everything; no openssl is needed.

use std::io::Write as _;
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};

/// How long the CA is valid.
const CA_VALIDITY: Duration = Duration::from_secs(10 * 365 * 86_400);
/// Certificates are valid from a little before now, so a client with a clock slightly behind
/// accepts them.
const BACKDATE: Duration = Duration::from_secs(3600);
/// Server names every server certificate carries, so a collector on this machine can be reached
/// as localhost.
pub const LOCAL_SERVER_NAMES: [&str; 3] = ["localhost", "127.0.0.1", "::1"];

/// What to create.
#[derive(Debug, Clone)]
pub struct CertsPlan {
    pub dir: PathBuf,
    /// Names and addresses of the collector (besides [`LOCAL_SERVER_NAMES`]); a server certificate
    /// is made when this is non-empty or the directory has none yet.
    pub server_names: Vec<String>,
    pub agents: Vec<String>,
    pub query_clients: Vec<String>,
    /// Validity of the server and client certificates.
    pub validity: Duration,
}

#[derive(Debug, thiserror::Error)]
pub enum CertsError {
    #[error("cannot write {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path} exists; remove it to make a new one")]
    Exists { path: PathBuf },
    #[error(
        "invalid name {name:?}: use letters, digits, '.', '-' (a host name), at most 64 characters"
    )]
    BadName { name: String },
    #[error("existing CA in {dir} is unusable ({reason}); move ca.pem and ca.key away")]
    BadCa { dir: PathBuf, reason: String },
    #[error("cannot generate a certificate: {0}")]
    Generate(#[from] rcgen::Error),
}

/// `collector certs`.
#[derive(Debug, Clone, clap::Args)]
pub struct CertsArgs {
    /// Directory to write into (created if missing).
    #[arg(long, value_name = "DIR", default_value = "/etc/sensor/tls")]
    pub dir: PathBuf,
    /// A name or address agents use to reach the collector (repeatable); localhost, 127.0.0.1
    /// and ::1 are always included. A server certificate is made when this is given or when the
    /// directory has none yet.
    #[arg(long = "server-name", value_name = "NAME")]
    pub server_names: Vec<String>,
    /// An agent identity, normally its host name (repeatable): writes agent-NAME.pem/.key.
    #[arg(long = "agent", value_name = "NAME")]
    pub agents: Vec<String>,
    /// A query client identity (repeatable): writes query-NAME.pem/.key; list NAME in the
    /// collector's query_clients.
    #[arg(long = "query-client", value_name = "NAME")]
    pub query_clients: Vec<String>,
    /// Validity of the server and client certificates, e.g. 825d, 1y (the CA: 10 years).
    #[arg(long, default_value = "825d", value_parser = humantime::parse_duration)]
    pub validity: Duration,
}

/// Runs `collector certs`, printing each file written.
pub fn run(args: &CertsArgs) -> anyhow::Result<()> {
    let written = create(&CertsPlan {
        dir: args.dir.clone(),
        server_names: args.server_names.clone(),
        agents: args.agents.clone(),
        query_clients: args.query_clients.clone(),
        validity: args.validity,
    })?;
    for path in &written {
        println!("{}", path.display());
    }
    if written.is_empty() {
        println!("nothing to write");
    }
    Ok(())
}

/// Creates the CA (unless present) and the planned certificates; answers the files written.
pub fn create(plan: &CertsPlan) -> Result<Vec<PathBuf>, CertsError> {
    for name in plan.agents.iter().chain(&plan.query_clients) {
        check_name(name)?;
    }
    for name in &plan.server_names {
        if name.parse::<std::net::IpAddr>().is_err() {
            check_name(name)?;
        }
    }
    std::fs::create_dir_all(&plan.dir).map_err(|source| CertsError::Io {
        path: plan.dir.clone(),
        source,
    })?;
    let mut written = Vec::new();
    let (issuer, ca_written) = ca(&plan.dir)?;
    written.extend(ca_written);
    let make_server = !plan.server_names.is_empty() || !plan.dir.join("server.pem").exists();
    if make_server {
        let mut names: Vec<String> = plan.server_names.clone();
        names.extend(LOCAL_SERVER_NAMES.map(str::to_owned));
        names.dedup();
        let params = leaf(&names, ExtendedKeyUsagePurpose::ServerAuth, plan.validity)?;
        written.extend(issue(&plan.dir, "server", params, &issuer)?);
    }
    for (prefix, names) in [("agent", &plan.agents), ("query", &plan.query_clients)] {
        for name in names {
            let params = leaf(
                std::slice::from_ref(name),
                ExtendedKeyUsagePurpose::ClientAuth,
                plan.validity,
            )?;
            written.extend(issue(
                &plan.dir,
                &format!("{prefix}-{name}"),
                params,
                &issuer,
            )?);
        }
    }
    Ok(written)
}

fn check_name(name: &str) -> Result<(), CertsError> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '.' || c == '-')
        && !name.starts_with(['.', '-']);
    if ok {
        Ok(())
    } else {
        Err(CertsError::BadName {
            name: name.to_owned(),
        })
    }
}

/// The CA in `dir`, made when absent.
fn ca(dir: &Path) -> Result<(Issuer<'static, KeyPair>, Vec<PathBuf>), CertsError> {
    let (cert_path, key_path) = (dir.join("ca.pem"), dir.join("ca.key"));
    if cert_path.exists() || key_path.exists() {
        let bad = |reason: String| CertsError::BadCa {
            dir: dir.to_owned(),
            reason,
        };
        let cert = std::fs::read_to_string(&cert_path).map_err(|e| bad(format!("ca.pem: {e}")))?;
        let key = std::fs::read_to_string(&key_path).map_err(|e| bad(format!("ca.key: {e}")))?;
        let key = KeyPair::from_pem(&key).map_err(|e| bad(format!("ca.key: {e}")))?;
        let issuer =
            Issuer::from_ca_cert_pem(&cert, key).map_err(|e| bad(format!("ca.pem: {e}")))?;
        return Ok((issuer, Vec::new()));
    }
    let key = KeyPair::generate()?;
    // A name of its own (from its random key), so that a certificate from another deployment's
    // CA is reported as from an unknown CA rather than as a bad signature.
    let tag: String = key.public_key_raw()[1..7]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let mut params = CertificateParams::default();
    params.distinguished_name = rcgen::DistinguishedName::new();
    params
        .distinguished_name
        .push(DnType::CommonName, format!("sensor collector CA {tag}"));
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    set_validity(&mut params, CA_VALIDITY);
    let cert = params.self_signed(&key)?;
    write_new(&key_path, key.serialize_pem().as_bytes(), 0o600)?;
    write_new(&cert_path, cert.pem().as_bytes(), 0o644)?;
    Ok((Issuer::new(params, key), vec![cert_path, key_path]))
}

/// Parameters of a leaf certificate whose identity is `names[0]`.
fn leaf(
    names: &[String],
    usage: ExtendedKeyUsagePurpose,
    validity: Duration,
) -> Result<CertificateParams, CertsError> {
    let mut params = CertificateParams::new(names.to_vec())?;
    params.distinguished_name = rcgen::DistinguishedName::new();
    params
        .distinguished_name
        .push(DnType::CommonName, names[0].as_str());
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![usage];
    params.use_authority_key_identifier_extension = true;
    set_validity(&mut params, validity);
    Ok(params)
}

fn set_validity(params: &mut CertificateParams, validity: Duration) {
    let now = time::OffsetDateTime::now_utc();
    params.not_before = now - BACKDATE;
    params.not_after = now + validity;
}

/// Writes `stem.pem` and `stem.key` signed by `issuer`.
fn issue(
    dir: &Path,
    stem: &str,
    params: CertificateParams,
    issuer: &Issuer<'_, KeyPair>,
) -> Result<Vec<PathBuf>, CertsError> {
    let (cert_path, key_path) = (
        dir.join(format!("{stem}.pem")),
        dir.join(format!("{stem}.key")),
    );
    for path in [&cert_path, &key_path] {
        if path.exists() {
            return Err(CertsError::Exists { path: path.clone() });
        }
    }
    let key = KeyPair::generate()?;
    let cert = params.signed_by(&key, issuer)?;
    write_new(&key_path, key.serialize_pem().as_bytes(), 0o600)?;
    write_new(&cert_path, cert.pem().as_bytes(), 0o644)?;
    Ok(vec![cert_path, key_path])
}

/// Creates `path` (never overwriting) with `mode` from the first byte on.
fn write_new(path: &Path, contents: &[u8], mode: u32) -> Result<(), CertsError> {
    let io = |source| CertsError::Io {
        path: path.to_owned(),
        source,
    };
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)
        .map_err(|e| {
            if e.kind() == std::io::ErrorKind::AlreadyExists {
                CertsError::Exists {
                    path: path.to_owned(),
                }
            } else {
                io(e)
            }
        })?;
    file.write_all(contents).map_err(io)?;
    file.sync_all().map_err(io)
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt as _;

    use super::*;

    fn plan(dir: &Path) -> CertsPlan {
        CertsPlan {
            dir: dir.to_owned(),
            server_names: vec!["collector.example".to_owned()],
            agents: vec!["agent-a".to_owned()],
            query_clients: vec!["ops".to_owned()],
            validity: Duration::from_secs(86_400),
        }
    }

    #[test]
    fn creates_a_ca_and_certificates_with_their_identities() {
        let dir = tempfile::tempdir().unwrap();
        let written = create(&plan(dir.path())).unwrap();
        assert_eq!(written.len(), 8, "{written:?}");
        for (file, identity) in [
            ("server.pem", "collector.example"),
            ("agent-agent-a.pem", "agent-a"),
            ("query-ops.pem", "ops"),
        ] {
            let pem = std::fs::read(dir.path().join(file)).unwrap();
            let (_, block) = x509_parser::pem::parse_x509_pem(&pem).unwrap();
            assert_eq!(
                crate::tls::certificate_identity(&block.contents).as_deref(),
                Some(identity)
            );
        }
        for key in ["ca.key", "server.key", "agent-agent-a.key", "query-ops.key"] {
            let mode = std::fs::metadata(dir.path().join(key))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600, "{key}");
        }
    }

    #[test]
    fn reuses_the_ca_and_never_overwrites() {
        let dir = tempfile::tempdir().unwrap();
        create(&plan(dir.path())).unwrap();
        let ca = std::fs::read(dir.path().join("ca.pem")).unwrap();
        let more = CertsPlan {
            server_names: Vec::new(),
            agents: vec!["agent-b".to_owned()],
            query_clients: Vec::new(),
            ..plan(dir.path())
        };
        let written = create(&more).unwrap();
        assert_eq!(written.len(), 2, "only agent-b: {written:?}");
        assert_eq!(std::fs::read(dir.path().join("ca.pem")).unwrap(), ca);
        let e = create(&plan(dir.path())).unwrap_err().to_string();
        assert!(e.contains("server.pem exists"), "{e}");
        let e = create(&CertsPlan {
            agents: vec!["../evil".to_owned()],
            ..more
        })
        .unwrap_err()
        .to_string();
        assert!(e.contains("invalid name \"../evil\""), "{e}");
    }
}
