//! Configuration: the `proxy.toml` file format, command-line overrides, and validation.
//!
//! Precedence is built-in defaults < `proxy.toml` < command-line flags. The file is parsed into
//! [`Settings`] (plain values, `deny_unknown_fields`, so a typo fails loudly), flags are applied on
//! top, and [`Settings::validate`] turns the result into the typed [`Config`] the proxy runs with,
//! reporting *every* bad key at once. Nothing here binds a port or touches the network.
//!
//! Layout: [`Settings`], [`Config`] and the file handling are here; each `[section]`'s settings
//! struct, defaults, checks and typed config sit together in `sections.rs` (`[upstream]` in
//! `upstream.rs`); [`Problem`] and the collector the sections report into are in `problems.rs`.
//! [`Settings::validate`] asks each section in file order and adds the checks that span sections.

mod local;
mod problems;
mod sections;
mod shared;
mod upstream;

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use serde::{Deserialize, Serialize};

pub use local::{EmbeddingsConfig, LocalAnswersSettings};
pub use problems::Problem;
use problems::Problems;
pub use sections::{
    CacheConfig, CacheSettings, CircuitConfig, CircuitSettings, CompatSettings, LatencyConfig,
    LatencySettings, ServerSettings,
};
pub use shared::{redacted, SharedCacheConfig, SharedCacheSettings};
pub use upstream::{UpstreamConfig, UpstreamSettings};

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
    pub shared_cache: SharedCacheSettings,
    pub local_answers: LocalAnswersSettings,
}

/// The validated, typed configuration the proxy runs with.
#[derive(Debug, Clone)]
pub struct Config {
    pub listen: SocketAddr,
    pub admin_listen: Option<SocketAddr>,
    pub max_body_bytes: usize,
    pub shutdown_grace: Duration,
    /// `server.worker_threads`, with 0 resolved to the number of cores: at least 1.
    pub worker_threads: usize,
    /// `server.idle_timeout_ms`.
    pub idle_timeout: Duration,
    /// `server.max_connections`; `main` lowers it to fit the open-files limit.
    pub max_connections: usize,
    pub upstream: UpstreamConfig,
    pub cache: CacheConfig,
    pub latency: LatencyConfig,
    pub circuit: CircuitConfig,
    pub compat: CompatSettings,
    /// `None`: no shared tier (`shared_cache.url` unset).
    pub shared_cache: Option<SharedCacheConfig>,
    /// `None`: local answers rank lexically only (`local_answers.embeddings_url` unset).
    pub embeddings: Option<EmbeddingsConfig>,
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

    /// The effective configuration as TOML, for `--check-config`; a password in
    /// `shared_cache.url` is shown as `***`.
    pub fn to_toml(&self) -> String {
        let mut shown = self.clone();
        shown.shared_cache.url = shown.shared_cache.url.as_deref().map(redacted);
        toml::to_string_pretty(&shown).unwrap_or_else(|e| format!("# cannot render: {e}\n"))
    }

    /// Checks every value and builds the typed [`Config`]; all problems are reported together,
    /// section by section in file order.
    pub fn validate(&self) -> Result<Config, ConfigError> {
        let mut problems = Problems::default();
        let server = self.server.validate(&mut problems);
        let upstream = self.upstream.validate(&mut problems);
        let cache = self.cache.validate(&mut problems);
        problems.check(
            self.latency.budget_ms <= self.upstream.timeout_ms,
            "latency.budget_ms",
            "must not exceed upstream.timeout_ms (the budget answers before the hard deadline)",
        );
        let latency = self.latency.validate(&mut problems);
        let circuit = self.circuit.validate(&mut problems);
        let shared_cache = self.shared_cache.validate(&mut problems);
        let embeddings = self
            .local_answers
            .validate(self.cache.local_answers, &mut problems);
        match (server, upstream, cache, latency, circuit) {
            (Some(server), Some(upstream), Some(cache), Some(latency), Some(circuit))
                if problems.is_empty() =>
            {
                Ok(Config {
                    listen: server.listen,
                    admin_listen: server.admin_listen,
                    max_body_bytes: server.max_body_bytes,
                    shutdown_grace: server.shutdown_grace,
                    worker_threads: server.worker_threads,
                    idle_timeout: server.idle_timeout,
                    max_connections: server.max_connections,
                    upstream,
                    cache,
                    latency,
                    circuit,
                    compat: self.compat.clone(),
                    shared_cache,
                    embeddings,
                })
            }
            _ => Err(ConfigError::Invalid(problems.into_vec())),
        }
    }
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
        assert_eq!(config.upstream.write_timeout, Duration::from_secs(30));
        assert_eq!(config.cache.ttl, Duration::from_secs(300));
        assert_eq!(config.max_body_bytes, 1024 * 1024);
    }

    #[test]
    fn every_bad_value_is_reported_by_key() {
        let mut s = Settings::default();
        s.server.listen = "nope".into();
        s.upstream.url = "ftp://x".into();
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

    fn problem_keys(s: &Settings) -> Vec<&'static str> {
        match s.validate() {
            Err(ConfigError::Invalid(problems)) => problems.iter().map(|p| p.key).collect(),
            other => panic!("expected invalid, got {other:?}"),
        }
    }

    #[test]
    fn one_bad_value_is_reported_under_its_own_key_only() {
        const YEAR_MS: u64 = 365 * 24 * 3600 * 1000;
        type Spoil = fn(&mut Settings);
        let cases: &[(&str, Spoil)] = &[
            ("server.listen", |s| s.server.listen = "nope".into()),
            ("server.admin_listen", |s| {
                s.server.admin_listen = Some("nope".into())
            }),
            ("server.max_body_bytes", |s| s.server.max_body_bytes = 0),
            ("server.shutdown_grace_ms", |s| {
                s.server.shutdown_grace_ms = YEAR_MS + 1000
            }),
            ("upstream.url", |s| s.upstream.url = "http://h/?q=1".into()),
            ("upstream.ca_file", |s| {
                s.upstream.ca_file = Some("/nonexistent/memu-ca.pem".into())
            }),
            ("upstream.timeout_ms", |s| s.upstream.timeout_ms = 0),
            ("upstream.timeout_ms", |s| s.upstream.timeout_ms = 600_001),
            ("upstream.write_timeout_ms", |s| {
                s.upstream.write_timeout_ms = 0
            }),
            ("upstream.write_timeout_ms", |s| {
                s.upstream.write_timeout_ms = 600_001
            }),
            ("upstream.max_response_bytes", |s| {
                s.upstream.max_response_bytes = 0
            }),
            ("upstream.pool_idle_timeout_secs", |s| {
                s.upstream.pool_idle_timeout_secs = u64::MAX
            }),
            ("cache.ttl_secs", |s| s.cache.ttl_secs = 0),
            ("cache.ttl_secs", |s| s.cache.ttl_secs = u64::MAX),
            ("cache.stale_while_revalidate_secs", |s| {
                s.cache.stale_while_revalidate_secs = u64::MAX
            }),
            ("cache.stale_if_error_secs", |s| {
                s.cache.stale_if_error_secs = u64::MAX
            }),
            ("cache.max_bytes", |s| s.cache.max_bytes = 4095),
            ("cache.similarity_threshold", |s| {
                s.cache.similarity_threshold = 1.01
            }),
            ("cache.similarity_threshold", |s| {
                s.cache.similarity_threshold = f64::NAN
            }),
            ("cache.max_scopes", |s| s.cache.max_scopes = 0),
            ("cache.max_tracked_tasks", |s| s.cache.max_tracked_tasks = 0),
            ("latency.budget_ms", |s| s.latency.budget_ms = 2_001),
            ("latency.max_background_fetches", |s| {
                s.latency.max_background_fetches = 0
            }),
            ("circuit.cool_down_ms", |s| s.circuit.cool_down_ms = 0),
            ("circuit.cool_down_ms", |s| {
                s.circuit.cool_down_ms = YEAR_MS + 1000
            }),
            ("shared_cache.url", |s| {
                s.shared_cache.url = Some("http://h:6379".into())
            }),
            ("shared_cache.url", |s| {
                s.shared_cache.url = Some("redis://h:notaport".into())
            }),
            ("shared_cache.key_prefix", |s| {
                s.shared_cache.key_prefix = "a b".into()
            }),
            ("shared_cache.timeout_ms", |s| s.shared_cache.timeout_ms = 0),
            ("shared_cache.timeout_ms", |s| {
                s.shared_cache.timeout_ms = 10_001
            }),
            ("shared_cache.offline_grace_ms", |s| {
                s.shared_cache.offline_grace_ms = 0
            }),
        ];
        for (key, spoil) in cases {
            let mut s = Settings::default();
            spoil(&mut s);
            assert_eq!(problem_keys(&s), [*key]);
        }
    }

    #[test]
    fn problems_come_section_by_section_in_file_order() {
        let mut s = Settings::default();
        s.server.listen = "nope".into();
        s.server.admin_listen = Some("nope".into());
        s.server.max_body_bytes = 0;
        s.server.shutdown_grace_ms = u64::MAX;
        s.upstream.url = "ftp://x".into();
        s.upstream.ca_file = Some("/nonexistent/memu-ca.pem".into());
        s.upstream.timeout_ms = 0;
        s.upstream.write_timeout_ms = 0;
        s.upstream.max_response_bytes = 0;
        s.upstream.pool_idle_timeout_secs = u64::MAX;
        s.cache.ttl_secs = 0;
        s.cache.max_bytes = 0;
        s.cache.stale_while_revalidate_secs = u64::MAX;
        s.cache.stale_if_error_secs = u64::MAX;
        s.cache.similarity_threshold = -1.0;
        s.cache.max_scopes = 0;
        s.cache.max_tracked_tasks = 0;
        s.latency.budget_ms = 1;
        s.latency.max_background_fetches = 0;
        s.circuit.cool_down_ms = 0;
        assert_eq!(
            problem_keys(&s),
            [
                "server.listen",
                "server.admin_listen",
                "server.max_body_bytes",
                "server.shutdown_grace_ms",
                "upstream.url",
                "upstream.ca_file",
                "upstream.timeout_ms",
                "upstream.write_timeout_ms",
                "upstream.max_response_bytes",
                "upstream.pool_idle_timeout_secs",
                "cache.ttl_secs",
                "cache.max_bytes",
                "cache.stale_while_revalidate_secs",
                "cache.stale_if_error_secs",
                "cache.similarity_threshold",
                "cache.max_scopes",
                "cache.max_tracked_tasks",
                "latency.budget_ms",
                "latency.max_background_fetches",
                "circuit.cool_down_ms",
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
