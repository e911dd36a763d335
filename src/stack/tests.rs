//! The whole stack without sockets: requests with in-memory bodies through `oneshot`. memU is
//! never contacted: every case here is answered by the proxy itself.
use super::*;
use crate::config::Settings;
use crate::respond::HEADER_SERVER_TIMING;
use http::{Method, StatusCode};
use http_body_util::{Full, StreamBody};
use hyper::body::Frame;
use serde_json::Value;
use tower::ServiceExt;

const RELATED: &str = "/api/v1/memory/retrieve/related-memory-items";

fn state(tweak: impl FnOnce(&mut Settings)) -> Arc<State> {
    let mut settings = Settings::default();
    settings.server.max_body_bytes = 64;
    tweak(&mut settings);
    Arc::new(State::new(&settings.validate().unwrap()))
}

fn request<B>(method: Method, path: &str, body: B) -> Request<B> {
    Request::builder()
        .method(method)
        .uri(path)
        .header("authorization", "Bearer k")
        .body(body)
        .unwrap()
}

fn json(text: &'static str) -> Full<Bytes> {
    Full::new(Bytes::from_static(text.as_bytes()))
}

/// Status, headers and JSON body of one request through `stack`.
async fn call<B>(stack: Stack<B>, request: Request<B>) -> (StatusCode, http::HeaderMap, Value) {
    let response = stack.oneshot(request).await.unwrap();
    assert!(
        response.extensions().get::<RequestInfo>().is_none(),
        "the outer layer takes the request info off"
    );
    let (parts, body) = response.into_parts();
    let body = body.collect().await.unwrap().to_bytes();
    let value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    (parts.status, parts.headers, value)
}

fn counted(state: &State, route_class: &str, outcome: &str) -> bool {
    counted_times(state, route_class, outcome, 1)
}

/// Whether `/metrics` counts exactly `times` requests of this route class and outcome (also
/// used by the lane's tests).
pub(super) fn counted_times(state: &State, route_class: &str, outcome: &str, times: u32) -> bool {
    let series = format!(
        r#"memu_proxy_requests_total{{route_class="{route_class}",outcome="{outcome}"}} {times}"#
    );
    state.render_metrics().contains(&series)
}

#[tokio::test]
async fn a_bad_prewarm_body_is_a_422_saying_what_is_wrong() {
    let state = state(|_| {});
    let body = json(r#"{"user_id": "u", "querys": ["typo"]}"#);
    let (status, headers, body) = call(
        service(Arc::clone(&state)),
        request(Method::POST, "/prewarm", body),
    )
    .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(headers[header::CONTENT_TYPE], "application/json");
    assert_eq!(headers.get_all(header::CONTENT_TYPE).iter().count(), 1);
    assert_eq!(headers[HEADER_CACHE_STATUS], "memu-proxy; fwd=bypass");
    let detail = body["detail"].as_str().unwrap();
    assert!(
        detail.starts_with("invalid prewarm body: unknown field `querys`"),
        "{detail}"
    );
    assert!(counted(&state, "admin", "error"));
}

#[tokio::test]
async fn an_accepted_prewarm_is_a_202_counting_its_fetches() {
    // The cache is off, so no fetch is started and memU is not contacted.
    let state = state(|s| s.cache.enabled = false);
    let body = json(r#"{"user_id": "u", "queries": ["a", "b"]}"#);
    let (status, _, body) = call(
        service(Arc::clone(&state)),
        request(Method::POST, "/prewarm", body),
    )
    .await;
    assert_eq!(status, StatusCode::ACCEPTED);
    assert_eq!(
        body,
        serde_json::json!({"status": "accepted", "fetches": 3})
    );
    assert!(state
        .render_metrics()
        .contains("memu_proxy_prewarm_requests_total 1"));
    assert!(counted(&state, "admin", "local"));
}

#[tokio::test]
async fn the_admin_listener_serves_health_and_metrics_and_404s_the_rest() {
    let state = state(|_| {});
    let admin = || admin_service::<Full<Bytes>>(Arc::clone(&state));
    let (status, headers, body) = call(admin(), request(Method::GET, "/healthz", json(""))).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        body,
        serde_json::json!({"status": "ok", "circuit": "closed", "write_circuit": "closed"})
    );
    assert!(headers[HEADER_SERVER_TIMING]
        .to_str()
        .unwrap()
        .starts_with("proxy;dur="));
    let (status, headers, body) = call(admin(), request(Method::POST, RELATED, json("{}"))).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(body, serde_json::json!({"detail": "Not Found"}));
    assert_eq!(headers[HEADER_CACHE_STATUS], "memu-proxy; fwd=bypass");
    assert!(counted(&state, "admin", "error"));

    let response = admin()
        .oneshot(request(Method::GET, "/metrics", json("")))
        .await
        .unwrap();
    assert_eq!(
        response.headers()[header::CONTENT_TYPE],
        "application/openmetrics-text; version=1.0.0; charset=utf-8"
    );
    let text = response.into_body().collect().await.unwrap().to_bytes();
    let text = String::from_utf8_lossy(&text);
    // Scrape-time values from every component's collector.
    for line in [
        "memu_proxy_cache_entries 0",
        "memu_proxy_cache_bytes 0",
        "memu_proxy_cache_evictions_total 0",
        "memu_proxy_invalidation_scopes 0",
        "memu_proxy_inflight_fetches 0",
        "memu_proxy_circuit_state 0",
        r#"memu_proxy_circuit_transitions_total{to="open"} 0"#,
        "memu_proxy_circuit_short_circuited_total 0",
        "# EOF",
    ] {
        assert!(text.contains(line), "missing {line:?} in\n{text}");
    }
}

#[tokio::test]
async fn a_request_without_an_id_gets_a_new_v4_uuid() {
    let state = state(|_| {});
    let mut ids = Vec::new();
    for _ in 0..2 {
        let health = request(Method::GET, "/healthz", json(""));
        let (_, headers, _) = call(service(Arc::clone(&state)), health).await;
        let id = headers[REQUEST_ID].to_str().unwrap().to_owned();
        let uuid = uuid::Uuid::parse_str(&id).unwrap();
        assert_eq!(uuid.get_version_num(), 4, "{id}");
        assert_eq!(id, uuid.hyphenated().to_string(), "lower-case, hyphenated");
        ids.push(id);
    }
    assert_ne!(ids[0], ids[1]);
}

#[tokio::test]
async fn a_bad_budget_header_is_a_400_before_memu_is_asked() {
    let state = state(|_| {});
    let mut bad = request(
        Method::POST,
        RELATED,
        json(r#"{"user_id":"u","query":"q"}"#),
    );
    bad.headers_mut()
        .insert("x-memu-budget-ms", HeaderValue::from_static("soon"));
    let (status, _, body) = call(service(Arc::clone(&state)), bad).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(
        body["detail"],
        "x-memu-budget-ms must be a whole number of milliseconds"
    );
    assert!(counted(&state, "read", "error"));
}

#[tokio::test]
async fn bodies_over_the_limit_are_413_whether_announced_or_not() {
    let state = state(|_| {});
    let big = || Full::new(Bytes::from(vec![b' '; 65]));
    // Announced by Content-Length: the limit layer answers at once, in the proxy's JSON.
    let mut announced = request(Method::POST, "/api/v1/memory/memorize", big());
    announced
        .headers_mut()
        .insert(header::CONTENT_LENGTH, HeaderValue::from(65));
    let (status, headers, body) = call(service(Arc::clone(&state)), announced).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(headers[header::CONTENT_TYPE], "application/json");
    assert_eq!(
        body,
        serde_json::json!({"detail": "request body exceeds the 64-byte limit"})
    );
    // Not announced: crossing the limit while the handler reads the body.
    for path in ["/api/v1/memory/memorize", RELATED, "/prewarm"] {
        let (status, _, body) = call(
            service(Arc::clone(&state)),
            request(Method::POST, path, big()),
        )
        .await;
        assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE, "{path}");
        assert_eq!(
            body["detail"], "request body exceeds the 64-byte limit",
            "{path}"
        );
    }
}

#[tokio::test]
async fn a_body_that_breaks_mid_way_is_a_400() {
    let state = state(|_| {});
    let frames: Vec<Result<Frame<Bytes>, BoxError>> = vec![
        Ok(Frame::data(Bytes::from_static(b"{\"user_id\""))),
        Err("connection reset".into()),
    ];
    let body = StreamBody::new(futures_util::stream::iter(frames));
    let (status, _, body) = call(
        service(Arc::clone(&state)),
        request(Method::POST, "/api/v1/memory/memorize", body),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(body["detail"], "could not read the request body");
    assert!(counted(&state, "write", "error"));
}
