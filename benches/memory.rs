//! Memory benchmark: the release binary's resident memory against its bound,
//! `2 × cache.max_bytes + 40 MiB`, whatever the mix of queries and answers.
//!
//! The proxy runs as a child process (the binary cargo built, `CARGO_BIN_EXE_memu-proxy`) in front
//! of the tests' stand-in memU (own thread, a fixed answer of the scenario's size, requests not
//! recorded). Each scenario sends distinct retrievals until the cache has been filled three times
//! over, so eviction runs for most of it, then reads the child's `VmRSS` and `VmHWM` (peak) from
//! `/proc`. Scenarios: small (~530 B) and large (64 KiB) answers, similarity off and on, and
//! 100–300 KB queries with similarity on (the near-duplicate index must stay bounded too).
//! Prints a table, writes `target/bench-memory.md`, and exits non-zero if a bound is exceeded.
//!
//! Run: `cargo bench --bench memory` (about a minute; 127.0.0.1 only).

#[path = "../tests/support/mod.rs"]
mod support;

use std::fmt::Write as _;
use std::time::Instant;

use bytes::Bytes;
use http::{Method, Request};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use support::child::ProxyProcess;
use support::MemU;

const MAX_BYTES: u64 = 32 * 1024 * 1024;
const BOUND: u64 = 2 * MAX_BYTES + 40 * 1024 * 1024;
const PATH: &str = "/api/v1/memory/retrieve/related-memory-items";
const CONNECTIONS: usize = 8;

struct Scenario {
    name: &'static str,
    answer_bytes: usize,
    query_bytes: std::ops::Range<usize>,
    similarity: bool,
    /// Distinct requests: enough to weigh about three times `MAX_BYTES`.
    requests: usize,
}

const SCENARIOS: [Scenario; 5] = [
    Scenario {
        name: "small answers",
        answer_bytes: 530,
        query_bytes: 20..60,
        similarity: false,
        requests: 90_000,
    },
    Scenario {
        name: "small answers, similarity on",
        answer_bytes: 530,
        query_bytes: 20..60,
        similarity: true,
        requests: 90_000,
    },
    Scenario {
        name: "64 KiB answers",
        answer_bytes: 64 * 1024,
        query_bytes: 20..60,
        similarity: false,
        requests: 1_600,
    },
    Scenario {
        name: "64 KiB answers, similarity on",
        answer_bytes: 64 * 1024,
        query_bytes: 20..60,
        similarity: true,
        requests: 1_600,
    },
    Scenario {
        name: "100-300 KB queries, similarity on",
        answer_bytes: 530,
        query_bytes: 100_000..300_000,
        similarity: true,
        requests: 2_000,
    },
];

/// A memU retrieval answer of about `size` bytes (padding in the memory's content).
fn answer(size: usize) -> &'static str {
    let head =
        r#"{"related_memories":[{"memory":{"memory_id":"m1","category":"activity","content":""#;
    let tail = r#"","happened_at":"2026-11-24T00:00:00","created_at":null,"updated_at":null},"similarity_score":0.63}],"query":"q","total_found":1,"search_params":{}}"#;
    let pad = size.saturating_sub(head.len() + tail.len());
    Box::leak(format!("{head}{}{tail}", "x".repeat(pad)).into_boxed_str())
}

/// The `n`th distinct query, of a length in `range` (spoken words, so the normaliser and the
/// near-duplicate shaper do real work).
fn query(n: usize, range: &std::ops::Range<usize>) -> String {
    let len = range.start + (n * 7919) % (range.end - range.start);
    let mut q = format!("question {n} about my cat");
    while q.len() < len {
        let _ = write!(q, " and word{}", q.len() % 997);
    }
    q
}

/// Sends the scenario's distinct retrievals over `CONNECTIONS` pooled connections.
async fn drive(port: u16, scenario: &Scenario) -> usize {
    let client: Client<HttpConnector, Full<Bytes>> =
        Client::builder(TokioExecutor::new()).build_http();
    let mut lanes = tokio::task::JoinSet::new();
    for lane in 0..CONNECTIONS {
        let client = client.clone();
        let range = scenario.query_bytes.clone();
        let requests = scenario.requests;
        lanes.spawn(async move {
            let mut ok = 0;
            for n in (lane..requests).step_by(CONNECTIONS) {
                let body = serde_json::json!({"user_id": "u", "agent_id": "a",
                    "query": query(n, &range), "top_k": 3, "min_similarity": 0.3});
                let request = Request::builder()
                    .method(Method::POST)
                    .uri(format!("http://127.0.0.1:{port}{PATH}"))
                    .header("content-type", "application/json")
                    .body(Full::new(Bytes::from(body.to_string())))
                    .unwrap();
                if let Ok(response) = client.request(request).await {
                    let fine = response.status() == 200;
                    if response.into_body().collect().await.is_ok() && fine {
                        ok += 1;
                    }
                }
            }
            ok
        });
    }
    let mut ok = 0;
    while let Some(lane) = lanes.join_next().await {
        ok += lane.unwrap();
    }
    ok
}

fn main() {
    if !std::env::args().any(|a| a == "--bench") {
        println!("memory: run with `cargo bench --bench memory`");
        return;
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let mut table = String::from(
        "| scenario | requests answered | RSS MiB | peak RSS MiB | bound MiB | within |\n|---|---:|---:|---:|---:|---|\n",
    );
    let mut all_within = true;
    let mib = |b: u64| b as f64 / (1024.0 * 1024.0);
    for scenario in &SCENARIOS {
        let memu = MemU::builder()
            .record_requests(false)
            .fixed_answer("related-memory-items", answer(scenario.answer_bytes))
            .start_on_own_thread();
        let threshold = if scenario.similarity { 0.9 } else { 0.0 };
        let config = format!(
            "[upstream]\nurl = \"{}\"\n[cache]\nmax_bytes = {MAX_BYTES}\nsimilarity_threshold = {threshold}\n",
            memu.url()
        );
        let proxy = ProxyProcess::start(env!("CARGO_BIN_EXE_memu-proxy"), "memory", &config);
        let started = Instant::now();
        let ok = runtime.block_on(drive(proxy.port, scenario));
        let (now, peak) = proxy.rss();
        let within = peak <= BOUND;
        all_within &= within && ok == scenario.requests;
        let _ = writeln!(
            table,
            "| {} | {ok}/{} | {:.1} | {:.1} | {:.0} | {} |",
            scenario.name,
            scenario.requests,
            mib(now),
            mib(peak),
            mib(BOUND),
            if within { "yes" } else { "**NO**" }
        );
        println!(
            "{}: {ok}/{} in {:.1} s, RSS {:.1} MiB, peak {:.1} MiB",
            scenario.name,
            scenario.requests,
            started.elapsed().as_secs_f64(),
            mib(now),
            mib(peak)
        );
    }
    println!("\ncache.max_bytes = {:.0} MiB\n\n{table}", mib(MAX_BYTES));
    let _ = std::fs::write(
        concat!(env!("CARGO_MANIFEST_DIR"), "/target/bench-memory.md"),
        &table,
    );
    if !all_within {
        println!("!!! a bound was exceeded or a request failed");
        std::process::exit(1);
    }
}
