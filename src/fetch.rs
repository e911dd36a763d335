//! The coalesced upstream fetch behind a retrieval miss, used by the read handler and by prewarm.
//!
//! Concurrent identical misses (same key, same generations) share one fetch. It runs in a spawned
//! task that owns the in-flight lease, so it completes and fills the cache even when every waiter
//! has given up (past a budget, or disconnected); each waiter applies its own deadline. The
//! number of fetches at once is bounded (`latency.max_background_fetches`), and background work
//! (refreshes, prewarms) leaves a quarter of the permits to clients who are waiting.

use std::sync::Arc;

use bytes::Bytes;
use http::{request, Request};
use tokio::sync::{watch, OwnedSemaphorePermit};
use tokio::time::Instant;

use crate::body::{full, ProxyBody};
use crate::cache::inflight::{Joined, Lease};
use crate::cache::{Generations, KeyedRead};
use crate::decide::{admit, judge, repair, Fetched, Judgement};
use crate::error::ProxyError;
use crate::metrics::BackgroundEvent;
use crate::outcome::RouteClassLabel;
use crate::state::{InflightKey, State};
use crate::upstream::{Buffered, Encoding, UpstreamError};

/// Where a waiter learns the fetch's result.
pub type FetchReceiver = watch::Receiver<Option<Arc<Fetched>>>;

/// A fetch joined by a client: where to wait, and whether it was already running.
pub struct Joining {
    pub rx: FetchReceiver,
    /// True when another request started this fetch (`Cache-Status: collapsed`).
    pub collapsed: bool,
}

/// Who asked for a fetch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    /// A client waits for it.
    Client,
    /// Nobody waits (a prewarm, a stale-while-revalidate refresh): its failure is logged.
    Background,
}

/// Joins the fetch in flight for this key and generations, or starts one. `None` when a fetch
/// would be needed but `latency.max_background_fetches` are already running.
pub fn join(
    state: &Arc<State>,
    read: &KeyedRead,
    generations: Generations,
    parts: &request::Parts,
    body: Bytes,
    origin: Origin,
) -> Result<Option<Joining>, ProxyError> {
    match state.inflight.join(&(read.key.clone(), generations)) {
        Joined::Follower(rx) => {
            state.metrics.coalesced_wait();
            Ok(Some(Joining {
                rx,
                collapsed: true,
            }))
        }
        Joined::Leader(lease) => {
            let Ok(permit) = Arc::clone(&state.fetch_permits).try_acquire_owned() else {
                return Ok(None);
            };
            let rx = lease.subscribe();
            let request = state
                .upstream
                .request(parts, full(body), Encoding::Identity)
                .map_err(ProxyError::BadRequest)?;
            tokio::spawn(run(Arc::clone(state), lease, request, permit, origin));
            Ok(Some(Joining {
                rx,
                collapsed: false,
            }))
        }
    }
}

/// Starts a fetch nobody waits for (stale-while-revalidate refresh, prewarm): coalesced with
/// any identical fetch in flight, dropped when the background bound is reached.
pub fn start_background(
    state: &Arc<State>,
    read: &KeyedRead,
    generations: Generations,
    parts: &request::Parts,
    body: Bytes,
) {
    // Background work may not take the permits kept for clients who are waiting.
    if state.fetch_permits.available_permits() <= state.background_reserve {
        state.metrics.background(BackgroundEvent::Dropped);
        return;
    }
    let event = match join(state, read, generations, parts, body, Origin::Background) {
        Ok(Some(Joining {
            collapsed: false, ..
        })) => BackgroundEvent::Started,
        Ok(Some(Joining {
            collapsed: true, ..
        })) => BackgroundEvent::Joined,
        Ok(None) | Err(_) => BackgroundEvent::Dropped,
    };
    state.metrics.background(event);
}

/// The spawned fetch: ask memU within the hard deadline, judge the answer, store it if it may be
/// stored, then wake every waiter with the result.
async fn run(
    state: Arc<State>,
    lease: Lease<InflightKey, Arc<Fetched>>,
    request: Request<ProxyBody>,
    _permit: OwnedSemaphorePermit,
    origin: Origin,
) {
    let started = Instant::now();
    let result = state
        .upstream
        .exchange(request, started + state.upstream.timeout())
        .await;
    let upstream = started.elapsed();
    if !matches!(result, Err(UpstreamError::CircuitOpen(_))) {
        state.metrics.upstream(RouteClassLabel::Read, upstream);
    }
    let route = lease.key().0.route;
    let fetched = match repair(judge(result, route), route, state.fill_null_timestamps) {
        Judgement::Answer { answer, cacheable } => {
            let stored = cacheable && store(&state, lease.key(), &answer);
            Fetched::Answer {
                answer,
                stored,
                upstream,
            }
        }
        Judgement::Fallback(reason) => {
            if origin == Origin::Background {
                if let Some(held_back) = state.background_failures.pass() {
                    tracing::warn!(
                        reason = reason.as_str(),
                        route = route.name,
                        held_back,
                        "a background fetch (prewarm or refresh) failed: nothing was cached"
                    );
                }
            }
            Fetched::Failed { reason, upstream }
        }
    };
    lease.complete(Arc::new(fetched));
}

/// Stores a cacheable answer when [`admit`] allows; true if it was stored.
fn store(state: &State, (key, generations): &InflightKey, answer: &Buffered) -> bool {
    let current = state.scopes.current(&key.scope);
    if !admit(*generations, current, || {
        state.store.holds_current(key, current)
    }) {
        return false;
    }
    if let Some((index, _)) = &state.similar {
        index.insert(key);
    }
    state.store.admit(
        key.clone(),
        &answer.body,
        &answer.headers,
        *generations,
        Instant::now(),
    );
    true
}
