//! The shared tier's metric families: every Redis operation counted by its result, and timed.
//! Registered once into the proxy's registry (`state.rs`); label values are fixed enums.

use std::time::Duration;

use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::{Registry, Unit};

/// One kind of Redis operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, EncodeLabelValue)]
#[allow(non_camel_case_types)]
pub enum Op {
    /// An answer and its generations (and the fetch lock on a miss), one script.
    lookup,
    /// An answer written with the generations it was fetched under.
    store,
    /// A fetch lock given back without an answer.
    release,
    /// A write's generations bumped and published.
    invalidate,
    /// The replica's heartbeat on the invalidation channel.
    heartbeat,
    /// A new connection, opened and PINGed, while the link is down.
    connect,
    /// The invalidation stream (re)subscribed.
    subscribe,
    /// Redis's `run_id` read (and, when it changed, a fresh everything epoch set).
    incarnation,
}

/// How an operation ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, EncodeLabelValue)]
#[allow(non_camel_case_types)]
pub enum OpResult {
    /// A lookup found a current answer.
    hit,
    /// A lookup found none (or only one a write superseded).
    miss,
    /// Any other operation that succeeded.
    ok,
    /// Redis answered with an error, or the connection failed.
    error,
    /// No answer within `shared_cache.timeout_ms`.
    timeout,
    /// Not tried: the link is down (reconnecting in the background), or this replica's writes
    /// are not all in Redis yet.
    skipped,
    /// A lookup found a record this replica would not serve (not an answer of the route's shape).
    rejected,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct OpLabels {
    op: Op,
    result: OpResult,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct OpOnly {
    op: Op,
}

/// The families the shared tier updates.
#[derive(Debug)]
pub struct SharedMetrics {
    operations: Family<OpLabels, Counter>,
    durations: Family<OpOnly, Histogram, fn() -> Histogram>,
}

fn histogram() -> Histogram {
    // 20 µs … ~0.65 s, doubling: Redis answers on loopback in tens of µs.
    Histogram::new(exponential_buckets(0.000_02, 2.0, 16))
}

impl SharedMetrics {
    pub fn register(registry: &mut Registry) -> Self {
        let metrics = Self {
            operations: Family::default(),
            durations: Family::new_with_constructor(histogram as fn() -> Histogram),
        };
        registry.register(
            "shared_cache_operations",
            "Shared cache tier (Redis) operations by result",
            metrics.operations.clone(),
        );
        registry.register_with_unit(
            "shared_cache_operation_duration",
            "Shared cache tier (Redis) operation latency, of those that were tried",
            Unit::Seconds,
            metrics.durations.clone(),
        );
        metrics
    }

    /// Counts one operation, and times it unless it was skipped.
    pub fn record(&self, op: Op, result: OpResult, took: Option<Duration>) {
        self.operations
            .get_or_create(&OpLabels { op, result })
            .inc();
        if let Some(took) = took {
            self.durations
                .get_or_create(&OpOnly { op })
                .observe(took.as_secs_f64());
        }
    }
}
