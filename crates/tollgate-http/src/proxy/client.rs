//! The upstream HTTP client: hyper's pooled client over rustls (Mozilla's roots, via
//! `webpki-roots`), HTTP/1.1 and HTTP/2 by ALPN, without reqwest's layers. reqwest re-parsed
//! every request's URL for its redirect policy, cloned its connector stack per request and
//! boxed its futures (~5 % of the gateway's CPU per request), and let no caller size a
//! connection's buffers. A gateway follows no redirects: an upstream's 3xx goes back to the
//! client as the answer it is.

use std::convert::Infallible;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, Uri};
use hyper::body::{Body, Frame, Incoming, SizeHint};
use hyper_rustls::{HttpsConnector, HttpsConnectorBuilder};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::{Client, ResponseFuture};
use hyper_util::rt::{TokioExecutor, TokioTimer};
use tokio::sync::oneshot;

pub use hyper_util::client::legacy::Error as ClientError;

/// An upstream's answer; its body is read as it arrives.
pub type UpstreamResponse = Response<Incoming>;

/// How the client keeps its connections.
#[derive(Debug, Clone, Copy)]
pub struct ClientOptions {
    pub connect_timeout: Duration,
    pub pool_idle_timeout: Duration,
    pub pool_max_idle_per_host: usize,
}

impl Default for ClientOptions {
    fn default() -> Self {
        Self {
            connect_timeout: Duration::from_secs(10),
            pool_idle_timeout: Duration::from_secs(90),
            pool_max_idle_per_host: 1024,
        }
    }
}

/// Cheap to clone: one pool behind it.
#[derive(Clone)]
pub struct UpstreamClient {
    inner: Client<HttpsConnector<HttpConnector>, OnceBody>,
}

impl UpstreamClient {
    pub fn new(opts: ClientOptions) -> Self {
        let mut http = HttpConnector::new();
        http.set_nodelay(true);
        http.set_connect_timeout(Some(opts.connect_timeout));
        // The https connector below takes both schemes.
        http.enforce_http(false);
        let https = HttpsConnectorBuilder::new()
            .with_webpki_roots()
            .https_or_http()
            .enable_all_versions()
            .wrap_connector(http);
        let inner = Client::builder(TokioExecutor::new())
            .pool_timer(TokioTimer::new())
            .pool_idle_timeout(opts.pool_idle_timeout)
            .pool_max_idle_per_host(opts.pool_max_idle_per_host)
            .build(https);
        Self { inner }
    }

    pub fn request(&self, req: Request<OnceBody>) -> ResponseFuture {
        self.inner.request(req)
    }
}

/// A POST of `body` to `uri` with the given headers set.
pub fn post(uri: Uri, body: OnceBody) -> Request<OnceBody> {
    let mut req = Request::new(body);
    *req.method_mut() = http::Method::POST;
    *req.uri_mut() = uri;
    req
}

/// A request body of one chunk, which says when the connection takes it (see `upstream.rs`:
/// the moment the request is about to leave).
pub struct OnceBody {
    data: Option<Bytes>,
    taken: Option<oneshot::Sender<()>>,
}

impl OnceBody {
    pub fn new(data: Bytes, taken: Option<oneshot::Sender<()>>) -> Self {
        Self {
            data: Some(data),
            taken,
        }
    }
}

impl Body for OnceBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        if let Some(taken) = self.taken.take() {
            let _ = taken.send(());
        }
        Poll::Ready(self.data.take().map(|d| Ok(Frame::data(d))))
    }

    fn is_end_stream(&self) -> bool {
        self.data.is_none()
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(self.data.as_ref().map_or(0, |d| d.len() as u64))
    }
}
