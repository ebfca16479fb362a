//! `collector`: see the library for what each part does.

use clap::Parser;
use collector::cli::Cli;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    collector::init_logging(cli.log_format);
    match collector::run(cli).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("collector: {}", collector::one_line(error.as_ref()));
            std::process::ExitCode::FAILURE
        }
    }
}
