//! Sending a request upstream, and journaling its start (`SentSignal::sent`) once it has gone:
//! a request the process dies after sending is recorded as `interrupted` at the next start; one
//! it dies before sending was never served and must not be charged.
//!
//! "Gone" is observed as: the connection has taken the body (a one-chunk body stream signals
//! when it is polled), and then `SENT_AFTER` has passed or the response has begun, whichever is
//! first. The connection takes the body just before writing it, in the same poll, so journaling
//! at that instant would, now and then, record a request the process died before writing (a
//! thread can be descheduled between the two writes); a few milliseconds later the bytes are
//! out. The price is that a request sent in the last `SENT_AFTER` before a crash goes unrecorded.
//!
//! The body keeps its `Content-Length`, so the upstream sees the same request as before. A
//! streamed body cannot be replayed by reqwest's own retry of HTTP/2 refusals (a server's
//! graceful GOAWAY, REFUSED_STREAM), so that retry is done here, by the same rule.

use std::convert::Infallible;
use std::error::Error as _;
use std::time::Duration;

use axum::http::header;
use bytes::Bytes;
use reqwest::Url;
use tokio::sync::oneshot;
use tollgate_core::config::ProviderKind;
use tollgate_core::record::Endpoint;
use tollgate_engine::settle::SentSignal;

/// Who a request goes upstream as: only the provider's own credential is sent, never the
/// client's key.
pub struct Credential<'a> {
    pub kind: ProviderKind,
    pub api: Endpoint,
    pub api_key: &'a str,
    /// The client's `anthropic-version` / `anthropic-beta`, passed on to Anthropic.
    pub anthropic_version: Option<&'a str>,
    pub anthropic_beta: Option<&'a str>,
}

/// A POST of a JSON body to `url`, as `cred`, tagged with the gateway's request id.
pub fn request(
    http: &reqwest::Client,
    url: Url,
    request_id: &str,
    cred: &Credential<'_>,
) -> reqwest::RequestBuilder {
    let rb = http
        .post(url)
        .header(header::CONTENT_TYPE, "application/json")
        .header("x-tollgate-request-id", request_id);
    match (cred.kind, cred.api) {
        (ProviderKind::Anthropic, Endpoint::Messages) => {
            let mut rb = rb.header("x-api-key", cred.api_key).header(
                "anthropic-version",
                cred.anthropic_version.unwrap_or("2023-06-01"),
            );
            if let Some(beta) = cred.anthropic_beta {
                rb = rb.header("anthropic-beta", beta);
            }
            rb
        }
        _ => rb.bearer_auth(cred.api_key),
    }
}

/// Retries of a request the upstream refused unprocessed (reqwest's default is 2 as well).
const MAX_RETRIES: usize = 2;

/// How long after the connection takes a body it is taken to be written.
const SENT_AFTER: Duration = Duration::from_millis(5);

pub async fn send(
    mut rb: reqwest::RequestBuilder,
    body: Bytes,
    sent: SentSignal,
) -> reqwest::Result<reqwest::Response> {
    let mut retries = 0;
    loop {
        // A builder without a body can always be copied; the last attempt needs no copy.
        let spare = if retries < MAX_RETRIES {
            rb.try_clone()
        } else {
            None
        };
        let result = attempt(rb, body.clone(), &sent).await;
        match (result, spare) {
            (Err(e), Some(next)) if refused_unprocessed(&e) => {
                tracing::debug!(error = %e, "upstream refused the request unprocessed; retrying");
                retries += 1;
                rb = next;
            }
            (result, _) => return result,
        }
    }
}

async fn attempt(
    rb: reqwest::RequestBuilder,
    body: Bytes,
    sent: &SentSignal,
) -> reqwest::Result<reqwest::Response> {
    let (taken_tx, taken_rx) = oneshot::channel::<()>();
    let len = body.len();
    let stream = futures_util::stream::once(async move {
        let _ = taken_tx.send(());
        Ok::<Bytes, Infallible>(body)
    });
    let response = rb
        .header(header::CONTENT_LENGTH, len)
        .body(reqwest::Body::wrap_stream(stream))
        .send();
    tokio::pin!(response);
    // A response means the request went out (the upstream is answering it).
    let answered = |r: reqwest::Result<reqwest::Response>| {
        if r.is_ok() {
            sent.sent();
        }
        r
    };
    // Until the connection takes the body, nothing has been sent. (A body dropped untaken was
    // never sent.)
    let taken = tokio::select! {
        r = &mut response => return answered(r),
        t = taken_rx => t.is_ok(),
    };
    if !taken {
        return answered(response.await);
    }
    tokio::select! {
        r = &mut response => answered(r),
        _ = tokio::time::sleep(SENT_AFTER) => {
            sent.sent();
            response.await
        }
    }
}

/// An HTTP/2 refusal the server guarantees it did not act on: a graceful GOAWAY or
/// REFUSED_STREAM (RFC 9113 §8.7). The same test as reqwest's default retry policy.
fn refused_unprocessed(e: &reqwest::Error) -> bool {
    let mut source = e.source();
    while let Some(s) = source {
        if let Some(h2e) = s.downcast_ref::<h2::Error>() {
            let remote = h2e.is_remote();
            return (h2e.is_go_away() && remote && h2e.reason() == Some(h2::Reason::NO_ERROR))
                || (h2e.is_reset() && remote && h2e.reason() == Some(h2::Reason::REFUSED_STREAM));
        }
        source = s.source();
    }
    false
}
