//! `POST /prewarm`: load a user's memories into the cache before the app asks for them.
//!
//! An app calls it when voice activity detection hears the user start speaking, so the lookup at
//! the end of the utterance is a hit. Body: `{"user_id", "agent_id"?, "queries"?, "top_k"?,
//! "min_similarity"?}` with the client's usual `Authorization`. The proxy answers 202 at once and,
//! in the background, fetches that scope's categories (or, for v4, its first list page) and the
//! retrieval of each query, with the requests the generation's own client sends (`"api"`:
//! `"v1"`, the default, as memu-py 0.1.8; `"v3"` as memu-sdk 1.0; `"v4"` as memu-cli;
//! `"server"` for memU-server 1.x), so they land under the keys the app's own later requests use.
//! The fetches are ordinary coalesced, bounded background fetches.

use std::sync::Arc;

use bytes::Bytes;
use http::header;
use http::{request, Method, Request, StatusCode};
use serde::Deserialize;
use serde_json::{json, Value};
use tokio::time::Instant;

use crate::body::ProxyBody;
use crate::cache::{request_key, Lookup};
use crate::error::{PrewarmError, ProxyError};
use crate::exchange::{deadline, read_body};
use crate::fetch::start_background;
use crate::outcome::Handled;
use crate::respond::json;
use crate::routes::{table, ReadRoute, ReadRow};
use crate::state::State;

pub const PREWARM_PATH: &str = "/prewarm";

/// Most queries one prewarm may ask for.
pub const MAX_QUERIES: usize = 16;

/// Which memU generation to prewarm, as its client calls it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Api {
    #[default]
    V1,
    V3,
    V4,
    Server,
}

/// One retrieval to prewarm: its route and the request its client would send.
#[derive(Debug)]
pub struct Retrieval {
    pub route: ReadRoute,
    pub method: Method,
    pub path_and_query: String,
    /// `None` for a GET.
    pub body: Option<Value>,
}

pub fn is_prewarm(method: &Method, path: &str) -> bool {
    method == Method::POST && path == PREWARM_PATH
}

/// The request body, checked strictly: a typo must not silently prewarm the wrong keys.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Prewarm {
    #[serde(default)]
    pub api: Api,
    pub user_id: String,
    #[serde(default)]
    pub agent_id: Option<String>,
    #[serde(default)]
    pub queries: Vec<String>,
    /// v1 only. memu-py's defaults: 10 and 0.3. Send the values the app itself uses, or the keys
    /// differ.
    #[serde(default = "default_top_k")]
    pub top_k: u64,
    #[serde(default = "default_min_similarity")]
    pub min_similarity: f64,
}

fn default_top_k() -> u64 {
    10
}

fn default_min_similarity() -> f64 {
    0.3
}

impl Prewarm {
    /// The retrievals to fetch, with the client's exact fields: the scope's categories (v4: its
    /// first list page), then one retrieval per query.
    pub fn retrievals(&self) -> Vec<Retrieval> {
        let mut out = vec![self.scope_read()];
        out.extend(self.queries.iter().map(|query| self.query_read(query)));
        out
    }

    fn scope_read(&self) -> Retrieval {
        let (user, agent) = (&self.user_id, &self.agent_id);
        match self.api {
            Api::V1 => post(
                &table::V1_CATEGORIES,
                "/api/v1/memory/retrieve/default-categories",
                json!({"user_id": user, "agent_id": agent, "include_inactive": false, "want_summary": true}),
            ),
            Api::V3 => post(
                &table::V3_CATEGORIES,
                "/api/v3/memory/categories",
                self.ids(),
            ),
            Api::V4 => {
                let list = form_urlencoded::Serializer::new(String::new())
                    .append_pair("user_id", user)
                    .append_pair("agent_id", self.v4_agent())
                    .finish();
                Retrieval {
                    route: ReadRoute(&table::V4_LIST),
                    method: Method::GET,
                    path_and_query: format!("/api/v4/memory?{list}"),
                    body: None,
                }
            }
            Api::Server => post(&table::SERVER_CATEGORIES, "/categories", self.ids()),
        }
    }

    fn query_read(&self, query: &str) -> Retrieval {
        let (user, agent) = (&self.user_id, &self.agent_id);
        match self.api {
            Api::V1 => post(
                &table::V1_RELATED,
                "/api/v1/memory/retrieve/related-memory-items",
                json!({"user_id": user, "agent_id": agent, "query": query,
                       "top_k": self.top_k, "min_similarity": self.min_similarity, "include_categories": null}),
            ),
            Api::V3 => {
                let mut body = self.ids();
                body["query"] = json!(query);
                post(&table::V3_RETRIEVE, "/api/v3/memory/retrieve", body)
            }
            Api::V4 => post(
                &table::V4_SEARCH,
                "/api/v4/memory/search",
                json!({"query": query, "user_id": user, "agent_id": self.v4_agent()}),
            ),
            Api::Server => post(
                &table::SERVER_RETRIEVE,
                "/retrieve",
                json!({ "query": query }),
            ),
        }
    }

    /// `{"user_id", "agent_id"?}`: memu-sdk and memU-server clients omit a missing agent rather
    /// than send null.
    fn ids(&self) -> Value {
        let mut ids = json!({ "user_id": self.user_id });
        if let Some(agent) = self.agent_id.as_deref().filter(|a| !a.is_empty()) {
            ids["agent_id"] = json!(agent);
        }
        ids
    }

    /// memu-cli sends `default` for a missing agent.
    fn v4_agent(&self) -> &str {
        self.agent_id.as_deref().unwrap_or("default")
    }
}

/// A POST retrieval with a JSON body.
fn post(row: &'static ReadRow, path: &str, body: Value) -> Retrieval {
    Retrieval {
        route: ReadRoute(row),
        method: Method::POST,
        path_and_query: path.to_owned(),
        body: Some(body),
    }
}

/// Validates a prewarm request, answers 202 and starts its fetches.
pub async fn handle(
    state: &Arc<State>,
    request: Request<ProxyBody>,
) -> Result<Handled, ProxyError> {
    let (parts, body) = request.into_parts();
    let body = read_body(body, state.max_body_bytes, deadline(state)).await?;
    let retrievals = parse(&body)?.retrievals();
    let fetches = retrievals.len();
    if state.cache_enabled {
        for retrieval in retrievals {
            let head = retrieval_parts(&parts, &retrieval)?;
            let body = retrieval
                .body
                .map_or_else(Bytes::new, |b| Bytes::from(b.to_string()));
            warm(state, retrieval.route, &head, body);
        }
    }
    state.metrics.prewarm();
    let body = json!({"status": "accepted", "fetches": fetches});
    Ok(Handled::local(json(
        StatusCode::ACCEPTED,
        body.to_string().into(),
    )))
}

/// The head of one prewarmed retrieval, as the client sends it, with the caller's credentials.
fn retrieval_parts(
    prewarm: &request::Parts,
    retrieval: &Retrieval,
) -> Result<request::Parts, ProxyError> {
    let mut request = Request::builder()
        .method(retrieval.method.clone())
        .uri(retrieval.path_and_query.as_str());
    if let Some(auth) = prewarm.headers.get(header::AUTHORIZATION) {
        request = request.header(header::AUTHORIZATION, auth);
    }
    if retrieval.body.is_some() {
        request = request.header(header::CONTENT_TYPE, "application/json");
    }
    let request = request
        .header(header::ACCEPT, "application/json")
        .body(())
        .map_err(ProxyError::BadRequest)?;
    Ok(request.into_parts().0)
}

/// Starts the background fetch of one retrieval unless the cache already holds it fresh.
fn warm(state: &Arc<State>, route: ReadRoute, parts: &request::Parts, body: Bytes) {
    let Some(read) = request_key(route, parts, &body) else {
        return;
    };
    let generations = state.scopes.current(&read.key.scope);
    if let Lookup::Fresh(_) = state.store.lookup(&read.key, generations, Instant::now()) {
        return;
    }
    start_background(state, &read, generations, parts, body);
}

fn parse(body: &[u8]) -> Result<Prewarm, PrewarmError> {
    let prewarm: Prewarm = serde_json::from_slice(body).map_err(PrewarmError::Body)?;
    if prewarm.queries.len() > MAX_QUERIES {
        return Err(PrewarmError::TooManyQueries { max: MAX_QUERIES });
    }
    if !prewarm.min_similarity.is_finite() {
        return Err(PrewarmError::MinSimilarity);
    }
    Ok(prewarm)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cache::{read_key, CacheKey};

    #[test]
    fn prewarmed_keys_equal_the_sdks_own() {
        let prewarm = parse(br#"{"user_id":"u1","agent_id":"a1","queries":["What pets do I like?"],"top_k":3,"min_similarity":0.7}"#).unwrap();
        let retrievals = prewarm.retrievals();
        // Bodies captured from memu-py 0.1.8 (memu-api.md §3.1, §3.2).
        let sdk = [
            br#"{"user_id": "u1", "agent_id": "a1", "include_inactive": false, "want_summary": true}"#.as_slice(),
            br#"{"user_id": "u1", "agent_id": "a1", "query": "What pets do I like?", "top_k": 3, "min_similarity": 0.7, "include_categories": null}"#.as_slice(),
        ];
        assert_eq!(retrievals.len(), 2);
        for (retrieval, sdk_body) in retrievals.iter().zip(sdk) {
            assert_eq!(ours(retrieval), theirs(retrieval, sdk_body));
        }
    }

    fn ours(r: &Retrieval) -> CacheKey {
        let body = r.body.as_ref().map(Value::to_string).unwrap_or_default();
        read_key(r.route, &r.path_and_query, None, body.as_bytes())
            .unwrap()
            .key
    }

    fn theirs(r: &Retrieval, body: &[u8]) -> CacheKey {
        read_key(r.route, &r.path_and_query, None, body)
            .unwrap()
            .key
    }

    #[test]
    fn each_generation_is_prewarmed_with_its_clients_requests() {
        let prewarm = |api: &str| {
            parse(
                format!(r#"{{"api":"{api}","user_id":"u1","agent_id":"a1","queries":["Café?"]}}"#)
                    .as_bytes(),
            )
            .unwrap()
            .retrievals()
        };
        // Requests as memu-sdk 1.0, memu-cli 0.10.0 and memU-server clients send them
        // (memu-api-next.md §3.1, §3.2, §4.1, §4.2, §5.1, §5.2).
        /// (row name, path and query, the client's body)
        type Sent = (&'static str, &'static str, &'static str);
        let cases: [(&str, [Sent; 2]); 3] = [
            (
                "v3",
                [
                    (
                        "v3 categories",
                        "/api/v3/memory/categories",
                        r#"{"user_id":"u1","agent_id":"a1"}"#,
                    ),
                    (
                        "v3 retrieve",
                        "/api/v3/memory/retrieve",
                        r#"{"user_id":"u1","agent_id":"a1","query":"Café?"}"#,
                    ),
                ],
            ),
            (
                "v4",
                [
                    ("v4 list", "/api/v4/memory?user_id=u1&agent_id=a1", ""),
                    (
                        "v4 search",
                        "/api/v4/memory/search",
                        r#"{"query":"Café?","user_id":"u1","agent_id":"a1"}"#,
                    ),
                ],
            ),
            (
                "server",
                [
                    (
                        "server categories",
                        "/categories",
                        r#"{"user_id":"u1","agent_id":"a1"}"#,
                    ),
                    ("server retrieve", "/retrieve", r#"{"query":"Café?"}"#),
                ],
            ),
        ];
        for (api, want) in cases {
            let got = prewarm(api);
            assert_eq!(got.len(), 2, "{api}");
            for (r, (name, path, body)) in got.iter().zip(want) {
                assert_eq!(
                    (r.route.name, r.path_and_query.as_str()),
                    (name, path),
                    "{api}"
                );
                assert_eq!(ours(r), theirs(r, body.as_bytes()), "{api} {name}");
            }
        }
        assert_eq!(prewarm("v4")[0].method, Method::GET);
        assert!(parse(br#"{"api":"v2","user_id":"u"}"#).is_err());
    }

    #[test]
    fn bad_prewarm_bodies_are_rejected() {
        for body in [
            &b"{}"[..],
            br#"{"user_id": 5}"#,
            br#"{"user_id": "u", "querys": ["typo"]}"#,
            br#"{"user_id": "u", "queries": "not a list"}"#,
            b"not json",
        ] {
            assert!(parse(body).is_err(), "{}", String::from_utf8_lossy(body));
        }
        let many = format!(
            r#"{{"user_id":"u","queries":{:?}}}"#,
            vec!["q"; MAX_QUERIES + 1]
        );
        assert!(parse(many.as_bytes()).is_err());
    }
}
