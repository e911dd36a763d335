//! The shared tier when Redis's own state goes wrong, against a real `redis-server`: full under
//! `noeviction`, restarted from a snapshot taken before a write, a generation key lost, a record
//! that is not an answer, replicas that would answer differently, a TTL longer than ours, and a
//! lock held until the waiter's deadline. No reproduction serves an answer from before a write as
//! fresh.

mod support;

use std::time::Duration;

use serde_json::Value;
use support::redis::{replica, wait_for_redis, RedisServer};
use support::*;

const SHARED_HIT: &str = "memu-proxy; hit; detail=shared";

fn pets() -> Value {
    related_body("u", Some("a"), "What pets do I have?")
}

async fn read(proxy: &Proxy) -> Reply {
    post(&proxy.url(RELATED), &pets()).await
}

/// Waits until Redis holds an answer (written after the client is answered); returns its name.
async fn stored_answer(redis: &RedisServer) -> String {
    wait_until("an answer in Redis", 5, || async {
        redis.keys().contains("memu-proxy:e:")
    })
    .await;
    let keys = redis.keys();
    let at = keys.find("memu-proxy:e:").unwrap();
    keys[at..at + "memu-proxy:e:".len() + 64].to_owned()
}

/// A memorizes a dog, which memU has applied (B read the answer from before it once: it is in
/// B's cache and in Redis).
async fn written(memu: &MemU, a: &Proxy) {
    let written = post(
        &a.url(MEMORIZE),
        &memorize_body("u", "a", "I adopted a dog"),
    )
    .await;
    assert_eq!(written.status, 200);
    memu.complete_tasks();
}

/// The read shows the write: not served from before it.
fn shows_the_write(reply: &Reply) {
    assert_eq!(reply.status, 200);
    assert!(
        reply.text().contains("dog"),
        "served from before the write ({}): {}",
        reply.cache_status(),
        reply.text()
    );
}

/// Two replicas A and B on `redis`; B has read the answer from before any write, which is in its
/// cache and in Redis.
async fn b_has_read(memu: &MemU, redis: &RedisServer) -> (Proxy, Proxy) {
    let (a, b) = (
        replica(memu, &redis.url(), |_| {}).await,
        replica(memu, &redis.url(), |_| {}).await,
    );
    assert_next_read_misses(&b, &pets()).await;
    stored_answer(redis).await;
    (a, b)
}

async fn health(proxy: &Proxy) -> Value {
    get(&proxy.url("/healthz")).await.json()["shared_cache"].clone()
}

#[tokio::test]
async fn a_write_redis_refuses_stops_trust_everywhere_until_it_lands() {
    let redis = RedisServer::start();
    let memu = MemU::start().await;
    let (a, b) = b_has_read(&memu, &redis).await;
    // Full, as README recommends it: every write to Redis is refused with OOM.
    redis.command(&["CONFIG", "SET", "maxmemory-policy", "noeviction"]);
    redis.command(&["CONFIG", "SET", "maxmemory", "1"]);
    let written = post(
        &a.url(MEMORIZE),
        &memorize_body("u", "a", "I adopted a dog"),
    )
    .await;
    assert_eq!(written.status, 200);
    memu.complete_tasks();
    // A does not take Redis's answer from before its own write.
    let at_a = read(&a).await;
    assert_ne!(at_a.cache_status(), SHARED_HIT);
    shows_the_write(&at_a);
    // B hears A's heartbeat say so within a heartbeat period (150 ms here).
    wait_until(
        "B to stop serving its answer from before the write",
        2,
        || async { read(&b).await.text().contains("dog") },
    )
    .await;
    assert_eq!(health(&a).await["writes_delivered"], false);
    assert_eq!(health(&b).await["local_entries_trusted"], false);

    redis.command(&["CONFIG", "SET", "maxmemory", "0"]);
    wait_until("A's write to land", 5, || async {
        health(&a).await["writes_delivered"] == true
    })
    .await;
    wait_until("B to trust its entries again", 5, || async {
        health(&b).await["local_entries_trusted"] == true
    })
    .await;
    shows_the_write(&read(&b).await);
}

#[tokio::test]
async fn a_redis_restarted_from_a_snapshot_before_a_write_serves_nothing_from_before_it() {
    let dir = std::env::temp_dir().join(format!("memu-proxy-snapshot-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let mut redis = RedisServer::start_persistent(&dir);
    let memu = MemU::start().await;
    let (a, b) = b_has_read(&memu, &redis).await;
    // A loaded machine may miss the helper's 2 s read timeout: ask again until it is saved.
    wait_until("the snapshot", 10, || async {
        redis.command(&["SAVE"]).as_deref() == Some("+OK\r\n")
    })
    .await;
    written(&memu, &a).await;
    redis.restart();
    for replica in [&a, &b] {
        wait_for_redis(replica).await;
    }
    // A replica new to this Redis, and those that knew it before, all show the write.
    let c = replica(&memu, &redis.url(), |_| {}).await;
    for replica in [&c, &b, &a] {
        let reply = read(replica).await;
        shows_the_write(&reply);
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn a_lost_generation_key_is_unknown_not_zero() {
    let redis = RedisServer::start();
    let memu = MemU::start().await;
    let (a, _b) = b_has_read(&memu, &redis).await;
    written(&memu, &a).await;
    // Evicted, expired or deleted by hand: every slot's generation is gone.
    let keys = redis.keys();
    let slots: Vec<&str> = keys
        .split("\r\n")
        .filter(|k| k.starts_with("memu-proxy:g:") && !k.ends_with('*'))
        .collect();
    assert!(!slots.is_empty(), "{keys}");
    for slot in slots {
        redis.command(&["DEL", slot]);
    }
    let c = replica(&memu, &redis.url(), |_| {}).await;
    let reply = read(&c).await;
    assert_ne!(reply.cache_status(), SHARED_HIT);
    shows_the_write(&reply);
}

/// B's answer in Redis, replaced by `body` after its current generations line (so the record
/// is "current"); then a new replica C asks. Returns C's reply and how long it took.
async fn current_record_replaced_by(body: &str) -> (Reply, Duration) {
    let redis = RedisServer::start();
    let memu = MemU::start().await;
    let b = replica(&memu, &redis.url(), |_| {}).await;
    assert_next_read_misses(&b, &pets()).await;
    let name = stored_answer(&redis).await;
    let stored = redis.command(&["GET", &name]).unwrap();
    // `$<len>\r\n<generations line>\n…`: keep the line.
    let line = stored
        .split("\r\n")
        .nth(1)
        .unwrap()
        .split('\n')
        .next()
        .unwrap();
    redis.command(&["SET", &name, &format!("{line}\n{body}"), "KEEPTTL"]);
    let c = replica(&memu, &redis.url(), |_| {}).await;
    let started = tokio::time::Instant::now();
    let reply = read(&c).await;
    (reply, started.elapsed())
}

#[tokio::test]
async fn a_record_that_is_not_an_answer_is_not_served() {
    let (reply, _) = current_record_replaced_by("\0\0{\"related_memories\":null}").await;
    assert_eq!(reply.cache_status(), MISS_STORED, "asked memU instead");
    assert!(
        reply.json()["related_memories"].is_array(),
        "{}",
        reply.text()
    );
}

#[tokio::test]
async fn a_current_record_that_does_not_decode_costs_a_memu_call_not_a_timeout() {
    let (reply, took) = current_record_replaced_by("\0").await;
    assert_eq!(reply.cache_status(), MISS_STORED, "asked memU instead");
    assert!(took < Duration::from_millis(500), "no wait: {took:?}");
}

#[tokio::test]
async fn a_write_redis_refused_stays_final_when_its_replica_dies() {
    let redis = RedisServer::start();
    let memu = MemU::start().await;
    let a = replica(&memu, &redis.url(), |_| {}).await;
    let b = replica(&memu, &redis.url(), |_| {}).await;
    assert_next_read_misses(&b, &pets()).await;
    assert_next_read_hits(&b, &pets()).await;
    redis.command(&["CONFIG", "SET", "maxmemory", "1"]);
    let written = post(
        &a.url(MEMORIZE),
        &memorize_body("u", "a", "I adopted a dog"),
    )
    .await;
    assert_eq!(written.status, 200);
    memu.complete_tasks();
    wait_until("B to hear that A holds a write", 2, || async {
        health(&b).await["local_entries_trusted"] == false
    })
    .await;
    // A dies with the write in its outbox; Redis recovers, B's distrust lapses.
    a.shutdown().await.unwrap();
    redis.command(&["CONFIG", "SET", "maxmemory", "0"]);
    wait_until("B to trust its entries again", 5, || async {
        health(&b).await["local_entries_trusted"] == true
    })
    .await;
    shows_the_write(&read(&b).await);
}

#[tokio::test]
async fn replicas_that_would_answer_differently_never_share_an_answer() {
    let redis = RedisServer::start();
    let memu = MemU::start().await;
    memu.seed("u", "a", "I have a cat");
    let plain = replica(&memu, &redis.url(), |_| {}).await;
    let repairing = replica(&memu, &redis.url(), |s| {
        s.compat.fill_null_timestamps = true
    })
    .await;
    assert_next_read_misses(&plain, &pets()).await;
    stored_answer(&redis).await;
    let reply = read(&repairing).await;
    assert_eq!(reply.cache_status(), MISS_STORED);
    let memory = &reply.json()["related_memories"][0]["memory"];
    assert!(memory["created_at"].is_string(), "repaired: {memory}");
}

#[tokio::test]
async fn a_shared_answer_is_fresh_no_longer_than_our_own_ttl() {
    let redis = RedisServer::start();
    let memu = MemU::start().await;
    let long = replica(&memu, &redis.url(), |_| {}).await;
    let short = replica(&memu, &redis.url(), |s| s.cache.ttl_secs = 1).await;
    assert_next_read_misses(&long, &pets()).await;
    stored_answer(&redis).await;
    assert_eq!(read(&short).await.cache_status(), SHARED_HIT);
    assert_eq!(read(&short).await.cache_status(), HIT);
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert_ne!(
        read(&short).await.cache_status(),
        HIT,
        "fresh past its own TTL"
    );
}

#[tokio::test]
async fn a_waiter_whose_deadline_the_wait_consumed_does_not_ask_memu() {
    let redis = RedisServer::start();
    let memu = MemU::start().await;
    let holder = replica(&memu, &redis.url(), |_| {}).await;
    let waiter = replica(&memu, &redis.url(), |s| s.upstream.timeout_ms = 300).await;
    memu.set_route_latency(Route::Related, Duration::from_millis(1000));
    let held = tokio::spawn({
        let url = holder.url(RELATED);
        async move { post(&url, &pets()).await }
    });
    memu.wait_for_hits(Route::Related, 1).await;
    let gave_up = read(&waiter).await;
    assert_eq!(
        gave_up.cache_status(),
        "memu-proxy; fwd=miss; detail=timeout"
    );
    assert_eq!(held.await.unwrap().cache_status(), MISS_STORED);
    assert_eq!(memu.hits(Route::Related), 1, "one memU call");
    let metrics = waiter.metrics().await;
    let asked = r#"memu_proxy_upstream_duration_seconds_count{route_class="read"}"#;
    assert_eq!(series(&metrics, asked), None, "the waiter never asked memU");
}
