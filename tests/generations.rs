//! The newer memU generations through the real proxy: cloud v3, cloud v4 and the self-hosted
//! memU-server 1.x (memu-api-next.md §3–§7), each against the stand-in's state-backed routes with
//! the reference's shapes. Asserted on the stand-in's hit counters and exact `Cache-Status` values.

mod support;

use http::Method;
use serde_json::{json, Value};
use support::call::{Call, KEY_1, KEY_2};
use support::memu::Shape;
use support::*;

/// A JSON object's keys, sorted.
fn keys(value: &Value) -> Vec<&str> {
    let mut keys: Vec<&str> = value
        .as_object()
        .unwrap_or_else(|| panic!("not an object: {value}"))
        .keys()
        .map(String::as_str)
        .collect();
    keys.sort_unstable();
    keys
}

// ---- The stand-in itself: the reference's shapes ---------------------------------------------

#[tokio::test]
async fn the_stand_in_answers_v3_with_the_reference_shapes() {
    let memu = MemU::start().await;
    let base = memu.url();
    let written = Call::v3_memorize(KEY_1, "u", "a", "I like tea")
        .send_to(&base)
        .await;
    let task = written.json();
    assert_eq!(keys(&task), ["message", "status", "task_id"]);
    assert_eq!(task["status"], "PENDING");
    let task_id = task["task_id"].as_str().unwrap();
    assert_eq!(task_id.len(), 27, "KSUID-like, as issue #356's");
    let status_path = format!("{base}/api/v3/memory/memorize/status/{task_id}");
    let status = send(Method::GET, &status_path, &[("authorization", KEY_1)], "").await;
    assert_eq!(
        status.json(),
        json!({"task_id": task_id, "status": "PENDING", "detail_info": ""})
    );
    memu.complete_tasks();
    let status = send(Method::GET, &status_path, &[("authorization", KEY_1)], "").await;
    assert_eq!(status.json()["status"], "SUCCESS");

    let retrieved = Call::v3_retrieve(KEY_1, "u", "a", json!("tea?"))
        .send_to(&base)
        .await
        .json();
    assert_eq!(
        keys(&retrieved),
        [
            "categories",
            "items",
            "needs_retrieval",
            "next_step_query",
            "original_query",
            "resources",
            "rewritten_query"
        ]
    );
    assert_eq!(
        keys(&retrieved["items"][0]),
        [
            "agent_id",
            "created_at",
            "extra",
            "happened_at",
            "id",
            "memory_type",
            "resource_id",
            "score",
            "summary",
            "updated_at",
            "user_id"
        ]
    );
    assert_eq!(retrieved["items"][0]["summary"], "I like tea");
    let categories = Call::v3_categories(KEY_1, "u", None).send_to(&base).await;
    assert_eq!(categories.json()["categories"][0]["name"], "personal_info");
    let other_project = Call::v3_categories(KEY_2, "u", None).send_to(&base).await;
    assert_eq!(other_project.json(), json!({"categories": []}));
}

#[tokio::test]
async fn the_stand_in_answers_v4_with_the_reference_shapes() {
    let memu = MemU::start().await;
    let base = memu.url();
    let committed = Call::v4_commit(KEY_1, "default", "default", "tea", "Alice drinks tea")
        .send_to(&base)
        .await
        .json();
    assert_eq!(keys(&committed), ["recall_files", "resources"]);
    let file_keys = [
        "agent_id",
        "content",
        "created_at",
        "description",
        "id",
        "name",
        "track",
        "updated_at",
        "user_id",
    ];
    assert_eq!(keys(&committed["recall_files"][0]), file_keys);
    let listed = Call::v4_list(KEY_1, "user_id=default&agent_id=default")
        .send_to(&base)
        .await
        .json();
    assert_eq!(keys(&listed), ["next_cursor", "recall_files"]);
    assert_eq!(listed["next_cursor"], Value::Null);
    assert_eq!(listed["recall_files"], committed["recall_files"]);
    // Missing ids mean "default"; another key is another project.
    let defaulted = Call::v4_list(KEY_1, "").send_to(&base).await.json();
    assert_eq!(defaulted, listed);
    let other_project = Call::v4_list(KEY_2, "").send_to(&base).await.json();
    assert_eq!(
        other_project,
        json!({"recall_files": [], "next_cursor": null})
    );
    let found = Call::v4_search(KEY_1, "default", "default", "Which tea?")
        .send_to(&base)
        .await
        .json();
    assert_eq!(keys(&found), ["files", "resources", "segments"]);
    assert_eq!(found["files"][0]["name"], "tea");
    assert!(found["files"][0]["score"].as_f64().unwrap() > 0.0);

    // An upsert by (track, name): the same name replaces, keeping its id.
    Call::v4_commit(
        KEY_1,
        "default",
        "default",
        "tea",
        "Alice now drinks coffee",
    )
    .send_to(&base)
    .await;
    Call::v4_commit(KEY_1, "default", "default", "pets", "Mochi the cat")
        .send_to(&base)
        .await;
    let first = Call::v4_list(KEY_1, "limit=1").send_to(&base).await.json();
    assert_eq!(first["recall_files"][0]["name"], "pets");
    let cursor = first["next_cursor"].as_str().unwrap();
    assert!(cursor.ends_with('='), "padded base64url: {cursor}");
    let params = form_urlencoded::Serializer::new(String::new())
        .append_pair("cursor", cursor)
        .append_pair("limit", "1")
        .finish();
    let second = Call::v4_list(KEY_1, &params).send_to(&base).await.json();
    assert_eq!(
        second["recall_files"][0]["content"],
        "Alice now drinks coffee"
    );
    assert_eq!(
        second["recall_files"][0]["id"],
        committed["recall_files"][0]["id"]
    );
    assert_eq!(second["next_cursor"], Value::Null);
}

#[tokio::test]
async fn the_stand_in_answers_memu_server_with_the_reference_shapes() {
    let memu = MemU::start().await;
    let base = memu.url();
    let written = Call::server_memorize("bob", None, "Bob has two cats")
        .send_to(&base)
        .await
        .json();
    assert_eq!(keys(&written), ["result", "status"]);
    assert_eq!(written["status"], "success");
    assert_eq!(keys(&written["result"]), ["message", "status", "task_id"]);
    assert_eq!(written["result"]["status"], "PENDING");
    let task_id = written["result"]["task_id"].as_str().unwrap();
    let hex = task_id.strip_prefix("memorize-").unwrap();
    assert!(hex.len() == 32 && hex.bytes().all(|b| b.is_ascii_hexdigit()));
    let status_url = format!("{base}/memorize/status/{task_id}");
    let status = get(&status_url).await.json();
    assert_eq!(
        status,
        json!({"status": "success", "result": {"task_id": task_id, "status": "RUNNING", "detail": null}})
    );
    memu.complete_tasks();
    let status = get(&status_url).await.json();
    assert_eq!(status["result"]["status"], "COMPLETED");
    assert_eq!(status["result"]["detail"], "SUCCESS");
    assert_eq!(
        get(&format!("{base}/memorize/status/t-1")).await.status,
        422
    );

    // /retrieve searches every user's memories, whoever asks.
    let retrieved = Call::server_retrieve(" cats? ").send_to(&base).await.json();
    assert_eq!(
        keys(&retrieved["result"]),
        keys(&Call::server_retrieve("").fallback()["result"])
    );
    assert_eq!(retrieved["result"]["original_query"], "cats?");
    assert_eq!(retrieved["result"]["items"][0]["user_id"], "bob");
    let blank = Call::server_retrieve(" ").send_to(&base).await;
    assert_eq!(blank.status, 400);
    // "" is a real agent filter; absent means every agent.
    let no_agent = Call::server_categories("bob", Some(""))
        .send_to(&base)
        .await;
    assert_eq!(no_agent.json()["result"]["categories"][0]["agent_id"], "");
    let other_agent = Call::server_categories("bob", Some("x"))
        .send_to(&base)
        .await;
    assert_eq!(
        other_agent.json(),
        json!({"status": "success", "result": {"categories": []}})
    );
    let cleared = Call::server_clear(json!({"user_id": "bob"}))
        .send_to(&base)
        .await
        .json();
    assert_eq!(
        cleared,
        json!({"status": "success", "result": {"purged_categories": 1, "purged_items": 1, "purged_resources": 1}})
    );
    let nothing = Call::server_clear(json!({"user_id": " "}))
        .send_to(&base)
        .await;
    assert_eq!(nothing.status, 422);
    // FastAPI's redirect_slashes.
    let slash = post_with(&format!("{base}/retrieve/"), &json!({"query": "x"}), &[]).await;
    assert_eq!(slash.status, 307);
    assert_eq!(slash.header("location"), format!("{base}/retrieve"));
}

// ---- Reads are stored, then served byte for byte ---------------------------------------------

/// Each read misses and is stored, then hits with memU's own answer, byte for byte; the stand-in
/// was asked once.
async fn stored_then_hit(memu: &MemU, proxy: &Proxy, reads: &[Call]) {
    for read in reads {
        let first = read.misses(proxy).await;
        assert!(
            first.text().contains("green tea"),
            "{read:?}: {}",
            first.text()
        );
        let second = read.hits(proxy).await;
        assert_eq!(second.body, first.body, "{read:?}");
        assert_eq!(second.header("content-type"), "application/json");
        assert_eq!(memu.hits(read.route), 1, "{read:?}");
        let direct = read.send_to(&memu.url()).await;
        assert_eq!(first.body, direct.body, "memU's own answer: {read:?}");
    }
}

#[tokio::test]
async fn v3_reads_are_stored_then_served_byte_for_byte() {
    let memu = MemU::start().await;
    memu.seed_v3(KEY_1, "u1", "a1", "Alice drinks green tea every morning");
    let proxy = Proxy::start(&memu.url(), |_| {}).await;
    let reads = [
        Call::v3_retrieve(KEY_1, "u1", "a1", json!("What tea do I drink?")),
        Call::v3_categories(KEY_1, "u1", Some("a1")),
    ];
    stored_then_hit(&memu, &proxy, &reads).await;
}

#[tokio::test]
async fn v4_reads_are_stored_then_served_byte_for_byte() {
    let memu = MemU::start().await;
    memu.seed_v4(KEY_1, "default", "default", "tea", "Alice drinks green tea");
    let proxy = Proxy::start(&memu.url(), |_| {}).await;
    let reads = [
        Call::v4_list(KEY_1, "user_id=default&agent_id=default"),
        Call::v4_search(KEY_1, "default", "default", "Which tea?"),
    ];
    stored_then_hit(&memu, &proxy, &reads).await;
}

#[tokio::test]
async fn memu_server_reads_are_stored_then_served_byte_for_byte() {
    let memu = MemU::start().await;
    memu.seed_server("u1", "a1", "Alice drinks green tea every morning");
    let proxy = Proxy::start(&memu.url(), |_| {}).await;
    let reads = [
        Call::server_retrieve("What tea do I drink?"),
        Call::server_categories("u1", Some("a1")),
    ];
    stored_then_hit(&memu, &proxy, &reads).await;
}

// ---- Tenants, users and agents never share ---------------------------------------------------

/// Each read gets its own marker's answer, and no other marker's, on its miss and on its hit.
async fn isolated(proxy: &Proxy, reads: &[(Call, &str)]) {
    let markers: Vec<&str> = reads.iter().map(|(_, marker)| *marker).collect();
    let only_its_own = |read: &Call, reply: &Reply, marker: &str| {
        let text = reply.text();
        let found: Vec<&str> = markers
            .iter()
            .copied()
            .filter(|m| text.contains(m))
            .collect();
        assert_eq!(found, [marker], "{read:?}: {text}");
    };
    for (read, marker) in reads {
        only_its_own(read, &read.misses(proxy).await, marker);
    }
    for (read, marker) in reads {
        only_its_own(read, &read.hits(proxy).await, marker);
    }
}

#[tokio::test]
async fn v3_api_keys_users_and_agents_never_share_answers() {
    let memu = MemU::start().await;
    let scopes = [
        (KEY_1, "u1", "a1", "tea-of-key1-u1-a1"),
        (KEY_2, "u1", "a1", "tea-of-key2-u1-a1"),
        (KEY_1, "u2", "a1", "tea-of-key1-u2-a1"),
        (KEY_1, "u1", "a2", "tea-of-key1-u1-a2"),
    ];
    for (key, user, agent, marker) in scopes {
        memu.seed_v3(key, user, agent, marker);
    }
    let proxy = Proxy::start(&memu.url(), |_| {}).await;
    let retrieves: Vec<(Call, &str)> = scopes
        .iter()
        .map(|(key, user, agent, marker)| {
            let query = json!("Which tea?");
            (Call::v3_retrieve(key, user, agent, query), *marker)
        })
        .collect();
    isolated(&proxy, &retrieves).await;
    let categories: Vec<(Call, &str)> = scopes
        .iter()
        .map(|(key, user, agent, marker)| (Call::v3_categories(key, user, Some(agent)), *marker))
        .collect();
    isolated(&proxy, &categories).await;
    assert_eq!(memu.hits(Route::V3Retrieve), 4);
    assert_eq!(memu.hits(Route::V3Categories), 4);
}

#[tokio::test]
async fn v4_the_api_key_is_the_only_boundary_between_default_scopes() {
    let memu = MemU::start().await;
    // Every shipped memu-cli command sends default/default: only the key tells projects apart.
    let scopes = [
        (KEY_1, "default", "default", "tea-of-key1"),
        (KEY_2, "default", "default", "tea-of-key2"),
        (KEY_1, "u2", "default", "tea-of-u2"),
        (KEY_1, "default", "a2", "tea-of-a2"),
    ];
    for (key, user, agent, marker) in scopes {
        memu.seed_v4(key, user, agent, "tea", marker);
    }
    let proxy = Proxy::start(&memu.url(), |_| {}).await;
    let lists: Vec<(Call, &str)> = scopes
        .iter()
        .map(|(key, user, agent, marker)| {
            let params = format!("user_id={user}&agent_id={agent}");
            (Call::v4_list(key, &params), *marker)
        })
        .collect();
    isolated(&proxy, &lists).await;
    let searches: Vec<(Call, &str)> = scopes
        .iter()
        .map(|(key, user, agent, marker)| (Call::v4_search(key, user, agent, "tea"), *marker))
        .collect();
    isolated(&proxy, &searches).await;
    assert_eq!(memu.hits(Route::V4List), 4);
    assert_eq!(memu.hits(Route::V4Search), 4);
}

#[tokio::test]
async fn memu_server_users_and_agents_never_share_categories() {
    let memu = MemU::start().await;
    memu.seed_server("u1", "a1", "tea-of-u1-a1");
    memu.seed_server("u2", "a1", "tea-of-u2-a1");
    memu.seed_server("u1", "", "tea-of-u1-without-agent");
    let proxy = Proxy::start(&memu.url(), |_| {}).await;
    let reads = [
        (Call::server_categories("u1", Some("a1")), "tea-of-u1-a1"),
        (Call::server_categories("u2", Some("a1")), "tea-of-u2-a1"),
        // "" is a real filter (memorized without an agent), not "every agent".
        (
            Call::server_categories("u1", Some("")),
            "tea-of-u1-without-agent",
        ),
    ];
    isolated(&proxy, &reads).await;
    let every_agent = Call::server_categories("u1", None).misses(&proxy).await;
    assert!(every_agent.text().contains("tea-of-u1-a1"));
    assert!(every_agent.text().contains("tea-of-u1-without-agent"));
    assert_eq!(memu.hits(Route::ServerCategories), 4);
}

// ---- Writes invalidate -------------------------------------------------------------------------

/// Reads each, so that each is cached.
async fn warm(proxy: &Proxy, reads: &[&Call]) {
    for read in reads {
        read.misses(proxy).await;
        read.hits(proxy).await;
    }
}

/// Waits until the proxy has seen a memorize task succeed (in its own background poll: no client
/// here polls) and invalidated again.
async fn task_success_seen(proxy: &Proxy) {
    let series = r#"memu_proxy_cache_invalidations_total{cause="task_success",kind="supersede"}"#;
    wait_until("the proxy's poll to see the task succeed", 10, || async {
        counted(&proxy.metrics().await, series) > 0.0
    })
    .await;
}

#[tokio::test]
async fn a_v3_memorize_invalidates_the_users_reads_at_once_and_after_success() {
    let memu = MemU::start().await;
    let proxy = Proxy::start(&memu.url(), |_| {}).await;
    let pets = |user, agent| Call::v3_retrieve(KEY_1, user, agent, json!("What pets do I have?"));
    let (retrieve, other_agent, other_user) = (pets("u", "a"), pets("u", "b"), pets("v", "a"));
    let categories = Call::v3_categories(KEY_1, "u", None);
    warm(&proxy, &[&retrieve, &other_agent, &categories, &other_user]).await;

    let written = Call::v3_memorize(KEY_1, "u", "a", "I adopted a cat named Mochi")
        .send(&proxy)
        .await;
    assert_eq!(written.status, 200);
    assert_eq!(written.json()["status"], "PENDING");
    assert_eq!(written.cache_status(), "memu-proxy; fwd=bypass");
    // The cloud's agent semantics are unknown: every read of the user misses.
    for read in [&retrieve, &other_agent, &categories] {
        let reply = read.misses(&proxy).await;
        assert!(!reply.text().contains("Mochi"), "not applied yet");
    }
    other_user.hits(&proxy).await;
    // Cached again while memU is still applying the write.
    retrieve.hits(&proxy).await;

    memu.complete_tasks();
    task_success_seen(&proxy).await;
    for read in [&retrieve, &categories] {
        let fresh = read.misses(&proxy).await;
        assert!(fresh.text().contains("Mochi"), "{}", fresh.text());
    }
    other_agent.misses(&proxy).await;
    other_user.hits(&proxy).await;
    assert_eq!(memu.hits(Route::V3Memorize), 1, "forwarded once");
    let polls: Vec<Seen> = memu
        .seen()
        .into_iter()
        .filter(|s| s.uri.starts_with("/api/v3/memory/memorize/status/"))
        .collect();
    assert!(!polls.is_empty());
    for poll in polls {
        assert_eq!(poll.method, Method::GET);
        assert_eq!(poll.headers["authorization"], KEY_1, "the writer's key");
    }
}

#[tokio::test]
async fn a_v4_commit_invalidates_that_scopes_pages_and_searches() {
    let memu = MemU::start().await;
    let proxy = Proxy::start(&memu.url(), |_| {}).await;
    let list = Call::v4_list(KEY_1, "user_id=default&agent_id=default");
    let search = Call::v4_search(KEY_1, "default", "default", "Which tea?");
    let other_agent = Call::v4_list(KEY_1, "user_id=default&agent_id=a2");
    let other_user = Call::v4_search(KEY_1, "u2", "default", "Which tea?");
    warm(&proxy, &[&list, &search, &other_agent, &other_user]).await;

    let committed = Call::v4_commit(KEY_1, "default", "default", "tea", "Alice drinks green tea")
        .send(&proxy)
        .await;
    assert_eq!(committed.status, 200);
    assert_eq!(committed.cache_status(), "memu-proxy; fwd=bypass");
    assert_eq!(committed.json()["recall_files"][0]["name"], "tea");
    // Synchronous: the next reads of the scope show the committed file.
    let page = list.misses(&proxy).await.json();
    assert_eq!(page["recall_files"][0]["content"], "Alice drinks green tea");
    let found = search.misses(&proxy).await.json();
    assert_eq!(found["files"][0]["name"], "tea");
    other_agent.hits(&proxy).await;
    other_user.hits(&proxy).await;
    assert_eq!(memu.hits(Route::V4Commit), 1, "forwarded once");
}

#[tokio::test]
async fn a_memu_server_memorize_invalidates_every_retrieve_and_the_users_categories() {
    let memu = MemU::start().await;
    memu.seed_server("alice", "", "Alice drinks green tea");
    let proxy = Proxy::start(&memu.url(), |_| {}).await;
    // /retrieve is global: a query about Alice is stale after Bob's memorize too.
    let about_alice = Call::server_retrieve("Which tea?");
    let about_bob = Call::server_retrieve("Who has cats?");
    let bobs = Call::server_categories("bob", None);
    let alices = Call::server_categories("alice", None);
    warm(&proxy, &[&about_alice, &about_bob, &bobs, &alices]).await;

    let written = Call::server_memorize("bob", None, "Bob has two cats")
        .send(&proxy)
        .await;
    assert_eq!(written.status, 200);
    assert_eq!(written.json()["result"]["status"], "PENDING");
    for read in [&about_alice, &about_bob, &bobs] {
        let reply = read.misses(&proxy).await;
        assert!(!reply.text().contains("two cats"), "not applied yet");
    }
    alices.hits(&proxy).await;
    about_bob.hits(&proxy).await;

    memu.complete_tasks();
    task_success_seen(&proxy).await;
    for read in [&about_bob, &bobs] {
        let fresh = read.misses(&proxy).await;
        assert!(
            fresh.text().contains("Bob has two cats"),
            "{}",
            fresh.text()
        );
    }
    about_alice.misses(&proxy).await;
    alices.hits(&proxy).await;
    assert_eq!(memu.hits(Route::ServerMemorize), 1, "forwarded once");
    assert!(
        memu.hits(Route::ServerStatus) >= 1,
        "the proxy polled the task"
    );
}

#[tokio::test]
async fn a_memu_server_clear_invalidates_every_retrieve_and_the_users_categories() {
    let memu = MemU::start().await;
    memu.seed_server("alice", "a", "Alice drinks green tea");
    memu.seed_server("bob", "a", "Bob drinks black tea");
    let proxy = Proxy::start(&memu.url(), |_| {}).await;
    let tea = Call::server_retrieve("Which tea?");
    let alices = Call::server_categories("alice", None);
    let bobs = Call::server_categories("bob", None);
    warm(&proxy, &[&tea, &alices, &bobs]).await;

    let cleared = Call::server_clear(json!({"user_id": "alice"}))
        .send(&proxy)
        .await;
    assert_eq!(
        cleared.json(),
        json!({"status": "success", "result": {"purged_categories": 1, "purged_items": 1, "purged_resources": 1}})
    );
    let after = tea.misses(&proxy).await.text();
    assert!(
        after.contains("Bob drinks") && !after.contains("Alice drinks"),
        "{after}"
    );
    let none = alices.misses(&proxy).await.json();
    assert_eq!(none["result"]["categories"], json!([]));
    bobs.hits(&proxy).await;

    // Only an agent: that agent of every user, so every read misses.
    Call::server_clear(json!({"agent_id": "a"}))
        .send(&proxy)
        .await;
    for read in [&tea, &alices, &bobs] {
        read.misses(&proxy).await;
    }
    assert_eq!(memu.hits(Route::ServerClear), 2);
}

// ---- Keys: v4's GET and POST on one path, its query strings; v3's message lists ----------------

#[tokio::test]
async fn on_the_v4_collection_get_is_a_cached_read_and_post_a_forwarded_write() {
    let memu = MemU::start().await;
    let proxy = Proxy::start(&memu.url(), |_| {}).await;
    let list = Call::v4_list(KEY_1, "user_id=default&agent_id=default");
    warm(&proxy, &[&list]).await;
    let commit = Call::v4_commit(KEY_1, "default", "default", "tea", "Alice drinks green tea");
    for n in 1..=2 {
        let committed = commit.send(&proxy).await;
        assert_eq!(committed.status, 200);
        assert_eq!(committed.cache_status(), "memu-proxy; fwd=bypass");
        assert_eq!(
            keys(&committed.json()),
            ["recall_files", "resources"],
            "the commit's own answer, not a cached page"
        );
        assert_eq!(memu.hits(Route::V4Commit), n, "every POST is forwarded");
        list.misses(&proxy).await;
        list.hits(&proxy).await;
    }
    assert_eq!(memu.hits(Route::V4List), 3);
}

#[tokio::test]
async fn v4_list_keys_are_the_sorted_decoded_parameters() {
    let memu = MemU::start().await;
    let proxy = Proxy::start(&memu.url(), |_| {}).await;
    let first_page = Call::v4_list(KEY_1, "user_id=default&agent_id=default");
    first_page.misses(&proxy).await;
    Call::v4_list(KEY_1, "agent_id=default&user_id=default")
        .hits(&proxy)
        .await;
    let next_page = Call::v4_list(KEY_1, "user_id=default&agent_id=default&cursor=abc%3D");
    next_page.misses(&proxy).await;
    next_page.hits(&proxy).await;
    // Percent-decoded: the same cursor.
    Call::v4_list(KEY_1, "cursor=abc=&agent_id=default&user_id=default")
        .hits(&proxy)
        .await;
    // The server's default page size is not an explicit limit.
    Call::v4_list(KEY_1, "user_id=default&agent_id=default&limit=50")
        .misses(&proxy)
        .await;
    first_page.hits(&proxy).await;
    assert_eq!(memu.hits(Route::V4List), 3);
    let forwarded: Vec<String> = memu.seen().into_iter().map(|s| s.uri).collect();
    assert_eq!(
        forwarded,
        [
            "/api/v4/memory?user_id=default&agent_id=default",
            "/api/v4/memory?user_id=default&agent_id=default&cursor=abc%3D",
            "/api/v4/memory?user_id=default&agent_id=default&limit=50",
        ],
        "query strings are forwarded as sent"
    );
}

#[tokio::test]
async fn v4_pages_followed_by_next_cursor_are_cached_apart() {
    let memu = MemU::start().await;
    memu.seed_v4(KEY_1, "default", "default", "pets", "Mochi the cat");
    memu.seed_v4(KEY_1, "default", "default", "tea", "Alice drinks green tea");
    let proxy = Proxy::start(&memu.url(), |_| {}).await;
    let first = Call::v4_list(KEY_1, "user_id=default&agent_id=default&limit=1");
    let page = first.misses(&proxy).await.json();
    assert_eq!(page["recall_files"][0]["name"], "pets");
    // As httpx sends it: the padding percent-encoded.
    let params = form_urlencoded::Serializer::new(String::from("user_id=default&agent_id=default"))
        .append_pair("cursor", page["next_cursor"].as_str().unwrap())
        .append_pair("limit", "1")
        .finish();
    assert!(params.contains("%3D"), "{params}");
    let second = Call::v4_list(KEY_1, &params);
    let next = second.misses(&proxy).await.json();
    assert_eq!(next["recall_files"][0]["name"], "tea");
    assert_eq!(next["next_cursor"], Value::Null);
    first.hits(&proxy).await;
    second.hits(&proxy).await;
    assert_eq!(memu.hits(Route::V4List), 2);
}

#[tokio::test]
async fn v3_message_list_queries_are_keyed_on_every_turn() {
    let memu = MemU::start().await;
    memu.seed_v3(KEY_1, "u", "a", "Mochi is a black cat");
    let proxy = Proxy::start(&memu.url(), |_| {}).await;
    let question = Call::v3_retrieve(
        KEY_1,
        "u",
        "a",
        json!([{"role": "user", "content": "What pets do I have?"}]),
    );
    question.misses(&proxy).await;
    // The same list, in other JSON bytes.
    question
        .clone()
        .with_raw_body(r#"{"query": [{"content": "What pets do I have?", "role": "user"}], "agent_id": "a", "user_id": "u"}"#)
        .hits(&proxy)
        .await;
    // An earlier turn changes the rewrite, so the answer.
    let with_context = Call::v3_retrieve(
        KEY_1,
        "u",
        "a",
        json!([{"role": "user", "content": "I moved to Paris."}, {"role": "assistant", "content": "Nice!"},
               {"role": "user", "content": "What pets do I have?"}]),
    );
    let answer = with_context.misses(&proxy).await.json();
    assert_eq!(answer["original_query"], "What pets do I have?");
    assert_ne!(answer["rewritten_query"], "What pets do I have?");
    with_context.hits(&proxy).await;
    // The last turn alone, as text, is another query again.
    Call::v3_retrieve(KEY_1, "u", "a", json!("What pets do I have?"))
        .misses(&proxy)
        .await;
    question.hits(&proxy).await;
    assert_eq!(memu.hits(Route::V3Retrieve), 3);
}

// ---- memU down: the empty answers of §6 for reads, honest errors for writes --------------------

/// Every newer generation's read.
fn every_read() -> [Call; 6] {
    [
        Call::v3_retrieve(KEY_1, "u", "a", json!("What tea do I drink?")),
        Call::v3_categories(KEY_1, "u", None),
        Call::v4_list(KEY_1, "user_id=default&agent_id=default"),
        Call::v4_search(KEY_1, "default", "default", "Which tea?"),
        Call::server_retrieve("Wie geht's? \"quoted\" 你好"),
        Call::server_categories("u", Some("a")),
    ]
}

/// Every newer generation's write.
fn every_write() -> [Call; 4] {
    [
        Call::v3_memorize(KEY_1, "u", "a", "I like tea"),
        Call::v4_commit(KEY_1, "default", "default", "tea", "Alice drinks tea"),
        Call::server_memorize("u", Some("a"), "I like tea"),
        Call::server_clear(json!({"user_id": "u"})),
    ]
}

/// Each read gets HTTP 200 with exactly its empty answer, saying why.
async fn fallbacks(proxy: &Proxy, reads: &[Call], cache_status: &str) {
    for read in reads {
        let reply = read.send(proxy).await;
        assert_eq!(reply.status, 200, "{read:?}");
        assert_eq!(reply.header("content-type"), "application/json");
        assert_eq!(reply.json(), read.fallback(), "{read:?}");
        assert_eq!(reply.cache_status(), cache_status, "{read:?}");
    }
}

#[tokio::test]
async fn with_memu_unreachable_reads_get_the_empty_answers_and_writes_a_502() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let closed = format!("http://{}", listener.local_addr().unwrap());
    drop(listener);
    // The breaker off: every request tries memU and says why it failed.
    let proxy = Proxy::start(&closed, |s| s.circuit.failure_threshold = 0).await;
    fallbacks(
        &proxy,
        &every_read(),
        "memu-proxy; fwd=miss; detail=connect",
    )
    .await;
    for write in every_write() {
        let reply = write.send(&proxy).await;
        assert_eq!(reply.status, 502, "{write:?}: never a faked success");
        assert!(reply.json()["detail"].is_string(), "{write:?}");
    }
}

#[tokio::test]
async fn with_memu_answering_503_reads_get_the_empty_answers_and_writes_the_503() {
    let memu = MemU::start().await;
    memu.set_failure(Failure::Status(503));
    let proxy = Proxy::start(&memu.url(), |s| s.circuit.failure_threshold = 0).await;
    let reads = every_read();
    fallbacks(&proxy, &reads, "memu-proxy; fwd=miss; detail=upstream-5xx").await;
    for read in &reads {
        assert_eq!(memu.hits(read.route), 1, "{read:?}");
    }
    for write in every_write() {
        let reply = write.send(&proxy).await;
        assert_eq!(reply.status, 503, "{write:?}");
        assert_eq!(reply.json(), json!({"detail": "Internal server error"}));
        assert_eq!(
            memu.hits(write.route),
            1,
            "{write:?}: forwarded once, never retried"
        );
    }
    // Nothing was stored: memU back, every read is asked again.
    memu.set_failure(Failure::None);
    for read in &reads {
        read.misses(&proxy).await;
    }
}

// ---- Answers of the wrong shape are never stored (item 5) --------------------------------------

#[tokio::test]
async fn answers_of_the_wrong_shape_are_never_stored() {
    let memu = MemU::start().await;
    let proxy = Proxy::start(&memu.url(), |_| {}).await;
    let mut reads = every_read().to_vec();
    reads.push(Call::v1_related("u", "a", "pets"));
    for shape in [Shape::List, Shape::MissingList] {
        memu.set_failure(Failure::WrongShape(shape));
        for read in &reads {
            let before = memu.hits(read.route);
            let detail = "memu-proxy; fwd=miss; detail=invalid-shape";
            fallbacks(&proxy, &[read.clone(), read.clone()], detail).await;
            assert_eq!(memu.hits(read.route), before + 2, "{shape:?} {read:?}");
        }
    }
    memu.set_failure(Failure::None);
    for read in &reads {
        read.misses(&proxy).await;
        read.hits(&proxy).await;
    }
}

// ---- Trailing slashes ------------------------------------------------------------------------

#[tokio::test]
async fn trailing_slashes_are_forwarded_as_sent_and_never_cached() {
    let memu = MemU::start().await;
    let proxy = Proxy::start(&memu.url(), |_| {}).await;
    let slashed = |call: Call, path: &str| Call {
        path_and_query: path.into(),
        ..call
    };
    // memU-server redirects (307, FastAPI's redirect_slashes); v4's collection is 404 with a
    // slash; the cloud's v3 answer is unknown (the stand-in says 404).
    let cases = [
        (slashed(Call::server_retrieve("tea"), "/retrieve/"), 307),
        (
            slashed(Call::server_categories("u", None), "/categories/"),
            307,
        ),
        (
            slashed(
                Call::v4_list(KEY_1, ""),
                "/api/v4/memory/?user_id=default&agent_id=default",
            ),
            404,
        ),
        (
            slashed(
                Call::v4_search(KEY_1, "default", "default", "tea"),
                "/api/v4/memory/search/",
            ),
            404,
        ),
        (
            slashed(
                Call::v3_retrieve(KEY_1, "u", "a", json!("tea")),
                "/api/v3/memory/retrieve/",
            ),
            404,
        ),
    ];
    for (call, status) in &cases {
        for _ in 0..2 {
            let reply = call.send(&proxy).await;
            assert_eq!(reply.status, *status, "{call:?}: memU's own answer");
            assert_eq!(reply.cache_status(), "memu-proxy; fwd=bypass", "{call:?}");
            if *status == 307 {
                let location = reply.header("location");
                let slashless = call.path_and_query.trim_end_matches('/');
                assert!(location.ends_with(slashless), "{location}");
            }
        }
    }
    let forwarded: Vec<String> = memu.seen().into_iter().map(|s| s.uri).collect();
    let sent: Vec<String> = cases
        .iter()
        .flat_map(|(call, _)| [call.path_and_query.clone(), call.path_and_query.clone()])
        .collect();
    assert_eq!(forwarded, sent, "forwarded as sent, redirects not followed");
    assert_eq!(memu.hits(Route::Other), memu.total_hits());
}

// ---- Prewarm -----------------------------------------------------------------------------------

#[tokio::test]
async fn prewarm_fills_each_generations_keys_before_the_app_asks() {
    let memu = MemU::start().await;
    memu.seed_v3(KEY_1, "u1", "a1", "Alice drinks green tea");
    memu.seed_v4(KEY_1, "u1", "a1", "tea", "Alice drinks green tea");
    memu.seed_server("u1", "a1", "Alice drinks green tea");
    let proxy = Proxy::start(&memu.url(), |_| {}).await;
    let question = "What tea do I drink?";
    // What each generation's own client sends later.
    let cases = [
        (
            "v3",
            Some(KEY_1),
            [
                Call::v3_categories(KEY_1, "u1", Some("a1")),
                Call::v3_retrieve(KEY_1, "u1", "a1", json!(question)),
            ],
        ),
        (
            "v4",
            Some(KEY_1),
            [
                Call::v4_list(KEY_1, "user_id=u1&agent_id=a1"),
                Call::v4_search(KEY_1, "u1", "a1", question),
            ],
        ),
        (
            "server",
            None,
            [
                Call::server_categories("u1", Some("a1")),
                Call::server_retrieve(question),
            ],
        ),
    ];
    let mut entries = 0.0;
    for (api, key, reads) in cases {
        let prewarm = json!({"api": api, "user_id": "u1", "agent_id": "a1", "queries": [question]});
        let headers: Vec<(&str, &str)> = key.map(|k| ("authorization", k)).into_iter().collect();
        let accepted = post_with(&proxy.url("/prewarm"), &prewarm, &headers).await;
        assert_eq!(accepted.status, 202, "{api}");
        for read in &reads {
            memu.wait_for_hits(read.route, 1).await;
        }
        // Asked; now stored.
        entries += 2.0;
        wait_until("the prewarmed answers to be stored", 10, || async {
            metric(&proxy.metrics().await, "memu_proxy_cache_entries") == entries
        })
        .await;
        for read in &reads {
            let reply = read.hits(&proxy).await;
            assert!(reply.text().contains("green tea"), "{read:?}");
            assert_eq!(memu.hits(read.route), 1, "{read:?}");
        }
    }
}

// ---- Writes and memu-sdk's retries -----------------------------------------------------------

/// memu-sdk retries POST memorize on every 5xx and on 429, 3 attempts in all (memu-api-next.md
/// §3.6). Were the proxy to give up on a memorize that memU already received (at the read
/// deadline, `upstream.timeout_ms`) and answer 504, the SDK would send it twice more: three tasks,
/// the memory stored three times (§7.6). Writes wait up to `upstream.write_timeout_ms` instead.
#[tokio::test]
async fn a_v3_memorize_memu_received_is_not_answered_with_a_status_memu_sdk_retries() {
    let memu = MemU::start().await;
    // memU registers the task on arrival; its answer arrives late.
    memu.set_route_latency(Route::V3Memorize, std::time::Duration::from_millis(800));
    let proxy = Proxy::start(&memu.url(), |s| s.upstream.timeout_ms = 300).await;
    let reply = Call::v3_memorize(KEY_1, "u", "a", "I like tea")
        .send(&proxy)
        .await;
    assert_eq!(memu.hits(Route::V3Memorize), 1, "memU has the write");
    let retried_by_the_sdk = reply.status.is_server_error() || reply.status == 429;
    assert!(
        !retried_by_the_sdk,
        "answered {}: memu-sdk sends the memorize twice more",
        reply.status
    );
}
