//! memu-proxy: a transparent caching reverse proxy sidecar for the memU memory API.
//!
//! An AI VTuber app points its memU `base_url` here. Every request is forwarded faithfully;
//! retrievals are answered from a cache keyed by the normalised query and every field that changes
//! the answer, within a hard deadline, with a well-formed empty answer when memU is slow or down.
//! Writes are forwarded (never faked) and invalidate the writer's cached reads.
//!
//! # Layout
//!
//! Every dependency points down this list: a module uses only modules listed below it.
//!
//! | module | job |
//! |---|---|
//! | [`cli`] | flags → [`config::Settings`] |
//! | [`server`] | accept loop, HTTP/1+2, graceful shutdown, connection cap and idle close |
//! | [`idle`] | when a client connection is idle: bytes moved, requests in hand |
//! | [`limits`] | open-files limit → connection cap; accept-failure episodes |
//! | [`stack`] | the tower layer order: timing/logging, panics, sensitive headers, body limit |
//! | [`linger`] | lingering close: a request body answered unread is drained, bounded |
//! | [`handlers`] | dispatch and one handler per route class: read, write, pass-through, prewarm, admin |
//! | [`tasks`] | memorize tasks: invalidate again on `SUCCESS`, polled in the background |
//! | [`fetch`] | the coalesced, bounded, spawned upstream fetch behind a miss |
//! | [`exchange`] | read a request body; one buffered exchange with memU within a deadline |
//! | [`respond`] | response builders: forwarded, streamed, hit, stale, fallback, JSON |
//! | [`state`] | what every handler shares; builds the metrics registry |
//! | [`decide`] | pure decisions: judge an upstream result, admit, what a waiter answers |
//! | [`error`] | the proxy's own error responses, one status per condition |
//! | [`compat`] | opt-in repairs of answers real clients cannot parse (pure) |
//! | [`cache`] | keys and normalisation, byte-bounded store, invalidation generations, coalescing |
//! | [`shared`] | the optional shared tier on Redis: lookups, stores, locks, the invalidation stream |
//! | [`upstream`] | the pooled client (plain or TLS), URI rewrite, hop-by-hop headers, deadline |
//! | [`tls`] | rustls client config (system roots + `upstream.ca_file`), TLS rejections, their log |
//! | [`circuit`] | the circuit breaker every upstream exchange passes |
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
pub mod circuit;
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
pub mod idle;
pub mod limits;
pub mod linger;
pub mod metrics;
pub mod outcome;
pub mod respond;
pub mod routes;
pub mod server;
pub mod shared;
pub mod stack;
pub mod state;
pub mod tasks;
pub mod tls;
pub mod upstream;

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::config::Config;
use crate::state::State;

/// The sockets the proxy serves; bound before [`run`] so tests can bind port 0 first.
pub struct Listeners {
    pub main: TcpListener,
    pub admin: Option<TcpListener>,
}

impl Listeners {
    /// Binds the configured addresses.
    pub async fn bind(config: &Config) -> io::Result<Self> {
        let main = TcpListener::bind(config.listen).await?;
        let admin = match config.admin_listen {
            Some(addr) => Some(TcpListener::bind(addr).await?),
            None => None,
        };
        Ok(Self { main, admin })
    }

    /// The main listener's address.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.main.local_addr()
    }
}

/// The tokio runtime for `server.worker_threads`: a current-thread runtime for 1 (the default:
/// for a sidecar doing little CPU work per request, one thread avoids the cross-thread wake-ups
/// that dominate loopback latency), else a multi-thread runtime (0 = one worker per core).
pub fn runtime(config: &Config) -> io::Result<tokio::runtime::Runtime> {
    let mut builder = match config.worker_threads {
        1 => tokio::runtime::Builder::new_current_thread(),
        0 => tokio::runtime::Builder::new_multi_thread(),
        n => {
            let mut builder = tokio::runtime::Builder::new_multi_thread();
            builder.worker_threads(n);
            builder
        }
    };
    builder.enable_all().build()
}

/// Runs the proxy until `shutdown` completes, then drains in-flight requests for at most
/// `server.shutdown_grace_ms`.
pub async fn run(config: Config, listeners: Listeners, shutdown: impl Future<Output = ()>) {
    let state = Arc::new(State::new(&config));
    let (stop_tx, stop_rx) = watch::channel(false);
    let grace = config.shutdown_grace;
    let bounds = server::ConnectionBounds {
        idle_timeout: config.idle_timeout,
        max_connections: config.max_connections,
    };
    let mut servers = tokio::task::JoinSet::new();
    servers.spawn(server::serve(
        listeners.main,
        stack::service(Arc::clone(&state)),
        bounds,
        stop_rx.clone(),
        grace,
    ));
    if let Some(admin) = listeners.admin {
        let bounds = server::ConnectionBounds {
            max_connections: limits::ADMIN_MAX_CONNECTIONS,
            ..bounds
        };
        servers.spawn(server::serve(
            admin,
            stack::admin_service(Arc::clone(&state)),
            bounds,
            stop_rx,
            grace,
        ));
    }
    shutdown.await;
    tracing::info!("shutting down");
    let _ = stop_tx.send(true);
    while servers.join_next().await.is_some() {}
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_runtime_is_current_thread_and_zero_means_one_per_core() {
        let mut settings = config::Settings::default();
        let config = settings.validate().unwrap();
        let flavor = runtime(&config).unwrap().handle().runtime_flavor();
        assert_eq!(flavor, tokio::runtime::RuntimeFlavor::CurrentThread);
        settings.server.worker_threads = 0;
        let config = settings.validate().unwrap();
        let flavor = runtime(&config).unwrap().handle().runtime_flavor();
        assert_eq!(flavor, tokio::runtime::RuntimeFlavor::MultiThread);
    }
}
