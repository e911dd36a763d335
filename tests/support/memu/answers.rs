//! The stand-in memU's answers, route by route: the v1/v2 routes' real JSON shapes (memu-api.md
//! §3) computed from the stand-in's state; the failure knobs; `/echo`, `/health` and the SSE chat
//! stream; the wrong-shape knob for every generation's reads; and the JSON helpers the other
//! generations' answers (`v3.rs`, `v4.rs`, `server.rs`) share.
//! Routing, hit counting, latency and recording are in `memu.rs`.

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::Arc;

use bytes::Bytes;
use http::{HeaderMap, Method, Response, StatusCode};
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::Frame;
use serde_json::{json, Value};
use tokio::sync::mpsc;

use super::store::{memories_of, new_task, purge, task_done};
use super::{server, v3, v4, Body, Failure, Owner, Service, Shape, State};

/// memU's answer to a request to route `name`, from its state now.
pub(super) fn answer(
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
    if name.starts_with("v3 ") {
        return v3::answer(state, name, parts, path, body);
    }
    if name.starts_with("v4 ") {
        return v4::answer(state, name, parts, body);
    }
    if name.starts_with("server ") {
        return server::answer(state, name, path, body);
    }
    if name == "status" {
        return task_status(state, path);
    }
    let request = match parse(body) {
        Ok(request) => request,
        Err(reject) => return reject.answer(),
    };
    match name {
        "related-memory-items" => related(state, &request),
        "default-categories" => default_categories(state, &request),
        "related-clustered-categories" => clustered(state, &request),
        "memorize" => memorize(state, &request),
        _ => delete(state, &request),
    }
}

/// An error answer, its status and JSON body: small, so that fallible helpers can return it
/// through `?`.
pub(super) struct Reject(pub u16, pub Value);

impl Reject {
    pub(super) fn answer(self) -> Response<Body> {
        json_status(self.0, self.1)
    }
}

/// A route's answer, or the error answer the request was rejected with.
pub(super) type Answer = Result<Response<Body>, Reject>;

/// A request body as JSON, or FastAPI's 422 for a body that is not.
pub(super) fn parse(body: &Bytes) -> Result<Value, Reject> {
    serde_json::from_slice(body).map_err(|_| {
        Reject(
            422,
            json!({"detail": [{"type": "json_invalid", "loc": ["body", 0], "msg": "JSON decode error"}]}),
        )
    })
}

fn scope_of(request: &Value) -> Option<Owner> {
    let user = request.get("user_id")?.as_str()?;
    let agent = request
        .get("agent_id")
        .and_then(Value::as_str)
        .unwrap_or("default_agent");
    Some(Owner::new(Service::V1, "", user, agent))
}

/// FastAPI's 422 for a missing body field.
pub(super) fn missing(field: &str, input: &Value) -> Response<Body> {
    json_status(
        422,
        json!({"detail": [{"type": "missing", "loc": ["body", field], "msg": "Field required", "input": input}]}),
    )
}

fn memory(n: usize, category: &str, content: &str) -> Value {
    json!({"memory_id": format!("m{n}"), "category": category, "content": content,
           "happened_at": "2026-11-24T00:00:00", "created_at": null, "updated_at": null})
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
    let task_id = new_task(state, scope, content, |n| format!("task-{n}"));
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
    let deleted = purge(state, |o| {
        o.service == Service::V1 && o.user == user && agent.is_none_or(|agent| agent == o.agent)
    });
    json_status(
        200,
        json!({"success": true, "deleted_count": deleted.items}),
    )
}

fn task_status(state: &State, path: &str) -> Response<Body> {
    let id = path.rsplit('/').next().unwrap_or_default();
    match task_done(state, Service::V1, id) {
        Some(done) => json_status(
            200,
            json!({"task_id": id, "status": if done { "SUCCESS" } else { "PENDING" }, "detail_info": ""}),
        ),
        None => json_status(404, json!({"detail": "Task not found"})),
    }
}

/// The main list field of each read route's answer; `None` for other routes.
fn list_field(name: &str) -> Option<&'static [&'static str]> {
    Some(match name {
        "related-memory-items" => &["related_memories"],
        "default-categories" => &["categories"],
        "related-clustered-categories" => &["clustered_categories"],
        "v3 retrieve" => &["items"],
        "v3 categories" => &["categories"],
        "v4 list" => &["recall_files"],
        "v4 search" => &["files"],
        "server retrieve" => &["result", "items"],
        "server categories" => &["result", "categories"],
        _ => return None,
    })
}

/// A read's `answer` turned into the wrong `shape` ([`Failure::WrongShape`]); other routes' and
/// error answers unchanged.
pub(super) async fn wrong_shape(
    answer: Response<Body>,
    name: &str,
    shape: Shape,
) -> Response<Body> {
    let Some(list) = list_field(name).filter(|_| answer.status() == StatusCode::OK) else {
        return answer;
    };
    match shape {
        Shape::List => json_status(200, json!([])),
        Shape::MissingList => {
            let body = answer.into_body().collect().await.unwrap().to_bytes();
            let mut value: Value = serde_json::from_slice(&body).unwrap();
            let (last, parents) = list.split_last().unwrap();
            let parent = parents.iter().fold(&mut value, |v, k| &mut v[*k]);
            parent.as_object_mut().unwrap().remove(*last);
            json_status(200, value)
        }
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
    if let Some(redirect) = server::redirect_slash(path, headers, query) {
        return redirect;
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

pub(super) fn full(body: impl Into<Bytes>) -> Body {
    Full::new(body.into()).boxed()
}

/// A 200 JSON answer with a body given in advance.
pub(super) fn fixed(body: Bytes) -> Response<Body> {
    let mut r = Response::new(full(body));
    r.headers_mut()
        .insert("content-type", "application/json".parse().unwrap());
    r
}

/// A JSON answer with memU's usual headers.
pub(super) fn json_status(status: u16, value: Value) -> Response<Body> {
    let mut r = Response::new(full(value.to_string()));
    *r.status_mut() = StatusCode::from_u16(status).unwrap();
    r.headers_mut()
        .insert("content-type", "application/json".parse().unwrap());
    r.headers_mut()
        .insert("x-process-time", "0.001".parse().unwrap());
    r
}
