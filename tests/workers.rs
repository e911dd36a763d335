//! `server.worker_threads` > 1: several single-threaded workers, each with its own listener on
//! the one port (`SO_REUSEPORT`), share the cache, the invalidations, the connection cap and the
//! metrics, and shut down together.

mod support;

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use support::*;

/// Requests, each on a new connection: the kernel spreads new connections over the workers.
const CONNECTIONS: usize = 32;

#[tokio::test]
async fn workers_on_one_port_share_the_cache_invalidations_and_metrics() {
    let memu = MemU::start().await;
    let proxy = Proxy::start(&memu.url(), |s| s.server.worker_threads = 2).await;
    let body = related_body("u1", Some("a1"), "What pets do I like?");
    assert_next_read_misses(&proxy, &body).await;
    for _ in 0..CONNECTIONS {
        assert_next_read_hits(&proxy, &body).await;
    }
    assert_eq!(
        memu.hits("related-memory-items"),
        1,
        "one fetch served every worker"
    );

    let text = proxy.metrics().await;
    for worker in ["0", "1"] {
        let series = format!(r#"memu_proxy_connections_accepted_total{{worker="{worker}"}}"#);
        let accepted = metric(&text, &series);
        assert!(accepted > 0.0, "worker {worker} accepted nothing:\n{text}");
    }
    let served = metric(
        &text,
        r#"memu_proxy_requests_total{route_class="read",outcome="hit"}"#,
    );
    assert_eq!(
        served, CONNECTIONS as f64,
        "both workers count in one registry"
    );

    // A write through whichever worker takes it invalidates what every worker serves.
    let write = post(
        &proxy.url(MEMORIZE),
        &memorize_body("u1", "a1", "I have a dog now"),
    )
    .await;
    assert!(write.status.is_success(), "{write:?}");
    assert_next_read_misses(&proxy, &body).await;
    for _ in 0..CONNECTIONS {
        assert_next_read_hits(&proxy, &body).await;
    }
    assert_eq!(memu.hits("related-memory-items"), 2);

    let stopped = tokio::time::timeout(Duration::from_secs(5), proxy.shutdown()).await;
    assert!(stopped.is_ok(), "every worker stopped within 5 s");
}

#[tokio::test]
async fn the_connection_cap_is_one_for_all_workers() {
    let memu = MemU::start().await;
    let proxy = Proxy::start(&memu.url(), |s| {
        s.server.worker_threads = 2;
        s.server.max_connections = 4;
        s.server.admin_listen = Some("127.0.0.1:0".into());
    })
    .await;
    let admin = format!("http://{}/metrics", proxy.admin_addr.unwrap());
    // Four idle connections hold the whole cap, however the kernel spread them.
    let mut held = Vec::new();
    for _ in 0..4 {
        held.push(TcpStream::connect(proxy.addr).await.unwrap());
    }
    wait_until("the four connections accepted", 5, || async {
        let text = get(&admin).await.text();
        let accepted: f64 = ["0", "1"]
            .iter()
            .map(|w| {
                let series = format!(r#"memu_proxy_connections_accepted_total{{worker="{w}"}}"#);
                metric(&text, &series)
            })
            .sum();
        accepted == 4.0
    })
    .await;
    // Per-worker caps would let at least one worker take more; one shared cap refuses them all.
    for attempt in 0..8 {
        let mut stream = TcpStream::connect(proxy.addr).await.unwrap();
        let request = "GET /healthz HTTP/1.1\r\nhost: proxy\r\n\r\n";
        let _ = stream.write_all(request.as_bytes()).await;
        let mut answer = Vec::new();
        let read = tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut answer));
        let closed = matches!(read.await, Ok(Ok(0)) | Ok(Err(_)));
        assert!(
            closed,
            "attempt {attempt} was served past the cap: {answer:?}"
        );
    }
    drop(held);
}
