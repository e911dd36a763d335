//! The one place where the service stack's layer order is written down.
//!
//! In front of it all, the hit lane (`lane.rs`): an exact repeat of a retrieval whose fresh
//! answer is cached is answered there, with what the layers below would have added to it (the
//! request id, `Server-Timing`, the metrics and the log line, by the same functions), and without
//! passing through them; every other request goes on to the layers, outermost first:
//! 1. `finish`: measures the whole request, appends `Server-Timing: proxy;dur=…`, makes sure
//!    `Cache-Status` is present, records the request metrics and writes the one log line.
//! 2. `SetRequestIdLayer` / `PropagateRequestIdLayer`: `x-request-id`, the client's or a new
//!    UUID, on the request (so memU sees it too), the response and the log line.
//! 3. `CatchPanicLayer`: a bug in a handler becomes a 500 `{"detail": …}`, not a dropped connection.
//! 4. `SetSensitiveRequestHeadersLayer`: `Authorization` is never printed by tracing.
//! 5. `RequestBodyLimitLayer`: bodies over `server.max_body_bytes` get 413 (at once when
//!    `Content-Length` says so, else when the limit is crossed), without contacting memU; its own
//!    `text/plain` answer is replaced by the proxy's JSON one. The server wraps every body for
//!    lingering close (`linger.rs`), so the client that sent it all first still reads the 413.
//! 6. Dispatch to one handler (`handlers/mod.rs`).
//!
//! The stack is generic over the request body: the server runs it on hyper's `Incoming`, the
//! tests in this file on in-memory bodies through `ServiceExt::oneshot`, without sockets.

use std::convert::Infallible;
use std::sync::Arc;

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{Method, Request, Response};
use http_body::Body;
use http_body_util::{BodyExt, Either, Full};
use hyper::body::Incoming;
use std::time::Duration;
use tokio::time::Instant;
use tower::util::{BoxCloneService, BoxCloneSyncService};
use tower::ServiceBuilder;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::limit::RequestBodyLimitLayer;
use tower_http::request_id::{
    MakeRequestId, PropagateRequestIdLayer, RequestId, SetRequestIdLayer,
};
use tower_http::sensitive_headers::SetSensitiveRequestHeadersLayer;

use crate::body::{full, BoxError, ProxyBody};
use crate::error::ProxyError;
use crate::handlers;
use crate::headers::{CacheStatus, REQUEST_ID};
use crate::linger::Lingering;
use crate::metrics::Metrics;
use crate::outcome::{RequestInfo, Summary};
use crate::respond::{add_timing, set_cache_status, HEADER_CACHE_STATUS};
use crate::state::State;

/// A stack over requests with bodies of type `B`, boxed so it can be named and cloned per
/// connection.
pub type Stack<B> = BoxCloneService<Request<B>, Response<ProxyBody>, Infallible>;

/// A listener's whole stack, as the server runs it: on hyper's bodies, wrapped for lingering close.
pub type HttpService = Stack<Lingering<Incoming>>;

/// The layers under the lane, on a request's own body or on the one the lane read (`lane.rs`);
/// shared by every request of every connection, so `Sync`.
type Layered<B> = BoxCloneSyncService<Request<LaneBody<B>>, Response<ProxyBody>, Infallible>;

/// A request body as the layers get it from the lane: untouched, or already read.
type LaneBody<B> = Either<B, Full<Bytes>>;

/// The proxy's service for the main listener: the hit lane, then the layers.
pub fn service<B>(state: Arc<State>) -> Stack<B>
where
    B: Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError> + Send,
{
    let layered = Arc::new(layers(Arc::clone(&state)));
    BoxCloneService::new(tower::service_fn(move |request| {
        let served = lane::serve(Arc::clone(&state), Arc::clone(&layered), request);
        async move { Ok::<_, Infallible>(served.await) }
    }))
}

/// The layers every request the lane does not answer goes through, on its own body or on the
/// one the lane already read.
fn layers<B>(state: Arc<State>) -> Layered<B>
where
    B: Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    let metrics = Arc::clone(&state.metrics);
    let limit = state.max_body_bytes;
    ServiceBuilder::new()
        .layer(BoxCloneSyncService::layer())
        .map_future(move |future| finish(future, Arc::clone(&metrics)))
        .map_response(box_body)
        .layer(SetRequestIdLayer::x_request_id(NewUuid))
        .layer(PropagateRequestIdLayer::x_request_id())
        .layer(CatchPanicLayer::custom(panic_response))
        .layer(SetSensitiveRequestHeadersLayer::new([
            header::AUTHORIZATION,
            header::PROXY_AUTHORIZATION,
        ]))
        .map_response(move |response| json_payload_too_large(response, limit))
        .layer(RequestBodyLimitLayer::new(limit))
        .service_fn(move |request| {
            // Boxed once, here: each layer above moves its inner future into its own, and they
            // then move a pointer instead of the whole handler's state.
            let dispatched = Box::pin(handlers::dispatch(Arc::clone(&state), request));
            async move { Ok::<_, Infallible>(dispatched.await) }
        })
}

/// The limit layer's own 413 (a `Content-Length` over the limit, answered before any handler:
/// no [`RequestInfo`], `text/plain`) becomes the proxy's JSON error, like every other.
fn json_payload_too_large<B>(response: Response<B>, limit: usize) -> Response<ProxyBody>
where
    B: Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    if response.status() == http::StatusCode::PAYLOAD_TOO_LARGE
        && response.extensions().get::<RequestInfo>().is_none()
    {
        return ProxyError::BodyTooLarge { limit }.into_response();
    }
    box_body(response)
}

/// The service of the admin-only listener.
pub fn admin_service<B: Send + 'static>(state: Arc<State>) -> Stack<B> {
    let metrics = Arc::clone(&state.metrics);
    ServiceBuilder::new()
        .layer(BoxCloneService::layer())
        .map_future(move |future| finish(future, Arc::clone(&metrics)))
        .layer(SetRequestIdLayer::x_request_id(NewUuid))
        .layer(PropagateRequestIdLayer::x_request_id())
        .service_fn(move |request| {
            let state = Arc::clone(&state);
            async move { Ok::<_, Infallible>(handlers::dispatch_admin(state, request).await) }
        })
}

/// Wraps one request's future: timing header, metrics and the log line.
async fn finish<F, B>(future: F, metrics: Arc<Metrics>) -> Result<Response<B>, Infallible>
where
    F: std::future::Future<Output = Result<Response<B>, Infallible>>,
{
    let started = Instant::now();
    let response = future.await?;
    Ok(finish_response(response, started, &metrics))
}

/// [`conclude`]s a response whose handler attached a [`RequestInfo`] (or none), taking it off.
fn finish_response<B>(
    mut response: Response<B>,
    started: Instant,
    metrics: &Metrics,
) -> Response<B> {
    let info = response.extensions_mut().remove::<RequestInfo>();
    // From the request's arrival when the hit lane read its body before the layers saw it.
    let arrived = info.as_ref().and_then(|info| info.arrived);
    let total = arrived
        .map_or(started, |arrived| arrived.min(started))
        .elapsed();
    let summary = info.as_ref().map_or_else(
        || Summary::unattributed(response.status()),
        RequestInfo::summary,
    );
    conclude(&mut response, &summary, total, metrics);
    response
}

/// What every response gets last: `Server-Timing: proxy;dur=…` (`total`), a `Cache-Status` if
/// it has none, the request metrics, and the one log line.
fn conclude<B>(
    response: &mut Response<B>,
    summary: &Summary<'_>,
    total: Duration,
    metrics: &Metrics,
) {
    add_timing(response.headers_mut(), &[("proxy", total)]);
    if !response.headers().contains_key(HEADER_CACHE_STATUS) {
        set_cache_status(response.headers_mut(), CacheStatus::BYPASS);
    }
    metrics.request(summary.route_class, summary.outcome, total);
    tracing::info!(
        method = summary.method.map(Method::as_str),
        path = summary.path,
        route_class = summary.route_class.as_label(),
        outcome = summary.outcome.as_label(),
        detail = summary.detail,
        status = response.status().as_u16(),
        upstream_ms = summary.upstream.map(tenths_of_ms),
        total_ms = tenths_of_ms(total),
        request_id = response
            .headers()
            .get(REQUEST_ID)
            .and_then(|v| v.to_str().ok()),
        "request"
    );
}

/// The request id of a request: the client's `x-request-id`, else a new one, as
/// `SetRequestIdLayer` with [`NewUuid`] decides it.
fn request_id(headers: &http::HeaderMap) -> HeaderValue {
    headers.get(REQUEST_ID).cloned().unwrap_or_else(new_uuid)
}

/// A new request id: a random (v4) UUID, as tower-http's `MakeRequestUuid` makes, written
/// straight into the header value instead of through a `String`.
#[derive(Debug, Clone, Copy)]
struct NewUuid;

impl MakeRequestId for NewUuid {
    fn make_request_id<B>(&mut self, _: &Request<B>) -> Option<RequestId> {
        Some(RequestId::new(new_uuid()))
    }
}

fn new_uuid() -> HeaderValue {
    let mut text = [0; uuid::fmt::Hyphenated::LENGTH];
    let text = uuid::Uuid::new_v4().hyphenated().encode_lower(&mut text);
    HeaderValue::from_str(text).expect("a hyphenated UUID is a valid header value")
}

/// Milliseconds rounded to a tenth, as the log line shows them (`48.6`, not `48.632070999999996`).
fn tenths_of_ms(duration: std::time::Duration) -> f64 {
    (duration.as_secs_f64() * 10_000.0).round() / 10.0
}

fn box_body<B>(response: Response<B>) -> Response<ProxyBody>
where
    B: Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    response.map(|body| body.map_err(Into::into).boxed_unsync())
}

fn panic_response(_: Box<dyn std::any::Any + Send + 'static>) -> Response<ProxyBody> {
    tracing::error!("handler panicked");
    let mut response = Response::new(full(r#"{"detail":"internal proxy error"}"#));
    *response.status_mut() = http::StatusCode::INTERNAL_SERVER_ERROR;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

mod lane;
#[cfg(test)]
mod tests;
