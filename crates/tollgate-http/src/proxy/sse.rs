//! Splits a byte stream into Server-Sent Events without copying more than the unfinished tail.
//! Events are read in place: field values borrow from the event's bytes.

use std::borrow::Cow;

use bytes::{Bytes, BytesMut};
use serde_json::json;
use tollgate_core::record::Endpoint;
use tollgate_core::Code;

use crate::error::{anthropic_type, openai_type};

/// The last bytes of a stream the gateway ends itself, in that stream's own wire format, so a
/// client sees an error rather than a stream that merely stopped. `kind` sets the error's type
/// (as for the same failure before a stream starts), `code` is the stable machine-readable reason
/// (e.g. `stream_deadline`), which Anthropic's format has no field for, so it leads the message.
///
/// OpenAI: `data: {"error":{...}}` then `data: [DONE]`; Anthropic: `event: error`.
pub fn error_event(api: Endpoint, kind: Code, code: &str, message: &str) -> Bytes {
    let text = match api {
        Endpoint::Messages => {
            let body = json!({
                "type": "error",
                "error": { "type": anthropic_type(kind), "message": format!("{code}: {message}") },
            });
            format!("event: error\ndata: {body}\n\n")
        }
        Endpoint::ChatCompletions | Endpoint::Embeddings => {
            let body = json!({
                "error": {
                    "message": message,
                    "type": openai_type(kind),
                    "param": null,
                    "code": code,
                }
            });
            format!("data: {body}\n\ndata: [DONE]\n\n")
        }
    };
    Bytes::from(text)
}

/// One complete event, exactly as received (it is forwarded untouched).
pub struct SseEvent {
    pub raw: Bytes,
}

impl SseEvent {
    /// The `event:` field (empty if none) and the `data:` lines joined by newlines.
    pub fn fields(&self) -> (Cow<'_, str>, Cow<'_, str>) {
        let text = String::from_utf8_lossy(&self.raw);
        match text {
            Cow::Borrowed(t) => {
                let (e, d) = parse_fields(t);
                (Cow::Borrowed(e), d)
            }
            Cow::Owned(t) => {
                let (e, d) = parse_fields(&t);
                (Cow::Owned(e.to_string()), Cow::Owned(d.into_owned()))
            }
        }
    }
}

fn parse_fields(text: &str) -> (&str, Cow<'_, str>) {
    let mut event = "";
    let mut data: Option<Cow<'_, str>> = None;
    for line in text.lines() {
        if let Some(v) = line.strip_prefix("event:") {
            event = v.trim();
        } else if let Some(v) = line.strip_prefix("data:") {
            let v = v.strip_prefix(' ').unwrap_or(v);
            data = Some(match data {
                None => Cow::Borrowed(v),
                Some(prev) => Cow::Owned(format!("{prev}\n{v}")),
            });
        }
    }
    (event, data.unwrap_or(Cow::Borrowed("")))
}

#[derive(Default)]
pub struct SseSplitter {
    buf: BytesMut,
}

impl SseSplitter {
    /// Adds a chunk and returns the events it completed.
    pub fn push(&mut self, chunk: &[u8]) -> Vec<SseEvent> {
        self.buf.extend_from_slice(chunk);
        let mut out = Vec::new();
        while let Some(end) = find_boundary(&self.buf) {
            out.push(SseEvent {
                raw: self.buf.split_to(end).freeze(),
            });
        }
        out
    }

    /// Bytes of an unfinished event left when the stream ended.
    pub fn take_rest(&mut self) -> Bytes {
        self.buf.split().freeze()
    }
}

/// Index just past the blank line ending the first event, for `\n\n` and `\r\n\r\n`.
fn find_boundary(buf: &[u8]) -> Option<usize> {
    let mut from = 0;
    while let Some(i) = buf[from..].iter().position(|b| *b == b'\n') {
        let i = from + i;
        match buf.get(i + 1) {
            Some(b'\n') => return Some(i + 2),
            Some(b'\r') if buf.get(i + 2) == Some(&b'\n') => return Some(i + 3),
            Some(_) => from = i + 1,
            None => return None,
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_across_chunk_boundaries() {
        let mut s = SseSplitter::default();
        assert!(s.push(b"event: ping\ndata: {\"a\"").is_empty());
        let ev = s.push(b":1}\n\ndata: [DONE]\r\n\r\ndata: x");
        assert_eq!(ev.len(), 2);
        let (e, d) = ev[0].fields();
        assert_eq!((e.as_ref(), d.as_ref()), ("ping", "{\"a\":1}"));
        assert!(
            matches!(d, Cow::Borrowed(_)),
            "one data line is read in place"
        );
        assert_eq!(&ev[0].raw[..], b"event: ping\ndata: {\"a\":1}\n\n");
        assert_eq!(ev[1].fields().1, "[DONE]");
        assert_eq!(&s.take_rest()[..], b"data: x");
        let multi = s.push(b"data: x\ndata: y\n\n");
        assert_eq!(multi[0].fields().1, "x\ny");
    }

    #[test]
    fn error_events_in_each_wire_format() {
        let mut s = SseSplitter::default();
        let openai = error_event(
            Endpoint::ChatCompletions,
            Code::ProviderError,
            "stream_deadline",
            "too long",
        );
        let ev = s.push(&openai);
        assert_eq!(ev.len(), 2);
        let v: serde_json::Value = serde_json::from_str(&ev[0].fields().1).unwrap();
        assert_eq!(v["error"]["code"], "stream_deadline");
        assert_eq!(v["error"]["type"], "provider_error");
        assert_eq!(ev[1].fields().1, "[DONE]");

        let anthropic = error_event(Endpoint::Messages, Code::ProviderError, "x", "y");
        let ev = s.push(&anthropic);
        assert_eq!(ev.len(), 1);
        let (e, d) = ev[0].fields();
        assert_eq!(e, "error");
        let v: serde_json::Value = serde_json::from_str(&d).unwrap();
        assert_eq!(v["type"], "error");
        assert_eq!(v["error"]["type"], "api_error");
        assert_eq!(v["error"]["message"], "x: y");
    }
}
