//! Every client connection is bounded: idle ones are closed after `server.idle_timeout_ms`, and
//! past `server.max_connections` new ones are closed at once while the others keep being served.
//! Raw TCP clients on loopback; every wait is bounded and on an observable event.

mod support;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use support::*;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

/// Long enough for any event these tests wait on; a hang fails instead of blocking the suite.
const BOUND: Duration = Duration::from_secs(10);

const HEALTHZ: &[u8] = b"GET /healthz HTTP/1.1\r\nhost: x\r\n\r\n";

/// A keep-alive client speaking raw HTTP/1.1.
struct Client {
    reader: BufReader<TcpStream>,
}

impl Client {
    async fn connect(addr: SocketAddr) -> Client {
        let stream = TcpStream::connect(addr).await.unwrap();
        Client {
            reader: BufReader::new(stream),
        }
    }

    /// Sends `request` and reads one response; its status line, or `None` if the connection
    /// was closed instead.
    async fn exchange(&mut self, request: &[u8]) -> Option<String> {
        self.reader.get_mut().write_all(request).await.ok()?;
        tokio::time::timeout(BOUND, self.response())
            .await
            .expect("a response or a close within the bound")
    }

    async fn response(&mut self) -> Option<String> {
        let mut status = String::new();
        if self.reader.read_line(&mut status).await.ok()? == 0 {
            return None;
        }
        let mut length = 0;
        loop {
            let mut line = String::new();
            self.reader.read_line(&mut line).await.ok()?;
            let lower = line.to_ascii_lowercase();
            if let Some(value) = lower.strip_prefix("content-length:") {
                length = value.trim().parse().unwrap();
            }
            if line == "\r\n" {
                break;
            }
        }
        let mut body = vec![0; length];
        self.reader.read_exact(&mut body).await.ok()?;
        Some(status.trim_end().to_owned())
    }

    /// Waits (bounded) until the proxy closes the connection; how long that took.
    async fn closed_after(&mut self) -> Duration {
        let started = Instant::now();
        let mut byte = [0; 1];
        match tokio::time::timeout(BOUND, self.reader.read(&mut byte)).await {
            Ok(Ok(0)) | Ok(Err(_)) => started.elapsed(),
            Ok(Ok(_)) => panic!("unexpected bytes from the proxy"),
            Err(_) => panic!("the connection was not closed within {BOUND:?}"),
        }
    }
}

async fn proxy_with(idle_timeout_ms: u64, max_connections: usize) -> (MemU, Proxy) {
    let memu = MemU::start().await;
    let proxy = Proxy::start(&memu.url(), |s| {
        s.server.idle_timeout_ms = idle_timeout_ms;
        s.server.max_connections = max_connections;
    })
    .await;
    (memu, proxy)
}

#[tokio::test]
async fn a_connection_that_never_sends_a_byte_is_closed_after_the_idle_timeout() {
    let (_memu, proxy) = proxy_with(200, 10_000).await;
    let mut client = Client::connect(proxy.addr).await;
    let waited = client.closed_after().await;
    assert!(
        waited >= Duration::from_millis(190),
        "closed after {waited:?}"
    );
}

#[tokio::test]
async fn a_keep_alive_connection_idle_after_its_request_is_closed_after_the_timeout() {
    let (_memu, proxy) = proxy_with(200, 10_000).await;
    let mut client = Client::connect(proxy.addr).await;
    assert_eq!(
        client.exchange(HEALTHZ).await.as_deref(),
        Some("HTTP/1.1 200 OK")
    );
    let waited = client.closed_after().await;
    assert!(
        waited >= Duration::from_millis(150),
        "closed after {waited:?}"
    );
}

#[tokio::test]
async fn an_active_keep_alive_client_is_not_cut() {
    // Requests 100 ms apart for twice the idle timeout, all on one connection.
    let (_memu, proxy) = proxy_with(1000, 10_000).await;
    let mut client = Client::connect(proxy.addr).await;
    for i in 0..20 {
        let status = client.exchange(HEALTHZ).await;
        assert_eq!(status.as_deref(), Some("HTTP/1.1 200 OK"), "request {i}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn a_request_waiting_on_memu_longer_than_the_idle_timeout_is_answered() {
    let memu = MemU::builder()
        .latency(|_| Duration::from_millis(600))
        .start()
        .await;
    let proxy = Proxy::start(&memu.url(), |s| {
        s.server.idle_timeout_ms = 200;
        s.upstream.write_timeout_ms = 5_000;
    })
    .await;
    let body = memorize_body("u", "a", "slow").to_string();
    let request = format!(
        "POST {MEMORIZE} HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    );
    let mut client = Client::connect(proxy.addr).await;
    let status = client.exchange(request.as_bytes()).await;
    assert_eq!(status.as_deref(), Some("HTTP/1.1 200 OK"));
    assert_eq!(memu.hits(Route::Memorize), 1);
}

#[tokio::test]
async fn past_max_connections_a_new_connection_is_closed_at_once_and_the_others_are_served() {
    let (_memu, proxy) = proxy_with(60_000, 5).await;
    let mut clients = Vec::new();
    for _ in 0..5 {
        let mut client = Client::connect(proxy.addr).await;
        // Answered, so the proxy has accepted and counted it.
        assert!(client.exchange(HEALTHZ).await.is_some());
        clients.push(client);
    }
    let mut sixth = Client::connect(proxy.addr).await;
    let waited = sixth.closed_after().await;
    assert!(waited < Duration::from_secs(5), "closed after {waited:?}");
    for client in &mut clients {
        let status = client.exchange(HEALTHZ).await;
        assert_eq!(status.as_deref(), Some("HTTP/1.1 200 OK"));
    }
    // One leaves; its place is taken by the next newcomer (once the proxy has seen it go).
    drop(clients.pop());
    let deadline = Instant::now() + BOUND;
    loop {
        let mut newcomer = Client::connect(proxy.addr).await;
        if newcomer.exchange(HEALTHZ).await.is_some() {
            break;
        }
        assert!(Instant::now() < deadline, "no place was freed");
        tokio::task::yield_now().await;
    }
}

#[test]
fn the_bounds_default_to_a_minute_and_ten_thousand_and_zero_is_refused_by_name() {
    let mut settings = memu_proxy::config::Settings::default();
    let config = settings.validate().unwrap();
    assert_eq!(config.idle_timeout, Duration::from_secs(60));
    assert_eq!(config.max_connections, 10_000);
    settings.server.idle_timeout_ms = 0;
    settings.server.max_connections = 0;
    let error = settings.validate().unwrap_err().to_string();
    assert!(error.contains("server.idle_timeout_ms"), "{error}");
    assert!(error.contains("server.max_connections"), "{error}");
}

#[tokio::test]
async fn an_idle_http2_connection_is_closed_after_the_timeout_too() {
    let (_memu, proxy) = proxy_with(200, 10_000).await;
    let mut stream = TcpStream::connect(proxy.addr).await.unwrap();
    // The client preface and an empty SETTINGS frame, then nothing.
    stream
        .write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00")
        .await
        .unwrap();
    let started = Instant::now();
    let mut sink = Vec::new();
    let read = tokio::time::timeout(BOUND, stream.read_to_end(&mut sink)).await;
    assert!(
        read.is_ok(),
        "the connection was not closed within {BOUND:?}"
    );
    assert!(sink.len() >= 9, "the proxy spoke HTTP/2: {sink:?}");
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_millis(150),
        "closed after {waited:?}"
    );
}

#[tokio::test]
async fn graceful_shutdown_does_not_wait_for_idle_connections() {
    let (_memu, proxy) = proxy_with(60_000, 10_000).await;
    let mut silent = Client::connect(proxy.addr).await;
    let mut kept_alive = Client::connect(proxy.addr).await;
    assert!(kept_alive.exchange(HEALTHZ).await.is_some());
    let run = proxy.shutdown();
    // Well within the 10 s grace: neither idle connection holds the shutdown up.
    tokio::time::timeout(Duration::from_secs(5), run)
        .await
        .expect("shut down without waiting for the grace")
        .unwrap();
    kept_alive.closed_after().await;
    silent.closed_after().await;
}
