//! The grammar of the TLS options, in uWSGI's words: `https = ADDR,CERT,KEY[,CIPHERS[,CA]]`,
//! `sni = NAME,CERT,KEY`, and the OpenSSL-style cipher strings of the CIPHERS field.
//!
//! Everything here is pure: values in, a typed spec or a message out. No file is opened;
//! the files named are read by [`super::TlsSettings::build`], so that a reload reads them
//! again.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;

use rustls::crypto::ring::ALL_CIPHER_SUITES;
use rustls::{CipherSuite, ProtocolVersion};
use rustls_pki_types::DnsName;

use crate::config::parse_addr_str;

/// Where an `https` listener listens: its own address, or a `shared-socket` bound earlier.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AddrRef {
    /// Bind this address (`:443`, `127.0.0.1:8443`, `[::1]:443`).
    Addr(SocketAddr),
    /// `=N`: use the N-th `shared-socket` (0-based, in declaration order), which was bound
    /// before the privilege drop.
    Shared(usize),
}

/// A certificate chain file and the file with its private key, both PEM.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertFiles {
    /// The certificate chain: the end-entity certificate first, then intermediates.
    pub cert: PathBuf,
    /// The private key: PKCS#8, PKCS#1 (RSA) or SEC1 (EC).
    pub key: PathBuf,
}

/// Whether a client must present a certificate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientCertMode {
    /// A client may present a certificate; if it does, it must verify against the CA,
    /// otherwise the handshake fails. A client without one is let in.
    Optional,
    /// Every client must present a certificate that verifies against the CA (uWSGI's `!`
    /// prefix on the CA field).
    Mandatory,
}

/// The CA field of `https`: client-certificate verification against the CAs in a PEM file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientCa {
    /// The PEM file with one or more CA certificates.
    pub path: PathBuf,
    /// Optional (`CA`) or mandatory (`!CA`).
    pub mode: ClientCertMode,
}

/// One `https = ADDR,CERT,KEY[,CIPHERS[,CA]]` option, parsed.
///
/// * `ADDR`: `:443`, `127.0.0.1:8443`, `[::1]:443`, or `=N` for the N-th `shared-socket`.
/// * `CERT`, `KEY`: PEM files; the key in PKCS#8, PKCS#1 or SEC1.
/// * `CIPHERS`: see [`CipherSpec::parse`]; empty means rustls' safe defaults.
/// * `CA`: a PEM file of CAs that turns on client-certificate verification. Without a
///   prefix a client certificate is **optional** (verified when presented); with a `!`
///   prefix (`!ca.pem`) it is **mandatory**. This is uWSGI's rule.
///
/// As in uWSGI the value is split at its first four commas, so the CA path may contain
/// commas; the certificate and key paths may not.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpsSpec {
    /// Where to listen.
    pub addr: AddrRef,
    /// The default certificate and its key (the one presented when no `sni` name matches).
    pub files: CertFiles,
    /// The cipher suites to offer.
    pub ciphers: CipherSpec,
    /// Client-certificate verification, when the CA field is given.
    pub client_ca: Option<ClientCa>,
}

impl HttpsSpec {
    /// Parses the value of an `https` option; the error says what is wrong with it.
    pub fn parse(value: &str) -> Result<HttpsSpec, String> {
        const SHAPE: &str = "expected ADDR,CERT,KEY[,CIPHERS[,CA]] such as :443,certs/site.pem,certs/site-key.pem";
        let mut fields = value.splitn(5, ',').map(str::trim);
        let addr = fields.next().unwrap_or_default();
        let (Some(cert), Some(key)) = (fields.next(), fields.next()) else {
            return Err(format!("{SHAPE} (at least three comma-separated fields)"));
        };
        let addr = parse_addr_ref(addr)?;
        let files = cert_files(cert, key)?;
        let ciphers = match fields.next() {
            Some(c) => CipherSpec::parse(c).map_err(|e| format!("CIPHERS: {e}"))?,
            None => CipherSpec::default(),
        };
        let client_ca = match fields.next() {
            None | Some("") => None,
            Some(ca) => Some(match ca.strip_prefix('!') {
                Some("") => return Err("CA: `!` must be followed by the path of a PEM file of CAs".into()),
                Some(path) => ClientCa { path: PathBuf::from(path.trim()), mode: ClientCertMode::Mandatory },
                None => ClientCa { path: PathBuf::from(ca), mode: ClientCertMode::Optional },
            }),
        };
        Ok(HttpsSpec { addr, files, ciphers, client_ca })
    }
}

/// One `sni = NAME,CERT,KEY` option, parsed: a further certificate on every https listener,
/// presented to clients that ask for `NAME`.
///
/// uWSGI writes the same option with a space after the name (`sni = NAME CERT,KEY`); both
/// forms are accepted. uWSGI also allows per-name CIPHERS and CA fields; those are refused,
/// because ciphers and client authentication belong to the listener (`https`) here.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SniSpec {
    /// The server name, lower-cased. Matching is exact (no wildcards) and case-insensitive.
    pub name: String,
    /// The certificate for that name and its key.
    pub files: CertFiles,
}

impl SniSpec {
    /// Parses the value of an `sni` option; the error says what is wrong with it.
    pub fn parse(value: &str) -> Result<SniSpec, String> {
        const SHAPE: &str = "expected NAME,CERT,KEY such as other.example,certs/other.pem,certs/other-key.pem";
        let value = value.trim();
        // uWSGI's form has a space between the name and the files, before any comma.
        let split = match (value.find(' '), value.find(',')) {
            (Some(space), Some(comma)) if space < comma => Some(space),
            (Some(space), None) => Some(space),
            (_, Some(comma)) => Some(comma),
            (None, None) => None,
        };
        let Some(at) = split else {
            return Err(SHAPE.into());
        };
        let (name, rest) = (value[..at].trim(), &value[at + 1..]);
        let mut fields = rest.splitn(4, ',').map(str::trim);
        let cert = fields.next().unwrap_or_default();
        let Some(key) = fields.next() else {
            return Err(SHAPE.into());
        };
        if fields.any(|f| !f.is_empty()) {
            return Err("per-name CIPHERS and CA are not supported: set them on the `https` option, they apply to every name of the listener".into());
        }
        Ok(SniSpec { name: sni_name(name)?, files: cert_files(cert, key)? })
    }
}

/// The cipher suites an https listener offers, from an OpenSSL-style CIPHERS string.
///
/// rustls implements only AEAD suites with forward secrecy (TLS 1.3: AES-256-GCM,
/// AES-128-GCM, ChaCha20-Poly1305; TLS 1.2: ECDHE-ECDSA and ECDHE-RSA with the same
/// ciphers), so most of what an OpenSSL cipher string expresses is already true. The rules:
///
/// * Empty: every suite rustls has (its safe defaults).
/// * Category keywords and their `+` combinations (`HIGH`, `DEFAULT`, `ALL`, `EECDH+AESGCM`,
///   …), exclusions of things rustls does not have (`!aNULL`, `!MD5`, `-RC4`), `+X`
///   reorderings and `@STRENGTH`/`@SECLEVEL=N` are **ignored**, and listed in
///   [`CipherSpec::ignored`] so that the caller warns once. A category keyword counts as
///   "every suite rustls has".
/// * Suite names rustls has map to those suites, in rustls' spelling
///   (`TLS13_AES_128_GCM_SHA256`, `TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256`), in the IANA
///   spelling of TLS 1.3 names (`TLS_AES_128_GCM_SHA256`) or in OpenSSL's spelling of TLS 1.2
///   names (`ECDHE-RSA-AES128-GCM-SHA256`); case does not matter. Naming suites of one TLS
///   version limits that version to them; a version none of whose suites is named keeps all
///   of its suites (as OpenSSL keeps its TLS 1.3 suites whatever the cipher list says).
/// * `!NAME` or `-NAME` of a suite rustls has removes it.
/// * Any other name (`RC4-SHA`, `DES-CBC3-SHA`, `AES128-SHA`, typos) is an error: it asks
///   for a suite that cannot be honoured.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CipherSpec {
    /// The suites to offer, TLS 1.3 ones first; never empty.
    pub suites: Vec<CipherSuite>,
    /// The tokens of the string that were ignored; empty when nothing was.
    pub ignored: Vec<String>,
}

impl Default for CipherSpec {
    /// Every suite rustls has, nothing ignored.
    fn default() -> Self {
        CipherSpec { suites: ALL_CIPHER_SUITES.iter().map(|s| s.suite()).collect(), ignored: Vec::new() }
    }
}

impl CipherSpec {
    /// Parses an OpenSSL-style cipher string (tokens separated by `:`, spaces or `;`) by the
    /// rules in the type's documentation.
    pub fn parse(value: &str) -> Result<CipherSpec, String> {
        let mut named: Vec<CipherSuite> = Vec::new();
        let mut excluded: Vec<CipherSuite> = Vec::new();
        let mut ignored: Vec<String> = Vec::new();
        let mut category = false;
        for token in value.split([':', ' ', ';']).map(str::trim).filter(|t| !t.is_empty()) {
            if let Some(rest) = token.strip_prefix(['!', '-']) {
                match suite_by_name(rest) {
                    Some(suite) => excluded.push(suite),
                    None => ignored.push(token.to_owned()),
                }
            } else if token.starts_with(['+', '@']) {
                ignored.push(token.to_owned());
            } else if let Some(suite) = suite_by_name(token) {
                if !named.contains(&suite) {
                    named.push(suite);
                }
            } else if is_category(token) {
                category = true;
                ignored.push(token.to_owned());
            } else {
                return Err(format!(
                    "`{token}` is not a cipher suite rustls implements; it has only {}. \
                     Leave CIPHERS empty (or write HIGH) to let rustls choose",
                    offered_names()
                ));
            }
        }
        let mut suites = Vec::new();
        for version in [ProtocolVersion::TLSv1_3, ProtocolVersion::TLSv1_2] {
            let all = ALL_CIPHER_SUITES.iter().filter(|s| s.version().version == version).map(|s| s.suite());
            let chosen: Vec<CipherSuite> = named.iter().copied().filter(|n| all.clone().any(|a| a == *n)).collect();
            if category || chosen.is_empty() {
                suites.extend(all);
            } else {
                suites.extend(chosen);
            }
        }
        suites.retain(|s| !excluded.contains(s));
        if suites.is_empty() {
            return Err(format!("`{value}` excludes every cipher suite rustls implements ({})", offered_names()));
        }
        Ok(CipherSpec { suites, ignored })
    }

    /// The one warning to log about this spec, when part of the string was ignored.
    pub fn warning(&self) -> Option<String> {
        if self.ignored.is_empty() {
            return None;
        }
        Some(format!(
            "CIPHERS: ignoring `{}`: rustls offers only safe suites (AEAD with forward secrecy) and chooses among them itself",
            self.ignored.join(":")
        ))
    }
}

/// Parses the ADDR field: `=N` or an address.
fn parse_addr_ref(addr: &str) -> Result<AddrRef, String> {
    if let Some(n) = addr.strip_prefix('=') {
        return n
            .trim()
            .parse()
            .map(AddrRef::Shared)
            .map_err(|_| format!("ADDR `{addr}`: `=N` needs the 0-based number of a shared-socket, such as =0"));
    }
    parse_addr_str(addr).map(AddrRef::Addr).ok_or_else(|| {
        format!(
            "ADDR `{addr}`: expected HOST:PORT such as :443, 127.0.0.1:8443 or [::1]:443, or =N for a shared-socket"
        )
    })
}

fn cert_files(cert: &str, key: &str) -> Result<CertFiles, String> {
    if cert.is_empty() {
        return Err("CERT is empty: expected the path of a PEM certificate (chain)".into());
    }
    if key.is_empty() {
        return Err("KEY is empty: expected the path of a PEM private key".into());
    }
    Ok(CertFiles { cert: PathBuf::from(cert), key: PathBuf::from(key) })
}

/// Checks an SNI name: a DNS name (clients never send IP addresses in SNI), no wildcard.
fn sni_name(name: &str) -> Result<String, String> {
    if name.is_empty() {
        return Err("NAME is empty: expected the server name clients ask for, such as other.example".into());
    }
    if name.parse::<IpAddr>().is_ok() {
        return Err(format!("NAME `{name}`: clients never send an IP address as a server name; the `https` certificate serves clients that connect by address"));
    }
    if name.contains('*') {
        return Err(format!("NAME `{name}`: wildcard names are not supported; give one `sni` option per name (the certificate itself may be a wildcard one)"));
    }
    DnsName::try_from(name).map_err(|_| format!("NAME `{name}` is not a valid DNS name"))?;
    Ok(name.to_ascii_lowercase())
}

/// Every spelling of every suite rustls (with *ring*) has.
const SUITE_NAMES: &[(&str, CipherSuite)] = &[
    ("TLS13_AES_256_GCM_SHA384", CipherSuite::TLS13_AES_256_GCM_SHA384),
    ("TLS_AES_256_GCM_SHA384", CipherSuite::TLS13_AES_256_GCM_SHA384),
    ("TLS13_AES_128_GCM_SHA256", CipherSuite::TLS13_AES_128_GCM_SHA256),
    ("TLS_AES_128_GCM_SHA256", CipherSuite::TLS13_AES_128_GCM_SHA256),
    ("TLS13_CHACHA20_POLY1305_SHA256", CipherSuite::TLS13_CHACHA20_POLY1305_SHA256),
    ("TLS_CHACHA20_POLY1305_SHA256", CipherSuite::TLS13_CHACHA20_POLY1305_SHA256),
    ("TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384", CipherSuite::TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384),
    ("ECDHE-ECDSA-AES256-GCM-SHA384", CipherSuite::TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384),
    ("TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256", CipherSuite::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256),
    ("ECDHE-ECDSA-AES128-GCM-SHA256", CipherSuite::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256),
    ("TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256", CipherSuite::TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256),
    ("ECDHE-ECDSA-CHACHA20-POLY1305", CipherSuite::TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256),
    ("TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384", CipherSuite::TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384),
    ("ECDHE-RSA-AES256-GCM-SHA384", CipherSuite::TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384),
    ("TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256", CipherSuite::TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256),
    ("ECDHE-RSA-AES128-GCM-SHA256", CipherSuite::TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256),
    ("TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256", CipherSuite::TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256),
    ("ECDHE-RSA-CHACHA20-POLY1305", CipherSuite::TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256),
];

/// OpenSSL's category keywords (`man openssl-ciphers`, "CIPHER STRINGS"): they select sets
/// of suites rather than name one.
const CATEGORIES: &[&str] = &[
    "DEFAULT",
    "COMPLEMENTOFDEFAULT",
    "ALL",
    "COMPLEMENTOFALL",
    "HIGH",
    "MEDIUM",
    "LOW",
    "EXP",
    "EXPORT",
    "eNULL",
    "NULL",
    "aNULL",
    "kRSA",
    "aRSA",
    "RSA",
    "kDHr",
    "kDHd",
    "kDH",
    "kDHE",
    "kEDH",
    "DH",
    "DHE",
    "EDH",
    "ADH",
    "kEECDH",
    "kECDHE",
    "ECDH",
    "ECDHE",
    "EECDH",
    "AECDH",
    "aDSS",
    "DSS",
    "aDH",
    "aECDSA",
    "ECDSA",
    "TLSv1",
    "TLSv1.0",
    "TLSv1.2",
    "TLSv1.3",
    "SSLv3",
    "AES128",
    "AES256",
    "AES",
    "AESGCM",
    "AESCCM",
    "AESCCM8",
    "ARIA128",
    "ARIA256",
    "ARIA",
    "ARIAGCM",
    "CAMELLIA128",
    "CAMELLIA256",
    "CAMELLIA",
    "CHACHA20",
    "3DES",
    "DES",
    "RC4",
    "RC2",
    "IDEA",
    "SEED",
    "MD5",
    "SHA1",
    "SHA",
    "SHA256",
    "SHA384",
    "aGOST",
    "aGOST01",
    "kGOST",
    "GOST94",
    "GOST89MAC",
    "kGOST18",
    "PSK",
    "kPSK",
    "kECDHEPSK",
    "kDHEPSK",
    "kRSAPSK",
    "aPSK",
    "SUITEB128",
    "SUITEB128ONLY",
    "SUITEB192",
    "CBC",
    "kSRP",
    "aSRP",
    "SRP",
    "FIPS",
];

fn suite_by_name(name: &str) -> Option<CipherSuite> {
    SUITE_NAMES.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, s)| *s)
}

/// A category keyword, or a `+` combination of them (`EECDH+AESGCM`).
fn is_category(token: &str) -> bool {
    token.split('+').all(|part| CATEGORIES.iter().any(|c| c.eq_ignore_ascii_case(part)))
}

/// The names of what rustls offers, for error messages.
fn offered_names() -> String {
    "TLS 1.3: TLS_AES_256_GCM_SHA384, TLS_AES_128_GCM_SHA256, TLS_CHACHA20_POLY1305_SHA256; \
     TLS 1.2: ECDHE-ECDSA-AES256-GCM-SHA384, ECDHE-ECDSA-AES128-GCM-SHA256, ECDHE-ECDSA-CHACHA20-POLY1305, \
     ECDHE-RSA-AES256-GCM-SHA384, ECDHE-RSA-AES128-GCM-SHA256, ECDHE-RSA-CHACHA20-POLY1305"
        .to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    const TLS13: [CipherSuite; 3] = [
        CipherSuite::TLS13_AES_256_GCM_SHA384,
        CipherSuite::TLS13_AES_128_GCM_SHA256,
        CipherSuite::TLS13_CHACHA20_POLY1305_SHA256,
    ];

    #[test]
    fn https_with_three_fields() {
        let spec = HttpsSpec::parse("127.0.0.1:8443,certs/localhost.pem,certs/localhost-key.pem").unwrap();
        assert_eq!(spec.addr, AddrRef::Addr("127.0.0.1:8443".parse().unwrap()));
        assert_eq!(spec.files.cert, PathBuf::from("certs/localhost.pem"));
        assert_eq!(spec.files.key, PathBuf::from("certs/localhost-key.pem"));
        assert_eq!(spec.ciphers, CipherSpec::default());
        assert_eq!(spec.client_ca, None);
        assert_eq!(HttpsSpec::parse(":443,c.pem,k.pem").unwrap().addr, AddrRef::Addr("0.0.0.0:443".parse().unwrap()));
        assert_eq!(
            HttpsSpec::parse("[::1]:443,c.pem,k.pem").unwrap().addr,
            AddrRef::Addr("[::1]:443".parse().unwrap())
        );
    }

    #[test]
    fn https_shared_socket_reference() {
        let spec = HttpsSpec::parse("=0,foobar.crt,foobar.key").unwrap();
        assert_eq!(spec.addr, AddrRef::Shared(0));
        assert_eq!(HttpsSpec::parse("=12,c,k").unwrap().addr, AddrRef::Shared(12));
        let e = HttpsSpec::parse("=x,c,k").unwrap_err();
        assert!(e.contains("shared-socket"), "{e}");
        assert!(HttpsSpec::parse("=-1,c,k").is_err());
    }

    #[test]
    fn https_with_ciphers_and_ca() {
        // uWSGI's observed example.
        let spec = HttpsSpec::parse("=0,c.pem,k.pem,HIGH").unwrap();
        assert_eq!(spec.ciphers.suites, CipherSpec::default().suites);
        assert_eq!(spec.ciphers.ignored, ["HIGH"]);
        assert_eq!(spec.client_ca, None);

        let spec = HttpsSpec::parse(":443,c.pem,k.pem,HIGH:!aNULL:!MD5,ca.pem").unwrap();
        assert_eq!(spec.client_ca, Some(ClientCa { path: "ca.pem".into(), mode: ClientCertMode::Optional }));
        assert_eq!(spec.ciphers.ignored, ["HIGH", "!aNULL", "!MD5"]);

        let spec = HttpsSpec::parse(":443,c.pem,k.pem,,!ca.pem").unwrap();
        assert_eq!(spec.ciphers, CipherSpec::default());
        assert_eq!(spec.client_ca, Some(ClientCa { path: "ca.pem".into(), mode: ClientCertMode::Mandatory }));

        // Split at the first four commas only: the CA path keeps its commas.
        let spec = HttpsSpec::parse(":443,c.pem,k.pem,,!dir,with,commas/ca.pem").unwrap();
        assert_eq!(spec.client_ca.unwrap().path, PathBuf::from("dir,with,commas/ca.pem"));

        // An empty CA field is no CA.
        assert_eq!(HttpsSpec::parse(":443,c.pem,k.pem,HIGH,").unwrap().client_ca, None);
        assert!(HttpsSpec::parse(":443,c.pem,k.pem,,!").unwrap_err().contains("`!`"));
    }

    #[test]
    fn https_malformed() {
        for bad in ["", ":443", ":443,c.pem", "nowhere,c.pem,k.pem", ":443,,k.pem", ":443,c.pem,", ":99999,c,k"] {
            assert!(HttpsSpec::parse(bad).is_err(), "{bad}");
        }
        assert!(HttpsSpec::parse(":443,c.pem").unwrap_err().contains("ADDR,CERT,KEY"));
        assert!(HttpsSpec::parse(":443,c.pem,k.pem,RC4-SHA").unwrap_err().contains("RC4-SHA"));
    }

    #[test]
    fn sni_in_both_forms() {
        let want = SniSpec {
            name: "other.test".into(),
            files: CertFiles { cert: "certs/other.pem".into(), key: "certs/other-key.pem".into() },
        };
        assert_eq!(SniSpec::parse("other.test,certs/other.pem,certs/other-key.pem").unwrap(), want);
        assert_eq!(SniSpec::parse("other.test certs/other.pem,certs/other-key.pem").unwrap(), want);
        assert_eq!(SniSpec::parse("Other.TEST,certs/other.pem,certs/other-key.pem").unwrap(), want);
        assert_eq!(SniSpec::parse("other.test certs/other.pem,certs/other-key.pem,,").unwrap(), want);
    }

    #[test]
    fn sni_malformed() {
        for bad in ["", "other.test", "other.test,c.pem", ",c.pem,k.pem", "other.test,,k.pem", "bad name!,c,k"] {
            assert!(SniSpec::parse(bad).is_err(), "{bad}");
        }
        assert!(SniSpec::parse("127.0.0.1,c,k").unwrap_err().contains("IP address"));
        assert!(SniSpec::parse("*.example.com,c,k").unwrap_err().contains("wildcard"));
        assert!(SniSpec::parse("other.test c,k,HIGH,ca.pem").unwrap_err().contains("not supported"));
    }

    #[test]
    fn policy_strings_are_ignored_with_their_tokens_listed() {
        for s in [
            "HIGH",
            "DEFAULT",
            "HIGH:!aNULL:!MD5",
            "EECDH+AESGCM:EDH+AESGCM",
            "ALL:@SECLEVEL=2",
            "HIGH:+RC4:-3DES",
            "  ",
        ] {
            let spec = CipherSpec::parse(s).unwrap();
            assert_eq!(spec.suites, CipherSpec::default().suites, "{s}");
        }
        let spec = CipherSpec::parse("HIGH:!aNULL:!MD5").unwrap();
        let warning = spec.warning().unwrap();
        assert!(warning.contains("HIGH:!aNULL:!MD5"), "{warning}");
        assert_eq!(CipherSpec::parse("").unwrap().warning(), None);
        assert_eq!(CipherSpec::default().warning(), None);
    }

    #[test]
    fn suite_names_map_in_every_spelling() {
        let spec = CipherSpec::parse("TLS13_AES_128_GCM_SHA256").unwrap();
        // TLS 1.3 limited to the one named; TLS 1.2 keeps all of its suites.
        assert_eq!(spec.suites[0], CipherSuite::TLS13_AES_128_GCM_SHA256);
        assert!(!spec.suites.contains(&CipherSuite::TLS13_AES_256_GCM_SHA384));
        assert_eq!(spec.suites.len(), 1 + 6);
        assert!(spec.ignored.is_empty());

        let iana = CipherSpec::parse("TLS_AES_128_GCM_SHA256:tls_chacha20_poly1305_sha256").unwrap();
        assert_eq!(
            &iana.suites[..2],
            [CipherSuite::TLS13_AES_128_GCM_SHA256, CipherSuite::TLS13_CHACHA20_POLY1305_SHA256]
        );

        let openssl = CipherSpec::parse("ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256").unwrap();
        assert_eq!(
            openssl.suites,
            [
                &TLS13[..],
                &[
                    CipherSuite::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
                    CipherSuite::TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256
                ]
            ]
            .concat()
        );
        let rustls_name = CipherSpec::parse("TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384").unwrap();
        assert_eq!(rustls_name.suites.last(), Some(&CipherSuite::TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384));
    }

    #[test]
    fn exclusions_of_known_suites_are_honoured() {
        let spec = CipherSpec::parse("DEFAULT:!TLS_CHACHA20_POLY1305_SHA256:!ECDHE-RSA-CHACHA20-POLY1305").unwrap();
        assert_eq!(spec.suites.len(), 9 - 2);
        assert!(!spec.suites.contains(&CipherSuite::TLS13_CHACHA20_POLY1305_SHA256));
        assert_eq!(spec.ignored, ["DEFAULT"]);
        let e = CipherSpec::parse("TLS_AES_128_GCM_SHA256:!TLS_AES_128_GCM_SHA256:!TLS_AES_256_GCM_SHA384:!TLS_CHACHA20_POLY1305_SHA256:!ECDHE-ECDSA-AES256-GCM-SHA384:!ECDHE-ECDSA-AES128-GCM-SHA256:!ECDHE-ECDSA-CHACHA20-POLY1305:!ECDHE-RSA-AES256-GCM-SHA384:!ECDHE-RSA-AES128-GCM-SHA256:!ECDHE-RSA-CHACHA20-POLY1305");
        assert!(e.unwrap_err().contains("excludes every"));
    }

    #[test]
    fn suites_rustls_lacks_are_refused() {
        for bad in ["RC4-SHA", "DES-CBC3-SHA", "HIGH:AES128-SHA", "ECDHE-RSA-AES128-SHA", "NOT-A-SUITE", "HIGH+NOPE"] {
            let e = CipherSpec::parse(bad).unwrap_err();
            assert!(e.contains("not a cipher suite rustls implements"), "{bad}: {e}");
            assert!(e.contains("TLS_AES_128_GCM_SHA256"), "the message lists what is offered: {e}");
        }
    }
}
