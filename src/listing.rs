//! Knowing a user before the first question: the first time a v1/v2 scope is read with local
//! answers on, its default categories are fetched in the background into the memory mirror, with
//! the request memu-py 0.1.8 sends (once per scope per cache TTL).
//!
//! An ordinary background fetch (`fetch.rs`): coalesced, inside the background share of
//! `latency.max_background_fetches`, its answer stored and mirrored as any other; the client's own
//! answer is never delayed by it. Each one is counted (`memu_proxy_mirror_listings_total`): on
//! the cloud it is a request on the user's key. v3, v4 and memU-server scopes are not listed yet.

use std::sync::Arc;

use bytes::Bytes;
use http::{header, request, Method, Request};
use serde_json::json;
use tokio::time::Instant;

use crate::cache::{request_key, KeyedRead, Lookup};
use crate::fetch::start_background;
use crate::routes::{table, Generation, PathPattern, ReadRoute};
use crate::state::State;

/// Starts the listing of `read`'s scope if the mirror has not seen it within the cache TTL.
/// `parts` is the read's head: its base path and credentials are the listing's.
pub fn first_sight(state: &Arc<State>, read: &KeyedRead, parts: &request::Parts) {
    let Some(mirror) = &state.mirror else {
        return;
    };
    let route = read.key.route;
    if route.generation != Generation::V1 {
        return;
    }
    let scope = &read.key.scope;
    if !mirror.first_sight(route, scope, state.store.lifetimes().ttl, Instant::now()) {
        return;
    }
    let categories = ReadRoute(&table::V1_CATEGORIES);
    let (PathPattern::Suffix(suffix), PathPattern::Suffix(listing)) = (route.path, categories.path)
    else {
        return;
    };
    // A categories read is the listing itself.
    let Some(base) = parts
        .uri
        .path()
        .strip_suffix(suffix)
        .filter(|_| route != categories)
    else {
        return;
    };
    let body = json!({"user_id": &*scope.user, "agent_id": scope.agent.as_deref(),
                      "include_inactive": false, "want_summary": true});
    let mut head = Request::builder()
        .method(Method::POST)
        .uri(format!("{base}{listing}"))
        .header(header::CONTENT_TYPE, "application/json")
        .header(header::ACCEPT, "application/json");
    if let Some(auth) = parts.headers.get(header::AUTHORIZATION) {
        head = head.header(header::AUTHORIZATION, auth);
    }
    let Ok(head) = head.body(()) else {
        return;
    };
    let (head, ()) = head.into_parts();
    let body = Bytes::from(body.to_string());
    let Some(listing) = request_key(categories, &head, &body) else {
        return;
    };
    let generations = state.scopes.current(&listing.key.scope);
    if let Lookup::Fresh(_) = state
        .store
        .lookup(&listing.key, generations, Instant::now())
    {
        return;
    }
    state.metrics.mirror_listing();
    start_background(state, &listing, generations, &head, body);
}
