//! Invalidating writes (memorize, delete): forwarded, never faked, and invalidating.
//!
//! The body is buffered (it is small and bounded) to read the (tenant, user, agent) it writes.
//! The scope is invalidated *before* forwarding, so no read started after the write was sent is
//! served from an older answer, and again after a successful answer, so a read fetched while
//! memU was applying the write is not admitted as fresh. A memorize's `task_id` is remembered, so
//! a later `SUCCESS` status poll invalidates once more (memU applies memorize asynchronously).
//! Failures are reported honestly: 504 on the deadline, 502 when memU is unreachable. Writes have
//! their own, longer deadline (`upstream.write_timeout_ms`): the SDK retries a memorize answered
//! 504, so cutting one short while memU is still applying it would store it twice.

use std::sync::Arc;

use http::Request;
use serde::Deserialize;

use crate::body::ProxyBody;
use crate::cache::{request_tenant, write_scope, Invalidate, Scope};
use crate::error::ProxyError;
use crate::exchange::{forward_buffered, read_body, write_deadline};
use crate::metrics::InvalidationCause;
use crate::outcome::{Handled, Outcome, RouteClassLabel};
use crate::respond::forwarded;
use crate::routes::WriteRoute;
use crate::state::State;
use crate::tasks;

/// Handles one memorize or delete.
pub async fn handle(
    state: &Arc<State>,
    route: WriteRoute,
    request: Request<ProxyBody>,
) -> Result<Handled, ProxyError> {
    let (parts, body) = request.into_parts();
    let body = read_body(body, state.max_body_bytes).await?;
    let tenant = request_tenant(&parts.headers);
    let target = write_scope(tenant, &body).map(|scope| {
        let what = invalidation_for(route, &scope);
        (scope, what)
    });
    if let Some((scope, what)) = &target {
        state.invalidate(scope, *what, InvalidationCause::Write);
    }

    let deadline = write_deadline(state);
    let exchanged = forward_buffered(state, &parts, body, RouteClassLabel::Write, deadline).await;
    let answer = exchanged.result?;

    if let (true, Some((scope, what))) = (answer.status.is_success(), target) {
        state.invalidate(&scope, what, InvalidationCause::Write);
        if route == WriteRoute::Memorize {
            if let Some(task_id) = task_id(&answer.body) {
                tasks::track(state, &parts, task_id, scope, what);
            }
        }
    }
    Ok(forwarded(&answer, exchanged.upstream, Outcome::Miss))
}

/// A delete with `agent_id: null` covers all of the user's agents; anything else covers the
/// agent and the user's agent-less reads.
fn invalidation_for(route: WriteRoute, scope: &Scope) -> Invalidate {
    match (route, &scope.agent) {
        (WriteRoute::Delete, None) => Invalidate::AllAgents,
        _ => Invalidate::Agent,
    }
}

/// The `task_id` of a memorize answer.
fn task_id(body: &[u8]) -> Option<Box<str>> {
    #[derive(Deserialize)]
    struct Started {
        task_id: String,
    }
    serde_json::from_slice::<Started>(body)
        .ok()
        .map(|s| s.task_id.into_boxed_str())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn invalidation_scope_per_write() {
        let scope = |agent: Option<&str>| Scope {
            tenant: None,
            user: "u".into(),
            agent: agent.map(Into::into),
        };
        assert_eq!(
            invalidation_for(WriteRoute::Delete, &scope(None)),
            Invalidate::AllAgents
        );
        assert_eq!(
            invalidation_for(WriteRoute::Delete, &scope(Some("a"))),
            Invalidate::Agent
        );
        assert_eq!(
            invalidation_for(WriteRoute::Memorize, &scope(Some("a"))),
            Invalidate::Agent
        );
    }

    #[test]
    fn task_ids_are_read_from_memorize_answers() {
        let body = br#"{"task_id":"78500061","status":"PENDING","message":"started"}"#;
        assert_eq!(task_id(body).as_deref(), Some("78500061"));
        assert_eq!(task_id(b"{}"), None);
        assert_eq!(task_id(b"garbage"), None);
    }
}
