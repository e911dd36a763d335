//! The `[upstream]` section of `proxy.toml`: where memU is and how the proxy talks to it. Its
//! settings struct with defaults, the typed [`UpstreamConfig`] it becomes, and the `validate` that
//! checks its bounds, as every section in `sections.rs` has them.

use std::time::Duration;

use http::uri::{Authority, Scheme};
use http::Uri;
use serde::{Deserialize, Serialize};

use super::problems::Problems;

/// `[upstream]`: the memU server the proxy forwards to.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct UpstreamSettings {
    /// memU base URL; a path prefix (`http://h:8000/memu`) is kept.
    pub url: String,
    /// Hard deadline for one upstream exchange of a read, a task-status poll or a pass-through
    /// request, in milliseconds.
    pub timeout_ms: u64,
    /// Hard deadline for one write (memorize, delete), in milliseconds: long, because a write
    /// answered 504 while memU is still applying it is retried by the SDK and stored twice.
    pub write_timeout_ms: u64,
    /// Largest upstream response the proxy buffers (cached reads, writes, task status).
    pub max_response_bytes: u64,
    /// Idle pooled connections are closed after this many seconds.
    pub pool_idle_timeout_secs: u64,
    /// Most idle pooled connections kept to memU.
    pub pool_max_idle: usize,
}

impl Default for UpstreamSettings {
    fn default() -> Self {
        Self {
            url: "http://127.0.0.1:8000".into(),
            timeout_ms: 2_000,
            write_timeout_ms: 30_000,
            max_response_bytes: 16 * 1024 * 1024,
            pool_idle_timeout_secs: 90,
            pool_max_idle: 64,
        }
    }
}

/// Where and how to reach memU.
#[derive(Debug, Clone)]
pub struct UpstreamConfig {
    pub scheme: Scheme,
    pub authority: Authority,
    /// Path prefix without a trailing slash (`""` or `"/memu"`).
    pub base_path: String,
    /// The deadline of reads, task-status polls and pass-through.
    pub timeout: Duration,
    /// The deadline of writes.
    pub write_timeout: Duration,
    pub max_response_bytes: usize,
    pub pool_idle_timeout: Duration,
    pub pool_max_idle: usize,
}

impl UpstreamSettings {
    pub(super) fn validate(&self, problems: &mut Problems) -> Option<UpstreamConfig> {
        let before = problems.len();
        let url = parse_upstream_url(&self.url);
        if let Err(message) = &url {
            problems.push("upstream.url", message.as_str());
        }
        problems.check(
            (1..=600_000).contains(&self.timeout_ms),
            "upstream.timeout_ms",
            "must be between 1 and 600000",
        );
        problems.check(
            (1..=600_000).contains(&self.write_timeout_ms),
            "upstream.write_timeout_ms",
            "must be between 1 and 600000",
        );
        problems.greater_than_0(self.max_response_bytes, "upstream.max_response_bytes");
        problems.at_most_a_year(
            self.pool_idle_timeout_secs,
            "upstream.pool_idle_timeout_secs",
        );
        match url {
            Ok((scheme, authority, base_path)) if problems.len() == before => {
                Some(UpstreamConfig {
                    scheme,
                    authority,
                    base_path,
                    timeout: Duration::from_millis(self.timeout_ms),
                    write_timeout: Duration::from_millis(self.write_timeout_ms),
                    max_response_bytes: usize::try_from(self.max_response_bytes)
                        .unwrap_or(usize::MAX),
                    pool_idle_timeout: Duration::from_secs(self.pool_idle_timeout_secs),
                    pool_max_idle: self.pool_max_idle,
                })
            }
            _ => None,
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
    fn write_timeout_ms_is_between_1_and_600000() {
        for (ms, ok) in [
            (0, false),
            (1, true),
            (30_000, true),
            (600_000, true),
            (600_001, false),
        ] {
            let settings = UpstreamSettings {
                write_timeout_ms: ms,
                ..UpstreamSettings::default()
            };
            let config = settings.validate(&mut Problems::default());
            assert_eq!(config.is_some(), ok, "{ms}");
            if let Some(config) = config {
                assert_eq!(config.write_timeout, Duration::from_millis(ms));
            }
        }
    }
}
