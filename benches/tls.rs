//! TLS benchmark: a client that opens a new connection for every call (as memu-cli does, with a
//! new httpx client per call), straight to memU over TLS versus through memu-proxy.
//!
//! Everything runs on 127.0.0.1 in one run:
//! - the tests' stand-in memU (`tests/support/memu.rs`) served over TLS (`tests/support/tls.rs`:
//!   a CA and an ECDSA P-256 certificate made at start), on its own thread and single-threaded
//!   runtime, answering related-memory-items with a fixed ~400-byte memU answer (a static
//!   upstream: no parsing, no state, no latency);
//! - `direct`: each call opens TCP, does a full TLS handshake with a real rustls client (no
//!   session resumption, verification against the test CA, SNI `localhost`), sends one retrieval
//!   over HTTP/1.1, reads the answer and drops the connection;
//! - `proxy miss`: each call opens plain TCP to memu-proxy (on its own thread, in the runtime the
//!   binary builds) with a query never asked before, so the proxy forwards it to memU over its
//!   pooled, kept-alive TLS connections (`upstream.ca_file` = the test CA);
//! - `proxy hit`: the same, always the same query: answered from the cache.
//!
//! The targets run in interleaved rounds (the first one is warmup). Every answer must be a 200 and
//! the proxy rows must really miss (`fwd=miss; stored`) or hit; otherwise the run says so and
//! exits non-zero. It reports p50/p99 per call (nearest-rank, `tests/support/stats.rs`), the
//! ratios, and how many TLS handshakes memU saw from each side, printed and written to
//! `target/bench-tls.md`. Run: `cargo bench --bench tls`.

#[path = "../tests/support/mod.rs"]
mod support;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{header, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use rustls::pki_types::ServerName;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

use support::stats::percentiles;
use support::tls::TestCa;
use support::{MemU, Proxy, Route, HIT, MISS_STORED, RELATED as PATH};

/// The same allocator as the binary (`src/main.rs`).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Measured calls per target, split into `ROUNDS` rounds after one warmup round of the same size.
const CALLS: usize = 10_000;
const ROUNDS: usize = 20;
const HOT_QUERY: &str = "What pets do I like?";
/// memU's answer to every retrieval, as the real server shapes it (memu-api.md §3.1).
const UPSTREAM_BODY: &str = r#"{"related_memories":[{"memory":{"memory_id":"m1","category":"activity","content":"Alice loves her black cat named Mochi.","happened_at":"2026-11-24T00:00:00","created_at":null,"updated_at":null},"similarity_score":0.63}],"query":"What pets do I like?","total_found":1,"search_params":{"query":"What pets do I like?","top_k":3,"min_similarity":0.3,"include_categories":null}}"#;

/// One way of calling memU, and the `Cache-Status` its answers must carry.
struct Target {
    name: &'static str,
    addr: SocketAddr,
    /// `Some`: TLS straight to memU.
    tls: Option<TlsConnector>,
    cache_status: Option<&'static str>,
    latencies: Vec<Duration>,
    errors: usize,
    first_error: Option<String>,
}

impl Target {
    /// The query of call `i`: distinct per call, except for the hit row.
    fn query(&self, i: usize) -> String {
        match self.cache_status {
            Some(HIT) => HOT_QUERY.to_owned(),
            _ => format!("{} {i}", self.name),
        }
    }

    /// One timed call on a new connection; `measured` false for the warmup.
    async fn timed(&mut self, i: usize, measured: bool) {
        let body = request_body(&self.query(i));
        let started = Instant::now();
        let outcome = self.call(body).await;
        let took = started.elapsed();
        match outcome {
            Ok(()) if measured => self.latencies.push(took),
            Ok(()) => {}
            Err(error) => (self.errors, self.first_error) = (self.errors + 1, Some(error)),
        }
    }

    /// Connect (and handshake TLS when direct), send one retrieval, read the whole answer.
    async fn call(&self, body: Bytes) -> Result<(), String> {
        let tcp = TcpStream::connect(self.addr)
            .await
            .map_err(|e| e.to_string())?;
        tcp.set_nodelay(true).map_err(|e| e.to_string())?;
        let status = match &self.tls {
            Some(tls) => {
                let name = ServerName::try_from("localhost").expect("a DNS name");
                let stream = tls.connect(name, tcp).await.map_err(|e| e.to_string())?;
                self.exchange(TokioIo::new(stream), body).await?
            }
            None => self.exchange(TokioIo::new(tcp), body).await?,
        };
        match (status, self.cache_status) {
            ((StatusCode::OK, _), None) => Ok(()),
            ((StatusCode::OK, Some(got)), Some(want)) if got == want => Ok(()),
            (got, _) => Err(format!("{}: got {got:?}", self.name)),
        }
    }

    /// One HTTP/1.1 exchange on a fresh connection, which is dropped afterwards.
    async fn exchange<IO>(
        &self,
        io: IO,
        body: Bytes,
    ) -> Result<(StatusCode, Option<String>), String>
    where
        IO: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
    {
        let handshake = hyper::client::conn::http1::handshake(io).await;
        let (mut sender, connection) = handshake.map_err(|e| e.to_string())?;
        tokio::spawn(connection);
        let request = Request::post(PATH)
            .header(header::HOST, format!("localhost:{}", self.addr.port()))
            .header(header::CONTENT_TYPE, "application/json")
            .header(header::AUTHORIZATION, "Bearer bench-key")
            .body(Full::new(body))
            .expect("request");
        let response = sender.send_request(request).await;
        let (parts, body) = response.map_err(|e| e.to_string())?.into_parts();
        body.collect().await.map_err(|e| e.to_string())?;
        let cache_status = parts.headers.get("cache-status");
        let cache_status = cache_status
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        Ok((parts.status, cache_status))
    }
}

/// The SDK's retrieval body.
fn request_body(query: &str) -> Bytes {
    Bytes::from(format!(
        r#"{{"user_id": "u1", "agent_id": "a1", "query": "{query}", "top_k": 3, "min_similarity": 0.3, "include_categories": null}}"#
    ))
}

/// Every target, in interleaved rounds; round 0 is warmup.
async fn measure(targets: &mut [Target]) {
    let per_round = CALLS / ROUNDS;
    let count = targets.len();
    for round in 0..=ROUNDS {
        for t in 0..count {
            let target = &mut targets[(round + t) % count];
            for i in round * per_round..(round + 1) * per_round {
                target.timed(i, round > 0).await;
            }
        }
    }
}

/// p50 and p99 in microseconds.
fn p50_p99(samples: &mut [Duration]) -> (f64, f64) {
    let [p50, p99] = percentiles(samples, [0.5, 0.99]).map(|d| d.as_secs_f64() * 1e6);
    (p50, p99)
}

/// The table, the ratios and the handshake counts, as markdown.
fn render(targets: &mut [Target], handshakes: (usize, usize), upstream_calls: usize) -> String {
    let mut out = String::from("| new connection per call | p50 µs | p99 µs |\n|---|---:|---:|\n");
    let mut rows = Vec::new();
    for target in targets.iter_mut() {
        let (p50, p99) = p50_p99(&mut target.latencies);
        out += &format!("| {} | {p50:.0} | {p99:.0} |\n", target.name);
        rows.push((p50, p99));
    }
    let (direct, miss, hit) = (rows[0], rows[1], rows[2]);
    let (direct_handshakes, proxy_handshakes) = handshakes;
    out + &format!(
        "\nratios (proxy / direct): miss p50 {:.2}, p99 {:.2}; hit p50 {:.2}, p99 {:.2}\n\
         TLS handshakes memU saw: direct {direct_handshakes} (one per call); from the proxy \
         {proxy_handshakes} for its {upstream_calls} upstream calls (pooled)\n",
        miss.0 / direct.0,
        miss.1 / direct.1,
        hit.0 / direct.0,
        hit.1 / direct.1,
    )
}

/// Runs everything; returns false when any call failed or a row's `Cache-Status` was wrong.
fn run() -> bool {
    let ca = TestCa::generate("memu-proxy bench CA");
    // Each guard stops its server (and joins its thread) when `run` returns.
    let memu = MemU::builder()
        .record_requests(false)
        .fixed_answer("related-memory-items", UPSTREAM_BODY)
        .tls(&ca)
        .start_on_own_thread();
    let proxy = Proxy::start_on_own_thread(&memu.url(), |s| {
        s.upstream.ca_file = Some(ca.pem_file());
        s.server.shutdown_grace_ms = 1_000;
    });
    let target = |name, addr, tls, cache_status| Target {
        name,
        addr,
        tls,
        cache_status,
        latencies: Vec::with_capacity(CALLS),
        errors: 0,
        first_error: None,
    };
    let direct = Some(TlsConnector::from(ca.client_config()));
    let mut targets = [
        target("direct → TLS memU", memu.addr, direct, None),
        target("proxy miss → pooled TLS", *proxy, None, Some(MISS_STORED)),
        target("proxy hit", *proxy, None, Some(HIT)),
    ];
    println!("measuring {CALLS} calls per target, interleaved ...");
    let client = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    client.block_on(async {
        // The hit row's query is stored first, by one unmeasured miss.
        if let Err(error) = targets[1].call(request_body(HOT_QUERY)).await {
            targets[2].errors += 1;
            targets[2].first_error = Some(format!("storing the hot query: {error}"));
        }
        measure(&mut targets).await;
    });
    let direct_calls = CALLS / ROUNDS * (ROUNDS + 1);
    let upstream_calls = memu.hits(Route::Related).saturating_sub(direct_calls);
    let handshakes = memu.tls().handshakes();
    let split = (direct_calls, handshakes.saturating_sub(direct_calls));
    let errors: usize = targets.iter().map(|t| t.errors).sum();
    for t in &targets {
        if let Some(error) = &t.first_error {
            println!("!!! {}: {} ERRORS, e.g. {error}", t.name, t.errors);
        }
    }
    let table = render(&mut targets, split, upstream_calls);
    println!("\n{table}");
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/bench-tls.md");
    let markdown = format!("# memu-proxy TLS bench (new connection per call)\n\n{table}");
    let written = std::fs::create_dir_all(path.parent().expect("parent"));
    match written.and_then(|()| std::fs::write(&path, markdown)) {
        Ok(()) => println!("wrote {}", path.display()),
        Err(e) => println!("cannot write {}: {e}", path.display()),
    }
    if errors > 0 {
        println!("\n!!!!!! {errors} ERRORS: DO NOT TRUST THESE NUMBERS !!!!!!");
    }
    errors == 0
}

fn main() {
    // `cargo test --benches` (or `--all-targets`) runs bench binaries unoptimised: don't measure.
    if !support::invoked_by_cargo_bench() {
        println!("tls bench: skipped (run it with `cargo bench --bench tls`)");
        return;
    }
    if !run() {
        std::process::exit(1);
    }
}
