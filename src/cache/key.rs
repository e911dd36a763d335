//! Cache keys, built from the parsed JSON body of a retrieval, never from its raw bytes.
//!
//! A key holds every input that can change memU's answer: the request path (route, API version and
//! base path) and query string, the tenant (a SHA-256 digest of the `Authorization` header, never
//! the header itself), `user_id`, `agent_id` (`null` and absent are the same, and differ from any
//! string), the normalised `query` / `category_query`, and every other field in canonical form
//! (object keys sorted, numbers by value, `include_categories` as a set, `null` ≡ absent). Pure.

use std::fmt::Write as _;

use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

use super::normalize::normalize_query;
use crate::routes::ReadRoute;

/// Who a request acts for: a digest of its `Authorization` header (`None` when absent).
pub type Tenant = Option<[u8; 32]>;

/// Digests an `Authorization` header value; the raw credential is never kept.
pub fn tenant_of(authorization: Option<&[u8]>) -> Tenant {
    authorization.map(|value| Sha256::digest(value).into())
}

/// The tenant of a request: the digest of its `Authorization` header.
pub fn request_tenant(headers: &http::HeaderMap) -> Tenant {
    tenant_of(
        headers
            .get(http::header::AUTHORIZATION)
            .map(http::HeaderValue::as_bytes),
    )
}

/// The (tenant, user, agent) a request reads or writes. `agent: None` is memU's `agent_id: null`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Scope {
    pub tenant: Tenant,
    pub user: Box<str>,
    pub agent: Option<Box<str>>,
}

/// The identity of one cacheable retrieval.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct CacheKey {
    pub route: ReadRoute,
    /// Path and query string exactly as sent (keeps `/api/v1` and `/api/v2` apart).
    pub path_and_query: Box<str>,
    pub scope: Scope,
    /// The normalised query text, for routes that have one.
    pub query: Option<Box<str>>,
    /// Every other body field, canonicalised.
    pub params: Box<str>,
}

/// A parsed cacheable retrieval: its key and the query text as the client sent it (fallback
/// bodies echo it).
#[derive(Debug, Clone)]
pub struct KeyedRead {
    pub key: CacheKey,
    pub raw_query: Option<String>,
}

impl CacheKey {
    /// Approximate heap size, for the cache's byte weigher.
    pub fn heap_bytes(&self) -> usize {
        self.path_and_query.len()
            + self.scope.user.len()
            + self.scope.agent.as_ref().map_or(0, |a| a.len())
            + self.query.as_ref().map_or(0, |q| q.len())
            + self.params.len()
    }
}

/// Builds the key of a retrieval, or `None` when the body is not cacheable (not a JSON object,
/// `user_id` missing or not a string, `agent_id` or the query field of the wrong type). Such
/// requests are forwarded untouched.
pub fn read_key(
    route: ReadRoute,
    path_and_query: &str,
    tenant: Tenant,
    body: &[u8],
) -> Option<KeyedRead> {
    let mut fields: Map<String, Value> = serde_json::from_slice(body).ok()?;
    let scope = take_scope(&mut fields, tenant)?;
    let raw_query = match route.query_field() {
        Some(name) => match fields.remove(name) {
            Some(Value::String(q)) => Some(q),
            _ => return None,
        },
        None => None,
    };
    if let Some(Value::Array(categories)) = fields.get_mut("include_categories") {
        categories.sort_by_cached_key(canonical);
        categories.dedup();
    }
    Some(KeyedRead {
        key: CacheKey {
            route,
            path_and_query: path_and_query.into(),
            scope,
            query: raw_query.as_deref().map(|q| normalize_query(q).into()),
            params: canonical_fields(&fields).into(),
        },
        raw_query,
    })
}

/// The key of a retrieval request, from its headers, path and body (`None`: not cacheable).
pub fn request_key(
    route: ReadRoute,
    parts: &http::request::Parts,
    body: &[u8],
) -> Option<KeyedRead> {
    let path_and_query = parts.uri.path_and_query().map_or("/", |pq| pq.as_str());
    read_key(route, path_and_query, request_tenant(&parts.headers), body)
}

/// The scope a write acts on: `user_id` (string) and `agent_id` (string or null/absent).
pub fn write_scope(tenant: Tenant, body: &[u8]) -> Option<Scope> {
    let mut fields: Map<String, Value> = serde_json::from_slice(body).ok()?;
    take_scope(&mut fields, tenant)
}

fn take_scope(fields: &mut Map<String, Value>, tenant: Tenant) -> Option<Scope> {
    let user = match fields.remove("user_id") {
        Some(Value::String(user)) => user.into_boxed_str(),
        _ => return None,
    };
    let agent = match fields.remove("agent_id") {
        None | Some(Value::Null) => None,
        Some(Value::String(agent)) => Some(agent.into_boxed_str()),
        Some(_) => return None,
    };
    Some(Scope {
        tenant,
        user,
        agent,
    })
}

/// Canonical text of the remaining top-level fields; `null` fields are dropped (≡ absent).
fn canonical_fields(fields: &Map<String, Value>) -> String {
    let mut out = String::new();
    for (name, value) in sorted(fields).into_iter().filter(|(_, v)| !v.is_null()) {
        write_string(name, &mut out);
        out.push(':');
        write_canonical(value, &mut out);
        out.push(',');
    }
    out
}

/// Object entries by key. serde_json's map is ordered unless a crate in the build turns on its
/// `preserve_order` feature; sorting here keeps keys canonical either way.
fn sorted(map: &Map<String, Value>) -> Vec<(&String, &Value)> {
    let mut entries: Vec<_> = map.iter().collect();
    entries.sort_unstable_by(|a, b| a.0.cmp(b.0));
    entries
}

fn canonical(value: &Value) -> String {
    let mut out = String::new();
    write_canonical(value, &mut out);
    out
}

/// Writes a JSON value with sorted object keys and numbers by value.
fn write_canonical(value: &Value, out: &mut String) {
    match value {
        Value::Null => out.push_str("null"),
        Value::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        Value::Number(n) => write_number(n, out),
        Value::String(s) => write_string(s, out),
        Value::Array(items) => {
            out.push('[');
            for item in items {
                write_canonical(item, out);
                out.push(',');
            }
            out.push(']');
        }
        Value::Object(map) => {
            out.push('{');
            for (name, item) in sorted(map) {
                write_string(name, out);
                out.push(':');
                write_canonical(item, out);
                out.push(',');
            }
            out.push('}');
        }
    }
}

/// Integers exactly; other numbers as the shortest text of their f64 value, with integral values
/// written as integers, so `0.5` ≡ `0.50` and `10` ≡ `10.0`.
fn write_number(n: &serde_json::Number, out: &mut String) {
    const EXACT: f64 = 9_007_199_254_740_992.0; // 2^53
    if let Some(i) = n.as_i64() {
        let _ = write!(out, "{i}");
    } else if let Some(u) = n.as_u64() {
        let _ = write!(out, "{u}");
    } else if let Some(f) = n.as_f64() {
        if f.fract() == 0.0 && f.abs() < EXACT {
            let _ = write!(out, "{}", f as i64);
        } else {
            let _ = write!(out, "{f:?}");
        }
    }
}

fn write_string(s: &str, out: &mut String) {
    // serde_json's escaping is deterministic, and keeps `"a,b"` apart from two fields.
    out.push_str(&Value::from(s).to_string());
}

#[cfg(test)]
mod tests {
    use super::*;
    use ReadRoute::*;

    const PATH: &str = "/api/v1/memory/retrieve/related-memory-items";

    fn key(body: &str) -> CacheKey {
        read_key(RelatedMemoryItems, PATH, None, body.as_bytes())
            .unwrap_or_else(|| panic!("not cacheable: {body}"))
            .key
    }

    #[test]
    fn same_answer_same_key() {
        let sdk = r#"{"user_id": "u1", "agent_id": "a1", "query": "What pets do I like?", "top_k": 3, "min_similarity": 0.5, "include_categories": null}"#;
        let equivalent = [
            r#"{"query":"what pets do i like","top_k":3,"min_similarity":0.50,"agent_id":"a1","user_id":"u1"}"#,
            r#"{"user_id":"\u0075\u0031","agent_id":"a1","query":"  WHAT pets do I like ?","top_k":3.0,"min_similarity":5e-1}"#,
            r#"{"user_id": "u1", "agent_id": "a1", "query": "What pets do I like?", "top_k": 3, "min_similarity": 0.5}"#,
        ];
        for body in equivalent {
            assert_eq!(key(sdk), key(body), "{body}");
        }
        let sets = [
            r#"{"user_id":"u","query":"q","include_categories":["b","a"]}"#,
            r#"{"user_id":"u","query":"q","include_categories":["a","b","a"]}"#,
        ];
        assert_eq!(key(sets[0]), key(sets[1]));
        let null_agent = [
            r#"{"user_id":"u","query":"q"}"#,
            r#"{"user_id":"u","agent_id":null,"query":"q"}"#,
        ];
        assert_eq!(key(null_agent[0]), key(null_agent[1]));
    }

    #[test]
    fn every_field_that_changes_the_answer_changes_the_key() {
        let base =
            r#"{"user_id":"u1","agent_id":"a1","query":"cats","top_k":3,"min_similarity":0.3}"#;
        let different = [
            r#"{"user_id":"u2","agent_id":"a1","query":"cats","top_k":3,"min_similarity":0.3}"#,
            r#"{"user_id":"u1","agent_id":"a2","query":"cats","top_k":3,"min_similarity":0.3}"#,
            r#"{"user_id":"u1","agent_id":null,"query":"cats","top_k":3,"min_similarity":0.3}"#,
            r#"{"user_id":"u1","agent_id":"a1","query":"dogs","top_k":3,"min_similarity":0.3}"#,
            r#"{"user_id":"u1","agent_id":"a1","query":"cats","top_k":4,"min_similarity":0.3}"#,
            r#"{"user_id":"u1","agent_id":"a1","query":"cats","top_k":3,"min_similarity":0.31}"#,
            r#"{"user_id":"u1","agent_id":"a1","query":"cats","top_k":3,"min_similarity":0.3,"include_categories":["x"]}"#,
            r#"{"user_id":"u1","agent_id":"a1","query":"cats","top_k":3,"min_similarity":0.3,"future_field":1}"#,
            r#"{"user_id":"u1","agent_id":"a1","query":"cats","top_k":3}"#,
        ];
        for body in different {
            assert_ne!(key(base), key(body), "{body}");
        }
        let other_tenant = read_key(
            RelatedMemoryItems,
            PATH,
            tenant_of(Some(b"Bearer k2")),
            base.as_bytes(),
        );
        assert_ne!(key(base), other_tenant.unwrap().key);
        let v2 = read_key(
            RelatedMemoryItems,
            "/api/v2/memory/retrieve/related-memory-items",
            None,
            base.as_bytes(),
        );
        assert_ne!(key(base), v2.unwrap().key);
    }

    #[test]
    fn field_boundaries_cannot_collide() {
        let a = r#"{"user_id":"u","query":"q","x":"1,\"y\":2"}"#;
        let b = r#"{"user_id":"u","query":"q","x":"1","y":2}"#;
        assert_ne!(key(a), key(b));
        let c = r#"{"user_id":"u a","query":"q"}"#;
        let d = r#"{"user_id":"u","agent_id":"a","query":"q"}"#;
        assert_ne!(key(c), key(d));
    }

    #[test]
    fn uncacheable_bodies() {
        for body in [
            "",
            "not json",
            "[1,2]",
            r#"{"query":"q"}"#,
            r#"{"user_id":7,"query":"q"}"#,
            r#"{"user_id":"u","agent_id":5,"query":"q"}"#,
            r#"{"user_id":"u"}"#,
            r#"{"user_id":"u","query":null}"#,
        ] {
            assert!(
                read_key(RelatedMemoryItems, PATH, None, body.as_bytes()).is_none(),
                "{body}"
            );
        }
        let no_query = read_key(DefaultCategories, PATH, None, br#"{"user_id":"u"}"#);
        assert!(no_query.is_some());
    }

    #[test]
    fn raw_query_is_kept_for_echoing() {
        let read = read_key(
            RelatedMemoryItems,
            PATH,
            None,
            r#"{"user_id":"u","query":"Hi There!"}"#.as_bytes(),
        );
        let read = read.unwrap();
        assert_eq!(read.raw_query.as_deref(), Some("Hi There!"));
        assert_eq!(read.key.query.as_deref(), Some("hi there"));
    }

    #[test]
    fn write_scopes() {
        let s = write_scope(None, br#"{"user_id":"u","agent_id":"a","conversation":[]}"#).unwrap();
        assert_eq!((&*s.user, s.agent.as_deref()), ("u", Some("a")));
        let all = write_scope(None, br#"{"user_id":"u","agent_id":null}"#).unwrap();
        assert_eq!(all.agent, None);
        assert!(write_scope(None, b"{}").is_none());
    }
}
