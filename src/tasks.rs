//! memorize tasks: memU applies a memorize in the background (`PENDING` → `SUCCESS`, or
//! `COMPLETED` for v3 and memU-server), so a read made in between caches an answer without the new
//! memory. The proxy remembers each task it forwarded (bounded), with the scopes the write
//! invalidated and its row's [`TaskSpec`] (where the state is, which states mean success), and
//! invalidates those scopes again when the task succeeds: seen in a client's own status poll
//! through the proxy, or by the proxy's own background poll, since clients such as
//! Open-LLM-VTuber PR #272 never poll. Called by the write
//! and pass-through handlers; uses only the shared state and the buffered exchange below it.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{request, Method, Request};
use serde_json::Value;
use tokio::time::Instant;

use crate::cache::{Invalidate, Scope};
use crate::exchange::{deadline, forward_buffered};
use crate::listing;
use crate::metrics::InvalidationCause;
use crate::mirror::Rewarm;
use crate::outcome::RouteClassLabel;
use crate::routes::{field, TaskSpec, WriteKind};
use crate::state::{State, TrackedTask};

/// The first wait before polling a memorize task the proxy forwarded; each later wait doubles, up
/// to [`POLL_EVERY_AT_MOST`] (on the cloud every poll is a request on the customer's API key).
pub const POLL_FIRST: Duration = Duration::from_millis(500);
/// The longest wait between two polls.
pub const POLL_EVERY_AT_MOST: Duration = Duration::from_secs(10);
/// How long it keeps polling before leaving the task to the TTL: memorize with a real LLM takes
/// tens of seconds, memU-server's Temporal activity may run up to 10 minutes.
pub const POLL_FOR: Duration = Duration::from_secs(600);

/// Remembers a memorize task and starts polling it.
pub fn track(
    state: &Arc<State>,
    memorize: &request::Parts,
    task_id: Box<str>,
    targets: Arc<[(Scope, Invalidate)]>,
    kind: WriteKind,
    spec: TaskSpec,
    rewarm: Option<Rewarm>,
) {
    state.tasks.insert(
        task_id.clone(),
        TrackedTask {
            targets,
            kind,
            spec,
            rewarm,
        },
    );
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

/// Applies what a status answer says about a tracked task: success invalidates its scopes (once,
/// whoever sees it first); success or failure ends the tracking. True when the task is over.
pub fn observe(state: &Arc<State>, task_id: &str, body: &[u8], head: &request::Parts) -> bool {
    let Some(tracked) = state.tasks.get(task_id) else {
        return true;
    };
    match outcome(&tracked.spec, body) {
        Some(true) => {
            if let Some((_, tracked)) = state.tasks.remove(task_id) {
                let rewarm = (tracked.rewarm.clone()).map(|r| (r, Arc::clone(&tracked.targets)));
                state.invalidate_all_now(
                    tracked.targets,
                    tracked.kind,
                    InvalidationCause::TaskSuccess,
                );
                // After the local invalidation, so what it fetches is current.
                if let Some((rewarm, targets)) = rewarm {
                    listing::after_write(state, &rewarm, &targets, head);
                }
            }
            true
        }
        Some(false) => {
            state.tasks.remove(task_id);
            true
        }
        None => false,
    }
}

/// What a status answer says: `Some(true)` succeeded, `Some(false)` failed for good, `None` still
/// running or unreadable.
fn outcome(spec: &TaskSpec, body: &[u8]) -> Option<bool> {
    let answer: Value = serde_json::from_slice(body).ok()?;
    let task_state = field(&answer, spec.state)?.as_str()?;
    if spec.success.contains(&task_state) {
        Some(true)
    } else if spec.failure.contains(&task_state) {
        Some(false)
    } else {
        None
    }
}

async fn poll(state: &Arc<State>, task_id: &str, status: &request::Parts) {
    let give_up = Instant::now() + POLL_FOR;
    let mut wait = POLL_FIRST;
    while Instant::now() < give_up && state.tasks.contains_key(task_id) {
        tokio::time::sleep(wait).await;
        wait = (wait * 2).min(POLL_EVERY_AT_MOST);
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
                if observe(state, task_id, &answer.body, status) {
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
    fn task_states_per_generation() {
        use crate::routes::table::{SERVER_MEMORIZE, V1_MEMORIZE, V3_MEMORIZE};
        let v1 = V1_MEMORIZE.task.unwrap();
        let v3 = V3_MEMORIZE.task.unwrap();
        let server = SERVER_MEMORIZE.task.unwrap();
        let flat = |s: &str| format!(r#"{{"task_id":"t","status":"{s}","detail_info":""}}"#);
        let wrapped = |s: &str| {
            format!(
                r#"{{"status":"success","result":{{"task_id":"t","status":"{s}","detail":null}}}}"#
            )
        };
        let cases: &[(&TaskSpec, String, Option<bool>)] = &[
            (&v1, flat("SUCCESS"), Some(true)),
            (&v1, flat("FAILURE"), Some(false)),
            (&v1, flat("PENDING"), None),
            (&v1, flat("COMPLETED"), None),
            (&v3, flat("COMPLETED"), Some(true)),
            (&v3, flat("SUCCESS"), Some(true)),
            (&v3, flat("FAILED"), Some(false)),
            (&v3, flat("PROCESSING"), None),
            (&server, wrapped("COMPLETED"), Some(true)),
            (&server, wrapped("RUNNING"), None),
            (&server, wrapped("TERMINATED"), Some(false)),
            // The envelope's own "success" is not the task's state.
            (&server, flat("COMPLETED"), None),
            (&v1, "nope".to_owned(), None),
        ];
        for (spec, body, want) in cases {
            assert_eq!(outcome(spec, body.as_bytes()), *want, "{body}");
        }
    }
}
