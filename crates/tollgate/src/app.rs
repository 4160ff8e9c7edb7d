//! Wiring: opens the configured store, starts the engine, builds the router, and binds the
//! listener. `Application::build` is what `tollgate serve` runs and what every integration test
//! starts on port 0.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tollgate_core::clock::{SharedClock, SystemClock};
use tollgate_core::pricing::{import_litellm, PriceTable};
use tollgate_core::store::Store;
use tollgate_engine::keys::IssuedKey;
use tollgate_engine::Engine;
use tollgate_http::proxy::client::{ClientOptions, UpstreamClient};
use tollgate_http::{AppState, SharedState};

use crate::config::{Config, RecordsConfig};

pub struct Application {
    listener: TcpListener,
    router: axum::Router,
    pub state: SharedState,
    /// Set on the first start only: the admin key, to be shown once.
    pub bootstrap_admin_key: Option<IssuedKey>,
}

/// Imported price entries (`tollgate prices import`) live beside the database.
pub fn imported_prices_path(config: &Config) -> std::path::PathBuf {
    config.server.data_dir.join("prices.imported.json")
}

pub fn load_price_table(config: &Config) -> anyhow::Result<PriceTable> {
    let path = imported_prices_path(config);
    let imported = if path.exists() {
        import_litellm(&std::fs::read_to_string(&path)?)?
    } else {
        Vec::new()
    };
    PriceTable::build(imported, &config.prices)
}

/// The configured store, created or migrated.
pub async fn open_store(config: &Config) -> anyhow::Result<Arc<dyn Store>> {
    tollgate_engine::fs::create_private_dir(&config.server.data_dir)?;
    let replica = replica_id(config)?;
    Ok(tollgate_store::open(config, &replica).await?)
}

/// This replica's name on a shared store: `store.replica_id`, or one generated on the first
/// start and kept in `data_dir/replica-id` (so a restarted replica finds its own leases).
pub fn replica_id(config: &Config) -> anyhow::Result<String> {
    if let Some(id) = &config.store.replica_id {
        return Ok(id.clone());
    }
    let path = config.server.data_dir.join("replica-id");
    match std::fs::read_to_string(&path) {
        Ok(id) if !id.trim().is_empty() => Ok(id.trim().to_string()),
        Ok(_) | Err(_) => {
            let id = tollgate_core::id::new_id("replica", 8);
            tollgate_engine::fs::write_private(&path, id.as_bytes())?;
            Ok(id)
        }
    }
}

/// `records.retention_days`: drops raw records past it at start and then hourly (rollups and
/// balances stay). A failed pass is logged and tried again at the next hour.
async fn retention(store: Arc<dyn Store>, records: RecordsConfig, clock: SharedClock) {
    let mut every = tokio::time::interval(Duration::from_secs(3600));
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        every.tick().await;
        let Some(cutoff) = records.retention_cutoff_ms(clock.now_ms()) else {
            return;
        };
        match store.drop_records_before(cutoff).await {
            Ok(dropped) => tracing::info!(
                dropped,
                cutoff_ms = cutoff,
                retention_days = records.retention_days,
                "records retention: dropped raw records older than the cutoff (rollups kept)"
            ),
            Err(e) => tracing::warn!(error = %e, "records retention failed; retrying in an hour"),
        }
    }
}

impl Application {
    pub async fn build(config: Config) -> anyhow::Result<Self> {
        Self::build_with_clock(config, Arc::new(SystemClock)).await
    }

    /// As `build`, with the clock injected (tests place requests in time with a ManualClock).
    pub async fn build_with_clock(config: Config, clock: SharedClock) -> anyhow::Result<Self> {
        let store = open_store(&config).await?;
        let prices = load_price_table(&config)?;
        let listen = config.server.listen;
        let records = config.records.clone();
        let (engine, bootstrap_admin_key) =
            Engine::start(config, store.clone(), clock.clone(), prices, Vec::new()).await?;
        if records.retention_days.is_some() {
            // After the engine's start, so the journal's replay is stored before any cutoff.
            tokio::spawn(retention(store, records, clock));
        }
        let http = UpstreamClient::new(ClientOptions::default());
        // The BPE (o200k, ~35 MB in memory) is not loaded here: only estimates need it (an
        // upstream that reports no usage, a hold that must count the input), and the first
        // of those loads it (`tokenizer::bpe`, once per process).
        let listener = TcpListener::bind(listen).await?;
        let state = Arc::new(AppState {
            engine,
            http,
            sessions: Default::default(),
        });
        let router = tollgate_http::routes(state.clone());
        Ok(Self {
            listener,
            router,
            state,
            bootstrap_admin_key,
        })
    }

    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    pub async fn run_until_stopped(self) -> std::io::Result<()> {
        self.run_with_shutdown(std::future::pending()).await
    }

    pub async fn run_with_shutdown(
        self,
        shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()> {
        tollgate_http::serve(self.listener, self.router, self.state, shutdown).await
    }
}
