//! Writes invalidate the writer's cached reads: memorize/delete at once, and memorize again when
//! its task reports SUCCESS; a fetch that raced a write is never served as fresh.

mod support;

use std::time::Duration;

use serde_json::json;
use support::*;

/// The read every test here warms and checks: this user and agent asking about pets.
fn pets(user: &str, agent: Option<&str>) -> serde_json::Value {
    related_body(user, agent, "pets")
}

async fn warm(proxy: &Proxy, user: &str, agent: Option<&str>) {
    post(&proxy.url(RELATED), &pets(user, agent)).await;
    assert_next_read_hits(proxy, &pets(user, agent)).await;
}

#[tokio::test]
async fn memorize_invalidates_that_agent_and_the_users_agentless_reads_only() {
    let memu = MemU::start().await;
    let proxy = Proxy::start(&memu.url(), |_| {}).await;
    for (user, agent) in [
        ("u", Some("a")),
        ("u", None),
        ("u", Some("b")),
        ("v", Some("a")),
    ] {
        warm(&proxy, user, agent).await;
    }
    let written = post(
        &proxy.url(MEMORIZE),
        &memorize_body("u", "a", "I adopted a cat"),
    )
    .await;
    assert_eq!(written.status, 200);
    assert_eq!(written.json()["status"], "PENDING");
    assert_next_read_misses(&proxy, &pets("u", Some("a"))).await;
    assert_next_read_misses(&proxy, &pets("u", None)).await;
    assert_next_read_hits(&proxy, &pets("u", Some("b"))).await;
    assert_next_read_hits(&proxy, &pets("v", Some("a"))).await;
    assert_eq!(
        memu.hits(Route::Memorize),
        1,
        "the write was forwarded once"
    );
}

#[tokio::test]
async fn a_write_under_another_api_key_or_none_still_invalidates() {
    // The self-hosted server ignores Authorization: the SDK (with a key) and the community fork
    // (without one) write and read the same memories.
    let memu = MemU::start().await;
    let proxy = Proxy::start(&memu.url(), |_| {}).await;
    warm(&proxy, "u", Some("a")).await;
    post_with(
        &proxy.url(MEMORIZE),
        &memorize_body("u", "a", "x"),
        &[("authorization", "Bearer other")],
    )
    .await;
    assert_next_read_misses(&proxy, &pets("u", Some("a"))).await;
    post_with(
        &proxy.url(DELETE),
        &serde_json::json!({"user_id": "u", "agent_id": "a"}),
        &[],
    )
    .await;
    assert_next_read_misses(&proxy, &pets("u", Some("a"))).await;
}

#[tokio::test]
async fn task_success_seen_through_the_proxy_invalidates_again() {
    let memu = MemU::start().await;
    let proxy = Proxy::start(&memu.url(), |_| {}).await;
    let body = related_body("u", Some("a"), "pets");
    let written = post(
        &proxy.url(MEMORIZE),
        &memorize_body("u", "a", "Mochi is my cat"),
    )
    .await;
    let task_id = written.json()["task_id"].as_str().unwrap().to_owned();
    // Read while memU is still applying the write: the old (empty) answer gets cached.
    assert!(!post(&proxy.url(RELATED), &body)
        .await
        .text()
        .contains("Mochi"));
    assert_next_read_hits(&proxy, &body).await;

    memu.complete_tasks();
    let status = get(&proxy.url(&format!("/api/v1/memory/memorize/status/{task_id}"))).await;
    assert_eq!(status.json()["status"], "SUCCESS");
    let fresh = assert_next_read_misses(&proxy, &body).await;
    assert!(fresh.text().contains("Mochi is my cat"), "{}", fresh.text());
    let metrics = proxy.metrics().await;
    assert_eq!(
        metric(
            &metrics,
            r#"memu_proxy_cache_invalidations_total{cause="task_success",kind="supersede"}"#
        ),
        1.0
    );
}

#[tokio::test]
async fn delete_with_null_agent_invalidates_every_agent_of_the_user() {
    let memu = MemU::start().await;
    let proxy = Proxy::start(&memu.url(), |_| {}).await;
    for (user, agent) in [
        ("u", Some("a")),
        ("u", Some("b")),
        ("u", None),
        ("v", Some("a")),
    ] {
        warm(&proxy, user, agent).await;
    }
    let deleted = post(
        &proxy.url(DELETE),
        &json!({"user_id": "u", "agent_id": null}),
    )
    .await;
    assert_eq!(deleted.json()["success"], true);
    for agent in [Some("a"), Some("b"), None] {
        assert_next_read_misses(&proxy, &pets("u", agent)).await;
    }
    assert_next_read_hits(&proxy, &pets("v", Some("a"))).await;
}

#[tokio::test]
async fn delete_of_one_agent_leaves_other_agents_cached() {
    let memu = MemU::start().await;
    let proxy = Proxy::start(&memu.url(), |_| {}).await;
    warm(&proxy, "u", Some("a")).await;
    warm(&proxy, "u", Some("b")).await;
    post(
        &proxy.url(DELETE),
        &json!({"user_id": "u", "agent_id": "a"}),
    )
    .await;
    assert_next_read_misses(&proxy, &pets("u", Some("a"))).await;
    assert_next_read_hits(&proxy, &pets("u", Some("b"))).await;
}

#[tokio::test]
async fn a_read_that_raced_a_write_is_not_served_as_fresh() {
    let memu = MemU::start().await;
    // The write completes (both invalidations done) while the read is still in flight.
    memu.set_route_latency(Route::Related, Duration::from_millis(400));
    let proxy = Proxy::start(&memu.url(), |_| {}).await;
    let body = related_body("u", Some("a"), "pets");
    // The read's fetch starts, then a write passes while it is in flight.
    let read = tokio::spawn({
        let url = proxy.url(RELATED);
        let body = body.clone();
        async move { post(&url, &body).await }
    });
    memu.wait_for_hits(Route::Related, 1).await;
    let write = post(
        &proxy.url(DELETE),
        &json!({"user_id": "u", "agent_id": "a"}),
    )
    .await;
    assert_eq!(write.status, 200);
    read.await.unwrap();
    memu.set_route_latency(Route::Related, Duration::ZERO);
    // The raced answer predates the write: the next read goes to memU again.
    assert_next_read_misses(&proxy, &body).await;
    assert_eq!(memu.hits(Route::Related), 2);
}

#[tokio::test]
async fn a_read_arriving_after_a_write_does_not_join_a_fetch_started_before_it() {
    let memu = MemU::start().await;
    // Only the read is slow: the write completes, and the next read arrives, while it is in flight.
    memu.set_route_latency(Route::Related, Duration::from_millis(600));
    let proxy = Proxy::start(&memu.url(), |_| {}).await;
    let body = related_body("u", Some("a"), "pets");
    let before = tokio::spawn({
        let (url, body) = (proxy.url(RELATED), body.clone());
        async move { post(&url, &body).await }
    });
    memu.wait_for_hits(Route::Related, 1).await;
    post(
        &proxy.url(DELETE),
        &json!({"user_id": "u", "agent_id": "a"}),
    )
    .await;
    assert!(
        !before.is_finished(),
        "premise: the first fetch is still in flight when the next read arrives"
    );
    let after = post(&proxy.url(RELATED), &body).await;
    assert!(
        !after.cache_status().contains("collapsed"),
        "{}",
        after.cache_status()
    );
    before.await.unwrap();
    assert_eq!(memu.hits(Route::Related), 2);
}

#[tokio::test]
async fn failed_writes_are_reported_and_still_invalidate() {
    let memu = MemU::start().await;
    let proxy = Proxy::start(&memu.url(), |_| {}).await;
    warm(&proxy, "u", Some("a")).await;
    memu.set_failure(Failure::Status(500));
    let failed = post(&proxy.url(MEMORIZE), &memorize_body("u", "a", "x")).await;
    assert_eq!(
        failed.status, 500,
        "memU's failure is passed on, not hidden"
    );
    memu.set_failure(Failure::None);
    // memU may have applied part of the write before failing: do not trust the old answer.
    assert_next_read_misses(&proxy, &pets("u", Some("a"))).await;
}

#[tokio::test]
async fn the_proxy_polls_memorize_tasks_itself_when_clients_do_not() {
    // Open-LLM-VTuber PR #272 memorizes fire-and-forget and never polls the status.
    let memu = MemU::start().await;
    let proxy = Proxy::start(&memu.url(), |_| {}).await;
    let body = related_body("u", Some("a"), "pets");
    post(
        &proxy.url(MEMORIZE),
        &memorize_body("u", "a", "Mochi is my cat"),
    )
    .await;
    assert!(!post(&proxy.url(RELATED), &body)
        .await
        .text()
        .contains("Mochi"));
    assert_next_read_hits(&proxy, &body).await;

    memu.complete_tasks();
    wait_until("the proxy's own status poll to see SUCCESS", 5, || async {
        let metrics = proxy.metrics().await;
        counted(
            &metrics,
            r#"memu_proxy_cache_invalidations_total{cause="task_success",kind="supersede"}"#,
        ) == 1.0
    })
    .await;
    let fresh = assert_next_read_misses(&proxy, &body).await;
    assert!(fresh.text().contains("Mochi is my cat"));
    let polls = memu
        .seen()
        .iter()
        .filter(|s| s.uri.starts_with("/api/v1/memory/memorize/status/"))
        .count();
    assert!(polls >= 1, "the proxy polled the task");
    assert_eq!(
        memu.seen()
            .iter()
            .filter(|s| s.uri.contains("/status/"))
            .last()
            .unwrap()
            .headers["authorization"],
        "Bearer key-1"
    );
}

#[tokio::test]
async fn a_slow_fetch_from_before_a_write_does_not_replace_the_newer_answer() {
    let memu = MemU::start().await;
    memu.seed("u", "a", "old memory");
    let proxy = Proxy::start(&memu.url(), |_| {}).await;
    let body = related_body("u", Some("a"), "pets");
    memu.set_route_latency(Route::Related, Duration::from_millis(600));
    let before_write = tokio::spawn({
        let (url, body) = (proxy.url(RELATED), body.clone());
        async move { post(&url, &body).await }
    });
    memu.wait_for_hits(Route::Related, 1).await;
    post(
        &proxy.url(DELETE),
        &json!({"user_id": "u", "agent_id": "a"}),
    )
    .await;
    memu.set_route_latency(Route::Related, Duration::ZERO);
    let after_write = assert_next_read_misses(&proxy, &body).await;
    assert!(!after_write.text().contains("old memory"));
    let raced = before_write.await.unwrap();
    assert!(
        raced.text().contains("old memory"),
        "the slow fetch answered from before the delete"
    );
    assert_eq!(
        raced.cache_status(),
        "memu-proxy; fwd=miss",
        "and was not stored over the newer answer"
    );
    let next = assert_next_read_hits(&proxy, &body).await;
    assert!(
        !next.text().contains("old memory"),
        "the deleted memory does not come back"
    );
}
