//! Configuration: the `proxy.toml` file format, command-line overrides, and validation.
//!
//! Precedence is built-in defaults < `proxy.toml` < command-line flags. The file is parsed into
//! [`Settings`] (plain values, `deny_unknown_fields`, so a typo fails loudly), flags are applied on
//! top, and [`Settings::validate`] turns the result into the typed [`Config`] the proxy runs with,
//! reporting *every* bad key at once. Nothing here binds a port or touches the network.

use std::fmt;
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use http::uri::{Authority, Scheme};
use http::Uri;
use serde::{Deserialize, Serialize};

/// The file format of `proxy.toml`, and the effective configuration printed by `--check-config`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Settings {
    pub server: ServerSettings,
    pub upstream: UpstreamSettings,
    pub cache: CacheSettings,
    pub latency: LatencySettings,
    pub circuit: CircuitSettings,
    pub compat: CompatSettings,
}

/// `[latency]`: how long a conversation turn may wait for memories.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LatencySettings {
    /// Answer a retrieval within this many ms (stale or empty if memU is slower) while the
    /// upstream fetch goes on in the background to fill the cache. 0 = off.
    pub budget_ms: u64,
    /// Most upstream fetches running at once (client misses, refreshes, prewarms); excess is
    /// shed: answered stale or empty, or dropped for background work, and counted.
    pub max_background_fetches: usize,
}

/// `[circuit]`: stop sending traffic to a failing memU for a while.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CircuitSettings {
    /// Consecutive upstream failures (timeouts, connect errors, 5xx) that open the circuit. 0 = off.
    pub failure_threshold: u32,
    /// How long the circuit stays open before one probe request is let through.
    pub cool_down_ms: u64,
}

impl Default for LatencySettings {
    fn default() -> Self {
        Self {
            budget_ms: 0,
            max_background_fetches: 64,
        }
    }
}

impl Default for CircuitSettings {
    fn default() -> Self {
        Self {
            failure_threshold: 5,
            cool_down_ms: 5_000,
        }
    }
}

/// `[compat]`: opt-in repairs of memU answers that real clients cannot parse.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CompatSettings {
    /// Fill null `created_at`/`updated_at` in retrieval answers from `happened_at`, so the
    /// official SDK parses the self-hosted server's non-empty answers.
    pub fill_null_timestamps: bool,
}

/// `[server]`: where the proxy listens and how it treats incoming requests.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerSettings {
    /// Address the proxy listens on; the app's memU `base_url` points here.
    pub listen: String,
    /// Optional second listener serving only `/metrics` and `/healthz`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub admin_listen: Option<String>,
    /// Largest request body accepted; larger ones get 413 without contacting memU.
    pub max_body_bytes: u64,
    /// How long in-flight requests may take to finish after SIGINT/SIGTERM.
    pub shutdown_grace_ms: u64,
    /// Runtime threads: 1 (a sidecar's default: no cross-thread wake-ups), N, or 0 for one per
    /// CPU core.
    pub worker_threads: usize,
}

/// `[upstream]`: the memU server the proxy forwards to.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct UpstreamSettings {
    /// memU base URL; a path prefix (`http://h:8000/memu`) is kept.
    pub url: String,
    /// Hard deadline for one upstream exchange, in milliseconds.
    pub timeout_ms: u64,
    /// Largest upstream response the proxy buffers (cached reads, writes, task status).
    pub max_response_bytes: u64,
    /// Idle pooled connections are closed after this many seconds.
    pub pool_idle_timeout_secs: u64,
    /// Most idle pooled connections kept to memU.
    pub pool_max_idle: usize,
}

/// `[cache]`: the retrieval cache.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CacheSettings {
    /// Set to false to forward every retrieval (still with deadline and fallback).
    pub enabled: bool,
    /// How long a stored answer is served as fresh.
    pub ttl_secs: u64,
    /// Past its TTL, an answer is still served at once for this long while one background
    /// refresh replaces it. 0 = off.
    pub stale_while_revalidate_secs: u64,
    /// Past its TTL (or after an invalidation), an answer is served for this long instead of the
    /// empty fallback when memU fails, times out, misses the budget or the circuit is open. 0 = off.
    pub stale_if_error_secs: u64,
    /// Upper bound of the cache, in bytes (bodies, keys and bookkeeping).
    pub max_bytes: u64,
    /// Answer a miss from a cached near-duplicate query of the same scope, route and parameters
    /// at or above this similarity (0 < t ≤ 1). 0 = off.
    pub similarity_threshold: f64,
    /// Most invalidation scopes (tenant, user, agent) remembered.
    pub max_scopes: usize,
    /// Most memorize task ids remembered for re-invalidation on SUCCESS.
    pub max_tracked_tasks: usize,
}

impl Default for ServerSettings {
    fn default() -> Self {
        Self {
            listen: "127.0.0.1:8100".into(),
            admin_listen: None,
            max_body_bytes: 1024 * 1024,
            shutdown_grace_ms: 10_000,
            worker_threads: 1,
        }
    }
}

impl Default for UpstreamSettings {
    fn default() -> Self {
        Self {
            url: "http://127.0.0.1:8000".into(),
            timeout_ms: 2_000,
            max_response_bytes: 16 * 1024 * 1024,
            pool_idle_timeout_secs: 90,
            pool_max_idle: 64,
        }
    }
}

impl Default for CacheSettings {
    fn default() -> Self {
        Self {
            enabled: true,
            ttl_secs: 300,
            stale_while_revalidate_secs: 0,
            stale_if_error_secs: 0,
            similarity_threshold: 0.0,
            max_bytes: 64 * 1024 * 1024,
            max_scopes: 100_000,
            max_tracked_tasks: 10_000,
        }
    }
}

/// The validated, typed configuration the proxy runs with.
#[derive(Debug, Clone)]
pub struct Config {
    pub listen: SocketAddr,
    pub admin_listen: Option<SocketAddr>,
    pub max_body_bytes: usize,
    pub shutdown_grace: Duration,
    pub worker_threads: usize,
    pub upstream: UpstreamConfig,
    pub cache: CacheConfig,
    pub latency: LatencyConfig,
    pub circuit: CircuitConfig,
    pub compat: CompatSettings,
}

/// The latency budget and background-work bound.
#[derive(Debug, Clone)]
pub struct LatencyConfig {
    /// `None`: no budget (wait up to the hard deadline).
    pub budget: Option<Duration>,
    pub max_background_fetches: usize,
}

/// Circuit breaker thresholds; `failure_threshold == 0` disables it.
#[derive(Debug, Clone)]
pub struct CircuitConfig {
    pub failure_threshold: u32,
    pub cool_down: Duration,
}

/// Where and how to reach memU.
#[derive(Debug, Clone)]
pub struct UpstreamConfig {
    pub scheme: Scheme,
    pub authority: Authority,
    /// Path prefix without a trailing slash (`""` or `"/memu"`).
    pub base_path: String,
    pub timeout: Duration,
    pub max_response_bytes: usize,
    pub pool_idle_timeout: Duration,
    pub pool_max_idle: usize,
}

/// Cache bounds and lifetimes.
#[derive(Debug, Clone)]
pub struct CacheConfig {
    pub enabled: bool,
    pub ttl: Duration,
    pub stale_while_revalidate: Duration,
    pub stale_if_error: Duration,
    pub similarity_threshold: f64,
    pub max_bytes: u64,
    pub max_scopes: usize,
    pub max_tracked_tasks: usize,
}

/// Everything wrong with a configuration, each problem naming its key.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: {source}")]
    Parse {
        path: String,
        #[source]
        source: Box<toml::de::Error>,
    },
    #[error("invalid configuration:\n{}", .0.iter().map(|p| format!("  - {p}")).collect::<Vec<_>>().join("\n"))]
    Invalid(Vec<Problem>),
}

/// One bad value: the dotted key and what is wrong with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub key: &'static str,
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.key, self.message)
    }
}

impl Settings {
    /// Parses `proxy.toml` text.
    pub fn from_toml(text: &str, path: &str) -> Result<Self, ConfigError> {
        toml::from_str(text).map_err(|source| ConfigError::Parse {
            path: path.to_owned(),
            source: Box::new(source),
        })
    }

    /// Reads and parses a config file.
    pub fn from_file(path: &Path) -> Result<Self, ConfigError> {
        let shown = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: shown.clone(),
            source,
        })?;
        Self::from_toml(&text, &shown)
    }

    /// The effective configuration as TOML, for `--check-config`.
    pub fn to_toml(&self) -> String {
        toml::to_string_pretty(self).unwrap_or_else(|e| format!("# cannot render: {e}\n"))
    }

    /// Checks every value and builds the typed [`Config`]; all problems are reported together.
    pub fn validate(&self) -> Result<Config, ConfigError> {
        let mut problems = Vec::new();
        let mut check = |ok: bool, key: &'static str, message: &str| {
            if !ok {
                problems.push(Problem {
                    key,
                    message: message.to_owned(),
                });
            }
        };
        let listen = self.server.listen.parse::<SocketAddr>();
        check(
            listen.is_ok(),
            "server.listen",
            &format!("`{}` is not an IP:port address", self.server.listen),
        );
        let admin_listen = self
            .server
            .admin_listen
            .as_deref()
            .map(str::parse::<SocketAddr>);
        check(
            !matches!(admin_listen, Some(Err(_))),
            "server.admin_listen",
            "not an IP:port address",
        );
        check(
            self.server.max_body_bytes > 0,
            "server.max_body_bytes",
            "must be greater than 0",
        );
        let upstream = parse_upstream_url(&self.upstream.url);
        if let Err(message) = &upstream {
            check(false, "upstream.url", message);
        }
        check(
            (1..=600_000).contains(&self.upstream.timeout_ms),
            "upstream.timeout_ms",
            "must be between 1 and 600000",
        );
        check(
            self.upstream.max_response_bytes > 0,
            "upstream.max_response_bytes",
            "must be greater than 0",
        );
        check(
            self.cache.ttl_secs > 0,
            "cache.ttl_secs",
            "must be greater than 0 (set cache.enabled = false to disable caching)",
        );
        check(
            self.cache.max_bytes >= 4096,
            "cache.max_bytes",
            "must be at least 4096",
        );
        check(
            self.latency.budget_ms <= self.upstream.timeout_ms,
            "latency.budget_ms",
            "must not exceed upstream.timeout_ms (the budget answers before the hard deadline)",
        );
        // Upper bounds keep every `Instant + Duration` far from overflow.
        const YEAR_SECS: u64 = 365 * 24 * 3600;
        for (value, key) in [
            (self.cache.ttl_secs, "cache.ttl_secs"),
            (
                self.cache.stale_while_revalidate_secs,
                "cache.stale_while_revalidate_secs",
            ),
            (self.cache.stale_if_error_secs, "cache.stale_if_error_secs"),
            (
                self.upstream.pool_idle_timeout_secs,
                "upstream.pool_idle_timeout_secs",
            ),
            (
                self.server.shutdown_grace_ms / 1000,
                "server.shutdown_grace_ms",
            ),
            (self.circuit.cool_down_ms / 1000, "circuit.cool_down_ms"),
        ] {
            check(value <= YEAR_SECS, key, "must not exceed one year");
        }
        check(
            self.latency.max_background_fetches > 0,
            "latency.max_background_fetches",
            "must be greater than 0",
        );
        check(
            self.circuit.failure_threshold == 0 || self.circuit.cool_down_ms > 0,
            "circuit.cool_down_ms",
            "must be greater than 0 when the circuit breaker is on",
        );
        check(
            (0.0..=1.0).contains(&self.cache.similarity_threshold),
            "cache.similarity_threshold",
            "must be between 0 (off) and 1",
        );
        check(
            self.cache.max_scopes > 0,
            "cache.max_scopes",
            "must be greater than 0",
        );
        check(
            self.cache.max_tracked_tasks > 0,
            "cache.max_tracked_tasks",
            "must be greater than 0",
        );
        match (listen, admin_listen.transpose(), upstream) {
            (Ok(listen), Ok(admin_listen), Ok((scheme, authority, base_path)))
                if problems.is_empty() =>
            {
                Ok(Config {
                    listen,
                    admin_listen,
                    max_body_bytes: usize::try_from(self.server.max_body_bytes)
                        .unwrap_or(usize::MAX),
                    shutdown_grace: Duration::from_millis(self.server.shutdown_grace_ms),
                    worker_threads: self.server.worker_threads,
                    upstream: UpstreamConfig {
                        scheme,
                        authority,
                        base_path,
                        timeout: Duration::from_millis(self.upstream.timeout_ms),
                        max_response_bytes: usize::try_from(self.upstream.max_response_bytes)
                            .unwrap_or(usize::MAX),
                        pool_idle_timeout: Duration::from_secs(
                            self.upstream.pool_idle_timeout_secs,
                        ),
                        pool_max_idle: self.upstream.pool_max_idle,
                    },
                    cache: CacheConfig {
                        enabled: self.cache.enabled,
                        ttl: Duration::from_secs(self.cache.ttl_secs),
                        stale_while_revalidate: Duration::from_secs(
                            self.cache.stale_while_revalidate_secs,
                        ),
                        stale_if_error: Duration::from_secs(self.cache.stale_if_error_secs),
                        similarity_threshold: self.cache.similarity_threshold,
                        max_bytes: self.cache.max_bytes,
                        max_scopes: self.cache.max_scopes,
                        max_tracked_tasks: self.cache.max_tracked_tasks,
                    },
                    latency: LatencyConfig {
                        budget: (self.latency.budget_ms > 0)
                            .then(|| Duration::from_millis(self.latency.budget_ms)),
                        max_background_fetches: self.latency.max_background_fetches,
                    },
                    circuit: CircuitConfig {
                        failure_threshold: self.circuit.failure_threshold,
                        cool_down: Duration::from_millis(self.circuit.cool_down_ms),
                    },
                    compat: self.compat.clone(),
                })
            }
            _ => Err(ConfigError::Invalid(problems)),
        }
    }
}

/// Splits `http://host:port/prefix` into scheme, authority and a prefix without trailing slash.
fn parse_upstream_url(url: &str) -> Result<(Scheme, Authority, String), String> {
    let uri: Uri = url
        .parse()
        .map_err(|e| format!("`{url}` is not a URL: {e}"))?;
    let scheme = uri
        .scheme()
        .cloned()
        .ok_or_else(|| format!("`{url}` has no scheme"))?;
    if scheme != Scheme::HTTP {
        return Err(format!("`{url}`: only http:// upstreams are supported"));
    }
    let authority = uri
        .authority()
        .cloned()
        .ok_or_else(|| format!("`{url}` has no host"))?;
    if uri.query().is_some() {
        return Err(format!("`{url}` must not have a query string"));
    }
    let base_path = uri.path().trim_end_matches('/').to_owned();
    Ok((scheme, authority, base_path))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_validate_to_the_documented_values() {
        let config = Settings::default().validate().unwrap();
        assert_eq!(config.listen, "127.0.0.1:8100".parse().unwrap());
        assert_eq!(config.upstream.authority.as_str(), "127.0.0.1:8000");
        assert_eq!(config.upstream.base_path, "");
        assert_eq!(config.upstream.timeout, Duration::from_millis(2000));
        assert_eq!(config.cache.ttl, Duration::from_secs(300));
        assert_eq!(config.max_body_bytes, 1024 * 1024);
    }

    #[test]
    fn upstream_prefix_is_kept_without_trailing_slash() {
        for (url, prefix) in [
            ("http://h:8000", ""),
            ("http://h:8000/", ""),
            ("http://h:8000/memu", "/memu"),
            ("http://h:8000/memu/", "/memu"),
        ] {
            let (_, _, base) = parse_upstream_url(url).unwrap();
            assert_eq!(base, prefix, "{url}");
        }
    }

    #[test]
    fn every_bad_value_is_reported_by_key() {
        let mut s = Settings::default();
        s.server.listen = "nope".into();
        s.upstream.url = "https://x".into();
        s.upstream.timeout_ms = 0;
        s.cache.ttl_secs = 0;
        s.cache.stale_if_error_secs = u64::MAX;
        let Err(ConfigError::Invalid(problems)) = s.validate() else {
            panic!("expected invalid");
        };
        let keys: Vec<_> = problems.iter().map(|p| p.key).collect();
        assert_eq!(
            keys,
            [
                "server.listen",
                "upstream.url",
                "upstream.timeout_ms",
                "cache.ttl_secs",
                "cache.stale_if_error_secs"
            ]
        );
    }

    #[test]
    fn unknown_keys_are_rejected_with_their_name() {
        let err = Settings::from_toml("[cache]\nttl_sec = 5\n", "t.toml").unwrap_err();
        assert!(err.to_string().contains("ttl_sec"), "{err}");
    }

    #[test]
    fn effective_config_round_trips_through_toml() {
        let s = Settings::default();
        assert_eq!(Settings::from_toml(&s.to_toml(), "x").unwrap(), s);
    }
}
