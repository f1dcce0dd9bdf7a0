//! TLS end to end: a real server with a TLS listener beside the plain one,
//! clients trusting it on first use, by pin, or through an authority, and
//! refusing a changed certificate before anything is sent.
#![allow(clippy::unwrap_used)]

mod common;

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use babel_client::{Client, ClientError, Endpoint, TlsOptions, Trust, Untrusted};
use babel_proto::{ChannelFrame, Fingerprint, MediaSetup, ServerEvent};
use common::{PASSWORD, TIMEOUT, TestServer, User, befriend, start_with, user};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

async fn tls_server() -> TestServer {
    start_with(|c| c.tls_listen = Some("127.0.0.1:0".parse().unwrap())).await
}

fn tls_addr(s: &TestServer) -> String {
    format!("tls://{}", s.server().tls_addr().unwrap())
}

fn fingerprint(s: &TestServer) -> Fingerprint {
    s.server().tls().unwrap().fingerprint
}

/// Trust policy with a known-servers file in `dir` and no system roots
/// (nothing on this machine vouches for a test certificate anyway).
fn opts(dir: &Path) -> TlsOptions {
    TlsOptions { system_roots: false, ..TlsOptions::in_dir(dir) }
}

async fn connect(addr: &str, opts: TlsOptions) -> Result<Client, ClientError> {
    Client::connect_to(Endpoint::with_tls(addr, Arc::new(opts))?).await
}

#[tokio::test]
async fn everything_works_over_tls_and_first_use_is_recorded() {
    let s = tls_server().await;
    let home = tempfile::tempdir().unwrap();
    let mut a = connect(&tls_addr(&s), opts(home.path())).await.unwrap();
    let fp = fingerprint(&s);
    assert_eq!(
        a.trust(),
        Some(&Trust::FirstUse { fingerprint: fp, saved_to: Some(home.path().join("known_servers")) })
    );
    let known = std::fs::read_to_string(home.path().join("known_servers")).unwrap();
    let server = s.server().tls_addr().unwrap().to_string();
    assert!(known.contains(&format!("{server} {fp}")), "{known}");

    // Requests, events and the call channel, all over TLS; the other side
    // is on the plain listener.
    let me = a.create("alice@example.org", PASSWORD, None).await.unwrap();
    let events = a.events().await.unwrap();
    let mut alice = User { client: a, events, me, node: 0 };
    let mut bob = user(&s, "bob@example.org").await;
    befriend(&mut alice, &mut bob).await;
    let started = alice.client.call(bob.id(), MediaSetup::default()).await.unwrap();
    let call = started.call_id;
    bob.expect("incoming", |e| matches!(e, ServerEvent::IncomingCall(c) if c.call_id == call).then_some(())).await;
    bob.client.accept_call(call, MediaSetup::default()).await.unwrap();
    let mut a_chan = alice.client.connect_call(call).await.unwrap();
    let mut b_chan = bob.client.connect_call(call).await.unwrap();
    a_chan.send_raw(bytes::Bytes::from_static(b"over tls")).await.unwrap();
    b_chan.send_raw(bytes::Bytes::from_static(b"back")).await.unwrap();
    let got = tokio::time::timeout(TIMEOUT, b_chan.recv()).await.unwrap().unwrap().unwrap();
    assert!(matches!(got, ChannelFrame::Send { data, .. } if &data[..] == b"over tls"));
    let got = tokio::time::timeout(TIMEOUT, a_chan.recv()).await.unwrap().unwrap().unwrap();
    assert!(matches!(got, ChannelFrame::Send { data, .. } if &data[..] == b"back"));
    bob.client.hangup(call).await.unwrap();
    alice.expect("call_ended", |e| matches!(e, ServerEvent::CallEnded(c, _) if *c == call).then_some(())).await;

    // The next connection is checked against the recorded fingerprint and
    // nothing more is written.
    let mut again = connect(&tls_addr(&s), opts(home.path())).await.unwrap();
    assert_eq!(again.trust(), Some(&Trust::Pinned(fp)));
    again.login("alice@example.org", PASSWORD).await.unwrap();
    assert_eq!(std::fs::read_to_string(home.path().join("known_servers")).unwrap(), known);
}

#[tokio::test]
async fn a_changed_certificate_is_refused_during_the_handshake() {
    let s = tls_server().await;
    let home = tempfile::tempdir().unwrap();
    let server = s.server().tls_addr().unwrap().to_string();
    let old = Fingerprint::of_der(b"the certificate this server had before");
    std::fs::write(home.path().join("known_servers"), format!("# comment\n{server} {old}\n")).unwrap();
    let err = connect(&tls_addr(&s), opts(home.path())).await.unwrap_err();
    let ClientError::Untrusted { why, .. } = &err else { panic!("expected a refusal, got {err:?}") };
    let Untrusted::Changed { expected, got, line, .. } = why.as_ref() else { panic!("expected a change, got {why:?}") };
    assert_eq!((*expected, *got, *line), (old, fingerprint(&s), 2));
    let text = err.to_string();
    for needle in ["changed", "known_servers", &old.to_string(), &fingerprint(&s).to_string(), "delete that line"] {
        assert!(text.contains(needle), "{needle:?} missing from: {text}");
    }
    // The file is left as it was.
    assert!(std::fs::read_to_string(home.path().join("known_servers")).unwrap().contains(&old.to_string()));
}

#[tokio::test]
async fn an_explicit_pin_must_match() {
    let s = tls_server().await;
    let home = tempfile::tempdir().unwrap();
    let fp = fingerprint(&s);
    let pinned = TlsOptions { pin: Some(fp), ..opts(home.path()) };
    let c = connect(&tls_addr(&s), pinned).await.unwrap();
    assert_eq!(c.trust(), Some(&Trust::Pinned(fp)));
    let wrong = Fingerprint::of_der(b"someone else");
    let err = connect(&tls_addr(&s), TlsOptions { pin: Some(wrong), ..opts(home.path()) }).await.unwrap_err();
    assert!(
        matches!(&err, ClientError::Untrusted { why, .. } if matches!(why.as_ref(), Untrusted::NotPinned { expected, got } if *expected == wrong && *got == fp)),
        "{err:?}"
    );
    // Without first use and without a pin, an unknown server is refused.
    let strict = TlsOptions { trust_on_first_use: false, ..opts(home.path()) };
    let err = connect(&tls_addr(&s), strict).await.unwrap_err();
    assert!(
        matches!(&err, ClientError::Untrusted { why, .. } if matches!(why.as_ref(), Untrusted::Unknown { .. })),
        "{err:?}"
    );
    assert!(!home.path().join("known_servers").exists());
}

/// A private authority, and a server certificate it signed for localhost.
fn authority(dir: &Path) -> (rustls_pki_types::CertificateDer<'static>, std::path::PathBuf, std::path::PathBuf) {
    use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, ExtendedKeyUsagePurpose, IsCa, KeyPair};
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params.key_usages = vec![rcgen::KeyUsagePurpose::KeyCertSign, rcgen::KeyUsagePurpose::DigitalSignature];
    let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().unwrap()).unwrap();
    let leaf_key = KeyPair::generate().unwrap();
    let mut leaf_params = CertificateParams::new(vec!["localhost".to_owned()]).unwrap();
    leaf_params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    let leaf = leaf_params.signed_by(&leaf_key, &ca).unwrap();
    let (cert, key) = (dir.join("server.pem"), dir.join("server.key"));
    std::fs::write(&cert, leaf.pem() + &ca.pem()).unwrap();
    std::fs::write(&key, leaf_key.serialize_pem()).unwrap();
    (ca.der().clone(), cert, key)
}

#[tokio::test]
async fn a_certificate_from_a_trusted_authority_needs_no_pin() {
    let files = tempfile::tempdir().unwrap();
    let (ca, cert, key) = authority(files.path());
    let s = start_with(|c| {
        c.tls_listen = Some("127.0.0.1:0".parse().unwrap());
        c.tls_cert = Some(cert);
        c.tls_key = Some(key);
    })
    .await;
    let home = tempfile::tempdir().unwrap();
    let strict = TlsOptions { trust_on_first_use: false, extra_roots: vec![ca], ..opts(home.path()) };
    let port = s.server().tls_addr().unwrap().port();
    let mut c = connect(&format!("tls://localhost:{port}"), strict.clone()).await.unwrap();
    assert_eq!(c.trust(), Some(&Trust::Authority(fingerprint(&s))));
    c.create("carol@example.org", PASSWORD, None).await.unwrap();
    assert!(!home.path().join("known_servers").exists(), "an authority-signed server is not pinned");
    // The name must match: the same server under a name the certificate
    // does not carry is refused.
    let err = connect(&format!("tls://127.0.0.1:{port}"), strict).await.unwrap_err();
    assert!(
        matches!(&err, ClientError::Untrusted { why, .. } if matches!(why.as_ref(), Untrusted::Unknown { .. })),
        "{err:?}"
    );
    assert!(err.to_string().contains("not vouched for by a trusted authority"), "{err}");
}

#[tokio::test]
async fn plain_can_be_switched_off_and_the_tls_port_survives_garbage() {
    let s = start_with(|c| {
        c.plain = false;
        c.frame_timeout_secs = 1;
        c.tls_listen = Some("127.0.0.1:0".parse().unwrap());
    })
    .await;
    assert_eq!(Some(s.server().addr()), s.server().tls_addr());
    // Plain frames to the TLS port: the handshake fails, the connection
    // closes, no answer is made up.
    let mut plain = Client::connect(s.server().addr().to_string()).await.unwrap();
    assert!(plain.create("x@example.org", PASSWORD, None).await.is_err());
    // A client that connects and says nothing is closed after the frame
    // timeout, as a half-sent frame would be.
    let mut silent = tokio::net::TcpStream::connect(s.server().addr()).await.unwrap();
    let mut buf = [0u8; 64];
    let n = tokio::time::timeout(TIMEOUT, silent.read(&mut buf)).await.unwrap().unwrap_or(0);
    assert_eq!(n, 0, "the server closes a stalled handshake");
    // Garbage: closed too.
    let mut junk = tokio::net::TcpStream::connect(s.server().addr()).await.unwrap();
    junk.write_all(&[0x16, 0x03, 0x01, 0xff, 0xff, 1, 2, 3]).await.unwrap();
    let closed = tokio::time::timeout(TIMEOUT, async {
        loop {
            match junk.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(_) => {}
            }
        }
    })
    .await;
    assert!(closed.is_ok());
    // And real clients are still served.
    let home = tempfile::tempdir().unwrap();
    let mut c = connect(&tls_addr(&s), opts(home.path())).await.unwrap();
    c.create("y@example.org", PASSWORD, None).await.unwrap();
    tokio::time::sleep(Duration::from_millis(10)).await;
}

#[tokio::test]
async fn a_server_with_no_listener_does_not_start() {
    let dir = tempfile::tempdir().unwrap();
    let config = babel_server::Config {
        listen: "127.0.0.1:0".parse().unwrap(),
        plain: false,
        db: dir.path().join("babel.db"),
        ..babel_server::Config::default()
    };
    let err = babel_server::RunningServer::start(&config).await.unwrap_err();
    assert!(err.to_string().contains("no listener"), "{err}");
    let config = babel_server::Config {
        tls_listen: Some("127.0.0.1:0".parse().unwrap()),
        tls_cert: Some(dir.path().join("only-a-cert.pem")),
        ..config
    };
    let err = babel_server::RunningServer::start(&config).await.unwrap_err();
    assert!(err.to_string().contains("tls_key"), "{err}");
}
