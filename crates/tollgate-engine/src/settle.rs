//! The end of a request's life, in one place: its tokens (reported, or counted locally and
//! marked `estimated`) are priced, the credit hold and the key's permit are settled to the
//! real cost, and exactly one usage record is built and written to the ledger.

use std::time::Instant;

use tollgate_core::account::Caller;
use tollgate_core::metering::{tokenizer, Usage};
use tollgate_core::pricing::PriceEntry;
use tollgate_core::record::{Anomaly, Endpoint, Provenance, Source, Status, UsageRecord};
use tollgate_core::request::ProxyRequest;

use crate::credits::Hold;
use crate::ledger::Ledger;
use crate::limits::Permit;

/// When and as what the request arrived.
#[derive(Debug, Clone)]
pub struct Arrival {
    pub request_id: String,
    pub started: Instant,
    pub started_ms: i64,
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
    account_id: String,
    key_id: String,
    api: Endpoint,
    model: String,
    streamed: bool,
    /// The request's input, counted only if the upstream reports no usage.
    request_json: serde_json::Value,
    provider: String,
    price: PriceEntry,
    source: Source,
    byok_fee_bps: i64,
    settlement: Option<(Hold, Permit)>,
    available_after_hold: i64,
    bounds: Bounds,
}

impl Ticket {
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new(
        ledger: Ledger,
        arrival: Arrival,
        caller: &Caller,
        api: Endpoint,
        req: &ProxyRequest,
        provider: String,
        price: PriceEntry,
        source: Source,
        byok_fee_bps: i64,
        hold: Hold,
        permit: Permit,
        available_after_hold: i64,
        bounds: Bounds,
    ) -> Self {
        Self {
            ledger,
            arrival,
            account_id: caller.account_id.clone(),
            key_id: caller.key_id.clone(),
            api,
            model: req.model.clone(),
            streamed: req.stream,
            request_json: req.json.clone(),
            provider,
            price,
            source,
            byok_fee_bps,
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
        let priced = self.price.price(&usage, self.source, self.byok_fee_bps);
        let anomaly = if clamped {
            tracing::warn!(
                request_id = %self.arrival.request_id,
                provider = %self.provider,
                ceiling = self.bounds.max_tokens,
                "upstream reported more tokens than metering.max_tokens_per_request; clamped"
            );
            Some(Anomaly::Clamped)
        } else if self.over_reported(&usage, priced.charged_nanos, provenance) {
            tracing::warn!(
                request_id = %self.arrival.request_id,
                provider = %self.provider,
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
        permit.settle(usage.total_tokens(), priced.cost_nanos, now);
        let available = hold.settle(priced.charged_nanos);
        let p = &self.price.prices;
        self.ledger.record(UsageRecord {
            request_id: self.arrival.request_id.clone(),
            created_at_ms: self.arrival.started_ms,
            finished_at_ms: now,
            account_id: self.account_id.clone(),
            key_id: self.key_id.clone(),
            endpoint: self.api,
            model_requested: self.model.clone(),
            model_served: o.model_served.unwrap_or_else(|| self.model.clone()),
            provider: self.provider.clone(),
            owned_by: self.price.owned_by.clone(),
            source: self.source,
            input_tokens: to_i64(usage.input_tokens),
            output_tokens: to_i64(usage.output_tokens),
            cached_tokens: to_i64(usage.cached_tokens),
            cache_write_tokens: to_i64(usage.cache_write_tokens),
            reasoning_tokens: to_i64(usage.reasoning_tokens),
            cost_nanos: priced.cost_nanos,
            charged_nanos: priced.charged_nanos,
            price_input: p.input,
            price_output: p.output,
            price_cached_input: p.cached_input,
            price_cache_write: p.cache_write,
            status: o.status,
            http_status: o.http_status,
            error_code: o.error_code,
            latency_ms: elapsed,
            ttft_ms: o.ttft_ms,
            streamed: self.streamed,
            provenance,
            anomaly,
        });
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

fn to_i64(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}
