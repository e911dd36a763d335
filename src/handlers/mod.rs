//! Per-request dispatch: box the body once, classify the request, call one handler, and turn
//! its error, if any, into the response, in this one place.
//!
//! | handler | requests |
//! |---|---|
//! | [`admin`] | `GET /metrics`, `GET /healthz` (and the admin-only listener) |
//! | [`prewarm`] | `POST /prewarm` |
//! | [`read`] | cacheable retrievals |
//! | [`write`](mod@write) | memorize, delete |
//! | [`passthrough`] | task-status polls and everything else |
//!
//! Handlers take a `Request<ProxyBody>` and return a [`Handled`] or a [`ProxyError`]; dispatch
//! attaches the [`RequestInfo`] the outer layer (`stack/mod.rs`) logs and counts. Handlers import
//! only downward (fetch, exchange, respond, tasks, state, and the leaves below them), never from
//! each other or from this file.

pub mod admin;
pub mod passthrough;
pub mod prewarm;
pub mod read;
pub mod write;

use std::sync::Arc;

use bytes::Bytes;
use http::{Method, Request, Response};
use http_body::Body;
use http_body_util::BodyExt;
use tokio::time::Instant;

use crate::body::{BoxError, ProxyBody};
use crate::error::ProxyError;
use crate::headers::CacheStatus;
use crate::outcome::{Arrived, Handled, Outcome, RequestInfo, RouteClassLabel};
use crate::respond::set_cache_status;
use crate::routes::{classify, RequestPath, RouteClass};
use crate::state::State;

/// Handles one request on the main listener; never fails (errors become responses here). Only
/// `stack/mod.rs` calls it, inside the body-size limit the handlers rely on.
pub(crate) async fn dispatch<B>(state: Arc<State>, request: Request<B>) -> Response<ProxyBody>
where
    B: Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    let request = request.map(|body| body.map_err(Into::into).boxed_unsync());
    let arrived = request
        .extensions()
        .get::<Arrived>()
        .map(|arrived| arrived.0);
    let method = request.method().clone();
    let path = request.uri().path().to_owned();
    let route_path = RequestPath::new(&path);
    let route = classify(&method, &route_path);
    let label = route.label();
    let result = match route {
        RouteClass::Admin => Ok(admin::serve(&state, &path)),
        // Every handler but the read's is boxed: the read's future, the one a cache hit runs, is
        // then the largest, and the other handlers' do not make every request's bigger.
        RouteClass::Prewarm => Box::pin(prewarm::handle(&state, request)).await,
        RouteClass::Read(route) => read::handle(&state, route, request).await,
        RouteClass::Write(route) => Box::pin(write::handle(&state, route, request)).await,
        RouteClass::TaskStatus { task_id } => {
            let task_id: Box<str> = task_id.into();
            Box::pin(passthrough::task_status(&state, &task_id, request)).await
        }
        RouteClass::PassThrough => Box::pin(passthrough::handle(&state, request)).await,
    };
    finish(label, (method, path, arrived), result)
}

/// Handles one request on the admin-only listener: admin paths, 404 for everything else.
pub(crate) async fn dispatch_admin<B>(
    state: Arc<State>,
    request: Request<B>,
) -> Response<ProxyBody> {
    let method = request.method().clone();
    let path = request.uri().path().to_owned();
    let result = if classify(&method, &RequestPath::new(&path)) == RouteClass::Admin {
        Ok(admin::serve(&state, &path))
    } else {
        Err(ProxyError::NotFound)
    };
    finish(RouteClassLabel::Admin, (method, path, None), result)
}

/// The response for a handler's result, with the [`RequestInfo`] attached.
pub(crate) fn finish(
    route_class: RouteClassLabel,
    (method, path, arrived): (Method, String, Option<Instant>),
    result: Result<Handled, ProxyError>,
) -> Response<ProxyBody> {
    let Handled {
        mut response,
        outcome,
        upstream,
        detail,
    } = result.unwrap_or_else(|error| {
        tracing::debug!(%error, "proxy error response");
        let mut response = error.into_response();
        set_cache_status(response.headers_mut(), CacheStatus::BYPASS);
        Handled {
            response,
            outcome: Outcome::Error,
            upstream: None,
            detail: None,
        }
    });
    response.extensions_mut().insert(RequestInfo {
        route_class,
        outcome,
        upstream,
        detail,
        method,
        path,
        arrived,
    });
    response
}
