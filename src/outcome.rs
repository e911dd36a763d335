//! What a handler returns, and what the outer layer logs and counts of it.
//!
//! Handlers (`handlers/`) produce a [`Handled`]: the response plus how the request ended
//! ([`Outcome`]) and how long memU took. Dispatch attaches a [`RequestInfo`] to the response;
//! the outermost layer (`stack/mod.rs`) takes it off again to write the log line and the request
//! metrics. Plain values: nothing here touches the network or the cache.

use std::time::Duration;

use http::{Method, Response};
use tokio::time::Instant;

use crate::body::ProxyBody;

pub use crate::routes::RouteClassLabel;

/// How a request ended, from the cache's point of view.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Outcome {
    /// Answered from the cache.
    Hit,
    /// A cacheable read forwarded to memU: the cache had no usable answer.
    Miss,
    /// Waited on another request's identical upstream fetch.
    Coalesced,
    /// Forwarded without using the cache (`Cache-Status: fwd=bypass`): writes, task polls,
    /// pass-through, and reads with `no-store` or an uncacheable body.
    Bypass,
    /// Answered with the empty fallback.
    Fallback,
    /// Answered with an error the proxy produced (413, 502, 504 …).
    Error,
    /// Answered from the fresh cached answer of a near-duplicate query.
    SimilarHit,
    /// Answered from the shared tier (Redis): another replica's answer, or this one's before a
    /// restart.
    SharedHit,
    /// Answered from a stale cache entry (stale-while-revalidate, or instead of the fallback).
    Stale,
    /// Answered, instead of the empty fallback, with the mirrored memory items that rank for the
    /// query (`cache.local_answers`).
    LocalAnswer,
    /// Served by the proxy itself (`/metrics`, `/healthz`, `/prewarm`).
    Local,
}

impl Outcome {
    /// How many there are (metrics index their series by discriminant).
    pub const COUNT: usize = 11;

    /// The label value in metrics and logs.
    pub fn as_label(self) -> &'static str {
        match self {
            Outcome::Hit => "hit",
            Outcome::SimilarHit => "similar_hit",
            Outcome::SharedHit => "shared_hit",
            Outcome::Miss => "miss",
            Outcome::Coalesced => "coalesced",
            Outcome::Bypass => "bypass",
            Outcome::Fallback => "fallback",
            Outcome::Error => "error",
            Outcome::Stale => "stale",
            Outcome::LocalAnswer => "local_answer",
            Outcome::Local => "local",
        }
    }
}

/// What a handler produced, before the common finishing.
pub struct Handled {
    pub response: Response<ProxyBody>,
    pub outcome: Outcome,
    /// How long memU took, when it was asked.
    pub upstream: Option<Duration>,
    /// Why a fallback or a stale answer was served (the `Cache-Status` detail), for the log.
    pub detail: Option<&'static str>,
}

impl Handled {
    /// A response the proxy answered itself, without asking memU.
    pub fn local(response: Response<ProxyBody>) -> Self {
        Self {
            response,
            outcome: Outcome::Local,
            upstream: None,
            detail: None,
        }
    }
}

/// Attached to every response for the outer logging/metrics layer.
#[derive(Debug, Clone)]
pub struct RequestInfo {
    pub route_class: RouteClassLabel,
    pub outcome: Outcome,
    pub upstream: Option<Duration>,
    pub detail: Option<&'static str>,
    pub method: Method,
    pub path: String,
    /// When the request arrived, if a layer above read part of it first ([`Arrived`]).
    pub arrived: Option<Instant>,
}

/// When a request arrived, on a request the hit lane (`stack/lane.rs`) read the body of before
/// passing it on: the read handler's budget and the outer layer's timing count from here, so
/// the time the body took to arrive is not lost.
#[derive(Debug, Clone, Copy)]
pub struct Arrived(pub Instant);

impl RequestInfo {
    /// What the log line and the request metrics say of this request.
    pub fn summary(&self) -> Summary<'_> {
        Summary {
            route_class: self.route_class,
            outcome: self.outcome,
            upstream: self.upstream,
            detail: self.detail,
            method: Some(&self.method),
            path: Some(&self.path),
        }
    }
}

/// What the log line and the request metrics say of one request (`stack/mod.rs`), borrowed
/// from its [`RequestInfo`] or, for a hit in the lane (`stack/lane.rs`), from the request.
#[derive(Debug, Clone, Copy)]
pub struct Summary<'a> {
    pub route_class: RouteClassLabel,
    pub outcome: Outcome,
    pub upstream: Option<Duration>,
    pub detail: Option<&'static str>,
    pub method: Option<&'a Method>,
    pub path: Option<&'a str>,
}

impl Summary<'_> {
    /// A response no handler made (a panic, the body limit's 413): an error if its status
    /// says so.
    pub fn unattributed(status: http::StatusCode) -> Self {
        let outcome = if status.is_client_error() || status.is_server_error() {
            Outcome::Error
        } else {
            Outcome::Miss
        };
        Summary {
            route_class: RouteClassLabel::Unknown,
            outcome,
            upstream: None,
            detail: None,
            method: None,
            path: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_counts_cover_the_last_variants() {
        assert_eq!(
            RouteClassLabel::Unknown as usize + 1,
            RouteClassLabel::COUNT
        );
        assert_eq!(Outcome::Local as usize + 1, Outcome::COUNT);
    }
}
