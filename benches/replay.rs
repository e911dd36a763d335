//! Conversation replay benchmark: the memory-stage latency each conversation turn waits.
//!
//! A scripted chat (25 users × 12 turns; users in parallel, each user's turns in sequence with
//! 200–1500 ms think time; Chinese and English greetings, repeated questions, re-worded repeats
//! the proxy's normalisation makes identical, unique questions) is replayed against a stand-in
//! memU in three setups, each with a fresh stand-in and proxy: `direct` (the client waits as long
//! as memU takes, up to the SDK's 30 s); proxy without budget (2 s hard deadline); proxy with a
//! 500 ms budget (2 s deadline, stale-if-error 3600 s, stale-while-revalidate 60 s, as shipped).
//!
//! memU answers after a log-normal delay (median 700 ms, p95 2.5 s), except 3% of requests which
//! stall 10 s. The delay is a pure function of the *turn* that caused the request: every request
//! carries `x-bench-turn: N` (forwarded by the proxy; a coalesced or background fetch carries its
//! starter's), and the stand-in seeds its RNG with (SEED, N), so every setup sees the same memU
//! latency for the same turn. The script and think times are seeded too.
//!
//! Reported per setup: latency (send to full body) p50/p95/p99/max, the share of turns that got
//! memories, and that share among turns whose normalised query the same user asked before; then
//! the targets for the budgeted setup (p99 ≤ 550 ms, max ≤ 2.1 s, memories on ≥ 90% of
//! repeated questions). Printed and written to `target/bench-replay.md`.
//!
//! memU is the tests' stand-in (`tests/support/memu.rs`, the real routes and JSON shapes), fresh
//! per setup, holding one or two memories per user; its latency for the retrieval route comes from
//! the request's `x-bench-turn` header. The proxy starts as the tests start it. Percentiles are
//! nearest-rank (`tests/support/stats.rs`, as in every bench).
//!
//! Run: `cargo bench --bench replay` (about two minutes, mostly sleeping; 127.0.0.1 only).

#[path = "../tests/support/mod.rs"]
mod support;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http::Request;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use memu_proxy::cache::normalize::normalize_query;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{json, Value};
use tokio::time::Instant;

use support::latency::Model;
use support::stats::percentiles;
use support::{MemU, Proxy, Route, Seen, RELATED as PATH};

const TURN_HEADER: &str = "x-bench-turn";
const AGENT: &str = "mao";
const SEED: u64 = 0x6d65_6d75_2d72_6570;
const USERS: usize = 25;
const TURNS_PER_USER: usize = 12;
const MEDIAN_S: f64 = 0.7;
const P95_S: f64 = 2.5;
const STALL_SHARE: f64 = 0.03;
const STALL: Duration = Duration::from_secs(10);
const CLIENT_TIMEOUT: Duration = Duration::from_secs(30);
const HARD_TIMEOUT_MS: u64 = 2_000;

const GREETINGS: &str = "你好|你好！|hello|Hello!|早上好|早上好～|Good morning|good  morning!";
/// Each entry is one question: its variants, `|`-separated, normalise to the same cache key.
const ENGLISH: [&str; 4] = [
    "What's my cat's name?|what's my cat's name|WHAT'S MY CAT'S NAME！|ｗｈａｔ'ｓ ｍｙ ｃａｔ'ｓ ｎａｍｅ？|what's  my cat's name ?",
    "What did I do yesterday?|what did i do yesterday|What did I do yesterday ?",
    "Do you remember my favourite food?|do you remember my favourite food|DO YOU REMEMBER MY FAVOURITE FOOD?!",
    "Where do I work?|where do i work|Where do I work？",
];
const CHINESE: [&str; 4] = [
    "我的猫叫什么名字？|我的猫叫什么名字|我的猫叫什么名字?|我的猫叫什么名字！！",
    "我昨天做了什么？|我昨天做了什么|我昨天做了什么。",
    "我最喜欢吃什么？|我最喜欢吃什么?|我最喜欢吃什么",
    "我在哪里工作？|我在哪里工作|  我在哪里工作？？",
];

/// One scripted turn.
struct Turn {
    index: u64,
    query: String,
    /// Indices of this user's earlier turns with the same normalised query (empty: a first ask).
    earlier: Vec<u64>,
    think: Duration,
}

impl Turn {
    fn repeat(&self) -> bool {
        !self.earlier.is_empty()
    }
}

struct UserScript {
    user: String,
    start: Duration,
    turns: Vec<Turn>,
}

/// What one turn observed.
struct Observed {
    latency: Duration,
    memories: bool,
    cache_status: String,
}

/// The memU delay for the request caused by `turn`: a pure function of (SEED, turn).
fn upstream_delay(turn: u64) -> Duration {
    Model {
        seed: SEED,
        median_s: MEDIAN_S,
        p95_s: P95_S,
        stall_share: STALL_SHARE,
        stall: STALL,
    }
    .delay(turn)
}

fn pick<T: Copy>(rng: &mut StdRng, items: &[T]) -> T {
    items[rng.random_range(0..items.len())]
}

/// One user's turns: a greeting first, then greetings, three favourite questions (re-worded at
/// random) and unique questions; English, Chinese, or both, by user.
fn user_script(u: usize) -> UserScript {
    let mut rng = StdRng::seed_from_u64(SEED.wrapping_add(u as u64));
    let questions = match u % 3 {
        0 => ENGLISH,
        1 => CHINESE,
        _ => [ENGLISH[0], CHINESE[1], ENGLISH[3], CHINESE[2]],
    };
    let favourites: Vec<&str> = (0..3).map(|_| pick(&mut rng, &questions)).collect();
    let greetings: Vec<&str> = GREETINGS.split('|').collect();
    let mut asked: HashMap<String, Vec<u64>> = HashMap::new();
    let mut turns = Vec::with_capacity(TURNS_PER_USER);
    for i in 0..TURNS_PER_USER {
        let index = (u * TURNS_PER_USER + i) as u64;
        let roll = rng.random::<f64>();
        let query = if i == 0 || roll < 0.2 {
            pick(&mut rng, &greetings).to_owned()
        } else if roll < 0.7 {
            let variants: Vec<&str> = pick(&mut rng, &favourites).split('|').collect();
            pick(&mut rng, &variants).to_owned()
        } else if u % 3 == 1 {
            format!("第{index}个周末我们可以做什么？")
        } else {
            format!("Any idea for afternoon number {index}?")
        };
        let asks = asked.entry(normalize_query(&query)).or_default();
        let earlier = asks.clone();
        asks.push(index);
        let think = Duration::from_millis(rng.random_range(200..=1500));
        turns.push(Turn {
            index,
            query,
            earlier,
            think,
        });
    }
    let start = Duration::from_millis(rng.random_range(0..1000));
    UserScript {
        user: format!("user-{u:02}"),
        start,
        turns,
    }
}

// ---------------------------------------------------------------------------- stand-in memU

/// The stand-in's latency for a retrieval: the draw of the turn named in `x-bench-turn` (every
/// bench request carries it; anything else waits the median).
fn turn_latency(request: &Seen) -> Duration {
    let header = request.headers.get(TURN_HEADER);
    let turn = header.and_then(|v| v.to_str().ok()?.parse().ok());
    turn.map_or(Duration::from_secs_f64(MEDIAN_S), upstream_delay)
}

/// A fresh stand-in memU with one or two memories for every user of the script.
async fn start_memu(script: &[UserScript]) -> MemU {
    let memu = MemU::builder()
        .route_latency("related-memory-items", turn_latency)
        .record_requests(false)
        .start()
        .await;
    for UserScript { user, .. } in script {
        let n: u64 = user.bytes().map(u64::from).sum();
        let contents = [
            format!("{user}'s black cat is called Mochi-{n}."),
            format!("{user} works at the bakery on street {}.", n % 97),
        ];
        for content in &contents[..1 + (n % 2) as usize] {
            memu.seed(user, AGENT, content);
        }
    }
    memu
}

// ------------------------------------------------------------------------- proxy and client

/// (name, `None`: straight to memU, `Some(budget_ms)`: through a fresh proxy).
const SETUPS: [(&str, Option<u64>); 3] = [
    ("direct", None),
    ("proxy, no budget", Some(0)),
    ("proxy, 500 ms budget", Some(500)),
];

/// Starts the proxy in-process in front of `memu`; it stops when dropped.
async fn start_proxy(memu: &MemU, budget_ms: u64) -> Proxy {
    Proxy::start(&memu.url(), |s| {
        s.upstream.timeout_ms = HARD_TIMEOUT_MS;
        s.latency.budget_ms = budget_ms;
        if budget_ms > 0 {
            s.cache.stale_if_error_secs = 3600;
            s.cache.stale_while_revalidate_secs = 60;
        }
    })
    .await
}

type HttpClient = Client<HttpConnector, Full<Bytes>>;

/// Sends one lookup; `None` on a transport error. Returns status, Cache-Status, body.
async fn exchange(
    client: &HttpClient,
    request: Request<Full<Bytes>>,
) -> Option<(u16, String, Bytes)> {
    let response = client.request(request).await.ok()?;
    let status = response.status().as_u16();
    let cache_status = response.headers().get("cache-status").map(|v| v.to_str());
    let cache_status = match cache_status {
        Some(Ok(v)) => v.trim_start_matches("memu-proxy; ").to_owned(),
        _ => "-".to_owned(),
    };
    let body = response.into_body().collect().await.ok()?.to_bytes();
    Some((status, cache_status, body))
}

fn has_memories(body: &[u8]) -> bool {
    let answer = serde_json::from_slice::<Value>(body).unwrap_or_default();
    let memories = answer["related_memories"].as_array();
    memories.is_some_and(|m| !m.is_empty())
}

/// One turn's memory lookup, as the SDK sends it; latency is send to full body.
async fn ask(client: &HttpClient, target: SocketAddr, user: &str, turn: &Turn) -> Observed {
    let body = json!({"user_id": user, "agent_id": AGENT, "query": turn.query, "top_k": 3,
                      "min_similarity": 0.3, "include_categories": null});
    let request = Request::post(format!("http://{target}{PATH}"))
        .header("content-type", "application/json")
        .header("authorization", "Bearer bench")
        .header(TURN_HEADER, turn.index)
        .body(Full::new(Bytes::from(body.to_string())))
        .expect("request");
    let started = Instant::now();
    let reply = tokio::time::timeout(CLIENT_TIMEOUT, exchange(client, request)).await;
    let latency = started.elapsed();
    let (memories, cache_status) = match reply {
        Ok(Some((status, cache_status, body))) => {
            (status == 200 && has_memories(&body), cache_status)
        }
        Ok(None) => (false, "transport error".into()),
        Err(_) => (false, "client timeout".into()),
    };
    Observed {
        latency,
        memories,
        cache_status,
    }
}

/// Plays one user's turns in order, with think time after each.
async fn play_user(
    client: HttpClient,
    target: SocketAddr,
    user: &UserScript,
) -> Vec<(u64, Observed)> {
    tokio::time::sleep(user.start).await;
    let mut observed = Vec::with_capacity(user.turns.len());
    for turn in &user.turns {
        observed.push((turn.index, ask(&client, target, &user.user, turn).await));
        tokio::time::sleep(turn.think).await;
    }
    observed
}

/// Everything one setup measured; `observed` is in script order.
struct Measured {
    name: &'static str,
    observed: Vec<Observed>,
    upstream_requests: usize,
    wall: Duration,
}

async fn run_setup(setup: (&'static str, Option<u64>), script: &'static [UserScript]) -> Measured {
    // A fresh stand-in per setup; the proxy stops when `_proxy` drops.
    let memu = start_memu(script).await;
    let (target, _proxy) = match setup.1 {
        None => (memu.addr, None),
        Some(budget) => {
            let proxy = start_proxy(&memu, budget).await;
            (proxy.addr, Some(proxy))
        }
    };
    let client: HttpClient = Client::builder(TokioExecutor::new()).build_http();
    let started = Instant::now();
    let mut users = tokio::task::JoinSet::new();
    for user in script {
        users.spawn(play_user(client.clone(), target, user));
    }
    let mut observed = BTreeMap::new();
    while let Some(turns) = users.join_next().await {
        observed.extend(turns.expect("user task"));
    }
    Measured {
        name: setup.0,
        observed: observed.into_values().collect(),
        upstream_requests: memu.hits(Route::Related),
        wall: started.elapsed(),
    }
}

// -------------------------------------------------------------------------------- report

/// Latency p50, p95, p99 and max in ms.
fn latency_ms(observed: &[Observed]) -> [f64; 4] {
    let mut latencies: Vec<Duration> = observed.iter().map(|o| o.latency).collect();
    percentiles(&mut latencies, [0.5, 0.95, 0.99, 1.0]).map(|d| d.as_secs_f64() * 1000.0)
}

/// (turns that got memories, turns), over all turns or only the repeated questions.
fn with_memories(m: &Measured, turns: &[&Turn], repeats_only: bool) -> (usize, usize) {
    let counted = turns.iter().zip(&m.observed);
    let got: Vec<bool> = counted
        .filter_map(|(t, o)| (t.repeat() || !repeats_only).then_some(o.memories))
        .collect();
    (got.iter().filter(|&&g| g).count(), got.len())
}

fn percent((hits, of): (usize, usize)) -> f64 {
    100.0 * hits as f64 / of.max(1) as f64
}

/// The markdown table of all setups.
fn table(measured: &[Measured], turns: &[&Turn]) -> String {
    let mut out = String::from("| setup | p50 ms | p95 ms | p99 ms | max ms | turns with memories | repeated questions with memories | memU requests | wall s |\n|---|---:|---:|---:|---:|---:|---:|---:|---:|\n");
    for m in measured {
        let [p50, p95, p99, max] = latency_ms(&m.observed);
        let share = |(hits, of)| format!("{:.1}% ({hits}/{of})", percent((hits, of)));
        let all = share(with_memories(m, turns, false));
        let repeated = share(with_memories(m, turns, true));
        let (requests, wall) = (m.upstream_requests, m.wall.as_secs_f64());
        let _ = writeln!(out, "| {} | {p50:.0} | {p95:.0} | {p99:.0} | {max:.0} | {all} | {repeated} | {requests} | {wall:.1} |", m.name);
    }
    out
}

/// The targets, checked on the budgeted setup.
fn targets(m: &Measured, turns: &[&Turn]) -> String {
    let [_, _, p99, max] = latency_ms(&m.observed);
    let repeated = percent(with_memories(m, turns, true));
    let met = [p99 <= 550.0, max <= 2100.0, repeated >= 90.0];
    let [a, b, c] = met.map(|ok| if ok { "met" } else { "MISSED" });
    format!("Targets ({}):\n- p99 ≤ 550 ms: {p99:.0} ms, {a}\n- max ≤ 2100 ms: {max:.0} ms, {b}\n- memories on ≥ 90% of repeated questions: {repeated:.1}%, {c}\n", m.name)
}

/// Why repeated questions went without memories, per proxy setup: their Cache-Status, and for
/// how many the question's first fetch (always led by its first ask) ran past the hard deadline.
fn explain(measured: &[Measured], turns: &[&Turn]) -> String {
    let deadline = Duration::from_millis(HARD_TIMEOUT_MS);
    let mut out = String::new();
    for m in &measured[1..] {
        let (mut by_status, mut first_timed_out) = (BTreeMap::<&str, usize>::new(), 0);
        let misses = turns.iter().zip(&m.observed);
        for (t, o) in misses.filter(|(t, o)| t.repeat() && !o.memories) {
            *by_status.entry(&o.cache_status).or_default() += 1;
            first_timed_out += usize::from(upstream_delay(t.earlier[0]) > deadline);
        }
        let _ = writeln!(out, "- {}: repeated questions without memories, by Cache-Status: {by_status:?}; for {first_timed_out} of them the question's first fetch drew > {HARD_TIMEOUT_MS} ms from memU, so it timed out and cached nothing.", m.name);
    }
    out
}

/// The script and the latency model as drawn for its turns.
fn model_summary(turns: &[&Turn]) -> String {
    let delays: Vec<Duration> = turns.iter().map(|t| upstream_delay(t.index)).collect();
    let over = |ms| delays.iter().filter(|d| d.as_millis() > ms).count();
    let stalls = delays.iter().filter(|&&d| d == STALL).count();
    let repeats = turns.iter().filter(|t| t.repeat()).count();
    let (n, over_2s, over_500) = (turns.len(), over(2_000), over(500));
    format!("{n} turns by {USERS} users, {repeats} of them repeated questions. memU's draws, one per turn: {stalls} stalls of 10 s, {over_2s} over 2 s, {over_500} over 500 ms.\n")
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    // `cargo test --benches` (or `--all-targets`) runs bench binaries too: not two minutes there.
    if !support::invoked_by_cargo_bench() {
        println!("replay bench: skipped (run it with `cargo bench --bench replay`)");
        return;
    }
    for question in ENGLISH.iter().chain(&CHINESE) {
        let keys: HashSet<String> = question.split('|').map(normalize_query).collect();
        if keys.len() > 1 {
            println!("WARNING: the proxy does not normalise these alike: {question}");
        }
    }
    let script: &'static [UserScript] = Vec::leak((0..USERS).map(user_script).collect());
    let turns: Vec<&Turn> = script.iter().flat_map(|u| &u.turns).collect();
    let mut report = model_summary(&turns);
    print!("{report}");
    let mut measured = Vec::new();
    for setup in SETUPS {
        println!("running {} …", setup.0);
        measured.push(run_setup(setup, script).await);
    }
    report += &format!("\n{}\n", table(&measured, &turns));
    report += &format!("{}\n", targets(&measured[2], &turns));
    report += &explain(&measured, &turns);
    println!("\n{report}");
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/target/bench-replay.md");
    match std::fs::write(path, format!("# Conversation replay benchmark\n\n{report}")) {
        Ok(()) => println!("written to {path}"),
        Err(e) => println!("cannot write {path}: {e}"),
    }
}
