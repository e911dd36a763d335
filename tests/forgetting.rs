//! Forgetting is final: after a write that may remove memories (a delete, a clear, a v4 commit),
//! nothing cached before it is served again on any path: not as a hit, not as a near-duplicate,
//! not as a stale stand-in when memU misses the budget, times out, fails, is cut off by the
//! circuit or is overloaded; not from a fetch that was in flight across the delete; whatever memU
//! answered the delete. A memorize, by contrast, still lets the older answer stand in.

mod support;

use std::time::Duration;

use serde_json::{json, Value};
use support::call::{Call, KEY_1};
use support::redis::{replica, RedisServer, Relay};
use support::*;

/// What the user asked the companion to forget.
const ADDRESS: &str = "my address is 12 Elm St";

/// (u1, a1) asks where they live.
fn where_do_i_live() -> Value {
    related_body("u1", Some("a1"), "where do I live")
}

/// A v1 memU that knows the address, and a proxy (shipped-like: stale answers for an hour) that
/// has it cached: asked twice, stored, then a hit.
async fn remembered(tweak: impl FnOnce(&mut memu_proxy::config::Settings)) -> (MemU, Proxy) {
    let memu = MemU::start().await;
    memu.seed("u1", "a1", ADDRESS);
    let proxy = Proxy::start(&memu.url(), |s| {
        s.cache.stale_if_error_secs = 3600;
        tweak(s);
    })
    .await;
    let stored = assert_next_read_misses(&proxy, &where_do_i_live()).await;
    assert!(stored.text().contains(ADDRESS), "{}", stored.text());
    assert_next_read_hits(&proxy, &where_do_i_live()).await;
    (memu, proxy)
}

/// Deletes (u1, a1) through the proxy; returns memU's status.
async fn forget(proxy: &Proxy, agent: Option<&str>) -> u16 {
    let body = json!({"user_id": "u1", "agent_id": agent});
    post(&proxy.url(DELETE), &body).await.status.as_u16()
}

/// Asks again: the empty answer for `reason`, without the address.
async fn assert_forgotten(proxy: &Proxy, body: &Value, reason: &str) {
    let reply = post(&proxy.url(RELATED), body).await;
    assert_eq!(reply.status, 200);
    assert!(!reply.text().contains(ADDRESS), "served after its deletion");
    assert_eq!(
        reply.cache_status(),
        format!("memu-proxy; fwd=miss; detail={reason}"),
        "{body}"
    );
    assert_eq!(reply.json()["related_memories"], json!([]));
}

/// The stale answers refused because a purge came after their fetch.
async fn refused_as_purged(proxy: &Proxy) -> f64 {
    let metrics = proxy.metrics().await;
    metric(&metrics, r#"memu_proxy_stale_refused_total{why="purged"}"#)
}

// ---- Every path a stale answer could take -------------------------------------------------------

#[tokio::test]
async fn a_deleted_memory_is_not_the_stale_answer_when_memu_misses_the_budget() {
    let (memu, proxy) = remembered(|s| s.latency.budget_ms = 200).await;
    assert_eq!(forget(&proxy, Some("a1")).await, 200);
    memu.set_latency(Duration::from_secs(1));
    assert_forgotten(&proxy, &where_do_i_live(), "budget").await;
    assert_eq!(refused_as_purged(&proxy).await, 1.0);
    let metrics = proxy.metrics().await;
    assert_eq!(
        metric(
            &metrics,
            r#"memu_proxy_cache_invalidations_total{cause="write",kind="purge"}"#
        ),
        2.0,
        "purged before forwarding and again after memU's answer"
    );
}

#[tokio::test]
async fn a_deleted_memory_is_not_the_stale_answer_when_memu_answers_5xx_then_the_circuit_opens() {
    let (memu, proxy) = remembered(|s| s.circuit.failure_threshold = 1).await;
    assert_eq!(forget(&proxy, Some("a1")).await, 200);
    memu.set_failure(Failure::Status(503));
    assert_forgotten(&proxy, &where_do_i_live(), "upstream-5xx").await;
    assert_forgotten(&proxy, &where_do_i_live(), "circuit-open").await;
    assert_eq!(refused_as_purged(&proxy).await, 2.0);
}

#[tokio::test]
async fn a_deleted_memory_is_not_the_stale_answer_when_memu_times_out() {
    let (memu, proxy) = remembered(|s| s.upstream.timeout_ms = 300).await;
    assert_eq!(forget(&proxy, Some("a1")).await, 200);
    memu.set_latency(Duration::from_secs(1));
    assert_forgotten(&proxy, &where_do_i_live(), "timeout").await;
}

#[tokio::test]
async fn a_deleted_memory_is_not_the_stale_answer_when_the_proxy_is_overloaded() {
    let (memu, proxy) = remembered(|s| {
        s.latency.budget_ms = 100;
        s.latency.max_background_fetches = 1;
    })
    .await;
    assert_eq!(forget(&proxy, Some("a1")).await, 200);
    memu.set_latency(Duration::from_secs(1));
    // Another question's fetch takes the only permit for a second.
    let other = post(
        &proxy.url(RELATED),
        &related_body("u9", Some("a9"), "something else"),
    )
    .await;
    assert!(other.cache_status().contains("detail=budget"));
    assert_forgotten(&proxy, &where_do_i_live(), "overload").await;
}

#[tokio::test]
async fn a_delete_with_a_null_agent_forgets_every_agent_of_the_user() {
    let (memu, proxy) = remembered(|_| {}).await;
    let (other_agent, agentless, other_user) = (
        related_body("u1", Some("a2"), "where do I live"),
        related_body("u1", None, "where do I live"),
        related_body("u2", Some("a1"), "where do I live"),
    );
    for body in [&other_agent, &agentless, &other_user] {
        assert_next_read_misses(&proxy, body).await;
    }
    assert_eq!(forget(&proxy, None).await, 200);
    memu.set_failure(Failure::Status(503));
    for body in [&where_do_i_live(), &other_agent, &agentless] {
        assert_forgotten(&proxy, body, "upstream-5xx").await;
    }
    assert_next_read_hits(&proxy, &other_user).await;
}

#[tokio::test]
async fn a_delete_memu_answers_5xx_stays_purged() {
    let (memu, proxy) = remembered(|_| {}).await;
    // memU fails the delete: it may or may not have applied it.
    memu.set_failure(Failure::Status(500));
    assert_eq!(forget(&proxy, Some("a1")).await, 500);
    assert_forgotten(&proxy, &where_do_i_live(), "upstream-5xx").await;
}

#[tokio::test]
async fn a_delete_that_timed_out_stays_purged() {
    let (memu, proxy) = remembered(|s| s.upstream.write_timeout_ms = 200).await;
    memu.set_route_latency(Route::Delete, Duration::from_secs(1));
    assert_eq!(forget(&proxy, Some("a1")).await, 504);
    memu.set_failure(Failure::Status(503));
    assert_forgotten(&proxy, &where_do_i_live(), "upstream-5xx").await;
}

#[tokio::test]
async fn a_fetch_in_flight_across_the_delete_is_never_served() {
    let memu = MemU::start().await;
    memu.seed("u1", "a1", ADDRESS);
    let proxy = Proxy::start(&memu.url(), |s| {
        s.cache.stale_if_error_secs = 3600;
        s.latency.budget_ms = 100;
    })
    .await;
    // The read reaches memU before the delete; its answer (with the address) arrives after.
    memu.set_route_latency(Route::Related, Duration::from_millis(600));
    let first = post(&proxy.url(RELATED), &where_do_i_live()).await;
    assert_eq!(first.cache_status(), "memu-proxy; fwd=miss; detail=budget");
    assert_eq!(forget(&proxy, Some("a1")).await, 200);
    wait_until("the fetch to finish", 5, || async {
        metric(&proxy.metrics().await, "memu_proxy_inflight_fetches") == 0.0
    })
    .await;
    assert_eq!(
        metric(&proxy.metrics().await, "memu_proxy_cache_entries"),
        0.0,
        "the raced answer was not stored"
    );
    memu.set_route_latency(Route::Related, Duration::ZERO);
    memu.set_failure(Failure::Status(503));
    assert_forgotten(&proxy, &where_do_i_live(), "upstream-5xx").await;
}

#[tokio::test]
async fn a_deleted_memory_is_not_a_near_duplicate_answer() {
    let (memu, proxy) = remembered(|s| s.cache.similarity_threshold = 0.9).await;
    let reworded = related_body("u1", Some("a1"), "um, where do I live?");
    let similar = post(&proxy.url(RELATED), &reworded).await;
    assert_eq!(similar.cache_status(), "memu-proxy; hit; detail=similar");
    assert_eq!(forget(&proxy, Some("a1")).await, 200);
    memu.set_failure(Failure::Status(503));
    assert_forgotten(&proxy, &reworded, "upstream-5xx").await;
}

#[tokio::test]
async fn a_deleted_memory_is_not_revalidated() {
    let (memu, proxy) = remembered(|s| {
        s.cache.ttl_secs = 1;
        s.cache.stale_while_revalidate_secs = 60;
        s.latency.budget_ms = 200;
    })
    .await;
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert_eq!(forget(&proxy, Some("a1")).await, 200);
    memu.set_latency(Duration::from_secs(1));
    assert_forgotten(&proxy, &where_do_i_live(), "budget").await;
}

#[tokio::test]
async fn a_memorize_unlike_a_delete_still_lets_the_older_answer_stand_in() {
    let (memu, proxy) = remembered(|_| {}).await;
    let (theirs, their_address) = (
        related_body("u2", Some("a1"), "where do I live"),
        "my address is 3 Oak Lane",
    );
    memu.seed("u2", "a1", their_address);
    assert_next_read_misses(&proxy, &theirs).await;
    let memorized = post(
        &proxy.url(MEMORIZE),
        &memorize_body("u2", "a1", "I like tea"),
    )
    .await;
    assert_eq!(memorized.status, 200);
    assert_eq!(forget(&proxy, Some("a1")).await, 200);
    memu.set_failure(Failure::Status(503));
    let stale = post(&proxy.url(RELATED), &theirs).await;
    assert_eq!(
        stale.cache_status(),
        "memu-proxy; hit; detail=stale-upstream-5xx"
    );
    assert!(stale.text().contains(their_address));
    assert_forgotten(&proxy, &where_do_i_live(), "upstream-5xx").await;
}

// ---- Every generation's purging writes -----------------------------------------------------------

/// Warms `reads` (each stored, then a hit), sends `purge` (answered 200), makes memU fail, and
/// checks each of `forgotten` gets its empty answer while each of `kept` is still a hit.
async fn purged_by(memu: &MemU, proxy: &Proxy, purge: Call, forgotten: &[&Call], kept: &[&Call]) {
    for read in forgotten.iter().chain(kept) {
        read.misses(proxy).await;
        read.hits(proxy).await;
    }
    let answered = purge.send(proxy).await;
    assert_eq!(answered.status, 200, "{purge:?}: {}", answered.text());
    memu.set_failure(Failure::Status(503));
    for read in forgotten {
        let reply = read.send(proxy).await;
        assert_eq!(reply.status, 200);
        assert_eq!(
            reply.cache_status(),
            "memu-proxy; fwd=miss; detail=upstream-5xx",
            "{read:?} after {:?}",
            purge.route
        );
        assert_eq!(reply.json(), read.fallback(), "{read:?}");
    }
    for read in kept {
        read.hits(proxy).await;
    }
}

async fn stale_proxy(memu: &MemU) -> Proxy {
    Proxy::start(&memu.url(), |s| s.cache.stale_if_error_secs = 3600).await
}

#[tokio::test]
async fn a_v3_delete_forgets_every_read_of_the_user() {
    let memu = MemU::start().await;
    memu.seed_v3(KEY_1, "u", "a", "Alice lives at 12 Elm St");
    let proxy = stale_proxy(&memu).await;
    let retrieve = Call::v3_retrieve(KEY_1, "u", "a", json!("Where do I live?"));
    let categories = Call::v3_categories(KEY_1, "u", None);
    let other_user = Call::v3_retrieve(KEY_1, "v", "a", json!("Where do I live?"));
    let delete = Call::post(
        Route::V3Delete,
        "/api/v3/memory/delete",
        Some(KEY_1),
        json!({"user_id": "u", "agent_id": "a"}),
    );
    purged_by(
        &memu,
        &proxy,
        delete,
        &[&retrieve, &categories],
        &[&other_user],
    )
    .await;
}

#[tokio::test]
async fn a_memu_server_clear_of_a_user_forgets_every_retrieve_and_their_categories() {
    let memu = MemU::start().await;
    memu.seed_server("alice", "a", "Alice lives at 12 Elm St");
    memu.seed_server("bob", "a", "Bob lives at 3 Oak Lane");
    let proxy = stale_proxy(&memu).await;
    let retrieve = Call::server_retrieve("Where does Alice live?");
    let alices = Call::server_categories("alice", None);
    let bobs = Call::server_categories("bob", None);
    let clear = Call::server_clear(json!({"user_id": "alice"}));
    purged_by(&memu, &proxy, clear, &[&retrieve, &alices], &[&bobs]).await;
}

#[tokio::test]
async fn a_memu_server_clear_of_an_agent_only_forgets_everything() {
    let memu = MemU::start().await;
    memu.seed_server("alice", "a", "Alice lives at 12 Elm St");
    memu.seed_server("bob", "b", "Bob lives at 3 Oak Lane");
    let proxy = stale_proxy(&memu).await;
    let retrieve = Call::server_retrieve("Where does Alice live?");
    let alices = Call::server_categories("alice", None);
    let bobs = Call::server_categories("bob", Some("b"));
    let clear = Call::server_clear(json!({"agent_id": "a"}));
    purged_by(&memu, &proxy, clear, &[&retrieve, &alices, &bobs], &[]).await;
}

#[tokio::test]
async fn a_v4_commit_forgets_that_scopes_pages_and_searches() {
    let memu = MemU::start().await;
    memu.seed_v4(
        KEY_1,
        "default",
        "default",
        "home",
        "Alice lives at 12 Elm St",
    );
    let proxy = stale_proxy(&memu).await;
    let list = Call::v4_list(KEY_1, "user_id=default&agent_id=default");
    let search = Call::v4_search(KEY_1, "default", "default", "Where do I live?");
    let other_agent = Call::v4_list(KEY_1, "user_id=default&agent_id=a2");
    // An upsert that rewrites the recall file: the old address is gone.
    let commit = Call::v4_commit(KEY_1, "default", "default", "home", "Alice moved away");
    purged_by(&memu, &proxy, commit, &[&list, &search], &[&other_agent]).await;
}

#[tokio::test]
async fn a_v1_delete_is_counted_as_a_purge_and_a_memorize_as_a_supersede() {
    let (_memu, proxy) = remembered(|_| {}).await;
    post(
        &proxy.url(MEMORIZE),
        &memorize_body("u1", "a1", "I like tea"),
    )
    .await;
    forget(&proxy, Some("a1")).await;
    let metrics = proxy.metrics().await;
    for (kind, count) in [("supersede", 2.0), ("purge", 2.0)] {
        let series =
            format!(r#"memu_proxy_cache_invalidations_total{{cause="write",kind="{kind}"}}"#);
        assert_eq!(metric(&metrics, &series), count, "{series}\n{metrics}");
    }
}

// ---- Every replica, on a real redis-server -------------------------------------------------------

/// A replica with stale answers for an hour.
async fn stale_replica(memu: &MemU, redis_url: &str) -> Proxy {
    replica(memu, redis_url, |s| s.cache.stale_if_error_secs = 3600).await
}

#[tokio::test]
async fn a_delete_through_one_replica_is_final_on_every_replica_and_in_redis() {
    let redis = RedisServer::start();
    let memu = MemU::start().await;
    memu.seed("u1", "a1", ADDRESS);
    let (a, b) = (
        stale_replica(&memu, &redis.url()).await,
        stale_replica(&memu, &redis.url()).await,
    );
    assert_next_read_misses(&b, &where_do_i_live()).await;
    assert_next_read_hits(&b, &where_do_i_live()).await;
    wait_until("B's answer in Redis", 5, || async {
        redis.keys().contains("memu-proxy:e:")
    })
    .await;

    assert_eq!(forget(&a, Some("a1")).await, 200);
    let deleted = tokio::time::Instant::now();
    let purges_heard = r#"memu_proxy_cache_invalidations_total{cause="replica",kind="purge"}"#;
    wait_until("B to hear the purge", 2, || async {
        counted(&b.metrics().await, purges_heard) >= 1.0
    })
    .await;
    let took = deleted.elapsed();
    assert!(took < Duration::from_secs(1), "B heard it after {took:?}");

    memu.set_failure(Failure::Status(503));
    for replica in [&b, &a] {
        assert_forgotten(replica, &where_do_i_live(), "upstream-5xx").await;
    }
    assert_eq!(refused_as_purged(&b).await, 1.0);

    // A replica started now finds only a record from before the delete in Redis: not served.
    memu.set_failure(Failure::None);
    let c = stale_replica(&memu, &redis.url()).await;
    let fresh = post(&c.url(RELATED), &where_do_i_live()).await;
    assert_eq!(fresh.cache_status(), MISS_STORED);
    assert!(!fresh.text().contains(ADDRESS));
}

#[tokio::test]
async fn a_replica_cut_off_from_the_stream_serves_no_stale_answer_until_and_after_it_is_back() {
    let redis = RedisServer::start();
    let memu = MemU::start().await;
    memu.seed("u1", "a1", ADDRESS);
    let relay = Relay::start(redis.addr()).await;
    let a = stale_replica(&memu, &redis.url()).await;
    let b = stale_replica(&memu, &relay.url()).await;
    assert_next_read_misses(&b, &where_do_i_live()).await;
    relay.cut();
    // B never hears this delete.
    assert_eq!(forget(&a, Some("a1")).await, 200);
    wait_until("B to stop trusting its entries", 5, || async {
        get(&b.url("/healthz")).await.json()["shared_cache"]["local_entries_trusted"] == false
    })
    .await;
    memu.set_failure(Failure::Status(503));
    assert_forgotten(&b, &where_do_i_live(), "upstream-5xx").await;
    let refused = r#"memu_proxy_stale_refused_total{why="stream_lost"}"#;
    assert_eq!(metric(&b.metrics().await, refused), 1.0);

    // Back on the stream, B still cannot know what it missed: its older answers stay unserved.
    relay.restore();
    wait_until("B to trust its entries again", 10, || async {
        let health = get(&b.url("/healthz")).await.json();
        health["shared_cache"]["local_entries_trusted"] == true
            && health["shared_cache"]["stream"] == "up"
    })
    .await;
    assert_forgotten(&b, &where_do_i_live(), "upstream-5xx").await;
    assert_eq!(refused_as_purged(&b).await, 1.0);
}
