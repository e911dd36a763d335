//! A stand-in memU for integration tests and benches: the real routes and JSON shapes
//! (memu-api.md §3), a real hyper server on 127.0.0.1:0, hit counters per route, and knobs for
//! latency and failures.
//!
//! Memories live in memory per (user, agent); a memorize creates a `PENDING` task that becomes
//! visible only when the test calls [`MemU::complete_tasks`], like memU's background task.
//!
//! Start one with [`MemU::start`] (no latency, every request recorded) or configure it first with
//! [`MemU::builder`]: a latency per route computed from each request, and whether to record
//! requests at all (a benchmark sending millions must not keep them).

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto::Builder as ConnBuilder;
use serde_json::{json, Value};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, Notify};

use super::own_thread::OwnThread;

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
    hits: Mutex<HashMap<&'static str, usize>>,
    /// Woken on every hit, for [`MemU::wait_for_hits`].
    hit: Notify,
    connections: AtomicUsize,
    /// The latency of routes without their own; `None`: answer at once.
    latency: Mutex<Option<Latency>>,
    route_latency: Mutex<HashMap<&'static str, Latency>>,
    failure: Mutex<Option<Failure>>,
    memories: Mutex<HashMap<(String, String), Vec<String>>>,
    tasks: Mutex<HashMap<String, Task>>,
    /// Every request received, if recording.
    seen: Option<Mutex<Vec<Seen>>>,
    /// Released by the test to let the SSE chat stream send its next event.
    chat_step: Notify,
}

struct Task {
    status: &'static str,
    scope: (String, String),
    content: Vec<String>,
}

/// Configures a stand-in before it starts; see [`MemU::builder`].
pub struct MemUBuilder {
    latency: Option<Latency>,
    route_latency: HashMap<&'static str, Latency>,
    record_requests: bool,
}

impl MemUBuilder {
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
            hits: Mutex::default(),
            hit: Notify::new(),
            connections: AtomicUsize::new(0),
            latency: Mutex::new(self.latency),
            route_latency: Mutex::new(self.route_latency),
            failure: Mutex::default(),
            memories: Mutex::default(),
            tasks: Mutex::default(),
            seen: self.record_requests.then(Mutex::default),
            chat_step: Notify::new(),
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
        tokio::spawn(async move {
            let service = service_fn(move |req| {
                let state = Arc::clone(&state);
                async move { Ok::<_, Infallible>(route(state, req).await) }
            });
            let mut builder = ConnBuilder::new(TokioExecutor::new());
            builder.http1().timer(TokioTimer::new());
            let _ = builder
                .serve_connection(TokioIo::new(stream), service)
                .await;
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
            latency: None,
            route_latency: HashMap::new(),
            record_requests: true,
        }
    }

    /// Starts a stand-in on 127.0.0.1:0: no latency, every request recorded.
    pub async fn start() -> MemU {
        MemU::builder().start().await
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Requests received on routes whose path ends with `suffix` (e.g. "related-memory-items").
    /// A request counts when it arrives, before its latency: a hit means memU is working on it.
    pub fn hits(&self, route: &str) -> usize {
        self.state
            .hits
            .lock()
            .unwrap()
            .get(route)
            .copied()
            .unwrap_or(0)
    }

    /// Waits until `route` has had at least `n` hits (so the `n`th request is in flight at memU,
    /// or answered); panics after 10 s.
    pub async fn wait_for_hits(&self, route: &str, n: usize) {
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
                panic!("timed out waiting for {n} hits on {route}: {seen} so far");
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
    pub fn set_route_latency(&self, route: &'static str, latency: Duration) {
        self.state
            .route_latency
            .lock()
            .unwrap()
            .insert(route, Arc::new(move |_: &Seen| latency));
    }

    pub fn set_failure(&self, failure: Failure) {
        *self.state.failure.lock().unwrap() = Some(failure);
    }

    /// Stores a memory directly, as if memorized long ago.
    pub fn seed(&self, user: &str, agent: &str, content: &str) {
        self.state
            .memories
            .lock()
            .unwrap()
            .entry((user.into(), agent.into()))
            .or_default()
            .push(content.into());
    }

    /// Applies every pending memorize and marks its task `SUCCESS`.
    pub fn complete_tasks(&self) {
        let mut tasks = self.state.tasks.lock().unwrap();
        let mut memories = self.state.memories.lock().unwrap();
        for task in tasks.values_mut().filter(|t| t.status == "PENDING") {
            memories
                .entry(task.scope.clone())
                .or_default()
                .append(&mut task.content);
            task.status = "SUCCESS";
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

const ROUTES: [&str; 7] = [
    "related-memory-items",
    "default-categories",
    "related-clustered-categories",
    "memorize",
    "delete",
    "status",
    "chat",
];

async fn route(state: Arc<State>, req: Request<Incoming>) -> Response<Body> {
    let (parts, body) = req.into_parts();
    let body = body
        .collect()
        .await
        .map(|c| c.to_bytes())
        .unwrap_or_default();
    let path = parts.uri.path().to_owned();
    let name = if path.contains("/memorize/status/") {
        "status"
    } else {
        ROUTES
            .iter()
            .copied()
            .find(|r| path.ends_with(r))
            .unwrap_or("other")
    };
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
    let response = answer(&state, name, &parts, &path, &body);
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }
    response
}

fn count_hit(state: &State, name: &'static str) {
    *state.hits.lock().unwrap().entry(name).or_default() += 1;
    state.hit.notify_waiters();
}

fn answer(
    state: &Arc<State>,
    name: &'static str,
    parts: &http::request::Parts,
    path: &str,
    body: &Bytes,
) -> Response<Body> {
    let failure = state.failure.lock().unwrap().unwrap_or(Failure::None);
    match failure {
        Failure::Status(code) => {
            return json_status(code, json!({"detail": "Internal server error"}))
        }
        Failure::NotJson if name.starts_with("related") || name == "default-categories" => {
            let mut r = Response::new(full("<html>gateway says hi</html>"));
            r.headers_mut()
                .insert("content-type", "text/html".parse().unwrap());
            return r;
        }
        _ => {}
    }
    if name == "chat" {
        return chat_stream(Arc::clone(state));
    }
    if name == "other" {
        return other(&parts.method, path, &parts.headers, parts.uri.query(), body);
    }
    let request: Value = match serde_json::from_slice(body) {
        Ok(v) => v,
        Err(_) if name == "status" => Value::Null,
        Err(_) => {
            return json_status(
                422,
                json!({"detail": [{"type": "json_invalid", "loc": ["body", 0], "msg": "JSON decode error"}]}),
            )
        }
    };
    match name {
        "related-memory-items" => related(state, &request),
        "default-categories" => default_categories(state, &request),
        "related-clustered-categories" => clustered(state, &request),
        "memorize" => memorize(state, &request),
        "delete" => delete(state, &request),
        _ => task_status(state, path),
    }
}

fn scope_of(request: &Value) -> Option<(String, String)> {
    let user = request.get("user_id")?.as_str()?.to_owned();
    let agent = request
        .get("agent_id")
        .and_then(Value::as_str)
        .unwrap_or("default_agent")
        .to_owned();
    Some((user, agent))
}

fn missing(field: &str, input: &Value) -> Response<Body> {
    json_status(
        422,
        json!({"detail": [{"type": "missing", "loc": ["body", field], "msg": "Field required", "input": input}]}),
    )
}

fn memory(n: usize, category: &str, content: &str) -> Value {
    json!({"memory_id": format!("m{n}"), "category": category, "content": content,
           "happened_at": "2026-11-24T00:00:00", "created_at": null, "updated_at": null})
}

fn memories_of(state: &State, scope: &(String, String)) -> Vec<String> {
    state
        .memories
        .lock()
        .unwrap()
        .get(scope)
        .cloned()
        .unwrap_or_default()
}

fn related(state: &State, request: &Value) -> Response<Body> {
    let Some(scope) = scope_of(request) else {
        return missing("user_id", request);
    };
    let Some(query) = request.get("query").and_then(Value::as_str) else {
        return missing("query", request);
    };
    let top_k = request.get("top_k").and_then(Value::as_u64).unwrap_or(10) as usize;
    let items: Vec<Value> = memories_of(state, &scope)
        .iter()
        .take(top_k)
        .enumerate()
        .map(|(n, c)| json!({"memory": memory(n, "activity", c), "similarity_score": 0.5}))
        .collect();
    json_status(
        200,
        json!({"related_memories": items, "query": query, "total_found": items.len(),
               "search_params": {"query": query, "top_k": top_k, "min_similarity": request.get("min_similarity"), "include_categories": request.get("include_categories")}}),
    )
}

fn default_categories(state: &State, request: &Value) -> Response<Body> {
    let Some(scope) = scope_of(request) else {
        return missing("user_id", request);
    };
    let memories: Vec<Value> = memories_of(state, &scope)
        .iter()
        .enumerate()
        .map(|(n, c)| memory(n, "profile", c))
        .collect();
    let categories = if memories.is_empty() {
        vec![]
    } else {
        vec![
            json!({"name": "profile", "type": "default", "description": "Default profile memories",
                    "is_active": true, "memory_count": memories.len(), "memories": memories}),
        ]
    };
    json_status(
        200,
        json!({"total_categories": categories.len(), "categories": categories}),
    )
}

fn clustered(state: &State, request: &Value) -> Response<Body> {
    let Some(scope) = scope_of(request) else {
        return missing("user_id", request);
    };
    let Some(query) = request.get("category_query").and_then(Value::as_str) else {
        return missing("category_query", request);
    };
    let memories: Vec<Value> = memories_of(state, &scope)
        .iter()
        .enumerate()
        .map(|(n, c)| memory(n, "pets", c))
        .collect();
    let clusters = if memories.is_empty() {
        vec![]
    } else {
        vec![
            json!({"name": "pets", "similarity_score": 0.35, "memory_count": memories.len(), "memories": memories}),
        ]
    };
    json_status(
        200,
        json!({"clustered_categories": clusters, "category_query": query, "total_categories_found": clusters.len(),
               "search_params": {"category_query": query, "top_k": 5, "min_similarity": 0.1}}),
    )
}

fn memorize(state: &State, request: &Value) -> Response<Body> {
    let Some(scope) = scope_of(request) else {
        return missing("user_id", request);
    };
    let content: Vec<String> = request
        .get("conversation")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|m| m.get("content").and_then(Value::as_str).map(str::to_owned))
        .chain(
            request
                .get("conversation_text")
                .and_then(Value::as_str)
                .map(str::to_owned),
        )
        .collect();
    if content.is_empty() {
        return missing("conversation", request);
    }
    let mut tasks = state.tasks.lock().unwrap();
    let task_id = format!("task-{}", tasks.len() + 1);
    tasks.insert(
        task_id.clone(),
        Task {
            status: "PENDING",
            scope,
            content,
        },
    );
    json_status(
        200,
        json!({"task_id": task_id, "status": "PENDING", "message": "Memorization task started successfully"}),
    )
}

fn delete(state: &State, request: &Value) -> Response<Body> {
    let Some(user) = request.get("user_id").and_then(Value::as_str) else {
        return missing("user_id", request);
    };
    let agent = request.get("agent_id").and_then(Value::as_str);
    let mut memories = state.memories.lock().unwrap();
    let before: usize = memories.values().map(Vec::len).sum();
    memories.retain(|(u, a), _| !(u == user && agent.is_none_or(|agent| agent == a)));
    let after: usize = memories.values().map(Vec::len).sum();
    json_status(
        200,
        json!({"success": true, "deleted_count": before - after}),
    )
}

fn task_status(state: &State, path: &str) -> Response<Body> {
    let id = path.rsplit('/').next().unwrap_or_default();
    match state.tasks.lock().unwrap().get(id) {
        Some(task) => json_status(
            200,
            json!({"task_id": id, "status": task.status, "detail_info": ""}),
        ),
        None => json_status(404, json!({"detail": "Task not found"})),
    }
}

/// `/echo/...` reflects the request; `/health` and `/` answer like memU; anything else is 404.
fn other(
    method: &Method,
    path: &str,
    headers: &HeaderMap,
    query: Option<&str>,
    body: &Bytes,
) -> Response<Body> {
    if path.starts_with("/echo") || path.contains("/echo/") {
        let headers: HashMap<String, String> = headers
            .iter()
            .map(|(k, v)| {
                (
                    k.to_string(),
                    String::from_utf8_lossy(v.as_bytes()).into_owned(),
                )
            })
            .collect();
        let mut r = json_status(
            200,
            json!({"method": method.as_str(), "path": path, "query": query, "headers": headers,
                   "body": String::from_utf8_lossy(body)}),
        );
        *r.status_mut() = StatusCode::from_u16(207).unwrap();
        r.headers_mut()
            .insert("x-upstream-custom", "yes".parse().unwrap());
        r.headers_mut()
            .insert("server-timing", "db;dur=1.5".parse().unwrap());
        return r;
    }
    match path {
        "/health" => json_status(
            200,
            json!({"status": "healthy", "server": "memu-server", "version": "0.1.0"}),
        ),
        "/" => json_status(
            200,
            json!({"message": "MemU Self-Hosted Server", "version": "0.1.0", "status": "running"}),
        ),
        _ => json_status(404, json!({"detail": "Not Found"})),
    }
}

/// `POST /api/v2/chat` with streaming: one SSE event per [`MemU::release_chat_event`], then `[DONE]`.
fn chat_stream(state: Arc<State>) -> Response<Body> {
    let (tx, rx) = mpsc::channel::<Result<Frame<Bytes>, Infallible>>(4);
    tokio::spawn(async move {
        for word in ["Hello", "there"] {
            let event = format!(
                "data: {}\n\n",
                json!({"message": word, "stream_ended": false})
            );
            if tx.send(Ok(Frame::data(Bytes::from(event)))).await.is_err() {
                return;
            }
            state.chat_step.notified().await;
        }
        let _ = tx
            .send(Ok(Frame::data(Bytes::from("data: [DONE]\n\n"))))
            .await;
    });
    let stream = tokio_stream_from(rx);
    let mut r = Response::new(BodyExt::boxed(StreamBody::new(stream)));
    r.headers_mut()
        .insert("content-type", "text/event-stream".parse().unwrap());
    r
}

fn tokio_stream_from<T>(mut rx: mpsc::Receiver<T>) -> impl futures_core::Stream<Item = T> {
    futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx))
}

fn full(body: impl Into<Bytes>) -> Body {
    Full::new(body.into()).boxed()
}

fn json_status(status: u16, value: Value) -> Response<Body> {
    let mut r = Response::new(full(value.to_string()));
    *r.status_mut() = StatusCode::from_u16(status).unwrap();
    r.headers_mut()
        .insert("content-type", "application/json".parse().unwrap());
    r.headers_mut()
        .insert("x-process-time", "0.001".parse().unwrap());
    r
}
