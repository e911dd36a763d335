//! The well-formed empty answer for a retrieval memU could not give in time.
//!
//! These are the minimal bodies the real `memu-py` SDK parses without error (memu-api.md §4),
//! echoing the query exactly as the client sent it, because the SDK's models require the echo.
//! Only reads get a fallback; writes are never faked. Pure.

use bytes::Bytes;
use serde_json::json;

use crate::routes::ReadRoute;

/// Why a fallback was served; the `detail` of `Cache-Status` and a metrics label.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FallbackReason {
    /// The upstream exchange did not finish within the deadline.
    Timeout,
    /// memU could not be connected to.
    Connect,
    /// memU's TLS certificate was rejected (or the TLS handshake failed): nothing was sent.
    Tls,
    /// memU answered with a 5xx status.
    Upstream5xx,
    /// memU answered 200 with a body that is not JSON.
    InvalidJson,
    /// The exchange broke after connecting (reset, truncated or oversized body).
    UpstreamError,
    /// The latency budget ran out first; the fetch goes on in the background.
    Budget,
    /// The circuit breaker is open: memU was not asked.
    CircuitOpen,
    /// Too many upstream fetches in flight: this one was shed.
    Overload,
}

impl FallbackReason {
    pub fn as_str(self) -> &'static str {
        match self {
            FallbackReason::Timeout => "timeout",
            FallbackReason::Connect => "connect",
            FallbackReason::Tls => "tls",
            FallbackReason::Upstream5xx => "upstream-5xx",
            FallbackReason::InvalidJson => "invalid-json",
            FallbackReason::UpstreamError => "upstream-error",
            FallbackReason::Budget => "budget",
            FallbackReason::CircuitOpen => "circuit-open",
            FallbackReason::Overload => "overload",
        }
    }

    /// The `Cache-Status` detail when a stale answer was served for this reason.
    pub fn stale_detail(self) -> &'static str {
        match self {
            FallbackReason::Timeout => "stale-timeout",
            FallbackReason::Connect => "stale-connect",
            FallbackReason::Tls => "stale-tls",
            FallbackReason::Upstream5xx => "stale-upstream-5xx",
            FallbackReason::InvalidJson => "stale-invalid-json",
            FallbackReason::UpstreamError => "stale-upstream-error",
            FallbackReason::Budget => "stale-budget",
            FallbackReason::CircuitOpen => "stale-circuit-open",
            FallbackReason::Overload => "stale-overload",
        }
    }
}

/// The empty answer for `route`, echoing `query` (the client's `query` / `category_query`).
pub fn empty_body(route: ReadRoute, query: Option<&str>) -> Bytes {
    let query = query.unwrap_or_default();
    let body = match route {
        ReadRoute::RelatedMemoryItems => json!({
            "related_memories": [],
            "query": query,
            "total_found": 0,
            "search_params": {},
        }),
        ReadRoute::DefaultCategories => json!({
            "categories": [],
            "total_categories": 0,
        }),
        ReadRoute::RelatedClusteredCategories => json!({
            "clustered_categories": [],
            "category_query": query,
            "total_categories_found": 0,
            "search_params": {},
        }),
    };
    Bytes::from(body.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;

    #[test]
    fn bodies_have_every_field_the_sdk_requires() {
        let cases: &[(ReadRoute, Option<&str>, Value)] = &[
            (
                ReadRoute::RelatedMemoryItems,
                Some("你好 \"cats\""),
                json!({"related_memories": [], "query": "你好 \"cats\"", "total_found": 0, "search_params": {}}),
            ),
            (
                ReadRoute::DefaultCategories,
                None,
                json!({"categories": [], "total_categories": 0}),
            ),
            (
                ReadRoute::RelatedClusteredCategories,
                Some("pets"),
                json!({"clustered_categories": [], "category_query": "pets", "total_categories_found": 0, "search_params": {}}),
            ),
        ];
        for (route, query, want) in cases {
            let got: Value = serde_json::from_slice(&empty_body(*route, *query)).unwrap();
            assert_eq!(&got, want, "{route:?}");
        }
    }
}
