//! The lane against the layers. Under the lane here is either a stand-in for the layers, which
//! answers `418` with the body it was given (so a test knows who answered), or the real layers,
//! to compare a hit served in the lane with the same hit served by them. memU is never asked.

use std::convert::Infallible;

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{HeaderMap, Method, StatusCode};
use http_body::Frame;
use http_body_util::{BodyExt, StreamBody};
use tower::util::BoxCloneSyncService;
use tower::ServiceExt;

use super::super::layers;
use super::super::tests::counted_times as counted;
use super::*;
use crate::body::full;
use crate::cache::memo::MAX_MEMO_BODY_BYTES;
use crate::config::Settings;
use crate::outcome::{Arrived, RequestInfo};
use crate::respond::{HEADER_CACHE_STATUS, HEADER_SERVER_TIMING};
use bodies::{Aborted, Slow};

mod bodies;

const RELATED: &str = "/api/v1/memory/retrieve/related-memory-items";
const QUERY: &str = r#"{"user_id":"u1","agent_id":"a1","query":"What pets do I like?"}"#;
const ANSWER: &str = r#"{"related_memories":[],"query":"What pets do I like?","total_found":0}"#;

fn state(tweak: impl FnOnce(&mut Settings)) -> Arc<State> {
    let mut settings = Settings::default();
    tweak(&mut settings);
    Arc::new(State::new(&settings.validate().unwrap()))
}

fn request<B>(path: &str, body: B) -> Request<B> {
    Request::builder()
        .method(Method::POST)
        .uri(path)
        .header("authorization", "Bearer k")
        .header("content-type", "application/json")
        .body(body)
        .unwrap()
}

fn body(text: &str) -> Full<Bytes> {
    Full::new(Bytes::copy_from_slice(text.as_bytes()))
}

/// Stores `ANSWER` as the fresh answer to `request`, as a miss would have.
fn cache<B>(state: &State, request: &Request<B>, body: &str) {
    let RouteClass::Read(route) =
        classify(request.method(), &RequestPath::new(request.uri().path()))
    else {
        panic!("not a retrieval: {}", request.uri());
    };
    let (parts, ()) = Request::builder()
        .method(request.method())
        .uri(request.uri())
        .body(())
        .unwrap()
        .into_parts();
    let mut parts = parts;
    parts.headers = request.headers().clone();
    let keyed = state.keys.keyed(route, &parts, body.as_bytes()).unwrap();
    let generations = state.scopes.current_of(&keyed.slots);
    let mut headers = HeaderMap::new();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    state.store.admit(
        keyed.read.key.clone(),
        &Bytes::from_static(ANSWER.as_bytes()),
        &headers,
        generations,
        Instant::now(),
    );
}

/// The stand-in for the layers: `418`, echoing the body it got.
fn stand_in<B>() -> Arc<Layered<B>>
where
    B: Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    Arc::new(BoxCloneSyncService::new(tower::service_fn(
        |request: Request<LaneBody<B>>| async move {
            let arrived = request.extensions().get::<Arrived>().map(|a| a.0);
            let body = match request.into_body().collect().await {
                Ok(collected) => collected.to_bytes(),
                Err(_) => Bytes::from_static(b"(the body failed)"),
            };
            let mut response = Response::new(full(body));
            *response.status_mut() = StatusCode::IM_A_TEAPOT;
            if let Some(arrived) = arrived {
                let waited = arrived.elapsed().as_millis().to_string();
                let waited = HeaderValue::from_str(&waited).unwrap();
                response.headers_mut().insert("x-arrived-ms-ago", waited);
            }
            Ok::<_, Infallible>(response)
        },
    )))
}

/// `asked` through the lane, with the stand-in under it: the answer's head and body.
async fn through_lane<B>(state: &Arc<State>, asked: Request<B>) -> Answer
where
    B: Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError> + Send,
{
    text(serve(Arc::clone(state), stand_in(), asked).await).await
}

/// The same request through the lane (the stand-in under it) and through the real layers
/// alone, each answer's head and body.
async fn lane_and_layers<B>(state: &Arc<State>, asked: impl Fn() -> Request<B>) -> (Answer, Answer)
where
    B: Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError> + Send,
{
    let from_lane = through_lane(state, asked()).await;
    let from_layers = layers::<B>(Arc::clone(state))
        .oneshot(asked().map(Either::Left))
        .await
        .unwrap();
    (from_lane, text(from_layers).await)
}

/// An answer's head and its body as text.
type Answer = (http::response::Parts, String);

async fn text(response: Response<ProxyBody>) -> Answer {
    let (parts, body) = response.into_parts();
    let body = body.collect().await.unwrap().to_bytes();
    (parts, String::from_utf8_lossy(&body).into_owned())
}

#[tokio::test]
async fn an_exact_repeat_of_a_cached_retrieval_is_answered_in_the_lane() {
    let state = state(|_| {});
    let mut asked = request(RELATED, body(QUERY));
    asked
        .headers_mut()
        .insert(REQUEST_ID, HeaderValue::from_static("turn-7"));
    cache(&state, &asked, QUERY);
    let (parts, answer) = through_lane(&state, asked).await;
    assert_eq!(parts.status, StatusCode::OK, "{answer}");
    assert_eq!(answer, ANSWER);
    assert_eq!(parts.headers[HEADER_CACHE_STATUS], "memu-proxy; hit");
    assert_eq!(parts.headers[header::AGE], "0");
    assert_eq!(parts.headers[REQUEST_ID], "turn-7", "the client's id");
    let timings: Vec<_> = parts.headers.get_all(HEADER_SERVER_TIMING).iter().collect();
    assert_eq!(timings.len(), 2, "{timings:?}");
    assert!(timings[0].to_str().unwrap().starts_with("cache;dur="));
    assert!(timings[1].to_str().unwrap().starts_with("proxy;dur="));
    assert!(counted(&state, "read", "hit", 1));
}

#[tokio::test]
async fn a_hit_in_the_lane_is_the_hit_the_layers_serve() {
    let state = state(|_| {});
    let asked = || request(RELATED, body(QUERY));
    cache(&state, &asked(), QUERY);
    let ((lane, lane_body), (layered, layered_body)) = lane_and_layers(&state, asked).await;
    assert_eq!(lane.status, layered.status);
    assert_eq!(lane_body, layered_body);
    let shape = |headers: &HeaderMap| -> Vec<(String, String)> {
        headers
            .iter()
            .map(|(name, value)| {
                let value = value.to_str().unwrap();
                // Durations and new ids differ from one request to the next; the rest may not.
                let value = match name.as_str() {
                    "server-timing" => value.split('=').next().unwrap().to_owned(),
                    "x-request-id" => format!("{} chars", value.len()),
                    _ => value.to_owned(),
                };
                (name.to_string(), value)
            })
            .collect()
    };
    assert_eq!(shape(&lane.headers), shape(&layered.headers));
    assert!(lane.extensions.get::<RequestInfo>().is_none());
    assert!(counted(&state, "read", "hit", 2));
}

#[tokio::test]
async fn everything_but_a_fresh_hit_goes_to_the_layers_with_its_body() {
    let long = format!(
        r#"{{"user_id":"u1","query":"{}"}}"#,
        "x".repeat(MAX_MEMO_BODY_BYTES)
    );
    let with = |name: &'static str, value: &'static str| {
        let mut asked = request(RELATED, body(QUERY));
        asked
            .headers_mut()
            .insert(name, HeaderValue::from_static(value));
        asked
    };
    let cases: Vec<(&str, Request<Full<Bytes>>, &str)> = vec![
        (
            "the client's no-cache",
            with("cache-control", "no-cache"),
            QUERY,
        ),
        (
            "the client's no-store",
            with("cache-control", "no-store"),
            QUERY,
        ),
        ("a bad budget", with("x-memu-budget-ms", "soon"), QUERY),
        ("an Expect", with("expect", "100-continue"), QUERY),
        (
            "a body too long to memoise",
            request(RELATED, body(&long)),
            &long,
        ),
        (
            "another tenant",
            with("authorization", "Bearer someone-else"),
            QUERY,
        ),
        (
            "a write",
            request("/api/v1/memory/memorize", body(QUERY)),
            QUERY,
        ),
        ("the prewarm", request("/prewarm", body(QUERY)), QUERY),
    ];
    for (case, asked, sent) in cases {
        let state = state(|_| {});
        // The cached answer is the one to `QUERY` as `request` sends it (or to `long`).
        cache(&state, &request(RELATED, body(sent)), sent);
        let (parts, echoed) = through_lane(&state, asked).await;
        assert_eq!(parts.status, StatusCode::IM_A_TEAPOT, "{case}");
        assert_eq!(echoed, sent, "{case}: the layers get the whole body");
        assert!(!counted(&state, "read", "hit", 1), "{case}");
    }
}

#[tokio::test]
async fn a_miss_a_stale_answer_or_an_invalidated_one_goes_to_the_layers() {
    // Nothing cached.
    let state = state(|_| {});
    let (parts, echoed) = through_lane(&state, request(RELATED, body(QUERY))).await;
    assert_eq!(parts.status, StatusCode::IM_A_TEAPOT);
    assert_eq!(echoed, QUERY);

    // Cached, then the user's memories changed.
    let asked = || request(RELATED, body(QUERY));
    cache(&state, &asked(), QUERY);
    let scope = crate::cache::Scope {
        tenant: crate::cache::request_tenant(asked().headers()),
        user: "u1".into(),
        agent: None,
    };
    state.invalidate(
        &scope,
        crate::cache::Invalidate::AllAgents,
        crate::routes::WriteKind::Supersede,
        crate::metrics::InvalidationCause::Write,
    );
    let (parts, _) = through_lane(&state, asked()).await;
    assert_eq!(parts.status, StatusCode::IM_A_TEAPOT, "invalidated");

    // Cached, but past its freshness: without stale-while-revalidate a miss, with it a stale
    // answer the read handler serves while it revalidates.
    tokio::time::pause();
    for revalidate in [0, 60] {
        let state = self::state(|s| {
            s.cache.ttl_secs = 1;
            s.cache.stale_while_revalidate_secs = revalidate;
        });
        cache(&state, &asked(), QUERY);
        tokio::time::advance(std::time::Duration::from_secs(2)).await;
        let (parts, _) = through_lane(&state, asked()).await;
        assert_eq!(parts.status, StatusCode::IM_A_TEAPOT, "swr {revalidate} s");
    }
}

#[tokio::test]
async fn with_the_cache_off_or_a_body_over_the_limit_the_layers_answer() {
    let state = state(|s| s.cache.enabled = false);
    cache(&state, &request(RELATED, body(QUERY)), QUERY);
    let (parts, _) = through_lane(&state, request(RELATED, body(QUERY))).await;
    assert_eq!(parts.status, StatusCode::IM_A_TEAPOT, "cache off");
    assert!(
        !parts.headers.contains_key("x-arrived-ms-ago"),
        "with the cache off the lane does not read the body"
    );

    // Within what the memo holds, but over the body limit: the layers' 413, never a hit.
    let state = self::state(|s| s.server.max_body_bytes = QUERY.len() as u64 - 1);
    cache(&state, &request(RELATED, body(QUERY)), QUERY);
    let (parts, _) = through_lane(&state, request(RELATED, body(QUERY))).await;
    assert_eq!(parts.status, StatusCode::IM_A_TEAPOT, "over the limit");
}

#[tokio::test(start_paused = true)]
async fn a_request_passed_on_after_its_body_carries_its_arrival() {
    let state = state(|_| {});
    let asked = request(RELATED, Slow::new(std::time::Duration::from_millis(150)));
    let (parts, echoed) = through_lane(&state, asked).await;
    assert_eq!(parts.status, StatusCode::IM_A_TEAPOT);
    assert_eq!(echoed, QUERY);
    let waited: u64 = parts.headers["x-arrived-ms-ago"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(waited >= 150, "the body's 150 ms count: {waited} ms");
}

#[tokio::test]
async fn a_body_of_unknown_length_is_not_read_by_the_lane() {
    let state = state(|_| {});
    cache(&state, &request(RELATED, body(QUERY)), QUERY);
    let chunks = futures_util::stream::iter([Ok::<_, Infallible>(Frame::data(
        Bytes::from_static(QUERY.as_bytes()),
    ))]);
    let asked = request(RELATED, StreamBody::new(chunks));
    let (parts, echoed) = through_lane(&state, asked).await;
    assert_eq!(parts.status, StatusCode::IM_A_TEAPOT);
    assert_eq!(echoed, QUERY);
}

#[tokio::test]
async fn a_body_that_fails_in_the_lane_is_answered_as_the_read_handler_answers_it() {
    let state = state(|_| {});
    let asked = || request(RELATED, Aborted);
    let ((lane, lane_body), (layered, layered_body)) = lane_and_layers(&state, asked).await;
    assert_eq!(lane.status, StatusCode::BAD_REQUEST, "{lane_body}");
    assert_eq!(lane.status, layered.status);
    assert_eq!(lane_body, layered_body);
    assert_eq!(
        lane.headers[HEADER_CACHE_STATUS],
        layered.headers[HEADER_CACHE_STATUS]
    );
    assert!(lane.headers.contains_key(REQUEST_ID));
    assert!(counted(&state, "read", "error", 2));
}

#[tokio::test(start_paused = true)]
async fn the_layers_time_a_request_from_its_arrival() {
    let state = state(|_| {});
    let arrived = Instant::now();
    tokio::time::advance(std::time::Duration::from_millis(150)).await;
    let mut health = request("/healthz", body(""));
    *health.method_mut() = Method::GET;
    health.extensions_mut().insert(Arrived(arrived));
    let response = layers::<Full<Bytes>>(Arc::clone(&state))
        .oneshot(health.map(Either::Left))
        .await
        .unwrap();
    let timing = response.headers()[HEADER_SERVER_TIMING].to_str().unwrap();
    assert!(timing.starts_with("proxy;dur=150."), "{timing}");
}
