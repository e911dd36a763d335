//! The retrieval path's decisions, as pure functions: what an upstream result means
//! ([`judge`]), whether a finished fetch may be stored ([`admit`]), and what a client waiting on
//! a fetch answers ([`waiter_answer`]). Plain values in, plain values out: table-tested here
//! without sockets or clocks; `fetch.rs` and `handlers/read.rs` act on them.

use std::sync::Arc;
use std::time::Duration;

use http::StatusCode;
use serde_json::Value;

use crate::cache::{Entry, Generations};
use crate::fallback::FallbackReason;
use crate::routes::{field, Generation, ReadRoute};
use crate::upstream::{Buffered, UpstreamError};

/// The shared result of one upstream fetch, as every waiter sees it.
#[derive(Debug)]
pub enum Fetched {
    /// memU answered; `stored` says whether the answer was admitted to the cache.
    Answer {
        answer: Buffered,
        stored: bool,
        upstream: Duration,
    },
    /// A current answer from the shared tier (Redis), instead of asking memU.
    Shared(Arc<Entry>),
    /// No usable answer: the reader gets a stale answer or the fallback.
    Failed {
        reason: FallbackReason,
        upstream: Duration,
    },
}

/// What an upstream result means for a retrieval.
#[derive(Debug)]
pub enum Judgement {
    /// Pass memU's answer on; store it when `cacheable`.
    Answer {
        answer: Buffered,
        cacheable: bool,
    },
    Fallback(FallbackReason),
}

/// Classifies an upstream result for `route`: a 200 JSON object with the route's list fields as
/// lists is cacheable; 4xx answers pass through unchanged (memU's 422 says what is wrong with the
/// request); 5xx, transport failures, non-JSON 200s and any other 2xx (a JSON list, `null`, a
/// missing or `null` list field, a 204, an empty body) fall back.
pub fn judge(result: Result<Buffered, UpstreamError>, route: ReadRoute) -> Judgement {
    match result {
        Err(UpstreamError::Timeout(_)) => Judgement::Fallback(FallbackReason::Timeout),
        Err(UpstreamError::Connect(_)) => Judgement::Fallback(FallbackReason::Connect),
        Err(UpstreamError::Tls(_)) => Judgement::Fallback(FallbackReason::Tls),
        Err(
            UpstreamError::Exchange(_)
            | UpstreamError::TooLarge(_)
            | UpstreamError::RequestTooLarge
            // Not produced for reads (their bodies are read whole before forwarding).
            | UpstreamError::ClientBody(_)
            | UpstreamError::SlowUpload(_),
        ) => Judgement::Fallback(FallbackReason::UpstreamError),
        Err(UpstreamError::CircuitOpen(_)) => Judgement::Fallback(FallbackReason::CircuitOpen),
        Ok(answer) if answer.status.is_server_error() => {
            Judgement::Fallback(FallbackReason::Upstream5xx)
        }
        Ok(answer) if answer.status == StatusCode::OK => {
            match serde_json::from_slice::<Value>(&answer.body) {
                Ok(value) if has_shape(&value, route) => Judgement::Answer {
                    answer,
                    cacheable: true,
                },
                Ok(_) => Judgement::Fallback(FallbackReason::InvalidShape),
                Err(_) => Judgement::Fallback(FallbackReason::InvalidJson),
            }
        }
        Ok(answer) if answer.status.is_success() => {
            Judgement::Fallback(FallbackReason::InvalidShape)
        }
        Ok(answer) => Judgement::Answer {
            answer,
            cacheable: false,
        },
    }
}

/// A JSON object holding each of the route's list fields as a list.
fn has_shape(value: &Value, route: ReadRoute) -> bool {
    value.is_object()
        && route
            .lists
            .iter()
            .all(|list| field(value, list).is_some_and(Value::is_array))
}

/// Applies the opt-in compat repairs to an answer that will be served and stored (so a hit costs
/// no repair). They concern the v1/v2 SDK only.
pub fn repair(judgement: Judgement, route: ReadRoute, fill_null_timestamps: bool) -> Judgement {
    match judgement {
        Judgement::Answer { answer, cacheable }
            if cacheable && fill_null_timestamps && route.generation == Generation::V1 =>
        {
            Judgement::Answer {
                answer: crate::compat::fill_null_timestamps(answer),
                cacheable,
            }
        }
        other => other,
    }
}

/// Whether a cacheable answer whose fetch started under `started` is stored, now that the scope
/// is at `current` with the purge marks `purges`. A fetch that raced a memorize is stored (it may
/// serve as stale-if-error, never as a hit), unless a newer fetch already stored the answer valid
/// now (`holds_current`, asked only when it matters). A fetch that raced a purge (a delete) is
/// never stored: what it read may be a deleted memory.
pub fn admit(
    started: Generations,
    current: Generations,
    purges: Generations,
    holds_current: impl FnOnce() -> bool,
) -> bool {
    started == current || (!started.predates(&purges) && !holds_current())
}

/// How a client's wait on a fetch ended.
#[derive(Debug)]
pub enum Waited {
    /// The fetch published its result.
    Done(Arc<Fetched>),
    /// The fetch ended without publishing one (its task died).
    Abandoned,
    /// The client's time ran out first: its latency budget (`budget`) or the hard deadline.
    OutOfTime { budget: bool, waited: Duration },
}

/// What a waiting client answers.
#[derive(Debug, PartialEq)]
pub enum WaiterAnswer<'a> {
    /// memU's answer, as the fetch got it.
    Answer {
        answer: &'a Buffered,
        stored: bool,
        upstream: Duration,
    },
    /// The shared tier's answer: a hit.
    Shared(&'a Entry),
    /// A stale answer within the stale-if-error window if there is one, else the empty fallback.
    StaleOrEmpty {
        reason: FallbackReason,
        upstream: Option<Duration>,
    },
}

/// Decides a waiter's answer from how its wait ended.
pub fn waiter_answer(waited: &Waited) -> WaiterAnswer<'_> {
    match waited {
        Waited::Done(fetched) => match fetched.as_ref() {
            Fetched::Answer {
                answer,
                stored,
                upstream,
            } => WaiterAnswer::Answer {
                answer,
                stored: *stored,
                upstream: *upstream,
            },
            Fetched::Shared(entry) => WaiterAnswer::Shared(entry),
            Fetched::Failed { reason, upstream } => WaiterAnswer::StaleOrEmpty {
                reason: *reason,
                upstream: Some(*upstream),
            },
        },
        Waited::Abandoned => WaiterAnswer::StaleOrEmpty {
            reason: FallbackReason::UpstreamError,
            upstream: None,
        },
        Waited::OutOfTime { budget, waited } => WaiterAnswer::StaleOrEmpty {
            reason: if *budget {
                FallbackReason::Budget
            } else {
                FallbackReason::Timeout
            },
            upstream: Some(*waited),
        },
    }
}

#[cfg(test)]
mod tests;
