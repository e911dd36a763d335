//! When Redis can be believed: this replica's writes delivered, and generations that never come
//! back.
//!
//! - **Delivered writes.** A write bumps this replica's generations at once and Redis's a moment
//!   later (or, when Redis refuses it, an OOM under `noeviction`, only once the outbox is
//!   published). Until then Redis's generations do not know the write, so an answer found there
//!   may predate it: while any of this replica's writes is undelivered ([`Pending`], the outbox)
//!   it neither looks answers up in Redis nor stores them there, and its heartbeats say so (`?`),
//!   so every replica that hears them stops trusting its own local entries too (`stream.rs`).
//! - **Generations never reused.** A generation in Redis is an unpredictable token, not a count:
//!   a write sets a fresh one, and a lookup that finds none (evicted, expired, flushed) sets a
//!   fresh one instead of reading 0, so a record stored before can never match again. A Redis
//!   that restarted from a snapshot, or a replica promoted in a failover, brings back old tokens
//!   *with* the records stored under them: a new `run_id` seen by this replica sets a fresh
//!   everything epoch, so none of those records is served.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use super::metrics::Op;
use super::SharedTier;

/// A fresh generation token: never one Redis held before (63 random bits).
pub fn fresh_token() -> u64 {
    uuid::Uuid::new_v4().as_u64_pair().0 >> 1
}

/// One of this replica's writes on its way to Redis; dropped once Redis took it, or once it
/// waits in the outbox (which [`SharedTier::delivered`] also consults).
#[derive(Debug)]
pub struct Pending(Arc<AtomicUsize>);

impl Drop for Pending {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

impl SharedTier {
    /// Marks a write as on its way, before its local bump: from then until Redis has it, this
    /// replica's shared lookups are skipped.
    pub fn pending(&self) -> Pending {
        self.in_flight.fetch_add(1, Ordering::AcqRel);
        Pending(Arc::clone(&self.in_flight))
    }

    /// True when every write this replica made is in Redis.
    pub fn delivered(&self) -> bool {
        self.in_flight.load(Ordering::Acquire) == 0 && self.outbox_len() == 0
    }

    /// True when an answer found in Redis may be served: this replica's writes are delivered,
    /// the stream is up (a Redis restart is noticed there first) and no replica has said it
    /// holds writes Redis refused.
    pub fn lookups_allowed(&self) -> bool {
        self.delivered()
            && self.verified.load(Ordering::Acquire)
            && self.stream.is_up()
            && !self.stream.distrusted()
    }

    /// Forgets that Redis's `run_id` was checked: the link or the stream was lost, and what
    /// answers on it next may be another incarnation.
    pub(super) fn unverify(&self) {
        self.verified.store(false, Ordering::Release);
    }

    /// Compares Redis's `run_id` with the last one acted on; on a change (a restart, possibly
    /// from a snapshot, or a failover) sets a fresh everything epoch, so nothing stored before is
    /// served. The new `run_id` is taken only once that epoch is set; until then (and until the
    /// first check) this replica does not serve answers from Redis.
    pub(super) async fn check_incarnation(&self) {
        let info = self
            .link
            .call(Op::incarnation, |mut connection| async move {
                redis::cmd("INFO")
                    .arg("server")
                    .query_async::<String>(&mut connection)
                    .await
            })
            .await;
        let Ok(info) = info else {
            self.unverify();
            return;
        };
        let Some(run_id) = run_id(&info).map(str::to_owned) else {
            self.unverify();
            return;
        };
        let known = self
            .run_id
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        let changed = known.as_deref().is_some_and(|old| old != run_id);
        if changed && !self.fresh_epoch().await {
            self.unverify();
            return;
        }
        *self.run_id.lock().unwrap_or_else(|p| p.into_inner()) = Some(run_id);
        self.verified.store(true, Ordering::Release);
    }

    /// Sets a fresh everything epoch in Redis; true when Redis took it.
    async fn fresh_epoch(&self) -> bool {
        tracing::warn!(
            "the shared cache restarted or failed over: every answer stored there before is no \
             longer served"
        );
        let everything = self.names.everything();
        let token = fresh_token();
        self.link
            .call(Op::incarnation, |mut connection| async move {
                redis::cmd("SET")
                    .arg(everything)
                    .arg(token)
                    .query_async::<()>(&mut connection)
                    .await
            })
            .await
            .is_ok()
    }
}

/// The `run_id` line of `INFO server`.
fn run_id(info: &str) -> Option<&str> {
    info.lines()
        .find_map(|line| line.strip_prefix("run_id:"))
        .map(str::trim)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn run_ids_are_read_from_info() {
        let info = "# Server\r\nredis_version:7.0.15\r\nrun_id:3f1c0a\r\ntcp_port:6379\r\n";
        assert_eq!(run_id(info), Some("3f1c0a"));
        assert_eq!(run_id("# Server\r\n"), None);
    }

    #[test]
    fn tokens_are_fresh() {
        let (a, b) = (fresh_token(), fresh_token());
        assert_ne!(a, b);
        assert!(a < 1 << 63 && b < 1 << 63);
    }
}
