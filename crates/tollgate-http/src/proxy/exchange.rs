//! One request's lifecycle after it has been checked: forward it upstream, pass the answer back
//! (whole, or event by event), and meter it exactly once at the end (`Exchange::finish`).
//!
//! The exchange runs in a task of its own, so a client that hangs up does not cancel it: the
//! upstream is still read to its end (bounded by `drain_timeout_secs`) and the request is
//! recorded as `cancelled` with the tokens it really used. The record is journaled before the
//! client receives the last bytes of its response.
//!
//! What an upstream can make the gateway hold is bounded: a non-streamed body by
//! `max_upstream_body_bytes` (502), one stream event by `max_sse_event_bytes` and a stream's
//! life by `max_stream_secs`; a stream the gateway ends itself ends with an error event in its
//! own wire format (`sse::error_event`) and is recorded as an error.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::Response;
use bytes::{Bytes, BytesMut};
use futures_util::StreamExt;
use http_body_util::BodyDataStream;
use serde_json::Value;
use tokio::sync::{mpsc, oneshot};
use tollgate_core::metering::tokenizer;
use tollgate_core::metering::usage::{self, EventAction, StreamMeter};
use tollgate_core::money::nanos_to_credits;
use tollgate_core::record::{Endpoint, Status};
use tollgate_core::request::ProxyRequest;
use tollgate_core::Code;
use tollgate_engine::admission::Admitted;
use tollgate_engine::routing::Provider;
use tollgate_engine::settle::{Outcome, Ticket, Tokens};

use super::client::{UpstreamClient, UpstreamResponse};
use super::sse::{error_event, EventTooLarge, SseSplitter};
use super::upstream;
use crate::error::{rate_headers, ApiError};
use crate::state::SharedState;

/// Time and size limits of an exchange, from `[server]`.
#[derive(Debug, Clone, Copy)]
struct Timeouts {
    upstream: Duration,
    idle: Duration,
    drain: Duration,
    /// A stream's whole life, from the request's arrival.
    stream: Duration,
    /// A non-streamed upstream body.
    max_body: usize,
    /// One upstream SSE event.
    max_event: usize,
}

pub struct Exchange {
    http: UpstreamClient,
    timeouts: Timeouts,
    /// Credits per USD, for `x-credits-remaining`.
    per_usd: i64,
    api: Endpoint,
    provider: Arc<Provider>,
    api_key: String,
    anthropic_version: Option<String>,
    anthropic_beta: Option<String>,
    req: ProxyRequest,
    /// The hold, permit and record facts, settled once.
    ticket: Ticket,
    /// The key's `x-ratelimit-*` headers, sent with every response.
    rate_headers: Vec<(&'static str, String)>,
}

type Head = Result<Response, ApiError>;

impl Exchange {
    pub fn new(
        s: SharedState,
        api: Endpoint,
        provider: Arc<Provider>,
        headers: &HeaderMap,
        req: ProxyRequest,
        admitted: Admitted,
    ) -> Self {
        let cfg = &s.engine.config.server;
        Self {
            http: s.http.clone(),
            timeouts: Timeouts {
                upstream: Duration::from_secs(cfg.upstream_timeout_secs),
                idle: Duration::from_secs(cfg.stream_idle_timeout_secs),
                drain: Duration::from_secs(cfg.drain_timeout_secs),
                stream: Duration::from_secs(cfg.max_stream_secs),
                max_body: cfg.max_upstream_body_bytes,
                max_event: cfg.max_sse_event_bytes,
            },
            per_usd: s.engine.config.credits.per_usd,
            api,
            provider,
            api_key: admitted.api_key,
            anthropic_version: header_str(headers, "anthropic-version"),
            anthropic_beta: header_str(headers, "anthropic-beta"),
            req,
            ticket: admitted.ticket,
            rate_headers: rate_headers(&admitted.rate),
        }
    }

    pub async fn run(self) -> Result<Response, ApiError> {
        let (head_tx, head_rx) = oneshot::channel::<Head>();
        tokio::spawn(self.drive(head_tx));
        head_rx
            .await
            .unwrap_or_else(|_| Err(ApiError::internal("the exchange ended without a response")))
    }

    async fn drive(mut self, head_tx: oneshot::Sender<Head>) {
        let Some(url) = self.provider.url(self.api).cloned() else {
            let err = ApiError::new(
                Code::ProviderError,
                format!("provider {} has an invalid base_url", self.provider.name),
            );
            return self.fail(head_tx, err, 502, None);
        };
        let out = upstream::request(
            url,
            self.ticket.request_id(),
            &upstream::Credential {
                kind: self.provider.kind,
                api: self.api,
                api_key: &self.api_key,
                anthropic_version: self.anthropic_version.as_deref(),
                anthropic_beta: self.anthropic_beta.as_deref(),
            },
        );
        let out = match out {
            Ok(out) => out,
            Err(e) => {
                let err = upstream::invalid_header(&self.provider.name, e);
                return self.fail(head_tx, err, 502, None);
            }
        };
        let timeout = self.timeouts.upstream;
        let body = self.req.forward.clone();
        let send = upstream::send(&self.http, &out, body, self.ticket.on_sent());
        let sent = tokio::time::timeout(timeout, send).await;
        let answer = match sent {
            Err(_) => {
                let err = ApiError::new(
                    Code::UpstreamTimeout,
                    format!(
                        "provider {} did not answer within {}s",
                        self.provider.name,
                        timeout.as_secs()
                    ),
                );
                return self.fail(head_tx, err, 504, None);
            }
            Ok(Err(e)) => {
                let err = ApiError::new(
                    Code::ProviderError,
                    format!(
                        "provider {} is unreachable: {}",
                        self.provider.name,
                        error_chain(&e)
                    ),
                );
                return self.fail(head_tx, err, 502, None);
            }
            Ok(Ok(a)) => a,
        };
        let upstream::Answer {
            response: resp,
            mut start,
        } = answer;
        let status = resp.status();
        if !status.is_success() {
            let body = start
                .around(read_limited(resp, 1024 * 1024))
                .await
                .unwrap_or_default();
            let message = upstream_message(&body).unwrap_or_else(|| {
                format!(
                    "provider {} answered {}",
                    self.provider.name,
                    status.as_u16()
                )
            });
            let err = ApiError::new(Code::Upstream(status.as_u16()), message);
            return self.fail(head_tx, err, status.as_u16(), Some("upstream_error"));
        }
        if self.req.stream {
            self.stream(resp, start, head_tx).await
        } else {
            self.whole(resp, start, head_tx).await
        }
    }

    /// The upstream failed before answering: record it, then tell the client.
    fn fail(
        &mut self,
        head_tx: oneshot::Sender<Head>,
        err: ApiError,
        http_status: u16,
        code: Option<&str>,
    ) {
        self.fail_with(head_tx, err, http_status, code, Tokens::None);
    }

    /// A failed exchange whose upstream may have generated `tokens` all the same.
    fn fail_with(
        &mut self,
        head_tx: oneshot::Sender<Head>,
        mut err: ApiError,
        http_status: u16,
        code: Option<&str>,
        tokens: Tokens,
    ) {
        let status = if head_tx.is_closed() {
            Status::Cancelled
        } else {
            Status::Error
        };
        let available = self.finish(Outcome {
            status,
            http_status,
            error_code: Some(code.unwrap_or(err.code.as_str()).to_string()),
            tokens,
            model_served: None,
            ttft_ms: None,
        });
        // Failed exchanges are proxied responses too: they carry the (unchanged) balance.
        err.headers.extend(self.account_headers(available));
        let _ = head_tx.send(Err(err));
    }

    async fn whole(
        mut self,
        resp: UpstreamResponse,
        mut start: upstream::StartDue,
        head_tx: oneshot::Sender<Head>,
    ) {
        let status = resp.status();
        let content_type = resp.headers().get(header::CONTENT_TYPE).cloned();
        // The upstream timeout covers the whole exchange, body included, so a body that stalls
        // after its headers still ends (and releases its hold).
        let limit = self.timeouts.upstream;
        let left = limit.saturating_sub(self.ticket.started().elapsed());
        let max = self.timeouts.max_body;
        let read = start.around(read_capped(resp, max));
        let body = match tokio::time::timeout(left, read).await {
            Ok(Ok(b)) => b,
            Err(_) => {
                let err = ApiError::new(
                    Code::UpstreamTimeout,
                    format!(
                        "provider {} did not finish its response within {}s",
                        self.provider.name,
                        limit.as_secs()
                    ),
                );
                return self.fail(head_tx, err, 504, None);
            }
            Ok(Err(BodyError::TooLarge)) => {
                let err = ApiError::new(
                    Code::ProviderError,
                    format!(
                        "provider {} sent a response larger than {max} bytes (server.max_upstream_body_bytes)",
                        self.provider.name
                    ),
                );
                // The upstream answered (and bills it); its usage went unread with the body,
                // so the input is counted locally.
                let tokens = Tokens::Estimate {
                    output: 0,
                    input: None,
                };
                return self.fail_with(head_tx, err, 502, Some("upstream_body_too_large"), tokens);
            }
            Ok(Err(BodyError::Broken(e))) => {
                let err = ApiError::new(
                    Code::ProviderError,
                    format!(
                        "provider {} broke off its response: {}",
                        self.provider.name,
                        error_chain(&e)
                    ),
                );
                return self.fail(head_tx, err, 502, None);
            }
        };
        let (reported, model_served) = usage::from_response_bytes(self.api, &body);
        let tokens = match reported {
            Some(u) => Tokens::Reported(u),
            None => {
                // Rare: only now is the whole body parsed, to count its text.
                let json: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
                Tokens::Estimate {
                    output: tokenizer::count_text(&usage::response_text(self.api, &json)),
                    input: None,
                }
            }
        };
        // A closed receiver means the client hung up while the upstream worked.
        let gone = head_tx.is_closed();
        let available = self.finish(Outcome {
            status: if gone {
                Status::Cancelled
            } else {
                Status::Success
            },
            http_status: status.as_u16(),
            error_code: gone.then(|| "client_disconnected".to_string()),
            tokens,
            model_served,
            ttft_ms: None,
        });
        // Non-streamed responses are settled before they leave: the header is the balance after
        // this request's charge.
        let mut response = Response::new(Body::from(body));
        *response.status_mut() = status;
        add_headers(&mut response, &self.account_headers(available));
        response.headers_mut().insert(
            header::CONTENT_TYPE,
            content_type.unwrap_or_else(|| HeaderValue::from_static("application/json")),
        );
        let _ = head_tx.send(Ok(response));
    }

    async fn stream(
        mut self,
        resp: UpstreamResponse,
        mut start: upstream::StartDue,
        head_tx: oneshot::Sender<Head>,
    ) {
        let Timeouts {
            idle,
            drain,
            stream: max_stream,
            max_event,
            ..
        } = self.timeouts;
        let (body_tx, body_rx) = mpsc::channel::<Result<Bytes, std::io::Error>>(64);
        let mut response = Response::new(Body::from_stream(tokio_stream_from(body_rx)));
        *response.status_mut() = StatusCode::OK;
        let h = response.headers_mut();
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/event-stream"),
        );
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
        // A stream's headers leave before its cost is known: the value is what the account has
        // available with this request's maximum cost held.
        add_headers(
            &mut response,
            &self.account_headers(self.ticket.available_after_hold()),
        );
        let mut client_alive = head_tx.send(Ok(response)).is_ok();
        let mut drain_deadline = (!client_alive).then(|| Instant::now() + drain);

        let mut upstream = BodyDataStream::new(resp.into_body());
        let mut splitter = SseSplitter::new(max_event);
        // None only for a limit beyond what the clock can represent, i.e. none.
        let deadline = self.ticket.started().checked_add(max_stream);
        let mut meter = StreamMeter::new(self.api, self.req.client_wants_usage);
        let mut ttft_ms = None;
        let mut terminal: Option<Bytes> = None;
        // Set when the gateway ends the stream itself: the client's stream then ends cleanly
        // with this error event (instead of breaking), and `ended` carries its error code.
        let mut stopped: Option<Bytes> = None;
        let past_deadline = |api, seq| {
            error_event(
                api,
                Code::UpstreamTimeout,
                "stream_deadline",
                &format!(
                    "the stream passed its maximum duration of {}s (server.max_stream_secs)",
                    max_stream.as_secs()
                ),
                seq,
            )
        };
        // Ok(true) = the stream ended properly; Ok(false) = upstream ended early; Err = broke
        // (or was stopped, see `stopped`).
        let ended: Result<bool, &'static str> = loop {
            let now = Instant::now();
            let left = deadline.map(|d| d.saturating_duration_since(now));
            // Checked here too: an upstream that always has a chunk ready never lets the
            // timeout below fire.
            if left == Some(Duration::ZERO) {
                stopped = Some(past_deadline(self.api, meter.events()));
                break Err("stream_deadline");
            }
            let mut wait = left.map_or(idle, |l| l.min(idle));
            if let Some(d) = drain_deadline {
                wait = wait.min(d.saturating_duration_since(now));
            }
            // A stream still running when its start falls due journals it.
            let start_in = start.check(now);
            if let Some(s) = start_in {
                wait = wait.min(s);
            }
            let next = match tokio::time::timeout(wait, upstream.next()).await {
                // Woken for the start (journaled at the top of the loop), not by a limit.
                Err(_) if start_in.is_some_and(|s| s <= wait) => continue,
                Err(_) if deadline.is_some_and(|d| Instant::now() >= d) => {
                    stopped = Some(past_deadline(self.api, meter.events()));
                    break Err("stream_deadline");
                }
                Err(_) => break Err("upstream_timeout"),
                Ok(None) => break Ok(meter.reported().is_some()),
                Ok(Some(Err(_))) => break Err("upstream_stream_broken"),
                Ok(Some(Ok(chunk))) => chunk,
            };
            if ttft_ms.is_none() {
                ttft_ms = i64::try_from(self.ticket.started().elapsed().as_millis()).ok();
            }
            let events = match splitter.push_bytes(&next) {
                Ok(events) => events,
                Err(EventTooLarge { limit }) => {
                    stopped = Some(error_event(
                        self.api,
                        Code::ProviderError,
                        "upstream_event_too_large",
                        &format!(
                            "provider {} sent a stream event larger than {limit} bytes (server.max_sse_event_bytes)",
                            self.provider.name
                        ),
                        meter.events(),
                    ));
                    break Err("upstream_event_too_large");
                }
            };
            let mut out: Vec<Bytes> = Vec::new();
            let mut past_hold = false;
            for ev in events {
                let (event, data) = ev.fields();
                let action = meter.on_event(&event, &data);
                match action {
                    EventAction::Forward => out.push(ev.raw),
                    EventAction::Drop => {}
                    EventAction::Terminal => terminal = Some(ev.raw),
                }
                // Per event: one chunk can carry the whole rest of a stream.
                if self.past_hold(&mut meter) {
                    past_hold = true;
                    break;
                }
            }
            // One event per chunk (the usual case) goes out without a copy.
            let out = match out.len() {
                0 => None,
                1 => out.pop(),
                _ => Some(Bytes::from(out.concat())),
            };
            if let (true, Some(out)) = (client_alive, out) {
                if body_tx.send(Ok(out)).await.is_err() {
                    client_alive = false;
                    drain_deadline = Some(Instant::now() + drain);
                }
            }
            if terminal.is_some() {
                break Ok(true);
            }
            if past_hold {
                stopped = Some(error_event(
                    self.api,
                    Code::CreditHoldExceeded,
                    HOLD_EXCEEDED,
                    "the stream was ended: its cost passed the credit held for it (the upstream \
                     went past the output cap it was sent)",
                    meter.events(),
                ));
                break Err(HOLD_EXCEEDED);
            }
        };
        let rest = splitter.take_rest();
        let model_served = meter.model().map(str::to_string);
        let tokens = match meter.reported() {
            Some(u) => Tokens::Reported(u),
            None => Tokens::Estimate {
                output: meter.estimate_output(),
                input: meter.reported_input(),
            },
        };
        let (status, error_code) = match (&ended, client_alive) {
            (_, false) => (Status::Cancelled, Some("client_disconnected".to_string())),
            // An error event ends a Responses stream without a terminal event after it.
            (Ok(_), true) if meter.saw_error_event => {
                (Status::Error, Some("upstream_error_event".to_string()))
            }
            (Ok(true), true) => (Status::Success, None),
            (Ok(false), true) => (Status::Error, Some("upstream_ended_early".to_string())),
            (Err(code), true) => (Status::Error, Some((*code).to_string())),
        };
        self.finish(Outcome {
            status,
            http_status: 200,
            error_code,
            tokens,
            model_served,
            ttft_ms,
        });
        let was_stopped = stopped.is_some();
        // Only now, with the record durable, does the client get the end of its stream.
        if client_alive {
            match (terminal, ended) {
                (Some(t), _) => {
                    let _ = body_tx.send(Ok(t)).await;
                }
                (None, Ok(_)) => {
                    if !rest.is_empty() {
                        let _ = body_tx.send(Ok(rest)).await;
                    }
                }
                (None, Err(code)) => match stopped.take() {
                    // Stopped by the gateway: a clean end that says why.
                    Some(ev) => {
                        let _ = body_tx.send(Ok(ev)).await;
                    }
                    // Break the client's stream too, rather than end it as if complete.
                    None => {
                        let _ = body_tx.send(Err(std::io::Error::other(code))).await;
                    }
                },
            }
        }
        drop(body_tx);
        // Read what follows the terminal event so the connection can go back to the pool; an
        // upstream the gateway stopped is not read further (its connection is closed).
        if !was_stopped {
            let _ = tokio::time::timeout(Duration::from_secs(1), async {
                while let Some(Ok(_)) = upstream.next().await {}
            })
            .await;
        }
    }

    /// Metering happens in the engine, once (`Ticket::settle`).
    fn finish(&mut self, o: Outcome) -> i64 {
        self.ticket.settle(o)
    }

    /// Headers every proxied response carries: the credit left, the output cap the gateway set
    /// (when the hold covers less than was asked), and the key's rate limits.
    fn account_headers(&self, available_nanos: i64) -> Vec<(&'static str, String)> {
        let credits = nanos_to_credits(available_nanos, self.per_usd);
        let mut h = vec![("x-credits-remaining", credits.to_string())];
        if let Some(cap) = self.ticket.capped() {
            h.push(("x-tollgate-max-tokens", cap.to_string()));
        }
        h.extend(self.rate_headers.iter().cloned());
        h
    }

    /// The stream has produced more output than its credit hold covers (an upstream ignoring
    /// the cap it was sent).
    fn past_hold(&self, meter: &mut StreamMeter) -> bool {
        self.ticket
            .stream_output_limit()
            .is_some_and(|limit| meter.output_exceeds(limit))
    }
}

/// `ended` of a stream the gateway cut because it passed its credit hold.
const HOLD_EXCEEDED: &str = "credit_hold_exceeded";

pub(super) fn add_headers(response: &mut Response, headers: &[(&'static str, String)]) {
    for (name, value) in headers {
        if let Ok(v) = HeaderValue::from_str(value) {
            response.headers_mut().insert(*name, v);
        }
    }
}

pub(super) fn header_str(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
}

/// The message of an OpenAI- or Anthropic-shaped error body.
pub(super) fn upstream_message(body: &[u8]) -> Option<String> {
    let v: Value = serde_json::from_slice(body).ok()?;
    let e = v.get("error")?;
    e.get("message")
        .and_then(Value::as_str)
        .or_else(|| e.as_str())
        .map(str::to_string)
}

pub(super) async fn read_limited(resp: UpstreamResponse, limit: usize) -> Option<Bytes> {
    let mut stream = BodyDataStream::new(resp.into_body());
    let mut buf = BytesMut::new();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.ok()?;
        if buf.len() + chunk.len() > limit {
            break;
        }
        buf.extend_from_slice(&chunk);
    }
    Some(buf.freeze())
}

pub(super) enum BodyError {
    /// Past the configured limit.
    TooLarge,
    Broken(hyper::Error),
}

/// A whole upstream body, refused as soon as it passes `max` bytes (before reading it when its
/// length is announced). With a length, the body is read into one buffer of that size; without
/// one, chunks are kept as they arrive and joined once into an exact-size buffer. Either way no
/// buffer grows past the body, and a refused body is dropped at once.
pub(super) async fn read_capped(resp: UpstreamResponse, max: usize) -> Result<Bytes, BodyError> {
    let body = resp.into_body();
    // hyper's hint is exact when the response announced its `Content-Length`.
    let announced = match hyper::body::Body::size_hint(&body)
        .exact()
        .map(usize::try_from)
    {
        Some(Ok(n)) if n <= max => Some(n),
        Some(_) => return Err(BodyError::TooLarge),
        None => None,
    };
    let mut stream = BodyDataStream::new(body);
    let mut whole = announced.map(BytesMut::with_capacity);
    let mut chunks: Vec<Bytes> = Vec::new();
    let mut len = 0usize;
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(BodyError::Broken)?;
        len = len.saturating_add(chunk.len());
        if len > max {
            return Err(BodyError::TooLarge);
        }
        match &mut whole {
            // Within the announced length (hyper refuses a body longer than it), so no regrowth.
            Some(buf) => buf.extend_from_slice(&chunk),
            None => chunks.push(chunk),
        }
    }
    if let Some(buf) = whole {
        return Ok(buf.freeze());
    }
    if chunks.len() <= 1 {
        return Ok(chunks.pop().unwrap_or_default());
    }
    let mut body = BytesMut::with_capacity(len);
    for c in chunks {
        body.extend_from_slice(&c);
    }
    Ok(body.freeze())
}

/// An error with its causes ("connection refused" sits in the source chain).
pub(super) fn error_chain(e: &dyn std::error::Error) -> String {
    let mut msg = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        msg = format!("{msg}: {s}");
        source = s.source();
    }
    msg
}

fn tokio_stream_from(
    mut rx: mpsc::Receiver<Result<Bytes, std::io::Error>>,
) -> impl futures_util::Stream<Item = Result<Bytes, std::io::Error>> {
    futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx))
}
