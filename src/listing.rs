//! What the proxy fetches on its own for the memory mirror (`cache.local_answers`):
//!
//! - **Knowing a user before the first question.** The first time a scope is read (once per
//!   cache TTL), its listing ([`OwnRead::listing`]): v1/v2 default categories (with the request memu-py
//!   0.1.8 sends), v3 `categories`, v4's first page of recall files (`GET /api/v4/memory`, as
//!   memu-cli asks it), memU-server's `/categories` of the user a `/retrieve` names (memU-server
//!   ignores that user; the proxy uses it only to know whose categories `/retrieve` will show).
//!   A read of the listing route itself lists nothing more.
//! - **Re-warming after a write completes** ([`Rewarm`], in `mirror/`). When a memorize of a scope reports
//!   success (v1/v2, v3, memU-server: their status polls; v4 has no memorize, only the commit,
//!   a purge), that scope's listing again and its most recent read keys that were asked more than
//!   once (at most [`REWARM_READS`]; POST reads of the scope's own key, so not memU-server's
//!   `/retrieve`, which is keyed for every user), at most once per scope per [`REWARM_EVERY`], so
//!   the next turn's repeat is a fresh hit and the new memory is in the mirror.
//!
//! Each is an ordinary background fetch (`fetch.rs`): coalesced, inside the background share of
//! `latency.max_background_fetches`, stored and mirrored as any answer; no client waits for it.
//! Each is counted (`memu_proxy_mirror_fetches_total{why}`): on the cloud it is a request on the
//! user's key, which comes from the request that caused it (the read, or the task poll); the proxy
//! keeps no credential for later.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{header, request, Method, Request};
use serde_json::{json, Value};
use tokio::time::Instant;

use crate::cache::{request_key, Invalidate, KeyedRead, Lookup, Scope};
use crate::fetch::start_background;
use crate::metrics::MirrorFetch;
use crate::mirror::Rewarm;
use crate::routes::{table, Generation, ReadRoute};
use crate::state::State;

/// Most repeated read keys re-fetched per scope after a write.
pub const REWARM_READS: usize = 4;
/// Shortest time between two re-warms of one scope.
pub const REWARM_EVERY: Duration = Duration::from_secs(30);

/// Lists `read`'s scope if the mirror has not seen it within the cache TTL, and notes a v1/v2
/// read for re-warming. `parts` is the read's head: its base path and credentials are the
/// listing's; `body` the read's body.
pub fn first_sight(state: &Arc<State>, read: &KeyedRead, parts: &request::Parts, body: &Bytes) {
    let Some(mirror) = &state.mirror else {
        return;
    };
    let route = read.key.route;
    if parts.method == Method::POST {
        mirror.note_read(read, parts.uri.path(), body);
    }
    let Some(seen) = seen_scope(route, &read.key.scope, body) else {
        return;
    };
    if !mirror.first_sight(route, &seen, state.store.lifetimes().ttl, Instant::now()) {
        return;
    }
    if let Some(listing) = OwnRead::listing_after(route, parts.uri.path(), &seen) {
        listing.start(state, parts, Some(MirrorFetch::FirstSight));
    }
}

/// The scope a read shows the proxy: its own, or for memU-server's `/retrieve` (keyed under the
/// global scope) the user its body names, if any.
fn seen_scope(route: ReadRoute, scope: &Scope, body: &[u8]) -> Option<Scope> {
    if route != ReadRoute(&table::SERVER_RETRIEVE) {
        return Some(scope.clone());
    }
    let request = serde_json::from_slice::<Value>(body).ok()?;
    let user = request.get("user_id")?.as_str()?.trim();
    (!user.is_empty()).then(|| Scope {
        tenant: scope.tenant,
        user: user.into(),
        agent: None,
    })
}

/// A read the proxy sends on its own (a listing, a re-warm, a prewarm), as that generation's
/// client sends it, so its answer lands under the key the client's own request will have.
#[derive(Debug, Clone, PartialEq)]
pub struct OwnRead {
    pub route: ReadRoute,
    pub method: Method,
    pub path_and_query: String,
    /// JSON; empty for a GET.
    pub body: Bytes,
}

impl OwnRead {
    /// A POST read of `route` under `base` (`/api/v1`, …, or empty) with a JSON body.
    pub fn post(route: ReadRoute, base: &str, body: &Value) -> OwnRead {
        OwnRead {
            route,
            method: Method::POST,
            path_and_query: format!("{base}{}", route.path.suffix().unwrap_or_default()),
            body: Bytes::from(body.to_string()),
        }
    }

    /// The listing of (`user`, `agent`) in `generation` under `base` (`/api/v1`, …, or empty):
    /// v1/v2 default categories (as memu-py 0.1.8 asks), v3 `categories` (memu-sdk: no agent_id
    /// when there is none), v4's first page (memu-cli: agent `default` when there is none),
    /// memU-server `/categories`. Pure.
    pub fn listing(generation: Generation, base: &str, user: &str, agent: Option<&str>) -> OwnRead {
        let (row, body) = match generation {
            Generation::V1 => (
                &table::V1_CATEGORIES,
                json!({"user_id": user, "agent_id": agent, "include_inactive": false, "want_summary": true}),
            ),
            Generation::V3 => (&table::V3_CATEGORIES, ids(user, agent)),
            Generation::Server => (&table::SERVER_CATEGORIES, ids(user, agent)),
            Generation::V4 => {
                let query = form_urlencoded::Serializer::new(String::new())
                    .append_pair("user_id", user)
                    .append_pair("agent_id", agent.unwrap_or("default"))
                    .finish();
                let path = table::V4_LIST.path.suffix().unwrap_or_default();
                return OwnRead {
                    route: ReadRoute(&table::V4_LIST),
                    method: Method::GET,
                    path_and_query: format!("{base}{path}?{query}"),
                    body: Bytes::new(),
                };
            }
        };
        OwnRead::post(ReadRoute(row), base, &body)
    }

    /// The listing of `scope` to fetch after a read of `route` at `path` (its base path kept);
    /// `None` when the read is the listing itself. Pure.
    pub fn listing_after(route: ReadRoute, path: &str, scope: &Scope) -> Option<OwnRead> {
        let base = path.strip_suffix(route.path.suffix()?)?;
        let listing = OwnRead::listing(route.generation, base, &scope.user, scope.agent.as_deref());
        (listing.route != route).then_some(listing)
    }

    /// Starts it in the background with `head`'s credentials, unless the cache holds it fresh;
    /// counted as a mirror fetch for `why`, if given (a prewarm is counted by its handler).
    pub fn start(self, state: &Arc<State>, head: &request::Parts, why: Option<MirrorFetch>) {
        let mut request = Request::builder()
            .method(self.method.clone())
            .uri(&self.path_and_query)
            .header(header::ACCEPT, "application/json");
        if !self.body.is_empty() {
            request = request.header(header::CONTENT_TYPE, "application/json");
        }
        if let Some(auth) = head.headers.get(header::AUTHORIZATION) {
            request = request.header(header::AUTHORIZATION, auth);
        }
        let Ok(request) = request.body(()) else {
            return;
        };
        let (parts, ()) = request.into_parts();
        let Some(read) = request_key(self.route, &parts, &self.body) else {
            return;
        };
        let generations = state.scopes.current(&read.key.scope);
        if let Lookup::Fresh(_) = state.store.lookup(&read.key, generations, Instant::now()) {
            return;
        }
        if let Some(why) = why {
            state.metrics.mirror_fetch(why);
        }
        start_background(state, &read, generations, &parts, self.body);
    }
}

/// `{"user_id", "agent_id"?}`, as memu-sdk and memU-server clients send them: a missing (or
/// empty) agent is left out rather than sent as null.
pub fn ids(user: &str, agent: Option<&str>) -> Value {
    let mut ids = json!({ "user_id": user });
    if let Some(agent) = agent.filter(|a| !a.is_empty()) {
        ids["agent_id"] = json!(agent);
    }
    ids
}

/// After a memorize succeeded: re-warms each scope it wrote, as `rewarm` says. `head` is the
/// request that saw the success (a status poll): its credentials are used.
pub fn after_write(
    state: &Arc<State>,
    rewarm: &Rewarm,
    targets: &[(Scope, Invalidate)],
    head: &request::Parts,
) {
    let Some(mirror) = &state.mirror else {
        return;
    };
    let route = rewarm.query;
    let Some(query_path) = route.path.suffix().map(|p| format!("{}{p}", rewarm.base)) else {
        return;
    };
    for (scope, what) in targets {
        if *what == Invalidate::Everything
            || !mirror.rewarm_due(route, scope, REWARM_EVERY, Instant::now())
        {
            continue;
        }
        if let Some(listing) = OwnRead::listing_after(route, &query_path, scope) {
            listing.start(state, head, Some(MirrorFetch::Rewarm));
        }
        for read in mirror.repeated_reads(route, scope, *what, REWARM_READS) {
            let read = OwnRead {
                route: read.route(),
                method: Method::POST,
                path_and_query: read.path.into(),
                body: read.body,
            };
            read.start(state, head, Some(MirrorFetch::Rewarm));
        }
    }
}
