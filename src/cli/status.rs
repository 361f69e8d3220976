//! `sparkbrain status`: is a daemon running on the configured data directory, where, is it ready.

use anyhow::bail;
use serde_json::json;

use super::client::{self, Endpoint};
use super::load;
use crate::config::FileChoice;
use crate::store::peek_schema_version;
use crate::volume::DataVolume;

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
    let Endpoint {
        pid,
        url,
        fingerprint,
        fingerprint_error,
    } = client::local_endpoint(&config);
    let state = crate::volume::Volumes::new(&config).data_state();
    let volume = match &state {
        DataVolume::NotRequired => None,
        DataVolume::Ready => Some(format!("{:?} unlocked", config.volume.data)),
        DataVolume::Locked(why) => Some(why.clone()),
    };
    let schema = peek_schema_version(&config.data_dir).ok().flatten();
    let probe = pid.map(|_| probe_ready(&url, fingerprint.as_deref()));
    let (ready, reasons, gpus) = match &probe {
        Some(Ok(p)) => (Some(p.ready), p.reasons.clone(), p.gpus.clone()),
        Some(Err(e)) => (
            Some(false),
            vec![format!("cannot reach the daemon: {e:#}")],
            None,
        ),
        None => (None, Vec::new(), None),
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
            "gpus": gpus,
            "volume": volume,
        });
        println!("{}", serde_json::to_string_pretty(&out)?);
    } else {
        match pid {
            Some(p) => println!("daemon:       running (PID {p})"),
            None => println!("daemon:       not running"),
        }
        println!("address:      {url}");
        println!("data dir:     {}", config.data_dir.display());
        if let Some(v) = &volume {
            println!("volume:       {v}");
        }
        match schema {
            Some(v) => println!("schema:       version {v}"),
            None => println!("schema:       no database yet"),
        }
        match (&fingerprint, &fingerprint_error) {
            (Some(f), _) => println!("TLS 1.3:      SHA-256 {f}"),
            (None, Some(e)) => println!("TLS 1.3:      certificate not readable: {e}"),
            (None, None) => println!("TLS:          off (loopback address)"),
        }
        if let Some(g) = &gpus {
            println!("GPUs:         {g}");
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
        (None, _) if matches!(state, DataVolume::Locked(_)) => bail!(
            "no daemon holds {}: the data volume is locked (a running daemon waits for `sparkbrain volume unlock {}` or an unlock over the API)",
            config.data_dir.display(),
            config.volume.data
        ),
        (None, _) => bail!(
            "no sparkbrain daemon is running on {}",
            config.data_dir.display()
        ),
        (Some(_), Some(false)) => bail!("the daemon is running but not ready"),
        _ => Ok(()),
    }
}

/// What `/readyz` said.
struct Probe {
    ready: bool,
    reasons: Vec<String>,
    /// The GPU check's detail (CPU-only and why, or the GPUs and their health).
    gpus: Option<String>,
}

/// Asks the running daemon at `url` for `/readyz`.
fn probe_ready(url: &str, fingerprint: Option<&str>) -> anyhow::Result<Probe> {
    let client = client::http_client(url, fingerprint)?;
    let url = format!("{}/readyz", client::reachable(url)?);
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
        let gpus = body["checks"].as_array().and_then(|checks| {
            checks
                .iter()
                .find(|c| c["name"] == "gpus")
                .and_then(|c| c["detail"].as_str().map(str::to_string))
        });
        Ok(Probe {
            ready: ok,
            reasons,
            gpus,
        })
    })
}
