//! The command line.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};
use proto::v1::{DeviationKind, Severity};
use serde::Deserialize;

use crate::config::ListenAddr;

/// Default database file; `serve` creates its directory.
pub const DEFAULT_DB: &str = "/var/lib/sensor-collector/collector.db";
/// Default collector address for `deviations`.
pub const DEFAULT_SERVER: &str = "http://127.0.0.1:50051";

/// The sensor collector: receives deviations from agents over gRPC, stores them in SQLite and
/// answers queries about them.
#[derive(Debug, Parser)]
#[command(name = "collector", version)]
pub struct Cli {
    /// Log format (logs go to stderr; the level comes from RUST_LOG, default "info").
    #[arg(long, value_enum, default_value_t = LogFormat::Text, global = true)]
    pub log_format: LogFormat,
    /// Configuration file (TOML); flags override it. A missing file is an error, except at the
    /// default path.
    #[arg(
        long,
        global = true,
        value_name = "PATH",
        env = "COLLECTOR_CONFIG",
        default_value = crate::config::DEFAULT_PATH
    )]
    pub config: PathBuf,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Receive deviations from agents and answer queries, until SIGINT or SIGTERM.
    Serve(ServeArgs),
    /// List stored deviations, newest first.
    Deviations(DeviationsArgs),
    /// List incidents (one CI run or process tree each), latest first: highest severity, a
    /// one-sentence story in time order, and the deviations beneath (low and info counted
    /// unless --all).
    Incidents(IncidentsArgs),
    /// The job summary of one run: learning state, incidents, new destinations and tools, as
    /// plain Markdown (for $GITHUB_STEP_SUMMARY) or JSON.
    Report(ReportArgs),
    /// List workloads with deviations matching the filters (counts per severity, runs, hosts),
    /// latest deviation first.
    Workloads(DeviationsArgs),
    /// List agents: last contact, version, spool, drops, and whether silent; or, with --events,
    /// their latest events (first contact, silent, back, dropped).
    Agents(AgentsArgs),
    /// Export stored deviations for a SIEM: OCSF Detection Findings (class 2004), one JSON
    /// object per line, oldest first.
    Export(ExportArgs),
    /// Install as a systemd service: binary, unit and config (if absent); systemd creates the
    /// state directory on first start. Does not start it; prints the command that does.
    Install(InstallArgs),
    /// Create a CA and TLS certificates for the collector, agents and query clients (PEM files;
    /// an existing CA in the directory is reused, no file is overwritten).
    Certs(crate::certs::CertsArgs),
    /// Shared baselines: list, show contributions, drop one agent's, freeze.
    Baselines(BaselinesArgs),
    /// Remove the unit and the binary that `install` wrote (`--purge`: also the config and the
    /// state directory with its database).
    Uninstall(UninstallArgs),
}

#[derive(Debug, Args)]
pub struct ExportArgs {
    /// Collector to ask.
    #[arg(long, default_value = DEFAULT_SERVER, env = "COLLECTOR_SERVER")]
    pub server: String,
    /// Write to this file (appended to, created if missing) instead of stdout.
    #[arg(long, short, value_name = "FILE")]
    pub output: Option<PathBuf>,
    #[command(flatten)]
    pub filter: FilterArgs,
    /// At most this many, the newest (the collector caps it at 10000).
    #[arg(long, default_value_t = 10_000)]
    pub limit: u32,
    #[command(flatten)]
    pub client: crate::credentials::ClientArgs,
}

/// Which deviations: the filter flags of `deviations`, `workloads`, `incidents` and `export`.
#[derive(Debug, Clone, Default, Args)]
pub struct FilterArgs {
    /// Only this workload id, e.g. "github:acme/app/ci/build".
    #[arg(long)]
    pub workload: Option<String>,
    /// Only this host.
    #[arg(long)]
    pub host: Option<String>,
    /// Only this kind of deviation.
    #[arg(long, value_enum)]
    pub kind: Option<KindArg>,
    /// Only this severity or higher.
    #[arg(long, value_enum)]
    pub min_severity: Option<SeverityArg>,
    /// Only deviations newer than this: a duration ("1h", "30m", "2d") or an RFC 3339 time.
    #[arg(long)]
    pub since: Option<String>,
    /// Only deviations older than this (with --since, a time range): a duration ago ("1h") or
    /// an RFC 3339 time.
    #[arg(long)]
    pub until: Option<String>,
}

#[derive(Debug, Args)]
pub struct IncidentsArgs {
    /// Collector to ask.
    #[arg(long, default_value = DEFAULT_SERVER, env = "COLLECTOR_SERVER")]
    pub server: String,
    #[command(flatten)]
    pub filter: FilterArgs,
    /// At most this many incidents, the latest.
    #[arg(long, default_value_t = 20)]
    pub limit: u32,
    /// Also list low and info deviations (collapsed into a count by default).
    #[arg(long)]
    pub all: bool,
    /// One JSON object per incident and line (every deviation included) instead of text.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub client: crate::credentials::ClientArgs,
}

#[derive(Debug, Args)]
pub struct ReportArgs {
    /// Collector to ask.
    #[arg(long, default_value = DEFAULT_SERVER, env = "COLLECTOR_SERVER")]
    pub server: String,
    /// The workload id, e.g. "github:acme/app/ci/build".
    #[arg(long)]
    pub workload: String,
    /// The run (GITHUB_RUN_ID / CI_JOB_ID) to summarise.
    #[arg(long)]
    pub run: String,
    /// Output format.
    #[arg(long, value_enum, default_value_t = ReportFormat::Markdown)]
    pub format: ReportFormat,
    /// Runs the agents learn from before judging (the agents' `learning_runs`).
    #[arg(long, default_value_t = 5)]
    pub learning_runs: u32,
    #[command(flatten)]
    pub client: crate::credentials::ClientArgs,
}

/// Formats of `collector report`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ReportFormat {
    /// Plain Markdown without links, to append to $GITHUB_STEP_SUMMARY.
    Markdown,
    /// One JSON object.
    Json,
}

#[derive(Debug, Args)]
pub struct InstallArgs {
    /// Prefix of every path written (an image being built, or a test directory).
    #[arg(long, value_name = "DIR", default_value = "/")]
    pub root: PathBuf,
}

#[derive(Debug, Args)]
pub struct UninstallArgs {
    /// Prefix of every path removed.
    #[arg(long, value_name = "DIR", default_value = "/")]
    pub root: PathBuf,
    /// Also remove the configuration file and the state directory (the database).
    #[arg(long)]
    pub purge: bool,
}

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Address to listen on for agents and queries.
    #[arg(long, default_value = "127.0.0.1:50051", env = "COLLECTOR_LISTEN")]
    pub listen: SocketAddr,
    /// Database: a SQLite file (a path or sqlite:///path; created with its directory if
    /// missing), or PostgreSQL (postgres://user:password@host:port/database) for several
    /// collector replicas sharing one database.
    #[arg(long, value_name = "PATH|URL", default_value = DEFAULT_DB, env = "COLLECTOR_DB")]
    pub db: String,
    /// An agent not heard from (no batch, no heartbeat) for this long is marked silent, logged,
    /// counted and recorded as an agent event. Agents send heartbeats every 30 s by default.
    #[arg(
        long,
        value_name = "DURATION",
        default_value = crate::upkeep::DEFAULT_AGENT_SILENCE,
        env = "COLLECTOR_AGENT_SILENCE"
    )]
    pub agent_silence: crate::upkeep::Span,
    /// Delete deviations (and batch records and agent events) older than this, e.g. "30d";
    /// "forever" keeps everything.
    #[arg(
        long,
        value_name = "DURATION",
        default_value = crate::upkeep::DEFAULT_RETENTION,
        env = "COLLECTOR_RETENTION"
    )]
    pub retention: crate::upkeep::Retention,
    /// Serve the web page (http://ADDR/, with its JSON API under /api/) and Prometheus metrics
    /// (http://ADDR/metrics); "" for none. Off loopback the JSON API requires a token from
    /// --query-token-file (refused at start without one).
    #[arg(
        long,
        value_name = "ADDR",
        default_value = "127.0.0.1:9465",
        env = "COLLECTOR_METRICS_LISTEN"
    )]
    pub metrics_listen: ListenAddr,
    /// Server certificate chain (PEM). With --tls-key and --tls-client-ca the endpoint speaks
    /// TLS and requires client certificates signed by that CA; without all three it refuses to
    /// listen anywhere but on loopback.
    #[arg(long, value_name = "PATH", env = "COLLECTOR_TLS_CERT")]
    pub tls_cert: Option<PathBuf>,
    /// Key of --tls-cert (PEM).
    #[arg(long, value_name = "PATH", env = "COLLECTOR_TLS_KEY")]
    pub tls_key: Option<PathBuf>,
    /// CA that signs agents' and query clients' certificates (PEM).
    #[arg(long, value_name = "PATH", env = "COLLECTOR_TLS_CLIENT_CA")]
    pub tls_client_ca: Option<PathBuf>,
    /// Bearer tokens, one per line, that allow the Query service (and the web JSON API when it
    /// is not on loopback). Once set, queries need one even on loopback.
    #[arg(long, value_name = "PATH", env = "COLLECTOR_QUERY_TOKEN_FILE")]
    pub query_token_file: Option<PathBuf>,
    /// A certificate identity (CN) allowed to query without a token (repeatable). Such a
    /// certificate may not send deviations.
    #[arg(long = "query-client", value_name = "NAME")]
    pub query_clients: Vec<String>,
    /// Distinct agents that must have contributed to a workload's shared baseline before it is
    /// served to other agents (one lying agent alone cannot make runners adopt its baseline).
    #[arg(
        long,
        value_name = "AGENTS",
        default_value_t = crate::baselines::DEFAULT_QUORUM,
        env = "COLLECTOR_BASELINE_QUORUM"
    )]
    pub baseline_quorum: u32,
    /// Which shared baselines agents may read and contribute to, as
    /// `AGENTS=WORKLOAD[,WORKLOAD...]` globs over certificate identities and workload ids
    /// (repeatable; e.g. `runner-acme-*=github:acme/*`). Once any is set, an agent touches only
    /// the workloads of the scopes naming it. Needs TLS.
    #[arg(long = "baseline-scope", value_name = "AGENTS=WORKLOADS")]
    pub baseline_scopes: Vec<String>,
}

/// `collector baselines`: shared baselines, read and changed in the database directly (run it
/// where the collector's database is reachable).
#[derive(Debug, Args)]
pub struct BaselinesArgs {
    /// The collector's database, as `serve --db`.
    #[arg(long, value_name = "PATH|URL", default_value = DEFAULT_DB, env = "COLLECTOR_DB")]
    pub db: String,
    #[command(subcommand)]
    pub command: BaselinesCommand,
}

#[derive(Debug, Subcommand)]
pub enum BaselinesCommand {
    /// Every merged baseline: agents, runs, behaviours, version, frozen.
    List,
    /// One workload's merged baseline and each agent's contribution.
    Show {
        /// The workload id.
        workload: String,
    },
    /// Delete one agent's contribution to a workload and recompute the merged baseline.
    DropAgent { workload: String, agent: String },
    /// Freeze a workload's merged baseline (reports no longer change it; served whatever the
    /// quorum), or thaw it with --thaw.
    Freeze {
        workload: String,
        #[arg(long)]
        thaw: bool,
    },
}

#[derive(Debug, Args)]
pub struct AgentsArgs {
    /// Collector to ask.
    #[arg(long, default_value = DEFAULT_SERVER, env = "COLLECTOR_SERVER")]
    pub server: String,
    /// Only agents marked silent.
    #[arg(long)]
    pub silent: bool,
    /// The latest agent events instead of the agents.
    #[arg(long)]
    pub events: bool,
    /// At most this many (the collector caps it at 10000).
    #[arg(long, default_value_t = 100)]
    pub limit: u32,
    /// One JSON object per line instead of a table.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub client: crate::credentials::ClientArgs,
}

#[derive(Debug, Args)]
pub struct DeviationsArgs {
    /// Collector to ask.
    #[arg(long, default_value = DEFAULT_SERVER, env = "COLLECTOR_SERVER")]
    pub server: String,
    #[command(flatten)]
    pub filter: FilterArgs,
    /// At most this many (the collector caps it at 10000).
    #[arg(long, default_value_t = 100)]
    pub limit: u32,
    /// One JSON object per line instead of a table.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub client: crate::credentials::ClientArgs,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// Deviation kinds by their short names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum KindArg {
    NewExecutable,
    NewExecEdge,
    NewFileAccess,
    NewNetworkDestination,
    NewPrivilegeUse,
    NewDnsName,
    NewListener,
    NewFileOperation,
    CardinalityExploded,
    NewSequence,
    RateSpike,
    Enumeration,
    UnusualTime,
    NewHost,
    Aggregated,
    IdentitySwitch,
    BlindSpot,
}

impl From<KindArg> for DeviationKind {
    fn from(kind: KindArg) -> Self {
        match kind {
            KindArg::NewExecutable => DeviationKind::NewExecutable,
            KindArg::NewExecEdge => DeviationKind::NewExecEdge,
            KindArg::NewFileAccess => DeviationKind::NewFileAccess,
            KindArg::NewNetworkDestination => DeviationKind::NewNetworkDestination,
            KindArg::NewPrivilegeUse => DeviationKind::NewPrivilegeUse,
            KindArg::NewDnsName => DeviationKind::NewDnsName,
            KindArg::NewListener => DeviationKind::NewListener,
            KindArg::NewFileOperation => DeviationKind::NewFileOperation,
            KindArg::CardinalityExploded => DeviationKind::CardinalityExploded,
            KindArg::NewSequence => DeviationKind::NewSequence,
            KindArg::RateSpike => DeviationKind::RateSpike,
            KindArg::Enumeration => DeviationKind::Enumeration,
            KindArg::UnusualTime => DeviationKind::UnusualTime,
            KindArg::NewHost => DeviationKind::NewHost,
            KindArg::Aggregated => DeviationKind::Aggregated,
            KindArg::IdentitySwitch => DeviationKind::IdentitySwitch,
            KindArg::BlindSpot => DeviationKind::BlindSpot,
        }
    }
}

/// Severities, lowest first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum SeverityArg {
    Info,
    Low,
    Medium,
    High,
    Critical,
}

impl From<SeverityArg> for Severity {
    fn from(severity: SeverityArg) -> Self {
        match severity {
            SeverityArg::Info => Severity::Info,
            SeverityArg::Low => Severity::Low,
            SeverityArg::Medium => Severity::Medium,
            SeverityArg::High => Severity::High,
            SeverityArg::Critical => Severity::Critical,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn short_names_parse() {
        let cli = Cli::parse_from([
            "collector",
            "deviations",
            "--kind",
            "new-network-destination",
            "--min-severity",
            "medium",
            "--json",
        ]);
        let Command::Deviations(args) = cli.command else {
            panic!("expected deviations");
        };
        assert_eq!(args.filter.kind, Some(KindArg::NewNetworkDestination));
        assert_eq!(args.filter.min_severity, Some(SeverityArg::Medium));
    }

    #[test]
    fn every_kind_name_parses_to_its_kind() {
        for kind in KindArg::value_variants() {
            let name = kind.to_possible_value().expect("not skipped");
            let parsed = KindArg::from_str(name.get_name(), false).expect("parses");
            let proto = DeviationKind::from(parsed);
            assert_eq!(crate::convert::kind_name(proto.into()), name.get_name());
        }
        let cli = Cli::parse_from(["collector", "deviations", "--kind", "cardinality-exploded"]);
        let Command::Deviations(args) = cli.command else {
            panic!("expected deviations");
        };
        assert_eq!(args.filter.kind, Some(KindArg::CardinalityExploded));
        // And every kind of the wire contract can be asked for by its name.
        for number in 1..64 {
            if DeviationKind::try_from(number).is_ok() {
                let name = crate::convert::kind_name(number);
                let parsed = KindArg::from_str(name, false)
                    .unwrap_or_else(|_| panic!("--kind {name} is not accepted"));
                assert_eq!(i32::from(DeviationKind::from(parsed)), number);
            }
        }
    }
}
