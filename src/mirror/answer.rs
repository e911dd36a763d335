//! A local answer: the mirrored items that rank for the read's query, ranked once here, then put
//! in the route's exact shape by that route's shaper (`shapes.rs`). Pure.
//!
//! The routes answered are each generation's query-bearing read: v1/v2 `related-memory-items`,
//! v3 `retrieve`, v4 `search`, memU-server `/retrieve`. A route's own `top_k` and
//! `min_similarity` are honoured (only v1/v2 has them); without them memU's v1 defaults apply
//! (memu-api.md §3.1), the score being on the proxy's own scale (`rank.rs`). A v3 query sent as a
//! list of messages is ranked by its last message's text.

use serde_json::{Map, Value};

use super::embed::Vector;
use super::rank::{rank, Query};
use super::shapes::{Question, Shaper};
use super::ScopeItems;
use crate::cache::CacheKey;
use crate::routes::ReadRoute;

/// memU's defaults for a request that names neither (memu-api.md §3.1).
const DEFAULT_TOP_K: usize = 10;
const DEFAULT_MIN_SIMILARITY: f64 = 0.3;

/// What a read asked, as the mirror ranks it: the query the client sent (`None` for a v3 list of
/// messages, read from the key), the query's vector if it came in time, and the vector of each of
/// the scope's items that has one (by index).
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
    let shaper = Shaper::of(route)?;
    let params = parameters(&key.params);
    let query = match asked.query {
        Some(query) => query.to_owned(),
        None => last_message(params.get(route.query?.name)?)?,
    };
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
            text: &query,
            vector: asked.vector,
            top_k,
            min_similarity,
        },
    );
    if ranked.is_empty() {
        return None;
    }
    let asked = Question {
        query: &query,
        params: &params,
        defaults: (DEFAULT_TOP_K, DEFAULT_MIN_SIMILARITY),
    };
    serde_json::to_vec(&shaper.shape(&ranked, set, &asked)).ok()
}

/// The key's canonical parameters (`"name":value,` …) as an object.
fn parameters(canonical: &str) -> Map<String, Value> {
    match from_canonical(&format!("{{{canonical}}}")) {
        Some(Value::Object(params)) => params,
        _ => Map::new(),
    }
}

/// A value from the key's canonical text, which ends every member and element with a comma
/// (`[1,2,]`, `{"a":1,}`): those before a `]` or `}` (outside strings) are dropped.
fn from_canonical(text: &str) -> Option<Value> {
    let mut json = String::with_capacity(text.len());
    let (mut in_string, mut escaped) = (false, false);
    for c in text.chars() {
        if in_string {
            (in_string, escaped) = (escaped || c != '"', !escaped && c == '\\');
        } else if c == '"' {
            in_string = true;
        } else if matches!(c, ']' | '}') && json.ends_with(',') {
            json.pop();
        }
        json.push(c);
    }
    serde_json::from_str(&json).ok()
}

/// The text of the last message of a v3 list query, kept in the key as its canonical JSON text:
/// a `content` string, or `content.text`.
fn last_message(messages: &Value) -> Option<String> {
    let messages = from_canonical(messages.as_str()?)?;
    let text = |message: &Value| match message.get("content")? {
        Value::String(text) => Some(text.clone()),
        content => Some(content.get("text")?.as_str()?.to_owned()),
    };
    messages
        .as_array()?
        .iter()
        .rev()
        .find_map(text)
        .filter(|text| !text.trim().is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn canonical_text_reads_back_whatever_its_strings_hold() {
        let value = serde_json::json!({"a": [1, {"b": "x,]\\\",}"}], "c": null, "d": []});
        let canonical = crate::cache::canonical::canonical(&value);
        assert_eq!(from_canonical(&canonical), Some(value));
    }

    #[test]
    fn a_list_of_include_categories_keeps_top_k() {
        let params = parameters(r#""include_categories":["a","b",],"top_k":3,"#);
        assert_eq!(params.get("top_k"), Some(&serde_json::json!(3)));
    }
}
