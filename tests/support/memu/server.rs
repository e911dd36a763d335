//! The stand-in's self-hosted memU-server 1.x (at its root, memu-api-next.md §5): no auth, every
//! success wrapped `{"status":"success","result":…}`, FastAPI's error bodies.
//!
//! * `/retrieve` ignores the user: it searches every user's memories and answers memu-py's
//!   retrieve dict with the matching items (as a 200: the real server's datetime 500 is not
//!   reproduced).
//! * `/categories` for a user: an absent or null `agent_id` means every agent, `""` only the
//!   memories stored without one.
//! * `/memorize` creates a `memorize-<32 hex>` task, `RUNNING` until
//!   [`super::MemU::complete_tasks`], then `COMPLETED` (`detail: "SUCCESS"`).
//! * `/clear` purges a user's memories (or an agent's, of every user) and counts them.
//! * A trailing slash on any of these gets FastAPI's `307` to the slashless path.

use bytes::Bytes;
use http::{HeaderMap, Response, StatusCode};
use serde_json::{json, Map, Value};

use super::answers::{full, json_status, Answer, Reject};
use super::store::{
    memories_where, memu_category, memu_item, message_texts, new_task, purge, relevance, task_done,
};
use super::{Body, Owner, Service, State};

pub(super) fn answer(state: &State, name: &str, path: &str, body: &Bytes) -> Response<Body> {
    let answer = || -> Answer {
        if name == "server status" {
            return status(state, path);
        }
        let request = object(body)?;
        match name {
            "server retrieve" => retrieve(state, &request),
            "server categories" => categories(state, &request),
            "server memorize" => memorize(state, &request),
            _ => clear(state, &request),
        }
    };
    answer().unwrap_or_else(Reject::answer)
}

fn success(result: Value) -> Answer {
    Ok(json_status(
        200,
        json!({"status": "success", "result": result}),
    ))
}

fn detail(status: u16, detail: &str) -> Reject {
    Reject(status, json!({ "detail": detail }))
}

/// FastAPI's 422 with one validation error.
fn invalid(kind: &str, loc: Value, msg: &str, input: &Value) -> Reject {
    Reject(
        422,
        json!({"detail": [{"type": kind, "loc": loc, "msg": msg, "input": input}]}),
    )
}

/// The body as a JSON object, or FastAPI's 422.
fn object(body: &Bytes) -> Result<Map<String, Value>, Reject> {
    if body.is_empty() {
        return Err(invalid(
            "missing",
            json!(["body"]),
            "Field required",
            &Value::Null,
        ));
    }
    match serde_json::from_slice(body) {
        Ok(Value::Object(request)) => Ok(request),
        Ok(other) => Err(invalid(
            "dict_type",
            json!(["body"]),
            "Input should be a valid dictionary",
            &other,
        )),
        Err(_) => Err(invalid(
            "json_invalid",
            json!(["body", 0]),
            "JSON decode error",
            &json!({}),
        )),
    }
}

/// `user_id`: a string, stripped, at least one character.
fn user_id(request: &Map<String, Value>) -> Result<String, Reject> {
    let input = Value::Object(request.clone());
    match request.get("user_id") {
        Some(Value::String(user)) if !user.trim().is_empty() => Ok(user.trim().to_owned()),
        Some(Value::String(user)) => Err(invalid(
            "string_too_short",
            json!(["body", "user_id"]),
            "String should have at least 1 character",
            &json!(user.trim()),
        )),
        None | Some(Value::Null) => Err(invalid(
            "missing",
            json!(["body", "user_id"]),
            "Field required",
            &input,
        )),
        Some(other) => Err(invalid(
            "string_type",
            json!(["body", "user_id"]),
            "Input should be a valid string",
            other,
        )),
    }
}

fn retrieve(state: &State, request: &Map<String, Value>) -> Answer {
    let query = match request.get("query") {
        None => return Err(detail(400, "Missing 'query' in request body")),
        Some(Value::String(q)) if !q.trim().is_empty() => q.trim(),
        Some(_) => return Err(detail(400, "'query' must be a non-empty string")),
    };
    let mut items = Vec::new();
    let mut categories = Vec::new();
    // Every user's memories: the server calls retrieve without `where`.
    for (owner, memories) in memories_where(state, |o| o.service == Service::Server) {
        let matching: Vec<Value> = memories
            .iter()
            .enumerate()
            .filter_map(|(n, memory)| {
                let score = relevance(query, memory);
                (score > 0.0).then(|| memu_item(&owner, n, memory, score))
            })
            .collect();
        if !matching.is_empty() {
            let mut category = memu_category(&owner, &memories);
            category["score"] = json!(0.5);
            categories.push(category);
            items.extend(matching);
        }
    }
    success(
        json!({"needs_retrieval": true, "original_query": query, "rewritten_query": query,
                   "next_step_query": null, "categories": categories, "items": items, "resources": []}),
    )
}

fn categories(state: &State, request: &Map<String, Value>) -> Answer {
    let user = user_id(request)?;
    let agent = request.get("agent_id").and_then(Value::as_str);
    let categories: Vec<Value> = memories_where(state, |o| {
        o.service == Service::Server && o.user == user && agent.is_none_or(|a| a == o.agent)
    })
    .iter()
    .map(|(owner, items)| {
        let category = memu_category(owner, items);
        json!({"name": category["name"], "description": category["description"],
               "user_id": owner.user, "agent_id": owner.agent, "summary": category["summary"]})
    })
    .collect();
    success(json!({ "categories": categories }))
}

fn memorize(state: &State, request: &Map<String, Value>) -> Answer {
    let conversation = match request.get("conversation") {
        Some(c @ (Value::Array(_) | Value::Object(_))) => c,
        None => {
            let input = Value::Object(request.clone());
            return Err(invalid(
                "missing",
                json!(["body", "conversation"]),
                "Field required",
                &input,
            ));
        }
        Some(other) => {
            return Err(invalid(
                "list_type",
                json!(["body", "conversation", "list[any]"]),
                "Input should be a valid list",
                other,
            ))
        }
    };
    let user = user_id(request)?;
    let agent = request
        .get("agent_id")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let owner = Owner::new(Service::Server, "", &user, agent);
    let task_id = new_task(state, owner, message_texts(conversation), |n| {
        format!("memorize-{:032x}", 0xf221_6307_u128 << 96 | n as u128)
    });
    let message = format!("Memorization task submitted for user {user}");
    success(json!({"task_id": task_id, "status": "PENDING", "message": message}))
}

fn status(state: &State, path: &str) -> Answer {
    let id = path.rsplit('/').next().unwrap_or_default();
    let well_formed = id.strip_prefix("memorize-").is_some_and(|hex| {
        hex.len() == 32
            && hex
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    });
    if !well_formed {
        return Err(detail(
            422,
            "task_id must match the format 'memorize-<uuid4hex>' (e.g. memorize-abc123def456...)",
        ));
    }
    match task_done(state, Service::Server, id) {
        Some(true) => success(json!({"task_id": id, "status": "COMPLETED", "detail": "SUCCESS"})),
        Some(false) => success(json!({"task_id": id, "status": "RUNNING", "detail": null})),
        None => Err(detail(404, &format!("Task {id} not found"))),
    }
}

fn clear(state: &State, request: &Map<String, Value>) -> Answer {
    let named = |field| {
        request
            .get(field)
            .and_then(Value::as_str)
            .map(str::trim)
            .filter(|v| !v.is_empty())
    };
    let (user, agent) = (named("user_id"), named("agent_id"));
    if user.is_none() && agent.is_none() {
        return Err(invalid(
            "value_error",
            json!(["body"]),
            "Value error, At least one of user_id or agent_id must be provided",
            &Value::Object(request.clone()),
        ));
    }
    let purged = purge(state, |o| {
        o.service == Service::Server
            && user.is_none_or(|u| u == o.user)
            && agent.is_none_or(|a| a == o.agent)
    });
    success(
        json!({"purged_categories": purged.owners, "purged_items": purged.items,
                   "purged_resources": purged.resources}),
    )
}

/// FastAPI's `redirect_slashes`: `POST /retrieve/` (or any route's path with a trailing slash)
/// gets a 307 to the slashless path, an absolute URL built from the `Host` header.
pub(super) fn redirect_slash(
    path: &str,
    headers: &HeaderMap,
    query: Option<&str>,
) -> Option<Response<Body>> {
    let slashless = path.strip_suffix('/')?;
    let route = ["/retrieve", "/categories", "/memorize", "/clear"];
    let is_route = route.iter().any(|r| slashless.ends_with(r))
        || slashless
            .rsplit_once("/memorize/status/")
            .is_some_and(|(_, id)| !id.is_empty() && !id.contains('/'));
    if path.contains("/api/") || !is_route {
        return None;
    }
    let host = headers.get(http::header::HOST)?.to_str().ok()?;
    let query = query.map(|q| format!("?{q}")).unwrap_or_default();
    let location = format!("http://{host}{slashless}{query}");
    let mut response = Response::new(full(Bytes::new()));
    *response.status_mut() = StatusCode::TEMPORARY_REDIRECT;
    let headers = response.headers_mut();
    headers.insert(http::header::LOCATION, location.parse().ok()?);
    Some(response)
}
