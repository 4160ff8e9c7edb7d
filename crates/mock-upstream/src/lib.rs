//! # mock-upstream
//!
//! A fake upstream LLM provider speaking the OpenAI (`/v1/chat/completions`,
//! `/v1/embeddings`, `/v1/responses`, `/v1/models`) and Anthropic
//! (`/v1/messages`, `/v1/messages/count_tokens`) wire formats, JSON and SSE
//! streaming.
//!
//! It exists so the tollgate gateway can be tested and benchmarked without
//! real providers: every response is deterministic (token counts follow
//! simple word-counting rules, see [`MockConfig`]), misbehaviour can be
//! requested on demand (latency, slow streams, cut connections, missing
//! usage, error statuses, hangs), and the mock keeps its own **ledger** of
//! what it served ([`LedgerEntry`]), which tests compare with the gateway's
//! metering records: the ledger is the ground truth.
//!
//! Token rules (one whitespace-separated word = one token):
//! * input = words of every message content, plus 1 per message, plus the
//!   words of the Anthropic `system` prompt (no +1 for it); Responses: the
//!   words of `instructions` (no +1) and of the `input` (a string is one
//!   message: its words + 1; each item: its content words + 1);
//!   `count_tokens` answers the input of the same body as messages would;
//!   embeddings: the
//!   words of every input (token-id arrays count one per id), no +1;
//! * output = `output_tokens` words, capped by the request's `max_tokens` /
//!   `max_completion_tokens` / `max_output_tokens` (Responses) (unless
//!   `ignore_max_tokens`); OpenAI chat and Responses add `reasoning_tokens`
//!   to `completion_tokens` / `output_tokens`;
//! * `cached_tokens` (clamped to the input) is part of OpenAI's
//!   `prompt_tokens` but excluded from Anthropic's `input_tokens`; the ledger
//!   always records the total input and the cached count separately.
//!
//! Knobs are global ([`MockServer::set_config`], `POST /_mock/config`, CLI
//! flags) or per request: a top-level `"mock": {...}` object in the request
//! body (same field names, partial) overrides the global config for that
//! request. The knobs ([`MockConfig`] fields, also their JSON names):
//! * shape of the output: `output_tokens` (16), `cached_tokens`,
//!   `reasoning_tokens`;
//! * misbehaviour: `latency_ms` (before the headers), `chunk_delay_ms`
//!   (between SSE events), `omit_usage`, `cut_at_chunk` (abort a stream
//!   after N events), `error_status`, `hang`;
//! * ledger: `record_ledger` (on by default);
//! * adversarial upstream (all off by default):
//!   - `report_input_tokens` / `report_output_tokens` (`null` or a number):
//!     the usage carries these numbers verbatim (e.g. `u64::MAX`), whatever
//!     was really consumed and generated (OpenAI `prompt_tokens` /
//!     `completion_tokens`, `total_tokens` being their saturating sum;
//!     Anthropic `input_tokens` / `output_tokens`, in `message_start` and
//!     the final `message_delta` of a stream; embeddings `prompt_tokens`
//!     and `total_tokens`, the output knob being ignored). The ledger keeps
//!     the real counts in `input_tokens` / `output_tokens` and what the
//!     usage claimed in `reported_input_tokens` / `reported_output_tokens`;
//!   - `ignore_max_tokens`: generate all `output_tokens` words even past
//!     the request's `max_tokens` / `max_completion_tokens` (reported
//!     honestly, finish reason `stop` / `end_turn`);
//!   - `pad_bytes`: a successful non-streamed JSON response (chat, messages,
//!     embeddings) gets a last top-level field `"padding"`, a string of that
//!     many `x` (built in one allocation; 256 MiB is fine). No effect on
//!     streams;
//!   - `sse_no_boundary_bytes`: a stream (chat or messages) is replaced by
//!     `data: ` followed by that many `x` bytes, sent in 64 KiB chunks
//!     (`chunk_delay_ms` apart), with no `\n\n` event boundary, then the
//!     body ends cleanly. Ledger: no output, no usage, `completed` once the
//!     last chunk is produced;
//!   - `trickle_ms`: the normal body of any successful response (JSON or
//!     SSE) is sent one byte per frame, this many milliseconds apart
//!     (replacing `chunk_delay_ms` pacing; `cut_at_chunk` still applies).
//!     The ledger entry is `completed` (and `usage_reported`) only once the
//!     last byte (the usage's event) is produced, so a client giving up
//!     midway leaves it incomplete.
//!
//! Built for throughput (it backs a ~50k req/s benchmark): no per-request
//! logging, no lock held across an await, request bodies are scanned rather
//! than materialised, SSE bodies are rendered into a single buffer.

use std::{
    net::SocketAddr,
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc, OnceLock,
    },
};

use axum::{
    body::Bytes,
    extract::{DefaultBodyLimit, State},
    http::{header, StatusCode},
    response::{IntoResponse, Response},
    routing::{get, post},
    Router,
};
use parking_lot::{Mutex, RwLock};
use serde::{Deserialize, Serialize};

mod anthropic;
mod common;
mod openai;
mod responses;
mod sse;
mod tokens;

/// Behaviour knobs. Every field has a default, and a partial JSON object
/// (as accepted by `POST /_mock/config` or the per-request `"mock"` field)
/// only changes the fields it names. Unknown fields are rejected.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MockConfig {
    /// Delay before the response headers, in milliseconds.
    pub latency_ms: u64,
    /// Delay between SSE events, in milliseconds.
    pub chunk_delay_ms: u64,
    /// Generated words (= output tokens), before the request's max_tokens cap
    /// (see `ignore_max_tokens`).
    pub output_tokens: u64,
    /// Cached input tokens reported (clamped to the input size).
    pub cached_tokens: u64,
    /// Reasoning tokens (OpenAI chat and Responses), added to `completion_tokens` /
    /// `output_tokens`.
    pub reasoning_tokens: u64,
    /// Never report usage.
    pub omit_usage: bool,
    /// In a stream, abort the connection after this many SSE events.
    pub cut_at_chunk: Option<u64>,
    /// Answer with this HTTP status and the provider's error body.
    pub error_status: Option<u16>,
    /// Never answer.
    pub hang: bool,
    /// Record requests in the ledger (turn off for long benchmarks to keep
    /// memory flat).
    pub record_ledger: bool,
    /// Adversarial: the input-token number put in the usage, verbatim,
    /// whatever the real input (OpenAI `prompt_tokens`, Anthropic
    /// `input_tokens`, embeddings `prompt_tokens`).
    pub report_input_tokens: Option<u64>,
    /// Adversarial: the output-token number put in the usage, verbatim,
    /// whatever was generated (OpenAI `completion_tokens`, Anthropic
    /// `output_tokens`; embeddings have none).
    pub report_output_tokens: Option<u64>,
    /// Adversarial: generate `output_tokens` words even when the request's
    /// max_tokens / max_completion_tokens is smaller.
    pub ignore_max_tokens: bool,
    /// Adversarial: a non-streamed JSON response carries an extra top-level
    /// `"padding"` string of this many `x` bytes.
    pub pad_bytes: u64,
    /// Adversarial: a stream is `data: ` followed by this many `x` bytes
    /// (sent in 64 KiB chunks) and no event boundary at all.
    pub sse_no_boundary_bytes: u64,
    /// Adversarial: the response body (JSON or SSE) is sent one byte at a
    /// time, with this delay in milliseconds between bytes.
    pub trickle_ms: u64,
}

impl Default for MockConfig {
    fn default() -> Self {
        MockConfig {
            latency_ms: 0,
            chunk_delay_ms: 0,
            output_tokens: 16,
            cached_tokens: 0,
            reasoning_tokens: 0,
            omit_usage: false,
            cut_at_chunk: None,
            error_status: None,
            hang: false,
            record_ledger: true,
            report_input_tokens: None,
            report_output_tokens: None,
            ignore_max_tokens: false,
            pad_bytes: 0,
            sse_no_boundary_bytes: 0,
            trickle_ms: 0,
        }
    }
}

impl MockConfig {
    /// This config with the fields of `patch` (a JSON object, possibly
    /// partial; `null` clears an optional field) applied.
    pub fn merged(&self, patch: &serde_json::Value) -> Result<MockConfig, serde_json::Error> {
        let serde_json::Value::Object(patch) = patch else {
            return Err(serde::de::Error::custom(
                "mock config must be a JSON object",
            ));
        };
        let mut base = serde_json::to_value(self)?;
        if let serde_json::Value::Object(base) = &mut base {
            for (k, v) in patch {
                base.insert(k.clone(), v.clone());
            }
        }
        serde_json::from_value(base)
    }
}

/// What the mock served for one request: the ground truth tests compare the
/// gateway's records with.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LedgerEntry {
    /// The response id the mock generated (`chatcmpl-…`, `msg_…`, `emb-…`);
    /// also sent in the `x-mock-id` response header.
    pub id: String,
    /// The incoming `x-tollgate-request-id` header, if any.
    pub request_id: Option<String>,
    /// `"chat.completions"`, `"embeddings"`, `"messages"`, `"responses"` or
    /// `"messages.count_tokens"` (whose `input_tokens` is the count answered).
    pub api: String,
    pub model: String,
    /// Whether the client asked for a stream.
    pub streamed: bool,
    /// Total input tokens, cached ones included (for both APIs).
    pub input_tokens: u64,
    /// Total output tokens (OpenAI: words + reasoning).
    pub output_tokens: u64,
    pub cached_tokens: u64,
    pub reasoning_tokens: u64,
    /// Whether the final usage reached the wire (false when omitted, not
    /// requested via `stream_options.include_usage`, or cut before).
    pub usage_reported: bool,
    /// Whether the whole response, final event included, was produced.
    pub completed: bool,
    /// HTTP status (0 for a request left hanging).
    pub status: u16,
    /// The credential received: the `authorization` header value (e.g.
    /// `"Bearer sk-upstream"`) or the `x-api-key` value.
    pub auth: Option<String>,
    /// The input-token number the response's usage carries, verbatim as on
    /// the wire: OpenAI `prompt_tokens` (cached included), Anthropic
    /// `input_tokens` (cache reads excluded), embeddings `prompt_tokens`.
    /// Differs from `input_tokens` only under `report_input_tokens`. `None`
    /// when the response carries no usage (`omit_usage`, a chat stream
    /// without `include_usage`, `sse_no_boundary_bytes`, errors, hangs);
    /// whether it actually reached the wire is `usage_reported`.
    #[serde(default)]
    pub reported_input_tokens: Option<u64>,
    /// The output-token number the response's usage carries, verbatim:
    /// OpenAI `completion_tokens`, Anthropic `output_tokens` (of the final
    /// `message_delta` in a stream). Differs from `output_tokens` only under
    /// `report_output_tokens`. `None` as for `reported_input_tokens`, and
    /// always for embeddings.
    #[serde(default)]
    pub reported_output_tokens: Option<u64>,
}

/// Sums over the ledger (handy for benchmarks, where the ledger is large).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LedgerSummary {
    pub requests: u64,
    pub completed: u64,
    pub usage_reported: u64,
    pub input_tokens: u64,
    pub output_tokens: u64,
    pub cached_tokens: u64,
    pub reasoning_tokens: u64,
}

struct Ledger {
    /// Bumped by every reset, so stale slots are ignored.
    epoch: u64,
    entries: Vec<LedgerEntry>,
}

/// Position of an entry in the ledger, to update it later.
#[derive(Clone, Copy, Debug)]
pub(crate) struct LedgerSlot {
    epoch: u64,
    index: usize,
}

/// Shared state of a mock server: global config and ledger.
pub struct MockState {
    config: RwLock<MockConfig>,
    ledger: Mutex<Ledger>,
}

impl MockState {
    pub fn new(config: MockConfig) -> Arc<MockState> {
        Arc::new(MockState {
            config: RwLock::new(config),
            ledger: Mutex::new(Ledger {
                epoch: 0,
                entries: Vec::new(),
            }),
        })
    }

    /// The current global config.
    pub fn config(&self) -> MockConfig {
        *self.config.read()
    }

    /// Replaces the global config.
    pub fn set_config(&self, config: MockConfig) {
        *self.config.write() = config;
    }

    /// Applies a partial JSON config to the global config; returns the result.
    pub fn update_config(
        &self,
        patch: &serde_json::Value,
    ) -> Result<MockConfig, serde_json::Error> {
        let mut cfg = self.config.write();
        *cfg = cfg.merged(patch)?;
        Ok(*cfg)
    }

    /// A copy of the ledger, in arrival order.
    pub fn ledger(&self) -> Vec<LedgerEntry> {
        self.ledger.lock().entries.clone()
    }

    pub fn summary(&self) -> LedgerSummary {
        let ledger = self.ledger.lock();
        let mut s = LedgerSummary::default();
        for e in &ledger.entries {
            s.requests += 1;
            s.completed += u64::from(e.completed);
            s.usage_reported += u64::from(e.usage_reported);
            s.input_tokens += e.input_tokens;
            s.output_tokens += e.output_tokens;
            s.cached_tokens += e.cached_tokens;
            s.reasoning_tokens += e.reasoning_tokens;
        }
        s
    }

    /// Clears the ledger.
    pub fn reset(&self) {
        let mut ledger = self.ledger.lock();
        ledger.epoch += 1;
        ledger.entries = Vec::new();
    }

    /// The config for one request: the global one with the request's
    /// `"mock"` override applied.
    pub(crate) fn effective_config(
        &self,
        over: Option<&serde_json::Value>,
    ) -> Result<MockConfig, serde_json::Error> {
        let base = self.config();
        match over {
            None | Some(serde_json::Value::Null) => Ok(base),
            Some(patch) => base.merged(patch),
        }
    }

    pub(crate) fn record(&self, entry: LedgerEntry) -> LedgerSlot {
        let mut ledger = self.ledger.lock();
        ledger.entries.push(entry);
        LedgerSlot {
            epoch: ledger.epoch,
            index: ledger.entries.len() - 1,
        }
    }

    pub(crate) fn update_entry(&self, slot: LedgerSlot, f: impl FnOnce(&mut LedgerEntry)) {
        let mut ledger = self.ledger.lock();
        if ledger.epoch == slot.epoch {
            if let Some(e) = ledger.entries.get_mut(slot.index) {
                f(e);
            }
        }
    }
}

/// A fresh response id: `prefix` + 20 hex digits, unique within the process
/// (and very likely across processes).
pub(crate) fn next_id(prefix: &str) -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    static SEED: OnceLock<u32> = OnceLock::new();
    let seed = *SEED.get_or_init(|| {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or_default();
        let mixed = nanos ^ (u64::from(std::process::id()) << 32);
        (mixed ^ (mixed >> 29)).wrapping_mul(0x9E37_79B9_7F4A_7C15) as u32
    });
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    format!("{prefix}{seed:08x}{n:012x}")
}

/// The HTTP routes of the mock (provider APIs and `/_mock/*` control
/// endpoints).
pub fn router(state: Arc<MockState>) -> Router {
    Router::new()
        .route("/v1/chat/completions", post(openai::chat_completions))
        .route("/v1/embeddings", post(openai::embeddings))
        .route("/v1/models", get(openai::models))
        .route("/v1/messages", post(anthropic::messages))
        .route("/v1/responses", post(responses::responses))
        .route("/v1/messages/count_tokens", post(anthropic::count_tokens))
        .route("/_mock/ledger", get(get_ledger))
        .route("/_mock/summary", get(get_summary))
        .route("/_mock/reset", post(post_reset))
        .route("/_mock/config", get(get_config).post(post_config))
        .route("/_mock/health", get(|| async { "ok" }))
        .fallback(common::not_found)
        .layer(DefaultBodyLimit::max(64 << 20))
        .with_state(state)
}

/// Serves [`router`] on `listener`, with `TCP_NODELAY` on every accepted
/// connection. Runs until the task is dropped or aborted.
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: Arc<MockState>,
) -> std::io::Result<()> {
    use axum::serve::ListenerExt;
    let listener = listener.tap_io(|tcp| {
        // Best effort: a failure only costs latency.
        let _ = tcp.set_nodelay(true);
    });
    axum::serve(listener, router(state)).await
}

/// An in-process mock server, for integration tests. Dropping it stops
/// accepting connections.
pub struct MockServer {
    pub addr: SocketAddr,
    state: Arc<MockState>,
    task: tokio::task::JoinHandle<()>,
}

impl MockServer {
    /// Binds `127.0.0.1:0` and spawns the server on the current tokio runtime.
    pub async fn start(config: MockConfig) -> anyhow::Result<MockServer> {
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", 0)).await?;
        let addr = listener.local_addr()?;
        let state = MockState::new(config);
        let task = tokio::spawn({
            let state = state.clone();
            async move {
                // Errors here can only come from a broken listener; the
                // tests will notice through failing requests.
                let _ = serve(listener, state).await;
            }
        });
        Ok(MockServer { addr, state, task })
    }

    /// `http://127.0.0.1:PORT`, without a trailing slash.
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// A copy of the ledger, in arrival order.
    pub fn ledger(&self) -> Vec<LedgerEntry> {
        self.state.ledger()
    }

    /// Sums over the ledger.
    pub fn summary(&self) -> LedgerSummary {
        self.state.summary()
    }

    /// Clears the ledger.
    pub fn reset(&self) {
        self.state.reset();
    }

    /// Replaces the global config.
    pub fn set_config(&self, config: MockConfig) {
        self.state.set_config(config);
    }

    /// The current global config.
    pub fn config(&self) -> MockConfig {
        self.state.config()
    }

    /// The shared state (config + ledger).
    pub fn state(&self) -> &Arc<MockState> {
        &self.state
    }
}

impl Drop for MockServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn json_ok(body: Vec<u8>) -> Response {
    ([(header::CONTENT_TYPE, "application/json")], body).into_response()
}

async fn get_ledger(State(st): State<Arc<MockState>>) -> Response {
    // Serialised under the lock: avoids cloning a possibly huge ledger.
    let body = serde_json::to_vec(&st.ledger.lock().entries);
    match body {
        Ok(body) => json_ok(body),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
    }
}

async fn get_summary(State(st): State<Arc<MockState>>) -> Response {
    axum::Json(st.summary()).into_response()
}

async fn post_reset(State(st): State<Arc<MockState>>) -> StatusCode {
    st.reset();
    StatusCode::NO_CONTENT
}

async fn get_config(State(st): State<Arc<MockState>>) -> Response {
    axum::Json(st.config()).into_response()
}

async fn post_config(State(st): State<Arc<MockState>>, body: Bytes) -> Response {
    let patch: serde_json::Value = if body.iter().all(u8::is_ascii_whitespace) {
        serde_json::Value::Object(Default::default())
    } else {
        match serde_json::from_slice(&body) {
            Ok(v) => v,
            Err(e) => return (StatusCode::BAD_REQUEST, e.to_string()).into_response(),
        }
    };
    match st.update_config(&patch) {
        Ok(cfg) => axum::Json(cfg).into_response(),
        Err(e) => (StatusCode::BAD_REQUEST, e.to_string()).into_response(),
    }
}
