//! Turns benchmark: does each turn get the memories memU would have returned, within the budget?
//!
//! A labelled world of its own: 6 viewers (2 Chinese, 2 English, 2 Japanese), each with six facts,
//! one per topic (pet, work, food, hobby, home, birthday), and two everyday phrasings of a question
//! per topic and language, written as a viewer would ask, not to match the facts' words. Each
//! viewer plays 20 turns: a question on a random topic, then a fire-and-forget memorize of the
//! turn (as Open-LLM-VTuber PR #272 does), then 300–1500 ms of think time. Two viewers ask to be
//! forgotten mid-session (turn 10): a delete of all their memories.
//!
//! memU is a stand-in of this bench that knows the labels: `related-memory-items` answers the
//! asker's facts of the question's topic (that is "what memU would return"), `default-categories`
//! the profile facts (home, work, birthday), `delete` removes every fact of the user; its delay
//! for a retrieval is log-normal (median 700 ms, p95 2.5 s) with 3% stalls of 10 s, drawn per
//! turn from a seed (every setup sees the same draws), 700 ms for the proxy's own listings.
//!
//! Setups, each with a fresh stand-in: `direct` (the client waits up to 10 s, the SDK's timeout),
//! the proxy as shipped with local answers off, on, and on with an embeddings stand-in. Reported
//! per setup: p50/p99/max wait, turns with at least one memory memU would return (of the turns
//! where memU would return one), and of those the share any proxy could reach (memU answers
//! within the budget, or an answer holding that memory had reached the proxy before the turn
//! began: a mirror cannot hold what it has never been shown), turns with any memory, precision of
//! the served items, items of another viewer served (must be 0), items served after their
//! deletion (must be 0), memU reads and writes per turn, embeddings calls per turn. Printed and
//! written to `target/bench-turns.md`.
//!
//! The embeddings stand-in is an idealised model that knows the world's labels: a sentence's
//! vector is its topic's direction plus a pseudo-random part of its own (seeded by its text) as
//! long, so two sentences on one topic have a cosine near 0.5 and two on different topics near
//! 0 (± 0.1 either way); a sentence with no label (a memorized turn) is all noise. Its delay is
//! log-normal (median 60 ms, p95 250 ms). That row measures the proxy's use of a good model (the
//! vectors in time, the cosine ranking, the fallback to the lexical one), not any real model's
//! quality, which lies between the lexical row and it.
//!
//! Run: `cargo bench --bench turns` (about a minute per setup; 127.0.0.1 only);
//! `cargo bench --bench turns -- lexical` runs only the setups whose name holds every word given.

#[path = "../tests/support/mod.rs"]
mod support;

use std::collections::{HashMap, HashSet};
use std::convert::Infallible;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{json, Value};
use tokio::net::TcpListener;
use tokio::time::Instant;

use support::embeddings::Embeddings;
use support::latency::Model;
use support::stats::percentiles;
use support::{Proxy, RELATED};

const SEED: u64 = 0x7475_726e_735f_6265;
const AGENT: &str = "mao";
const TURNS: usize = 20;
const FORGET_AT: usize = 10;
const MEDIAN_S: f64 = 0.7;
const P95_S: f64 = 2.5;
const STALL_SHARE: f64 = 0.03;
const STALL: Duration = Duration::from_secs(10);
const CLIENT_TIMEOUT: Duration = Duration::from_secs(10);
const TURN_HEADER: &str = "x-bench-turn";
/// The proxy's latency budget, as the shipped proxy.toml sets it.
const BUDGET: Duration = Duration::from_millis(500);

const TOPICS: [&str; 6] = ["pet", "work", "food", "hobby", "home", "birthday"];
/// Topics memU's default categories (profile) hold.
const PROFILE: [&str; 3] = ["work", "home", "birthday"];

/// (language, facts by topic, two questions by topic).
type Language = (&'static str, [&'static str; 6], [[&'static str; 2]; 6]);

const ZH: Language = (
    "zh",
    [
        "我的猫叫小白",
        "我在市医院当护士",
        "我最喜欢吃火锅",
        "我周末喜欢弹吉他",
        "我住在成都",
        "我的生日是三月五日",
    ],
    [
        ["我的猫叫什么名字？", "你还记得我的宠物吗？"],
        ["我是做什么工作的？", "我在哪里上班？"],
        ["我喜欢吃什么？", "我最爱的食物是什么？"],
        ["我周末一般做什么？", "我会弹什么乐器？"],
        ["我住在哪个城市？", "我家在哪里？"],
        ["我的生日是哪天？", "我几月出生？"],
    ],
);

const EN: Language = (
    "en",
    [
        "My cat is called Mochi",
        "I work as a nurse at the city hospital",
        "My favourite food is ramen",
        "I play the guitar on weekends",
        "I live in Leeds",
        "My birthday is on March 5",
    ],
    [
        ["What's my cat's name?", "Do you remember my pet?"],
        ["What do I do for a living?", "Where do I work?"],
        ["What food do I like?", "What's my favourite food?"],
        ["What do I do on weekends?", "Which instrument do I play?"],
        ["Which city do I live in?", "Where is my home?"],
        ["When is my birthday?", "Which month was I born in?"],
    ],
);

const JA: Language = (
    "ja",
    [
        "私の猫の名前はタマです",
        "私は市立病院で看護師として働いています",
        "好きな食べ物はラーメンです",
        "週末はギターを弾きます",
        "私は札幌に住んでいます",
        "誕生日は三月五日です",
    ],
    [
        ["私の猫の名前は何？", "ペットのこと覚えてる？"],
        ["私の仕事は何？", "私はどこで働いてる？"],
        ["私の好きな食べ物は？", "何を食べるのが好き？"],
        ["週末は何をしてる？", "私は何の楽器を弾く？"],
        ["私はどこに住んでる？", "私の住んでいる町は？"],
        ["私の誕生日はいつ？", "私は何月生まれ？"],
    ],
);

/// One viewer of the world.
struct Viewer {
    user: String,
    language: &'static Language,
    forgets: bool,
}

fn viewers() -> Vec<Viewer> {
    let languages: [&'static Language; 3] = [&ZH, &EN, &JA];
    (0..6)
        .map(|v| Viewer {
            user: format!("viewer-{v}"),
            language: languages[v / 2],
            forgets: v % 3 == 1,
        })
        .collect()
}

/// A fact's memory id: whose it is and which topic, so every served item can be judged.
fn memory_id(user: &str, topic: usize) -> String {
    format!("{user}:{}", TOPICS[topic])
}

/// One scripted turn.
struct Turn {
    index: u64,
    topic: usize,
    question: &'static str,
    think: Duration,
}

fn script(v: usize, viewer: &Viewer) -> Vec<Turn> {
    let mut rng = StdRng::seed_from_u64(SEED.wrapping_add(v as u64));
    (0..TURNS)
        .map(|t| {
            let topic = rng.random_range(0..TOPICS.len());
            let question = viewer.language.2[topic][rng.random_range(0..2)];
            Turn {
                index: (v * TURNS + t) as u64,
                topic,
                question,
                think: Duration::from_millis(rng.random_range(300..=1500)),
            }
        })
        .collect()
}

/// memU's delay for the retrieval of `turn`: a pure function of (SEED, turn).
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

// ---------------------------------------------------------------------------- the stand-in memU

/// What the stand-in knows: each viewer's remaining facts (by topic), the question labels, and
/// its request counts.
struct World {
    facts: Mutex<HashMap<String, Vec<usize>>>,
    languages: HashMap<String, &'static Language>,
    topic_of: HashMap<&'static str, usize>,
    reads: Mutex<usize>,
    writes: Mutex<usize>,
    /// When an answer holding each memory (by id) was first sent, since the last delete.
    delivered: Mutex<HashMap<String, Instant>>,
}

impl World {
    fn new(viewers: &[Viewer]) -> Self {
        let mut topic_of = HashMap::new();
        for language in [&ZH, &EN, &JA] {
            for (topic, questions) in language.2.iter().enumerate() {
                for question in questions {
                    topic_of.insert(*question, topic);
                }
            }
        }
        Self {
            facts: Mutex::new(
                viewers
                    .iter()
                    .map(|v| (v.user.clone(), (0..TOPICS.len()).collect()))
                    .collect(),
            ),
            languages: viewers
                .iter()
                .map(|v| (v.user.clone(), v.language))
                .collect(),
            topic_of,
            reads: Mutex::new(0),
            writes: Mutex::new(0),
            delivered: Mutex::new(HashMap::new()),
        }
    }

    /// The memory object of `user`'s fact of `topic`, as the v1 server sends it (timestamps set,
    /// as the proxy's compat repair would).
    fn memory(&self, user: &str, topic: usize) -> Value {
        let category = if PROFILE.contains(&TOPICS[topic]) {
            "profile"
        } else {
            "activity"
        };
        json!({"memory_id": memory_id(user, topic), "category": category,
               "content": self.languages[user].1[topic], "happened_at": "2026-11-01T00:00:00",
               "created_at": "2026-11-01T00:00:00", "updated_at": "2026-11-01T00:00:00"})
    }

    /// The topics of `user`'s facts memU still has.
    fn remaining(&self, user: &str) -> Vec<usize> {
        self.facts
            .lock()
            .unwrap()
            .get(user)
            .cloned()
            .unwrap_or_default()
    }

    /// Notes that an answer holding the memories in `answer` was sent now.
    fn sent(&self, answer: &Value) {
        let mut ids = Vec::new();
        for related in answer["related_memories"].as_array().into_iter().flatten() {
            ids.extend(related["memory"]["memory_id"].as_str());
        }
        for category in answer["categories"].as_array().into_iter().flatten() {
            for memory in category["memories"].as_array().into_iter().flatten() {
                ids.extend(memory["memory_id"].as_str());
            }
        }
        let now = Instant::now();
        let mut delivered = self.delivered.lock().unwrap();
        for id in ids {
            delivered.entry(id.to_owned()).or_insert(now);
        }
    }

    /// True if an answer holding memory `id` was sent before `at`.
    fn delivered_before(&self, id: &str, at: Instant) -> bool {
        self.delivered
            .lock()
            .unwrap()
            .get(id)
            .is_some_and(|&sent| sent < at)
    }

    fn answer(&self, path: &str, body: &Value) -> Value {
        let user = body["user_id"].as_str().unwrap_or_default();
        let remaining = self.remaining(user);
        if path.ends_with("/related-memory-items") {
            *self.reads.lock().unwrap() += 1;
            let query = body["query"].as_str().unwrap_or_default();
            let topic = self.topic_of.get(query).copied();
            let related: Vec<Value> = remaining
                .iter()
                .filter(|&&t| Some(t) == topic)
                .map(|&t| json!({"memory": self.memory(user, t), "similarity_score": 0.62}))
                .collect();
            json!({"related_memories": related, "query": query, "total_found": related.len(),
                   "search_params": {"query": query, "top_k": body["top_k"], "min_similarity": body["min_similarity"], "include_categories": null}})
        } else if path.ends_with("/default-categories") {
            *self.reads.lock().unwrap() += 1;
            let memories: Vec<Value> = remaining
                .iter()
                .filter(|&&t| PROFILE.contains(&TOPICS[t]))
                .map(|&t| self.memory(user, t))
                .collect();
            json!({"categories": [{"name": "profile", "type": "default", "is_active": true,
                    "memories": memories, "memory_count": memories.len()}], "total_categories": 1})
        } else if path.ends_with("/delete") {
            *self.writes.lock().unwrap() += 1;
            self.facts
                .lock()
                .unwrap()
                .insert(user.to_owned(), Vec::new());
            let mine = format!("{user}:");
            self.delivered
                .lock()
                .unwrap()
                .retain(|id, _| !id.starts_with(&mine));
            json!({"success": true, "deleted_count": remaining.len()})
        } else if path.ends_with("/memorize") {
            *self.writes.lock().unwrap() += 1;
            json!({"task_id": "t", "status": "PENDING", "message": "started"})
        } else {
            json!({"task_id": "t", "status": "SUCCESS", "detail_info": ""})
        }
    }
}

async fn serve(
    world: Arc<World>,
    request: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let path = request.uri().path().to_owned();
    let turn: Option<u64> = request
        .headers()
        .get(TURN_HEADER)
        .and_then(|v| v.to_str().ok()?.parse().ok());
    let body = request
        .into_body()
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    let body: Value = serde_json::from_slice(&body).unwrap_or_default();
    // The answer reflects memU's state when the request arrived; the delay comes after.
    let answer = world.answer(&path, &body);
    let delay = if path.ends_with("/related-memory-items") || path.ends_with("/default-categories")
    {
        turn.map_or(Duration::from_secs_f64(MEDIAN_S), upstream_delay)
    } else {
        Duration::from_millis(50)
    };
    tokio::time::sleep(delay).await;
    world.sent(&answer);
    let mut response = Response::new(Full::new(Bytes::from(answer.to_string())));
    response
        .headers_mut()
        .insert("content-type", "application/json".parse().unwrap());
    Ok(response)
}

async fn start_memu(world: Arc<World>) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let world = Arc::clone(&world);
            tokio::spawn(async move {
                let service = service_fn(move |request| serve(Arc::clone(&world), request));
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    addr
}

// -------------------------------------------------------------------------------- the viewers

type HttpClient = Client<HttpConnector, Full<Bytes>>;

/// What one turn observed.
struct Observed {
    wait: Duration,
    /// The memory ids served.
    served: Vec<String>,
    /// What memU would have returned: the asker's facts of the topic, as of the question.
    expected: HashSet<String>,
    topic: usize,
    user: String,
    /// The viewer had been forgotten before this turn.
    after_delete: bool,
    /// A proxy could serve what memU would return: memU answers within the budget, or an answer
    /// holding it reached the proxy before the turn began.
    reachable: bool,
}

async fn post(client: &HttpClient, url: String, body: Value, turn: Option<u64>) -> Option<Bytes> {
    let mut request = Request::post(url)
        .header("content-type", "application/json")
        .header("authorization", "Bearer bench");
    if let Some(turn) = turn {
        request = request.header(TURN_HEADER, turn);
    }
    let request = request
        .body(Full::new(Bytes::from(body.to_string())))
        .ok()?;
    let response = client.request(request).await.ok()?;
    Some(response.into_body().collect().await.ok()?.to_bytes())
}

async fn play(
    client: HttpClient,
    target: SocketAddr,
    world: Arc<World>,
    v: usize,
    viewer: &'static Viewer,
) -> Vec<Observed> {
    let mut observed = Vec::new();
    let mut forgotten = false;
    tokio::time::sleep(Duration::from_millis(150 * v as u64)).await;
    for (t, turn) in script(v, viewer).into_iter().enumerate() {
        if viewer.forgets && t == FORGET_AT {
            let body = json!({"user_id": viewer.user, "agent_id": AGENT});
            post(
                &client,
                format!("http://{target}/api/v1/memory/delete"),
                body,
                None,
            )
            .await;
            forgotten = true;
        }
        let expected: HashSet<String> = world
            .remaining(&viewer.user)
            .into_iter()
            .filter(|&topic| topic == turn.topic)
            .map(|topic| memory_id(&viewer.user, topic))
            .collect();
        let body = json!({"user_id": viewer.user, "agent_id": AGENT, "query": turn.question,
                          "top_k": 3, "min_similarity": 0.3, "include_categories": null});
        let started = Instant::now();
        let reachable = upstream_delay(turn.index) < BUDGET
            || expected
                .iter()
                .any(|id| world.delivered_before(id, started));
        let answer = tokio::time::timeout(
            CLIENT_TIMEOUT,
            post(
                &client,
                format!("http://{target}{RELATED}"),
                body,
                Some(turn.index),
            ),
        )
        .await;
        let wait = started.elapsed();
        let served = answer
            .ok()
            .flatten()
            .and_then(|b| serde_json::from_slice::<Value>(&b).ok())
            .and_then(|a| a["related_memories"].as_array().cloned())
            .unwrap_or_default()
            .iter()
            .filter_map(|r| r["memory"]["memory_id"].as_str().map(str::to_owned))
            .collect();
        observed.push(Observed {
            wait,
            served,
            expected,
            topic: turn.topic,
            user: viewer.user.clone(),
            after_delete: forgotten,
            reachable,
        });
        // The memorize after the reply, fire-and-forget.
        let memorize = json!({"conversation": [{"role": "user", "content": turn.question},
                                               {"role": "assistant", "content": "…"}],
                              "user_id": viewer.user, "user_name": "Viewer", "agent_id": AGENT,
                              "agent_name": "Mao", "session_date": "2026-12-07T00:00:00+00:00"});
        let (client, url) = (
            client.clone(),
            format!("http://{target}/api/v1/memory/memorize"),
        );
        tokio::spawn(async move { post(&client, url, memorize, None).await });
        tokio::time::sleep(turn.think).await;
    }
    observed
}

/// Where the viewers' requests go.
#[derive(Debug, Clone, Copy)]
enum Target {
    /// Straight to memU.
    Direct,
    /// Through the proxy as shipped, with local answers on or off, and with or without the
    /// embeddings stand-in.
    Proxy { local: bool, embeddings: bool },
}

const SETUPS: [(&str, Target); 4] = [
    ("direct", Target::Direct),
    (
        "proxy, local answers off",
        Target::Proxy {
            local: false,
            embeddings: false,
        },
    ),
    (
        "proxy, local answers on (lexical)",
        Target::Proxy {
            local: true,
            embeddings: false,
        },
    ),
    (
        "proxy, local answers on, embeddings stand-in",
        Target::Proxy {
            local: true,
            embeddings: true,
        },
    ),
];

struct Measured {
    name: &'static str,
    observed: Vec<Observed>,
    reads: usize,
    writes: usize,
    embeddings_calls: usize,
}

/// The embeddings stand-in's vector of `text` (see the module's comment).
fn labelled_vector(topic_of: &HashMap<&'static str, usize>, text: &str) -> Vec<f32> {
    const DIMENSIONS: usize = 32;
    let seed = text.bytes().fold(SEED, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
    });
    let mut rng = StdRng::seed_from_u64(seed);
    let noise: Vec<f64> = (0..DIMENSIONS)
        .map(|_| rng.random_range(-1.0..1.0))
        .collect();
    let norm = noise.iter().map(|x| x * x).sum::<f64>().sqrt();
    let mut vector: Vec<f32> = noise.iter().map(|x| (x / norm) as f32).collect();
    if let Some(&topic) = topic_of.get(text) {
        vector[topic] += 1.0;
    }
    vector
}

/// Every fact and question of the world, by topic.
fn labels() -> HashMap<&'static str, usize> {
    let mut topic_of = HashMap::new();
    for language in [&ZH, &EN, &JA] {
        for topic in 0..TOPICS.len() {
            topic_of.insert(language.1[topic], topic);
            for question in language.2[topic] {
                topic_of.insert(question, topic);
            }
        }
    }
    topic_of
}

async fn run(setup: (&'static str, Target), viewers: &'static [Viewer]) -> Measured {
    let world = Arc::new(World::new(viewers));
    let memu = start_memu(Arc::clone(&world)).await;
    let embeddings = match setup.1 {
        Target::Proxy {
            embeddings: true, ..
        } => {
            let labels = labels();
            let delay = Model {
                seed: SEED ^ 0xe,
                median_s: 0.06,
                p95_s: 0.25,
                stall_share: 0.0,
                stall: Duration::ZERO,
            };
            Some(
                Embeddings::start_with_delay(
                    move |text| labelled_vector(&labels, text),
                    move |call| delay.delay(call),
                )
                .await,
            )
        }
        _ => None,
    };
    let proxy = match setup.1 {
        Target::Direct => None,
        Target::Proxy { local, .. } => {
            let url = embeddings.as_ref().map(Embeddings::url);
            Some(
                Proxy::start(&format!("http://{memu}"), |s| {
                    // As the shipped proxy.toml sets them.
                    s.latency.budget_ms = BUDGET.as_millis() as u64;
                    s.cache.stale_while_revalidate_secs = 60;
                    s.cache.stale_if_error_secs = 3600;
                    s.cache.similarity_threshold = 0.9;
                    s.compat.fill_null_timestamps = true;
                    s.cache.local_answers = local;
                    s.local_answers.embeddings_url = url;
                })
                .await,
            )
        }
    };
    let target = proxy.as_ref().map_or(memu, |p| p.addr);
    let client: HttpClient = Client::builder(TokioExecutor::new()).build_http();
    let mut players = tokio::task::JoinSet::new();
    for (v, viewer) in viewers.iter().enumerate() {
        players.spawn(play(client.clone(), target, Arc::clone(&world), v, viewer));
    }
    let mut observed = Vec::new();
    while let Some(turns) = players.join_next().await {
        observed.extend(turns.expect("viewer task"));
    }
    let (reads, writes) = (*world.reads.lock().unwrap(), *world.writes.lock().unwrap());
    Measured {
        name: setup.0,
        observed,
        reads,
        writes,
        embeddings_calls: embeddings.as_ref().map_or(0, Embeddings::calls),
    }
}

// ---------------------------------------------------------------------------------- report

fn row(m: &Measured) -> String {
    let mut waits: Vec<Duration> = m.observed.iter().map(|o| o.wait).collect();
    let [p50, p99, max] =
        percentiles(&mut waits, [0.5, 0.99, 1.0]).map(|d| d.as_secs_f64() * 1000.0);
    let answerable: Vec<&Observed> = m
        .observed
        .iter()
        .filter(|o| !o.expected.is_empty())
        .collect();
    let recalled = answerable
        .iter()
        .filter(|o| o.served.iter().any(|id| o.expected.contains(id)))
        .count();
    let reachable = answerable.iter().filter(|o| o.reachable).count();
    let any = m.observed.iter().filter(|o| !o.served.is_empty()).count();
    let served: usize = m.observed.iter().map(|o| o.served.len()).sum();
    let relevant: usize = m
        .observed
        .iter()
        .map(|o| {
            let right = memory_id(&o.user, o.topic);
            o.served.iter().filter(|id| **id == right).count()
        })
        .sum();
    let foreign: usize = m
        .observed
        .iter()
        .map(|o| {
            o.served
                .iter()
                .filter(|id| !id.starts_with(&format!("{}:", o.user)))
                .count()
        })
        .sum();
    let after_delete: usize = m
        .observed
        .iter()
        .filter(|o| o.after_delete)
        .map(|o| o.served.len())
        .sum();
    let turns = m.observed.len() as f64;
    let share =
        |n: usize, of: usize| format!("{:.0}% ({n}/{of})", 100.0 * n as f64 / of.max(1) as f64);
    let precision = if served == 0 {
        "-".into()
    } else {
        format!("{:.2}", relevant as f64 / served as f64)
    };
    format!(
        "| {} | {p50:.0} | {p99:.0} | {max:.0} | {} | {} | {} | {precision} | {foreign} | {after_delete} | {:.2} | {:.2} | {:.2} |",
        m.name,
        share(recalled, answerable.len()),
        share(reachable, answerable.len()),
        share(any, m.observed.len()),
        m.reads as f64 / turns,
        m.writes as f64 / turns,
        m.embeddings_calls as f64 / turns,
    )
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    if !support::invoked_by_cargo_bench() {
        println!("turns bench: skipped (run it with `cargo bench --bench turns`)");
        return;
    }
    let viewers: &'static [Viewer] = Vec::leak(viewers());
    // `cargo bench --bench turns -- embeddings`: only the setups whose name holds every word.
    let only: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with("--"))
        .collect();
    let mut report = String::from("| setup | p50 ms | p99 ms | max ms | turns with a memory memU would return | of those, reachable | turns with any memory | precision | items of another viewer | items after their deletion | memU reads / turn | memU writes / turn | embeddings calls / turn |\n|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n");
    for setup in SETUPS {
        if !only.iter().all(|word| setup.0.contains(word.as_str())) {
            continue;
        }
        println!("running {} …", setup.0);
        let measured = run(setup, viewers).await;
        let _ = writeln!(report, "{}", row(&measured));
    }
    println!("\n{report}");
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/target/bench-turns.md");
    match std::fs::write(path, format!("# Turns benchmark\n\n{report}")) {
        Ok(()) => println!("written to {path}"),
        Err(e) => println!("cannot write {path}: {e}"),
    }
}
