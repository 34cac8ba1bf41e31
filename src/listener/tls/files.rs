//! Reading PEM files: certificate chains, private keys (PKCS#8, PKCS#1, SEC1) and CA
//! bundles, with errors that name the file and say what is wrong with it.
//!
//! Files are read whole with `std::fs::read` first, so that a missing or unreadable file is
//! an I/O error of its own, then parsed with `rustls-pki-types`' PEM reader.

use std::path::Path;

use rustls::crypto::CryptoProvider;
use rustls::sign::CertifiedKey;
use rustls::{InconsistentKeys, RootCertStore};
use rustls_pki_types::pem::{self, PemObject};
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

use super::spec::CertFiles;
use super::TlsError;

/// Reads a certificate chain and its key, and checks that they belong together.
pub(super) fn certified_key(files: &CertFiles, provider: &CryptoProvider) -> Result<CertifiedKey, TlsError> {
    let chain = cert_chain(&files.cert)?;
    let key = private_key(&files.key)?;
    let signer = provider
        .key_provider
        .load_private_key(key)
        .map_err(|source| TlsError::BadKey { path: files.key.clone(), source })?;
    let certified = CertifiedKey::new(chain, signer);
    match certified.keys_match() {
        // `Unknown`: the key type cannot tell its public key; nothing to compare.
        Ok(()) | Err(rustls::Error::InconsistentKeys(InconsistentKeys::Unknown)) => Ok(certified),
        Err(rustls::Error::InconsistentKeys(InconsistentKeys::KeyMismatch)) => {
            Err(TlsError::KeyMismatch { cert: files.cert.clone(), key: files.key.clone() })
        }
        Err(source) => Err(TlsError::BadCertificate { path: files.cert.clone(), source }),
    }
}

/// Every certificate in a PEM file, in order; at least one.
pub(super) fn cert_chain(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let bytes = read(path)?;
    let chain = CertificateDer::pem_slice_iter(&bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|source| TlsError::Pem { path: path.to_owned(), source })?;
    if chain.is_empty() {
        return Err(TlsError::NoCertificate { path: path.to_owned() });
    }
    Ok(chain)
}

/// The first private key in a PEM file, whichever of the three formats it is in.
pub(super) fn private_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    let bytes = read(path)?;
    PrivateKeyDer::from_pem_slice(&bytes).map_err(|e| match e {
        pem::Error::NoItemsFound => TlsError::NoKey { path: path.to_owned() },
        source => TlsError::Pem { path: path.to_owned(), source },
    })
}

/// The CA certificates of a PEM file, as trust anchors for client certificates.
pub(super) fn client_roots(path: &Path) -> Result<RootCertStore, TlsError> {
    let mut roots = RootCertStore::empty();
    for cert in cert_chain(path)? {
        roots.add(cert).map_err(|source| TlsError::BadCertificate { path: path.to_owned(), source })?;
    }
    Ok(roots)
}

fn read(path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read { path: path.to_owned(), source })
}

#[cfg(test)]
mod tests {
    use std::error::Error as _;
    use std::path::PathBuf;

    use rustls::crypto::ring::default_provider;

    use super::*;

    fn cert_dir(name: &str) -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("certs").join(name)
    }

    fn files(cert: &str, key: &str) -> CertFiles {
        CertFiles { cert: cert_dir(cert), key: cert_dir(key) }
    }

    #[test]
    fn each_key_format_loads() {
        let provider = default_provider();
        for (cert, key, first_line) in [
            ("localhost.pem", "localhost-key.pem", "-----BEGIN PRIVATE KEY-----"),
            ("localhost.pem", "localhost-sec1-key.pem", "-----BEGIN EC PRIVATE KEY-----"),
            ("other.pem", "other-key.pem", "-----BEGIN RSA PRIVATE KEY-----"),
            ("client.pem", "client-key.pem", "-----BEGIN PRIVATE KEY-----"),
        ] {
            let text = std::fs::read_to_string(cert_dir(key)).unwrap();
            assert!(text.starts_with(first_line), "{key} is in the format the test means");
            let ck = certified_key(&files(cert, key), &provider).unwrap_or_else(|e| panic!("{cert} + {key}: {e}"));
            assert_eq!(ck.cert.len(), 1);
        }
        let kinds: Vec<_> = ["localhost-key.pem", "localhost-sec1-key.pem", "other-key.pem"]
            .iter()
            .map(|k| std::mem::discriminant(&private_key(&cert_dir(k)).unwrap()))
            .collect();
        assert!(
            kinds[0] != kinds[1] && kinds[1] != kinds[2] && kinds[0] != kinds[2],
            "PKCS#8, SEC1 and PKCS#1 all exercised"
        );
    }

    #[test]
    fn mismatched_key_names_both_files() {
        let e = certified_key(&files("localhost.pem", "client-key.pem"), &default_provider()).unwrap_err();
        assert!(matches!(e, TlsError::KeyMismatch { .. }), "{e:?}");
        let msg = e.to_string();
        assert!(
            msg.contains("localhost.pem") && msg.contains("client-key.pem") && msg.contains("does not match"),
            "{msg}"
        );
        // A key of another type (RSA for an EC certificate) is a mismatch too.
        let e = certified_key(&files("localhost.pem", "other-key.pem"), &default_provider()).unwrap_err();
        assert!(matches!(e, TlsError::KeyMismatch { .. }), "{e:?}");
    }

    #[test]
    fn missing_file_names_it_and_keeps_the_io_error() {
        let e = certified_key(&files("nonexistent.pem", "localhost-key.pem"), &default_provider()).unwrap_err();
        assert!(e.to_string().contains("nonexistent.pem"), "{e}");
        let io = e.source().and_then(|s| s.downcast_ref::<std::io::Error>()).expect("io::Error as source");
        assert_eq!(io.kind(), std::io::ErrorKind::NotFound);
        let e = certified_key(&files("localhost.pem", "nonexistent-key.pem"), &default_provider()).unwrap_err();
        assert!(e.to_string().contains("nonexistent-key.pem"), "{e}");
    }

    #[test]
    fn files_swapped_or_garbage_say_what_is_missing() {
        // Key and certificate given the wrong way round.
        let e = certified_key(&files("localhost-key.pem", "localhost.pem"), &default_provider()).unwrap_err();
        assert!(matches!(e, TlsError::NoCertificate { .. }), "{e:?}");
        assert!(e.to_string().contains("localhost-key.pem") && e.to_string().contains("no certificate"), "{e}");
        let e = private_key(&cert_dir("localhost.pem")).unwrap_err();
        assert!(matches!(e, TlsError::NoKey { .. }), "{e:?}");
        assert!(e.to_string().contains("localhost.pem") && e.to_string().contains("no private key"), "{e}");

        let dir = tempfile::tempdir().unwrap();
        let garbage = dir.path().join("garbage.pem");
        std::fs::write(&garbage, "this is not PEM at all\n").unwrap();
        assert!(matches!(cert_chain(&garbage), Err(TlsError::NoCertificate { .. })));
        let broken = dir.path().join("broken.pem");
        std::fs::write(&broken, "-----BEGIN CERTIFICATE-----\nMIIB\n").unwrap();
        let e = cert_chain(&broken).unwrap_err();
        assert!(matches!(e, TlsError::Pem { .. }), "{e:?}");
        assert!(e.to_string().contains("broken.pem"), "{e}");
        // A well-formed PEM section whose content is not a certificate.
        let fake = dir.path().join("fake.pem");
        std::fs::write(&fake, "-----BEGIN CERTIFICATE-----\naGVsbG8gd29ybGQ=\n-----END CERTIFICATE-----\n").unwrap();
        let e = certified_key(&CertFiles { cert: fake, key: cert_dir("localhost-key.pem") }, &default_provider())
            .unwrap_err();
        assert!(matches!(e, TlsError::BadCertificate { .. }), "{e:?}");
    }

    #[test]
    fn client_roots_load_the_ca() {
        assert_eq!(client_roots(&cert_dir("ca.pem")).unwrap().len(), 1);
        assert!(matches!(client_roots(&cert_dir("ca-key.pem")), Err(TlsError::NoCertificate { .. })));
    }
}
