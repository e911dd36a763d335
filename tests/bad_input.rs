//! Bad input gets a clear error, changes nothing, and never panics the proxy.

mod support;

use std::time::Duration;

use bytes::Bytes;
use http::Method;
use serde_json::json;
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

#[tokio::test]
async fn oversized_bodies_get_413_without_contacting_memu() {
    let memu = MemU::start().await;
    let proxy = Proxy::start(&memu.url(), |s| s.server.max_body_bytes = 1024).await;
    let big = json!({"user_id": "u", "query": "x".repeat(2000)});
    for path in [RELATED, MEMORIZE, "/api/v2/chat", "/echo/anything"] {
        let reply = post(&proxy.url(path), &big).await;
        assert_eq!(reply.status, 413, "{path}");
    }
    // Without Content-Length (chunked), the limit is enforced while reading.
    let chunked = raw_request(
        proxy.addr,
        format!(
            "POST {RELATED} HTTP/1.1\r\nhost: x\r\ntransfer-encoding: chunked\r\nconnection: close\r\n\r\n800\r\n{}\r\n800\r\n{}\r\n0\r\n\r\n",
            "a".repeat(0x800),
            "b".repeat(0x800)
        )
        .into_bytes(),
    )
    .await;
    assert!(chunked.starts_with("HTTP/1.1 413"), "{chunked}");
    assert_eq!(memu.total_hits(), 0, "memU was never contacted");
    let metrics = proxy.metrics().await;
    assert!(metrics.contains(r#"outcome="error""#), "{metrics}");
}

#[tokio::test]
async fn a_body_at_the_limit_is_accepted() {
    let memu = MemU::start().await;
    let body = json!({"user_id": "u", "query": "q"}).to_string();
    let proxy = Proxy::start(&memu.url(), |s| s.server.max_body_bytes = body.len() as u64).await;
    let reply = send(
        Method::POST,
        &proxy.url(RELATED),
        &[("content-type", "application/json")],
        body,
    )
    .await;
    assert_eq!(reply.status, 200);
}

#[tokio::test]
async fn hostile_bytes_never_panic_the_proxy() {
    let memu = MemU::start().await;
    let proxy = Proxy::start(&memu.url(), |_| {}).await;
    let hostile: Vec<Vec<u8>> = vec![
        b"GET /\xff\xfe HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n".to_vec(),
        b"POST /api/v1/memory/retrieve/related-memory-items HTTP/1.1\r\nhost: x\r\nauthorization: \xff\x00\x01\r\ncontent-length: 5\r\nconnection: close\r\n\r\n\xff\xfe\xfd\x00{".to_vec(),
        b"POST /api/v1/memory/memorize HTTP/1.1\r\nhost: x\r\ncontent-length: 4\r\nconnection: close\r\n\r\n\x00\x00\x00\x00".to_vec(),
        b"POST /api/v1/memory/retrieve/related-memory-items HTTP/1.1\r\nhost: x\r\ncontent-length: 99\r\nconnection: close\r\n\r\n{\"user_id\"".to_vec(),
        b"GARBAGE\r\n\r\n".to_vec(),
        b"GET /api/v1/memory/memorize/status/%00%ff HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n".to_vec(),
        b"POST /api/v1/memory/retrieve/related-memory-items HTTP/1.1\r\nhost: x\r\ncache-control: \xff\r\ncontent-length: 40\r\nconnection: close\r\n\r\n{\"user_id\":\"\\ud800\",\"query\":\"\\udfff\"}xx".to_vec(),
    ];
    for bytes in hostile {
        let answer = raw_request(proxy.addr, bytes.clone()).await;
        // A panic in a handler would surface as CatchPanicLayer's 500.
        assert!(
            !answer.starts_with("HTTP/1.1 500"),
            "{:?} -> {answer}",
            String::from_utf8_lossy(&bytes)
        );
    }
    // Deeply nested JSON is rejected by the parser's recursion limit, not a stack overflow.
    let nested = format!(
        r#"{{"user_id":"u","query":"q","x":{}1{}}}"#,
        "[".repeat(10_000),
        "]".repeat(10_000)
    );
    let reply = send(
        Method::POST,
        &proxy.url(RELATED),
        &[("content-type", "application/json")],
        nested,
    )
    .await;
    assert_eq!(
        reply.status, 422,
        "forwarded untouched to memU, which rejects it"
    );
    let after = post(
        &proxy.url(RELATED),
        &related_body("u", Some("a"), "still alive?"),
    )
    .await;
    assert_eq!(after.status, 200, "the proxy still serves");
    assert_eq!(get(&proxy.url("/healthz")).await.status, 200);
}

#[tokio::test]
async fn json_that_is_not_an_object_is_forwarded_not_cached() {
    let memu = MemU::start().await;
    let proxy = Proxy::start(&memu.url(), |_| {}).await;
    for body in [
        "[1,2,3]",
        "\"text\"",
        "null",
        "{\"user_id\": [\"u\"], \"query\": \"q\"}",
    ] {
        let reply = send(
            Method::POST,
            &proxy.url(RELATED),
            &[("content-type", "application/json")],
            Bytes::from(body),
        )
        .await;
        assert_eq!(reply.status, 422, "{body}");
        assert_eq!(reply.cache_status(), "memu-proxy; fwd=bypass", "{body}");
    }
}

/// Writes raw bytes to the proxy and returns whatever it answers before closing.
async fn raw_request(addr: std::net::SocketAddr, bytes: Vec<u8>) -> String {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    let _ = stream.write_all(&bytes).await;
    let _ = stream.shutdown().await;
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut out)).await;
    String::from_utf8_lossy(&out).into_owned()
}
