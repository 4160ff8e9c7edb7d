//! Splits a byte stream into Server-Sent Events without copying more than the unfinished tail.

use bytes::{Bytes, BytesMut};

/// One complete event: its raw bytes (forwarded untouched) and its parsed fields.
pub struct SseEvent {
    pub raw: Bytes,
    pub event: String,
    pub data: String,
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
            let raw = self.buf.split_to(end).freeze();
            out.push(parse(raw));
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
    let mut i = 0;
    while i + 1 < buf.len() {
        if buf[i] == b'\n' {
            if buf[i + 1] == b'\n' {
                return Some(i + 2);
            }
            if buf[i + 1] == b'\r' && buf.get(i + 2) == Some(&b'\n') {
                return Some(i + 3);
            }
        }
        i += 1;
    }
    None
}

fn parse(raw: Bytes) -> SseEvent {
    let text = String::from_utf8_lossy(&raw);
    let mut event = String::new();
    let mut data = String::new();
    for line in text.lines() {
        if let Some(v) = line.strip_prefix("event:") {
            event = v.trim().to_string();
        } else if let Some(v) = line.strip_prefix("data:") {
            if !data.is_empty() {
                data.push('\n');
            }
            data.push_str(v.strip_prefix(' ').unwrap_or(v));
        }
    }
    SseEvent { raw, event, data }
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
        assert_eq!(ev[0].event, "ping");
        assert_eq!(ev[0].data, "{\"a\":1}");
        assert_eq!(&ev[0].raw[..], b"event: ping\ndata: {\"a\":1}\n\n");
        assert_eq!(ev[1].data, "[DONE]");
        assert_eq!(&s.take_rest()[..], b"data: x");
    }
}
