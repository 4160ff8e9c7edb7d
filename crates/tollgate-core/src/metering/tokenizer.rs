//! Local token counting for when an upstream reports no usage. Uses the `o200k_base` BPE that
//! ships inside the `tiktoken-rs` crate (nothing is downloaded at run time). For models of other
//! families it is an estimate, which is why such records are marked `estimated`.

use std::sync::OnceLock;

use serde_json::Value;
use tiktoken_rs::CoreBPE;

static BPE: OnceLock<Option<CoreBPE>> = OnceLock::new();

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

/// Estimated input tokens of a chat (OpenAI) or messages (Anthropic) request body: every
/// message's text, the system prompt, and tool definitions.
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
    // Embeddings: a string or a list of strings.
    if let Some(input) = body.get("input") {
        total = total.saturating_add(count_content(input, count));
    }
    total
}

fn count_content(c: &Value, count: impl Fn(&str) -> u64 + Copy) -> u64 {
    match c {
        Value::String(s) => count(s),
        Value::Array(parts) => parts
            .iter()
            .map(|p| match p {
                Value::String(s) => count(s),
                other => other
                    .get("text")
                    .and_then(Value::as_str)
                    .map(count)
                    .unwrap_or(0),
            })
            .fold(0u64, u64::saturating_add),
        _ => 0,
    }
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
}
