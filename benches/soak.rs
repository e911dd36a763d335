//! Soak: a bounded, mixed load against the release binary while memU's faults rotate, and the
//! figures an operator would ask for. Run by `scripts/soak.sh [SECONDS]` (default 60).
//!
//! The proxy runs as a child process (the binary cargo built, with the shipped `proxy.toml`'s
//! latency settings: a 500 ms budget, stale-if-error, stale-while-revalidate) in front of the
//! tests' stand-in memU on its own thread. Eight client lanes send, in a loop, v1 retrievals
//! (users and questions drawn from small pools, so hits, misses, refreshes and coalescing all
//! happen) and one memorize in twenty requests, each with a unique text. Every 5 s memU changes:
//! healthy, slow (3 s: past the 2 s deadline), 503s, HTML instead of JSON, answers of the wrong
//! shape, healthy again, and so on.
//!
//! Reported: reads answered (200 with the route's shape), failed (anything else), wrong-shape
//! (200 without a `related_memories` list: must be 0, the proxy never passes one on); writes sent,
//! forwarded (memU received), duplicated (memU received a text more than once: must be 0), failed
//! honestly (5xx to the client); p50/p99/max read latency; the child's RSS at start and end; lines
//! with "panicked" in its log (must be 0). Exits non-zero when a must-be-0 figure is not.

#[path = "../tests/support/mod.rs"]
mod support;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Method, Request};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use support::child::ProxyProcess;
use support::memu::Shape;
use support::stats::percentile;
use support::{Failure, MemU, MEMORIZE, RELATED};

const LANES: usize = 8;
const PHASE: Duration = Duration::from_secs(5);

/// memU's states, in rotation.
const FAULTS: [(&str, Option<Failure>, u64); 6] = [
    ("healthy", None, 0),
    ("slow 3 s", None, 3_000),
    ("503", Some(Failure::Status(503)), 0),
    ("not JSON", Some(Failure::NotJson), 0),
    (
        "wrong shape",
        Some(Failure::WrongShape(Shape::MissingList)),
        0,
    ),
    ("healthy", None, 0),
];

#[derive(Default)]
struct Tally {
    reads_ok: usize,
    reads_failed: usize,
    reads_wrong_shape: usize,
    writes_sent: usize,
    writes_failed: usize,
    latencies: Vec<Duration>,
}

async fn lane(lane: usize, port: u16, stop: Arc<AtomicBool>) -> Tally {
    let client: Client<HttpConnector, Full<Bytes>> =
        Client::builder(TokioExecutor::new()).build_http();
    let mut tally = Tally::default();
    let mut n = 0usize;
    while !stop.load(Ordering::Relaxed) {
        n += 1;
        let write = n.is_multiple_of(20);
        let (path, body) = if write {
            tally.writes_sent += 1;
            (
                MEMORIZE,
                support::memorize_body("u1", "a1", &format!("soak lane {lane} write {n}")),
            )
        } else {
            let user = format!("u{}", (n * 7 + lane) % 20);
            let query = format!("what do I like, question {}", (n * 13 + lane) % 50);
            (RELATED, support::related_body(&user, Some("a1"), &query))
        };
        let request = Request::builder()
            .method(Method::POST)
            .uri(format!("http://127.0.0.1:{port}{path}"))
            .header("content-type", "application/json")
            .header("authorization", "Bearer soak")
            .body(Full::new(Bytes::from(body.to_string())))
            .unwrap();
        let started = Instant::now();
        let answer = async {
            let response = client.request(request).await.ok()?;
            let status = response.status();
            let body = response.into_body().collect().await.ok()?.to_bytes();
            Some((status, body))
        }
        .await;
        if write {
            if !matches!(answer, Some((s, _)) if s.is_success()) {
                tally.writes_failed += 1;
            }
            continue;
        }
        tally.latencies.push(started.elapsed());
        match answer {
            Some((status, body)) if status == 200 => {
                let shaped = serde_json::from_slice::<serde_json::Value>(&body)
                    .ok()
                    .is_some_and(|v| v["related_memories"].is_array());
                if shaped {
                    tally.reads_ok += 1;
                } else {
                    tally.reads_wrong_shape += 1;
                }
            }
            _ => tally.reads_failed += 1,
        }
    }
    tally
}

fn main() {
    if !std::env::args().any(|a| a == "--bench") {
        println!("soak: run with scripts/soak.sh");
        return;
    }
    let secs: u64 = std::env::var("SOAK_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(60);
    let memu = MemU::builder().start_on_own_thread();
    for user in 0..20 {
        memu.seed(
            &format!("u{user}"),
            "a1",
            &format!("user {user} likes green tea"),
        );
    }
    let config = format!(
        "[upstream]\nurl = \"{}\"\n[cache]\nttl_secs = 10\nstale_while_revalidate_secs = 60\n\
         stale_if_error_secs = 3600\n[latency]\nbudget_ms = 500\n",
        memu.url()
    );
    let proxy = ProxyProcess::start(env!("CARGO_BIN_EXE_memu-proxy"), "soak", &config);
    let mib = |bytes: u64| bytes as f64 / (1024.0 * 1024.0);
    let rss_start = mib(proxy.rss().0);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let lanes: Vec<_> = (0..LANES)
        .map(|l| runtime.spawn(lane(l, proxy.port, Arc::clone(&stop))))
        .collect();
    let started = Instant::now();
    let mut phase = 0;
    while started.elapsed() < Duration::from_secs(secs) {
        let (name, failure, latency_ms) = FAULTS[phase % FAULTS.len()];
        memu.set_failure(failure.unwrap_or(Failure::None));
        memu.set_latency(Duration::from_millis(latency_ms));
        println!("{:>5.1} s: memU {name}", started.elapsed().as_secs_f64());
        std::thread::sleep(PHASE.min(Duration::from_secs(secs).saturating_sub(started.elapsed())));
        phase += 1;
    }
    memu.set_failure(Failure::None);
    memu.set_latency(Duration::ZERO);
    stop.store(true, Ordering::Relaxed);
    let mut tally = Tally::default();
    for lane in lanes {
        let t = runtime.block_on(lane).unwrap();
        tally.reads_ok += t.reads_ok;
        tally.reads_failed += t.reads_failed;
        tally.reads_wrong_shape += t.reads_wrong_shape;
        tally.writes_sent += t.writes_sent;
        tally.writes_failed += t.writes_failed;
        tally.latencies.extend(t.latencies);
    }
    let rss_end = mib(proxy.rss().0);
    let mut per_text: HashMap<String, usize> = HashMap::new();
    for seen in memu
        .seen()
        .iter()
        .filter(|s| s.uri.ends_with("/memory/memorize"))
    {
        *per_text
            .entry(String::from_utf8_lossy(&seen.body).into_owned())
            .or_default() += 1;
    }
    let forwarded: usize = per_text.values().sum();
    let duplicated: usize = per_text.values().map(|n| n - 1).sum();
    let panics = std::fs::read_to_string(&proxy.log)
        .unwrap_or_default()
        .lines()
        .filter(|l| l.contains("panicked"))
        .count();
    tally.latencies.sort_unstable();
    let ms = |p| percentile(&tally.latencies, p).as_secs_f64() * 1000.0;
    let max = tally.latencies.last().copied().unwrap_or_default();
    let report = format!(
        "soak: {secs} s, {LANES} lanes, memU faults rotated every {} s\n\
         reads:  {} answered, {} failed, {} wrong-shape\n\
         writes: {} sent, {forwarded} forwarded, {duplicated} duplicated, {} failed honestly (5xx)\n\
         read latency: p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms\n\
         proxy RSS: {rss_start:.1} MiB at start, {rss_end:.1} MiB at end\n\
         panics: {panics}\n",
        PHASE.as_secs(),
        tally.reads_ok,
        tally.reads_failed,
        tally.reads_wrong_shape,
        tally.writes_sent,
        tally.writes_failed,
        ms(0.50),
        ms(0.99),
        max.as_secs_f64() * 1000.0,
    );
    println!("\n{report}");
    let _ = std::fs::write(
        concat!(env!("CARGO_MANIFEST_DIR"), "/target/soak.txt"),
        &report,
    );
    // Writes the proxy answered 5xx may still have reached memU once; never twice.
    let clean =
        tally.reads_wrong_shape == 0 && duplicated == 0 && panics == 0 && tally.reads_failed == 0;
    if !clean {
        println!("!!! soak found a failure");
        std::process::exit(1);
    }
}
