//! The accept loop: hyper-util's HTTP/1 + HTTP/2 server over each listener, with graceful
//! shutdown that stops accepting, lets in-flight requests finish, and gives up after the grace.
//!
//! A [`Worker`] is one accept loop and its connections on one current-thread runtime; with
//! `server.worker_threads` > 1 each further worker runs on a thread of its own with its own
//! `SO_REUSEPORT` listener (`lib.rs` binds them), so a connection is served start to end by the
//! thread the kernel handed it to, as nginx's workers do.
//!
//! Every connection is bounded: at most `max_connections` are open at once (past it a new one is
//! closed at once, so the clients already connected keep being served), and one that stays idle
//! for `idle_timeout` is dropped (`idle.rs` here). When accepting fails (out of descriptors) the loop
//! backs off and logs the episode once (`limits.rs` here), not every attempt.

pub mod idle;
pub mod limits;

use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use http::{Request, Response};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto::Builder;
use hyper_util::server::graceful::GracefulShutdown;
use prometheus_client::metrics::counter::Counter;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{oneshot, watch, OwnedSemaphorePermit, Semaphore};
use tower::ServiceExt;

use crate::body::ProxyBody;
use crate::linger::Lingering;
use crate::stack::HttpService;
use idle::{Activity, TrackedIo};
use limits::Episode;

/// The bounds every connection of a listener is held to.
#[derive(Debug, Clone, Copy)]
pub struct ConnectionBounds {
    /// Dropped after this long without a byte in either direction and no request in hand.
    pub idle_timeout: Duration,
    /// Most connections open at once.
    pub max_connections: usize,
}

/// The runtime of one worker: a current-thread tokio runtime. Every worker runs its own, and
/// with its own listener a connection is served start to end on the thread that accepted it,
/// without the work-stealing runtime's wake-ups between threads, which cost more than a hit's
/// work here (`docs/benchmarks.md`). The upstream pool and a miss's coalesced fetch are shared, so a miss
/// may still wake another worker.
pub fn runtime() -> std::io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
}

/// A worker on its own thread: `drained` completes when its connections are done, `finished`
/// when its runtime is gone, after the release.
pub struct WorkerThread {
    pub drained: oneshot::Receiver<()>,
    pub finished: oneshot::Receiver<()>,
}

/// One worker: a listener's accept loop and its connections, on one runtime. Workers share the
/// service's state and the connection cap; each has its own listener.
pub struct Worker {
    /// 0 for the first worker (on the caller's runtime), 1.. for the others.
    pub index: usize,
    pub service: HttpService,
    pub bounds: ConnectionBounds,
    /// The connection cap, shared by the workers of one listening address.
    pub open: Arc<Semaphore>,
    pub stop: watch::Receiver<bool>,
    pub grace: Duration,
    /// Counts the connections this worker accepted (`/metrics`), if it is a main-listener worker.
    pub accepted: Option<Counter>,
}

impl Worker {
    /// Runs this worker on a thread of its own, in a current-thread runtime, serving `listener`
    /// (registered with that runtime). Once drained, the worker says so and keeps its runtime
    /// running until `release` turns true: tasks spawned on it (a coalesced fetch, a pooled
    /// connection to memU) may be serving another worker's request, and dropping the runtime
    /// would cancel them. The runtime, the listener's registration and the thread are made
    /// here, so a worker that cannot start is an error at start-up, not a missing worker.
    pub fn spawn_thread(
        self,
        listener: std::net::TcpListener,
        mut release: watch::Receiver<bool>,
    ) -> std::io::Result<WorkerThread> {
        let runtime = runtime()?;
        let registered = {
            let _entered = runtime.enter();
            TcpListener::from_std(listener)
        };
        // A runtime must not be dropped on this (async) thread: on an error it is shut down in
        // the background; on success it is handed to the new thread, which owns it.
        let listener = match registered {
            Ok(listener) => listener,
            Err(error) => {
                runtime.shutdown_background();
                return Err(error);
            }
        };
        let (handover, handed) = std::sync::mpsc::channel::<tokio::runtime::Runtime>();
        let (drained_tx, drained) = oneshot::channel::<()>();
        let (done, finished) = oneshot::channel::<()>();
        let spawned = std::thread::Builder::new()
            .name(format!("memu-proxy-{}", self.index))
            .spawn(move || {
                // Declared first, dropped last: after the runtime and everything on it.
                let _done = done;
                let Ok(runtime) = handed.recv() else { return };
                runtime.block_on(async move {
                    self.serve(listener).await;
                    let _ = drained_tx.send(());
                    let _ = release.wait_for(|released| *released).await;
                });
                drop(runtime);
            });
        if let Err(error) = spawned {
            runtime.shutdown_background();
            return Err(error);
        }
        // The thread holds the receiver until it has the runtime: the send cannot fail.
        let _ = handover.send(runtime);
        Ok(WorkerThread { drained, finished })
    }

    /// Serves `listener` until `stop` changes, then drains for at most `grace`.
    pub async fn serve(mut self, listener: TcpListener) {
        let mut builder = Builder::new(TokioExecutor::new());
        // Without a timer, hyper's header-read timeout panics on every connection (hyper#3567).
        builder.http1().timer(TokioTimer::new());
        builder.http2().timer(TokioTimer::new());
        let graceful = GracefulShutdown::new();
        let mut out_of_descriptors = Episode::default();
        let mut at_capacity = Episode::default();
        loop {
            let accepted = tokio::select! {
                accepted = listener.accept() => accepted,
                _ = self.stop.changed() => break,
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
            let Ok(permit) = Arc::clone(&self.open).try_acquire_owned() else {
                // Closed at once: the client learns now, and the descriptor is free again.
                drop(stream);
                if at_capacity.failed() {
                    tracing::warn!(
                        max_connections = self.bounds.max_connections,
                        "connection limit reached: closing new connections"
                    );
                }
                continue;
            };
            if let Some(refused) = at_capacity.ended() {
                tracing::info!(refused, "below the connection limit again");
            }
            if let Some(accepted) = &self.accepted {
                accepted.inc();
            }
            let activity = Activity::new();
            let connection = builder
                .serve_connection(
                    TokioIo::new(TrackedIo::new(with_nodelay(stream), Arc::clone(&activity))),
                    per_connection(self.service.clone(), Arc::clone(&activity)),
                )
                .into_owned();
            let connection = graceful.watch(connection);
            let idle_timeout = self.bounds.idle_timeout;
            tokio::spawn(async move {
                tokio::select! {
                    // The connection first: bytes that arrive as the idle timer fires are served.
                    biased;
                    result = connection => if let Err(error) = result {
                        tracing::debug!(%error, "connection ended with an error");
                    },
                    () = activity.idle(idle_timeout) => {
                        tracing::debug!("closed an idle connection");
                    }
                }
                drop::<OwnedSemaphorePermit>(permit);
            });
        }
        drop(listener);
        if tokio::time::timeout(self.grace, graceful.shutdown())
            .await
            .is_err()
        {
            tracing::warn!(
                grace_ms = self.grace.as_millis() as u64,
                "shutdown grace expired with requests in flight"
            );
        }
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
