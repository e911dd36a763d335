//! A stand-in memU for integration tests and benches: the real routes and JSON shapes of every
//! generation (v1/v2, memu-api.md §3; cloud v3, cloud v4 and memU-server 1.x, memu-api-next.md
//! §3–§5), a real hyper server on 127.0.0.1:0, hit counters per route, and knobs for latency and
//! failures.
//!
//! Each generation is its own memU with its own memories, per (project, user, agent): the project
//! is the cloud's API key (`Authorization` as sent) for v3 and v4, and empty for the self-hosted
//! servers, which ignore it. An asynchronous memorize (v1, v3, memU-server) creates a task that is
//! applied only when the test calls [`MemU::complete_tasks`], like memU's background worker; a v4
//! commit is applied at once.
//!
//! Hit counters are per route name, one per generation's route (see [`route_name`]): the v1/v2
//! names are `related-memory-items`, `default-categories`, `related-clustered-categories`,
//! `memorize`, `delete`, `status` and `chat`; the others are `v3 retrieve`, `v3 categories`,
//! `v3 memorize`, `v3 delete`, `v3 status`, `v4 list`, `v4 search`, `v4 commit`,
//! `server retrieve`, `server categories`, `server memorize`, `server status` and `server clear`;
//! anything else is `other`.
//!
//! Start one with [`MemU::start`] (no latency, every request recorded) or configure it first with
//! [`MemU::builder`]: a latency per route computed from each request, and whether to record
//! requests at all (a benchmark sending millions must not keep them), and whether to serve over
//! TLS ([`MemUBuilder::tls`], the TLS side in `tls.rs`). This file routes, counts, delays and
//! records; the answers themselves are in `memu/answers.rs`.

use std::collections::{BTreeMap, HashMap};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Method, Request, Response};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto::Builder as ConnBuilder;
use tokio::net::TcpListener;
use tokio::sync::Notify;

use super::own_thread::OwnThread;
use super::tls::{TestCa, TlsServer};

mod answers;
mod route;
mod server;
mod store;
mod v3;
mod v4;

pub use route::Route;

type Body = http_body_util::combinators::BoxBody<Bytes, Infallible>;

/// How long the stand-in holds its answer to a request, computed from the request.
pub type Latency = Arc<dyn Fn(&Seen) -> Duration + Send + Sync>;

/// How the stand-in misbehaves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    None,
    /// Answer every request with this status and a FastAPI error body.
    Status(u16),
    /// Answer retrievals 200 with an HTML body.
    NotJson,
    /// Answer every generation's reads 200 with JSON of the wrong shape.
    WrongShape(Shape),
}

/// A wrong shape for a read's answer ([`Failure::WrongShape`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shape {
    /// `[]` instead of an object.
    List,
    /// The real answer without its main list field (`related_memories`, v3 `items`,
    /// `recall_files`, memU-server `result.categories`, …).
    MissingList,
}

/// Which memU a memory lives in: each generation is a separate service.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
enum Service {
    V1,
    V3,
    V4,
    Server,
}

/// Whose memories: the service, the project (the cloud's `Authorization` value; empty for the
/// self-hosted servers), the user and the agent.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
struct Owner {
    service: Service,
    project: String,
    user: String,
    agent: String,
}

impl Owner {
    fn new(service: Service, project: &str, user: &str, agent: &str) -> Owner {
        Owner {
            service,
            project: project.into(),
            user: user.into(),
            agent: agent.into(),
        }
    }
}

/// One owner's v4 recall files, by (track, name).
type RecallFiles = BTreeMap<(String, String), RecallFile>;

/// A v4 recall file (memu-api-next.md §4.1), stored per owner and keyed by (track, name).
#[derive(Debug, Clone)]
struct RecallFile {
    id: String,
    revision: u64,
    description: String,
    content: String,
}

/// A request as the stand-in received it.
#[derive(Debug, Clone)]
pub struct Seen {
    pub method: Method,
    pub uri: String,
    pub headers: HeaderMap,
    pub body: Bytes,
}

struct State {
    /// Routes answered with a fixed 200 JSON body, before any other work (see
    /// [`MemUBuilder::fixed_answer`]).
    fixed: HashMap<&'static str, Bytes>,
    hits: Mutex<HashMap<&'static str, usize>>,
    /// Woken on every hit, for [`MemU::wait_for_hits`].
    hit: Notify,
    connections: AtomicUsize,
    /// The latency of routes without their own; `None`: answer at once.
    latency: Mutex<Option<Latency>>,
    route_latency: Mutex<HashMap<&'static str, Latency>>,
    failure: Mutex<Option<Failure>>,
    memories: Mutex<HashMap<Owner, Vec<String>>>,
    /// Memorize tasks applied per owner (memU-server's `/clear` counts them as resources).
    resources: Mutex<HashMap<Owner, usize>>,
    /// v4 recall files per owner.
    recall_files: Mutex<BTreeMap<Owner, RecallFiles>>,
    /// Recall files ever written, for their ids and revisions.
    recall_revisions: AtomicUsize,
    tasks: Mutex<HashMap<String, Task>>,
    /// Every request received, if recording.
    seen: Option<Mutex<Vec<Seen>>>,
    /// Released by the test to let the SSE chat stream send its next event.
    chat_step: Notify,
    /// Serving over TLS when set.
    tls: Option<TlsServer>,
}

struct Task {
    /// Applied by [`MemU::complete_tasks`].
    done: bool,
    owner: Owner,
    content: Vec<String>,
}

/// Configures a stand-in before it starts; see [`MemU::builder`].
pub struct MemUBuilder {
    fixed: HashMap<&'static str, Bytes>,
    latency: Option<Latency>,
    route_latency: HashMap<&'static str, Latency>,
    record_requests: bool,
    tls: Option<Arc<rustls::ServerConfig>>,
}

impl MemUBuilder {
    /// Serve over TLS with a certificate for `localhost` and 127.0.0.1 signed by `ca`.
    pub fn tls(mut self, ca: &TestCa) -> Self {
        self.tls = Some(ca.server_config());
        self
    }

    /// Every route without its own latency answers after `latency(request)`.
    pub fn latency(mut self, latency: impl Fn(&Seen) -> Duration + Send + Sync + 'static) -> Self {
        self.latency = Some(Arc::new(latency));
        self
    }

    /// Requests to `route` (by the names [`MemU::hits`] takes) are answered after
    /// `latency(request)`; the answer itself reflects memU's state when the request arrived.
    pub fn route_latency(
        mut self,
        route: &'static str,
        latency: impl Fn(&Seen) -> Duration + Send + Sync + 'static,
    ) -> Self {
        self.route_latency.insert(route, Arc::new(latency));
        self
    }

    /// Requests to `route` (by the names [`MemU::hits`] takes) get `body` as a 200 JSON answer at
    /// once, whatever they ask: no parsing, no state, no latency, only the hit counted. For
    /// benchmarks that need the loopback floor (a static upstream), not memU's behaviour.
    pub fn fixed_answer(mut self, route: &'static str, body: &'static str) -> Self {
        self.fixed
            .insert(route, Bytes::from_static(body.as_bytes()));
        self
    }

    /// Whether to keep every request for [`MemU::seen`] (the default); off, memory stays flat
    /// however many requests arrive.
    pub fn record_requests(mut self, record: bool) -> Self {
        self.record_requests = record;
        self
    }

    /// Starts the stand-in on 127.0.0.1:0, serving on the current tokio runtime.
    pub async fn start(self) -> MemU {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let state = Arc::new(State {
            fixed: self.fixed,
            hits: Mutex::default(),
            hit: Notify::new(),
            connections: AtomicUsize::new(0),
            latency: Mutex::new(self.latency),
            route_latency: Mutex::new(self.route_latency),
            failure: Mutex::default(),
            memories: Mutex::default(),
            resources: Mutex::default(),
            recall_files: Mutex::default(),
            recall_revisions: AtomicUsize::new(0),
            tasks: Mutex::default(),
            seen: self.record_requests.then(Mutex::default),
            chat_step: Notify::new(),
            tls: self.tls.map(TlsServer::new),
        });
        tokio::spawn(serve(listener, Arc::clone(&state)));
        MemU { addr, state }
    }

    /// Starts the stand-in on its own thread and single-threaded runtime, apart from the caller's
    /// (a benchmark measures the proxy, not a shared scheduler); it stops when the guard drops.
    pub fn start_on_own_thread(self) -> OwnThread<MemU> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("stand-in runtime");
        OwnThread::start("memu-stand-in", runtime, |ready, stop| async move {
            ready.send(self.start().await);
            stop.wait().await;
        })
    }
}

async fn serve(listener: TcpListener, state: Arc<State>) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let _ = stream.set_nodelay(true);
        state.connections.fetch_add(1, Ordering::SeqCst);
        let state = Arc::clone(&state);
        let tls_state = Arc::clone(&state);
        tokio::spawn(async move {
            let service = service_fn(move |req| {
                let state = Arc::clone(&state);
                async move { Ok::<_, Infallible>(route(state, req).await) }
            });
            let mut builder = ConnBuilder::new(TokioExecutor::new());
            builder.http1().timer(TokioTimer::new());
            let _ = match &tls_state.tls {
                None => {
                    builder
                        .serve_connection(TokioIo::new(stream), service)
                        .await
                }
                Some(tls) => match tls.accept(stream).await {
                    Some(stream) => {
                        builder
                            .serve_connection(TokioIo::new(stream), service)
                            .await
                    }
                    None => return,
                },
            };
        });
    }
}

/// Handle to a running stand-in.
#[derive(Clone)]
pub struct MemU {
    pub addr: SocketAddr,
    state: Arc<State>,
}

impl MemU {
    /// A stand-in to configure before it starts.
    pub fn builder() -> MemUBuilder {
        MemUBuilder {
            fixed: HashMap::new(),
            latency: None,
            route_latency: HashMap::new(),
            record_requests: true,
            tls: None,
        }
    }

    /// Starts a stand-in on 127.0.0.1:0: no latency, every request recorded.
    pub async fn start() -> MemU {
        MemU::builder().start().await
    }

    /// `http://127.0.0.1:port`, or `https://` when serving over TLS.
    pub fn url(&self) -> String {
        let scheme = if self.state.tls.is_some() {
            "https"
        } else {
            "http"
        };
        format!("{scheme}://{}", self.addr)
    }

    /// The TLS side's handshake counts; panics unless started with [`MemUBuilder::tls`].
    pub fn tls(&self) -> &TlsServer {
        let tls = self.state.tls.as_ref();
        tls.expect("this stand-in was started without .tls(..)")
    }

    /// Requests received on `route`. A request counts when it arrives, before its latency: a hit means memU is working on it.
    pub fn hits(&self, route: Route) -> usize {
        self.state
            .hits
            .lock()
            .unwrap()
            .get(route.name())
            .copied()
            .unwrap_or(0)
    }

    /// Waits until `route` has had at least `n` hits (so the `n`th request is in flight at memU,
    /// or answered); panics after 10 s.
    pub async fn wait_for_hits(&self, route: Route, n: usize) {
        let give_up = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            let hit = self.state.hit.notified();
            tokio::pin!(hit);
            // Registered before the count is read, so a hit in between is not missed.
            hit.as_mut().enable();
            if self.hits(route) >= n {
                return;
            }
            let seen = self.hits(route);
            if tokio::time::timeout_at(give_up, hit).await.is_err() {
                panic!("timed out waiting for {n} hits on {route:?}: {seen} so far");
            }
        }
    }

    /// Requests received on every route.
    pub fn total_hits(&self) -> usize {
        self.state.hits.lock().unwrap().values().sum()
    }

    /// TCP connections accepted so far.
    pub fn connections(&self) -> usize {
        self.state.connections.load(Ordering::SeqCst)
    }

    /// A fixed latency for every route without its own.
    pub fn set_latency(&self, latency: Duration) {
        let fixed: Option<Latency> =
            (!latency.is_zero()).then(|| Arc::new(move |_: &Seen| latency) as Latency);
        *self.state.latency.lock().unwrap() = fixed;
    }

    /// A fixed latency for one route (by the names [`MemU::hits`] takes), overriding
    /// [`MemU::set_latency`].
    pub fn set_route_latency(&self, route: Route, latency: Duration) {
        self.state
            .route_latency
            .lock()
            .unwrap()
            .insert(route.name(), Arc::new(move |_: &Seen| latency));
    }

    pub fn set_failure(&self, failure: Failure) {
        *self.state.failure.lock().unwrap() = Some(failure);
    }

    /// Stores a v1/v2 memory directly, as if memorized long ago.
    pub fn seed(&self, user: &str, agent: &str, content: &str) {
        self.seed_owner(Owner::new(Service::V1, "", user, agent), content);
    }

    /// Stores a cloud v3 memory directly in the project of `authorization` (the header value the
    /// client sends, e.g. `"Bearer key-1"`).
    pub fn seed_v3(&self, authorization: &str, user: &str, agent: &str, content: &str) {
        self.seed_owner(Owner::new(Service::V3, authorization, user, agent), content);
    }

    /// Stores a memU-server 1.x memory directly.
    pub fn seed_server(&self, user: &str, agent: &str, content: &str) {
        self.seed_owner(Owner::new(Service::Server, "", user, agent), content);
    }

    /// Commits a cloud v4 recall file (track `memory`) directly in the project of
    /// `authorization`.
    pub fn seed_v4(&self, authorization: &str, user: &str, agent: &str, name: &str, content: &str) {
        let owner = Owner::new(Service::V4, authorization, user, agent);
        v4::upsert(&self.state, &owner, "memory", name, name, content);
    }

    fn seed_owner(&self, owner: Owner, content: &str) {
        *self
            .state
            .resources
            .lock()
            .unwrap()
            .entry(owner.clone())
            .or_default() += 1;
        let mut memories = self.state.memories.lock().unwrap();
        memories.entry(owner).or_default().push(content.into());
    }

    /// Applies every pending memorize, of every generation, and marks its task done (`SUCCESS`
    /// for v1 and v3, `COMPLETED` for memU-server).
    pub fn complete_tasks(&self) {
        let mut tasks = self.state.tasks.lock().unwrap();
        let mut memories = self.state.memories.lock().unwrap();
        let mut resources = self.state.resources.lock().unwrap();
        for task in tasks.values_mut().filter(|t| !t.done) {
            memories
                .entry(task.owner.clone())
                .or_default()
                .append(&mut task.content);
            *resources.entry(task.owner.clone()).or_default() += 1;
            task.done = true;
        }
    }

    /// Every request received, oldest first; panics if started with `record_requests(false)`.
    pub fn seen(&self) -> Vec<Seen> {
        let seen = self.state.seen.as_ref();
        let seen = seen.expect("this stand-in was started with record_requests(false)");
        seen.lock().unwrap().clone()
    }

    /// Lets the streaming chat answer send its next event.
    pub fn release_chat_event(&self) {
        self.state.chat_step.notify_one();
    }
}

/// The hit-counter name of a request: each generation's routes matched precisely, by method and
/// path (after any base path), as memU itself routes them.
fn route_name(method: &Method, path: &str) -> &'static str {
    let post = method == Method::POST;
    let get = method == Method::GET;
    if let Some((_, route)) = path.split_once("/api/v3/memory/") {
        return match route {
            "retrieve" if post => "v3 retrieve",
            "categories" if post => "v3 categories",
            "memorize" if post => "v3 memorize",
            "delete" if post => "v3 delete",
            _ if get && task_id(route, "memorize/status/").is_some() => "v3 status",
            _ => "other",
        };
    }
    if path.contains("/api/v4/") {
        // The collection is slashless: `/api/v4/memory/` is not found.
        return match () {
            _ if path.ends_with("/api/v4/memory") && get => "v4 list",
            _ if path.ends_with("/api/v4/memory") && post => "v4 commit",
            _ if path.ends_with("/api/v4/memory/search") && post => "v4 search",
            _ => "other",
        };
    }
    if !path.contains("/api/") {
        // memU-server 1.x serves at its root.
        return match () {
            _ if path.ends_with("/retrieve") && post => "server retrieve",
            _ if path.ends_with("/categories") && post => "server categories",
            _ if path.ends_with("/memorize") && post => "server memorize",
            _ if path.ends_with("/clear") && post => "server clear",
            _ if get && task_id(path, "/memorize/status/").is_some() => "server status",
            _ => "other",
        };
    }
    // v1/v2: `/api/v1|v2/memory/…` and `/api/v2/chat`, by suffix.
    if path.contains("/memorize/status/") {
        return "status";
    }
    const V1: [&str; 6] = [
        "related-memory-items",
        "default-categories",
        "related-clustered-categories",
        "memorize",
        "delete",
        "chat",
    ];
    V1.iter()
        .copied()
        .find(|r| path.ends_with(r))
        .unwrap_or("other")
}

/// The task id after `prefix` at the end of `path`: one non-empty segment.
fn task_id<'a>(path: &'a str, prefix: &str) -> Option<&'a str> {
    let (_, id) = path.rsplit_once(prefix)?;
    (!id.is_empty() && !id.contains('/')).then_some(id)
}

async fn route(state: Arc<State>, req: Request<Incoming>) -> Response<Body> {
    let (parts, body) = req.into_parts();
    let body = body
        .collect()
        .await
        .map(|c| c.to_bytes())
        .unwrap_or_default();
    // uvicorn percent-decodes the path (`%2F` included) before FastAPI routes it.
    let path = percent_encoding::percent_decode_str(parts.uri.path())
        .decode_utf8_lossy()
        .into_owned();
    let name = route_name(&parts.method, &path);
    if let Some(body) = state.fixed.get(name) {
        count_hit(&state, name);
        return answers::fixed(body.clone());
    }
    let route_latency = state.route_latency.lock().unwrap().get(name).cloned();
    let latency = route_latency.or_else(|| state.latency.lock().unwrap().clone());
    // The request as seen, built only when something keeps it or reads it.
    let seen = (state.seen.is_some() || latency.is_some()).then(|| Seen {
        method: parts.method.clone(),
        uri: parts.uri.to_string(),
        headers: parts.headers.clone(),
        body: body.clone(),
    });
    let delay = match (&latency, &seen) {
        (Some(latency), Some(seen)) => latency(seen),
        _ => Duration::ZERO,
    };
    if let (Some(all), Some(seen)) = (&state.seen, seen) {
        all.lock().unwrap().push(seen);
    }
    count_hit(&state, name);
    // The answer reflects memU's state when the request arrived; the latency delays its delivery
    // (so a slow answer can predate a write that completes meanwhile).
    let mut response = answers::answer(&state, name, &parts, &path, &body);
    let failure = *state.failure.lock().unwrap();
    if let Some(Failure::WrongShape(shape)) = failure {
        response = answers::wrong_shape(response, name, shape).await;
    }
    // Like correlation-id middleware in front of a real memU: the request id is echoed.
    if let Some(id) = parts.headers.get("x-request-id") {
        response.headers_mut().insert("x-request-id", id.clone());
    }
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }
    response
}

fn count_hit(state: &State, name: &'static str) {
    *state.hits.lock().unwrap().entry(name).or_default() += 1;
    state.hit.notify_waiters();
}
