//! One buffered exchange with memU on behalf of a handler: read the client's body, forward it,
//! read the whole answer, all within a deadline, and time it into the metrics.
//!
//! Used where the proxy must read what memU says: writes, watched task polls, the cache bypass,
//! and the proxy's own task polls. Streaming pass-through and the coalesced spawned fetch call
//! the upstream client themselves (`handlers/passthrough.rs`, `fetch.rs`).

use std::future::{poll_fn, Future};
use std::pin::pin;
use std::task::Poll;
use std::time::Duration;

use bytes::Bytes;
use http_body::Body;
use http_body_util::BodyExt;
use tokio::time::Instant;

use crate::body::{full, is_length_limit, BoxError};
use crate::error::ProxyError;
use crate::outcome::RouteClassLabel;
use crate::state::State;
use crate::upstream::circuit::Guards;
use crate::upstream::{Buffered, Encoding, UpstreamError};

/// The result of a buffered exchange and how long memU took.
#[derive(Debug)]
pub struct Exchanged {
    pub result: Result<Buffered, UpstreamError>,
    pub upstream: Duration,
}

/// Reads a whole request body by `by`. Its size is bounded before it gets here, at `limit`
/// bytes: by the `RequestBodyLimitLayer` around every handler (`stack/mod.rs`), or, in the hit
/// lane (`stack/lane.rs`), by the exact length it accepts; crossing it is reported as 413, a body
/// still arriving at `by` as 408, any other failure (bad framing, an aborted upload) as 400.
pub async fn read_body<B>(body: B, limit: usize, by: Instant) -> Result<Bytes, ProxyError>
where
    B: Body<Data = Bytes>,
    B::Error: Into<BoxError>,
{
    let mut collect = pin!(body.collect());
    // Most bodies are here already (small, sent with the head): those need no timer.
    let collected = match poll_fn(|cx| Poll::Ready(collect.as_mut().poll(cx))).await {
        Poll::Ready(collected) => collected,
        Poll::Pending => {
            let started = Instant::now();
            let Ok(collected) = tokio::time::timeout_at(by, collect).await else {
                return Err(ProxyError::SlowUpload(
                    by.saturating_duration_since(started),
                ));
            };
            collected
        }
    };
    match collected.map_err(Into::into) {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(error) if is_length_limit(error.as_ref()) => Err(ProxyError::BodyTooLarge { limit }),
        Err(error) => Err(ProxyError::BodyRead(error)),
    }
}

/// The hard deadline of a read or task-status exchange starting now (`upstream.timeout_ms`).
pub fn deadline(state: &State) -> Instant {
    Instant::now() + state.upstream.timeout()
}

/// The hard deadline of a write starting now (`upstream.write_timeout_ms`).
pub fn write_deadline(state: &State) -> Instant {
    Instant::now() + state.upstream.write_timeout()
}

/// Forwards a request whose body the proxy has read, and reads the whole answer unencoded, within
/// `deadline` ([`deadline`] or [`write_deadline`]); the exchange is timed into the metrics.
pub async fn forward_buffered(
    state: &State,
    parts: &http::request::Parts,
    body: Bytes,
    class: RouteClassLabel,
    deadline: Instant,
) -> Exchanged {
    let request = match state
        .upstream
        .request(parts, full(body), Encoding::Identity)
    {
        Ok(request) => request,
        Err(e) => {
            return Exchanged {
                result: Err(UpstreamError::Exchange(Box::new(e))),
                upstream: Duration::ZERO,
            }
        }
    };
    let started = Instant::now();
    let guards = match class {
        RouteClassLabel::Write => Guards::Writes,
        RouteClassLabel::Read
        | RouteClassLabel::Status
        | RouteClassLabel::PassThrough
        | RouteClassLabel::Admin
        | RouteClassLabel::Unknown => Guards::Reads,
    };
    let result = state.upstream.exchange(request, deadline, guards).await;
    let upstream = started.elapsed();
    if !matches!(result, Err(UpstreamError::CircuitOpen(_))) {
        state.metrics.upstream(class, upstream);
    }
    Exchanged { result, upstream }
}
