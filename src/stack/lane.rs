//! The hit lane: an exact repeat of a cached retrieval, answered in front of the layers.
//!
//! Most of what a sidecar is asked is a retrieval it has answered before: the turn after its
//! prewarm, a retried turn, the same question again. On such a hit every layer under `finish`
//! passes the request through untouched (the body limit, the sensitive-header marks, the panic
//! guard) and the request id is only copied, yet each took its share of a hit's CPU
//! (`docs/benchmarks.md`, "CPU per hit"). So the lane looks at a request's head, and when the request can
//! only be a plain retrieval with a small body, reads that body and asks the cache
//! ([`read::fresh_hit`]). A fresh answer is sent from here, finished exactly as the layers finish
//! it: the same response ([`respond::hit`](crate::respond::hit)), the request id
//! ([`request_id`]), `Server-Timing`, `Cache-Status`, metrics and log line ([`conclude`]).
//! Everything else goes on to the layers, with the body the lane read, if it read one; so
//! every answer but a fresh hit is the layers' and the handlers' alone.
//!
//! A body that fails to arrive is answered as the read handler answers it ([`read_body`]'s
//! error), and a panic while looking up as the panic layer answers it. A request passed on after
//! its body was read carries its arrival ([`Arrived`]), from which the read handler's budget and
//! the outer layer's timing count, as they would had the layers read the body themselves.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Arc;

use bytes::Bytes;
use http::header::EXPECT;
use http::{Request, Response};
use http_body::Body;
use http_body_util::{Either, Full};
use tokio::time::Instant;
use tower::ServiceExt;

use super::{conclude, finish_response, panic_response, request_id, LaneBody, Layered};
use crate::body::{BoxError, ProxyBody};
use crate::cache::memo::MAX_MEMO_BODY_BYTES;
use crate::exchange::read_body;
use crate::handlers::{self, read};
use crate::headers::{client_cache, request_budget, ClientCache, REQUEST_ID};
use crate::outcome::{Arrived, Handled, RouteClassLabel, Summary};
use crate::routes::{classify, ReadRoute, RequestPath, RouteClass};
use crate::state::State;

/// Serves one request: from the lane if it is a fresh hit, else through `layers`.
pub(super) async fn serve<B>(
    state: Arc<State>,
    layers: Arc<Layered<B>>,
    request: Request<B>,
) -> Response<ProxyBody>
where
    B: Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError> + Send,
{
    let started = Instant::now();
    let Some(route) = candidate(&state, &request) else {
        return through(&layers, request.map(Either::Left)).await;
    };
    let (parts, body) = request.into_parts();
    let read = read_body(
        body,
        state.max_body_bytes,
        started + state.upstream.timeout(),
    )
    .await;
    let body = match read {
        Ok(body) => body,
        Err(error) => {
            let path = parts.uri.path().to_owned();
            let request = (parts.method, path, None);
            let response = handlers::finish(RouteClassLabel::Read, request, Err(error));
            return finished(response, &parts.headers, started, &state);
        }
    };
    let hit = catch_unwind(AssertUnwindSafe(|| {
        read::fresh_hit(&state, route, &parts, &body, started)
    }));
    let Handled {
        mut response,
        outcome,
        upstream,
        detail,
    } = match hit {
        Ok(Some(handled)) => handled,
        Ok(None) => {
            let mut request = Request::from_parts(parts, Either::Right(Full::new(body)));
            request.extensions_mut().insert(Arrived(started));
            return through(&layers, request).await;
        }
        Err(panic) => return finished(panic_response(panic), &parts.headers, started, &state),
    };
    with_request_id(&mut response, &parts.headers);
    let summary = Summary {
        route_class: RouteClassLabel::Read,
        outcome,
        upstream,
        detail,
        method: Some(&parts.method),
        path: Some(parts.uri.path()),
    };
    conclude(&mut response, &summary, started.elapsed(), &state.metrics);
    response
}

/// The route of a request the lane may answer, judged from its head alone: with the cache on and
/// its local entries trusted (`State::trusts_local_entries`), a retrieval the read handler would
/// look up in the cache before anything else (no `Cache-Control` of the client's, a valid
/// budget), with a body whose length is known, within the body limit and small enough to be
/// memoised (`cache/memo.rs`), and no `Expect` to answer first.
fn candidate<B: Body>(state: &State, request: &Request<B>) -> Option<ReadRoute> {
    if !state.cache_enabled || !state.trusts_local_entries() {
        return None;
    }
    let length = request.body().size_hint().exact()?;
    if length > MAX_MEMO_BODY_BYTES as u64 || length > state.max_body_bytes as u64 {
        return None;
    }
    let path = RequestPath::new(request.uri().path());
    let RouteClass::Read(route) = classify(request.method(), &path) else {
        return None;
    };
    let headers = request.headers();
    if headers.contains_key(EXPECT) || client_cache(headers) != ClientCache::Normal {
        return None;
    }
    request_budget(headers, state.budget, state.upstream.timeout()).ok()?;
    Some(route)
}

/// The request, through the layers.
async fn through<B>(layers: &Layered<B>, request: Request<LaneBody<B>>) -> Response<ProxyBody>
where
    B: Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError> + Send,
{
    let Ok(response) = layers.clone().oneshot(request).await;
    response
}

/// A response the lane made without a hit (a body that did not arrive, a panic), finished as
/// the layers finish it.
fn finished(
    mut response: Response<ProxyBody>,
    headers: &http::HeaderMap,
    started: Instant,
    state: &State,
) -> Response<ProxyBody> {
    with_request_id(&mut response, headers);
    finish_response(response, started, &state.metrics)
}

/// The request's id on its response, as `PropagateRequestIdLayer` puts it: an id already on the
/// response stays.
fn with_request_id(response: &mut Response<ProxyBody>, request_headers: &http::HeaderMap) {
    (response.headers_mut().entry(REQUEST_ID)).or_insert_with(|| request_id(request_headers));
}

#[cfg(test)]
mod tests;
