//! Invalidating writes (memorize, delete, commit, clear, for every generation): forwarded once,
//! never faked, and invalidating what the route's row says they change, as the row's
//! [`WriteKind`] says: a memorize supersedes the reads it touches, a delete, clear or commit
//! purges them (nothing cached before it is served again, not even as a stale stand-in).
//!
//! The body is buffered (it is small and bounded) to read the scope it writes. The scopes are
//! invalidated *before* forwarding, so no read started after the write was sent is served from an
//! older answer, and again once memU has answered (unless it refused the write: 4xx, or never
//! sent), so a read fetched while memU was applying the write is not admitted as fresh. A write
//! whose outcome is unknown (5xx, timed out, or the exchange broke after it was sent) is
//! invalidated once more a write deadline later, in case memU applies it then. A purge, once
//! made, stays whatever memU answers. An asynchronous write's task id (where its row says) is
//! remembered, so a later status poll reporting success invalidates once more (`tasks.rs`).
//!
//! Once the write is sent, its exchange and follow-up run in a task of their own: a client that
//! disconnects (hyper then drops this handler) does not cancel what memU applies anyway.
//! Failures are reported honestly: 504 on the deadline, 502 when memU is unreachable. Writes have
//! their own, longer deadline (`upstream.write_timeout_ms`): the SDK retries a memorize answered
//! 504, so cutting one short while memU is still applying it would store it twice.

use std::sync::Arc;

use bytes::Bytes;
use http::{request, Request};
use serde_json::Value;

use crate::body::ProxyBody;
use crate::cache::{request_tenant, write_targets, Invalidate, Reading, Scope};
use crate::error::ProxyError;
use crate::exchange::{forward_buffered, read_body, write_deadline, Exchanged};
use crate::metrics::{InvalidationCause, Unscoped};
use crate::mirror::Rewarm;
use crate::outcome::{Handled, Outcome, RouteClassLabel};
use crate::respond::forwarded;
use crate::routes::{field, WriteKind, WriteRoute};
use crate::state::State;
use crate::tasks;
use crate::upstream::UpstreamError;

/// The scopes one write invalidates.
type Targets = Arc<[(Scope, Invalidate)]>;

/// Handles one memorize, delete, commit or clear.
pub async fn handle(
    state: &Arc<State>,
    route: WriteRoute,
    request: Request<ProxyBody>,
) -> Result<Handled, ProxyError> {
    let (parts, body) = request.into_parts();
    let body = read_body(body, state.max_body_bytes, write_deadline(state)).await?;
    let (targets, reading) = write_targets(route, request_tenant(&parts.headers), &body);
    match reading {
        Reading::Named => {}
        Reading::Users => state.metrics.unscoped_write(Unscoped::Users),
        Reading::Everything => state.metrics.unscoped_write(Unscoped::Everything),
    }
    let targets: Targets = targets.into();
    state
        .invalidate_all(&targets, route.kind, InvalidationCause::Write)
        .await;

    let exchange = tokio::spawn(exchange(Arc::clone(state), route, parts, body, targets));
    let exchanged = match exchange.await {
        Ok(exchanged) => exchanged,
        // Re-raised here, where the stack's panic layer answers it.
        Err(join) => std::panic::resume_unwind(join.into_panic()),
    };
    let answer = exchanged.result?;
    Ok(forwarded(&answer, exchanged.upstream, Outcome::Bypass))
}

/// The write's exchange with memU and what follows it, in a task that outlives the client.
async fn exchange(
    state: Arc<State>,
    route: WriteRoute,
    parts: request::Parts,
    body: Bytes,
    targets: Targets,
) -> Exchanged {
    let deadline = write_deadline(&state);
    let exchanged = forward_buffered(&state, &parts, body, RouteClassLabel::Write, deadline).await;
    let applied = applied(&exchanged.result);
    if applied != Applied::No {
        state
            .invalidate_all(&targets, route.kind, InvalidationCause::Write)
            .await;
    }
    if applied == Applied::Unknown {
        invalidate_later(&state, Arc::clone(&targets), route.kind);
    }
    if let (Ok(answer), Some(spec)) = (&exchanged.result, route.task) {
        if answer.status.is_success() {
            if let Some(task_id) = task_id(&answer.body, spec.id) {
                let rewarm =
                    (state.mirror.as_ref()).and_then(|_| Rewarm::after(route, parts.uri.path()));
                tasks::track(&state, &parts, task_id, targets, route.kind, spec, rewarm);
            }
        }
    }
    exchanged
}

/// Whether memU applied a write, as far as its answer tells.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Applied {
    /// A 2xx.
    Yes,
    /// Not sent (unreachable, refused, circuit open), or rejected with a 4xx.
    No,
    /// Answered 5xx, or sent with no answer: memU may have applied it, or may still.
    Unknown,
}

fn applied(result: &Result<crate::upstream::Buffered, UpstreamError>) -> Applied {
    match result {
        Ok(answer) if answer.status.is_success() => Applied::Yes,
        Ok(answer) if answer.status.is_server_error() => Applied::Unknown,
        Ok(_) => Applied::No,
        Err(
            UpstreamError::Timeout(_) | UpstreamError::Exchange(_) | UpstreamError::TooLarge(_),
        ) => Applied::Unknown,
        Err(
            UpstreamError::Connect(_)
            | UpstreamError::Tls(_)
            | UpstreamError::RequestTooLarge
            | UpstreamError::CircuitOpen(_)
            | UpstreamError::ClientBody(_)
            | UpstreamError::SlowUpload(_),
        ) => Applied::No,
    }
}

/// Invalidates a write whose outcome is unknown once more, a write deadline from now: memU may
/// still apply it after the proxy gave up on its answer.
fn invalidate_later(state: &Arc<State>, targets: Targets, kind: WriteKind) {
    let state = Arc::clone(state);
    tokio::spawn(async move {
        tokio::time::sleep_until(write_deadline(&state)).await;
        state
            .invalidate_all(&targets, kind, InvalidationCause::Write)
            .await;
    });
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
