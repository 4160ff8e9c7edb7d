//! A usage record's journal line, written by hand: the bytes `serde_json::to_vec` writes (the
//! replay and the dead-letter reader parse them with serde; a test holds the two to the same
//! bytes), without serde's escaping of the constant keys, its formatter calls per value and its
//! buffer growing from 128 bytes. The record is destructured field by field, so a field added
//! to `UsageRecord` does not compile here until it is written.

use std::io;

use tollgate_core::record::UsageRecord;

/// Appends `r` as one JSON object (no newline) to `out`.
pub(super) fn record_line(r: &UsageRecord, out: &mut Vec<u8>) -> io::Result<()> {
    let UsageRecord {
        request_id,
        created_at_ms,
        finished_at_ms,
        account_id,
        key_id,
        endpoint,
        model_requested,
        model_served,
        provider,
        owned_by,
        source,
        input_tokens,
        output_tokens,
        cached_tokens,
        cache_write_tokens,
        reasoning_tokens,
        cost_nanos,
        charged_nanos,
        price_input,
        price_output,
        price_cached_input,
        price_cache_write,
        status,
        http_status,
        error_code,
        latency_ms,
        ttft_ms,
        streamed,
        provenance,
        anomaly,
        user,
        tags,
        price_version,
        fingerprint,
        conversation,
    } = r;
    let mut ints = itoa::Buffer::new();
    let mut int = |out: &mut Vec<u8>, key: &[u8], v: i64| {
        out.extend_from_slice(key);
        out.extend_from_slice(ints.format(v).as_bytes());
    };
    out.reserve(
        640 + request_id.len()
            + account_id.len()
            + key_id.len()
            + model_requested.len()
            + model_served.len()
            + provider.len()
            + owned_by.len(),
    );
    out.extend_from_slice(b"{\"request_id\":");
    string(out, request_id)?;
    int(out, b",\"created_at_ms\":", *created_at_ms);
    int(out, b",\"finished_at_ms\":", *finished_at_ms);
    out.extend_from_slice(b",\"account_id\":");
    string(out, account_id)?;
    out.extend_from_slice(b",\"key_id\":");
    string(out, key_id)?;
    out.extend_from_slice(b",\"endpoint\":");
    string(out, endpoint.as_str())?;
    out.extend_from_slice(b",\"model_requested\":");
    string(out, model_requested)?;
    out.extend_from_slice(b",\"model_served\":");
    string(out, model_served)?;
    out.extend_from_slice(b",\"provider\":");
    string(out, provider)?;
    out.extend_from_slice(b",\"owned_by\":");
    string(out, owned_by)?;
    out.extend_from_slice(b",\"source\":");
    string(out, source.as_str())?;
    int(out, b",\"input_tokens\":", *input_tokens);
    int(out, b",\"output_tokens\":", *output_tokens);
    int(out, b",\"cached_tokens\":", *cached_tokens);
    int(out, b",\"cache_write_tokens\":", *cache_write_tokens);
    int(out, b",\"reasoning_tokens\":", *reasoning_tokens);
    int(out, b",\"cost_nanos\":", *cost_nanos);
    int(out, b",\"charged_nanos\":", *charged_nanos);
    int(out, b",\"price_input\":", *price_input);
    int(out, b",\"price_output\":", *price_output);
    int(out, b",\"price_cached_input\":", *price_cached_input);
    int(out, b",\"price_cache_write\":", *price_cache_write);
    out.extend_from_slice(b",\"status\":");
    string(out, status.as_str())?;
    int(out, b",\"http_status\":", i64::from(*http_status));
    out.extend_from_slice(b",\"error_code\":");
    match error_code {
        Some(e) => string(out, e)?,
        None => out.extend_from_slice(b"null"),
    }
    int(out, b",\"latency_ms\":", *latency_ms);
    match ttft_ms {
        Some(t) => int(out, b",\"ttft_ms\":", *t),
        None => out.extend_from_slice(b",\"ttft_ms\":null"),
    }
    out.extend_from_slice(if *streamed {
        b",\"streamed\":true"
    } else {
        b",\"streamed\":false"
    });
    out.extend_from_slice(b",\"provenance\":");
    string(out, provenance.as_str())?;
    // The rest are left out when empty, as serde's `skip_serializing_if` does.
    if let Some(a) = anomaly {
        out.extend_from_slice(b",\"anomaly\":");
        string(out, a.as_str())?;
    }
    if let Some(u) = user {
        out.extend_from_slice(b",\"user\":");
        string(out, u)?;
    }
    if !tags.is_empty() {
        out.extend_from_slice(b",\"tags\":");
        serde_json::to_writer(&mut *out, tags).map_err(io::Error::other)?;
    }
    if let Some(v) = price_version {
        out.extend_from_slice(b",\"price_version\":");
        string(out, v)?;
    }
    // Fingerprints as their 16 hex digits (`fingerprint::hex_opt`).
    for (key, v) in [
        (&b",\"fingerprint\":"[..], fingerprint),
        (&b",\"conversation\":"[..], conversation),
    ] {
        if let Some(fp) = v {
            out.extend_from_slice(key);
            string(out, &tollgate_core::fingerprint::to_hex(*fp))?;
        }
    }
    out.push(b'}');
    Ok(())
}

/// A JSON string: copied as it is when nothing in it needs escaping (ids, model names), else
/// escaped by serde_json.
fn string(out: &mut Vec<u8>, s: &str) -> io::Result<()> {
    if s.bytes().all(|b| b >= 0x20 && b != b'"' && b != b'\\') {
        out.push(b'"');
        out.extend_from_slice(s.as_bytes());
        out.push(b'"');
        Ok(())
    } else {
        serde_json::to_writer(&mut *out, s).map_err(io::Error::other)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tollgate_core::attribution::Tags;
    use tollgate_core::record::{Anomaly, Endpoint, Provenance, Source, Status};

    fn base() -> UsageRecord {
        UsageRecord {
            request_id: "req_0190a1b2c3d4e5f6a7b8c9d0".into(),
            created_at_ms: 1_780_000_000_000,
            finished_at_ms: 1_780_000_000_123,
            account_id: "acct_1".into(),
            key_id: "key_1".into(),
            endpoint: Endpoint::ChatCompletions,
            model_requested: "gpt-4o-mini".into(),
            model_served: "gpt-4o-mini-2024-07-18".into(),
            provider: "openai".into(),
            owned_by: "openai".into(),
            source: Source::Platform,
            input_tokens: 12,
            output_tokens: 34,
            cached_tokens: 0,
            cache_write_tokens: 0,
            reasoning_tokens: 5,
            cost_nanos: 9_876,
            charged_nanos: 9_876,
            price_input: 150_000_000,
            price_output: 600_000_000,
            price_cached_input: 75_000_000,
            price_cache_write: 0,
            status: Status::Success,
            http_status: 200,
            error_code: None,
            latency_ms: 321,
            ttft_ms: Some(45),
            streamed: true,
            provenance: Provenance::Provider,
            anomaly: None,
            user: None,
            tags: Tags::default(),
            price_version: Some("pt_0123456789abcdef".into()),
            fingerprint: Some(-2),
            conversation: Some(0x0123_4567_89ab_cdef),
        }
    }

    fn variants() -> Vec<UsageRecord> {
        let mut out = vec![base()];
        for (i, e) in Endpoint::ALL.into_iter().enumerate() {
            let mut r = base();
            r.endpoint = e;
            r.status = Status::ALL[i % Status::ALL.len()];
            r.source = if i % 2 == 0 {
                Source::User
            } else {
                Source::Platform
            };
            r.provenance = Provenance::Estimated;
            r.anomaly = Some(if i % 2 == 0 {
                Anomaly::Clamped
            } else {
                Anomaly::OverReported
            });
            r.error_code = Some("upstream_error".into());
            r.ttft_ms = None;
            r.streamed = false;
            r.price_version = None;
            r.fingerprint = None;
            r.conversation = None;
            r.http_status = 599;
            out.push(r);
        }
        for s in Status::ALL {
            let mut r = base();
            r.status = s;
            out.push(r);
        }
        let mut r = base();
        r.user = Some("user \"quoted\" \\ back\tslash\n\u{1}\u{7f} é 日本".into());
        r.tags = Tags::parse("team=search,feature=a-b").unwrap();
        r.model_requested = "model\"with\\escapes\r".into();
        r.input_tokens = i64::MAX;
        r.output_tokens = i64::MIN;
        r.cost_nanos = -1;
        out.push(r);
        out
    }

    #[test]
    fn the_line_is_serde_json_byte_for_byte_and_reads_back() {
        for r in variants() {
            let mut line = Vec::new();
            record_line(&r, &mut line).unwrap();
            assert_eq!(
                String::from_utf8(line.clone()).unwrap(),
                serde_json::to_string(&r).unwrap()
            );
            let back: UsageRecord = serde_json::from_slice(&line).unwrap();
            assert_eq!(back, r);
        }
    }
}
