//! Invalidation by generation: O(1) per write, no scans of the cache.
//!
//! Every scope (user, agent) and every user-wide scope (user, all agents) has a generation number.
//! The tenant (API key) is deliberately *not* part of an invalidation scope, though it is part of
//! every cache key: the self-hosted memU server ignores `Authorization`, so a write sent with one
//! key (or none) changes what every other key reads for that user. Across cloud projects sharing a
//! user id this costs a spurious miss, never a wrong answer. A cached entry records the generations of its scopes as they were when its
//! upstream fetch *started*; it is a valid hit only while both are unchanged. A write bumps its
//! scopes, so every read cached before it (or fetched concurrently with it) misses from then on.
//!
//! The table is bounded: only scopes that were ever bumped are kept, the least recently bumped are
//! evicted first, and an evicted scope reads as `floor`, the highest generation ever evicted. So a
//! generation never goes back to a value an entry could have recorded before a bump: eviction can
//! cause spurious misses, never a stale hit. Scopes are identified by a keyed 64-bit hash; two
//! scopes sharing a slot only invalidate each other (a spurious miss), never serve each other.

use std::collections::hash_map::RandomState;
use std::collections::{HashMap, VecDeque};
use std::hash::{BuildHasher, Hash};
use std::sync::Mutex;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::DescriptorEncoder;

use super::target::{Invalidate, Scope};
use crate::metrics;

/// The generations a cached entry depends on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Generations {
    /// Of the entry's own (tenant, user, agent).
    pub scope: u64,
    /// Of (tenant, user, all agents), bumped by `delete` with `agent_id: null`.
    pub user: u64,
    /// Of everything, bumped by a write that covers every user (a memU-server `/clear` naming
    /// only an agent).
    pub all: u64,
}

/// The bounded generation table.
pub struct Scopes {
    hasher: RandomState,
    capacity: usize,
    table: Mutex<Table>,
}

#[derive(Default)]
struct Table {
    generations: HashMap<u64, u64>,
    /// Bump order, oldest first; entries whose generation has moved on are skipped lazily.
    order: VecDeque<(u64, u64)>,
    floor: u64,
    next: u64,
    /// Bumped by [`Invalidate::Everything`].
    all: u64,
}

#[derive(Hash)]
enum Slot<'a> {
    Agent(&'a str, Option<&'a str>),
    AllAgents(&'a str),
}

impl Scopes {
    /// A table remembering at most `capacity` scopes.
    pub fn new(capacity: usize) -> Self {
        Self {
            hasher: RandomState::new(),
            capacity: capacity.max(1),
            table: Mutex::new(Table::default()),
        }
    }

    fn slots(&self, scope: &Scope) -> (u64, u64) {
        let own = self
            .hasher
            .hash_one(Slot::Agent(&scope.user, scope.agent.as_deref()));
        let user = self.hasher.hash_one(Slot::AllAgents(&scope.user));
        (own, user)
    }

    /// The current generations a read of `scope` depends on.
    pub fn current(&self, scope: &Scope) -> Generations {
        let (own, user) = self.slots(scope);
        let table = self.lock();
        Generations {
            scope: table.get(own),
            user: table.get(user),
            all: table.all,
        }
    }

    /// Bumps the generations a write to `scope` invalidates.
    pub fn invalidate(&self, scope: &Scope, what: Invalidate) {
        let (own, user) = self.slots(scope);
        let mut table = self.lock();
        match what {
            Invalidate::Agent => {
                let null_slot = self.hasher.hash_one(Slot::Agent(&scope.user, None));
                table.bump(own, self.capacity);
                table.bump(null_slot, self.capacity);
            }
            Invalidate::AllAgents => table.bump(user, self.capacity),
            Invalidate::Everything => table.all += 1,
        }
    }

    /// Number of scopes remembered (bounded by the capacity).
    pub fn len(&self) -> usize {
        self.lock().generations.len()
    }

    /// True when no scope was ever invalidated (or all were evicted).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Table> {
        // The table holds plain integers; a panic elsewhere cannot leave it inconsistent.
        self.table
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl std::fmt::Debug for Scopes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Scopes")
            .field("len", &self.len())
            .field("capacity", &self.capacity)
            .finish_non_exhaustive()
    }
}

impl Collector for Scopes {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        metrics::gauge(
            &mut encoder,
            "invalidation_scopes",
            "Invalidation scopes remembered",
            None,
            self.len() as u64,
        )
    }
}

impl Table {
    fn get(&self, slot: u64) -> u64 {
        self.generations.get(&slot).copied().unwrap_or(self.floor)
    }

    fn bump(&mut self, slot: u64, capacity: usize) {
        self.next += 1;
        let generation = self.next;
        self.generations.insert(slot, generation);
        self.order.push_back((slot, generation));
        while self.generations.len() > capacity {
            let Some((old, old_generation)) = self.order.pop_front() else {
                break;
            };
            if self.generations.get(&old) == Some(&old_generation) {
                self.generations.remove(&old);
                self.floor = self.floor.max(old_generation);
            }
        }
        if self.order.len() > 2 * capacity {
            let live = &self.generations;
            self.order.retain(|(s, g)| live.get(s) == Some(g));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scope(user: &str, agent: Option<&str>) -> Scope {
        Scope {
            tenant: None,
            user: user.into(),
            agent: agent.map(Into::into),
        }
    }

    #[test]
    fn agent_write_invalidates_that_agent_and_null_agent_only() {
        let scopes = Scopes::new(100);
        let (ua, ub, unull, other) = (
            scope("u", Some("a")),
            scope("u", Some("b")),
            scope("u", None),
            scope("v", Some("a")),
        );
        let before: Vec<_> = [&ua, &ub, &unull, &other].map(|s| scopes.current(s)).into();
        scopes.invalidate(&ua, Invalidate::Agent);
        let after: Vec<_> = [&ua, &ub, &unull, &other].map(|s| scopes.current(s)).into();
        assert_ne!(before[0], after[0], "(u, a)");
        assert_eq!(before[1], after[1], "(u, b)");
        assert_ne!(before[2], after[2], "(u, null)");
        assert_eq!(before[3], after[3], "(v, a)");
    }

    #[test]
    fn all_agents_delete_invalidates_every_read_of_the_user() {
        let scopes = Scopes::new(100);
        let reads = [
            scope("u", Some("a")),
            scope("u", Some("b")),
            scope("u", None),
        ];
        let before = reads.each_ref().map(|s| scopes.current(s));
        let other_before = scopes.current(&scope("v", None));
        scopes.invalidate(&scope("u", None), Invalidate::AllAgents);
        for (read, old) in reads.iter().zip(before) {
            assert_ne!(scopes.current(read), old, "{read:?}");
        }
        assert_eq!(scopes.current(&scope("v", None)), other_before);
    }

    #[test]
    fn an_everything_bump_invalidates_every_scope() {
        let scopes = Scopes::new(100);
        let reads = [
            scope("u", Some("a")),
            scope("v", None),
            scope("w", Some("")),
        ];
        let before = reads.each_ref().map(|s| scopes.current(s));
        scopes.invalidate(&scope("x", None), Invalidate::Everything);
        for (read, old) in reads.iter().zip(before) {
            assert_ne!(scopes.current(read), old, "{read:?}");
        }
    }

    #[test]
    fn a_write_under_any_api_key_invalidates_every_tenants_reads() {
        let scopes = Scopes::new(100);
        let mine = Scope {
            tenant: Some([1; 32]),
            ..scope("u", Some("a"))
        };
        let theirs = Scope {
            tenant: Some([2; 32]),
            ..scope("u", Some("a"))
        };
        let before = scopes.current(&theirs);
        scopes.invalidate(&mine, Invalidate::Agent);
        assert_ne!(scopes.current(&theirs), before);
    }

    #[test]
    fn eviction_never_restores_an_old_generation() {
        let scopes = Scopes::new(4);
        let target = scope("target", Some("a"));
        let recorded_before_write = scopes.current(&target);
        scopes.invalidate(&target, Invalidate::Agent);
        for i in 0..100 {
            scopes.invalidate(&scope(&format!("user{i}"), Some("a")), Invalidate::Agent);
            assert!(scopes.len() <= 4);
            assert_ne!(
                scopes.current(&target),
                recorded_before_write,
                "after {i} evictions"
            );
        }
    }
}
