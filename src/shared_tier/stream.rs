//! The invalidation stream: one pub/sub subscription per replica to the tier's channel, on a
//! connection of its own. Every message is a replica's name followed by the generations its write
//! bumped (64-digit slot ids, or `*` for everything); a message with no generations is a
//! heartbeat. Another replica's bumps are applied to the local generation table at once.
//!
//! Pub/sub is a hint, not a guarantee: messages sent while a subscriber is disconnected are lost.
//! So a replica trusts its local entries as fresh only while it has heard the channel within
//! `offline_grace_ms` (every replica publishes a heartbeat four times per grace period, so a
//! silent link is noticed even when nothing fails), resubscribes on a new connection after
//! three silent heartbeat periods, and, on every (re)subscription, purges its whole local
//! cache: whatever it missed while away may have been a delete, so nothing cached before can be
//! served again, fresh or stale.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use futures_util::StreamExt;
use redis::Client;
use tokio::time::Instant;

use super::metrics::{Op, OpResult, SharedMetrics};
use super::names::parse_slot;
use super::SharedTier;
use crate::cache::generations::{Bump, Counter};
use crate::metrics::InvalidationCause;
use crate::routes::WriteKind;

/// The subscriber's state.
pub struct Stream {
    client: Client,
    channel: String,
    offline_grace: Duration,
    epoch: Instant,
    /// When a message was last heard, in ms since `epoch`.
    last_heard_ms: AtomicU64,
    up: AtomicBool,
    /// True once the loss of the stream was logged, until it is back.
    lost_logged: AtomicBool,
    /// Until when (ms since `epoch`) another replica said it holds writes Redis refused.
    distrusted_until_ms: AtomicU64,
    metrics: Arc<SharedMetrics>,
}

impl Stream {
    pub fn new(
        client: Client,
        channel: String,
        offline_grace: Duration,
        metrics: Arc<SharedMetrics>,
    ) -> Self {
        Self {
            client,
            channel,
            offline_grace,
            epoch: Instant::now(),
            last_heard_ms: AtomicU64::new(0),
            up: AtomicBool::new(false),
            lost_logged: AtomicBool::new(false),
            distrusted_until_ms: AtomicU64::new(0),
            metrics,
        }
    }

    /// How often every replica publishes its heartbeat: four times per grace period, at most
    /// once a second.
    pub fn heartbeat_every(&self) -> Duration {
        (self.offline_grace / 4).clamp(Duration::from_millis(5), Duration::from_secs(1))
    }

    /// Silence after which the subscription is replaced by a new one.
    fn silence_limit(&self) -> Duration {
        self.heartbeat_every() * 3
    }

    pub fn is_up(&self) -> bool {
        self.up.load(Ordering::Relaxed)
    }

    /// True while something was heard on the channel within the grace period (and for the first
    /// grace period after start-up, when the local cache is new).
    pub fn heard_recently(&self) -> bool {
        let now = self.epoch.elapsed();
        let heard = Duration::from_millis(self.last_heard_ms.load(Ordering::Relaxed));
        now.saturating_sub(heard) < self.offline_grace
    }

    /// True while a replica that holds writes Redis refused was heard within the grace period:
    /// its write may have made any local entry stale, and Redis's generations do not know it.
    pub fn distrusted(&self) -> bool {
        let until = Duration::from_millis(self.distrusted_until_ms.load(Ordering::Relaxed));
        self.epoch.elapsed() < until
    }

    fn distrust(&self) {
        let until = self.epoch.elapsed() + self.offline_grace;
        let until = u64::try_from(until.as_millis()).unwrap_or(u64::MAX);
        self.distrusted_until_ms.fetch_max(until, Ordering::Relaxed);
    }

    fn heard(&self) {
        let now = u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last_heard_ms.store(now, Ordering::Relaxed);
    }

    fn lost(&self, why: &str) {
        self.up.store(false, Ordering::Relaxed);
        if !self.lost_logged.swap(true, Ordering::Relaxed) {
            tracing::warn!(
                why,
                grace_ms = self.offline_grace.as_millis() as u64,
                "shared cache invalidation stream lost: local entries stop being served as fresh \
                 after the grace period"
            );
        }
    }

    async fn subscribe(&self) -> Result<redis::aio::PubSub, &'static str> {
        let started = Instant::now();
        let patience = (self.offline_grace / 2).max(Duration::from_millis(500));
        let attempt = tokio::time::timeout(patience, async {
            let mut pubsub = self.client.get_async_pubsub().await?;
            pubsub.subscribe(&self.channel).await?;
            redis::RedisResult::Ok(pubsub)
        })
        .await;
        let took = Some(started.elapsed());
        match attempt {
            Ok(Ok(pubsub)) => {
                self.metrics.record(Op::subscribe, OpResult::ok, took);
                Ok(pubsub)
            }
            Ok(Err(_)) => {
                self.metrics.record(Op::subscribe, OpResult::error, took);
                Err("subscribing failed")
            }
            Err(_) => {
                self.metrics.record(Op::subscribe, OpResult::timeout, took);
                Err("subscribing timed out")
            }
        }
    }
}

/// Keeps the subscription until the tier is dropped: subscribe, invalidate the local cache, apply
/// what arrives; on an error or a silence, start again on a new connection.
pub async fn listen(tier: Weak<SharedTier>) {
    loop {
        let Some(strong) = tier.upgrade() else {
            return;
        };
        let pubsub = match strong.stream.subscribe().await {
            Ok(pubsub) => pubsub,
            Err(why) => {
                strong.unverify();
                strong.stream.lost(why);
                let wait = strong.stream.heartbeat_every();
                drop(strong);
                tokio::time::sleep(wait).await;
                continue;
            }
        };
        // Whatever was published while this replica was not subscribed is lost, deletes
        // included: nothing cached before now may be served again, fresh or stale. And Redis
        // may have restarted from a snapshot: check before its answers are served again.
        strong.scopes.apply(&[Bump::everything(WriteKind::Purge)]);
        strong.check_incarnation().await;
        strong.stream.heard();
        strong.stream.up.store(true, Ordering::Relaxed);
        if strong.stream.lost_logged.swap(false, Ordering::Relaxed) {
            tracing::info!("shared cache invalidation stream back: local entries invalidated");
        }
        let silence = strong.stream.silence_limit();
        drop(strong);
        let mut messages = pubsub.into_on_message();
        let why = loop {
            let next = tokio::time::timeout(silence, messages.next()).await;
            let Some(strong) = tier.upgrade() else {
                return;
            };
            match next {
                Ok(Some(message)) => receive(&strong, message.get_payload_bytes()),
                Ok(None) => break "the connection closed",
                Err(_) => break "no heartbeat heard",
            }
        };
        if let Some(strong) = tier.upgrade() {
            strong.unverify();
            strong.stream.lost(why);
        }
    }
}

/// Applies one message: any message proves the stream alive; another replica's bumps are
/// applied; its word that it holds writes Redis refused stops local trust for a grace period.
fn receive(tier: &SharedTier, payload: &[u8]) {
    tier.stream.heard();
    let Some(Message { bumps, undelivered }) = parse(payload, &tier.origin) else {
        return;
    };
    if undelivered {
        // The write it holds may be a delete, and the replica holding it may die before Redis
        // takes it: nothing cached before it is served again (once per episode), and nothing
        // cached meanwhile is trusted until its word stops.
        if !tier.stream.distrusted() {
            tier.scopes.apply(&[Bump::everything(WriteKind::Purge)]);
        }
        tier.stream.distrust();
    }
    if !bumps.is_empty() {
        tier.scopes.apply(&bumps);
        let purges = bumps.iter().any(|bump| bump.kind == WriteKind::Purge);
        let kind = if purges {
            WriteKind::Purge
        } else {
            WriteKind::Supersede
        };
        tier.metrics.invalidation(InvalidationCause::Replica, kind);
    }
}

/// Another replica's message.
#[derive(Debug, PartialEq)]
struct Message {
    bumps: Vec<Bump>,
    /// `?`: the sender holds writes Redis refused (its outbox is not empty).
    undelivered: bool,
}

/// Another replica's message (`None`: this replica's own, or not a message).
fn parse(payload: &[u8], own_origin: &str) -> Option<Message> {
    let text = std::str::from_utf8(payload).ok()?;
    let mut words = text.split(' ');
    let origin = words.next()?;
    if origin == own_origin || origin.is_empty() {
        return None;
    }
    let mut message = Message {
        bumps: Vec::new(),
        undelivered: false,
    };
    for word in words {
        if word == "?" {
            message.undelivered = true;
            continue;
        }
        let (kind, counter) = match word.strip_prefix('!') {
            Some(purged) => (WriteKind::Purge, purged),
            None => (WriteKind::Supersede, word),
        };
        let counter = match counter {
            "*" => Counter::Everything,
            slot => match parse_slot(slot) {
                Some(id) => Counter::Slot(id),
                // A word this version cannot read (another version's, or garbage): whatever it
                // said, everything purged is never less.
                None => {
                    message.bumps = vec![Bump::everything(WriteKind::Purge)];
                    return Some(message);
                }
            },
        };
        message.bumps.push(Bump { counter, kind });
    }
    Some(message)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::shared_tier::names::hex;

    #[test]
    fn messages_name_their_origin_and_bumps() {
        let id = [7; 32];
        let bumps = |bumps: Vec<Bump>, undelivered| Some(Message { bumps, undelivered });
        let message = format!("other {} *", hex(&id));
        assert_eq!(
            parse(message.as_bytes(), "me"),
            bumps(
                vec![
                    Bump::slot(id, WriteKind::Supersede),
                    Bump::everything(WriteKind::Supersede)
                ],
                false
            )
        );
        let purge = format!("other !{} !*", hex(&id));
        assert_eq!(
            parse(purge.as_bytes(), "me"),
            bumps(
                vec![
                    Bump::slot(id, WriteKind::Purge),
                    Bump::everything(WriteKind::Purge)
                ],
                false
            )
        );
        let purge_everything = bumps(vec![Bump::everything(WriteKind::Purge)], false);
        assert_eq!(
            parse(b"other !", "me"),
            purge_everything,
            "unreadable: all purged"
        );
        assert_eq!(parse(b"other", "me"), bumps(vec![], false), "a heartbeat");
        assert_eq!(
            parse(b"other ?", "me"),
            bumps(vec![], true),
            "a heartbeat of a replica whose writes Redis refused"
        );
        assert_eq!(parse(message.as_bytes(), "other"), None, "our own");
        assert_eq!(parse(b"other zz", "me"), purge_everything);
        assert_eq!(parse(b"\xff", "me"), None);
    }
}
