//! The `[shared_cache]` section of `proxy.toml`: the optional second cache tier on a
//! Redis-protocol server (Redis 7, Valkey) that replicas share. Off unless `url` is set. Its
//! settings struct with defaults, the typed [`SharedCacheConfig`] it becomes, and the `validate`
//! that checks it, as every section has them. Parsing the URL with the redis crate opens no
//! connection; the tier connects at start-up, in the background (`shared_tier/`).

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::problems::Problems;

/// `[shared_cache]`: the cache tier shared by every replica.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SharedCacheSettings {
    /// `redis://[user:password@]host:port[/db]`, or `rediss://` for TLS. Unset: no shared tier.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// Prefix of every key and channel the proxy uses, so several deployments can share a server.
    pub key_prefix: String,
    /// Longest wait for one Redis call; a slower Redis is skipped, never waited on.
    pub timeout_ms: u64,
    /// How long local entries are still trusted as fresh after the invalidation stream is lost.
    pub offline_grace_ms: u64,
}

impl Default for SharedCacheSettings {
    fn default() -> Self {
        Self {
            url: None,
            key_prefix: "memu-proxy:".into(),
            timeout_ms: 50,
            offline_grace_ms: 2_000,
        }
    }
}

/// The shared tier, when configured.
#[derive(Debug, Clone)]
pub struct SharedCacheConfig {
    pub url: String,
    pub key_prefix: String,
    pub timeout: Duration,
    pub offline_grace: Duration,
}

impl SharedCacheSettings {
    /// `None` both when the tier is off and when a value is bad (then reported in `problems`).
    pub(super) fn validate(&self, problems: &mut Problems) -> Option<SharedCacheConfig> {
        let before = problems.len();
        if let Some(url) = &self.url {
            let scheme_ok = url.starts_with("redis://") || url.starts_with("rediss://");
            problems.check(
                scheme_ok,
                "shared_cache.url",
                "must start with redis:// or rediss://",
            );
            if let (true, Err(error)) = (scheme_ok, redis::Client::open(url.as_str())) {
                problems.push("shared_cache.url", format!("not a Redis URL: {error}"));
            }
        }
        problems.check(
            self.key_prefix.len() <= 64 && !self.key_prefix.contains(char::is_whitespace),
            "shared_cache.key_prefix",
            "must be at most 64 bytes, without spaces",
        );
        problems.greater_than_0(self.timeout_ms, "shared_cache.timeout_ms");
        problems.check(
            self.timeout_ms <= 10_000,
            "shared_cache.timeout_ms",
            "must not exceed 10000 (a slow Redis is skipped, not waited on)",
        );
        problems.greater_than_0(self.offline_grace_ms, "shared_cache.offline_grace_ms");
        problems.at_most_a_year(
            self.offline_grace_ms / 1000,
            "shared_cache.offline_grace_ms",
        );
        let url = self.url.clone()?;
        (problems.len() == before).then(|| SharedCacheConfig {
            url,
            key_prefix: self.key_prefix.clone(),
            timeout: Duration::from_millis(self.timeout_ms),
            offline_grace: Duration::from_millis(self.offline_grace_ms),
        })
    }
}

/// `url` with its password, if any, replaced by `***`, for logs and `--check-config`.
pub fn redacted(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    match rest.rsplit_once('@') {
        Some((userinfo, host)) => {
            let user = userinfo.split_once(':').map_or(userinfo, |(user, _)| user);
            let hidden = if userinfo.contains(':') || !user.is_empty() {
                format!("{user}:***")
            } else {
                String::new()
            };
            format!("{scheme}://{hidden}@{host}")
        }
        None => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_are_redacted() {
        assert_eq!(redacted("redis://h:6379"), "redis://h:6379");
        assert_eq!(redacted("redis://:pw@h:6379/0"), "redis://:***@h:6379/0");
        assert_eq!(redacted("rediss://u:p@ss@h"), "rediss://u:***@h");
        assert_eq!(redacted("redis://token@h"), "redis://token:***@h");
    }
}
