//! Forwarding to memU: URI rewrite, header hygiene, the pooled client, and the deadline.
//!
//! One pooled keep-alive client over an `HttpsConnector`: plain TCP for an `http://` upstream;
//! for `https://`, TLS only (never downgraded to plain HTTP) with SNI and `Host` set to memU's
//! host, one handshake per pooled connection, not per request (`tls.rs` has the roots).
//!
//! Two ways to call memU: [`Upstream::exchange`] buffers the whole answer and bounds the *whole*
//! exchange (connect, headers, body) by the caller's deadline; it is used where the proxy must
//! read the answer (cacheable reads, writes, watched task polls). [`Upstream::send`] bounds only
//! the wait for the response head and streams the body through, for everything else (an SSE chat
//! stream legitimately outlives any deadline). Two deadlines: `upstream.timeout_ms` for reads,
//! polls and pass-through, the longer `upstream.write_timeout_ms` for writes. Neither call
//! retries: a retried write could be duplicated.

pub mod circuit;
pub mod location;
pub mod tls;

use std::time::Duration;

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderValue};
use http::uri::{Authority, PathAndQuery, Scheme};
use http::{request, Request, Response, StatusCode, Uri};
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use hyper_rustls::{HttpsConnector, HttpsConnectorBuilder};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use tokio::time::Instant;

use std::sync::Arc;

use crate::body::{is_client_body_error, is_length_limit, BoxError, ClientBody, ProxyBody};
use crate::config::UpstreamConfig;
use crate::headers::{strip_hop_by_hop, BUDGET_HEADER, REQUEST_ID};
use circuit::{Circuit, Guards, Ticket};

use tls::{TlsHealth, TlsRejection};

/// Why an upstream exchange produced no usable response.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    #[error("memU did not answer within {} ms", .0.as_millis())]
    Timeout(Duration),
    #[error("memU is unreachable: {0}")]
    Connect(#[source] hyper_util::client::legacy::Error),
    /// The TLS handshake failed: memU's certificate was rejected, or no TLS was possible.
    #[error(transparent)]
    Tls(TlsRejection),
    #[error("the exchange with memU failed: {0}")]
    Exchange(#[source] BoxError),
    #[error("memU's response exceeds {0} bytes")]
    TooLarge(usize),
    #[error("request body exceeds the size limit")]
    RequestTooLarge,
    #[error("memU is failing: circuit open, not retried for {} ms", .0.as_millis())]
    CircuitOpen(Duration),
    /// The client's request body failed while it was being forwarded (bad chunk framing, an
    /// aborted upload): the client's fault, not memU's.
    #[error("could not read the request body: {0}")]
    ClientBody(#[source] BoxError),
    /// The deadline passed while the client was still uploading its body: memU cannot answer a
    /// request it has not received.
    #[error("the request body did not arrive within {} ms", .0.as_millis())]
    SlowUpload(Duration),
}

impl UpstreamError {
    /// Whether this error says something about memU's health (for the circuit breaker).
    ///
    /// A TLS rejection does not: it is a configuration problem (a CA the proxy does not trust, a
    /// certificate for another name, an expired one), not a transient one, so opening the circuit
    /// would not let it heal, and it would replace the answer that names the cause (`detail=tls`,
    /// "certificate was rejected") with `circuit-open`/503 and a `Retry-After` inviting retries
    /// that cannot succeed. A rejected handshake costs one round trip and sends memU no request.
    fn is_upstream_failure(&self) -> bool {
        match self {
            UpstreamError::Timeout(_) | UpstreamError::Connect(_) | UpstreamError::Exchange(_) => {
                true
            }
            UpstreamError::Tls(_)
            | UpstreamError::TooLarge(_)
            | UpstreamError::RequestTooLarge
            | UpstreamError::CircuitOpen(_)
            | UpstreamError::ClientBody(_)
            | UpstreamError::SlowUpload(_) => false,
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
    client: Client<HttpsConnector<HttpConnector>, ProxyBody>,
    scheme: Scheme,
    authority: Authority,
    host: HeaderValue,
    base_path: String,
    timeout: Duration,
    write_timeout: Duration,
    max_response_bytes: usize,
    circuit: Arc<Circuit>,
    write_circuit: Arc<Circuit>,
    tls_health: Arc<TlsHealth>,
    /// Set while memU refuses connections: WARN when it starts, INFO when it ends.
    unreachable: Arc<std::sync::atomic::AtomicBool>,
}

impl Upstream {
    pub fn new(
        config: &UpstreamConfig,
        circuit: Arc<Circuit>,
        write_circuit: Arc<Circuit>,
    ) -> Self {
        let mut tcp = HttpConnector::new();
        tcp.set_nodelay(true);
        tcp.set_connect_timeout(Some(config.timeout));
        // The scheme is checked by the HTTPS connector below, not by the TCP one.
        tcp.enforce_http(false);
        let connector = if config.scheme == Scheme::HTTPS {
            HttpsConnectorBuilder::new()
                .with_tls_config(tls::client_config(&config.ca_roots))
                .https_only()
        } else {
            // Never used for TLS: an `http://` upstream's requests are all `http://`.
            HttpsConnectorBuilder::new()
                .with_tls_config(tls::with_roots(rustls::RootCertStore::empty()))
                .https_or_http()
        };
        let connector = connector.enable_http1().wrap_connector(tcp);
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
            write_circuit,
            tls_health: Arc::default(),
            unreachable: Arc::default(),
        }
    }

    /// memU as its redirects name it.
    fn origin(&self) -> location::Origin<'_> {
        location::Origin {
            scheme: &self.scheme,
            authority: &self.authority,
            base_path: &self.base_path,
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
        // The client's body is streamed to memU: watch it, so its failures and slowness are told
        // apart from memU's.
        let (parts, body) = request.into_parts();
        let body = ClientBody::new(body);
        let uploaded = body.finished();
        let request = Request::from_parts(parts, body.boxed_unsync());
        let result = tokio::time::timeout(self.timeout, self.client.request(request))
            .await
            .map_err(|_| {
                if uploaded.load(std::sync::atomic::Ordering::Acquire) {
                    UpstreamError::Timeout(self.timeout)
                } else {
                    UpstreamError::SlowUpload(self.timeout)
                }
            })
            .and_then(|response| response.map_err(|e| self.classify(e)));
        if result.is_ok() {
            self.answered();
        }
        report(ticket, result.as_ref().map(Response::status));
        let mut response = result?;
        strip_hop_by_hop(response.headers_mut());
        location::relocate(response.headers_mut(), &self.origin());
        Ok(response)
    }

    /// Sends `request` and reads the whole answer, all within `deadline` (the caller's: from
    /// [`Upstream::timeout`] or [`Upstream::write_timeout`]), past the breaker that `guards` it.
    pub async fn exchange(
        &self,
        request: Request<ProxyBody>,
        deadline: Instant,
        guards: Guards,
    ) -> Result<Buffered, UpstreamError> {
        let circuit = match guards {
            Guards::Reads => &self.circuit,
            Guards::Writes => &self.write_circuit,
        };
        let ticket = circuit.try_pass().map_err(UpstreamError::CircuitOpen)?;
        let allowed = whole_millis(deadline.saturating_duration_since(Instant::now()));
        let exchange = async {
            let response = self.client.request(request).await;
            let response = response.map_err(|e| self.classify(e))?;
            self.answered();
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
            location::relocate(&mut parts.headers, &self.origin());
            // memU may echo the request id it was sent; a buffered answer is replayed to other
            // requests (hits, coalesced waiters), which must carry their own id.
            parts.headers.remove(REQUEST_ID);
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
        // Says nothing about memU's health (an oversized answer, a TLS rejection …).
        Err(_) => drop(ticket),
    }
}

/// `d` to the nearest millisecond: the time an exchange was allowed, as its 504 reports it (the
/// deadline was set a few µs before the exchange began).
fn whole_millis(d: Duration) -> Duration {
    Duration::from_millis(u64::try_from((d.as_micros() + 500) / 1000).unwrap_or(u64::MAX))
}

impl Upstream {
    /// What a failed request means. A connect error carrying a rustls error is a TLS rejection
    /// (logged once per change of state); any answer at all means TLS works again.
    /// memU answered: log the recovery of TLS or reachability, once, if either was lost.
    fn answered(&self) {
        self.tls_health.answered();
        if self.unreachable.load(std::sync::atomic::Ordering::Relaxed)
            && self
                .unreachable
                .swap(false, std::sync::atomic::Ordering::AcqRel)
        {
            tracing::info!("memU is reachable again");
        }
    }

    fn classify(&self, error: hyper_util::client::legacy::Error) -> UpstreamError {
        if error.is_connect() {
            match tls::rejection(&error) {
                Some(rejection) => {
                    self.tls_health.rejected(&rejection);
                    UpstreamError::Tls(rejection)
                }
                None => {
                    if !self
                        .unreachable
                        .swap(true, std::sync::atomic::Ordering::AcqRel)
                    {
                        tracing::warn!(%error, "memU is unreachable: reads get stale or empty answers, writes 502");
                    }
                    UpstreamError::Connect(error)
                }
            }
        } else if is_length_limit(&error) {
            UpstreamError::RequestTooLarge
        } else if is_client_body_error(&error) {
            UpstreamError::ClientBody(Box::new(error))
        } else {
            UpstreamError::Exchange(Box::new(error))
        }
    }
}
