//! The state every handler shares: the upstream client, the cache and its indexes, the task map,
//! the bounds on background work, and the metrics registry.
//!
//! Built once from the validated [`Config`] by [`State::new`], which is also where the metrics
//! [`Registry`] is filled: each component registers what it exports, and the registry is never
//! changed afterwards. This file decides nothing about requests; it sits below the handlers and
//! above the components it owns.

use std::sync::Arc;
use std::time::Duration;

use prometheus_client::registry::Registry;
use quick_cache::sync::Cache as BoundedMap;
use tokio::sync::Semaphore;

use crate::cache::inflight::Inflight;
use crate::cache::memo::KeyMemo;
use crate::cache::similar::SimilarIndex;
use crate::cache::{CacheKey, Generations, Invalidate, Lifetimes, Scope, Scopes, Store};
use crate::config::Config;
use crate::decide::Fetched;
use crate::metrics::{self, InvalidationCause, Metrics};
use crate::mirror::{Embedder, Mirror, Rewarm};
use crate::routes::{TaskSpec, WriteKind};
use crate::shared_tier::SharedTier;
use crate::upstream::circuit::{Circuit, Guards};
use crate::upstream::Upstream;

/// A coalesced fetch is identified by the key and the generations it was started under, so a
/// request arriving after a write never joins a fetch that began before it.
pub type InflightKey = (CacheKey, Generations);

/// The fetches in flight, by key and generations.
pub type InflightFetches = Inflight<InflightKey, Arc<Fetched>>;

/// A memorize task the proxy forwarded: the scopes its write invalidated, and how to read its
/// status answers.
#[derive(Debug, Clone)]
pub struct TrackedTask {
    pub targets: Arc<[(Scope, Invalidate)]>,
    pub kind: WriteKind,
    pub spec: TaskSpec,
    /// For a memorize with local answers on: how its scopes are re-warmed once it succeeds
    /// (`listing.rs`).
    pub rewarm: Option<Rewarm>,
}

/// Lets a repeated WARN through at most once per `every`, and says how many were held back.
#[derive(Debug)]
pub struct LogGate {
    every: Duration,
    state: std::sync::Mutex<(Option<tokio::time::Instant>, u64)>,
}

impl LogGate {
    pub fn new(every: Duration) -> Self {
        Self {
            every,
            state: std::sync::Mutex::new((None, 0)),
        }
    }

    /// `Some(held back since the last one)` when this occurrence may be logged.
    pub fn pass(&self) -> Option<u64> {
        let now = tokio::time::Instant::now();
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let (last, held) = &mut *state;
        if last.is_some_and(|at| now < at + self.every) {
            *held += 1;
            return None;
        }
        *last = Some(now);
        Some(std::mem::take(held))
    }
}

/// Most memorize tasks polled at once; past it, only clients' own status polls are watched.
pub const MAX_TASK_POLLERS: usize = 256;

/// Everything the handlers share.
pub struct State {
    pub(crate) upstream: Upstream,
    pub(crate) store: Arc<Store>,
    /// Exact repeats of a retrieval → its key, without parsing it again.
    pub(crate) keys: KeyMemo,
    pub(crate) scopes: Arc<Scopes>,
    pub(crate) inflight: Arc<InflightFetches>,
    /// memorize task id → the scopes to invalidate again when the task succeeds.
    pub(crate) tasks: BoundedMap<Box<str>, TrackedTask>,
    /// Bounds the background polls of memorize tasks (`tasks.rs`).
    pub(crate) task_pollers: Arc<Semaphore>,
    pub(crate) metrics: Arc<Metrics>,
    /// Every metric the proxy exports; complete once `new` returns.
    pub(crate) registry: Registry,
    pub(crate) cache_enabled: bool,
    pub(crate) max_body_bytes: usize,
    pub(crate) fill_null_timestamps: bool,
    /// The configured latency budget for retrievals (`None`: off).
    pub(crate) budget: Option<Duration>,
    /// Bounds the upstream fetches running at once (`latency.max_background_fetches`).
    pub(crate) fetch_permits: Arc<Semaphore>,
    /// Permits background fetches (refreshes, prewarms) leave for waiting clients: a quarter.
    pub(crate) background_reserve: usize,
    /// The breaker of reads, task polls and pass-through.
    pub(crate) circuit: Arc<Circuit>,
    /// The breaker of writes: reads' failures never refuse a write.
    pub(crate) write_circuit: Arc<Circuit>,
    /// Near-duplicate lookups and their threshold, when `cache.similarity_threshold` > 0.
    pub(crate) similar: Option<(SimilarIndex, f64)>,
    /// Failed background fetches (prewarms, refreshes): WARN at most every 10 s.
    pub(crate) background_failures: LogGate,
    /// The shared tier on Redis, when `shared_cache.url` is set.
    pub(crate) shared: Option<Arc<SharedTier>>,
    /// The memory mirror, when `cache.local_answers` is on.
    pub(crate) mirror: Option<Arc<Mirror>>,
}

/// What makes this replica's answers what they are, besides the request: the memU it asks and
/// the repairs it makes. Replicas whose fingerprints differ never share an answer in Redis.
fn answering(config: &Config) -> String {
    let upstream = &config.upstream;
    format!(
        "records v2\nupstream {}://{}{}\nfill_null_timestamps {}",
        upstream.scheme, upstream.authority, upstream.base_path, config.compat.fill_null_timestamps
    )
}

impl State {
    pub fn new(config: &Config) -> Self {
        let mut registry = Registry::with_prefix("memu_proxy");
        let metrics = Arc::new(Metrics::register(&mut registry));
        let circuit = Arc::new(Circuit::new(&config.circuit, Guards::Reads));
        let write_circuit = Arc::new(Circuit::new(&config.circuit, Guards::Writes));
        let lifetimes = Lifetimes {
            ttl: config.cache.ttl,
            stale_while_revalidate: config.cache.stale_while_revalidate,
            stale_if_error: config.cache.stale_if_error,
        };
        // With near-duplicate hits on, their index takes an eighth of `cache.max_bytes`, the key
        // memo a sixteenth, and the answers the rest: together they stay within the bound.
        let similar_bytes = if config.cache.similarity_threshold > 0.0 {
            config.cache.max_bytes / 8
        } else {
            0
        };
        let memo_bytes = config.cache.max_bytes / 16;
        // With local answers on, the memory mirror takes another sixteenth, and its vectors
        // (`[local_answers] embeddings_url`) one more.
        let mirror_bytes = if config.cache.local_answers {
            config.cache.max_bytes / 16
        } else {
            0
        };
        let embeddings = config.embeddings.as_ref().filter(|_| mirror_bytes > 0);
        let vector_bytes = embeddings.map_or(0, |_| config.cache.max_bytes / 16);
        let store = Arc::new(Store::new(
            config.cache.max_bytes - similar_bytes - memo_bytes - mirror_bytes - vector_bytes,
            lifetimes,
        ));
        let embedder =
            embeddings.map(|embeddings| Arc::new(Embedder::new(embeddings, vector_bytes)));
        if let Some(embedder) = &embedder {
            registry.register_collector(Box::new(Arc::clone(embedder)));
        }
        let mirror = (mirror_bytes > 0).then(|| Arc::new(Mirror::new(mirror_bytes, embedder)));
        if let Some(mirror) = &mirror {
            registry.register_collector(Box::new(Arc::clone(mirror)));
        }
        let scopes = Arc::new(Scopes::new(config.cache.max_scopes));
        let inflight = Arc::new(InflightFetches::default());
        registry.register_collector(Box::new(Arc::clone(&store)));
        registry.register_collector(Box::new(Arc::clone(&scopes)));
        registry.register_collector(Box::new(Arc::clone(&circuit)));
        registry.register_collector(Box::new(Arc::clone(&write_circuit)));
        registry.register_collector(Box::new(Arc::clone(&inflight)));
        let shared = config.shared_cache.as_ref().and_then(|shared| {
            let started = SharedTier::start(
                shared,
                answering(config).as_bytes(),
                config.cache.ttl,
                config.upstream.timeout,
                Arc::clone(&scopes),
                Arc::clone(&metrics),
                &mut registry,
            );
            // The URL was parsed when the configuration was validated.
            started
                .inspect_err(|error| tracing::error!(%error, "shared cache tier not started"))
                .ok()
        });
        if let Some(shared) = &shared {
            registry.register_collector(Box::new(Arc::clone(shared)));
        }
        Self {
            upstream: Upstream::new(
                &config.upstream,
                Arc::clone(&circuit),
                Arc::clone(&write_circuit),
            ),
            store,
            keys: KeyMemo::new(memo_bytes),
            scopes,
            inflight,
            tasks: BoundedMap::new(config.cache.max_tracked_tasks),
            task_pollers: Arc::new(Semaphore::new(MAX_TASK_POLLERS)),
            metrics,
            registry,
            cache_enabled: config.cache.enabled,
            max_body_bytes: config.max_body_bytes,
            fill_null_timestamps: config.compat.fill_null_timestamps,
            budget: config.latency.budget,
            fetch_permits: Arc::new(Semaphore::new(config.latency.max_background_fetches)),
            background_reserve: config.latency.max_background_fetches / 4,
            circuit,
            write_circuit,
            similar: (similar_bytes > 0).then(|| {
                (
                    SimilarIndex::new(similar_bytes),
                    config.cache.similarity_threshold,
                )
            }),
            background_failures: LogGate::new(Duration::from_secs(10)),
            shared,
            mirror,
        }
    }

    /// False while the shared tier's invalidation stream has been lost for longer than
    /// `shared_cache.offline_grace_ms`: local entries may miss another replica's writes.
    pub(crate) fn trusts_local_entries(&self) -> bool {
        self.shared
            .as_ref()
            .is_none_or(|shared| shared.trusts_local())
    }

    /// False while a stale answer could predate a delete this replica has not heard of: the
    /// shared tier's stream is down, or not trusted ([`State::trusts_local_entries`]).
    pub(crate) fn may_serve_stale(&self) -> bool {
        self.shared
            .as_ref()
            .is_none_or(|shared| shared.trusts_local() && shared.stream_up())
    }

    /// Bumps the generations a write of `kind` to `scope` invalidates, and counts it.
    pub(crate) fn invalidate(
        &self,
        scope: &Scope,
        what: Invalidate,
        kind: WriteKind,
        cause: InvalidationCause,
    ) {
        self.scopes.invalidate(scope, what, kind);
        self.metrics.invalidation(cause, kind);
    }

    /// Invalidates every `(scope, what)` of a write of `kind`, here and, through the shared
    /// tier, in every other replica.
    pub(crate) async fn invalidate_all(
        &self,
        targets: &[(Scope, Invalidate)],
        kind: WriteKind,
        cause: InvalidationCause,
    ) {
        let pending = self.shared.as_ref().map(|shared| shared.pending());
        for (scope, what) in targets {
            self.invalidate(scope, *what, kind, cause);
        }
        if let (Some(shared), Some(pending)) = (&self.shared, pending) {
            shared.invalidate(targets, kind, pending).await;
        }
    }

    /// [`State::invalidate_all`] for callers that cannot wait: the local bump now, the shared one
    /// in a task of its own.
    pub(crate) fn invalidate_all_now(
        &self,
        targets: Arc<[(Scope, Invalidate)]>,
        kind: WriteKind,
        cause: InvalidationCause,
    ) {
        let pending = self.shared.as_ref().map(|shared| shared.pending());
        for (scope, what) in targets.iter() {
            self.invalidate(scope, *what, kind, cause);
        }
        if let (Some(shared), Some(pending)) = (&self.shared, pending) {
            let shared = Arc::clone(shared);
            tokio::spawn(async move { shared.invalidate(&targets, kind, pending).await });
        }
    }

    /// The Prometheus text exposition of every metric.
    pub(crate) fn render_metrics(&self) -> String {
        metrics::render(&self.registry)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_log_gate_passes_once_per_period_and_counts_the_rest() {
        let gate = LogGate::new(Duration::from_secs(10));
        assert_eq!(gate.pass(), Some(0));
        assert_eq!(gate.pass(), None);
        assert_eq!(gate.pass(), None);
        tokio::time::advance(Duration::from_secs(10)).await;
        assert_eq!(gate.pass(), Some(2));
        assert_eq!(gate.pass(), None);
    }
    use crate::cache::inflight::Joined;
    use crate::cache::{read_key, tenant_of};
    use crate::routes::ReadRoute;
    use bytes::Bytes;
    use http::HeaderMap;
    use tokio::time::Instant;

    /// Every component's scrape-time values, non-zero, with the HELP text `register` would write.
    #[tokio::test]
    async fn the_exposition_shows_each_components_own_values() {
        let mut settings = crate::config::Settings::default();
        settings.circuit.failure_threshold = 1;
        let state = State::new(&settings.validate().unwrap());
        let key = read_key(
            ReadRoute::V1_RELATED,
            "/p",
            tenant_of(None),
            br#"{"user_id":"u","query":"q"}"#,
        )
        .unwrap()
        .key;
        let generations = state.scopes.current(&key.scope);
        state.store.admit(
            key.clone(),
            &Bytes::from_static(b"{}"),
            &HeaderMap::new(),
            generations,
            Instant::now(),
        );
        state.invalidate(
            &key.scope,
            Invalidate::Agent,
            WriteKind::Supersede,
            InvalidationCause::Write,
        );
        let Joined::Leader(_lease) = state.inflight.join(&(key, generations)) else {
            panic!("the first join leads");
        };
        state.circuit.try_pass().unwrap().failure();
        assert!(state.circuit.try_pass().is_err());

        let text = state.render_metrics();
        for line in [
            "memu_proxy_cache_entries 1",
            "memu_proxy_cache_evictions_total 0",
            // The key has no agent: its own slot is the (user, null) slot a write also bumps.
            "memu_proxy_invalidation_scopes 1",
            "memu_proxy_inflight_fetches 1",
            "memu_proxy_circuit_state 1",
            "memu_proxy_write_circuit_state 0",
            r#"memu_proxy_circuit_transitions_total{to="open"} 1"#,
            r#"memu_proxy_circuit_transitions_total{to="half_open"} 0"#,
            r#"memu_proxy_circuit_transitions_total{to="closed"} 0"#,
            "memu_proxy_circuit_short_circuited_total 1",
            r#"memu_proxy_cache_invalidations_total{cause="write",kind="supersede"} 1"#,
            "# HELP memu_proxy_cache_entries Entries in the cache.",
            "# HELP memu_proxy_cache_bytes Weighed size of the cache.",
            "# TYPE memu_proxy_cache_bytes gauge",
            "# UNIT memu_proxy_cache_bytes bytes",
            "# HELP memu_proxy_circuit_state Circuit breaker of reads, task polls and pass-through: 0 closed, 1 open, 2 half-open.",
            "# HELP memu_proxy_write_circuit_state Circuit breaker of writes: 0 closed, 1 open, 2 half-open.",
            "# HELP memu_proxy_inflight_fetches Coalesced upstream fetches in flight.",
        ] {
            assert!(text.contains(line), "missing {line:?} in\n{text}");
        }
        assert!(!text.contains("memu_proxy_cache_bytes 0"), "{text}");
    }
}
