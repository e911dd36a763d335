//! Publishing: a write's invalidations, the outbox of those Redis did not take (bounded, kept in
//! order, published once the link is back), the heartbeat, and the supervisor that keeps the link
//! and does all three every heartbeat period. A message names each
//! bumped generation (a slot's id in hex, or `*` for everything), prefixed with `!` when the write
//! purges (`stream.rs` reads it back).

use std::collections::VecDeque;

use super::delivery::fresh_token;
use super::link::Failed;
use super::metrics::Op;
use super::millis;
use super::names::hex;
use super::SharedTier;
use crate::cache::generations::{Bump, Counter};
use crate::routes::WriteKind;

/// Most writes waiting to be published; past it they collapse into one everything purge.
const OUTBOX_CAPACITY: usize = 1024;

impl SharedTier {
    /// Bumps `all` in Redis and publishes them, in one script.
    pub(super) async fn publish(&self, all: &[Bump]) -> Result<(), Failed> {
        let mut message = self.origin.clone();
        let mut keys = Vec::with_capacity(all.len());
        for bump in all {
            message.push(' ');
            if bump.kind == WriteKind::Purge {
                message.push('!');
            }
            match bump.counter {
                Counter::Slot(id) => {
                    keys.push(self.names.generation(&id));
                    message.push_str(&hex(&id));
                }
                Counter::Everything => {
                    keys.push(self.names.everything());
                    message.push('*');
                }
            }
        }
        let fresh: Vec<u64> = keys.iter().map(|_| fresh_token()).collect();
        let mut invocation = self.scripts.invalidate.prepare_invoke();
        invocation.key(keys).arg(millis(self.generation_ttl));
        invocation.arg(self.names.channel()).arg(message);
        for token in fresh {
            invocation.arg(token);
        }
        self.link
            .call(Op::invalidate, |mut connection| async move {
                invocation.invoke_async::<i64>(&mut connection).await
            })
            .await
            .map(drop)
    }

    /// Keeps unpublished bumps for later; a full outbox collapses into one everything bump, a
    /// purge (what it replaces may have held purges).
    pub(super) fn hold(&self, all: Vec<Bump>) {
        let mut outbox = self.lock_outbox();
        if outbox.len() >= OUTBOX_CAPACITY {
            outbox.clear();
            outbox.push_back(vec![Bump::everything(WriteKind::Purge)]);
        } else {
            outbox.push_back(all);
        }
    }

    /// Publishes what the outbox holds, oldest first, until Redis stops taking it. Each batch is
    /// pending while it is out of the outbox, so shared lookups stay off until Redis has it.
    pub(super) async fn flush_outbox(&self) {
        let _pending = self.pending();
        loop {
            let Some(next) = self.lock_outbox().pop_front() else {
                return;
            };
            if self.publish(&next).await.is_err() {
                self.lock_outbox().push_front(next);
                return;
            }
        }
    }

    pub(super) fn outbox_len(&self) -> usize {
        self.lock_outbox().len()
    }

    fn lock_outbox(&self) -> std::sync::MutexGuard<'_, VecDeque<Vec<Bump>>> {
        self.outbox
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// This replica's heartbeat: proves the stream end to end to every subscriber, itself too.
    pub(super) async fn heartbeat(&self) {
        let channel = self.names.channel();
        let origin = if self.outbox_len() > 0 {
            // Writes Redis refused: every replica stops trusting what it holds until they land.
            format!("{} ?", self.origin)
        } else {
            self.origin.clone()
        };
        let _ = self
            .link
            .call(Op::heartbeat, |mut connection| async move {
                redis::cmd("PUBLISH")
                    .arg(channel)
                    .arg(origin)
                    .query_async::<i64>(&mut connection)
                    .await
            })
            .await;
    }
}

/// The link's keeper, every heartbeat period until the tier is dropped: reconnects while the link
/// is down, publishes the outbox once it is up, and sends the heartbeat.
pub(super) async fn supervise(tier: std::sync::Weak<SharedTier>) {
    loop {
        let Some(strong) = tier.upgrade() else {
            return;
        };
        let up = strong.link.is_up() || {
            // Until Redis's run_id is checked again, its answers are not served.
            strong.unverify();
            strong.link.reconnect().await
        };
        if up {
            strong.check_incarnation().await;
            strong.flush_outbox().await;
            strong.heartbeat().await;
        }
        let every = strong.stream.heartbeat_every();
        drop(strong);
        tokio::time::sleep(every).await;
    }
}
