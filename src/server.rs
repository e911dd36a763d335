//! The accept loop: hyper-util's HTTP/1 + HTTP/2 server over each listener, with graceful
//! shutdown that stops accepting, lets in-flight requests finish, and gives up after the grace.
//!
//! Every connection is bounded: at most `max_connections` are open at once (past it a new one is
//! closed at once, so the clients already connected keep being served), and one that stays idle
//! for `idle_timeout` is dropped (`idle.rs`). When accepting fails (out of descriptors) the loop
//! backs off and logs the episode once (`limits.rs`), not every attempt.

use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use http::{Request, Response};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto::Builder;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, OwnedSemaphorePermit, Semaphore};
use tower::ServiceExt;

use crate::body::ProxyBody;
use crate::idle::{Activity, TrackedIo};
use crate::limits::Episode;
use crate::linger::Lingering;
use crate::stack::HttpService;

/// The bounds every connection of a listener is held to.
#[derive(Debug, Clone, Copy)]
pub struct ConnectionBounds {
    /// Dropped after this long without a byte in either direction and no request in hand.
    pub idle_timeout: Duration,
    /// Most connections open at once.
    pub max_connections: usize,
}

/// Serves `service` on `listener` until `stop` changes, then drains for at most `grace`.
pub async fn serve(
    listener: TcpListener,
    service: HttpService,
    bounds: ConnectionBounds,
    mut stop: watch::Receiver<bool>,
    grace: Duration,
) {
    let mut builder = Builder::new(TokioExecutor::new());
    // Without a timer, hyper's header-read timeout panics on every connection (hyper#3567).
    builder.http1().timer(TokioTimer::new());
    builder.http2().timer(TokioTimer::new());
    let graceful = GracefulShutdown::new();
    let open = Arc::new(Semaphore::new(bounds.max_connections));
    let mut out_of_descriptors = Episode::default();
    let mut at_capacity = Episode::default();
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = stop.changed() => break,
        };
        let stream = match accepted {
            Ok((stream, _peer)) => stream,
            Err(error) => {
                accept_failed(&error, &mut out_of_descriptors).await;
                continue;
            }
        };
        if let Some(failures) = out_of_descriptors.ended() {
            tracing::info!(failures, "accepting connections again");
        }
        let Ok(permit) = Arc::clone(&open).try_acquire_owned() else {
            // Closed at once: the client learns now, and the descriptor is free again.
            drop(stream);
            if at_capacity.failed() {
                tracing::warn!(
                    max_connections = bounds.max_connections,
                    "connection limit reached: closing new connections"
                );
            }
            continue;
        };
        if let Some(refused) = at_capacity.ended() {
            tracing::info!(refused, "below the connection limit again");
        }
        let activity = Activity::new();
        let connection = builder
            .serve_connection(
                TokioIo::new(TrackedIo::new(with_nodelay(stream), Arc::clone(&activity))),
                per_connection(service.clone(), Arc::clone(&activity)),
            )
            .into_owned();
        let connection = graceful.watch(connection);
        tokio::spawn(async move {
            tokio::select! {
                // The connection first: bytes that arrive as the idle timer fires are served.
                biased;
                result = connection => if let Err(error) = result {
                    tracing::debug!(%error, "connection ended with an error");
                },
                () = activity.idle(bounds.idle_timeout) => {
                    tracing::debug!("closed an idle connection");
                }
            }
            drop::<OwnedSemaphorePermit>(permit);
        });
    }
    drop(listener);
    if tokio::time::timeout(grace, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!(
            grace_ms = grace.as_millis() as u64,
            "shutdown grace expired with requests in flight"
        );
    }
}

fn with_nodelay(stream: TcpStream) -> TcpStream {
    let _ = stream.set_nodelay(true);
    stream
}

/// The stack as hyper calls it on one connection: each request marks the connection busy until
/// its response head is ready, so a long wait on memU never counts as idleness.
fn per_connection(
    service: HttpService,
    activity: Arc<Activity>,
) -> impl hyper::service::Service<
    Request<Incoming>,
    Response = Response<ProxyBody>,
    Error = Infallible,
    Future = impl Future<Output = Result<Response<ProxyBody>, Infallible>> + Send,
> + Clone {
    hyper::service::service_fn(move |request: Request<Incoming>| {
        let busy = activity.busy();
        let call = service.clone().oneshot(Lingering::wrap(request));
        async move {
            let response = call.await;
            drop(busy);
            response
        }
    })
}

/// Backs off after a failed accept. Running out of descriptors (or memory) is an episode: logged
/// when it starts, with a growing pause between attempts; a connection reset before it was
/// accepted is the client's affair and is retried at once.
async fn accept_failed(error: &std::io::Error, episode: &mut Episode) {
    use std::io::ErrorKind::{ConnectionAborted, ConnectionReset, Interrupted};
    if matches!(
        error.kind(),
        ConnectionAborted | ConnectionReset | Interrupted
    ) {
        tracing::debug!(%error, "accept failed");
        return;
    }
    if episode.failed() {
        tracing::warn!(%error, "accept failed; backing off until it succeeds again");
    }
    tokio::time::sleep(episode.backoff()).await;
}
