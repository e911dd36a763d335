//! Embeddings for local answers (`[local_answers] embeddings_url`): vectors of the mirrored items
//! and of the query, from an OpenAI-compatible endpoint (`POST {"model","input":[…]}` →
//! `{"data":[{"index","embedding"}]}`), so a query that shares no word with its memory still
//! finds it.
//!
//! - **Items** are embedded in the background as they arrive in the mirror ([`Embedder::learn`]):
//!   queued (at most [`MAX_QUEUED`] texts; beyond, dropped and counted, and asked again the next
//!   time memU's answers hold them), sent by one worker in batches of at most [`BATCH`].
//! - **A query** is embedded while memU is being asked ([`Embedder::ask`]); its vector is used
//!   only if it is there when the local answer is built. Nothing ever waits for it.
//!
//! Vectors are kept by text, L2-normalised, weighed in bytes inside the mirror's share of
//! `cache.max_bytes`, least recently used out first. Every call is counted
//! (`memu_proxy_embeddings_requests_total{what,result}`): on a paid endpoint each one is billed.

use std::collections::{HashSet, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{Method, Request, Uri};
use http_body_util::{BodyExt, Full, Limited};
use hyper_rustls::{HttpsConnector, HttpsConnectorBuilder};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use prometheus_client::collector::Collector;
use prometheus_client::encoding::DescriptorEncoder;
use prometheus_client::registry::Unit;
use quick_cache::sync::Cache;
use quick_cache::Weighter;
use serde::Deserialize;

use crate::config::EmbeddingsConfig;
use crate::metrics;
use crate::upstream::tls;

/// A unit vector.
pub type Vector = Arc<[f32]>;

/// Most texts waiting to be embedded.
pub const MAX_QUEUED: usize = 1024;
/// Most texts per embeddings request.
pub const BATCH: usize = 64;
/// Longest text sent (bytes, cut at a character boundary): memories are sentences.
const MAX_TEXT: usize = 8192;
/// Largest embeddings answer read.
const MAX_ANSWER: usize = 16 * 1024 * 1024;

/// Where the query's vector lands when (if) it arrives.
#[derive(Debug, Clone, Default)]
pub struct QueryVector(Arc<OnceLock<Vector>>);

impl QueryVector {
    pub fn get(&self) -> Option<&Vector> {
        self.0.get()
    }
}

#[derive(Clone)]
struct VectorWeighter;

impl Weighter<Box<str>, Vector> for VectorWeighter {
    fn weight(&self, text: &Box<str>, vector: &Vector) -> u64 {
        (text.len() + 4 * vector.len() + 64) as u64
    }
}

/// What one call was for, and how it ended: counters.
#[derive(Default)]
struct Calls {
    query_ok: AtomicU64,
    query_failed: AtomicU64,
    items_ok: AtomicU64,
    items_failed: AtomicU64,
    dropped: AtomicU64,
}

/// The embeddings client and the vectors it has.
pub struct Embedder {
    client: Client<HttpsConnector<HttpConnector>, Full<Bytes>>,
    url: Uri,
    model: String,
    key: Option<HeaderValue>,
    timeout: Duration,
    vectors: Cache<Box<str>, Vector, VectorWeighter>,
    queue: Mutex<Queue>,
    working: AtomicBool,
    calls: Calls,
}

/// Texts waiting to be embedded, in arrival order, and the same as a set.
#[derive(Default)]
struct Queue {
    order: VecDeque<Box<str>>,
    queued: HashSet<Box<str>>,
}

#[derive(Deserialize)]
struct Answer {
    data: Vec<Embedding>,
}

#[derive(Deserialize)]
struct Embedding {
    index: usize,
    embedding: Vec<f32>,
}

impl Embedder {
    /// Vectors take at most `max_bytes`. The key is read from `config.key_env` now.
    pub fn new(config: &EmbeddingsConfig, max_bytes: u64) -> Self {
        let mut tcp = HttpConnector::new();
        tcp.set_nodelay(true);
        tcp.set_connect_timeout(Some(config.timeout));
        tcp.enforce_http(false);
        let connector = HttpsConnectorBuilder::new()
            .with_tls_config(tls::client_config(&[]))
            .https_or_http()
            .enable_http1()
            .wrap_connector(tcp);
        let client = Client::builder(TokioExecutor::new())
            .timer(TokioTimer::new())
            .pool_timer(TokioTimer::new())
            .build(connector);
        let key = std::env::var(&config.key_env)
            .ok()
            .filter(|key| !key.is_empty())
            .and_then(|key| HeaderValue::try_from(format!("Bearer {key}")).ok())
            .map(|mut value| {
                value.set_sensitive(true);
                value
            });
        let estimated = usize::try_from(max_bytes / 4096)
            .unwrap_or(usize::MAX)
            .max(16);
        Self {
            client,
            url: config.url.clone(),
            model: config.model.clone(),
            key,
            timeout: config.timeout,
            vectors: Cache::with_weighter(estimated, max_bytes.max(1), VectorWeighter),
            queue: Mutex::new(Queue::default()),
            working: AtomicBool::new(false),
            calls: Calls::default(),
        }
    }

    /// The vector of `text`, if it has one.
    pub fn vector(&self, text: &str) -> Option<Vector> {
        self.vectors.get(text)
    }

    /// Queues whichever of `texts` has no vector yet, and starts the worker if it is idle.
    pub fn learn<'a>(self: &Arc<Self>, texts: impl IntoIterator<Item = &'a str>) {
        {
            let mut queue = self.queue.lock().unwrap_or_else(|e| e.into_inner());
            for text in texts {
                if self.vectors.get(text).is_some() || queue.queued.contains(text) {
                    continue;
                }
                if queue.order.len() >= MAX_QUEUED {
                    self.calls.dropped.fetch_add(1, Ordering::Relaxed);
                    continue;
                }
                queue.order.push_back(text.into());
                queue.queued.insert(text.into());
            }
        }
        if !self.working.swap(true, Ordering::AcqRel) {
            tokio::spawn(Arc::clone(self).work());
        }
    }

    /// Sends the queue in batches until it is empty.
    async fn work(self: Arc<Self>) {
        loop {
            let batch: Vec<Box<str>> = {
                let mut queue = self.queue.lock().unwrap_or_else(|e| e.into_inner());
                let n = queue.order.len().min(BATCH);
                if n == 0 {
                    self.working.store(false, Ordering::Release);
                    return;
                }
                let batch: Vec<Box<str>> = queue.order.drain(..n).collect();
                for text in &batch {
                    queue.queued.remove(text);
                }
                batch
            };
            let vectors = self.embed(&batch).await;
            let counter = match &vectors {
                Some(_) => &self.calls.items_ok,
                None => &self.calls.items_failed,
            };
            counter.fetch_add(1, Ordering::Relaxed);
            for (text, vector) in batch.into_iter().zip(vectors.unwrap_or_default()) {
                self.vectors.insert(text, vector);
            }
        }
    }

    /// Starts embedding `query` (or finds its vector); the answer lands in the returned slot.
    pub fn ask(self: &Arc<Self>, query: &str) -> QueryVector {
        let slot = QueryVector::default();
        if let Some(vector) = self.vectors.get(query) {
            let _ = slot.0.set(vector);
            return slot;
        }
        let (this, text, landing) = (Arc::clone(self), Box::<str>::from(query), slot.clone());
        tokio::spawn(async move {
            let vector = this.embed(std::slice::from_ref(&text)).await;
            let counter = match &vector {
                Some(_) => &this.calls.query_ok,
                None => &this.calls.query_failed,
            };
            counter.fetch_add(1, Ordering::Relaxed);
            if let Some(vector) = vector.and_then(|v| v.into_iter().next()) {
                this.vectors.insert(text, Arc::clone(&vector));
                let _ = landing.0.set(vector);
            }
        });
        slot
    }

    /// One embeddings call: a unit vector per text, in order; `None` when the call fails, times
    /// out, or answers anything but one usable vector per text.
    async fn embed(&self, texts: &[Box<str>]) -> Option<Vec<Vector>> {
        let input: Vec<&str> = texts.iter().map(|t| cut(t)).collect();
        let body = serde_json::to_vec(&serde_json::json!({"model": self.model, "input": input}));
        let mut request = Request::builder()
            .method(Method::POST)
            .uri(self.url.clone())
            .header(header::CONTENT_TYPE, "application/json");
        if let Some(key) = &self.key {
            request = request.header(header::AUTHORIZATION, key.clone());
        }
        let request = request.body(Full::new(Bytes::from(body.ok()?))).ok()?;
        let exchange = async {
            let response = self.client.request(request).await.ok()?;
            if !response.status().is_success() {
                return None;
            }
            let body = Limited::new(response.into_body(), MAX_ANSWER);
            Some(body.collect().await.ok()?.to_bytes())
        };
        let body = tokio::time::timeout(self.timeout, exchange).await.ok()??;
        let answer: Answer = serde_json::from_slice(&body).ok()?;
        vectors_in_order(answer, texts.len())
    }

    pub fn weight(&self) -> u64 {
        self.vectors.weight()
    }
}

/// The answer's vectors by `index`, each normalised; `None` unless there is exactly one usable
/// vector for each of the `n` texts, all of one dimension.
fn vectors_in_order(answer: Answer, n: usize) -> Option<Vec<Vector>> {
    let mut slots: Vec<Option<Vector>> = vec![None; n];
    for Embedding { index, embedding } in answer.data {
        *slots.get_mut(index)? = Some(unit(embedding)?);
    }
    let vectors: Vec<Vector> = slots.into_iter().collect::<Option<_>>()?;
    let dimension = vectors.first().map_or(0, |v| v.len());
    vectors
        .iter()
        .all(|v| v.len() == dimension)
        .then_some(vectors)
}

/// `v` scaled to length 1; `None` if empty, zero or not finite.
fn unit(v: Vec<f32>) -> Option<Vector> {
    let norm = v.iter().map(|x| f64::from(*x).powi(2)).sum::<f64>().sqrt();
    if v.is_empty() || !norm.is_finite() || norm == 0.0 {
        return None;
    }
    Some(v.iter().map(|x| (f64::from(*x) / norm) as f32).collect())
}

/// The cosine of two unit vectors; `None` when their dimensions differ.
pub fn cosine(a: &[f32], b: &[f32]) -> Option<f64> {
    (a.len() == b.len()).then(|| {
        a.iter()
            .zip(b)
            .map(|(x, y)| f64::from(*x) * f64::from(*y))
            .sum()
    })
}

/// `text` cut to at most [`MAX_TEXT`] bytes, at a character boundary.
fn cut(text: &str) -> &str {
    let mut end = text.len().min(MAX_TEXT);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

impl std::fmt::Debug for Embedder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Embedder")
            .field("url", &self.url)
            .field("vectors", &self.vectors.len())
            .finish_non_exhaustive()
    }
}

impl Collector for Embedder {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let calls = &self.calls;
        let load = |c: &AtomicU64| c.load(Ordering::Relaxed);
        metrics::counter_family(
            &mut encoder,
            "embeddings_query_requests",
            "Embeddings calls for a query being answered, by result",
            "result",
            &[
                ("ok", load(&calls.query_ok)),
                ("failed", load(&calls.query_failed)),
            ],
        )?;
        metrics::counter_family(
            &mut encoder,
            "embeddings_item_requests",
            "Embeddings calls for a batch of mirrored memory items, by result",
            "result",
            &[
                ("ok", load(&calls.items_ok)),
                ("failed", load(&calls.items_failed)),
            ],
        )?;
        metrics::counter(
            &mut encoder,
            "embeddings_items_dropped",
            "Memory items not queued for embedding because the queue was full",
            load(&calls.dropped),
        )?;
        metrics::gauge(
            &mut encoder,
            "embeddings_vectors",
            "Vectors the embeddings cache holds",
            None,
            self.vectors.len() as u64,
        )?;
        metrics::gauge(
            &mut encoder,
            "embeddings",
            "Weighed size of the embeddings cache",
            Some(&Unit::Bytes),
            self.weight(),
        )
    }
}

#[cfg(test)]
#[path = "embed_tests.rs"]
mod tests;
