//! A local answer: the route's exact shape, built from the mirrored items that rank for the
//! query, honouring the request's `top_k` and `min_similarity`. Pure.
//!
//! v1/v2 `related-memory-items` only, today: `{"related_memories":[{"memory":…,
//! "similarity_score":…}],"query":…,"total_found":…,"search_params":{…}}`, each `memory` exactly
//! as memU sent it, the score on the proxy's own scale (`rank.rs`).

use serde_json::{json, Map, Value};

use super::embed::Vector;
use super::rank::{rank, Query};
use super::ScopeItems;
use crate::cache::CacheKey;
use crate::routes::ReadRoute;

/// memU's defaults for a request that names neither (memu-api.md §3.1).
const DEFAULT_TOP_K: usize = 10;
const DEFAULT_MIN_SIMILARITY: f64 = 0.3;

/// What a read asked, as the mirror ranks it: the query the client sent, the query's vector if
/// it came in time, and the vector of each of the scope's items that has one (by index).
#[derive(Debug, Clone, Copy)]
pub struct Asked<'a> {
    pub query: Option<&'a str>,
    pub vector: Option<&'a [f32]>,
    pub vectors: &'a [Option<Vector>],
}

/// The local answer for the read keyed `key` (asking `asked`) from `set`; `None` when the route
/// has no local answer or no item ranks.
pub fn local_answer(
    route: ReadRoute,
    key: &CacheKey,
    asked: &Asked<'_>,
    set: &ScopeItems,
) -> Option<Vec<u8>> {
    if route != ReadRoute::V1_RELATED {
        return None;
    }
    let query = asked.query?;
    let params = parameters(&key.params);
    let top_k = params
        .get("top_k")
        .and_then(Value::as_u64)
        .map_or(DEFAULT_TOP_K, |k| usize::try_from(k).unwrap_or(usize::MAX));
    let min_similarity = params
        .get("min_similarity")
        .and_then(Value::as_f64)
        .unwrap_or(DEFAULT_MIN_SIMILARITY);
    let ranked = rank(
        &set.items,
        asked.vectors,
        &Query {
            text: query,
            vector: asked.vector,
            top_k,
            min_similarity,
        },
    );
    if ranked.is_empty() {
        return None;
    }
    let related: Vec<Value> = ranked
        .iter()
        .map(|r| json!({"memory": set.items[r.index].json, "similarity_score": r.score}))
        .collect();
    let answer = json!({
        "related_memories": related,
        "query": query,
        "total_found": ranked.len(),
        "search_params": {
            "query": query,
            "top_k": params.get("top_k").cloned().unwrap_or(json!(DEFAULT_TOP_K)),
            "min_similarity": params.get("min_similarity").cloned().unwrap_or(json!(DEFAULT_MIN_SIMILARITY)),
            "include_categories": params.get("include_categories").cloned().unwrap_or(Value::Null),
        },
    });
    serde_json::to_vec(&answer).ok()
}

/// The key's canonical parameters (`"name":value,` …) as an object.
fn parameters(canonical: &str) -> Map<String, Value> {
    let text = format!("{{{}}}", canonical.trim_end_matches(','));
    serde_json::from_str(&text).unwrap_or_default()
}
