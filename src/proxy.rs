//! The proxy's state and its per-request dispatch.
//!
//! A request is classified by route (`routes.rs`) and handed to one of four handlers:
//! [`crate::read`] (cacheable retrievals), [`crate::write`] (memorize/delete),
//! [`crate::passthrough`] (task status and everything else), or [`crate::admin`]. Handlers return
//! a [`Handled`] or a [`ProxyError`]; this module turns both into the response, in one place, and
//! attaches the [`RequestInfo`] the outer layer logs and counts.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{HeaderMap, Method, Request, Response, StatusCode};
use http_body::Body;
use http_body_util::BodyExt;
use quick_cache::sync::Cache as BoundedMap;

use crate::body::{full, is_length_limit, BoxError, ProxyBody};
use crate::cache::inflight::Inflight;
use crate::cache::similar::SimilarIndex;
use crate::cache::{CacheKey, Generations, Invalidate, Lifetimes, Scope, Scopes, Store};
use crate::circuit::Circuit;
use crate::config::Config;
use crate::error::ProxyError;
use crate::headers::{server_timing, CacheStatus};
use crate::metrics::{InvalidationCause, Metrics, Outcome, RouteClassLabel, Snapshot};
use crate::read::Fetched;
use crate::routes::{classify, RouteClass};
use crate::upstream::{Buffered, Upstream, UpstreamError};

/// A coalesced fetch is identified by the key and the generations it was started under, so a
/// request arriving after a write never joins a fetch that began before it.
pub type InflightKey = (CacheKey, Generations);

/// Everything the handlers share.
pub struct Proxy {
    pub(crate) upstream: Upstream,
    pub(crate) store: Store,
    pub(crate) scopes: Scopes,
    pub(crate) inflight: Arc<Inflight<InflightKey, Arc<Fetched>>>,
    /// memorize task id → the scope to invalidate again when the task reports `SUCCESS`.
    pub(crate) tasks: BoundedMap<Box<str>, (Scope, Invalidate)>,
    /// Bounds the background polls of memorize tasks (`tasks.rs`).
    pub(crate) task_pollers: Arc<tokio::sync::Semaphore>,
    pub(crate) metrics: Arc<Metrics>,
    pub(crate) cache_enabled: bool,
    pub(crate) max_body_bytes: usize,
    pub(crate) fill_null_timestamps: bool,
    /// The configured latency budget for retrievals (`None`: off).
    pub(crate) budget: Option<std::time::Duration>,
    /// Bounds the upstream fetches running at once (`latency.max_background_fetches`).
    pub(crate) fetch_permits: Arc<tokio::sync::Semaphore>,
    /// Permits background fetches (refreshes, prewarms) leave for waiting clients: a quarter.
    pub(crate) background_reserve: usize,
    pub(crate) circuit: Arc<Circuit>,
    /// Near-duplicate lookups and their threshold, when `cache.similarity_threshold` > 0.
    pub(crate) similar: Option<(SimilarIndex, f64)>,
}

/// What a handler produced, before the common finishing.
pub struct Handled {
    pub response: Response<ProxyBody>,
    pub outcome: Outcome,
    pub upstream: Option<Duration>,
}

/// Attached to every response for the outer logging/metrics layer.
#[derive(Debug, Clone)]
pub struct RequestInfo {
    pub route_class: RouteClassLabel,
    pub outcome: Outcome,
    pub upstream: Option<Duration>,
    pub method: Method,
    pub path: String,
}

impl Proxy {
    pub fn new(config: &Config, metrics: Arc<Metrics>) -> Self {
        let circuit = Arc::new(Circuit::new(&config.circuit));
        let lifetimes = Lifetimes {
            ttl: config.cache.ttl,
            stale_while_revalidate: config.cache.stale_while_revalidate,
            stale_if_error: config.cache.stale_if_error,
        };
        Self {
            upstream: Upstream::new(&config.upstream, Arc::clone(&circuit)),
            store: Store::new(config.cache.max_bytes, lifetimes),
            scopes: Scopes::new(config.cache.max_scopes),
            inflight: Arc::default(),
            tasks: BoundedMap::new(config.cache.max_tracked_tasks),
            task_pollers: Arc::new(tokio::sync::Semaphore::new(crate::tasks::MAX_POLLERS)),
            metrics,
            cache_enabled: config.cache.enabled,
            max_body_bytes: config.max_body_bytes,
            fill_null_timestamps: config.compat.fill_null_timestamps,
            budget: config.latency.budget,
            fetch_permits: Arc::new(tokio::sync::Semaphore::new(
                config.latency.max_background_fetches,
            )),
            background_reserve: config.latency.max_background_fetches / 4,
            circuit,
            similar: (config.cache.similarity_threshold > 0.0).then(|| {
                // One bucket per stored query at most: bounded like the store itself.
                let buckets = usize::try_from(config.cache.max_bytes / 1024).unwrap_or(usize::MAX);
                (
                    SimilarIndex::new(buckets),
                    config.cache.similarity_threshold,
                )
            }),
        }
    }

    /// Handles one client request; never fails (errors become responses here).
    pub async fn handle<B>(self: &Arc<Self>, request: Request<B>) -> Response<ProxyBody>
    where
        B: Body<Data = Bytes> + Send + 'static,
        B::Error: Into<BoxError>,
    {
        let method = request.method().clone();
        let path = request.uri().path().to_owned();
        let (route_class, result) = match classify(&method, &path) {
            _ if crate::admin::is_admin_path(&method, &path) => {
                (RouteClassLabel::Admin, Ok(crate::admin::serve(self, &path)))
            }
            _ if crate::prewarm::is_prewarm(&method, &path) => (
                RouteClassLabel::Admin,
                crate::prewarm::handle(self, request).await,
            ),
            RouteClass::Read(route) => (
                RouteClassLabel::Read,
                crate::read::handle(self, route, request).await,
            ),
            RouteClass::Write(route) => (
                RouteClassLabel::Write,
                crate::write::handle(self, route, request).await,
            ),
            RouteClass::TaskStatus { task_id } => {
                let task_id: Box<str> = task_id.into();
                (
                    RouteClassLabel::Status,
                    crate::passthrough::task_status(self, &task_id, request).await,
                )
            }
            RouteClass::PassThrough => (
                RouteClassLabel::Passthrough,
                crate::passthrough::handle(self, request).await,
            ),
        };
        let handled = result.unwrap_or_else(|error| {
            tracing::debug!(%error, "proxy error response");
            let mut response = error.into_response();
            set_cache_status(response.headers_mut(), CacheStatus::BYPASS);
            Handled {
                response,
                outcome: Outcome::Error,
                upstream: None,
            }
        });
        let Handled {
            mut response,
            outcome,
            upstream,
        } = handled;
        response.extensions_mut().insert(RequestInfo {
            route_class,
            outcome,
            upstream,
            method,
            path,
        });
        response
    }

    /// Bumps the generations a write to `scope` invalidates, and counts it.
    pub(crate) fn invalidate(&self, scope: &Scope, what: Invalidate, cause: InvalidationCause) {
        self.scopes.invalidate(scope, what);
        self.metrics.invalidation(cause);
    }

    /// Forwards a request whose body the proxy has read, and reads the whole answer, within
    /// `deadline` (at most the hard timeout); the exchange is timed into the metrics.
    pub(crate) async fn forward_buffered(
        &self,
        parts: &http::request::Parts,
        body: Bytes,
        class: RouteClassLabel,
        deadline: tokio::time::Instant,
    ) -> (Result<Buffered, UpstreamError>, Duration) {
        // The proxy reads these answers (to cache, or to find a task id or state): ask for them
        // unencoded.
        let identity = true;
        let request = match self.upstream.request(parts, full(body), identity) {
            Ok(request) => request,
            Err(e) => return (Err(UpstreamError::Exchange(Box::new(e))), Duration::ZERO),
        };
        let started = tokio::time::Instant::now();
        let result = self.upstream.exchange(request, deadline).await;
        let upstream = started.elapsed();
        if !matches!(result, Err(UpstreamError::CircuitOpen(_))) {
            self.metrics.upstream(class, upstream);
        }
        (result, upstream)
    }

    /// The hard deadline of an exchange starting now.
    pub(crate) fn deadline(&self) -> tokio::time::Instant {
        tokio::time::Instant::now() + self.upstream.timeout()
    }

    /// Current values for the scrape-time gauges.
    pub(crate) fn snapshot(&self) -> Snapshot {
        Snapshot {
            cache_entries: self.store.len(),
            cache_bytes: self.store.weight(),
            cache_evictions: self.store.evictions(),
            scopes: self.scopes.len(),
            inflight: self.inflight.len(),
            circuit_state: self.circuit.state().gauge(),
            circuit: self.circuit.stats(),
        }
    }
}

/// Reads a whole request body; the size limit itself is enforced by `RequestBodyLimitLayer`.
pub(crate) async fn read_body<B>(body: B, limit: usize) -> Result<Bytes, ProxyError>
where
    B: Body<Data = Bytes>,
    B::Error: Into<BoxError>,
{
    match http_body_util::Limited::new(body, limit).collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(error) if is_length_limit(error.as_ref()) => Err(ProxyError::BodyTooLarge { limit }),
        Err(error) => Err(ProxyError::BodyRead(error)),
    }
}

/// memU's answer passed on unchanged, outside the cache (`Cache-Status: fwd=bypass`).
pub(crate) fn forwarded(answer: &Buffered, upstream: Duration, outcome: Outcome) -> Handled {
    let mut response = buffered_response(answer);
    set_cache_status(response.headers_mut(), CacheStatus::BYPASS);
    add_timing(response.headers_mut(), &[("upstream", upstream)]);
    Handled {
        response,
        outcome,
        upstream: Some(upstream),
    }
}

/// A response carrying a buffered upstream answer unchanged.
pub(crate) fn buffered_response(answer: &Buffered) -> Response<ProxyBody> {
    let mut response = Response::new(full(answer.body.clone()));
    *response.status_mut() = answer.status;
    *response.headers_mut() = answer.headers.clone();
    response
}

/// A 200 JSON response the proxy composed itself.
pub(crate) fn json_response(body: Bytes) -> Response<ProxyBody> {
    let mut response = Response::new(full(body));
    *response.status_mut() = StatusCode::OK;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

/// Adds the proxy's `Cache-Status` entry after any from caches closer to memU (RFC 9211).
pub(crate) fn set_cache_status(headers: &mut HeaderMap, status: CacheStatus) {
    headers.append(HEADER_CACHE_STATUS, status.header_value());
}

/// Appends a `Server-Timing` entry, keeping any the upstream sent.
pub(crate) fn add_timing(headers: &mut HeaderMap, metrics: &[(&str, Duration)]) {
    headers.append(HEADER_SERVER_TIMING, server_timing(metrics));
}

pub(crate) const HEADER_CACHE_STATUS: header::HeaderName =
    header::HeaderName::from_static("cache-status");
pub(crate) const HEADER_SERVER_TIMING: header::HeaderName =
    header::HeaderName::from_static("server-timing");
