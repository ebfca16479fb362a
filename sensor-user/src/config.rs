//! The sensor's configuration file (TOML, default [`DEFAULT_PATH`]) and how it merges with the
//! command line.
//!
//! Every option of `sensor run` and `sensor status` can be set in the file under the flag's name
//! with `_` for `-` (`--learning-period` is `learning_period`); `--no-kernel-filter` is
//! `kernel_filter = false`. Precedence, highest first: a flag on the command line, its
//! environment variable, the file, the built-in default. The shipped example,
//! `packaging/sensor.toml`, lists every key with its default.

use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::ArgMatches;
use clap::parser::ValueSource;
use serde::Deserialize;

pub use crate::cli::ListenAddr;
use crate::cli::{Cli, Command, LogFormat};

/// Where the configuration is read from when `--config` is not given. A missing file there is
/// fine (everything has a default); a missing `--config` file is an error.
pub const DEFAULT_PATH: &str = crate::cli::DEFAULT_CONFIG_PATH;

/// The example configuration, also what `sensor install` writes when no file exists.
pub const EXAMPLE: &str = include_str!("../../packaging/sensor.toml");

/// The configuration file's contents: every key optional, unknown keys refused.
#[derive(Debug, Default, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    /// `text` or `json`.
    pub log_format: Option<LogFormat>,
    /// gRPC address of the collector.
    pub collector: Option<String>,
    /// Baselines, spool and status file.
    pub state_dir: Option<PathBuf>,
    /// Runs a CI job learns from.
    pub learning_runs: Option<u32>,
    /// How long other workloads learn, e.g. "24h".
    #[serde(default, deserialize_with = "duration")]
    pub learning_period: Option<Duration>,
    /// Host name reported with every deviation.
    pub host: Option<String>,
    /// Time between two heartbeats to the collector, e.g. "30s".
    #[serde(default, deserialize_with = "duration")]
    pub heartbeat_interval: Option<Duration>,
    /// `false`: send every open and connect to userspace (`--no-kernel-filter`).
    pub kernel_filter: Option<bool>,
    /// `false`: do not share baselines through the collector (`--no-share-baselines`).
    pub share_baselines: Option<bool>,
    /// `auto`, `fentry`, `lsm`, `tracepoint`, `tracepoint-pair` or `raw-sys-exit` (`--open-hook`).
    pub open_hook: Option<crate::kernel::OpenHook>,
    /// Extra credential-store path patterns (`--secret-path`), added to the built-in list.
    pub secret_paths: Option<Vec<String>>,
    /// The cgroup v2 mount.
    pub cgroup_root: Option<PathBuf>,
    /// How container workloads are named (`--container-identity`).
    pub container_identity: Option<crate::attribute::ContainerNaming>,
    /// Where containers are looked up (`--container-source`).
    pub container_sources: Option<Vec<crate::attribute::ContainerSource>>,
    /// Prometheus endpoint, "" for none.
    pub metrics_listen: Option<ListenAddr>,
    /// TLS to an https:// collector: its CA, this agent's certificate and key.
    pub collector_ca: Option<PathBuf>,
    pub client_cert: Option<PathBuf>,
    pub client_key: Option<PathBuf>,
}

/// A humantime duration ("24h", "30m") as a TOML string.
fn duration<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
    let text = String::deserialize(d)?;
    humantime::parse_duration(&text)
        .map(Some)
        .map_err(|e| serde::de::Error::custom(format!("invalid duration {text:?}: {e}")))
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

/// Fills every option the command line left to its default from the file. `matches` are the
/// ones `cli` was built from.
pub fn merge(cli: &mut Cli, matches: &ArgMatches, file: &FileConfig) {
    if unset(matches, "log_format")
        && let Some(format) = file.log_format
    {
        cli.log_format = format;
    }
    match &mut cli.command {
        Command::Run(args) => {
            let Some(("run", m)) = matches.subcommand() else {
                return;
            };
            set(m, "collector", &mut args.collector, &file.collector);
            set(
                m,
                "heartbeat_interval",
                &mut args.heartbeat_interval,
                &file.heartbeat_interval,
            );
            set(m, "state_dir", &mut args.state_dir, &file.state_dir);
            set(
                m,
                "learning_runs",
                &mut args.learning_runs,
                &file.learning_runs,
            );
            set(
                m,
                "learning_period",
                &mut args.learning_period,
                &file.learning_period,
            );
            if unset(m, "host") && file.host.is_some() {
                args.host.clone_from(&file.host);
            }
            if unset(m, "no_kernel_filter")
                && let Some(on) = file.kernel_filter
            {
                args.no_kernel_filter = !on;
            }
            if unset(m, "no_share_baselines")
                && let Some(on) = file.share_baselines
            {
                args.no_share_baselines = !on;
            }
            set(m, "open_hook", &mut args.open_hook, &file.open_hook);
            if unset(m, "secret_paths")
                && let Some(paths) = &file.secret_paths
            {
                args.secret_paths.clone_from(paths);
            }
            if unset(m, "cgroup_root") && file.cgroup_root.is_some() {
                args.cgroup_root.clone_from(&file.cgroup_root);
            }
            set(
                m,
                "container_identity",
                &mut args.container_identity,
                &file.container_identity,
            );
            set(
                m,
                "container_sources",
                &mut args.container_sources,
                &file.container_sources,
            );
            for (id, arg, value) in [
                ("collector_ca", &mut args.collector_ca, &file.collector_ca),
                ("client_cert", &mut args.client_cert, &file.client_cert),
                ("client_key", &mut args.client_key, &file.client_key),
            ] {
                if unset(m, id) && value.is_some() {
                    arg.clone_from(value);
                }
            }
            set(
                m,
                "metrics_listen",
                &mut args.metrics_listen,
                &file.metrics_listen,
            );
        }
        Command::Status(args) => {
            let Some(("status", m)) = matches.subcommand() else {
                return;
            };
            set(m, "state_dir", &mut args.state_dir, &file.state_dir);
        }
        Command::Baseline(args) => {
            let Some(("baseline", m)) = matches.subcommand() else {
                return;
            };
            set(m, "state_dir", &mut args.state_dir, &file.state_dir);
        }
        Command::Install(_) | Command::Uninstall(_) => {}
    }
}

fn set<T: Clone>(matches: &ArgMatches, id: &str, arg: &mut T, file: &Option<T>) {
    if unset(matches, id)
        && let Some(value) = file
    {
        arg.clone_from(value);
    }
}

#[cfg(test)]
mod tests {
    use clap::{CommandFactory, FromArgMatches};

    use super::*;
    use crate::cli::RunArgs;

    fn file(text: &str) -> Result<FileConfig, String> {
        parse(Path::new("/etc/sensor/sensor.toml"), text).map_err(|e| e.to_string())
    }

    fn cli(args: &[&str], file: &FileConfig) -> Cli {
        let matches = Cli::command().try_get_matches_from(args).unwrap();
        let mut cli = Cli::from_arg_matches(&matches).unwrap();
        merge(&mut cli, &matches, file);
        cli
    }

    fn run(cli: Cli) -> RunArgs {
        match cli.command {
            Command::Run(args) => args,
            other => panic!("expected run, got {other:?}"),
        }
    }

    #[test]
    fn every_key_parses() {
        let config = file(
            r#"
            log_format = "json"
            collector = "http://10.0.0.1:50051"
            state_dir = "/srv/sensor"
            learning_runs = 3
            learning_period = "2h 30m"
            host = "runner-7"
            kernel_filter = false
            cgroup_root = "/sys/fs/cgroup"
            metrics_listen = ""
            "#,
        )
        .unwrap();
        assert_eq!(config.log_format, Some(LogFormat::Json));
        assert_eq!(
            config.learning_period,
            Some(Duration::from_secs(2 * 3600 + 30 * 60))
        );
        assert_eq!(config.kernel_filter, Some(false));
        assert_eq!(config.metrics_listen, Some(ListenAddr(None)));
    }

    #[test]
    fn the_file_fills_what_the_command_line_left_out() {
        let config = file(
            "collector = \"http://c:1\"\nlearning_runs = 9\nkernel_filter = false\n\
             metrics_listen = \"127.0.0.1:1234\"\nlog_format = \"json\"\nhost = \"h\"",
        )
        .unwrap();
        let cli = cli(&["sensor", "run", "--learning-runs", "2"], &config);
        assert_eq!(cli.log_format, LogFormat::Json);
        let args = run(cli);
        assert_eq!(args.collector, "http://c:1");
        assert_eq!(args.learning_runs, 2, "the flag wins");
        assert!(args.no_kernel_filter);
        assert_eq!(args.host.as_deref(), Some("h"));
        assert_eq!(
            args.metrics_listen,
            ListenAddr(Some("127.0.0.1:1234".parse().unwrap()))
        );
        // Untouched options keep their defaults.
        assert_eq!(args.state_dir, Path::new("/var/lib/sensor"));
        assert_eq!(args.learning_period, Duration::from_secs(24 * 3600));
    }

    #[test]
    fn flags_override_the_file() {
        let config =
            file("log_format = \"json\"\nstate_dir = \"/a\"\nkernel_filter = false").unwrap();
        let cli = cli(
            &[
                "sensor",
                "--log-format",
                "text",
                "status",
                "--state-dir",
                "/b",
            ],
            &config,
        );
        assert_eq!(cli.log_format, LogFormat::Text);
        let Command::Status(args) = cli.command else {
            panic!("expected status")
        };
        assert_eq!(args.state_dir, Path::new("/b"));
    }

    #[test]
    fn an_empty_file_changes_nothing() {
        let with = run(cli(&["sensor", "run"], &file("").unwrap()));
        let without = run(cli(&["sensor", "run"], &FileConfig::default()));
        assert_eq!(format!("{with:?}"), format!("{without:?}"));
        assert_eq!(
            with.metrics_listen,
            ListenAddr(Some("127.0.0.1:9464".parse().unwrap()))
        );
    }

    #[test]
    fn errors_name_the_line_column_and_reason() {
        let e = file("collector = \"x\"\n\ncolector = \"y\"\n").unwrap_err();
        assert!(
            e.starts_with("invalid config file /etc/sensor/sensor.toml:3:1: "),
            "{e}"
        );
        assert!(e.contains("unknown field `colector`"), "{e}");
        assert!(!e.contains('\n'), "one line: {e}");

        let e = file("learning_runs = \"five\"").unwrap_err();
        assert!(e.contains("sensor.toml:1:17: "), "{e}");
        assert!(e.contains("invalid type"), "{e}");

        let e = file("learning_period = \"soon\"").unwrap_err();
        assert!(e.contains(":1:19: invalid duration \"soon\""), "{e}");

        let e = file("metrics_listen = \"localhost\"").unwrap_err();
        assert!(e.contains(":1:18: invalid address \"localhost\""), "{e}");

        let e = file("log_format = \"xml\"").unwrap_err();
        assert!(e.contains(":1:14: unknown variant `xml`"), "{e}");

        let e = file("collector = \n").unwrap_err();
        assert!(e.contains("sensor.toml:1:"), "{e}");
        assert!(!e.contains('\n'), "one line: {e}");
    }

    #[test]
    fn a_missing_explicit_file_is_an_error_but_a_missing_default_is_not() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("nope.toml");
        let e = load(Some(&missing)).unwrap_err().to_string();
        assert!(e.contains("nope.toml"), "{e}");
        let present = dir.path().join("sensor.toml");
        std::fs::write(&present, "learning_runs = 1").unwrap();
        assert_eq!(load(Some(&present)).unwrap().learning_runs, Some(1));
        if !Path::new(DEFAULT_PATH).exists() {
            assert_eq!(load(None).unwrap(), FileConfig::default());
        }
    }

    /// The shipped example parses as it is (every setting commented out) and, with every
    /// setting uncommented, documents exactly the built-in defaults.
    #[test]
    fn the_example_parses_and_documents_the_defaults() {
        let example = Path::new("packaging/sensor.toml");
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
        let keys = uncommented
            .lines()
            .filter(|l| l.starts_with(|c: char| c.is_ascii_lowercase()))
            .count();
        assert!(keys >= 7, "the example sets every key: {uncommented}");
        let defaults = run(cli(&["sensor", "run"], &FileConfig::default()));
        let documented = run(cli(&["sensor", "run"], &config));
        assert_eq!(format!("{documented:?}"), format!("{defaults:?}"));
        assert_eq!(cli(&["sensor", "run"], &config).log_format, LogFormat::Text);
    }
}
