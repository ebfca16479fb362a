//! `collector`: see the library for what each part does.

use clap::{CommandFactory as _, FromArgMatches as _};
use collector::cli::{Cli, Command};

/// mimalloc: ingest allocates and frees several buffers per deviation; glibc's allocator was
/// about 14 % of the collector's CPU under load (`cargo xtask bench-ingest` with perf).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Exit code for a configuration that cannot be used (as clap's for a bad command line).
const EXIT_CONFIG: u8 = 2;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let matches = Cli::command().get_matches();
    let mut cli = Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.exit());
    let explicit = matches.value_source("config") != Some(clap::parser::ValueSource::DefaultValue);
    // Installing needs no configuration, and must work when the installed one is broken.
    let installing = matches!(cli.command, Command::Install(_) | Command::Uninstall(_));
    if !installing {
        match collector::config::load(explicit.then_some(cli.config.as_path())) {
            Ok(file) => collector::config::merge(&mut cli, &matches, &file),
            Err(error) => {
                eprintln!("collector: {error}");
                return std::process::ExitCode::from(EXIT_CONFIG);
            }
        }
    }
    collector::init_logging(cli.log_format);
    match collector::run(cli).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("collector: {}", collector::one_line(error.as_ref()));
            std::process::ExitCode::FAILURE
        }
    }
}
