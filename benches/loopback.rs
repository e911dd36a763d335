//! Loopback benchmark: memu-proxy against the loopback floor and against nginx as a caching proxy.
//!
//! Everything runs on 127.0.0.1 in one run, side by side:
//! - the tests' stand-in memU (`tests/support/memu.rs`) on its own thread and single-threaded
//!   runtime, without latency and without recording requests, answering
//!   `POST /api/v1/memory/retrieve/related-memory-items` with a fixed, realistic ~400-byte memU
//!   answer (`MemUBuilder::fixed_answer`: no parsing, no state), as a static upstream would;
//! - `direct`: the load generator talks to that upstream: the loopback floor;
//! - `proxy`: memu-proxy, started from the library on its own thread, in the runtime the binary
//!   builds (`memu_proxy::runtime`, `server.worker_threads`), as the tests start it;
//! - `nginx`: `/usr/sbin/nginx` (Debian `nginx-light`, `scripts/install-bench-deps.sh`) caching
//!   the same POSTs, configured in a temp dir that is removed afterwards. Skipped if missing.
//!
//! Per target: one-connection hit latency (p50/p99), one-connection miss latency (every query
//! distinct), and hit throughput over 32 keep-alive connections. The latency phases run in
//! interleaved rounds (the first one is warmup) and the throughput runs alternate, so every target
//! sees the same machine state. Every response must be a 200 and the hit phases must really hit
//! (`cache-status: memu-proxy; hit`, nginx's `x-cache-status: HIT`); otherwise the run says so
//! and exits non-zero. Percentiles are nearest-rank (`tests/support/stats.rs`, as in every
//! bench). The table and ratios are printed and written to `target/bench-loopback.md`.
//!
//! Run: `cargo bench --bench loopback`. On a small VM the one-connection latencies are dominated
//! by cross-CPU wake-ups (tens of µs each, depending on where the scheduler puts each thread);
//! `taskset -c 0 cargo bench --bench loopback` runs everything on one CPU and shows CPU cost alone.

#[path = "../tests/support/mod.rs"]
mod support;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::thread;
/// The same allocator as the binary (`src/main.rs`).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{header, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use support::stats::percentiles;
use support::{MemU, Proxy, RELATED as PATH};

const NGINX: &str = "/usr/sbin/nginx";
const HOT_QUERY: &str = "What pets do I like?";
/// One-connection latency: measured requests, split into `ROUNDS` rounds after one warmup round.
const HIT_N: usize = 20_000;
const MISS_N: usize = 5_000;
const ROUNDS: usize = 20;
/// Throughput: `CONNECTIONS` connections, `RPS_PASSES` runs of `RPS_WARMUP` + `RPS_RUN` each.
const CONNECTIONS: usize = 32;
const RPS_PASSES: u32 = 2;
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

/// An nginx child with its own config and temp dir; stopped and cleaned up on drop (and panic).
struct Nginx {
    child: Child,
    dir: PathBuf,
    args: Vec<String>,
}

impl Nginx {
    fn start(upstream: SocketAddr) -> Result<(Self, SocketAddr), String> {
        let free = std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr());
        let addr = free.map_err(|e| format!("no free port: {e}"))?;
        let dir = std::env::temp_dir().join(format!("memu-bench-nginx-{}", std::process::id()));
        std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        // Workers run as `nobody` when we are root: let them reach the cache dir.
        use std::os::unix::fs::PermissionsExt;
        let _ = std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755));
        let (conf, log) = (dir.join("nginx.conf"), dir.join("error.log"));
        let files = [("-c", &conf), ("-p", &dir), ("-e", &log)];
        let args = files
            .map(|(flag, path)| [flag.into(), path.display().to_string()])
            .concat();
        let text = nginx_conf(&dir.display().to_string(), addr, upstream);
        let spawn =
            std::fs::write(&conf, text).and_then(|()| Command::new(NGINX).args(&args).spawn());
        let child = spawn.map_err(|e| {
            let _ = std::fs::remove_dir_all(&dir);
            format!("cannot start {NGINX}: {e}")
        })?;
        let mut nginx = Nginx { child, dir, args };
        nginx.wait_ready(addr)?;
        Ok((nginx, addr))
    }

    fn wait_ready(&mut self, addr: SocketAddr) -> Result<(), String> {
        let give_up = Instant::now() + Duration::from_secs(5);
        while Instant::now() < give_up {
            if let Ok(Some(status)) = self.child.try_wait() {
                let log = std::fs::read_to_string(self.dir.join("error.log")).unwrap_or_default();
                return Err(format!("nginx exited with {status}:\n{log}"));
            }
            if std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(100)).is_ok() {
                return Ok(());
            }
            thread::sleep(Duration::from_millis(10));
        }
        Err("nginx did not answer within 5 s".into())
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        let mut stop = Command::new(NGINX);
        let _ = stop
            .args(&self.args)
            .args(["-s", "stop"])
            .stderr(Stdio::null())
            .status();
        let give_up = Instant::now() + Duration::from_secs(3);
        while matches!(self.child.try_wait(), Ok(None)) && Instant::now() < give_up {
            thread::sleep(Duration::from_millis(10));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn nginx_conf(dir: &str, listen: SocketAddr, upstream: SocketAddr) -> String {
    // keepalive_requests: nginx closes keep-alive connections after 1000 requests by default.
    format!(
        r#"daemon off;
master_process on;
worker_processes 1;
pid {dir}/nginx.pid;
error_log {dir}/error.log warn;
events {{ worker_connections 1024; }}
http {{
    access_log off;
    client_body_temp_path {dir}/client_body;
    proxy_temp_path {dir}/proxy_temp;
    fastcgi_temp_path {dir}/fastcgi_temp;
    uwsgi_temp_path {dir}/uwsgi_temp;
    scgi_temp_path {dir}/scgi_temp;
    proxy_cache_path {dir}/cache levels=1:2 keys_zone=memu:10m max_size=256m use_temp_path=off;
    upstream memu {{
        server {upstream};
        keepalive 64;
        keepalive_requests 1000000;
    }}
    server {{
        listen {listen};
        keepalive_requests 1000000;
        client_body_buffer_size 64k;
        location / {{
            proxy_pass http://memu;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_cache memu;
            proxy_cache_methods POST;
            proxy_cache_key "$request_uri|$http_authorization|$request_body";
            proxy_cache_lock on;
            proxy_cache_valid 200 5m;
            add_header X-Cache-Status $upstream_cache_status always;
        }}
    }}
}}
"#
    )
}

/// One target of the load generator, and the response header that marks a cache hit.
struct Target {
    name: &'static str,
    addr: SocketAddr,
    hit_header: Option<(&'static str, &'static str)>,
}

/// A 200 answer: was it a cache hit, and the proxy's own `Server-Timing` for it, if any.
type Answer = (bool, Option<Duration>);

/// Outcomes of one phase: latencies, 200s, cache hits, and errors (the first one kept).
#[derive(Default)]
struct Tally {
    latencies: Vec<Duration>,
    server_times: Vec<Duration>,
    ok: u64,
    hits: u64,
    errors: u64,
    first_error: Option<String>,
}

impl Tally {
    fn record(&mut self, outcome: Result<Answer, String>) {
        match outcome {
            Ok((hit, server_time)) => {
                (self.ok, self.hits) = (self.ok + 1, self.hits + u64::from(hit));
                self.server_times.extend(server_time);
            }
            Err(error) => (self.errors, self.first_error) = (self.errors + 1, Some(error)),
        }
    }

    fn merge(&mut self, other: Tally) {
        self.ok += other.ok;
        self.hits += other.hits;
        self.errors += other.errors;
        self.first_error = self.first_error.take().or(other.first_error);
    }

    /// Forgets a warmup's successes; its errors still count.
    fn forget_warmup(&mut self) {
        (self.latencies, self.server_times) = (Vec::new(), Vec::new());
        (self.ok, self.hits) = (0, 0);
    }
}

/// A keep-alive HTTP/1.1 connection (TCP_NODELAY) that reconnects after a transport error.
struct Client {
    target: &'static Target,
    sender: SendRequest<Full<Bytes>>,
}

impl Client {
    async fn connect(target: &'static Target) -> Self {
        let stream = TcpStream::connect(target.addr).await.expect("connect");
        stream.set_nodelay(true).expect("nodelay");
        let handshake = hyper::client::conn::http1::handshake(TokioIo::new(stream));
        let (sender, connection) = handshake.await.expect("handshake");
        tokio::spawn(connection);
        Client { target, sender }
    }

    /// Sends one retrieval: an [`Answer`] for a 200, else what went wrong.
    async fn send(&mut self, body: Bytes) -> Result<Answer, String> {
        let request = Request::post(PATH)
            .header(header::HOST, self.target.addr.to_string())
            .header(header::CONTENT_TYPE, "application/json")
            .header(header::AUTHORIZATION, "Bearer bench-key")
            .body(Full::new(body))
            .expect("request");
        let exchange = async {
            self.sender.ready().await?;
            let (parts, body) = self.sender.send_request(request).await?.into_parts();
            body.collect().await.map(|_| parts)
        };
        let name = self.target.name;
        let parts = match exchange.await {
            Ok(parts) if parts.status == StatusCode::OK => parts,
            Ok(parts) => return Err(format!("{name}: status {}", parts.status)),
            Err(error) => {
                *self = Client::connect(self.target).await;
                return Err(format!("{name}: {error}"));
            }
        };
        let is_hit = |(header, value)| parts.headers.get(header).is_some_and(|v| v == value);
        Ok((
            self.target.hit_header.is_some_and(is_hit),
            proxy_time(&parts.headers),
        ))
    }

    /// One timed request into `tally`.
    async fn timed(&mut self, body: Bytes, tally: &mut Tally) {
        let started = Instant::now();
        let outcome = self.send(body).await;
        tally.latencies.push(started.elapsed());
        tally.record(outcome);
    }
}

/// The time spent inside the proxy's service, from its `Server-Timing: proxy;dur=<ms>` entry
/// (excludes HTTP/1 parsing, encoding and socket I/O).
fn proxy_time(headers: &http::HeaderMap) -> Option<Duration> {
    let values = headers
        .get_all("server-timing")
        .into_iter()
        .filter_map(|v| v.to_str().ok());
    let mut entries = values.flat_map(|v| v.split(',')).map(str::trim);
    let ms = entries
        .find_map(|e| e.strip_prefix("proxy;dur="))?
        .parse::<f64>()
        .ok()?;
    Some(Duration::from_secs_f64(ms / 1e3))
}

/// Phase names, and whether every response of the phase must be a cache hit (else none).
const PHASES: [(&str, bool); 3] = [("hit", true), ("miss", false), ("rps", true)];

/// One target's one-connection lanes for hits and misses, and the tallies of the `PHASES`.
struct Lane {
    target: &'static Target,
    hits: Client,
    misses: Client,
    tallies: [Tally; 3],
}

impl Lane {
    async fn open(target: &'static Target) -> Self {
        let (hits, misses) = (Client::connect(target).await, Client::connect(target).await);
        let tallies = Default::default();
        Lane {
            target,
            hits,
            misses,
            tallies,
        }
    }

    /// One round: `HIT_N / ROUNDS` cached requests, then `MISS_N / ROUNDS` never-seen queries.
    async fn round(&mut self, round: usize) {
        for _ in 0..HIT_N / ROUNDS {
            let tally = &mut self.tallies[0];
            self.hits.timed(request_body(HOT_QUERY), tally).await;
        }
        let per_round = MISS_N / ROUNDS;
        for i in round * per_round..(round + 1) * per_round {
            let tally = &mut self.tallies[1];
            self.misses
                .timed(request_body(&format!("q-{i}")), tally)
                .await;
        }
    }

    /// Prints the hit checks and errors; returns the table row and the number of problems.
    fn finish(mut self) -> (Row, u64) {
        let (name, mut problems) = (self.target.name, 0);
        for ((phase, all_hit), tally) in PHASES.iter().zip(&self.tallies) {
            problems += tally.errors;
            if let Some(error) = &tally.first_error {
                let (errors, ok) = (tally.errors, tally.ok);
                println!("!!! {name} {phase}: {errors} ERRORS ({ok} ok), e.g. {error}");
            }
            if self.target.hit_header.is_some() {
                let right = tally.hits == if *all_hit { tally.ok } else { 0 };
                let verdict = if right { "ok" } else { "MISMATCH" };
                let (hits, ok) = (tally.hits, tally.ok);
                println!("  {name} {phase}: {hits}/{ok} responses were cache hits ({verdict})");
                problems += u64::from(!right);
            }
        }
        let rps = self.tallies[2].ok as f64 / (RPS_RUN * RPS_PASSES).as_secs_f64();
        let hit = p50_p99(&mut self.tallies[0].latencies);
        let miss = p50_p99(&mut self.tallies[1].latencies);
        let inside = &mut self.tallies[0].server_times;
        let inside = (!inside.is_empty()).then(|| p50_p99(inside).0);
        (
            Row {
                name,
                hit,
                miss,
                rps,
                inside,
            },
            problems,
        )
    }
}

/// Hot-body throughput over `CONNECTIONS` keep-alive connections: 200s completed in the window.
async fn throughput(target: &'static Target) -> Tally {
    let measure_from = Instant::now() + RPS_WARMUP;
    let end = measure_from + RPS_RUN;
    let connection = move || async move {
        let (mut client, mut tally) = (Client::connect(target).await, Tally::default());
        while Instant::now() < end {
            let outcome = client.send(request_body(HOT_QUERY)).await;
            if Instant::now() >= measure_from || outcome.is_err() {
                tally.record(outcome);
            }
        }
        tally
    };
    let tasks: Vec<_> = (0..CONNECTIONS)
        .map(|_| tokio::spawn(connection()))
        .collect();
    let mut total = Tally::default();
    for task in tasks {
        total.merge(task.await.expect("load task"));
    }
    total
}

/// Every phase on every target, interleaved so all targets see the same machine state (on a
/// small VM, idle-CPU wake-up latency drifts by tens of µs during a run).
async fn measure_all(targets: &'static [Target]) -> Vec<(Row, u64)> {
    let mut lanes = Vec::new();
    for target in targets {
        lanes.push(Lane::open(target).await);
    }
    let count = lanes.len();
    for round in 0..=ROUNDS {
        for i in 0..count {
            lanes[(round + i) % count].round(round).await;
        }
        if round == 0 {
            lanes
                .iter_mut()
                .flat_map(|l| &mut l.tallies)
                .for_each(Tally::forget_warmup);
        }
    }
    for pass in 0..RPS_PASSES as usize {
        for i in 0..count {
            let lane = &mut lanes[if pass % 2 == 0 { i } else { count - 1 - i }];
            lane.tallies[2].merge(throughput(lane.target).await);
        }
    }
    lanes.into_iter().map(Lane::finish).collect()
}

/// p50 and p99 in microseconds.
fn p50_p99(samples: &mut [Duration]) -> (f64, f64) {
    let [p50, p99] = percentiles(samples, [0.5, 0.99]).map(|d| d.as_secs_f64() * 1e6);
    (p50, p99)
}

struct Row {
    name: &'static str,
    hit: (f64, f64),
    miss: (f64, f64),
    rps: f64,
    /// p50 of the proxy's own `Server-Timing` on hits, µs.
    inside: Option<f64>,
}

const TABLE_HEAD: &str = "\
| target | hit p50 µs | hit p99 µs | miss p50 µs | miss p99 µs | hit rps (32 conn) |
|--------|-----------:|-----------:|------------:|------------:|------------------:|
";

/// The results as an aligned markdown table (printed and written as-is), then the ratios.
fn render(rows: &[Row], nginx_note: Option<&str>) -> String {
    let line = |[a, b, c, d, e, f]: [&str; 6]| {
        format!("| {a:<6} | {b:>10} | {c:>10} | {d:>11} | {e:>11} | {f:>17} |\n")
    };
    let mut out = String::from(TABLE_HEAD);
    for r in rows {
        let [a, b, c, d] = [r.hit.0, r.hit.1, r.miss.0, r.miss.1].map(|v| format!("{v:.1}"));
        out += &line([r.name, &a, &b, &c, &d, &format!("{:.0}", r.rps)]);
    }
    if let Some(note) = nginx_note {
        out += &line(["nginx", "skipped", "-", "-", "-", note]);
    }
    let find = |name| rows.iter().find(|r| r.name == name);
    let (direct, proxy) = (
        find("direct").expect("direct"),
        find("proxy").expect("proxy"),
    );
    let vs_nginx = find("nginx").map_or("n/a (nginx skipped)".into(), |n| {
        format!("{:.2}", proxy.rps / n.rps)
    });
    let (diff, ratio) = (proxy.hit.0 - direct.hit.0, proxy.hit.0 / direct.hit.0);
    let inside = proxy
        .inside
        .map_or("n/a".into(), |us| format!("{us:.1} µs"));
    out + &format!(
        "\nratios: proxy hit rps / nginx hit rps = {vs_nginx} ; \
         proxy hit p50 - direct p50 = {diff:.1} µs ; proxy/direct p50 = {ratio:.2}\n\
         proxy hit p50 inside its service (Server-Timing proxy;dur) = {inside}\n"
    )
}

/// Starts nginx if installed; `Err` carries the table note (and says why on stdout).
fn start_nginx(upstream: SocketAddr) -> Result<(Nginx, SocketAddr), &'static str> {
    if !std::path::Path::new(NGINX).exists() {
        println!("nginx skipped: {NGINX} not found; install it with scripts/install-bench-deps.sh");
        return Err("not installed");
    }
    Nginx::start(upstream).map_err(|e| {
        println!("!!! nginx FAILED TO START, skipped: {e}");
        "failed to start"
    })
}

/// Runs everything; returns false when any request failed or a hit phase did not hit.
fn run() -> bool {
    // Each guard stops its server (and joins its thread) when `run` returns.
    let memu = MemU::builder()
        .record_requests(false)
        .fixed_answer("related-memory-items", UPSTREAM_BODY)
        .start_on_own_thread();
    let upstream = memu.addr;
    let proxy_thread =
        Proxy::start_on_own_thread(&memu.url(), |s| s.server.shutdown_grace_ms = 1_000);
    let proxy = *proxy_thread;
    let nginx = start_nginx(upstream);
    let target = |name, addr, hit_header| Target {
        name,
        addr,
        hit_header,
    };
    let mut targets = vec![
        target("direct", upstream, None),
        target("proxy", proxy, Some(("cache-status", "memu-proxy; hit"))),
    ];
    if let Ok((_, addr)) = &nginx {
        targets.push(target("nginx", *addr, Some(("x-cache-status", "HIT"))));
    }
    let targets: &'static [Target] = targets.leak();
    println!("measuring direct, proxy and nginx, interleaved (about 30 s) ...");
    let client = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build();
    let results = client.expect("runtime").block_on(measure_all(targets));
    let (rows, problems): (Vec<Row>, Vec<u64>) = results.into_iter().unzip();
    let nginx_note = nginx.as_ref().err().copied();
    let errors = problems.iter().sum::<u64>() + u64::from(nginx_note == Some("failed to start"));
    let table = render(&rows, nginx_note);
    println!("\n{table}");
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/bench-loopback.md");
    let markdown = format!("# memu-proxy loopback bench\n\n{table}");
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
    // The guards (nginx, proxy, upstream) are dropped inside `run`, before the exit code is set.
    if !run() {
        std::process::exit(1);
    }
}
