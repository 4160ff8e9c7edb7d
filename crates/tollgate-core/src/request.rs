//! A proxied request, checked: what the gateway needs from the client's JSON body (model,
//! stream, output cap) and the bytes to forward upstream. Invalid bodies get a 400 naming the
//! parameter before anything is held or forwarded.

use std::sync::Arc;

use bytes::Bytes;
use serde_json::{json, Value};

use crate::attribution::check_user;
use crate::error::{Code, DomainError};
use crate::record::Endpoint;

/// A checked request: what the gateway needs from the body, and the body to forward.
pub struct ProxyRequest {
    pub model: String,
    pub stream: bool,
    /// The client asked for the usage chunk of an OpenAI stream.
    pub client_wants_usage: bool,
    /// Shared: the record keeps it (for a local count if the upstream reports no usage)
    /// without copying the tree.
    pub json: Arc<Value>,
    /// Sent upstream: the client's bytes, untouched unless usage had to be requested.
    pub forward: Bytes,
    /// The end user the body names (OpenAI's `user`, Anthropic's `metadata.user_id`), checked.
    pub user: Option<String>,
}

/// The fields that cap a request's output, in the wire formats the gateway speaks.
const OUTPUT_CAPS: [&str; 3] = ["max_completion_tokens", "max_tokens", "max_output_tokens"];

impl ProxyRequest {
    /// The output cap (per choice) the client set, if any; the largest, if it set several.
    pub fn max_output_tokens(&self) -> Option<u64> {
        OUTPUT_CAPS
            .iter()
            .filter_map(|k| self.json.get(*k).and_then(Value::as_u64))
            .max()
    }

    /// How many choices the request asks for (OpenAI's `n`); its output cap is per choice.
    pub fn choices(&self) -> u64 {
        self.json
            .get("n")
            .and_then(Value::as_u64)
            .unwrap_or(1)
            .max(1)
    }

    /// Caps the output of the forwarded request at `cap` tokens per choice: every cap field the
    /// client set is lowered to it; with none, `max_tokens` is added for Anthropic messages
    /// (always present there anyway) and `max_completion_tokens` for chat, the field OpenAI
    /// documents for every model (its reasoning models refuse `max_tokens`) and that counts
    /// reasoning tokens, which are billed as output.
    pub fn cap_output(&mut self, api: Endpoint, cap: u64) -> Result<(), DomainError> {
        let mut v: Value = serde_json::from_slice(&self.forward).map_err(DomainError::internal)?;
        let Some(o) = v.as_object_mut() else {
            return Err(DomainError::internal("forwarded body is not an object"));
        };
        let mut set = false;
        for k in OUTPUT_CAPS {
            if let Some(n) = o.get(k).and_then(Value::as_u64) {
                o.insert(k.into(), json!(n.min(cap)));
                set = true;
            }
        }
        if !set {
            let field = match api {
                Endpoint::Messages => "max_tokens",
                // The Responses API's one cap, reasoning included.
                Endpoint::Responses => "max_output_tokens",
                _ => "max_completion_tokens",
            };
            o.insert(field.into(), json!(cap));
        }
        self.forward = Bytes::from(serde_json::to_vec(&v).map_err(DomainError::internal)?);
        Ok(())
    }

    pub fn parse(api: Endpoint, bytes: Bytes) -> Result<Self, DomainError> {
        let map = json_object(&bytes)?;
        let obj = &map;
        let model = model_of(obj)?;
        match api {
            Endpoint::ChatCompletions | Endpoint::Messages => require_messages(obj)?,
            Endpoint::Embeddings => {
                if !obj
                    .get("input")
                    .is_some_and(|i| i.is_string() || i.is_array())
                {
                    return Err(DomainError::invalid(
                        "input",
                        "missing required parameter: `input` (string or array)",
                    ));
                }
            }
            Endpoint::Responses => check_responses_input(obj)?,
        }
        if api == Endpoint::Messages && !obj.get("max_tokens").is_some_and(Value::is_u64) {
            return Err(DomainError::invalid(
                "max_tokens",
                "missing required parameter: `max_tokens` (integer)",
            ));
        }
        let stream = match obj.get("stream") {
            None | Some(Value::Null) => false,
            Some(Value::Bool(b)) => *b,
            Some(_) => return Err(DomainError::invalid("stream", "`stream` must be a boolean")),
        };
        // A background response is generated after this request has ended, where the
        // gateway cannot meter it; it is refused rather than served unmetered.
        if api == Endpoint::Responses && obj.get("background").is_some_and(|b| b == &json!(true)) {
            return Err(DomainError::new(
                Code::UnsupportedParameter,
                "`background` responses are not supported: the gateway meters a response while \
                 it is generated",
            )
            .with_param("background"));
        }
        if stream && api == Endpoint::Embeddings {
            return Err(
                DomainError::new(Code::UnsupportedParameter, "embeddings cannot stream")
                    .with_param("stream"),
            );
        }
        // A wrong type is refused rather than silently replaced when usage is requested below.
        let client_wants_usage = match obj.get("stream_options") {
            None | Some(Value::Null) => false,
            Some(Value::Object(o)) => match o.get("include_usage") {
                None | Some(Value::Null) => false,
                Some(Value::Bool(b)) => *b,
                Some(_) => {
                    return Err(DomainError::invalid(
                        "stream_options.include_usage",
                        "`stream_options.include_usage` must be a boolean",
                    ))
                }
            },
            Some(_) => {
                return Err(DomainError::invalid(
                    "stream_options",
                    "`stream_options` must be an object",
                ))
            }
        };
        let user = body_user(api, obj)?;
        let has_stream_options = obj.contains_key("stream_options");
        let json = Value::Object(map);
        let forward = if api == Endpoint::ChatCompletions && stream && !client_wants_usage {
            // Ask for the usage chunk; the client, which did not ask, will not see it. Without
            // a `stream_options` of the client's, the field is spliced in at the front of the
            // body as it came (no copy of the tree, no re-serialising a long conversation);
            // with one (a `{}` or `null`), the body is rebuilt, since a second key of the same
            // name would leave the upstream to choose.
            let spliced = (!has_stream_options).then(|| with_usage_requested(&bytes));
            match spliced.flatten() {
                Some(spliced) => spliced,
                None => {
                    let mut changed = json.clone();
                    if let Some(o) = changed.as_object_mut() {
                        o.insert("stream_options".into(), json!({"include_usage": true}));
                    }
                    Bytes::from(serde_json::to_vec(&changed).map_err(DomainError::internal)?)
                }
            }
        } else {
            bytes
        };
        Ok(Self {
            model,
            stream,
            client_wants_usage,
            json: Arc::new(json),
            forward,
            user,
        })
    }
}

/// The end user a body names: OpenAI's `user` (chat, embeddings, responses) or Anthropic's
/// `metadata.user_id`; a wrong type or an unbounded value is a 400 naming the field.
fn body_user(
    api: Endpoint,
    obj: &serde_json::Map<String, Value>,
) -> Result<Option<String>, DomainError> {
    let (param, v) = match api {
        Endpoint::Messages => (
            "metadata.user_id",
            obj.get("metadata").and_then(|m| m.get("user_id")),
        ),
        _ => ("user", obj.get("user")),
    };
    match v {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(u)) if u.is_empty() => Ok(None),
        Some(Value::String(u)) => {
            check_user(u).map_err(|e| DomainError::invalid(param, format!("`{param}` {e}")))?;
            Ok(Some(u.clone()))
        }
        Some(_) => Err(DomainError::invalid(
            param,
            format!("`{param}` must be a string"),
        )),
    }
}

/// The model a `/v1/messages/count_tokens` body names, once the body is checked as a messages
/// body is (a JSON object, `model`, non-empty `messages`); `max_tokens` is not needed to count.
pub fn count_tokens_model(bytes: &[u8]) -> Result<String, DomainError> {
    let obj = json_object(bytes)?;
    let model = model_of(&obj)?;
    require_messages(&obj)?;
    Ok(model)
}

/// `body` (a JSON object with at least one member, already parsed) with
/// `"stream_options":{"include_usage":true}` as its first member.
fn with_usage_requested(body: &[u8]) -> Option<Bytes> {
    const FIELD: &[u8] = br#""stream_options":{"include_usage":true},"#;
    let open = body.iter().position(|b| !b.is_ascii_whitespace())?;
    if body[open] != b'{' {
        return None;
    }
    let mut out = Vec::with_capacity(body.len() + FIELD.len());
    out.extend_from_slice(&body[..=open]);
    out.extend_from_slice(FIELD);
    out.extend_from_slice(&body[open + 1..]);
    Some(Bytes::from(out))
}

/// The body as a JSON object, refused if it is anything else.
fn json_object(bytes: &[u8]) -> Result<serde_json::Map<String, Value>, DomainError> {
    let json: Value = serde_json::from_slice(bytes).map_err(|e| {
        DomainError::new(
            Code::InvalidJson,
            format!("the request body is not valid JSON: {e}"),
        )
    })?;
    match json {
        Value::Object(map) => Ok(map),
        _ => Err(DomainError::new(
            Code::InvalidJson,
            "the request body must be a JSON object",
        )),
    }
}

fn model_of(obj: &serde_json::Map<String, Value>) -> Result<String, DomainError> {
    match obj.get("model") {
        Some(Value::String(m)) if !m.is_empty() => Ok(m.clone()),
        Some(_) => Err(DomainError::invalid(
            "model",
            "`model` must be a non-empty string",
        )),
        None => Err(DomainError::invalid(
            "model",
            "missing required parameter: `model`",
        )),
    }
}

fn require_messages(obj: &serde_json::Map<String, Value>) -> Result<(), DomainError> {
    match obj.get("messages") {
        Some(Value::Array(m)) if !m.is_empty() => Ok(()),
        Some(_) => Err(DomainError::invalid(
            "messages",
            "`messages` must be a non-empty array",
        )),
        None => Err(DomainError::invalid(
            "messages",
            "missing required parameter: `messages`",
        )),
    }
}

/// Responses: `input` is a non-empty string or list of items; it may be left out only when the
/// upstream holds the input (`previous_response_id`, `conversation`, a stored `prompt`).
fn check_responses_input(obj: &serde_json::Map<String, Value>) -> Result<(), DomainError> {
    let stored = ["previous_response_id", "conversation", "prompt"]
        .iter()
        .any(|k| obj.get(*k).is_some_and(|v| !v.is_null()));
    match obj.get("input") {
        Some(Value::String(s)) if !s.is_empty() || stored => Ok(()),
        Some(Value::Array(a)) if !a.is_empty() || stored => Ok(()),
        None | Some(Value::Null) if stored => Ok(()),
        None | Some(Value::Null) => Err(DomainError::invalid(
            "input",
            "missing required parameter: `input` (string or array of items)",
        )),
        Some(_) => Err(DomainError::invalid(
            "input",
            "`input` must be a non-empty string or a non-empty array of items",
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(api: Endpoint, body: Value) -> ProxyRequest {
        ProxyRequest::parse(api, Bytes::from(body.to_string())).unwrap()
    }

    fn forwarded(r: &ProxyRequest) -> Value {
        serde_json::from_slice(&r.forward).unwrap()
    }

    #[test]
    fn a_stream_asks_for_usage_by_a_splice_or_by_a_rebuild() {
        let body =
            br#" {"model":"m","messages":[{"role":"user","content":"hi \"x\""}],"stream":true}"#;
        let r = ProxyRequest::parse(Endpoint::ChatCompletions, Bytes::from_static(body)).unwrap();
        // Spliced: the client's bytes follow the added member unchanged.
        assert!(r
            .forward
            .starts_with(br#" {"stream_options":{"include_usage":true},"model""#));
        assert!(r.forward.ends_with(&body[2..]));
        let f = forwarded(&r);
        assert_eq!(f["stream_options"]["include_usage"], true);
        assert_eq!(f["messages"][0]["content"], "hi \"x\"");
        assert!(!r.client_wants_usage);
        // A `stream_options` of the client's without usage: rebuilt, one key.
        for so in [json!({}), json!(null), json!({"include_usage": false})] {
            let r = parse(
                Endpoint::ChatCompletions,
                json!({"model": "m", "messages": [{"role": "user", "content": "hi"}],
                       "stream": true, "stream_options": so}),
            );
            let text = std::str::from_utf8(&r.forward).unwrap();
            assert_eq!(text.matches("stream_options").count(), 1, "{text}");
            assert_eq!(forwarded(&r)["stream_options"]["include_usage"], true);
        }
        // Not streamed, or usage already asked for: the body goes as it came.
        for body in [
            json!({"model": "m", "messages": [{"role": "user", "content": "hi"}]}),
            json!({"model": "m", "messages": [{"role": "user", "content": "hi"}], "stream": true,
                   "stream_options": {"include_usage": true}}),
        ] {
            let bytes = serde_json::to_vec(&body).unwrap();
            let r =
                ProxyRequest::parse(Endpoint::ChatCompletions, Bytes::from(bytes.clone())).unwrap();
            assert_eq!(&r.forward[..], &bytes[..]);
        }
    }

    #[test]
    fn the_output_cap_goes_into_the_clients_field_or_the_apis_own() {
        let msgs = json!([{"role": "user", "content": "hi"}]);
        let mut r = parse(
            Endpoint::ChatCompletions,
            json!({"model": "m", "messages": msgs, "stream": true}),
        );
        r.cap_output(Endpoint::ChatCompletions, 7).unwrap();
        let f = forwarded(&r);
        assert_eq!(f["max_completion_tokens"], 7);
        assert!(f.get("max_tokens").is_none());
        // The usage request added for the stream is kept.
        assert_eq!(f["stream_options"]["include_usage"], true);

        let mut r = parse(
            Endpoint::ChatCompletions,
            json!({"model": "m", "messages": msgs, "max_tokens": 100, "n": 3}),
        );
        assert_eq!((r.max_output_tokens(), r.choices()), (Some(100), 3));
        r.cap_output(Endpoint::ChatCompletions, 7).unwrap();
        let f = forwarded(&r);
        assert_eq!(f["max_tokens"], 7);
        assert!(f.get("max_completion_tokens").is_none());

        let mut r = parse(
            Endpoint::Messages,
            json!({"model": "m", "messages": msgs, "max_tokens": 5}),
        );
        r.cap_output(Endpoint::Messages, 7).unwrap();
        assert_eq!(forwarded(&r)["max_tokens"], 5, "never raised");
        // Responses: `max_output_tokens` is lowered, or added.
        let mut r = parse(
            Endpoint::Responses,
            json!({"model": "m", "input": "hi", "stream": true}),
        );
        r.cap_output(Endpoint::Responses, 7).unwrap();
        let f = forwarded(&r);
        assert_eq!(f["max_output_tokens"], 7);
        assert!(f.get("max_completion_tokens").is_none() && f.get("stream_options").is_none());
        // Several caps: the hold assumes the largest.
        let r = parse(
            Endpoint::ChatCompletions,
            json!({"model": "m", "messages": msgs, "max_tokens": 9, "max_completion_tokens": 4}),
        );
        assert_eq!(r.max_output_tokens(), Some(9));
    }

    #[test]
    fn responses_input_is_checked_and_background_refused() {
        let bad = |body: Value| {
            ProxyRequest::parse(Endpoint::Responses, Bytes::from(body.to_string()))
                .err()
                .map(|e| (e.code, e.param))
        };
        let items = json!([{"role": "user", "content": [{"type": "input_text", "text": "hi"}]}]);
        assert!(bad(json!({"model": "m", "input": "hi"})).is_none());
        assert!(bad(json!({"model": "m", "input": items})).is_none());
        assert!(bad(json!({"model": "m", "previous_response_id": "resp_1"})).is_none());
        let input = Some((Code::InvalidRequest, Some("input".to_string())));
        assert_eq!(bad(json!({"model": "m"})), input);
        assert_eq!(bad(json!({"model": "m", "input": []})), input);
        assert_eq!(bad(json!({"model": "m", "input": 5})), input);
        assert_eq!(
            bad(json!({"model": "m", "input": "hi", "background": true})),
            Some((Code::UnsupportedParameter, Some("background".to_string())))
        );
        assert!(bad(json!({"model": "m", "input": "hi", "background": false})).is_none());
        assert_eq!(
            count_tokens_model(
                br#"{"model": "c", "messages": [{"role": "user", "content": "x"}]}"#
            )
            .ok(),
            Some("c".to_string())
        );
        assert!(count_tokens_model(br#"{"model": "c"}"#).is_err());
    }
}
