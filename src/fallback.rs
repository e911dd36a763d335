//! The well-formed empty answer for a retrieval memU could not give in time.
//!
//! The bodies are data in the route table (`routes/table.rs`): the minimal answers each
//! generation's clients parse without error (memu-api.md §4, memu-api-next.md §6), lists empty,
//! never `null`, echoing the query exactly as the client sent it where the shape carries it.
//! Only reads get a fallback; writes are never faked. Pure.

use bytes::Bytes;
use serde_json::Value;

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
    /// memU answered 2xx, but not with the route's shape (not a 200 JSON object with the
    /// route's list fields as lists): never stored.
    InvalidShape,
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
            FallbackReason::InvalidShape => "invalid-shape",
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
            FallbackReason::InvalidShape => "stale-invalid-shape",
        }
    }
}

/// The empty answer for `route`: its row's template, with the fields that echo the query set to
/// the client's own text (the v1 SDK's models require the echo).
pub fn empty_body(route: ReadRoute, query: Option<&str>) -> Bytes {
    let fallback = route.fallback;
    let mut body: Value = serde_json::from_str(fallback.template).unwrap_or(Value::Null);
    for field in fallback.echo {
        if let Some(slot) = field.iter().try_fold(&mut body, |v, k| v.get_mut(*k)) {
            *slot = Value::from(query.unwrap_or_default());
        }
    }
    Bytes::from(body.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::routes::table::*;
    use serde_json::json;

    #[test]
    fn bodies_have_every_field_the_clients_require() {
        let cases: &[(&'static crate::routes::ReadRow, Option<&str>, Value)] = &[
            (
                &V1_RELATED,
                Some("你好 \"cats\""),
                json!({"related_memories": [], "query": "你好 \"cats\"", "total_found": 0, "search_params": {}}),
            ),
            (
                &V1_CATEGORIES,
                None,
                json!({"categories": [], "total_categories": 0}),
            ),
            (
                &V1_CLUSTERED,
                Some("pets"),
                json!({"clustered_categories": [], "category_query": "pets", "total_categories_found": 0, "search_params": {}}),
            ),
            (
                &V3_RETRIEVE,
                Some("cats"),
                json!({"categories": [], "items": [], "resources": [], "next_step_query": null}),
            ),
            (&V3_CATEGORIES, None, json!({"categories": []})),
            (
                &V4_LIST,
                None,
                json!({"recall_files": [], "next_cursor": null}),
            ),
            (
                &V4_SEARCH,
                Some("q"),
                json!({"segments": [], "files": [], "resources": []}),
            ),
            (
                &SERVER_RETRIEVE,
                Some("tea?"),
                json!({"status": "success", "result": {"needs_retrieval": false, "original_query": "tea?",
                       "rewritten_query": "tea?", "next_step_query": null, "categories": [], "items": [], "resources": []}}),
            ),
            (
                &SERVER_CATEGORIES,
                None,
                json!({"status": "success", "result": {"categories": []}}),
            ),
        ];
        for (row, query, want) in cases {
            let got: Value = serde_json::from_slice(&empty_body(ReadRoute(row), *query)).unwrap();
            assert_eq!(&got, want, "{}", row.name);
        }
    }
}
