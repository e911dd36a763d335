//! The link to Redis: one multiplexed connection (the redis crate's `ConnectionManager`), every
//! call bounded by `shared_cache.timeout_ms`, and the link's state.
//!
//! A call that times out or fails on the connection marks the link down (logged once); while it
//! is down, calls are skipped at once instead of waiting, so a dead or partitioned Redis costs a
//! request nothing after the first timeout. [`Link::reconnect`] (driven by the tier's
//! supervisor, `mod.rs`) opens a *new* connection and PINGs it: the connection manager reconnects
//! by itself after connection errors, but a link that silently stops answering never errors, so
//! the whole connection is replaced. Recovery is logged once. Redis's own error replies (a script
//! error, `OOM`) fail that call only: the link is up.

use std::future::Future;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{Client, RedisError, RedisResult};
use tokio::time::Instant;

use super::metrics::{Op, OpResult, SharedMetrics};

/// What a call that did not succeed ran into.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failed {
    /// The link is down: not tried.
    Skipped,
    Timeout,
    Error,
}

/// The link's state, as `/healthz` shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LinkState {
    /// Not connected yet since start-up.
    Connecting,
    Up,
    Down,
}

impl LinkState {
    pub fn as_str(self) -> &'static str {
        match self {
            LinkState::Connecting => "connecting",
            LinkState::Up => "up",
            LinkState::Down => "down",
        }
    }
}

pub struct Link {
    client: Client,
    connection: Mutex<Option<ConnectionManager>>,
    timeout: Duration,
    state: AtomicU8,
    metrics: Arc<SharedMetrics>,
    /// The URL with its password hidden, for logs.
    shown_url: String,
}

const CONNECTING: u8 = 0;
const UP: u8 = 1;
const DOWN: u8 = 2;

impl Link {
    pub fn new(
        client: Client,
        timeout: Duration,
        metrics: Arc<SharedMetrics>,
        shown_url: String,
    ) -> Self {
        Self {
            client,
            connection: Mutex::new(None),
            timeout,
            state: AtomicU8::new(CONNECTING),
            metrics,
            shown_url,
        }
    }

    pub fn state(&self) -> LinkState {
        match self.state.load(Ordering::Relaxed) {
            UP => LinkState::Up,
            DOWN => LinkState::Down,
            _ => LinkState::Connecting,
        }
    }

    pub fn is_up(&self) -> bool {
        self.state() == LinkState::Up
    }

    /// Runs one call on the connection within the timeout, counting it as `op`.
    pub async fn call<T, F, Fut>(&self, op: Op, call: F) -> Result<T, Failed>
    where
        F: FnOnce(ConnectionManager) -> Fut,
        Fut: Future<Output = RedisResult<T>>,
    {
        let Some(connection) = self.connection().filter(|_| self.is_up()) else {
            self.metrics.record(op, OpResult::skipped, None);
            return Err(Failed::Skipped);
        };
        let started = Instant::now();
        let result = tokio::time::timeout(self.timeout, call(connection)).await;
        let took = Some(started.elapsed());
        match result {
            Ok(Ok(value)) => {
                self.metrics.record(op, OpResult::ok, took);
                Ok(value)
            }
            Ok(Err(error)) => {
                self.metrics.record(op, OpResult::error, took);
                if breaks_the_link(&error) {
                    self.lost(&error.to_string());
                } else {
                    tracing::debug!(%error, ?op, "shared cache call failed");
                }
                Err(Failed::Error)
            }
            Err(_) => {
                self.metrics.record(op, OpResult::timeout, took);
                self.lost("no answer within shared_cache.timeout_ms");
                Err(Failed::Timeout)
            }
        }
    }

    /// Counts a lookup's outcome beside the `ok` [`Link::call`] counted.
    /// Counts an outcome of `op` decided outside the call itself.
    pub fn record(&self, op: Op, result: OpResult) {
        self.metrics.record(op, result, None);
    }

    pub fn found(&self, hit: bool) {
        let result = if hit { OpResult::hit } else { OpResult::miss };
        self.metrics.record(Op::lookup, result, None);
    }

    /// Opens a new connection and PINGs it; on success it replaces the old one and the link is
    /// up. Redis is given a generous time here (connection, TLS, AUTH): nobody waits on it.
    pub async fn reconnect(&self) -> bool {
        let started = Instant::now();
        let patience = (self.timeout * 10).max(Duration::from_secs(1));
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(patience))
            .set_response_timeout(Some(patience))
            .set_number_of_retries(1);
        let attempt = tokio::time::timeout(patience, async {
            let mut connection =
                ConnectionManager::new_with_config(self.client.clone(), config).await?;
            redis::cmd("PING")
                .query_async::<()>(&mut connection)
                .await?;
            RedisResult::Ok(connection)
        })
        .await;
        let took = Some(started.elapsed());
        match attempt {
            Ok(Ok(connection)) => {
                self.metrics.record(Op::connect, OpResult::ok, took);
                *self.lock() = Some(connection);
                let before = self.state.swap(UP, Ordering::Relaxed);
                match before {
                    DOWN => tracing::info!(url = %self.shown_url, "shared cache reachable again"),
                    CONNECTING => tracing::info!(url = %self.shown_url, "shared cache connected"),
                    _ => {}
                }
                true
            }
            Ok(Err(error)) => {
                self.metrics.record(Op::connect, OpResult::error, took);
                self.lost(&error.to_string());
                false
            }
            Err(_) => {
                self.metrics.record(Op::connect, OpResult::timeout, took);
                self.lost("connecting timed out");
                false
            }
        }
    }

    /// Marks the link down; the first time, says so.
    fn lost(&self, why: &str) {
        if self.state.swap(DOWN, Ordering::Relaxed) != DOWN {
            tracing::warn!(
                url = %self.shown_url,
                why,
                "shared cache unreachable: serving from the local cache and memU, reconnecting"
            );
        }
    }

    fn connection(&self) -> Option<ConnectionManager> {
        self.lock().clone()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Option<ConnectionManager>> {
        self.connection
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// True for failures of the connection itself, as opposed to Redis's error replies.
fn breaks_the_link(error: &RedisError) -> bool {
    error.is_io_error() || error.is_connection_dropped() || error.is_connection_refusal()
}
