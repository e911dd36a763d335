//! Loopback benchmark: memu-proxy against the CPU floor of an HTTP server and against nginx as a
//! caching proxy: latency, throughput and the CPU each target itself spends per request.
//!
//! Everything runs on 127.0.0.1 in one run, side by side:
//! - the tests' stand-in memU (`tests/support/memu.rs`) on its own thread and single-threaded
//!   runtime in this process, without latency and without recording requests, answering
//!   `POST /api/v1/memory/retrieve/related-memory-items` with a fixed, realistic ~400-byte memU
//!   answer (`MemUBuilder::fixed_answer`: no parsing, no state), as a static upstream would;
//! - `floor`: nginx (one worker) answering every request with that same body (`return 200`): no
//!   upstream, no cache, the CPU floor of an HTTP/1.1 server (no miss phase);
//! - `direct`: the load generator talks to the stand-in memU: the loopback latency floor;
//! - `proxy`, `proxy-2`: the memu-proxy binary cargo built (`CARGO_BIN_EXE_memu-proxy`) as a child
//!   process (`tests/support/child.rs`), `server.worker_threads` = 1 and 2, `RUST_LOG=warn`;
//! - `nginx`, `nginx-auto`: `/usr/sbin/nginx` (Debian `nginx-light`,
//!   `scripts/install-bench-deps.sh`) caching the same POSTs, `worker_processes` 1 and `auto`.
//!   Every nginx has its own config and temp dir, removed afterwards; skipped if not installed.
//!
//! Per target: one-connection hit latency (p50/p99, hyper client), one-connection miss latency
//! (every query distinct), and hit throughput over 32 keep-alive connections, driven by a lean raw
//! HTTP/1.1 client on one thread (the request serialised once, one request in flight per
//! connection, only the status line, `Content-Length` and the hit header parsed). The latency
//! phases run in interleaved rounds (the first one is warmup) and the throughput runs alternate,
//! so every target sees the same machine state. Every response must be a 200 and the hit phases
//! must really hit (`cache-status: memu-proxy; hit`, nginx's `x-cache-status: HIT`); otherwise
//! the run says so and exits non-zero. Percentiles are nearest-rank (`tests/support/stats.rs`).
//!
//! CPU per request is the target's own: the on-CPU time of every thread of every process of the
//! target (nginx's master, workers and cache processes), user and kernel, from
//! `/proc/<pid>/task/*/schedstat` (`support::child::CpuSnapshot`), read before and after each
//! measured segment (each round's hits; the throughput window) and divided by the requests
//! answered in it. For `direct` it is the stand-in memU's thread. Kernel time includes the
//! network stack's softirq work done in the thread's context: on loopback a sender's `write`
//! runs the receiver's TCP input too, so each side pays part of the other's, alike for every
//! target. With one connection every request also pays going idle and being woken up; the
//! 32-connection figure is the headline "CPU per hit". The load generator's own CPU (its one
//! thread) is printed too, to show it is not what limits throughput, and so is the CPU time the
//! host stole from the VM during each pass (`/proc/stat`), a measure of how noisy the run was.
//! Under each table, a hyper-floor line: `direct` is a hyper 1.x server that reads the body and
//! answers a fixed one, the least any hyper-based proxy can cost per hit and the most hits one
//! such thread answers, so the targets are also placed against it. Under the unpinned table, a
//! 2-core ceiling per target: 2 s of CPU per second over the target's and the load generator's
//! CPU per request, the throughput it could reach were nothing idle.
//!
//! The whole measurement runs twice: unpinned, then pinned with `taskset -a -p`: every target's
//! processes (and the stand-in memU's thread) on CPU 0, this process (the load generator) on CPU
//! 1; the two-worker targets are left out of the pinned pass. Affinity is restored afterwards.
//! The tables and ratios are printed and written to `target/bench-loopback.md`.
//!
//! Run: `cargo bench --bench loopback` (about 3 minutes on the 2-core CI machine). Unpinned, the
//! one-connection latencies are dominated by cross-CPU wake-ups (tens of µs each on a small VM,
//! depending on where the scheduler puts each thread).

#[path = "../tests/support/mod.rs"]
mod support;

#[path = "loopback/client.rs"]
mod client;
#[path = "loopback/nginx.rs"]
mod nginx;
#[path = "loopback/pinning.rs"]
mod pinning;
#[path = "loopback/report.rs"]
mod report;
#[path = "loopback/tally.rs"]
mod tally;
#[path = "loopback/targets.rs"]
mod targets;
#[path = "loopback/throughput.rs"]
mod throughput;

use std::path::PathBuf;
use std::time::Duration;

use bytes::Bytes;

use client::Client;
use pinning::{steal_and_total_ticks, steal_since, Pinning};
use report::{p50_p99, render, Row};
use support::child::cpu_source;
use tally::{CpuUse, Tally};
use targets::{hit_header, Kind, Servers, Target};
use throughput::{throughput, Throughput};

/// The same allocator as the binary (`src/main.rs`).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

const NGINX: &str = "/usr/sbin/nginx";
const HOT_QUERY: &str = "What pets do I like?";
/// One-connection latency: measured requests, split into `ROUNDS` rounds after one warmup round.
const HIT_N: usize = 20_000;
const MISS_N: usize = 5_000;
const ROUNDS: usize = 20;
/// Throughput: `CONNECTIONS` connections, `RPS_PASSES` runs of `RPS_WARMUP` + `RPS_RUN` each.
const CONNECTIONS: usize = 32;
const RPS_PASSES: u32 = 6;
const RPS_WARMUP: Duration = Duration::from_millis(250);
const RPS_RUN: Duration = Duration::from_millis(1_500);
/// memU's answer to every retrieval, as the real server shapes it (memu-api.md §3.1).
const UPSTREAM_BODY: &str = r#"{"related_memories":[{"memory":{"memory_id":"m1","category":"activity","content":"Alice loves her black cat named Mochi.","happened_at":"2026-11-24T00:00:00","created_at":null,"updated_at":null},"similarity_score":0.63}],"query":"What pets do I like?","total_found":1,"search_params":{"query":"What pets do I like?","top_k":3,"min_similarity":0.3,"include_categories":null}}"#;

/// The SDK's retrieval body.
fn request_body(query: &str) -> Bytes {
    Bytes::from(format!(
        r#"{{"user_id": "u1", "agent_id": "a1", "query": "{query}", "top_k": 3, "min_similarity": 0.3, "include_categories": null}}"#
    ))
}

/// Phase names, and whether every response of the phase must be a cache hit (else none).
const PHASES: [(&str, bool); 3] = [("hit", true), ("miss", false), ("rps", true)];

/// One target's one-connection lanes for hits and misses (none for `floor`), the tallies of the
/// `PHASES`, and the CPU and throughput figures.
struct Lane {
    target: &'static Target,
    hits: Client,
    misses: Option<Client>,
    /// Distinguishes this pass's miss queries from another pass's.
    pass: &'static str,
    tallies: [Tally; 3],
    hit_cpu: CpuUse,
    rps: Throughput,
}

impl Lane {
    async fn open(target: &'static Target, pass: &'static str) -> Self {
        let hits = Client::connect(target).await;
        let misses = match target.kind {
            Kind::Floor => None,
            _ => Some(Client::connect(target).await),
        };
        Lane {
            target,
            hits,
            misses,
            pass,
            tallies: Default::default(),
            hit_cpu: CpuUse::default(),
            rps: Throughput::default(),
        }
    }

    /// One round: `HIT_N / ROUNDS` cached requests (CPU read around them), then `MISS_N / ROUNDS`
    /// never-seen queries.
    async fn round(&mut self, round: usize) {
        let (before, answered) = (self.target.cpu(), self.tallies[0].ok);
        for _ in 0..HIT_N / ROUNDS {
            let tally = &mut self.tallies[0];
            self.hits.timed(request_body(HOT_QUERY), tally).await;
        }
        if let Some((before, after)) = before.zip(self.target.cpu()) {
            let answered = self.tallies[0].ok - answered;
            self.hit_cpu.add(after.since(&before), answered);
        }
        let Some(misses) = &mut self.misses else {
            return;
        };
        let per_round = MISS_N / ROUNDS;
        for i in round * per_round..(round + 1) * per_round {
            let query = format!("q-{}-{i}", self.pass);
            misses
                .timed(request_body(&query), &mut self.tallies[1])
                .await;
        }
    }

    fn forget_warmup(&mut self) {
        self.tallies.iter_mut().for_each(Tally::forget_warmup);
        self.hit_cpu = CpuUse::default();
    }

    /// Prints the hit checks and errors; returns the number of problems.
    fn check(&self) -> u64 {
        let (name, mut problems) = (self.target.name, 0);
        for ((phase, all_hit), tally) in PHASES.iter().zip(&self.tallies) {
            problems += tally.errors;
            if let Some(error) = &tally.first_error {
                let (errors, ok) = (tally.errors, tally.ok);
                println!("!!! {name} {phase}: {errors} ERRORS ({ok} ok), e.g. {error}");
            }
            if hit_header(self.target.kind).is_some() {
                let right = tally.hits == if *all_hit { tally.ok } else { 0 };
                let verdict = if right { "ok" } else { "MISMATCH" };
                let (hits, ok) = (tally.hits, tally.ok);
                println!("  {name} {phase}: {hits}/{ok} responses were cache hits ({verdict})");
                problems += u64::from(!right);
            }
        }
        problems
    }

    /// The table row and the number of problems.
    fn finish(mut self) -> (Row, u64) {
        let problems = self.check();
        let hit = p50_p99(&mut self.tallies[0].latencies);
        let misses = &mut self.tallies[1].latencies;
        let miss = (!misses.is_empty()).then(|| p50_p99(misses));
        let inside = &mut self.tallies[0].server_times;
        let inside = (!inside.is_empty()).then(|| p50_p99(inside).0);
        let rps = &self.rps;
        let client_cpu = rps.client_cpu.as_secs_f64();
        let row = Row {
            name: self.target.name,
            hit,
            miss,
            rps: rps.per_second(),
            cpu_one: self.hit_cpu.per_request_us(),
            cpu_many: rps.target_cpu.per_request_us(),
            client_cpu: client_cpu * 1e6 / rps.requests.max(1) as f64,
            client_busy: client_cpu / rps.elapsed.as_secs_f64(),
            inside,
        };
        (row, problems)
    }
}

/// Every phase on every target, interleaved so all targets see the same machine state (on a
/// small VM, idle-CPU wake-up latency drifts by tens of µs during a run).
async fn measure_all(targets: &[&'static Target], pass: Pass) -> Vec<(Row, u64)> {
    let mut lanes = Vec::new();
    for target in targets {
        lanes.push(Lane::open(target, pass.label()).await);
    }
    let count = lanes.len();
    for round in 0..=ROUNDS {
        for i in 0..count {
            lanes[(round + i) % count].round(round).await;
        }
        if round == 0 {
            lanes.iter_mut().for_each(Lane::forget_warmup);
        }
    }
    for run in 0..RPS_PASSES as usize {
        for i in 0..count {
            let lane = &mut lanes[if run % 2 == 0 { i } else { count - 1 - i }];
            let (tally, measured) = throughput(lane.target).await;
            lane.tallies[2].merge(tally);
            lane.rps.add(measured);
        }
    }
    lanes.into_iter().map(Lane::finish).collect()
}

/// The two measurements of one run.
#[derive(Clone, Copy, PartialEq)]
enum Pass {
    Unpinned,
    Pinned,
}

impl Pass {
    fn label(self) -> &'static str {
        match self {
            Pass::Unpinned => "unpinned",
            Pass::Pinned => "pinned",
        }
    }

    fn title(self) -> &'static str {
        match self {
            Pass::Unpinned => "unpinned (no affinity set)",
            Pass::Pinned => {
                "pinned: each target's processes and threads (and the stand-in memU's thread) on \
                 CPU 0, the load generator on CPU 1 (`taskset -a -p`)"
            }
        }
    }

    /// Whether `target` is measured in this pass: pinned, only single-worker targets.
    fn includes(self, target: &Target) -> bool {
        self == Pass::Unpinned || target.workers == 1
    }
}

/// Measures the targets `pass` includes; returns its section of the report and its problems.
fn run_pass(pass: Pass, targets: &'static [Target], skipped: &[(&str, String)]) -> (String, u64) {
    let chosen: Vec<&'static Target> = targets.iter().filter(|t| pass.includes(t)).collect();
    let _pinning = match pass {
        Pass::Unpinned => Pinning::default(),
        Pass::Pinned => match Pinning::pin(&chosen) {
            Ok(pinning) => pinning,
            Err(e) => return (format!("### pinned: skipped ({e})\n"), 0),
        },
    };
    let mut skipped: Vec<(&str, String)> = skipped.to_vec();
    let left_out = targets.iter().filter(|t| !pass.includes(t));
    skipped.extend(left_out.map(|t| (t.name, format!("{} workers: not pinned", t.workers))));
    let names: Vec<&str> = chosen.iter().map(|t| t.name).collect();
    println!(
        "{}: measuring {}, interleaved ...",
        pass.label(),
        names.join(", ")
    );
    let client = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build();
    let ticks_before = steal_and_total_ticks();
    let results = client
        .expect("runtime")
        .block_on(measure_all(&chosen, pass));
    let steal = steal_since(ticks_before);
    let (rows, problems): (Vec<Row>, Vec<u64>) = results.into_iter().unzip();
    let section = render(pass, &rows, &skipped);
    let noise = format!("CPU time stolen by the host during this pass (/proc/stat): {steal}\n");
    (section + &noise, problems.iter().sum())
}

/// Runs everything; returns false when any request failed or a hit phase did not hit.
fn run() -> bool {
    // Each guard stops its server (and joins its thread) when `run` returns.
    let mut servers = Servers::start();
    let targets: &'static [Target] = std::mem::take(&mut servers.targets).leak();
    let mut report = format!(
        "CPU µs/hit: the target's own CPU time (every thread of its processes, from {}), \
         read around each measured segment, per request answered in it.\n",
        cpu_source()
    );
    println!("{report}");
    let mut errors = servers.failed;
    for pass in [Pass::Unpinned, Pass::Pinned] {
        let (section, problems) = run_pass(pass, targets, &servers.skipped);
        println!("\n{section}");
        (report, errors) = (report + "\n" + &section, errors + problems);
    }
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/bench-loopback.md");
    let markdown = format!("# memu-proxy loopback bench\n\n{report}");
    let written = std::fs::create_dir_all(path.parent().expect("parent"));
    match written.and_then(|()| std::fs::write(&path, markdown)) {
        Ok(()) => println!("wrote {}", path.display()),
        Err(e) => println!("cannot write {}: {e}", path.display()),
    }
    if errors > 0 {
        println!("\n!!!!!! {errors} ERRORS / FAILED HIT CHECKS: DO NOT TRUST THESE NUMBERS !!!!!!");
    }
    errors == 0
}

fn main() {
    // `cargo test --benches` (or `--all-targets`) runs bench binaries unoptimised: don't measure.
    if !support::invoked_by_cargo_bench() {
        println!("loopback bench: skipped (run it with `cargo bench --bench loopback`)");
        return;
    }
    // The guards (nginx, proxies, upstream) are dropped inside `run`, before the exit code is set.
    if !run() {
        std::process::exit(1);
    }
}
