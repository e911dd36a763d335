//! `/metrics` (Prometheus text, fixed label values), `/healthz`, and the admin listener.

mod support;

use std::time::Duration;

use support::*;

#[tokio::test]
async fn metrics_count_requests_by_class_and_outcome() {
    let memu = MemU::start().await;
    let proxy = Proxy::start(&memu.url(), |s| s.upstream.timeout_ms = 200).await;
    let body = related_body("secret-user-42", Some("agent-7"), "my secret query");
    post(&proxy.url(RELATED), &body).await;
    post(&proxy.url(RELATED), &body).await;
    post(
        &proxy.url(MEMORIZE),
        &memorize_body("secret-user-42", "agent-7", "hi"),
    )
    .await;
    get(&proxy.url("/health")).await;
    memu.set_latency(Duration::from_secs(1));
    post(
        &proxy.url(RELATED),
        &related_body("secret-user-42", Some("agent-7"), "other"),
    )
    .await;
    // The timed-out fetch records its duration when its own deadline passes, which may be just
    // after the waiter's answer: wait for it rather than race it.
    wait_until("the timed-out fetch to be timed", 5, || async {
        metric(
            &proxy.metrics().await,
            r#"memu_proxy_upstream_duration_seconds_count{route_class="read"}"#,
        ) == 2.0
    })
    .await;

    let text = proxy.metrics().await;
    let expect = [
        (
            r#"memu_proxy_requests_total{route_class="read",outcome="miss"}"#,
            1.0,
        ),
        (
            r#"memu_proxy_requests_total{route_class="read",outcome="hit"}"#,
            1.0,
        ),
        (
            r#"memu_proxy_requests_total{route_class="read",outcome="fallback"}"#,
            1.0,
        ),
        (
            r#"memu_proxy_requests_total{route_class="write",outcome="bypass"}"#,
            1.0,
        ),
        (
            r#"memu_proxy_requests_total{route_class="passthrough",outcome="bypass"}"#,
            1.0,
        ),
        (r#"memu_proxy_fallbacks_total{reason="timeout"}"#, 1.0),
        (
            r#"memu_proxy_cache_invalidations_total{cause="write",kind="supersede"}"#,
            2.0,
        ),
        ("memu_proxy_cache_entries", 1.0),
        (
            r#"memu_proxy_upstream_duration_seconds_count{route_class="read"}"#,
            2.0,
        ),
        (
            r#"memu_proxy_request_duration_seconds_count{route_class="read"}"#,
            3.0,
        ),
    ];
    for (series, value) in expect {
        assert_eq!(metric(&text, series), value, "{series} in\n{text}");
    }
    assert!(metric(&text, "memu_proxy_cache_bytes") > 0.0);
    for secret in ["secret-user-42", "agent-7", "my secret query", "key-1"] {
        assert!(!text.contains(secret), "{secret} leaked into /metrics");
    }
    assert!(text.ends_with("# EOF\n"));
}

#[tokio::test]
async fn healthz_answers_without_contacting_memu() {
    let memu = MemU::start().await;
    let proxy = Proxy::start(&memu.url(), |_| {}).await;
    let reply = get(&proxy.url("/healthz")).await;
    assert_eq!(reply.status, 200);
    assert_eq!(reply.json()["status"], "ok");
    assert!(reply.header("server-timing").contains("proxy;dur="));
    assert_eq!(memu.total_hits(), 0);
}

#[tokio::test]
async fn the_admin_listener_serves_only_admin_paths() {
    let memu = MemU::start().await;
    let proxy = Proxy::start(&memu.url(), |s| {
        s.server.admin_listen = Some("127.0.0.1:0".into())
    })
    .await;
    let admin = format!("http://{}", proxy.admin_addr.unwrap());
    assert_eq!(get(&format!("{admin}/healthz")).await.status, 200);
    assert!(get(&format!("{admin}/metrics"))
        .await
        .text()
        .contains("memu_proxy_requests"));
    assert_eq!(get(&format!("{admin}/health")).await.status, 404);
    assert_eq!(memu.total_hits(), 0);
}
