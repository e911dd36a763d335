//! `compat.fill_null_timestamps`: off, answers pass byte for byte; on, memories get
//! `created_at`/`updated_at` from `happened_at`, on the miss and on later hits alike.

mod support;

use support::*;

#[tokio::test]
async fn null_timestamps_are_kept_by_default() {
    let memu = MemU::start().await;
    memu.seed("u", "a", "Mochi is a cat");
    let proxy = Proxy::start(&memu.url(), |_| {}).await;
    let reply = post(&proxy.url(RELATED), &related_body("u", Some("a"), "cat")).await;
    let memory = &reply.json()["related_memories"][0]["memory"];
    assert!(
        memory["created_at"].is_null() && memory["updated_at"].is_null(),
        "{memory}"
    );
}

#[tokio::test]
async fn null_timestamps_are_filled_when_enabled() {
    let memu = MemU::start().await;
    memu.seed("u", "a", "Mochi is a cat");
    let proxy = Proxy::start(&memu.url(), |s| s.compat.fill_null_timestamps = true).await;
    for expected in ["memu-proxy; fwd=miss; stored", "memu-proxy; hit"] {
        let reply = post(&proxy.url(RELATED), &related_body("u", Some("a"), "cat")).await;
        assert_eq!(reply.cache_status(), expected);
        assert_eq!(reply.header("content-length"), reply.body.len().to_string());
        let memory = &reply.json()["related_memories"][0]["memory"];
        assert_eq!(memory["created_at"], "2026-11-24T00:00:00", "{memory}");
        assert_eq!(memory["updated_at"], "2026-11-24T00:00:00");
        assert_eq!(memory["content"], "Mochi is a cat");
    }
    let categories = post(
        &proxy.url(DEFAULT_CATEGORIES),
        &serde_json::json!({"user_id": "u", "agent_id": "a"}),
    )
    .await;
    assert_eq!(
        categories.json()["categories"][0]["memories"][0]["created_at"],
        "2026-11-24T00:00:00"
    );
}
