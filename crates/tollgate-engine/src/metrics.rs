//! Prometheus metrics, counted where the numbers already are: each committed record (a
//! `RecordSink`, so the request path gains nothing but an in-flight gauge), the batch writer's
//! commits and the webhook dispatcher's attempts. Label values are bounded: endpoints,
//! statuses and error codes are tollgate's own; providers come from the config; models are
//! capped at `metrics.max_models` (then `other`); never keys or users.
//!
//! Cost is an integer counter of nano-USD (`tollgate_cost_nanousd_total`): exact, like the
//! ledger; divide by 1e9 for USD.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::{Arc, OnceLock};

use parking_lot::{Mutex, RwLock};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;
use tollgate_core::record::{Endpoint, Status, UsageRecord};

use crate::ledger::{LedgerStats, RecordSink};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    endpoint: &'static str,
    model: String,
    provider: String,
    status: &'static str,
    code: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TokenLabels {
    model: String,
    provider: String,
    r#type: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ModelLabels {
    model: String,
    provider: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct EndpointLabels {
    endpoint: &'static str,
    streamed: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ErrorLabels {
    provider: String,
    kind: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabels {
    reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct AttemptLabels {
    result: &'static str,
}

/// The token classes counted, in `tokens` label order.
const TOKEN_TYPES: [&str; 5] = ["input", "output", "cached", "cache_write", "reasoning"];

/// One (provider, model)'s counters, resolved once: a record then costs a map lookup with
/// borrowed strings and a few atomic adds, not a label set built (two `String`s cloned) and
/// hashed per counter.
struct ModelHandles {
    tokens: [Counter; 5],
    cost: Counter,
    /// By (endpoint, status, HTTP status): few per model.
    requests: Mutex<HashMap<(Endpoint, Status, u16), Counter>>,
    model: String,
}

fn latency_histogram() -> Histogram {
    // 1 ms … ~65 s.
    Histogram::new(exponential_buckets(0.001, 2.0, 17))
}

pub struct Metrics {
    /// Locked only to register the ledger's histograms and at each scrape.
    registry: Mutex<Registry>,
    max_models: usize,
    /// provider → model label → its handles. Models past `max_models` share the `other` entry.
    handles: RwLock<HashMap<String, HashMap<String, Arc<ModelHandles>>>>,
    /// Distinct model labels handed out (for the cap).
    labelled: Mutex<usize>,
    /// Latency and time-to-first-token histograms by (endpoint, streamed), resolved up front.
    timings: Vec<(Histogram, Histogram)>,
    requests: Family<RequestLabels, Counter>,
    tokens: Family<TokenLabels, Counter>,
    cost: Family<ModelLabels, Counter>,
    upstream_errors: Family<ErrorLabels, Counter>,
    refusals: Family<ReasonLabels, Counter>,
    in_flight: Gauge,
    backlog: Gauge,
    dead_lettered: Gauge,
    webhook_attempts: Family<AttemptLabels, Counter>,
    ledger: OnceLock<Arc<LedgerStats>>,
}

impl Metrics {
    pub fn new(max_models: usize) -> Self {
        let mut registry = Registry::with_prefix("tollgate");
        let requests = Family::<RequestLabels, Counter>::default();
        registry.register(
            "requests",
            "Requests recorded, by endpoint, model, provider, status and HTTP status",
            requests.clone(),
        );
        let tokens = Family::<TokenLabels, Counter>::default();
        registry.register(
            "tokens",
            "Tokens recorded, by type (input, output, cached, cache_write, reasoning)",
            tokens.clone(),
        );
        let cost = Family::<ModelLabels, Counter>::default();
        registry.register(
            "cost_nanousd",
            "Model cost recorded, in nano-USD (exact; divide by 1e9 for USD)",
            cost.clone(),
        );
        let duration: Family<EndpointLabels, Histogram, fn() -> Histogram> =
            Family::new_with_constructor(latency_histogram);
        registry.register(
            "request_duration_seconds",
            "Request latency, arrival to the end of the response",
            duration.clone(),
        );
        let ttft: Family<EndpointLabels, Histogram, fn() -> Histogram> =
            Family::new_with_constructor(latency_histogram);
        registry.register(
            "time_to_first_token_seconds",
            "Time to the first streamed token",
            ttft.clone(),
        );
        let upstream_errors = Family::<ErrorLabels, Counter>::default();
        registry.register(
            "upstream_errors",
            "Requests that failed at or after the upstream, by provider and error code",
            upstream_errors.clone(),
        );
        let refusals = Family::<ReasonLabels, Counter>::default();
        registry.register(
            "refusals",
            "Requests the gateway refused itself (insufficient_balance, rate_limit_exceeded, ...)",
            refusals.clone(),
        );
        let in_flight = Gauge::default();
        registry.register(
            "requests_in_flight",
            "Admitted requests not yet settled",
            in_flight.clone(),
        );
        let backlog = Gauge::default();
        registry.register(
            "journal_backlog_records",
            "Records journaled and not yet committed to the store",
            backlog.clone(),
        );
        let dead_lettered = Gauge::default();
        registry.register(
            "records_dead_lettered",
            "Records the store refused for good (kept in the dead-letter file) since start",
            dead_lettered.clone(),
        );
        let webhook_attempts = Family::<AttemptLabels, Counter>::default();
        registry.register(
            "webhook_attempts",
            "Webhook delivery attempts, by result (succeeded, retrying, failed, disabled)",
            webhook_attempts.clone(),
        );
        let timings = Endpoint::ALL
            .iter()
            .flat_map(|e| [false, true].map(|streamed| (*e, streamed)))
            .map(|(e, streamed)| {
                let labels = EndpointLabels {
                    endpoint: e.as_str(),
                    streamed: if streamed { "true" } else { "false" },
                };
                (
                    duration.get_or_create(&labels).clone(),
                    ttft.get_or_create(&labels).clone(),
                )
            })
            .collect();
        Self {
            registry: Mutex::new(registry),
            max_models,
            handles: RwLock::new(HashMap::new()),
            labelled: Mutex::new(0),
            timings,
            requests,
            tokens,
            cost,
            upstream_errors,
            refusals,
            in_flight,
            backlog,
            dead_lettered,
            webhook_attempts,
            ledger: OnceLock::new(),
        }
    }

    /// Reads the ledger's counters (and its writer's commit histograms) from now on.
    pub(crate) fn watch_ledger(&self, stats: Arc<LedgerStats>) {
        let mut registry = self.registry.lock();
        registry.register(
            "store_commit_seconds",
            "Batch writer: time to commit one batch of records",
            stats.commits.seconds.clone(),
        );
        registry.register(
            "store_batch_records",
            "Batch writer: records per committed batch",
            stats.commits.batch_records.clone(),
        );
        let _ = self.ledger.set(stats);
    }

    pub(crate) fn webhook_attempts(&self) -> AttemptCounter {
        AttemptCounter(self.webhook_attempts.clone())
    }

    /// An admitted request, until the guard drops (settled or not).
    pub fn in_flight(&self) -> InFlight {
        self.in_flight.inc();
        InFlight(self.in_flight.clone())
    }

    /// The handles of (provider, model), created on first use; past `max_models` distinct
    /// models, a new model counts as `other` (and is not cached under its own name, so the
    /// cache stays as bounded as the label set).
    fn handles(&self, provider: &str, model: &str) -> Arc<ModelHandles> {
        if let Some(h) = self.handles.read().get(provider).and_then(|m| m.get(model)) {
            return h.clone();
        }
        let mut all = self.handles.write();
        let by_model = all.entry(provider.to_string()).or_default();
        if let Some(h) = by_model.get(model) {
            return h.clone();
        }
        let mut labelled = self.labelled.lock();
        if *labelled >= self.max_models {
            return by_model
                .entry("other".to_string())
                .or_insert_with(|| Arc::new(self.new_handles(provider, "other")))
                .clone();
        }
        *labelled += 1;
        let h = Arc::new(self.new_handles(provider, model));
        by_model.insert(model.to_string(), h.clone());
        h
    }

    fn new_handles(&self, provider: &str, model: &str) -> ModelHandles {
        let token = |t: &'static str| {
            self.tokens
                .get_or_create(&TokenLabels {
                    model: model.to_string(),
                    provider: provider.to_string(),
                    r#type: t,
                })
                .clone()
        };
        ModelHandles {
            tokens: TOKEN_TYPES.map(token),
            cost: self
                .cost
                .get_or_create(&ModelLabels {
                    model: model.to_string(),
                    provider: provider.to_string(),
                })
                .clone(),
            requests: Mutex::new(HashMap::new()),
            model: model.to_string(),
        }
    }

    /// The label a record's model is counted under (tests).
    #[cfg(test)]
    fn model_label(&self, model: &str) -> String {
        self.handles("p", model).model.clone()
    }

    /// The text exposition (OpenMetrics, which Prometheus reads).
    pub fn render(&self) -> String {
        if let Some(l) = self.ledger.get() {
            self.backlog.set(l.backlog());
            self.dead_lettered
                .set(i64::try_from(l.dead_lettered.load(Ordering::Relaxed)).unwrap_or(i64::MAX));
        }
        let mut out = String::new();
        if let Err(e) = prometheus_client::encoding::text::encode(&mut out, &self.registry.lock()) {
            tracing::warn!(error = %e, "could not encode metrics");
        }
        out
    }

    fn observe(&self, r: &UsageRecord) {
        let model = if r.model_served.is_empty() {
            &r.model_requested
        } else {
            &r.model_served
        };
        // A refused request that named no routable model would spend the label cap on
        // whatever the client typed.
        let model = if r.provider.is_empty() {
            "unrouted"
        } else {
            model.as_str()
        };
        let h = self.handles(&r.provider, model);
        {
            let mut requests = h.requests.lock();
            let key = (r.endpoint, r.status, r.http_status);
            match requests.get(&key) {
                Some(c) => {
                    c.inc();
                }
                None => {
                    let c = self
                        .requests
                        .get_or_create(&RequestLabels {
                            endpoint: r.endpoint.as_str(),
                            model: h.model.clone(),
                            provider: r.provider.clone(),
                            status: r.status.as_str(),
                            code: r.http_status,
                        })
                        .clone();
                    c.inc();
                    requests.insert(key, c);
                }
            }
        }
        let counts = [
            r.input_tokens,
            r.output_tokens,
            r.cached_tokens,
            r.cache_write_tokens,
            r.reasoning_tokens,
        ];
        for (counter, n) in h.tokens.iter().zip(counts) {
            if n > 0 {
                counter.inc_by(u64::try_from(n).unwrap_or(0));
            }
        }
        if r.cost_nanos > 0 {
            h.cost.inc_by(u64::try_from(r.cost_nanos).unwrap_or(0));
        }
        let at = Endpoint::ALL
            .iter()
            .position(|e| *e == r.endpoint)
            .unwrap_or(0)
            * 2
            + usize::from(r.streamed);
        if let Some((duration, ttft)) = self.timings.get(at) {
            duration.observe(r.latency_ms.max(0) as f64 / 1000.0);
            if let Some(t) = r.ttft_ms {
                ttft.observe(t.max(0) as f64 / 1000.0);
            }
        }
        let code = r.error_code.as_deref().unwrap_or("unknown");
        match r.status {
            Status::Refused => {
                self.refusals
                    .get_or_create(&ReasonLabels {
                        reason: code.to_string(),
                    })
                    .inc();
            }
            Status::Error | Status::Interrupted => {
                self.upstream_errors
                    .get_or_create(&ErrorLabels {
                        provider: r.provider.clone(),
                        kind: code.to_string(),
                    })
                    .inc();
            }
            Status::Success | Status::Cancelled => {}
        }
    }
}

impl RecordSink for Metrics {
    fn committed(&self, records: &[UsageRecord]) {
        for r in records {
            self.observe(r);
        }
    }
}

/// Webhook attempts by result, for the dispatcher.
#[derive(Clone)]
pub struct AttemptCounter(Family<AttemptLabels, Counter>);

impl AttemptCounter {
    pub fn count(&self, result: &'static str) {
        self.0.get_or_create(&AttemptLabels { result }).inc();
    }
}

/// Counts a request in flight while alive.
pub struct InFlight(Gauge);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.dec();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn model_labels_are_capped() {
        let m = Metrics::new(2);
        assert_eq!(m.model_label("a"), "a");
        assert_eq!(m.model_label("b"), "b");
        assert_eq!(m.model_label("c"), "other");
        assert_eq!(m.model_label("a"), "a");
    }
}
