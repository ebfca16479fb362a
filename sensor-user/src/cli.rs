//! The command line of the `sensor` binary.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, Subcommand, ValueEnum};

/// Host-level behavior sensor: learns what each workload normally does and reports deviations.
#[derive(Debug, Parser)]
#[command(name = "sensor", version, about)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,

    /// Log format on stderr.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text, env = "SENSOR_LOG_FORMAT")]
    pub log_format: LogFormat,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Watch this host in the foreground until SIGINT/SIGTERM, streaming deviations.
    Run(RunArgs),
    /// Show what the sensor using a state directory is doing: programs, events, losses,
    /// workloads and their learning state.
    Status(StatusArgs),
}

#[derive(Debug, clap::Args)]
pub struct StatusArgs {
    /// The state directory of the sensor to ask.
    #[arg(long, default_value = "/var/lib/sensor", env = "SENSOR_STATE_DIR")]
    pub state_dir: PathBuf,
    /// Print the raw status as JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, clap::Args)]
pub struct RunArgs {
    /// gRPC address of the collector.
    #[arg(
        long,
        default_value = "http://127.0.0.1:50051",
        env = "SENSOR_COLLECTOR"
    )]
    pub collector: String,

    /// Where baselines and the delivery spool are kept across restarts.
    #[arg(long, default_value = "/var/lib/sensor", env = "SENSOR_STATE_DIR")]
    pub state_dir: PathBuf,

    /// Runs a CI job learns from before new behavior is reported.
    #[arg(long, default_value_t = 5)]
    pub learning_runs: u32,

    /// How long other workloads (services, units, containers) learn, e.g. `24h`, `30m`.
    #[arg(long, default_value = "24h", value_parser = humantime::parse_duration)]
    pub learning_period: Duration,

    /// Host name reported with every deviation (default: the system host name).
    #[arg(long)]
    pub host: Option<String>,

    /// Send every open and connect to userspace, not only the first of each per process
    /// image (for measurements; costs more).
    #[arg(long)]
    pub no_kernel_filter: bool,

    /// The cgroup v2 mount (default: /sys/fs/cgroup/unified on hybrid hosts, else /sys/fs/cgroup).
    #[arg(long)]
    pub cgroup_root: Option<PathBuf>,
}
