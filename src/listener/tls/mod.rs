//! TLS for the https listeners: certificates, SNI, client authentication and reload.
//!
//! The TLS session lives in the pool (the zergling gets plaintext through a socket pair), so
//! this module is what turns configuration into a rustls [`ServerConfig`] and a finished
//! handshake into connection metadata:
//!
//! ```text
//!  https = ADDR,CERT,KEY[,CIPHERS[,CA]]    sni = NAME,CERT,KEY (repeatable)    http2
//!      │ HttpsSpec::parse                      │ SniSpec::parse                    │
//!      └────────────────► TlsSettings (paths, ciphers, client CA, ALPN) ◄──────────┘
//!                              │ build(): read the PEM files, check each key against its
//!                              │ certificate and each sni name against its certificate
//!                              ▼
//!               TlsStore { ArcSwap<ServerConfig> }  ◄── reload() on SIGHUP: build again, swap
//!                              │ current(), once per accepted connection
//!                              ▼
//!  TlsAcceptor::from(config).accept(tcp) ─► handshake_facts(&conn) ─► ConnMeta { sni, alpn, tls_version }
//! ```
//!
//! Invariants:
//!
//! * **A handshake never fails for want of a certificate.** The resolver picks the `sni`
//!   certificate whose name the client asked for (case-insensitively) and falls back to the
//!   `https` certificate for unknown names and for clients that send no name.
//! * **A reload is all or nothing.** [`TlsStore::reload`] reads every file again and swaps
//!   the whole configuration in one atomic store; if any file cannot be read or parsed, or a
//!   key does not match its certificate, the old configuration stays and the error is
//!   returned for the caller to log. Connections already open hold their own
//!   `Arc<ServerConfig>` and are not affected either way.
//! * **Files are read twice in a pool's life: at startup, before the privilege drop, and at
//!   each reload, after it.** After the drop to `uid`/`gid`, certificate and key files must
//!   be readable by that unprivileged user, or reloads fail (and keep the old certificates).
//!   Relative paths are resolved against the pool's working directory.
//! * Protocol versions are TLS 1.2 and 1.3; ALPN offers `http/1.1`, preceded by `h2` when
//!   the `http2` option is set.

mod files;
mod spec;

use std::path::PathBuf;
use std::sync::Arc;

use arc_swap::ArcSwap;
use rustls::crypto::ring::{default_provider, ALL_CIPHER_SUITES};
use rustls::crypto::CryptoProvider;
use rustls::server::{
    ClientHello, ResolvesServerCert, ResolvesServerCertUsingSni, ServerConfig, ServerSessionMemoryCache,
    StoresServerSessions, WebPkiClientVerifier,
};
use rustls::sign::CertifiedKey;
use rustls::{ProtocolVersion, ServerConnection, SupportedProtocolVersion};
use tokio_rustls::TlsAcceptor;
use tracing::warn;

pub use spec::{AddrRef, CertFiles, CipherSpec, ClientCa, ClientCertMode, HttpsSpec, SniSpec};

use crate::config::options::truthy;
use crate::config::{ConfigError, ConfigOption, OptionList};

/// Why TLS settings could not become a [`ServerConfig`]. Every variant names the file at
/// fault; the underlying error, where there is one, is the [`source`](std::error::Error::source).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TlsError {
    /// A file cannot be read: missing, unreadable by the pool's user, a directory.
    #[error("cannot read {}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// A file is not well-formed PEM (a section without its END line, bad base64).
    #[error("{} is not valid PEM", path.display())]
    Pem {
        /// The file.
        path: PathBuf,
        /// What the PEM reader found wrong.
        #[source]
        source: rustls_pki_types::pem::Error,
    },
    /// A certificate file holds no certificate.
    #[error("{}: no certificate in the file (expected a PEM \"BEGIN CERTIFICATE\" section)", path.display())]
    NoCertificate {
        /// The file.
        path: PathBuf,
    },
    /// A key file holds no private key.
    #[error(
        "{}: no private key in the file (expected a PEM \"BEGIN PRIVATE KEY\" (PKCS#8), \
         \"BEGIN RSA PRIVATE KEY\" (PKCS#1) or \"BEGIN EC PRIVATE KEY\" (SEC1) section)",
        path.display()
    )]
    NoKey {
        /// The file.
        path: PathBuf,
    },
    /// A private key rustls cannot use (an unsupported algorithm or curve, corrupt content).
    #[error("{}: the private key cannot be used", path.display())]
    BadKey {
        /// The key file.
        path: PathBuf,
        /// rustls' reason.
        #[source]
        source: rustls::Error,
    },
    /// A certificate that cannot be parsed or used.
    #[error("{}: the certificate cannot be parsed", path.display())]
    BadCertificate {
        /// The certificate file.
        path: PathBuf,
        /// rustls' reason.
        #[source]
        source: rustls::Error,
    },
    /// The private key is not the key of the (first) certificate.
    #[error("the private key in {} does not match the certificate in {}", key.display(), cert.display())]
    KeyMismatch {
        /// The certificate file.
        cert: PathBuf,
        /// The key file.
        key: PathBuf,
    },
    /// An `sni` certificate is not valid for the name it is configured for.
    #[error("sni {name}: the certificate in {} is not valid for that name", cert.display())]
    SniName {
        /// The configured name.
        name: String,
        /// The certificate file.
        cert: PathBuf,
        /// rustls' reason.
        #[source]
        source: rustls::Error,
    },
    /// The client CA file gives no usable trust anchor.
    #[error("client CA {}: cannot verify client certificates with it", path.display())]
    ClientVerifier {
        /// The CA file.
        path: PathBuf,
        /// rustls' reason.
        #[source]
        source: rustls::server::VerifierBuilderError,
    },
    /// rustls refused the configuration as a whole.
    #[error("cannot build the TLS configuration")]
    Config {
        /// rustls' reason.
        #[source]
        source: rustls::Error,
    },
}

/// Which application protocols an https listener offers with ALPN.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Alpn {
    /// `http/1.1` only.
    #[default]
    Http11,
    /// `h2`, then `http/1.1`: clients that speak both get HTTP/2.
    H2AndHttp11,
}

impl Alpn {
    /// The protocol names, in the server's order of preference.
    pub fn protocols(self) -> Vec<Vec<u8>> {
        match self {
            Alpn::Http11 => vec![b"http/1.1".to_vec()],
            Alpn::H2AndHttp11 => vec![b"h2".to_vec(), b"http/1.1".to_vec()],
        }
    }
}

/// Everything one https listener needs to build its rustls configuration. It holds paths,
/// not file contents: [`TlsSettings::build`] reads the files every time it runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsSettings {
    /// The default certificate: presented for unknown names and when the client sends none.
    pub default: CertFiles,
    /// Further certificates chosen by SNI name.
    pub sni: Vec<SniSpec>,
    /// Client-certificate verification, if any.
    pub client_ca: Option<ClientCa>,
    /// The cipher suites offered.
    pub ciphers: CipherSpec,
    /// The ALPN protocols offered.
    pub alpn: Alpn,
}

impl TlsSettings {
    /// The settings of one `https` option, with the pool's `sni` certificates and ALPN.
    pub fn new(https: &HttpsSpec, sni: &[SniSpec], alpn: Alpn) -> TlsSettings {
        TlsSettings {
            default: https.files.clone(),
            sni: sni.to_vec(),
            client_ca: https.client_ca.clone(),
            ciphers: https.ciphers.clone(),
            alpn,
        }
    }

    /// Reads every file and builds the rustls configuration: TLS 1.2 and 1.3 (those of them
    /// that have a suite in [`TlsSettings::ciphers`]), the SNI resolver, client
    /// authentication, ALPN. When an `sni` name repeats, the last one wins.
    pub fn build(&self) -> Result<Arc<ServerConfig>, TlsError> {
        self.build_with(ServerSessionMemoryCache::new(SESSION_CACHE))
    }

    /// [`TlsSettings::build`] with `sessions` as the server-side session store (the
    /// TLS 1.3 tickets and TLS 1.2 session ids clients resume with), so that a
    /// reload keeps the sessions clients hold, as nginx's shared session cache does.
    pub fn build_with(&self, sessions: Arc<dyn StoresServerSessions>) -> Result<Arc<ServerConfig>, TlsError> {
        let provider = Arc::new(CryptoProvider {
            cipher_suites: ALL_CIPHER_SUITES
                .iter()
                .copied()
                .filter(|s| self.ciphers.suites.contains(&s.suite()))
                .collect(),
            ..default_provider()
        });
        let default = Arc::new(files::certified_key(&self.default, &provider)?);
        let mut by_name = ResolvesServerCertUsingSni::new();
        for sni in &self.sni {
            let key = files::certified_key(&sni.files, &provider)?;
            by_name.add(&sni.name, key).map_err(|source| TlsError::SniName {
                name: sni.name.clone(),
                cert: sni.files.cert.clone(),
                source,
            })?;
        }
        let versions: Vec<&'static SupportedProtocolVersion> = [&rustls::version::TLS13, &rustls::version::TLS12]
            .into_iter()
            .filter(|v| provider.cipher_suites.iter().any(|s| s.version().version == v.version))
            .collect();
        let builder = ServerConfig::builder_with_provider(Arc::clone(&provider))
            .with_protocol_versions(&versions)
            .map_err(|source| TlsError::Config { source })?;
        let builder = match &self.client_ca {
            None => builder.with_no_client_auth(),
            Some(ca) => {
                let roots = Arc::new(files::client_roots(&ca.path)?);
                let verifier = WebPkiClientVerifier::builder_with_provider(roots, Arc::clone(&provider));
                let verifier = match ca.mode {
                    ClientCertMode::Optional => verifier.allow_unauthenticated(),
                    ClientCertMode::Mandatory => verifier,
                };
                let verifier =
                    verifier.build().map_err(|source| TlsError::ClientVerifier { path: ca.path.clone(), source })?;
                builder.with_client_cert_verifier(verifier)
            }
        };
        let mut config = builder.with_cert_resolver(Arc::new(SniResolver { by_name, default }));
        config.alpn_protocols = self.alpn.protocols();
        config.session_storage = sessions;
        Ok(Arc::new(config))
    }
}

/// Sessions a listener keeps for resumption (rustls' default size).
pub const SESSION_CACHE: usize = 256;

/// Picks the certificate by SNI name, falling back to the default one.
#[derive(Debug)]
struct SniResolver {
    /// The `sni` certificates; rustls lower-cases both the names added and the name a client
    /// sends, which makes matching case-insensitive.
    by_name: ResolvesServerCertUsingSni,
    /// The `https` certificate.
    default: Arc<CertifiedKey>,
}

impl ResolvesServerCert for SniResolver {
    fn resolve(&self, client_hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        if client_hello.server_name().is_none() {
            return Some(Arc::clone(&self.default));
        }
        self.by_name.resolve(client_hello).or_else(|| Some(Arc::clone(&self.default)))
    }
}

/// The current rustls configuration of one https listener, swappable while the listener
/// accepts.
#[derive(Debug)]
pub struct TlsStore {
    settings: TlsSettings,
    current: ArcSwap<ServerConfig>,
    /// One session store for every configuration this listener builds: bounded
    /// ([`SESSION_CACHE`] entries), and kept across reloads.
    sessions: Arc<dyn StoresServerSessions>,
}

impl TlsStore {
    /// Builds the first configuration; fails as [`TlsSettings::build`] does.
    pub fn new(settings: TlsSettings) -> Result<TlsStore, TlsError> {
        let sessions: Arc<dyn StoresServerSessions> = ServerSessionMemoryCache::new(SESSION_CACHE);
        let config = settings.build_with(Arc::clone(&sessions))?;
        Ok(TlsStore { settings, current: ArcSwap::new(config), sessions })
    }

    /// The configuration for a new handshake. Take it once per accepted connection; the
    /// connection keeps it for its whole life.
    pub fn current(&self) -> Arc<ServerConfig> {
        self.current.load_full()
    }

    /// An acceptor over [`TlsStore::current`].
    pub fn acceptor(&self) -> TlsAcceptor {
        TlsAcceptor::from(self.current())
    }

    /// Reads the files again and swaps the new configuration in. On error nothing changes:
    /// the old configuration keeps serving, and the caller logs the error.
    pub fn reload(&self) -> Result<(), TlsError> {
        let config = self.settings.build_with(Arc::clone(&self.sessions))?;
        self.current.store(config);
        Ok(())
    }

    /// The settings this store builds from.
    pub fn settings(&self) -> &TlsSettings {
        &self.settings
    }
}

/// What a finished handshake tells the zergling (the TLS fields of `proto::ConnMeta`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HandshakeFacts {
    /// The server name the client asked for (lower case), if it sent one.
    pub sni: Option<String>,
    /// The negotiated ALPN protocol (`h2`, `http/1.1`), if any.
    pub alpn: Option<crate::proto::AlpnProtocol>,
    /// The negotiated version: `TLSv1.3` or `TLSv1.2` (OpenSSL's spelling).
    pub tls_version: Option<String>,
}

/// The facts of a server connection, taken after its handshake (from tokio-rustls:
/// `stream.get_ref().1`).
pub fn handshake_facts(conn: &ServerConnection) -> HandshakeFacts {
    HandshakeFacts {
        sni: conn.server_name().map(str::to_owned),
        alpn: conn.alpn_protocol().and_then(crate::proto::AlpnProtocol::parse),
        tls_version: conn.protocol_version().map(|v| match v {
            ProtocolVersion::TLSv1_3 => "TLSv1.3".to_owned(),
            ProtocolVersion::TLSv1_2 => "TLSv1.2".to_owned(),
            other => format!("{other:?}"),
        }),
    }
}

/// One `https` option, ready for the listener: where it listens and its TLS settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpsListener {
    /// Its address (a `=N` reference already resolved to the shared socket's).
    pub addr: std::net::SocketAddr,
    /// `=N`: the shared socket it uses, bound before the privilege drop.
    pub shared: Option<usize>,
    /// Its TLS settings (the pool's `sni` certificates included).
    pub settings: TlsSettings,
}

/// Reads every `https` option (in order), every `sni` option and the `http2` flag from the
/// option list; logs once per `https` option whose CIPHERS were partly ignored. `shared` are
/// the `shared-socket` options, which `=N` refers to. Files are not opened here:
/// [`TlsStore::new`] does that. Called by `Config::from_options`.
pub fn https_listeners(options: &OptionList, shared: &[&ConfigOption]) -> Result<Vec<HttpsListener>, ConfigError> {
    let sni = options
        .all("sni")
        .map(|o| SniSpec::parse(&o.value).map_err(|reason| ConfigError::bad(o, reason)))
        .collect::<Result<Vec<_>, _>>()?;
    let alpn = match options.last("http2") {
        Some(o) if truthy(&o.value) => Alpn::H2AndHttp11,
        _ => Alpn::Http11,
    };
    options
        .all("https")
        .map(|o| {
            let spec = HttpsSpec::parse(&o.value).map_err(|reason| ConfigError::bad(o, reason))?;
            if let Some(warning) = spec.ciphers.warning() {
                warn!(origin = %o.origin, option = "https", "{warning}");
            }
            let (addr, shared) = match spec.addr {
                AddrRef::Addr(a) => (a, None),
                AddrRef::Shared(n) => (crate::config::shared_address(o, n, shared)?, Some(n)),
            };
            Ok(HttpsListener { addr, shared, settings: TlsSettings::new(&spec, &sni, alpn) })
        })
        .collect()
}

#[cfg(test)]
mod tests;
