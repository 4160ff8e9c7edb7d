//! Sending a request upstream, and journaling its start (`SentSignal::sent`) once it has gone:
//! a request the process dies after sending is recorded as `interrupted` at the next start; one
//! it dies before sending was never served and must not be charged.
//!
//! "Gone" is observed as: the connection has taken the body (a one-chunk body stream signals
//! when it is polled), and then `SENT_AFTER` has passed. The connection takes the body just
//! before writing it, in the same poll, so journaling at that instant would, now and then,
//! record a request the process died before writing (a thread can be descheduled between the
//! two writes); a few milliseconds later the bytes are out. The price is that a request sent in
//! the last `SENT_AFTER` before a crash goes unrecorded. The start is journaled only if the
//! exchange is still running then (waiting for the answer, reading its body, streaming): one
//! that has already journaled its record needs no start, and most non-streamed requests end
//! sooner (a start line, its lock and its `write(2)` per request were ~7 % of the gateway's CPU).
//!
//! The body keeps its `Content-Length`, so the upstream sees the same request as before.
//! hyper's pooled client retries only a request whose pooled connection closed before it was
//! written; HTTP/2 refusals (a server's graceful GOAWAY, REFUSED_STREAM) are retried here, by
//! the rule reqwest used.

use std::error::Error as _;
use std::future::Future;
use std::time::{Duration, Instant};

use axum::http::{header, HeaderMap, HeaderName, HeaderValue, Uri};
use bytes::Bytes;
use tokio::sync::oneshot;
use tollgate_core::config::ProviderKind;
use tollgate_core::record::Endpoint;
use tollgate_engine::settle::SentSignal;

use super::client::{post, ClientError, OnceBody, UpstreamClient, UpstreamResponse};

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

/// A request's head: where it goes and its headers, checked once, sent by every attempt.
pub struct Outgoing {
    uri: Uri,
    headers: HeaderMap,
}

/// A POST of a JSON body to `uri`, as `cred`, tagged with the gateway's request id. Fails
/// only for a credential that cannot be a header value (a configured key with a newline).
pub fn request(
    uri: Uri,
    request_id: &str,
    cred: &Credential<'_>,
) -> Result<Outgoing, header::InvalidHeaderValue> {
    let mut headers = HeaderMap::with_capacity(6);
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    headers.insert(
        HeaderName::from_static("x-tollgate-request-id"),
        HeaderValue::from_str(request_id)?,
    );
    let secret = |v: &str| {
        let mut v = HeaderValue::from_str(v)?;
        v.set_sensitive(true);
        Ok::<_, header::InvalidHeaderValue>(v)
    };
    match (cred.kind, cred.api) {
        (ProviderKind::Anthropic, Endpoint::Messages) => {
            headers.insert(HeaderName::from_static("x-api-key"), secret(cred.api_key)?);
            headers.insert(
                HeaderName::from_static("anthropic-version"),
                HeaderValue::from_str(cred.anthropic_version.unwrap_or("2023-06-01"))?,
            );
            if let Some(beta) = cred.anthropic_beta {
                headers.insert(
                    HeaderName::from_static("anthropic-beta"),
                    HeaderValue::from_str(beta)?,
                );
            }
        }
        _ => {
            headers.insert(
                header::AUTHORIZATION,
                secret(&format!("Bearer {}", cred.api_key))?,
            );
        }
    }
    Ok(Outgoing { uri, headers })
}

/// The error for a request `request` could not build: the provider's credential (or a header
/// passed on) is not a valid header value.
pub fn invalid_header(provider: &str, e: header::InvalidHeaderValue) -> crate::error::ApiError {
    crate::error::ApiError::new(
        tollgate_core::Code::ProviderError,
        format!(
            "provider {provider} has a credential or header that is not a valid header value: {e}"
        ),
    )
}

impl Outgoing {
    /// The request of one attempt, with `body` (a copy of the head: another may follow).
    fn build(&self, body: OnceBody) -> axum::http::Request<OnceBody> {
        let mut req = post(self.uri.clone(), body);
        *req.headers_mut() = self.headers.clone();
        req
    }
}

/// Sends `out` with `body` once (no journaling, no retry): for calls that are not metered.
pub async fn send_once(
    client: &UpstreamClient,
    out: Outgoing,
    body: Bytes,
) -> Result<UpstreamResponse, ClientError> {
    let mut req = post(out.uri, OnceBody::new(body, None));
    *req.headers_mut() = out.headers;
    client.request(req).await
}

/// Retries of a request the upstream refused unprocessed (reqwest's default was 2 as well).
const MAX_RETRIES: usize = 2;

/// How long after the connection takes a body it is taken to be written.
const SENT_AFTER: Duration = Duration::from_millis(5);

/// The upstream's answer, and its request's start, which falls due `SENT_AFTER` after the
/// body was taken: an exchange still running then journals it (see `StartDue`).
pub struct Answer {
    pub response: UpstreamResponse,
    pub start: StartDue,
}

/// A sent request's start, journaled only if its exchange is still running when it falls due.
/// A request answered and finished within `SENT_AFTER` of sending (most non-streamed ones)
/// journals no start at all; the window in which a crash loses a sent request stays the
/// `SENT_AFTER` the module describes.
pub struct StartDue {
    sent: SentSignal,
    /// `None` once journaled.
    due: Option<Instant>,
}

impl StartDue {
    /// Runs `work` on the answer (reading its body), journaling the start if it is still running
    /// at the due time. The work is polled first, so work that is done at once (a small body that
    /// came with the headers) sets no timer.
    pub async fn around<F: Future>(&mut self, work: F) -> F::Output {
        let Some(due) = self.due else {
            return work.await;
        };
        tokio::pin!(work);
        tokio::select! {
            biased;
            out = &mut work => return out,
            _ = tokio::time::sleep_until(due.into()) => self.journal(),
        }
        work.await
    }

    /// For a loop that waits on its own (a stream): journals the start if it has fallen due by
    /// `now`, else says how long until it does (`None`: journaled already).
    pub fn check(&mut self, now: Instant) -> Option<Duration> {
        let due = self.due?;
        if now >= due {
            self.journal();
            return None;
        }
        Some(due - now)
    }

    fn journal(&mut self) {
        self.sent.sent();
        self.due = None;
    }
}

pub async fn send(
    client: &UpstreamClient,
    out: &Outgoing,
    body: Bytes,
    sent: SentSignal,
) -> Result<Answer, ClientError> {
    let mut retries = 0;
    loop {
        match attempt(client, out, body.clone(), &sent).await {
            Err(e) if retries < MAX_RETRIES && refused_unprocessed(&e) => {
                tracing::debug!(error = %e, "upstream refused the request unprocessed; retrying");
                retries += 1;
            }
            Err(e) => return Err(e),
            Ok((response, due)) => {
                sent.answered();
                let start = StartDue {
                    sent,
                    due: Some(due),
                };
                return Ok(Answer { response, start });
            }
        }
    }
}

/// One try: the response, and when the request's start falls due.
async fn attempt(
    client: &UpstreamClient,
    out: &Outgoing,
    body: Bytes,
    sent: &SentSignal,
) -> Result<(UpstreamResponse, Instant), ClientError> {
    let (taken_tx, taken_rx) = oneshot::channel::<()>();
    let len = HeaderValue::from(body.len());
    let mut req = out.build(OnceBody::new(body, Some(taken_tx)));
    req.headers_mut().insert(header::CONTENT_LENGTH, len);
    let response = client.request(req);
    tokio::pin!(response);
    // Until the connection takes the body, nothing has been sent. (A body dropped untaken was
    // never sent; a response before it is taken still means the upstream has the request.)
    let taken = tokio::select! {
        r = &mut response => return Ok((r?, Instant::now() + SENT_AFTER)),
        t = taken_rx => t.is_ok(),
    };
    let due = Instant::now() + SENT_AFTER;
    if !taken {
        return Ok((response.await?, due));
    }
    tokio::select! {
        r = &mut response => Ok((r?, due)),
        _ = tokio::time::sleep_until(due.into()) => {
            sent.sent();
            Ok((response.await?, due))
        }
    }
}

/// An HTTP/2 refusal the server guarantees it did not act on: a graceful GOAWAY or
/// REFUSED_STREAM (RFC 9113 §8.7). The same test as reqwest's default retry policy.
fn refused_unprocessed(e: &ClientError) -> bool {
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
