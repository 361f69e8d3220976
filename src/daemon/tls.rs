//! TLS 1.3 for non-loopback listeners: a configured certificate, or a self-signed one generated
//! on first start and kept in the data directory.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use sha2::{Digest, Sha256};

use crate::config::Config;

/// TLS setup errors.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A file could not be read or written.
    #[error("{what} {}: {source}", path.display())]
    Io {
        /// What was being done.
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// The PEM content is not usable.
    #[error("{}: {message}", path.display())]
    Pem {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// Generating or configuring failed.
    #[error("{0}")]
    Setup(String),
}

/// A ready server configuration and the certificate's fingerprint.
pub struct TlsSetup {
    /// The rustls configuration (TLS 1.3 only, ALPN h2 and http/1.1).
    pub config: Arc<rustls::ServerConfig>,
    /// SHA-256 fingerprint of the leaf certificate, `AA:BB:…`.
    pub fingerprint: String,
    /// Where the certificate lives.
    pub certificate: PathBuf,
}

/// The certificate and key paths the configuration points at (generated ones by default).
pub fn paths(config: &Config) -> (PathBuf, PathBuf) {
    if config.tls.certificate.is_empty() {
        // With a data volume the certificate must exist before it is unlocked, and nothing
        // may be written under the (unmounted) data directory: keep it with the keys.
        let dir = if config.volume.required() {
            config.volume.keys_dir.join("tls")
        } else {
            config.data_dir.join("tls")
        };
        (dir.join("cert.pem"), dir.join("key.pem"))
    } else {
        (
            PathBuf::from(&config.tls.certificate),
            PathBuf::from(&config.tls.private_key),
        )
    }
}

/// Loads the configured certificate, or the generated one, generating it if absent.
pub fn setup(config: &Config) -> Result<TlsSetup, TlsError> {
    let (cert_path, key_path) = paths(config);
    if config.tls.certificate.is_empty() && !cert_path.exists() {
        generate(&cert_path, &key_path, config)?;
    }
    let certs = read_certs(&cert_path)?;
    let key = read_key(&key_path)?;
    let fingerprint = fingerprint(&certs[0]);
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut server = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| TlsError::Setup(e.to_string()))?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| TlsError::Pem {
            path: key_path.clone(),
            message: format!("the key does not fit the certificate: {e}"),
        })?;
    server.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(TlsSetup {
        config: Arc::new(server),
        fingerprint,
        certificate: cert_path,
    })
}

/// SHA-256 fingerprint of a DER certificate, as colon-separated upper-case hex.
pub fn fingerprint(der: &[u8]) -> String {
    Sha256::digest(der)
        .iter()
        .map(|b| format!("{b:02X}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// Reads the leaf certificate of a PEM file.
pub fn read_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let data = std::fs::read(path).map_err(|source| TlsError::Io {
        what: "cannot read certificate",
        path: path.to_path_buf(),
        source,
    })?;
    let certs = rustls_pemfile::certs(&mut data.as_slice())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TlsError::Pem {
            path: path.to_path_buf(),
            message: format!("not a PEM certificate: {e}"),
        })?;
    if certs.is_empty() {
        return Err(TlsError::Pem {
            path: path.to_path_buf(),
            message: "no certificate in the file".into(),
        });
    }
    Ok(certs)
}

fn read_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    let data = std::fs::read(path).map_err(|source| TlsError::Io {
        what: "cannot read private key",
        path: path.to_path_buf(),
        source,
    })?;
    rustls_pemfile::private_key(&mut data.as_slice())
        .map_err(|e| TlsError::Pem {
            path: path.to_path_buf(),
            message: format!("not a PEM private key: {e}"),
        })?
        .ok_or_else(|| TlsError::Pem {
            path: path.to_path_buf(),
            message: "no private key in the file".into(),
        })
}

fn generate(cert_path: &Path, key_path: &Path, config: &Config) -> Result<(), TlsError> {
    let host = nix::unistd::gethostname()
        .ok()
        .and_then(|h| h.into_string().ok())
        .unwrap_or_else(|| "localhost".to_string());
    let mut names = vec![
        "localhost".to_string(),
        "127.0.0.1".to_string(),
        "::1".to_string(),
    ];
    if host != "localhost" {
        names.push(host.clone());
    }
    let ip = config.bind_addr().ip();
    if !ip.is_unspecified() {
        names.push(ip.to_string());
    }
    let mut params =
        rcgen::CertificateParams::new(names).map_err(|e| TlsError::Setup(e.to_string()))?;
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, format!("sparkbrain on {host}"));
    let year = current_year();
    params.not_before = rcgen::date_time_ymd(year, 1, 1);
    params.not_after = rcgen::date_time_ymd(year + 10, 1, 1);
    let key = rcgen::KeyPair::generate().map_err(|e| TlsError::Setup(e.to_string()))?;
    let cert = params
        .self_signed(&key)
        .map_err(|e| TlsError::Setup(e.to_string()))?;
    write_private(key_path, key.serialize_pem().as_bytes())?;
    write_private(cert_path, cert.pem().as_bytes())?;
    tracing::info!(certificate = %cert_path.display(), "generated a self-signed TLS certificate");
    Ok(())
}

fn current_year() -> i32 {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    // Mean Gregorian year; exact enough to pick January 1st of this year or the last.
    1970 + (secs / 31_556_952) as i32
}

/// Writes a file readable by the owner only, atomically.
fn write_private(path: &Path, data: &[u8]) -> Result<(), TlsError> {
    crate::store::write_private(path, data).map_err(|source| TlsError::Io {
        what: "cannot write",
        path: path.to_path_buf(),
        source,
    })
}
