//! The stand-in's cloud v4 (`/api/v4/memory`, memu-api-next.md §4): recall files per (API key,
//! user, agent), missing or blank ids meaning `"default"`, the mixin's shapes (§4.1–§4.3).
//!
//! * `GET /api/v4/memory?user_id&agent_id[&cursor][&limit]`: one page,
//!   `{"recall_files":[…],"next_cursor":…}` in (track, name) order; `limit` defaults to 50;
//!   `next_cursor` is `null` on the last page, else base64url (padded) of JSON
//!   `[track, name, id]`. A cursor the stand-in did not mint reads as the first page.
//! * `POST /api/v4/memory/search`: `{"segments":[],"files":[…],"resources":[]}`, the files whose
//!   name, description or content match the query, each with its `score`, best first.
//! * `POST /api/v4/memory`: a synchronous upsert keyed by (track, name); answers
//!   `{"resources":[…],"recall_files":[…]}`, the committed rows (resources are not persisted).
//!
//! Errors use memu-cli's format `{"message","details":[{"code"}]}`; without `Authorization`, 401.

use bytes::Bytes;
use http::{header, Response};
use serde_json::{json, Map, Value};

use super::answers::{json_status, parse, Answer, Reject};
use super::store::{relevance, CREATED_AT};
use super::{Body, Owner, RecallFile, Service, State};

use std::sync::atomic::Ordering;

const DEFAULT_LIMIT: usize = 50;
const MAX_LIMIT: usize = 200;

pub(super) fn answer(
    state: &State,
    name: &str,
    parts: &http::request::Parts,
    body: &Bytes,
) -> Response<Body> {
    let answer = || -> Answer {
        let Some(project) = parts.headers.get(header::AUTHORIZATION) else {
            return Err(error(401, "invalid API key", "unauthorized"));
        };
        let project = String::from_utf8_lossy(project.as_bytes()).into_owned();
        if name == "v4 list" {
            return list(state, &project, parts.uri.query().unwrap_or_default());
        }
        let Value::Object(request) = parse(body)? else {
            return Err(error(422, "the body must be an object", "invalid_body"));
        };
        match name {
            "v4 search" => search(state, &project, &request),
            _ => commit(state, &project, &request),
        }
    };
    answer().unwrap_or_else(Reject::answer)
}

fn error(status: u16, message: &str, code: &str) -> Reject {
    Reject(
        status,
        json!({"message": message, "details": [{"code": code}]}),
    )
}

/// A v4 id: missing, null or blank means `"default"`.
fn id_or_default(value: Option<&Value>) -> Result<String, Reject> {
    match value {
        None | Some(Value::Null) => Ok("default".into()),
        Some(Value::String(s)) if s.trim().is_empty() => Ok("default".into()),
        Some(Value::String(s)) => Ok(s.clone()),
        Some(_) => Err(error(422, "ids must be strings", "invalid_scope")),
    }
}

fn owner(project: &str, fields: &Map<String, Value>) -> Result<Owner, Reject> {
    let user = id_or_default(fields.get("user_id"))?;
    let agent = id_or_default(fields.get("agent_id"))?;
    Ok(Owner::new(Service::V4, project, &user, &agent))
}

fn file_json(owner: &Owner, (track, name): &(String, String), file: &RecallFile) -> Value {
    json!({"id": file.id, "created_at": CREATED_AT,
           "updated_at": format!("2026-11-24T08:{:02}:{:02}Z", file.revision / 60 % 60, file.revision % 60),
           "name": name, "track": track, "description": file.description, "content": file.content,
           "user_id": owner.user, "agent_id": owner.agent})
}

fn list(state: &State, project: &str, query: &str) -> Answer {
    let params: Map<String, Value> = form_urlencoded::parse(query.as_bytes())
        .map(|(k, v)| (k.into_owned(), Value::String(v.into_owned())))
        .collect();
    let owner = owner(project, &params)?;
    let limit = match params.get("limit").and_then(Value::as_str) {
        None => DEFAULT_LIMIT,
        Some(limit) => match limit.parse::<usize>() {
            Ok(limit) if (1..=MAX_LIMIT).contains(&limit) => limit,
            _ => {
                return Err(error(
                    422,
                    "limit must be between 1 and 200",
                    "invalid_limit",
                ))
            }
        },
    };
    let after = params
        .get("cursor")
        .and_then(Value::as_str)
        .and_then(decode_cursor);
    let files = state.recall_files.lock().unwrap();
    let mut page: Vec<Value> = Vec::new();
    let mut next_cursor = Value::Null;
    let owned = files.get(&owner).into_iter().flatten();
    for (key, file) in owned.filter(|(key, _)| after.as_ref().is_none_or(|after| *key > after)) {
        if page.len() == limit {
            let last = page.last().unwrap();
            let position = json!([last["track"], last["name"], last["id"]]);
            next_cursor = json!(base64url(position.to_string().as_bytes()));
            break;
        }
        page.push(file_json(&owner, key, file));
    }
    Ok(json_status(
        200,
        json!({"recall_files": page, "next_cursor": next_cursor}),
    ))
}

fn search(state: &State, project: &str, request: &Map<String, Value>) -> Answer {
    let owner = owner(project, request)?;
    let Some(query) = request
        .get("query")
        .and_then(Value::as_str)
        .filter(|q| !q.trim().is_empty())
    else {
        return Err(error(422, "empty_query", "empty_query"));
    };
    let files = state.recall_files.lock().unwrap();
    let mut hits: Vec<(f64, Value)> = files
        .get(&owner)
        .into_iter()
        .flatten()
        .filter_map(|(key, file)| {
            let text = format!("{} {} {}", key.1, file.description, file.content);
            let score = relevance(query, &text);
            (score > 0.0).then(|| {
                let mut hit = file_json(&owner, key, file);
                hit["score"] = json!(score);
                (score, hit)
            })
        })
        .collect();
    hits.sort_by(|a, b| b.0.total_cmp(&a.0));
    let files: Vec<Value> = hits.into_iter().map(|(_, hit)| hit).collect();
    Ok(json_status(
        200,
        json!({"segments": [], "files": files, "resources": []}),
    ))
}

fn commit(state: &State, project: &str, request: &Map<String, Value>) -> Answer {
    let user = match request.get("user") {
        None | Some(Value::Null) => Map::new(),
        Some(Value::Object(user)) => user.clone(),
        Some(_) => return Err(error(422, "user must be an object", "invalid_user")),
    };
    let known = ["user_id", "agent_id", "user_name", "agent_name"];
    if user.keys().any(|k| !known.contains(&k.as_str())) {
        return Err(error(422, "unknown user field", "invalid_user"));
    }
    let owner = owner(project, &user)?;
    let mut files = Vec::new();
    for file in list_field(request, "recall_files") {
        let text = |field| file.get(field).and_then(Value::as_str);
        match (text("name"), text("track")) {
            (Some(name), Some(track @ ("memory" | "skill"))) if !name.is_empty() => files.push((
                track,
                name,
                text("description").unwrap_or_default(),
                text("content").unwrap_or_default(),
            )),
            _ => return Err(error(422, "invalid recall file", "invalid_recall_file")),
        }
    }
    let committed: Vec<Value> = files
        .into_iter()
        .map(|(track, name, description, content)| {
            upsert(state, &owner, track, name, description, content)
        })
        .collect();
    let resources: Vec<Value> = list_field(request, "resource")
        .iter()
        .enumerate()
        .map(|(n, r)| {
            json!({"id": format!("resource-{n}"), "created_at": CREATED_AT, "updated_at": CREATED_AT,
                   "url": r.get("path"), "local_path": r.get("path"), "caption": r.get("description"),
                   "track": "workspace", "user_id": owner.user, "agent_id": owner.agent})
        })
        .collect();
    Ok(json_status(
        200,
        json!({"resources": resources, "recall_files": committed}),
    ))
}

fn list_field<'a>(request: &'a Map<String, Value>, name: &str) -> &'a [Value] {
    request
        .get(name)
        .and_then(Value::as_array)
        .map_or(&[], Vec::as_slice)
}

/// Inserts or replaces the recall file (track, name) of `owner`; returns the row as committed.
pub(super) fn upsert(
    state: &State,
    owner: &Owner,
    track: &str,
    name: &str,
    description: &str,
    content: &str,
) -> Value {
    let revision = state.recall_revisions.fetch_add(1, Ordering::SeqCst) as u64 + 1;
    let mut files = state.recall_files.lock().unwrap();
    let key = (track.to_owned(), name.to_owned());
    let owned = files.entry(owner.clone()).or_default();
    let id = owned.get(&key).map_or_else(
        || format!("00000000-0000-4000-8000-{revision:012}"),
        |old| old.id.clone(),
    );
    let file = RecallFile {
        id,
        revision,
        description: description.into(),
        content: content.into(),
    };
    let row = file_json(owner, &key, &file);
    owned.insert(key, file);
    row
}

const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

/// base64url with `=` padding, as the real cursors are.
fn base64url(bytes: &[u8]) -> String {
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, b)| n | (*b as u32) << (16 - 8 * i));
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// The (track, name) a cursor minted by [`list`] points after; `None` for any other string.
fn decode_cursor(cursor: &str) -> Option<(String, String)> {
    let digits = cursor.trim_end_matches('=');
    let mut bits = 0u32;
    let mut count = 0;
    let mut bytes = Vec::new();
    for c in digits.bytes() {
        bits = bits << 6 | ALPHABET.iter().position(|a| *a == c)? as u32;
        count += 6;
        if count >= 8 {
            count -= 8;
            bytes.push((bits >> count) as u8);
        }
    }
    let position: Vec<String> = serde_json::from_slice(&bytes).ok()?;
    match position.as_slice() {
        [track, name, _id] => Some((track.clone(), name.clone())),
        _ => None,
    }
}
