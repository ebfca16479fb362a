//! The collector's configuration file (TOML, default [`DEFAULT_PATH`]) and how it merges with the
//! command line.
//!
//! Keys are the flags' names with `_` for `-`: `log_format`, `listen`, `db`, `agent_silence`,
//! `retention`, `metrics_listen`
//! (for `serve`) and `server` (the collector `deviations` asks). The filters of `deviations`
//! (`--workload`, `--kind`...) are per query and stay on the command line. Precedence, highest
//! first: a flag, its environment variable, the file, the built-in default. The shipped example,
//! `packaging/collector.toml`, lists every key with its default.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use clap::ArgMatches;
use clap::parser::ValueSource;
use serde::Deserialize;

use crate::cli::{Cli, Command, LogFormat};
use crate::credentials::ClientArgs;

/// Where the configuration is read from when `--config` is not given. A missing file there is
/// fine; a missing `--config` file is an error.
pub const DEFAULT_PATH: &str = "/etc/sensor/collector.toml";

/// The example configuration.
pub const EXAMPLE: &str = include_str!("../../packaging/collector.toml");

/// The configuration file's contents: every key optional, unknown keys refused.
#[derive(Debug, Default, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    /// `text` or `json`.
    pub log_format: Option<LogFormat>,
    /// gRPC address `serve` listens on.
    pub listen: Option<SocketAddr>,
    /// Database: SQLite file path (or sqlite:///path), or a postgres:// URL.
    pub db: Option<String>,
    /// `serve`: how long without contact before an agent is marked silent.
    pub agent_silence: Option<crate::upkeep::Span>,
    /// `serve`: how long deviations are kept, or "forever".
    pub retention: Option<crate::upkeep::Retention>,
    /// Web page, JSON API and Prometheus endpoint of `serve`, "" for none.
    pub metrics_listen: Option<ListenAddr>,
    /// Collector `deviations` asks.
    pub server: Option<String>,
    /// `serve`: server certificate chain, its key, and the CA of client certificates (TLS).
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
    pub tls_client_ca: Option<PathBuf>,
    /// `serve`: bearer tokens allowing queries, one per line.
    pub query_token_file: Option<PathBuf>,
    /// `serve`: certificate identities allowed to query.
    pub query_clients: Option<Vec<String>>,
    /// `serve`: distinct agents needed before a shared baseline is served.
    pub baseline_quorum: Option<u32>,
    /// `serve`: `AGENTS=WORKLOAD[,WORKLOAD...]` scopes of shared baselines.
    pub baseline_scopes: Option<Vec<String>>,
    /// `deviations`/`export`: the collector's CA, the client certificate and key, the token file.
    pub server_ca: Option<PathBuf>,
    pub client_cert: Option<PathBuf>,
    pub client_key: Option<PathBuf>,
    pub token_file: Option<PathBuf>,
}

/// A local address to serve on, or none (written `""`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ListenAddr(pub Option<SocketAddr>);

impl FromStr for ListenAddr {
    type Err = String;
    fn from_str(text: &str) -> Result<Self, String> {
        if text.trim().is_empty() {
            return Ok(ListenAddr(None));
        }
        text.parse().map(|a| ListenAddr(Some(a))).map_err(|_| {
            format!(
                "invalid address {text:?}: expected IP:PORT such as 127.0.0.1:9465, or \"\" for none"
            )
        })
    }
}

impl<'de> Deserialize<'de> for ListenAddr {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d)?
            .parse()
            .map_err(serde::de::Error::custom)
    }
}

pub use ops::config::ConfigError;

/// Reads the file `--config` named, or [`DEFAULT_PATH`] if it exists.
pub fn load(explicit: Option<&Path>) -> Result<FileConfig, ConfigError> {
    ops::config::load(explicit, Path::new(DEFAULT_PATH))
}

/// Parses `text`, the contents of `path` (named in errors with the line and column).
pub fn parse(path: &Path, text: &str) -> Result<FileConfig, ConfigError> {
    ops::config::parse(path, text)
}

/// Whether the argument `id` was left to its default (not on the command line nor in the
/// environment), so that the file may set it.
fn unset(matches: &ArgMatches, id: &str) -> bool {
    !matches!(
        matches.value_source(id),
        Some(ValueSource::CommandLine | ValueSource::EnvVariable)
    )
}

fn set<T: Clone>(matches: &ArgMatches, id: &str, arg: &mut T, file: &Option<T>) {
    if unset(matches, id)
        && let Some(value) = file
    {
        arg.clone_from(value);
    }
}

/// As [`set`] for an optional path (absent unless given).
fn set_path(matches: &ArgMatches, id: &str, arg: &mut Option<PathBuf>, file: &Option<PathBuf>) {
    set(matches, id, arg, &file.clone().map(Some));
}

/// The TLS and token settings of a query client.
fn set_client(
    matches: &ArgMatches,
    client: &mut crate::credentials::ClientArgs,
    file: &FileConfig,
) {
    let ClientArgs {
        server_ca,
        client_cert,
        client_key,
        token_file,
        ..
    } = client;
    set_path(matches, "server_ca", server_ca, &file.server_ca);
    set_path(matches, "client_cert", client_cert, &file.client_cert);
    set_path(matches, "client_key", client_key, &file.client_key);
    set_path(matches, "token_file", token_file, &file.token_file);
}

/// Fills every option the command line left to its default from the file. `matches` are the
/// ones `cli` was built from.
pub fn merge(cli: &mut Cli, matches: &ArgMatches, file: &FileConfig) {
    set(matches, "log_format", &mut cli.log_format, &file.log_format);
    match &mut cli.command {
        Command::Serve(args) => {
            let Some(("serve", m)) = matches.subcommand() else {
                return;
            };
            set(m, "listen", &mut args.listen, &file.listen);
            set(m, "db", &mut args.db, &file.db);
            set(
                m,
                "agent_silence",
                &mut args.agent_silence,
                &file.agent_silence,
            );
            set(m, "retention", &mut args.retention, &file.retention);
            set(
                m,
                "metrics_listen",
                &mut args.metrics_listen,
                &file.metrics_listen,
            );
            set_path(m, "tls_cert", &mut args.tls_cert, &file.tls_cert);
            set_path(m, "tls_key", &mut args.tls_key, &file.tls_key);
            set_path(
                m,
                "tls_client_ca",
                &mut args.tls_client_ca,
                &file.tls_client_ca,
            );
            set_path(
                m,
                "query_token_file",
                &mut args.query_token_file,
                &file.query_token_file,
            );
            set(
                m,
                "query_clients",
                &mut args.query_clients,
                &file.query_clients,
            );
            set(
                m,
                "baseline_quorum",
                &mut args.baseline_quorum,
                &file.baseline_quorum,
            );
            set(
                m,
                "baseline_scopes",
                &mut args.baseline_scopes,
                &file.baseline_scopes,
            );
        }
        Command::Deviations(args) => {
            let Some(("deviations", m)) = matches.subcommand() else {
                return;
            };
            set(m, "server", &mut args.server, &file.server);
            set_client(m, &mut args.client, file);
        }
        Command::Workloads(args) => {
            let Some(("workloads", m)) = matches.subcommand() else {
                return;
            };
            set(m, "server", &mut args.server, &file.server);
            set_client(m, &mut args.client, file);
        }
        Command::Agents(args) => {
            let Some(("agents", m)) = matches.subcommand() else {
                return;
            };
            set(m, "server", &mut args.server, &file.server);
            set_client(m, &mut args.client, file);
        }
        Command::Export(args) => {
            let Some(("export", m)) = matches.subcommand() else {
                return;
            };
            set(m, "server", &mut args.server, &file.server);
            set_client(m, &mut args.client, file);
        }
        Command::Incidents(args) => {
            let Some(("incidents", m)) = matches.subcommand() else {
                return;
            };
            set(m, "server", &mut args.server, &file.server);
            set_client(m, &mut args.client, file);
        }
        Command::Report(args) => {
            let Some(("report", m)) = matches.subcommand() else {
                return;
            };
            set(m, "server", &mut args.server, &file.server);
            set_client(m, &mut args.client, file);
        }
        Command::Baselines(args) => {
            let Some(("baselines", m)) = matches.subcommand() else {
                return;
            };
            set(m, "db", &mut args.db, &file.db);
        }
        Command::Install(_) | Command::Uninstall(_) | Command::Certs(_) => {}
    }
}

#[cfg(test)]
mod tests {
    use clap::{CommandFactory, FromArgMatches};

    use super::*;
    use crate::cli::ServeArgs;

    fn file(text: &str) -> Result<FileConfig, String> {
        parse(Path::new("/etc/sensor/collector.toml"), text).map_err(|e| e.to_string())
    }

    fn cli(args: &[&str], file: &FileConfig) -> Cli {
        let matches = Cli::command().try_get_matches_from(args).unwrap();
        let mut cli = Cli::from_arg_matches(&matches).unwrap();
        merge(&mut cli, &matches, file);
        cli
    }

    fn serve(cli: Cli) -> ServeArgs {
        match cli.command {
            Command::Serve(args) => args,
            other => panic!("expected serve, got {other:?}"),
        }
    }

    #[test]
    fn the_file_fills_what_the_command_line_left_out() {
        let config = file(
            "log_format = \"json\"\nlisten = \"0.0.0.0:7000\"\ndb = \"/srv/c.db\"\n\
             metrics_listen = \"\"\nserver = \"http://c:7000\"",
        )
        .unwrap();
        let cli = cli(&["collector", "serve", "--db", "/tmp/x.db"], &config);
        assert_eq!(cli.log_format, LogFormat::Json);
        let args = serve(cli);
        assert_eq!(args.listen, "0.0.0.0:7000".parse().unwrap());
        assert_eq!(args.db, "/tmp/x.db", "the flag wins");
        assert_eq!(args.metrics_listen, ListenAddr(None));

        let Command::Deviations(args) = cli_deviations(&config).command else {
            panic!("expected deviations");
        };
        assert_eq!(args.server, "http://c:7000");
    }

    fn cli_deviations(config: &FileConfig) -> Cli {
        cli(&["collector", "--log-format", "text", "deviations"], config)
    }

    #[test]
    fn flags_override_the_file() {
        let config = file("log_format = \"json\"").unwrap();
        assert_eq!(cli_deviations(&config).log_format, LogFormat::Text);
    }

    #[test]
    fn errors_name_the_line_column_and_reason() {
        let e = file("db = \"/a\"\nlisten = \"nowhere\"\n").unwrap_err();
        assert!(
            e.starts_with("invalid config file /etc/sensor/collector.toml:2:10: "),
            "{e}"
        );
        assert!(e.contains("invalid socket address"), "{e}");
        let e = file("\n\n  lsiten = \"127.0.0.1:1\"").unwrap_err();
        assert!(
            e.contains("collector.toml:3:3: unknown field `lsiten`"),
            "{e}"
        );
        let e = file("[serve\nlisten = 1").unwrap_err();
        assert!(e.contains("collector.toml:1:"), "{e}");
        assert!(!e.contains('\n'), "one line: {e}");
        let e = load(Some(Path::new("/nonexistent/collector.toml")))
            .unwrap_err()
            .to_string();
        assert!(e.contains("/nonexistent/collector.toml"), "{e}");
    }

    /// The shipped example parses as it is (every setting commented out) and, with every
    /// setting uncommented, documents exactly the built-in defaults.
    #[test]
    fn the_example_parses_and_documents_the_defaults() {
        let example = Path::new("packaging/collector.toml");
        assert_eq!(parse(example, EXAMPLE).unwrap(), FileConfig::default());
        let uncommented: String = EXAMPLE
            .lines()
            .map(|l| match l.strip_prefix('#') {
                Some(setting) if setting.starts_with(|c: char| c.is_ascii_lowercase()) => setting,
                _ => l,
            })
            .map(|l| format!("{l}\n"))
            .collect();
        let config = parse(example, &uncommented).unwrap();
        assert!(
            config.log_format.is_some()
                && config.listen.is_some()
                && config.db.is_some()
                && config.agent_silence.is_some()
                && config.retention.is_some()
                && config.metrics_listen.is_some()
                && config.server.is_some(),
            "the example shows every key: {config:?}"
        );
        let defaults = serve(cli(&["collector", "serve"], &FileConfig::default()));
        let documented = serve(cli(&["collector", "serve"], &config));
        assert_eq!(format!("{documented:?}"), format!("{defaults:?}"));
        let Command::Deviations(args) = cli(&["collector", "deviations"], &config).command else {
            panic!("expected deviations");
        };
        assert_eq!(args.server, crate::cli::DEFAULT_SERVER);
        assert_eq!(
            cli(&["collector", "serve"], &config).log_format,
            LogFormat::Text
        );
    }
}
