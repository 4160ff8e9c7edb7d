//! Anthropic wire format: `POST /v1/messages`, JSON and SSE.

use std::sync::Arc;

use axum::{body::Bytes, extract::State, http::HeaderMap, response::Response};
use serde::{Deserialize, Serialize};

use crate::{
    common::{self, Api, Plan},
    next_id,
    sse::SseBuilder,
    tokens::{self, Message, Words},
    MockState,
};

#[derive(Deserialize)]
struct MessagesRequest {
    #[serde(default)]
    model: String,
    #[serde(default)]
    messages: Vec<Message>,
    #[serde(default)]
    system: Words,
    #[serde(default)]
    stream: Option<bool>,
    #[serde(default)]
    max_tokens: Option<u64>,
    #[serde(default)]
    mock: Option<serde_json::Value>,
}

#[derive(Serialize)]
struct MessageResponse<'a> {
    id: &'a str,
    #[serde(rename = "type")]
    kind: &'static str,
    role: &'static str,
    model: &'a str,
    content: [TextBlock<'a>; 1],
    stop_reason: &'static str,
    stop_sequence: Option<()>,
    #[serde(skip_serializing_if = "Option::is_none")]
    usage: Option<Usage>,
}

#[derive(Serialize)]
struct TextBlock<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    text: &'a str,
}

#[derive(Serialize)]
struct Usage {
    input_tokens: u64,
    output_tokens: u64,
    cache_creation_input_tokens: u64,
    cache_read_input_tokens: u64,
}

pub(crate) async fn messages(
    State(st): State<Arc<MockState>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let api = Api::Messages;
    let (req, cfg) =
        match common::parse::<MessagesRequest>(&st, api, &headers, &body, |r| r.mock.as_ref()) {
            Ok(v) => v,
            Err(resp) => return *resp,
        };
    let streamed = req.stream.unwrap_or(false);
    let id = next_id(api.id_prefix());
    let mut entry = common::base_entry(api, id, &req.model, &headers, streamed);
    if let Some(resp) = common::gate(&st, &cfg, api, &entry).await {
        return resp;
    }

    let input = tokens::messages_tokens(&req.messages) + req.system.0;
    let plan = Plan::new(&cfg, input, req.max_tokens);
    let stop_reason = if plan.truncated {
        "max_tokens"
    } else {
        "end_turn"
    };
    entry.status = 200;
    entry.input_tokens = plan.input;
    entry.output_tokens = plan.words;
    entry.cached_tokens = plan.cached;
    // Anthropic has no separate reasoning count: the knob is ignored here.
    entry.reasoning_tokens = 0;
    // What the usage claims (verbatim under report_*_tokens; on the wire,
    // input_tokens excludes cache reads).
    let reported_in = cfg.report_input_tokens.unwrap_or(plan.input - plan.cached);
    let reported_out = cfg.report_output_tokens.unwrap_or(plan.words);
    if !cfg.omit_usage {
        entry.reported_input_tokens = Some(reported_in);
        entry.reported_output_tokens = Some(reported_out);
    }

    if !streamed {
        let text = tokens::generated_text(plan.words);
        let resp = MessageResponse {
            id: &entry.id,
            kind: "message",
            role: "assistant",
            model: &req.model,
            content: [TextBlock {
                kind: "text",
                text: &text,
            }],
            stop_reason,
            stop_sequence: None,
            usage: (!cfg.omit_usage).then_some(Usage {
                input_tokens: reported_in,
                output_tokens: reported_out,
                cache_creation_input_tokens: 0,
                cache_read_input_tokens: plan.cached,
            }),
        };
        let body = serde_json::to_vec(&resp).unwrap_or_default();
        entry.usage_reported = !cfg.omit_usage;
        return common::finish_json(&st, &cfg, api, entry, body);
    }
    if cfg.sse_no_boundary_bytes > 0 {
        return common::junk_response(&st, &cfg, entry);
    }

    let events = plan.words as usize + 6;
    let mut sse = SseBuilder::with_capacity(events * 110 + 300 + req.model.len(), events);
    let buf = &mut sse.buf;
    buf.extend_from_slice(
        b"event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"id\":\"",
    );
    buf.extend_from_slice(entry.id.as_bytes());
    buf.extend_from_slice(b"\",\"type\":\"message\",\"role\":\"assistant\",\"model\":");
    buf.extend_from_slice(common::json_str(&req.model).as_bytes());
    buf.extend_from_slice(b",\"content\":[],\"stop_reason\":null,\"stop_sequence\":null");
    if !cfg.omit_usage {
        buf.extend_from_slice(b",\"usage\":{\"input_tokens\":");
        common::push_num(buf, reported_in);
        buf.extend_from_slice(
            b",\"output_tokens\":1,\"cache_creation_input_tokens\":0,\"cache_read_input_tokens\":",
        );
        common::push_num(buf, plan.cached);
        buf.push(b'}');
    }
    buf.extend_from_slice(b"}}\n\n");
    sse.end_event();
    sse.buf.extend_from_slice(
        b"event: content_block_start\ndata: {\"type\":\"content_block_start\",\"index\":0,\"content_block\":{\"type\":\"text\",\"text\":\"\"}}\n\n",
    );
    sse.end_event();
    sse.buf
        .extend_from_slice(b"event: ping\ndata: {\"type\":\"ping\"}\n\n");
    sse.end_event();
    for i in 0..plan.words {
        let buf = &mut sse.buf;
        buf.extend_from_slice(
            b"event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\"",
        );
        tokens::push_delta(buf, i, plan.words);
        buf.extend_from_slice(b"\"}}\n\n");
        sse.end_event();
    }
    sse.buf.extend_from_slice(
        b"event: content_block_stop\ndata: {\"type\":\"content_block_stop\",\"index\":0}\n\n",
    );
    sse.end_event();
    if !cfg.omit_usage {
        sse.next_is_usage();
    }
    let buf = &mut sse.buf;
    buf.extend_from_slice(
        b"event: message_delta\ndata: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"",
    );
    buf.extend_from_slice(stop_reason.as_bytes());
    buf.extend_from_slice(b"\",\"stop_sequence\":null}");
    if !cfg.omit_usage {
        buf.extend_from_slice(b",\"usage\":{\"output_tokens\":");
        common::push_num(buf, reported_out);
        buf.push(b'}');
    }
    buf.extend_from_slice(b"}\n\n");
    sse.end_event();
    sse.buf
        .extend_from_slice(b"event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n");
    sse.end_event();

    let id = entry.id.clone();
    let slot = common::record(&st, &cfg, entry);
    common::sse_response(common::sse_body(&st, &cfg, sse, slot), &id)
}

#[derive(Deserialize)]
struct CountTokensRequest {
    #[serde(default)]
    model: String,
    #[serde(default)]
    messages: Vec<Message>,
    #[serde(default)]
    system: Words,
    #[serde(default)]
    mock: Option<serde_json::Value>,
}

/// `POST /v1/messages/count_tokens`: `{"input_tokens": N}`, N counted as `messages` would
/// count the same body's input (cache reads are not told apart here). The ledger entry's
/// `input_tokens` (and `reported_input_tokens`) is N; nothing is generated.
pub(crate) async fn count_tokens(
    State(st): State<Arc<MockState>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let api = Api::CountTokens;
    let (req, cfg) =
        match common::parse::<CountTokensRequest>(&st, api, &headers, &body, |r| r.mock.as_ref()) {
            Ok(v) => v,
            Err(resp) => return *resp,
        };
    let id = next_id(api.id_prefix());
    let mut entry = common::base_entry(api, id, &req.model, &headers, false);
    if let Some(resp) = common::gate(&st, &cfg, api, &entry).await {
        return resp;
    }
    let input = tokens::messages_tokens(&req.messages) + req.system.0;
    let reported = cfg.report_input_tokens.unwrap_or(input);
    entry.status = 200;
    entry.input_tokens = input;
    entry.usage_reported = true;
    entry.reported_input_tokens = Some(reported);
    let body =
        serde_json::to_vec(&serde_json::json!({ "input_tokens": reported })).unwrap_or_default();
    common::finish_json(&st, &cfg, api, entry, body)
}
