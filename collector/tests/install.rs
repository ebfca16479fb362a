//! `collector install` with the real binary: the config and the secrets directory are root's
//! alone (modes and owners), and the installed service reads its secrets from systemd credentials
//! (`$CREDENTIALS_DIRECTORY`, as `LoadCredential=` sets it), so its web API asks for the token
//! even on loopback. No systemd runs here (PID 1 is not systemd): the credential directory is
//! laid out as systemd lays it out.

use std::io::{BufRead as _, BufReader, Read as _, Write as _};
use std::os::unix::fs::{MetadataExt as _, PermissionsExt as _};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use collector::install::{CONFIG, SECRETS_DIR};

const BIN: &str = env!("CARGO_BIN_EXE_collector");
const DEADLINE: Duration = Duration::from_secs(10);

fn under(root: &Path, path: &str) -> std::path::PathBuf {
    root.join(path.trim_start_matches('/'))
}

fn install(root: &Path) -> String {
    let out = Command::new(BIN)
        .arg("install")
        .arg("--root")
        .arg(root)
        .output()
        .expect("run collector install");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// Mode bits and owner uid of `path`.
fn mode_owner(path: &Path) -> (u32, u32) {
    let meta = std::fs::metadata(path).unwrap();
    (meta.permissions().mode() & 0o7777, meta.uid())
}

#[test]
fn install_leaves_the_config_and_secrets_to_root_alone() {
    let root = tempfile::tempdir().unwrap();
    let me = std::fs::metadata(root.path()).unwrap().uid();
    install(root.path());
    let config = under(root.path(), CONFIG);
    let secrets = under(root.path(), SECRETS_DIR);
    assert_eq!(
        mode_owner(&config),
        (0o640, me),
        "config: no one else reads it"
    );
    assert_eq!(mode_owner(&secrets), (0o700, me), "secrets directory");
    let unit = std::fs::read_to_string(under(root.path(), collector::install::UNIT)).unwrap();
    assert!(
        unit.contains("LoadCredential=config:/etc/sensor/collector.toml"),
        "{unit}"
    );
    assert!(unit.contains("DynamicUser=yes"), "{unit}");

    // A config an operator left readable by everyone (holding a password) is restricted on the
    // next install, its contents kept.
    let text = "db = \"postgres://collector:s3cret@db.internal/collector\"\n";
    std::fs::write(&config, text).unwrap();
    std::fs::set_permissions(&config, std::fs::Permissions::from_mode(0o644)).unwrap();
    std::fs::set_permissions(&secrets, std::fs::Permissions::from_mode(0o755)).unwrap();
    let out = install(root.path());
    assert!(out.contains("restricted to 640"), "{out}");
    assert_eq!(mode_owner(&config), (0o640, me));
    assert_eq!(mode_owner(&secrets), (0o700, me));
    assert_eq!(std::fs::read_to_string(&config).unwrap(), text);
}

/// A `collector serve` child, killed when dropped.
struct Serve(Child);

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn http_get(port: u16, path: &str, token: Option<&str>) -> String {
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    stream.set_read_timeout(Some(DEADLINE)).unwrap();
    let auth = token.map_or(String::new(), |t| format!("Authorization: Bearer {t}\r\n"));
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n{auth}\r\n"
    )
    .unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).unwrap();
    answer
}

#[test]
fn the_service_reads_its_secrets_from_systemd_credentials() {
    let dir = tempfile::tempdir().unwrap();
    let web = free_port();
    // What `LoadCredential=config:…` and `LoadCredential=secrets:/etc/sensor/collector` give the
    // service: copies named `config` and `secrets_<file name>`. The config names the token file
    // where the install put it, a directory the service's user cannot read.
    let credentials = dir.path().join("credentials");
    std::fs::create_dir(&credentials).unwrap();
    std::fs::write(
        credentials.join("secrets_query-tokens"),
        "cr3dential-token\n",
    )
    .unwrap();
    std::fs::set_permissions(
        credentials.join("secrets_query-tokens"),
        std::fs::Permissions::from_mode(0o400),
    )
    .unwrap();
    std::fs::write(
        credentials.join("config"),
        format!(
            "listen = \"127.0.0.1:0\"\nmetrics_listen = \"127.0.0.1:{web}\"\ndb = \"{}\"\n\
             query_token_file = \"{SECRETS_DIR}/query-tokens\"\n",
            dir.path().join("collector.db").display()
        ),
    )
    .unwrap();
    let mut child = Command::new(BIN)
        .args(["--log-format", "json", "serve", "--config"])
        .arg(credentials.join("config"))
        .env("CREDENTIALS_DIRECTORY", &credentials)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn collector serve");
    let stderr = BufReader::new(child.stderr.take().unwrap());
    let _serve = Serve(child);
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in stderr.lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let deadline = Instant::now() + DEADLINE;
    loop {
        let line = rx
            .recv_timeout(deadline.saturating_duration_since(Instant::now()))
            .expect("the collector serves (its token file found among the credentials)");
        if line.contains("\"collector serving\"") {
            break;
        }
    }
    let refused = http_get(web, "/api/deviations", None);
    assert!(refused.starts_with("HTTP/1.1 401 "), "{refused}");
    let answered = http_get(web, "/api/deviations", Some("cr3dential-token"));
    assert!(answered.starts_with("HTTP/1.1 200 "), "{answered}");
}
