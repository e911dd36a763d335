//! The key memo: a retrieval's raw inputs (route, path and query string, tenant digest, body
//! bytes) → its [`KeyedRead`] and generation [`ReadSlots`], so an exact repeat of a request skips
//! the JSON parse, the query's normalisation, the canonical parameter text and the two slot
//! digests. Clients repeat themselves byte for byte (the SDK serialises the same question the
//! same way every time; a prewarm and the turn it prepares send the same body), and those steps
//! were most of a cache hit's own work.
//!
//! A key is a pure function of these inputs (`key.rs`), so a memoised key is never stale and
//! needs no invalidation: generations are read afresh for every request. The match is exact
//! (the whole body and path compared, the tenant by its SHA-256 digest, never the credential),
//! so two requests share a memo entry only when they would have built the same key anyway.
//!
//! Bounded in bytes (a share of `cache.max_bytes`, `state.rs`); bodies over
//! [`MAX_MEMO_BODY_BYTES`] and requests that cannot be keyed are not memoised.

use std::hash::{Hash, Hasher};
use std::sync::Arc;

use bytes::Bytes;
use quick_cache::sync::Cache;
use quick_cache::{Equivalent, Weighter};

use super::generations::ReadSlots;
use super::key::{read_key, KeyedRead};
use super::target::{request_tenant, Tenant};
use crate::routes::ReadRoute;

/// Bodies larger than this are keyed every time: a long body is rarely repeated exactly, and
/// keying it is cheap next to receiving it.
pub const MAX_MEMO_BODY_BYTES: usize = 2048;

/// Bookkeeping per memo entry beyond the text it holds: the stored inputs and the keyed read
/// themselves, the `Arc`'s counts, the cache's slot, and the allocator's rounding of the eight
/// small allocations an entry makes (body, path, the key's path, user, agent, query and
/// parameters, the raw query).
const MEMO_OVERHEAD_BYTES: u64 =
    (std::mem::size_of::<Raw>() + std::mem::size_of::<Keyed>() + 16 + 64 + 8 * 16) as u64;

/// A keyed retrieval and the generation slots it depends on.
#[derive(Debug)]
pub struct Keyed {
    pub read: KeyedRead,
    pub slots: ReadSlots,
}

impl Keyed {
    /// Keys a request's parsed inputs (`None`: not cacheable) and derives its slots.
    fn new(route: ReadRoute, path_and_query: &str, tenant: Tenant, body: &[u8]) -> Option<Self> {
        let read = read_key(route, path_and_query, tenant, body)?;
        let slots = ReadSlots::of(&read.key.scope);
        Some(Self { read, slots })
    }
}

/// The raw inputs of one retrieval, as stored.
struct Raw {
    route: ReadRoute,
    tenant: Tenant,
    path_and_query: Box<str>,
    body: Bytes,
}

/// The raw inputs of one retrieval, borrowed from the request, to look up without copying.
struct RawRef<'a> {
    route: ReadRoute,
    tenant: &'a Tenant,
    path_and_query: &'a str,
    body: &'a [u8],
}

/// The one hash both forms use, so a borrowed lookup finds the stored entry.
fn hash_raw<H: Hasher>(raw: &RawRef<'_>, state: &mut H) {
    raw.route.hash(state);
    raw.tenant.hash(state);
    raw.path_and_query.hash(state);
    raw.body.hash(state);
}

impl Raw {
    fn as_ref(&self) -> RawRef<'_> {
        RawRef {
            route: self.route,
            tenant: &self.tenant,
            path_and_query: &self.path_and_query,
            body: &self.body,
        }
    }
}

impl Hash for Raw {
    fn hash<H: Hasher>(&self, state: &mut H) {
        hash_raw(&self.as_ref(), state);
    }
}

impl Hash for RawRef<'_> {
    fn hash<H: Hasher>(&self, state: &mut H) {
        hash_raw(self, state);
    }
}

impl Equivalent<Raw> for RawRef<'_> {
    fn equivalent(&self, stored: &Raw) -> bool {
        self.route == stored.route
            && *self.tenant == stored.tenant
            && self.path_and_query == &*stored.path_and_query
            && self.body == &stored.body[..]
    }
}

impl PartialEq for Raw {
    fn eq(&self, other: &Self) -> bool {
        self.as_ref().equivalent(other)
    }
}

impl Eq for Raw {}

#[derive(Clone)]
struct MemoWeighter;

impl Weighter<Raw, Arc<Keyed>> for MemoWeighter {
    fn weight(&self, raw: &Raw, keyed: &Arc<Keyed>) -> u64 {
        let read = &keyed.read;
        let held = raw.path_and_query.len()
            + raw.body.len()
            + read.key.heap_bytes()
            + read.raw_query.as_ref().map_or(0, String::len);
        held as u64 + MEMO_OVERHEAD_BYTES
    }
}

/// The bounded memo of keyed retrievals.
pub struct KeyMemo {
    cache: Cache<Raw, Arc<Keyed>, MemoWeighter>,
}

impl KeyMemo {
    /// A memo holding at most `max_bytes`.
    pub fn new(max_bytes: u64) -> Self {
        let estimated_items = usize::try_from(max_bytes / 512)
            .unwrap_or(usize::MAX)
            .max(16);
        Self {
            cache: Cache::with_weighter(estimated_items, max_bytes.max(1), MemoWeighter),
        }
    }

    /// The key of a retrieval request (`None`: not cacheable), from the memo when this exact
    /// request was keyed before.
    pub fn keyed(
        &self,
        route: ReadRoute,
        parts: &http::request::Parts,
        body: &[u8],
    ) -> Option<Arc<Keyed>> {
        let path_and_query = parts.uri.path_and_query().map_or("/", |pq| pq.as_str());
        let tenant = request_tenant(&parts.headers);
        let memoised = body.len() <= MAX_MEMO_BODY_BYTES;
        let raw = RawRef {
            route,
            tenant: &tenant,
            path_and_query,
            body,
        };
        if let Some(keyed) = memoised.then(|| self.cache.get(&raw)).flatten() {
            return Some(keyed);
        }
        let keyed = Arc::new(Keyed::new(route, path_and_query, tenant, body)?);
        if memoised {
            let raw = Raw {
                route,
                tenant,
                path_and_query: path_and_query.into(),
                // An exact-size copy: a slice would pin the request's whole read buffer.
                body: Bytes::copy_from_slice(body),
            };
            self.cache.insert(raw, Arc::clone(&keyed));
        }
        Some(keyed)
    }

    /// Entries held, for tests.
    pub fn len(&self) -> usize {
        self.cache.len()
    }

    /// Whether the memo holds nothing.
    pub fn is_empty(&self) -> bool {
        self.cache.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cache::key::request_key;

    const PATH: &str = "/api/v1/memory/retrieve/related-memory-items";
    const BODY: &str =
        r#"{"user_id":"u1","agent_id":"a1","query":"What pets do I like?","top_k":3}"#;

    fn parts(path: &str, authorization: Option<&str>) -> http::request::Parts {
        let mut request = http::Request::post(path);
        if let Some(value) = authorization {
            request = request.header("authorization", value);
        }
        request.body(()).unwrap().into_parts().0
    }

    fn keyed(memo: &KeyMemo, path: &str, auth: Option<&str>, body: &str) -> Option<Arc<Keyed>> {
        memo.keyed(ReadRoute::V1_RELATED, &parts(path, auth), body.as_bytes())
    }

    #[test]
    fn an_exact_repeat_is_answered_from_the_memo_with_the_same_key_and_slots() {
        let memo = KeyMemo::new(1 << 20);
        let first = keyed(&memo, PATH, Some("Bearer a"), BODY).unwrap();
        assert_eq!(memo.len(), 1);
        let again = keyed(&memo, PATH, Some("Bearer a"), BODY).unwrap();
        assert!(
            Arc::ptr_eq(&first, &again),
            "the repeat is the memoised value"
        );
        let fresh = request_key(
            ReadRoute::V1_RELATED,
            &parts(PATH, Some("Bearer a")),
            BODY.as_bytes(),
        )
        .unwrap();
        assert_eq!(again.read.key, fresh.key);
        assert_eq!(again.read.raw_query, fresh.raw_query);
        assert_eq!(again.slots, ReadSlots::of(&fresh.key.scope));
    }

    #[test]
    fn every_raw_input_tells_entries_apart() {
        let memo = KeyMemo::new(1 << 20);
        let base = keyed(&memo, PATH, Some("Bearer a"), BODY).unwrap();
        let other_user = BODY.replace("u1", "u2");
        let others = [
            keyed(&memo, PATH, Some("Bearer b"), BODY),
            keyed(&memo, PATH, None, BODY),
            keyed(&memo, &format!("{PATH}?x=1"), Some("Bearer a"), BODY),
            keyed(&memo, PATH, Some("Bearer a"), &other_user),
        ];
        for other in &others {
            assert_ne!(other.as_ref().unwrap().read.key, base.read.key);
        }
        assert_eq!(memo.len(), 5);
        // The same key from different bytes: two memo entries, one cache key.
        let respaced = BODY.replace(',', ", ");
        let same = keyed(&memo, PATH, Some("Bearer a"), &respaced).unwrap();
        assert_eq!(same.read.key, base.read.key);
        assert!(!Arc::ptr_eq(&same, &base));
    }

    #[test]
    fn uncacheable_and_long_bodies_are_not_memoised() {
        let memo = KeyMemo::new(1 << 20);
        assert!(keyed(&memo, PATH, None, "not json").is_none());
        assert!(keyed(&memo, PATH, None, r#"{"query":"no user"}"#).is_none());
        let long = BODY.replace("What pets", &"very ".repeat(500));
        assert!(long.len() > MAX_MEMO_BODY_BYTES);
        assert!(keyed(&memo, PATH, None, &long).is_some());
        assert!(memo.is_empty());
    }

    #[test]
    fn the_memo_stays_within_its_bytes() {
        let memo = KeyMemo::new(64 * 1024);
        for i in 0..10_000 {
            let body = BODY.replace("What pets", &format!("question {i}"));
            keyed(&memo, PATH, None, &body).unwrap();
        }
        assert!(memo.cache.weight() <= 64 * 1024, "{}", memo.cache.weight());
        assert!(memo.len() > 50, "{} entries kept", memo.len());
    }
}
