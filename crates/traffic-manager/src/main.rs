//! The `traffic-manager` binary: parses the command line, loads the configuration, and
//! hands over to `tm-app`. Nothing else lives here.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};
use tm_config::{Config, ProcessType};
use tm_domain::{Grant, Role, TenantId};
use tokio_util::sync::CancellationToken;

// The system allocator spent a tenth of resolve's time in malloc and free under load.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

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
    /// Serve the HTTP API (the default), and run background jobs unless
    /// TM_JOBS_IN_SERVE=false. Applies pending migrations first.
    Serve,
    /// Run background jobs (webhook deliveries, the outbox relay, purges) without
    /// serving the API: a process of type `worker`, with its pool size. Serves its
    /// health probes and metrics on TM_LISTEN.
    Worker,
    /// Apply pending database migrations and exit.
    Migrate,
    /// Load and validate the configuration, print the effective settings with secrets
    /// redacted, and exit non-zero if anything is wrong.
    CheckConfig,
    /// Manage API keys directly in the store, without a running server.
    #[command(subcommand)]
    Keys(KeysCommand),
    /// Make a backup of the store now: a consistent export, compressed, with a
    /// manifest, to TM_BACKUP_TARGET (a directory or s3://<bucket>[/<prefix>]); then
    /// verify it by restoring it into a scratch store, record the run and apply
    /// retention. Prints the backup's location. Exits non-zero if it could not be made
    /// or verified.
    Backup {
        /// Where to, instead of TM_BACKUP_TARGET.
        #[arg(long, value_name = "TARGET")]
        to: Option<String>,
    },
    /// Replace the store's data with a backup's, in one transaction, checked against
    /// its manifest before it commits. Stop the instances first, or restart them after.
    Restore {
        /// A backup (<target>/tm-backup-<time>), or a target whose newest verified
        /// backup is taken.
        #[arg(long, value_name = "BACKUP")]
        from: String,
        /// Confirms that the store's data is to be replaced.
        #[arg(long)]
        yes: bool,
        /// Restores even over a store that holds routes, keys, audit rows or webhooks.
        #[arg(long)]
        force: bool,
    },
}

#[derive(Debug, Subcommand)]
enum KeysCommand {
    /// Create a key and print it once on stdout.
    Create {
        /// admin, tenant_admin or reader.
        #[arg(long)]
        role: Role,
        /// The tenant a tenant_admin or reader key is bound to (not for admin keys).
        #[arg(long)]
        tenant: Option<String>,
        /// What the key is for, e.g. "deploy pipeline".
        #[arg(long)]
        name: String,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let loaded = match cli.command {
        Some(Command::Worker) => Config::load_as(cli.config.as_deref(), ProcessType::Worker),
        _ => Config::load(cli.config.as_deref()),
    };
    let config = match loaded {
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
    // Held to the end of `main`: dropping it writes out the lines still buffered.
    let _log_writer = match tm_telemetry::init(&config.log, config.tracing.as_ref()) {
        Ok(guard) => guard,
        Err(err) => {
            eprintln!("traffic-manager: {err}");
            return ExitCode::from(2);
        }
    };
    // One serving thread runs everything on that thread, as an event loop (cheaper per
    // request than a one-worker pool); blocking work still has threads of its own.
    let mut builder = if config.worker_threads == 1 {
        tokio::runtime::Builder::new_current_thread()
    } else {
        let mut builder = tokio::runtime::Builder::new_multi_thread();
        builder.worker_threads(config.worker_threads);
        builder
    };
    let runtime = match builder.enable_all().build() {
        Ok(rt) => rt,
        Err(err) => {
            eprintln!("traffic-manager: starting the async runtime: {err}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async move {
        match command {
            Command::Serve | Command::Worker => serve(config).await,
            Command::Migrate => migrate(config).await,
            Command::Keys(KeysCommand::Create { role, tenant, name }) => {
                create_key(config, role, tenant, name).await
            }
            Command::Backup { to } => backup(config, to).await,
            Command::Restore { from, yes, force } => restore(config, &from, yes, force).await,
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
    if let Some(key) = app.bootstrap_key() {
        println!("bootstrap admin key: {}", key.expose());
    }
    tracing::info!(addr = %app.local_addr(), "listening on http://{}", app.local_addr());
    let shutdown = CancellationToken::new();
    tokio::spawn(cancel_on_signal(shutdown.clone()));
    app.run_until(shutdown).await.context("serving")
}

async fn create_key(
    config: Config,
    role: Role,
    tenant: Option<String>,
    name: String,
) -> anyhow::Result<()> {
    let tenant = tenant
        .map(|t| TenantId::parse(&t).map_err(|e| anyhow::anyhow!("--tenant {e}")))
        .transpose()?;
    let grant = Grant::new(role, tenant).map_err(|e| anyhow::anyhow!("--role/--tenant: {e}"))?;
    anyhow::ensure!(
        !name.trim().is_empty()
            && name.chars().count() <= 100
            && !name.chars().any(char::is_control),
        "--name must be 1 to 100 printable characters"
    );
    let (key, record) = tm_app::create_key(&config, name, grant)
        .await
        .context("creating the key")?;
    tracing::info!(key.id = %record.id, key.role = %role, "API key created");
    println!("{}", key.expose());
    Ok(())
}

async fn migrate(config: Config) -> anyhow::Result<()> {
    let backend = tm_store::migrate(&config.storage, &config.pool)
        .await
        .context("applying migrations")?;
    tracing::info!(backend, "migrations applied");
    Ok(())
}

async fn backup(config: Config, to: Option<String>) -> anyhow::Result<()> {
    let mut settings = config.backup.clone();
    if let Some(to) = to {
        settings.target = to;
    }
    let store = tm_store::connect(&config.storage, &config.pool, Default::default())
        .await
        .context("opening the store")?;
    let made = tm_backup::run(store.as_ref(), &settings, env!("CARGO_PKG_VERSION")).await;
    store.close().await;
    let report = made.with_context(|| format!("backing up to {}", settings.target))?;
    // The location first on stdout, for scripts; then the log line.
    println!("{}", report.location);
    let tables = &report.manifest.store;
    tracing::info!(
        backup = %report.location,
        routes = tables.rows("routes").unwrap_or(0),
        keys = tables.rows("api_keys").unwrap_or(0),
        audit_rows = tables.rows("audit_log").unwrap_or(0),
        bytes = report.manifest.bytes(),
        seconds = report.seconds,
        deleted = ?report.deleted,
        "backup made and verified"
    );
    Ok(())
}

async fn restore(config: Config, from: &str, yes: bool, force: bool) -> anyhow::Result<()> {
    anyhow::ensure!(
        yes,
        "restoring replaces the store's data with the backup's: pass --yes to go ahead"
    );
    let store = tm_store::connect(&config.storage, &config.pool, Default::default())
        .await
        .context("opening the store")?;
    let restored = tm_backup::restore(store.as_ref(), from, force).await;
    store.close().await;
    let manifest = restored.with_context(|| format!("restoring {from}"))?;
    println!("restored {}", manifest.name);
    tracing::info!(
        backup = %manifest.name,
        made_at = %manifest.started_at,
        routes = manifest.store.rows("routes").unwrap_or(0),
        keys = manifest.store.rows("api_keys").unwrap_or(0),
        audit_rows = manifest.store.rows("audit_log").unwrap_or(0),
        "backup restored"
    );
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
