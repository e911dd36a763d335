//! Shared test support: the stand-in memU ([`memu::MemU`]), a proxy started through the real
//! `memu_proxy::run` on 127.0.0.1:0, and a small HTTP client.
#![allow(dead_code, unused_imports)]

pub mod memu;
pub mod own_thread;

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

pub use memu::{Failure, MemU, Seen};
pub use own_thread::OwnThread;

pub const RELATED: &str = "/api/v1/memory/retrieve/related-memory-items";
pub const DEFAULT_CATEGORIES: &str = "/api/v1/memory/retrieve/default-categories";
pub const CLUSTERED: &str = "/api/v1/memory/retrieve/related-clustered-categories";
pub const MEMORIZE: &str = "/api/v1/memory/memorize";
pub const DELETE: &str = "/api/v1/memory/delete";

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
        let mut settings = Settings::default();
        settings.server.listen = "127.0.0.1:0".into();
        settings.upstream.url = upstream.into();
        tweak(&mut settings);
        let config = settings.validate().expect("valid test config");
        let listeners = memu_proxy::Listeners::bind(&config).await.unwrap();
        let addr = listeners.local_addr().unwrap();
        let admin_addr = listeners.admin.as_ref().map(|l| l.local_addr().unwrap());
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(memu_proxy::run(config, listeners, async {
            let _ = stopped.await;
        }));
        Proxy {
            addr,
            admin_addr,
            stop: Some(stop),
            task,
        }
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

/// The value of an unlabelled metric or of one labelled series, by exact series name.
pub fn metric(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|line| {
            line.strip_prefix(series)
                .and_then(|rest| rest.strip_prefix(' '))
        })
        .map(|v| v.trim().parse().unwrap())
        .unwrap_or(0.0)
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
