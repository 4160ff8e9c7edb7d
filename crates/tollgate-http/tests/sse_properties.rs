//! Property tests of the SSE splitter, which sees every byte an upstream streams: however the
//! bytes are cut into chunks, the same events come out, nothing is lost or invented, and no
//! input panics. 256 cases per property (PROPTEST_CASES overrides).
// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use proptest::prelude::*;
use tollgate_http::proxy::sse::SseSplitter;

fn config() -> ProptestConfig {
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(256);
    ProptestConfig::with_cases(cases)
}

/// Bytes shaped like SSE (field names, line ends, blank lines) mixed with arbitrary bytes,
/// including invalid UTF-8 and lone `\r`.
fn stream() -> impl Strategy<Value = Vec<u8>> {
    let piece = prop_oneof![
        Just(b"\n".to_vec()),
        Just(b"\r\n".to_vec()),
        Just(b"\r".to_vec()),
        Just(b"\n\n".to_vec()),
        Just(b"\r\n\r\n".to_vec()),
        Just(b"data: ".to_vec()),
        Just(b"data:".to_vec()),
        Just(b"event: ".to_vec()),
        Just(b": comment".to_vec()),
        Just(b"[DONE]".to_vec()),
        Just(br#"{"usage":{"prompt_tokens":18446744073709551615}}"#.to_vec()),
        Just(vec![0xff, 0xfe]),
        Just("é€".as_bytes().to_vec()),
        prop::collection::vec(any::<u8>(), 0..8),
        "[a-z0-9 {}\":,]{0,12}".prop_map(String::into_bytes),
    ];
    prop::collection::vec(piece, 0..40).prop_map(|p| p.concat())
}

/// What a splitter made of a stream: each event's raw bytes, each event's (`event`, `data`)
/// fields, and the unfinished rest.
type Split = (Vec<Vec<u8>>, Vec<(String, String)>, Vec<u8>);

/// Feeds `chunks` in order.
fn split(chunks: &[&[u8]]) -> Split {
    // No event in these streams comes near the limit: the property is about chunking.
    let mut s = SseSplitter::new(usize::MAX);
    let mut raws = Vec::new();
    let mut fields = Vec::new();
    for c in chunks {
        for e in s.push(c).unwrap() {
            let (ev, data) = e.fields();
            fields.push((ev.into_owned(), data.into_owned()));
            raws.push(e.raw.to_vec());
        }
    }
    (raws, fields, s.take_rest().to_vec())
}

/// Cuts `bytes` at the given points (taken modulo its length, sorted).
fn cut<'a>(bytes: &'a [u8], points: &[usize]) -> Vec<&'a [u8]> {
    let mut at: Vec<usize> = points
        .iter()
        .map(|p| {
            if bytes.is_empty() {
                0
            } else {
                p % (bytes.len() + 1)
            }
        })
        .collect();
    at.sort_unstable();
    let mut out = Vec::new();
    let mut from = 0;
    for a in at {
        out.push(&bytes[from..a]);
        from = a;
    }
    out.push(&bytes[from..]);
    out
}

/// Index just past the first blank line (`\n\n` or `\n\r\n`), computed independently of the
/// splitter.
fn first_boundary_end(bytes: &[u8]) -> Option<usize> {
    let lf = bytes.windows(2).position(|w| w == b"\n\n").map(|i| i + 2);
    let crlf = bytes.windows(3).position(|w| w == b"\n\r\n").map(|i| i + 3);
    match (lf, crlf) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn chunk_boundaries_do_not_change_the_events(
        bytes in stream(),
        points in prop::collection::vec(any::<usize>(), 0..16),
    ) {
        let whole = split(&[&bytes]);
        let chunked = split(&cut(&bytes, &points));
        prop_assert_eq!(&chunked, &whole);
        // One byte at a time, the worst case for a splitter that keeps a tail.
        let bytewise: Vec<&[u8]> = bytes.chunks(1).collect();
        prop_assert_eq!(&split(&bytewise), &whole);
    }

    /// The events and the rest are the input, byte for byte, in order: events are forwarded
    /// untouched, so nothing may be dropped, duplicated or reordered.
    #[test]
    fn nothing_is_lost_or_invented(bytes in stream(), points in prop::collection::vec(any::<usize>(), 0..16)) {
        let (raws, _, rest) = split(&cut(&bytes, &points));
        let mut joined = raws.concat();
        joined.extend_from_slice(&rest);
        prop_assert_eq!(joined, bytes);
        // Each event ends at its first blank line, and the rest holds no complete event.
        for raw in &raws {
            prop_assert_eq!(first_boundary_end(raw), Some(raw.len()), "{:?}", String::from_utf8_lossy(raw));
        }
        prop_assert_eq!(first_boundary_end(&rest), None, "{:?}", String::from_utf8_lossy(&rest));
    }

    #[test]
    fn any_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..512), points in prop::collection::vec(any::<usize>(), 0..8)) {
        let _ = split(&cut(&bytes, &points));
    }

    /// A well-formed stream of `data:` events comes back as exactly those data values.
    #[test]
    fn data_values_come_back(values in prop::collection::vec("[^\r\n]{0,20}", 0..10),
                             crlf in any::<bool>(), points in prop::collection::vec(any::<usize>(), 0..10)) {
        let nl = if crlf { "\r\n" } else { "\n" };
        let text: String = values.iter().map(|v| format!("data: {v}{nl}{nl}")).collect();
        let (_, fields, rest) = split(&cut(text.as_bytes(), &points));
        // `data: ` drops exactly one space; the value's own leading spaces stay.
        let got: Vec<&str> = fields.iter().map(|(_, d)| d.as_str()).collect();
        prop_assert_eq!(got, values.iter().map(String::as_str).collect::<Vec<_>>());
        prop_assert!(rest.is_empty());
    }
}
