//! The shared cache tier against a real `redis-server` started by each test: two tiers, isolation,
//! invalidation across replicas, cross-replica coalescing, warm restarts, and Redis stopped, slow
//! or partitioned (a relay that goes silent). Replicas are proxies started through the real `run`,
//! each with its own state, on one Redis.

mod support;

use std::time::Duration;

use serde_json::{json, Value};
use support::redis::{replica, wait_for_redis, RedisServer, Relay};
use support::*;
use tokio::time::Instant;

const SHARED_HIT: &str = "memu-proxy; hit; detail=shared";

fn pets(user: &str, agent: Option<&str>) -> Value {
    related_body(user, agent, "What pets do I have?")
}

/// Waits until Redis holds `n` answers (they are written after the client is answered).
async fn wait_for_entries(redis: &RedisServer, n: usize) {
    wait_until("answers in Redis", 5, || async {
        let keys = redis.keys();
        keys.matches("memu-proxy:e:").count() >= n
    })
    .await;
}

async fn read(proxy: &Proxy, body: &Value) -> Reply {
    post(&proxy.url(RELATED), body).await
}

#[tokio::test]
async fn replica_b_answers_what_replica_a_fetched() {
    let redis = RedisServer::start();
    let memu = MemU::start().await;
    memu.seed("u", "a", "I have a cat named Tama");
    let (a, b) = (
        replica(&memu, &redis.url(), |_| {}).await,
        replica(&memu, &redis.url(), |_| {}).await,
    );
    let first = assert_next_read_misses(&a, &pets("u", Some("a"))).await;
    wait_for_entries(&redis, 1).await;
    let shared = read(&b, &pets("u", Some("a"))).await;
    assert_eq!(shared.cache_status(), SHARED_HIT);
    assert_eq!(shared.body, first.body, "the very answer A fetched");
    assert_eq!(shared.header("content-type"), first.header("content-type"));
    assert_eq!(memu.hits(Route::Related), 1, "B did not ask memU");
    // B's local cache now has it too.
    assert_next_read_hits(&b, &pets("u", Some("a"))).await;
    let metrics = b.metrics().await;
    assert_eq!(
        metric(
            &metrics,
            r#"memu_proxy_shared_cache_operations_total{op="lookup",result="hit"}"#
        ),
        1.0,
        "{metrics}"
    );
    assert!(metrics.contains("# TYPE memu_proxy_shared_cache_operation_duration_seconds histogram"));
    assert_eq!(
        metric(
            &metrics,
            r#"memu_proxy_requests_total{route_class="read",outcome="shared_hit"}"#
        ),
        1.0
    );
    assert_eq!(metric(&metrics, "memu_proxy_shared_cache_up"), 1.0);
}

#[tokio::test]
async fn redis_holds_digests_never_query_text_user_ids_or_api_keys() {
    let redis = RedisServer::start();
    let memu = MemU::start().await;
    let a = replica(&memu, &redis.url(), |_| {}).await;
    post_with(
        &a.url(RELATED),
        &related_body("alice-0042", Some("aria-7"), "zebra crossing"),
        &[("authorization", "Bearer sk-secret-9")],
    )
    .await;
    post_with(
        &a.url(MEMORIZE),
        &memorize_body("alice-0042", "aria-7", "zebra"),
        &[("authorization", "Bearer sk-secret-9")],
    )
    .await;
    wait_until("the write's generations in Redis", 5, || async {
        redis.keys().contains("memu-proxy:g:")
    })
    .await;
    let keys = redis.keys();
    for secret in ["alice", "aria", "zebra", "sk-secret", "Bearer"] {
        assert!(!keys.contains(secret), "{secret} in {keys}");
    }
}

#[tokio::test]
async fn nothing_crosses_an_api_key_a_user_or_an_agent() {
    let redis = RedisServer::start();
    let memu = MemU::start().await;
    let (a, b) = (
        replica(&memu, &redis.url(), |_| {}).await,
        replica(&memu, &redis.url(), |_| {}).await,
    );
    assert_next_read_misses(&a, &pets("u", Some("a"))).await;
    wait_for_entries(&redis, 1).await;
    let other_key = post_with(
        &b.url(RELATED),
        &pets("u", Some("a")),
        &[("authorization", "Bearer key-2")],
    )
    .await;
    assert_eq!(other_key.cache_status(), MISS_STORED, "another API key");
    assert_next_read_misses(&b, &pets("v", Some("a"))).await;
    assert_next_read_misses(&b, &pets("u", Some("b"))).await;
    assert_next_read_misses(&b, &pets("u", None)).await;
    assert_eq!(memu.hits(Route::Related), 5);
    assert_eq!(
        read(&b, &pets("u", Some("a"))).await.cache_status(),
        SHARED_HIT
    );
}

#[tokio::test]
async fn a_write_through_a_invalidates_b_within_a_second() {
    let redis = RedisServer::start();
    let memu = MemU::start().await;
    let (a, b) = (
        replica(&memu, &redis.url(), |_| {}).await,
        replica(&memu, &redis.url(), |_| {}).await,
    );
    for user in ["u", "v"] {
        assert_next_read_misses(&b, &pets(user, Some("a"))).await;
        assert_next_read_hits(&b, &pets(user, Some("a"))).await;
    }
    wait_for_entries(&redis, 2).await;
    let written = post(
        &a.url(MEMORIZE),
        &memorize_body("u", "a", "I adopted a dog"),
    )
    .await;
    assert_eq!(written.status, 200);
    let answered = Instant::now();
    memu.complete_tasks();
    wait_until("B to stop serving the old answer", 2, || async {
        read(&b, &pets("u", Some("a"))).await.cache_status() != HIT
    })
    .await;
    let took = answered.elapsed();
    assert!(took < Duration::from_secs(1), "B served it for {took:?}");
    // Neither replica serves the answer from before the write, from its cache or from Redis.
    for replica in [&b, &a] {
        let reply = read(replica, &pets("u", Some("a"))).await;
        assert!(
            reply.text().contains("dog"),
            "{}: {}",
            reply.cache_status(),
            reply.text()
        );
    }
    assert_eq!(
        memu.hits(Route::Memorize),
        1,
        "the write was forwarded once"
    );
    // Another user's answers are untouched everywhere.
    assert_next_read_hits(&b, &pets("v", Some("a"))).await;
    let metrics = b.metrics().await;
    assert!(
        metric(
            &metrics,
            r#"memu_proxy_cache_invalidations_total{cause="replica",kind="supersede"}"#
        ) >= 1.0,
        "{metrics}"
    );
}

#[tokio::test]
async fn a_fetch_that_raced_a_write_is_fresh_nowhere() {
    let redis = RedisServer::start();
    let memu = MemU::start().await;
    let (a, b) = (
        replica(&memu, &redis.url(), |_| {}).await,
        replica(&memu, &redis.url(), |_| {}).await,
    );
    memu.set_route_latency(Route::Related, Duration::from_millis(400));
    let slow = tokio::spawn({
        let url = b.url(RELATED);
        async move { post(&url, &pets("u", Some("a"))).await }
    });
    memu.wait_for_hits(Route::Related, 1).await;
    post(
        &a.url(MEMORIZE),
        &memorize_body("u", "a", "I adopted a dog"),
    )
    .await;
    memu.complete_tasks();
    let raced = slow.await.unwrap();
    assert_eq!(raced.status, 200);
    memu.set_route_latency(Route::Related, Duration::ZERO);
    // Its lock is given back right after the answer; the answer itself is not kept.
    wait_until("the raced fetch's lock to be given back", 5, || async {
        !redis.keys().contains("memu-proxy:l:")
    })
    .await;
    assert!(!redis.keys().contains("memu-proxy:e:"), "{}", redis.keys());
    for replica in [&b, &a] {
        let reply = read(replica, &pets("u", Some("a"))).await;
        assert_ne!(
            reply.cache_status(),
            HIT,
            "B's raced answer served as fresh"
        );
        assert!(
            reply.text().contains("dog"),
            "{}: {}",
            reply.cache_status(),
            reply.text()
        );
    }
}

#[tokio::test]
async fn replicas_asking_the_same_new_question_make_one_memu_call() {
    let redis = RedisServer::start();
    let memu = MemU::start().await;
    let mut replicas = Vec::new();
    for _ in 0..3 {
        replicas.push(replica(&memu, &redis.url(), |_| {}).await);
    }
    memu.set_route_latency(Route::Related, Duration::from_millis(300));
    let asks: Vec<_> = replicas
        .iter()
        .map(|proxy| {
            let url = proxy.url(RELATED);
            tokio::spawn(async move { post(&url, &pets("u", Some("a"))).await })
        })
        .collect();
    let mut statuses = Vec::new();
    for ask in asks {
        let reply = ask.await.unwrap();
        assert_eq!(reply.status, 200);
        statuses.push(reply.cache_status());
    }
    assert_eq!(memu.hits(Route::Related), 1, "{statuses:?}");
    statuses.sort();
    assert_eq!(statuses, [MISS_STORED, SHARED_HIT, SHARED_HIT]);
}

#[tokio::test]
async fn a_restarted_replica_starts_warm() {
    let redis = RedisServer::start();
    let memu = MemU::start().await;
    let a = replica(&memu, &redis.url(), |_| {}).await;
    assert_next_read_misses(&a, &pets("u", Some("a"))).await;
    wait_for_entries(&redis, 1).await;
    a.shutdown().await.unwrap();
    let restarted = replica(&memu, &redis.url(), |_| {}).await;
    let reply = read(&restarted, &pets("u", Some("a"))).await;
    assert_eq!(reply.cache_status(), SHARED_HIT);
    let age: u64 = reply.header("age").parse().unwrap();
    assert!(age < 300, "an age within the TTL: {age}");
    assert_eq!(memu.hits(Route::Related), 1);
}

#[tokio::test]
async fn redis_stopped_costs_nothing_and_sharing_resumes_when_it_is_back() {
    let mut redis = RedisServer::start();
    let memu = MemU::start().await;
    let (a, b) = (
        replica(&memu, &redis.url(), |_| {}).await,
        replica(&memu, &redis.url(), |_| {}).await,
    );
    redis.stop();
    for n in 0..20 {
        let started = Instant::now();
        let reply = read(&a, &related_body("u", Some("a"), &format!("question {n}"))).await;
        let took = started.elapsed();
        assert_eq!(reply.status, 200);
        assert_eq!(reply.cache_status(), MISS_STORED, "answered by memU");
        assert!(took < Duration::from_secs(2), "{took:?}");
    }
    let written = post(&a.url(MEMORIZE), &memorize_body("u", "a", "x")).await;
    assert_eq!(written.status, 200, "writes go on without Redis");
    let health = get(&a.url("/healthz")).await.json();
    assert_eq!(health["shared_cache"]["link"], "down", "{health}");
    redis.restart();
    for proxy in [&a, &b] {
        wait_for_redis(proxy).await;
    }
    assert_next_read_misses(&a, &pets("w", Some("a"))).await;
    wait_for_entries(&redis, 1).await;
    assert_eq!(
        read(&b, &pets("w", Some("a"))).await.cache_status(),
        SHARED_HIT
    );
    let metrics = a.metrics().await;
    assert!(
        metric(
            &metrics,
            r#"memu_proxy_shared_cache_operations_total{op="lookup",result="skipped"}"#
        ) > 0.0,
        "calls were skipped while Redis was down: {metrics}"
    );
}

#[tokio::test]
async fn a_slow_redis_adds_at_most_the_timeout() {
    let redis = RedisServer::start();
    let memu = MemU::start().await;
    let relay = Relay::start(redis.addr()).await;
    let a = replica(&memu, &relay.url(), |s| s.shared_cache.timeout_ms = 50).await;
    relay.cut();
    for n in 0..10 {
        let started = Instant::now();
        let reply = read(&a, &related_body("u", None, &format!("q{n}"))).await;
        assert_eq!(reply.status, 200);
        let took = started.elapsed();
        // memU answers at once; Redis may cost one timeout, once.
        assert!(took < Duration::from_millis(400), "{took:?} for read {n}");
    }
}

#[tokio::test]
async fn a_partitioned_replica_stops_trusting_its_entries_after_the_grace() {
    let redis = RedisServer::start();
    let memu = MemU::start().await;
    let relay = Relay::start(redis.addr()).await;
    let a = replica(&memu, &redis.url(), |_| {}).await;
    let b = replica(&memu, &relay.url(), |_| {}).await;
    assert_next_read_misses(&b, &pets("u", Some("a"))).await;
    assert_next_read_hits(&b, &pets("u", Some("a"))).await;
    relay.cut();
    let cut = Instant::now();
    post(
        &a.url(MEMORIZE),
        &memorize_body("u", "a", "I adopted a dog"),
    )
    .await;
    // The grace is 600 ms; a stale answer served as fresh after it is a failure.
    wait_until("B to distrust its entries", 3, || async {
        let reply = read(&b, &pets("u", Some("a"))).await;
        assert_eq!(reply.status, 200);
        reply.cache_status() != HIT
    })
    .await;
    let took = cut.elapsed();
    assert!(took < Duration::from_millis(1500), "{took:?}");
    let health = get(&b.url("/healthz")).await.json();
    assert_eq!(health["shared_cache"]["local_entries_trusted"], false);
    // memU still answers B's readers, fresh every time.
    assert_eq!(
        read(&b, &pets("u", Some("a"))).await.cache_status(),
        MISS_STORED
    );
    relay.restore();
    wait_until("B to trust its cache again", 10, || async {
        let health = get(&b.url("/healthz")).await.json();
        health["shared_cache"]["local_entries_trusted"] == true
            && health["shared_cache"]["link"] == "up"
    })
    .await;
    assert_next_read_misses(&b, &related_body("u", Some("a"), "new")).await;
    assert_next_read_hits(&b, &related_body("u", Some("a"), "new")).await;
}

#[tokio::test]
async fn writes_made_while_cut_off_are_published_when_the_link_is_back() {
    let redis = RedisServer::start();
    let memu = MemU::start().await;
    let relay = Relay::start(redis.addr()).await;
    let a = replica(&memu, &relay.url(), |_| {}).await;
    let b = replica(&memu, &redis.url(), |_| {}).await;
    assert_next_read_misses(&b, &pets("u", Some("a"))).await;
    assert_next_read_hits(&b, &pets("u", Some("a"))).await;
    relay.cut();
    let written = post(
        &a.url(MEMORIZE),
        &memorize_body("u", "a", "I adopted a dog"),
    )
    .await;
    assert_eq!(written.status, 200);
    // B never heard of it (its link is fine): it still serves its entry.
    assert_next_read_hits(&b, &pets("u", Some("a"))).await;
    relay.restore();
    wait_until("A's outbox to reach B", 10, || async {
        read(&b, &pets("u", Some("a"))).await.cache_status() != HIT
    })
    .await;
    assert_eq!(memu.hits(Route::Memorize), 1);
}

#[tokio::test]
async fn without_a_shared_cache_healthz_and_metrics_say_nothing_of_it() {
    let memu = MemU::start().await;
    let proxy = Proxy::start(&memu.url(), |_| {}).await;
    let health = get(&proxy.url("/healthz")).await.json();
    assert_eq!(
        health,
        json!({"status": "ok", "circuit": "closed", "write_circuit": "closed"})
    );
    assert!(!proxy.metrics().await.contains("shared_cache"));
}
