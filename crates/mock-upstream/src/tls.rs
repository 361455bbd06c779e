//! HTTPS for the mock: a throwaway test CA that issues server certificates, and serving the router
//! over TLS (ALPN `h2` and `http/1.1`, each connection served as HTTP/1.1 or HTTP/2 as negotiated;
//! the accept loop is [`crate::serve`]'s).
//!
//! ```no_run
//! # async fn demo() -> std::io::Result<()> {
//! use mock_upstream::{MockServer, MockState, tls::TestCa};
//! let ca = TestCa::new();
//! let (cert, key) = ca.leaf(&["localhost", "127.0.0.1"]);
//! let mock = MockServer::start_tls(MockState::new(), &cert, &key).await?;
//! // Trust `ca.ca_pem` in the client (e.g. write it to a file named by SSL_CERT_FILE).
//! assert!(mock.base_url().starts_with("https://localhost:"));
//! # Ok(()) }
//! ```

use std::io;
use std::sync::Arc;

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use rustls::ServerConfig;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

/// A self-signed certificate authority made fresh for a test run; issues server certificates with
/// [`TestCa::leaf`]. Clients trust [`TestCa::ca_pem`] and nothing else needs installing.
pub struct TestCa {
    /// The CA certificate (PEM): what a client trusts.
    pub ca_pem: String,
    issuer: Issuer<'static, KeyPair>,
}

impl std::fmt::Debug for TestCa {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TestCa").finish_non_exhaustive()
    }
}

impl TestCa {
    /// A new CA (ECDSA P-256 key, `CN=Switchyard test CA`).
    ///
    /// # Panics
    /// If key generation fails (only when the crypto library itself is broken); see
    /// [`TestCa::try_new`].
    #[allow(clippy::expect_used)] // test helper: a broken crypto library is not recoverable here
    pub fn new() -> TestCa {
        Self::try_new().expect("generate test CA")
    }

    /// Like [`TestCa::new`], returning the error instead.
    pub fn try_new() -> io::Result<TestCa> {
        let mut params = CertificateParams::new(Vec::<String>::new()).map_err(io::Error::other)?;
        params
            .distinguished_name
            .push(DnType::CommonName, "Switchyard test CA");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let key = KeyPair::generate().map_err(io::Error::other)?;
        let cert = params.self_signed(&key).map_err(io::Error::other)?;
        Ok(TestCa {
            ca_pem: cert.pem(),
            issuer: Issuer::new(params, key),
        })
    }

    /// A server certificate signed by this CA for `names` (DNS names, or IP addresses, which become
    /// IP SANs). Returns `(chain_pem, key_pem)`: the leaf followed by the CA certificate, and the
    /// leaf's PKCS#8 private key.
    ///
    /// # Panics
    /// If a name is not a valid DNS name or IP address; see [`TestCa::try_leaf`].
    #[allow(clippy::expect_used)] // test helper: a bad name is a bug in the calling test
    pub fn leaf(&self, names: &[&str]) -> (String, String) {
        self.try_leaf(names).expect("issue test server certificate")
    }

    /// Like [`TestCa::leaf`], returning the error instead.
    pub fn try_leaf(&self, names: &[&str]) -> io::Result<(String, String)> {
        let sans: Vec<String> = names.iter().map(|n| (*n).to_string()).collect();
        let mut params = CertificateParams::new(sans).map_err(io::Error::other)?;
        if let Some(first) = names.first() {
            params.distinguished_name.push(DnType::CommonName, *first);
        }
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        params.use_authority_key_identifier_extension = true;
        let key = KeyPair::generate().map_err(io::Error::other)?;
        let cert = params.signed_by(&key, &self.issuer).map_err(io::Error::other)?;
        Ok((format!("{}{}", cert.pem(), self.ca_pem), key.serialize_pem()))
    }
}

impl Default for TestCa {
    fn default() -> Self {
        Self::new()
    }
}

/// A rustls server config (aws-lc-rs provider) for this certificate chain and private key (PEM),
/// offering ALPN `h2` then `http/1.1`.
pub fn server_config(cert_pem: &str, key_pem: &str) -> io::Result<Arc<ServerConfig>> {
    let certs = CertificateDer::pem_slice_iter(cert_pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, format!("certificate: {e}")))?;
    if certs.is_empty() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "no certificate in the PEM",
        ));
    }
    let key = PrivateKeyDer::from_pem_slice(key_pem.as_bytes())
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, format!("private key: {e}")))?;
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(io::Error::other)?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}
