//! `POST /prewarm`: load a user's memories into the cache before the app asks for them.
//!
//! An app calls it when voice activity detection hears the user start speaking, so the lookup at
//! the end of the utterance is a hit. Body: `{"user_id", "agent_id"?, "queries"?, "top_k"?,
//! "min_similarity"?}` with the client's usual `Authorization`. The proxy answers 202 at once and,
//! in the background, fetches that scope's default categories and the related memory items of
//! each query, with the bodies the memu-py 0.1.8 SDK sends, so they land under the keys the app's
//! own later requests use. The fetches are ordinary coalesced, bounded background fetches.

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
use crate::exchange::read_body;
use crate::fetch::start_background;
use crate::outcome::Handled;
use crate::respond::json;
use crate::routes::ReadRoute;
use crate::state::State;

pub const PREWARM_PATH: &str = "/prewarm";

/// Most queries one prewarm may ask for.
pub const MAX_QUERIES: usize = 16;

/// Where the prewarmed requests are addressed: the memU v1 API, as memu-py 0.1.8 calls it.
const API_PREFIX: &str = "/api/v1/memory/";

pub fn is_prewarm(method: &Method, path: &str) -> bool {
    method == Method::POST && path == PREWARM_PATH
}

/// The request body, checked strictly: a typo must not silently prewarm the wrong keys.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Prewarm {
    pub user_id: String,
    #[serde(default)]
    pub agent_id: Option<String>,
    #[serde(default)]
    pub queries: Vec<String>,
    /// memu-py's defaults: 10 and 0.3. Send the values the app itself uses, or the keys differ.
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
    /// The retrievals to fetch: (route, path, body), with the SDK's exact fields.
    pub fn retrievals(&self) -> Vec<(ReadRoute, String, Value)> {
        let categories = json!({
            "user_id": self.user_id, "agent_id": self.agent_id,
            "include_inactive": false, "want_summary": true,
        });
        let mut out = vec![(
            ReadRoute::DefaultCategories,
            format!("{API_PREFIX}retrieve/default-categories"),
            categories,
        )];
        out.extend(self.queries.iter().map(|query| {
            let body = json!({
                "user_id": self.user_id, "agent_id": self.agent_id, "query": query,
                "top_k": self.top_k, "min_similarity": self.min_similarity, "include_categories": null,
            });
            (
                ReadRoute::RelatedMemoryItems,
                format!("{API_PREFIX}retrieve/related-memory-items"),
                body,
            )
        }));
        out
    }
}

/// Validates a prewarm request, answers 202 and starts its fetches.
pub async fn handle(
    state: &Arc<State>,
    request: Request<ProxyBody>,
) -> Result<Handled, ProxyError> {
    let (parts, body) = request.into_parts();
    let body = read_body(body, state.max_body_bytes).await?;
    let retrievals = parse(&body)?.retrievals();
    let fetches = retrievals.len();
    if state.cache_enabled {
        for (route, path, body) in retrievals {
            let parts = retrieval_parts(&parts, &path)?;
            warm(state, route, &parts, Bytes::from(body.to_string()));
        }
    }
    state.metrics.prewarm();
    let body = json!({"status": "accepted", "fetches": fetches});
    Ok(Handled::local(json(
        StatusCode::ACCEPTED,
        body.to_string().into(),
    )))
}

/// The head of one prewarmed retrieval, as the SDK sends it, with the caller's credentials.
fn retrieval_parts(prewarm: &request::Parts, path: &str) -> Result<request::Parts, ProxyError> {
    let mut request = Request::builder().method(Method::POST).uri(path);
    if let Some(auth) = prewarm.headers.get(header::AUTHORIZATION) {
        request = request.header(header::AUTHORIZATION, auth);
    }
    let request = request
        .header(header::CONTENT_TYPE, "application/json")
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
    use crate::cache::read_key;

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
        for ((route, path, body), sdk_body) in retrievals.iter().zip(sdk) {
            let ours = read_key(*route, path, None, body.to_string().as_bytes())
                .unwrap()
                .key;
            let theirs = read_key(*route, path, None, sdk_body).unwrap().key;
            assert_eq!(ours, theirs, "{path}");
        }
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
