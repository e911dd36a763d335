//! Opt-in near-duplicate hits: a re-worded repeat is answered from the cache; a different
//! question, another user, other parameters or an invalidated entry never are.

mod support;

use support::*;

async fn similar_proxy(memu: &MemU) -> Proxy {
    Proxy::start(&memu.url(), |s| s.cache.similarity_threshold = 0.9).await
}

#[tokio::test]
async fn a_reworded_repeat_is_a_similar_hit() {
    let memu = MemU::start().await;
    memu.seed("u", "a", "It is sunny today");
    let proxy = similar_proxy(&memu).await;
    post(
        &proxy.url(RELATED),
        &related_body("u", Some("a"), "今天天气怎么样"),
    )
    .await;
    for variant in ["今天天气怎么样呀", "嗯，今天天气怎么样啊？"] {
        let reply = post(&proxy.url(RELATED), &related_body("u", Some("a"), variant)).await;
        assert_eq!(
            reply.cache_status(),
            "memu-proxy; hit; detail=similar",
            "{variant}"
        );
        assert!(reply.text().contains("sunny"));
    }
    post(
        &proxy.url(RELATED),
        &related_body("u", Some("a"), "what's my cat's name"),
    )
    .await;
    let en = post(
        &proxy.url(RELATED),
        &related_body("u", Some("a"), "Um, what is my cat's name?"),
    )
    .await;
    assert_eq!(en.cache_status(), "memu-proxy; hit; detail=similar");
    assert_eq!(memu.hits(Route::Related), 2);
    let metrics = proxy.metrics().await;
    assert_eq!(
        metric(
            &metrics,
            r#"memu_proxy_requests_total{route_class="read",outcome="similar_hit"}"#
        ),
        3.0
    );
}

#[tokio::test]
async fn different_questions_users_and_parameters_are_not_similar() {
    let memu = MemU::start().await;
    let proxy = similar_proxy(&memu).await;
    post(
        &proxy.url(RELATED),
        &related_body("u", Some("a"), "我喜欢猫吗"),
    )
    .await;
    let misses = [
        related_body("u", Some("a"), "我不喜欢猫吗"),
        related_body("u", Some("a"), "你喜欢猫吗"),
        related_body("u", Some("a"), "我喜欢狗吗"),
        related_body("v", Some("a"), "我喜欢猫吗呀"),
        related_body("u", Some("b"), "我喜欢猫吗呀"),
        serde_json::json!({"user_id": "u", "agent_id": "a", "query": "我喜欢猫吗呀", "top_k": 9, "min_similarity": 0.3}),
    ];
    for body in &misses {
        assert_next_read_misses(&proxy, body).await;
    }
    assert_eq!(memu.hits(Route::Related), 1 + misses.len());
}

#[tokio::test]
async fn an_invalidated_entry_is_not_a_similar_hit() {
    let memu = MemU::start().await;
    let proxy = similar_proxy(&memu).await;
    post(
        &proxy.url(RELATED),
        &related_body("u", Some("a"), "今天天气怎么样"),
    )
    .await;
    post(&proxy.url(MEMORIZE), &memorize_body("u", "a", "It rained")).await;
    assert_next_read_misses(&proxy, &related_body("u", Some("a"), "今天天气怎么样呀")).await;
}

#[tokio::test]
async fn similar_hits_are_off_by_default() {
    let memu = MemU::start().await;
    let proxy = Proxy::start(&memu.url(), |_| {}).await;
    post(
        &proxy.url(RELATED),
        &related_body("u", Some("a"), "今天天气怎么样"),
    )
    .await;
    assert_next_read_misses(&proxy, &related_body("u", Some("a"), "今天天气怎么样呀")).await;
}
