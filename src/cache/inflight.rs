//! Request coalescing: concurrent identical misses share one upstream fetch.
//!
//! The first request for a key becomes the leader and receives a [`Lease`]; the fetch is moved
//! into a spawned task that owns the lease, so a waiter that gives up (deadline, disconnect)
//! cancels nothing. Every request, leader included, waits on a `watch` receiver with its own
//! deadline. When the task finishes it stores the answer (if admissible) *before* completing the
//! lease, so a request arriving later finds either the fetch or the stored answer. An uncacheable
//! outcome (error, 5xx, timeout) wakes every waiter with that outcome too. A task that dies
//! without completing drops its lease, which unregisters the key and wakes the waiters with
//! "closed". The map exports how many fetches are in flight at scrape time (its [`Collector`]).

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::{Arc, Mutex, MutexGuard};

use prometheus_client::collector::Collector;
use prometheus_client::encoding::DescriptorEncoder;
use tokio::sync::watch;

use crate::metrics;

/// Fetches in flight, by key.
pub struct Inflight<K, V> {
    map: Mutex<HashMap<K, watch::Receiver<Option<V>>>>,
}

/// The result of joining: lead a new fetch, or follow one already running.
pub enum Joined<K: Hash + Eq + Clone, V: Clone> {
    Leader(Lease<K, V>),
    Follower(watch::Receiver<Option<V>>),
}

/// The leader's obligation to publish an outcome for `key`.
pub struct Lease<K: Hash + Eq + Clone, V: Clone> {
    inflight: Arc<Inflight<K, V>>,
    key: K,
    tx: Option<watch::Sender<Option<V>>>,
}

impl<K: Hash + Eq + Clone, V: Clone> Default for Inflight<K, V> {
    fn default() -> Self {
        Self {
            map: Mutex::new(HashMap::new()),
        }
    }
}

impl<K: Hash + Eq + Clone, V: Clone> Inflight<K, V> {
    /// Joins the fetch for `key`, starting one if none is running.
    pub fn join(self: &Arc<Self>, key: &K) -> Joined<K, V> {
        let mut map = self.lock();
        if let Some(rx) = map.get(key) {
            return Joined::Follower(rx.clone());
        }
        let (tx, rx) = watch::channel(None);
        map.insert(key.clone(), rx);
        Joined::Leader(Lease {
            inflight: Arc::clone(self),
            key: key.clone(),
            tx: Some(tx),
        })
    }

    /// Fetches currently in flight.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<K, watch::Receiver<Option<V>>>> {
        self.map
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn release(&self, key: &K, tx: &watch::Sender<Option<V>>) {
        let mut map = self.lock();
        // Remove only our own registration: a newer fetch may already hold the key.
        if map
            .get(key)
            .is_some_and(|rx| rx.same_channel(&tx.subscribe()))
        {
            map.remove(key);
        }
    }
}

impl<K, V> std::fmt::Debug for Inflight<K, V>
where
    K: Hash + Eq + Clone,
    V: Clone,
{
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Inflight")
            .field("len", &self.len())
            .finish()
    }
}

impl<K, V> Collector for Inflight<K, V>
where
    K: Hash + Eq + Clone + Send + Sync + 'static,
    V: Clone + Send + Sync + 'static,
{
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        metrics::gauge(
            &mut encoder,
            "inflight_fetches",
            "Coalesced upstream fetches in flight",
            None,
            self.len() as u64,
        )
    }
}

impl<K: Hash + Eq + Clone, V: Clone> Lease<K, V> {
    /// The key this lease publishes for.
    pub fn key(&self) -> &K {
        &self.key
    }

    /// A receiver for the leader's own wait.
    pub fn subscribe(&self) -> watch::Receiver<Option<V>> {
        match &self.tx {
            Some(tx) => tx.subscribe(),
            None => watch::channel(None).1,
        }
    }

    /// Unregisters the key and wakes every waiter with `outcome`.
    pub fn complete(mut self, outcome: V) {
        if let Some(tx) = self.tx.take() {
            self.inflight.release(&self.key, &tx);
            tx.send_replace(Some(outcome));
        }
    }
}

impl<K: Hash + Eq + Clone, V: Clone> Drop for Lease<K, V> {
    fn drop(&mut self) {
        if let Some(tx) = self.tx.take() {
            self.inflight.release(&self.key, &tx);
        }
    }
}

/// Waits for the outcome on `rx`; `None` if the fetch ended without publishing one.
pub async fn outcome<V: Clone>(mut rx: watch::Receiver<Option<V>>) -> Option<V> {
    let value = rx.wait_for(Option::is_some).await.ok()?;
    value.clone()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn followers_share_the_leaders_outcome() {
        let inflight = Arc::new(Inflight::<u32, u32>::default());
        let Joined::Leader(lease) = inflight.join(&1) else {
            panic!("first is leader")
        };
        let waiters: Vec<_> = (0..5)
            .map(|_| match inflight.join(&1) {
                Joined::Follower(rx) => tokio::spawn(outcome(rx)),
                Joined::Leader(_) => panic!("second must follow"),
            })
            .collect();
        let own = lease.subscribe();
        lease.complete(42);
        assert_eq!(outcome(own).await, Some(42));
        for w in waiters {
            assert_eq!(w.await.unwrap(), Some(42));
        }
        assert!(inflight.is_empty());
        assert!(matches!(inflight.join(&1), Joined::Leader(_)));
    }

    #[tokio::test]
    async fn a_dropped_lease_wakes_waiters_and_frees_the_key() {
        let inflight = Arc::new(Inflight::<u32, u32>::default());
        let Joined::Leader(lease) = inflight.join(&7) else {
            panic!()
        };
        let Joined::Follower(rx) = inflight.join(&7) else {
            panic!()
        };
        drop(lease);
        assert_eq!(outcome(rx).await, None);
        assert!(inflight.is_empty());
    }

    #[tokio::test]
    async fn an_old_lease_does_not_unregister_a_newer_fetch() {
        let inflight = Arc::new(Inflight::<u32, u32>::default());
        let Joined::Leader(old) = inflight.join(&3) else {
            panic!()
        };
        // Simulate the old registration being replaced (it completed and a new fetch began).
        let old_tx = old.tx.as_ref().unwrap().clone();
        inflight.release(&3, &old_tx);
        let Joined::Leader(_new) = inflight.join(&3) else {
            panic!()
        };
        drop(old);
        assert_eq!(inflight.len(), 1);
    }
}
