//! Invalidating writes (memorize, delete, commit, clear, for every generation): forwarded once,
//! never faked, and invalidating what the route's row says they change.
//!
//! The body is buffered (it is small and bounded) to read the scope it writes. The scopes are
//! invalidated *before* forwarding, so no read started after the write was sent is served from an
//! older answer, and again after a successful answer, so a read fetched while memU was applying
//! the write is not admitted as fresh. An asynchronous write's task id (where its row says) is
//! remembered, so a later status poll reporting success invalidates once more (`tasks.rs`).
//! Failures are reported honestly: 504 on the deadline, 502 when memU is unreachable. Writes have
//! their own, longer deadline (`upstream.write_timeout_ms`): the SDK retries a memorize answered
//! 504, so cutting one short while memU is still applying it would store it twice.

use std::sync::Arc;

use http::Request;
use serde_json::Value;

use crate::body::ProxyBody;
use crate::cache::{request_tenant, write_targets};
use crate::error::ProxyError;
use crate::exchange::{forward_buffered, read_body, write_deadline};
use crate::metrics::InvalidationCause;
use crate::outcome::{Handled, Outcome, RouteClassLabel};
use crate::respond::forwarded;
use crate::routes::{field, WriteRoute};
use crate::state::State;
use crate::tasks;

/// Handles one memorize or delete.
pub async fn handle(
    state: &Arc<State>,
    route: WriteRoute,
    request: Request<ProxyBody>,
) -> Result<Handled, ProxyError> {
    let (parts, body) = request.into_parts();
    let body = read_body(body, state.max_body_bytes, write_deadline(state)).await?;
    let targets: Arc<[_]> = write_targets(route, request_tenant(&parts.headers), &body).into();
    state
        .invalidate_all(&targets, InvalidationCause::Write)
        .await;

    let deadline = write_deadline(state);
    let exchanged = forward_buffered(state, &parts, body, RouteClassLabel::Write, deadline).await;
    let answer = exchanged.result?;

    if answer.status.is_success() && !targets.is_empty() {
        state
            .invalidate_all(&targets, InvalidationCause::Write)
            .await;
        if let Some(spec) = route.task {
            if let Some(task_id) = task_id(&answer.body, spec.id) {
                tasks::track(state, &parts, task_id, targets, spec);
            }
        }
    }
    Ok(forwarded(&answer, exchanged.upstream, Outcome::Bypass))
}

/// The task id at `id` in a write's answer (a string; some servers may send a number).
fn task_id(body: &[u8], id: crate::routes::Field) -> Option<Box<str>> {
    let answer: Value = serde_json::from_slice(body).ok()?;
    match field(&answer, id)? {
        Value::String(s) if !s.is_empty() => Some(s.as_str().into()),
        Value::Number(n) => Some(n.to_string().into()),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::routes::table::{SERVER_MEMORIZE, V1_MEMORIZE};

    #[test]
    fn task_ids_are_read_where_the_row_says() {
        let v1 = V1_MEMORIZE.task.unwrap().id;
        let body = br#"{"task_id":"78500061","status":"PENDING","message":"started"}"#;
        assert_eq!(task_id(body, v1).as_deref(), Some("78500061"));
        assert_eq!(task_id(b"{}", v1), None);
        assert_eq!(task_id(b"garbage", v1), None);
        assert_eq!(task_id(br#"{"task_id":""}"#, v1), None);
        let server = SERVER_MEMORIZE.task.unwrap().id;
        let body = br#"{"status":"success","result":{"task_id":"memorize-ab","status":"PENDING"}}"#;
        assert_eq!(task_id(body, server).as_deref(), Some("memorize-ab"));
        assert_eq!(task_id(body, v1), None);
    }
}
