//! The shared cache tier: a second cache on a Redis-protocol server (Redis 7, Valkey) that every
//! replica uses, behind each replica's local cache. Optional (`[shared_cache] url`); with it
//! unset none of this runs.
//!
//! - **Two tiers.** A local miss asks Redis (one script: the answer, the generations it is judged
//!   by, and on a miss the fetch lock) before memU; an answer found there is a hit and fills the
//!   local cache with its remaining TTL. Every answer fetched from memU is written to Redis with
//!   the generations its lookup read, and only while they are still current.
//! - **Invalidation across replicas.** A write bumps the generations of its slots in Redis and
//!   publishes them on one channel, in one script; every replica bumps its own copy of those slots
//!   ([`Scopes::apply`]). A write made while Redis is unreachable waits in a bounded outbox and is
//!   published when the link is back.
//! - **Coalescing across replicas.** The replica whose lookup took the lock (a short `SET NX PX`)
//!   fetches; the others poll for its answer until the lock is gone, then fetch themselves. A
//!   holder that dies releases the lock by expiry.
//! - **Failures never fail a request.** Every call is bounded by `timeout_ms`, a link that failed
//!   is skipped until a new connection answers (`link.rs`), and a replica that has not heard the
//!   invalidation stream for `offline_grace_ms` stops trusting its local entries as fresh
//!   (`stream.rs`).
//!
//! Sits below `state` (which owns it) and above `cache`, whose keys, slots and generations it
//! names in Redis (`names.rs`, `record.rs`). It decides nothing about HTTP.

mod delivery;
mod link;
pub mod metrics;
pub mod names;
mod outbox;
pub mod record;
mod scripts;
mod stream;

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::HeaderMap;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::DescriptorEncoder;
use prometheus_client::registry::Registry;
use tokio::time::Instant;

use crate::cache::generations::{bumps, merge, Bump};
use crate::cache::{CacheKey, Invalidate, Scope, Scopes};
use crate::config::{redacted, SharedCacheConfig};
use crate::metrics::Metrics;
use crate::routes::WriteKind;
pub use delivery::Pending;
pub use link::LinkState;
use link::{Failed, Link};
use metrics::{Op, OpResult, SharedMetrics};
use names::{KeyNames, Names};
use record::{Record, SharedGenerations};
use scripts::Scripts;
use stream::Stream;

/// How often a replica polls for the answer of a fetch another replica holds the lock of.
const POLL_EVERY: Duration = Duration::from_millis(10);

/// The shared tier of one replica.
pub struct SharedTier {
    link: Link,
    stream: Stream,
    names: Names,
    scripts: Scripts,
    /// This replica's name in lock tokens and messages (a random UUID).
    origin: String,
    locks_taken: AtomicU64,
    /// How long a slot's generation outlives its last bump: far longer than any answer stored
    /// under it, so an expired generation can never make an older answer current again.
    generation_ttl: Duration,
    /// How long a fetch lock lasts if its holder never gives it back.
    lock_ttl: Duration,
    /// Every answer's TTL in Redis: the cache's TTL.
    ttl: Duration,
    outbox: Mutex<VecDeque<Vec<Bump>>>,
    /// This replica's writes on their way to Redis (`delivery.rs`).
    in_flight: Arc<AtomicUsize>,
    /// Redis's `run_id` when last acted on: a change means a restart or a failover.
    run_id: Mutex<Option<String>>,
    /// True once the `run_id` of the Redis this replica talks to now was checked (`delivery.rs`).
    verified: std::sync::atomic::AtomicBool,
    scopes: Arc<Scopes>,
    metrics: Arc<Metrics>,
}

/// What the shared tier says before a memU fetch.
#[derive(Debug)]
pub enum Before {
    /// A current answer another replica (or this one, before a restart) stored.
    Hit {
        record: Record,
        /// Its remaining TTL in Redis.
        remaining: Duration,
    },
    /// Fetch from memU, then give the claim to [`SharedTier::after_fetch`].
    Fetch(Claim),
    /// Another replica held the key's fetch lock until the deadline was (all but) spent waiting
    /// for its answer: too late to ask memU, which would only time out (and count against the
    /// breaker, and cost memU a retrieval).
    GaveUp,
}

/// What a replica needs to store the answer it fetches: the key's names, the generations the
/// lookup read (`None`: Redis did not answer, so nothing is stored), and the lock, if it took it.
#[derive(Debug)]
pub struct Claim {
    names: KeyNames,
    generations: Option<SharedGenerations>,
    token: Option<String>,
}

/// One lookup's result.
enum Looked {
    Hit(Record, Duration),
    /// A record stored under the current generations that is not one.
    Unusable,
    Miss {
        generations: SharedGenerations,
        locked: bool,
    },
}

impl SharedTier {
    /// Builds the tier and starts its background tasks (reconnects, heartbeats, the stream). It
    /// connects in the background: the proxy serves at once, from its local cache and memU.
    pub fn start(
        config: &SharedCacheConfig,
        fingerprint: &[u8],
        cache_ttl: Duration,
        read_timeout: Duration,
        scopes: Arc<Scopes>,
        metrics: Arc<Metrics>,
        registry: &mut Registry,
    ) -> Result<Arc<Self>, redis::RedisError> {
        let client = redis::Client::open(config.url.as_str())?;
        let shared_metrics = Arc::new(SharedMetrics::register(registry));
        let names = Names::new(&config.key_prefix).answering(fingerprint);
        let tier = Arc::new(Self {
            link: Link::new(
                client.clone(),
                config.timeout,
                Arc::clone(&shared_metrics),
                redacted(&config.url),
            ),
            stream: Stream::new(
                client,
                names.channel(),
                config.offline_grace,
                shared_metrics,
            ),
            names,
            scripts: Scripts::new(),
            origin: uuid::Uuid::new_v4().simple().to_string(),
            locks_taken: AtomicU64::new(0),
            generation_ttl: cache_ttl * 2 + Duration::from_secs(3600),
            lock_ttl: read_timeout + Duration::from_secs(1),
            ttl: cache_ttl,
            outbox: Mutex::new(VecDeque::new()),
            in_flight: Arc::default(),
            run_id: Mutex::new(None),
            verified: std::sync::atomic::AtomicBool::new(false),
            scopes,
            metrics,
        });
        tokio::spawn(outbox::supervise(Arc::downgrade(&tier)));
        tokio::spawn(stream::listen(Arc::downgrade(&tier)));
        Ok(tier)
    }

    /// The link's state, for `/healthz`.
    pub fn link_state(&self) -> LinkState {
        self.link.state()
    }

    /// True while the invalidation stream was heard within `offline_grace_ms` and no replica
    /// said it holds writes Redis refused: local entries may be served as fresh.
    pub fn trusts_local(&self) -> bool {
        self.stream.heard_recently() && !self.stream.distrusted()
    }

    /// True when the stream is subscribed, for `/healthz`.
    pub fn stream_up(&self) -> bool {
        self.stream.is_up()
    }

    /// Before a memU fetch of `key`: an answer in Redis, or a claim to fetch. While another
    /// replica holds the key's lock, waits for its answer (polling) until the lock is gone, or
    /// gives up at `deadline` without a fetch. Redis failing or slow means a claim without
    /// generations: fetch, store nothing.
    pub async fn before_fetch(&self, key: &CacheKey, deadline: Instant) -> Before {
        let names = self.names.of(key);
        if !self.lookups_allowed() {
            self.link.record(Op::lookup, OpResult::skipped);
            return Before::Fetch(Claim {
                names,
                generations: None,
                token: None,
            });
        }
        let token = format!(
            "{}-{}",
            self.origin,
            self.locks_taken.fetch_add(1, Ordering::Relaxed)
        );
        loop {
            match self.lookup(&names, &token).await {
                Ok(Looked::Hit(record, remaining)) => return Before::Hit { record, remaining },
                Ok(Looked::Miss {
                    generations,
                    locked: true,
                }) => {
                    return Before::Fetch(Claim {
                        names,
                        generations: Some(generations),
                        token: Some(token),
                    })
                }
                Ok(Looked::Miss { .. }) if Instant::now() + POLL_EVERY >= deadline => {
                    return Before::GaveUp
                }
                Ok(Looked::Miss { .. }) => tokio::time::sleep(POLL_EVERY).await,
                Ok(Looked::Unusable) | Err(_) => {
                    return Before::Fetch(Claim {
                        names,
                        generations: None,
                        token: None,
                    })
                }
            }
        }
    }

    /// After the fetch: stores `answer` (a cacheable one) under the claim's generations, and
    /// gives the lock back either way.
    pub async fn after_fetch(&self, claim: Claim, answer: Option<(&HeaderMap, &Bytes)>) {
        let Claim {
            names,
            generations,
            token,
        } = claim;
        match (generations, answer) {
            (Some(generations), Some((headers, body))) => {
                let record = record::encode(generations, self.ttl, headers, body);
                let mut invocation = self.scripts.store.prepare_invoke();
                invocation.key(&names.generations[..]).key(&names.entry);
                invocation.key(&names.lock);
                invocation.arg(&generations[..]).arg(record);
                invocation
                    .arg(millis(self.ttl))
                    .arg(token.as_deref().unwrap_or(""));
                let _ = self
                    .link
                    .call(Op::store, |mut connection| async move {
                        invocation.invoke_async::<i64>(&mut connection).await
                    })
                    .await;
            }
            _ => {
                if let Some(token) = token {
                    let mut invocation = self.scripts.release.prepare_invoke();
                    invocation.key(&names.lock).arg(token);
                    let _ = self
                        .link
                        .call(Op::release, |mut connection| async move {
                            invocation.invoke_async::<i64>(&mut connection).await
                        })
                        .await;
                }
            }
        }
    }

    /// Publishes a write's invalidations (and whether they purge) to every replica (the local
    /// bump is the caller's, made after taking `pending`); kept in the outbox when Redis does not
    /// take them.
    pub async fn invalidate(
        &self,
        targets: &[(Scope, Invalidate)],
        kind: WriteKind,
        pending: Pending,
    ) {
        let mut all: Vec<Bump> = Vec::new();
        for (scope, what) in targets {
            for bump in bumps(scope, *what, kind) {
                merge(&mut all, bump);
            }
        }
        if all.is_empty() {
            return;
        }
        if self.publish(&all).await.is_err() {
            self.hold(all);
            // Held: say so now, not at the next heartbeat (a PUBLISH is not refused under OOM).
            self.heartbeat().await;
        }
        drop(pending);
    }

    async fn lookup(&self, names: &KeyNames, token: &str) -> Result<Looked, Failed> {
        let mut invocation = self.scripts.lookup.prepare_invoke();
        invocation.key(&names.generations[..]).key(&names.entry);
        invocation
            .key(&names.lock)
            .arg(token)
            .arg(millis(self.lock_ttl));
        for _ in &names.generations {
            invocation.arg(delivery::fresh_token());
        }
        invocation.arg(millis(self.generation_ttl));
        type Reply = (i64, Vec<u8>, i64, String, String, String);
        let (found, entry, number, g1, g2, g3) = self
            .link
            .call(Op::lookup, |mut connection| async move {
                invocation.invoke_async::<Reply>(&mut connection).await
            })
            .await?;
        let parse = |g: &str| g.parse::<u64>().map_err(|_| Failed::Error);
        let generations = [parse(&g1)?, parse(&g2)?, parse(&g3)?];
        if found == 1 {
            return Ok(match record::decode(&entry) {
                Some(record) if number > 0 => {
                    self.link.found(true);
                    Looked::Hit(record, Duration::from_millis(number.unsigned_abs()))
                }
                // Current, but not a record (or without a TTL): nobody holds its lock, so
                // waiting would only wait; ask memU and store nothing.
                _ => {
                    self.rejected();
                    Looked::Unusable
                }
            });
        }
        self.link.found(false);
        Ok(Looked::Miss {
            generations,
            locked: number == 1,
        })
    }

    /// A record a lookup found was not an answer this replica would serve.
    pub fn rejected(&self) {
        self.link.record(Op::lookup, OpResult::rejected);
    }
}

pub(crate) fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

impl std::fmt::Debug for SharedTier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SharedTier")
            .field("link", &self.link.state())
            .field("stream_up", &self.stream.is_up())
            .finish_non_exhaustive()
    }
}

impl Collector for SharedTier {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        crate::metrics::gauge(
            &mut encoder,
            "shared_cache_up",
            "1 while the link to the shared cache tier answers",
            None,
            u64::from(self.link.is_up()),
        )?;
        crate::metrics::gauge(
            &mut encoder,
            "shared_cache_stream_up",
            "1 while the invalidation stream is subscribed",
            None,
            u64::from(self.stream.is_up()),
        )?;
        crate::metrics::gauge(
            &mut encoder,
            "shared_cache_outbox",
            "Writes waiting to be published to other replicas",
            None,
            self.outbox_len() as u64,
        )
    }
}
