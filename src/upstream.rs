//! Forwarding to memU: URI rewrite, header hygiene, the pooled client, and the deadline.
//!
//! Two ways to call memU: [`Upstream::exchange`] buffers the whole answer and bounds the *whole*
//! exchange (connect, headers, body) by the caller's deadline; it is used where the proxy must
//! read the answer (cacheable reads, writes, watched task polls). [`Upstream::send`] bounds only
//! the wait for the response head and streams the body through, for everything else (an SSE chat
//! stream legitimately outlives any deadline). Two deadlines: `upstream.timeout_ms` for reads,
//! polls and pass-through, the longer `upstream.write_timeout_ms` for writes. Neither call
//! retries: a retried write could be duplicated.

use std::time::Duration;

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderValue};
use http::uri::{Authority, PathAndQuery, Scheme};
use http::{request, Request, Response, StatusCode, Uri};
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use tokio::time::Instant;

use std::sync::Arc;

use crate::body::{is_length_limit, BoxError, ProxyBody};
use crate::circuit::{Circuit, Ticket};
use crate::config::UpstreamConfig;
use crate::headers::{strip_hop_by_hop, BUDGET_HEADER};

/// Why an upstream exchange produced no usable response.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    #[error("memU did not answer within {} ms", .0.as_millis())]
    Timeout(Duration),
    #[error("memU is unreachable: {0}")]
    Connect(#[source] hyper_util::client::legacy::Error),
    #[error("the exchange with memU failed: {0}")]
    Exchange(#[source] BoxError),
    #[error("memU's response exceeds {0} bytes")]
    TooLarge(usize),
    #[error("request body exceeds the size limit")]
    RequestTooLarge,
    #[error("memU is failing: circuit open, not retried for {} ms", .0.as_millis())]
    CircuitOpen(Duration),
}

impl UpstreamError {
    /// Whether this error says something about memU's health (for the circuit breaker).
    fn is_upstream_failure(&self) -> bool {
        match self {
            UpstreamError::Timeout(_) | UpstreamError::Connect(_) | UpstreamError::Exchange(_) => {
                true
            }
            UpstreamError::TooLarge(_)
            | UpstreamError::RequestTooLarge
            | UpstreamError::CircuitOpen(_) => false,
        }
    }
}

/// Which content encoding to ask memU for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encoding {
    /// Whatever the client asked for (`Accept-Encoding` forwarded as sent): pass-through.
    AsSent,
    /// Unencoded: the proxy reads the answer (to cache it, or to find a task id or state), and
    /// one client's gzip body must never be stored for another.
    Identity,
}

/// A complete upstream answer.
#[derive(Debug, Clone, PartialEq)]
pub struct Buffered {
    pub status: StatusCode,
    /// End-to-end headers (hop-by-hop ones removed).
    pub headers: HeaderMap,
    pub body: Bytes,
}

/// The pooled client for one memU base URL.
#[derive(Clone)]
pub struct Upstream {
    client: Client<HttpConnector, ProxyBody>,
    scheme: Scheme,
    authority: Authority,
    host: HeaderValue,
    base_path: String,
    timeout: Duration,
    write_timeout: Duration,
    max_response_bytes: usize,
    circuit: Arc<Circuit>,
}

impl Upstream {
    pub fn new(config: &UpstreamConfig, circuit: Arc<Circuit>) -> Self {
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        connector.set_connect_timeout(Some(config.timeout));
        let client = Client::builder(TokioExecutor::new())
            .timer(TokioTimer::new())
            .pool_timer(TokioTimer::new())
            .pool_idle_timeout(config.pool_idle_timeout)
            .pool_max_idle_per_host(config.pool_max_idle)
            .build(connector);
        let host = HeaderValue::from_str(config.authority.as_str())
            .unwrap_or_else(|_| HeaderValue::from_static("localhost"));
        Self {
            client,
            scheme: config.scheme.clone(),
            authority: config.authority.clone(),
            host,
            base_path: config.base_path.clone(),
            timeout: config.timeout,
            write_timeout: config.write_timeout,
            max_response_bytes: config.max_response_bytes,
            circuit,
        }
    }

    /// The circuit breaker every exchange passes.
    pub fn circuit(&self) -> &Circuit {
        &self.circuit
    }

    /// The hard deadline of one read, task-status poll or pass-through exchange.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// The hard deadline of one write: longer, because a write cut short while memU is still
    /// applying it is retried by the client and applied twice.
    pub fn write_timeout(&self) -> Duration {
        self.write_timeout
    }

    /// Builds the upstream request for a client request: same method, path (under the base path),
    /// query, headers (hop-by-hop removed, `Host` set to memU's) and body, asking for `encoding`.
    pub fn request(
        &self,
        parts: &request::Parts,
        body: ProxyBody,
        encoding: Encoding,
    ) -> Result<Request<ProxyBody>, http::Error> {
        let path_and_query = parts.uri.path_and_query().map_or("/", PathAndQuery::as_str);
        let uri = Uri::builder()
            .scheme(self.scheme.clone())
            .authority(self.authority.clone())
            .path_and_query(format!("{}{}", self.base_path, path_and_query))
            .build()?;
        let mut headers = parts.headers.clone();
        strip_hop_by_hop(&mut headers);
        headers.remove(BUDGET_HEADER);
        headers.insert(header::HOST, self.host.clone());
        if encoding == Encoding::Identity {
            headers.insert(
                header::ACCEPT_ENCODING,
                HeaderValue::from_static("identity"),
            );
        }
        let mut request = Request::builder()
            .method(parts.method.clone())
            .uri(uri)
            .body(body)?;
        *request.headers_mut() = headers;
        Ok(request)
    }

    /// Sends `request` and waits for the response head within the deadline; the body streams.
    pub async fn send(
        &self,
        request: Request<ProxyBody>,
    ) -> Result<Response<Incoming>, UpstreamError> {
        let ticket = self
            .circuit
            .try_pass()
            .map_err(UpstreamError::CircuitOpen)?;
        let result = tokio::time::timeout(self.timeout, self.client.request(request))
            .await
            .map_err(|_| UpstreamError::Timeout(self.timeout))
            .and_then(|response| response.map_err(classify));
        report(ticket, result.as_ref().map(Response::status));
        let mut response = result?;
        strip_hop_by_hop(response.headers_mut());
        Ok(response)
    }

    /// Sends `request` and reads the whole answer, all within `deadline` (the caller's: from
    /// [`Upstream::timeout`] or [`Upstream::write_timeout`]).
    pub async fn exchange(
        &self,
        request: Request<ProxyBody>,
        deadline: Instant,
    ) -> Result<Buffered, UpstreamError> {
        let ticket = self
            .circuit
            .try_pass()
            .map_err(UpstreamError::CircuitOpen)?;
        let allowed = whole_millis(deadline.saturating_duration_since(Instant::now()));
        let exchange = async {
            let response = self.client.request(request).await.map_err(classify)?;
            let (mut parts, body) = response.into_parts();
            let body = Limited::new(body, self.max_response_bytes)
                .collect()
                .await
                .map_err(|e| {
                    if is_length_limit(e.as_ref()) {
                        UpstreamError::TooLarge(self.max_response_bytes)
                    } else {
                        UpstreamError::Exchange(e)
                    }
                })?
                .to_bytes();
            strip_hop_by_hop(&mut parts.headers);
            Ok(Buffered {
                status: parts.status,
                headers: parts.headers,
                body,
            })
        };
        let result = tokio::time::timeout_at(deadline, exchange)
            .await
            .map_err(|_| UpstreamError::Timeout(allowed))
            .and_then(|result| result);
        report(ticket, result.as_ref().map(|answer| answer.status));
        result
    }
}

/// Tells the circuit breaker how an exchange went: 5xx and transport failures count against memU.
fn report(ticket: Ticket, result: Result<StatusCode, &UpstreamError>) {
    match result {
        Ok(status) if status.is_server_error() => ticket.failure(),
        Ok(_) => ticket.success(),
        Err(error) if error.is_upstream_failure() => ticket.failure(),
        Err(_) => drop(ticket),
    }
}

/// `d` to the nearest millisecond: the time an exchange was allowed, as its 504 reports it (the
/// deadline was set a few µs before the exchange began).
fn whole_millis(d: Duration) -> Duration {
    Duration::from_millis(u64::try_from((d.as_micros() + 500) / 1000).unwrap_or(u64::MAX))
}

fn classify(error: hyper_util::client::legacy::Error) -> UpstreamError {
    if error.is_connect() {
        UpstreamError::Connect(error)
    } else if is_length_limit(&error) {
        UpstreamError::RequestTooLarge
    } else {
        UpstreamError::Exchange(Box::new(error))
    }
}
