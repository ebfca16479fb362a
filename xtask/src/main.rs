//! Developer tasks. `cargo xtask bench` runs the overhead benchmarks and writes BENCHMARKS.md.

mod bench;
mod bounded;
mod detect;
mod ingest_bench;
mod memory_bench;
mod package;
mod peers;
mod portability;
mod systemd_check;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "xtask")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Measure the sensor's cost on syscall-heavy workloads, as ratios against the same run
    /// without it, and write the results as a markdown table.
    Bench(bench::Args),
    /// Measure the collector's ingest rate (deviations stored per second, per core) with real
    /// gRPC clients streaming batches, and write it to its section of BENCHMARKS.md.
    BenchIngest(ingest_bench::Args),
    /// Measure baseline sizes of typical CI jobs learnt by the real sensor, and the agent's
    /// memory with 1, 100 and 1000 workloads; write them to their section of BENCHMARKS.md.
    BenchMemory(memory_bench::Args),
    /// Build the Debian packages of the sensor and the collector (dpkg-deb) into target/debian.
    Package(package::Args),
    /// Boot Debian's 6.1 and 6.12 kernels in qemu and load and attach every program in each.
    Portability(portability::Args),
    /// Install both .debs on a debootstrapped Debian with systemd booted in qemu, and check the
    /// services, unit attribution, judging, reinstall and `sensor status` (not run in CI).
    SystemdCheck(systemd_check::Args),
    /// Run benign CI jobs and injected attacks against the real sensor and collector, and write
    /// detection rates, false alarms and latency to DETECTION.md.
    Detect {
        /// The quick subset the CI test runs: the C job, one benign run, one attack per family.
        #[arg(long)]
        quick: bool,
        /// Where to write the report, relative to the workspace root.
        #[arg(long, default_value = "DETECTION.md")]
        out: std::path::PathBuf,
        /// Use the sensor, collector and actor already built in target/release.
        #[arg(long)]
        no_build: bool,
        /// Only the noise measurement (issue 14): every CI job, 5 learning runs, this many clean
        /// runs, one attack per family; writes the noise table to `--out`.
        #[arg(long)]
        noise: Option<u32>,
        /// With `--noise`: where the sensor, collector and actor binaries are.
        #[arg(long, default_value = "target/release")]
        bin_dir: std::path::PathBuf,
        /// With `--noise`: only these jobs (comma-separated names, e.g. `rust-cargo,node-npm`).
        #[arg(long, value_delimiter = ',')]
        jobs: Vec<String>,
    },
}

fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Command::Bench(args) => bench::run(&args),
        Command::BenchIngest(args) => ingest_bench::run(&args),
        Command::BenchMemory(args) => memory_bench::run(&args),
        Command::Package(args) => package::run(&args),
        Command::Portability(args) => portability::run(&args),
        Command::SystemdCheck(args) => systemd_check::run(&args),
        Command::Detect {
            noise: Some(clean),
            bin_dir,
            out,
            jobs,
            ..
        } => detect::run_noise(&bin_dir, clean, &jobs, &out),
        Command::Detect {
            quick,
            out,
            no_build,
            ..
        } => detect::run(quick, &out, no_build),
    }
}
