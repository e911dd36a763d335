//! Local answers (`cache.local_answers`): a question memU cannot answer in time gets the memories
//! the proxy has already seen for that scope, ranked for the question, in the route's exact shape;
//! never another scope's, never after a delete, never with the option off.

mod support;

use std::time::Duration;

use memu_proxy::config::Settings;
use serde_json::{json, Value};
use support::*;

const CAT: &str = "My cat is called Mochi.";
const WORK: &str = "I work at a bakery in Osaka.";
const LOCAL_BUDGET: &str = "memu-proxy; fwd=miss; detail=budget; local";

fn ask(user: &str, question: &str) -> Value {
    related_body(user, Some("a"), question)
}

/// memU knows two facts of (u, a); the proxy (local answers on or off) has seen them once.
async fn seen_once(local_answers: bool, tweak: impl FnOnce(&mut Settings)) -> (MemU, Proxy) {
    let memu = MemU::start().await;
    memu.seed("u", "a", CAT);
    memu.seed("u", "a", WORK);
    let proxy = Proxy::start(&memu.url(), |s| {
        s.cache.local_answers = local_answers;
        s.latency.budget_ms = 200;
        tweak(s);
    })
    .await;
    let first = assert_next_read_misses(&proxy, &ask("u", "tell me about myself")).await;
    assert!(first.text().contains("Mochi"));
    memu.set_latency(Duration::from_secs(1));
    (memu, proxy)
}

#[tokio::test]
async fn a_new_question_memu_cannot_answer_in_time_gets_the_memory_it_is_about() {
    let (_memu, proxy) = seen_once(true, |_| {}).await;
    let reply = post(&proxy.url(RELATED), &ask("u", "What is my cat called?")).await;
    assert_eq!(reply.status, 200);
    assert_eq!(reply.cache_status(), LOCAL_BUDGET);
    let answer = reply.json();
    let memories = answer["related_memories"].as_array().unwrap();
    assert_eq!(memories.len(), 1, "{answer}");
    assert_eq!(memories[0]["memory"]["content"], CAT);
    assert_eq!(answer["query"], "What is my cat called?");
    assert_eq!(answer["total_found"], 1);
    let metrics = proxy.metrics().await;
    let served = r#"memu_proxy_requests_total{route_class="read",outcome="local_answer"}"#;
    assert_eq!(metric(&metrics, served), 1.0);
    let counted = r#"memu_proxy_local_answers_total{reason="budget"}"#;
    assert_eq!(metric(&metrics, counted), 1.0);
}

#[tokio::test]
async fn a_question_no_memory_is_about_gets_the_empty_answer() {
    let (_memu, proxy) = seen_once(true, |_| {}).await;
    let reply = post(&proxy.url(RELATED), &ask("u", "what will the weather be?")).await;
    assert_eq!(reply.cache_status(), "memu-proxy; fwd=miss; detail=budget");
    assert_eq!(reply.json()["related_memories"], json!([]));
}

#[tokio::test]
async fn another_scope_never_gets_these_memories() {
    let (_memu, proxy) = seen_once(true, |_| {}).await;
    for body in [
        ask("v", "What is my cat called?"),
        related_body("u", Some("b"), "What is my cat called?"),
        related_body("u", None, "What is my cat called?"),
    ] {
        let reply = post(&proxy.url(RELATED), &body).await;
        assert_eq!(
            reply.cache_status(),
            "memu-proxy; fwd=miss; detail=budget",
            "{body}"
        );
        assert!(!reply.text().contains("Mochi"), "{body}");
    }
}

#[tokio::test]
async fn after_a_delete_no_local_answer_holds_what_was_deleted() {
    let (memu, proxy) = seen_once(true, |_| {}).await;
    memu.set_latency(Duration::ZERO);
    let deleted = post(
        &proxy.url(DELETE),
        &json!({"user_id": "u", "agent_id": "a"}),
    )
    .await;
    assert_eq!(deleted.status, 200);
    memu.set_latency(Duration::from_secs(1));
    let reply = post(&proxy.url(RELATED), &ask("u", "What is my cat called?")).await;
    assert_eq!(reply.cache_status(), "memu-proxy; fwd=miss; detail=budget");
    assert!(!reply.text().contains("Mochi"));
}

#[tokio::test]
async fn with_local_answers_off_the_answer_is_empty() {
    let (_memu, proxy) = seen_once(false, |_| {}).await;
    let reply = post(&proxy.url(RELATED), &ask("u", "What is my cat called?")).await;
    assert_eq!(reply.cache_status(), "memu-proxy; fwd=miss; detail=budget");
    assert_eq!(reply.json()["related_memories"], json!([]));
}

#[tokio::test]
async fn memu_failing_gets_a_local_answer_too() {
    let (memu, proxy) = seen_once(true, |_| {}).await;
    memu.set_latency(Duration::ZERO);
    memu.set_failure(Failure::Status(503));
    let reply = post(&proxy.url(RELATED), &ask("u", "Where do I work?")).await;
    assert_eq!(
        reply.cache_status(),
        "memu-proxy; fwd=miss; detail=upstream-5xx; local"
    );
    assert_eq!(
        reply.json()["related_memories"][0]["memory"]["content"],
        WORK
    );
}

#[tokio::test]
async fn a_scope_seen_for_the_first_time_is_listed_once_in_the_background() {
    let memu = MemU::start().await;
    memu.seed("u", "a", CAT);
    memu.seed("u", "a", WORK);
    let proxy = Proxy::start(&memu.url(), |s| {
        s.cache.local_answers = true;
        s.latency.budget_ms = 200;
    })
    .await;
    // memU's retrieval is slow from the first question on, its listing is not: the first
    // question is already answered from the listing the proxy started when it saw the scope.
    memu.set_route_latency(Route::Related, Duration::from_secs(1));
    let first = post(&proxy.url(RELATED), &ask("u", "Where do I work?")).await;
    assert_eq!(first.cache_status(), LOCAL_BUDGET);
    assert_eq!(
        first.json()["related_memories"][0]["memory"]["content"],
        WORK
    );
    let listed = r#"memu_proxy_mirror_fetches_total{why="first_sight"}"#;
    // A new question of that scope, still slow at memU: answered from the listing too.
    let second = post(&proxy.url(RELATED), &ask("u", "What is my cat called?")).await;
    assert_eq!(second.cache_status(), LOCAL_BUDGET);
    assert_eq!(
        second.json()["related_memories"][0]["memory"]["content"],
        CAT
    );
    assert_eq!(memu.hits(Route::DefaultCategories), 1, "listed once");
    assert_eq!(metric(&proxy.metrics().await, listed), 1.0);
}

#[tokio::test]
async fn after_a_memorize_succeeds_the_scope_is_rewarmed_and_the_repeat_is_a_hit() {
    let (memu, proxy) = seen_once(true, |_| {}).await;
    memu.set_latency(Duration::ZERO);
    // As the app does: ask, memorize the turn (which supersedes the answer), ask again.
    let repeat = ask("u", "What is my cat called?");
    assert_next_read_misses(&proxy, &repeat).await;
    let turn = post(
        &proxy.url(MEMORIZE),
        &memorize_body("u", "a", "Mochi is grey"),
    )
    .await;
    assert_eq!(turn.status, 200);
    assert_next_read_misses(&proxy, &repeat).await;
    let before = memu.hits(Route::Related);
    let written = post(
        &proxy.url(MEMORIZE),
        &memorize_body("u", "a", "My cat had kittens"),
    )
    .await;
    assert_eq!(written.status, 200);
    memu.complete_tasks();
    // The proxy's own poll sees the success: invalidated, then re-warmed in the background.
    let rewarmed = r#"memu_proxy_mirror_fetches_total{why="rewarm"}"#;
    wait_until("the re-warm", 10, || async {
        counted(&proxy.metrics().await, rewarmed) >= 2.0
    })
    .await;
    memu.wait_for_hits(Route::Related, before + 1).await;
    // The next turn's repeat is a fresh hit, with the memorized turn, although memU is slow now.
    memu.set_latency(Duration::from_secs(1));
    wait_until("the re-warmed answer", 5, || async {
        post(&proxy.url(RELATED), &repeat).await.cache_status() == HIT
    })
    .await;
    let hit = post(&proxy.url(RELATED), &repeat).await;
    // memU applied both memorizes (in either order; the stand-in answers its first three).
    let text = hit.text();
    assert!(
        text.contains("Mochi is grey") || text.contains("kittens"),
        "{text}"
    );
    assert_eq!(
        metric(&proxy.metrics().await, rewarmed),
        2.0,
        "listing + one repeated read"
    );
}

#[tokio::test]
async fn an_answer_from_the_shared_tier_feeds_this_replicas_mirror_too() {
    let redis = support::redis::RedisServer::start();
    let memu = MemU::start().await;
    memu.seed("u", "a", CAT);
    memu.seed("u", "a", WORK);
    // No listing reaches either replica: only the answer A fetches, which B finds in Redis.
    memu.set_route_latency(Route::DefaultCategories, Duration::from_secs(30));
    let local = |s: &mut Settings| {
        s.cache.local_answers = true;
        s.latency.budget_ms = 200;
    };
    let a = support::redis::replica(&memu, &redis.url(), local).await;
    let b = support::redis::replica(&memu, &redis.url(), local).await;
    let about = ask("u", "tell me about myself");
    assert_next_read_misses(&a, &about).await;
    wait_until("the answer in Redis", 5, || async {
        redis.keys().contains("memu-proxy:e:")
    })
    .await;
    let shared = post(&b.url(RELATED), &about).await;
    assert_eq!(shared.cache_status(), "memu-proxy; hit; detail=shared");
    memu.set_route_latency(Route::Related, Duration::from_secs(1));
    let reply = post(&b.url(RELATED), &ask("u", "What is my cat called?")).await;
    assert_eq!(reply.cache_status(), LOCAL_BUDGET, "{}", reply.text());
    assert_eq!(
        reply.json()["related_memories"][0]["memory"]["content"],
        CAT
    );
}
