//! The end of a request's life, in one place: its tokens (reported, or counted locally and
//! marked `estimated`) are priced, the credit hold and the key's permit are settled to the
//! real cost, and exactly one usage record is built and written to the ledger.
//!
//! Besides the records of requests that ran their course (`Ticket::settle`), records are built
//! here for requests that never reached an upstream (`Engine::record_refused`) and for requests
//! the process died serving (`interrupted_record`, from the start journaled when the request
//! was sent: `Ticket::on_sent`).

use std::sync::Arc;
use std::time::Instant;

use parking_lot::Mutex;
use tollgate_core::account::Caller;
use tollgate_core::attribution::Attribution;
use tollgate_core::fingerprint::Fingerprints;
use tollgate_core::metering::{tokenizer, Usage};
use tollgate_core::pricing::{price, PriceEntry, Priced, UnitPrices};
use tollgate_core::record::{Anomaly, Endpoint, Provenance, Source, Status, UsageRecord};
use tollgate_core::request::ProxyRequest;

use crate::credits::Hold;
use crate::ledger::{Ledger, RequestStart, StartPin};
use crate::limits::Permit;

/// When and as what the request arrived.
#[derive(Debug, Clone)]
pub struct Arrival {
    pub request_id: String,
    pub started: Instant,
    pub started_ms: i64,
    /// Who the request is for (end user, tags), as far as it is known.
    pub attribution: Attribution,
    /// The request's fingerprints, once its body is read (none for a body refused unread).
    pub fingerprints: Fingerprints,
}

/// How the tokens of a finished request are known.
#[derive(Debug, Clone, Copy)]
pub enum Tokens {
    Reported(Usage),
    /// Count locally: this many output tokens, and the request's input unless the upstream
    /// reported it before failing.
    Estimate {
        output: u64,
        input: Option<u64>,
    },
    /// Nothing was generated (the upstream refused or failed before answering).
    None,
}

/// How a request ended.
#[derive(Debug, Clone)]
pub struct Outcome {
    pub status: Status,
    pub http_status: u16,
    pub error_code: Option<String>,
    pub tokens: Tokens,
    pub model_served: Option<String>,
    pub ttft_ms: Option<i64>,
}

/// What admission allowed a request to produce, so its end can tell an upstream that reported
/// more (`Anomaly::OverReported`) and a stream can be stopped at its hold.
#[derive(Debug, Clone, Copy, Default)]
pub struct Bounds {
    /// The output cap per choice the upstream was sent (the client's, or the gateway's), if any.
    pub output_cap: Option<u64>,
    /// Set when the gateway lowered (or set) the cap to what the hold covers.
    pub capped: Option<u64>,
    /// Choices requested (`n`); the cap is per choice.
    pub choices: u64,
    /// Credits enforced: the amount held, and the output tokens (all choices) it covers at
    /// the held input.
    pub hold: Option<HoldBound>,
    /// `metering.max_tokens_per_request`: no token class is recorded above it.
    pub max_tokens: u64,
}

#[derive(Debug, Clone, Copy)]
pub struct HoldBound {
    pub amount: i64,
    pub output_allowance: u64,
}

/// An admitted request's claim on its account: the hold and permit taken at admission and the
/// facts its record needs. Settled once; dropped unsettled, the hold and permit are released.
pub struct Ticket {
    ledger: Ledger,
    arrival: Arrival,
    /// Who, what and at which prices: the facts every record of this request is built from
    /// (the settled one, or the interrupted one a restart builds from the journaled start).
    facts: Arc<RequestStart>,
    /// The request's input, counted only if the upstream reports no usage (or it is sent and
    /// its start journaled).
    request_json: Arc<serde_json::Value>,
    settlement: Option<(Hold, Permit)>,
    available_after_hold: i64,
    bounds: Bounds,
    /// The start journaled when the request is sent (`on_sent`), closed by `settle`.
    start: Arc<Mutex<StartState>>,
    /// Counts the request in `tollgate_requests_in_flight` until the ticket is gone.
    in_flight: Option<crate::metrics::InFlight>,
}

impl Ticket {
    #[allow(clippy::too_many_arguments)]
    /// Counted in flight while the ticket lives (settled or dropped).
    pub(crate) fn with_in_flight(mut self, guard: Option<crate::metrics::InFlight>) -> Self {
        self.in_flight = guard;
        self
    }

    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new(
        ledger: Ledger,
        mut arrival: Arrival,
        caller: &Caller,
        api: Endpoint,
        req: &ProxyRequest,
        provider: String,
        price: &PriceEntry,
        price_version: &str,
        source: Source,
        byok_fee_bps: i64,
        hold: Hold,
        permit: Permit,
        available_after_hold: i64,
        bounds: Bounds,
    ) -> Self {
        let facts = RequestStart {
            request_id: arrival.request_id.clone(),
            created_at_ms: arrival.started_ms,
            sent_at_ms: arrival.started_ms,
            account_id: caller.account_id.clone(),
            key_id: caller.key_id.clone(),
            endpoint: api,
            model: req.model.clone(),
            provider,
            owned_by: price.owned_by.clone(),
            source,
            prices: price.prices,
            byok_fee_bps,
            streamed: req.stream,
            // Counted when the start is journaled (`SentSignal::sent`), not for every request.
            input_tokens: 0,
            user: arrival.attribution.user.take(),
            tags: std::mem::take(&mut arrival.attribution.tags),
            price_version: Some(price_version.to_string()),
            fingerprint: arrival.fingerprints.request,
            conversation: arrival.fingerprints.conversation,
        };
        Self {
            start: Arc::new(Mutex::new(StartState::Pending)),
            in_flight: None,
            ledger,
            arrival,
            facts: Arc::new(facts),
            request_json: Arc::clone(&req.json),
            settlement: Some((hold, permit)),
            available_after_hold,
            bounds,
        }
    }

    /// The output cap the gateway set because the hold covers no more (`x-tollgate-max-tokens`).
    pub fn capped(&self) -> Option<u64> {
        self.bounds.capped
    }

    /// The most output (tokens, all choices) a stream may be seen to produce before it is ended
    /// for passing its hold (`with_margin` of what the hold covers); `None` when credits are not
    /// enforced. An honest upstream stops at its cap, well before this.
    pub fn stream_output_limit(&self) -> Option<u64> {
        self.bounds.hold.map(|h| with_margin(h.output_allowance))
    }

    pub fn started(&self) -> Instant {
        self.arrival.started
    }

    pub fn request_id(&self) -> &str {
        &self.arrival.request_id
    }

    /// Credit available once this request's hold was taken.
    pub fn available_after_hold(&self) -> i64 {
        self.available_after_hold
    }

    /// Meters the request: prices its tokens, settles hold and permit, and journals its record.
    /// Returns the account's available credit after settling. A second call writes nothing.
    pub fn settle(&mut self, o: Outcome) -> i64 {
        let Some((hold, permit)) = self.settlement.take() else {
            return self.available_after_hold;
        };
        // Kept to the end of this function: the start's segment may go once the record is in.
        let _start = self.close_start();
        let (usage, provenance) = match o.tokens {
            Tokens::Reported(u) => (u, Provenance::Provider),
            Tokens::Estimate { output, input } => (
                Usage {
                    input_tokens: input
                        .unwrap_or_else(|| tokenizer::count_request_input(&self.request_json)),
                    output_tokens: output,
                    ..Usage::default()
                },
                Provenance::Estimated,
            ),
            Tokens::None => (Usage::default(), Provenance::Provider),
        };
        // The one place upstream numbers are bounded: no class above the per-request ceiling.
        let (usage, clamped) = usage.clamped(self.bounds.max_tokens);
        let f = &self.facts;
        let priced = price(&usage, &f.prices, f.source, f.byok_fee_bps);
        let anomaly = if clamped {
            tracing::warn!(
                request_id = %self.arrival.request_id,
                provider = %f.provider,
                ceiling = self.bounds.max_tokens,
                "upstream reported more tokens than metering.max_tokens_per_request; clamped"
            );
            Some(Anomaly::Clamped)
        } else if self.over_reported(&usage, priced.charged_nanos, provenance) {
            tracing::warn!(
                request_id = %self.arrival.request_id,
                provider = %f.provider,
                output_tokens = usage.output_tokens,
                output_cap = ?self.bounds.output_cap,
                charged_nanos = priced.charged_nanos,
                held_nanos = ?self.bounds.hold.map(|h| h.amount),
                "upstream reported more than the request could produce; recorded as reported"
            );
            Some(Anomaly::OverReported)
        } else {
            None
        };
        let elapsed = i64::try_from(self.arrival.started.elapsed().as_millis()).unwrap_or(i64::MAX);
        let now = self.arrival.started_ms.saturating_add(elapsed);
        let who = (self.facts.account_id.as_str(), self.facts.key_id.as_str());
        permit.settle(usage.total_tokens(), priced.cost_nanos, now, who);
        let available = hold.settle(priced.charged_nanos);
        let mut record = record_of(
            f,
            &usage,
            priced,
            End {
                status: o.status,
                http_status: o.http_status,
                error_code: o.error_code,
                finished_at_ms: now,
                provenance,
            },
        );
        if let Some(served) = o.model_served {
            record.model_served = served;
        }
        record.ttft_ms = o.ttft_ms;
        record.anomaly = anomaly;
        self.ledger.record(record);
        available
    }

    /// More output than the cap the upstream was sent (times the choices), or a charge past
    /// the hold: the request could not have produced it. Tokens counted locally (with another
    /// tokenizer than the provider's) count as over only past the margin a stream is cut at.
    fn over_reported(&self, usage: &Usage, charged: i64, provenance: Provenance) -> bool {
        let b = &self.bounds;
        let most = b.output_cap.map(|cap| cap.saturating_mul(b.choices.max(1)));
        match provenance {
            Provenance::Provider => {
                most.is_some_and(|m| usage.output_tokens > m)
                    || b.hold.is_some_and(|h| charged > h.amount)
            }
            Provenance::Estimated => most.is_some_and(|m| usage.output_tokens > with_margin(m)),
        }
    }
}

/// `tokens` and an eighth (and 16 tokens) more: room for the local count of another provider's
/// tokens to run high.
fn with_margin(tokens: u64) -> u64 {
    tokens.saturating_add(tokens / 8).saturating_add(16)
}

/// Where a request's journaled start stands.
enum StartState {
    /// Not sent yet; nothing journaled.
    Pending,
    /// The upstream has begun its answer, so the request was sent, but its start is not
    /// journaled: an exchange that ends soon after sending (most do) never writes one.
    Answered,
    /// Sent: the start is in the journal (no pin if the journal write failed). The pin is held
    /// for its drop, which lets the start's segment go.
    Sent { _pin: Option<StartPin> },
    /// The record is written, or the request ended unsent: nothing more to journal.
    Closed,
}

/// Given to the code that sends a request upstream: `sent` journals the request's start,
/// `answered` says the request went without journaling it (yet).
#[derive(Clone)]
pub struct SentSignal {
    ledger: Ledger,
    started: Instant,
    facts: Arc<RequestStart>,
    request_json: Arc<serde_json::Value>,
    state: Arc<Mutex<StartState>>,
}

impl SentSignal {
    /// The request has gone to the upstream. Journals its start the first time; a request
    /// already settled journals nothing.
    pub fn sent(&self) {
        let mut state = self.state.lock();
        if let StartState::Pending | StartState::Answered = *state {
            let mut start = RequestStart::clone(&self.facts);
            start.sent_at_ms = start.created_at_ms.saturating_add(elapsed_ms(self.started));
            // Not the BPE: paid by every journaled start, used only if the process dies.
            start.input_tokens = tokenizer::quick_count_request_input(&self.request_json);
            let pin = self.ledger.begin(&start);
            *state = StartState::Sent { _pin: pin };
        }
    }

    /// The upstream has begun its answer: the request was sent. Journals nothing; the caller
    /// calls `sent` if the exchange is still running when its start falls due.
    pub fn answered(&self) {
        let mut state = self.state.lock();
        if let StartState::Pending = *state {
            *state = StartState::Answered;
        }
    }
}

impl Ticket {
    /// What the sending code calls once the request has gone upstream (not before: a request the
    /// process dies before sending was not served, and is not charged).
    pub fn on_sent(&self) -> SentSignal {
        SentSignal {
            ledger: self.ledger.clone(),
            started: self.arrival.started,
            facts: Arc::clone(&self.facts),
            request_json: Arc::clone(&self.request_json),
            state: self.start.clone(),
        }
    }

    fn close_start(&self) -> StartState {
        std::mem::replace(&mut *self.start.lock(), StartState::Closed)
    }
}

/// A ticket dropped unsettled after its request was sent (the exchange panicked, or the runtime
/// is shutting down under it) is recorded as interrupted now, as a restart would record it; one
/// never sent just releases its hold and permit.
impl Drop for Ticket {
    fn drop(&mut self) {
        if self.settlement.is_none() {
            return;
        }
        let sent = matches!(
            *self.start.lock(),
            StartState::Sent { .. } | StartState::Answered
        );
        if sent {
            self.settle(Outcome {
                status: Status::Interrupted,
                http_status: 0,
                error_code: Some("exchange_aborted".to_string()),
                tokens: Tokens::Estimate {
                    output: 0,
                    input: None,
                },
                model_served: None,
                ttft_ms: None,
            });
        }
    }
}

/// How a request without a settled ticket ended.
struct End {
    status: Status,
    http_status: u16,
    error_code: Option<String>,
    finished_at_ms: i64,
    provenance: Provenance,
}

/// A record from a request's facts and its end: the one builder of every record (settled,
/// interrupted, refused).
fn record_of(s: &RequestStart, usage: &Usage, priced: Priced, end: End) -> UsageRecord {
    UsageRecord {
        request_id: s.request_id.clone(),
        created_at_ms: s.created_at_ms,
        finished_at_ms: end.finished_at_ms,
        account_id: s.account_id.clone(),
        key_id: s.key_id.clone(),
        endpoint: s.endpoint,
        model_requested: s.model.clone(),
        model_served: s.model.clone(),
        provider: s.provider.clone(),
        owned_by: s.owned_by.clone(),
        source: s.source,
        input_tokens: to_i64(usage.input_tokens),
        output_tokens: to_i64(usage.output_tokens),
        cached_tokens: to_i64(usage.cached_tokens),
        cache_write_tokens: to_i64(usage.cache_write_tokens),
        reasoning_tokens: to_i64(usage.reasoning_tokens),
        cost_nanos: priced.cost_nanos,
        charged_nanos: priced.charged_nanos,
        price_input: s.prices.input,
        price_output: s.prices.output,
        price_cached_input: s.prices.cached_input,
        price_cache_write: s.prices.cache_write,
        status: end.status,
        http_status: end.http_status,
        error_code: end.error_code,
        latency_ms: end.finished_at_ms.saturating_sub(s.created_at_ms).max(0),
        ttft_ms: None,
        streamed: s.streamed,
        provenance: end.provenance,
        anomaly: None,
        user: s.user.clone(),
        tags: s.tags.clone(),
        price_version: s.price_version.clone(),
        fingerprint: s.fingerprint,
        conversation: s.conversation,
    }
}

/// The record of a request the process died serving: its start was journaled, its record never
/// was. `last_alive_ms` is the latest moment the journal shows the process alive.
///
/// Tokens are estimated: the input as counted when the request was admitted; the output as 0.
/// The upstream produced somewhere between nothing and the request's output cap, and the client
/// never received a complete response: the gateway charges what it can show was sent (the
/// input, which every provider bills once a request is accepted), never output it cannot show,
/// and marks the record `estimated` for reconciliation against the provider's bill.
pub fn interrupted_record(start: &RequestStart, last_alive_ms: i64) -> UsageRecord {
    let usage = Usage {
        input_tokens: start.input_tokens,
        ..Usage::default()
    };
    let priced = price(&usage, &start.prices, start.source, start.byok_fee_bps);
    record_of(
        start,
        &usage,
        priced,
        End {
            status: Status::Interrupted,
            http_status: 0,
            error_code: Some("gateway_restarted".to_string()),
            finished_at_ms: last_alive_ms.max(start.created_at_ms),
            provenance: Provenance::Estimated,
        },
    )
}

/// Longest model name a refused record keeps of one that is not configured (the name is the
/// client's, and every distinct name is a rollup row).
const REFUSED_MODEL_MAX: usize = 128;

/// The record of an authenticated request the gateway answered itself without forwarding it
/// (bad body, unknown or forbidden model, no balance, a limit): status `refused`, zero tokens
/// and cost, the answer's status and code. `model` is the one asked for, if any (`"unknown"`
/// otherwise; an unconfigured name is cut to 128 bytes); `provider` and `owned_by` are empty
/// when no route or price knows it.
#[allow(clippy::too_many_arguments)]
pub(crate) fn refused_record(
    arrival: &Arrival,
    caller: &Caller,
    api: Endpoint,
    model: Option<&str>,
    known: impl Fn(&str) -> (Option<String>, Option<String>),
    streamed: bool,
    http_status: u16,
    error_code: &str,
) -> UsageRecord {
    let model = match model {
        Some(m) if known(m).1.is_some() => m.to_string(),
        Some(m) if !m.is_empty() => truncate(m, REFUSED_MODEL_MAX).to_string(),
        _ => "unknown".to_string(),
    };
    let (provider, owned_by) = known(&model);
    let finished_at_ms = arrival
        .started_ms
        .saturating_add(elapsed_ms(arrival.started));
    let start = RequestStart {
        request_id: arrival.request_id.clone(),
        created_at_ms: arrival.started_ms,
        sent_at_ms: finished_at_ms,
        account_id: caller.account_id.clone(),
        key_id: caller.key_id.clone(),
        endpoint: api,
        provider: provider.unwrap_or_default(),
        owned_by: owned_by.unwrap_or_default(),
        model,
        source: Source::Platform,
        prices: UnitPrices::default(),
        byok_fee_bps: 0,
        streamed,
        input_tokens: 0,
        user: arrival.attribution.user.clone(),
        tags: arrival.attribution.tags.clone(),
        // Zero prices, from no table.
        price_version: None,
        fingerprint: arrival.fingerprints.request,
        conversation: arrival.fingerprints.conversation,
    };
    record_of(
        &start,
        &Usage::default(),
        Priced {
            cost_nanos: 0,
            charged_nanos: 0,
        },
        End {
            status: Status::Refused,
            http_status,
            error_code: Some(error_code.to_string()),
            finished_at_ms,
            provenance: Provenance::Provider,
        },
    )
}

/// `s` cut to at most `max` bytes, at a character boundary.
fn truncate(s: &str, max: usize) -> &str {
    let mut end = s.len().min(max);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

fn elapsed_ms(since: Instant) -> i64 {
    i64::try_from(since.elapsed().as_millis()).unwrap_or(i64::MAX)
}

fn to_i64(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}
