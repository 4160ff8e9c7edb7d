//! OpenAI's Responses API: `POST /v1/responses`, JSON and SSE, with the real event sequence:
//! `response.created`, `response.in_progress`, `response.output_item.added`,
//! `response.content_part.added`, one `response.output_text.delta` per word,
//! `response.output_text.done`, `response.content_part.done`, `response.output_item.done`, and
//! `response.completed` (or `response.incomplete` when `max_output_tokens` cut the output),
//! which carries the usage. Every event has its `sequence_number`, from 0.
//!
//! Tokens: input = words of `instructions` + the `input` (a string: its words + 1; items: each
//! item's content words + 1); output = the generated words (capped by `max_output_tokens`)
//! plus `reasoning_tokens`; `cached_tokens` is part of `input_tokens`.

use std::sync::Arc;

use axum::{body::Bytes, extract::State, http::HeaderMap, response::Response};
use serde::Deserialize;
use serde_json::{json, Value};

use crate::{
    common::{self, Api, Plan},
    next_id,
    sse::SseBuilder,
    tokens::{self, ResponsesInput, Words},
    MockState,
};

#[derive(Deserialize)]
struct ResponsesRequest {
    #[serde(default)]
    model: String,
    #[serde(default)]
    input: ResponsesInput,
    #[serde(default)]
    instructions: Words,
    #[serde(default)]
    stream: Option<bool>,
    #[serde(default)]
    max_output_tokens: Option<u64>,
    #[serde(default)]
    mock: Option<Value>,
}

pub(crate) async fn responses(
    State(st): State<Arc<MockState>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let api = Api::Responses;
    let (req, cfg) =
        match common::parse::<ResponsesRequest>(&st, api, &headers, &body, |r| r.mock.as_ref()) {
            Ok(v) => v,
            Err(resp) => return *resp,
        };
    let streamed = req.stream.unwrap_or(false);
    let id = next_id(api.id_prefix());
    let mut entry = common::base_entry(api, id, &req.model, &headers, streamed);
    if let Some(resp) = common::gate(&st, &cfg, api, &entry).await {
        return resp;
    }

    let plan = Plan::new(
        &cfg,
        req.input.0 + req.instructions.0,
        req.max_output_tokens,
    );
    let reasoning = cfg.reasoning_tokens;
    let output = plan.words + reasoning;
    let reported_in = cfg.report_input_tokens.unwrap_or(plan.input);
    let reported_out = cfg.report_output_tokens.unwrap_or(output);
    entry.status = 200;
    entry.input_tokens = plan.input;
    entry.output_tokens = output;
    entry.cached_tokens = plan.cached;
    entry.reasoning_tokens = reasoning;
    if !cfg.omit_usage {
        entry.reported_input_tokens = Some(reported_in);
        entry.reported_output_tokens = Some(reported_out);
    }
    let usage = (!cfg.omit_usage).then(|| {
        json!({
            "input_tokens": reported_in,
            "input_tokens_details": {"cached_tokens": plan.cached},
            "output_tokens": reported_out,
            "output_tokens_details": {"reasoning_tokens": reasoning},
            "total_tokens": reported_in.saturating_add(reported_out),
        })
    });
    let text = tokens::generated_text(plan.words);
    let item_id = next_id("msg_");
    let created_at = common::now_secs();
    let status = if plan.truncated {
        "incomplete"
    } else {
        "completed"
    };
    let part = |text: &str| json!({"type": "output_text", "text": text, "annotations": []});
    let item = |status: &str, content: Vec<Value>| {
        json!({"id": item_id, "type": "message", "status": status, "role": "assistant",
               "content": content})
    };
    let response = |status: &str, output: Vec<Value>, usage: Option<&Value>| {
        let mut r = json!({
            "id": entry.id, "object": "response", "created_at": created_at, "status": status,
            "error": null,
            "incomplete_details": if status == "incomplete" {
                json!({"reason": "max_output_tokens"})
            } else {
                Value::Null
            },
            "instructions": null, "max_output_tokens": req.max_output_tokens,
            "model": req.model, "output": output, "parallel_tool_calls": true,
            "previous_response_id": null, "reasoning": {"effort": null, "summary": null},
            "store": true, "temperature": 1.0, "text": {"format": {"type": "text"}},
            "tool_choice": "auto", "tools": [], "top_p": 1.0, "truncation": "disabled",
            "usage": usage, "metadata": {},
        });
        if usage.is_none() {
            if let Some(o) = r.as_object_mut() {
                // A response that reports nothing has no usage at all.
                o.remove("usage");
            }
        }
        r
    };
    let done_item = item("completed", vec![part(&text)]);

    if !streamed {
        let body = response(status, vec![done_item], usage.as_ref());
        let body = serde_json::to_vec(&body).unwrap_or_default();
        entry.usage_reported = !cfg.omit_usage;
        return common::finish_json(&st, &cfg, api, entry, body);
    }
    if cfg.sse_no_boundary_bytes > 0 {
        return common::junk_response(&st, &cfg, entry);
    }

    let events = plan.words as usize + 9;
    let mut sse = SseBuilder::with_capacity(events * 160 + 2 * text.len() + 2048, events);
    let mut seq: u64 = 0;
    let mut push = |sse: &mut SseBuilder, kind: &str, mut data: Value| {
        if let Some(o) = data.as_object_mut() {
            o.insert("type".into(), json!(kind));
            o.insert("sequence_number".into(), json!(seq));
        }
        seq += 1;
        sse.buf.extend_from_slice(b"event: ");
        sse.buf.extend_from_slice(kind.as_bytes());
        sse.buf.extend_from_slice(b"\ndata: ");
        // Serialising into a Vec cannot fail.
        let _ = serde_json::to_writer(&mut sse.buf, &data);
        sse.buf.extend_from_slice(b"\n\n");
        sse.end_event();
    };
    let at = json!({"item_id": item_id, "output_index": 0, "content_index": 0});
    let with = |extra: Value| {
        let mut v = at.clone();
        if let (Some(o), Value::Object(e)) = (v.as_object_mut(), extra) {
            o.extend(e);
        }
        v
    };
    push(
        &mut sse,
        "response.created",
        json!({"response": response("in_progress", vec![], None)}),
    );
    push(
        &mut sse,
        "response.in_progress",
        json!({"response": response("in_progress", vec![], None)}),
    );
    push(
        &mut sse,
        "response.output_item.added",
        json!({"output_index": 0, "item": item("in_progress", vec![])}),
    );
    push(
        &mut sse,
        "response.content_part.added",
        with(json!({"part": part("")})),
    );
    for i in 0..plan.words {
        let mut delta = Vec::with_capacity(16);
        tokens::push_delta(&mut delta, i, plan.words);
        let delta = String::from_utf8_lossy(&delta).into_owned();
        push(
            &mut sse,
            "response.output_text.delta",
            with(json!({"delta": delta, "logprobs": []})),
        );
    }
    push(
        &mut sse,
        "response.output_text.done",
        with(json!({"text": text, "logprobs": []})),
    );
    push(
        &mut sse,
        "response.content_part.done",
        with(json!({"part": part(&text)})),
    );
    push(
        &mut sse,
        "response.output_item.done",
        json!({"output_index": 0, "item": done_item.clone()}),
    );
    if !cfg.omit_usage {
        sse.next_is_usage();
    }
    let last = if plan.truncated {
        "response.incomplete"
    } else {
        "response.completed"
    };
    push(
        &mut sse,
        last,
        json!({"response": response(status, vec![done_item], usage.as_ref())}),
    );

    let id = entry.id.clone();
    let slot = common::record(&st, &cfg, entry);
    common::sse_response(common::sse_body(&st, &cfg, sse, slot), &id)
}
