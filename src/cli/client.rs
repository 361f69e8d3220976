//! Talking to a running daemon over HTTP, as `status`, `ingest` and `search` do: where it
//! listens (the data directory's lock records it), TLS pinned to the certificate on disk, and
//! the API key that authenticates the caller.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};

use crate::config::Config;
use crate::daemon::tls;
use crate::store::{lock_holder, published_holder};

/// systemd's runtime directory of sparkbrain.service (`RuntimeDirectory=sparkbrain`).
pub const RUNTIME_DIR: &str = "/run/sparkbrain";

use crate::config::API_KEY_ENV;

/// Where the local daemon listens.
pub struct Endpoint {
    /// Its PID, when one runs on the configured data directory.
    pub pid: Option<u32>,
    /// Its base URL.
    pub url: String,
    /// SHA-256 of its TLS certificate, when it serves TLS.
    pub fingerprint: Option<String>,
    /// Why the certificate could not be read.
    pub fingerprint_error: Option<String>,
}

/// Finds the daemon of this configuration: the running daemon's own record beats the
/// configuration, which flags may have overridden.
pub fn local_endpoint(config: &Config) -> Endpoint {
    let holder = lock_holder(&config.data_dir)
        .or_else(|| published_holder(Path::new(RUNTIME_DIR), &config.data_dir));
    let pid = holder.as_ref().map(|h| h.pid);
    let configured = format!(
        "{}://{}",
        if config.uses_tls() { "https" } else { "http" },
        config.bind_addr()
    );
    let url = holder.and_then(|h| h.url).unwrap_or(configured);
    let fingerprint = url
        .starts_with("https://")
        .then(|| {
            let (cert, _) = tls::paths(config);
            tls::read_certs(&cert).map(|c| tls::fingerprint(&c[0]))
        })
        .transpose();
    let (fingerprint, fingerprint_error) = match fingerprint {
        Ok(f) => (f, None),
        Err(e) => (None, Some(e.to_string())),
    };
    Endpoint {
        pid,
        url,
        fingerprint,
        fingerprint_error,
    }
}

/// The URL with a wildcard listen address replaced by loopback.
pub fn reachable(url: &str) -> anyhow::Result<String> {
    let (scheme, authority) = url
        .split_once("://")
        .ok_or_else(|| anyhow::anyhow!("malformed daemon address {url:?}"))?;
    let Ok(mut addr) = authority
        .trim_end_matches('/')
        .parse::<std::net::SocketAddr>()
    else {
        return Ok(url.trim_end_matches('/').to_string());
    };
    if addr.ip().is_unspecified() {
        addr.set_ip(if addr.is_ipv4() {
            std::net::Ipv4Addr::LOCALHOST.into()
        } else {
            std::net::Ipv6Addr::LOCALHOST.into()
        });
    }
    Ok(format!("{scheme}://{addr}"))
}

/// An HTTP client for `url`; over TLS with a fingerprint, the certificate is pinned to it.
pub fn http_client(url: &str, fingerprint: Option<&str>) -> anyhow::Result<reqwest::Client> {
    let mut builder = reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(5))
        .no_proxy();
    if url.starts_with("https://") {
        let Some(fp) = fingerprint else {
            bail!("the TLS certificate is not readable, so the daemon cannot be verified");
        };
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let tls = rustls::ClientConfig::builder_with_provider(provider.clone())
            .with_protocol_versions(&[&rustls::version::TLS13])?
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(Pinned {
                fingerprint: fp.to_string(),
                provider,
            }))
            .with_no_client_auth();
        builder = builder.use_preconfigured_tls(tls);
    }
    Ok(builder.build()?)
}

/// A daemon reached with an API key.
pub struct Daemon {
    /// The HTTP client.
    pub client: reqwest::Client,
    /// Base URL, without a trailing slash.
    pub base: String,
    key: String,
}

impl Daemon {
    /// Connects to the local daemon of `config` with the key from [`API_KEY_ENV`].
    pub fn connect(config: &Config) -> anyhow::Result<Daemon> {
        let key = std::env::var(API_KEY_ENV).map_err(|_| {
            anyhow::anyhow!(
                "set {API_KEY_ENV} to an API key (create one with POST /api/v1/keys, or in the console)"
            )
        })?;
        Daemon::connect_with(config, key)
    }

    /// Connects for the backup routes: with [`API_KEY_ENV`] when set, else with the daemon's
    /// local token, which root on the box can read.
    pub fn connect_for_backups(config: &Config) -> anyhow::Result<Daemon> {
        if let Ok(key) = std::env::var(API_KEY_ENV) {
            return Daemon::connect_with(config, key);
        }
        let path = config.data_dir.join(crate::auth::LOCAL_TOKEN_FILE);
        let runtime = Path::new(RUNTIME_DIR).join(crate::auth::LOCAL_TOKEN_RUNTIME_FILE);
        // The runtime directory first: under systemd it is the running daemon's, while the data
        // directory the host sees may be a stale folder under a volume mounted elsewhere.
        let key = std::fs::read_to_string(&runtime).or_else(|_| std::fs::read_to_string(&path)).map_err(|e| {
            anyhow::anyhow!(
                "cannot read the daemon's local token {} ({e}): run this as root, or set {API_KEY_ENV} to an admin's API key",
                path.display()
            )
        })?;
        Daemon::connect_with(config, key)
    }

    fn connect_with(config: &Config, key: String) -> anyhow::Result<Daemon> {
        let endpoint = local_endpoint(config);
        if endpoint.pid.is_none() {
            bail!(
                "no sparkbrain daemon is running on {}",
                config.data_dir.display()
            );
        }
        Ok(Daemon {
            client: http_client(&endpoint.url, endpoint.fingerprint.as_deref())?,
            base: reachable(&endpoint.url)?,
            key: key.trim().to_string(),
        })
    }

    /// A request to `path` (starting with `/`), authenticated.
    pub fn request(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        self.client
            .request(method, format!("{}{path}", self.base))
            .bearer_auth(&self.key)
    }
}

/// Reads a JSON answer, turning a problem+json answer into an error with its detail.
pub async fn answer<T: serde::de::DeserializeOwned>(resp: reqwest::Response) -> anyhow::Result<T> {
    let status = resp.status();
    if status.is_success() {
        return resp
            .json()
            .await
            .context("the daemon's answer is not the JSON expected");
    }
    let body: serde_json::Value = resp.json().await.unwrap_or_default();
    let detail = body["detail"].as_str().unwrap_or("no detail given");
    bail!("{status}: {detail}")
}

/// Accepts exactly the certificate with the given SHA-256 fingerprint.
#[derive(Debug)]
struct Pinned {
    fingerprint: String,
    provider: Arc<rustls::crypto::CryptoProvider>,
}

impl ServerCertVerifier for Pinned {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        if tls::fingerprint(end_entity) == self.fingerprint {
            Ok(ServerCertVerified::assertion())
        } else {
            Err(rustls::Error::General(
                "the daemon's certificate is not the one in the data directory".into(),
            ))
        }
    }

    fn verify_tls12_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Err(rustls::Error::General("TLS 1.2 is not used".into()))
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}
