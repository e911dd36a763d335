//! The names the shared tier uses in Redis, from the cache's own keys and slots. Pure.
//!
//! Every name is the configured prefix plus a kind and a SHA-256 digest in hex: an answer
//! (`e:`), its fetch lock (`l:`), a generation (`g:`, or `g:*` for the everything epoch), and one
//! pub/sub channel. A key's digest covers every field of the [`CacheKey`] (route, path, tenant
//! digest, user, agent, normalised query, canonical parameters), each length-prefixed, so two
//! keys share a name only if they are equal: nothing crosses a tenant, user or agent, and no
//! query text, user id or API key appears in a name.

pub use crate::cache::digest::hex;
use crate::cache::digest::Fields;
use crate::cache::generations::{ReadSlots, SlotId};
use crate::cache::CacheKey;

/// The Redis names of one cache key and of the generations it depends on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyNames {
    pub entry: String,
    pub lock: String,
    /// The read's own slot, its user's every-agent slot, and the everything epoch: the order
    /// the scripts and records use.
    pub generations: [String; 3],
}

/// The name builder for one prefix.
#[derive(Debug, Clone)]
pub struct Names {
    prefix: Box<str>,
    /// What makes this replica's answers what they are besides the key ([`Names::answering`]).
    fingerprint: Box<[u8]>,
}

impl Names {
    pub fn new(prefix: &str) -> Self {
        Self {
            prefix: prefix.into(),
            fingerprint: Box::default(),
        }
    }

    /// The same names for a replica whose answers depend on `fingerprint` as well as on the key
    /// (the memU it asks, the repairs it makes): answers' and locks' names include it, so
    /// replicas that would answer differently never share a record. Generations' names do not:
    /// a write through any replica invalidates them all.
    pub fn answering(mut self, fingerprint: &[u8]) -> Self {
        self.fingerprint = fingerprint.into();
        self
    }

    /// The names of `key`'s answer, lock and generations.
    pub fn of(&self, key: &CacheKey) -> KeyNames {
        let digest = hex(&key_digest(key, &self.fingerprint));
        let slots = ReadSlots::of(&key.scope);
        KeyNames {
            entry: format!("{}e:{digest}", self.prefix),
            lock: format!("{}l:{digest}", self.prefix),
            generations: [
                self.generation(&slots.own),
                self.generation(&slots.user),
                self.everything(),
            ],
        }
    }

    /// The generation of one slot.
    pub fn generation(&self, slot: &SlotId) -> String {
        format!("{}g:{}", self.prefix, hex(slot))
    }

    /// The everything epoch.
    pub fn everything(&self) -> String {
        format!("{}g:*", self.prefix)
    }

    /// The pub/sub channel of invalidations and heartbeats.
    pub fn channel(&self) -> String {
        format!("{}invalidations", self.prefix)
    }
}

/// A SHA-256 digest of every field of `key`, and of the answering replica's `fingerprint`.
pub fn key_digest(key: &CacheKey, fingerprint: &[u8]) -> [u8; 32] {
    let mut fields = Fields::new();
    fields
        .field(fingerprint)
        .field(key.route.name.as_bytes())
        .field(key.path_and_query.as_bytes())
        .field(
            key.scope
                .tenant
                .as_ref()
                .map_or(&[][..], |tenant| &tenant[..]),
        )
        .field(key.scope.user.as_bytes())
        .optional(key.scope.agent.as_deref())
        .optional(key.query.as_deref())
        .field(key.params.as_bytes());
    fields.finish()
}

/// The bytes of a 64-digit hex slot id, as [`hex`] writes it.
pub fn parse_slot(text: &str) -> Option<SlotId> {
    let digits = text.as_bytes();
    if digits.len() != 64 {
        return None;
    }
    let mut id = [0; 32];
    for (byte, pair) in id.iter_mut().zip(digits.chunks(2)) {
        let pair = std::str::from_utf8(pair).ok()?;
        *byte = u8::from_str_radix(pair, 16).ok()?;
    }
    Some(id)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cache::{read_key, tenant_of};
    use crate::routes::ReadRoute;

    fn key(authorization: Option<&[u8]>, body: &str) -> CacheKey {
        let route = ReadRoute::V1_RELATED;
        read_key(route, "/p", tenant_of(authorization), body.as_bytes())
            .unwrap()
            .key
    }

    #[test]
    fn names_carry_digests_only() {
        let names = Names::new("memu-proxy:");
        let k = key(
            Some(b"Bearer secret-key"),
            r#"{"user_id":"alice","agent_id":"aria","query":"my cat"}"#,
        );
        let of = names.of(&k);
        let all = [&of.entry, &of.lock, &of.generations[0], &of.generations[1]];
        for name in all {
            assert!(name.starts_with("memu-proxy:"), "{name}");
            for secret in ["secret", "alice", "aria", "cat"] {
                assert!(!name.contains(secret), "{name} contains {secret}");
            }
        }
        assert_eq!(of.entry.len(), "memu-proxy:e:".len() + 64);
        assert_eq!(of.generations[2], "memu-proxy:g:*");
    }

    #[test]
    fn every_part_of_the_key_changes_the_name() {
        let names = Names::new("p:");
        let base = r#"{"user_id":"u","agent_id":"a","query":"q","top_k":3}"#;
        let name = |auth: Option<&[u8]>, body: &str| names.of(&key(auth, body)).entry;
        let same = r#"{"agent_id":"a","user_id":"u","query":"Q?","top_k":3.0}"#;
        assert_eq!(name(None, base), name(None, same));
        for (auth, body) in [
            (Some(&b"Bearer k"[..]), base),
            (
                None,
                r#"{"user_id":"v","agent_id":"a","query":"q","top_k":3}"#,
            ),
            (
                None,
                r#"{"user_id":"u","agent_id":"b","query":"q","top_k":3}"#,
            ),
            (None, r#"{"user_id":"u","query":"q","top_k":3}"#),
            (
                None,
                r#"{"user_id":"u","agent_id":"a","query":"r","top_k":3}"#,
            ),
            (
                None,
                r#"{"user_id":"u","agent_id":"a","query":"q","top_k":4}"#,
            ),
        ] {
            assert_ne!(name(None, base), name(auth, body), "{body}");
        }
    }

    #[test]
    fn replicas_that_answer_differently_name_answers_apart_and_generations_alike() {
        let k = key(None, r#"{"user_id":"u","query":"q"}"#);
        let (plain, repairing) = (
            Names::new("p:").answering(b"fill_null_timestamps=false"),
            Names::new("p:").answering(b"fill_null_timestamps=true"),
        );
        let (a, b) = (plain.of(&k), repairing.of(&k));
        assert_ne!(a.entry, b.entry);
        assert_ne!(a.lock, b.lock);
        assert_eq!(a.generations, b.generations);
    }

    #[test]
    fn slot_ids_round_trip_through_hex() {
        let id: SlotId = std::array::from_fn(|i| (i * 37) as u8);
        assert_eq!(parse_slot(&hex(&id)), Some(id));
        assert_eq!(parse_slot("zz"), None);
        assert_eq!(parse_slot(&"g".repeat(64)), None);
    }
}
