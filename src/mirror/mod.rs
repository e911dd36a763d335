//! The memory mirror: per scope, the memory items the proxy has seen in memU's own answers, so a
//! read memU cannot answer in time gets the items most relevant to its query instead of nothing.
//!
//! Fed by every answer the cache admits (`fetch.rs`), so only answers fetched after the last purge
//! of their scope (an answer that raced a delete is never admitted). Kept per (tenant, user,
//! agent, generation): one scope's items never appear in another scope's answer. Each scope's set
//! records the generations it was started under; a purge of its slots since (a delete, a clear)
//! empties it ([`Generations::predates`]), so nothing from before a purge comes back through a
//! local answer. Bounded in bytes (its own share of `cache.max_bytes`), least recently used
//! scope out first, and at most [`MAX_ITEMS`] items per scope (the least recently seen out).
//!
//! Every generation is mirrored, each in its own set (their shapes differ): where its answers
//! hold items is `items.rs`. Each generation's query-bearing read is answered (v1/v2
//! `related-memory-items`, v3 `retrieve`, v4 `search`, memU-server `/retrieve`): ranking is
//! lexical (`rank.rs`), done once in `answer.rs`, and the route's shape built in `shapes.rs`.
//! memU-server's `/retrieve` reads every user's memories, so its set is the tenant's
//! [`Scope::global`] one, fed by `/retrieve` answers and by every user's `/categories` answers
//! ([`also_read_by`]); any `/clear` empties it. With `[local_answers] embeddings_url`, items and
//! queries also have vectors (`embed.rs`), and an item with one ranks by cosine.

mod answer;
mod embed;
mod items;
mod rank;
mod rewarm;
mod shapes;

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::DescriptorEncoder;
use prometheus_client::registry::Unit;
use quick_cache::sync::Cache;
use quick_cache::Weighter;
use serde_json::Value;
use tokio::time::Instant;

use crate::cache::{CacheKey, Generations, Invalidate, KeyedRead, Scope};
use crate::metrics;
use crate::routes::{table, Generation, ReadRoute};

pub use answer::{local_answer, Asked};
pub use embed::{Embedder, QueryVector, Vector};
pub use items::{items_of, Kind};
pub use rank::Ranked;
pub use rewarm::Rewarm;

/// Most items kept per scope.
pub const MAX_ITEMS: usize = 256;

/// One memory as memU sent it.
#[derive(Debug, Clone, PartialEq)]
pub struct Item {
    /// Which list of its generation's answers it belongs in.
    pub kind: Kind,
    /// memU's id, or one derived from its content (`items.rs`).
    pub id: Box<str>,
    /// What ranking reads (`items.rs`: the content, summary or text).
    pub text: Box<str>,
    /// The item exactly as memU sent it (after this replica's `compat` repairs).
    pub json: Value,
    /// The terms it is found by (`rank.rs`).
    pub terms: Vec<Box<str>>,
}

/// The items of one scope, and the generations its set was started under.
#[derive(Debug, Clone)]
pub struct ScopeItems {
    pub since: Generations,
    /// Most recently seen last.
    pub items: Vec<Item>,
}

/// Whose items: the scope and the generation (their shapes differ).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Key {
    scope: Scope,
    generation: Generation,
}

#[derive(Clone)]
struct ByteWeighter;

impl Weighter<Key, Arc<ScopeItems>> for ByteWeighter {
    fn weight(&self, key: &Key, items: &Arc<ScopeItems>) -> u64 {
        let key_bytes = key.scope.user.len() + key.scope.agent.as_ref().map_or(0, |a| a.len());
        let items: usize = items.items.iter().map(item_bytes).sum();
        (key_bytes + items + 128) as u64
    }
}

/// An item's weight: its text, its JSON (about twice its text, measured on memU's items), terms.
fn item_bytes(item: &Item) -> usize {
    let terms: usize = item.terms.iter().map(|t| t.len() + 16).sum();
    item.id.len() + 3 * item.text.len() + terms + 256
}

/// Most scopes whose listing time is remembered (`listing.rs`).
const MAX_LISTED: usize = 16_384;

/// Most distinct reads remembered per user (all agents) for re-warming (`listing.rs`).
const RECENT_READS: usize = 8;
/// Largest read body remembered for re-warming.
const MAX_RECENT_BODY: usize = 4096;

/// A read of a scope, remembered to fetch again after a write (no credentials kept).
#[derive(Debug, Clone)]
pub struct RecentRead {
    key: CacheKey,
    pub path: Box<str>,
    pub body: Bytes,
    asked: u32,
}

impl RecentRead {
    /// The read's route.
    pub fn route(&self) -> ReadRoute {
        self.key.route
    }
}

/// The mirror.
pub struct Mirror {
    scopes: Cache<Key, Arc<ScopeItems>, ByteWeighter>,
    /// When each scope's listing was last started.
    listed: Cache<Key, Instant>,
    /// When each scope was last re-warmed.
    rewarmed: Cache<Key, Instant>,
    /// Each scope's most recent distinct reads, most recent last.
    reads: Cache<Key, Arc<Vec<RecentRead>>>,
    /// The items' and queries' vectors, when `[local_answers] embeddings_url` is set.
    embedder: Option<Arc<Embedder>>,
}

impl Mirror {
    /// Items take at most `max_bytes`; `embedder`'s vectors are weighed apart.
    pub fn new(max_bytes: u64, embedder: Option<Arc<Embedder>>) -> Self {
        let estimated = usize::try_from(max_bytes / 8192)
            .unwrap_or(usize::MAX)
            .max(16);
        Self {
            scopes: Cache::with_weighter(estimated, max_bytes.max(1), ByteWeighter),
            listed: Cache::new(MAX_LISTED),
            rewarmed: Cache::new(MAX_LISTED),
            reads: Cache::new(MAX_LISTED),
            embedder,
        }
    }

    /// Starts embedding `query` while memU is asked, when embeddings are on.
    pub fn ask(&self, query: &str) -> Option<QueryVector> {
        Some(self.embedder.as_ref()?.ask(query))
    }

    /// The vector of each of `set`'s items that has one, by index (empty without embeddings).
    pub fn vectors(&self, set: &ScopeItems) -> Vec<Option<Vector>> {
        let Some(embedder) = &self.embedder else {
            return Vec::new();
        };
        set.items
            .iter()
            .map(|item| embedder.vector(&item.text))
            .collect()
    }

    /// True when `scope` was not re-warmed within `every` (then it is remembered as re-warmed now).
    pub fn rewarm_due(
        &self,
        route: ReadRoute,
        scope: &Scope,
        every: Duration,
        now: Instant,
    ) -> bool {
        let key = Key {
            scope: scope.clone(),
            generation: route.generation,
        };
        if self.rewarmed.get(&key).is_some_and(|at| now < at + every) {
            return false;
        }
        self.rewarmed.insert(key, now);
        true
    }

    /// Remembers a read of its scope (its path and body, not its credentials), among its user's.
    pub fn note_read(&self, read: &KeyedRead, path: &str, body: &Bytes) {
        if body.len() > MAX_RECENT_BODY {
            return;
        }
        let key = Key {
            scope: user_of(&read.key.scope),
            generation: read.key.route.generation,
        };
        let mut reads = self
            .reads
            .get(&key)
            .map(|r| (*r).clone())
            .unwrap_or_default();
        let asked = match reads.iter().position(|r| r.key == read.key) {
            Some(at) => reads.remove(at).asked.saturating_add(1),
            None => 1,
        };
        reads.push(RecentRead {
            key: read.key.clone(),
            path: path.into(),
            body: Bytes::copy_from_slice(body),
            asked,
        });
        let over = reads.len().saturating_sub(RECENT_READS);
        reads.drain(..over);
        self.reads.insert(key, Arc::new(reads));
    }

    /// The most recent reads a write of `scope` changed (`what`: of the scope and of its user
    /// without an agent, or of every agent of its user) that were asked more than once, at most
    /// `n`.
    pub fn repeated_reads(
        &self,
        route: ReadRoute,
        scope: &Scope,
        what: Invalidate,
        n: usize,
    ) -> Vec<RecentRead> {
        let key = Key {
            scope: user_of(scope),
            generation: route.generation,
        };
        let Some(reads) = self.reads.get(&key) else {
            return Vec::new();
        };
        let changed = |read: &Scope| match what {
            Invalidate::Agent => read.agent.is_none() || read.agent == scope.agent,
            Invalidate::AllAgents | Invalidate::Everything => true,
        };
        reads
            .iter()
            .rev()
            .filter(|r| r.asked > 1 && changed(&r.key.scope))
            .take(n)
            .cloned()
            .collect()
    }

    /// True the first time `scope` is seen within `ttl` (then it is remembered as listed now).
    pub fn first_sight(
        &self,
        route: ReadRoute,
        scope: &Scope,
        ttl: Duration,
        now: Instant,
    ) -> bool {
        let key = Key {
            scope: scope.clone(),
            generation: route.generation,
        };
        if self.listed.get(&key).is_some_and(|at| now < at + ttl) {
            return false;
        }
        self.listed.insert(key, now);
        true
    }

    /// Takes the items out of an answer of `route` for `scope` that the cache admitted, fetched
    /// under `generations`, with `purges` the scope's purge marks now.
    pub fn observe(
        &self,
        route: ReadRoute,
        scope: &Scope,
        body: &[u8],
        generations: Generations,
        purges: &Generations,
    ) {
        if generations.predates(purges) {
            return;
        }
        let Ok(answer) = serde_json::from_slice::<Value>(body) else {
            return;
        };
        let found = items_of(route.generation, &answer);
        if found.is_empty() {
            return;
        }
        let key = Key {
            scope: scope.clone(),
            generation: route.generation,
        };
        let mut set = match self.scopes.get(&key) {
            Some(set) if !set.since.predates(purges) => (*set).clone(),
            _ => ScopeItems {
                since: generations,
                items: Vec::new(),
            },
        };
        let arrived = found.len();
        for item in found {
            set.items
                .retain(|kept| kept.kind != item.kind || kept.id != item.id);
            set.items.push(item);
        }
        let over = set.items.len().saturating_sub(MAX_ITEMS);
        set.items.drain(..over);
        if let Some(embedder) = &self.embedder {
            let seen = set.items.len().saturating_sub(arrived);
            embedder.learn(set.items[seen..].iter().map(|item| &*item.text));
        }
        self.scopes.insert(key, Arc::new(set));
    }

    /// The items of `scope` for reads of `route`'s generation, unless a purge (`purges`, the
    /// scope's purge marks now) came after they were first seen.
    pub fn items(
        &self,
        route: ReadRoute,
        scope: &Scope,
        purges: &Generations,
    ) -> Option<Arc<ScopeItems>> {
        let key = Key {
            scope: scope.clone(),
            generation: route.generation,
        };
        let set = self.scopes.get(&key)?;
        if set.since.predates(purges) {
            self.scopes.remove(&key);
            return None;
        }
        Some(set)
    }

    pub fn weight(&self) -> u64 {
        self.scopes.weight()
    }

    pub fn len(&self) -> usize {
        self.scopes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.scopes.is_empty()
    }
}

/// The other scope whose reads also see the items of an answer keyed `key`: the tenant's
/// [`Scope::global`] for memU-server's `/categories`, since `/retrieve` reads every user's.
pub fn also_read_by(key: &CacheKey) -> Option<Scope> {
    (key.route == ReadRoute(&table::SERVER_CATEGORIES)).then(|| Scope::global(key.scope.tenant))
}

/// The scope of every agent of `scope`'s user, under which that user's reads are remembered.
fn user_of(scope: &Scope) -> Scope {
    Scope {
        tenant: scope.tenant,
        user: scope.user.clone(),
        agent: None,
    }
}

impl std::fmt::Debug for Mirror {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Mirror")
            .field("scopes", &self.len())
            .field("weight", &self.weight())
            .finish()
    }
}

impl Collector for Mirror {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        metrics::gauge(
            &mut encoder,
            "mirror_scopes",
            "Scopes whose memory items the mirror holds",
            None,
            self.len() as u64,
        )?;
        metrics::gauge(
            &mut encoder,
            "mirror",
            "Weighed size of the memory mirror",
            Some(&Unit::Bytes),
            self.weight(),
        )
    }
}

#[cfg(test)]
mod items_tests;
#[cfg(test)]
mod tests;
