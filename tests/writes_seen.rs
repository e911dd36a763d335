//! Every write is seen: a write memU applies is a write the proxy invalidates for, however its path
//! is spelled (percent-encoded as uvicorn decodes it, a trailing slash) and whatever its body
//! (anything Python's `json.loads` accepts); memU's redirects lead back through the proxy; and
//! reads' failures never refuse a write.

mod support;

use std::time::Duration;

use http::Method;
use serde_json::json;
use support::*;

/// (u, a) asking about pets: warmed (stored, then a hit) before each write.
fn pets() -> serde_json::Value {
    related_body("u", Some("a"), "pets")
}

async fn warm(proxy: &Proxy) {
    post(&proxy.url(RELATED), &pets()).await;
    assert_next_read_hits(proxy, &pets()).await;
}

/// Sends a raw write body to `path` through the proxy; returns the status.
async fn write_raw(proxy: &Proxy, path: &str, body: Vec<u8>) -> u16 {
    let headers = [
        ("content-type", "application/json"),
        ("authorization", "Bearer key-1"),
    ];
    let reply = send(Method::POST, &proxy.url(path), &headers, body).await;
    reply.status.as_u16()
}

fn memorize_json() -> String {
    memorize_body("u", "a", "I adopted a cat").to_string()
}

#[tokio::test]
async fn a_write_on_a_percent_encoded_path_is_that_write() {
    let memu = MemU::start().await;
    let proxy = Proxy::start(&memu.url(), |_| {}).await;
    let paths = [
        "/api/v1/memory/memoriz%65",
        "/api/v1/memory%2Fmemorize",
        "/api/v1/memory%2fmemorize",
        "/api%2Fv1%2Fmemory%2Fmemorize",
    ];
    for (n, path) in paths.iter().enumerate() {
        warm(&proxy).await;
        let status = write_raw(&proxy, path, memorize_json().into_bytes()).await;
        assert_eq!(status, 200, "{path}: the stand-in decodes as uvicorn does");
        assert_eq!(
            memu.hits(Route::Memorize),
            n + 1,
            "{path} forwarded as a memorize"
        );
        assert_next_read_misses(&proxy, &pets()).await;
    }
}

#[tokio::test]
async fn a_write_with_a_trailing_slash_is_that_write() {
    let memu = MemU::start().await;
    let proxy = Proxy::start(&memu.url(), |_| {}).await;
    for path in ["/api/v1/memory/memorize/", "/api/v1/memory/delete/"] {
        warm(&proxy).await;
        write_raw(&proxy, path, memorize_json().into_bytes()).await;
        assert_next_read_misses(&proxy, &pets()).await;
    }
}

#[tokio::test]
async fn a_body_memu_reads_and_serde_json_does_not_still_invalidates() {
    let memu = MemU::start().await;
    let proxy = Proxy::start(&memu.url(), |_| {}).await;
    let json = memorize_json();
    let utf16le: Vec<u8> = json.encode_utf16().flat_map(u16::to_le_bytes).collect();
    let utf32be: Vec<u8> = json
        .chars()
        .flat_map(|c| u32::from(c).to_be_bytes())
        .collect();
    let with = |extra: &str| json.replacen('{', &format!("{{{extra},"), 1).into_bytes();
    let deep = format!(r#""x":{}1{}"#, "[".repeat(200), "]".repeat(200));
    let bodies: Vec<(&str, Vec<u8>)> = vec![
        (
            "UTF-8 BOM",
            [&b"\xEF\xBB\xBF"[..], json.as_bytes()].concat(),
        ),
        ("UTF-16", utf16le),
        ("UTF-32", utf32be),
        ("NaN", with(r#""score":NaN"#)),
        ("Infinity", with(r#""score":-Infinity"#)),
        ("1e400", with(r#""score":1e400"#)),
        ("lone surrogate", with(r#""note":"\ud800""#)),
        ("deep nesting", with(&deep)),
    ];
    for (what, body) in bodies {
        warm(&proxy).await;
        // The stand-in parses with serde_json, so it refuses most of these (422); memU takes
        // them (e2e/test_sdk.py): either way the proxy invalidated before forwarding.
        let status = write_raw(&proxy, MEMORIZE, body).await;
        assert!([200, 422].contains(&status), "{what}: {status}");
        let reply = post(&proxy.url(RELATED), &pets()).await;
        assert_eq!(reply.cache_status(), MISS_STORED, "after a {what} body");
    }
    let metrics = proxy.metrics().await;
    assert_eq!(
        metric(
            &metrics,
            r#"memu_proxy_unscoped_writes_total{invalidated="users"}"#
        ),
        5.0,
        "NaN, Infinity, 1e400, the surrogate and the nesting were scanned"
    );
}

#[tokio::test]
async fn a_write_naming_no_scope_invalidates_everything() {
    let memu = MemU::start().await;
    let proxy = Proxy::start(&memu.url(), |_| {}).await;
    let other = related_body("v", Some("b"), "pets");
    warm(&proxy).await;
    post(&proxy.url(RELATED), &other).await;
    let status = write_raw(&proxy, DELETE, br#"{"user_id":5}"#.to_vec()).await;
    assert_eq!(status, 422, "memU's own answer");
    assert_next_read_misses(&proxy, &pets()).await;
    assert_next_read_misses(&proxy, &other).await;
    let metrics = proxy.metrics().await;
    assert_eq!(
        metric(
            &metrics,
            r#"memu_proxy_unscoped_writes_total{invalidated="everything"}"#
        ),
        1.0
    );
}

#[tokio::test]
async fn memus_redirects_come_back_through_the_proxy() {
    let memu = MemU::start().await;
    let proxy = Proxy::start(&memu.url(), |_| {}).await;
    let body =
        json!({"user_id": "bob", "conversation": [{"role": "user", "content": {"text": "hi"}}]});
    let redirected = post(&proxy.url("/memorize/"), &body).await;
    assert_eq!(redirected.status, 307, "memU's own redirect");
    assert_eq!(redirected.header("location"), "/memorize");
    let followed = post(&proxy.url(&redirected.header("location")), &body).await;
    assert_eq!(followed.status, 200);
    assert_eq!(memu.hits(Route::ServerMemorize), 1);
}

#[tokio::test]
async fn failing_reads_never_refuse_a_write() {
    let memu = MemU::start().await;
    let proxy = Proxy::start(&memu.url(), |s| {
        s.circuit.failure_threshold = 5;
        s.upstream.timeout_ms = 200;
    })
    .await;
    // Reads that only exceed the deadline: five of them open the reads' breaker.
    memu.set_route_latency(Route::Related, Duration::from_millis(500));
    for n in 0..5 {
        let read = post(
            &proxy.url(RELATED),
            &related_body("u", Some("a"), &format!("q{n}")),
        )
        .await;
        assert!(read.cache_status().contains("detail=timeout"));
    }
    let health = get(&proxy.url("/healthz")).await.json();
    assert_eq!(health["circuit"], "open");
    let written = post(
        &proxy.url(MEMORIZE),
        &memorize_body("u", "a", "I adopted a cat"),
    )
    .await;
    assert_eq!(written.status, 200, "{}", written.text());
    assert_eq!(memu.hits(Route::Memorize), 1, "the memorize reached memU");
    assert_eq!(health["write_circuit"], "closed");
}

#[tokio::test]
async fn a_write_whose_client_went_away_is_still_tracked_to_success() {
    let memu = MemU::start().await;
    let proxy = Proxy::start(&memu.url(), |_| {}).await;
    warm(&proxy).await;
    memu.set_route_latency(Route::Memorize, Duration::from_millis(300));
    let url = proxy.url(MEMORIZE);
    let body = memorize_body("u", "a", "I adopted a cat named Mochi");
    let gave_up = tokio::time::timeout(Duration::from_millis(100), post(&url, &body)).await;
    assert!(
        gave_up.is_err(),
        "the client went away before memU answered"
    );
    memu.wait_for_hits(Route::Memorize, 1).await;
    // Read while memU applies it: the answer without the cat is cached...
    let meanwhile = assert_next_read_misses(&proxy, &pets()).await;
    assert!(!meanwhile.text().contains("Mochi"));
    // ...until the task the proxy still tracks (its own poll) succeeds.
    memu.complete_tasks();
    let series = r#"memu_proxy_cache_invalidations_total{cause="task_success",kind="supersede"}"#;
    wait_until("the proxy's poll to see the task succeed", 10, || async {
        counted(&proxy.metrics().await, series) > 0.0
    })
    .await;
    let fresh = assert_next_read_misses(&proxy, &pets()).await;
    assert!(fresh.text().contains("Mochi"), "{}", fresh.text());
    assert_eq!(memu.hits(Route::Memorize), 1, "forwarded once");
}
