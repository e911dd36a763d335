//! The retrieval cache end to end: hits, keys, normalisation, tenants, admission, client
//! directives, coalescing and expiry, asserted on the stand-in's hit counters.

mod support;

use std::time::Duration;

use serde_json::json;
use support::*;

#[tokio::test]
async fn repeated_retrieval_is_answered_from_the_cache() {
    let memu = MemU::start().await;
    memu.seed("u1", "a1", "Alice loves her black cat named Mochi.");
    let proxy = Proxy::start(&memu.url(), |_| {}).await;
    let body = related_body("u1", Some("a1"), "Does Alice have a pet?");

    let first = assert_next_read_misses(&proxy, &body).await;
    assert_eq!(first.status, 200);
    let second = assert_next_read_hits(&proxy, &body).await;
    assert_eq!(
        second.body, first.body,
        "a hit returns memU's answer byte for byte"
    );
    assert_eq!(second.header("content-type"), "application/json");
    assert_eq!(
        second.header("x-process-time"),
        "0.001",
        "upstream headers are replayed"
    );
    assert_eq!(second.header("age"), "0");
    assert!(second.header("server-timing").contains("cache;dur="));
    assert!(second.header("server-timing").contains("proxy;dur="));
    assert_eq!(memu.hits(Route::Related), 1);
}

#[tokio::test]
async fn all_three_retrieval_routes_are_cached() {
    let memu = MemU::start().await;
    let proxy = Proxy::start(&memu.url(), |_| {}).await;
    let cases = [
        (
            DEFAULT_CATEGORIES,
            Route::DefaultCategories,
            json!({"user_id": "u1", "agent_id": "a1", "include_inactive": false, "want_summary": true}),
        ),
        (
            CLUSTERED,
            Route::Clustered,
            json!({"user_id": "u1", "agent_id": "a1", "category_query": "pets", "top_k": 5, "min_similarity": 0.3, "want_summary": true}),
        ),
        (
            RELATED,
            Route::Related,
            related_body("u1", Some("a1"), "cats"),
        ),
    ];
    for (path, route, body) in cases {
        post(&proxy.url(path), &body).await;
        let again = post(&proxy.url(path), &body).await;
        assert_eq!(again.cache_status(), "memu-proxy; hit", "{path}");
        assert_eq!(memu.hits(route), 1, "{path}");
    }
}

#[tokio::test]
async fn reworded_equivalents_hit_and_different_questions_miss() {
    let memu = MemU::start().await;
    let proxy = Proxy::start(&memu.url(), |_| {}).await;
    post(
        &proxy.url(RELATED),
        &related_body("u1", Some("a1"), "Hello,  World!"),
    )
    .await;
    // Key order, spacing, \u escapes and 0.3 vs 0.30 do not matter; the query is normalised.
    let raw = r#"{"min_similarity":0.30,"top_k":3,"query":"  hello world","agent_id":"\u0061\u0031","user_id":"u1"}"#;
    let same = send(
        http::Method::POST,
        &proxy.url(RELATED),
        &[
            ("authorization", "Bearer key-1"),
            ("content-type", "application/json"),
        ],
        raw,
    )
    .await;
    assert_eq!(same.cache_status(), "memu-proxy; hit");
    post(
        &proxy.url(RELATED),
        &related_body("u1", Some("a1"), "你好！"),
    )
    .await;
    assert_next_read_hits(&proxy, &related_body("u1", Some("a1"), "你好")).await;
    post(&proxy.url(RELATED), &related_body("u1", Some("a1"), "3点")).await;
    assert_next_read_misses(&proxy, &related_body("u1", Some("a1"), "4点")).await;
    assert_eq!(memu.hits(Route::Related), 4);
}

#[tokio::test]
async fn users_agents_tenants_and_parameters_never_share_answers() {
    let memu = MemU::start().await;
    memu.seed("alice", "a1", "Alice's secret");
    memu.seed("bob", "a1", "Bob's secret");
    let proxy = Proxy::start(&memu.url(), |_| {}).await;
    let alice = post(
        &proxy.url(RELATED),
        &related_body("alice", Some("a1"), "secret"),
    )
    .await;
    let bob = post(
        &proxy.url(RELATED),
        &related_body("bob", Some("a1"), "secret"),
    )
    .await;
    assert!(alice.text().contains("Alice's secret"));
    assert!(bob.text().contains("Bob's secret") && !bob.text().contains("Alice"));
    let variants = [
        (related_body("alice", Some("a2"), "secret"), "Bearer key-1"),
        (related_body("alice", None, "secret"), "Bearer key-1"),
        (related_body("alice", Some("a1"), "secret"), "Bearer key-2"),
        (
            json!({"user_id": "alice", "agent_id": "a1", "query": "secret", "top_k": 4, "min_similarity": 0.3}),
            "Bearer key-1",
        ),
        (
            json!({"user_id": "alice", "agent_id": "a1", "query": "secret", "top_k": 3, "min_similarity": 0.5}),
            "Bearer key-1",
        ),
    ];
    for (body, key) in &variants {
        let reply = post_with(&proxy.url(RELATED), body, &[("authorization", key)]).await;
        assert_eq!(
            reply.cache_status(),
            "memu-proxy; fwd=miss; stored",
            "{body} {key}"
        );
    }
    let no_auth = post_with(
        &proxy.url(RELATED),
        &related_body("alice", Some("a1"), "secret"),
        &[],
    )
    .await;
    assert_eq!(
        no_auth.cache_status(),
        "memu-proxy; fwd=miss; stored",
        "no Authorization is its own tenant"
    );
    assert_eq!(memu.hits(Route::Related), 2 + variants.len() + 1);
}

#[tokio::test]
async fn only_real_200_json_answers_are_stored() {
    let memu = MemU::start().await;
    let proxy = Proxy::start(&memu.url(), |_| {}).await;
    // 422 from memU (missing query) passes through and is not stored.
    let invalid = json!({"user_id": "u1", "agent_id": "a1", "query": "q", "top_k": "many"});
    memu.set_failure(Failure::Status(422));
    for _ in 0..2 {
        let reply = post(&proxy.url(RELATED), &invalid).await;
        assert_eq!(reply.status, 422);
        assert_eq!(reply.cache_status(), "memu-proxy; fwd=miss");
    }
    // A fallback is never stored: once memU recovers the next read goes upstream.
    memu.set_failure(Failure::Status(500));
    let body = related_body("u1", Some("a1"), "cats");
    assert!(post(&proxy.url(RELATED), &body)
        .await
        .cache_status()
        .contains("detail=upstream-5xx"));
    memu.set_failure(Failure::None);
    assert_next_read_misses(&proxy, &body).await;
    assert_eq!(memu.hits(Route::Related), 4);
}

#[tokio::test]
async fn unkeyable_bodies_are_forwarded_untouched_and_not_cached() {
    let memu = MemU::start().await;
    let proxy = Proxy::start(&memu.url(), |_| {}).await;
    let malformed = r#"{"user_id": "u1", "query": "#;
    for _ in 0..2 {
        let reply = send(
            http::Method::POST,
            &proxy.url(RELATED),
            &[("content-type", "application/json")],
            malformed,
        )
        .await;
        assert_eq!(reply.status, 422);
        assert!(reply.text().contains("json_invalid"));
        assert_eq!(reply.cache_status(), "memu-proxy; fwd=bypass");
    }
    let no_user = json!({"query": "q"});
    for _ in 0..2 {
        assert_eq!(post(&proxy.url(RELATED), &no_user).await.status, 422);
    }
    assert_eq!(memu.hits(Route::Related), 4);
    assert_eq!(
        memu.seen()[0].body,
        malformed.as_bytes(),
        "forwarded byte for byte"
    );
}

#[tokio::test]
async fn no_cache_refreshes_and_no_store_bypasses() {
    let memu = MemU::start().await;
    let proxy = Proxy::start(&memu.url(), |_| {}).await;
    let body = related_body("u1", Some("a1"), "cats");
    post(&proxy.url(RELATED), &body).await;
    memu.seed("u1", "a1", "new memory");

    let store_skipped = post_with(
        &proxy.url(RELATED),
        &body,
        &[
            ("cache-control", "no-store"),
            ("authorization", "Bearer key-1"),
        ],
    )
    .await;
    assert_eq!(store_skipped.cache_status(), "memu-proxy; fwd=bypass");
    assert!(store_skipped.text().contains("new memory"));
    let still_old = assert_next_read_hits(&proxy, &body).await;
    assert!(
        !still_old.text().contains("new memory"),
        "no-store did not replace the entry"
    );

    let refreshed = post_with(
        &proxy.url(RELATED),
        &body,
        &[
            ("cache-control", "no-cache"),
            ("authorization", "Bearer key-1"),
        ],
    )
    .await;
    assert!(
        refreshed.text().contains("new memory"),
        "{}",
        refreshed.text()
    );
    assert_eq!(refreshed.cache_status(), "memu-proxy; fwd=request; stored");
    let now_new = assert_next_read_hits(&proxy, &body).await;
    assert!(
        now_new.text().contains("new memory"),
        "no-cache stored the fresh answer: {}",
        now_new.text()
    );
    assert_eq!(memu.hits(Route::Related), 3);
}

#[tokio::test]
async fn concurrent_identical_misses_make_one_upstream_request() {
    let memu = MemU::start().await;
    memu.seed("u1", "a1", "Mochi");
    memu.set_latency(Duration::from_millis(300));
    let proxy = Proxy::start(&memu.url(), |_| {}).await;
    let url = proxy.url(RELATED);
    let requests = (0..16).map(|i| {
        let url = url.clone();
        // Re-worded variants normalise to the same key and join the same fetch.
        let query = if i % 2 == 0 {
            "Who is Mochi?"
        } else {
            "who is mochi"
        };
        tokio::spawn(async move { post(&url, &related_body("u1", Some("a1"), query)).await })
    });
    let replies = futures_util::future::join_all(requests).await;
    let mut collapsed = 0;
    for reply in replies {
        let reply = reply.unwrap();
        assert_eq!(reply.status, 200);
        assert!(reply.text().contains("Mochi"));
        collapsed += usize::from(reply.cache_status().contains("collapsed"));
    }
    assert_eq!(memu.hits(Route::Related), 1);
    assert_eq!(collapsed, 15);
    assert_eq!(
        metric(&proxy.metrics().await, "memu_proxy_coalesced_waits_total"),
        15.0
    );
}

#[tokio::test]
async fn entries_expire_after_the_ttl() {
    let memu = MemU::start().await;
    let proxy = Proxy::start(&memu.url(), |s| s.cache.ttl_secs = 1).await;
    let body = related_body("u1", Some("a1"), "cats");
    post(&proxy.url(RELATED), &body).await;
    assert_next_read_hits(&proxy, &body).await;
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert_next_read_misses(&proxy, &body).await;
    assert_eq!(memu.hits(Route::Related), 2);
}

#[tokio::test]
async fn the_cache_stays_within_its_byte_bound() {
    let memu = MemU::start().await;
    memu.seed("u1", "a1", &"x".repeat(2000));
    let proxy = Proxy::start(&memu.url(), |s| s.cache.max_bytes = 32 * 1024).await;
    for i in 0..100 {
        post(
            &proxy.url(RELATED),
            &related_body("u1", Some("a1"), &format!("query {i}")),
        )
        .await;
    }
    let metrics = proxy.metrics().await;
    assert!(
        metric(&metrics, "memu_proxy_cache_bytes") <= 32.0 * 1024.0,
        "{metrics}"
    );
    assert!(
        metric(&metrics, "memu_proxy_cache_evictions_total") > 0.0,
        "{metrics}"
    );
    assert!(metric(&metrics, "memu_proxy_cache_entries") < 100.0);
}

#[tokio::test]
async fn caching_can_be_disabled() {
    let memu = MemU::start().await;
    let proxy = Proxy::start(&memu.url(), |s| s.cache.enabled = false).await;
    let body = related_body("u1", Some("a1"), "cats");
    for _ in 0..2 {
        assert_eq!(
            post(&proxy.url(RELATED), &body).await.cache_status(),
            "memu-proxy; fwd=bypass"
        );
    }
    assert_eq!(memu.hits(Route::Related), 2);
}

#[tokio::test]
async fn hits_carry_their_own_request_id() {
    // The stand-in echoes the request id it was sent, as correlation middleware does; the stored
    // answer must not replay the first request's id to later ones.
    let memu = MemU::start().await;
    let proxy = Proxy::start(&memu.url(), |_| {}).await;
    let body = related_body("u1", Some("a1"), "cats");
    let with_id = |id: &'static str| [("authorization", "Bearer key-1"), ("x-request-id", id)];
    let first = post_with(&proxy.url(RELATED), &body, &with_id("first")).await;
    assert_eq!(first.header("x-request-id"), "first");
    let hit = post_with(&proxy.url(RELATED), &body, &with_id("second")).await;
    assert_eq!(hit.cache_status(), "memu-proxy; hit");
    assert_eq!(hit.header("x-request-id"), "second");
    let generated = post(&proxy.url(RELATED), &body).await;
    assert_eq!(generated.cache_status(), "memu-proxy; hit");
    let id = generated.header("x-request-id");
    assert!(!id.is_empty() && id != "first" && id != "second", "{id}");
}
