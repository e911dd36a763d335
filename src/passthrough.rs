//! Everything that is not a cacheable read or a write: forwarded as is, bodies streamed both
//! ways without being buffered whole (the `api/v2/chat` SSE stream arrives event by event).
//!
//! The deadline bounds the wait for the response head; a streaming body may then take as long as
//! it takes. Task-status polls for memorize tasks the proxy forwarded are the one exception: their
//! small answer is buffered to see `SUCCESS`, which invalidates the task's scope once more
//! (`tasks.rs`).

use std::sync::Arc;

use bytes::Bytes;
use http::Request;
use http_body::Body;
use http_body_util::BodyExt;
use tokio::time::Instant;

use crate::body::BoxError;
use crate::error::ProxyError;
use crate::headers::CacheStatus;
use crate::metrics::{Outcome, RouteClassLabel};
use crate::proxy::{add_timing, forwarded, read_body, set_cache_status, Handled, Proxy};

/// Forwards a request, streaming both bodies.
pub async fn handle<B>(proxy: &Arc<Proxy>, request: Request<B>) -> Result<Handled, ProxyError>
where
    B: Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    let (parts, body) = request.into_parts();
    let body = body.map_err(Into::into).boxed_unsync();
    let request = proxy
        .upstream
        .request(&parts, body, false)
        .map_err(ProxyError::BadRequest)?;
    let started = Instant::now();
    let response = proxy.upstream.send(request).await;
    let upstream = started.elapsed();
    proxy
        .metrics
        .upstream(RouteClassLabel::Passthrough, upstream);
    let mut response = response?.map(|body| body.map_err(Into::into).boxed_unsync());
    set_cache_status(response.headers_mut(), CacheStatus::BYPASS);
    add_timing(response.headers_mut(), &[("upstream", upstream)]);
    Ok(Handled {
        response,
        outcome: Outcome::Miss,
        upstream: Some(upstream),
    })
}

/// `GET …/memorize/status/{task_id}`: watched when the proxy forwarded that memorize.
pub async fn task_status<B>(
    proxy: &Arc<Proxy>,
    task_id: &str,
    request: Request<B>,
) -> Result<Handled, ProxyError>
where
    B: Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    if !proxy.tasks.contains_key(task_id) {
        return handle(proxy, request).await;
    }
    let (parts, body) = request.into_parts();
    let body = read_body(body, proxy.max_body_bytes).await?;
    let (result, upstream) = proxy
        .forward_buffered(&parts, body, RouteClassLabel::Status, proxy.deadline())
        .await;
    let answer = result?;
    if answer.status.is_success() {
        crate::tasks::observe(proxy, task_id, &answer.body);
    }
    Ok(forwarded(&answer, upstream, Outcome::Miss))
}
