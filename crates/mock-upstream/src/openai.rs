//! OpenAI wire format: chat completions (JSON + SSE), embeddings, models.

use std::sync::Arc;

use axum::{body::Bytes, extract::State, http::HeaderMap, response::Response};
use base64::Engine as _;
use serde::{Deserialize, Serialize};

use crate::{
    common::{self, Api, Plan},
    next_id,
    sse::SseBuilder,
    tokens::{self, EmbeddingInput, Message},
    MockState,
};

#[derive(Deserialize)]
struct ChatRequest {
    #[serde(default)]
    model: String,
    #[serde(default)]
    messages: Vec<Message>,
    #[serde(default)]
    stream: Option<bool>,
    #[serde(default)]
    stream_options: Option<StreamOptions>,
    #[serde(default)]
    max_tokens: Option<u64>,
    #[serde(default)]
    max_completion_tokens: Option<u64>,
    #[serde(default)]
    mock: Option<serde_json::Value>,
}

#[derive(Deserialize)]
struct StreamOptions {
    #[serde(default)]
    include_usage: Option<bool>,
}

#[derive(Serialize)]
struct ChatCompletion<'a> {
    id: &'a str,
    object: &'static str,
    created: u64,
    model: &'a str,
    choices: [ChatChoice<'a>; 1],
    #[serde(skip_serializing_if = "Option::is_none")]
    usage: Option<Usage>,
}

#[derive(Serialize)]
struct ChatChoice<'a> {
    index: u32,
    message: AssistantMessage<'a>,
    logprobs: Option<()>,
    finish_reason: &'static str,
}

#[derive(Serialize)]
struct AssistantMessage<'a> {
    role: &'static str,
    content: &'a str,
    refusal: Option<()>,
}

#[derive(Serialize)]
struct Usage {
    prompt_tokens: u64,
    completion_tokens: u64,
    total_tokens: u64,
    prompt_tokens_details: PromptTokensDetails,
    completion_tokens_details: CompletionTokensDetails,
}

#[derive(Serialize)]
struct PromptTokensDetails {
    cached_tokens: u64,
}

#[derive(Serialize)]
struct CompletionTokensDetails {
    reasoning_tokens: u64,
}

pub(crate) async fn chat_completions(
    State(st): State<Arc<MockState>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let api = Api::Chat;
    let (req, cfg) =
        match common::parse::<ChatRequest>(&st, api, &headers, &body, |r| r.mock.as_ref()) {
            Ok(v) => v,
            Err(resp) => return *resp,
        };
    let streamed = req.stream.unwrap_or(false);
    let id = next_id(api.id_prefix());
    let mut entry = common::base_entry(api, id, &req.model, &headers, streamed);
    if let Some(resp) = common::gate(&st, &cfg, api, &entry).await {
        return resp;
    }

    let max = match (req.max_tokens, req.max_completion_tokens) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    };
    let plan = Plan::new(&cfg, tokens::messages_tokens(&req.messages), max);
    let reasoning = cfg.reasoning_tokens;
    let completion = plan.words + reasoning;
    // What the usage claims (verbatim under report_*_tokens).
    let reported_in = cfg.report_input_tokens.unwrap_or(plan.input);
    let reported_out = cfg.report_output_tokens.unwrap_or(completion);
    let usage = Usage {
        prompt_tokens: reported_in,
        completion_tokens: reported_out,
        total_tokens: reported_in.saturating_add(reported_out),
        prompt_tokens_details: PromptTokensDetails {
            cached_tokens: plan.cached,
        },
        completion_tokens_details: CompletionTokensDetails {
            reasoning_tokens: reasoning,
        },
    };
    let finish_reason = if plan.truncated { "length" } else { "stop" };
    entry.status = 200;
    entry.input_tokens = plan.input;
    entry.output_tokens = completion;
    entry.cached_tokens = plan.cached;
    entry.reasoning_tokens = reasoning;
    let created = common::now_secs();

    if !streamed {
        let text = tokens::generated_text(plan.words);
        let resp = ChatCompletion {
            id: &entry.id,
            object: "chat.completion",
            created,
            model: &req.model,
            choices: [ChatChoice {
                index: 0,
                message: AssistantMessage {
                    role: "assistant",
                    content: &text,
                    refusal: None,
                },
                logprobs: None,
                finish_reason,
            }],
            usage: (!cfg.omit_usage).then_some(usage),
        };
        let body = serde_json::to_vec(&resp).unwrap_or_default();
        entry.usage_reported = !cfg.omit_usage;
        if entry.usage_reported {
            entry.reported_input_tokens = Some(reported_in);
            entry.reported_output_tokens = Some(reported_out);
        }
        return common::finish_json(&st, &cfg, api, entry, body);
    }
    if cfg.sse_no_boundary_bytes > 0 {
        return common::junk_response(&st, &cfg, entry);
    }

    let include_usage = req
        .stream_options
        .and_then(|o| o.include_usage)
        .unwrap_or(false)
        && !cfg.omit_usage;
    if include_usage {
        entry.reported_input_tokens = Some(reported_in);
        entry.reported_output_tokens = Some(reported_out);
    }
    // Common beginning of every chunk.
    let mut prefix = Vec::with_capacity(128 + req.model.len());
    prefix.extend_from_slice(b"data: {\"id\":\"");
    prefix.extend_from_slice(entry.id.as_bytes());
    prefix.extend_from_slice(b"\",\"object\":\"chat.completion.chunk\",\"created\":");
    common::push_num(&mut prefix, created);
    prefix.extend_from_slice(b",\"model\":");
    prefix.extend_from_slice(common::json_str(&req.model).as_bytes());
    prefix.extend_from_slice(b",\"choices\":[");
    let suffix: &[u8] = if include_usage {
        b"],\"usage\":null}\n\n"
    } else {
        b"]}\n\n"
    };

    let events = plan.words as usize + 4;
    let mut sse = SseBuilder::with_capacity(events * (prefix.len() + 90), events);
    let buf = &mut sse.buf;
    buf.extend_from_slice(&prefix);
    buf.extend_from_slice(
        b"{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":\"\",\"refusal\":null},\"logprobs\":null,\"finish_reason\":null}",
    );
    buf.extend_from_slice(suffix);
    sse.end_event();
    for i in 0..plan.words {
        let buf = &mut sse.buf;
        buf.extend_from_slice(&prefix);
        buf.extend_from_slice(b"{\"index\":0,\"delta\":{\"content\":\"");
        tokens::push_delta(buf, i, plan.words);
        buf.extend_from_slice(b"\"},\"logprobs\":null,\"finish_reason\":null}");
        buf.extend_from_slice(suffix);
        sse.end_event();
    }
    let buf = &mut sse.buf;
    buf.extend_from_slice(&prefix);
    buf.extend_from_slice(b"{\"index\":0,\"delta\":{},\"logprobs\":null,\"finish_reason\":\"");
    buf.extend_from_slice(finish_reason.as_bytes());
    buf.extend_from_slice(b"\"}");
    buf.extend_from_slice(suffix);
    sse.end_event();
    if include_usage {
        sse.next_is_usage();
        let buf = &mut sse.buf;
        buf.extend_from_slice(&prefix);
        buf.extend_from_slice(b"],\"usage\":");
        // Serialising into a Vec cannot fail.
        let _ = serde_json::to_writer(&mut *buf, &usage);
        buf.extend_from_slice(b"}\n\n");
        sse.end_event();
    }
    sse.buf.extend_from_slice(b"data: [DONE]\n\n");
    sse.end_event();

    let id = entry.id.clone();
    let slot = common::record(&st, &cfg, entry);
    common::sse_response(common::sse_body(&st, &cfg, sse, slot), &id)
}

#[derive(Deserialize)]
struct EmbeddingsRequest {
    #[serde(default)]
    model: String,
    #[serde(default)]
    input: EmbeddingInput,
    #[serde(default)]
    encoding_format: Option<String>,
    #[serde(default)]
    mock: Option<serde_json::Value>,
}

#[derive(Serialize)]
struct EmbeddingList<'a> {
    object: &'static str,
    data: Vec<Embedding>,
    model: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    usage: Option<EmbeddingUsage>,
}

#[derive(Serialize)]
struct Embedding {
    object: &'static str,
    index: u64,
    embedding: EmbeddingVector,
}

#[derive(Serialize)]
#[serde(untagged)]
enum EmbeddingVector {
    Floats([f32; 8]),
    Base64(String),
}

#[derive(Serialize)]
struct EmbeddingUsage {
    prompt_tokens: u64,
    total_tokens: u64,
}

/// A deterministic 8-dimensional vector for input `index`.
fn vector(index: u64) -> [f32; 8] {
    let mut v = [0f32; 8];
    for (k, x) in v.iter_mut().enumerate() {
        *x = ((index * 8 + k as u64) % 17) as f32 / 16.0 - 0.5;
    }
    v
}

pub(crate) async fn embeddings(
    State(st): State<Arc<MockState>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let api = Api::Embeddings;
    let (req, cfg) =
        match common::parse::<EmbeddingsRequest>(&st, api, &headers, &body, |r| r.mock.as_ref()) {
            Ok(v) => v,
            Err(resp) => return *resp,
        };
    let id = next_id(api.id_prefix());
    let mut entry = common::base_entry(api, id, &req.model, &headers, false);
    if let Some(resp) = common::gate(&st, &cfg, api, &entry).await {
        return resp;
    }

    let base64 = req.encoding_format.as_deref() == Some("base64");
    let data = (0..req.input.inputs)
        .map(|index| {
            let v = vector(index);
            let embedding = if base64 {
                let mut raw = Vec::with_capacity(32);
                for x in v {
                    raw.extend_from_slice(&x.to_le_bytes());
                }
                EmbeddingVector::Base64(base64::engine::general_purpose::STANDARD.encode(raw))
            } else {
                EmbeddingVector::Floats(v)
            };
            Embedding {
                object: "embedding",
                index,
                embedding,
            }
        })
        .collect();
    let tokens = req.input.tokens;
    // Embeddings have no output tokens: report_output_tokens is ignored.
    let reported = cfg.report_input_tokens.unwrap_or(tokens);
    let resp = EmbeddingList {
        object: "list",
        data,
        model: &req.model,
        usage: (!cfg.omit_usage).then_some(EmbeddingUsage {
            prompt_tokens: reported,
            total_tokens: reported,
        }),
    };
    let body = serde_json::to_vec(&resp).unwrap_or_default();
    entry.status = 200;
    entry.input_tokens = tokens;
    entry.usage_reported = !cfg.omit_usage;
    if entry.usage_reported {
        entry.reported_input_tokens = Some(reported);
    }
    common::finish_json(&st, &cfg, api, entry, body)
}

const MODELS: &str = r#"{"object":"list","data":[
{"id":"gpt-4o","object":"model","created":1715367049,"owned_by":"system"},
{"id":"gpt-4o-mini","object":"model","created":1721172741,"owned_by":"system"},
{"id":"o3-mini","object":"model","created":1737146383,"owned_by":"system"},
{"id":"text-embedding-3-small","object":"model","created":1705948997,"owned_by":"system"},
{"id":"claude-sonnet-4-20250514","object":"model","created":1747267200,"owned_by":"anthropic"},
{"id":"claude-3-5-haiku-20241022","object":"model","created":1729555200,"owned_by":"anthropic"}
]}"#;

pub(crate) async fn models() -> Response {
    common::json_response(MODELS.as_bytes().to_vec(), "")
}
