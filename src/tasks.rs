//! memorize tasks: memU applies a memorize in the background (`PENDING` → `SUCCESS`), so a read
//! made in between caches an answer without the new memory. The proxy remembers each memorize
//! task it forwarded (bounded) and invalidates the writer's scope again when the task reports
//! `SUCCESS`: seen in a client's own status poll through the proxy, or by the proxy's own
//! background poll, since clients such as Open-LLM-VTuber PR #272 never poll. Called by the write
//! and pass-through handlers; uses only the shared state and the buffered exchange below it.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{request, Method, Request};
use serde::Deserialize;
use tokio::time::Instant;

use crate::cache::{Invalidate, Scope};
use crate::exchange::{deadline, forward_buffered};
use crate::metrics::InvalidationCause;
use crate::outcome::RouteClassLabel;
use crate::state::State;

/// How often the proxy polls a memorize task it forwarded.
pub const POLL_EVERY: Duration = Duration::from_millis(500);
/// How long it keeps polling before leaving the task to the TTL (memorize with a real LLM can take
/// tens of seconds).
pub const POLL_FOR: Duration = Duration::from_secs(180);

/// Remembers a memorize task and starts polling it.
pub fn track(
    state: &Arc<State>,
    memorize: &request::Parts,
    task_id: Box<str>,
    scope: Scope,
    what: Invalidate,
) {
    state.tasks.insert(task_id.clone(), (scope, what));
    let Ok(permit) = Arc::clone(&state.task_pollers).try_acquire_owned() else {
        return;
    };
    let Some(status) = status_request(memorize, &task_id) else {
        return;
    };
    let state = Arc::clone(state);
    tokio::spawn(async move {
        let _permit = permit;
        poll(&state, &task_id, &status).await;
    });
}

/// Applies what a status answer says about a tracked task: `SUCCESS` invalidates its scope
/// (once, whoever sees it first), `SUCCESS`/`FAILURE` end the tracking.
pub fn observe(state: &State, task_id: &str, body: &[u8]) -> bool {
    match task_state(body).as_deref() {
        Some("SUCCESS") => {
            if let Some((_, (scope, what))) = state.tasks.remove(task_id) {
                state.invalidate(&scope, what, InvalidationCause::TaskSuccess);
            }
            true
        }
        Some("FAILURE") => {
            state.tasks.remove(task_id);
            true
        }
        _ => false,
    }
}

async fn poll(state: &State, task_id: &str, status: &request::Parts) {
    let give_up = Instant::now() + POLL_FOR;
    while Instant::now() < give_up && state.tasks.contains_key(task_id) {
        tokio::time::sleep(POLL_EVERY).await;
        let exchanged = forward_buffered(
            state,
            status,
            Bytes::new(),
            RouteClassLabel::Status,
            deadline(state),
        )
        .await;
        match exchanged.result {
            Ok(answer) if answer.status.is_success() => {
                if observe(state, task_id, &answer.body) {
                    return;
                }
            }
            // memU lost the task (it keeps them in memory): nothing more will be learnt.
            Ok(answer) if answer.status == http::StatusCode::NOT_FOUND => {
                state.tasks.remove(task_id);
                return;
            }
            Ok(_) | Err(_) => {}
        }
    }
}

/// `GET …/memorize/status/{task_id}` next to the memorize path, with the writer's credentials.
fn status_request(memorize: &request::Parts, task_id: &str) -> Option<request::Parts> {
    let path = format!(
        "{}/status/{task_id}",
        memorize.uri.path().trim_end_matches('/')
    );
    let mut request = Request::builder().method(Method::GET).uri(path);
    if let Some(auth) = memorize.headers.get(header::AUTHORIZATION) {
        request = request.header(header::AUTHORIZATION, auth);
    }
    let request = request
        .header(header::ACCEPT, HeaderValue::from_static("application/json"))
        .body(())
        .ok()?;
    Some(request.into_parts().0)
}

fn task_state(body: &[u8]) -> Option<String> {
    #[derive(Deserialize)]
    struct Status {
        status: String,
    }
    serde_json::from_slice::<Status>(body)
        .ok()
        .map(|s| s.status)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_status_route_sits_next_to_the_memorize_route() {
        let memorize = Request::post("/memu/api/v1/memory/memorize")
            .header("authorization", "Bearer k")
            .body(())
            .unwrap()
            .into_parts()
            .0;
        let status = status_request(&memorize, "t-1").unwrap();
        assert_eq!(status.uri.path(), "/memu/api/v1/memory/memorize/status/t-1");
        assert_eq!(status.method, Method::GET);
        assert_eq!(status.headers["authorization"], "Bearer k");
    }

    #[test]
    fn task_states() {
        assert_eq!(
            task_state(br#"{"task_id":"t","status":"SUCCESS","detail_info":""}"#).as_deref(),
            Some("SUCCESS")
        );
        assert_eq!(task_state(b"nope"), None);
    }
}
