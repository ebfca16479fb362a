//! A throwaway PostgreSQL server for tests: `initdb` into a temporary directory, `pg_ctl start` on
//! a free loopback port (its Unix socket in that directory too), one database per caller; stopped
//! and deleted on drop.
//!
//! PostgreSQL refuses to run as root, so the server runs as the `postgres` OS user (through
//! `runuser`, when the tests run as root). No server binaries is a failure telling to run
//! `scripts/setup`, never a silent skip. `fsync` is off: the data is thrown away at the end, and
//! nothing tested depends on surviving a power cut. A watchdog process stops the server and
//! deletes its directory if the test process dies without dropping the cluster (an abort, a
//! kill), so no server outlives its tests.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicUsize, Ordering};

/// A running server; stopped and its directory deleted on drop.
pub struct PgCluster {
    dir: tempfile::TempDir,
    bin: PathBuf,
    port: u16,
    next_db: AtomicUsize,
    /// Extra server options (`-c ssl=on …` for a TLS server).
    options: String,
}

/// A server's TLS material (PEM): its certificate and key, and the CA its clients' certificates
/// must chain to. Such a server accepts TCP connections only over TLS with a client certificate
/// whose common name is the user (`cert` authentication); the Unix socket stays open to tests.
pub struct ServerTls {
    pub cert: String,
    pub key: String,
    pub client_ca: String,
}

impl PgCluster {
    /// Creates and starts a cluster. Panics with what to do when PostgreSQL is not installed.
    pub fn start() -> PgCluster {
        Self::start_with(None)
    }

    /// Creates and starts a cluster that speaks TLS (see [`ServerTls`]).
    pub fn start_tls(tls: &ServerTls) -> PgCluster {
        Self::start_with(Some(tls))
    }

    fn start_with(tls: Option<&ServerTls>) -> PgCluster {
        let bin = server_bin().unwrap_or_else(|| {
            panic!(
                "PostgreSQL server binaries (initdb, pg_ctl) not found under \
                 /usr/lib/postgresql/*/bin; run scripts/setup, which installs Debian's \
                 `postgresql` package"
            )
        });
        let dir = tempfile::Builder::new()
            .prefix("collector-pg-")
            .tempdir()
            .expect("tempdir");
        let data = dir.path().join("data");
        let as_root = nix_is_root();
        if as_root {
            run(Command::new("chown")
                .args(["postgres:postgres"])
                .arg(dir.path()));
        }
        run(as_postgres(as_root, &bin.join("initdb"))
            .args([
                "--auth=trust",
                "--username=postgres",
                "--encoding=UTF8",
                "--locale=C",
            ])
            .args(["--no-sync", "-D"])
            .arg(&data));
        let options = match tls {
            Some(tls) => configure_tls(&data, tls, as_root),
            None => String::new(),
        };
        let cluster = PgCluster {
            dir,
            bin,
            port: free_port(),
            next_db: AtomicUsize::new(0),
            options,
        };
        cluster.resume();
        watch(&cluster.bin, cluster.dir.path(), as_root);
        cluster
    }

    /// Starts the server (again, after [`PgCluster::pause`]) on its port.
    pub fn resume(&self) {
        let options = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=100{}",
            self.port,
            self.dir.path().display(),
            self.options
        );
        run(as_postgres(nix_is_root(), &self.bin.join("pg_ctl"))
            .args(["-w", "-t", "30", "-D"])
            .arg(self.dir.path().join("data"))
            .arg("-l")
            .arg(self.dir.path().join("server.log"))
            .args(["-o", &options, "start"]));
    }

    /// Stops the server, keeping its data (a database outage); [`PgCluster::resume`] ends it.
    pub fn pause(&self) {
        run(as_postgres(nix_is_root(), &self.bin.join("pg_ctl"))
            .args(["-w", "-m", "fast", "-D"])
            .arg(self.dir.path().join("data"))
            .arg("stop"));
    }

    /// The URL of a new, empty database named after `name`.
    pub fn database(&self, name: &str) -> String {
        let n = self.next_db.fetch_add(1, Ordering::Relaxed);
        let db: String = format!("{name}_{n}")
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() {
                    c.to_ascii_lowercase()
                } else {
                    '_'
                }
            })
            .collect();
        // On a thread of its own: the synchronous client runs a runtime, which an async test's
        // thread cannot.
        std::thread::scope(|scope| {
            scope
                .spawn(|| {
                    // Over the Unix socket, which a TLS-only server leaves open to the tests.
                    let admin_url = format!(
                        "host={} port={} user=postgres dbname=postgres",
                        self.dir.path().display(),
                        self.port
                    );
                    let mut admin = postgres::Client::connect(&admin_url, postgres::NoTls)
                        .unwrap_or_else(|e| {
                            panic!("connect to the test server: {e}\n{}", self.log())
                        });
                    admin
                        .batch_execute(&format!("CREATE DATABASE {db}"))
                        .unwrap_or_else(|e| panic!("create database {db}: {e}"));
                })
                .join()
                .expect("creating the test database failed");
        });
        self.url(&db)
    }

    /// The URL of database `db` over TCP on loopback.
    pub fn url(&self, db: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{db}", self.port)
    }

    /// The server's log, for failure messages.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("server.log")).unwrap_or_default()
    }
}

impl Drop for PgCluster {
    fn drop(&mut self) {
        let status = as_postgres(nix_is_root(), &self.bin.join("pg_ctl"))
            .args(["-w", "-m", "immediate", "-D"])
            .arg(self.dir.path().join("data"))
            .arg("stop")
            .output();
        if let Ok(out) = status
            && !out.status.success()
        {
            eprintln!(
                "stopping the test PostgreSQL failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }
}

/// Writes the server's TLS files into `data` (owned by postgres, the key 0600 as PostgreSQL
/// demands) and a `pg_hba.conf` that takes TCP only over TLS with a client certificate; returns
/// the server options that turn TLS on.
fn configure_tls(data: &Path, tls: &ServerTls, as_root: bool) -> String {
    use std::os::unix::fs::PermissionsExt as _;
    for (name, pem) in [
        ("server.crt", &tls.cert),
        ("server.key", &tls.key),
        ("client-ca.crt", &tls.client_ca),
    ] {
        let path = data.join(name);
        std::fs::write(&path, pem).expect("write the server's TLS files");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        if as_root {
            run(Command::new("chown").args(["postgres:postgres"]).arg(&path));
        }
    }
    std::fs::write(
        data.join("pg_hba.conf"),
        "local all all trust\n\
         hostssl all all 127.0.0.1/32 cert\n\
         hostnossl all all 127.0.0.1/32 reject\n",
    )
    .expect("write pg_hba.conf");
    " -c ssl=on -c ssl_cert_file=server.crt -c ssl_key_file=server.key \
     -c ssl_ca_file=client-ca.crt"
        .to_owned()
}

/// Starts a detached shell that waits for this process to end, then stops the server in `dir`
/// (a no-op when `Drop` already did) and deletes the directory.
fn watch(bin: &Path, dir: &Path, as_root: bool) {
    let runuser = if as_root {
        "runuser -u postgres --"
    } else {
        ""
    };
    let script = format!(
        "while kill -0 \"$1\" 2>/dev/null; do sleep 1; done; \
         {runuser} \"$2/pg_ctl\" -D \"$3/data\" -m immediate -w stop >/dev/null 2>&1; \
         rm -rf \"$3\""
    );
    let spawned = Command::new("sh")
        .args(["-c", &script, "pg-watchdog"])
        .arg(std::process::id().to_string())
        .arg(bin)
        .arg(dir)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn();
    if let Err(e) = spawned {
        eprintln!("cannot start the PostgreSQL watchdog (the server may outlive a crash): {e}");
    }
}

/// `/usr/lib/postgresql/<newest>/bin`, if it holds `initdb` and `pg_ctl`.
fn server_bin() -> Option<PathBuf> {
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .filter_map(|e| {
            let e = e.ok()?;
            let version = e.file_name().to_str()?.parse().ok()?;
            Some((version, e.path().join("bin")))
        })
        .filter(|(_, bin)| bin.join("initdb").exists() && bin.join("pg_ctl").exists())
        .collect();
    versions.sort();
    versions.pop().map(|(_, bin)| bin)
}

/// Whether the tests run as root (effective uid 0, from /proc/self/status).
fn nix_is_root() -> bool {
    std::fs::read_to_string("/proc/self/status").is_ok_and(|status| {
        status
            .lines()
            .find_map(|l| l.strip_prefix("Uid:"))
            .and_then(|ids| ids.split_whitespace().nth(1))
            == Some("0")
    })
}

/// `program` run as the `postgres` user when we are root (PostgreSQL refuses root), else as us.
fn as_postgres(as_root: bool, program: &Path) -> Command {
    if as_root {
        let mut command = Command::new("runuser");
        command.args(["-u", "postgres", "--"]).arg(program);
        command
    } else {
        Command::new(program)
    }
}

fn run(command: &mut Command) -> Output {
    let out = command
        .output()
        .unwrap_or_else(|e| panic!("cannot run {command:?}: {e}"));
    assert!(
        out.status.success(),
        "{command:?} failed: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// A loopback port free now (the server binds it right after).
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("bind a free port")
        .port()
}
