//! Answering within the conversation's latency budget: the budget deadline with the fetch running
//! on to fill the cache, stale-while-revalidate, stale-if-error, the bound on background work,
//! the circuit breaker, and prewarm. Asserted on the stand-in's hit counters.

mod support;

use std::time::{Duration, Instant};

use serde_json::json;
use support::*;

/// Generous bound for "at the budget" on a loaded 2-core CI machine.
const MARGIN: Duration = Duration::from_millis(250);

async fn cache_entries(proxy: &Proxy) -> f64 {
    metric(&proxy.metrics().await, "memu_proxy_cache_entries")
}

#[tokio::test]
async fn a_read_is_answered_at_the_budget_and_the_next_turn_hits() {
    let memu = MemU::start().await;
    memu.seed("u", "a", "Mochi is a black cat");
    memu.set_latency(Duration::from_millis(800));
    let proxy = Proxy::start(&memu.url(), |s| s.latency.budget_ms = 200).await;
    let body = related_body("u", Some("a"), "What is my cat called?");

    let started = Instant::now();
    let first = post(&proxy.url(RELATED), &body).await;
    let took = started.elapsed();
    assert_eq!(first.status, 200);
    assert_eq!(first.cache_status(), "memu-proxy; fwd=miss; detail=budget");
    assert_eq!(first.json()["related_memories"], json!([]));
    assert!(
        took >= Duration::from_millis(200) && took < Duration::from_millis(200) + MARGIN,
        "{took:?}"
    );

    // The upstream call was not cancelled: it finishes and fills the cache.
    wait_until("the background fetch to fill the cache", 5, || async {
        cache_entries(&proxy).await == 1.0
    })
    .await;
    let next_turn = assert_next_read_hits(
        &proxy,
        &related_body("u", Some("a"), "what is my cat called"),
    )
    .await;
    assert!(next_turn.text().contains("Mochi"));
    assert_eq!(memu.hits(Route::Related), 1, "no new upstream request");
}

#[tokio::test]
async fn the_client_chooses_its_own_budget_per_request() {
    let memu = MemU::start().await;
    memu.set_latency(Duration::from_millis(400));
    let proxy = Proxy::start(&memu.url(), |s| s.latency.budget_ms = 1000).await;
    let url = proxy.url(RELATED);

    let started = Instant::now();
    let quick = post_with(
        &url,
        &related_body("u", Some("a"), "one"),
        &[("x-memu-budget-ms", "100")],
    )
    .await;
    assert!(started.elapsed() < Duration::from_millis(100) + MARGIN);
    assert_eq!(quick.cache_status(), "memu-proxy; fwd=miss; detail=budget");

    let patient = post_with(
        &url,
        &related_body("u", Some("a"), "two"),
        &[("x-memu-budget-ms", "0")],
    )
    .await;
    assert_eq!(
        patient.cache_status(),
        "memu-proxy; fwd=miss; stored",
        "0 turns the budget off"
    );

    let bad = post_with(
        &url,
        &related_body("u", Some("a"), "three"),
        &[("x-memu-budget-ms", "soon")],
    )
    .await;
    assert_eq!(bad.status, 400);
    assert!(bad.json()["detail"]
        .as_str()
        .unwrap()
        .contains("x-memu-budget-ms"));
    assert!(
        memu.seen()
            .iter()
            .all(|s| !s.headers.contains_key("x-memu-budget-ms")),
        "the budget header is the proxy's, not forwarded"
    );
}

#[tokio::test]
async fn a_client_that_disconnects_does_not_cancel_the_fetch() {
    let memu = MemU::start().await;
    memu.set_latency(Duration::from_millis(500));
    let proxy = Proxy::start(&memu.url(), |_| {}).await;
    let body = related_body("u", Some("a"), "cats");
    let gave_up =
        tokio::time::timeout(Duration::from_millis(100), post(&proxy.url(RELATED), &body)).await;
    assert!(gave_up.is_err(), "the client hung up before memU answered");
    wait_until("the abandoned fetch to fill the cache", 5, || async {
        cache_entries(&proxy).await == 1.0
    })
    .await;
    assert_next_read_hits(&proxy, &body).await;
    assert_eq!(memu.hits(Route::Related), 1);
}

#[tokio::test]
async fn the_budget_serves_a_stale_answer_when_there_is_one() {
    let memu = MemU::start().await;
    memu.seed("u", "a", "old memory");
    let proxy = Proxy::start(&memu.url(), |s| {
        s.latency.budget_ms = 200;
        s.cache.ttl_secs = 1;
        s.cache.stale_if_error_secs = 60;
    })
    .await;
    let body = related_body("u", Some("a"), "memories");
    post(&proxy.url(RELATED), &body).await;
    tokio::time::sleep(Duration::from_millis(1100)).await;
    memu.set_latency(Duration::from_millis(1000));
    let started = Instant::now();
    let stale = post(&proxy.url(RELATED), &body).await;
    assert!(started.elapsed() < Duration::from_millis(200) + MARGIN);
    assert_eq!(stale.cache_status(), "memu-proxy; hit; detail=stale-budget");
    let timing = stale.header("server-timing");
    assert_eq!(timing.matches("cache;dur=").count(), 1, "{timing}");
    assert!(stale.text().contains("old memory"));
    let metrics = proxy.metrics().await;
    assert_eq!(
        metric(
            &metrics,
            r#"memu_proxy_stale_served_total{reason="budget"}"#
        ),
        1.0
    );
}

#[tokio::test]
async fn stale_while_revalidate_serves_at_once_and_refreshes_once() {
    let memu = MemU::start().await;
    memu.seed("u", "a", "old memory");
    let proxy = Proxy::start(&memu.url(), |s| {
        s.cache.ttl_secs = 1;
        s.cache.stale_while_revalidate_secs = 30;
    })
    .await;
    let body = related_body("u", Some("a"), "memories");
    post(&proxy.url(RELATED), &body).await;
    memu.seed("u", "a", "new memory");
    memu.set_latency(Duration::from_millis(300));
    tokio::time::sleep(Duration::from_millis(1100)).await;

    let started = Instant::now();
    for _ in 0..5 {
        let stale = post(&proxy.url(RELATED), &body).await;
        assert_eq!(
            stale.cache_status(),
            "memu-proxy; hit; detail=stale-while-revalidate"
        );
        assert!(!stale.text().contains("new memory"));
    }
    assert!(
        started.elapsed() < Duration::from_millis(300),
        "stale answers do not wait for memU"
    );
    memu.wait_for_hits(Route::Related, 2).await;
    wait_until("the refreshed entry", 5, || async {
        post(&proxy.url(RELATED), &body).await.cache_status() == "memu-proxy; hit"
    })
    .await;
    assert!(post(&proxy.url(RELATED), &body)
        .await
        .text()
        .contains("new memory"));
    assert_eq!(
        memu.hits(Route::Related),
        2,
        "five stale reads, one coalesced refresh"
    );
}

#[tokio::test]
async fn stale_if_error_serves_expired_and_superseded_answers_when_memu_fails() {
    let memu = MemU::start().await;
    memu.seed("u", "a", "remembered");
    let proxy = Proxy::start(&memu.url(), |s| s.cache.stale_if_error_secs = 60).await;
    let body = related_body("u", Some("a"), "memories");
    post(&proxy.url(RELATED), &body).await;
    // A write supersedes the entry: no longer a hit...
    post(
        &proxy.url(MEMORIZE),
        &memorize_body("u", "a", "something new"),
    )
    .await;
    // ...but better than nothing when memU is down.
    memu.set_failure(Failure::Status(500));
    let stale = post(&proxy.url(RELATED), &body).await;
    assert_eq!(
        stale.cache_status(),
        "memu-proxy; hit; detail=stale-upstream-5xx"
    );
    assert!(stale.text().contains("remembered"));
    memu.set_failure(Failure::None);
    let fresh = post(&proxy.url(RELATED), &body).await;
    assert_eq!(
        fresh.cache_status(),
        "memu-proxy; fwd=miss; stored",
        "a superseded entry is never a normal hit"
    );
}

#[tokio::test]
async fn background_work_is_bounded_and_excess_is_shed() {
    let memu = MemU::start().await;
    memu.set_latency(Duration::from_millis(500));
    let proxy = Proxy::start(&memu.url(), |s| {
        s.latency.budget_ms = 100;
        s.latency.max_background_fetches = 2;
    })
    .await;
    let url = proxy.url(RELATED);
    let replies = futures_util::future::join_all((0..4).map(|i| {
        let url = url.clone();
        async move {
            post(
                &url,
                &related_body("u", Some("a"), &format!("question {i}")),
            )
            .await
        }
    }))
    .await;
    let shed = replies
        .iter()
        .filter(|r| r.cache_status().contains("detail=overload"))
        .count();
    assert_eq!(
        shed,
        2,
        "{:?}",
        replies.iter().map(Reply::cache_status).collect::<Vec<_>>()
    );
    wait_until("the two admitted fetches", 5, || async {
        cache_entries(&proxy).await == 2.0
    })
    .await;
    assert_eq!(memu.hits(Route::Related), 2);
    assert_eq!(
        metric(
            &proxy.metrics().await,
            r#"memu_proxy_fallbacks_total{reason="overload"}"#
        ),
        2.0
    );
}

#[tokio::test]
async fn the_circuit_opens_after_consecutive_failures_and_a_probe_closes_it() {
    let memu = MemU::start().await;
    let proxy = Proxy::start(&memu.url(), |s| {
        s.circuit.failure_threshold = 3;
        s.circuit.cool_down_ms = 400;
    })
    .await;
    memu.set_failure(Failure::Status(503));
    for i in 0..3 {
        let reply = post(
            &proxy.url(RELATED),
            &related_body("u", Some("a"), &format!("q{i}")),
        )
        .await;
        assert!(reply.cache_status().contains("detail=upstream-5xx"));
    }
    assert_eq!(get(&proxy.url("/healthz")).await.json()["circuit"], "open");

    let started = Instant::now();
    let read = post(&proxy.url(RELATED), &related_body("u", Some("a"), "q3")).await;
    assert_eq!(
        (read.status.as_u16(), read.cache_status().as_str()),
        (200, "memu-proxy; fwd=miss; detail=circuit-open")
    );
    let other = get(&proxy.url("/health")).await;
    assert_eq!(other.status, 503, "pass-through routes get an honest 503");
    assert!(!other.header("retry-after").is_empty());
    assert!(
        started.elapsed() < Duration::from_millis(100),
        "short-circuited at once"
    );
    assert_eq!(memu.total_hits(), 3, "memU was not touched while open");
    // Reads' failures never refuse a write: it has its own breaker, still closed.
    let write = post(&proxy.url(MEMORIZE), &memorize_body("u", "a", "hi")).await;
    assert_eq!(write.status, 503, "memU's own answer");
    assert!(
        write.header("retry-after").is_empty(),
        "not the proxy's 503"
    );
    assert_eq!(memu.hits(Route::Memorize), 1, "forwarded");
    let health = get(&proxy.url("/healthz")).await.json();
    assert_eq!(health["write_circuit"], "closed");
    let metrics = proxy.metrics().await;
    assert_eq!(metric(&metrics, "memu_proxy_circuit_state"), 1.0);
    assert_eq!(
        metric(
            &metrics,
            r#"memu_proxy_circuit_transitions_total{to="open"}"#
        ),
        1.0
    );
    assert_eq!(
        metric(&metrics, "memu_proxy_circuit_short_circuited_total"),
        2.0,
        "the read and the pass-through request"
    );

    memu.set_failure(Failure::None);
    wait_until("the cool-down to pass", 5, || async {
        get(&proxy.url("/healthz")).await.json()["circuit"] == "half_open"
    })
    .await;
    assert_next_read_misses(&proxy, &related_body("u", Some("a"), "q4")).await;
    assert_eq!(
        get(&proxy.url("/healthz")).await.json()["circuit"],
        "closed"
    );
    assert_eq!(memu.total_hits(), 5);
    let metrics = proxy.metrics().await;
    assert_eq!(
        metric(
            &metrics,
            r#"memu_proxy_circuit_transitions_total{to="closed"}"#
        ),
        1.0
    );
}

#[tokio::test]
async fn prewarm_fills_the_cache_before_the_app_asks() {
    let memu = MemU::start().await;
    memu.seed("u1", "a1", "Alice loves her black cat named Mochi.");
    memu.set_latency(Duration::from_millis(300));
    let proxy = Proxy::start(&memu.url(), |_| {}).await;
    let started = Instant::now();
    let accepted = post(
        &proxy.url("/prewarm"),
        &json!({"user_id": "u1", "agent_id": "a1", "queries": ["What pets do I like?"], "top_k": 3, "min_similarity": 0.3}),
    )
    .await;
    assert_eq!(accepted.status, 202);
    assert_eq!(accepted.json()["fetches"], 2);
    assert!(
        started.elapsed() < Duration::from_millis(200),
        "202 at once"
    );
    wait_until("the prewarm fetches", 5, || async {
        cache_entries(&proxy).await == 2.0
    })
    .await;

    // The SDK's own bodies (memu-py 0.1.8) now hit.
    let related = assert_next_read_hits(
        &proxy,
        &related_body("u1", Some("a1"), "What pets do I like?"),
    )
    .await;
    assert!(related.text().contains("Mochi"));
    let categories = post(
        &proxy.url(DEFAULT_CATEGORIES),
        &json!({"user_id": "u1", "agent_id": "a1", "include_inactive": false, "want_summary": true}),
    )
    .await;
    assert_eq!(categories.cache_status(), "memu-proxy; hit");
    assert_eq!(memu.total_hits(), 2);
    assert_eq!(
        memu.seen()[0].headers["authorization"],
        "Bearer key-1",
        "the client's key is used"
    );

    // Prewarming what is already fresh fetches nothing.
    let again = post(
        &proxy.url("/prewarm"),
        &json!({"user_id": "u1", "agent_id": "a1", "queries": ["What pets do I like?"], "top_k": 3, "min_similarity": 0.3}),
    )
    .await;
    assert_eq!(again.status, 202);
    let metrics = proxy.metrics().await;
    assert_eq!(
        metric(
            &metrics,
            r#"memu_proxy_background_fetches_total{event="started"}"#
        ),
        2.0
    );
    assert_eq!(memu.total_hits(), 2);

    let bad = post(&proxy.url("/prewarm"), &json!({"user": "u1"})).await;
    assert_eq!(bad.status, 422);
    assert!(bad.json()["detail"].as_str().unwrap().contains("prewarm"));
}
