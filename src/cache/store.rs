//! The answer store: a byte-bounded quick_cache of upstream 200 JSON answers.
//!
//! quick_cache has no clock, so every entry carries its own (`stored_at`, `fresh_until`) on
//! `tokio::time::Instant` (paused-time tests work) and the [`Generations`] read when its fetch
//! started. A lookup decides Fresh / Expired / Superseded from those; only Fresh is a hit.
//! Entries are weighed in bytes (body, headers, key, bookkeeping) so `max_bytes` means bytes.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::HeaderMap;
use quick_cache::sync::Cache;
use quick_cache::{DefaultHashBuilder, Lifecycle, Weighter};
use tokio::time::Instant;

use super::key::CacheKey;
use super::scope::Generations;

/// One stored answer.
#[derive(Debug)]
pub struct Entry {
    pub body: Bytes,
    /// The upstream's end-to-end response headers, replayed on hits.
    pub headers: HeaderMap,
    pub generations: Generations,
    pub stored_at: Instant,
    pub fresh_until: Instant,
}

/// What a lookup found.
#[derive(Debug)]
pub enum Lookup {
    Fresh(Arc<Entry>),
    /// Present but unusable as a hit: past its TTL, or its scope was invalidated since.
    Unusable,
    Miss,
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
    ttl: Duration,
}

impl Store {
    /// A store holding at most `max_bytes`, serving entries as fresh for `ttl`.
    pub fn new(max_bytes: u64, ttl: Duration) -> Self {
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
            ttl,
        }
    }

    /// Looks `key` up as of `now`, valid only for the `current` generations of its scope.
    pub fn lookup(&self, key: &CacheKey, current: Generations, now: Instant) -> Lookup {
        match self.cache.get(key) {
            None => Lookup::Miss,
            Some(entry) if entry.generations == current && now < entry.fresh_until => {
                Lookup::Fresh(entry)
            }
            Some(_) => Lookup::Unusable,
        }
    }

    /// Stores an answer whose fetch started under `generations`. An answer that predates a write
    /// is stored all the same: its generations no longer match, so it is never a hit.
    pub fn admit(
        &self,
        key: CacheKey,
        body: Bytes,
        headers: HeaderMap,
        generations: Generations,
        now: Instant,
    ) {
        let entry = Entry {
            body,
            headers,
            generations,
            stored_at: now,
            fresh_until: now + self.ttl,
        };
        self.cache.insert(key, Arc::new(entry));
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cache::key::{read_key, tenant_of};
    use crate::routes::ReadRoute;

    fn key(n: usize) -> CacheKey {
        let body = format!(r#"{{"user_id":"u","query":"q{n}"}}"#);
        read_key(
            ReadRoute::RelatedMemoryItems,
            "/p",
            tenant_of(None),
            body.as_bytes(),
        )
        .unwrap()
        .key
    }

    const GEN: Generations = Generations { scope: 0, user: 0 };

    #[tokio::test(start_paused = true)]
    async fn entries_expire_after_the_ttl() {
        let store = Store::new(1 << 20, Duration::from_secs(300));
        store.admit(
            key(1),
            Bytes::from_static(b"{}"),
            HeaderMap::new(),
            GEN,
            Instant::now(),
        );
        assert!(matches!(
            store.lookup(&key(1), GEN, Instant::now()),
            Lookup::Fresh(_)
        ));
        tokio::time::advance(Duration::from_secs(299)).await;
        assert!(matches!(
            store.lookup(&key(1), GEN, Instant::now()),
            Lookup::Fresh(_)
        ));
        tokio::time::advance(Duration::from_secs(1)).await;
        assert!(matches!(
            store.lookup(&key(1), GEN, Instant::now()),
            Lookup::Unusable
        ));
    }

    #[test]
    fn superseded_generations_are_not_hits() {
        let store = Store::new(1 << 20, Duration::from_secs(300));
        let now = Instant::now();
        store.admit(
            key(1),
            Bytes::from_static(b"{}"),
            HeaderMap::new(),
            GEN,
            now,
        );
        let later = Generations { scope: 1, user: 0 };
        assert!(matches!(
            store.lookup(&key(1), later, now),
            Lookup::Unusable
        ));
        assert!(matches!(store.lookup(&key(2), GEN, now), Lookup::Miss));
    }

    #[test]
    fn the_store_stays_within_its_byte_bound() {
        let max = 64 * 1024;
        let store = Store::new(max, Duration::from_secs(300));
        let body = Bytes::from(vec![b'x'; 1000]);
        for n in 0..1000 {
            store.admit(key(n), body.clone(), HeaderMap::new(), GEN, Instant::now());
            assert!(store.weight() <= max, "weight {} after {n}", store.weight());
        }
        assert!(store.evictions() > 0);
        assert!(store.len() < 1000);
    }
}
