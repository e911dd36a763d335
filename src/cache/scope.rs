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
//! cause spurious misses, never a stale hit.
//!
//! Every generation lives in a [`Slot`], named by a [`SlotId`]: a SHA-256 digest of the slot's
//! kind, user and agent, the same in every replica, so the shared tier (`shared/`) can name the
//! slot in Redis and in its invalidation messages without carrying user ids in clear, and every
//! replica can bump its own copy of that slot. The table keys on the digest's first 64 bits; two
//! slots sharing them only invalidate each other (a spurious miss), never serve each other.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::DescriptorEncoder;

use super::digest::Fields;
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
    capacity: usize,
    table: Mutex<Table>,
}

/// A generation slot: what one write bumps and one read depends on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Slot<'a> {
    /// One (user, agent); `None` is memU's `agent_id: null`.
    Agent(&'a str, Option<&'a str>),
    /// Every agent of a user.
    AllAgents(&'a str),
}

/// The name of a [`Slot`]: a SHA-256 digest, the same in every replica.
pub type SlotId = [u8; 32];

impl Slot<'_> {
    /// The slot's name: a digest of its kind and length-prefixed fields, so no two slots with
    /// different fields share the input.
    pub fn id(self) -> SlotId {
        let mut fields = Fields::new();
        match self {
            Slot::Agent(user, agent) => {
                fields
                    .field(b"agent")
                    .field(user.as_bytes())
                    .optional(agent);
            }
            Slot::AllAgents(user) => {
                fields.field(b"all-agents").field(user.as_bytes());
            }
        }
        fields.finish()
    }
}

/// The slots a read of a scope depends on (besides the everything epoch).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReadSlots {
    /// The read's own (user, agent).
    pub own: SlotId,
    /// The user's every-agent slot.
    pub user: SlotId,
}

impl ReadSlots {
    pub fn of(scope: &Scope) -> Self {
        Self {
            own: Slot::Agent(&scope.user, scope.agent.as_deref()).id(),
            user: Slot::AllAgents(&scope.user).id(),
        }
    }
}

/// One generation a write bumps.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Bump {
    Slot(SlotId),
    /// The epoch every read depends on.
    Everything,
}

/// The generations a write to `scope` bumps: for an agent, that agent's slot and the user's
/// agent-less slot (reads with `agent_id: null` see every agent's memories).
pub fn bumps(scope: &Scope, what: Invalidate) -> Vec<Bump> {
    match what {
        Invalidate::Agent => {
            let own = Slot::Agent(&scope.user, scope.agent.as_deref()).id();
            let null = Slot::Agent(&scope.user, None).id();
            let mut bumps = vec![Bump::Slot(own)];
            if null != own {
                bumps.push(Bump::Slot(null));
            }
            bumps
        }
        Invalidate::AllAgents => vec![Bump::Slot(Slot::AllAgents(&scope.user).id())],
        Invalidate::Everything => vec![Bump::Everything],
    }
}

/// The table's key for a slot.
fn table_key(id: &SlotId) -> u64 {
    let mut first = [0; 8];
    first.copy_from_slice(&id[..8]);
    u64::from_le_bytes(first)
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

impl Scopes {
    /// A table remembering at most `capacity` scopes.
    pub fn new(capacity: usize) -> Self {
        Self {
            capacity: capacity.max(1),
            table: Mutex::new(Table::default()),
        }
    }

    /// The current generations a read of `scope` depends on.
    pub fn current(&self, scope: &Scope) -> Generations {
        self.current_of(&ReadSlots::of(scope))
    }

    /// The current generations of a read's slots.
    pub fn current_of(&self, slots: &ReadSlots) -> Generations {
        let table = self.lock();
        Generations {
            scope: table.get(table_key(&slots.own)),
            user: table.get(table_key(&slots.user)),
            all: table.all,
        }
    }

    /// Bumps the generations a write to `scope` invalidates.
    pub fn invalidate(&self, scope: &Scope, what: Invalidate) {
        self.apply(&bumps(scope, what));
    }

    /// Bumps these generations (a write's, or another replica's, as its message names them).
    pub fn apply(&self, bumps: &[Bump]) {
        let mut table = self.lock();
        for bump in bumps {
            match bump {
                Bump::Slot(id) => table.bump(table_key(id), self.capacity),
                Bump::Everything => table.all += 1,
            }
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
    fn slot_ids_are_stable_and_distinct() {
        // The same in every process: the shared tier names slots by them.
        let id = Slot::Agent("u", Some("a")).id();
        assert_eq!(
            id[..4],
            [0x61, 0xa8, 0x22, 0x2e],
            "a slot's id must never change between releases"
        );
        let ids = [
            Slot::Agent("u", Some("a")).id(),
            Slot::Agent("u", None).id(),
            Slot::Agent("u", Some("")).id(),
            Slot::Agent("ua", None).id(),
            Slot::AllAgents("u").id(),
            Slot::AllAgents("ua").id(),
        ];
        for (i, a) in ids.iter().enumerate() {
            for b in &ids[i + 1..] {
                assert_ne!(a, b);
            }
        }
    }

    #[test]
    fn bumps_applied_by_id_invalidate_as_the_write_did() {
        let (writer, reader) = (Scopes::new(100), Scopes::new(100));
        let read = scope("u", None);
        let before = reader.current(&read);
        let write = bumps(&scope("u", Some("a")), Invalidate::Agent);
        writer.apply(&write);
        reader.apply(&write);
        assert_ne!(reader.current(&read), before);
        assert_eq!(writer.current(&read), reader.current(&read));
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
