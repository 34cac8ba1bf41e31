//! Tests of the TLS settings with real in-memory handshakes (tokio-rustls over
//! `tokio::io::duplex`), using the development certificates in `certs/`.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::{
    CertificateError, ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme, SupportedProtocolVersion,
};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};
use tokio_rustls::{client, server, TlsAcceptor, TlsConnector};

use super::*;
use crate::config::{ConfigOption, Origin};

fn cert(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("certs").join(name)
}

fn der(name: &str) -> CertificateDer<'static> {
    CertificateDer::from_pem_file(cert(name)).unwrap()
}

fn localhost() -> CertFiles {
    CertFiles { cert: cert("localhost.pem"), key: cert("localhost-key.pem") }
}

fn other_sni() -> SniSpec {
    SniSpec { name: "other.test".into(), files: CertFiles { cert: cert("other.pem"), key: cert("other-key.pem") } }
}

fn settings(alpn: Alpn) -> TlsSettings {
    TlsSettings { default: localhost(), sni: vec![other_sni()], client_ca: None, ciphers: CipherSpec::default(), alpn }
}

/// A client trusting `certs/ca.pem`.
struct Client {
    versions: Vec<&'static SupportedProtocolVersion>,
    alpn: Vec<&'static str>,
    identity: Option<(&'static str, &'static str)>,
    accept_any_name: bool,
}

impl Default for Client {
    fn default() -> Self {
        Client {
            versions: vec![&rustls::version::TLS13, &rustls::version::TLS12],
            alpn: vec![],
            identity: None,
            accept_any_name: false,
        }
    }
}

impl Client {
    fn config(&self) -> Arc<ClientConfig> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut roots = RootCertStore::empty();
        roots.add(der("ca.pem")).unwrap();
        let builder =
            ClientConfig::builder_with_provider(provider.clone()).with_protocol_versions(&self.versions).unwrap();
        let builder = if self.accept_any_name {
            let inner = WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider).build().unwrap();
            builder.dangerous().with_custom_certificate_verifier(Arc::new(AnyNameVerifier(inner)))
        } else {
            builder.with_root_certificates(roots)
        };
        let mut config = match self.identity {
            Some((c, k)) => {
                builder.with_client_auth_cert(vec![der(c)], PrivateKeyDer::from_pem_file(cert(k)).unwrap()).unwrap()
            }
            None => builder.with_no_client_auth(),
        };
        config.alpn_protocols = self.alpn.iter().map(|p| p.as_bytes().to_vec()).collect();
        Arc::new(config)
    }
}

/// Verifies the chain against the CA like a normal client, but lets a certificate for another
/// name through, so that a test can see which certificate the server presents for a name it
/// has none for.
#[derive(Debug)]
struct AnyNameVerifier(Arc<WebPkiServerVerifier>);

impl ServerCertVerifier for AnyNameVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        match self.0.verify_server_cert(end_entity, intermediates, server_name, ocsp, now) {
            Err(rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) => Ok(ServerCertVerified::assertion()),
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_verify_schemes()
    }
}

type Pair = (io::Result<server::TlsStream<DuplexStream>>, io::Result<client::TlsStream<DuplexStream>>);

/// Both halves of one handshake, over an in-memory pipe.
async fn handshake(config: Arc<ServerConfig>, client: Arc<ClientConfig>, name: &str) -> Pair {
    let (c, s) = tokio::io::duplex(64 * 1024);
    let name = ServerName::try_from(name.to_owned()).unwrap();
    let both = async { tokio::join!(TlsAcceptor::from(config).accept(s), TlsConnector::from(client).connect(name, c)) };
    tokio::time::timeout(Duration::from_secs(10), both).await.expect("handshake finished")
}

/// A handshake that must succeed; returns both streams.
async fn connect(
    config: Arc<ServerConfig>,
    client: Arc<ClientConfig>,
    name: &str,
) -> (server::TlsStream<DuplexStream>, client::TlsStream<DuplexStream>) {
    match handshake(config, client, name).await {
        (Ok(s), Ok(c)) => (s, c),
        (s, c) => panic!("handshake for {name}: server {:?}, client {:?}", s.err(), c.err()),
    }
}

fn presented(c: &client::TlsStream<DuplexStream>) -> CertificateDer<'static> {
    c.get_ref().1.peer_certificates().expect("server certificate")[0].clone().into_owned()
}

/// Sends a line client → server → client through an established pair.
async fn echo(s: &mut server::TlsStream<DuplexStream>, c: &mut client::TlsStream<DuplexStream>, text: &str) {
    c.write_all(text.as_bytes()).await.unwrap();
    c.flush().await.unwrap();
    let mut buf = vec![0; text.len()];
    s.read_exact(&mut buf).await.unwrap();
    s.write_all(&buf).await.unwrap();
    s.flush().await.unwrap();
    let mut back = vec![0; text.len()];
    c.read_exact(&mut back).await.unwrap();
    assert_eq!(back, text.as_bytes());
}

#[tokio::test]
async fn sni_picks_the_certificate_by_name_over_tls13_with_h2() {
    let config = settings(Alpn::H2AndHttp11).build().unwrap();
    let client = Client { versions: vec![&rustls::version::TLS13], alpn: vec!["h2", "http/1.1"], ..Client::default() };

    let (s, c) = connect(config.clone(), client.config(), "localhost").await;
    assert_eq!(presented(&c), der("localhost.pem"));
    let facts = handshake_facts(s.get_ref().1);
    assert_eq!(
        facts,
        HandshakeFacts {
            sni: Some("localhost".into()),
            alpn: Some(crate::proto::AlpnProtocol::H2),
            tls_version: Some("TLSv1.3".into())
        }
    );

    let (s, c) = connect(config.clone(), client.config(), "other.test").await;
    assert_eq!(presented(&c), der("other.pem"));
    assert_eq!(handshake_facts(s.get_ref().1).sni.as_deref(), Some("other.test"));

    // Names match case-insensitively.
    let (s, c) = connect(config, client.config(), "Other.TEST").await;
    assert_eq!(presented(&c), der("other.pem"));
    assert_eq!(handshake_facts(s.get_ref().1).sni.as_deref(), Some("other.test"));
}

#[tokio::test]
async fn tls12_works_with_both_key_types_and_http11() {
    let config = settings(Alpn::Http11).build().unwrap();
    let client = Client { versions: vec![&rustls::version::TLS12], alpn: vec!["h2", "http/1.1"], ..Client::default() };
    // localhost has an EC key, other.test an RSA one: both ECDHE-ECDSA and ECDHE-RSA suites.
    for (name, file) in [("localhost", "localhost.pem"), ("other.test", "other.pem")] {
        let (mut s, mut c) = connect(config.clone(), client.config(), name).await;
        assert_eq!(presented(&c), der(file));
        let facts = handshake_facts(s.get_ref().1);
        assert_eq!(facts.tls_version.as_deref(), Some("TLSv1.2"));
        assert_eq!(facts.alpn, Some(crate::proto::AlpnProtocol::Http11), "no h2 unless http2 is on");
        echo(&mut s, &mut c, "GET / HTTP/1.1\r\n").await;
    }
}

#[tokio::test]
async fn unknown_or_absent_names_get_the_default_certificate() {
    let config = settings(Alpn::Http11).build().unwrap();
    let client = Client { accept_any_name: true, ..Client::default() };
    let (s, c) = connect(config.clone(), client.config(), "unknown.test").await;
    assert_eq!(presented(&c), der("localhost.pem"));
    assert_eq!(handshake_facts(s.get_ref().1).sni.as_deref(), Some("unknown.test"));

    // A normal client rejects it, as it should: the default certificate is not for that name.
    let (_, c) = handshake(config.clone(), Client::default().config(), "unknown.test").await;
    assert!(c.is_err());

    // Connecting by address sends no SNI at all; the default certificate covers 127.0.0.1.
    let (s, c) = connect(config, Client::default().config(), "127.0.0.1").await;
    assert_eq!(presented(&c), der("localhost.pem"));
    let facts = handshake_facts(s.get_ref().1);
    assert_eq!(facts.sni, None);
    assert_eq!(facts.alpn, None, "the client offered no ALPN");
    assert_eq!(facts.tls_version.as_deref(), Some("TLSv1.3"));
}

#[tokio::test]
async fn cipher_choice_reaches_the_handshake() {
    let mut s = settings(Alpn::Http11);
    s.ciphers = CipherSpec::parse("TLS_CHACHA20_POLY1305_SHA256:ECDHE-ECDSA-AES128-GCM-SHA256").unwrap();
    let config = s.build().unwrap();
    for versions in [vec![&rustls::version::TLS13], vec![&rustls::version::TLS12]] {
        let client = Client { versions, ..Client::default() };
        let (s, _c) = connect(config.clone(), client.config(), "localhost").await;
        let suite = s.get_ref().1.negotiated_cipher_suite().unwrap().suite();
        assert!(
            [
                rustls::CipherSuite::TLS13_CHACHA20_POLY1305_SHA256,
                rustls::CipherSuite::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256
            ]
            .contains(&suite),
            "{suite:?}"
        );
    }
    // Only TLS 1.3 suites left: a TLS 1.2-only client is refused.
    let mut s = settings(Alpn::Http11);
    s.ciphers.suites.retain(|c| c.as_str().is_some_and(|n| n.starts_with("TLS13_")));
    let client = Client { versions: vec![&rustls::version::TLS12], ..Client::default() };
    let (server, client) = handshake(s.build().unwrap(), client.config(), "localhost").await;
    assert!(server.is_err() && client.is_err());
}

#[tokio::test]
async fn mandatory_client_auth_rejects_a_client_without_certificate() {
    let mut s = settings(Alpn::Http11);
    s.client_ca = Some(ClientCa { path: cert("ca.pem"), mode: ClientCertMode::Mandatory });
    let config = s.build().unwrap();

    for versions in [vec![&rustls::version::TLS13], vec![&rustls::version::TLS12]] {
        let client = Client { versions: versions.clone(), ..Client::default() };
        let (server, client) = handshake(config.clone(), client.config(), "localhost").await;
        assert!(server.is_err(), "{versions:?}: the server refuses");
        // In TLS 1.3 the client's half may finish before the server's verdict arrives; then
        // the first read carries the alert.
        if let Ok(mut c) = client {
            let mut buf = [0; 1];
            assert!(!matches!(c.read(&mut buf).await, Ok(1)), "{versions:?}: the connection is dead");
        }

        let client = Client { versions, identity: Some(("client.pem", "client-key.pem")), ..Client::default() };
        let (mut s, mut c) = connect(config.clone(), client.config(), "localhost").await;
        let peer = s.get_ref().1.peer_certificates().expect("client certificate").to_vec();
        assert_eq!(peer[0], der("client.pem"));
        echo(&mut s, &mut c, "hello").await;
    }

    // A certificate from the right CA but without the clientAuth usage is refused too.
    let client = Client { identity: Some(("localhost.pem", "localhost-key.pem")), ..Client::default() };
    let (server, _) = handshake(config, client.config(), "localhost").await;
    assert!(server.is_err(), "a server-only certificate is no client certificate");
}

#[tokio::test]
async fn optional_client_auth_lets_anonymous_clients_in() {
    let mut s = settings(Alpn::Http11);
    s.client_ca = Some(ClientCa { path: cert("ca.pem"), mode: ClientCertMode::Optional });
    let config = s.build().unwrap();
    let (mut s, mut c) = connect(config.clone(), Client::default().config(), "localhost").await;
    assert!(s.get_ref().1.peer_certificates().is_none());
    echo(&mut s, &mut c, "anonymous").await;
    let client = Client { identity: Some(("client.pem", "client-key.pem")), ..Client::default() };
    let (s, _c) = connect(config, client.config(), "localhost").await;
    assert_eq!(s.get_ref().1.peer_certificates().unwrap()[0], der("client.pem"));
}

#[tokio::test]
async fn reload_swaps_for_new_handshakes_and_keeps_open_connections() {
    let dir = tempfile::tempdir().unwrap();
    let (cert_path, key_path) = (dir.path().join("server.pem"), dir.path().join("server-key.pem"));
    std::fs::copy(cert("localhost.pem"), &cert_path).unwrap();
    std::fs::copy(cert("localhost-key.pem"), &key_path).unwrap();
    let store = TlsStore::new(TlsSettings {
        default: CertFiles { cert: cert_path.clone(), key: key_path.clone() },
        sni: vec![],
        client_ca: None,
        ciphers: CipherSpec::default(),
        alpn: Alpn::Http11,
    })
    .unwrap();
    let client = Client { accept_any_name: true, ..Client::default() };

    let (mut old_s, mut old_c) = connect(store.current(), client.config(), "localhost").await;
    assert_eq!(presented(&old_c), der("localhost.pem"));

    // Replace the files with the other certificate (and its RSA key), reload.
    std::fs::copy(cert("other.pem"), &cert_path).unwrap();
    std::fs::copy(cert("other-key.pem"), &key_path).unwrap();
    store.reload().unwrap();
    let (_s, c) = connect(store.current(), client.config(), "localhost").await;
    assert_eq!(presented(&c), der("other.pem"), "a new handshake sees the new certificate");
    let (_s, c) = connect(store.acceptor().config().clone(), Client::default().config(), "other.test").await;
    assert_eq!(presented(&c), der("other.pem"));
    echo(&mut old_s, &mut old_c, "still here").await;

    // A reload that fails keeps the configuration it had.
    let before = store.current();
    std::fs::write(&cert_path, "garbage\n").unwrap();
    let e = store.reload().unwrap_err();
    assert!(matches!(e, TlsError::NoCertificate { .. }), "{e:?}");
    assert!(e.to_string().contains("server.pem"), "{e}");
    assert!(Arc::ptr_eq(&before, &store.current()));
    std::fs::copy(cert("other.pem"), &cert_path).unwrap();
    std::fs::copy(cert("localhost-key.pem"), &key_path).unwrap();
    assert!(matches!(store.reload(), Err(TlsError::KeyMismatch { .. })));
    std::fs::remove_file(&key_path).unwrap();
    assert!(matches!(store.reload(), Err(TlsError::Read { .. })));
    let (_s, c) = connect(store.current(), client.config(), "localhost").await;
    assert_eq!(presented(&c), der("other.pem"), "still the last good certificate");
    echo(&mut old_s, &mut old_c, "and still here").await;
}

#[test]
fn build_errors_name_the_files() {
    let mut s = settings(Alpn::Http11);
    s.default.key = cert("client-key.pem");
    let e = s.build().unwrap_err();
    assert!(matches!(e, TlsError::KeyMismatch { .. }), "{e:?}");
    assert!(e.to_string().contains("client-key.pem") && e.to_string().contains("localhost.pem"), "{e}");

    let mut s = settings(Alpn::Http11);
    s.sni = vec![SniSpec { name: "other.test".into(), files: localhost() }];
    let e = s.build().unwrap_err();
    assert!(matches!(e, TlsError::SniName { .. }), "{e:?}");
    assert!(e.to_string().contains("other.test") && e.to_string().contains("localhost.pem"), "{e}");

    let mut s = settings(Alpn::Http11);
    s.client_ca = Some(ClientCa { path: cert("no-such-ca.pem"), mode: ClientCertMode::Optional });
    let e = s.build().unwrap_err();
    assert!(matches!(e, TlsError::Read { .. }) && e.to_string().contains("no-such-ca.pem"), "{e}");

    // The SEC1 key works as the default key.
    let mut s = settings(Alpn::Http11);
    s.default.key = cert("localhost-sec1-key.pem");
    s.build().unwrap();
}

#[test]
fn alpn_lists() {
    let config = settings(Alpn::H2AndHttp11).build().unwrap();
    assert_eq!(config.alpn_protocols, [b"h2".to_vec(), b"http/1.1".to_vec()]);
    let config = settings(Alpn::Http11).build().unwrap();
    assert_eq!(config.alpn_protocols, [b"http/1.1".to_vec()]);
}

fn option(key: &str, value: &str, n: usize) -> ConfigOption {
    ConfigOption { key: key.into(), value: value.into(), origin: Origin::CommandLine(n) }
}

#[test]
fn listeners_from_options() {
    let options = OptionList(vec![
        option("shared-socket", "127.0.0.1:443", 1),
        option("https", "=0,certs/localhost.pem,certs/localhost-key.pem,HIGH", 2),
        option("sni", "other.test certs/other.pem,certs/other-key.pem", 3),
        option("https", "127.0.0.1:8443,certs/localhost.pem,certs/localhost-key.pem,,!certs/ca.pem", 4),
        option("http2", "", 5),
    ]);
    let shared: Vec<&ConfigOption> = options.all("shared-socket").collect();
    let listeners = https_listeners(&options, &shared).unwrap();
    assert_eq!(listeners.len(), 2);
    assert_eq!((listeners[0].addr, listeners[0].shared), ("127.0.0.1:443".parse().unwrap(), Some(0)));
    assert_eq!((listeners[1].addr, listeners[1].shared), ("127.0.0.1:8443".parse().unwrap(), None));
    for l in &listeners {
        assert_eq!(l.settings.sni.len(), 1, "sni applies to every https listener");
        assert_eq!(l.settings.alpn, Alpn::H2AndHttp11);
    }
    assert_eq!(listeners[1].settings.client_ca.as_ref().map(|c| c.mode), Some(ClientCertMode::Mandatory));

    let off = OptionList(vec![option("https", ":443,c,k", 1), option("http2", "false", 2)]);
    assert_eq!(https_listeners(&off, &[]).unwrap()[0].settings.alpn, Alpn::Http11);

    let bad = OptionList(vec![option("https", ":443,c,k,RC4-SHA", 7)]);
    match https_listeners(&bad, &[]) {
        Err(ConfigError::BadValue { key, origin, reason, .. }) => {
            assert_eq!(key, "https");
            assert_eq!(origin, Origin::CommandLine(7));
            assert!(reason.contains("RC4-SHA"), "{reason}");
        }
        other => panic!("{other:?}"),
    }
    let bad = OptionList(vec![option("sni", "127.0.0.1,c,k", 3)]);
    assert!(matches!(https_listeners(&bad, &[]), Err(ConfigError::BadValue { .. })));
    // `=N` without that shared socket names the option that refers to it.
    let bad = OptionList(vec![option("https", "=1,c,k", 4)]);
    let err = https_listeners(&bad, &[]).expect_err("no shared socket 1");
    assert!(err.to_string().starts_with("command line (argument 4): bad value `=1,c,k` for `https`"), "{err}");
}

/// A reload (SIGHUP) builds a new configuration but keeps the session store:
/// clients resume the sessions they hold, as with nginx's shared session cache.
#[tokio::test]
async fn sessions_are_resumed_across_a_reload() {
    let store = TlsStore::new(settings(Alpn::Http11)).unwrap();
    let client = Client::default().config();
    let (mut s, mut c) = connect(store.current(), client.clone(), "localhost").await;
    // Reading from the server processes its session tickets.
    echo(&mut s, &mut c, "a ticket, please").await;
    store.reload().unwrap();
    let (_s, c) = connect(store.current(), client.clone(), "localhost").await;
    assert_eq!(c.get_ref().1.handshake_kind(), Some(rustls::HandshakeKind::Resumed));
    // A configuration with a store of its own knows none of them.
    let (_s, c) = connect(settings(Alpn::Http11).build().unwrap(), client, "localhost").await;
    assert_eq!(c.get_ref().1.handshake_kind(), Some(rustls::HandshakeKind::Full));
}
