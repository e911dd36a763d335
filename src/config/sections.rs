//! The sections of `proxy.toml`, one block each: the settings struct (the file format) with its
//! defaults, the typed config it becomes, and the `validate` that checks its bounds and builds
//! that config. A section's `validate` reports into the shared [`Problems`] and returns its config
//! only when every value of the section is good; checks that span sections live in the parent.
//! `[upstream]` has its own file (`upstream.rs`).

use std::net::SocketAddr;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::problems::Problems;

/// `[server]`: where the proxy listens and how it treats incoming requests.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerSettings {
    /// Address the proxy listens on; the app's memU `base_url` points here.
    pub listen: String,
    /// Optional second listener serving only `/metrics` and `/healthz`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub admin_listen: Option<String>,
    /// Largest request body accepted; larger ones get 413 without contacting memU.
    pub max_body_bytes: u64,
    /// How long in-flight requests may take to finish after SIGINT/SIGTERM.
    pub shutdown_grace_ms: u64,
    /// Workers: N threads, each a single-threaded runtime with its own `SO_REUSEPORT` listener,
    /// sharing the cache (thread per core, as nginx runs workers); 0 = one per CPU core. 1, a
    /// sidecar's default, leaves the other cores to the app.
    pub worker_threads: usize,
    /// A client connection on which nothing is received or sent for this long, and no request is
    /// being handled, is closed: before its first byte and between keep-alive requests.
    pub idle_timeout_ms: u64,
    /// Most open client connections; past it a new connection is closed at once. Lowered at
    /// start-up to fit the open-files limit (see `server/limits.rs`).
    pub max_connections: usize,
}

impl Default for ServerSettings {
    fn default() -> Self {
        Self {
            listen: "127.0.0.1:8100".into(),
            admin_listen: None,
            max_body_bytes: 1024 * 1024,
            shutdown_grace_ms: 10_000,
            worker_threads: 1,
            idle_timeout_ms: 60_000,
            max_connections: 10_000,
        }
    }
}

/// The typed `[server]` values; `Config` holds them as its top-level fields.
#[derive(Debug, Clone)]
pub(super) struct ServerConfig {
    pub(super) listen: SocketAddr,
    pub(super) admin_listen: Option<SocketAddr>,
    pub(super) max_body_bytes: usize,
    pub(super) shutdown_grace: Duration,
    pub(super) worker_threads: usize,
    pub(super) idle_timeout: Duration,
    pub(super) max_connections: usize,
}

/// The most workers `server.worker_threads` may ask for.
const MAX_WORKER_THREADS: usize = 1024;

/// `server.worker_threads` as a count of workers: 0 is one per core.
fn workers(configured: usize) -> usize {
    match configured {
        0 => std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get),
        n => n,
    }
}

impl ServerSettings {
    pub(super) fn validate(&self, problems: &mut Problems) -> Option<ServerConfig> {
        let before = problems.len();
        let listen = self.listen.parse::<SocketAddr>();
        if listen.is_err() {
            let message = format!("`{}` is not an IP:port address", self.listen);
            problems.push("server.listen", message);
        }
        let admin_listen = self.admin_listen.as_deref().map(str::parse::<SocketAddr>);
        problems.check(
            !matches!(admin_listen, Some(Err(_))),
            "server.admin_listen",
            "not an IP:port address",
        );
        problems.greater_than_0(self.max_body_bytes, "server.max_body_bytes");
        problems.at_most_a_year(self.shutdown_grace_ms / 1000, "server.shutdown_grace_ms");
        problems.greater_than_0(self.idle_timeout_ms, "server.idle_timeout_ms");
        problems.at_most_a_year(self.idle_timeout_ms / 1000, "server.idle_timeout_ms");
        problems.check(
            self.worker_threads <= MAX_WORKER_THREADS,
            "server.worker_threads",
            "must not exceed 1024 (0 = one per core)",
        );
        problems.greater_than_0(self.max_connections, "server.max_connections");
        // Far above any open-files limit, and far below what a semaphore can count.
        problems.check(
            self.max_connections <= 10_000_000,
            "server.max_connections",
            "must not exceed 10000000",
        );
        match (listen, admin_listen.transpose()) {
            (Ok(listen), Ok(admin_listen)) if problems.len() == before => Some(ServerConfig {
                listen,
                admin_listen,
                max_body_bytes: usize::try_from(self.max_body_bytes).unwrap_or(usize::MAX),
                shutdown_grace: Duration::from_millis(self.shutdown_grace_ms),
                worker_threads: workers(self.worker_threads),
                idle_timeout: Duration::from_millis(self.idle_timeout_ms),
                max_connections: self.max_connections,
            }),
            _ => None,
        }
    }
}

/// `[cache]`: the retrieval cache.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CacheSettings {
    /// Set to false to forward every retrieval (still with deadline and fallback).
    pub enabled: bool,
    /// How long a stored answer is served as fresh.
    pub ttl_secs: u64,
    /// Past its TTL, an answer is still served at once for this long while one background
    /// refresh replaces it. 0 = off.
    pub stale_while_revalidate_secs: u64,
    /// Past its TTL (or after an invalidation), an answer is served for this long instead of the
    /// empty fallback when memU fails, times out, misses the budget or the circuit is open. 0 = off.
    pub stale_if_error_secs: u64,
    /// Upper bound of the cache, in bytes (bodies, keys and bookkeeping).
    pub max_bytes: u64,
    /// Answer a miss from a cached near-duplicate query of the same scope, route and parameters
    /// at or above this similarity (0 < t ≤ 1). 0 = off.
    pub similarity_threshold: f64,
    /// Most invalidation scopes (tenant, user, agent) remembered.
    pub max_scopes: usize,
    /// Most memorize task ids remembered for re-invalidation on SUCCESS.
    pub max_tracked_tasks: usize,
    /// Answer a read memU cannot answer in time (and no stale answer may stand in for) from the
    /// memory items the proxy has seen in memU's answers for that scope, instead of the empty
    /// answer. Takes a sixteenth of `max_bytes` for the mirror.
    pub local_answers: bool,
}

impl Default for CacheSettings {
    fn default() -> Self {
        Self {
            enabled: true,
            ttl_secs: 300,
            stale_while_revalidate_secs: 0,
            stale_if_error_secs: 0,
            similarity_threshold: 0.0,
            local_answers: false,
            max_bytes: 64 * 1024 * 1024,
            max_scopes: 100_000,
            max_tracked_tasks: 10_000,
        }
    }
}

/// Cache bounds and lifetimes.
#[derive(Debug, Clone)]
pub struct CacheConfig {
    pub enabled: bool,
    pub ttl: Duration,
    pub stale_while_revalidate: Duration,
    pub stale_if_error: Duration,
    pub similarity_threshold: f64,
    pub max_bytes: u64,
    pub max_scopes: usize,
    pub max_tracked_tasks: usize,
    pub local_answers: bool,
}

impl CacheSettings {
    pub(super) fn validate(&self, problems: &mut Problems) -> Option<CacheConfig> {
        let before = problems.len();
        problems.check(
            self.ttl_secs > 0,
            "cache.ttl_secs",
            "must be greater than 0 (set cache.enabled = false to disable caching)",
        );
        problems.check(
            self.max_bytes >= 4096,
            "cache.max_bytes",
            "must be at least 4096",
        );
        problems.at_most_a_year(self.ttl_secs, "cache.ttl_secs");
        problems.at_most_a_year(
            self.stale_while_revalidate_secs,
            "cache.stale_while_revalidate_secs",
        );
        problems.at_most_a_year(self.stale_if_error_secs, "cache.stale_if_error_secs");
        problems.check(
            (0.0..=1.0).contains(&self.similarity_threshold),
            "cache.similarity_threshold",
            "must be between 0 (off) and 1",
        );
        problems.greater_than_0(self.max_scopes, "cache.max_scopes");
        problems.greater_than_0(self.max_tracked_tasks, "cache.max_tracked_tasks");
        (problems.len() == before).then(|| CacheConfig {
            enabled: self.enabled,
            ttl: Duration::from_secs(self.ttl_secs),
            stale_while_revalidate: Duration::from_secs(self.stale_while_revalidate_secs),
            stale_if_error: Duration::from_secs(self.stale_if_error_secs),
            similarity_threshold: self.similarity_threshold,
            max_bytes: self.max_bytes,
            max_scopes: self.max_scopes,
            max_tracked_tasks: self.max_tracked_tasks,
            local_answers: self.local_answers,
        })
    }
}

/// `[latency]`: how long a conversation turn may wait for memories.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LatencySettings {
    /// Answer a retrieval within this many ms (stale or empty if memU is slower) while the
    /// upstream fetch goes on in the background to fill the cache. 0 = off.
    pub budget_ms: u64,
    /// Most upstream fetches running at once (client misses, refreshes, prewarms); excess is
    /// shed: answered stale or empty, or dropped for background work, and counted.
    pub max_background_fetches: usize,
}

impl Default for LatencySettings {
    fn default() -> Self {
        Self {
            budget_ms: 0,
            max_background_fetches: 64,
        }
    }
}

/// The latency budget and background-work bound.
#[derive(Debug, Clone)]
pub struct LatencyConfig {
    /// `None`: no budget (wait up to the hard deadline).
    pub budget: Option<Duration>,
    pub max_background_fetches: usize,
}

impl LatencySettings {
    /// The section's own checks; `budget_ms <= upstream.timeout_ms` is checked by the parent.
    pub(super) fn validate(&self, problems: &mut Problems) -> Option<LatencyConfig> {
        let before = problems.len();
        problems.greater_than_0(
            self.max_background_fetches,
            "latency.max_background_fetches",
        );
        (problems.len() == before).then(|| LatencyConfig {
            budget: (self.budget_ms > 0).then(|| Duration::from_millis(self.budget_ms)),
            max_background_fetches: self.max_background_fetches,
        })
    }
}

/// `[circuit]`: stop sending traffic to a failing memU for a while.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CircuitSettings {
    /// Consecutive upstream failures (timeouts, connect errors, 5xx) that open the circuit. 0 = off.
    pub failure_threshold: u32,
    /// How long the circuit stays open before one probe request is let through.
    pub cool_down_ms: u64,
}

impl Default for CircuitSettings {
    fn default() -> Self {
        Self {
            failure_threshold: 5,
            cool_down_ms: 5_000,
        }
    }
}

/// Circuit breaker thresholds; `failure_threshold == 0` disables it.
#[derive(Debug, Clone)]
pub struct CircuitConfig {
    pub failure_threshold: u32,
    pub cool_down: Duration,
}

impl CircuitSettings {
    pub(super) fn validate(&self, problems: &mut Problems) -> Option<CircuitConfig> {
        let before = problems.len();
        problems.at_most_a_year(self.cool_down_ms / 1000, "circuit.cool_down_ms");
        problems.check(
            self.failure_threshold == 0 || self.cool_down_ms > 0,
            "circuit.cool_down_ms",
            "must be greater than 0 when the circuit breaker is on",
        );
        (problems.len() == before).then(|| CircuitConfig {
            failure_threshold: self.failure_threshold,
            cool_down: Duration::from_millis(self.cool_down_ms),
        })
    }
}

/// `[compat]`: opt-in repairs of memU answers that real clients cannot parse.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CompatSettings {
    /// Fill null `created_at`/`updated_at` in retrieval answers from `happened_at`, so the
    /// official SDK parses the self-hosted server's non-empty answers.
    pub fill_null_timestamps: bool,
}
