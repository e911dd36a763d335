//! Loopback benchmark: memu-proxy against the loopback floor and against nginx as a caching proxy.
//!
//! Everything runs on 127.0.0.1 in one process run, side by side:
//! - an in-process static memU upstream (hyper, own thread) answering
//!   `POST /api/v1/memory/retrieve/related-memory-items` with a fixed ~400-byte JSON body;
//! - `direct`: the load generator talks to that upstream (the loopback floor);
//! - `proxy`: memu-proxy started in-process from the library on its own multi-thread runtime;
//! - `nginx`: `/usr/sbin/nginx` (Debian `nginx-light`, see `scripts/install-bench-deps.sh`) as a
//!   caching proxy for the same POSTs, configured in a temp dir that is removed afterwards.
//!
//! For each target: one-connection hit latency (p50/p99), one-connection miss latency (every
//! query distinct), and hit throughput over 32 keep-alive connections. Results are printed as a
//! table with ratios and written as markdown to `target/bench-loopback.md`. Every response must be
//! a 200, and the hit phases must really hit (`cache-status: memu-proxy; hit` on the proxy,
//! `x-cache-status: HIT` on nginx); a run with errors says so and exits non-zero.
//!
//! Run: `cargo bench --bench loopback` (nginx is skipped, with a message, when not installed).

use std::fmt::Write as _;
use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{header, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use memu_proxy::config::Settings;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;

const PATH: &str = "/api/v1/memory/retrieve/related-memory-items";
const NGINX: &str = "/usr/sbin/nginx";
const HIT_WARMUP: usize = 1_000;
const HIT_N: usize = 20_000;
const MISS_WARMUP: usize = 200;
const MISS_N: usize = 5_000;
const CONNECTIONS: usize = 32;
const RPS_WARMUP: Duration = Duration::from_millis(500);
const RPS_RUN: Duration = Duration::from_secs(3);
const UPSTREAM_BODY: &str = r#"{"related_memories":[{"memory":{"memory_id":"m1","category":"activity","content":"Alice loves her black cat named Mochi.","happened_at":"2026-11-24T00:00:00","created_at":null,"updated_at":null},"similarity_score":0.63}],"query":"What pets do I like?","total_found":1,"search_params":{"query":"What pets do I like?","top_k":3,"min_similarity":0.3,"include_categories":null}}"#;

fn request_body(query: &str) -> Bytes {
    Bytes::from(format!(
        r#"{{"user_id": "u1", "agent_id": "a1", "query": "{query}", "top_k": 3, "min_similarity": 0.3, "include_categories": null}}"#
    ))
}

/// A server running on its own thread and tokio runtime; stopped and joined on drop.
struct Background {
    stop: Option<oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl Background {
    fn start<S, F>(name: &str, multi_thread: bool, serve: S) -> (Self, SocketAddr)
    where
        S: FnOnce(mpsc::Sender<SocketAddr>, oneshot::Receiver<()>) -> F + Send + 'static,
        F: Future<Output = ()>,
    {
        let (stop, stopped) = oneshot::channel();
        let (addr_tx, addr_rx) = mpsc::channel();
        let thread = thread::Builder::new().name(name.into()).spawn(move || {
            let mut builder = match multi_thread {
                true => tokio::runtime::Builder::new_multi_thread(),
                false => tokio::runtime::Builder::new_current_thread(),
            };
            let runtime = builder.enable_all().build().expect("runtime");
            runtime.block_on(serve(addr_tx, stopped));
        });
        let addr = addr_rx.recv().unwrap_or_else(|_| panic!("{name} failed to start"));
        let thread = Some(thread.expect("spawn thread"));
        (Self { stop: Some(stop), thread }, addr)
    }
}

impl Drop for Background {
    fn drop(&mut self) {
        drop(self.stop.take().map(|stop| stop.send(())));
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// The static upstream: a fixed memU answer for the retrieval route, 404 otherwise.
async fn serve_upstream(addr_tx: mpsc::Sender<SocketAddr>, mut stop: oneshot::Receiver<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind upstream");
    addr_tx.send(listener.local_addr().expect("addr")).expect("report addr");
    let mut builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
    builder.http1().timer(TokioTimer::new());
    loop {
        tokio::select! {
            Ok((stream, _)) = listener.accept() => {
                let _ = stream.set_nodelay(true);
                let service = hyper::service::service_fn(upstream_answer);
                let connection = builder.serve_connection(TokioIo::new(stream), service).into_owned();
                tokio::spawn(connection);
            }
            _ = &mut stop => break,
        }
    }
}

async fn upstream_answer(request: Request<Incoming>) -> Result<Response<Full<Bytes>>, hyper::Error> {
    let known = request.method() == Method::POST && request.uri().path() == PATH;
    request.into_body().collect().await?;
    let (status, body) = match known {
        true => (StatusCode::OK, UPSTREAM_BODY),
        false => (StatusCode::NOT_FOUND, r#"{"detail":"Not Found"}"#),
    };
    let mut response = Response::new(Full::new(Bytes::from_static(body.as_bytes())));
    *response.status_mut() = status;
    let json = header::HeaderValue::from_static("application/json");
    response.headers_mut().insert(header::CONTENT_TYPE, json);
    Ok(response)
}

/// memu-proxy from the library, default settings pointed at the upstream.
async fn serve_proxy(upstream: SocketAddr, addr_tx: mpsc::Sender<SocketAddr>, stop: oneshot::Receiver<()>) {
    let mut settings = Settings::default();
    settings.server.listen = "127.0.0.1:0".into();
    settings.server.shutdown_grace_ms = 1_000;
    settings.upstream.url = format!("http://{upstream}");
    let config = settings.validate().expect("valid proxy config");
    let listeners = memu_proxy::Listeners::bind(&config).await.expect("bind proxy");
    addr_tx.send(listeners.local_addr().expect("addr")).expect("report addr");
    let shutdown = async {
        let _ = stop.await;
    };
    tokio::spawn(memu_proxy::run(config, listeners, shutdown)).await.expect("proxy task");
}

/// An nginx child process with its own config and temp dir; stopped and cleaned up on drop.
struct Nginx {
    child: Child,
    dir: PathBuf,
    args: Vec<String>,
}

impl Nginx {
    fn start(upstream: SocketAddr) -> Result<(Self, SocketAddr), String> {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map_err(|e| e.to_string())?
            .port();
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let dir = std::env::temp_dir().join(format!("memu-bench-nginx-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
        // Workers may run as `nobody` when we are root: let them reach the cache dir.
        use std::os::unix::fs::PermissionsExt;
        let _ = std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755));
        let conf = dir.join("nginx.conf");
        std::fs::write(&conf, nginx_conf(&dir.display().to_string(), addr, upstream)).map_err(|e| e.to_string())?;
        let args = [("-c", &conf), ("-p", &dir), ("-e", &dir.join("error.log"))]
            .iter()
            .flat_map(|(flag, path)| [flag.to_string(), path.display().to_string()])
            .collect::<Vec<_>>();
        let child = Command::new(NGINX)
            .args(&args)
            .stdin(Stdio::null())
            .spawn()
            .map_err(|e| format!("cannot start {NGINX}: {e}"))?;
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
        let _ = Command::new(NGINX).args(&self.args).args(["-s", "stop"]).stderr(Stdio::null()).status();
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
    proxy_cache_path {dir}/cache levels=1:2 keys_zone=memu:10m max_size=256m inactive=10m use_temp_path=off;
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

/// One target of the load generator, and how it marks a cache hit.
struct Target {
    name: &'static str,
    addr: SocketAddr,
    hit_header: Option<(&'static str, &'static str)>,
}

/// Response accounting: every response must be a 200; hits are counted where detectable.
#[derive(Default)]
struct Tally {
    ok: u64,
    hits: u64,
    errors: u64,
    samples: Vec<String>,
}

impl Tally {
    fn error(&mut self, what: String) {
        self.errors += 1;
        if self.samples.len() < 5 {
            self.samples.push(what);
        }
    }

    fn merge(&mut self, other: Tally) {
        self.ok += other.ok;
        self.hits += other.hits;
        self.errors += other.errors;
        self.samples.extend(other.samples.into_iter().take(5 - self.samples.len().min(5)));
    }
}

/// A keep-alive HTTP/1.1 client connection that reconnects after a transport error.
struct Client {
    target: &'static Target,
    sender: SendRequest<Full<Bytes>>,
}

impl Client {
    async fn connect(target: &'static Target) -> Self {
        let stream = TcpStream::connect(target.addr).await.expect("connect");
        stream.set_nodelay(true).expect("nodelay");
        let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await.expect("handshake");
        tokio::spawn(connection);
        Self { target, sender }
    }

    /// Sends one retrieval and checks the answer.
    async fn send(&mut self, body: Bytes, tally: &mut Tally) {
        let request = Request::post(PATH)
            .header(header::HOST, self.target.addr.to_string())
            .header(header::CONTENT_TYPE, "application/json")
            .header(header::AUTHORIZATION, "Bearer bench-key")
            .body(Full::new(body))
            .expect("request");
        let result = async {
            self.sender.ready().await?;
            let response = self.sender.send_request(request).await?;
            let (parts, body) = response.into_parts();
            body.collect().await?;
            Ok::<_, hyper::Error>(parts)
        };
        match result.await {
            Ok(parts) if parts.status == StatusCode::OK => {
                tally.ok += 1;
                let hit = self.target.hit_header.is_some_and(|(name, value)| parts.headers.get(name).is_some_and(|v| v == value));
                tally.hits += u64::from(hit);
            }
            Ok(parts) => tally.error(format!("{}: status {}", self.target.name, parts.status)),
            Err(error) => {
                tally.error(format!("{}: {error}", self.target.name));
                *self = Self::connect(self.target).await;
            }
        }
    }
}

/// Sequential requests on one connection; latencies of those after `warmup`.
async fn sequential(target: &'static Target, bodies: impl Iterator<Item = Bytes>, warmup: usize) -> (Vec<Duration>, Tally) {
    let mut client = Client::connect(target).await;
    let (mut latencies, mut tally, mut ignored) = (Vec::new(), Tally::default(), Tally::default());
    for (i, body) in bodies.enumerate() {
        let started = Instant::now();
        client.send(body, if i < warmup { &mut ignored } else { &mut tally }).await;
        if i >= warmup {
            latencies.push(started.elapsed());
        }
    }
    tally.merge(Tally { hits: 0, ok: 0, ..ignored }); // warmup errors still count
    (latencies, tally)
}

/// Cached-body throughput over `CONNECTIONS` keep-alive connections.
async fn throughput(target: &'static Target, body: Bytes) -> (f64, Tally) {
    let measure_from = Instant::now() + RPS_WARMUP;
    let end = measure_from + RPS_RUN;
    let tasks: Vec<_> = (0..CONNECTIONS)
        .map(|_| {
            let body = body.clone();
            tokio::spawn(async move {
                let mut client = Client::connect(target).await;
                let (mut counted, mut tally, mut ignored) = (0u64, Tally::default(), Tally::default());
                while Instant::now() < end {
                    let in_window = Instant::now() >= measure_from;
                    client.send(body.clone(), if in_window { &mut tally } else { &mut ignored }).await;
                    counted += u64::from(in_window && Instant::now() < end);
                }
                tally.merge(Tally { hits: 0, ok: 0, ..ignored });
                (counted, tally)
            })
        })
        .collect();
    let mut total = (0, Tally::default());
    for task in tasks {
        let (counted, tally) = task.await.expect("load task");
        total.0 += counted;
        total.1.merge(tally);
    }
    (total.0 as f64 / RPS_RUN.as_secs_f64(), total.1)
}

/// p50 and p99 in microseconds.
fn percentiles(mut samples: Vec<Duration>) -> (f64, f64) {
    samples.sort_unstable();
    let at = |p: f64| samples[((samples.len() - 1) as f64 * p).round() as usize].as_secs_f64() * 1e6;
    (at(0.50), at(0.99))
}

struct Row {
    name: &'static str,
    hit: (f64, f64),
    miss: (f64, f64),
    rps: f64,
}

/// All three phases against one target; prints hit verification and errors as it goes.
async fn measure(target: &'static Target) -> (Row, u64) {
    let hot = request_body("What pets do I like?");
    let (hit, hit_tally) = sequential(target, std::iter::repeat_n(hot.clone(), 1 + HIT_WARMUP + HIT_N), 1 + HIT_WARMUP).await;
    let misses = (0..MISS_WARMUP + MISS_N).map(|i| request_body(&format!("q-{i}")));
    let (miss, miss_tally) = sequential(target, misses, MISS_WARMUP).await;
    let (rps, rps_tally) = throughput(target, hot).await;
    let mut errors = 0;
    for (phase, tally, want_hits) in [("hit", hit_tally, true), ("miss", miss_tally, false), ("rps", rps_tally, true)] {
        errors += tally.errors;
        if tally.errors > 0 {
            println!("!!! {} {phase}: {} ERRORS (of {} ok): {:?}", target.name, tally.errors, tally.ok, tally.samples);
        }
        if target.hit_header.is_some() {
            let expected = if want_hits { tally.ok } else { 0 };
            let verdict = if tally.hits == expected { "ok" } else { "MISMATCH" };
            println!("  {} {phase}: {}/{} responses were cache hits ({verdict})", target.name, tally.hits, tally.ok);
            errors += u64::from(tally.hits != expected);
        }
    }
    let row = Row { name: target.name, hit: percentiles(hit), miss: percentiles(miss), rps };
    (row, errors)
}

fn render(rows: &[Row], nginx_note: Option<&str>, markdown: bool) -> String {
    let mut out = String::new();
    let cells = |c: [&str; 6]| match markdown {
        true => format!("| {} |\n", c.join(" | ")),
        false => format!("{:<7} {:>11} {:>11} {:>12} {:>12} {:>18}\n", c[0], c[1], c[2], c[3], c[4], c[5]),
    };
    out += &cells(["target", "hit p50 µs", "hit p99 µs", "miss p50 µs", "miss p99 µs", "hit rps (32 conn)"]);
    if markdown {
        out += "|---|--:|--:|--:|--:|--:|\n";
    }
    for r in rows {
        let f = |v: f64| format!("{v:.1}");
        out += &cells([r.name, &f(r.hit.0), &f(r.hit.1), &f(r.miss.0), &f(r.miss.1), &format!("{:.0}", r.rps)]);
    }
    if let Some(note) = nginx_note {
        out += &cells(["nginx", "skipped", "-", "-", "-", note]);
    }
    let find = |name| rows.iter().find(|r| r.name == name);
    let (direct, proxy) = (find("direct").expect("direct"), find("proxy").expect("proxy"));
    let vs_nginx = find("nginx").map_or("n/a (nginx skipped)".into(), |n| format!("{:.2}", proxy.rps / n.rps));
    let _ = write!(
        out,
        "{}ratios: proxy hit rps / nginx hit rps = {vs_nginx} ; proxy hit p50 - direct p50 = {:.1} µs ; proxy/direct p50 = {:.2}\n",
        if markdown { "\n" } else { "" },
        proxy.hit.0 - direct.hit.0,
        proxy.hit.0 / direct.hit.0,
    );
    out
}

/// Runs everything; returns false when any request failed or a hit phase did not hit.
fn run() -> bool {
    let (_upstream, upstream) = Background::start("upstream", false, serve_upstream);
    let (_proxy, proxy) = Background::start("memu-proxy", true, move |tx, stop| serve_proxy(upstream, tx, stop));
    let nginx = match std::path::Path::new(NGINX).exists() {
        true => Some(Nginx::start(upstream).unwrap_or_else(|e| panic!("{e}"))),
        false => {
            println!("nginx skipped: {NGINX} not found; install it with scripts/install-bench-deps.sh");
            None
        }
    };
    let mut targets = vec![
        Target { name: "direct", addr: upstream, hit_header: None },
        Target { name: "proxy", addr: proxy, hit_header: Some(("cache-status", "memu-proxy; hit")) },
    ];
    if let Some((_, addr)) = &nginx {
        targets.push(Target { name: "nginx", addr: *addr, hit_header: Some(("x-cache-status", "HIT")) });
    }
    let targets: &'static [Target] = targets.leak();
    let client = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    let (mut rows, mut errors) = (Vec::new(), 0);
    for target in targets {
        println!("measuring {} at {} ...", target.name, target.addr);
        let (row, target_errors) = client.block_on(measure(target));
        rows.push(row);
        errors += target_errors;
    }
    let nginx_note = nginx.is_none().then_some("not installed");
    let table = render(&rows, nginx_note, false);
    println!("\n{table}");
    let markdown = format!("# memu-proxy loopback bench\n\n{}", render(&rows, nginx_note, true));
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/bench-loopback.md");
    let _ = std::fs::create_dir_all(path.parent().expect("parent"));
    match std::fs::write(&path, markdown) {
        Ok(()) => println!("wrote {}", path.display()),
        Err(e) => println!("cannot write {}: {e}", path.display()),
    }
    if errors > 0 {
        println!("\n!!!!!! BENCH HAD {errors} ERRORS / FAILED HIT CHECKS: THE NUMBERS ABOVE ARE NOT TRUSTWORTHY !!!!!!");
    }
    errors == 0
}

fn main() {
    // Guards (nginx, proxy, upstream) are dropped inside `run`, before the exit code is set.
    if !run() {
        std::process::exit(1);
    }
}
