//! The command line of the `sensor` binary.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use clap::{Parser, Subcommand, ValueEnum};
use serde::Deserialize;

/// The default configuration file (`crate::config::DEFAULT_PATH`); here so that the command
/// line needs nothing of the configuration module, which reads the command line.
pub const DEFAULT_CONFIG_PATH: &str = "/etc/sensor/sensor.toml";

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
            format!("invalid address {text:?}: expected IP:PORT such as 127.0.0.1:9464, or \"\" for none")
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

/// Host-level behavior sensor: learns what each workload normally does and reports deviations.
#[derive(Debug, Parser)]
#[command(name = "sensor", version, about)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,

    /// Log format on stderr.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text, env = "SENSOR_LOG_FORMAT")]
    pub log_format: LogFormat,

    /// Configuration file (TOML); flags override it. A missing file is an error, except at the
    /// default path.
    #[arg(
        long,
        global = true,
        value_name = "PATH",
        env = "SENSOR_CONFIG",
        default_value = DEFAULT_CONFIG_PATH
    )]
    pub config: PathBuf,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Subcommand)]
#[expect(
    clippy::large_enum_variant,
    reason = "parsed once per process; boxing would only complicate the clap derive"
)]
pub enum Command {
    /// Watch this host in the foreground until SIGINT/SIGTERM, streaming deviations.
    Run(RunArgs),
    /// Show what the sensor using a state directory is doing: programs, events, losses,
    /// workloads and their learning state.
    Status(StatusArgs),
    /// Install as a systemd service: unit, binary, config (if absent) and state directory.
    /// Does not start it; prints the command that does.
    Install(InstallArgs),
    /// Remove the systemd unit and the binary that `install` wrote (`--purge`: also the config
    /// and the state directory).
    Uninstall(UninstallArgs),
    /// Inspect and operate baselines: list, show, export, import, diff, accept, reset, freeze.
    /// Safe while the agent runs (it applies the change itself).
    Baseline(crate::baseline_cli::BaselineArgs),
}

#[derive(Debug, clap::Args)]
pub struct InstallArgs {
    /// Prefix of every path written (an image being built, or a test directory).
    #[arg(long, value_name = "DIR", default_value = "/")]
    pub root: PathBuf,
}

#[derive(Debug, clap::Args)]
pub struct UninstallArgs {
    /// Prefix of every path removed.
    #[arg(long, value_name = "DIR", default_value = "/")]
    pub root: PathBuf,
    /// Also remove the configuration file and the state directory (baselines, spool).
    #[arg(long)]
    pub purge: bool,
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

    /// How opens, file and privilege operations are hooked: `auto` uses fentry/fexit where the
    /// kernel has BPF trampolines (probed at load; then no syscall tracepoint at all), else the BPF
    /// LSM `file_open` hook for opens where the kernel runs the BPF LSM, else the classic
    /// per-syscall tracepoints; `fentry` and `lsm` fail where the kernel refuses them (`lsm` is
    /// audit only: it never denies); `tracepoint` the classic tracepoints (on x86_64 opens take their exit alone);
    /// `tracepoint-pair` the classic tracepoints with an entry program for opens too (what other
    /// architectures use); `raw-sys-exit` one raw `sys_exit` program for opens (runs on every
    /// syscall).
    #[arg(long, value_enum, default_value_t = crate::kernel::OpenHook::Auto)]
    pub open_hook: crate::kernel::OpenHook,

    /// An extra credential-store path pattern, added to the built-in list (repeatable): a
    /// directory ends in `/` (`/opt/ci/secrets/`), anything else matches as a path suffix
    /// (`/.vault/token`).
    #[arg(long = "secret-path", value_name = "PATTERN")]
    pub secret_paths: Vec<String>,

    /// The cgroup v2 mount (default: /sys/fs/cgroup/unified on hybrid hosts, else /sys/fs/cgroup).
    #[arg(long)]
    pub cgroup_root: Option<PathBuf>,

    /// How container workloads are named: `image` (every container of an image shares one
    /// baseline), `image+name`, or `image+label:KEY[,KEY...]` (e.g.
    /// `image+label:io.kubernetes.pod.namespace,app`).
    #[arg(
        long,
        value_name = "SPEC",
        default_value = "image",
        env = "SENSOR_CONTAINER_IDENTITY"
    )]
    pub container_identity: crate::attribute::ContainerNaming,

    /// Where a container's image, name and labels are read, in order (repeatable): KIND:PATH with
    /// KIND podman-state, docker-state, containerd-state or docker-api (a Docker Engine API
    /// socket, also `podman system service`). Default: the runtimes' usual places.
    #[arg(long = "container-source", value_name = "KIND:PATH")]
    pub container_sources: Vec<crate::attribute::ContainerSource>,

    /// Serve Prometheus metrics at http://ADDR/metrics; "" for none.
    #[arg(
        long,
        value_name = "ADDR",
        default_value = "127.0.0.1:9464",
        env = "SENSOR_METRICS_LISTEN"
    )]
    pub metrics_listen: ListenAddr,

    /// Longest time a deviation waits for its batch to fill before it is sent to the collector.
    /// Lower means faster delivery and more, smaller batches.
    #[arg(
        long,
        value_name = "DURATION",
        default_value = "200ms",
        value_parser = humantime::parse_duration,
        env = "SENSOR_FLUSH_INTERVAL"
    )]
    pub flush_interval: Duration,

    /// Time between two heartbeats to the collector (version, spool depth, deviations dropped,
    /// kernel losses), so that it can tell a quiet agent from a stopped one. Keep it well under
    /// the collector's agent_silence (default 2m).
    #[arg(
        long,
        value_name = "DURATION",
        default_value = "30s",
        value_parser = humantime::parse_duration,
        env = "SENSOR_HEARTBEAT_INTERVAL"
    )]
    pub heartbeat_interval: Duration,

    /// Debugging and tests: append to FILE the id of every deviation the agent produces
    /// (`spooling <id>` lines, then `spooled` once the delivery spool has them; `start` when an
    /// agent opens it): the agent's own account, to compare with what the collector stored.
    #[arg(long, value_name = "FILE", env = "SENSOR_RECORD_DEVIATIONS")]
    pub record_deviations: Option<PathBuf>,

    /// CA that signed the collector's certificate (PEM); needed for an https:// collector.
    #[arg(long, value_name = "PATH", env = "SENSOR_COLLECTOR_CA")]
    pub collector_ca: Option<PathBuf>,

    /// This agent's certificate (PEM), issued for its host name (`collector certs --agent`):
    /// the collector stores its deviations under that identity.
    #[arg(long, value_name = "PATH", env = "SENSOR_CLIENT_CERT")]
    pub client_cert: Option<PathBuf>,

    /// Key of --client-cert (PEM).
    #[arg(long, value_name = "PATH", env = "SENSOR_CLIENT_KEY")]
    pub client_key: Option<PathBuf>,

    /// Do not share baselines through the collector: neither report what this agent learnt nor
    /// fetch the merged baseline of a workload that starts here (`share_baselines = false`).
    #[arg(long)]
    pub no_share_baselines: bool,
}
