//! tollgate-engine: the services between the HTTP boundary and the store, with I/O but no HTTP
//! framework. A request passes through them in named phases:
//!
//! ```text
//! keys.authenticate ─▶ routing.resolve ─▶ pricing (core) ─▶ admit (hold + permit)
//!        ─▶ [exchange with the upstream: tollgate-http] ─▶ Ticket::settle ─▶ ledger.record
//! ```
//!
//! - `keys`: issuing keys and resolving a presented key to its `Caller`
//! - `routing`: which configured provider serves a model
//! - `admission`: who pays, the credit hold, the key's limits
//! - `settle`: pricing the tokens used, settling, building and writing the one record
//! - `ledger`: the journal and the batch writer in front of the store
//! - `credits`, `limits`, `byok`: balances, per-key limits, accounts' own provider keys
//! - `reports`: the reads behind the usage APIs
//! - `copy`: `tollgate store copy`, one store into another, and its check

pub mod admission;
pub mod byok;
pub mod copy;
pub mod credits;
pub mod fs;
pub mod insights;
pub mod keys;
pub mod ledger;
pub mod limits;
pub mod metrics;
pub mod reports;
pub mod request_log;
pub mod routing;
pub mod settle;
pub mod webhooks;

use std::sync::Arc;
use std::time::Duration;

use tollgate_core::clock::SharedClock;
use tollgate_core::config::Config;
use tollgate_core::pricing::PriceTable;
use tollgate_core::store::Store;

use crate::byok::ProviderKeys;
use crate::credits::Credits;
use crate::keys::{IssuedKey, KeyService};
use crate::ledger::{Ledger, LedgerOptions, RecordSink};
use crate::limits::Limiter;
use crate::routing::ModelRouter;

/// Every service, built once per process from the config and a store.
pub struct Engine {
    pub config: Config,
    pub clock: SharedClock,
    pub store: Arc<dyn Store>,
    pub keys: KeyService,
    pub ledger: Ledger,
    pub credits: Credits,
    pub limiter: Limiter,
    pub provider_keys: ProviderKeys,
    pub prices: PriceTable,
    pub router: ModelRouter,
    pub webhooks: Arc<webhooks::Webhooks>,
    /// None when `metrics.enabled` is off.
    pub metrics: Option<Arc<metrics::Metrics>>,
    /// Keys each account's request fingerprints; None when `insights.fingerprints` is off or
    /// no sealing key is configured (replicas without `security.encryption_key`).
    fingerprint_secret: Option<tollgate_core::fingerprint::FingerprintSecret>,
}

/// How long a validated key is trusted before it is re-read. Replicas sharing PostgreSQL
/// re-read at least every second, so a key revoked, an account disabled or a limit changed on
/// one replica holds on every replica within a second.
fn key_cache_ttl(config: &Config) -> Duration {
    let secs = match config.store.kind {
        tollgate_core::config::StoreKind::Sqlite => config.server.key_cache_secs,
        tollgate_core::config::StoreKind::Postgres => config.server.key_cache_secs.min(1),
    };
    Duration::from_secs(secs)
}

/// The key that seals webhook secrets: `security.encryption_key`, or on SQLite (one process)
/// one generated once and kept owner-only in `data_dir/webhook-secret.key`, so webhooks work on
/// a fresh machine. Replicas must share a configured key (None: webhooks answer 400 saying so).
fn sealing_key(config: &Config) -> anyhow::Result<Option<[u8; 32]>> {
    use base64::Engine as _;
    if let Some(k) = &config.security.encryption_key {
        let bytes = base64::engine::general_purpose::STANDARD.decode(k.trim())?;
        return Ok(<[u8; 32]>::try_from(bytes.as_slice()).ok());
    }
    if config.store.kind != tollgate_core::config::StoreKind::Sqlite {
        return Ok(None);
    }
    let path = config.server.data_dir.join("webhook-secret.key");
    if let Ok(bytes) = std::fs::read(&path) {
        if let Ok(key) = <[u8; 32]>::try_from(bytes.as_slice()) {
            return Ok(Some(key));
        }
    }
    let mut key = [0u8; 32];
    rand::RngCore::fill_bytes(&mut rand::thread_rng(), &mut key);
    crate::fs::write_private(&path, &key)?;
    Ok(Some(key))
}

impl Engine {
    /// Starts the ledger (replaying any journal left by a previous process) and builds the
    /// services. Returns the admin key created on a first start, to be shown once.
    pub async fn start(
        config: Config,
        store: Arc<dyn Store>,
        clock: SharedClock,
        prices: PriceTable,
        mut sinks: Vec<Arc<dyn RecordSink>>,
    ) -> anyhow::Result<(Self, Option<IssuedKey>)> {
        crate::fs::create_private_dir(&config.server.data_dir)?;
        let metrics = config
            .metrics
            .enabled
            .then(|| Arc::new(metrics::Metrics::new(config.metrics.max_models)));
        if let Some(m) = &metrics {
            sinks.push(m.clone());
        }
        if config.server.request_log {
            sinks.push(Arc::new(request_log::RequestLog));
        }
        let ledger = Ledger::start(
            store.clone(),
            LedgerOptions::from_config(
                &config,
                config.journal_dir(),
                config.server.data_dir.join("dead-letter.ndjson"),
            ),
            sinks,
            settle::interrupted_record,
        )
        .await?;
        if let Some(m) = &metrics {
            m.watch_ledger(ledger.stats_handle());
        }
        let keys = KeyService::new(
            store.clone(),
            clock.clone(),
            config.server.key_prefix.clone(),
            key_cache_ttl(&config),
        );
        let bootstrap = keys.bootstrap_admin().await?;
        let credits = Credits::new(
            store.clone(),
            config.credits.clone(),
            clock.clone(),
            config.store.lease_secs,
        );
        credits.start_lease_keeper();
        let limiter = Limiter::new(
            store.clone(),
            clock.clone(),
            config.limits.auth_failures_per_minute,
        );
        limiter.start_quota_keeper();
        let provider_keys =
            ProviderKeys::new(store.clone(), config.security.encryption_key.as_deref());
        let router = ModelRouter::from_config(&config, |var| std::env::var(var).ok());
        let sealing_key = sealing_key(&config)?;
        let fingerprint_secret =
            insights::secret(config.insights.fingerprints, sealing_key.as_ref());
        let webhooks = Arc::new(webhooks::Webhooks::new(
            store.clone(),
            clock.clone(),
            sealing_key,
            config.webhooks.clone(),
            config.credits.per_usd,
        ));
        if let Some(m) = &metrics {
            webhooks.count_attempts(m.webhook_attempts());
        }
        webhooks.start_dispatcher();
        keys.set_outbox(webhooks.clone());
        credits.set_outbox(webhooks.clone());
        limiter.set_outbox(webhooks.clone());
        Ok((
            Self {
                config,
                clock,
                store,
                keys,
                ledger,
                credits,
                limiter,
                provider_keys,
                prices,
                router,
                webhooks,
                metrics,
                fingerprint_secret,
            },
            bootstrap,
        ))
    }
}
