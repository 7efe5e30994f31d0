//! The server's TLS identity: a self-signed certificate made on first start and kept in the
//! data directory (`tls/cert.pem`, `tls/key.pem` with mode 0600). Clients pin its
//! fingerprint: the SHA-256 of the certificate's DER bytes as 64 lowercase hex digits
//! ([`fingerprint`]). TLS 1.3 only, with the `ring` provider.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

use crate::error::{Result, ServerError};

/// Certificate file, relative to the data directory.
pub const CERT_FILE: &str = "tls/cert.pem";
/// Private key file, relative to the data directory.
pub const KEY_FILE: &str = "tls/key.pem";

/// The SHA-256 fingerprint of a DER certificate: 64 lowercase hex digits.
#[must_use]
pub fn fingerprint(cert_der: &[u8]) -> String {
    ring::digest::digest(&ring::digest::SHA256, cert_der)
        .as_ref()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The crypto provider every TLS endpoint of ours uses: `ring`'s, with AES-128-GCM
/// preferred (the AES-256 and ChaCha20 suites stay allowed for other clients).
///
/// A training step moves tens of megabytes of ciphertexts; AES-128 takes 10 rounds per
/// block against AES-256's 14, and its 128-bit security matches the CKKS parameters'.
#[must_use]
pub fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    use rustls::crypto::ring::cipher_suite;
    Arc::new(rustls::crypto::CryptoProvider {
        cipher_suites: vec![
            cipher_suite::TLS13_AES_128_GCM_SHA256,
            cipher_suite::TLS13_AES_256_GCM_SHA384,
            cipher_suite::TLS13_CHACHA20_POLY1305_SHA256,
        ],
        ..rustls::crypto::ring::default_provider()
    })
}

/// The server's certificate and key.
#[derive(Debug)]
pub struct Identity {
    /// The certificate (DER).
    pub cert: CertificateDer<'static>,
    key: PrivateKeyDer<'static>,
    /// Where the certificate is stored.
    pub cert_path: PathBuf,
    /// Whether it was generated now.
    pub created: bool,
}

impl Identity {
    /// The certificate's fingerprint.
    #[must_use]
    pub fn fingerprint(&self) -> String {
        fingerprint(&self.cert)
    }

    /// A TLS 1.3 server configuration presenting this identity.
    ///
    /// # Errors
    /// [`ServerError::Tls`] for a key that does not match the certificate.
    pub fn server_config(&self) -> Result<Arc<rustls::ServerConfig>> {
        let mut config = rustls::ServerConfig::builder_with_provider(provider())
            .with_protocol_versions(&[&rustls::version::TLS13])?
            .with_no_client_auth()
            .with_single_cert(vec![self.cert.clone()], self.key.clone_key())?;
        // Our order ([`provider`]), not the client's, picks the suite.
        config.ignore_client_order = true;
        Ok(Arc::new(config))
    }
}

fn write_private(path: &Path, bytes: &[u8]) -> Result<()> {
    let mut opts = fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    let mut f = opts.open(path)?;
    f.write_all(bytes)?;
    f.sync_all()?;
    Ok(())
}

/// Loads the identity from `data_dir`, generating and storing a new self-signed one (ECDSA
/// P-256, names `localhost` and `sphinx-server`) if there is none.
///
/// # Errors
/// [`ServerError::Io`], [`ServerError::Certificate`]; [`ServerError::Config`] if only one
/// of the two files exists or they do not parse.
pub fn load_or_create(data_dir: &Path) -> Result<Identity> {
    let (cert_path, key_path) = (data_dir.join(CERT_FILE), data_dir.join(KEY_FILE));
    let created = match (cert_path.exists(), key_path.exists()) {
        (true, true) => false,
        (false, false) => {
            if let Some(dir) = cert_path.parent() {
                fs::create_dir_all(dir)?;
            }
            let made = rcgen::generate_simple_self_signed(vec![
                "localhost".to_owned(),
                "sphinx-server".to_owned(),
            ])?;
            // Key first: a crash in between leaves no certificate without its key.
            write_private(&key_path, made.signing_key.serialize_pem().as_bytes())?;
            write_private(&cert_path, made.cert.pem().as_bytes())?;
            true
        }
        _ => {
            return Err(ServerError::Config(format!(
                "{} and {} must both exist or both be absent",
                cert_path.display(),
                key_path.display()
            )));
        }
    };
    let bad = |what: &str, e: &dyn std::fmt::Display| {
        ServerError::Config(format!("{what} does not parse: {e}"))
    };
    let cert = CertificateDer::from_pem_file(&cert_path).map_err(|e| bad(CERT_FILE, &e))?;
    let key = PrivateKeyDer::from_pem_file(&key_path).map_err(|e| bad(KEY_FILE, &e))?;
    Ok(Identity {
        cert,
        key,
        cert_path,
        created,
    })
}
