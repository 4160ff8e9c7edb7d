//! Serving: the listener (TCP_NODELAY on every connection), the client address for the
//! authentication brake, and graceful shutdown that leaves no journal to replay.

use std::net::SocketAddr;
use std::time::Duration;

use axum::Router;
use tokio::net::TcpListener;

use crate::state::{ClientAddr, SharedState};

/// Serves `router` (inside `router::app`) on `listener` until `shutdown` resolves, then commits
/// the ledger.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    state: SharedState,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let app = crate::router::app(state.clone(), router);
    axum::serve(
        NoDelayListener(listener),
        axum::ServiceExt::<axum::extract::Request>::into_make_service_with_connect_info::<
            ClientAddr,
        >(app),
    )
    .with_graceful_shutdown(shutdown)
    .await?;
    // Everything answered is in the journal already; this just saves the next start a replay.
    state.engine.ledger.close().await;
    Ok(())
}

/// Accepts connections with TCP_NODELAY set, so small responses on keep-alive connections are
/// not held back by Nagle's algorithm.
struct NoDelayListener(TcpListener);

impl axum::serve::Listener for NoDelayListener {
    type Io = tokio::net::TcpStream;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            match self.0.accept().await {
                Ok((stream, addr)) => {
                    let _ = stream.set_nodelay(true);
                    return (stream, addr);
                }
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
            }
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        self.0.local_addr()
    }
}

impl axum::extract::connect_info::Connected<axum::serve::IncomingStream<'_, NoDelayListener>>
    for ClientAddr
{
    fn connect_info(stream: axum::serve::IncomingStream<'_, NoDelayListener>) -> Self {
        ClientAddr(*stream.remote_addr())
    }
}
