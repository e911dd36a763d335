//! A stand-in memU for integration tests: the real routes and JSON shapes (memu-api.md §3), a
//! real hyper server on 127.0.0.1:0, hit counters per route, and knobs for latency and failures.
//!
//! Memories live in memory per (user, agent); a memorize creates a `PENDING` task that becomes
//! visible only when the test calls [`MemU::complete_tasks`], like memU's background task.

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
use hyper_util::server::conn::auto::Builder;
use serde_json::{json, Value};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, Notify};

type Body = http_body_util::combinators::BoxBody<Bytes, Infallible>;

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

#[derive(Default)]
struct State {
    hits: Mutex<HashMap<&'static str, usize>>,
    connections: AtomicUsize,
    latency_ms: AtomicUsize,
    route_latency_ms: Mutex<HashMap<&'static str, u64>>,
    failure: Mutex<Option<Failure>>,
    memories: Mutex<HashMap<(String, String), Vec<String>>>,
    tasks: Mutex<HashMap<String, Task>>,
    seen: Mutex<Vec<Seen>>,
    /// Released by the test to let the SSE chat stream send its next event.
    chat_step: Notify,
}

struct Task {
    status: &'static str,
    scope: (String, String),
    content: Vec<String>,
}

/// Handle to a running stand-in.
#[derive(Clone)]
pub struct MemU {
    pub addr: SocketAddr,
    state: Arc<State>,
}

impl MemU {
    /// Starts a stand-in on 127.0.0.1:0.
    pub async fn start() -> MemU {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let state = Arc::new(State::default());
        let serving = Arc::clone(&state);
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                serving.connections.fetch_add(1, Ordering::SeqCst);
                let state = Arc::clone(&serving);
                tokio::spawn(async move {
                    let service = service_fn(move |req| {
                        let state = Arc::clone(&state);
                        async move { Ok::<_, Infallible>(route(state, req).await) }
                    });
                    let mut builder = Builder::new(TokioExecutor::new());
                    builder.http1().timer(TokioTimer::new());
                    let _ = builder
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        MemU { addr, state }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Requests received on routes whose path ends with `suffix` (e.g. "related-memory-items").
    pub fn hits(&self, route: &str) -> usize {
        self.state
            .hits
            .lock()
            .unwrap()
            .get(route)
            .copied()
            .unwrap_or(0)
    }

    /// Requests received on every route.
    pub fn total_hits(&self) -> usize {
        self.state.hits.lock().unwrap().values().sum()
    }

    /// TCP connections accepted so far.
    pub fn connections(&self) -> usize {
        self.state.connections.load(Ordering::SeqCst)
    }

    pub fn set_latency(&self, latency: Duration) {
        self.state
            .latency_ms
            .store(latency.as_millis() as usize, Ordering::SeqCst);
    }

    /// Latency for one route (by the names [`MemU::hits`] takes), overriding [`MemU::set_latency`].
    pub fn set_route_latency(&self, route: &'static str, latency: Duration) {
        self.state
            .route_latency_ms
            .lock()
            .unwrap()
            .insert(route, latency.as_millis() as u64);
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

    /// Every request received, oldest first.
    pub fn seen(&self) -> Vec<Seen> {
        self.state.seen.lock().unwrap().clone()
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
    state.seen.lock().unwrap().push(Seen {
        method: parts.method.clone(),
        uri: parts.uri.to_string(),
        headers: parts.headers.clone(),
        body: body.clone(),
    });
    let name = if path.contains("/memorize/status/") {
        "status"
    } else {
        ROUTES
            .iter()
            .copied()
            .find(|r| path.ends_with(r))
            .unwrap_or("other")
    };
    *state.hits.lock().unwrap().entry(name).or_default() += 1;

    // The answer reflects memU's state when the request arrived; the latency delays its delivery
    // (so a slow answer can predate a write that completes meanwhile).
    let response = answer(&state, name, &parts, &path, &body);
    let route_latency = state.route_latency_ms.lock().unwrap().get(name).copied();
    let latency = route_latency.unwrap_or(state.latency_ms.load(Ordering::SeqCst) as u64);
    if latency > 0 {
        tokio::time::sleep(Duration::from_millis(latency)).await;
    }
    response
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
