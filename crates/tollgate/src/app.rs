//! Wiring: the application state, the router, the per-request context middleware, and
//! `Application::build`, which a test can start on port 0.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::Request;
use axum::http::HeaderValue;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use tokio::net::TcpListener;

use crate::auth::{IssuedKey, KeyService};
use crate::clock::{SharedClock, SystemClock};
use crate::config::Config;
use crate::credits::byok::ProviderKeys;
use crate::credits::limits::Limiter;
use crate::credits::Credits;
use crate::error::{ApiError, ErrorCode, ErrorStyle};
use crate::ledger::sqlite::SqliteStore;
use crate::ledger::writer::Ledger;
use crate::ledger::{new_id, Store};
use crate::metering::prices::PriceTable;
use crate::metering::tokenizer;
use crate::proxy::routing::ModelRouter;
use crate::usage::store::UsageQueries;
use crate::{admin, proxy, usage};

pub struct AppState {
    pub config: Config,
    pub clock: SharedClock,
    pub keys: KeyService,
    pub ledger: Ledger,
    pub credits: Credits,
    pub limiter: Limiter,
    pub provider_keys: ProviderKeys,
    pub usage: Arc<dyn UsageQueries>,
    pub prices: PriceTable,
    pub router: ModelRouter,
    pub http: reqwest::Client,
}

/// Facts about the current request, set by `request_context` before any handler runs.
#[derive(Clone, Debug)]
pub struct RequestCtx {
    pub request_id: String,
    pub style: ErrorStyle,
    pub started: Instant,
    pub started_ms: i64,
}

pub struct Application {
    listener: TcpListener,
    router: Router,
    pub state: Arc<AppState>,
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
        crate::metering::prices::import_litellm(&std::fs::read_to_string(&path)?)?
    } else {
        Vec::new()
    };
    PriceTable::build(imported, &config.prices)
}

pub async fn open_store(config: &Config) -> anyhow::Result<Arc<dyn Store>> {
    Ok(open_stores(config).await?.0)
}

/// The store's write side and its usage-query side (one backend, two traits).
pub async fn open_stores(
    config: &Config,
) -> anyhow::Result<(Arc<dyn Store>, Arc<dyn UsageQueries>)> {
    std::fs::create_dir_all(&config.server.data_dir)?;
    let sqlite = Arc::new(SqliteStore::open(&config.sqlite_path())?);
    Ok((sqlite.clone(), sqlite))
}

impl Application {
    pub async fn build(config: Config) -> anyhow::Result<Self> {
        Self::build_with_clock(config, Arc::new(SystemClock)).await
    }

    /// As `build`, with the clock injected (tests place requests in time with a ManualClock).
    pub async fn build_with_clock(config: Config, clock: SharedClock) -> anyhow::Result<Self> {
        let (store, usage) = open_stores(&config).await?;
        let ledger = Ledger::start(
            store.clone(),
            &config.journal_dir(),
            config.journal.segment_bytes,
            config.store.batch_max,
            Duration::from_millis(config.journal.fsync_interval_ms),
        )
        .await?;
        let keys = KeyService::new(
            store.clone(),
            config.server.key_prefix.clone(),
            Duration::from_secs(config.server.key_cache_secs),
        );
        let bootstrap_admin_key = keys
            .bootstrap_admin()
            .await
            .map_err(|e| anyhow::anyhow!(e.message))?;
        let prices = load_price_table(&config)?;
        let credits = Credits::new(store.clone(), config.credits.clone());
        let limiter = Limiter::new(
            store.clone(),
            clock.clone(),
            config.limits.auth_failures_per_minute,
        );
        let provider_keys =
            ProviderKeys::new(store.clone(), config.security.encryption_key.as_deref());
        let router = ModelRouter::from_config(&config, |var| std::env::var(var).ok());
        let http = reqwest::Client::builder()
            .tcp_nodelay(true)
            .connect_timeout(Duration::from_secs(10))
            .pool_idle_timeout(Duration::from_secs(90))
            .pool_max_idle_per_host(1024)
            .build()?;
        // Load the BPE now, not inside the first request that needs an estimate.
        tokio::task::spawn_blocking(tokenizer::warm_up);
        let listener = TcpListener::bind(config.server.listen).await?;
        let state = Arc::new(AppState {
            config,
            clock,
            keys,
            ledger,
            credits,
            limiter,
            provider_keys,
            usage,
            prices,
            router,
            http,
        });
        Ok(Self {
            listener,
            router: routes(state.clone()),
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
        let ledger = self.state.ledger.clone();
        let listener = NoDelayListener(self.listener);
        axum::serve(
            listener,
            self.router
                .into_make_service_with_connect_info::<ClientAddr>(),
        )
        .with_graceful_shutdown(shutdown)
        .await?;
        // Everything answered is in the journal already; this just saves the next start a replay.
        ledger.close().await;
        Ok(())
    }
}

/// Accepts connections with TCP_NODELAY set, so small responses on keep-alive connections are
/// not held back by Nagle's algorithm.
struct NoDelayListener(TcpListener);

impl axum::serve::Listener for NoDelayListener {
    type Io = tokio::net::TcpStream;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            match self.0.accept().await {
                Ok((stream, addr)) => {
                    let _ = stream.set_nodelay(true);
                    return (stream, addr);
                }
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
            }
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        self.0.local_addr()
    }
}

/// The client's address, for the authentication-failure brake.
#[derive(Clone, Copy, Debug)]
pub struct ClientAddr(pub SocketAddr);

impl axum::extract::connect_info::Connected<axum::serve::IncomingStream<'_, NoDelayListener>>
    for ClientAddr
{
    fn connect_info(stream: axum::serve::IncomingStream<'_, NoDelayListener>) -> Self {
        ClientAddr(*stream.remote_addr())
    }
}

pub fn routes(state: Arc<AppState>) -> Router {
    Router::new()
        .route("/v1/chat/completions", post(proxy::chat_completions))
        .route("/v1/embeddings", post(proxy::embeddings))
        .route("/v1/messages", post(proxy::messages))
        .route("/v1/models", get(proxy::list_models))
        .nest("/admin", admin::routes())
        .merge(usage::routes())
        .merge(crate::credits::api::routes())
        .route("/health", get(|| async { "ok" }))
        .fallback(|| async { ApiError::new(ErrorCode::NotFound, "no such endpoint") })
        .method_not_allowed_fallback(|| async {
            ApiError::new(
                ErrorCode::MethodNotAllowed,
                "method not allowed on this endpoint",
            )
        })
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            request_context,
        ))
        .with_state(state)
}

/// Gives every request an id and an error style, and renders any `ApiError` in that style: the
/// one place errors become HTTP responses.
async fn request_context(
    axum::extract::State(s): axum::extract::State<Arc<AppState>>,
    mut req: Request,
    next: Next,
) -> Response {
    let ctx = RequestCtx {
        request_id: new_id("req", 12),
        style: ErrorStyle::detect(req.headers(), req.uri().path()),
        started: Instant::now(),
        started_ms: s.clock.now_ms(),
    };
    let ip = req
        .extensions()
        .get::<axum::extract::ConnectInfo<ClientAddr>>()
        .map(|c| c.0 .0.ip());
    // An address that keeps presenting bad keys is refused before any key lookup.
    let blocked = ip.is_some_and(|ip| s.limiter.auth_blocked(ip));
    let may_have_body = !matches!(
        *req.method(),
        axum::http::Method::GET | axum::http::Method::HEAD
    );
    let mut resp = if blocked {
        let mut err = ApiError::new(
            ErrorCode::RateLimited,
            "too many failed authentication attempts from this address; retry in a minute",
        );
        err.headers.push(("retry-after", "60".into()));
        err.into_response()
    } else {
        req.extensions_mut().insert(ctx.clone());
        next.run(req).await
    };
    if let Some(err) = resp.extensions_mut().remove::<ApiError>() {
        if err.code == ErrorCode::InvalidApiKey {
            if let Some(ip) = ip {
                s.limiter.auth_failed(ip);
            }
        }
        resp = err.render(ctx.style);
        if may_have_body && err.refused_before_body() {
            resp.headers_mut().insert(
                axum::http::header::CONNECTION,
                HeaderValue::from_static("close"),
            );
        }
    }
    if let Ok(v) = HeaderValue::from_str(&ctx.request_id) {
        if ctx.style == ErrorStyle::Anthropic {
            resp.headers_mut().insert("request-id", v.clone());
        }
        resp.headers_mut().insert("x-request-id", v);
    }
    resp
}
