//! The coalesced upstream fetch behind a retrieval miss, used by the read handler and by prewarm.
//!
//! Concurrent identical misses (same key, same generations) share one fetch. It runs in a spawned
//! task that owns the in-flight lease, so it completes and fills the cache even when every waiter
//! has given up (past a budget, or disconnected); each waiter applies its own deadline. The
//! number of fetches at once is bounded (`latency.max_background_fetches`), and background work
//! (refreshes, prewarms) leaves a quarter of the permits to clients who are waiting.
//!
//! With the shared tier on, the fetch asks Redis first (`shared_tier/`): an answer stored there by any
//! replica is served as a hit and fills the local cache; otherwise the fetch goes to memU (or
//! waits for the replica holding the key's lock), and a cacheable answer is written back to Redis
//! after the waiters are woken.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{request, Request};
use tokio::sync::{watch, OwnedSemaphorePermit};
use tokio::time::Instant;

use crate::body::{full, ProxyBody};
use crate::cache::inflight::{Joined, Lease};
use crate::cache::{CacheKey, Entry, Generations, KeyedRead};
use crate::decide::{admit, judge, repair, Fetched, Judgement};
use crate::error::ProxyError;
use crate::fallback::FallbackReason;
use crate::headers::strip_hop_by_hop;
use crate::metrics::BackgroundEvent;
use crate::outcome::RouteClassLabel;
use crate::shared_tier::record::Record;
use crate::shared_tier::Before;
use crate::state::{InflightKey, State};
use crate::upstream::circuit::Guards;
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
    /// A client waits for it and asked for memU's own answer (`Cache-Control: no-cache`): the
    /// shared tier is not consulted.
    Revalidate,
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

/// The spawned fetch: ask the shared tier, else memU within the hard deadline; judge the answer,
/// store it if it may be stored, wake every waiter with the result, then share the answer.
async fn run(
    state: Arc<State>,
    lease: Lease<InflightKey, Arc<Fetched>>,
    request: Request<ProxyBody>,
    _permit: OwnedSemaphorePermit,
    origin: Origin,
) {
    let started = Instant::now();
    let deadline = started + state.upstream.timeout();
    let claim = match (&state.shared, origin) {
        (Some(shared), Origin::Client | Origin::Background) => {
            match shared.before_fetch(&lease.key().0, deadline).await {
                Before::Hit { record, remaining } => {
                    match from_shared(&state, lease.key(), record, remaining) {
                        Some(entry) => {
                            lease.complete(Arc::new(Fetched::Shared(entry)));
                            return;
                        }
                        // Not an answer this replica would serve: ask memU (and share nothing).
                        None => {
                            shared.rejected();
                            None
                        }
                    }
                }
                Before::Fetch(claim) => Some(claim),
                Before::GaveUp => {
                    let reason = FallbackReason::Timeout;
                    let upstream = Duration::ZERO;
                    lease.complete(Arc::new(Fetched::Failed { reason, upstream }));
                    return;
                }
            }
        }
        _ => None,
    };
    let result = state
        .upstream
        .exchange(request, deadline, Guards::Reads)
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
    let fetched = Arc::new(fetched);
    let (key, generations) = lease.key().clone();
    lease.complete(Arc::clone(&fetched));
    if let (Some(shared), Some(claim)) = (&state.shared, claim) {
        // Shared only if no write reached this replica since the fetch began.
        let current = state.scopes.current(&key.scope) == generations;
        let answer = match fetched.as_ref() {
            Fetched::Answer {
                answer,
                stored: true,
                ..
            } if current => Some((&answer.headers, &answer.body)),
            _ => None,
        };
        shared.after_fetch(claim, answer).await;
    }
}

/// The local entry for an answer from the shared tier, admitted to the local cache as a fetched
/// answer would be (with its age and remaining TTL, at most the local `cache.ttl_secs`). What
/// comes back from Redis is input, not truth: it is judged as memU's own answer would be (200, a
/// JSON object with the route's lists), repaired as this replica repairs (`compat`), and its
/// hop-by-hop headers dropped; `None` when it is not an answer this replica would serve.
fn from_shared(
    state: &State,
    (key, generations): &InflightKey,
    record: Record,
    remaining: Duration,
) -> Option<Arc<Entry>> {
    let mut headers = record.headers;
    strip_hop_by_hop(&mut headers);
    let as_fetched = Buffered {
        status: http::StatusCode::OK,
        headers,
        body: record.body,
    };
    let answer = match repair(
        judge(Ok(as_fetched), key.route),
        key.route,
        state.fill_null_timestamps,
    ) {
        Judgement::Answer {
            answer,
            cacheable: true,
        } => answer,
        Judgement::Answer { .. } | Judgement::Fallback(_) => return None,
    };
    let remaining = remaining.min(state.store.lifetimes().ttl);
    let age = record.ttl.saturating_sub(remaining);
    let now = Instant::now();
    let entry = Entry::aged(
        answer.body,
        answer.headers,
        *generations,
        now,
        age,
        remaining,
    );
    let entry = Arc::new(entry);
    let current = state.scopes.current(&key.scope);
    let purges = state.scopes.purges(&key.scope);
    if admit(*generations, current, purges, || {
        state.store.holds_current(key, current)
    }) {
        if let Some((index, _)) = &state.similar {
            index.insert(key);
        }
        mirror(state, key, *generations, &purges, &entry.body);
        state.store.insert(key.clone(), Arc::clone(&entry));
    }
    Some(entry)
}

/// Gives an admitted answer's items to the memory mirror (`cache.local_answers`), whether memU
/// sent it to this replica or another one stored it in the shared tier.
fn mirror(
    state: &State,
    key: &CacheKey,
    generations: Generations,
    purges: &Generations,
    body: &[u8],
) {
    let Some(mirror) = &state.mirror else {
        return;
    };
    mirror.observe(key.route, &key.scope, body, generations, purges);
    // Admitted for its own scope, so from after that scope's last purge: as fresh for the other
    // scope reading it, whose set starts (or goes on) from that scope's marks now.
    if let Some(other) = crate::mirror::also_read_by(key) {
        let (current, purges) = (state.scopes.current(&other), state.scopes.purges(&other));
        mirror.observe(key.route, &other, body, current, &purges);
    }
}

/// Stores a cacheable answer when [`admit`] allows; true if it was stored.
fn store(state: &State, (key, generations): &InflightKey, answer: &Buffered) -> bool {
    let current = state.scopes.current(&key.scope);
    let purges = state.scopes.purges(&key.scope);
    if !admit(*generations, current, purges, || {
        state.store.holds_current(key, current)
    }) {
        return false;
    }
    if let Some((index, _)) = &state.similar {
        index.insert(key);
    }
    mirror(state, key, *generations, &purges, &answer.body);
    state.store.admit(
        key.clone(),
        &answer.body,
        &answer.headers,
        *generations,
        Instant::now(),
    );
    true
}
