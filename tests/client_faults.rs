//! A request whose client side fails (bad chunk framing, an upload cut off, an upload slower than
//! the deadline) is the client's fault: it gets 400 (408 for the slow upload), on pass-through
//! routes too, where the body streams to memU, and never counts as memU failing, so it cannot
//! open the circuit breaker for every other user.

mod support;

use std::time::Duration;

use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// More than the breaker's default threshold (5 consecutive failures).
const TRIES: usize = 7;

/// Sends `head_and_body` raw, optionally half-closes, and returns the status code of the answer.
async fn raw(proxy: &Proxy, bytes: &[u8], half_close: bool) -> u16 {
    let mut stream = TcpStream::connect(proxy.addr).await.unwrap();
    stream.write_all(bytes).await.unwrap();
    if half_close {
        stream.shutdown().await.unwrap();
    }
    let mut answer = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(10), async {
        let mut buf = [0u8; 4096];
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    answer.extend_from_slice(&buf[..n]);
                    if answer.windows(4).any(|w| w == b"\r\n\r\n") {
                        break;
                    }
                }
            }
        }
    });
    read.await.expect("the proxy answered within 10 s");
    let head = String::from_utf8_lossy(&answer);
    head.split(' ')
        .nth(1)
        .and_then(|code| code.parse().ok())
        .unwrap_or_else(|| panic!("no status line in {head:?}"))
}

/// After the faults: the circuit is closed and memU is still used for everyone.
async fn memu_still_serves_everyone(proxy: &Proxy, memu: &MemU) {
    assert_eq!(
        get(&proxy.url("/healthz")).await.json()["circuit"],
        "closed"
    );
    let metrics = proxy.metrics().await;
    assert_eq!(
        metric(
            &metrics,
            r#"memu_proxy_circuit_transitions_total{to="open"}"#
        ),
        0.0
    );
    let memorize = post(&proxy.url(MEMORIZE), &memorize_body("u", "a", "hi")).await;
    assert_eq!(memorize.status, 200, "{}", memorize.text());
    assert_eq!(memu.hits(Route::Memorize), 1);
}

#[tokio::test]
async fn bad_chunk_framing_on_a_pass_through_route_is_a_400_not_a_memu_failure() {
    let memu = MemU::start().await;
    let proxy = Proxy::start(&memu.url(), |_| {}).await;
    let request = b"POST /echo/upload HTTP/1.1\r\nhost: memu\r\ntransfer-encoding: chunked\r\n\r\n5\r\nhello\r\nzz\r\nworld\r\n0\r\n\r\n";
    for _ in 0..TRIES {
        assert_eq!(raw(&proxy, request, false).await, 400);
    }
    memu_still_serves_everyone(&proxy, &memu).await;
}

#[tokio::test]
async fn an_upload_cut_off_on_a_pass_through_route_is_not_a_memu_failure() {
    let memu = MemU::start().await;
    let proxy = Proxy::start(&memu.url(), |_| {}).await;
    let request =
        b"POST /echo/upload HTTP/1.1\r\nhost: memu\r\ncontent-length: 100\r\n\r\nonly ten b";
    for _ in 0..TRIES {
        assert_eq!(raw(&proxy, request, true).await, 400);
    }
    memu_still_serves_everyone(&proxy, &memu).await;
}

#[tokio::test]
async fn an_upload_slower_than_the_deadline_is_a_408_not_a_memu_failure() {
    let memu = MemU::start().await;
    let proxy = Proxy::start(&memu.url(), |s| s.upstream.timeout_ms = 300).await;
    // Ten of the announced hundred bytes, then nothing: the connection stays open.
    let request =
        b"POST /echo/upload HTTP/1.1\r\nhost: memu\r\ncontent-length: 100\r\n\r\nonly ten b";
    for _ in 0..TRIES {
        assert_eq!(raw(&proxy, request, false).await, 408);
    }
    memu_still_serves_everyone(&proxy, &memu).await;
}

#[tokio::test]
async fn memu_failing_on_pass_through_still_opens_the_circuit() {
    // The other side of the line: a memU that answers 5xx is memU failing.
    let memu = MemU::start().await;
    memu.set_failure(Failure::Status(503));
    let proxy = Proxy::start(&memu.url(), |_| {}).await;
    for _ in 0..5 {
        assert_eq!(get(&proxy.url("/health")).await.status, 503);
    }
    assert_eq!(get(&proxy.url("/healthz")).await.json()["circuit"], "open");
}

#[tokio::test]
async fn a_too_slow_upload_on_read_and_write_routes_is_a_408() {
    let memu = MemU::start().await;
    let proxy = Proxy::start(&memu.url(), |s| {
        s.upstream.timeout_ms = 300;
        s.upstream.write_timeout_ms = 300;
    })
    .await;
    for path in [RELATED, MEMORIZE, "/prewarm"] {
        let request =
            format!("POST {path} HTTP/1.1\r\nhost: memu\r\ncontent-type: application/json\r\ncontent-length: 100\r\n\r\n{{\"user_id\"");
        assert_eq!(raw(&proxy, request.as_bytes(), false).await, 408, "{path}");
    }
    assert_eq!(memu.total_hits(), 0, "nothing incomplete was forwarded");
    memu_still_serves_everyone(&proxy, &memu).await;
}
