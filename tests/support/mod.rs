//! Shared test support: the stand-in memU ([`memu::MemU`]), a proxy started through the real
//! `memu_proxy::run` on 127.0.0.1:0, a small HTTP client and assertions on `Cache-Status`.
//! The benches include it too (`#[path = "../tests/support/mod.rs"]`), for the stand-in, the proxy
//! start-up, [`own_thread`] and the one percentile definition in [`stats`].
#![allow(dead_code, unused_imports)]

pub mod call;
pub mod child;
pub mod embeddings;
pub mod latency;
pub mod memu;
pub mod own_thread;
pub mod redis;
pub mod stats;
pub mod tls;

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use memu_proxy::config::Settings;
use serde_json::Value;
use tokio::sync::oneshot;

pub use memu::{Failure, MemU, Route, Seen};
pub use own_thread::OwnThread;

pub const RELATED: &str = "/api/v1/memory/retrieve/related-memory-items";
pub const DEFAULT_CATEGORIES: &str = "/api/v1/memory/retrieve/default-categories";
pub const CLUSTERED: &str = "/api/v1/memory/retrieve/related-clustered-categories";
pub const MEMORIZE: &str = "/api/v1/memory/memorize";
pub const DELETE: &str = "/api/v1/memory/delete";

/// `Cache-Status` of a read that went to memU and whose answer was stored.
pub const MISS_STORED: &str = "memu-proxy; fwd=miss; stored";
/// `Cache-Status` of a read answered from a fresh cache entry.
pub const HIT: &str = "memu-proxy; hit";

/// A running proxy; shut down when dropped.
pub struct Proxy {
    pub addr: SocketAddr,
    pub admin_addr: Option<SocketAddr>,
    stop: Option<oneshot::Sender<()>>,
    pub task: tokio::task::JoinHandle<()>,
}

impl Proxy {
    /// Starts a proxy in front of `upstream` with default settings changed by `tweak`.
    pub async fn start(upstream: &str, tweak: impl FnOnce(&mut Settings)) -> Proxy {
        let config = proxy_config(upstream, tweak);
        let listeners = memu_proxy::Listeners::bind(&config).await.unwrap();
        let addr = listeners.local_addr().unwrap();
        let admin_addr = listeners.admin.as_ref().map(|l| l.local_addr().unwrap());
        let (stop, stopped) = oneshot::channel::<()>();
        let run = memu_proxy::run(config, listeners, async {
            let _ = stopped.await;
        });
        let task = tokio::spawn(async { run.await.expect("the proxy's workers start") });
        Proxy {
            addr,
            admin_addr,
            stop: Some(stop),
            task,
        }
    }

    /// Starts a proxy as [`Proxy::start`] does, but on its own thread, in the runtime the binary
    /// builds (`memu_proxy::runtime`, `server.worker_threads`); it shuts down gracefully when the
    /// guard drops. Derefs to the proxy's address.
    pub fn start_on_own_thread(
        upstream: &str,
        tweak: impl FnOnce(&mut Settings),
    ) -> OwnThread<SocketAddr> {
        let config = proxy_config(upstream, tweak);
        let runtime = memu_proxy::runtime().expect("the proxy's runtime");
        OwnThread::start("memu-proxy", runtime, |ready, stop| async move {
            let listeners = memu_proxy::Listeners::bind(&config).await.unwrap();
            ready.send(listeners.local_addr().unwrap());
            let run = memu_proxy::run(config, listeners, stop.wait());
            run.await.expect("the proxy's workers start");
        })
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    /// Signals shutdown and returns the run task to await.
    pub fn shutdown(mut self) -> tokio::task::JoinHandle<()> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        let (_, dummy) = (0, tokio::spawn(async {}));
        std::mem::replace(&mut self.task, dummy)
    }

    /// The `/metrics` text.
    pub async fn metrics(&self) -> String {
        let reply = get(&self.url("/metrics")).await;
        assert_eq!(reply.status, StatusCode::OK);
        reply.text()
    }
}

/// Default settings on 127.0.0.1:0 in front of `upstream`, changed by `tweak`, validated.
fn proxy_config(upstream: &str, tweak: impl FnOnce(&mut Settings)) -> memu_proxy::config::Config {
    let mut settings = Settings::default();
    settings.server.listen = "127.0.0.1:0".into();
    settings.upstream.url = upstream.into();
    tweak(&mut settings);
    settings.validate().expect("valid test config")
}

impl Drop for Proxy {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

/// A received response.
#[derive(Debug)]
pub struct Reply {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Reply {
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {:?}", self.body))
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The `Cache-Status` header.
    pub fn cache_status(&self) -> String {
        self.header("cache-status")
    }

    pub fn header(&self, name: &str) -> String {
        self.headers
            .get_all(name)
            .iter()
            .map(|v| v.to_str().unwrap())
            .collect::<Vec<_>>()
            .join(", ")
    }
}

fn client() -> Client<HttpConnector, Full<Bytes>> {
    Client::builder(TokioExecutor::new()).build_http()
}

/// Sends one request.
pub async fn send(
    method: Method,
    url: &str,
    headers: &[(&str, &str)],
    body: impl Into<Bytes>,
) -> Reply {
    let mut request = Request::builder().method(method).uri(url);
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let request = request.body(Full::new(body.into())).unwrap();
    let response = tokio::time::timeout(Duration::from_secs(20), client().request(request))
        .await
        .expect("proxy answered within 20 s")
        .expect("request succeeded");
    let (parts, body) = response.into_parts();
    let body = body.collect().await.unwrap().to_bytes();
    Reply {
        status: parts.status,
        headers: parts.headers,
        body,
    }
}

/// POSTs a JSON body the way the SDK does (`Authorization`, `Content-Type`).
pub async fn post(url: &str, body: &Value) -> Reply {
    post_with(url, body, &[("authorization", "Bearer key-1")]).await
}

pub async fn post_with(url: &str, body: &Value, headers: &[(&str, &str)]) -> Reply {
    let mut all = vec![("content-type", "application/json")];
    all.extend_from_slice(headers);
    send(Method::POST, url, &all, body.to_string()).await
}

pub async fn get(url: &str) -> Reply {
    send(Method::GET, url, &[], Bytes::new()).await
}

/// Posts `body` to related-memory-items and asserts that memU was asked and the answer stored
/// (`fwd=miss; stored`). Returns the reply for further checks.
pub async fn assert_next_read_misses(proxy: &Proxy, body: &Value) -> Reply {
    let reply = post(&proxy.url(RELATED), body).await;
    let status = reply.cache_status();
    assert_eq!(status, MISS_STORED, "expected a stored miss for {body}");
    reply
}

/// Posts `body` to related-memory-items and asserts that it was a fresh cache hit.
pub async fn assert_next_read_hits(proxy: &Proxy, body: &Value) -> Reply {
    let reply = post(&proxy.url(RELATED), body).await;
    assert_eq!(reply.cache_status(), HIT, "expected a hit for {body}");
    reply
}

/// An SDK-shaped related-memory-items body.
pub fn related_body(user: &str, agent: Option<&str>, query: &str) -> Value {
    serde_json::json!({"user_id": user, "agent_id": agent, "query": query, "top_k": 3,
                       "min_similarity": 0.3, "include_categories": null})
}

/// An SDK-shaped memorize body.
pub fn memorize_body(user: &str, agent: &str, text: &str) -> Value {
    serde_json::json!({"conversation_text": null,
                       "conversation": [{"role": "user", "content": text}, {"role": "assistant", "content": "Noted"}],
                       "user_id": user, "user_name": "Alice", "agent_id": agent, "agent_name": "Mao",
                       "session_date": "2025-01-02T03:04:05+00:00"})
}

/// The value of an unlabelled metric or of one labelled series, by exact series name; `None` when
/// the exposition does not have it (a labelled counter appears once it was first counted).
pub fn series(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|line| {
            line.strip_prefix(series)
                .and_then(|rest| rest.strip_prefix(' '))
        })
        .map(|v| v.trim().parse().unwrap())
}

/// The value of a series that must be there: panics, naming the series and the family's lines,
/// when it is absent (absent is not 0: a misspelt series must not pass as "nothing counted").
pub fn metric(text: &str, name: &str) -> f64 {
    series(text, name).unwrap_or_else(|| {
        let family = name.split('{').next().unwrap_or(name);
        let lines: Vec<&str> = text.lines().filter(|l| l.starts_with(family)).collect();
        panic!(
            "no series {name} in /metrics; its family has:\n{}",
            lines.join("\n")
        )
    })
}

/// A counter series that may not have been counted yet: absent reads 0. Only for counters (a
/// family of labelled counters has no series until the first count), never for gauges.
pub fn counted(text: &str, name: &str) -> f64 {
    series(text, name).unwrap_or(0.0)
}

/// Polls `condition` every 20 ms until it holds; panics after `secs` seconds.
pub async fn wait_until<F, Fut>(what: &str, secs: u64, mut condition: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let give_up = tokio::time::Instant::now() + Duration::from_secs(secs);
    while !condition().await {
        assert!(
            tokio::time::Instant::now() < give_up,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// True when a bench binary was started by `cargo bench` (which passes `--bench`); `cargo test
/// --benches` or `--all-targets` runs bench binaries without it, unoptimised: no place to measure.
pub fn invoked_by_cargo_bench() -> bool {
    std::env::args().any(|arg| arg == "--bench")
}
