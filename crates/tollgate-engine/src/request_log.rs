//! `server.request_log`: one log line per request, written as its record commits (a
//! `RecordSink`, off the request path). Ids, model, status, tokens, cost and latency only:
//! never a key, a prompt or a completion.

use tollgate_core::record::UsageRecord;

use crate::ledger::RecordSink;

pub struct RequestLog;

impl RecordSink for RequestLog {
    fn committed(&self, records: &[UsageRecord]) {
        for r in records {
            tracing::info!(
                target: "tollgate::request",
                request_id = %r.request_id,
                account_id = %r.account_id,
                key_id = %r.key_id,
                endpoint = r.endpoint.as_str(),
                model = %r.model_served,
                model_requested = %r.model_requested,
                provider = %r.provider,
                status = r.status.as_str(),
                http_status = r.http_status,
                error_code = r.error_code.as_deref().unwrap_or(""),
                input_tokens = r.input_tokens,
                output_tokens = r.output_tokens,
                cached_tokens = r.cached_tokens,
                reasoning_tokens = r.reasoning_tokens,
                cost_nanos = r.cost_nanos,
                charged_nanos = r.charged_nanos,
                latency_ms = r.latency_ms,
                ttft_ms = r.ttft_ms.unwrap_or(-1),
                streamed = r.streamed,
                provenance = r.provenance.as_str(),
                "request"
            );
        }
    }
}
