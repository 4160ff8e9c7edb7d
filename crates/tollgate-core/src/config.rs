//! The typed configuration and its rules: every section with its defaults, deserialized with
//! `deny_unknown_fields`, and `validate`. Loading the layers (defaults, then a TOML file, then
//! `TOLLGATE_*` environment variables) is the binary's job (crates/tollgate/src/config.rs).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;

use serde::Deserialize;

use crate::money::NANOS_PER_USD;
pub use crate::pricing::PriceOverride;

/// The highest `credits.max_balance_usd`: 10^18 nano-USD, still 9 times below `i64::MAX`.
pub const MAX_BALANCE_USD_CEILING: i64 = 1_000_000_000;

/// A configuration that parses but breaks a rule; the message names the key and the fix.
#[derive(Debug, thiserror::Error)]
#[error("invalid configuration: {0}")]
pub struct InvalidConfig(pub String);

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub server: ServerConfig,
    pub store: StoreConfig,
    pub journal: JournalConfig,
    pub credits: CreditsConfig,
    pub metering: MeteringConfig,
    pub limits: LimitsConfig,
    pub security: SecurityConfig,
    pub records: RecordsConfig,
    pub webhooks: WebhooksConfig,
    pub metrics: MetricsConfig,
    pub insights: InsightsConfig,
    /// Upstream providers by name. Each says which models it serves.
    pub providers: BTreeMap<String, ProviderConfig>,
    /// Extra or overriding price entries, by model name.
    pub prices: BTreeMap<String, PriceOverride>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    pub listen: SocketAddr,
    /// Where the SQLite database and the journal live.
    pub data_dir: PathBuf,
    /// Largest request body accepted, in bytes; larger bodies get 413 before being read.
    pub max_body_bytes: usize,
    /// Prefix of every API key the gateway issues.
    pub key_prefix: String,
    /// Seconds to wait for an upstream's response headers, and for a non-streamed body to end
    /// (504 after that).
    pub upstream_timeout_secs: u64,
    /// Seconds to wait between two chunks of an upstream stream before giving up on it.
    pub stream_idle_timeout_secs: u64,
    /// After a client disconnects mid-stream, how long we keep reading the upstream to learn the
    /// real usage.
    pub drain_timeout_secs: u64,
    /// Largest non-streamed upstream response body, in bytes; a larger one is answered 502
    /// `provider_error` rather than held in memory.
    pub max_upstream_body_bytes: usize,
    /// Largest single Server-Sent Event of an upstream stream, in bytes; past it the stream is
    /// ended with an error event (an upstream that never ends an event cannot grow a buffer).
    pub max_sse_event_bytes: usize,
    /// Longest a stream may last, in seconds from the request's arrival, however steadily bytes
    /// arrive (the idle timeout alone restarts on every byte).
    pub max_stream_secs: u64,
    /// How long a validated key stays cached before it is re-read from the store (so a revoke
    /// made by another process is seen within this time).
    pub key_cache_secs: u64,
    /// One log line per request (target `tollgate::request`, at info) as its record commits:
    /// request id, account, key id, model, status, tokens, cost, latency; never keys, prompts
    /// or completions. JSON with `TOLLGATE_LOG_FORMAT=json`.
    pub request_log: bool,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StoreConfig {
    /// `sqlite` (default, embedded, one process) or `postgres` (several replicas).
    pub kind: StoreKind,
    /// Defaults to `<data_dir>/tollgate.db`.
    pub sqlite_path: Option<PathBuf>,
    /// `postgres://user@host:port/db` for `kind = "postgres"`.
    pub url: Option<String>,
    /// Connections each replica keeps to PostgreSQL.
    pub pool_size: usize,
    /// This replica's name, unique among the replicas sharing one PostgreSQL: its credit
    /// leases are held under it. Default: an id generated once and kept in `data_dir`.
    pub replica_id: Option<String>,
    /// How long a replica's lease of an account's balance lasts without renewal (seconds). A
    /// replica that dies strands its unspent lease this long; a replica cut off from the
    /// database keeps spending its leases this long, then refuses paid requests.
    pub lease_secs: u64,
    /// Most records written in one transaction. The writer commits whatever has arrived as
    /// soon as the previous commit ends, so batches grow with load and stay small when idle.
    /// Under load a bigger batch writes each touched index page once for more records (4,096
    /// rather than 1,024 halves SQLite's page writes per record).
    pub batch_max: usize,
}

/// The store backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum StoreKind {
    /// Embedded SQLite (one process).
    Sqlite,
    /// PostgreSQL, shared by several replicas.
    Postgres,
}

impl StoreKind {
    pub fn as_str(self) -> &'static str {
        match self {
            StoreKind::Sqlite => "sqlite",
            StoreKind::Postgres => "postgres",
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct JournalConfig {
    /// Segment size after which the journal starts a new file.
    pub segment_bytes: u64,
    /// `fsync` the journal this often (milliseconds; 0 = never). Writes reach the OS page cache
    /// before a response is sent, which already survives a killed process; fsync adds power-loss
    /// safety.
    pub fsync_interval_ms: u64,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CreditsConfig {
    /// Refuse (402) requests whose maximum cost the account's balance cannot cover. With
    /// `false`, usage is still charged and balances may go negative.
    pub enforce: bool,
    /// Credits per USD: the unit of `x-credits-remaining` and of credit fields in the usage
    /// APIs. Default 1,000,000 (one credit = one micro-USD).
    pub per_usd: i64,
    /// Currency of `*_micro` fields.
    pub currency: String,
    /// Fee charged on bring-your-own-key requests, in basis points of their cost (0 = free).
    pub byok_fee_bps: i64,
    /// Largest single grant or refund, in whole USD (a typo such as `9000000000` is refused,
    /// not written).
    pub max_grant_usd: i64,
    /// Largest balance a grant or refund may bring an account to, in whole USD. With the
    /// default, balances stay ~90 times below what an i64 of nano-USD can hold, so no sum of
    /// them can overflow.
    pub max_balance_usd: i64,
    /// Input tokens a credit hold assumes for each part of a request whose size its body does
    /// not show: an image, audio, file or document part (by URL, file id or inline), a
    /// server-side tool (e.g. web search), an MCP server. Default 4,096 (more than any image
    /// costs at OpenAI or Anthropic; a long document or many searches can cost more).
    pub hold_tokens_per_opaque_part: u64,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MeteringConfig {
    /// The most tokens of each class (input, output, cached, cache writes, reasoning) one
    /// request is recorded with. An upstream reporting more is not believed: its counts are
    /// clamped to this, the record is flagged `clamped`, and a warning is logged. Default
    /// 10,000,000 (beyond any model's context window plus its output); at most
    /// 100,000,000.
    pub max_tokens_per_request: u64,
}

impl Default for MeteringConfig {
    fn default() -> Self {
        Self {
            max_tokens_per_request: 10_000_000,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LimitsConfig {
    /// Failed authentications from one client address per minute before it gets 429 without a
    /// key lookup.
    pub auth_failures_per_minute: u32,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RecordsConfig {
    /// Days raw records are kept (request log, exports, record lookups); older ones are
    /// dropped at start and hourly. Rollups (every usage total) and credit balances are kept
    /// forever. On PostgreSQL whole months go, once a month ends before the cutoff. Default:
    /// none (keep every record).
    pub retention_days: Option<u32>,
}

/// `GET /metrics` (Prometheus).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MetricsConfig {
    /// Serve `/metrics` and count (off: 404, and nothing is counted).
    pub enabled: bool,
    /// When set, `/metrics` needs `Authorization: Bearer <token>`.
    pub token: Option<String>,
    /// Distinct `model` label values at most; later models count as `other`, so a client
    /// naming models cannot grow the series without bound.
    pub max_models: usize,
}

impl Default for MetricsConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            token: None,
            max_models: 200,
        }
    }
}

/// `GET /v1/usage/insights`: request fingerprints and the analyses' knobs.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct InsightsConfig {
    /// Fingerprint each request (keyed hashes of its body and conversation opening; off: the
    /// insights that need them come back empty). They are keyed by the secret that seals webhook
    /// secrets, so replicas need `security.encryption_key`.
    pub fingerprints: bool,
    /// Two answered identical requests this many seconds apart or closer are a duplicate.
    pub duplicate_window_secs: u64,
    /// A retry this many seconds or less after the failed attempt before it continues a loop.
    pub retry_window_secs: u64,
    /// The fewest attempts that make a retry loop.
    pub retry_min_attempts: usize,
    /// The fewest answered turns that make a growing conversation.
    pub growth_min_turns: usize,
    /// The history size (input tokens per turn) whose savings are shown; `history_cap` per query.
    pub history_cap_tokens: u64,
    /// Model -> its cheaper sibling (a model of the price table), for the model mix. A name
    /// matches the model and its dated snapshots (`gpt-4o` matches `gpt-4o-2024-08-06`). Set,
    /// it replaces the default map.
    pub siblings: BTreeMap<String, String>,
}

impl Default for InsightsConfig {
    fn default() -> Self {
        Self {
            fingerprints: true,
            duplicate_window_secs: 600,
            retry_window_secs: 600,
            retry_min_attempts: 3,
            growth_min_turns: 3,
            history_cap_tokens: 8_000,
            siblings: crate::insights::default_siblings(),
        }
    }
}

/// Webhook deliveries.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WebhooksConfig {
    /// Allow endpoints on loopback, private, link-local and unspecified addresses (off: such
    /// targets are refused when a webhook is created and again at every connection).
    pub allow_private_targets: bool,
    /// A delivery attempt fails if no 2xx arrives within this many seconds.
    pub timeout_secs: u64,
    /// An endpoint failing every delivery for this long is disabled.
    pub disable_after_failing_hours: u64,
    /// After a secret rotation, the old secret also signs for this long.
    pub secret_overlap_hours: u64,
    /// Deliveries in flight per endpoint at most.
    pub max_in_flight_per_endpoint: usize,
    /// `credits.projected_exhaustion`: the burn rate is measured over this many recent hours…
    pub projection_window_hours: u64,
    /// …and the event fires when it empties the balance within this many hours; once per grant
    /// epoch, and again only when the projection moves earlier by more than
    /// `projection_refire_hours`.
    pub projection_horizon_hours: u64,
    pub projection_refire_hours: u64,
    /// Finished deliveries (and their attempts) are kept this many days.
    pub history_days: u32,
}

impl Default for WebhooksConfig {
    fn default() -> Self {
        Self {
            allow_private_targets: false,
            timeout_secs: 15,
            disable_after_failing_hours: 72,
            secret_overlap_hours: 24,
            max_in_flight_per_endpoint: 4,
            projection_window_hours: 6,
            projection_horizon_hours: 24,
            projection_refire_hours: 6,
            history_days: 30,
        }
    }
}

/// The longest `records.retention_days`: a century.
pub const MAX_RETENTION_DAYS: u32 = 36_500;

impl RecordsConfig {
    /// The cutoff retention applies at `now_ms`: records created before it go. None when
    /// records are kept forever.
    pub fn retention_cutoff_ms(&self, now_ms: i64) -> Option<i64> {
        self.retention_days
            .map(|d| now_ms.saturating_sub(i64::from(d).saturating_mul(86_400_000)))
    }
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SecurityConfig {
    /// Base64 of 32 random bytes; encrypts accounts' own provider keys at rest. Without it,
    /// bring-your-own-key is off. Generate one with `openssl rand -base64 32`.
    pub encryption_key: Option<String>,
}

impl Default for CreditsConfig {
    fn default() -> Self {
        Self {
            enforce: true,
            per_usd: 1_000_000,
            currency: "USD".into(),
            byok_fee_bps: 0,
            max_grant_usd: 1_000_000,
            max_balance_usd: 100_000_000,
            hold_tokens_per_opaque_part: 4096,
        }
    }
}

impl CreditsConfig {
    /// `max_grant_usd` in nano-USD (saturating: `validate` keeps it far below the limit).
    pub fn max_grant_nanos(&self) -> i64 {
        self.max_grant_usd.saturating_mul(NANOS_PER_USD)
    }

    /// `max_balance_usd` in nano-USD.
    pub fn max_balance_nanos(&self) -> i64 {
        self.max_balance_usd.saturating_mul(NANOS_PER_USD)
    }
}

impl Default for LimitsConfig {
    fn default() -> Self {
        Self {
            auth_failures_per_minute: 20,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ProviderKind {
    /// Speaks OpenAI's API: OpenAI, DeepSeek, Groq, Together, vLLM, Ollama, OpenRouter, Mistral…
    Openai,
    /// Speaks Anthropic's Messages API (and its OpenAI-compatible chat endpoint).
    Anthropic,
}

#[derive(Debug, Clone, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct ProviderConfig {
    pub kind: ProviderKind,
    /// Base URL including the version segment, e.g. `https://api.openai.com/v1`.
    pub base_url: String,
    /// The provider credential; wins over `api_key_env` when both are set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_key: Option<String>,
    /// Name of an environment variable holding the provider credential.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_key_env: Option<String>,
    /// Model names or patterns (`claude-*`) this provider serves. Exact names win over patterns;
    /// among patterns the longest wins.
    #[serde(default)]
    pub models: Vec<String>,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            data_dir: PathBuf::from("data"),
            max_body_bytes: 4 * 1024 * 1024,
            key_prefix: "tg-".into(),
            upstream_timeout_secs: 600,
            stream_idle_timeout_secs: 300,
            drain_timeout_secs: 120,
            max_upstream_body_bytes: 32 * 1024 * 1024,
            max_sse_event_bytes: 4 * 1024 * 1024,
            max_stream_secs: 3600,
            key_cache_secs: 5,
            request_log: false,
        }
    }
}

impl Default for StoreConfig {
    fn default() -> Self {
        Self {
            kind: StoreKind::Sqlite,
            sqlite_path: None,
            url: None,
            pool_size: 16,
            replica_id: None,
            lease_secs: 120,
            batch_max: 4096,
        }
    }
}

impl Default for JournalConfig {
    fn default() -> Self {
        Self {
            segment_bytes: 16 * 1024 * 1024,
            fsync_interval_ms: 1000,
        }
    }
}

impl Default for Config {
    fn default() -> Self {
        let mut providers = BTreeMap::new();
        providers.insert(
            "openai".to_string(),
            ProviderConfig {
                kind: ProviderKind::Openai,
                base_url: "https://api.openai.com/v1".into(),
                api_key: None,
                api_key_env: Some("OPENAI_API_KEY".into()),
                models: [
                    "gpt-*",
                    "o1*",
                    "o3*",
                    "o4*",
                    "text-embedding-*",
                    "chatgpt-*",
                ]
                .map(String::from)
                .to_vec(),
            },
        );
        providers.insert(
            "anthropic".to_string(),
            ProviderConfig {
                kind: ProviderKind::Anthropic,
                base_url: "https://api.anthropic.com/v1".into(),
                api_key: None,
                api_key_env: Some("ANTHROPIC_API_KEY".into()),
                models: vec!["claude-*".into()],
            },
        );
        Self {
            server: ServerConfig::default(),
            store: StoreConfig::default(),
            journal: JournalConfig::default(),
            credits: CreditsConfig::default(),
            metering: MeteringConfig::default(),
            limits: LimitsConfig::default(),
            security: SecurityConfig::default(),
            records: RecordsConfig::default(),
            webhooks: WebhooksConfig::default(),
            metrics: MetricsConfig::default(),
            insights: InsightsConfig::default(),
            providers,
            prices: BTreeMap::new(),
        }
    }
}

impl Config {
    pub fn validate(&self) -> Result<(), InvalidConfig> {
        let i = &self.insights;
        if !(1..=86_400).contains(&i.duplicate_window_secs)
            || !(1..=86_400).contains(&i.retry_window_secs)
        {
            return Err(InvalidConfig(
                "insights.duplicate_window_secs and insights.retry_window_secs must be 1 to 86400"
                    .into(),
            ));
        }
        if !(2..=1000).contains(&i.retry_min_attempts) || !(2..=1000).contains(&i.growth_min_turns)
        {
            return Err(InvalidConfig(
                "insights.retry_min_attempts and insights.growth_min_turns must be 2 to 1000"
                    .into(),
            ));
        }
        if i.history_cap_tokens > crate::record::bounds::MAX_TOKENS_PER_REQUEST {
            return Err(InvalidConfig(format!(
                "insights.history_cap_tokens must be at most {}",
                crate::record::bounds::MAX_TOKENS_PER_REQUEST
            )));
        }
        if self.metrics.token.as_deref().is_some_and(|t| t.len() < 16) {
            return Err(InvalidConfig(
                "metrics.token must be at least 16 characters (or leave it unset)".into(),
            ));
        }
        if !(1..=10_000).contains(&self.metrics.max_models) {
            return Err(InvalidConfig(
                "metrics.max_models must be 1 to 10000".into(),
            ));
        }
        if self.server.key_prefix.is_empty() || self.server.key_prefix.len() > 16 {
            return Err(InvalidConfig(
                "server.key_prefix must be 1 to 16 characters".into(),
            ));
        }
        if self.server.max_body_bytes < 1024 {
            return Err(InvalidConfig(
                "server.max_body_bytes must be at least 1024".into(),
            ));
        }
        if self.server.max_upstream_body_bytes < 1024 {
            return Err(InvalidConfig(
                "server.max_upstream_body_bytes must be at least 1024".into(),
            ));
        }
        if self.server.max_sse_event_bytes < 1024 {
            return Err(InvalidConfig(
                "server.max_sse_event_bytes must be at least 1024".into(),
            ));
        }
        if self.server.max_stream_secs == 0 {
            return Err(InvalidConfig(
                "server.max_stream_secs must be at least 1".into(),
            ));
        }
        if self.credits.per_usd <= 0 || NANOS_PER_USD % self.credits.per_usd != 0 {
            return Err(InvalidConfig(
                "credits.per_usd must be a positive divisor of 1000000000 (e.g. 100, 100000, 1000000)".into(),
            ));
        }
        if !(0..=10_000).contains(&self.credits.byok_fee_bps) {
            return Err(InvalidConfig(
                "credits.byok_fee_bps must be 0 to 10000".into(),
            ));
        }
        if !(1..=MAX_BALANCE_USD_CEILING).contains(&self.credits.max_balance_usd) {
            return Err(InvalidConfig(format!(
                "credits.max_balance_usd must be 1 to {MAX_BALANCE_USD_CEILING}"
            )));
        }
        if !(1..=self.credits.max_balance_usd).contains(&self.credits.max_grant_usd) {
            return Err(InvalidConfig(
                "credits.max_grant_usd must be at least 1 and at most credits.max_balance_usd"
                    .into(),
            ));
        }
        let ceiling = crate::record::bounds::MAX_TOKENS_PER_REQUEST;
        if !(1..=ceiling).contains(&self.metering.max_tokens_per_request) {
            return Err(InvalidConfig(format!(
                "metering.max_tokens_per_request must be 1 to {ceiling}"
            )));
        }
        if self.credits.hold_tokens_per_opaque_part > ceiling {
            return Err(InvalidConfig(format!(
                "credits.hold_tokens_per_opaque_part must be at most {ceiling}"
            )));
        }
        if let Some(k) = &self.security.encryption_key {
            use base64::Engine;
            let ok = base64::engine::general_purpose::STANDARD
                .decode(k.trim())
                .is_ok_and(|b| b.len() == 32);
            if !ok {
                return Err(InvalidConfig(
                    "security.encryption_key must be base64 of exactly 32 bytes (openssl rand -base64 32)".into(),
                ));
            }
        }
        if let Some(d) = self.records.retention_days {
            if !(1..=MAX_RETENTION_DAYS).contains(&d) {
                return Err(InvalidConfig(format!(
                    "records.retention_days must be 1 to {MAX_RETENTION_DAYS} (leave it out to keep records forever)"
                )));
            }
        }
        let w = &self.webhooks;
        if !(1..=120).contains(&w.timeout_secs) {
            return Err(InvalidConfig(
                "webhooks.timeout_secs must be 1 to 120".into(),
            ));
        }
        if !(1..=MAX_RETENTION_DAYS).contains(&w.history_days) {
            return Err(InvalidConfig(format!(
                "webhooks.history_days must be 1 to {MAX_RETENTION_DAYS}"
            )));
        }
        if !(1..=720).contains(&w.projection_window_hours)
            || !(1..=8_760).contains(&w.projection_horizon_hours)
            || !(1..=8_760).contains(&w.projection_refire_hours)
        {
            return Err(InvalidConfig(
                "webhooks.projection_window_hours must be 1 to 720, and webhooks.projection_horizon_hours and webhooks.projection_refire_hours 1 to 8760"
                    .into(),
            ));
        }
        if w.disable_after_failing_hours == 0 || w.max_in_flight_per_endpoint == 0 {
            return Err(InvalidConfig(
                "webhooks.disable_after_failing_hours and webhooks.max_in_flight_per_endpoint must be at least 1"
                    .into(),
            ));
        }
        if self.store.batch_max == 0 {
            return Err(InvalidConfig("store.batch_max must be at least 1".into()));
        }
        if self.store.kind == StoreKind::Postgres && self.store.url.is_none() {
            return Err(InvalidConfig(
                "store.kind = \"postgres\" needs store.url (e.g. postgres://tollgate@127.0.0.1/tollgate, \
                 or TOLLGATE_STORE__URL)"
                    .into(),
            ));
        }
        if self.store.pool_size == 0 || self.store.pool_size > 1000 {
            return Err(InvalidConfig("store.pool_size must be 1 to 1000".into()));
        }
        if !(5..=86_400).contains(&self.store.lease_secs) {
            return Err(InvalidConfig("store.lease_secs must be 5 to 86400".into()));
        }
        if let Some(id) = &self.store.replica_id {
            if id.is_empty()
                || id.len() > 64
                || !id
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
            {
                return Err(InvalidConfig(
                    "store.replica_id must be 1 to 64 letters, digits, '-' or '_'".into(),
                ));
            }
        }
        for (name, p) in &self.providers {
            if !(p.base_url.starts_with("http://") || p.base_url.starts_with("https://")) {
                return Err(InvalidConfig(format!(
                    "providers.{name}.base_url = {:?} must start with http:// or https://",
                    p.base_url
                )));
            }
            for m in &p.models {
                if m.is_empty()
                    || m.matches('*').count() > 1
                    || (m.contains('*') && !m.ends_with('*'))
                {
                    return Err(InvalidConfig(format!(
                        "providers.{name}.models: {m:?} must be an exact name or a prefix ending in a single '*'"
                    )));
                }
            }
        }
        for (model, p) in &self.prices {
            crate::pricing::PriceEntry::from_override(model, p)
                .map_err(|e| InvalidConfig(format!("prices.{model}: {e}")))?;
        }
        Ok(())
    }

    pub fn sqlite_path(&self) -> PathBuf {
        self.store
            .sqlite_path
            .clone()
            .unwrap_or_else(|| self.server.data_dir.join("tollgate.db"))
    }

    pub fn journal_dir(&self) -> PathBuf {
        self.server.data_dir.join("journal")
    }
}

impl ProviderConfig {
    /// The credential, resolved from the environment when configured by name.
    pub fn resolve_key(&self, env: impl Fn(&str) -> Option<String>) -> Option<String> {
        match (&self.api_key, &self.api_key_env) {
            (Some(k), _) => Some(k.clone()),
            (None, Some(var)) => env(var),
            (None, None) => None,
        }
    }
}
