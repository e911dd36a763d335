//! The stand-in's cloud v3 (`/api/v3/memory/…`, memu-api-next.md §3): unwrapped answers, memories
//! per (API key, user, agent), asynchronous memorize with `PENDING` → `SUCCESS` tasks.
//!
//! Shapes: retrieve answers memu-py's retrieve dict (§3.1: `needs_retrieval`, `original_query`,
//! `rewritten_query`, `next_step_query`, `categories`, `items`, `resources`), every memory of the
//! (user, agent) scored against the query; a list-of-messages query is rewritten from every turn.
//! categories answers `{"categories":[…]}`, one per agent with memories (§3.2; an absent, null or
//! blank `agent_id` means every agent of the user). memorize answers like issue #356's real reply
//! (§3.3), the status route `{"task_id","status","detail_info"}` (§3.4). delete's real answer is
//! unknown (§3.5): v1's `{"success","deleted_count"}`. Without `Authorization` every route is 401
//! (the real body is unknown).

use bytes::Bytes;
use http::{header, Response};
use serde_json::{json, Value};

use super::answers::{json_status, missing, parse};
use super::store::{
    memories_where, memu_category, memu_item, message_texts, new_task, purge, relevance, task_done,
};
use super::{Body, Owner, Service, State};

pub(super) fn answer(
    state: &State,
    name: &str,
    parts: &http::request::Parts,
    path: &str,
    body: &Bytes,
) -> Response<Body> {
    let Some(project) = parts.headers.get(header::AUTHORIZATION) else {
        return json_status(401, json!({"detail": "Not authenticated"}));
    };
    let project = String::from_utf8_lossy(project.as_bytes()).into_owned();
    if name == "v3 status" {
        return status(state, path);
    }
    let request = match parse(body) {
        Ok(request) => request,
        Err(reject) => return reject.answer(),
    };
    let Some(user) = request.get("user_id").and_then(Value::as_str) else {
        return missing("user_id", &request);
    };
    // Absent, null and "" are one value: every agent of the user.
    let agent = request
        .get("agent_id")
        .and_then(Value::as_str)
        .filter(|a| !a.is_empty());
    let of_user = |o: &Owner| {
        o.service == Service::V3
            && o.project == project
            && o.user == user
            && agent.is_none_or(|a| a == o.agent)
    };
    match name {
        "v3 retrieve" => retrieve(state, &request, of_user),
        "v3 categories" => {
            let categories: Vec<Value> = memories_where(state, of_user)
                .iter()
                .map(|(owner, items)| memu_category(owner, items))
                .collect();
            json_status(200, json!({ "categories": categories }))
        }
        "v3 memorize" => memorize(state, &request, &project, user, agent),
        _ => {
            let deleted = purge(state, of_user);
            json_status(
                200,
                json!({"success": true, "deleted_count": deleted.items}),
            )
        }
    }
}

fn retrieve(state: &State, request: &Value, of_user: impl Fn(&Owner) -> bool) -> Response<Body> {
    // A list of messages is rewritten from every turn; the last one is the question.
    let (original, rewritten) = match request.get("query") {
        Some(Value::String(q)) => (q.clone(), q.clone()),
        Some(messages @ Value::Array(_)) => {
            let texts = message_texts(messages);
            (texts.last().cloned().unwrap_or_default(), texts.join(" "))
        }
        _ => return missing("query", request),
    };
    let mut items = Vec::new();
    let mut categories = Vec::new();
    for (owner, memories) in memories_where(state, of_user) {
        let scored = memories
            .iter()
            .enumerate()
            .map(|(n, memory)| memu_item(&owner, n, memory, relevance(&rewritten, memory)));
        items.extend(scored);
        let mut category = memu_category(&owner, &memories);
        category["score"] = json!(0.5);
        categories.push(category);
    }
    json_status(
        200,
        json!({"needs_retrieval": true, "original_query": original, "rewritten_query": rewritten,
               "next_step_query": null, "categories": categories, "items": items, "resources": []}),
    )
}

fn memorize(
    state: &State,
    request: &Value,
    project: &str,
    user: &str,
    agent: Option<&str>,
) -> Response<Body> {
    let content = match (
        request.get("conversation"),
        request.get("conversation_text"),
    ) {
        (Some(conversation @ Value::Array(_)), _) => message_texts(conversation),
        (_, Some(Value::String(text))) => vec![text.clone()],
        _ => return missing("conversation", request),
    };
    let owner = Owner::new(Service::V3, project, user, agent.unwrap_or_default());
    // A 27-character KSUID-like id, as the real cloud's.
    let task_id = new_task(state, owner, content, |n| {
        format!("3AATM4mkFxORYeMU5jU5u{n:06}")
    });
    let name = |field, default| {
        request
            .get(field)
            .and_then(Value::as_str)
            .unwrap_or(default)
            .to_owned()
    };
    let message = format!(
        "Memorization task registered for user {} and agent {}",
        name("user_name", "User"),
        name("agent_name", "Assistant")
    );
    json_status(
        200,
        json!({"task_id": task_id, "status": "PENDING", "message": message}),
    )
}

fn status(state: &State, path: &str) -> Response<Body> {
    let id = path.rsplit('/').next().unwrap_or_default();
    match task_done(state, Service::V3, id) {
        Some(done) => json_status(
            200,
            json!({"task_id": id, "status": if done { "SUCCESS" } else { "PENDING" }, "detail_info": ""}),
        ),
        None => json_status(404, json!({"detail": "Task not found"})),
    }
}
