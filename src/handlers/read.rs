//! Cacheable retrievals: key → lookup → (coalesced) fetch → wait → answer, stale, or fallback.
//!
//! With a latency budget, a miss is answered when the budget runs out (stale if the cache has an
//! answer within its stale-if-error window, else empty) while the spawned fetch (`fetch.rs`) runs
//! on to the hard deadline and fills the cache for the next turn.
//!
//! A retrieval always gets an answer the SDK can parse: the cached one, memU's own, or, when
//! memU fails or misses the deadline, the empty fallback. Upstream 4xx answers (a 422 for a bad
//! body) pass through unchanged and are never stored. The decisions are pure (`decide.rs`), the
//! responses built in `respond.rs`; this file is the order of the steps.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{request, Request};
use tokio::time::Instant;

use crate::body::ProxyBody;
use crate::cache::inflight::outcome;
use crate::cache::{Entry, Generations, KeyedRead, Lookup, Stale};
use crate::decide::{judge, repair, waiter_answer, Judgement, Waited, WaiterAnswer};
use crate::error::ProxyError;
use crate::exchange::{forward_buffered, read_body};
use crate::fallback::FallbackReason;
use crate::fetch::{self, FetchReceiver, Joining, Origin};
use crate::headers::{client_cache, request_budget, ClientCache, Fwd};
use crate::listing;
use crate::metrics::StaleRefusal;
use crate::mirror::{self, Asked, QueryVector};
use crate::outcome::{Arrived, Handled, Outcome, RouteClassLabel};
use crate::respond::{self, add_timing, Forwarded, HitKind};
use crate::routes::ReadRoute;
use crate::state::State;

/// Handles one retrieval.
pub async fn handle(
    state: &Arc<State>,
    route: ReadRoute,
    request: Request<ProxyBody>,
) -> Result<Handled, ProxyError> {
    // From its arrival: the hit lane may have read the body before passing the request on.
    let started = (request.extensions().get::<Arrived>()).map_or_else(Instant::now, |a| a.0);
    let (parts, body) = request.into_parts();
    let timeout = state.upstream.timeout();
    let budget = request_budget(&parts.headers, state.budget, timeout)?;
    let body = read_body(body, state.max_body_bytes, started + timeout).await?;
    // The hard deadline bounds memU's part, so it starts once the body is in; the budget is the
    // client's, so it counts from the request's arrival.
    let body_in = Instant::now();
    let hard_deadline = body_in + timeout;
    let mode = client_cache(&parts.headers);
    // Keyed even when the cache is off: the key carries the query the fallback echoes.
    let keyed = state.keys.keyed(route, &parts, &body);
    let keyed = match keyed {
        Some(keyed) if state.cache_enabled && mode != ClientCache::Bypass => keyed,
        keyed => {
            let read = keyed.as_ref().map(|keyed| &keyed.read);
            return Box::pin(bypass(state, route, &parts, body, read, hard_deadline)).await;
        }
    };
    let read = &keyed.read;
    listing::first_sight(state, read, &parts, &body);

    let generations = state.scopes.current_of(&keyed.slots);
    if mode == ClientCache::Normal {
        if let Some(handled) = serve_from_cache(state, read, generations, &parts, &body, body_in) {
            return Ok(timed(handled, started));
        }
    }
    let clock = Clock {
        started,
        looked_up: started.elapsed(),
        answer_by: budget.map_or(hard_deadline, |budget| {
            (started + budget).min(hard_deadline)
        }),
        hard_deadline,
    };
    // Boxed: a cache hit's future does not carry the fetch's and the wait's state.
    Box::pin(fetch_and_answer(
        state,
        route,
        read,
        generations,
        (&parts, body),
        mode,
        clock,
    ))
    .await
}

/// The whole of a fresh hit for this exact request, if the cache has one: the key (from the memo
/// for a repeat), the current generations, the fresh entry, timed from `started`. The hit lane
/// (`stack/lane.rs`) answers with it in front of the layers, once it has checked that the cache
/// is on and its local entries are trusted; a `None` goes through [`handle`], which also serves
/// what this leaves out (stale, similar and shared hits; `Cache-Control`).
pub fn fresh_hit(
    state: &State,
    route: ReadRoute,
    parts: &request::Parts,
    body: &[u8],
    started: Instant,
) -> Option<Handled> {
    let keyed = state.keys.keyed(route, parts, body)?;
    let generations = state.scopes.current_of(&keyed.slots);
    match state
        .store
        .lookup(&keyed.read.key, generations, Instant::now())
    {
        Lookup::Fresh(entry) => Some(timed(respond::hit(&entry, HitKind::Fresh), started)),
        Lookup::Revalidate(_) | Lookup::Miss => None,
    }
}

/// A miss's timeline: when the request arrived, how long the cache lookup took, and when the
/// client must be answered (budget) and memU given up on (hard deadline).
#[derive(Debug, Clone, Copy)]
struct Clock {
    started: Instant,
    looked_up: Duration,
    answer_by: Instant,
    hard_deadline: Instant,
}

/// A miss: joins (or starts) the fetch, waits for it within the budget, and answers.
async fn fetch_and_answer(
    state: &Arc<State>,
    route: ReadRoute,
    read: &KeyedRead,
    generations: Generations,
    (parts, body): (&request::Parts, Bytes),
    mode: ClientCache,
    clock: Clock,
) -> Result<Handled, ProxyError> {
    let origin = match mode {
        ClientCache::Revalidate => Origin::Revalidate,
        ClientCache::Normal | ClientCache::Bypass => Origin::Client,
    };
    let Some(Joining { rx, collapsed }) =
        fetch::join(state, read, generations, parts, body, origin)?
    else {
        return Ok(stale_or_empty(
            state,
            route,
            read,
            None,
            FallbackReason::Overload,
            None,
        ));
    };
    let asked = start_asking(state, route, read);
    let waited = wait(rx, clock.answer_by, clock.hard_deadline, clock.started).await;
    let mut handled = answer(
        state,
        route,
        read,
        asked.as_ref(),
        &waited,
        (mode, collapsed),
    );
    let upstream = handled.upstream.unwrap_or_default();
    add_timing(
        handled.response.headers_mut(),
        &[("cache", clock.looked_up), ("upstream", upstream)],
    );
    Ok(handled)
}

/// Waits for the fetch until the budget or the hard deadline, whichever comes first.
async fn wait(
    rx: FetchReceiver,
    answer_by: Instant,
    hard_deadline: Instant,
    started: Instant,
) -> Waited {
    match tokio::time::timeout_at(answer_by, outcome(rx)).await {
        Ok(Some(fetched)) => Waited::Done(fetched),
        Ok(None) => Waited::Abandoned,
        Err(_) => Waited::OutOfTime {
            budget: answer_by < hard_deadline,
            waited: started.elapsed(),
        },
    }
}

/// The response for a client whose wait on a fetch ended as `waited`.
fn answer(
    state: &State,
    route: ReadRoute,
    read: &KeyedRead,
    asked: Option<&QueryVector>,
    waited: &Waited,
    (mode, collapsed): (ClientCache, bool),
) -> Handled {
    match waiter_answer(waited) {
        WaiterAnswer::Answer {
            answer,
            stored,
            upstream,
        } => {
            // RFC 9211: `fwd=request` when the client's `no-cache` ruled out a stored answer.
            let fwd = match mode {
                ClientCache::Revalidate => Fwd::Request,
                ClientCache::Normal | ClientCache::Bypass => Fwd::Miss,
            };
            respond::fetched(answer, stored, upstream, Forwarded { fwd, collapsed })
        }
        WaiterAnswer::Shared(entry) => respond::hit(entry, HitKind::Shared),
        WaiterAnswer::StaleOrEmpty { reason, upstream } => {
            stale_or_empty(state, route, read, asked, reason, upstream)
        }
    }
}

/// A cached answer for this read, if the cache has one to serve now: fresh, a near-duplicate's,
/// or stale within the stale-while-revalidate window, in which case the refresh is started here.
/// None while the shared tier's invalidation stream has been lost for longer than its grace.
fn serve_from_cache(
    state: &Arc<State>,
    read: &KeyedRead,
    generations: Generations,
    parts: &request::Parts,
    body: &Bytes,
    now: Instant,
) -> Option<Handled> {
    if !state.trusts_local_entries() {
        // Cut off from the other replicas' invalidations: ask the shared tier, then memU.
        return None;
    }
    match state.store.lookup(&read.key, generations, now) {
        Lookup::Fresh(entry) => return Some(respond::hit(&entry, HitKind::Fresh)),
        Lookup::Revalidate(entry) => {
            fetch::start_background(state, read, generations, parts, body.clone());
            let kind = HitKind::Stale("stale-while-revalidate");
            return Some(respond::hit(&entry, kind));
        }
        Lookup::Miss => {}
    }
    similar_hit(state, read, generations, now).map(|entry| respond::hit(&entry, HitKind::Similar))
}

/// A fresh cached answer for a near-duplicate of this query (same scope, route and parameters),
/// when `cache.similarity_threshold` is on.
fn similar_hit(
    state: &State,
    read: &KeyedRead,
    generations: Generations,
    now: Instant,
) -> Option<Arc<Entry>> {
    let (index, threshold) = state.similar.as_ref()?;
    index
        .find(&read.key, *threshold)
        .into_iter()
        .find_map(|key| match state.store.lookup(&key, generations, now) {
            Lookup::Fresh(entry) => Some(entry),
            Lookup::Revalidate(_) | Lookup::Miss => None,
        })
}

/// A cache answer served without going upstream: the time the lookup took.
fn timed(mut handled: Handled, started: Instant) -> Handled {
    add_timing(
        handled.response.headers_mut(),
        &[("cache", started.elapsed())],
    );
    handled
}

/// When memU cannot answer in time: a stale answer within the stale-if-error window, else (with
/// `cache.local_answers`) the mirrored items of this scope that rank for the query, else the
/// empty fallback; each is counted. Never an answer fetched before a purge of its scope (a
/// delete since), nor any stale answer while the shared tier's invalidation stream is lost (a
/// delete through another replica may have gone unheard).
fn stale_or_empty(
    state: &State,
    route: ReadRoute,
    read: &KeyedRead,
    asked: Option<&QueryVector>,
    reason: FallbackReason,
    upstream: Option<Duration>,
) -> Handled {
    let purges = state.scopes.purges(&read.key.scope);
    match state
        .store
        .stale_if_error(&read.key, &purges, Instant::now())
    {
        Stale::Serve(_) if !state.may_serve_stale() => {
            state.metrics.stale_refused(StaleRefusal::StreamLost);
        }
        Stale::Serve(entry) => {
            state.metrics.stale_served(reason);
            return respond::stale(&entry, reason, upstream);
        }
        Stale::Purged => state.metrics.stale_refused(StaleRefusal::Purged),
        Stale::None => {}
    }
    if let Some(body) = local_answer(state, route, read, asked) {
        state.metrics.local_answer(reason);
        return respond::local_answer(body, reason, upstream);
    }
    fallback(state, route, read, reason, upstream)
}

/// The empty answer, echoing this request's own query; counted.
fn fallback(
    state: &State,
    route: ReadRoute,
    read: &KeyedRead,
    reason: FallbackReason,
    upstream: Option<Duration>,
) -> Handled {
    state.metrics.fallback(reason);
    respond::fallback(route, read.raw_query.as_deref(), reason, upstream)
}

/// This scope's mirrored items that answer the read, in the route's shape (none from before a
/// purge of the scope, nor while a delete through another replica may have gone unheard), ranked
/// by the query's vector if it came in time (`asked`), else lexically.
fn local_answer(
    state: &State,
    route: ReadRoute,
    read: &KeyedRead,
    asked: Option<&QueryVector>,
) -> Option<Vec<u8>> {
    if !state.may_serve_stale() {
        return None;
    }
    let mirror = state.mirror.as_ref()?;
    let purges = state.scopes.purges(&read.key.scope);
    let set = mirror.items(route, &read.key.scope, &purges)?;
    let vectors = mirror.vectors(&set);
    let asked = Asked {
        query: read.raw_query.as_deref(),
        vector: asked.and_then(QueryVector::get).map(|v| &**v),
        vectors: &vectors,
    };
    mirror::local_answer(route, &read.key, &asked, &set)
}

/// With embeddings on, starts embedding a miss's query while memU is asked, if its scope has
/// mirrored items a local answer could rank.
fn start_asking(state: &State, route: ReadRoute, read: &KeyedRead) -> Option<QueryVector> {
    let mirror = state.mirror.as_ref()?;
    let query = read.raw_query.as_deref()?;
    let purges = state.scopes.purges(&read.key.scope);
    mirror.items(route, &read.key.scope, &purges)?;
    mirror.ask(query)
}

/// Forwards without the cache: `no-store`, caching disabled, or a body that cannot be keyed
/// (forwarded untouched; memU answers it, typically with 422). Keyable reads still fall back on
/// failure; unkeyable ones get honest errors, since there is no query to echo.
async fn bypass(
    state: &State,
    route: ReadRoute,
    parts: &request::Parts,
    body: Bytes,
    read: Option<&KeyedRead>,
    deadline: Instant,
) -> Result<Handled, ProxyError> {
    let exchanged = forward_buffered(state, parts, body, RouteClassLabel::Read, deadline).await;
    let upstream = exchanged.upstream;
    Ok(match read {
        Some(read) => match repair(
            judge(exchanged.result, route),
            route,
            state.fill_null_timestamps,
        ) {
            Judgement::Fallback(reason) => {
                let mut handled = fallback(state, route, read, reason, Some(upstream));
                add_timing(handled.response.headers_mut(), &[("upstream", upstream)]);
                handled
            }
            Judgement::Answer { answer, .. } => {
                respond::forwarded(&answer, upstream, Outcome::Bypass)
            }
        },
        None => respond::forwarded(&exchanged.result?, upstream, Outcome::Bypass),
    })
}
