//! A stand-in OpenAI-compatible embeddings endpoint (`POST /v1/embeddings`) on 127.0.0.1:0: each
//! input's vector comes from the function it is started with, after a delay: the one the test
//! sets, plus, if started with one, a delay drawn per call. It counts the calls and remembers the
//! last `Authorization` it was sent.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use serde_json::{json, Value};
use tokio::net::TcpListener;

/// A text's vector.
pub type Embed = dyn Fn(&str) -> Vec<f32> + Send + Sync;
/// The delay of the n-th call.
pub type Delay = dyn Fn(u64) -> Duration + Send + Sync;

struct Inner {
    embed: Box<Embed>,
    drawn: Box<Delay>,
    /// Delay before answering, in ms, on top of the drawn one.
    delay_ms: AtomicU64,
    calls: AtomicUsize,
    authorization: Mutex<Option<String>>,
}

/// The running stand-in; it stops with the test's runtime.
#[derive(Clone)]
pub struct Embeddings {
    pub addr: SocketAddr,
    inner: Arc<Inner>,
}

impl Embeddings {
    pub async fn start(embed: impl Fn(&str) -> Vec<f32> + Send + Sync + 'static) -> Self {
        Self::start_with_delay(embed, |_| Duration::ZERO).await
    }

    /// A stand-in whose n-th call waits `delay(n)`.
    pub async fn start_with_delay(
        embed: impl Fn(&str) -> Vec<f32> + Send + Sync + 'static,
        delay: impl Fn(u64) -> Duration + Send + Sync + 'static,
    ) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let inner = Arc::new(Inner {
            embed: Box::new(embed),
            drawn: Box::new(delay),
            delay_ms: AtomicU64::new(0),
            calls: AtomicUsize::new(0),
            authorization: Mutex::new(None),
        });
        let serving = Arc::clone(&inner);
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let inner = Arc::clone(&serving);
                tokio::spawn(async move {
                    let service = service_fn(move |request| answer(Arc::clone(&inner), request));
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Self { addr, inner }
    }

    /// The URL to put in `local_answers.embeddings_url`.
    pub fn url(&self) -> String {
        format!("http://{}/v1/embeddings", self.addr)
    }

    pub fn set_delay(&self, delay: Duration) {
        let ms = u64::try_from(delay.as_millis()).unwrap_or(u64::MAX);
        self.inner.delay_ms.store(ms, Ordering::Relaxed);
    }

    pub fn calls(&self) -> usize {
        self.inner.calls.load(Ordering::Relaxed)
    }

    pub fn last_authorization(&self) -> Option<String> {
        self.inner.authorization.lock().unwrap().clone()
    }
}

async fn answer(
    inner: Arc<Inner>,
    request: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let call = inner.calls.fetch_add(1, Ordering::Relaxed);
    let authorization = (request.headers().get("authorization"))
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    *inner.authorization.lock().unwrap() = authorization;
    let body = request.into_body().collect().await.map(|b| b.to_bytes());
    let body: Value = body
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or_default();
    let delay =
        Duration::from_millis(inner.delay_ms.load(Ordering::Relaxed)) + (inner.drawn)(call as u64);
    tokio::time::sleep(delay).await;
    let Some(inputs) = body["input"].as_array() else {
        let mut response = Response::new(Full::new(Bytes::from_static(b"{}")));
        *response.status_mut() = StatusCode::BAD_REQUEST;
        return Ok(response);
    };
    let data: Vec<Value> = inputs
        .iter()
        .enumerate()
        .map(|(index, text)| {
            let vector = (inner.embed)(text.as_str().unwrap_or_default());
            json!({"object": "embedding", "index": index, "embedding": vector})
        })
        .collect();
    let answer = json!({"object": "list", "data": data, "model": body["model"],
                        "usage": {"prompt_tokens": 0, "total_tokens": 0}});
    let mut response = Response::new(Full::new(Bytes::from(answer.to_string())));
    response
        .headers_mut()
        .insert("content-type", "application/json".parse().unwrap());
    Ok(response)
}
