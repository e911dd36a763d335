//! The one place where the service stack's layer order is written down.
//!
//! Outermost first:
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
use http::{Request, Response};
use http_body::Body;
use http_body_util::BodyExt;
use hyper::body::Incoming;
use tokio::time::Instant;
use tower::util::BoxCloneService;
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
use crate::headers::CacheStatus;
use crate::linger::Lingering;
use crate::metrics::Metrics;
use crate::outcome::{Outcome, RequestInfo, RouteClassLabel};
use crate::respond::{add_timing, set_cache_status, HEADER_CACHE_STATUS};
use crate::state::State;

/// A stack over requests with bodies of type `B`, boxed so it can be named and cloned per
/// connection.
pub type Stack<B> = BoxCloneService<Request<B>, Response<ProxyBody>, Infallible>;

/// A listener's whole stack, as the server runs it: on hyper's bodies, wrapped for lingering close.
pub type HttpService = Stack<Lingering<Incoming>>;

/// The proxy's service for the main listener.
pub fn service<B>(state: Arc<State>) -> Stack<B>
where
    B: Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    let metrics = Arc::clone(&state.metrics);
    let limit = state.max_body_bytes;
    ServiceBuilder::new()
        .layer(BoxCloneService::layer())
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
    let mut response = future.await?;
    let total = started.elapsed();
    add_timing(response.headers_mut(), &[("proxy", total)]);
    if !response.headers().contains_key(HEADER_CACHE_STATUS) {
        set_cache_status(response.headers_mut(), CacheStatus::BYPASS);
    }
    let info = response.extensions_mut().remove::<RequestInfo>();
    let (route_class, outcome) = match &info {
        Some(info) => (info.route_class, info.outcome),
        None if response.status().is_client_error() || response.status().is_server_error() => {
            (RouteClassLabel::Unknown, Outcome::Error)
        }
        None => (RouteClassLabel::Unknown, Outcome::Miss),
    };
    metrics.request(route_class, outcome, total);
    let upstream_ms = info.as_ref().and_then(|i| i.upstream).map(tenths_of_ms);
    tracing::info!(
        method = info.as_ref().map(|i| i.method.as_str()),
        path = info.as_ref().map(|i| i.path.as_str()),
        route_class = route_class.as_label(),
        outcome = outcome.as_label(),
        detail = info.as_ref().and_then(|i| i.detail),
        status = response.status().as_u16(),
        upstream_ms,
        total_ms = tenths_of_ms(total),
        request_id = response
            .headers()
            .get(REQUEST_ID)
            .and_then(|v| v.to_str().ok()),
        "request"
    );
    Ok(response)
}

/// A new request id: a random (v4) UUID, as tower-http's `MakeRequestUuid` makes, written
/// straight into the header value instead of through a `String`.
#[derive(Debug, Clone, Copy)]
struct NewUuid;

impl MakeRequestId for NewUuid {
    fn make_request_id<B>(&mut self, _: &Request<B>) -> Option<RequestId> {
        let mut text = [0; uuid::fmt::Hyphenated::LENGTH];
        let text = uuid::Uuid::new_v4().hyphenated().encode_lower(&mut text);
        HeaderValue::from_str(text).ok().map(RequestId::new)
    }
}

/// The header carrying the request id: accepted from the client, else generated; returned in the
/// response and forwarded to memU.
const REQUEST_ID: header::HeaderName = header::HeaderName::from_static("x-request-id");

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

#[cfg(test)]
mod tests;
