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
//! A write that may remove memories ([`WriteKind::Purge`]) also marks its slots purged at the
//! generation it bumped them to. An entry whose recorded generation of any of its slots is below
//! that slot's purge mark predates the purge ([`Generations::predates`]): it is never served, not
//! even as a stale stand-in. A superseded entry (a memorize since) may still stand in when memU
//! cannot answer.
//!
//! The table is bounded: only scopes that were ever bumped are kept, the least recently bumped are
//! evicted first, and an evicted scope reads as `floor`, the highest generation ever evicted, and
//! its purge mark as `purge_floor`, the highest purge mark ever evicted. So a generation never goes
//! back to a value an entry could have recorded before a bump, and a purge is never forgotten:
//! eviction can cause spurious misses and refused stale answers, never a stale hit or a deleted
//! memory served.
//!
//! Every generation lives in a [`Slot`], named by a [`SlotId`]: a SHA-256 digest of the slot's
//! kind, user and agent, the same in every replica, so the shared tier (`shared_tier/`) can name the
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
use crate::routes::WriteKind;

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

impl Generations {
    /// True when generations recorded as `self` predate a purge whose marks are `purges` (as
    /// [`Scopes::purges_of`] reads them): an answer fetched under them may hold a deleted memory.
    pub fn predates(&self, purges: &Generations) -> bool {
        self.scope < purges.scope || self.user < purges.user || self.all < purges.all
    }
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

/// A generation counter a write bumps.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Counter {
    Slot(SlotId),
    /// The epoch every read depends on.
    Everything,
}

/// One generation a write bumps, and whether it purges.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Bump {
    pub counter: Counter,
    pub kind: WriteKind,
}

impl Bump {
    pub fn slot(id: SlotId, kind: WriteKind) -> Self {
        Self {
            counter: Counter::Slot(id),
            kind,
        }
    }

    pub fn everything(kind: WriteKind) -> Self {
        Self {
            counter: Counter::Everything,
            kind,
        }
    }
}

/// Adds `bump` to `all` unless its counter is there already; a purge of a counter wins over a
/// supersede of the same counter.
pub fn merge(all: &mut Vec<Bump>, bump: Bump) {
    match all.iter_mut().find(|b| b.counter == bump.counter) {
        Some(existing) if bump.kind == WriteKind::Purge => existing.kind = WriteKind::Purge,
        Some(_) => {}
        None => all.push(bump),
    }
}

/// The generations a write of `kind` to `scope` bumps: for an agent, that agent's slot and the
/// user's agent-less slot (reads with `agent_id: null` see every agent's memories).
pub fn bumps(scope: &Scope, what: Invalidate, kind: WriteKind) -> Vec<Bump> {
    match what {
        Invalidate::Agent => {
            let own = Slot::Agent(&scope.user, scope.agent.as_deref()).id();
            let null = Slot::Agent(&scope.user, None).id();
            let mut bumps = vec![Bump::slot(own, kind)];
            if null != own {
                bumps.push(Bump::slot(null, kind));
            }
            bumps
        }
        Invalidate::AllAgents => vec![Bump::slot(Slot::AllAgents(&scope.user).id(), kind)],
        Invalidate::Everything => vec![Bump::everything(kind)],
    }
}

/// The table's key for a slot.
fn table_key(id: &SlotId) -> u64 {
    let mut first = [0; 8];
    first.copy_from_slice(&id[..8]);
    u64::from_le_bytes(first)
}

/// One remembered slot: its generation, and the generation of its last purge.
#[derive(Debug, Clone, Copy)]
struct Remembered {
    generation: u64,
    purged: u64,
}

#[derive(Default)]
struct Table {
    generations: HashMap<u64, Remembered>,
    /// Bump order, oldest first; entries whose generation has moved on are skipped lazily.
    order: VecDeque<(u64, u64)>,
    floor: u64,
    /// The highest purge mark of an evicted slot: what an absent slot's purge mark reads as.
    purge_floor: u64,
    next: u64,
    /// Bumped by [`Invalidate::Everything`].
    all: u64,
    /// The everything epoch's last purge.
    all_purged: u64,
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

    /// The purge marks of the slots a read of `scope` depends on.
    pub fn purges(&self, scope: &Scope) -> Generations {
        self.purges_of(&ReadSlots::of(scope))
    }

    /// The purge marks of a read's slots: generations recorded below them predate a purge
    /// ([`Generations::predates`]).
    pub fn purges_of(&self, slots: &ReadSlots) -> Generations {
        let table = self.lock();
        Generations {
            scope: table.purged(table_key(&slots.own)),
            user: table.purged(table_key(&slots.user)),
            all: table.all_purged,
        }
    }

    /// Bumps the generations a write of `kind` to `scope` invalidates.
    pub fn invalidate(&self, scope: &Scope, what: Invalidate, kind: WriteKind) {
        self.apply(&bumps(scope, what, kind));
    }

    /// Bumps these generations (a write's, or another replica's, as its message names them).
    pub fn apply(&self, bumps: &[Bump]) {
        let mut table = self.lock();
        for bump in bumps {
            match bump.counter {
                Counter::Slot(id) => table.bump(table_key(&id), bump.kind, self.capacity),
                Counter::Everything => {
                    table.all += 1;
                    if bump.kind == WriteKind::Purge {
                        table.all_purged = table.all;
                    }
                }
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
        self.generations
            .get(&slot)
            .map_or(self.floor, |r| r.generation)
    }

    fn purged(&self, slot: u64) -> u64 {
        self.generations
            .get(&slot)
            .map_or(self.purge_floor, |r| r.purged)
    }

    fn bump(&mut self, slot: u64, kind: WriteKind, capacity: usize) {
        self.next += 1;
        let generation = self.next;
        let purged = match kind {
            WriteKind::Purge => generation,
            // A slot coming back from eviction keeps the purge marks it may have had.
            WriteKind::Supersede => self.purged(slot),
        };
        self.generations
            .insert(slot, Remembered { generation, purged });
        self.order.push_back((slot, generation));
        while self.generations.len() > capacity {
            let Some((old, old_generation)) = self.order.pop_front() else {
                break;
            };
            match self.generations.get(&old) {
                Some(r) if r.generation == old_generation => {
                    self.purge_floor = self.purge_floor.max(r.purged);
                    self.floor = self.floor.max(old_generation);
                    self.generations.remove(&old);
                }
                _ => {}
            }
        }
        if self.order.len() > 2 * capacity {
            let live = &self.generations;
            self.order
                .retain(|(s, g)| live.get(s).is_some_and(|r| r.generation == *g));
        }
    }
}

#[cfg(test)]
mod tests;
