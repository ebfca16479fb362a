//! The collector: receives deviations from sensor agents over gRPC (`sensor.v1.Ingest`), stores
//! them in SQLite or, for several replicas, PostgreSQL (`store`), and answers operators' queries
//! (`sensor.v1.Query`).
//!
//! `cli` is the command line and `config` its TOML file; `serve` runs `server` (the gRPC
//! services, `ingest` for agents) over `store` (the database) and `metrics` (Prometheus), and
//! `web` (the HTTP endpoint: a page over what is stored, its JSON API, `/metrics`); `query` is the
//! `deviations` client; `incidents` tells incidents (grouped by the store, `Query/ListIncidents`)
//! with a one-line story (`collector incidents`, the page's first section) and `report` writes a run's job summary
//! (`collector report`); `convert` holds every mapping of protobuf types to rows, names and JSON;
//! `listing` answers and prints `workloads` and `agents`; `upkeep` marks silent agents and applies
//! retention in the background.
//!
//! The database defaults to `/var/lib/sensor-collector/collector.db` (its directory is created;
//! `--db` or `COLLECTOR_DB` to change it). Delivery is at-least-once from the agent and
//! exactly-once in the database: a batch is acknowledged only after the transaction that stores
//! it (and records its `(agent_id, spool_id, sequence)`) has committed, a resent batch is
//! acknowledged without storing, and deviations are unique per agent by id
//! (`(agent_id, workload_id, run_id, id)`: an id hashes its workload and run, so for an honest
//! agent the id alone decides).

pub mod auth;
pub mod baselines;
pub mod certs;
pub mod cli;
pub mod config;
pub mod convert;
pub mod credentials;
pub mod decode_error;
pub mod incidents;
pub mod ingest;
pub mod install;
pub mod limits;
pub mod listing;
pub mod metrics;
pub mod ocsf;
pub mod query;
pub mod report;
pub mod scopes;
pub mod server;
pub mod store;
pub mod tls;
pub mod upkeep;
pub mod web;

use std::io::IsTerminal as _;
use std::sync::Arc;

use anyhow::Context as _;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::cli::{Cli, Command, LogFormat, ServeArgs};
use crate::store::Store;

/// Runs a parsed command line to completion.
pub async fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Serve(args) => serve(args).await,
        Command::Deviations(args) => Ok(query::run(&args).await?),
        Command::Incidents(args) => Ok(incidents::run(&args).await?),
        Command::Report(args) => Ok(report::run(&args).await?),
        Command::Workloads(args) => Ok(listing::run_workloads(&args).await?),
        Command::Agents(args) => Ok(listing::run_agents(&args).await?),
        Command::Export(args) => Ok(query::export(&args).await?),
        Command::Certs(args) => certs::run(&args),
        Command::Baselines(args) => baselines::run_cli(&args),
        Command::Install(args) => install::run_install(&args.root),
        Command::Uninstall(args) => install::run_uninstall(&args.root, args.purge),
    }
}

/// `collector serve`: opens the database, listens, serves until SIGINT or SIGTERM.
async fn serve(args: ServeArgs) -> anyhow::Result<()> {
    // Checked before anything is bound or opened: a refused setting leaves nothing behind.
    let security = server::Security::load(&security_settings(&args)?, args.listen)?;
    let listener = TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("cannot listen on {}", args.listen))?;
    let db = args.db.clone();
    let store = tokio::task::spawn_blocking(move || Store::connect(&db))
        .await
        .context("opening the database")??;
    let shutdown = CancellationToken::new();
    tokio::spawn(cancel_on_signal(shutdown.clone()));
    let store = Arc::new(store);
    let metrics = Arc::new(metrics::Metrics::new());
    let upkeep = upkeep::Upkeep {
        agent_silence: args.agent_silence.0,
        retention: args.retention.0,
    };
    tokio::spawn(upkeep::run(
        Arc::clone(&store),
        Arc::clone(&metrics),
        upkeep,
        shutdown.clone(),
    ));
    if let Some(addr) = args.metrics_listen.0 {
        // Unlike the sensor, which watches on without metrics, a collector that cannot bind
        // refuses to start: a port clash is a deployment mistake to see at once.
        let web_listener = TcpListener::bind(addr)
            .await
            .with_context(|| format!("cannot serve metrics and the web page on {addr}"))?;
        tracing::info!(
            page = %format!("http://{addr}/"),
            metrics = %format!("http://{addr}/metrics"),
            "serving the web page and metrics"
        );
        let web = web::Web::new(Arc::clone(&store), Arc::clone(&metrics), addr.ip())
            .with_access(Arc::clone(&security.access))?;
        tokio::spawn(web::serve(web_listener, Arc::new(web), shutdown.clone()));
    }
    security.log_warnings(args.listen);
    tracing::info!(
        listen = %listener.local_addr().unwrap_or(args.listen),
        db = %store.location(),
        tls = security.tls.is_some(),
        "collector serving"
    );
    server::serve_secure(listener, store, metrics, security, shutdown)
        .await
        .context("gRPC server failed")?;
    tracing::info!("collector stopped");
    Ok(())
}

/// The TLS and access settings of `serve`.
/// Under systemd, the files of the secrets directory are read from their credential copies
/// (`install::credential_path`).
fn security_settings(args: &ServeArgs) -> Result<server::SecuritySettings, tls::TlsError> {
    let credentials = std::env::var_os("CREDENTIALS_DIRECTORY").map(std::path::PathBuf::from);
    let secret = |path: Option<&std::path::Path>| {
        path.map(|p| install::credential_path(p, credentials.as_deref()))
    };
    Ok(server::SecuritySettings {
        tls: tls::ServerTlsFiles::from_options(
            secret(args.tls_cert.as_deref()).as_deref(),
            secret(args.tls_key.as_deref()).as_deref(),
            secret(args.tls_client_ca.as_deref()).as_deref(),
        )?,
        query_token_file: secret(args.query_token_file.as_deref()),
        query_clients: args.query_clients.clone(),
        baseline_quorum: Some(args.baseline_quorum),
        baseline_scopes: args.baseline_scopes.clone(),
    })
}

/// Cancels `token` on the first SIGINT or SIGTERM.
async fn cancel_on_signal(token: CancellationToken) {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut int), Ok(mut term)) = (
        signal(SignalKind::interrupt()),
        signal(SignalKind::terminate()),
    ) else {
        tracing::error!("cannot install signal handlers; stop the collector with SIGKILL");
        return;
    };
    let name = tokio::select! {
        _ = int.recv() => "SIGINT",
        _ = term.recv() => "SIGTERM",
    };
    tracing::info!(signal = name, "shutting down");
    token.cancel();
}

/// Logs to stderr as text or JSON; the level comes from `RUST_LOG` (default `info`).
pub fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal());
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

/// An error and its causes on one line, joined with ": ", skipping a cause whose text its parent
/// already shows (thiserror messages often embed their source).
pub fn one_line(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}
