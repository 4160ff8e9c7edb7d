//! The end of a request's life, in one place: its tokens (reported, or counted locally and
//! marked `estimated`) are priced, the credit hold and the key's permit are settled to the
//! real cost, and exactly one usage record is built and written to the ledger.

use std::time::Instant;

use tollgate_core::account::Caller;
use tollgate_core::metering::{tokenizer, Usage};
use tollgate_core::pricing::PriceEntry;
use tollgate_core::record::Provenance;
use tollgate_core::record::{Endpoint, Source, Status, UsageRecord};
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
        }
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
        let priced = self.price.price(&usage, self.source, self.byok_fee_bps);
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
            anomaly: None,
        });
        available
    }
}

fn to_i64(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}
