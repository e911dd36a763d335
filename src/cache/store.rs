//! The answer store: a byte-bounded quick_cache of upstream 200 JSON answers.
//!
//! quick_cache has no clock, so every entry carries its own (`stored_at`, `fresh_until`) on
//! `tokio::time::Instant` (paused-time tests work) and the [`Generations`] read when its fetch
//! started. A lookup decides from those: Fresh (a hit), Revalidate (past the TTL but within the
//! stale-while-revalidate window: served at once while a refresh runs), or Miss. An entry past
//! its TTL, or superseded by an invalidation, may still be served by [`Store::stale_if_error`]
//! when memU cannot answer, within the stale-if-error window, but never as a normal hit; an
//! entry that predates a purge (a delete since its fetch started) is never served at all.
//! Entries are weighed in bytes (body, headers, key, bookkeeping) so `max_bytes` means bytes.
//! The store exports its size and evictions at scrape time (its [`Collector`]).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, HeaderValue};
use prometheus_client::collector::Collector;
use prometheus_client::encoding::DescriptorEncoder;
use prometheus_client::registry::Unit;
use quick_cache::sync::Cache;
use quick_cache::{DefaultHashBuilder, Lifecycle, Weighter};
use tokio::time::Instant;

use super::generations::Generations;
use super::key::CacheKey;
use crate::metrics;

/// One stored answer.
#[derive(Debug, PartialEq)]
pub struct Entry {
    pub body: Bytes,
    /// The upstream's end-to-end response headers, replayed on hits.
    pub headers: HeaderMap,
    pub generations: Generations,
    pub stored_at: Instant,
    pub fresh_until: Instant,
}

impl Entry {
    /// An answer `age` old as of `now`, fresh for `fresh_for` more; `body` and `headers` must own
    /// their buffers (see [`Store::admit`]).
    pub fn aged(
        body: Bytes,
        headers: HeaderMap,
        generations: Generations,
        now: Instant,
        age: Duration,
        fresh_for: Duration,
    ) -> Self {
        Self {
            body,
            headers,
            generations,
            stored_at: now.checked_sub(age).unwrap_or(now),
            fresh_until: now + fresh_for,
        }
    }
}

/// What a lookup found.
#[derive(Debug)]
pub enum Lookup {
    Fresh(Arc<Entry>),
    /// Past its TTL but within the stale-while-revalidate window, and not superseded.
    Revalidate(Arc<Entry>),
    /// Absent, expired beyond the revalidate window, or superseded by an invalidation.
    Miss,
}

/// What [`Store::stale_if_error`] found.
#[derive(Debug)]
pub enum Stale {
    /// An answer to stand in for memU's.
    Serve(Arc<Entry>),
    /// An answer within the window, ruled out because a purge came after its fetch started.
    Purged,
    /// Nothing within the window.
    None,
}

/// How long entries are served, relative to when they were stored.
#[derive(Debug, Clone, Copy)]
pub struct Lifetimes {
    pub ttl: Duration,
    pub stale_while_revalidate: Duration,
    pub stale_if_error: Duration,
}

/// Fixed per-entry overhead counted by the weigher (map slot, `Entry`, `Arc`, header map).
const ENTRY_OVERHEAD_BYTES: u64 = 256;

#[derive(Clone)]
struct ByteWeighter;

impl Weighter<CacheKey, Arc<Entry>> for ByteWeighter {
    fn weight(&self, key: &CacheKey, entry: &Arc<Entry>) -> u64 {
        let headers: usize = entry
            .headers
            .iter()
            .map(|(name, value)| name.as_str().len() + value.len() + 16)
            .sum();
        (entry.body.len() + headers + key.heap_bytes()) as u64 + ENTRY_OVERHEAD_BYTES
    }
}

/// Counts evictions (and oversized rejections) for `/metrics`.
#[derive(Clone, Default)]
struct EvictionCounter(Arc<AtomicU64>);

impl Lifecycle<CacheKey, Arc<Entry>> for EvictionCounter {
    type RequestState = ();

    fn on_evict(&self, _: &mut (), _: CacheKey, _: Arc<Entry>) {
        self.0.fetch_add(1, Ordering::Relaxed);
    }
}

/// The bounded answer cache.
pub struct Store {
    cache: Cache<CacheKey, Arc<Entry>, ByteWeighter, DefaultHashBuilder, EvictionCounter>,
    evictions: Arc<AtomicU64>,
    lifetimes: Lifetimes,
}

impl Store {
    /// A store holding at most `max_bytes`, serving entries for the given `lifetimes`.
    pub fn new(max_bytes: u64, lifetimes: Lifetimes) -> Self {
        let evictions = EvictionCounter::default();
        let estimated_items = usize::try_from(max_bytes / 2048)
            .unwrap_or(usize::MAX)
            .max(16);
        Self {
            cache: Cache::with(
                estimated_items,
                max_bytes,
                ByteWeighter,
                DefaultHashBuilder::default(),
                evictions.clone(),
            ),
            evictions: evictions.0,
            lifetimes,
        }
    }

    /// Looks `key` up as of `now`, valid only for the `current` generations of its scope.
    pub fn lookup(&self, key: &CacheKey, current: Generations, now: Instant) -> Lookup {
        match self.cache.get(key) {
            Some(entry) if entry.generations == current && now < entry.fresh_until => {
                Lookup::Fresh(entry)
            }
            Some(entry)
                if entry.generations == current
                    && now < entry.fresh_until + self.lifetimes.stale_while_revalidate =>
            {
                Lookup::Revalidate(entry)
            }
            _ => Lookup::Miss,
        }
    }

    /// An answer for `key` to serve instead of the empty fallback: past its TTL or superseded,
    /// but within the stale-if-error window and not older than a purge of its scope (`purges`,
    /// as [`Scopes::purges_of`](super::Scopes::purges_of) reads them).
    pub fn stale_if_error(&self, key: &CacheKey, purges: &Generations, now: Instant) -> Stale {
        match self.cache.get(key) {
            Some(entry) if now >= entry.fresh_until + self.lifetimes.stale_if_error => Stale::None,
            Some(entry) if entry.generations.predates(purges) => Stale::Purged,
            Some(entry) => Stale::Serve(entry),
            None => Stale::None,
        }
    }

    /// Stores an answer whose fetch started under `generations`. An answer that predates a write
    /// is stored all the same: its generations no longer match, so it is never a hit.
    ///
    /// The body and header values are copied into allocations of their own size: as hyper hands
    /// them over they are slices of its read buffers, and keeping a slice keeps the whole buffer,
    /// many times what the entry is weighed at.
    pub fn admit(
        &self,
        key: CacheKey,
        body: &Bytes,
        headers: &HeaderMap,
        generations: Generations,
        now: Instant,
    ) {
        let entry = Entry {
            body: Bytes::copy_from_slice(body),
            headers: compact(headers),
            generations,
            stored_at: now,
            fresh_until: now + self.lifetimes.ttl,
        };
        self.cache.insert(key, Arc::new(entry));
    }

    /// Stores an entry built elsewhere (an answer from the shared tier, with its own age and
    /// remaining TTL), whose buffers are already its own.
    pub fn insert(&self, key: CacheKey, entry: Arc<Entry>) {
        self.cache.insert(key, entry);
    }

    /// True when `key` holds an answer valid for the `current` generations: a slower fetch that
    /// started before a write must not replace it.
    pub fn holds_current(&self, key: &CacheKey, current: Generations) -> bool {
        self.cache
            .peek(key)
            .is_some_and(|entry| entry.generations == current)
    }

    /// How long entries are served.
    pub fn lifetimes(&self) -> Lifetimes {
        self.lifetimes
    }

    pub fn len(&self) -> usize {
        self.cache.len()
    }

    pub fn is_empty(&self) -> bool {
        self.cache.is_empty()
    }

    /// Bytes currently held, as weighed.
    pub fn weight(&self) -> u64 {
        self.cache.weight()
    }

    pub fn evictions(&self) -> u64 {
        self.evictions.load(Ordering::Relaxed)
    }
}

/// A copy of `headers` that shares no buffer with them.
fn compact(headers: &HeaderMap) -> HeaderMap {
    let mut copy = HeaderMap::with_capacity(headers.len());
    for (name, value) in headers {
        let mut owned = HeaderValue::from_bytes(value.as_bytes()).unwrap_or_else(|_| value.clone());
        owned.set_sensitive(value.is_sensitive());
        copy.append(name.clone(), owned);
    }
    copy
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("entries", &self.len())
            .field("weight", &self.weight())
            .field("lifetimes", &self.lifetimes)
            .finish_non_exhaustive()
    }
}

impl Collector for Store {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        metrics::counter(
            &mut encoder,
            "cache_evictions",
            "Entries evicted to stay within cache.max_bytes",
            self.evictions(),
        )?;
        metrics::gauge(
            &mut encoder,
            "cache_entries",
            "Entries in the cache",
            None,
            self.len() as u64,
        )?;
        metrics::gauge(
            &mut encoder,
            "cache",
            "Weighed size of the cache",
            Some(&Unit::Bytes),
            self.weight(),
        )
    }
}

#[cfg(test)]
mod tests;
