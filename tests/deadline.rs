//! The hard upstream deadlines and the fallback: reads always get a parseable answer fast; writes
//! and pass-through routes get honest 504/502 errors, never a faked success. Writes have their own,
//! longer deadline (`upstream.write_timeout_ms`), so a slow memorize is not cut at the read one.

mod support;

use std::time::{Duration, Instant};

use serde_json::json;
use support::*;

const TIMEOUT_MS: u64 = 300;
/// Generous bound for "within the deadline plus a few ms" on a loaded 2-core CI machine.
const MARGIN: Duration = Duration::from_millis(250);

fn deadline() -> Duration {
    Duration::from_millis(TIMEOUT_MS)
}

async fn slow_proxy(memu: &MemU) -> Proxy {
    Proxy::start(&memu.url(), |s| s.upstream.timeout_ms = TIMEOUT_MS).await
}

/// A loopback address with nothing listening.
async fn dead_upstream() -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    format!("http://{addr}")
}

#[tokio::test]
async fn slow_retrievals_get_the_empty_answer_at_the_deadline() {
    let memu = MemU::start().await;
    memu.set_latency(Duration::from_secs(3));
    let proxy = slow_proxy(&memu).await;
    let cases = [
        (
            RELATED,
            related_body("u", Some("a"), "Wie geht's? \"quoted\" 你好"),
            json!({"related_memories": [], "query": "Wie geht's? \"quoted\" 你好", "total_found": 0, "search_params": {}}),
        ),
        (
            DEFAULT_CATEGORIES,
            json!({"user_id": "u", "agent_id": "a", "include_inactive": false, "want_summary": true}),
            json!({"categories": [], "total_categories": 0}),
        ),
        (
            CLUSTERED,
            json!({"user_id": "u", "agent_id": "a", "category_query": "Pets!", "top_k": 5, "min_similarity": 0.3}),
            json!({"clustered_categories": [], "category_query": "Pets!", "total_categories_found": 0, "search_params": {}}),
        ),
    ];
    for (path, body, want) in cases {
        let started = Instant::now();
        let reply = post(&proxy.url(path), &body).await;
        let took = started.elapsed();
        assert_eq!(reply.status, 200, "{path}");
        assert_eq!(reply.header("content-type"), "application/json");
        assert_eq!(reply.json(), want, "{path}");
        assert_eq!(reply.cache_status(), "memu-proxy; fwd=miss; detail=timeout");
        assert!(
            took >= deadline() && took < deadline() + MARGIN,
            "{path} took {took:?}"
        );
    }
    let metrics = proxy.metrics().await;
    assert_eq!(
        metric(&metrics, r#"memu_proxy_fallbacks_total{reason="timeout"}"#),
        3.0
    );
}

#[tokio::test]
async fn a_down_upstream_gets_the_empty_answer_at_once() {
    let proxy = Proxy::start(&dead_upstream().await, |s| s.upstream.timeout_ms = 2000).await;
    let started = Instant::now();
    let reply = post(&proxy.url(RELATED), &related_body("u", Some("a"), "hi")).await;
    assert!(
        started.elapsed() < Duration::from_millis(500),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(reply.status, 200);
    assert_eq!(reply.json()["related_memories"], json!([]));
    assert_eq!(reply.json()["query"], "hi");
    assert_eq!(reply.cache_status(), "memu-proxy; fwd=miss; detail=connect");
}

#[tokio::test]
async fn server_errors_and_non_json_answers_fall_back_but_4xx_pass_through() {
    let memu = MemU::start().await;
    let proxy = Proxy::start(&memu.url(), |_| {}).await;
    let body = related_body("u", Some("a"), "hi");
    memu.set_failure(Failure::Status(503));
    let reply = post(&proxy.url(RELATED), &body).await;
    assert_eq!(
        (reply.status.as_u16(), reply.cache_status().as_str()),
        (200, "memu-proxy; fwd=miss; detail=upstream-5xx")
    );
    memu.set_failure(Failure::NotJson);
    let reply = post(&proxy.url(RELATED), &body).await;
    assert_eq!(
        (reply.status.as_u16(), reply.cache_status().as_str()),
        (200, "memu-proxy; fwd=miss; detail=invalid-json")
    );
    assert_eq!(reply.json()["total_found"], 0);
    memu.set_failure(Failure::Status(401));
    let reply = post(&proxy.url(RELATED), &body).await;
    assert_eq!(reply.status, 401, "4xx answers are memU's to give");
    assert_eq!(reply.json(), json!({"detail": "Internal server error"}));
}

#[tokio::test]
async fn waiters_on_a_slow_fetch_each_get_the_fallback_at_their_deadline() {
    let memu = MemU::start().await;
    memu.set_latency(Duration::from_secs(2));
    let proxy = slow_proxy(&memu).await;
    let url = proxy.url(RELATED);
    let started = Instant::now();
    let replies = futures_util::future::join_all((0..4).map(|_| {
        let url = url.clone();
        async move { post(&url, &related_body("u", Some("a"), "slow")).await }
    }))
    .await;
    assert!(
        started.elapsed() < deadline() + MARGIN,
        "{:?}",
        started.elapsed()
    );
    for reply in replies {
        assert!(
            reply.cache_status().contains("detail=timeout"),
            "{}",
            reply.cache_status()
        );
    }
    assert_eq!(memu.hits(Route::Related), 1);
}

#[tokio::test]
async fn writes_past_their_own_deadline_get_504_and_are_not_faked() {
    let memu = MemU::start().await;
    memu.set_latency(Duration::from_secs(3));
    let proxy = Proxy::start(&memu.url(), |s| {
        s.upstream.timeout_ms = 2_000;
        s.upstream.write_timeout_ms = TIMEOUT_MS;
    })
    .await;
    let started = Instant::now();
    let reply = post(&proxy.url(MEMORIZE), &memorize_body("u", "a", "hello")).await;
    let took = started.elapsed();
    assert!(took >= deadline() && took < deadline() + MARGIN, "{took:?}");
    assert_eq!(reply.status, 504);
    assert_eq!(
        reply.json()["detail"],
        format!("memU did not answer within {TIMEOUT_MS} ms"),
        "the write's own deadline, not the read one"
    );
    assert!(reply.json().get("task_id").is_none());
    assert_eq!(
        memu.hits(Route::Memorize),
        1,
        "forwarded exactly once, never retried"
    );
}

#[tokio::test]
async fn a_write_is_not_cut_at_the_read_deadline_but_a_read_is() {
    let slow = |_: &Seen| Duration::from_millis(1_500);
    let memu = MemU::builder()
        .route_latency("memorize", slow)
        .route_latency("related-memory-items", slow)
        .start()
        .await;
    let proxy = Proxy::start(&memu.url(), |s| {
        s.upstream.timeout_ms = 500;
        s.upstream.write_timeout_ms = 5_000;
    })
    .await;

    let started = Instant::now();
    let write = post(&proxy.url(MEMORIZE), &memorize_body("u", "a", "hello")).await;
    let took = started.elapsed();
    assert_eq!(write.status, 200, "{}", write.text());
    assert!(write.json()["task_id"].is_string(), "{}", write.text());
    assert!(took >= Duration::from_millis(1_500), "{took:?}");
    assert_eq!(
        memu.hits(Route::Memorize),
        1,
        "forwarded once, never retried"
    );

    let started = Instant::now();
    let read = post(&proxy.url(RELATED), &related_body("u", Some("a"), "hi")).await;
    let took = started.elapsed();
    assert_eq!(read.status, 200);
    assert_eq!(read.cache_status(), "memu-proxy; fwd=miss; detail=timeout");
    let read_deadline = Duration::from_millis(500);
    assert!(
        took >= read_deadline && took < read_deadline + MARGIN,
        "{took:?}"
    );
}

#[tokio::test]
async fn writes_to_a_down_upstream_get_502() {
    let proxy = Proxy::start(&dead_upstream().await, |_| {}).await;
    for (path, body) in [
        (MEMORIZE, memorize_body("u", "a", "x")),
        (DELETE, json!({"user_id": "u", "agent_id": null})),
    ] {
        let reply = post(&proxy.url(path), &body).await;
        assert_eq!(reply.status, 502, "{path}");
        assert!(reply.json()["detail"]
            .as_str()
            .unwrap()
            .contains("unreachable"));
        assert_eq!(reply.cache_status(), "memu-proxy; fwd=bypass");
    }
}

#[tokio::test]
async fn pass_through_routes_get_honest_errors() {
    let proxy = Proxy::start(&dead_upstream().await, |_| {}).await;
    let reply = get(&proxy.url("/api/v1/memory/memorize/status/t1")).await;
    assert_eq!(reply.status, 502);
    let memu = MemU::start().await;
    memu.set_latency(Duration::from_secs(3));
    let proxy = slow_proxy(&memu).await;
    let reply = get(&proxy.url("/health")).await;
    assert_eq!(reply.status, 504);
}

#[tokio::test]
async fn with_the_cache_off_reads_still_fall_back() {
    let proxy = Proxy::start(&dead_upstream().await, |s| s.cache.enabled = false).await;
    let reply = post(
        &proxy.url(RELATED),
        &related_body("u", Some("a"), "still there?"),
    )
    .await;
    assert_eq!(reply.status, 200);
    assert_eq!(reply.json()["query"], "still there?");
    assert_eq!(reply.cache_status(), "memu-proxy; fwd=miss; detail=connect");
}
