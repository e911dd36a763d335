//! The `[upstream]` section of `proxy.toml`: where memU is and how the proxy talks to it. Its
//! settings struct with defaults, the typed [`UpstreamConfig`] it becomes, and the `validate` that
//! checks its bounds, as every section in `sections.rs` has them. `validate` also reads the PEM
//! file `upstream.ca_file` names, so an unreadable or invalid one stops the proxy at start-up,
//! reported under that key; the system's roots are loaded later, with the client (`upstream/tls.rs`).

use std::time::Duration;

use http::uri::{Authority, Scheme};
use http::Uri;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateDer;
use serde::{Deserialize, Serialize};

use super::problems::Problems;

/// `[upstream]`: the memU server the proxy forwards to.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct UpstreamSettings {
    /// memU base URL, `http://` or `https://`; a path prefix (`http://h:8000/memu`) is kept.
    pub url: String,
    /// A PEM file of extra root certificates trusted for an `https://` upstream, besides the
    /// system's (a corporate TLS-inspecting proxy's CA, a private CA).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ca_file: Option<String>,
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
            ca_file: None,
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
    /// The certificates of `ca_file`, trusted besides the system's roots.
    pub ca_roots: Vec<CertificateDer<'static>>,
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
        let ca_roots = match self.ca_file.as_deref().map(read_ca_file).transpose() {
            Ok(roots) => roots.unwrap_or_default(),
            Err(message) => {
                problems.push("upstream.ca_file", message);
                Vec::new()
            }
        };
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
                    ca_roots,
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
    if scheme != Scheme::HTTP && scheme != Scheme::HTTPS {
        return Err(format!(
            "`{url}`: only http:// and https:// upstreams are supported"
        ));
    }
    let authority = uri
        .authority()
        .cloned()
        .ok_or_else(|| format!("`{url}` has no host"))?;
    if authority.as_str().contains('@') {
        // It would travel as the `Host` header: credentials belong in `Authorization`.
        return Err(format!("`{url}` must not carry user:password@"));
    }
    if uri.query().is_some() {
        return Err(format!("`{url}` must not have a query string"));
    }
    let base_path = uri.path().trim_end_matches('/').to_owned();
    Ok((scheme, authority, base_path))
}

/// The certificates of a PEM file, each checked to be usable as a trust anchor.
fn read_ca_file(path: &str) -> Result<Vec<CertificateDer<'static>>, String> {
    let pem = std::fs::read(path).map_err(|e| format!("cannot read `{path}`: {e}"))?;
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("`{path}` is not valid PEM: {e}"))?;
    if certs.is_empty() {
        return Err(format!("`{path}` holds no PEM certificate"));
    }
    let mut check = rustls::RootCertStore::empty();
    for cert in &certs {
        check
            .add(cert.clone())
            .map_err(|e| format!("`{path}` holds a certificate that cannot be a root: {e}"))?;
    }
    Ok(certs)
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

    #[test]
    fn https_upstreams_are_accepted_and_other_schemes_are_not() {
        let (scheme, authority, base) = parse_upstream_url("https://api.memu.so/memu/").unwrap();
        assert_eq!(scheme, Scheme::HTTPS);
        assert_eq!(authority.as_str(), "api.memu.so");
        assert_eq!(base, "/memu");
        for url in [
            "ftp://h",
            "ws://h:1",
            "h:8000",
            "https://user:pw@api.memu.so",
        ] {
            assert!(parse_upstream_url(url).is_err(), "{url}");
        }
    }

    /// `text` written to a file of its own; its path.
    fn file_with(name: &str, text: &str) -> String {
        let dir = std::env::temp_dir().join(format!("memu-proxy-ca-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(name);
        std::fs::write(&path, text).unwrap();
        path.display().to_string()
    }

    #[test]
    fn ca_file_problems_are_reported_under_its_key() {
        let ca = rcgen::generate_simple_self_signed(["test-ca".to_owned()]).unwrap();
        let key_only = ca.signing_key.serialize_pem();
        let bad_base64 = "-----BEGIN CERTIFICATE-----\n!!!!\n-----END CERTIFICATE-----\n";
        let not_der = "-----BEGIN CERTIFICATE-----\naGVsbG8=\n-----END CERTIFICATE-----\n";
        let cases = [
            ("/nonexistent/memu-ca.pem".to_owned(), "cannot read"),
            (
                file_with("garbage.pem", "not a certificate"),
                "no PEM certificate",
            ),
            (file_with("key.pem", &key_only), "no PEM certificate"),
            (file_with("base64.pem", bad_base64), "not valid PEM"),
            (file_with("der.pem", not_der), "cannot be a root"),
        ];
        for (path, says) in cases {
            let settings = UpstreamSettings {
                url: "https://memu.example".into(),
                ca_file: Some(path.clone()),
                ..UpstreamSettings::default()
            };
            let mut problems = Problems::default();
            assert!(settings.validate(&mut problems).is_none(), "{path}");
            let problems = problems.into_vec();
            assert_eq!(problems.len(), 1, "{problems:?}");
            assert_eq!(problems[0].key, "upstream.ca_file");
            assert!(problems[0].message.contains(says), "{problems:?}");
            assert!(problems[0].message.contains(&path), "{problems:?}");
        }

        let two = format!("{}{}", ca.cert.pem(), ca.cert.pem());
        let settings = UpstreamSettings {
            url: "https://memu.example".into(),
            ca_file: Some(file_with("ca.pem", &two)),
            ..UpstreamSettings::default()
        };
        let config = settings.validate(&mut Problems::default()).unwrap();
        assert_eq!(
            config.ca_roots,
            [ca.cert.der().clone(), ca.cert.der().clone()]
        );
    }
}
