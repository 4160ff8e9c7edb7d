//! Pieces shared by the OpenAI and Anthropic handlers.

use std::{io::Write, sync::Arc, time::Duration};

use axum::{
    body::Body,
    http::{header, HeaderMap, HeaderValue, StatusCode},
    response::Response,
};

use crate::{
    next_id,
    sse::{JunkStream, Pacing, SseBuilder},
    LedgerEntry, LedgerSlot, MockConfig, MockState,
};

/// Which provider API a request targets.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Api {
    Chat,
    Embeddings,
    Messages,
    /// OpenAI's Responses API.
    Responses,
    /// Anthropic's `messages/count_tokens`.
    CountTokens,
}

impl Api {
    pub fn name(self) -> &'static str {
        match self {
            Api::Chat => "chat.completions",
            Api::Embeddings => "embeddings",
            Api::Messages => "messages",
            Api::Responses => "responses",
            Api::CountTokens => "messages.count_tokens",
        }
    }

    pub fn id_prefix(self) -> &'static str {
        match self {
            Api::Chat => "chatcmpl-",
            Api::Embeddings => "emb-",
            Api::Messages => "msg_",
            Api::Responses => "resp_",
            Api::CountTokens => "cnt_",
        }
    }

    /// Provider-specific error body.
    pub fn error_body(self, status: u16, message: &str) -> Vec<u8> {
        let body = match self {
            Api::Chat | Api::Embeddings | Api::Responses => {
                let kind = if (400..500).contains(&status) {
                    "invalid_request_error"
                } else {
                    "server_error"
                };
                serde_json::json!({
                    "error": {"message": message, "type": kind, "param": null, "code": "mock_error"}
                })
            }
            Api::Messages | Api::CountTokens => {
                let kind = match status {
                    400 => "invalid_request_error",
                    401 => "authentication_error",
                    403 => "permission_error",
                    404 => "not_found_error",
                    413 => "request_too_large",
                    429 => "rate_limit_error",
                    529 => "overloaded_error",
                    s if (400..500).contains(&s) => "invalid_request_error",
                    _ => "api_error",
                };
                serde_json::json!({
                    "type": "error",
                    "error": {"type": kind, "message": message}
                })
            }
        };
        serde_json::to_vec(&body).unwrap_or_default()
    }
}

/// Unix time in seconds.
pub(crate) fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or_default()
}

/// Appends a decimal number.
pub(crate) fn push_num(buf: &mut Vec<u8>, n: u64) {
    // Writing into a Vec cannot fail.
    let _ = write!(buf, "{n}");
}

/// A JSON string literal (quoted and escaped).
pub(crate) fn json_str(s: &str) -> String {
    serde_json::to_string(s).unwrap_or_else(|_| String::from("\"\""))
}

/// The ledger entry of a request, before its outcome is known.
pub(crate) fn base_entry(
    api: Api,
    id: String,
    model: &str,
    headers: &HeaderMap,
    streamed: bool,
) -> LedgerEntry {
    let header_str = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    let auth = match api {
        Api::Messages | Api::CountTokens => {
            header_str("x-api-key").or_else(|| header_str("authorization"))
        }
        _ => header_str("authorization").or_else(|| header_str("x-api-key")),
    };
    LedgerEntry {
        id,
        request_id: header_str("x-tollgate-request-id"),
        api: api.name().to_owned(),
        model: model.to_owned(),
        streamed,
        input_tokens: 0,
        output_tokens: 0,
        cached_tokens: 0,
        reasoning_tokens: 0,
        usage_reported: false,
        completed: false,
        status: 0,
        auth,
        reported_input_tokens: None,
        reported_output_tokens: None,
    }
}

/// Records `entry` unless the ledger is turned off for this request.
pub(crate) fn record(st: &MockState, cfg: &MockConfig, entry: LedgerEntry) -> Option<LedgerSlot> {
    cfg.record_ledger.then(|| st.record(entry))
}

/// Token plan of a generating request.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Plan {
    /// Total input, cached included.
    pub input: u64,
    /// Cached part of the input.
    pub cached: u64,
    /// Generated words.
    pub words: u64,
    /// Whether `words` was capped by the request's max tokens.
    pub truncated: bool,
}

impl Plan {
    pub fn new(cfg: &MockConfig, input: u64, max_tokens: Option<u64>) -> Plan {
        let max_tokens = max_tokens.filter(|_| !cfg.ignore_max_tokens);
        let words = max_tokens.map_or(cfg.output_tokens, |m| m.min(cfg.output_tokens));
        Plan {
            input,
            cached: cfg.cached_tokens.min(input),
            words,
            truncated: words < cfg.output_tokens,
        }
    }
}

/// Applies `hang`, `latency_ms` and `error_status`. Returns the response to
/// send instead of the normal one, if any.
pub(crate) async fn gate(
    st: &Arc<MockState>,
    cfg: &MockConfig,
    api: Api,
    entry: &LedgerEntry,
) -> Option<Response> {
    if cfg.hang {
        record(st, cfg, entry.clone());
        std::future::pending::<()>().await;
    }
    if cfg.latency_ms > 0 {
        tokio::time::sleep(Duration::from_millis(cfg.latency_ms)).await;
    }
    let status = cfg.error_status?;
    let mut e = entry.clone();
    e.status = status;
    e.completed = true;
    record(st, cfg, e);
    Some(error_response(
        api,
        status,
        "mock upstream error",
        &entry.id,
    ))
}

pub(crate) fn error_response(api: Api, status: u16, message: &str, id: &str) -> Response {
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut resp = json_response(api.error_body(status.as_u16(), message), id);
    *resp.status_mut() = status;
    resp
}

/// Parses a request body and applies its `mock` overrides: the request and the config it runs
/// under, or the 400 (recorded) to answer with.
pub(crate) fn parse<R: serde::de::DeserializeOwned>(
    st: &Arc<MockState>,
    api: Api,
    headers: &HeaderMap,
    body: &[u8],
    mock_of: impl FnOnce(&R) -> Option<&serde_json::Value>,
) -> Result<(R, MockConfig), Box<Response>> {
    let req: R = serde_json::from_slice(body)
        .map_err(|e| Box::new(bad_request(st, api, headers, &e.to_string())))?;
    let cfg = st
        .effective_config(mock_of(&req))
        .map_err(|e| Box::new(bad_request(st, api, headers, &format!("mock: {e}"))))?;
    Ok((req, cfg))
}

/// Rejects a malformed request (recorded in the ledger with status 400).
pub(crate) fn bad_request(
    st: &Arc<MockState>,
    api: Api,
    headers: &HeaderMap,
    message: &str,
) -> Response {
    let id = next_id(api.id_prefix());
    let cfg = st.config();
    let mut e = base_entry(api, id, "", headers, false);
    e.status = 400;
    e.completed = true;
    let resp = error_response(api, 400, message, &e.id);
    record(st, &cfg, e);
    resp
}

fn with_id_header(resp: &mut Response, id: &str) {
    if id.is_empty() {
        return;
    }
    if let Ok(v) = HeaderValue::from_str(id) {
        resp.headers_mut().insert("x-mock-id", v);
    }
}

/// Adds the `pad_bytes` padding to a serialised JSON object: `{...}`
/// becomes `{...,"padding":"xxx…"}`, built in one exact allocation. `None`
/// if the body is not an object or the memory cannot be had.
pub(crate) fn pad_json(body: Vec<u8>, pad: u64) -> Option<Vec<u8>> {
    const FIELD: &[u8] = b"\"padding\":\"";
    if pad == 0 {
        return Some(body);
    }
    let pad = usize::try_from(pad).ok()?;
    let (&b'}', head) = body.split_last()? else {
        return None;
    };
    let comma = usize::from(head != b"{");
    // head + [","] + "padding":" + x… + "}
    let len = head
        .len()
        .checked_add(comma + FIELD.len() + 2)?
        .checked_add(pad)?;
    let mut out = Vec::new();
    out.try_reserve_exact(len).ok()?;
    out.extend_from_slice(head);
    if comma == 1 {
        out.push(b',');
    }
    out.extend_from_slice(FIELD);
    out.resize(out.len() + pad, b'x');
    out.extend_from_slice(b"\"}");
    Some(out)
}

/// Sends the JSON body of a successful non-streamed response and records
/// `entry` (whose `usage_reported` says whether `body` carries the usage).
///
/// Applies `pad_bytes`, and `trickle_ms`: a trickled body goes out one byte
/// at a time, and its entry is only marked `completed` (and
/// `usage_reported`) once the last byte is produced.
pub(crate) fn finish_json(
    st: &Arc<MockState>,
    cfg: &MockConfig,
    api: Api,
    mut entry: LedgerEntry,
    body: Vec<u8>,
) -> Response {
    let Some(body) = pad_json(body, cfg.pad_bytes) else {
        entry.status = 500;
        entry.completed = true;
        entry.usage_reported = false;
        entry.reported_input_tokens = None;
        entry.reported_output_tokens = None;
        let resp = error_response(api, 500, "mock-upstream: cannot build padding", &entry.id);
        record(st, cfg, entry);
        return resp;
    };
    if cfg.trickle_ms == 0 {
        let resp = json_response(body, &entry.id);
        entry.completed = true;
        record(st, cfg, entry);
        return resp;
    }
    let with_usage = entry.usage_reported;
    entry.usage_reported = false;
    entry.completed = false;
    let id = entry.id.clone();
    let slot = record(st, cfg, entry);
    // The whole body is a single "event" (carrying the usage, if any).
    let mut events = SseBuilder::from_buf(body);
    if with_usage {
        events.next_is_usage();
    }
    events.end_event();
    let stream = events.into_stream(
        Pacing {
            trickle: Duration::from_millis(cfg.trickle_ms),
            ..Pacing::default()
        },
        slot.map(|s| (st.clone(), s)),
    );
    typed_response(Body::from_stream(stream), "application/json", &id)
}

/// The body of a normal stream: its events, paced by `chunk_delay_ms`,
/// `cut_at_chunk` and `trickle_ms`.
pub(crate) fn sse_body(
    st: &Arc<MockState>,
    cfg: &MockConfig,
    events: SseBuilder,
    slot: Option<LedgerSlot>,
) -> Body {
    Body::from_stream(events.into_stream(
        Pacing {
            delay: Duration::from_millis(cfg.chunk_delay_ms),
            cut_at: cfg.cut_at_chunk,
            trickle: Duration::from_millis(cfg.trickle_ms),
        },
        slot.map(|s| (st.clone(), s)),
    ))
}

/// The response of a stream under `sse_no_boundary_bytes`: `data: ` and
/// that many `x` bytes in 64 KiB chunks (`chunk_delay_ms` apart), no event
/// boundary. `entry` is recorded as generating and reporting nothing (its
/// input still counted), `completed` once the last chunk is produced.
pub(crate) fn junk_response(
    st: &Arc<MockState>,
    cfg: &MockConfig,
    mut entry: LedgerEntry,
) -> Response {
    entry.output_tokens = 0;
    entry.reasoning_tokens = 0;
    entry.usage_reported = false;
    entry.completed = false;
    entry.reported_input_tokens = None;
    entry.reported_output_tokens = None;
    let id = entry.id.clone();
    let slot = record(st, cfg, entry);
    let stream = JunkStream::new(
        cfg.sse_no_boundary_bytes,
        Duration::from_millis(cfg.chunk_delay_ms),
        slot.map(|s| (st.clone(), s)),
    );
    sse_response(Body::from_stream(stream), &id)
}

fn typed_response(body: Body, content_type: &'static str, id: &str) -> Response {
    let mut resp = Response::new(body);
    resp.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    with_id_header(&mut resp, id);
    resp
}

pub(crate) fn json_response(body: Vec<u8>, id: &str) -> Response {
    typed_response(Body::from(body), "application/json", id)
}

pub(crate) fn sse_response(body: Body, id: &str) -> Response {
    let mut resp = typed_response(body, "text/event-stream", id);
    resp.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    resp
}

pub(crate) async fn not_found() -> Response {
    let mut resp = json_response(
        Api::Chat.error_body(404, "mock-upstream: no such route"),
        "",
    );
    *resp.status_mut() = StatusCode::NOT_FOUND;
    resp
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::pad_json;

    #[test]
    fn padding_is_appended_to_objects() {
        let out = pad_json(br#"{"a":1}"#.to_vec(), 3).unwrap();
        assert_eq!(out, br#"{"a":1,"padding":"xxx"}"#);
        assert_eq!(out.capacity(), out.len(), "one exact allocation");
        assert_eq!(pad_json(b"{}".to_vec(), 1).unwrap(), br#"{"padding":"x"}"#);
        assert_eq!(pad_json(b"[1]".to_vec(), 1), None);
        assert_eq!(pad_json(b"[1]".to_vec(), 0).unwrap(), b"[1]");
    }
}
