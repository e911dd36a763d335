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
use crate::cache::scope::{Bump, Counter};
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
                strong.stream.lost(why);
                let wait = strong.stream.heartbeat_every();
                drop(strong);
                tokio::time::sleep(wait).await;
                continue;
            }
        };
        // Whatever was published while this replica was not subscribed is lost, deletes
        // included: nothing cached before now may be served again, fresh or stale.
        strong.scopes.apply(&[Bump::everything(WriteKind::Purge)]);
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
            strong.stream.lost(why);
        }
    }
}

/// Applies one message: any message proves the stream alive; another replica's bumps are applied.
fn receive(tier: &SharedTier, payload: &[u8]) {
    tier.stream.heard();
    let Some(bumps) = parse(payload, &tier.origin) else {
        return;
    };
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

/// Another replica's bumps in a message (`None`: this replica's own, or not a message).
fn parse(payload: &[u8], own_origin: &str) -> Option<Vec<Bump>> {
    let text = std::str::from_utf8(payload).ok()?;
    let mut words = text.split(' ');
    let origin = words.next()?;
    if origin == own_origin || origin.is_empty() {
        return None;
    }
    words
        .map(|word| {
            let (kind, counter) = match word.strip_prefix('!') {
                Some(purged) => (WriteKind::Purge, purged),
                None => (WriteKind::Supersede, word),
            };
            let counter = match counter {
                "*" => Counter::Everything,
                slot => Counter::Slot(parse_slot(slot)?),
            };
            Some(Bump { counter, kind })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::shared::names::hex;

    #[test]
    fn messages_name_their_origin_and_bumps() {
        let id = [7; 32];
        let message = format!("other {} *", hex(&id));
        assert_eq!(
            parse(message.as_bytes(), "me"),
            Some(vec![
                Bump::slot(id, WriteKind::Supersede),
                Bump::everything(WriteKind::Supersede)
            ])
        );
        let purge = format!("other !{} !*", hex(&id));
        assert_eq!(
            parse(purge.as_bytes(), "me"),
            Some(vec![
                Bump::slot(id, WriteKind::Purge),
                Bump::everything(WriteKind::Purge)
            ])
        );
        assert_eq!(parse(b"other !", "me"), None);
        assert_eq!(parse(b"other", "me"), Some(vec![]), "a heartbeat");
        assert_eq!(parse(message.as_bytes(), "other"), None, "our own");
        assert_eq!(parse(b"other zz", "me"), None);
        assert_eq!(parse(b"\xff", "me"), None);
    }
}
