//! What an operator reads in the log: one line per request with its outcome (matching
//! `Cache-Status`), why a fallback was served, durations to 0.1 ms and the request id; WARN once
//! when memU becomes unreachable or the circuit opens, INFO once when it recovers.
//!
//! One test in this binary: it installs the process-wide subscriber that captures the log.

mod support;

use std::io::Write;
use std::sync::{Arc, Mutex};

use serde_json::json;
use support::*;

#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Captured {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
    fn lines_with(&self, needle: &str) -> Vec<String> {
        self.text()
            .lines()
            .filter(|l| l.contains(needle))
            .map(str::to_owned)
            .collect()
    }
}

#[tokio::test]
async fn the_log_says_what_happened_and_why_once_per_change() {
    let captured = Captured::default();
    let writer = captured.clone();
    tracing_subscriber::fmt()
        .with_ansi(false)
        .with_writer(move || writer.clone())
        .with_env_filter("info")
        .init();

    // memU down (nothing listens): a read falls back, a write fails; WARN once for several.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let closed_url = format!("http://{}", closed.local_addr().unwrap());
    drop(closed);
    let proxy = Proxy::start(&closed_url, |s| s.circuit.failure_threshold = 0).await;
    for i in 0..3 {
        let read = post(
            &proxy.url(RELATED),
            &related_body("u", Some("a"), &format!("q{i}")),
        )
        .await;
        assert_eq!(read.cache_status(), "memu-proxy; fwd=miss; detail=connect");
    }
    let line = &captured.lines_with("route_class=\"read\"")[0];
    assert!(line.contains("outcome=\"fallback\""), "{line}");
    assert!(line.contains("detail=\"connect\""), "{line}");
    assert!(line.contains("request_id="), "{line}");
    let total = line
        .split("total_ms=")
        .nth(1)
        .unwrap()
        .split(' ')
        .next()
        .unwrap();
    assert!(
        total
            .split('.')
            .nth(1)
            .is_none_or(|decimals| decimals.len() <= 1),
        "total_ms to 0.1 ms: {line}"
    );
    assert_eq!(
        captured.lines_with("memU is unreachable").len(),
        1,
        "{}",
        captured.text()
    );

    // The client's own request id is kept and returned.
    let mine = send(
        http::Method::GET,
        &proxy.url("/healthz"),
        &[("x-request-id", "req-42")],
        "",
    )
    .await;
    assert_eq!(mine.header("x-request-id"), "req-42");
    assert!(
        captured.text().contains("request_id=\"req-42\"")
            || captured.text().contains("request_id=req-42")
    );
    drop(proxy);

    // A write and a pass-through are logged as what their Cache-Status says: bypass.
    let memu = MemU::start().await;
    let proxy = Proxy::start(&memu.url(), |s| {
        s.circuit.failure_threshold = 3;
        s.circuit.cool_down_ms = 200;
    })
    .await;
    let write = post(&proxy.url(MEMORIZE), &memorize_body("u", "a", "hi")).await;
    assert_eq!(write.cache_status(), "memu-proxy; fwd=bypass");
    let line = &captured.lines_with("route_class=\"write\"")[0];
    assert!(line.contains("outcome=\"bypass\""), "{line}");
    assert!(!memu.seen().is_empty());
    assert!(
        memu.seen()[0].headers.contains_key("x-request-id"),
        "memU sees the request id"
    );

    // A hit (answered by the hit lane, in front of the layers) is logged with every field too.
    let asked = related_body("hit", None, "pets?");
    post(&proxy.url(RELATED), &asked).await;
    let hit = post_with(
        &proxy.url(RELATED),
        &asked,
        &[
            ("authorization", "Bearer key-1"),
            ("x-request-id", "turn-9"),
        ],
    )
    .await;
    assert_eq!(hit.cache_status(), "memu-proxy; hit");
    let line = &captured.lines_with("request_id=\"turn-9\"")[0];
    for field in [
        "method=\"POST\"",
        &format!("path=\"{RELATED}\""),
        "route_class=\"read\"",
        "outcome=\"hit\"",
        "status=200",
        "total_ms=",
    ] {
        assert!(line.contains(field), "{field} in {line}");
    }
    assert!(!line.contains("upstream_ms"), "{line}");

    // The circuit opens: one WARN for many failures; closes: one INFO.
    memu.set_failure(Failure::Status(503));
    for i in 0..6 {
        post(
            &proxy.url(RELATED),
            &related_body("v", None, &format!("c{i}")),
        )
        .await;
    }
    assert_eq!(
        captured.lines_with("circuit opened").len(),
        1,
        "{}",
        captured.text()
    );
    memu.set_failure(Failure::None);
    wait_until("the circuit to close", 5, || async {
        post(&proxy.url(RELATED), &json!({"user_id": "w", "query": "x"})).await;
        !captured.lines_with("circuit closed").is_empty()
    })
    .await;
    assert_eq!(captured.lines_with("circuit closed").len(), 1);
}
