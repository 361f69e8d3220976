//! `sparkbrain status`: is a daemon running on the configured data directory, where, is it ready.

use std::sync::Arc;
use std::time::Duration;

use anyhow::bail;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};
use serde_json::json;

use super::load;
use crate::config::FileChoice;
use crate::daemon::tls;
use crate::store::{lock_holder, peek_schema_version};

/// Arguments of `status`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Print JSON
    #[arg(long)]
    json: bool,
}

/// Prints the status; fails (exit 1) when no daemon runs or it is not ready.
pub fn run(file: &FileChoice, args: Args) -> anyhow::Result<()> {
    let config = load(file)?.config;
    let holder = lock_holder(&config.data_dir);
    let pid = holder.as_ref().map(|h| h.pid);
    // The running daemon's own record beats the configuration, which flags may have overridden.
    let configured = format!(
        "{}://{}",
        if config.uses_tls() { "https" } else { "http" },
        config.bind_addr()
    );
    let url = holder.and_then(|h| h.url).unwrap_or(configured);
    let tls = url.starts_with("https://");
    let fingerprint = tls
        .then(|| {
            let (cert, _) = tls::paths(&config);
            tls::read_certs(&cert).map(|c| tls::fingerprint(&c[0]))
        })
        .transpose();
    let (fingerprint, fingerprint_error) = match fingerprint {
        Ok(f) => (f, None),
        Err(e) => (None, Some(e.to_string())),
    };
    let schema = peek_schema_version(&config.data_dir).ok().flatten();
    let probe = pid.map(|_| probe_ready(&url, fingerprint.as_deref()));
    let (ready, reasons) = match &probe {
        Some(Ok((ready, reasons))) => (Some(*ready), reasons.clone()),
        Some(Err(e)) => (Some(false), vec![format!("cannot reach the daemon: {e:#}")]),
        None => (None, Vec::new()),
    };
    if args.json {
        let out = json!({
            "running": pid.is_some(),
            "pid": pid,
            "url": url,
            "data_dir": config.data_dir,
            "schema_version": schema,
            "tls_sha256_fingerprint": fingerprint,
            "ready": ready,
            "reasons": reasons,
        });
        println!("{}", serde_json::to_string_pretty(&out)?);
    } else {
        match pid {
            Some(p) => println!("daemon:       running (PID {p})"),
            None => println!("daemon:       not running"),
        }
        println!("address:      {url}");
        println!("data dir:     {}", config.data_dir.display());
        match schema {
            Some(v) => println!("schema:       version {v}"),
            None => println!("schema:       no database yet"),
        }
        match (&fingerprint, &fingerprint_error) {
            (Some(f), _) => println!("TLS 1.3:      SHA-256 {f}"),
            (None, Some(e)) => println!("TLS 1.3:      certificate not readable: {e}"),
            (None, None) => println!("TLS:          off (loopback address)"),
        }
        match ready {
            Some(true) => println!("ready:        yes"),
            Some(false) => {
                println!("ready:        no");
                for r in &reasons {
                    println!("  - {r}");
                }
            }
            None => {}
        }
    }
    match (pid, ready) {
        (None, _) => bail!(
            "no sparkbrain daemon is running on {}",
            config.data_dir.display()
        ),
        (Some(_), Some(false)) => bail!("the daemon is running but not ready"),
        _ => Ok(()),
    }
}

/// Asks the running daemon at `url` for `/readyz`; over TLS the certificate is pinned to the
/// one on disk. A wildcard address is reached through loopback.
fn probe_ready(url: &str, fingerprint: Option<&str>) -> anyhow::Result<(bool, Vec<String>)> {
    let (scheme, authority) = url
        .split_once("://")
        .ok_or_else(|| anyhow::anyhow!("the lock file holds a malformed address {url:?}"))?;
    let mut addr: std::net::SocketAddr = authority
        .parse()
        .map_err(|_| anyhow::anyhow!("the lock file holds a malformed address {url:?}"))?;
    if addr.ip().is_unspecified() {
        addr.set_ip(if addr.is_ipv4() {
            std::net::Ipv4Addr::LOCALHOST.into()
        } else {
            std::net::Ipv6Addr::LOCALHOST.into()
        });
    }
    let mut builder = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .no_proxy();
    if scheme == "https" {
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
    let url = format!("{scheme}://{addr}/readyz");
    let client = builder.build()?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async {
        let resp = client.get(&url).send().await?;
        let ok = resp.status().is_success();
        let body: serde_json::Value = resp.json().await?;
        let reasons = body["reasons"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|r| r.as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default();
        Ok((ok, reasons))
    })
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
