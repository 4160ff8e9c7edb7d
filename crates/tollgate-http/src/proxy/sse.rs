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
/// OpenAI chat: `data: {"error":{...}}` then `data: [DONE]`; Anthropic: `event: error`;
/// Responses: `event: error` with `{"type":"error","code","message","param","sequence_number"}`
/// (its own error event: `kind` has no field there, the code says it; `sequence_number` is
/// `seq`, the next in the stream; that format has no `[DONE]`).
pub fn error_event(api: Endpoint, kind: Code, code: &str, message: &str, seq: u64) -> Bytes {
    let text = match api {
        Endpoint::Responses => {
            let body = json!({
                "type": "error",
                "code": code,
                "message": message,
                "param": null,
                "sequence_number": seq,
            });
            format!("event: error\ndata: {body}\n\n")
        }
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

/// An event grew past the splitter's limit before it ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EventTooLarge {
    pub limit: usize,
}

/// Buffers below this are not worth shrinking.
const SMALL_BUF: usize = 8 * 1024;
/// Buffers above this are not kept once their event is out.
const LARGE_BUF: usize = 256 * 1024;

pub struct SseSplitter {
    buf: BytesMut,
    /// Largest event accepted, boundary included.
    max_event: usize,
    /// How far `buf` is known to hold no event boundary, so a long event is scanned once rather
    /// than again with every chunk.
    scanned: usize,
}

impl SseSplitter {
    pub fn new(max_event: usize) -> Self {
        Self {
            buf: BytesMut::new(),
            max_event: max_event.max(1),
            scanned: 0,
        }
    }

    /// Adds a chunk and returns the events it completed. An event longer than the limit is an
    /// error, found before the buffer grows past the limit; the buffer is then let go (the
    /// stream cannot be resumed).
    pub fn push(&mut self, chunk: &[u8]) -> Result<Vec<SseEvent>, EventTooLarge> {
        let mut out = Vec::new();
        let mut rest = chunk;
        // The chunk goes in in pieces that fit beside the unfinished event, so the buffer never
        // holds more than one event's limit.
        while !rest.is_empty() {
            let room = self.max_event.saturating_sub(self.buf.len());
            if room == 0 {
                self.buf = BytesMut::new();
                self.scanned = 0;
                return Err(EventTooLarge {
                    limit: self.max_event,
                });
            }
            let (piece, tail) = rest.split_at(room.min(rest.len()));
            rest = tail;
            self.append(piece);
            while let Some(end) = find_boundary(&self.buf, self.scanned.saturating_sub(2)) {
                out.push(SseEvent {
                    raw: self.buf.split_to(end).freeze(),
                });
                self.scanned = 0;
            }
            self.scanned = self.buf.len();
        }
        // After a large event the buffer may sit in a large allocation holding little: move the
        // little out so the allocation is freed once the event has been sent.
        if self.buf.capacity() > LARGE_BUF && self.buf.len() < SMALL_BUF {
            self.buf = BytesMut::from(&self.buf[..]);
        }
        Ok(out)
    }

    /// `push` for a chunk the caller owns as `Bytes` (the upstream's): while no unfinished event
    /// is buffered, the events the chunk completes are slices of it, with no copy and no buffer
    /// of the splitter's own; only an unfinished tail is copied in. A slow stream (one event per
    /// chunk, the usual case) then holds no splitter buffer between its events.
    pub fn push_bytes(&mut self, chunk: &Bytes) -> Result<Vec<SseEvent>, EventTooLarge> {
        if !self.buf.is_empty() {
            return self.push(chunk);
        }
        let mut out = Vec::new();
        let mut start = 0;
        while let Some(end) = find_boundary(&chunk[start..], 0) {
            if end > self.max_event {
                return Err(EventTooLarge {
                    limit: self.max_event,
                });
            }
            out.push(SseEvent {
                raw: chunk.slice(start..start + end),
            });
            start += end;
        }
        if start < chunk.len() {
            out.extend(self.push(&chunk[start..])?);
        }
        Ok(out)
    }

    /// Appends without letting the buffer's capacity grow past the event limit (`BytesMut`
    /// alone would double it). Space freed by events already sent is reused first.
    fn append(&mut self, piece: &[u8]) {
        if self.buf.capacity() - self.buf.len() < piece.len() && !self.buf.try_reclaim(piece.len())
        {
            let need = self.buf.len() + piece.len();
            let target = need
                .max(self.buf.len().saturating_mul(2))
                .max(SMALL_BUF)
                .min(self.max_event.max(need));
            let mut grown = BytesMut::with_capacity(target);
            grown.extend_from_slice(&self.buf);
            self.buf = grown;
        }
        self.buf.extend_from_slice(piece);
    }

    /// Bytes of an unfinished event left when the stream ended.
    pub fn take_rest(&mut self) -> Bytes {
        self.scanned = 0;
        self.buf.split().freeze()
    }
}

/// Index just past the blank line ending the first event, for `\n\n` and `\r\n\r\n`, looking
/// from `from` on.
fn find_boundary(buf: &[u8], mut from: usize) -> Option<usize> {
    while let Some(i) = buf.get(from..)?.iter().position(|b| *b == b'\n') {
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
        let mut s = SseSplitter::new(1 << 20);
        assert!(s.push(b"event: ping\ndata: {\"a\"").unwrap().is_empty());
        let ev = s.push(b":1}\n\ndata: [DONE]\r\n\r\ndata: x").unwrap();
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
        let multi = s.push(b"data: x\ndata: y\n\n").unwrap();
        assert_eq!(multi[0].fields().1, "x\ny");
    }

    #[test]
    fn bytes_chunks_split_as_slices_like_copied_ones() {
        let stream = b"data: a\n\ndata: bb\r\n\r\nevent: x\ndata: c\n\ndata: tail";
        for cut in 0..=stream.len() {
            let (a, b) = stream.split_at(cut);
            let mut copied = SseSplitter::new(1 << 20);
            let mut sliced = SseSplitter::new(1 << 20);
            let mut want: Vec<Vec<u8>> = Vec::new();
            let mut got: Vec<Vec<u8>> = Vec::new();
            for part in [a, b] {
                want.extend(
                    copied
                        .push(part)
                        .unwrap()
                        .into_iter()
                        .map(|e| e.raw.to_vec()),
                );
                let part = Bytes::copy_from_slice(part);
                got.extend(
                    sliced
                        .push_bytes(&part)
                        .unwrap()
                        .into_iter()
                        .map(|e| e.raw.to_vec()),
                );
            }
            assert_eq!(got, want, "cut at {cut}");
            assert_eq!(sliced.take_rest(), copied.take_rest());
        }
        // Whole events in a chunk leave no buffer behind.
        let mut s = SseSplitter::new(1 << 20);
        assert_eq!(
            s.push_bytes(&Bytes::from_static(b"data: a\n\n"))
                .unwrap()
                .len(),
            1
        );
        assert_eq!(s.buf.capacity(), 0);
        // The limit holds for slices too.
        let mut s = SseSplitter::new(10);
        let over = Bytes::from_static(b"data: 12345\n\n");
        assert_eq!(s.push_bytes(&over).err(), Some(EventTooLarge { limit: 10 }));
    }

    #[test]
    fn error_events_in_each_wire_format() {
        let mut s = SseSplitter::new(1 << 20);
        let openai = error_event(
            Endpoint::ChatCompletions,
            Code::ProviderError,
            "stream_deadline",
            "too long",
            0,
        );
        let ev = s.push(&openai).unwrap();
        assert_eq!(ev.len(), 2);
        let v: serde_json::Value = serde_json::from_str(&ev[0].fields().1).unwrap();
        assert_eq!(v["error"]["code"], "stream_deadline");
        assert_eq!(v["error"]["type"], "provider_error");
        assert_eq!(ev[1].fields().1, "[DONE]");

        let anthropic = error_event(Endpoint::Messages, Code::ProviderError, "x", "y", 0);
        let ev = s.push(&anthropic).unwrap();
        assert_eq!(ev.len(), 1);
        let (e, d) = ev[0].fields();
        assert_eq!(e, "error");
        let v: serde_json::Value = serde_json::from_str(&d).unwrap();
        assert_eq!(v["type"], "error");
        assert_eq!(v["error"]["type"], "api_error");
        assert_eq!(v["error"]["message"], "x: y");

        let responses = error_event(Endpoint::Responses, Code::ProviderError, "x", "y", 7);
        let ev = s.push(&responses).unwrap();
        assert_eq!(ev.len(), 1);
        let (e, d) = ev[0].fields();
        assert_eq!(e, "error");
        let v: serde_json::Value = serde_json::from_str(&d).unwrap();
        assert_eq!(v["type"], "error");
        assert_eq!(v["code"], "x");
        assert_eq!(v["message"], "y");
        assert_eq!(v["sequence_number"], 7);
    }

    #[test]
    fn an_event_past_the_limit_is_refused_without_growing_the_buffer() {
        let mut s = SseSplitter::new(100);
        // Exactly the limit, boundary included, is one event.
        let exact = [b"data: ".as_slice(), &[b'x'; 92], b"\n\n"].concat();
        assert_eq!(exact.len(), 100);
        let ev = s.push(&exact).unwrap();
        assert_eq!(ev.len(), 1);
        assert_eq!(ev[0].raw.len(), 100);
        // Many events in one chunk longer than the limit are fine.
        let many = b"data: a\n\n".repeat(50);
        assert_eq!(s.push(&many).unwrap().len(), 50);
        // One byte over, whether in one chunk or byte by byte, is refused.
        let over = [b"data: ".as_slice(), &[b'x'; 93], b"\n\n"].concat();
        assert_eq!(s.push(&over).err(), Some(EventTooLarge { limit: 100 }));
        let mut s = SseSplitter::new(100);
        let mut refused = false;
        for b in over.chunks(1) {
            match s.push(b) {
                Ok(ev) => assert!(ev.is_empty()),
                Err(_) => {
                    refused = true;
                    break;
                }
            }
            assert!(s.buf.capacity() <= 100);
        }
        assert!(refused);
        assert_eq!(s.buf.capacity(), 0, "the refused event's buffer is let go");
        // A boundary split across chunks is still found with the scan resumed.
        let mut s = SseSplitter::new(1 << 20);
        assert!(s.push(b"data: x\r\n\r").unwrap().is_empty());
        assert_eq!(s.push(b"\ndata: y\n").unwrap().len(), 1);
        assert_eq!(s.push(b"\n").unwrap().len(), 1);
    }
}
