//! Local answers for cloud v3, cloud v4 and memU-server 1.x (`cache.local_answers`): a question
//! memU cannot answer in time gets the memories the proxy has seen in that generation's answers
//! for that scope, ranked for the question, in the route's exact shape (the same top-level fields
//! as memU's own answer, each memory as memU sent it but for its `score`); never another scope's,
//! never after a purge (v3 delete, v4 commit, memU-server `/clear`).

mod support;

use std::collections::BTreeSet;
use std::time::Duration;

use serde_json::{json, Value};
use support::call::{Call, KEY_1, KEY_2};
use support::*;

const CAT: &str = "My cat is called Mochi.";
const WORK: &str = "I work at a bakery in Osaka.";
const LOCAL_BUDGET: &str = "memu-proxy; fwd=miss; detail=budget; local";
const EMPTY_BUDGET: &str = "memu-proxy; fwd=miss; detail=budget";
const FIRST_SIGHT: &str = r#"memu_proxy_mirror_fetches_total{why="first_sight"}"#;

async fn local_proxy(memu: &MemU) -> Proxy {
    Proxy::start(&memu.url(), |s| {
        s.cache.local_answers = true;
        s.latency.budget_ms = 200;
    })
    .await
}

/// The top-level fields of an answer (of `result` for memU-server's wrapped answers).
fn fields(answer: &Value) -> BTreeSet<String> {
    answer
        .as_object()
        .map(|o| o.keys().cloned().collect())
        .unwrap_or_default()
}

/// A memory without its `score` (memU's is for another query; a local answer's is the proxy's).
fn unscored(memory: &Value) -> Value {
    let mut memory = memory.clone();
    if let Some(memory) = memory.as_object_mut() {
        memory.remove("score");
    }
    memory
}

/// Asserts `reply` is a local answer of `call`'s route with exactly the top-level fields of
/// memU's own answer to `call` (asked directly), every list a list. Returns the answer.
async fn assert_local(memu: &MemU, call: &Call, reply: &Reply) -> Value {
    assert_eq!(reply.status, 200, "{call:?}: {}", reply.text());
    assert_eq!(
        reply.cache_status(),
        LOCAL_BUDGET,
        "{call:?}: {}",
        reply.text()
    );
    let own = call.send_to(&memu.url()).await.json();
    let answer = reply.json();
    assert_eq!(fields(&answer), fields(&own), "{answer}");
    if let Some(result) = own.get("result") {
        assert_eq!(fields(&answer["result"]), fields(result), "{answer}");
    }
    answer
}

/// Asserts `reply` is the route's empty fallback, holding nothing about the cat.
fn assert_empty(call: &Call, reply: &Reply) {
    assert_eq!(
        reply.cache_status(),
        EMPTY_BUDGET,
        "{call:?}: {}",
        reply.text()
    );
    assert_eq!(reply.json(), call.fallback(), "{call:?}");
    assert!(!reply.text().contains("Mochi"), "{call:?}");
}

// ---- cloud v3 ----------------------------------------------------------------------------------

fn v3_ask(key: &'static str, user: &str, question: &str) -> Call {
    Call::v3_retrieve(key, user, "a", json!(question))
}

/// memU v3 knows two facts of (key-1, u, a); the proxy has seen them once; memU is slow now.
async fn v3_seen_once() -> (MemU, Proxy, Value) {
    let memu = MemU::start().await;
    memu.seed_v3(KEY_1, "u", "a", CAT);
    memu.seed_v3(KEY_1, "u", "a", WORK);
    let proxy = local_proxy(&memu).await;
    let seen = v3_ask(KEY_1, "u", "tell me about myself")
        .misses(&proxy)
        .await
        .json();
    assert!(seen.to_string().contains("Mochi"));
    memu.set_latency(Duration::from_secs(1));
    (memu, proxy, seen)
}

#[tokio::test]
async fn v3_a_new_question_memu_cannot_answer_in_time_gets_the_item_it_is_about() {
    let (memu, proxy, seen) = v3_seen_once().await;
    let call = v3_ask(KEY_1, "u", "What is my cat called?");
    let answer = assert_local(&memu, &call, &call.send(&proxy).await).await;
    let items = answer["items"].as_array().unwrap();
    assert_eq!(items[0]["summary"], CAT, "{answer}");
    assert!(items.iter().all(|i| i["summary"] != WORK), "{answer}");
    let memu_sent = seen["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["summary"] == CAT)
        .unwrap();
    assert_eq!(unscored(&items[0]), unscored(memu_sent));
    assert!(items[0]["score"].as_f64().unwrap() > 0.0);
    assert_eq!(answer["resources"], json!([]));
    assert_eq!(answer["next_step_query"], Value::Null);
    assert_eq!(answer["original_query"], "What is my cat called?");
}

#[tokio::test]
async fn v3_a_question_as_a_list_of_messages_is_answered_by_its_last_message() {
    let (memu, proxy, _) = v3_seen_once().await;
    let messages = json!([{"role": "user", "content": "I am hungry."},
                          {"role": "assistant", "content": "Noted."},
                          {"role": "user", "content": "Where do I work?"}]);
    let call = Call::v3_retrieve(KEY_1, "u", "a", messages);
    let answer = assert_local(&memu, &call, &call.send(&proxy).await).await;
    assert_eq!(answer["items"][0]["summary"], WORK, "{answer}");
}

#[tokio::test]
async fn v3_after_a_delete_no_local_answer_holds_what_was_deleted() {
    let (memu, proxy, _) = v3_seen_once().await;
    memu.set_latency(Duration::ZERO);
    let delete = Call::post(
        Route::V3Delete,
        "/api/v3/memory/delete",
        Some(KEY_1),
        json!({"user_id": "u", "agent_id": "a"}),
    );
    assert_eq!(delete.send(&proxy).await.status, 200);
    memu.set_latency(Duration::from_secs(1));
    let call = v3_ask(KEY_1, "u", "What is my cat called?");
    assert_empty(&call, &call.send(&proxy).await);
}

#[tokio::test]
async fn v3_another_scope_never_gets_these_items() {
    let (_memu, proxy, _) = v3_seen_once().await;
    for call in [
        v3_ask(KEY_2, "u", "What is my cat called?"),
        v3_ask(KEY_1, "v", "What is my cat called?"),
        Call::v3_retrieve(KEY_1, "u", "b", json!("What is my cat called?")),
    ] {
        assert_empty(&call, &call.send(&proxy).await);
    }
}

#[tokio::test]
async fn v3_a_scope_seen_for_the_first_time_has_its_categories_listed_once() {
    let memu = MemU::start().await;
    memu.seed_v3(KEY_1, "u", "a", CAT);
    let proxy = local_proxy(&memu).await;
    // Retrieval is slow from the first question on, the listing is not.
    memu.set_route_latency(Route::V3Retrieve, Duration::from_secs(1));
    let call = v3_ask(KEY_1, "u", "What is my cat called?");
    let reply = call.send(&proxy).await;
    assert_eq!(reply.cache_status(), LOCAL_BUDGET, "{}", reply.text());
    let answer = reply.json();
    assert!(answer["categories"][0]["summary"]
        .as_str()
        .unwrap()
        .contains("Mochi"));
    assert_eq!(answer["items"], json!([]));
    v3_ask(KEY_1, "u", "Where is Mochi?").send(&proxy).await;
    assert_eq!(memu.hits(Route::V3Categories), 1, "listed once");
    let seen = memu.seen();
    let listing = seen
        .iter()
        .find(|s| s.uri.ends_with("/categories"))
        .unwrap();
    assert_eq!(listing.headers["authorization"], KEY_1);
    assert_eq!(metric(&proxy.metrics().await, FIRST_SIGHT), 1.0);
}

// ---- cloud v4 ----------------------------------------------------------------------------------

fn v4_ask(key: &'static str, user: &str, question: &str) -> Call {
    Call::v4_search(key, user, "default", question)
}

/// memU v4 holds two recall files of (key-1, default, default); the proxy has listed them once.
async fn v4_seen_once() -> (MemU, Proxy, Value) {
    let memu = MemU::start().await;
    memu.seed_v4(KEY_1, "default", "default", "cat", CAT);
    memu.seed_v4(KEY_1, "default", "default", "work", WORK);
    let proxy = local_proxy(&memu).await;
    let seen = Call::v4_list(KEY_1, "user_id=default&agent_id=default")
        .misses(&proxy)
        .await
        .json();
    assert_eq!(seen["recall_files"].as_array().unwrap().len(), 2);
    memu.set_latency(Duration::from_secs(1));
    (memu, proxy, seen)
}

#[tokio::test]
async fn v4_a_search_memu_cannot_answer_in_time_gets_the_recall_file_it_is_about() {
    let (memu, proxy, seen) = v4_seen_once().await;
    let call = v4_ask(KEY_1, "default", "What is my cat called?");
    let answer = assert_local(&memu, &call, &call.send(&proxy).await).await;
    let files = answer["files"].as_array().unwrap();
    assert_eq!(files.len(), 1, "{answer}");
    assert_eq!(files[0]["content"], CAT);
    let memu_sent = &seen["recall_files"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["content"] == CAT)
        .unwrap();
    assert_eq!(unscored(&files[0]), **memu_sent);
    assert!(files[0]["score"].as_f64().unwrap() > 0.0);
    assert_eq!(answer["segments"], json!([]));
    assert_eq!(answer["resources"], json!([]));
}

#[tokio::test]
async fn v4_after_a_commit_no_local_answer_holds_what_it_may_have_replaced() {
    let (memu, proxy, _) = v4_seen_once().await;
    memu.set_latency(Duration::ZERO);
    let commit = Call::v4_commit(KEY_1, "default", "default", "cat", "My cat is called Kuro.");
    assert_eq!(commit.send(&proxy).await.status, 200);
    memu.set_latency(Duration::from_secs(1));
    let call = v4_ask(KEY_1, "default", "What is my cat called?");
    assert_empty(&call, &call.send(&proxy).await);
}

#[tokio::test]
async fn v4_another_scope_never_gets_these_recall_files() {
    let (_memu, proxy, _) = v4_seen_once().await;
    for call in [
        v4_ask(KEY_2, "default", "What is my cat called?"),
        v4_ask(KEY_1, "v", "What is my cat called?"),
        Call::v4_search(KEY_1, "default", "b", "What is my cat called?"),
    ] {
        assert_empty(&call, &call.send(&proxy).await);
    }
}

#[tokio::test]
async fn v4_a_scope_seen_for_the_first_time_has_its_first_page_listed_once() {
    let memu = MemU::start().await;
    memu.seed_v4(KEY_1, "default", "default", "cat", CAT);
    memu.seed_v4(KEY_1, "default", "default", "work", WORK);
    let proxy = local_proxy(&memu).await;
    memu.set_route_latency(Route::V4Search, Duration::from_secs(1));
    let call = v4_ask(KEY_1, "default", "Where do I work?");
    let answer = assert_local(&memu, &call, &call.send(&proxy).await).await;
    assert_eq!(answer["files"][0]["content"], WORK, "{answer}");
    let call = v4_ask(KEY_1, "default", "What is my cat called?");
    let answer = assert_local(&memu, &call, &call.send(&proxy).await).await;
    assert_eq!(answer["files"][0]["content"], CAT, "{answer}");
    assert_eq!(memu.hits(Route::V4List), 1, "listed once");
    let listing = memu.seen().into_iter().find(|s| s.method == "GET").unwrap();
    assert_eq!(
        listing.uri,
        "/api/v4/memory?user_id=default&agent_id=default"
    );
    assert_eq!(listing.headers["authorization"], KEY_1);
    assert_eq!(metric(&proxy.metrics().await, FIRST_SIGHT), 1.0);
}

// ---- memU-server 1.x ---------------------------------------------------------------------------

fn server_ask(question: &str) -> Call {
    Call::server_retrieve(question)
}

/// memU-server knows two facts of (u, a); the proxy has seen them in one `/retrieve` answer.
async fn server_seen_once() -> (MemU, Proxy, Value) {
    let memu = MemU::start().await;
    memu.seed_server("u", "a", CAT);
    memu.seed_server("u", "a", WORK);
    let proxy = local_proxy(&memu).await;
    let seen = server_ask("cat or work").misses(&proxy).await.json();
    assert_eq!(seen["result"]["items"].as_array().unwrap().len(), 2);
    memu.set_latency(Duration::from_secs(1));
    (memu, proxy, seen)
}

#[tokio::test]
async fn server_a_retrieve_memu_cannot_answer_in_time_gets_the_item_it_is_about() {
    let (memu, proxy, seen) = server_seen_once().await;
    let call = server_ask("What is my cat called?");
    let answer = assert_local(&memu, &call, &call.send(&proxy).await).await;
    assert_eq!(answer["status"], "success");
    let result = &answer["result"];
    let items = result["items"].as_array().unwrap();
    assert_eq!(items[0]["summary"], CAT, "{answer}");
    let memu_sent = seen["result"]["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["summary"] == CAT)
        .unwrap();
    assert_eq!(unscored(&items[0]), unscored(memu_sent));
    assert_eq!(result["original_query"], "What is my cat called?");
    assert_eq!(result["rewritten_query"], "What is my cat called?");
    assert_eq!(result["next_step_query"], Value::Null);
    assert_eq!(result["resources"], json!([]));
}

#[tokio::test]
async fn server_after_a_clear_no_local_answer_holds_what_was_cleared() {
    let (memu, proxy, _) = server_seen_once().await;
    memu.set_latency(Duration::ZERO);
    let clear = Call::server_clear(json!({"user_id": "u"}));
    assert_eq!(clear.send(&proxy).await.status, 200);
    memu.set_latency(Duration::from_secs(1));
    let call = server_ask("What is my cat called?");
    assert_empty(&call, &call.send(&proxy).await);
}

#[tokio::test]
async fn server_another_tenant_never_gets_these_items() {
    let (_memu, proxy, _) = server_seen_once().await;
    let mut call = server_ask("What is my cat called?");
    call.authorization = Some(KEY_2);
    assert_empty(&call, &call.send(&proxy).await);
}

#[tokio::test]
async fn server_a_users_categories_answer_a_retrieve_which_reads_every_user() {
    let memu = MemU::start().await;
    memu.seed_server("u", "a", CAT);
    let proxy = local_proxy(&memu).await;
    Call::server_categories("u", None).misses(&proxy).await;
    memu.set_latency(Duration::from_secs(1));
    let call = server_ask("What is my cat called?");
    let answer = assert_local(&memu, &call, &call.send(&proxy).await).await;
    let categories = answer["result"]["categories"].as_array().unwrap();
    assert!(categories[0]["summary"].as_str().unwrap().contains("Mochi"));
    assert_eq!(answer["result"]["items"], json!([]));
    // A clear of that user forgets them.
    memu.set_latency(Duration::ZERO);
    let clear = Call::server_clear(json!({"user_id": "u"}));
    assert_eq!(clear.send(&proxy).await.status, 200);
    memu.set_latency(Duration::from_secs(1));
    assert_empty(&call, &call.send(&proxy).await);
}

#[tokio::test]
async fn server_a_retrieve_naming_a_user_has_that_users_categories_listed_once() {
    let memu = MemU::start().await;
    memu.seed_server("u", "a", CAT);
    let proxy = local_proxy(&memu).await;
    memu.set_route_latency(Route::ServerRetrieve, Duration::from_secs(1));
    let body = json!({"query": "What is my cat called?", "user_id": "u"});
    let call = Call::post(Route::ServerRetrieve, "/retrieve", None, body);
    let reply = call.send(&proxy).await;
    assert_eq!(reply.cache_status(), LOCAL_BUDGET, "{}", reply.text());
    assert!(reply.json()["result"]["categories"][0]["summary"]
        .as_str()
        .unwrap()
        .contains("Mochi"));
    call.send(&proxy).await;
    assert_eq!(memu.hits(Route::ServerCategories), 1, "listed once");
    assert_eq!(metric(&proxy.metrics().await, FIRST_SIGHT), 1.0);
}
