//! The proxy's Prometheus metrics, rendered by `prometheus-client`.
//!
//! One [`Registry`] is filled once at start-up (`state.rs`) and never changed afterwards, so a
//! scrape encodes it without a lock. [`Metrics`] holds the families the request path updates.
//! Components that keep their own numbers (the store, the scopes, the circuit breaker, the
//! in-flight map) export them at scrape time through a prometheus-client [`Collector`] of their
//! own, using the small encoders here ([`gauge`], [`counter`], [`counter_family`]); nothing is
//! copied between counters.
//!
//! Label values come from fixed enums only (route class, outcome, reason): no user ids, query
//! text or keys, so cardinality stays fixed whatever the traffic.
//!
//! [`Collector`]: prometheus_client::collector::Collector

use std::sync::OnceLock;
use std::time::Duration;

use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue, LabelValueEncoder};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::{Registry, Unit};

use crate::fallback::FallbackReason;
use crate::outcome::{Outcome, RouteClassLabel};
use crate::routes::WriteKind;

mod encode;
mod labels;
pub use encode::{counter, counter_family, gauge, render};
pub use labels::{MirrorFetch, StaleRefusal, Unscoped};

/// Why cached reads were invalidated.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum InvalidationCause {
    /// A memorize or delete passed through the proxy.
    Write,
    /// A task-status poll reported `SUCCESS` for a memorize the proxy forwarded.
    TaskSuccess,
    /// Another replica published a write's invalidation (the shared tier's stream).
    Replica,
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

impl InvalidationCause {
    fn as_label(self) -> &'static str {
        match self {
            InvalidationCause::Write => "write",
            InvalidationCause::TaskSuccess => "task_success",
            InvalidationCause::Replica => "replica",
        }
    }
}

impl BackgroundEvent {
    fn as_label(self) -> &'static str {
        match self {
            BackgroundEvent::Started => "started",
            BackgroundEvent::Joined => "joined",
            BackgroundEvent::Dropped => "dropped",
        }
    }
}

/// Label values are the fixed names the types give themselves.
macro_rules! label_values {
    ($($ty:ty => $name:expr),+ $(,)?) => {$(
        impl EncodeLabelValue for $ty {
            fn encode(&self, encoder: &mut LabelValueEncoder) -> Result<(), std::fmt::Error> {
                let name: fn(&$ty) -> &'static str = $name;
                EncodeLabelValue::encode(&name(self), encoder)
            }
        }
    )+};
}

label_values! {
    RouteClassLabel => |v| v.as_label(),
    Outcome => |v| v.as_label(),
    FallbackReason => |v| v.as_str(),
    InvalidationCause => |v| v.as_label(),
    WriteKind => |v| match v {
        WriteKind::Supersede => "supersede",
        WriteKind::Purge => "purge",
    },
    StaleRefusal => |v| v.as_label(),
    MirrorFetch => |v| v.as_label(),
    Unscoped => |v| match v {
        Unscoped::Users => "users",
        Unscoped::Everything => "everything",
    },
    BackgroundEvent => |v| v.as_label(),
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

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct CauseLabels {
    cause: InvalidationCause,
    kind: WriteKind,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct MirrorFetchLabels {
    why: MirrorFetch,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct ReadingLabels {
    invalidated: Unscoped,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct RefusalLabels {
    why: StaleRefusal,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct WorkerLabels {
    worker: u32,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct BackgroundLabels {
    event: BackgroundEvent,
}

/// The series every request updates, each taken from its family on first use and kept (a
/// family lookup takes a lock and hashes the labels). Created on first use, as the family would,
/// so `/metrics` shows the same series; indexed by the label enums' discriminants, with the
/// family itself as the fallback should an index ever be out of range.
struct PerRequest {
    requests: [[OnceLock<Counter>; Outcome::COUNT]; RouteClassLabel::COUNT],
    durations: [OnceLock<Histogram>; RouteClassLabel::COUNT],
}

impl Default for PerRequest {
    fn default() -> Self {
        Self {
            requests: std::array::from_fn(|_| std::array::from_fn(|_| OnceLock::new())),
            durations: std::array::from_fn(|_| OnceLock::new()),
        }
    }
}

type HistogramFamily<L> = Family<L, Histogram, fn() -> Histogram>;

fn latency_histogram() -> Histogram {
    // 50 µs … ~6.5 s, doubling.
    Histogram::new(exponential_buckets(0.000_05, 2.0, 18))
}

/// The families the request path updates.
pub struct Metrics {
    /// Every request's two series, resolved once per label set.
    per_request: PerRequest,
    requests: Family<RequestLabels, Counter>,
    request_duration: HistogramFamily<RouteLabels>,
    upstream_duration: HistogramFamily<RouteLabels>,
    fallbacks: Family<ReasonLabels, Counter>,
    invalidations: Family<CauseLabels, Counter>,
    coalesced: Counter,
    stale: Family<ReasonLabels, Counter>,
    stale_refused: Family<RefusalLabels, Counter>,
    local_answers: Family<ReasonLabels, Counter>,
    mirror_fetches: Family<MirrorFetchLabels, Counter>,
    unscoped_writes: Family<ReadingLabels, Counter>,
    background: Family<BackgroundLabels, Counter>,
    prewarms: Counter,
    connections: Family<WorkerLabels, Counter>,
}

impl Metrics {
    /// Creates the families and registers them in `registry`.
    pub fn register(registry: &mut Registry) -> Self {
        let metrics = Self {
            per_request: PerRequest::default(),
            requests: Family::default(),
            request_duration: Family::new_with_constructor(latency_histogram),
            upstream_duration: Family::new_with_constructor(latency_histogram),
            fallbacks: Family::default(),
            invalidations: Family::default(),
            coalesced: Counter::default(),
            stale: Family::default(),
            stale_refused: Family::default(),
            local_answers: Family::default(),
            mirror_fetches: Family::default(),
            unscoped_writes: Family::default(),
            background: Family::default(),
            prewarms: Counter::default(),
            connections: Family::default(),
        };
        let r = registry;
        r.register(
            "requests",
            "Requests by route class and outcome",
            metrics.requests.clone(),
        );
        r.register_with_unit(
            "request_duration",
            "Time from request head to response head, in the proxy",
            Unit::Seconds,
            metrics.request_duration.clone(),
        );
        r.register_with_unit(
            "upstream_duration",
            "Duration of upstream exchanges with memU",
            Unit::Seconds,
            metrics.upstream_duration.clone(),
        );
        r.register(
            "fallbacks",
            "Empty fallback answers served, by reason",
            metrics.fallbacks.clone(),
        );
        r.register(
            "cache_invalidations",
            "Scope invalidations, by cause and kind (supersede: a memorize; purge: a delete, clear or commit, after which nothing older is served)",
            metrics.invalidations.clone(),
        );
        r.register(
            "coalesced_waits",
            "Requests that waited on another request's identical upstream fetch",
            metrics.coalesced.clone(),
        );
        r.register(
            "stale_served",
            "Stale cache answers served instead of waiting or of the empty fallback, by reason",
            metrics.stale.clone(),
        );
        r.register(
            "local_answers",
            "Answers built from the memory mirror instead of the empty fallback, by why memU's own was not there",
            metrics.local_answers.clone(),
        );
        r.register(
            "mirror_fetches",
            "Reads the proxy fetched on its own for the memory mirror (cache.local_answers), by why: first_sight (a scope's listing), rewarm (after a memorize succeeded)",
            metrics.mirror_fetches.clone(),
        );
        r.register(
            "stale_refused",
            "Stale answers within their window not served, by why (purged: a delete or clear came after their fetch; stream_lost: the shared tier's invalidation stream is lost)",
            metrics.stale_refused.clone(),
        );
        r.register(
            "unscoped_writes",
            "Writes whose scope could not be read as memU reads it, by what was invalidated instead (users: every scope of the user ids a scan found; everything)",
            metrics.unscoped_writes.clone(),
        );
        r.register(
            "background_fetches",
            "Background fetches (stale-while-revalidate refreshes, prewarms), by event",
            metrics.background.clone(),
        );
        r.register(
            "prewarm_requests",
            "Accepted POST /prewarm requests",
            metrics.prewarms.clone(),
        );
        r.register(
            "connections_accepted",
            "Client connections taken into service on the main listener, by worker (server.worker_threads); those closed at server.max_connections are not counted",
            metrics.connections.clone(),
        );
        metrics
    }

    pub fn request(&self, route_class: RouteClassLabel, outcome: Outcome, duration: Duration) {
        let (row, column) = (route_class as usize, outcome as usize);
        match self
            .per_request
            .requests
            .get(row)
            .and_then(|r| r.get(column))
        {
            Some(cell) => cell
                .get_or_init(|| self.request_series(route_class, outcome))
                .inc(),
            None => self.request_series(route_class, outcome).inc(),
        };
        let seconds = duration.as_secs_f64();
        match self.per_request.durations.get(row) {
            Some(cell) => cell
                .get_or_init(|| self.duration_series(route_class))
                .observe(seconds),
            None => self.duration_series(route_class).observe(seconds),
        }
    }

    /// The counter of connections worker `worker` accepts, created (at 0) now.
    pub fn accepted(&self, worker: usize) -> Counter {
        let labels = WorkerLabels {
            worker: u32::try_from(worker).unwrap_or(u32::MAX),
        };
        self.connections.get_or_create(&labels).clone()
    }

    fn duration_series(&self, route_class: RouteClassLabel) -> Histogram {
        let labels = RouteLabels { route_class };
        self.request_duration.get_or_create(&labels).clone()
    }

    fn request_series(&self, route_class: RouteClassLabel, outcome: Outcome) -> Counter {
        let labels = RequestLabels {
            route_class,
            outcome,
        };
        self.requests.get_or_create(&labels).clone()
    }

    pub fn upstream(&self, route_class: RouteClassLabel, duration: Duration) {
        self.upstream_duration
            .get_or_create(&RouteLabels { route_class })
            .observe(duration.as_secs_f64());
    }

    pub fn fallback(&self, reason: FallbackReason) {
        self.fallbacks.get_or_create(&ReasonLabels { reason }).inc();
    }

    pub fn invalidation(&self, cause: InvalidationCause, kind: WriteKind) {
        self.invalidations
            .get_or_create(&CauseLabels { cause, kind })
            .inc();
    }

    pub fn unscoped_write(&self, invalidated: Unscoped) {
        self.unscoped_writes
            .get_or_create(&ReadingLabels { invalidated })
            .inc();
    }

    pub fn stale_refused(&self, why: StaleRefusal) {
        self.stale_refused
            .get_or_create(&RefusalLabels { why })
            .inc();
    }

    pub fn coalesced_wait(&self) {
        self.coalesced.inc();
    }

    pub fn mirror_fetch(&self, why: MirrorFetch) {
        self.mirror_fetches
            .get_or_create(&MirrorFetchLabels { why })
            .inc();
    }

    pub fn local_answer(&self, reason: FallbackReason) {
        self.local_answers
            .get_or_create(&ReasonLabels { reason })
            .inc();
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
}

#[cfg(test)]
mod tests;
