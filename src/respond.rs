//! The responses the handlers send, built in one place: memU's answer passed on (buffered or
//! streamed), a cache hit, a stale answer, the empty fallback, and the proxy's own JSON; plus
//! the `Cache-Status` and `Server-Timing` entries every response carries. Pure: values in, a
//! response out; counting and logging are the callers' business.

use std::time::Duration;

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Response, StatusCode};
use tokio::time::Instant;

use crate::body::{full, ProxyBody};
use crate::cache::Entry;
use crate::fallback::{empty_body, FallbackReason};
use crate::headers::{server_timing, CacheStatus, Fwd};
use crate::outcome::{Handled, Outcome};
use crate::routes::ReadRoute;
use crate::upstream::Buffered;

pub const HEADER_CACHE_STATUS: HeaderName = HeaderName::from_static("cache-status");
pub const HEADER_SERVER_TIMING: HeaderName = HeaderName::from_static("server-timing");

/// Adds the proxy's `Cache-Status` entry after any from caches closer to memU (RFC 9211).
pub fn set_cache_status(headers: &mut HeaderMap, status: CacheStatus) {
    headers.append(HEADER_CACHE_STATUS, status.header_value());
}

/// Appends a `Server-Timing` entry, keeping any the upstream sent.
pub fn add_timing(headers: &mut HeaderMap, metrics: &[(&str, Duration)]) {
    headers.append(HEADER_SERVER_TIMING, server_timing(metrics));
}

/// A response carrying a buffered upstream answer unchanged.
pub fn buffered(answer: &Buffered) -> Response<ProxyBody> {
    let mut response = Response::new(full(answer.body.clone()));
    *response.status_mut() = answer.status;
    *response.headers_mut() = answer.headers.clone();
    response
}

/// A JSON response the proxy composed itself.
pub fn json(status: StatusCode, body: Bytes) -> Response<ProxyBody> {
    let mut response = Response::new(full(body));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

/// memU's answer passed on unchanged, outside the cache (`Cache-Status: fwd=bypass`).
pub fn forwarded(answer: &Buffered, upstream: Duration, outcome: Outcome) -> Handled {
    streamed(buffered(answer), upstream, outcome)
}

/// memU's response, whose body may still be streaming, passed on outside the cache.
pub fn streamed(
    mut response: Response<ProxyBody>,
    upstream: Duration,
    outcome: Outcome,
) -> Handled {
    set_cache_status(response.headers_mut(), CacheStatus::BYPASS);
    add_timing(response.headers_mut(), &[("upstream", upstream)]);
    Handled {
        response,
        outcome,
        upstream: Some(upstream),
        detail: None,
    }
}

/// How a retrieval went to memU: the `fwd` reason, and whether it shared another request's fetch.
#[derive(Debug, Clone, Copy)]
pub struct Forwarded {
    pub fwd: Fwd,
    pub collapsed: bool,
}

/// memU's answer to a retrieval, as one of the fetch's waiters passes it on.
pub fn fetched(answer: &Buffered, stored: bool, upstream: Duration, how: Forwarded) -> Handled {
    let mut response = buffered(answer);
    let status = CacheStatus {
        stored: stored && !how.collapsed,
        collapsed: how.collapsed,
        ..CacheStatus::forwarded(how.fwd)
    };
    set_cache_status(response.headers_mut(), status);
    Handled {
        response,
        outcome: if how.collapsed {
            Outcome::Coalesced
        } else {
            Outcome::Miss
        },
        upstream: Some(upstream),
        detail: None,
    }
}

/// Why a cached answer was served.
#[derive(Debug, Clone, Copy)]
pub enum HitKind {
    Fresh,
    /// Fresh, stored for a near-duplicate query.
    Similar,
    /// Fresh, from the shared tier.
    Shared,
    /// Stale, with the `Cache-Status` detail saying why it was served anyway.
    Stale(&'static str),
}

/// The most header values the proxy adds to a stored answer it serves (`Age`, `Cache-Status`,
/// the request id and two `Server-Timing` entries).
const HEADERS_ADDED: usize = 5;

/// A cached answer, with its `Age`.
pub fn hit(entry: &Entry, kind: HitKind) -> Handled {
    let (detail, outcome) = match kind {
        HitKind::Fresh => (None, Outcome::Hit),
        HitKind::Similar => (Some("similar"), Outcome::SimilarHit),
        HitKind::Shared => (Some("shared"), Outcome::SharedHit),
        HitKind::Stale(detail) => (Some(detail), Outcome::Stale),
    };
    let mut response = Response::new(full(entry.body.clone()));
    let headers = response.headers_mut();
    // Built with room for what the proxy adds (here, then the request id and `Server-Timing`):
    // a clone of the stored map would be grown, and rehashed, on the way.
    headers.reserve(entry.headers.len() + HEADERS_ADDED);
    for (name, value) in &entry.headers {
        headers.append(name, value.clone());
    }
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
        detail,
    }
}

/// A stale answer served because memU could not answer in time (`reason`).
pub fn stale(entry: &Entry, reason: FallbackReason, upstream: Option<Duration>) -> Handled {
    let mut handled = hit(entry, HitKind::Stale(reason.stale_detail()));
    handled.upstream = upstream;
    handled
}

/// The empty answer for `route`, echoing the client's own query.
pub fn fallback(
    route: ReadRoute,
    raw_query: Option<&str>,
    reason: FallbackReason,
    upstream: Option<Duration>,
) -> Handled {
    let mut response = json(StatusCode::OK, empty_body(route, raw_query));
    let status = CacheStatus {
        detail: Some(reason.as_str()),
        ..CacheStatus::forwarded(Fwd::Miss)
    };
    set_cache_status(response.headers_mut(), status);
    Handled {
        response,
        outcome: Outcome::Fallback,
        upstream,
        detail: Some(reason.as_str()),
    }
}

/// A local answer from the memory mirror, instead of the empty one for `reason`.
pub fn local_answer(body: Vec<u8>, reason: FallbackReason, upstream: Option<Duration>) -> Handled {
    let mut response = json(StatusCode::OK, body.into());
    let status = CacheStatus {
        detail: Some(reason.as_str()),
        local: true,
        ..CacheStatus::forwarded(Fwd::Miss)
    };
    set_cache_status(response.headers_mut(), status);
    Handled {
        response,
        outcome: Outcome::LocalAnswer,
        upstream,
        detail: Some(reason.as_str()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer() -> Buffered {
        let mut headers = HeaderMap::new();
        headers.insert("server-timing", HeaderValue::from_static("db;dur=1.5"));
        Buffered {
            status: StatusCode::OK,
            headers,
            body: Bytes::from_static(b"{}"),
        }
    }

    #[test]
    fn forwarded_answers_keep_upstream_entries_and_add_the_proxys() {
        let handled = forwarded(&answer(), Duration::from_millis(2), Outcome::Miss);
        let headers = handled.response.headers();
        assert_eq!(headers[&HEADER_CACHE_STATUS], "memu-proxy; fwd=bypass");
        let timing: Vec<_> = headers.get_all(&HEADER_SERVER_TIMING).iter().collect();
        assert_eq!(timing, ["db;dur=1.5", "upstream;dur=2.000"]);
    }

    #[test]
    fn a_waiters_cache_status() {
        let ms = Duration::from_millis(1);
        let cases = [
            (
                Fwd::Miss,
                true,
                false,
                "memu-proxy; fwd=miss; stored",
                Outcome::Miss,
            ),
            (
                Fwd::Miss,
                false,
                false,
                "memu-proxy; fwd=miss",
                Outcome::Miss,
            ),
            (
                Fwd::Miss,
                true,
                true,
                "memu-proxy; fwd=miss; collapsed",
                Outcome::Coalesced,
            ),
            (
                Fwd::Request,
                true,
                false,
                "memu-proxy; fwd=request; stored",
                Outcome::Miss,
            ),
        ];
        for (fwd, stored, collapsed, want, outcome) in cases {
            let handled = fetched(&answer(), stored, ms, Forwarded { fwd, collapsed });
            assert_eq!(handled.response.headers()[&HEADER_CACHE_STATUS], want);
            assert_eq!(handled.outcome, outcome);
        }
    }

    #[test]
    fn fallbacks_are_json_and_say_why() {
        let handled = fallback(
            ReadRoute::V1_RELATED,
            Some("cats"),
            FallbackReason::Budget,
            None,
        );
        let headers = handled.response.headers();
        assert_eq!(headers[header::CONTENT_TYPE], "application/json");
        assert_eq!(
            headers[&HEADER_CACHE_STATUS],
            "memu-proxy; fwd=miss; detail=budget"
        );
        assert_eq!(handled.outcome, Outcome::Fallback);
    }
}
