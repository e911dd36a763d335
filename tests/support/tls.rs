//! TLS for the stand-in memU and for clients of it: a test CA generated when the test runs (its
//! PEM written to a temp file, for `upstream.ca_file`), a server certificate for `localhost` and
//! 127.0.0.1 signed by it, and the accepting side, which counts handshakes and remembers the SNI
//! each client sent. The stand-in uses it through `MemUBuilder::tls`; the TLS benchmark's direct
//! client uses [`TestCa::client_config`]. Everything uses the ring provider, passed explicitly.

use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose,
};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use rustls::{ClientConfig, RootCertStore, ServerConfig};
use tokio::net::TcpStream;
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;

/// The names the stand-in's certificate is valid for.
pub const SERVER_NAMES: [&str; 2] = ["localhost", "127.0.0.1"];

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// A certificate authority made for one test; its PEM file is removed when it drops.
pub struct TestCa {
    issuer: CertifiedIssuer<'static, KeyPair>,
    pem_file: PathBuf,
}

impl TestCa {
    /// A new CA named `name`, with its certificate written to a PEM file of its own.
    pub fn generate(name: &str) -> TestCa {
        static FILES: AtomicUsize = AtomicUsize::new(0);
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let issuer = CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap();
        let n = FILES.fetch_add(1, Ordering::Relaxed);
        let pem_file =
            std::env::temp_dir().join(format!("memu-proxy-test-ca-{}-{n}.pem", std::process::id()));
        std::fs::write(&pem_file, issuer.pem()).unwrap();
        TestCa { issuer, pem_file }
    }

    /// The path of the CA's PEM file, for `upstream.ca_file`.
    pub fn pem_file(&self) -> String {
        self.pem_file.display().to_string()
    }

    /// A server configuration presenting a fresh certificate for [`SERVER_NAMES`] signed by this
    /// CA (the chain includes the CA, as real servers send theirs).
    pub fn server_config(&self) -> Arc<ServerConfig> {
        let mut params = CertificateParams::new(SERVER_NAMES.map(String::from)).unwrap();
        params
            .distinguished_name
            .push(DnType::CommonName, "memU stand-in");
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &*self.issuer).unwrap();
        let chain = vec![cert.der().clone(), self.issuer.der().clone()];
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
        let config = ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(chain, key)
            .unwrap();
        Arc::new(config)
    }

    /// A client configuration trusting only this CA, without session resumption: every
    /// connection made with it pays a full handshake.
    pub fn client_config(&self) -> Arc<ClientConfig> {
        let mut roots = RootCertStore::empty();
        roots.add(self.der()).unwrap();
        let mut config = ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        config.resumption = rustls::client::Resumption::disabled();
        Arc::new(config)
    }

    pub fn der(&self) -> CertificateDer<'static> {
        self.issuer.der().clone()
    }
}

impl Drop for TestCa {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.pem_file);
    }
}

/// The accepting side of the stand-in's TLS: counts handshakes, completed and failed.
pub struct TlsServer {
    acceptor: TlsAcceptor,
    handshakes: AtomicUsize,
    failed: AtomicUsize,
    server_names: Mutex<Vec<Option<String>>>,
}

impl TlsServer {
    pub fn new(config: Arc<ServerConfig>) -> TlsServer {
        TlsServer {
            acceptor: TlsAcceptor::from(config),
            handshakes: AtomicUsize::new(0),
            failed: AtomicUsize::new(0),
            server_names: Mutex::default(),
        }
    }

    /// Completes the server side of a handshake; `None` (counted) when the client gave up, as a
    /// client that rejects the certificate does.
    pub async fn accept(&self, tcp: TcpStream) -> Option<TlsStream<TcpStream>> {
        match self.acceptor.accept(tcp).await {
            Ok(stream) => {
                let sni = stream.get_ref().1.server_name().map(str::to_owned);
                self.server_names.lock().unwrap().push(sni);
                self.handshakes.fetch_add(1, Ordering::SeqCst);
                Some(stream)
            }
            Err(_) => {
                self.failed.fetch_add(1, Ordering::SeqCst);
                None
            }
        }
    }

    /// Completed handshakes so far.
    pub fn handshakes(&self) -> usize {
        self.handshakes.load(Ordering::SeqCst)
    }

    /// Handshakes the client abandoned so far.
    pub fn failed_handshakes(&self) -> usize {
        self.failed.load(Ordering::SeqCst)
    }

    /// The SNI of each completed handshake, oldest first (`None`: the client sent none, as for
    /// an IP address).
    pub fn server_names(&self) -> Vec<Option<String>> {
        self.server_names.lock().unwrap().clone()
    }
}
