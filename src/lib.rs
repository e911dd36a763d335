//! memu-proxy: a transparent caching reverse proxy sidecar for the memU memory API.
//!
//! An AI VTuber app points its memU `base_url` here. Every request is forwarded faithfully;
//! retrievals are answered from a cache keyed by the normalised query and every field that changes
//! the answer, within a hard deadline, with a well-formed empty answer when memU is slow or down.
//! Writes are forwarded (never faked) and invalidate the writer's cached reads; after a delete,
//! nothing cached before it is served again.
//!
//! # Layout
//!
//! Every dependency points down this list: a module uses only modules listed below it.
//!
//! | module | job |
//! |---|---|
//! | [`cli`] | flags → [`config::Settings`] |
//! | [`server`] | accept loop, HTTP/1+2, graceful shutdown, connection cap and idle close; `idle`: when a client connection is idle (bytes moved, requests in hand); `limits`: open-files limit → connection cap, accept-failure episodes |
//! | [`stack`] | the hit lane (a fresh hit of an exact repeat), then the tower layer order: timing/logging, panics, sensitive headers, body limit |
//! | [`linger`] | lingering close: a request body answered unread is drained, bounded |
//! | [`handlers`] | dispatch and one handler per route class: read, write, pass-through, prewarm, admin |
//! | [`tasks`] | memorize tasks: invalidate again on `SUCCESS`, polled in the background |
//! | [`listing`] | reads fetched on its own for the memory mirror: a new scope's listing, the re-warm after a write |
//! | [`fetch`] | the coalesced, bounded, spawned upstream fetch behind a miss |
//! | [`exchange`] | read a request body; one buffered exchange with memU within a deadline |
//! | [`respond`] | response builders: forwarded, streamed, hit, stale, fallback, JSON |
//! | [`state`] | what every handler shares; builds the metrics registry |
//! | [`mirror`] | the memory items seen per scope, ranked (lexically, or by embeddings) into a local answer when memU cannot answer |
//! | [`decide`] | pure decisions: judge an upstream result, admit, what a waiter answers |
//! | [`error`] | the proxy's own error responses, one status per condition |
//! | [`compat`] | opt-in repairs of answers real clients cannot parse (pure) |
//! | [`shared_tier`] | the optional shared tier on Redis: lookups, stores, locks, the invalidation stream |
//! | [`cache`] | keys and normalisation, byte-bounded store, invalidation generations and purge marks, what a write touches, coalescing |
//! | [`upstream`] | the pooled client (plain or TLS), URI rewrite, hop-by-hop headers, deadline; `circuit`: the two breakers (reads and everything else, writes); `tls`: rustls client config (system roots + `upstream.ca_file`), TLS rejections, their log; `location`: memU's redirects rewritten to come back through the proxy (pure) |
//! | [`metrics`] | the request metric families and scrape-time encoders |
//! | [`outcome`] | what a handler returns: `Handled`, `Outcome`, `RequestInfo` |
//! | [`fallback`] | the empty answers the SDK parses (pure) |
//! | [`config`] | `proxy.toml` and flags → validated [`config::Config`] |
//! | [`headers`] | `Cache-Status`, `Server-Timing`, `Cache-Control`, budget header (pure) |
//! | [`routes`] | the route table of every memU generation, as data, and classification (pure) |
//! | [`body`] | the body types shared by server and client |
#![forbid(unsafe_code)]

pub mod body;
pub mod cache;
pub mod cli;
pub mod compat;
pub mod config;
pub mod decide;
pub mod error;
pub mod exchange;
pub mod fallback;
pub mod fetch;
pub mod handlers;
pub mod headers;
pub mod linger;
pub mod listing;
pub mod metrics;
pub mod mirror;
pub mod outcome;
pub mod respond;
pub mod routes;
pub mod server;
pub mod shared_tier;
pub mod stack;
pub mod state;
pub mod tasks;
pub mod upstream;

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::{TcpListener, TcpSocket};
use tokio::sync::{watch, Semaphore};

use crate::config::Config;
use crate::state::State;

pub use server::runtime;

/// The sockets the proxy serves; bound before [`run`] so tests can bind port 0 first.
pub struct Listeners {
    /// The main listener of the first worker, the one [`run`] is called on.
    pub main: TcpListener,
    /// One more listener on the same address (`SO_REUSEPORT`) per further worker, each to be
    /// registered with that worker's own runtime.
    pub workers: Vec<std::net::TcpListener>,
    pub admin: Option<TcpListener>,
}

/// Pending connections each listener queues, as tokio's `TcpListener::bind` does.
const LISTEN_BACKLOG: u32 = 1024;

impl Listeners {
    /// Binds the configured addresses: one main listener per worker (`server.worker_threads`),
    /// all on one port with `SO_REUSEPORT` when there are several, so the kernel spreads new
    /// connections over the workers.
    pub async fn bind(config: &Config) -> io::Result<Self> {
        let admin = match config.admin_listen {
            Some(addr) => Some(TcpListener::bind(addr).await?),
            None => None,
        };
        if config.worker_threads <= 1 {
            let main = TcpListener::bind(config.listen).await?;
            return Ok(Self {
                main,
                workers: Vec::new(),
                admin,
            });
        }
        if config.listen.port() != 0 {
            // Fails while any socket holds the port, even one that allows SO_REUSEPORT: a second
            // proxy (or a stale one) would otherwise join this port's group and take a share of
            // its connections, with a cache and invalidations of its own.
            drop(std::net::TcpListener::bind(config.listen)?);
        }
        let main = reuse_port_listener(config.listen)?;
        // Port 0 binds the first to a free port; the others join it there.
        let addr = main.local_addr()?;
        let workers = (1..config.worker_threads)
            .map(|_| reuse_port_listener(addr)?.into_std())
            .collect::<io::Result<_>>()?;
        Ok(Self {
            main,
            workers,
            admin,
        })
    }

    /// The main listener's address.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.main.local_addr()
    }
}

/// A listener on `addr` that other listeners of this process may share (`SO_REUSEPORT`).
fn reuse_port_listener(addr: SocketAddr) -> io::Result<TcpListener> {
    let socket = match addr {
        SocketAddr::V4(_) => TcpSocket::new_v4()?,
        SocketAddr::V6(_) => TcpSocket::new_v6()?,
    };
    socket.set_reuseaddr(true)?;
    socket.set_reuseport(true)?;
    socket.bind(addr)?;
    socket.listen(LISTEN_BACKLOG)
}

/// Runs the proxy until `shutdown` completes, then drains in-flight requests for at most
/// `server.shutdown_grace_ms`. The first worker serves on the calling runtime; each further
/// worker (`listeners.workers`) on a thread and runtime of its own. All share one [`State`]:
/// the cache, the scopes, the metrics and the connection cap.
///
/// Fails at once, serving nothing, when a further worker cannot start (its runtime, its
/// thread): the proxy never runs with fewer workers than it was given.
pub async fn run(
    config: Config,
    listeners: Listeners,
    shutdown: impl Future<Output = ()>,
) -> io::Result<()> {
    let state = Arc::new(State::new(&config));
    let (stop_tx, stop_rx) = watch::channel(false);
    let grace = config.shutdown_grace;
    let bounds = server::ConnectionBounds {
        idle_timeout: config.idle_timeout,
        max_connections: config.max_connections,
    };
    let worker = |index, service, open, accepted| server::Worker {
        index,
        service,
        bounds,
        open,
        stop: stop_rx.clone(),
        grace,
        accepted,
    };
    let open = Arc::new(Semaphore::new(config.max_connections));
    let main_worker = |index| {
        let service = stack::service(Arc::clone(&state));
        let accepted = Some(state.metrics.accepted(index));
        worker(index, service, Arc::clone(&open), accepted)
    };
    let (release, released) = watch::channel(false);
    // On an error, the workers already started stop with the stop and release senders.
    let workers = (listeners.workers.into_iter().enumerate())
        .map(|(i, listener)| main_worker(i + 1).spawn_thread(listener, released.clone()))
        .collect::<io::Result<Vec<_>>>()?;
    let mut servers = tokio::task::JoinSet::new();
    servers.spawn(main_worker(0).serve(listeners.main));
    if let Some(admin) = listeners.admin {
        let service = stack::admin_service(Arc::clone(&state));
        let open = Arc::new(Semaphore::new(server::limits::ADMIN_MAX_CONNECTIONS));
        let mut admin_worker = worker(0, service, open, None);
        admin_worker.bounds.max_connections = server::limits::ADMIN_MAX_CONNECTIONS;
        servers.spawn(admin_worker.serve(admin));
    }
    shutdown.await;
    tracing::info!("shutting down");
    let _ = stop_tx.send(true);
    while servers.join_next().await.is_some() {}
    // Every worker drained before any runtime goes: one worker's tasks may serve another's
    // requests (`server::Worker::spawn_thread`).
    let mut finished = Vec::with_capacity(workers.len());
    for worker in workers {
        let _ = worker.drained.await;
        finished.push(worker.finished);
    }
    let _ = release.send(true);
    for done in finished {
        let _ = done.await;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_worker_runs_a_current_thread_runtime_and_zero_means_one_per_core() {
        let mut settings = config::Settings::default();
        let config = settings.validate().unwrap();
        assert_eq!(config.worker_threads, 1);
        let flavor = runtime().unwrap().handle().runtime_flavor();
        assert_eq!(flavor, tokio::runtime::RuntimeFlavor::CurrentThread);
        settings.server.worker_threads = 0;
        let cores = std::thread::available_parallelism().unwrap().get();
        assert_eq!(settings.validate().unwrap().worker_threads, cores);
        settings.server.worker_threads = 1025;
        let error = settings.validate().unwrap_err().to_string();
        assert!(error.contains("server.worker_threads"), "{error}");
    }

    #[tokio::test]
    async fn several_workers_listen_on_one_port() {
        let mut settings = config::Settings::default();
        settings.server.listen = "127.0.0.1:0".into();
        settings.server.worker_threads = 3;
        let listeners = Listeners::bind(&settings.validate().unwrap())
            .await
            .unwrap();
        let port = listeners.local_addr().unwrap().port();
        assert_ne!(port, 0);
        assert_eq!(listeners.workers.len(), 2);
        for worker in &listeners.workers {
            assert_eq!(worker.local_addr().unwrap().port(), port);
        }
        // A second proxy on that port is refused, with workers or without.
        settings.server.listen = format!("127.0.0.1:{port}");
        for workers in [2, 1] {
            settings.server.worker_threads = workers;
            let second = Listeners::bind(&settings.validate().unwrap()).await;
            let error = second.err().expect("the port is taken");
            assert_eq!(error.kind(), io::ErrorKind::AddrInUse, "{workers} workers");
        }
    }
}
