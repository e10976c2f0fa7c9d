//! The `traffic-manager` binary: parses the command line, loads the configuration, and
//! hands over to `tm-app`. Nothing else lives here.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};
use tm_config::Config;
use tokio_util::sync::CancellationToken;

/// A multi-tenant service-routing registry: versioned endpoints per tenant, service and
/// environment, switched on and off through an API, resolved from memory.
#[derive(Debug, Parser)]
#[command(name = "traffic-manager", version, propagate_version = true)]
struct Cli {
    /// TOML configuration file; settings from TM_* environment variables override it.
    #[arg(long, global = true, env = "TM_CONFIG", value_name = "FILE")]
    config: Option<PathBuf>,

    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Serve the HTTP API (the default). Applies pending migrations first.
    Serve,
    /// Apply pending database migrations and exit.
    Migrate,
    /// Load and validate the configuration, print the effective settings with secrets
    /// redacted, and exit non-zero if anything is wrong.
    CheckConfig,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let config = match Config::load(cli.config.as_deref()) {
        Ok(config) => config,
        Err(err) => {
            eprintln!("traffic-manager: {err}");
            return ExitCode::from(2);
        }
    };
    let command = cli.command.unwrap_or(Command::Serve);
    if let Command::CheckConfig = command {
        println!("{}", config.redacted());
        return ExitCode::SUCCESS;
    }
    if let Err(err) = tm_telemetry::init(&config.log) {
        eprintln!("traffic-manager: {err}");
        return ExitCode::from(2);
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(err) => {
            eprintln!("traffic-manager: starting the async runtime: {err}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async move {
        match command {
            Command::Serve => serve(config).await,
            Command::Migrate => migrate(config).await,
            Command::CheckConfig => unreachable!("handled above"),
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            tracing::error!(error = format!("{err:#}"), "traffic-manager failed");
            eprintln!("traffic-manager: {err:#}");
            ExitCode::FAILURE
        }
    }
}

async fn serve(config: Config) -> anyhow::Result<()> {
    let app = tm_app::Application::build(config)
        .await
        .context("starting up")?;
    tracing::info!(addr = %app.local_addr(), "listening on http://{}", app.local_addr());
    let shutdown = CancellationToken::new();
    tokio::spawn(cancel_on_signal(shutdown.clone()));
    app.run_until(shutdown).await.context("serving")
}

async fn migrate(config: Config) -> anyhow::Result<()> {
    let backend = tm_store::migrate(&config)
        .await
        .context("applying migrations")?;
    tracing::info!(backend, "migrations applied");
    Ok(())
}

/// Cancels `token` on SIGINT or SIGTERM.
async fn cancel_on_signal(token: CancellationToken) {
    let interrupt = tokio::signal::ctrl_c();
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(err) => {
                tracing::warn!(error = %err, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        _ = interrupt => tracing::info!("SIGINT received; shutting down"),
        _ = terminate => tracing::info!("SIGTERM received; shutting down"),
    }
    token.cancel();
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn the_command_tree_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn no_subcommand_means_serve() {
        let cli = Cli::try_parse_from(["traffic-manager"]).expect("parses");
        assert!(cli.command.is_none());
        let cli = Cli::try_parse_from(["traffic-manager", "check-config", "--config", "x.toml"])
            .expect("parses");
        assert!(matches!(cli.command, Some(Command::CheckConfig)));
    }
}
