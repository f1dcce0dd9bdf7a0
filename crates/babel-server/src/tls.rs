//! TLS for the signalling listener: the certificate and key the operator
//! gives, or a self-signed pair generated on first start and kept next to
//! the database, so the fingerprint clients pin stays the same across
//! restarts.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use babel_proto::Fingerprint;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls::{self, ServerConfig};

/// Why TLS could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A certificate or key file could not be read or parsed.
    #[error("cannot read {what} from {path}: {reason}")]
    Read {
        /// "certificate" or "private key".
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// Only one of the two generated files exists.
    #[error(
        "{present} exists but {missing} does not; restore it, or remove {present} to generate a new certificate (clients that pinned the old one will refuse the new one)"
    )]
    HalfPair {
        /// The file that is there.
        present: PathBuf,
        /// The one that is not.
        missing: PathBuf,
    },
    /// Writing the generated pair failed.
    #[error("cannot write {path}: {source}")]
    Write {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// A certificate without its key or the other way round.
    #[error("{0}: give both, or neither for a self-signed certificate")]
    Incomplete(&'static str),
    /// Generating the self-signed certificate failed.
    #[error("cannot generate a certificate: {0}")]
    Generate(String),
    /// rustls refused the certificate and key (e.g. they do not match).
    #[error("unusable certificate or key: {0}")]
    Config(#[from] rustls::Error),
}

/// Where the certificate comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CertSource {
    /// Files the operator provides (PEM; the certificate file may hold a chain).
    Files {
        /// Certificate chain, leaf first.
        cert: PathBuf,
        /// Private key (PKCS#8, PKCS#1 or SEC1).
        key: PathBuf,
    },
    /// A self-signed certificate in this folder (`tls-cert.pem`,
    /// `tls-key.pem`), generated when missing.
    SelfSigned {
        /// The folder (the database's).
        dir: PathBuf,
    },
}

/// A ready TLS setup.
#[derive(Clone)]
pub struct Tls {
    /// Accepts handshakes.
    pub acceptor: TlsAcceptor,
    /// The leaf certificate's fingerprint, for clients to pin.
    pub fingerprint: Fingerprint,
    /// Whether the certificate was generated just now.
    pub generated: bool,
}

impl std::fmt::Debug for Tls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tls").field("fingerprint", &self.fingerprint).field("generated", &self.generated).finish()
    }
}

const CERT_FILE: &str = "tls-cert.pem";
const KEY_FILE: &str = "tls-key.pem";

impl Tls {
    /// Loads (or generates) the certificate and builds the acceptor.
    pub fn load(source: &CertSource) -> Result<Tls, TlsError> {
        let (cert, key, generated) = match source {
            CertSource::Files { cert, key } => (cert.clone(), key.clone(), false),
            CertSource::SelfSigned { dir } => {
                let (cert, key) = (dir.join(CERT_FILE), dir.join(KEY_FILE));
                let generated = ensure_self_signed(&cert, &key)?;
                (cert, key, generated)
            }
        };
        let chain = CertificateDer::pem_file_iter(&cert)
            .and_then(|it| it.collect::<Result<Vec<_>, _>>())
            .map_err(|e| TlsError::Read { what: "certificate", path: cert.clone(), reason: e.to_string() })?;
        let Some(leaf) = chain.first() else {
            return Err(TlsError::Read { what: "certificate", path: cert, reason: "no certificate in it".into() });
        };
        let fingerprint = Fingerprint::of_der(leaf);
        let key = PrivateKeyDer::from_pem_file(&key).map_err(|e| TlsError::Read {
            what: "private key",
            path: key.clone(),
            reason: e.to_string(),
        })?;
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()?
            .with_no_client_auth()
            .with_single_cert(chain, key)?;
        // Clients reconnect rarely; tickets would only sit unread in their
        // idle request connections.
        config.send_tls13_tickets = 0;
        Ok(Tls { acceptor: TlsAcceptor::from(Arc::new(config)), fingerprint, generated })
    }
}

/// Generates the pair unless both files exist; `true` when it did.
fn ensure_self_signed(cert: &Path, key: &Path) -> Result<bool, TlsError> {
    match (cert.exists(), key.exists()) {
        (true, true) => return Ok(false),
        (true, false) => return Err(TlsError::HalfPair { present: cert.into(), missing: key.into() }),
        (false, true) => return Err(TlsError::HalfPair { present: key.into(), missing: cert.into() }),
        (false, false) => {}
    }
    let names = vec!["localhost".to_owned(), "babel-server".to_owned(), "127.0.0.1".to_owned(), "::1".to_owned()];
    let pair = rcgen::generate_simple_self_signed(names).map_err(|e| TlsError::Generate(e.to_string()))?;
    if let Some(dir) = cert.parent() {
        std::fs::create_dir_all(dir).map_err(|source| TlsError::Write { path: dir.into(), source })?;
    }
    // The key first: a crash in between leaves a key without a certificate,
    // which is reported, never a certificate whose key is lost.
    write_atomically(key, pair.signing_key.serialize_pem().as_bytes(), true)?;
    write_atomically(cert, pair.cert.pem().as_bytes(), false)?;
    Ok(true)
}

/// Writes through a temporary file and a rename, so a crash leaves either
/// nothing or the whole file; `secret` files are readable by the owner only.
fn write_atomically(path: &Path, bytes: &[u8], secret: bool) -> Result<(), TlsError> {
    let err = |source| TlsError::Write { path: path.into(), source };
    let tmp = path.with_extension("pem.tmp");
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create(true).truncate(true);
    #[cfg(unix)]
    if secret {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    #[cfg(not(unix))]
    let _ = secret;
    let mut f = opts.open(&tmp).map_err(err)?;
    f.write_all(bytes).and_then(|()| f.sync_all()).map_err(err)?;
    drop(f);
    std::fs::rename(&tmp, path).map_err(err)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn self_signed_is_generated_once_and_kept() {
        let dir = tempfile::tempdir().unwrap();
        let source = CertSource::SelfSigned { dir: dir.path().join("sub") };
        let first = Tls::load(&source).unwrap();
        assert!(first.generated);
        let again = Tls::load(&source).unwrap();
        assert!(!again.generated);
        assert_eq!(first.fingerprint, again.fingerprint);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(dir.path().join("sub").join(KEY_FILE)).unwrap().permissions().mode();
            assert_eq!(mode & 0o077, 0, "the key must not be readable by others: {mode:o}");
        }
    }

    #[test]
    fn half_pair_is_reported_not_replaced() {
        let dir = tempfile::tempdir().unwrap();
        let source = CertSource::SelfSigned { dir: dir.path().into() };
        Tls::load(&source).unwrap();
        std::fs::remove_file(dir.path().join(KEY_FILE)).unwrap();
        let before = std::fs::read(dir.path().join(CERT_FILE)).unwrap();
        let e = Tls::load(&source).unwrap_err();
        assert!(matches!(e, TlsError::HalfPair { .. }), "{e}");
        assert_eq!(std::fs::read(dir.path().join(CERT_FILE)).unwrap(), before);
    }

    #[test]
    fn operator_files_bad_or_missing_are_clear_errors() {
        let dir = tempfile::tempdir().unwrap();
        let cert = dir.path().join("c.pem");
        let key = dir.path().join("k.pem");
        let e = Tls::load(&CertSource::Files { cert: cert.clone(), key: key.clone() }).unwrap_err();
        assert!(e.to_string().contains("c.pem"), "{e}");
        std::fs::write(&cert, "not pem").unwrap();
        let e = Tls::load(&CertSource::Files { cert: cert.clone(), key: key.clone() }).unwrap_err();
        assert!(e.to_string().contains("no certificate"), "{e}");
        // A certificate with somebody else's key.
        let a = rcgen::generate_simple_self_signed(vec!["a".to_owned()]).unwrap();
        let b = rcgen::generate_simple_self_signed(vec!["b".to_owned()]).unwrap();
        std::fs::write(&cert, a.cert.pem()).unwrap();
        std::fs::write(&key, b.signing_key.serialize_pem()).unwrap();
        let e = Tls::load(&CertSource::Files { cert: cert.clone(), key: key.clone() }).unwrap_err();
        assert!(matches!(e, TlsError::Config(_)), "{e}");
        std::fs::write(&key, a.signing_key.serialize_pem()).unwrap();
        let ok = Tls::load(&CertSource::Files { cert, key }).unwrap();
        assert_eq!(ok.fingerprint, Fingerprint::of_der(a.cert.der()));
    }
}
