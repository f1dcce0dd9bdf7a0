//! Server addresses (`host:port` or `tls://host:port`) and how a TLS
//! server is trusted.
//!
//! A TLS server is accepted when, in this order:
//! 1. a fingerprint was pinned explicitly ([`TlsOptions::pin`]): the
//!    certificate must have exactly that fingerprint, nothing else counts;
//! 2. the known-servers file has a line for this `host:port`: the
//!    certificate must have that fingerprint (a changed certificate is
//!    refused, like SSH's `known_hosts`, whatever authority signed it);
//! 3. the certificate chains to a trusted root (the system's, plus
//!    [`TlsOptions::extra_roots`]) for the host name: accepted, nothing saved;
//! 4. otherwise, on first use ([`TlsOptions::trust_on_first_use`]): accepted,
//!    and its fingerprint is written to the known-servers file once the
//!    handshake has succeeded, so every later connection must present it.
//!
//! A cluster (several nodes in a list of servers) is best served by one
//! certificate authority of its own that signs every node's certificate:
//! [`TlsOptions::with_authority`] trusts it alone, with first use off, so a
//! client moves from node to node without a new fingerprint to accept, and
//! a node whose certificate that authority did not sign is refused.
//! First use still works across nodes with a certificate each, but every
//! node is then a new server the first time the client lands on it.

use std::fmt;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::{Arc, Mutex, OnceLock};

use babel_proto::Fingerprint;
use rustls_pki_types::{CertificateDer, ServerName, UnixTime};
use tokio_rustls::rustls::client::WebPkiServerVerifier;
use tokio_rustls::rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use tokio_rustls::rustls::crypto::CryptoProvider;
use tokio_rustls::rustls::{self, ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};

/// The signalling port when an address leaves it out.
pub const DEFAULT_PORT: u16 = 7447;
/// The TLS signalling port when a `tls://` address leaves it out.
pub const DEFAULT_TLS_PORT: u16 = 7448;

/// A server address: `host:port` (plain) or `tls://host:port`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerAddr {
    /// Whether to speak TLS.
    pub tls: bool,
    /// Host name or IP address (without brackets).
    pub host: String,
    /// TCP port.
    pub port: u16,
}

/// An address that could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not a server address (expected HOST:PORT or tls://HOST:PORT): {0:?}")]
pub struct BadAddr(pub String);

impl FromStr for ServerAddr {
    type Err = BadAddr;

    fn from_str(s: &str) -> Result<ServerAddr, BadAddr> {
        let bad = || BadAddr(s.to_owned());
        let t = s.trim();
        let (tls, rest) = match t.split_once("://") {
            Some((scheme, rest)) if scheme.eq_ignore_ascii_case("tls") => (true, rest),
            Some((scheme, rest)) if scheme.eq_ignore_ascii_case("tcp") => (false, rest),
            Some(_) => return Err(bad()),
            None => (false, t),
        };
        let rest = rest.trim_end_matches('/');
        let default = if tls { DEFAULT_TLS_PORT } else { DEFAULT_PORT };
        let (host, port) = if let Some(v6) = rest.strip_prefix('[') {
            let (host, after) = v6.split_once(']').ok_or_else(bad)?;
            match after.strip_prefix(':') {
                Some(p) => (host, p.parse().map_err(|_| bad())?),
                None if after.is_empty() => (host, default),
                None => return Err(bad()),
            }
        } else {
            match rest.rsplit_once(':') {
                // A bare IPv6 address (and nothing else with several colons).
                Some((h, _)) if h.contains(':') => match rest.parse::<std::net::Ipv6Addr>() {
                    Ok(_) => (rest, default),
                    Err(_) => return Err(bad()),
                },
                Some((h, p)) => (h, p.parse().map_err(|_| bad())?),
                None => (rest, default),
            }
        };
        if host.is_empty() || host.chars().any(|c| c.is_whitespace() || c == '/' || c == '@') {
            return Err(bad());
        }
        Ok(ServerAddr { tls, host: host.to_owned(), port })
    }
}

impl ServerAddr {
    /// `host:port`, with brackets around an IPv6 address: what a socket
    /// connects to, and the key in the known-servers file.
    pub fn host_port(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }
}

impl fmt::Display for ServerAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.tls {
            f.write_str("tls://")?;
        }
        f.write_str(&self.host_port())
    }
}

/// How TLS servers are trusted (see the module documentation).
#[derive(Debug, Clone)]
pub struct TlsOptions {
    /// Where first-use fingerprints are kept and checked (`None`: nowhere;
    /// every connection is then a first use).
    pub known_servers: Option<PathBuf>,
    /// Accept only a certificate with this fingerprint.
    pub pin: Option<Fingerprint>,
    /// Accept (and record) a server no authority vouches for, the first time.
    pub trust_on_first_use: bool,
    /// Trust the operating system's root certificates.
    pub system_roots: bool,
    /// More trusted roots (a private authority; tests).
    pub extra_roots: Vec<CertificateDer<'static>>,
}

impl Default for TlsOptions {
    /// The known-servers file in the user's config folder, first use
    /// trusted, system roots trusted.
    fn default() -> Self {
        TlsOptions {
            known_servers: dirs::config_dir().map(|d| d.join("babel").join("known_servers")),
            pin: None,
            trust_on_first_use: true,
            system_roots: true,
            extra_roots: Vec::new(),
        }
    }
}

impl TlsOptions {
    /// The defaults with the known-servers file in `dir`.
    pub fn in_dir(dir: &Path) -> TlsOptions {
        TlsOptions { known_servers: Some(dir.join("known_servers")), ..TlsOptions::default() }
    }

    /// Trusts these authorities only (a cluster's own, read with
    /// [`read_authority`]): not the system's roots, and never on first use.
    /// An explicit pin and the known-servers file still come first.
    pub fn with_authority(self, roots: Vec<CertificateDer<'static>>) -> TlsOptions {
        TlsOptions { extra_roots: roots, system_roots: false, trust_on_first_use: false, ..self }
    }
}

/// A certificate-authority file that cannot be used.
#[derive(Debug, thiserror::Error)]
#[error("cannot use {file} as a certificate authority: {why}")]
pub struct BadAuthority {
    /// The file.
    pub file: String,
    /// What is wrong with it.
    pub why: String,
}

/// Reads the certificates of a PEM file (a cluster's CA certificate, as
/// `openssl req -x509` writes it); at least one must be there.
pub fn read_authority(file: &Path) -> Result<Vec<CertificateDer<'static>>, BadAuthority> {
    use rustls_pki_types::pem::PemObject;
    let bad = |why: String| BadAuthority { file: file.display().to_string(), why };
    let certs = CertificateDer::pem_file_iter(file)
        .map_err(|e| bad(e.to_string()))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| bad(e.to_string()))?;
    if certs.is_empty() {
        return Err(bad("it holds no PEM certificate".into()));
    }
    // Each must be usable as a trust anchor, or the check would fail later
    // for every server with a less clear reason.
    for c in &certs {
        webpki_anchor(c).map_err(bad)?;
    }
    Ok(certs)
}

fn webpki_anchor(cert: &CertificateDer<'_>) -> Result<(), String> {
    let mut roots = RootCertStore::empty();
    roots.add(cert.clone()).map_err(|e| format!("not a usable CA certificate ({e})"))
}

/// Why the server's certificate was not accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Untrusted {
    /// A known server presented another certificate.
    #[error(
        "its certificate changed: {file} (line {line}) has {expected} for {server}, but the server now presents {got}. \
         Someone may be intercepting the connection, or the server's certificate was replaced; \
         if you know it was replaced, delete that line and connect again"
    )]
    Changed {
        /// `host:port`.
        server: String,
        /// The known-servers file.
        file: String,
        /// Its line.
        line: usize,
        /// The recorded fingerprint.
        expected: Fingerprint,
        /// The presented one.
        got: Fingerprint,
    },
    /// The certificate is not the explicitly pinned one.
    #[error("its certificate {got} is not the pinned {expected}")]
    NotPinned {
        /// The pin.
        expected: Fingerprint,
        /// The presented one.
        got: Fingerprint,
    },
    /// No authority vouches for it and first use is not trusted.
    #[error(
        "its certificate {got} is not vouched for by a trusted authority ({reason}) and no fingerprint is pinned for it"
    )]
    Unknown {
        /// The presented fingerprint.
        got: Fingerprint,
        /// What the authority check said.
        reason: String,
    },
}

/// How the server of a TLS connection was trusted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Trust {
    /// Its fingerprint matched the pin or the known-servers file.
    Pinned(Fingerprint),
    /// A trusted authority vouched for it.
    Authority(Fingerprint),
    /// First use: accepted, and recorded in `saved_to` when there is one.
    FirstUse {
        /// The fingerprint now trusted.
        fingerprint: Fingerprint,
        /// The known-servers file it was written to.
        saved_to: Option<PathBuf>,
    },
}

/// The lines of a known-servers file: `host:port SHA256:…`, `#` comments.
fn lookup(file: &Path, server: &str) -> Option<(usize, Fingerprint)> {
    let text = std::fs::read_to_string(file).ok()?;
    text.lines().enumerate().find_map(|(i, line)| {
        let line = line.trim();
        if line.starts_with('#') {
            return None;
        }
        let (host, fp) = line.split_once(char::is_whitespace)?;
        if !host.eq_ignore_ascii_case(server) {
            return None;
        }
        match fp.trim().parse() {
            Ok(fp) => Some((i + 1, fp)),
            Err(e) => {
                tracing::warn!(file = %file.display(), line = i + 1, error = %e, "unreadable known-servers line");
                None
            }
        }
    })
}

/// Appends a first-use fingerprint.
fn record(file: &Path, server: &str, fp: Fingerprint) -> std::io::Result<()> {
    if let Some(dir) = file.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let fresh = !file.exists();
    let mut f = std::fs::OpenOptions::new().create(true).append(true).open(file)?;
    let mut text = String::new();
    if fresh {
        text.push_str("# Babel servers trusted on first use: HOST:PORT SHA256-fingerprint\n");
    }
    text.push_str(&format!("{server} {fp}\n"));
    f.write_all(text.as_bytes())?;
    f.sync_all()
}

fn provider() -> Arc<CryptoProvider> {
    static P: OnceLock<Arc<CryptoProvider>> = OnceLock::new();
    Arc::clone(P.get_or_init(|| Arc::new(rustls::crypto::ring::default_provider())))
}

fn system_roots() -> &'static [CertificateDer<'static>] {
    static ROOTS: OnceLock<Vec<CertificateDer<'static>>> = OnceLock::new();
    ROOTS.get_or_init(|| {
        let found = rustls_native_certs::load_native_certs();
        for e in &found.errors {
            tracing::debug!(error = %e, "while loading the system's root certificates");
        }
        found.certs
    })
}

/// What one handshake's verifier decided.
#[derive(Debug, Clone)]
enum Verdict {
    Accepted(Trust),
    Refused(Untrusted),
}

/// The verifier of one connection (it remembers its verdict so the caller
/// can record a first use after the handshake, or explain a refusal).
#[derive(Debug)]
struct Verifier {
    server: String,
    opts: Arc<TlsOptions>,
    authority: Option<Arc<WebPkiServerVerifier>>,
    verdict: Mutex<Option<Verdict>>,
}

impl Verifier {
    fn new(server: String, opts: Arc<TlsOptions>) -> Verifier {
        let mut roots = RootCertStore::empty();
        if opts.system_roots {
            roots.add_parsable_certificates(system_roots().iter().cloned());
        }
        roots.add_parsable_certificates(opts.extra_roots.iter().cloned());
        let authority = (!roots.is_empty())
            .then(|| WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider()).build().ok())
            .flatten();
        Verifier { server, opts, authority, verdict: Mutex::new(None) }
    }

    fn decide(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp: &[u8],
        now: UnixTime,
    ) -> Verdict {
        let got = Fingerprint::of_der(end_entity);
        if let Some(expected) = self.opts.pin {
            return match expected == got {
                true => Verdict::Accepted(Trust::Pinned(got)),
                false => Verdict::Refused(Untrusted::NotPinned { expected, got }),
            };
        }
        if let Some(file) = &self.opts.known_servers
            && let Some((line, expected)) = lookup(file, &self.server)
        {
            return match expected == got {
                true => Verdict::Accepted(Trust::Pinned(got)),
                false => Verdict::Refused(Untrusted::Changed {
                    server: self.server.clone(),
                    file: file.display().to_string(),
                    line,
                    expected,
                    got,
                }),
            };
        }
        let reason = match &self.authority {
            Some(v) => match v.verify_server_cert(end_entity, intermediates, server_name, ocsp, now) {
                Ok(_) => return Verdict::Accepted(Trust::Authority(got)),
                Err(e) => e.to_string(),
            },
            None => "no trusted roots".to_owned(),
        };
        match self.opts.trust_on_first_use {
            true => Verdict::Accepted(Trust::FirstUse { fingerprint: got, saved_to: self.opts.known_servers.clone() }),
            false => Verdict::Refused(Untrusted::Unknown { got, reason }),
        }
    }

    fn verdict(&self) -> Option<Verdict> {
        self.verdict.lock().ok().and_then(|v| v.clone())
    }
}

impl ServerCertVerifier for Verifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let verdict = self.decide(end_entity, intermediates, server_name, ocsp_response, now);
        let result = match &verdict {
            Verdict::Accepted(_) => Ok(ServerCertVerified::assertion()),
            Verdict::Refused(why) => Err(rustls::Error::General(why.to_string())),
        };
        if let Ok(mut v) = self.verdict.lock() {
            *v = Some(verdict);
        }
        result
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &provider().signature_verification_algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &provider().signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        provider().signature_verification_algorithms.supported_schemes()
    }
}

/// How a TLS handshake failed.
#[derive(Debug)]
pub(crate) enum HandshakeError {
    /// The certificate was refused.
    Untrusted(Untrusted),
    /// Anything else (not a TLS server, connection reset, …).
    Io(std::io::Error),
}

/// Runs the client side of a TLS handshake over `tcp` and applies the trust
/// policy; records a first use once the handshake has succeeded.
pub(crate) async fn handshake(
    tcp: tokio::net::TcpStream,
    addr: &ServerAddr,
    opts: &Arc<TlsOptions>,
) -> Result<(tokio_rustls::client::TlsStream<tokio::net::TcpStream>, Trust), HandshakeError> {
    let server = addr.host_port().to_ascii_lowercase();
    let verifier = Arc::new(Verifier::new(server.clone(), Arc::clone(opts)));
    let config = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| HandshakeError::Io(std::io::Error::other(e)))?
        .dangerous()
        .with_custom_certificate_verifier(Arc::clone(&verifier) as Arc<dyn ServerCertVerifier>)
        .with_no_client_auth();
    let name = ServerName::try_from(addr.host.clone())
        .map_err(|e| HandshakeError::Io(std::io::Error::new(std::io::ErrorKind::InvalidInput, e)))?;
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    match connector.connect(name, tcp).await {
        Ok(stream) => {
            let trust = match verifier.verdict() {
                Some(Verdict::Accepted(t)) => t,
                // The verifier always runs before a handshake can succeed.
                _ => return Err(HandshakeError::Io(std::io::Error::other("no certificate was verified"))),
            };
            if let Trust::FirstUse { fingerprint, saved_to: Some(file) } = &trust {
                match record(file, &server, *fingerprint) {
                    Ok(()) => tracing::info!(%server, %fingerprint, file = %file.display(), "trusting a new server"),
                    Err(e) => {
                        tracing::warn!(%server, file = %file.display(), error = %e, "cannot record the server's fingerprint")
                    }
                }
            }
            Ok((stream, trust))
        }
        Err(e) => match verifier.verdict() {
            Some(Verdict::Refused(why)) => Err(HandshakeError::Untrusted(why)),
            _ => Err(HandshakeError::Io(e)),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses() {
        let a: ServerAddr = "tls://example.org:9000".parse().unwrap();
        assert_eq!(a, ServerAddr { tls: true, host: "example.org".into(), port: 9000 });
        assert_eq!(a.to_string(), "tls://example.org:9000");
        let p: ServerAddr = "127.0.0.1:7447".parse().unwrap();
        assert!(!p.tls);
        assert_eq!(p.host_port(), "127.0.0.1:7447");
        assert_eq!("TLS://h".parse::<ServerAddr>().unwrap().port, DEFAULT_TLS_PORT);
        assert_eq!("h".parse::<ServerAddr>().unwrap().port, DEFAULT_PORT);
        assert_eq!("tcp://h:1".parse::<ServerAddr>().unwrap(), ServerAddr { tls: false, host: "h".into(), port: 1 });
        let v6: ServerAddr = "tls://[::1]:7448".parse().unwrap();
        assert_eq!(v6.host, "::1");
        assert_eq!(v6.to_string(), "tls://[::1]:7448");
        assert_eq!("::1".parse::<ServerAddr>().unwrap().host, "::1");
        for bad in [
            "",
            "http://h:1",
            "h:port",
            "h:70000",
            "tls://",
            "[::1",
            "a b:1",
            "tls://user@h:1",
            "[::1]x",
            "a:1;b:2",
            "h:1:2",
        ] {
            assert!(bad.parse::<ServerAddr>().is_err(), "{bad:?}");
        }
    }

    #[test]
    fn authority_files() {
        let dir = tempfile::tempdir().unwrap();
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let ca = params.self_signed(&rcgen::KeyPair::generate().unwrap()).unwrap();
        let good = dir.path().join("ca.pem");
        std::fs::write(&good, ca.pem()).unwrap();
        let roots = read_authority(&good).unwrap();
        assert_eq!(roots, vec![ca.der().clone()]);
        let opts = TlsOptions::in_dir(dir.path()).with_authority(roots);
        assert!(!opts.trust_on_first_use && !opts.system_roots && opts.known_servers.is_some());

        let empty = dir.path().join("empty.pem");
        std::fs::write(&empty, "not a certificate\n").unwrap();
        let err = read_authority(&empty).unwrap_err().to_string();
        assert!(err.contains("empty.pem") && err.contains("no PEM certificate"), "{err}");
        let missing = read_authority(&dir.path().join("missing.pem")).unwrap_err().to_string();
        assert!(missing.contains("missing.pem"), "{missing}");
    }

    #[test]
    fn known_servers_file() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("sub").join("known_servers");
        assert_eq!(lookup(&file, "h:1"), None);
        let a = Fingerprint::of_der(b"a");
        let b = Fingerprint::of_der(b"b");
        record(&file, "h:1", a).unwrap();
        record(&file, "other:2", b).unwrap();
        assert_eq!(lookup(&file, "h:1"), Some((2, a)));
        assert_eq!(lookup(&file, "H:1"), Some((2, a)));
        assert_eq!(lookup(&file, "other:2"), Some((3, b)));
        assert_eq!(lookup(&file, "h:2"), None);
        // A damaged line is skipped, not fatal.
        std::fs::write(&file, "h:1 garbage\nh:1 ".to_owned() + &b.to_string() + "\n").unwrap();
        assert_eq!(lookup(&file, "h:1"), Some((2, b)));
    }
}
