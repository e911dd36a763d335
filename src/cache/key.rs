//! Cache keys, built from the parsed request (JSON body, or query string for GET reads), never
//! from its raw bytes.
//!
//! A key holds every input that can change memU's answer: the route, the request path (API
//! version and base path), the tenant (a SHA-256 digest of the `Authorization` header, never the
//! header itself), the user and agent (found where the route's row says), the query, and every
//! other parameter in canonical form (object keys sorted, numbers by value, `include_categories`
//! as a set, `null` ≡ absent). A text query is normalised; a v3 list of messages is kept whole, in
//! canonical JSON, since earlier turns change the answer. A GET's query string is keyed as its
//! sorted, percent-decoded parameters (absent is not equal to any value). Pure.

use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

use super::canonical::{canonical, canonical_fields};
use super::digest::hex;
use super::normalize::normalize_query;
use super::target::{request_tenant, take_scope, Scope, Tenant};
use crate::routes::{ReadRoute, ScopeSource};

/// Normalised queries longer than this are keyed by their SHA-256 digest.
pub const MAX_QUERY_TEXT_BYTES: usize = 1024;

/// The identity of one cacheable retrieval.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct CacheKey {
    pub route: ReadRoute,
    /// The path, with the query string exactly as sent for POST reads; a GET read's parameters are
    /// in `params`.
    pub path_and_query: Box<str>,
    pub scope: Scope,
    /// The normalised query text, for routes that have one (and not for a list of messages).
    pub query: Option<Box<str>>,
    /// Every other parameter, canonicalised.
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

/// Builds the key of a retrieval, or `None` when the request is not cacheable (a body that is
/// not a JSON object, scope fields missing or of the wrong type, the query field missing or of
/// the wrong type). Such requests are forwarded untouched.
pub fn read_key(
    route: ReadRoute,
    path_and_query: &str,
    tenant: Tenant,
    body: &[u8],
) -> Option<KeyedRead> {
    let (path, mut fields) = match route.scope {
        ScopeSource::QueryOrDefault => {
            let (path, query) = path_and_query
                .split_once('?')
                .unwrap_or((path_and_query, ""));
            (path, query_fields(query))
        }
        _ => (path_and_query, serde_json::from_slice(body).ok()?),
    };
    let scope = take_scope(route.scope, &mut fields, tenant)?;
    let (query, raw_query) = match route.query {
        None => (None, None),
        Some(field) => match fields.remove(field.name) {
            Some(Value::String(q)) => {
                let normalized = normalize_query(&q);
                if normalized.len() <= MAX_QUERY_TEXT_BYTES {
                    (Some(normalized.into()), Some(q))
                } else {
                    // Kept among the parameters as a digest: a long text is never worth its
                    // bytes in every key, nor matched as a near-duplicate.
                    let digest = hex(&Sha256::digest(normalized.as_bytes()));
                    let digest = format!("sha256:{digest}");
                    fields.insert(field.name.to_owned(), Value::String(digest));
                    (None, Some(q))
                }
            }
            // Kept among the parameters: keyed as the whole canonical list.
            Some(messages @ Value::Array(_)) if field.messages => {
                fields.insert(field.name.to_owned(), Value::String(canonical(&messages)));
                (None, None)
            }
            _ => return None,
        },
    };
    if let Some(Value::Array(categories)) = fields.get_mut("include_categories") {
        categories.sort_by_cached_key(canonical);
        categories.dedup_by(|a, b| canonical(a) == canonical(b));
    }
    Some(KeyedRead {
        key: CacheKey {
            route,
            path_and_query: path.into(),
            scope,
            query,
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

/// A query string's parameters, percent-decoded, as string fields; a repeated name keeps every
/// value in order (a list), so `a=1&a=2` differs from `a=2&a=1` and from `a=1`.
fn query_fields(query: &str) -> Map<String, Value> {
    let mut fields = Map::new();
    for (name, value) in form_urlencoded::parse(query.as_bytes()) {
        let value = Value::String(value.into_owned());
        match fields.get_mut(name.as_ref()) {
            None => {
                fields.insert(name.into_owned(), value);
            }
            Some(Value::Array(values)) => values.push(value),
            Some(first) => *first = Value::Array(vec![first.take(), value]),
        }
    }
    fields
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cache::target::tenant_of;
    use crate::routes::table::*;

    #[allow(non_upper_case_globals)]
    const RelatedMemoryItems: ReadRoute = ReadRoute(&V1_RELATED);
    #[allow(non_upper_case_globals)]
    const DefaultCategories: ReadRoute = ReadRoute(&V1_CATEGORIES);

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
        // Parsed exactly (serde_json's `float_roundtrip`): both spellings are one f64.
        assert_eq!(
            key(r#"{"user_id":"u","query":"q","min_similarity":8870323800283903.0}"#),
            key(r#"{"user_id":"u","query":"q","min_similarity":8.870323800283903e15}"#),
        );
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

    fn keyed(row: &'static crate::routes::ReadRow, path: &str, body: &str) -> Option<CacheKey> {
        read_key(ReadRoute(row), path, None, body.as_bytes()).map(|r| r.key)
    }

    #[test]
    fn long_queries_are_keyed_by_their_digest() {
        let long = |tail: &str| {
            format!(
                r#"{{"user_id":"u","query":"{}{tail}"}}"#,
                "Cats and dogs. ".repeat(100)
            )
        };
        let a = key(&long("end"));
        assert_eq!(a.query, None, "no text kept for a long query");
        assert!(a.heap_bytes() < 200, "{}", a.heap_bytes());
        assert_eq!(a, key(&long("END!")), "normalised before the digest");
        assert_ne!(a, key(&long("other end")));
        let read = read_key(RelatedMemoryItems, PATH, None, long("end").as_bytes()).unwrap();
        assert!(
            read.raw_query.unwrap().ends_with("end"),
            "the fallback still echoes it"
        );
        assert_ne!(a, key(r#"{"user_id":"u","query":"sha256:0"}"#));
    }

    #[test]
    fn v3_queries_are_text_normalised_or_whole_message_lists() {
        let p = "/api/v3/memory/retrieve";
        let k = |body| keyed(&V3_RETRIEVE, p, body).unwrap();
        assert_eq!(
            k(r#"{"user_id":"u","agent_id":"a","query":"Café ☕?"}"#),
            k(r#"{"query":"café ☕","agent_id":"a","user_id":"u"}"#)
        );
        let turns = r#"{"user_id":"u","agent_id":"a","query":[{"role":"user","content":"hi"},{"role":"user","content":"cats?"}]}"#;
        let last_only =
            r#"{"user_id":"u","agent_id":"a","query":[{"role":"user","content":"cats?"}]}"#;
        assert_ne!(k(turns), k(last_only), "earlier turns change the answer");
        assert_eq!(k(turns).query, None, "a list is never matched as text");
        assert_eq!(
            k(turns),
            k(
                r#"{"agent_id":"a","user_id":"u","query":[{"content":"hi","role":"user"},{"content":"cats?","role":"user"}]}"#
            )
        );
        assert_ne!(
            k(r#"{"user_id":"u","agent_id":"a","query":"[]"}"#),
            k(r#"{"user_id":"u","agent_id":"a","query":[]}"#)
        );
        // Third-party bodies without `query` are forwarded, not cached.
        assert!(keyed(
            &V3_RETRIEVE,
            p,
            r#"{"queries":[{"role":"user"}],"where":{"user_id":"u"}}"#
        )
        .is_none());
        // v3 categories: absent, null and "" agent are one value.
        let c = |body| keyed(&V3_CATEGORIES, "/api/v3/memory/categories", body).unwrap();
        assert_eq!(
            c(r#"{"user_id":"u"}"#),
            c(r#"{"user_id":"u","agent_id":""}"#)
        );
        assert_ne!(
            c(r#"{"user_id":"u"}"#),
            c(r#"{"user_id":"u","agent_id":"a"}"#)
        );
    }

    #[test]
    fn v4_list_keys_are_the_sorted_decoded_parameters() {
        let k = |pq: &str| keyed(&V4_LIST, pq, "").unwrap();
        let base = k("/api/v4/memory?user_id=default&agent_id=default");
        assert_eq!(base, k("/api/v4/memory?agent_id=default&user_id=default"));
        assert_eq!(base, k("/api/v4/memory"), "missing ids mean default");
        assert_eq!(
            base,
            k("/api/v4/memory?user_id=&agent_id=%20"),
            "blank ids mean default"
        );
        assert_eq!(base.path_and_query.as_ref(), "/api/v4/memory");
        let page = k("/api/v4/memory?user_id=u1&agent_id=default&cursor=abc%3D&limit=25");
        assert_eq!(
            page,
            k("/api/v4/memory?limit=25&cursor=abc=&agent_id=default&user_id=u1")
        );
        assert_eq!(page.scope.user.as_ref(), "u1");
        for other in [
            "/api/v4/memory?user_id=u1&agent_id=default&cursor=abc%3D",
            "/api/v4/memory?user_id=u1&agent_id=default&cursor=abc%3D&limit=50",
            "/api/v4/memory?user_id=u1&agent_id=default&cursor=&limit=25",
            "/api/v4/memory?user_id=u1&agent_id=default&cursor=abc%3D&limit=25&limit=26",
            "/api/v4/memory?user_id=u2&agent_id=default&cursor=abc%3D&limit=25",
        ] {
            assert_ne!(page, k(other), "{other}");
        }
        // v4 search: body ids default the same way.
        let s = |body| keyed(&V4_SEARCH, "/api/v4/memory/search", body).unwrap();
        assert_eq!(
            s(r#"{"query":"Tea?"}"#),
            s(r#"{"query":"tea","user_id":"default","agent_id":""}"#)
        );
    }

    #[test]
    fn memu_server_retrieve_is_global_and_categories_keep_a_blank_agent() {
        let r = |body| keyed(&SERVER_RETRIEVE, "/retrieve", body).unwrap();
        assert_eq!(r(r#"{"query":"tea"}"#).scope, Scope::global(None));
        assert!(keyed(&SERVER_RETRIEVE, "/retrieve", r#"{"query":["x"]}"#).is_none());
        let c = |body| keyed(&SERVER_CATEGORIES, "/categories", body).unwrap();
        assert_ne!(
            c(r#"{"user_id":"u"}"#),
            c(r#"{"user_id":"u","agent_id":""}"#)
        );
        assert_eq!(c(r#"{"user_id":" u"}"#), c(r#"{"user_id":"u"}"#));
    }
}
