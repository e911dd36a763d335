//! Re-warming after a memorize succeeds, for every generation that has one (v1/v2 is in
//! `local_answers.rs`): cloud v3 and memU-server 1.x. Once the proxy's own status poll sees the
//! success, the scope's listing is fetched again and, for v3, its repeated question too, so the
//! next turn's repeat is a fresh hit holding the memorized turn, although memU is slow by then.

mod support;

use std::time::Duration;

use serde_json::json;
use support::call::{Call, KEY_1};
use support::*;

const CAT: &str = "My cat is called Mochi.";
const REWARMED: &str = r#"memu_proxy_mirror_fetches_total{why="rewarm"}"#;

async fn local_proxy(memu: &MemU) -> Proxy {
    Proxy::start(&memu.url(), |s| {
        s.cache.local_answers = true;
        s.latency.budget_ms = 200;
    })
    .await
}

#[tokio::test]
async fn after_a_v3_memorize_succeeds_the_repeat_is_a_fresh_hit_holding_it() {
    let memu = MemU::start().await;
    memu.seed_v3(KEY_1, "u", "a", CAT);
    let proxy = local_proxy(&memu).await;
    // As the app does: ask, memorize the turn (superseding the answer), ask again.
    let repeat = Call::v3_retrieve(KEY_1, "u", "a", json!("What is my cat called?"));
    repeat.misses(&proxy).await;
    let turn = Call::v3_memorize(KEY_1, "u", "a", "Mochi is grey")
        .send(&proxy)
        .await;
    assert_eq!(turn.status, 200, "{}", turn.text());
    repeat.misses(&proxy).await;
    let listed = memu.hits(Route::V3Categories);
    let written = Call::v3_memorize(KEY_1, "u", "a", "Mochi had kittens")
        .send(&proxy)
        .await;
    assert_eq!(written.status, 200);
    memu.complete_tasks();
    wait_until("the re-warm", 10, || async {
        counted(&proxy.metrics().await, REWARMED) >= 2.0
    })
    .await;
    memu.wait_for_hits(Route::V3Categories, listed + 1).await;
    memu.set_latency(Duration::from_secs(1));
    wait_until("the re-warmed answer", 5, || async {
        repeat.send(&proxy).await.cache_status() == HIT
    })
    .await;
    let hit = repeat.send(&proxy).await;
    assert!(hit.text().contains("kittens"), "{}", hit.text());
    assert_eq!(
        metric(&proxy.metrics().await, REWARMED),
        2.0,
        "the listing + one repeated question"
    );
}

#[tokio::test]
async fn after_a_memu_server_memorize_completes_the_users_categories_are_listed_again() {
    let memu = MemU::start().await;
    let proxy = local_proxy(&memu).await;
    let categories = Call::server_categories("u", None);
    categories.misses(&proxy).await;
    let listed = memu.hits(Route::ServerCategories);
    let written = Call::server_memorize("u", None, "My cat is called Mochi")
        .send(&proxy)
        .await;
    assert_eq!(written.status, 200, "{}", written.text());
    memu.complete_tasks();
    wait_until("the re-warm", 10, || async {
        counted(&proxy.metrics().await, REWARMED) >= 1.0
    })
    .await;
    memu.wait_for_hits(Route::ServerCategories, listed + 1)
        .await;
    memu.set_latency(Duration::from_secs(1));
    let hit = categories.send(&proxy).await;
    assert_eq!(hit.cache_status(), HIT);
    assert!(hit.text().contains("Mochi"), "{}", hit.text());
}

#[tokio::test]
async fn with_local_answers_off_nothing_is_fetched_after_a_write() {
    let memu = MemU::start().await;
    memu.seed_v3(KEY_1, "u", "a", CAT);
    let proxy = Proxy::start(&memu.url(), |s| s.latency.budget_ms = 200).await;
    let repeat = Call::v3_retrieve(KEY_1, "u", "a", json!("What is my cat called?"));
    repeat.misses(&proxy).await;
    Call::v3_memorize(KEY_1, "u", "a", "Mochi is grey")
        .send(&proxy)
        .await;
    repeat.misses(&proxy).await;
    Call::v3_memorize(KEY_1, "u", "a", "Mochi had kittens")
        .send(&proxy)
        .await;
    let reads = memu.hits(Route::V3Retrieve);
    memu.complete_tasks();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(memu.hits(Route::V3Retrieve), reads);
    assert_eq!(memu.hits(Route::V3Categories), 0);
    assert_eq!(
        series(&proxy.metrics().await, REWARMED),
        None,
        "never counted"
    );
}
