//! TLS to memU: an `https://` upstream whose certificate is signed by a test CA the proxy trusts
//! through `upstream.ca_file` behaves as a plain one (cache, invalidation, `Host`), with SNI set
//! and connections pooled; one whose certificate it does not trust gets no request at all: reads
//! fall back (`detail=tls`), writes and pass-through get an honest 502, and the circuit stays
//! closed. (A bad `ca_file` stopping start-up is in `tests/config.rs`.)

mod support;

use serde_json::json;
use support::tls::TestCa;
use support::*;

/// A stand-in serving TLS with a certificate from `ca`, and a proxy trusting `trusted`.
async fn over_tls(ca: &TestCa, trusted: &TestCa) -> (MemU, Proxy) {
    let memu = MemU::builder().tls(ca).start().await;
    let proxy = Proxy::start(&memu.url(), |s| {
        s.upstream.ca_file = Some(trusted.pem_file());
    })
    .await;
    (memu, proxy)
}

#[tokio::test]
async fn over_https_reads_are_cached_and_a_memorize_is_forwarded_once_and_invalidates() {
    let ca = TestCa::generate("memu-proxy test CA");
    let (memu, proxy) = over_tls(&ca, &ca).await;
    assert!(memu.url().starts_with("https://127.0.0.1:"));
    memu.seed("u", "a", "Alice has a cat named Mochi");
    let body = related_body("u", Some("a"), "pets?");

    let first = assert_next_read_misses(&proxy, &body).await;
    assert_eq!(first.json()["total_found"], 1, "{}", first.text());
    assert_next_read_hits(&proxy, &body).await;
    assert_eq!(memu.hits(Route::Related), 1);

    let write = post(
        &proxy.url(MEMORIZE),
        &memorize_body("u", "a", "I got a dog"),
    )
    .await;
    assert_eq!(write.status, 200, "{}", write.text());
    assert!(write.json()["task_id"].is_string());
    assert_eq!(memu.hits(Route::Memorize), 1, "forwarded exactly once");
    assert_next_read_misses(&proxy, &body).await;
    assert_eq!(memu.hits(Route::Related), 2, "the write invalidated");

    for seen in memu.seen() {
        assert_eq!(seen.headers["host"], memu.addr.to_string(), "{}", seen.uri);
    }
    assert!(memu.tls().handshakes() >= 1);
}

#[tokio::test]
async fn sni_and_host_are_the_upstreams_host_name() {
    let ca = TestCa::generate("memu-proxy test CA");
    let memu = MemU::builder().tls(&ca).start().await;
    let by_name = format!("https://localhost:{}", memu.addr.port());
    let proxy = Proxy::start(&by_name, |s| s.upstream.ca_file = Some(ca.pem_file())).await;
    assert_next_read_misses(&proxy, &related_body("u", Some("a"), "hi")).await;
    assert_eq!(memu.tls().server_names(), [Some("localhost".to_owned())]);
    let host = &memu.seen()[0].headers["host"];
    assert_eq!(host, &format!("localhost:{}", memu.addr.port()));
}

#[tokio::test]
async fn sequential_calls_on_new_client_connections_share_pooled_tls_connections() {
    const CALLS: usize = 12;
    let ca = TestCa::generate("memu-proxy test CA");
    let (memu, proxy) = over_tls(&ca, &ca).await;
    for i in 0..CALLS {
        // `post` opens a new connection to the proxy for every call, as memu-cli does.
        let body = related_body("u", Some("a"), &format!("question {i}"));
        assert_next_read_misses(&proxy, &body).await;
    }
    assert_eq!(memu.hits(Route::Related), CALLS);
    let handshakes = memu.tls().handshakes();
    assert!(
        handshakes < CALLS / 2,
        "{handshakes} TLS handshakes for {CALLS} sequential upstream calls: not pooled"
    );
    assert_eq!(memu.connections(), handshakes);
}

#[tokio::test]
async fn an_untrusted_certificate_gets_no_request_reads_fall_back_and_writes_get_502() {
    let ca = TestCa::generate("memU's real CA");
    let other = TestCa::generate("some other CA");
    let (memu, proxy) = over_tls(&ca, &other).await;

    // More reads than circuit.failure_threshold (5): a rejection does not open the circuit.
    for i in 0..7 {
        let query = format!("pets {i}?");
        let read = post(&proxy.url(RELATED), &related_body("u", Some("a"), &query)).await;
        assert_eq!(read.status, 200);
        assert_eq!(read.cache_status(), "memu-proxy; fwd=miss; detail=tls");
        assert_eq!(
            read.json(),
            json!({"related_memories": [], "query": query, "total_found": 0, "search_params": {}})
        );
    }
    assert_eq!(
        get(&proxy.url("/healthz")).await.json()["circuit"],
        "closed"
    );

    for (path, body) in [
        (MEMORIZE, memorize_body("u", "a", "x")),
        (DELETE, json!({"user_id": "u", "agent_id": null})),
    ] {
        let write = post(&proxy.url(path), &body).await;
        assert_eq!(write.status, 502, "{path}");
        assert_eq!(write.cache_status(), "memu-proxy; fwd=bypass");
        let detail = write.json()["detail"].as_str().unwrap().to_owned();
        assert!(
            detail.starts_with("memU's TLS certificate was rejected: UnknownIssuer"),
            "{detail}"
        );
    }
    let other_route = get(&proxy.url("/api/v1/memory/memorize/status/t1")).await;
    assert_eq!(other_route.status, 502);

    assert_eq!(memu.total_hits(), 0, "no request reached memU's routes");
    assert_eq!(memu.tls().handshakes(), 0);
    let attempts = memu.connections();
    assert!(attempts >= 10, "{attempts} connection attempts");
    wait_until(
        "the stand-in to see every rejected handshake",
        10,
        || async { memu.tls().failed_handshakes() == attempts },
    )
    .await;
    let metrics = proxy.metrics().await;
    assert_eq!(
        metric(&metrics, r#"memu_proxy_fallbacks_total{reason="tls"}"#),
        7.0
    );
}

#[tokio::test]
async fn without_the_ca_file_the_system_roots_do_not_trust_a_private_ca() {
    let ca = TestCa::generate("private CA");
    let memu = MemU::builder().tls(&ca).start().await;
    let proxy = Proxy::start(&memu.url(), |_| {}).await;
    let read = post(&proxy.url(RELATED), &related_body("u", Some("a"), "hi")).await;
    assert_eq!(read.cache_status(), "memu-proxy; fwd=miss; detail=tls");
    assert_eq!(memu.total_hits(), 0);
}
