//! The proxy's Prometheus metrics, in one registry, rendered by `prometheus-client`.
//!
//! Label values come from fixed enums only (route class, outcome, reason): no user ids, query
//! text or keys, so cardinality stays fixed whatever the traffic.

use std::sync::Mutex;
use std::time::Duration;

use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue, LabelValueEncoder};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::{Registry, Unit};

use crate::fallback::FallbackReason;

/// Which kind of route a request took.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RouteClassLabel {
    Read,
    Write,
    Status,
    Passthrough,
    Admin,
    Unknown,
}

/// How a request ended, from the cache's point of view.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Outcome {
    /// Answered from the cache.
    Hit,
    /// Forwarded to memU (cache miss, or a route the cache does not handle).
    Miss,
    /// Waited on another request's identical upstream fetch.
    Coalesced,
    /// Forwarded without using the cache (`no-store`, uncacheable body).
    Bypass,
    /// Answered with the empty fallback.
    Fallback,
    /// Answered with an error the proxy produced (413, 502, 504 …).
    Error,
    /// Answered from the fresh cached answer of a near-duplicate query.
    SimilarHit,
    /// Answered from a stale cache entry (stale-while-revalidate, or instead of the fallback).
    Stale,
    /// Served by the proxy itself (`/metrics`, `/healthz`, `/prewarm`).
    Local,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct RequestLabels {
    route_class: RouteClassLabel,
    outcome: Outcome,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct RouteLabels {
    route_class: RouteClassLabel,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct ReasonLabels {
    reason: FallbackReason,
}

/// Why cached reads were invalidated.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum InvalidationCause {
    /// A memorize or delete passed through the proxy.
    Write,
    /// A task-status poll reported `SUCCESS` for a memorize the proxy forwarded.
    TaskSuccess,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct StateLabels {
    to: &'static str,
}

/// What happened to a background fetch (stale-while-revalidate refresh or prewarm).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum BackgroundEvent {
    /// A refresh or prewarm fetch was started.
    Started,
    /// An identical fetch was already in flight; nothing new was started.
    Joined,
    /// `latency.max_background_fetches` were already running: dropped.
    Dropped,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct BackgroundLabels {
    event: BackgroundEvent,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct CauseLabels {
    cause: InvalidationCause,
}

/// Label values are the lowercase names below, fixed at compile time.
macro_rules! label_values {
    ($($ty:ty { $($variant:ident => $name:literal),+ $(,)? })+) => {$(
        impl $ty {
            pub fn as_label(self) -> &'static str {
                match self { $(Self::$variant => $name),+ }
            }
        }
        impl EncodeLabelValue for $ty {
            fn encode(&self, encoder: &mut LabelValueEncoder) -> Result<(), std::fmt::Error> {
                EncodeLabelValue::encode(&self.as_label(), encoder)
            }
        }
    )+};
}

label_values! {
    RouteClassLabel {
        Read => "read", Write => "write", Status => "status",
        Passthrough => "passthrough", Admin => "admin", Unknown => "unknown",
    }
    Outcome {
        Hit => "hit", SimilarHit => "similar_hit", Miss => "miss", Coalesced => "coalesced", Bypass => "bypass",
        Fallback => "fallback", Error => "error", Stale => "stale", Local => "local",
    }
    InvalidationCause { Write => "write", TaskSuccess => "task_success" }
    BackgroundEvent { Started => "started", Joined => "joined", Dropped => "dropped" }
}

impl EncodeLabelValue for FallbackReason {
    fn encode(&self, encoder: &mut LabelValueEncoder) -> Result<(), std::fmt::Error> {
        EncodeLabelValue::encode(&self.as_str(), encoder)
    }
}

type HistogramFamily<L> = Family<L, Histogram, fn() -> Histogram>;

fn latency_histogram() -> Histogram {
    // 50 µs … ~6.5 s, doubling.
    Histogram::new(exponential_buckets(0.000_05, 2.0, 18))
}

/// Gauges refreshed at scrape time from the live structures.
#[derive(Debug, Clone, Copy, Default)]
pub struct Snapshot {
    pub cache_entries: usize,
    pub cache_bytes: u64,
    pub cache_evictions: u64,
    pub scopes: usize,
    pub inflight: usize,
    pub circuit_state: i64,
    pub circuit: crate::circuit::CircuitStats,
}

/// Every metric the proxy exports.
pub struct Metrics {
    registry: Mutex<Registry>,
    requests: Family<RequestLabels, Counter>,
    request_duration: HistogramFamily<RouteLabels>,
    upstream_duration: HistogramFamily<RouteLabels>,
    fallbacks: Family<ReasonLabels, Counter>,
    invalidations: Family<CauseLabels, Counter>,
    coalesced: Counter,
    stale: Family<ReasonLabels, Counter>,
    background: Family<BackgroundLabels, Counter>,
    prewarms: Counter,
    circuit_state: Gauge,
    circuit_transitions: Family<StateLabels, Counter>,
    short_circuited: Counter,
    evictions: Counter,
    cache_entries: Gauge,
    cache_bytes: Gauge,
    scopes: Gauge,
    inflight: Gauge,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let metrics = Self {
            registry: Mutex::new(Registry::with_prefix("memu_proxy")),
            requests: Family::default(),
            request_duration: Family::new_with_constructor(latency_histogram),
            upstream_duration: Family::new_with_constructor(latency_histogram),
            fallbacks: Family::default(),
            invalidations: Family::default(),
            coalesced: Counter::default(),
            stale: Family::default(),
            background: Family::default(),
            prewarms: Counter::default(),
            circuit_state: Gauge::default(),
            circuit_transitions: Family::default(),
            short_circuited: Counter::default(),
            evictions: Counter::default(),
            cache_entries: Gauge::default(),
            cache_bytes: Gauge::default(),
            scopes: Gauge::default(),
            inflight: Gauge::default(),
        };
        metrics.register();
        metrics
    }

    fn register(&self) {
        let mut r = self.lock();
        r.register(
            "requests",
            "Requests by route class and outcome",
            self.requests.clone(),
        );
        r.register_with_unit(
            "request_duration",
            "Time from request head to response head, in the proxy",
            Unit::Seconds,
            self.request_duration.clone(),
        );
        r.register_with_unit(
            "upstream_duration",
            "Duration of upstream exchanges with memU",
            Unit::Seconds,
            self.upstream_duration.clone(),
        );
        r.register(
            "fallbacks",
            "Empty fallback answers served, by reason",
            self.fallbacks.clone(),
        );
        r.register(
            "cache_invalidations",
            "Scope invalidations, by cause",
            self.invalidations.clone(),
        );
        r.register(
            "coalesced_waits",
            "Requests that waited on another request's identical upstream fetch",
            self.coalesced.clone(),
        );
        r.register(
            "stale_served",
            "Stale cache answers served instead of waiting or of the empty fallback, by reason",
            self.stale.clone(),
        );
        r.register(
            "background_fetches",
            "Background fetches (stale-while-revalidate refreshes, prewarms), by event",
            self.background.clone(),
        );
        r.register(
            "prewarm_requests",
            "Accepted POST /prewarm requests",
            self.prewarms.clone(),
        );
        r.register(
            "circuit_state",
            "Circuit breaker state: 0 closed, 1 open, 2 half-open",
            self.circuit_state.clone(),
        );
        r.register(
            "circuit_transitions",
            "Circuit breaker transitions, by the state entered",
            self.circuit_transitions.clone(),
        );
        r.register(
            "circuit_short_circuited",
            "Upstream exchanges refused because the circuit was open",
            self.short_circuited.clone(),
        );
        r.register(
            "cache_evictions",
            "Entries evicted to stay within cache.max_bytes",
            self.evictions.clone(),
        );
        r.register(
            "cache_entries",
            "Entries in the cache",
            self.cache_entries.clone(),
        );
        r.register_with_unit(
            "cache",
            "Weighed size of the cache",
            Unit::Bytes,
            self.cache_bytes.clone(),
        );
        r.register(
            "invalidation_scopes",
            "Invalidation scopes remembered",
            self.scopes.clone(),
        );
        r.register(
            "inflight_fetches",
            "Coalesced upstream fetches in flight",
            self.inflight.clone(),
        );
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Registry> {
        self.registry
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    pub fn request(&self, route_class: RouteClassLabel, outcome: Outcome, duration: Duration) {
        self.requests
            .get_or_create(&RequestLabels {
                route_class,
                outcome,
            })
            .inc();
        self.request_duration
            .get_or_create(&RouteLabels { route_class })
            .observe(duration.as_secs_f64());
    }

    pub fn upstream(&self, route_class: RouteClassLabel, duration: Duration) {
        self.upstream_duration
            .get_or_create(&RouteLabels { route_class })
            .observe(duration.as_secs_f64());
    }

    pub fn fallback(&self, reason: FallbackReason) {
        self.fallbacks.get_or_create(&ReasonLabels { reason }).inc();
    }

    pub fn invalidation(&self, cause: InvalidationCause) {
        self.invalidations
            .get_or_create(&CauseLabels { cause })
            .inc();
    }

    pub fn coalesced_wait(&self) {
        self.coalesced.inc();
    }

    pub fn stale_served(&self, reason: FallbackReason) {
        self.stale.get_or_create(&ReasonLabels { reason }).inc();
    }

    pub fn background(&self, event: BackgroundEvent) {
        self.background
            .get_or_create(&BackgroundLabels { event })
            .inc();
    }

    pub fn prewarm(&self) {
        self.prewarms.inc();
    }

    /// Renders the text exposition, after refreshing the gauges from `snapshot`.
    pub fn render(&self, snapshot: Snapshot) -> String {
        let to_i64 = |n: u64| i64::try_from(n).unwrap_or(i64::MAX);
        self.cache_entries
            .set(to_i64(snapshot.cache_entries as u64));
        self.cache_bytes.set(to_i64(snapshot.cache_bytes));
        self.scopes.set(to_i64(snapshot.scopes as u64));
        self.inflight.set(to_i64(snapshot.inflight as u64));
        self.circuit_state.set(snapshot.circuit_state);
        let registry = self.lock();
        // The store and the breaker count for themselves; catch the counters up (serialised by
        // the registry lock).
        catch_up(&self.evictions, snapshot.cache_evictions);
        catch_up(&self.short_circuited, snapshot.circuit.short_circuited);
        for (to, total) in [
            ("open", snapshot.circuit.opened),
            ("half_open", snapshot.circuit.half_opened),
            ("closed", snapshot.circuit.closed),
        ] {
            catch_up(
                &self.circuit_transitions.get_or_create(&StateLabels { to }),
                total,
            );
        }
        let mut out = String::new();
        if let Err(e) = prometheus_client::encoding::text::encode(&mut out, &registry) {
            tracing::error!(error = %e, "cannot encode metrics");
        }
        out
    }
}

fn catch_up(counter: &Counter, total: u64) {
    let seen = counter.get();
    if total > seen {
        counter.inc_by(total - seen);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exposition_has_every_family_with_fixed_labels() {
        let m = Metrics::new();
        m.request(
            RouteClassLabel::Read,
            Outcome::Hit,
            Duration::from_micros(30),
        );
        m.upstream(RouteClassLabel::Read, Duration::from_millis(5));
        m.fallback(FallbackReason::Upstream5xx);
        m.invalidation(InvalidationCause::TaskSuccess);
        m.coalesced_wait();
        let text = m.render(Snapshot {
            cache_entries: 3,
            cache_bytes: 1234,
            cache_evictions: 2,
            scopes: 1,
            inflight: 0,
            circuit_state: 1,
            circuit: crate::circuit::CircuitStats {
                opened: 1,
                half_opened: 0,
                closed: 0,
                short_circuited: 4,
            },
        });
        for line in [
            r#"memu_proxy_requests_total{route_class="read",outcome="hit"} 1"#,
            r#"memu_proxy_fallbacks_total{reason="upstream-5xx"} 1"#,
            r#"memu_proxy_cache_invalidations_total{cause="task_success"} 1"#,
            "memu_proxy_coalesced_waits_total 1",
            "memu_proxy_cache_entries 3",
            "memu_proxy_cache_bytes 1234",
            "# TYPE memu_proxy_request_duration_seconds histogram",
            "# TYPE memu_proxy_upstream_duration_seconds histogram",
            "memu_proxy_cache_evictions_total 2",
            "memu_proxy_circuit_state 1",
            r#"memu_proxy_circuit_transitions_total{to="open"} 1"#,
            "memu_proxy_circuit_short_circuited_total 4",
            "# EOF",
        ] {
            assert!(text.contains(line), "missing {line:?} in\n{text}");
        }
    }
}
