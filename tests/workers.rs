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
        memu.hits(Route::Related),
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
    assert_eq!(memu.hits(Route::Related), 2);

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

/// A fetch outlives the client that started it (its budget ran out) and serves a waiter on the
/// other worker while the proxy shuts down: the waiter still gets memU's answer, and shutdown
/// ends. (`run` keeps every worker's runtime, where such a fetch runs, until all have drained.)
/// The kernel picks the worker of each connection, so the test reads
/// `connections_accepted_total` (on the admin listener, which counts nothing there) to find a
/// starter on worker 1 and a waiter on worker 0.
#[tokio::test]
async fn a_shutdown_keeps_every_workers_fetches_running_until_all_have_drained() {
    let mut checked = 0;
    for _ in 0..20 {
        if checked == 3 {
            break;
        }
        let memu = MemU::builder()
            .route_latency("related-memory-items", |_| Duration::from_millis(300))
            .start()
            .await;
        memu.seed("u1", "a1", "Alice has a black cat named Mochi");
        let proxy = Proxy::start(&memu.url(), |s| {
            s.server.worker_threads = 2;
            s.server.admin_listen = Some("127.0.0.1:0".into());
        })
        .await;
        let admin = format!("http://{}/metrics", proxy.admin_addr.unwrap());
        let accepted = || async {
            let text = get(&admin).await.text();
            let on = |w: &str| {
                metric(
                    &text,
                    &format!(r#"memu_proxy_connections_accepted_total{{worker="{w}"}}"#),
                )
            };
            (
                on("0"),
                on("1"),
                metric(&text, "memu_proxy_coalesced_waits_total"),
            )
        };
        // A starter on worker 1: its budget runs out, its fetch runs on.
        let mut query = None;
        for attempt in 0..20 {
            let body = related_body("u1", Some("a1"), &format!("cats {attempt}"));
            let before = accepted().await;
            let budgeted = [
                ("authorization", "Bearer key-1"),
                ("x-memu-budget-ms", "20"),
            ];
            let first = post_with(&proxy.url(RELATED), &body, &budgeted).await;
            assert!(first.cache_status().contains("detail=budget"), "{first:?}");
            if accepted().await.1 > before.1 {
                query = Some(body);
                break;
            }
        }
        let Some(body) = query else { continue };
        let before = accepted().await;
        let url = proxy.url(RELATED);
        let waiter = tokio::spawn(async move { post(&url, &body).await });
        wait_until("the waiter to join the fetch", 5, || async {
            accepted().await.2 > before.2
        })
        .await;
        let on_worker_0 = accepted().await.0 > before.0;
        let stopped = proxy.shutdown();
        let answer = waiter.await.unwrap();
        assert!(tokio::time::timeout(Duration::from_secs(5), stopped)
            .await
            .is_ok());
        if !on_worker_0 {
            continue;
        }
        checked += 1;
        assert_eq!(
            answer.cache_status(),
            "memu-proxy; fwd=miss; collapsed",
            "{answer:?}"
        );
        assert!(answer.text().contains("Mochi"), "{answer:?}");
    }
    assert!(
        checked > 0,
        "no starter on worker 1 with a waiter on worker 0 in 20 tries"
    );
}
