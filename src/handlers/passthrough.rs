//! Everything that is not a cacheable read or a write: forwarded as is, bodies streamed both
//! ways without being buffered whole (the `api/v2/chat` SSE stream arrives event by event).
//!
//! The deadline bounds the wait for the response head; a streaming body may then take as long as
//! it takes. Task-status polls for memorize tasks the proxy forwarded are the one exception: their
//! small answer is buffered to see `SUCCESS`, which invalidates the task's scope once more
//! (`tasks.rs`).

use std::sync::Arc;

use http::Request;
use http_body_util::BodyExt;
use tokio::time::Instant;

use crate::body::ProxyBody;
use crate::error::ProxyError;
use crate::exchange::{deadline, forward_buffered, read_body};
use crate::outcome::{Handled, Outcome, RouteClassLabel};
use crate::respond::{forwarded, streamed};
use crate::state::State;
use crate::tasks;
use crate::upstream::Encoding;

/// Forwards a request, streaming both bodies.
pub async fn handle(state: &State, request: Request<ProxyBody>) -> Result<Handled, ProxyError> {
    let (parts, body) = request.into_parts();
    let request = state
        .upstream
        .request(&parts, body, Encoding::AsSent)
        .map_err(ProxyError::BadRequest)?;
    let started = Instant::now();
    let response = state.upstream.send(request).await;
    let upstream = started.elapsed();
    state
        .metrics
        .upstream(RouteClassLabel::PassThrough, upstream);
    let response = response?.map(|body| body.map_err(Into::into).boxed_unsync());
    Ok(streamed(response, upstream, Outcome::Bypass))
}

/// `GET …/memorize/status/{task_id}`: watched when the proxy forwarded that memorize.
pub async fn task_status(
    state: &Arc<State>,
    task_id: &str,
    request: Request<ProxyBody>,
) -> Result<Handled, ProxyError> {
    if !state.tasks.contains_key(task_id) {
        return handle(state, request).await;
    }
    let (parts, body) = request.into_parts();
    let body = read_body(body, state.max_body_bytes, deadline(state)).await?;
    let exchanged = forward_buffered(
        state,
        &parts,
        body,
        RouteClassLabel::Status,
        deadline(state),
    )
    .await;
    let answer = exchanged.result?;
    if answer.status.is_success() {
        tasks::observe(state, task_id, &answer.body, &parts);
    }
    Ok(forwarded(&answer, exchanged.upstream, Outcome::Bypass))
}
