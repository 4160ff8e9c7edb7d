//! A proxied request, checked: what the gateway needs from the client's JSON body (model,
//! stream, output cap) and the bytes to forward upstream. Invalid bodies get a 400 naming the
//! parameter before anything is held or forwarded.

use bytes::Bytes;
use serde_json::{json, Value};

use crate::error::{Code, DomainError};
use crate::record::Endpoint;

/// A checked request: what the gateway needs from the body, and the body to forward.
pub struct ProxyRequest {
    pub model: String,
    pub stream: bool,
    /// The client asked for the usage chunk of an OpenAI stream.
    pub client_wants_usage: bool,
    pub json: Value,
    /// Sent upstream: the client's bytes, untouched unless usage had to be requested.
    pub forward: Bytes,
}

impl ProxyRequest {
    /// The output cap the client set, if any.
    pub fn max_output_tokens(&self) -> Option<u64> {
        ["max_completion_tokens", "max_tokens", "max_output_tokens"]
            .iter()
            .find_map(|k| self.json.get(*k).and_then(Value::as_u64))
    }

    pub fn parse(api: Endpoint, bytes: Bytes) -> Result<Self, DomainError> {
        let json: Value = serde_json::from_slice(&bytes).map_err(|e| {
            DomainError::new(
                Code::InvalidJson,
                format!("the request body is not valid JSON: {e}"),
            )
        })?;
        let Some(obj) = json.as_object() else {
            return Err(DomainError::new(
                Code::InvalidJson,
                "the request body must be a JSON object",
            ));
        };
        let model = match obj.get("model") {
            Some(Value::String(m)) if !m.is_empty() => m.clone(),
            Some(_) => {
                return Err(DomainError::invalid(
                    "model",
                    "`model` must be a non-empty string",
                ))
            }
            None => {
                return Err(DomainError::invalid(
                    "model",
                    "missing required parameter: `model`",
                ))
            }
        };
        match api {
            Endpoint::ChatCompletions | Endpoint::Messages => match obj.get("messages") {
                Some(Value::Array(m)) if !m.is_empty() => {}
                Some(_) => {
                    return Err(DomainError::invalid(
                        "messages",
                        "`messages` must be a non-empty array",
                    ))
                }
                None => {
                    return Err(DomainError::invalid(
                        "messages",
                        "missing required parameter: `messages`",
                    ))
                }
            },
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
        let forward = if api == Endpoint::ChatCompletions && stream && !client_wants_usage {
            // Ask for the usage chunk; the client, which did not ask, will not see it.
            let mut changed = json.clone();
            if let Some(o) = changed.as_object_mut() {
                o.insert("stream_options".into(), json!({"include_usage": true}));
            }
            Bytes::from(serde_json::to_vec(&changed).map_err(DomainError::internal)?)
        } else {
            bytes
        };
        Ok(Self {
            model,
            stream,
            client_wants_usage,
            json,
            forward,
        })
    }
}
