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

use http::{Request, StatusCode};
use serde::Deserialize;
use serde_json::json;

use crate::body::ProxyBody;
use crate::error::{PrewarmError, ProxyError};
use crate::exchange::{deadline, read_body};
use crate::listing::{self, OwnRead};
use crate::outcome::Handled;
use crate::respond::json;
use crate::routes::{table, Generation, ReadRoute};
use crate::state::State;

/// Most queries one prewarm may ask for.
pub const MAX_QUERIES: usize = 16;

/// The request body, checked strictly: a typo must not silently prewarm the wrong keys.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Prewarm {
    /// `"v1"` (the default), `"v3"`, `"v4"` or `"server"`.
    #[serde(default = "default_api")]
    pub api: Generation,
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

fn default_api() -> Generation {
    Generation::V1
}

fn default_top_k() -> u64 {
    10
}

fn default_min_similarity() -> f64 {
    0.3
}

impl Prewarm {
    /// The retrievals to fetch, with the client's exact fields: the scope's listing (v4: its
    /// first list page, `listing.rs`), then one retrieval per query.
    pub fn retrievals(&self) -> Vec<OwnRead> {
        let base = self.base();
        let listing = OwnRead::listing(self.api, base, &self.user_id, self.agent_id.as_deref());
        let mut out = vec![listing];
        out.extend(self.queries.iter().map(|query| self.query_read(query)));
        out
    }

    fn query_read(&self, query: &str) -> OwnRead {
        let (user, agent) = (&self.user_id, &self.agent_id);
        let (row, body) = match self.api {
            Generation::V1 => (
                &table::V1_RELATED,
                json!({"user_id": user, "agent_id": agent, "query": query,
                       "top_k": self.top_k, "min_similarity": self.min_similarity, "include_categories": null}),
            ),
            Generation::V3 => {
                let mut body = listing::ids(&self.user_id, self.agent_id.as_deref());
                body["query"] = json!(query);
                (&table::V3_RETRIEVE, body)
            }
            Generation::V4 => (
                &table::V4_SEARCH,
                json!({"query": query, "user_id": user, "agent_id": agent.as_deref().unwrap_or("default")}),
            ),
            Generation::Server => (&table::SERVER_RETRIEVE, json!({ "query": query })),
        };
        OwnRead::post(ReadRoute(row), self.base(), &body)
    }

    /// The base path the generation's rows' paths follow: memu-py 0.1.8's `/api/v1` (the rows
    /// match `/api/v2` too); the others' rows hold their whole path.
    fn base(&self) -> &'static str {
        match self.api {
            Generation::V1 => "/api/v1",
            Generation::V3 | Generation::V4 | Generation::Server => "",
        }
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
            retrieval.start(state, &parts, None);
        }
    }
    state.metrics.prewarm();
    let body = json!({"status": "accepted", "fetches": fetches});
    Ok(Handled::local(json(
        StatusCode::ACCEPTED,
        body.to_string().into(),
    )))
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
        let paths: Vec<&str> = retrievals
            .iter()
            .map(|r| r.path_and_query.as_str())
            .collect();
        assert_eq!(
            paths,
            [
                "/api/v1/memory/retrieve/default-categories",
                "/api/v1/memory/retrieve/related-memory-items"
            ]
        );
        for (retrieval, sdk_body) in retrievals.iter().zip(sdk) {
            assert_eq!(ours(retrieval), theirs(retrieval, sdk_body));
        }
    }

    fn ours(r: &OwnRead) -> CacheKey {
        read_key(r.route, &r.path_and_query, None, &r.body)
            .unwrap()
            .key
    }

    fn theirs(r: &OwnRead, body: &[u8]) -> CacheKey {
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
        assert_eq!(prewarm("v4")[0].method, http::Method::GET);
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
