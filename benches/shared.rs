//! Shared cache tier benchmark (issue #11), against a real `redis-server` on loopback:
//!
//! 1. **Hit latency, local vs shared tier.** Replica A fetches N distinct questions; then every
//!    question is read once from B (a shared-tier hit: B's local miss, Redis's hit) and once more
//!    from B (a local hit). One keep-alive client, sequential requests, send to full body.
//! 2. **memU calls saved by a second replica.** A seeded replay of conversation turns (40 users,
//!    a Zipf mix of 60 questions; each turn to either replica, as behind a load balancer) is sent
//!    to two replicas without the shared tier, then to two fresh replicas sharing one Redis; memU's
//!    retrieval calls are counted in each run.
//!
//! Both replicas and memU (the tests' stand-in, answering at once) run in this process, each
//! proxy on its own thread in the runtime the binary builds. Printed and written to
//! `target/bench-shared.md`. Run: `cargo bench --bench shared` (a few seconds; 127.0.0.1 only).

#[path = "../tests/support/mod.rs"]
mod support;

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http::Request;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use rand::rngs::StdRng;
use rand::SeedableRng;
use rand_distr::{Distribution, Zipf};
use serde_json::Value;
use tokio::time::Instant;

use support::redis::RedisServer;
use support::stats::percentiles;
use support::{related_body, MemU, OwnThread, Proxy, Route, RELATED};

const QUESTIONS: usize = 2_000;
const TURNS: usize = 4_000;
const USERS: usize = 40;
const DISTINCT: usize = 60;
const SEED: u64 = 0x5348_4152_4544;

type HttpClient = Client<HttpConnector, Full<Bytes>>;

/// One read; returns its latency and `Cache-Status`.
async fn read(client: &HttpClient, addr: SocketAddr, body: &Value) -> (Duration, String) {
    let request = Request::post(format!("http://{addr}{RELATED}"))
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body.to_string())))
        .unwrap();
    let started = Instant::now();
    let response = client.request(request).await.expect("the proxy answers");
    let status = response.headers()["cache-status"]
        .to_str()
        .unwrap()
        .to_owned();
    response.into_body().collect().await.unwrap();
    (started.elapsed(), status)
}

fn replica(memu: &str, redis: Option<&str>) -> OwnThread<SocketAddr> {
    let redis = redis.map(str::to_owned);
    let proxy = Proxy::start_on_own_thread(memu, move |s| s.shared_cache.url = redis);
    std::thread::sleep(Duration::from_millis(300)); // connects in the background
    proxy
}

fn micros(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    if !support::invoked_by_cargo_bench() {
        return;
    }
    let redis = RedisServer::start();
    let client: HttpClient = Client::builder(TokioExecutor::new()).build_http();
    let mut report = String::from("# Shared cache tier\n\n");

    // 1. Hit latency.
    let memu = MemU::builder().record_requests(false).start().await;
    let (a, b) = (
        replica(&memu.url(), Some(&redis.url())),
        replica(&memu.url(), Some(&redis.url())),
    );
    let question = |n: usize| related_body("u", Some("a"), &format!("question number {n}"));
    for n in 0..QUESTIONS {
        read(&client, *a, &question(n)).await;
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let (mut shared, mut local) = (Vec::new(), Vec::new());
    for n in 0..QUESTIONS {
        let (took, status) = read(&client, *b, &question(n)).await;
        assert_eq!(status, "memu-proxy; hit; detail=shared", "question {n}");
        shared.push(took);
        let (took, status) = read(&client, *b, &question(n)).await;
        assert_eq!(status, "memu-proxy; hit", "question {n}");
        local.push(took);
    }
    drop((a, b));
    let _ = writeln!(
        report,
        "## Hit latency ({QUESTIONS} reads each, sequential, keep-alive)\n\n\
         | tier | p50 µs | p90 µs | p99 µs |\n|---|---|---|---|"
    );
    for (name, samples) in [("local", &mut local), ("shared (Redis)", &mut shared)] {
        let [p50, p90, p99] = percentiles(samples, [0.5, 0.9, 0.99]);
        let _ = writeln!(
            report,
            "| {name} | {:.0} | {:.0} | {:.0} |",
            micros(p50),
            micros(p90),
            micros(p99)
        );
    }

    // 2. memU calls with and without the shared tier.
    let mut rng = StdRng::seed_from_u64(SEED);
    let zipf = Zipf::new(DISTINCT as f64, 1.1).unwrap();
    let turns: Vec<Value> = (0..TURNS)
        .map(|n| {
            let q = zipf.sample(&mut rng) as usize;
            related_body(
                &format!("user{}", n % USERS),
                Some("mao"),
                &format!("topic {q}"),
            )
        })
        .collect();
    let _ = writeln!(
        report,
        "\n## memU calls, two replicas ({TURNS} turns, {USERS} users, Zipf over {DISTINCT} \
         questions, turns alternating between replicas)\n\n| setup | memU retrievals |\n|---|---|"
    );
    let mut calls = Vec::new();
    for (name, redis_url) in [
        ("two replicas, local caches only", None),
        ("two replicas, shared tier", Some(redis.url())),
    ] {
        let memu = MemU::builder().record_requests(false).start().await;
        let replicas = [
            replica(&memu.url(), redis_url.as_deref()),
            replica(&memu.url(), redis_url.as_deref()),
        ];
        for (n, body) in turns.iter().enumerate() {
            // A user's successive turns land on either replica, as behind a load balancer.
            read(&client, *replicas[(n / USERS + n / 7) % 2], body).await;
        }
        let hits = memu.hits(Route::Related);
        calls.push(hits);
        let _ = writeln!(report, "| {name} | {hits} |");
    }
    let _ = writeln!(
        report,
        "\nThe second replica's own misses saved by the shared tier: {} of {} memU calls ({:.0}%).",
        calls[0] - calls[1],
        calls[0],
        100.0 * (calls[0] - calls[1]) as f64 / calls[0] as f64
    );
    print!("{report}");
    let _ = std::fs::write("target/bench-shared.md", &report);
}
