//! Reading usage out of both wire formats: whole JSON responses, and SSE streams event by event.

use serde_json::Value;

use super::tokenizer;
use super::Usage;
use crate::record::Endpoint;

/// A token count as the upstream wrote it. A number past u64 (parsed as a float) or a float
/// saturates rather than reading as 0, so an absurd report is clamped and flagged later
/// (`Usage::clamped`) instead of vanishing; negatives and non-numbers are 0.
fn u(v: &Value, key: &str) -> u64 {
    match v.get(key) {
        Some(Value::Number(n)) => n
            .as_u64()
            .or_else(|| n.as_f64().filter(|f| *f > 0.0).map(|f| f as u64))
            .unwrap_or(0),
        _ => 0,
    }
}

/// OpenAI's `usage` object (chat or embeddings). `prompt_tokens` already includes cached tokens.
pub fn from_openai_usage(usage: &Value) -> Option<Usage> {
    if !usage.is_object() {
        return None;
    }
    let details = usage
        .get("prompt_tokens_details")
        .cloned()
        .unwrap_or(Value::Null);
    let out_details = usage
        .get("completion_tokens_details")
        .cloned()
        .unwrap_or(Value::Null);
    Some(Usage {
        input_tokens: u(usage, "prompt_tokens"),
        output_tokens: u(usage, "completion_tokens"),
        cached_tokens: u(&details, "cached_tokens"),
        cache_write_tokens: 0,
        reasoning_tokens: u(&out_details, "reasoning_tokens"),
    })
}

/// The Responses API's `usage` object: `input_tokens` (cached included, as chat's
/// `prompt_tokens`), `input_tokens_details.cached_tokens`, `output_tokens` (reasoning included),
/// `output_tokens_details.reasoning_tokens`.
pub fn from_responses_usage(usage: &Value) -> Option<Usage> {
    if !usage.is_object() {
        return None;
    }
    let null = Value::Null;
    let details = usage.get("input_tokens_details").unwrap_or(&null);
    let out_details = usage.get("output_tokens_details").unwrap_or(&null);
    Some(Usage {
        input_tokens: u(usage, "input_tokens"),
        output_tokens: u(usage, "output_tokens"),
        cached_tokens: u(details, "cached_tokens"),
        cache_write_tokens: 0,
        reasoning_tokens: u(out_details, "reasoning_tokens"),
    })
}

/// Anthropic's `usage` object. Its `input_tokens` excludes cache reads and writes; they are added
/// here so `Usage::input_tokens` means all input for every provider.
pub fn from_anthropic_usage(usage: &Value) -> Option<Usage> {
    if !usage.is_object() {
        return None;
    }
    let cached = u(usage, "cache_read_input_tokens");
    let writes = u(usage, "cache_creation_input_tokens");
    Some(Usage {
        // Saturating: an upstream's absurd numbers must not wrap into a small bill (bounding
        // them is the settle step's job).
        input_tokens: u(usage, "input_tokens")
            .saturating_add(cached)
            .saturating_add(writes),
        output_tokens: u(usage, "output_tokens"),
        cached_tokens: cached,
        cache_write_tokens: writes,
        reasoning_tokens: 0,
    })
}

#[derive(serde::Deserialize)]
struct ResponseHead {
    #[serde(default)]
    model: Option<String>,
    #[serde(default)]
    usage: Option<Value>,
}

/// Usage and served model from a complete response body, reading only those two fields (the
/// rest is skipped without being built into a JSON tree).
///
/// The usual body goes through `TypedHead`, whose counts are read straight into integers: the
/// `usage` object as a JSON tree was ~18 allocations per request. Anything it cannot take (a
/// `usage` or details that is not an object, a repeated key) is read again the general way,
/// whose rules `Count` copies, so both read every body alike.
pub fn from_response_bytes(api: Endpoint, body: &[u8]) -> (Option<Usage>, Option<String>) {
    if let Ok(head) = serde_json::from_slice::<TypedHead>(body) {
        return (head.usage.map(|u| u.0.usage(api)), head.model);
    }
    read_general(api, body)
}

/// The general reading of a whole body: its `usage` as a JSON tree.
fn read_general(api: Endpoint, body: &[u8]) -> (Option<Usage>, Option<String>) {
    let Ok(head) = serde_json::from_slice::<ResponseHead>(body) else {
        return (None, None);
    };
    let usage = head.usage.as_ref().and_then(|u| match api {
        Endpoint::ChatCompletions | Endpoint::Embeddings => from_openai_usage(u),
        Endpoint::Messages => from_anthropic_usage(u),
        Endpoint::Responses => from_responses_usage(u),
    });
    (usage, head.model)
}

#[derive(serde::Deserialize)]
struct TypedHead {
    #[serde(default)]
    model: Option<String>,
    /// `null` reads as no usage, as in the general reading.
    #[serde(default)]
    usage: Option<Obj<UsageWire>>,
}

/// Every count the three formats' `usage` objects carry (`from_openai_usage`,
/// `from_anthropic_usage`, `from_responses_usage` say which belongs to which).
#[derive(serde::Deserialize, Default)]
#[serde(default)]
struct UsageWire {
    prompt_tokens: Count,
    completion_tokens: Count,
    input_tokens: Count,
    output_tokens: Count,
    cache_read_input_tokens: Count,
    cache_creation_input_tokens: Count,
    prompt_tokens_details: Obj<DetailsWire>,
    completion_tokens_details: Obj<DetailsWire>,
    input_tokens_details: Obj<DetailsWire>,
    output_tokens_details: Obj<DetailsWire>,
}

/// `T` read from a JSON object only: a derived struct also takes an array (its fields by
/// position), which the general reading counts as no usage.
#[derive(Default)]
struct Obj<T>(T);

impl<'de, T: serde::Deserialize<'de>> serde::Deserialize<'de> for Obj<T> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<T>(std::marker::PhantomData<T>);
        impl<'de, T: serde::Deserialize<'de>> serde::de::Visitor<'de> for V<T> {
            type Value = Obj<T>;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("an object")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(self, map: A) -> Result<Obj<T>, A::Error> {
                T::deserialize(serde::de::value::MapAccessDeserializer::new(map)).map(Obj)
            }
        }
        d.deserialize_map(V(std::marker::PhantomData))
    }
}

#[derive(serde::Deserialize, Default)]
#[serde(default)]
struct DetailsWire {
    cached_tokens: Count,
    reasoning_tokens: Count,
}

impl UsageWire {
    fn usage(self, api: Endpoint) -> Usage {
        match api {
            Endpoint::ChatCompletions | Endpoint::Embeddings => Usage {
                input_tokens: self.prompt_tokens.0,
                output_tokens: self.completion_tokens.0,
                cached_tokens: self.prompt_tokens_details.0.cached_tokens.0,
                cache_write_tokens: 0,
                reasoning_tokens: self.completion_tokens_details.0.reasoning_tokens.0,
            },
            Endpoint::Responses => Usage {
                input_tokens: self.input_tokens.0,
                output_tokens: self.output_tokens.0,
                cached_tokens: self.input_tokens_details.0.cached_tokens.0,
                cache_write_tokens: 0,
                reasoning_tokens: self.output_tokens_details.0.reasoning_tokens.0,
            },
            Endpoint::Messages => {
                let (cached, writes) = (
                    self.cache_read_input_tokens.0,
                    self.cache_creation_input_tokens.0,
                );
                Usage {
                    input_tokens: self
                        .input_tokens
                        .0
                        .saturating_add(cached)
                        .saturating_add(writes),
                    output_tokens: self.output_tokens.0,
                    cached_tokens: cached,
                    cache_write_tokens: writes,
                    reasoning_tokens: 0,
                }
            }
        }
    }
}

/// A token count read by `u`'s rules from any JSON value: a number past u64 or a positive
/// float saturates; negatives, strings, booleans, null, arrays and objects are 0.
#[derive(Default, Clone, Copy)]
struct Count(u64);

impl<'de> serde::Deserialize<'de> for Count {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = Count;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a token count")
            }
            fn visit_u64<E>(self, n: u64) -> Result<Count, E> {
                Ok(Count(n))
            }
            fn visit_i64<E>(self, n: i64) -> Result<Count, E> {
                Ok(Count(u64::try_from(n).unwrap_or(0)))
            }
            fn visit_f64<E>(self, f: f64) -> Result<Count, E> {
                // `as` saturates at u64::MAX, as `u` does.
                Ok(Count(if f > 0.0 { f as u64 } else { 0 }))
            }
            fn visit_bool<E>(self, _: bool) -> Result<Count, E> {
                Ok(Count(0))
            }
            fn visit_str<E>(self, _: &str) -> Result<Count, E> {
                Ok(Count(0))
            }
            fn visit_unit<E>(self) -> Result<Count, E> {
                Ok(Count(0))
            }
            fn visit_none<E>(self) -> Result<Count, E> {
                Ok(Count(0))
            }
            fn visit_some<D: serde::Deserializer<'de>>(self, d: D) -> Result<Count, D::Error> {
                d.deserialize_any(V)
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut a: A) -> Result<Count, A::Error> {
                while a.next_element::<serde::de::IgnoredAny>()?.is_some() {}
                Ok(Count(0))
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(self, mut a: A) -> Result<Count, A::Error> {
                while a
                    .next_entry::<serde::de::IgnoredAny, serde::de::IgnoredAny>()?
                    .is_some()
                {}
                Ok(Count(0))
            }
        }
        d.deserialize_any(V)
    }
}

/// The assistant text of a complete response, for local counting when usage is missing.
pub fn response_text(api: Endpoint, body: &Value) -> String {
    let mut text = String::new();
    match api {
        Endpoint::ChatCompletions => {
            for c in body
                .get("choices")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                if let Some(s) = c.pointer("/message/content").and_then(Value::as_str) {
                    text.push_str(s);
                }
            }
        }
        Endpoint::Messages => {
            for b in body
                .get("content")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                if let Some(s) = b.get("text").and_then(Value::as_str) {
                    text.push_str(s);
                }
            }
        }
        Endpoint::Responses => {
            for item in body
                .get("output")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                responses_item_text(item, &mut text);
            }
        }
        Endpoint::Embeddings => {}
    }
    text
}

/// The generated text of one Responses output item: a message's text parts, a function call's
/// arguments, a reasoning item's summary.
fn responses_item_text(item: &Value, text: &mut String) {
    if let Some(args) = item.get("arguments").and_then(Value::as_str) {
        text.push_str(args);
    }
    for key in ["content", "summary"] {
        for part in item
            .get(key)
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            if let Some(s) = part.get("text").and_then(Value::as_str) {
                text.push_str(s);
            }
        }
    }
}

/// What the proxy should do with one SSE event after the meter has seen it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventAction {
    Forward,
    /// The usage-only chunk we asked OpenAI for on the client's behalf: the client did not ask
    /// for it, so it does not get it.
    Drop,
    /// The stream's last event (`data: [DONE]`, `message_stop`, Responses' `response.completed`
    /// / `.incomplete` / `.failed`): forward it only after the request's record is durable.
    Terminal,
}

/// Follows one SSE stream, event by event, collecting the usage the upstream reports and, in
/// case it reports none, the generated text to count locally.
///
/// Most events of a stream are content deltas; they are not parsed here (their data is kept
/// and parsed only if the stream ends without usage). Only events that can carry usage, the
/// model or an error are parsed, into small typed structs rather than JSON trees.
#[derive(Debug)]
pub struct StreamMeter {
    api: Endpoint,
    client_wants_usage: bool,
    usage: Option<Usage>,
    /// The usage seen is the stream's final word (OpenAI's usage chunk, Anthropic's
    /// `message_delta`), not `message_start`'s placeholder output count.
    usage_final: bool,
    /// Data of content events, newline-separated, for a local count if usage never comes.
    content: String,
    model: Option<String>,
    pub saw_error_event: bool,
    /// Running count of output so far (`running_output`): bytes of `content` counted, tokens.
    counted_bytes: usize,
    counted_tokens: u64,
    /// Content past `MAX_CONTENT`, not kept: bytes.
    dropped_bytes: usize,
    /// Events seen, so an error event the gateway adds to a Responses stream carries the next
    /// `sequence_number`.
    events: u64,
}

/// Content kept for local counting is capped; beyond it the estimate undercounts.
const MAX_CONTENT: usize = 8 * 1024 * 1024;

/// The running count of a stream's output is brought up to date every this many bytes of
/// content events (tokenizing a few KiB takes well under a millisecond).
const COUNT_EVERY: usize = 4 * 1024;

/// A chat stream chunk; `U` is how its usage is read: `Obj<UsageWire>` first, `Value` for
/// anything that cannot take (as in `from_response_bytes`).
#[derive(serde::Deserialize)]
struct OpenAiChunk<U> {
    #[serde(default)]
    model: Option<String>,
    #[serde(default)]
    choices: Option<Vec<serde::de::IgnoredAny>>,
    #[serde(default)]
    usage: Option<U>,
}

impl OpenAiChunk<Obj<UsageWire>> {
    /// The chunk's model, whether it has choices, and its usage.
    fn read(text: &str) -> Option<(Option<String>, bool, Option<Usage>)> {
        let has_choices = |c: &Option<Vec<_>>| c.as_ref().is_some_and(|c| !c.is_empty());
        if let Ok(c) = serde_json::from_str::<Self>(text) {
            let usage = c.usage.map(|u| u.0.usage(Endpoint::ChatCompletions));
            return Some((c.model, has_choices(&c.choices), usage));
        }
        let c = serde_json::from_str::<OpenAiChunk<Value>>(text).ok()?;
        let usage = c.usage.as_ref().and_then(from_openai_usage);
        Some((c.model, has_choices(&c.choices), usage))
    }
}

#[derive(serde::Deserialize)]
struct AnthropicStart {
    message: AnthropicMessage,
}

#[derive(serde::Deserialize)]
struct AnthropicMessage {
    #[serde(default)]
    model: Option<String>,
    #[serde(default)]
    usage: Option<Value>,
}

/// A Responses stream event that carries the response object (`response.created`,
/// `response.completed`, ...).
#[derive(serde::Deserialize)]
struct ResponsesEvent {
    #[serde(default)]
    response: Option<ResponseHead>,
}

/// The `type` of a Responses event whose SSE `event:` field is missing.
#[derive(serde::Deserialize)]
struct EventType {
    #[serde(rename = "type", default)]
    kind: String,
}

#[derive(serde::Deserialize)]
struct AnthropicDelta {
    #[serde(default)]
    usage: Option<Value>,
}

/// True if `data` has the JSON key `key` (quoted) with a value starting with `{`. A quote
/// inside a JSON string is escaped, so an unescaped `"usage"` followed by `:` is always a key.
fn has_object_key(data: &str, key: &str) -> bool {
    let mut rest = data;
    while let Some(i) = rest.find(key) {
        let after = rest[i + key.len()..].trim_start();
        if let Some(v) = after.strip_prefix(':') {
            if v.trim_start().starts_with('{') {
                return true;
            }
        }
        rest = &rest[i + key.len()..];
    }
    false
}

impl StreamMeter {
    pub fn new(api: Endpoint, client_wants_usage: bool) -> Self {
        Self {
            api,
            client_wants_usage,
            usage: None,
            usage_final: false,
            content: String::new(),
            model: None,
            saw_error_event: false,
            counted_bytes: 0,
            counted_tokens: 0,
            dropped_bytes: 0,
            events: 0,
        }
    }

    /// Events seen so far.
    pub fn events(&self) -> u64 {
        self.events
    }

    /// `event` is the SSE `event:` field (empty if none), `data` the joined `data:` lines.
    pub fn on_event(&mut self, event: &str, data: &str) -> EventAction {
        self.events = self.events.saturating_add(1);
        match self.api {
            Endpoint::ChatCompletions | Endpoint::Embeddings => self.on_openai(data),
            Endpoint::Messages => self.on_anthropic(event, data),
            Endpoint::Responses => self.on_responses(event, data),
        }
    }

    /// A Responses stream: every event names its `type` (in `event:` and in the data). Deltas
    /// are kept unparsed for a local count; the response object of the first and the last
    /// event gives the model and the usage. The last event (`response.completed`, or
    /// `.incomplete` at the output cap, or `.failed`) is the terminal one; there is no `[DONE]`.
    fn on_responses(&mut self, event: &str, data: &str) -> EventAction {
        let parsed;
        let kind = if event.is_empty() {
            parsed = serde_json::from_str::<EventType>(data)
                .map(|t| t.kind)
                .unwrap_or_default();
            parsed.as_str()
        } else {
            event
        };
        if kind.ends_with(".delta") {
            self.keep_content(data);
            return EventAction::Forward;
        }
        let terminal = matches!(
            kind,
            "response.completed" | "response.incomplete" | "response.failed"
        );
        if kind == "error" || kind == "response.failed" {
            self.saw_error_event = true;
        }
        if terminal || kind == "response.created" {
            let response = serde_json::from_str::<ResponsesEvent>(data)
                .ok()
                .and_then(|e| e.response);
            if let Some(r) = response {
                if self.model.is_none() || terminal {
                    self.model = r.model.or(self.model.take());
                }
                if let Some(u) = r.usage.as_ref().and_then(from_responses_usage) {
                    self.usage = Some(u);
                    self.usage_final = true;
                }
            }
        }
        if terminal {
            EventAction::Terminal
        } else {
            EventAction::Forward
        }
    }

    fn on_openai(&mut self, data: &str) -> EventAction {
        let trimmed = data.trim();
        if trimmed == "[DONE]" {
            return EventAction::Terminal;
        }
        let has_usage = has_object_key(trimmed, "\"usage\"");
        let has_error = has_object_key(trimmed, "\"error\"");
        if has_error {
            self.saw_error_event = true;
        }
        if self.model.is_some() && !has_usage {
            self.keep_content(trimmed);
            return EventAction::Forward;
        }
        let Some((model, has_choices, usage)) = OpenAiChunk::read(trimmed) else {
            return EventAction::Forward;
        };
        if self.model.is_none() {
            self.model = model;
        }
        if has_choices {
            self.keep_content(trimmed);
        }
        match usage {
            Some(usage) => {
                self.usage = Some(usage);
                self.usage_final = true;
                if !self.client_wants_usage && !has_choices {
                    EventAction::Drop
                } else {
                    EventAction::Forward
                }
            }
            None => EventAction::Forward,
        }
    }

    fn on_anthropic(&mut self, event: &str, data: &str) -> EventAction {
        match event {
            "message_stop" => EventAction::Terminal,
            "error" => {
                self.saw_error_event = true;
                EventAction::Forward
            }
            "content_block_delta" => {
                self.keep_content(data);
                EventAction::Forward
            }
            "message_start" => {
                if let Ok(start) = serde_json::from_str::<AnthropicStart>(data) {
                    self.model = start.message.model;
                    if let Some(u) = start.message.usage.as_ref().and_then(from_anthropic_usage) {
                        self.usage = Some(u);
                    }
                }
                EventAction::Forward
            }
            "message_delta" => {
                // Output tokens here are cumulative; input fields, when present, are final.
                let delta = serde_json::from_str::<AnthropicDelta>(data).ok();
                if let Some(d) = delta.and_then(|d| d.usage).filter(Value::is_object) {
                    let mut usage = self.usage.unwrap_or_default();
                    if d.get("output_tokens").is_some_and(Value::is_number) {
                        usage.output_tokens = u(&d, "output_tokens");
                    }
                    if d.get("input_tokens").is_some_and(Value::is_number) {
                        if let Some(full) = from_anthropic_usage(&d) {
                            usage.input_tokens = full.input_tokens;
                            usage.cached_tokens = full.cached_tokens;
                            usage.cache_write_tokens = full.cache_write_tokens;
                        }
                    }
                    self.usage = Some(usage);
                    self.usage_final = true;
                }
                EventAction::Forward
            }
            _ => EventAction::Forward,
        }
    }

    fn keep_content(&mut self, data: &str) {
        if self.content.len() + data.len() < MAX_CONTENT {
            self.content.push_str(data);
            self.content.push('\n');
        } else {
            self.dropped_bytes = self.dropped_bytes.saturating_add(data.len());
        }
    }

    /// The output counted so far passes `limit` tokens. Tokenizes only when it could: a token
    /// is at least a byte of event data, so while the count plus the bytes not yet counted stay
    /// within `limit`, nothing is counted.
    pub fn output_exceeds(&mut self, limit: u64) -> bool {
        let pending = (self.content.len() - self.counted_bytes) as u64;
        let most = self
            .counted_tokens
            .saturating_add(self.dropped_bytes as u64 / 4)
            .saturating_add(pending);
        most > limit && self.running_output() > limit
    }

    /// Output tokens generated so far, counted locally as the stream goes (brought up to date
    /// every `COUNT_EVERY` bytes of content events, so it lags by at most that). Content past
    /// the kept maximum counts a token per 4 bytes of event data. (Usage the stream reports
    /// comes with its last events, too late to stop anything, so it is left to the record.)
    pub fn running_output(&mut self) -> u64 {
        if self.content.len() - self.counted_bytes >= COUNT_EVERY {
            let fresh = &self.content[self.counted_bytes..];
            self.counted_tokens = self
                .counted_tokens
                .saturating_add(tokenizer::count_text(&self.text_of(fresh)));
            self.counted_bytes = self.content.len();
        }
        self.counted_tokens
            .saturating_add(self.dropped_bytes as u64 / 4)
    }

    /// The upstream's own final usage, if it reported it.
    pub fn reported(&self) -> Option<Usage> {
        self.usage.filter(|_| self.usage_final)
    }

    /// Input tokens the upstream reported before the stream ended early (Anthropic's
    /// `message_start`), to combine with a local count of the output.
    pub fn reported_input(&self) -> Option<u64> {
        self.usage.map(|u| u.input_tokens)
    }

    /// The model the upstream says served the request.
    pub fn model(&self) -> Option<&str> {
        self.model.as_deref()
    }

    /// Output tokens counted locally from the content events kept.
    pub fn estimate_output(&self) -> u64 {
        tokenizer::count_text(&self.text_of(&self.content))
    }

    /// The generated text in `content` lines (one event's data each).
    fn text_of(&self, content: &str) -> String {
        let mut text = String::new();
        for line in content.lines() {
            let Ok(v) = serde_json::from_str::<Value>(line) else {
                continue;
            };
            match self.api {
                // Text, reasoning summary and function-call argument deltas alike.
                Endpoint::Responses => {
                    if let Some(t) = v.get("delta").and_then(Value::as_str) {
                        text.push_str(t);
                    }
                }
                Endpoint::Messages => {
                    let d = v.get("delta");
                    let t = d
                        .and_then(|d| {
                            d.get("text")
                                .or_else(|| d.get("thinking"))
                                .or_else(|| d.get("partial_json"))
                        })
                        .and_then(Value::as_str);
                    if let Some(t) = t {
                        text.push_str(t);
                    }
                }
                _ => {
                    for c in v
                        .get("choices")
                        .and_then(Value::as_array)
                        .into_iter()
                        .flatten()
                    {
                        if let Some(t) = c.pointer("/delta/content").and_then(Value::as_str) {
                            text.push_str(t);
                        }
                    }
                }
            }
        }
        text
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stream_chunks_usage_reads_as_the_general_reading_does() {
        for usage in [
            json!({"prompt_tokens": 3, "completion_tokens": 5,
                   "prompt_tokens_details": {"cached_tokens": 2},
                   "completion_tokens_details": {"reasoning_tokens": 1}}),
            json!({"prompt_tokens": -1, "completion_tokens": 1e30}),
            json!({"prompt_tokens": "7", "prompt_tokens_details": [5]}),
            json!({"prompt_tokens_details": null}),
            json!([]),
            json!(4),
            json!({}),
        ] {
            let text = json!({"model": "m", "choices": [], "usage": usage}).to_string();
            let (model, has_choices, got) = OpenAiChunk::read(&text).unwrap();
            assert_eq!((model.as_deref(), has_choices), (Some("m"), false));
            assert_eq!(got, from_openai_usage(&usage), "{text}");
        }
        // The usual chunk takes the typed reading.
        let usual =
            r#"{"model":"m","choices":[],"usage":{"prompt_tokens":3,"completion_tokens":5}}"#;
        assert!(serde_json::from_str::<OpenAiChunk<Obj<UsageWire>>>(usual).is_ok());
    }

    #[test]
    fn the_typed_reading_of_a_body_agrees_with_the_general_one() {
        let counts = [
            "7",
            "0",
            "-3",
            "1.9",
            "-0.5",
            "1e30",
            "18446744073709551615",
            "\"12\"",
            "true",
            "null",
            "[1,2]",
            "{\"a\":1}",
        ];
        let mut bodies = vec![
            r#"{"model":"m"}"#.to_string(),
            r#"{"usage":null}"#.to_string(),
            r#"{"usage":5}"#.to_string(),
            r#"{"usage":{}}"#.to_string(),
            r#"{"usage":{"prompt_tokens":1,"prompt_tokens":2}}"#.to_string(),
            r#"{"usage":{"prompt_tokens_details":7,"input_tokens_details":null}}"#.to_string(),
            r#"not json"#.to_string(),
            r#"{"usage":[]}"#.to_string(),
            r#"{"usage":{"prompt_tokens_details":[5],"input_tokens_details":[5]}}"#.to_string(),
        ];
        for c in counts {
            bodies.push(format!(
                r#"{{"id":"x","model":"gpt","choices":[{{"message":{{"content":"hi"}}}}],"usage":{{"prompt_tokens":{c},"completion_tokens":5,"prompt_tokens_details":{{"cached_tokens":{c}}},"completion_tokens_details":{{"reasoning_tokens":{c}}}}}}}"#
            ));
            bodies.push(format!(
                r#"{{"model":"claude","usage":{{"input_tokens":{c},"output_tokens":{c},"cache_read_input_tokens":4,"cache_creation_input_tokens":{c}}}}}"#
            ));
            bodies.push(format!(
                r#"{{"usage":{{"input_tokens":9,"output_tokens":{c},"input_tokens_details":{{"cached_tokens":{c}}},"output_tokens_details":{{"reasoning_tokens":2}}}},"model":"r"}}"#
            ));
        }
        // The fast path is the one taken for the usual bodies (and for odd counts in them).
        for body in &bodies[9..] {
            assert!(serde_json::from_str::<TypedHead>(body).is_ok(), "{body}");
        }
        for body in &bodies {
            for api in [
                Endpoint::ChatCompletions,
                Endpoint::Embeddings,
                Endpoint::Messages,
                Endpoint::Responses,
            ] {
                assert_eq!(
                    from_response_bytes(api, body.as_bytes()),
                    read_general(api, body.as_bytes()),
                    "{api:?} {body}"
                );
            }
        }
    }
    use serde_json::json;

    #[test]
    fn openai_prompt_tokens_include_cached() {
        let u = from_openai_usage(&json!({
            "prompt_tokens": 100, "completion_tokens": 20, "total_tokens": 120,
            "prompt_tokens_details": {"cached_tokens": 40},
            "completion_tokens_details": {"reasoning_tokens": 5}
        }))
        .unwrap();
        assert_eq!(
            (
                u.input_tokens,
                u.cached_tokens,
                u.output_tokens,
                u.reasoning_tokens
            ),
            (100, 40, 20, 5)
        );
    }

    #[test]
    fn anthropic_input_excludes_cache_so_it_is_added() {
        let u = from_anthropic_usage(&json!({
            "input_tokens": 60, "output_tokens": 20,
            "cache_read_input_tokens": 40, "cache_creation_input_tokens": 10
        }))
        .unwrap();
        assert_eq!(
            (u.input_tokens, u.cached_tokens, u.cache_write_tokens),
            (110, 40, 10)
        );
    }

    #[test]
    fn openai_stream_usage_chunk_dropped_only_when_client_did_not_ask() {
        let usage_chunk = r#"{"id":"x","choices":[],"usage":{"prompt_tokens":5,"completion_tokens":2,"total_tokens":7}}"#;
        let content =
            r#"{"id":"x","choices":[{"index":0,"delta":{"content":"hi there"}}],"usage":null}"#;
        let mut m = StreamMeter::new(Endpoint::ChatCompletions, false);
        assert_eq!(m.on_event("", content), EventAction::Forward);
        assert_eq!(m.on_event("", usage_chunk), EventAction::Drop);
        assert_eq!(m.on_event("", "[DONE]"), EventAction::Terminal);
        assert_eq!(m.reported().unwrap().output_tokens, 2);
        assert_eq!(m.estimate_output(), 2);
        let mut m = StreamMeter::new(Endpoint::ChatCompletions, true);
        m.on_event("", content);
        assert_eq!(m.on_event("", usage_chunk), EventAction::Forward);
    }

    #[test]
    fn absurd_numbers_saturate_instead_of_vanishing_or_wrapping() {
        let u = from_openai_usage(&json!({
            "prompt_tokens": 1e30, "completion_tokens": u64::MAX, "prompt_tokens_details": {"cached_tokens": -5}
        }))
        .unwrap();
        assert_eq!(
            (u.input_tokens, u.output_tokens, u.cached_tokens),
            (u64::MAX, u64::MAX, 0)
        );
        let u = from_anthropic_usage(&json!({
            "input_tokens": u64::MAX, "cache_read_input_tokens": u64::MAX, "output_tokens": 3
        }))
        .unwrap();
        assert_eq!(u.input_tokens, u64::MAX);
        let (c, clamped) = u.clamped(1000);
        assert!(clamped);
        assert_eq!(
            (c.input_tokens, c.cached_tokens, c.output_tokens),
            (1000, 1000, 3)
        );
        assert!(!c.clamped(1000).1);
    }

    #[test]
    fn running_output_is_counted_as_the_stream_goes() {
        let mut m = StreamMeter::new(Endpoint::ChatCompletions, false);
        m.on_event(
            "",
            r#"{"model":"gpt-4o","choices":[{"index":0,"delta":{"role":"assistant"}}]}"#,
        );
        let delta = r#"{"choices":[{"index":0,"delta":{"content":"hello "}}]}"#;
        let mut events = 0;
        while m.running_output() == 0 {
            m.on_event("", delta);
            events += 1;
            assert!(events < 1000);
        }
        // Counted once 4 KiB of events had arrived (about a token an event), as a full count
        // of the same content would.
        assert!(events > 40, "{events}");
        assert!(m.running_output() >= events);
        assert_eq!(m.running_output(), m.estimate_output());
        assert!(m.output_exceeds(events - 1) && !m.output_exceeds(10_000));
    }

    #[test]
    fn anthropic_stream_combines_start_and_delta() {
        let mut m = StreamMeter::new(Endpoint::Messages, true);
        m.on_event("message_start", r#"{"type":"message_start","message":{"usage":{"input_tokens":10,"cache_read_input_tokens":4,"output_tokens":1}}}"#);
        m.on_event("content_block_delta", r#"{"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"Hello"}}"#);
        m.on_event("message_delta", r#"{"type":"message_delta","delta":{"stop_reason":"end_turn"},"usage":{"output_tokens":7}}"#);
        assert_eq!(
            m.on_event("message_stop", r#"{"type":"message_stop"}"#),
            EventAction::Terminal
        );
        let u = m.reported().unwrap();
        assert_eq!(
            (u.input_tokens, u.cached_tokens, u.output_tokens),
            (14, 4, 7)
        );
    }

    #[test]
    fn responses_usage_and_stream_events() {
        let usage = json!({"input_tokens": 12, "input_tokens_details": {"cached_tokens": 4},
            "output_tokens": 9, "output_tokens_details": {"reasoning_tokens": 3}, "total_tokens": 21});
        let u = from_responses_usage(&usage).unwrap();
        assert_eq!(
            (
                u.input_tokens,
                u.cached_tokens,
                u.output_tokens,
                u.reasoning_tokens
            ),
            (12, 4, 9, 3)
        );
        let body = json!({"object": "response", "model": "gpt-4o-2024-08-06", "usage": usage,
            "output": [{"type": "message", "content": [{"type": "output_text", "text": "hi there"}]}]});
        let (u2, model) = from_response_bytes(Endpoint::Responses, body.to_string().as_bytes());
        assert_eq!((u2, model.as_deref()), (Some(u), Some("gpt-4o-2024-08-06")));
        assert_eq!(response_text(Endpoint::Responses, &body), "hi there");

        let mut m = StreamMeter::new(Endpoint::Responses, false);
        let created = r#"{"type":"response.created","sequence_number":0,"response":{"model":"gpt-4o","usage":null}}"#;
        assert_eq!(
            m.on_event("response.created", created),
            EventAction::Forward
        );
        let delta = r#"{"type":"response.output_text.delta","delta":"hello"}"#;
        assert_eq!(
            m.on_event("response.output_text.delta", delta),
            EventAction::Forward
        );
        // Without an `event:` field, the data's type decides.
        let delta = r#"{"type":"response.output_text.delta","delta":" there"}"#;
        assert_eq!(m.on_event("", delta), EventAction::Forward);
        assert!(m.reported().is_none());
        assert_eq!(m.estimate_output(), 2);
        let done = format!(
            r#"{{"type":"response.completed","response":{{"model":"gpt-4o-x","usage":{usage}}}}}"#
        );
        assert_eq!(
            m.on_event("response.completed", &done),
            EventAction::Terminal
        );
        assert_eq!(m.reported(), Some(u));
        assert_eq!(m.model(), Some("gpt-4o-x"));
        assert_eq!(m.events(), 4);
        assert!(!m.saw_error_event);
        // An incomplete response (the output cap) ends the stream as well; a failed one is an
        // error.
        let mut m = StreamMeter::new(Endpoint::Responses, false);
        assert_eq!(
            m.on_event("", r#"{"type":"response.incomplete","response":{}}"#),
            EventAction::Terminal
        );
        let mut m = StreamMeter::new(Endpoint::Responses, false);
        assert_eq!(
            m.on_event(
                "response.failed",
                r#"{"type":"response.failed","response":{}}"#
            ),
            EventAction::Terminal
        );
        assert!(m.saw_error_event);
        let mut m = StreamMeter::new(Endpoint::Responses, false);
        assert_eq!(
            m.on_event("error", r#"{"type":"error","code":"x"}"#),
            EventAction::Forward
        );
        assert!(m.saw_error_event);
    }
}
