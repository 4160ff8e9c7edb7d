//! `GET /v1/usage/export?format=csv|json|ndjson&start=&end=&model=&key_id=&user=&tag=`: every per-request
//! record in range, oldest first, streamed page by page as it is read (keyset pages over the
//! `(account_id, created_at_ms)` index, a bounded channel between reader and socket), so memory
//! stays flat however many rows match. `json` is one JSON array; `ndjson` one object per line;
//! `csv` has a header row and RFC 4180 quoting with CRLF line ends.

use axum::body::Body;
use axum::extract::State;
use axum::http::{header, HeaderValue};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use serde::Serialize;

use crate::extract::UsageQuery;
use tollgate_core::attribution::Tags;
use tollgate_core::calendar::{self as time, MAX_MS, MIN_MS};
use tollgate_core::rollup::{RecordCursor, RecordFilter};

use crate::error::ApiError;
use crate::state::SharedState;
use tollgate_core::money::nanos_to_usd_string;
use tollgate_core::record::UsageRecord;

const PAGE: usize = 1000;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Csv,
    Json,
    Ndjson,
}

/// One exported row: the record, plus derived `created_at`, `total_tokens` and exact decimal
/// USD strings.
#[derive(Debug, Serialize)]
pub struct Row<'a> {
    pub request_id: &'a str,
    pub created_at: String,
    pub created_at_ms: i64,
    pub finished_at_ms: i64,
    pub account_id: &'a str,
    pub key_id: &'a str,
    pub endpoint: &'a str,
    pub model_requested: &'a str,
    pub model_served: &'a str,
    pub provider: &'a str,
    pub owned_by: &'a str,
    pub source: &'a str,
    pub status: &'a str,
    pub http_status: u16,
    pub error_code: Option<&'a str>,
    pub input_tokens: i64,
    pub output_tokens: i64,
    pub total_tokens: i64,
    pub cached_tokens: i64,
    pub cache_write_tokens: i64,
    pub reasoning_tokens: i64,
    pub cost_nanos: i64,
    pub cost_usd: String,
    pub charged_nanos: i64,
    pub charged_usd: String,
    pub latency_ms: i64,
    pub ttft_ms: Option<i64>,
    pub streamed: bool,
    pub provenance: &'a str,
    /// The end user the request named, if any.
    pub user: Option<&'a str>,
    /// `{"feature": "search"}` in JSON; `feature=search,team=ads` in CSV.
    pub tags: &'a Tags,
}

/// The CSV columns; `csv_fields` returns exactly this many (the types say so).
pub const CSV_COLUMNS: usize = 31;

pub const CSV_HEADER: [&str; CSV_COLUMNS] = [
    "request_id",
    "created_at",
    "created_at_ms",
    "finished_at_ms",
    "account_id",
    "key_id",
    "endpoint",
    "model_requested",
    "model_served",
    "provider",
    "owned_by",
    "source",
    "status",
    "http_status",
    "error_code",
    "input_tokens",
    "output_tokens",
    "total_tokens",
    "cached_tokens",
    "cache_write_tokens",
    "reasoning_tokens",
    "cost_nanos",
    "cost_usd",
    "charged_nanos",
    "charged_usd",
    "latency_ms",
    "ttft_ms",
    "streamed",
    "provenance",
    "user",
    "tags",
];

impl<'a> Row<'a> {
    pub fn new(r: &'a UsageRecord) -> Row<'a> {
        Row {
            request_id: &r.request_id,
            created_at: time::rfc3339(chrono_tz::UTC, r.created_at_ms, true),
            created_at_ms: r.created_at_ms,
            finished_at_ms: r.finished_at_ms,
            account_id: &r.account_id,
            key_id: &r.key_id,
            endpoint: r.endpoint.as_str(),
            model_requested: &r.model_requested,
            model_served: &r.model_served,
            provider: &r.provider,
            owned_by: &r.owned_by,
            source: r.source.as_str(),
            status: r.status.as_str(),
            http_status: r.http_status,
            error_code: r.error_code.as_deref(),
            input_tokens: r.input_tokens,
            output_tokens: r.output_tokens,
            total_tokens: r.input_tokens + r.output_tokens,
            cached_tokens: r.cached_tokens,
            cache_write_tokens: r.cache_write_tokens,
            reasoning_tokens: r.reasoning_tokens,
            cost_nanos: r.cost_nanos,
            cost_usd: nanos_to_usd_string(r.cost_nanos),
            charged_nanos: r.charged_nanos,
            charged_usd: nanos_to_usd_string(r.charged_nanos),
            latency_ms: r.latency_ms,
            ttft_ms: r.ttft_ms,
            streamed: r.streamed,
            provenance: r.provenance.as_str(),
            user: r.user.as_deref(),
            tags: &r.tags,
        }
    }

    fn csv_fields(&self) -> [String; CSV_COLUMNS] {
        let opt = |v: Option<i64>| v.map(|n| n.to_string()).unwrap_or_default();
        [
            self.request_id.to_string(),
            self.created_at.clone(),
            self.created_at_ms.to_string(),
            self.finished_at_ms.to_string(),
            self.account_id.to_string(),
            self.key_id.to_string(),
            self.endpoint.to_string(),
            self.model_requested.to_string(),
            self.model_served.to_string(),
            self.provider.to_string(),
            self.owned_by.to_string(),
            self.source.to_string(),
            self.status.to_string(),
            self.http_status.to_string(),
            self.error_code.unwrap_or_default().to_string(),
            self.input_tokens.to_string(),
            self.output_tokens.to_string(),
            self.total_tokens.to_string(),
            self.cached_tokens.to_string(),
            self.cache_write_tokens.to_string(),
            self.reasoning_tokens.to_string(),
            self.cost_nanos.to_string(),
            self.cost_usd.clone(),
            self.charged_nanos.to_string(),
            self.charged_usd.clone(),
            self.latency_ms.to_string(),
            opt(self.ttft_ms),
            self.streamed.to_string(),
            self.provenance.to_string(),
            self.user.map(csv_text).unwrap_or_default(),
            self.tags.as_str().to_string(),
        ]
    }
}

/// Client-chosen text for a spreadsheet: a leading `=`, `+`, `-` or `@` would make it a
/// formula there (CSV injection), so such a value gets a leading `'`, as OWASP advises.
fn csv_text(v: &str) -> String {
    if v.starts_with(['=', '+', '-', '@']) {
        format!("'{v}")
    } else {
        v.to_string()
    }
}

/// One RFC 4180 field: quoted when it holds a comma, a quote, CR or LF; quotes doubled.
pub fn csv_field(out: &mut String, v: &str) {
    if v.contains([',', '"', '\r', '\n']) {
        out.push('"');
        out.push_str(&v.replace('"', "\"\""));
        out.push('"');
    } else {
        out.push_str(v);
    }
}

pub fn csv_line<S: AsRef<str>>(out: &mut String, fields: &[S]) {
    for (i, f) in fields.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        csv_field(out, f.as_ref());
    }
    out.push_str("\r\n");
}

/// Encodes one page; `first` is whether any row came before it.
fn encode_page(
    format: Format,
    records: &[UsageRecord],
    mut first: bool,
) -> Result<String, serde_json::Error> {
    let mut out = String::with_capacity(records.len() * 400);
    for r in records {
        let row = Row::new(r);
        match format {
            Format::Csv => csv_line(&mut out, &row.csv_fields()),
            Format::Ndjson => {
                out.push_str(&serde_json::to_string(&row)?);
                out.push('\n');
            }
            Format::Json => {
                if !first {
                    out.push(',');
                }
                out.push('\n');
                out.push_str(&serde_json::to_string(&row)?);
            }
        }
        first = false;
    }
    Ok(out)
}

pub async fn export(State(s): State<SharedState>, q: UsageQuery) -> Result<Response, ApiError> {
    let (_caller, p) = (&q.caller, &q.p);
    let format = match p.get("format")?.unwrap_or("json") {
        "csv" => Format::Csv,
        "json" => Format::Json,
        "ndjson" | "jsonl" => Format::Ndjson,
        other => {
            return Err(ApiError::invalid(
                "format",
                format!("`format` must be csv, json or ndjson, got `{other}`"),
            ))
        }
    };
    let tz = p.timezone()?;
    let start = p.instant("start", tz, false)?.unwrap_or(MIN_MS);
    let end = p.instant("end", tz, true)?.unwrap_or(MAX_MS);
    if end <= start {
        return Err(ApiError::invalid("end", "`end` must be after `start`"));
    }
    let model = p.get("model")?.map(String::from);
    let scope = q.scope(&s).await?;
    q.read_your_writes(&s).await;

    let filter = RecordFilter {
        model,
        ..scope.records(start, end)
    };
    // A small bounded channel: the reader runs at most a few pages ahead of the socket.
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Result<Bytes, std::io::Error>>(4);
    let state = s.clone();
    tokio::spawn(async move {
        let opening = match format {
            Format::Csv => {
                let mut h = String::new();
                csv_line(&mut h, &CSV_HEADER);
                h
            }
            Format::Json => "[".to_string(),
            Format::Ndjson => String::new(),
        };
        if !opening.is_empty() && tx.send(Ok(Bytes::from(opening))).await.is_err() {
            return;
        }
        let mut cursor: Option<RecordCursor> = None;
        let mut first = true;
        loop {
            let page = state
                .engine
                .store
                .records_page(filter.clone(), cursor.clone(), false, PAGE)
                .await;
            let page = match page {
                Ok(p) => p,
                Err(e) => {
                    // Headers are gone: end the body with an error so the client sees a broken
                    // transfer, never a silently truncated file.
                    tracing::error!(error = %e, "export read failed");
                    let _ = tx
                        .send(Err(std::io::Error::other("export read failed")))
                        .await;
                    return;
                }
            };
            let chunk = match encode_page(format, &page, first) {
                Ok(c) => c,
                Err(e) => {
                    let _ = tx.send(Err(std::io::Error::other(e.to_string()))).await;
                    return;
                }
            };
            first = first && page.is_empty();
            if !chunk.is_empty() && tx.send(Ok(Bytes::from(chunk))).await.is_err() {
                return; // the client went away
            }
            match page.last() {
                Some(r) if page.len() == PAGE => {
                    cursor = Some(RecordCursor {
                        created_at_ms: r.created_at_ms,
                        request_id: r.request_id.clone(),
                    })
                }
                _ => break,
            }
        }
        if format == Format::Json {
            let _ = tx.send(Ok(Bytes::from_static(b"\n]\n"))).await;
        }
    });
    let stream = futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx));
    let (content_type, ext) = match format {
        Format::Csv => ("text/csv; charset=utf-8", "csv"),
        Format::Json => ("application/json", "json"),
        Format::Ndjson => ("application/x-ndjson", "ndjson"),
    };
    let mut resp = Body::from_stream(stream).into_response();
    let h = resp.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    if let Ok(v) = HeaderValue::from_str(&format!("attachment; filename=\"usage.{ext}\"")) {
        h.insert(header::CONTENT_DISPOSITION, v);
    }
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(resp)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc4180_quoting() {
        let mut out = String::new();
        csv_line(
            &mut out,
            &["plain", "with,comma", "say \"hi\"", "two\r\nlines", ""],
        );
        assert_eq!(
            out,
            "plain,\"with,comma\",\"say \"\"hi\"\"\",\"two\r\nlines\",\r\n"
        );
    }

    #[test]
    fn header_names_are_distinct_and_end_with_attribution() {
        let mut names = CSV_HEADER.to_vec();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), CSV_COLUMNS);
        assert_eq!(CSV_HEADER[CSV_COLUMNS - 2..], ["user", "tags"]);
    }
}
