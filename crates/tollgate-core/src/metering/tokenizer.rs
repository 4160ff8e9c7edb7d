//! Local token counting for when an upstream reports no usage. Uses the `o200k_base` BPE that
//! ships inside the `tiktoken-rs` crate (nothing is downloaded at run time). For models of other
//! families it is an estimate, which is why such records are marked `estimated`.

use std::sync::OnceLock;

use serde_json::Value;
use tiktoken_rs::CoreBPE;

static BPE: OnceLock<Option<CoreBPE>> = OnceLock::new();

/// The BPE, loaded by the first call (~35 MB once loaded, so a gateway whose upstreams report
/// usage never holds it).
fn bpe() -> Option<&'static CoreBPE> {
    BPE.get_or_init(|| tiktoken_rs::o200k_base().ok()).as_ref()
}

/// Loads the tokenizer now rather than on the first request that needs it.
pub fn warm_up() -> bool {
    bpe().is_some()
}

/// Tokens in a piece of text. Falls back to ~4 characters a token if the BPE failed to load.
pub fn count_text(text: &str) -> u64 {
    match bpe() {
        Some(b) => b.encode_ordinary(text).len() as u64,
        None => (text.len() as u64).div_ceil(4),
    }
}

/// Per-message framing tokens, as in OpenAI's published counting recipe.
const PER_MESSAGE: u64 = 3;
const REPLY_PRIMING: u64 = 3;

/// Estimated input tokens of a chat or Responses (OpenAI) or messages (Anthropic) request
/// body: every message's (or input item's) text, the system prompt (`system`, `instructions`),
/// and tool definitions.
pub fn count_request_input(body: &Value) -> u64 {
    input_with(body, count_text)
}

/// A rough count of a request's input without the BPE: the same text as `count_request_input`,
/// at ~4 bytes a token. Costs a walk over the body rather than a tokenization, so it can be
/// taken for every request (the start journaled for each forwarded request carries it).
pub fn quick_count_request_input(body: &Value) -> u64 {
    input_with(body, |t| (t.len() as u64).div_ceil(4))
}

fn input_with(body: &Value, count: impl Fn(&str) -> u64 + Copy) -> u64 {
    let mut total: u64 = 0;
    if let Some(messages) = body.get("messages").and_then(Value::as_array) {
        for m in messages {
            total = total.saturating_add(PER_MESSAGE);
            if let Some(c) = m.get("content") {
                total = total.saturating_add(count_content(c, count));
            }
            if let Some(calls) = m.get("tool_calls") {
                total = total.saturating_add(count(&calls.to_string()));
            }
        }
        total = total.saturating_add(REPLY_PRIMING);
    }
    if let Some(system) = body.get("system") {
        total = total.saturating_add(count_content(system, count));
    }
    if let Some(tools) = body.get("tools") {
        total = total.saturating_add(count(&tools.to_string()));
    }
    // Embeddings: a string or a list of strings. Responses: a string or a list of items
    // (messages with string or part content, tool calls and their outputs), each item framed
    // like a chat message.
    if let Some(input) = body.get("input") {
        total = total.saturating_add(count_content(input, count));
        let items = input
            .as_array()
            .map_or(0, |a| a.iter().filter(|i| i.is_object()).count() as u64);
        if items > 0 {
            total = total
                .saturating_add(items.saturating_mul(PER_MESSAGE))
                .saturating_add(REPLY_PRIMING);
        }
    }
    // Responses: the system prompt.
    if let Some(instructions) = body.get("instructions") {
        total = total.saturating_add(count_content(instructions, count));
    }
    // Other fields the provider reads as input: structured-output schemas, legacy functions.
    for key in ["response_format", "functions", "tool_choice"] {
        if let Some(v) = body.get(key).filter(|v| v.is_object() || v.is_array()) {
            total = total.saturating_add(count(&v.to_string()));
        }
    }
    total
}

/// Content part types whose input tokens the body does not show: media and files (by URL, by
/// file id, or inline, where the provider's count follows pixels or pages, not bytes).
const OPAQUE_PARTS: [&str; 11] = [
    "image_url",
    "input_image",
    "image",
    "file",
    "input_file",
    "document",
    "input_audio",
    "audio",
    "video",
    "video_url",
    "container_upload",
];

fn is_opaque_part(part: &Value) -> bool {
    part.get("type")
        .and_then(Value::as_str)
        .is_some_and(|t| OPAQUE_PARTS.contains(&t))
}

fn count_content(c: &Value, count: impl Fn(&str) -> u64 + Copy) -> u64 {
    match c {
        Value::String(s) => count(s),
        Value::Array(parts) => parts
            .iter()
            .map(|p| match p {
                Value::String(s) => count(s),
                // Held by its own rule (`opaque_input_parts`).
                p if is_opaque_part(p) => 0,
                other => match (
                    other.get("text").and_then(Value::as_str),
                    other.get("content"),
                ) {
                    (Some(text), _) => count(text),
                    // A tool result: its own content, which may hold parts of its own.
                    (None, Some(inner)) => count_content(inner, count),
                    // A tool call or another part shown as JSON: its text.
                    (None, None) => count(&other.to_string()),
                },
            })
            .fold(0u64, u64::saturating_add),
        _ => 0,
    }
}

/// How many parts of a request carry input whose size its body does not show: image, audio,
/// file and document parts (in messages, Responses input items, tool results and the system
/// prompt), Responses input kept upstream (`previous_response_id`, `conversation`, `prompt`),
/// server-side tools
/// (a `tools` entry whose `type` is not `function` or `custom`, e.g. Anthropic's
/// `web_search_*`), MCP servers and OpenAI's `web_search_options`. A credit hold assumes a fixed
/// number of tokens for each (`credits.hold_tokens_per_opaque_part`).
pub fn opaque_input_parts(body: &Value) -> u64 {
    fn in_content(c: &Value) -> u64 {
        let Value::Array(parts) = c else { return 0 };
        parts
            .iter()
            .map(|p| {
                if is_opaque_part(p) {
                    1
                } else {
                    p.get("content").map_or(0, in_content)
                }
            })
            .sum()
    }
    let mut n = 0u64;
    for m in body
        .get("messages")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        n = n.saturating_add(m.get("content").map_or(0, in_content));
    }
    n = n.saturating_add(body.get("system").map_or(0, in_content));
    // Responses: input items hold parts as messages do (`input_image`, `input_file`).
    n = n.saturating_add(body.get("input").map_or(0, in_content));
    // Responses: input the upstream keeps (an earlier response, a conversation, a stored
    // prompt) is sized by nothing in the body.
    let stored = ["previous_response_id", "conversation", "prompt"]
        .iter()
        .filter(|k| body.get(**k).is_some_and(|v| !v.is_null()))
        .count() as u64;
    n = n.saturating_add(stored);
    let server_tools = body
        .get("tools")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter(|t| {
            t.get("type")
                .and_then(Value::as_str)
                .is_some_and(|ty| ty != "function" && ty != "custom")
        })
        .count() as u64;
    let mcp = body
        .get("mcp_servers")
        .and_then(Value::as_array)
        .map_or(0, |a| a.len() as u64);
    let search = u64::from(body.get("web_search_options").is_some());
    n.saturating_add(server_tools)
        .saturating_add(mcp)
        .saturating_add(search)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_with_the_bundled_bpe() {
        assert!(warm_up());
        assert_eq!(count_text("Hello"), 1);
        assert_eq!(count_text("hello world"), 2);
        let body = serde_json::json!({"messages": [{"role": "user", "content": "hello world"}]});
        assert_eq!(count_request_input(&body), 3 + 2 + 3);
        let parts = serde_json::json!({"system": "be brief", "messages": [{"role": "user", "content": [{"type": "text", "text": "hello world"}]}]});
        assert_eq!(count_request_input(&parts), 3 + 2 + 3 + 2);
        // "hello world" is 11 bytes: 3 at ~4 bytes a token.
        assert_eq!(quick_count_request_input(&body), 3 + 3 + 3);
    }

    #[test]
    fn parts_the_body_cannot_size_are_counted_apart() {
        let body = serde_json::json!({
            "system": [{"type": "text", "text": "be brief"}],
            "messages": [
                {"role": "user", "content": [
                    {"type": "text", "text": "hello world"},
                    {"type": "image_url", "image_url": {"url": "https://example.com/a.png"}},
                    {"type": "document", "source": {"type": "url", "url": "https://example.com/a.pdf"}}
                ]},
                {"role": "user", "content": [
                    {"type": "tool_result", "tool_use_id": "t1", "content": [
                        {"type": "image", "source": {"type": "url", "url": "https://example.com/b.png"}}
                    ]}
                ]}
            ],
            "tools": [
                {"type": "function", "function": {"name": "f"}},
                {"name": "custom_tool", "input_schema": {}},
                {"type": "web_search_20250305", "name": "web_search"}
            ]
        });
        assert_eq!(opaque_input_parts(&body), 4);
        // The URLs are not counted as text: the parts are held by their own rule.
        let text_only = serde_json::json!({"system": [{"type": "text", "text": "be brief"}],
            "messages": [{"role": "user", "content": [{"type": "text", "text": "hello world"}]},
                         {"role": "user", "content": [{"type": "tool_result", "content": []}]}]});
        let tools_len = count_text(&body["tools"].to_string());
        assert_eq!(
            count_request_input(&body),
            count_request_input(&text_only) + tools_len
        );
        assert_eq!(opaque_input_parts(&serde_json::json!({"messages": []})), 0);
    }

    #[test]
    fn responses_input_items_instructions_and_stored_input() {
        // A string input is counted as text; items are framed like chat messages.
        let plain = serde_json::json!({"input": "hello world", "instructions": "be brief"});
        assert_eq!(count_request_input(&plain), 2 + 2);
        let items = serde_json::json!({"instructions": "be brief", "input": [
            {"role": "user", "content": "hello world"},
            {"role": "user", "content": [{"type": "input_text", "text": "hello world"},
                                         {"type": "input_image", "image_url": "https://example.com/a.png"}]}
        ]});
        assert_eq!(count_request_input(&items), 2 + (3 + 2) + (3 + 2) + 3);
        assert_eq!(opaque_input_parts(&items), 1);
        let stored = serde_json::json!({"previous_response_id": "resp_1", "input": "more"});
        assert_eq!(opaque_input_parts(&stored), 1);
        // Embeddings inputs (strings) get no framing.
        let emb = serde_json::json!({"input": ["hello world", "hello"]});
        assert_eq!(count_request_input(&emb), 3);
    }
}
