//! Cacheable retrievals: key → lookup → (coalesced) fetch → admit → answer, stale, or fallback.
//!
//! With a latency budget, a miss is answered when the budget runs out (stale if the cache has an
//! answer within its stale-if-error window, else empty) while the spawned fetch runs on to the
//! hard deadline and fills the cache for the next turn.
//!
//! The decisions are pure ([`judge`] classifies an upstream result); the steps are named
//! functions. A retrieval always gets an answer the SDK can parse: the cached one, memU's own, or,
//! when memU fails or misses the deadline, the empty fallback (`fallback.rs`). Upstream 4xx
//! answers (a 422 for a bad body) pass through unchanged and are never stored.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{request, Request, Response, StatusCode};
use http_body::Body;
use tokio::time::Instant;

use crate::body::{full, BoxError, ProxyBody};
use crate::cache::inflight::{outcome, Joined, Lease};
use crate::cache::{read_key, request_tenant, Entry, Generations, KeyedRead, Lookup};
use crate::error::ProxyError;
use crate::fallback::{empty_body, FallbackReason};
use crate::headers::{client_cache, request_budget, CacheStatus, ClientCache};
use crate::metrics::{BackgroundEvent, Outcome, RouteClassLabel};
use crate::proxy::{
    add_timing, buffered_response, forwarded, json_response, read_body, set_cache_status, Handled,
    InflightKey, Proxy,
};
use crate::routes::ReadRoute;
use crate::upstream::{Buffered, UpstreamError};

/// The shared result of one upstream fetch.
#[derive(Debug)]
pub enum Fetched {
    /// memU answered; `stored` says whether the answer was admitted to the cache.
    Answer {
        answer: Buffered,
        stored: bool,
        upstream: Duration,
    },
    /// No usable answer: the reader gets the fallback.
    Failed {
        reason: FallbackReason,
        upstream: Duration,
    },
}

/// What an upstream result means for a retrieval. Pure.
pub enum Judgement {
    /// Pass memU's answer on; store it when `cacheable`.
    Answer {
        answer: Buffered,
        cacheable: bool,
    },
    Fallback(FallbackReason),
}

/// Classifies an upstream result: 200 JSON is cacheable, other non-5xx answers pass through,
/// 5xx, non-JSON 200s and transport failures fall back.
pub fn judge(result: Result<Buffered, UpstreamError>) -> Judgement {
    match result {
        Err(UpstreamError::Timeout(_)) => Judgement::Fallback(FallbackReason::Timeout),
        Err(UpstreamError::Connect(_)) => Judgement::Fallback(FallbackReason::Connect),
        Err(
            UpstreamError::Exchange(_)
            | UpstreamError::TooLarge(_)
            | UpstreamError::RequestTooLarge,
        ) => Judgement::Fallback(FallbackReason::UpstreamError),
        Err(UpstreamError::CircuitOpen(_)) => Judgement::Fallback(FallbackReason::CircuitOpen),
        Ok(answer) if answer.status.is_server_error() => {
            Judgement::Fallback(FallbackReason::Upstream5xx)
        }
        Ok(answer) if answer.status == StatusCode::OK => {
            if serde_json::from_slice::<serde::de::IgnoredAny>(&answer.body).is_ok() {
                Judgement::Answer {
                    answer,
                    cacheable: true,
                }
            } else {
                Judgement::Fallback(FallbackReason::InvalidJson)
            }
        }
        Ok(answer) => Judgement::Answer {
            answer,
            cacheable: false,
        },
    }
}

impl Proxy {
    /// Applies the configured compat repairs to a retrieval answer that will be served (and
    /// stored, so a hit costs no repair).
    fn repair(&self, judgement: Judgement) -> Judgement {
        match judgement {
            Judgement::Answer { answer, cacheable } if cacheable && self.fill_null_timestamps => {
                Judgement::Answer {
                    answer: crate::compat::fill_null_timestamps(answer),
                    cacheable,
                }
            }
            other => other,
        }
    }
}

/// Handles one retrieval.
pub async fn handle<B>(
    proxy: &Arc<Proxy>,
    route: ReadRoute,
    request: Request<B>,
) -> Result<Handled, ProxyError>
where
    B: Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    let started = Instant::now();
    let (parts, body) = request.into_parts();
    let budget = request_budget(&parts.headers, proxy.budget, proxy.upstream.timeout())
        .map_err(ProxyError::InvalidHeader)?;
    let body = read_body(body, proxy.max_body_bytes).await?;
    // The hard deadline bounds memU's part, so it starts once the body is in; the budget is the
    // client's, so it counts from the request's arrival.
    let hard_deadline = proxy.deadline();
    let answer_by = budget.map_or(hard_deadline, |budget| {
        (started + budget).min(hard_deadline)
    });
    let mode = client_cache(&parts.headers);
    // Keyed even when the cache is off: the key carries the query the fallback echoes.
    let read = match keyed_read(route, &parts, &body) {
        Some(read) if proxy.cache_enabled && mode != ClientCache::Bypass => read,
        read => return bypass(proxy, route, &parts, body, read, hard_deadline).await,
    };

    let generations = proxy.scopes.current(&read.key.scope);
    if mode == ClientCache::Normal {
        match proxy.store.lookup(&read.key, generations, Instant::now()) {
            Lookup::Fresh(entry) => return Ok(timed(hit(&entry, HitKind::Fresh), started)),
            Lookup::Revalidate(entry) => {
                start_background(proxy, &read, generations, &parts, body);
                let kind = HitKind::Stale("stale-while-revalidate");
                return Ok(timed(hit(&entry, kind), started));
            }
            Lookup::Miss => {}
        }
        if let Some(entry) = similar_hit(proxy, &read, generations) {
            return Ok(timed(hit(&entry, HitKind::Similar), started));
        }
    }
    let lookup = started.elapsed();

    let Some((rx, collapsed)) = join_fetch(proxy, &read, generations, &parts, body)? else {
        return Ok(stale_or_empty(
            proxy,
            route,
            &read,
            FallbackReason::Overload,
            None,
        ));
    };
    let waited = tokio::time::timeout_at(answer_by, outcome(rx)).await;
    let mut handled = match waited {
        Ok(Some(fetched)) => {
            // RFC 9211: `fwd=request` when the client's `no-cache` ruled out a stored answer.
            let fwd = if mode == ClientCache::Revalidate {
                "request"
            } else {
                "miss"
            };
            answer(proxy, route, &read, &fetched, Forwarded { fwd, collapsed })
        }
        Ok(None) => stale_or_empty(proxy, route, &read, FallbackReason::UpstreamError, None),
        Err(_) if answer_by < hard_deadline => stale_or_empty(
            proxy,
            route,
            &read,
            FallbackReason::Budget,
            Some(started.elapsed()),
        ),
        Err(_) => stale_or_empty(
            proxy,
            route,
            &read,
            FallbackReason::Timeout,
            Some(started.elapsed()),
        ),
    };
    let upstream = handled.upstream.unwrap_or_default();
    add_timing(
        handled.response.headers_mut(),
        &[("cache", lookup), ("upstream", upstream)],
    );
    Ok(handled)
}

/// The cache key of a retrieval, from its headers and body (`None`: not cacheable).
pub(crate) fn keyed_read(
    route: ReadRoute,
    parts: &request::Parts,
    body: &[u8],
) -> Option<KeyedRead> {
    let tenant = request_tenant(&parts.headers);
    let path_and_query = parts.uri.path_and_query().map_or("/", |pq| pq.as_str());
    read_key(route, path_and_query, tenant, body)
}

/// Joins the fetch in flight for this key and generations, or starts one. `None` when a fetch
/// would be needed but `latency.max_background_fetches` are already running.
fn join_fetch(
    proxy: &Arc<Proxy>,
    read: &KeyedRead,
    generations: Generations,
    parts: &request::Parts,
    body: Bytes,
) -> Result<Option<(FetchReceiver, bool)>, ProxyError> {
    match proxy.inflight.join(&(read.key.clone(), generations)) {
        Joined::Follower(rx) => {
            proxy.metrics.coalesced_wait();
            Ok(Some((rx, true)))
        }
        Joined::Leader(lease) => {
            let Ok(permit) = Arc::clone(&proxy.fetch_permits).try_acquire_owned() else {
                return Ok(None);
            };
            let rx = lease.subscribe();
            let request = proxy
                .upstream
                .request(parts, full(body), true)
                .map_err(ProxyError::BadRequest)?;
            tokio::spawn(fetch(Arc::clone(proxy), lease, request, permit));
            Ok(Some((rx, false)))
        }
    }
}

/// Starts a fetch nobody waits for (stale-while-revalidate refresh, prewarm): coalesced with
/// any identical fetch in flight, dropped when the background bound is reached.
pub(crate) fn start_background(
    proxy: &Arc<Proxy>,
    read: &KeyedRead,
    generations: Generations,
    parts: &request::Parts,
    body: Bytes,
) {
    // Background work may not take the permits kept for clients who are waiting.
    if proxy.fetch_permits.available_permits() <= proxy.background_reserve {
        proxy.metrics.background(BackgroundEvent::Dropped);
        return;
    }
    let event = match join_fetch(proxy, read, generations, parts, body) {
        Ok(Some((_, false))) => BackgroundEvent::Started,
        Ok(Some((_, true))) => BackgroundEvent::Joined,
        Ok(None) | Err(_) => BackgroundEvent::Dropped,
    };
    proxy.metrics.background(event);
}

type FetchReceiver = tokio::sync::watch::Receiver<Option<Arc<Fetched>>>;

/// The spawned upstream fetch behind one coalesced miss. It owns the lease, so it completes (and
/// fills the cache) even when every waiter has given up: past a budget, or disconnected.
async fn fetch(
    proxy: Arc<Proxy>,
    lease: Lease<InflightKey, Arc<Fetched>>,
    request: Request<ProxyBody>,
    _permit: tokio::sync::OwnedSemaphorePermit,
) {
    let started = Instant::now();
    let result = proxy
        .upstream
        .exchange(request, started + proxy.upstream.timeout())
        .await;
    let upstream = started.elapsed();
    if !matches!(result, Err(UpstreamError::CircuitOpen(_))) {
        proxy.metrics.upstream(RouteClassLabel::Read, upstream);
    }
    let fetched = match proxy.repair(judge(result)) {
        Judgement::Answer { answer, cacheable } => {
            let mut stored = false;
            if cacheable {
                let (key, generations) = lease.key().clone();
                // A fetch that raced a write is stored (it may serve as stale-if-error), unless a
                // newer fetch already stored the answer valid now.
                let current = proxy.scopes.current(&key.scope);
                let admit = generations == current || !proxy.store.holds_current(&key, current);
                if admit {
                    stored = true;
                    if let Some((index, _)) = &proxy.similar {
                        index.insert(&key);
                    }
                    proxy.store.admit(
                        key,
                        answer.body.clone(),
                        answer.headers.clone(),
                        generations,
                        Instant::now(),
                    );
                }
            }
            Fetched::Answer {
                answer,
                stored,
                upstream,
            }
        }
        Judgement::Fallback(reason) => Fetched::Failed { reason, upstream },
    };
    lease.complete(Arc::new(fetched));
}

/// A fresh cached answer for a near-duplicate of this query (same scope, route and parameters),
/// when `cache.similarity_threshold` is on.
fn similar_hit(proxy: &Proxy, read: &KeyedRead, generations: Generations) -> Option<Arc<Entry>> {
    let (index, threshold) = proxy.similar.as_ref()?;
    let now = Instant::now();
    index
        .find(&read.key, *threshold)
        .into_iter()
        .find_map(|key| match proxy.store.lookup(&key, generations, now) {
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

/// Why a cached answer was served.
#[derive(Debug, Clone, Copy)]
enum HitKind {
    Fresh,
    /// Fresh, stored for a near-duplicate query.
    Similar,
    /// Stale, with the `Cache-Status` detail saying why it was served anyway.
    Stale(&'static str),
}

/// A cached answer.
fn hit(entry: &Entry, kind: HitKind) -> Handled {
    let (detail, outcome) = match kind {
        HitKind::Fresh => (None, Outcome::Hit),
        HitKind::Similar => (Some("similar"), Outcome::SimilarHit),
        HitKind::Stale(detail) => (Some(detail), Outcome::Stale),
    };
    let mut response = Response::new(full(entry.body.clone()));
    *response.headers_mut() = entry.headers.clone();
    let headers = response.headers_mut();
    let age = Instant::now()
        .saturating_duration_since(entry.stored_at)
        .as_secs();
    headers.insert(header::AGE, HeaderValue::from(age));
    set_cache_status(
        headers,
        CacheStatus {
            detail,
            ..CacheStatus::HIT
        },
    );
    Handled {
        response,
        outcome,
        upstream: None,
    }
}

/// The response for a finished fetch, as seen by one of its waiters.
/// Why a request went upstream, and whether it shared another request's fetch.
struct Forwarded {
    fwd: &'static str,
    collapsed: bool,
}

fn answer(
    proxy: &Proxy,
    route: ReadRoute,
    read: &KeyedRead,
    fetched: &Fetched,
    Forwarded { fwd, collapsed }: Forwarded,
) -> Handled {
    match fetched {
        Fetched::Answer {
            answer,
            stored,
            upstream,
        } => {
            let mut response = buffered_response(answer);
            let status = CacheStatus {
                stored: *stored && !collapsed,
                collapsed,
                ..CacheStatus::forwarded(fwd)
            };
            set_cache_status(response.headers_mut(), status);
            Handled {
                response,
                outcome: if collapsed {
                    Outcome::Coalesced
                } else {
                    Outcome::Miss
                },
                upstream: Some(*upstream),
            }
        }
        Fetched::Failed { reason, upstream } => {
            stale_or_empty(proxy, route, read, *reason, Some(*upstream))
        }
    }
}

/// When memU cannot answer in time: a stale answer within the stale-if-error window, else the
/// empty fallback.
fn stale_or_empty(
    proxy: &Proxy,
    route: ReadRoute,
    read: &KeyedRead,
    reason: FallbackReason,
    upstream: Option<Duration>,
) -> Handled {
    match proxy.store.stale_if_error(&read.key, Instant::now()) {
        Some(entry) => {
            proxy.metrics.stale_served(reason);
            let mut handled = hit(&entry, HitKind::Stale(reason.stale_detail()));
            handled.upstream = upstream;
            handled
        }
        None => fallback(proxy, route, read, reason, upstream),
    }
}

/// The empty answer, echoing this request's own query.
fn fallback(
    proxy: &Proxy,
    route: ReadRoute,
    read: &KeyedRead,
    reason: FallbackReason,
    upstream: Option<Duration>,
) -> Handled {
    proxy.metrics.fallback(reason);
    let mut response = json_response(empty_body(route, read.raw_query.as_deref()));
    let status = CacheStatus {
        detail: Some(reason.as_str()),
        ..CacheStatus::forwarded("miss")
    };
    set_cache_status(response.headers_mut(), status);
    Handled {
        response,
        outcome: Outcome::Fallback,
        upstream,
    }
}

/// Forwards without the cache: `no-store`, caching disabled, or a body that cannot be keyed
/// (forwarded untouched; memU answers it, typically with 422). Keyable reads still fall back on
/// failure; unkeyable ones get honest errors, since there is no query to echo.
async fn bypass(
    proxy: &Proxy,
    route: ReadRoute,
    parts: &request::Parts,
    body: Bytes,
    read: Option<KeyedRead>,
    deadline: Instant,
) -> Result<Handled, ProxyError> {
    let (result, upstream) = proxy
        .forward_buffered(parts, body, RouteClassLabel::Read, deadline)
        .await;
    Ok(match read {
        Some(read) => match proxy.repair(judge(result)) {
            Judgement::Fallback(reason) => {
                let mut handled = fallback(proxy, route, &read, reason, Some(upstream));
                add_timing(handled.response.headers_mut(), &[("upstream", upstream)]);
                handled
            }
            Judgement::Answer { answer, .. } => forwarded(&answer, upstream, Outcome::Bypass),
        },
        None => forwarded(&result?, upstream, Outcome::Bypass),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderMap;

    fn answer(status: u16, body: &'static str) -> Result<Buffered, UpstreamError> {
        Ok(Buffered {
            status: StatusCode::from_u16(status).unwrap(),
            headers: HeaderMap::new(),
            body: Bytes::from_static(body.as_bytes()),
        })
    }

    #[test]
    fn judgement_table() {
        use FallbackReason as F;
        let cases: Vec<(
            Result<Buffered, UpstreamError>,
            Option<FallbackReason>,
            bool,
        )> = vec![
            (answer(200, r#"{"related_memories":[]}"#), None, true),
            (
                answer(200, "<html>oops</html>"),
                Some(F::InvalidJson),
                false,
            ),
            (answer(200, ""), Some(F::InvalidJson), false),
            (answer(422, r#"{"detail":[]}"#), None, false),
            (answer(404, r#"{"detail":"Not Found"}"#), None, false),
            (
                answer(500, r#"{"detail":"boom"}"#),
                Some(F::Upstream5xx),
                false,
            ),
            (answer(503, ""), Some(F::Upstream5xx), false),
            (answer(201, "{}"), None, false),
            (
                Err(UpstreamError::Timeout(Duration::from_secs(2))),
                Some(F::Timeout),
                false,
            ),
            (
                Err(UpstreamError::TooLarge(1)),
                Some(F::UpstreamError),
                false,
            ),
        ];
        for (result, want_fallback, want_cacheable) in cases {
            let shown = format!("{result:?}");
            match judge(result) {
                Judgement::Fallback(reason) => assert_eq!(Some(reason), want_fallback, "{shown}"),
                Judgement::Answer { cacheable, .. } => {
                    assert_eq!(want_fallback, None, "{shown}");
                    assert_eq!(cacheable, want_cacheable, "{shown}");
                }
            }
        }
    }
}
