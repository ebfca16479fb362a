use std::process::ExitCode;

use clap::{CommandFactory as _, FromArgMatches as _};
use sensor_user::agent::{self, AgentConfig};
use sensor_user::baseline::LearningConfig;
use sensor_user::cli::{Cli, Command, LogFormat};
use sensor_user::{config, install};
use tokio_util::sync::CancellationToken;

/// Exit code for a configuration that cannot be used (as clap's for a bad command line).
const EXIT_CONFIG: u8 = 2;

fn main() -> ExitCode {
    let matches = Cli::command().get_matches();
    let mut cli = Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.exit());
    // Installing needs no configuration (and must work when the installed one is broken).
    match &cli.command {
        Command::Install(args) => return install(&args.root),
        Command::Uninstall(args) => return uninstall(&args.root, args.purge),
        Command::Run(_) | Command::Status(_) | Command::Baseline(_) => {}
    }
    let explicit = matches.value_source("config") != Some(clap::parser::ValueSource::DefaultValue);
    match config::load(explicit.then_some(cli.config.as_path())) {
        Ok(file) => config::merge(&mut cli, &matches, &file),
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(EXIT_CONFIG);
        }
    }
    init_tracing(cli.log_format);
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        match cli.command {
            Command::Run(args) => {
                let cancel = CancellationToken::new();
                tokio::spawn(cancel_on_signal(cancel.clone()));
                let config = AgentConfig {
                    collector_url: args.collector,
                    state_dir: args.state_dir,
                    learning: LearningConfig {
                        learning_runs: args.learning_runs,
                        learning_period: args.learning_period,
                    },
                    // The agent's one host identity: in deviation ids, deviations and heartbeats.
                    host: args
                        .host
                        .unwrap_or_else(sensor_user::transport::default_agent_id),
                    cgroup_root: args.cgroup_root.unwrap_or_else(default_cgroup_root),
                    containers: sensor_user::attribute::ContainerConfig::new(
                        args.container_identity,
                        args.container_sources,
                    ),
                    load: sensor_user::kernel::LoadOptions {
                        filter_repeats: !args.no_kernel_filter,
                        open_hook: args.open_hook,
                    },
                    metrics_listen: args.metrics_listen.0,
                    secrets: sensor_user::detect::SecretPaths::with_extra(args.secret_paths),
                    flush_interval: args.flush_interval,
                    heartbeat_interval: args.heartbeat_interval,
                    record_deviations: args.record_deviations,
                    share_baselines: !args.no_share_baselines,
                    collector_tls: sensor_user::transport::ClientTls::from_options(
                        args.collector_ca,
                        args.client_cert,
                        args.client_key,
                    ),
                };
                agent::run(config, cancel).await.map_err(|e| e.to_string())
            }
            Command::Install(_) | Command::Uninstall(_) => Ok(()),
            Command::Baseline(args) => sensor_user::baseline_cli::run(&args),
            Command::Status(args) => {
                let status =
                    sensor_user::status::read(&args.state_dir).map_err(|e| e.to_string())?;
                if args.json {
                    println!("{status}");
                } else {
                    print!("{}", sensor_user::status::render(&status));
                }
                Ok(())
            }
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e}");
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

/// `sensor install`: copies this binary and writes the unit, config and state directory.
fn install(root: &std::path::Path) -> ExitCode {
    let binary = match std::env::current_exe() {
        Ok(path) => path,
        Err(e) => {
            eprintln!("error: cannot find this binary to install it: {e}");
            return ExitCode::FAILURE;
        }
    };
    match install::install(root, &binary) {
        Ok(done) => {
            done.iter().for_each(|line| println!("{line}"));
            println!("next: {}", install::NEXT_INSTALL);
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

/// `sensor uninstall`: removes what `install` wrote.
fn uninstall(root: &std::path::Path, purge: bool) -> ExitCode {
    match install::uninstall(root, purge) {
        Ok(done) => {
            if done.is_empty() {
                println!("nothing to remove under {}", root.display());
            }
            done.iter().for_each(|line| println!("{line}"));
            println!("next: {}", install::NEXT_UNINSTALL);
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

fn init_tracing(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

async fn cancel_on_signal(cancel: CancellationToken) {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut int), Ok(mut term)) = (
        signal(SignalKind::interrupt()),
        signal(SignalKind::terminate()),
    ) else {
        tracing::error!("cannot install signal handlers");
        return;
    };
    tokio::select! {
        _ = int.recv() => {}
        _ = term.recv() => {}
    }
    tracing::info!("stopping");
    cancel.cancel();
}

fn default_cgroup_root() -> std::path::PathBuf {
    let hybrid = std::path::Path::new("/sys/fs/cgroup/unified");
    if hybrid.join("cgroup.procs").exists() {
        hybrid.into()
    } else {
        "/sys/fs/cgroup".into()
    }
}
