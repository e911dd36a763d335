//! What the proxy fetches on its own for the memory mirror (v1/v2 scopes, `cache.local_answers`):
//!
//! - **Knowing a user before the first question.** The first time a scope is read (once per
//!   cache TTL), its default categories, with the request memu-py 0.1.8 sends.
//! - **Re-warming after a write completes.** When a memorize of a scope reports success, that
//!   scope's default categories again and its most recent read keys that were asked more than
//!   once (at most [`REWARM_READS`]), at most once per scope per [`REWARM_EVERY`], so the next
//!   turn's repeat is a fresh hit and the new memory is in the mirror.
//!
//! Each is an ordinary background fetch (`fetch.rs`): coalesced, inside the background share of
//! `latency.max_background_fetches`, stored and mirrored as any answer; no client waits for it.
//! Each is counted (`memu_proxy_mirror_fetches_total{why}`): on the cloud it is a request on the
//! user's key, which comes from the request that caused it (the read, or the task poll); the proxy
//! keeps no credential for later. v3, v4 and memU-server scopes are not fetched yet.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{header, request, Method, Request};
use serde_json::json;
use tokio::time::Instant;

use crate::cache::{request_key, Invalidate, KeyedRead, Lookup, Scope};
use crate::fetch::start_background;
use crate::metrics::MirrorFetch;
use crate::routes::{table, Generation, PathPattern, ReadRoute};
use crate::state::State;

/// Most repeated read keys re-fetched per scope after a write.
pub const REWARM_READS: usize = 4;
/// Shortest time between two re-warms of one scope.
pub const REWARM_EVERY: Duration = Duration::from_secs(30);

/// Lists `read`'s scope if the mirror has not seen it within the cache TTL, and notes the read
/// for re-warming. `parts` is the read's head: its base path and credentials are the listing's.
pub fn first_sight(state: &Arc<State>, read: &KeyedRead, parts: &request::Parts, body: &Bytes) {
    let Some(mirror) = &state.mirror else {
        return;
    };
    let route = read.key.route;
    if route.generation != Generation::V1 {
        return;
    }
    mirror.note_read(read, parts.uri.path(), body);
    let scope = &read.key.scope;
    if !mirror.first_sight(route, scope, state.store.lifetimes().ttl, Instant::now()) {
        return;
    }
    let PathPattern::Suffix(suffix) = route.path else {
        return;
    };
    // A categories read is the listing itself.
    let categories = ReadRoute(&table::V1_CATEGORIES);
    if let Some(base) = parts
        .uri
        .path()
        .strip_suffix(suffix)
        .filter(|_| route != categories)
    {
        list(state, base, scope, parts, MirrorFetch::FirstSight);
    }
}

/// After a v1/v2 memorize under `base` (`/api/v1`, …) succeeded: re-warms each scope it wrote.
/// `head` is the request that saw the success (a status poll): its credentials are used.
pub fn after_write(
    state: &Arc<State>,
    base: &str,
    targets: &[(Scope, Invalidate)],
    head: &request::Parts,
) {
    let Some(mirror) = &state.mirror else {
        return;
    };
    let route = ReadRoute::V1_RELATED;
    for (scope, what) in targets {
        if *what == Invalidate::Everything
            || !mirror.rewarm_due(route, scope, REWARM_EVERY, Instant::now())
        {
            continue;
        }
        list(state, base, scope, head, MirrorFetch::Rewarm);
        for read in mirror.repeated_reads(route, scope, REWARM_READS) {
            fetch(
                state,
                &read.path,
                read.body.clone(),
                head,
                MirrorFetch::Rewarm,
            );
        }
    }
}

/// Starts the background fetch of `scope`'s default categories under `base`.
fn list(state: &Arc<State>, base: &str, scope: &Scope, head: &request::Parts, why: MirrorFetch) {
    let PathPattern::Suffix(listing) = table::V1_CATEGORIES.path else {
        return;
    };
    let body = json!({"user_id": &*scope.user, "agent_id": scope.agent.as_deref(),
                      "include_inactive": false, "want_summary": true});
    let path = format!("{base}{listing}");
    fetch(state, &path, Bytes::from(body.to_string()), head, why);
}

/// Starts the background fetch of one v1/v2 read, with `head`'s credentials, unless the cache
/// holds it fresh.
fn fetch(state: &Arc<State>, path: &str, body: Bytes, head: &request::Parts, why: MirrorFetch) {
    let mut request = Request::builder()
        .method(Method::POST)
        .uri(path)
        .header(header::CONTENT_TYPE, "application/json")
        .header(header::ACCEPT, "application/json");
    if let Some(auth) = head.headers.get(header::AUTHORIZATION) {
        request = request.header(header::AUTHORIZATION, auth);
    }
    let Ok(request) = request.body(()) else {
        return;
    };
    let (parts, ()) = request.into_parts();
    let Some(route) = v1_read_route(path) else {
        return;
    };
    let Some(read) = request_key(route, &parts, &body) else {
        return;
    };
    let generations = state.scopes.current(&read.key.scope);
    if let Lookup::Fresh(_) = state.store.lookup(&read.key, generations, Instant::now()) {
        return;
    }
    state.metrics.mirror_fetch(why);
    start_background(state, &read, generations, &parts, body);
}

/// The v1/v2 read row a path is.
fn v1_read_route(path: &str) -> Option<ReadRoute> {
    [
        &table::V1_RELATED,
        &table::V1_CATEGORIES,
        &table::V1_CLUSTERED,
    ]
    .into_iter()
    .find(|row| matches!(row.path, PathPattern::Suffix(s) if path.ends_with(s)))
    .map(ReadRoute)
}
