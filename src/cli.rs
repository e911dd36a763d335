//! Command-line flags. Every flag is optional and overrides the matching `proxy.toml` key.

use std::path::PathBuf;

use clap::Parser;

use crate::config::{ConfigError, Settings};

/// Transparent caching reverse proxy sidecar for the memU memory API.
#[derive(Debug, Parser)]
#[command(name = "memu-proxy", version, about)]
pub struct Cli {
    /// Config file (default: ./proxy.toml when present, else built-in defaults).
    #[arg(long, env = "MEMU_PROXY_CONFIG", value_name = "PATH")]
    pub config: Option<PathBuf>,
    /// Listen address, e.g. 127.0.0.1:8100 (server.listen).
    #[arg(long, env = "MEMU_PROXY_LISTEN", value_name = "ADDR")]
    pub listen: Option<String>,
    /// Separate listener for /metrics and /healthz (server.admin_listen).
    #[arg(long, env = "MEMU_PROXY_ADMIN_LISTEN", value_name = "ADDR")]
    pub admin_listen: Option<String>,
    /// memU base URL, http:// or https://, e.g. http://127.0.0.1:8000 (upstream.url).
    #[arg(long, env = "MEMU_PROXY_UPSTREAM", value_name = "URL")]
    pub upstream: Option<String>,
    /// PEM file of extra root certificates for an https:// upstream (upstream.ca_file).
    #[arg(long, env = "MEMU_PROXY_UPSTREAM_CA_FILE", value_name = "PATH")]
    pub upstream_ca_file: Option<String>,
    /// Hard upstream deadline of reads and pass-through in milliseconds (upstream.timeout_ms).
    #[arg(long, env = "MEMU_PROXY_TIMEOUT_MS", value_name = "N")]
    pub timeout_ms: Option<u64>,
    /// Hard upstream deadline of writes in milliseconds (upstream.write_timeout_ms).
    #[arg(long, env = "MEMU_PROXY_WRITE_TIMEOUT_MS", value_name = "N")]
    pub write_timeout_ms: Option<u64>,
    /// Seconds a cached answer stays fresh (cache.ttl_secs).
    #[arg(long, env = "MEMU_PROXY_CACHE_TTL_SECS", value_name = "N")]
    pub cache_ttl_secs: Option<u64>,
    /// Cache size bound in bytes (cache.max_bytes).
    #[arg(long, env = "MEMU_PROXY_CACHE_MAX_BYTES", value_name = "N")]
    pub cache_max_bytes: Option<u64>,
    /// Largest accepted request body in bytes (server.max_body_bytes).
    #[arg(long, env = "MEMU_PROXY_MAX_BODY_BYTES", value_name = "N")]
    pub max_body_bytes: Option<u64>,
    /// Workers, each a thread with its own SO_REUSEPORT listener; 0 = one per core
    /// (server.worker_threads).
    #[arg(long, env = "MEMU_PROXY_WORKER_THREADS", value_name = "N")]
    pub worker_threads: Option<usize>,
    /// Close client connections idle this long, in milliseconds (server.idle_timeout_ms).
    #[arg(long, env = "MEMU_PROXY_IDLE_TIMEOUT_MS", value_name = "N")]
    pub idle_timeout_ms: Option<u64>,
    /// Most open client connections (server.max_connections).
    #[arg(long, env = "MEMU_PROXY_MAX_CONNECTIONS", value_name = "N")]
    pub max_connections: Option<usize>,
    /// Latency budget for retrievals in milliseconds, 0 = off (latency.budget_ms).
    #[arg(long, env = "MEMU_PROXY_BUDGET_MS", value_name = "N")]
    pub budget_ms: Option<u64>,
    /// Shared cache tier, redis:// or rediss:// URL; unset = off (shared_cache.url).
    #[arg(long, env = "MEMU_PROXY_SHARED_CACHE_URL", value_name = "URL")]
    pub shared_cache_url: Option<String>,
    /// Fill null memory timestamps in retrieval answers (compat.fill_null_timestamps = true).
    #[arg(long, env = "MEMU_PROXY_FILL_NULL_TIMESTAMPS")]
    pub fill_null_timestamps: bool,
    /// Log format: `text` (one human-readable line per event) or `json` (one JSON object per line,
    /// for log shippers).
    #[arg(
        long,
        env = "MEMU_PROXY_LOG_FORMAT",
        value_name = "FORMAT",
        default_value = "text"
    )]
    pub log_format: LogFormat,
    /// Validate the configuration, print the effective values, and exit.
    #[arg(long)]
    pub check_config: bool,
}

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

/// Where the settings came from, for the start-up log and `--check-config`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConfigSource {
    /// The file named by `--config` (or `MEMU_PROXY_CONFIG`), or `./proxy.toml`.
    File(PathBuf),
    /// No file: built-in defaults (and flags).
    Defaults,
}

impl std::fmt::Display for ConfigSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ConfigSource::File(path) => write!(f, "config file {}", path.display()),
            ConfigSource::Defaults => {
                f.write_str("no config file (none given, no ./proxy.toml): built-in defaults")
            }
        }
    }
}

impl Cli {
    /// Loads the config file (explicit, or `./proxy.toml` when present) and applies the flags;
    /// says which file it was.
    pub fn settings(&self) -> Result<(Settings, ConfigSource), ConfigError> {
        let default_path = PathBuf::from("proxy.toml");
        let (mut settings, source) = match &self.config {
            Some(path) => (Settings::from_file(path)?, ConfigSource::File(path.clone())),
            None if default_path.is_file() => (
                Settings::from_file(&default_path)?,
                ConfigSource::File(default_path),
            ),
            None => (Settings::default(), ConfigSource::Defaults),
        };
        self.apply(&mut settings);
        Ok((settings, source))
    }

    fn apply(&self, s: &mut Settings) {
        if let Some(v) = &self.listen {
            s.server.listen.clone_from(v);
        }
        if let Some(v) = &self.admin_listen {
            s.server.admin_listen = Some(v.clone());
        }
        if let Some(v) = &self.upstream {
            s.upstream.url.clone_from(v);
        }
        if let Some(v) = &self.upstream_ca_file {
            s.upstream.ca_file = Some(v.clone());
        }
        if let Some(v) = self.timeout_ms {
            s.upstream.timeout_ms = v;
        }
        if let Some(v) = self.write_timeout_ms {
            s.upstream.write_timeout_ms = v;
        }
        if let Some(v) = self.cache_ttl_secs {
            s.cache.ttl_secs = v;
        }
        if let Some(v) = self.cache_max_bytes {
            s.cache.max_bytes = v;
        }
        if let Some(v) = self.max_body_bytes {
            s.server.max_body_bytes = v;
        }
        if let Some(v) = self.worker_threads {
            s.server.worker_threads = v;
        }
        if let Some(v) = self.idle_timeout_ms {
            s.server.idle_timeout_ms = v;
        }
        if let Some(v) = self.max_connections {
            s.server.max_connections = v;
        }
        if let Some(v) = self.budget_ms {
            s.latency.budget_ms = v;
        }
        if let Some(v) = &self.shared_cache_url {
            s.shared_cache.url = Some(v.clone());
        }
        if self.fill_null_timestamps {
            s.compat.fill_null_timestamps = true;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_override_the_file() {
        let cli = Cli::parse_from([
            "memu-proxy",
            "--listen",
            "127.0.0.1:9",
            "--upstream",
            "https://10.0.0.1:1/memu",
            "--upstream-ca-file",
            "/etc/memu/ca.pem",
            "--timeout-ms",
            "750",
            "--write-timeout-ms",
            "45000",
            "--cache-ttl-secs",
            "7",
            "--cache-max-bytes",
            "9999",
            "--idle-timeout-ms",
            "5000",
            "--max-connections",
            "500",
            "--shared-cache-url",
            "redis://127.0.0.1:6380",
        ]);
        let mut s = Settings::default();
        cli.apply(&mut s);
        assert_eq!(s.server.listen, "127.0.0.1:9");
        assert_eq!(s.upstream.url, "https://10.0.0.1:1/memu");
        assert_eq!(s.upstream.ca_file.as_deref(), Some("/etc/memu/ca.pem"));
        assert_eq!(s.upstream.timeout_ms, 750);
        assert_eq!(s.upstream.write_timeout_ms, 45_000);
        assert_eq!(s.cache.ttl_secs, 7);
        assert_eq!(s.cache.max_bytes, 9999);
        assert_eq!(s.server.idle_timeout_ms, 5000);
        assert_eq!(s.server.max_connections, 500);
        assert_eq!(
            s.shared_cache.url.as_deref(),
            Some("redis://127.0.0.1:6380")
        );
    }
}
