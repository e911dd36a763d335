//! Transparent forwarding: methods, paths, query strings, headers, bodies and statuses pass
//! through on any route; the base path is kept; streams arrive event by event; connections pool.

mod support;

use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde_json::json;
use support::*;

#[tokio::test]
async fn unknown_routes_pass_through_unchanged() {
    let memu = MemU::start().await;
    let proxy = Proxy::start(&memu.url(), |_| {}).await;
    for method in [
        Method::GET,
        Method::POST,
        Method::PUT,
        Method::PATCH,
        Method::DELETE,
        Method::OPTIONS,
    ] {
        let reply = send(
            method.clone(),
            &proxy.url("/echo/some/path?x=1&y=%E4%BD%A0"),
            &[
                ("x-custom", "kept"),
                ("authorization", "Bearer secret"),
                ("connection", "x-hop"),
                ("x-hop", "dropped"),
                ("te", "trailers"),
            ],
            "raw \u{1F600} body",
        )
        .await;
        assert_eq!(reply.status, 207, "{method}");
        let echo = reply.json();
        assert_eq!(echo["method"], method.as_str());
        assert_eq!(echo["path"], "/echo/some/path");
        assert_eq!(echo["query"], "x=1&y=%E4%BD%A0");
        assert_eq!(echo["body"], "raw \u{1F600} body");
        assert_eq!(echo["headers"]["x-custom"], "kept");
        assert_eq!(echo["headers"]["authorization"], "Bearer secret");
        assert_eq!(echo["headers"]["host"], memu.addr.to_string());
        assert!(
            echo["headers"].get("x-hop").is_none(),
            "headers named in Connection are hop-by-hop"
        );
        assert!(echo["headers"].get("te").is_none());
        assert_eq!(reply.header("x-upstream-custom"), "yes");
        assert_eq!(reply.cache_status(), "memu-proxy; fwd=bypass");
        let timing = reply.header("server-timing");
        assert!(
            timing.starts_with("db;dur=1.5, upstream;dur="),
            "upstream Server-Timing kept first: {timing}"
        );
        assert!(timing.contains("proxy;dur="));
    }
}

#[tokio::test]
async fn memus_own_routes_and_errors_pass_through() {
    let memu = MemU::start().await;
    let proxy = Proxy::start(&memu.url(), |_| {}).await;
    let health = get(&proxy.url("/health")).await;
    assert_eq!(health.json()["status"], "healthy");
    let missing = get(&proxy.url("/api/v1/memory/memorize/status/nope")).await;
    assert_eq!(
        (missing.status.as_u16(), missing.json()),
        (404, json!({"detail": "Task not found"}))
    );
    let not_found = post(&proxy.url("/api/v9/unknown"), &json!({})).await;
    assert_eq!(not_found.status, 404);
}

#[tokio::test]
async fn the_upstream_base_path_is_kept() {
    let memu = MemU::start().await;
    let proxy = Proxy::start(&format!("{}/memu/", memu.url()), |_| {}).await;
    post(&proxy.url(RELATED), &related_body("u", Some("a"), "q")).await;
    assert_next_read_hits(&proxy, &related_body("u", Some("a"), "q")).await;
    send(Method::GET, &proxy.url("/echo/x?q=1"), &[], "").await;
    let uris: Vec<String> = memu.seen().iter().map(|s| s.uri.clone()).collect();
    assert_eq!(
        uris,
        [
            "/memu/api/v1/memory/retrieve/related-memory-items",
            "/memu/echo/x?q=1"
        ]
    );
}

#[tokio::test]
async fn v2_routes_are_recognised_and_cached_apart_from_v1() {
    let memu = MemU::start().await;
    let proxy = Proxy::start(&memu.url(), |_| {}).await;
    let v2 = "/api/v2/memory/retrieve/related-memory-items";
    let body = related_body("u", Some("a"), "q");
    post(&proxy.url(RELATED), &body).await;
    assert_eq!(
        post(&proxy.url(v2), &body).await.cache_status(),
        "memu-proxy; fwd=miss; stored"
    );
    assert_eq!(
        post(&proxy.url(v2), &body).await.cache_status(),
        "memu-proxy; hit"
    );
}

#[tokio::test]
async fn chat_streams_arrive_event_by_event() {
    let memu = MemU::start().await;
    let proxy = Proxy::start(&memu.url(), |_| {}).await;
    let request = Request::post(proxy.url("/api/v2/chat"))
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(
            r#"{"user_id":"u","agent_id":"a","message":"hi","kwargs":{"stream":true}}"#,
        )))
        .unwrap();
    let client = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
    let response = client.request(request).await.unwrap();
    assert_eq!(response.headers()["content-type"], "text/event-stream");
    let mut body = response.into_body();
    let mut received = String::new();
    // The stand-in sends the next event only when released: if the proxy buffered the whole
    // body, the first event would never arrive and this would time out.
    for (step, word) in ["Hello", "there"].iter().enumerate() {
        while !received.contains(word) {
            let frame = tokio::time::timeout(Duration::from_secs(5), body.frame())
                .await
                .unwrap_or_else(|_| {
                    panic!("event {step} did not arrive before the stream continued")
                })
                .unwrap()
                .unwrap();
            if let Ok(data) = frame.into_data() {
                received.push_str(&String::from_utf8_lossy(&data));
            }
        }
        memu.release_chat_event();
    }
    let rest = body.collect().await.unwrap().to_bytes();
    received.push_str(&String::from_utf8_lossy(&rest));
    assert!(received.ends_with("data: [DONE]\n\n"), "{received}");
}

#[tokio::test]
async fn upstream_connections_are_pooled() {
    let memu = MemU::start().await;
    let proxy = Proxy::start(&memu.url(), |_| {}).await;
    for i in 0..20 {
        post(
            &proxy.url(RELATED),
            &related_body("u", Some("a"), &format!("q{i}")),
        )
        .await;
    }
    assert_eq!(memu.hits(Route::Related), 20);
    assert!(
        memu.connections() <= 2,
        "{} connections for 20 sequential requests",
        memu.connections()
    );
}

#[tokio::test]
async fn graceful_shutdown_lets_in_flight_requests_finish() {
    let memu = MemU::start().await;
    memu.set_latency(Duration::from_millis(300));
    let proxy = Proxy::start(&memu.url(), |_| {}).await;
    let url = proxy.url(MEMORIZE);
    let in_flight = tokio::spawn(async move { post(&url, &memorize_body("u", "a", "hi")).await });
    // The write is at memU (counted on arrival, answered 300 ms later) when shutdown begins.
    memu.wait_for_hits(Route::Memorize, 1).await;
    let addr = proxy.addr;
    let run = proxy.shutdown();
    let reply = in_flight.await.unwrap();
    assert_eq!(reply.status, 200, "the in-flight write completed");
    tokio::time::timeout(Duration::from_secs(5), run)
        .await
        .unwrap()
        .unwrap();
    assert!(
        tokio::net::TcpStream::connect(addr).await.is_err(),
        "no longer accepting"
    );
}
