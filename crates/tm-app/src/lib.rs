//! The composition root. [`Application::build`] does every fallible step of start-up —
//! open the store and migrate, load the routing snapshot, bind the listener — and
//! [`Application::run_until`] only serves, until the given token is cancelled.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tm_config::Config;
use tm_http::AppState;
use tm_store::{RoutingTable, Store, StoreError};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("opening the {backend} store")]
    Store {
        backend: &'static str,
        #[source]
        source: StoreError,
    },
    #[error("loading the routing snapshot")]
    Snapshot(#[source] StoreError),
    #[error("binding {addr}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
}

#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("serving HTTP")]
    Serve(#[source] std::io::Error),
    #[error("background task {0} stopped unexpectedly")]
    TaskDied(&'static str),
}

/// A built, bound, ready-to-run registry.
pub struct Application {
    listener: TcpListener,
    local_addr: SocketAddr,
    state: AppState,
    store: Arc<dyn Store>,
    routing: Arc<RoutingTable>,
    reload_interval: Duration,
    shutdown_grace: Duration,
}

impl Application {
    pub async fn build(config: Config) -> Result<Self, StartError> {
        let backend = match config.storage {
            tm_config::StorageConfig::Sqlite { .. } => "sqlite",
            tm_config::StorageConfig::Postgres { .. } => "postgres",
        };
        let store = tm_store::connect(&config)
            .await
            .map_err(|source| StartError::Store { backend, source })?;
        let routing = Arc::new(
            RoutingTable::load(store.clone())
                .await
                .map_err(StartError::Snapshot)?,
        );
        tracing::info!(
            backend,
            routes = routing.snapshot().route_count(),
            "routing snapshot loaded"
        );
        let addr = config.http.listen;
        let listener = TcpListener::bind(addr)
            .await
            .map_err(|source| StartError::Bind { addr, source })?;
        let local_addr = listener
            .local_addr()
            .map_err(|source| StartError::Bind { addr, source })?;
        let shutdown_grace = config.http.shutdown_grace;
        let state = AppState::new(store.clone(), routing.clone(), config.http);
        Ok(Self {
            listener,
            local_addr,
            state,
            store,
            routing,
            reload_interval: config.snapshot_reload_interval,
            shutdown_grace,
        })
    }

    /// The address actually bound (useful with port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    pub fn store(&self) -> Arc<dyn Store> {
        self.store.clone()
    }

    /// Serves until `shutdown` is cancelled, then stops accepting, gives in-flight
    /// requests up to the configured grace period, stops the workers and closes the pools.
    pub async fn run_until(self, shutdown: CancellationToken) -> Result<(), RunError> {
        let workers = CancellationToken::new();
        let mut reloader: JoinHandle<()> = tokio::spawn(reload_snapshot_periodically(
            self.routing.clone(),
            self.reload_interval,
            workers.clone(),
        ));

        let app = tm_http::router(self.state);
        let graceful = shutdown.clone();
        let mut server = tokio::spawn(async move {
            axum::serve(self.listener, app)
                .with_graceful_shutdown(async move { graceful.cancelled().await })
                .await
        });

        let outcome = tokio::select! {
            served = &mut server => match served {
                Ok(Ok(())) => Ok(()),
                Ok(Err(e)) => Err(RunError::Serve(e)),
                Err(_) => Err(RunError::TaskDied("http server")),
            },
            _ = &mut reloader => Err(RunError::TaskDied("snapshot reloader")),
            _ = shutdown.cancelled() => {
                match tokio::time::timeout(self.shutdown_grace, &mut server).await {
                    Ok(Ok(Ok(()))) => Ok(()),
                    Ok(Ok(Err(e))) => Err(RunError::Serve(e)),
                    Ok(Err(_)) => Err(RunError::TaskDied("http server")),
                    Err(_) => {
                        tracing::warn!(grace = ?self.shutdown_grace, "in-flight requests outlived the shutdown grace period; dropping them");
                        server.abort();
                        Ok(())
                    }
                }
            }
        };
        if let Err(err) = &outcome {
            tracing::error!(error = %err, "stopping");
        }
        workers.cancel();
        let _ = reloader.await;
        self.store.close().await;
        tracing::info!("stopped");
        outcome
    }
}

/// The safety net behind per-write refreshes: a full reload on a fixed period.
async fn reload_snapshot_periodically(
    routing: Arc<RoutingTable>,
    every: Duration,
    stop: CancellationToken,
) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await; // the first tick is immediate; the snapshot was just loaded
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tick.tick() => {}
        }
        match routing.reload().await {
            Ok(routes) => tracing::debug!(routes, "routing snapshot reloaded"),
            Err(err) => {
                tracing::warn!(error = %err, "routing snapshot reload failed; serving the previous one")
            }
        }
    }
}
