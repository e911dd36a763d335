//! The shape of each route's local answer, from the items already ranked for its query
//! (`answer.rs`). Pure. Each memory is exactly as memU sent it, but for its score: where the
//! generation carries one inside the memory (`score`: v3, v4, memU-server), it is replaced by the
//! proxy's own (memU's was for another query); v1/v2's sits beside it (`similarity_score`).
//!
//! | route | answer |
//! |---|---|
//! | v1/v2 `related-memory-items` | `{"related_memories":[{"memory","similarity_score"}],"query","total_found","search_params"}` |
//! | v3 `retrieve` | memu-py's retrieve dict: `{"needs_retrieval":true,"original_query","rewritten_query","next_step_query":null,"categories","items","resources":[]}` |
//! | v4 `search` | `{"segments","files","resources":[]}` |
//! | memU-server `/retrieve` | `{"status":"success","result":` the v3 dict `}` |
//!
//! No resource is ever mirrored, so `resources` is always empty (memu-api-next.md §3.7, §4.6,
//! §5.5: lists are never `null`).

use serde_json::{json, Map, Value};

use super::rank::Ranked;
use super::{Kind, ScopeItems};
use crate::routes::{table, ReadRoute};

/// What the client asked: the query text and the request's other parameters.
pub struct Question<'a> {
    pub query: &'a str,
    pub params: &'a Map<String, Value>,
    /// The `top_k` and `min_similarity` used when the request names none.
    pub defaults: (usize, f64),
}

/// A route that has a local answer, and so a shape for one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shaper {
    V1Related,
    V3Retrieve,
    V4Search,
    ServerRetrieve,
}

impl Shaper {
    /// The shaper of `route`, if it has a local answer.
    pub fn of(route: ReadRoute) -> Option<Shaper> {
        [
            (&table::V1_RELATED, Shaper::V1Related),
            (&table::V3_RETRIEVE, Shaper::V3Retrieve),
            (&table::V4_SEARCH, Shaper::V4Search),
            (&table::SERVER_RETRIEVE, Shaper::ServerRetrieve),
        ]
        .into_iter()
        .find(|(row, _)| route == ReadRoute(row))
        .map(|(_, shaper)| shaper)
    }

    /// The answer holding the `ranked` items of `set`, best first.
    pub fn shape(self, ranked: &[Ranked], set: &ScopeItems, asked: &Question) -> Value {
        match self {
            Shaper::V1Related => v1_related(ranked, set, asked),
            Shaper::V3Retrieve => memu_py_retrieve(ranked, set, asked),
            Shaper::V4Search => v4_search(ranked, set),
            Shaper::ServerRetrieve => json!({
                "status": "success",
                "result": memu_py_retrieve(ranked, set, asked),
            }),
        }
    }
}

fn v1_related(ranked: &[Ranked], set: &ScopeItems, asked: &Question) -> Value {
    let related: Vec<Value> = ranked
        .iter()
        .filter_map(|r| {
            let memory = &set.items.get(r.index)?.json;
            Some(json!({"memory": memory, "similarity_score": r.score}))
        })
        .collect();
    let param = |name: &str, default: Value| asked.params.get(name).cloned().unwrap_or(default);
    let (top_k, min_similarity) = asked.defaults;
    json!({
        "total_found": related.len(),
        "related_memories": related,
        "query": asked.query,
        "search_params": {
            "query": asked.query,
            "top_k": param("top_k", json!(top_k)),
            "min_similarity": param("min_similarity", json!(min_similarity)),
            "include_categories": param("include_categories", Value::Null),
        },
    })
}

/// memu-py 1.x's retrieve dict (cloud v3 as is, memU-server inside `result`).
fn memu_py_retrieve(ranked: &[Ranked], set: &ScopeItems, asked: &Question) -> Value {
    json!({
        "needs_retrieval": true,
        "original_query": asked.query,
        "rewritten_query": asked.query,
        "next_step_query": null,
        "categories": of_kind(ranked, set, Kind::Category),
        "items": of_kind(ranked, set, Kind::Memory),
        "resources": [],
    })
}

fn v4_search(ranked: &[Ranked], set: &ScopeItems) -> Value {
    json!({
        "segments": of_kind(ranked, set, Kind::Segment),
        "files": of_kind(ranked, set, Kind::File),
        "resources": [],
    })
}

/// The ranked items of `kind`, best first, each with the proxy's `score`.
fn of_kind(ranked: &[Ranked], set: &ScopeItems, kind: Kind) -> Vec<Value> {
    ranked
        .iter()
        .filter_map(|r| {
            let item = set.items.get(r.index).filter(|item| item.kind == kind)?;
            let mut json = item.json.clone();
            if let Some(fields) = json.as_object_mut() {
                fields.insert("score".into(), json!(r.score));
            }
            Some(json)
        })
        .collect()
}
