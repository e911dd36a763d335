//! TLS to memU: the rustls client configuration, what a TLS failure was, and its log.
//!
//! [`client_config`] trusts the system's root certificates (`rustls-native-certs`, which honours
//! `SSL_CERT_FILE`/`SSL_CERT_DIR`) plus the operator's `upstream.ca_file` roots, and uses the ring
//! crypto provider, passed explicitly rather than installed as a process-wide default. Certificate
//! and host-name verification are rustls's own and cannot be turned off: there is no switch.
//! [`rejection`] finds the rustls error a failed connection carries in its source chain, so
//! `upstream/mod.rs` can tell a rejected certificate from an unreachable memU. [`TlsHealth`] logs a
//! rejection once per change of state, not once per request.
//!
//! Sits below `upstream/mod.rs`, its only user. It does not build connectors or decide what a client
//! receives: that is `upstream/mod.rs` (connector), `decide.rs` and `error.rs` (answers).

use std::error::Error as StdError;
use std::io;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use rustls::pki_types::CertificateDer;
use rustls::{ClientConfig, RootCertStore};

/// Why a TLS connection to memU failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum TlsRejection {
    /// The proxy did not trust memU's certificate (unknown issuer, wrong name, expired …).
    #[error("memU's TLS certificate was rejected: {}", explain(.0))]
    Certificate(rustls::CertificateError),
    /// The handshake failed otherwise (no common protocol, an alert from memU, not TLS at all …).
    #[error("the TLS handshake with memU failed: {0}")]
    Handshake(#[source] rustls::Error),
}

impl From<rustls::Error> for TlsRejection {
    fn from(error: rustls::Error) -> Self {
        match error {
            rustls::Error::InvalidCertificate(reason) => TlsRejection::Certificate(reason),
            other => TlsRejection::Handshake(other),
        }
    }
}

/// A certificate error as an operator reads it: rustls's text, and the usual remedy for the most
/// common one.
fn explain(reason: &rustls::CertificateError) -> String {
    match reason {
        rustls::CertificateError::UnknownIssuer => {
            "UnknownIssuer (signed by a CA the proxy does not trust: add it with upstream.ca_file)"
                .into()
        }
        other => other.to_string(),
    }
}

/// The client configuration for `https://` upstreams: system roots plus `extra_roots` (already
/// validated by the config), TLS 1.2 and 1.3, the ring provider. No ALPN: the connector speaks
/// HTTP/1.1 only, as over plain TCP (hyper-rustls offers no ALPN then).
pub fn client_config(extra_roots: &[CertificateDer<'static>]) -> ClientConfig {
    let mut roots = RootCertStore::empty();
    let system = rustls_native_certs::load_native_certs();
    for error in &system.errors {
        tracing::warn!(%error, "cannot load some of the system's root certificates");
    }
    let (system_roots, _unparsable) = roots.add_parsable_certificates(system.certs);
    let (extra, _) = roots.add_parsable_certificates(extra_roots.iter().cloned());
    tracing::debug!(system_roots, extra, "TLS roots for memU");
    if roots.is_empty() {
        tracing::warn!(
            "no trusted root certificates (system store empty, no upstream.ca_file): \
             every TLS connection to memU will be rejected"
        );
    }
    with_roots(roots)
}

/// A client configuration trusting exactly `roots`, with the ring provider.
pub fn with_roots(roots: RootCertStore) -> ClientConfig {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("ring's default provider supports the default TLS versions")
        .with_root_certificates(roots)
        .with_no_client_auth()
}

/// The rustls error somewhere in `error`'s source chain, if the failure was TLS.
///
/// The chain is walked by hand: `io::Error::source()` returns the source of the error it wraps,
/// not that error, and the connector wraps rustls's error in two `io::Error`s.
pub fn rejection(error: &(dyn StdError + 'static)) -> Option<TlsRejection> {
    let mut next = Some(error);
    while let Some(error) = next {
        if let Some(tls) = error.downcast_ref::<rustls::Error>() {
            return Some(tls.clone().into());
        }
        if let Some(inner) = error
            .downcast_ref::<io::Error>()
            .and_then(io::Error::get_ref)
        {
            if let Some(found) = rejection(inner) {
                return Some(found);
            }
        }
        next = error.source();
    }
    None
}

/// Whether TLS to memU is failing, so that the log says so once per change of state: the first
/// rejection after start-up or a success logs a WARN, repeats do not; the next success logs INFO.
#[derive(Debug, Default)]
pub struct TlsHealth {
    failing: AtomicBool,
}

impl TlsHealth {
    /// Notes a rejection; true (and a WARN logged) when TLS was not already failing.
    pub fn rejected(&self, rejection: &TlsRejection) -> bool {
        let changed = !self.failing.swap(true, Ordering::AcqRel);
        if changed {
            tracing::warn!(
                %rejection,
                "TLS to memU fails: no request reaches memU until its certificate is trusted \
                 (system roots, upstream.ca_file); reads get the empty answer, writes 502"
            );
        }
        changed
    }

    /// Notes an answer from memU; true (and an INFO logged) when TLS was failing until now.
    pub fn answered(&self) -> bool {
        let changed =
            self.failing.load(Ordering::Relaxed) && self.failing.swap(false, Ordering::AcqRel);
        if changed {
            tracing::info!("TLS to memU recovered");
        }
        changed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_rustls_error_is_found_inside_nested_io_errors() {
        let unknown_issuer =
            || rustls::Error::InvalidCertificate(rustls::CertificateError::UnknownIssuer);
        // As hyper-rustls reports it: io::Error::other(tokio-rustls's io::Error(rustls::Error)).
        let inner = io::Error::new(io::ErrorKind::InvalidData, unknown_issuer());
        let outer: Box<dyn StdError + Send + Sync> = Box::new(io::Error::other(inner));
        let found = rejection(outer.as_ref()).expect("found");
        assert!(matches!(
            found,
            TlsRejection::Certificate(rustls::CertificateError::UnknownIssuer)
        ));
        assert_eq!(
            found.to_string(),
            "memU's TLS certificate was rejected: UnknownIssuer (signed by a CA the proxy does \
             not trust: add it with upstream.ca_file)"
        );
        let handshake = rejection(&rustls::Error::DecryptError).expect("found");
        assert!(matches!(handshake, TlsRejection::Handshake(_)));
        let refused = io::Error::from(io::ErrorKind::ConnectionRefused);
        assert!(rejection(&refused).is_none());
        assert!(rejection(&io::Error::other("plain")).is_none());
    }

    #[test]
    fn the_state_changes_once_each_way() {
        let health = TlsHealth::default();
        let rejection = TlsRejection::Handshake(rustls::Error::DecryptError);
        assert!(!health.answered(), "answers while healthy change nothing");
        assert!(health.rejected(&rejection), "the first rejection is news");
        assert!(!health.rejected(&rejection), "repeats are not");
        assert!(
            health.answered(),
            "the first answer after rejections is news"
        );
        assert!(!health.answered());
        assert!(health.rejected(&rejection), "failing again is news again");
    }

    #[test]
    fn the_client_sends_sni_and_leaves_alpn_to_the_connector() {
        let config = with_roots(RootCertStore::empty());
        assert!(config.alpn_protocols.is_empty(), "hyper-rustls requires it");
        assert!(config.enable_sni);
    }
}
