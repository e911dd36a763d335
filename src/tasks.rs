//! memorize tasks: memU applies a memorize in the background (`PENDING` → `SUCCESS`), so a read
//! made in between caches an answer without the new memory. The proxy remembers each memorize
//! task it forwarded (bounded) and invalidates the writer's scope again when the task reports
//! `SUCCESS`: seen in a client's own status poll through the proxy, or by the proxy's own
//! background poll, since clients such as Open-LLM-VTuber PR #272 never poll.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{request, Method, Request};
use serde::Deserialize;
use tokio::time::Instant;

use crate::cache::{Invalidate, Scope};
use crate::metrics::{InvalidationCause, RouteClassLabel};
use crate::proxy::Proxy;

/// How often the proxy polls a memorize task it forwarded.
pub const POLL_EVERY: Duration = Duration::from_millis(500);
/// How long it keeps polling before leaving the task to the TTL (memorize with a real LLM can take
/// tens of seconds).
pub const POLL_FOR: Duration = Duration::from_secs(180);
/// Most tasks polled at once; past it, only clients' own status polls are watched.
pub const MAX_POLLERS: usize = 256;

/// Remembers a memorize task and starts polling it.
pub fn track(
    proxy: &Arc<Proxy>,
    memorize: &request::Parts,
    task_id: Box<str>,
    scope: Scope,
    what: Invalidate,
) {
    proxy.tasks.insert(task_id.clone(), (scope, what));
    let Ok(permit) = Arc::clone(&proxy.task_pollers).try_acquire_owned() else {
        return;
    };
    let Some(status) = status_request(memorize, &task_id) else {
        return;
    };
    let proxy = Arc::clone(proxy);
    tokio::spawn(async move {
        let _permit = permit;
        poll(&proxy, &task_id, &status).await;
    });
}

/// Applies what a status answer says about a tracked task: `SUCCESS` invalidates its scope
/// (once, whoever sees it first), `SUCCESS`/`FAILURE` end the tracking.
pub fn observe(proxy: &Proxy, task_id: &str, body: &[u8]) -> bool {
    match state(body).as_deref() {
        Some("SUCCESS") => {
            if let Some((_, (scope, what))) = proxy.tasks.remove(task_id) {
                proxy.invalidate(&scope, what, InvalidationCause::TaskSuccess);
            }
            true
        }
        Some("FAILURE") => {
            proxy.tasks.remove(task_id);
            true
        }
        _ => false,
    }
}

async fn poll(proxy: &Proxy, task_id: &str, status: &request::Parts) {
    let give_up = Instant::now() + POLL_FOR;
    while Instant::now() < give_up && proxy.tasks.contains_key(task_id) {
        tokio::time::sleep(POLL_EVERY).await;
        let (result, _) = proxy
            .forward_buffered(
                status,
                Bytes::new(),
                RouteClassLabel::Status,
                proxy.deadline(),
            )
            .await;
        match result {
            Ok(answer) if answer.status.is_success() => {
                if observe(proxy, task_id, &answer.body) {
                    return;
                }
            }
            // memU lost the task (it keeps them in memory): nothing more will be learnt.
            Ok(answer) if answer.status == http::StatusCode::NOT_FOUND => {
                proxy.tasks.remove(task_id);
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

fn state(body: &[u8]) -> Option<String> {
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
            state(br#"{"task_id":"t","status":"SUCCESS","detail_info":""}"#).as_deref(),
            Some("SUCCESS")
        );
        assert_eq!(state(b"nope"), None);
    }
}
