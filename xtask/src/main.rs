//! Developer tasks. `cargo xtask bench` runs the overhead benchmarks and writes BENCHMARKS.md.

mod bench;
mod peers;
mod portability;

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
    /// Boot Debian's 6.1 and 6.12 kernels in qemu and load and attach every program in each.
    Portability(portability::Args),
}

fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Command::Bench(args) => bench::run(&args),
        Command::Portability(args) => portability::run(&args),
    }
}
