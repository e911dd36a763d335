//! The near-duplicate index: (scope, route, parameters, content set) → the few cached queries
//! that share them. Bounded in bytes (a share of `cache.max_bytes`, weighed like the store's
//! entries), with at most [`BUCKET_CAPACITY`] queries a bucket; keys longer than
//! [`MAX_INDEXED_KEY_BYTES`] are not indexed at all (a spoken question is far shorter, and one
//! client's long distinct queries must not grow memory).

use std::collections::hash_map::RandomState;
use std::hash::BuildHasher;
use std::sync::Arc;

use quick_cache::sync::Cache;
use quick_cache::Weighter;

use super::Shape;
use crate::cache::key::CacheKey;

/// Most cached queries remembered per (scope, route, parameters, content set).
const BUCKET_CAPACITY: usize = 8;

/// Keys (query, parameters, scope) longer than this are answered by exact matches only.
pub const MAX_INDEXED_KEY_BYTES: usize = 2048;

/// Per-candidate bookkeeping counted by the weigher (the `Arc`s, vectors, map slot).
const CANDIDATE_OVERHEAD_BYTES: usize = 160;

#[derive(Clone)]
struct BucketWeighter;

impl Weighter<u64, Arc<[Candidate]>> for BucketWeighter {
    fn weight(&self, _: &u64, candidates: &Arc<[Candidate]>) -> u64 {
        candidates
            .iter()
            .map(|c| c.key.heap_bytes() + c.shape.heap_bytes() + CANDIDATE_OVERHEAD_BYTES)
            .sum::<usize>() as u64
    }
}

/// One cached query that later near-duplicates may be answered from.
#[derive(Debug, Clone)]
struct Candidate {
    key: CacheKey,
    shape: Arc<Shape>,
}

/// The bounded near-duplicate index.
pub struct SimilarIndex {
    buckets: Cache<u64, Arc<[Candidate]>, BucketWeighter>,
    hasher: RandomState,
}

impl SimilarIndex {
    /// An index holding at most `max_bytes`, as weighed.
    pub fn new(max_bytes: u64) -> Self {
        let estimated_buckets = usize::try_from(max_bytes / 1024)
            .unwrap_or(usize::MAX)
            .max(16);
        Self {
            buckets: Cache::with_weighter(estimated_buckets, max_bytes, BucketWeighter),
            hasher: RandomState::new(),
        }
    }

    /// Bytes held, as weighed.
    pub fn weight(&self) -> u64 {
        self.buckets.weight()
    }

    /// The bucket of `key` given its query's shape: every part of the key but the query text,
    /// plus the content set.
    fn bucket(&self, key: &CacheKey, shape: &Shape) -> u64 {
        self.hasher.hash_one((
            key.route,
            &key.path_and_query,
            &key.scope,
            &key.params,
            &shape.content,
        ))
    }

    /// Remembers a stored answer's key as a candidate for near-duplicates.
    pub fn insert(&self, key: &CacheKey) {
        let Some(query) = key.query.as_deref() else {
            return;
        };
        if key.heap_bytes() > MAX_INDEXED_KEY_BYTES {
            return;
        }
        let shape = Shape::of(query);
        let bucket = self.bucket(key, &shape);
        let mut candidates: Vec<Candidate> = self
            .buckets
            .get(&bucket)
            .map(|c| c.iter().filter(|c| c.key != *key).cloned().collect())
            .unwrap_or_default();
        if candidates.len() >= BUCKET_CAPACITY {
            candidates.remove(0);
        }
        candidates.push(Candidate {
            key: key.clone(),
            shape: Arc::new(shape),
        });
        self.buckets.insert(bucket, candidates.into());
    }

    /// The keys of cached queries at least `threshold` similar to `key`'s, best first.
    pub fn find(&self, key: &CacheKey, threshold: f64) -> Vec<CacheKey> {
        let Some(query) = key.query.as_deref() else {
            return Vec::new();
        };
        let shape = Shape::of(query);
        let Some(candidates) = self.buckets.get(&self.bucket(key, &shape)) else {
            return Vec::new();
        };
        let mut scored: Vec<(f64, &Candidate)> = candidates
            .iter()
            .filter(|c| c.key != *key && same_family(&c.key, key))
            .map(|c| (shape.similarity(&c.shape), c))
            .filter(|(score, _)| *score >= threshold)
            .collect();
        scored.sort_by(|a, b| b.0.total_cmp(&a.0));
        scored.into_iter().map(|(_, c)| c.key.clone()).collect()
    }

    pub fn len(&self) -> usize {
        self.buckets.len()
    }

    pub fn is_empty(&self) -> bool {
        self.buckets.is_empty()
    }
}

/// Everything but the query text is equal: the bucket hash is only 64 bits, and a collision must
/// never serve another scope's answer.
fn same_family(a: &CacheKey, b: &CacheKey) -> bool {
    a.route == b.route
        && a.path_and_query == b.path_and_query
        && a.scope == b.scope
        && a.params == b.params
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cache::key::read_key;
    use crate::routes::ReadRoute;

    fn key(query: &str) -> CacheKey {
        let body = serde_json::json!({"user_id": "u", "agent_id": "a", "query": query, "top_k": 3});
        read_key(
            ReadRoute::V1_RELATED,
            "/p",
            None,
            body.to_string().as_bytes(),
        )
        .unwrap()
        .key
    }

    #[test]
    fn the_index_finds_near_duplicates_within_the_same_scope_and_parameters_only() {
        let index = SimilarIndex::new(1 << 20);
        index.insert(&key("今天天气怎么样"));
        assert_eq!(
            index.find(&key("今天天气怎么样呀"), 0.9),
            vec![key("今天天气怎么样")]
        );
        assert!(index.find(&key("明天天气怎么样呀"), 0.9).is_empty());
        let other_user = serde_json::json!({"user_id": "v", "agent_id": "a", "query": "今天天气怎么样呀", "top_k": 3});
        let other_user = read_key(
            ReadRoute::V1_RELATED,
            "/p",
            None,
            other_user.to_string().as_bytes(),
        )
        .unwrap()
        .key;
        assert!(index.find(&other_user, 0.9).is_empty());
        let other_top_k = serde_json::json!({"user_id": "u", "agent_id": "a", "query": "今天天气怎么样呀", "top_k": 4});
        let other_top_k = read_key(
            ReadRoute::V1_RELATED,
            "/p",
            None,
            other_top_k.to_string().as_bytes(),
        )
        .unwrap()
        .key;
        assert!(index.find(&other_top_k, 0.9).is_empty());
    }

    #[test]
    fn the_index_stays_within_its_bytes() {
        let index = SimilarIndex::new(64 * 1024);
        for i in 0..5000 {
            index.insert(&key(&format!("question number {i} about my cat")));
        }
        assert!(index.weight() <= 64 * 1024, "{}", index.weight());
        assert!(index.len() > 10, "it holds what fits: {}", index.len());
    }

    #[test]
    fn long_keys_are_not_indexed() {
        let index = SimilarIndex::new(1 << 20);
        let long = format!("tell me about {}", "cats and dogs ".repeat(200));
        index.insert(&key(&long));
        assert_eq!(index.len(), 0);
        assert_eq!(index.weight(), 0);
        assert!(index.find(&key(&format!("{long} please")), 0.5).is_empty());
    }
}
