//! `sparkbrain doctor`: a checklist of what the daemon needs, with what to do about each failure.

use std::path::Path;

use anyhow::bail;
use serde::Serialize;

use super::load;
use crate::config::{Config, FileChoice};
use crate::daemon::tls;
use crate::inference::{
    Provider, Runtime, SessionSpec, TensorRtOptions, check_model_files, file_sha256,
};
use crate::store::{SCHEMA_VERSION, lock_holder, peek_schema_version};

/// Free space below which the data directory is a warning, and below which it fails.
const WARN_FREE_BYTES: u64 = 10 << 30;
const FAIL_FREE_BYTES: u64 = 1 << 30;

/// Arguments of `doctor`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Print JSON
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Serialize, PartialEq, Eq, Clone, Copy)]
#[serde(rename_all = "lowercase")]
enum Level {
    Ok,
    Warn,
    Fail,
}

#[derive(Debug, Serialize)]
struct Item {
    check: &'static str,
    level: Level,
    detail: String,
}

/// Runs every check; exits non-zero when any fails.
pub fn run(file: &FileChoice, args: Args) -> anyhow::Result<()> {
    let loaded = load(file)?;
    let config = &loaded.config;
    let mut items = vec![Item {
        check: "configuration",
        level: Level::Ok,
        detail: loaded.file.as_ref().map_or_else(
            || "built-in default".into(),
            |p| format!("{} is valid", p.display()),
        ),
    }];
    items.push(volume(config));
    items.push(data_dir(&config.data_dir));
    items.push(disk(&config.data_dir));
    items.push(database(config));
    items.extend(runtime(config));
    items.push(certificate(config));
    items.push(gpus(config));
    items.push(host_services(config));

    if args.json {
        println!("{}", serde_json::to_string_pretty(&items)?);
    } else {
        for item in &items {
            let mark = match item.level {
                Level::Ok => "[ ok ]",
                Level::Warn => "[warn]",
                Level::Fail => "[FAIL]",
            };
            println!("{mark} {:<16} {}", item.check, item.detail);
        }
    }
    let failed = items.iter().filter(|i| i.level == Level::Fail).count();
    if failed > 0 {
        bail!("{failed} check(s) failed");
    }
    Ok(())
}

/// The data volume: configured, unlocked, holding the data directory; TPM2 offered if present.
fn volume(config: &Config) -> Item {
    use crate::volume::{DataVolume, Volumes};
    let volumes = Volumes::new(config);
    let tpm = if Volumes::tpm2_available() {
        "; this box has a TPM2: `sparkbrain volume key add NAME --tpm2` unlocks without a passphrase"
    } else {
        ""
    };
    match volumes.data_state() {
        DataVolume::NotRequired => item(
            "volume",
            Level::Warn,
            format!(
                "no data volume: {} is not encrypted by sparkbrain (create one with `sparkbrain volume create DEVICE --name data` and set [volume] data){tpm}",
                config.data_dir.display()
            ),
        ),
        DataVolume::Ready => item(
            "volume",
            Level::Ok,
            format!(
                "data volume {:?} is unlocked and holds {}{tpm}",
                config.volume.data,
                config.data_dir.display()
            ),
        ),
        DataVolume::Locked(why) => item(
            "volume",
            Level::Warn,
            format!(
                "{why}; the daemon waits for `sparkbrain volume unlock {}` or an unlock over the API{tpm}",
                config.volume.data
            ),
        ),
    }
}

/// Opens NVML as the daemon would: CPU-only is a warning, not a failure.
fn gpus(config: &Config) -> Item {
    if !config.gpu.enabled {
        return item(
            "gpus",
            Level::Ok,
            "GPU supervision is off ([gpu] enabled = false): CPU-only",
        );
    }
    let library =
        (!config.gpu.nvml_library.is_empty()).then(|| Path::new(&config.gpu.nvml_library));
    match crate::gpu::nvml::Nvml::open(library) {
        Err(e) => item("gpus", Level::Warn, format!("CPU-only: {e}")),
        Ok(nvml) => match nvml.inventory() {
            Ok(gpus) => {
                let driver = nvml.driver();
                let names: Vec<String> = gpus
                    .iter()
                    .map(|g| format!("{} {}", g.index, g.name))
                    .collect();
                item(
                    "gpus",
                    Level::Ok,
                    format!(
                        "{} GPUs (driver {}, CUDA {}): {}",
                        gpus.len(),
                        driver.driver_version,
                        driver.cuda_driver_version,
                        names.join(", ")
                    ),
                )
            }
            Err(e) => item(
                "gpus",
                Level::Fail,
                format!("NVML loaded but cannot list the GPUs: {e}"),
            ),
        },
    }
}

/// Reads the host services the GPUs depend on from systemd, once.
fn host_services(config: &Config) -> Item {
    use crate::gpu::host_services::{BusStatus, HostServices, fold};
    let read = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map(|rt| {
            rt.block_on(async {
                let watcher = HostServices::start(&config.gpu, |_| {}).await;
                let snapshot = watcher.snapshot();
                watcher.stop();
                snapshot
            })
        });
    let (bus, units) = match read {
        Ok(s) => s,
        Err(e) => return item("host services", Level::Warn, format!("cannot check: {e}")),
    };
    match bus {
        BusStatus::Off => item(
            "host services",
            Level::Ok,
            "not watched (gpu.system_bus = \"off\")",
        ),
        BusStatus::Unavailable(why) => item(
            "host services",
            Level::Warn,
            format!("system bus unavailable: {why}"),
        ),
        BusStatus::Connected => {
            let listed: Vec<String> = units
                .iter()
                .map(|u| format!("{} {}", u.unit, u.state.as_str()))
                .collect();
            let degrading = fold(&units);
            if degrading.is_empty() {
                item("host services", Level::Ok, listed.join(", "))
            } else {
                item("host services", Level::Fail, degrading.join("; "))
            }
        }
    }
}

fn item(check: &'static str, level: Level, detail: impl Into<String>) -> Item {
    Item {
        check,
        level,
        detail: detail.into(),
    }
}

fn data_dir(dir: &Path) -> Item {
    if !dir.exists() {
        return item(
            "data directory",
            Level::Warn,
            format!("{} does not exist yet; `serve` creates it", dir.display()),
        );
    }
    match tempfile::tempfile_in(dir) {
        Ok(_) => {
            let running = lock_holder(dir).map(|h| h.pid).map_or_else(
                || "no daemon running".into(),
                |p| format!("daemon running (PID {p})"),
            );
            item(
                "data directory",
                Level::Ok,
                format!("{} is writable; {running}", dir.display()),
            )
        }
        Err(e) => item(
            "data directory",
            Level::Fail,
            format!(
                "{} is not writable: {e} (run as root or the sparkbrain user)",
                dir.display()
            ),
        ),
    }
}

fn disk(dir: &Path) -> Item {
    match crate::store::disk_space(dir) {
        Ok(space) => {
            let free = space.available_bytes;
            let gib = free as f64 / (1u64 << 30) as f64;
            let level = if free < FAIL_FREE_BYTES {
                Level::Fail
            } else if free < WARN_FREE_BYTES {
                Level::Warn
            } else {
                Level::Ok
            };
            item(
                "free disk",
                level,
                format!("{gib:.1} GiB free at {}", space.path.display()),
            )
        }
        Err(e) => item("free disk", Level::Warn, e),
    }
}

fn database(config: &Config) -> Item {
    match peek_schema_version(&config.data_dir) {
        Ok(None) => item("database", Level::Ok, "not created yet; `serve` creates it"),
        Ok(Some(v)) if v > SCHEMA_VERSION => item(
            "database",
            Level::Fail,
            format!(
                "schema version {v} is newer than this binary knows ({SCHEMA_VERSION}); upgrade sparkbrain"
            ),
        ),
        Ok(Some(v)) if v < SCHEMA_VERSION => item(
            "database",
            Level::Ok,
            format!("schema version {v}; `serve` will migrate it to {SCHEMA_VERSION}"),
        ),
        Ok(Some(v)) => item("database", Level::Ok, format!("schema version {v}")),
        Err(e) => item("database", Level::Fail, e.to_string()),
    }
}

fn runtime(config: &Config) -> Vec<Item> {
    let mut items = Vec::new();
    let runtime = match Runtime::load(&config.runtime) {
        Ok(rt) => {
            let p = rt.providers();
            let mut names = Vec::new();
            if p.tensorrt {
                names.push("TensorRT");
            }
            if p.cuda {
                names.push("CUDA");
            }
            if p.cpu {
                names.push("CPU");
            }
            items.push(item(
                "onnx runtime",
                Level::Ok,
                format!(
                    "{} from {}; execution providers built in: {}",
                    rt.version(),
                    rt.library().display(),
                    names.join(", ")
                ),
            ));
            Some(rt)
        }
        Err(e) => {
            items.push(item("onnx runtime", Level::Fail, e.to_string()));
            None
        }
    };
    for (check, path) in [
        ("embedding model", &config.models.embedding_model),
        ("tokenizer", &config.models.embedding_tokenizer),
        ("query model", &config.models.embedding_query_model),
    ]
    .into_iter()
    .filter(|(_, path)| !path.as_os_str().is_empty())
    {
        items.push(match file_sha256(path) {
            Ok(f) => item(
                check,
                Level::Ok,
                format!(
                    "{} ({} bytes, sha256 {})",
                    f.path.display(),
                    f.size_bytes,
                    f.sha256
                ),
            ),
            Err(e) => item(check, Level::Fail, format!("{}: {e}", path.display())),
        });
    }
    if let Some(rt) = runtime
        && config.models.embedding_model.is_file()
    {
        let opened = check_model_files(&config.models).and_then(|()| {
            rt.open(&SessionSpec {
                path: &config.models.embedding_model,
                threads: config.runtime.intra_op_threads,
                memory_mode: config.runtime.memory_mode,
                chain: &[Provider::Cpu],
                gpu: None,
                tensorrt: TensorRtOptions::default(),
            })
        });
        items.push(match opened {
            Ok(opened) => {
                let names = |outlets: &[ort::value::Outlet]| -> String {
                    outlets
                        .iter()
                        .map(|o| o.name().to_string())
                        .collect::<Vec<_>>()
                        .join(", ")
                };
                item(
                    "model loads",
                    Level::Ok,
                    format!(
                        "inputs {}; outputs {}",
                        names(opened.session.inputs()),
                        names(opened.session.outputs())
                    ),
                )
            }
            Err(e) => item("model loads", Level::Fail, e.to_string()),
        });
    }
    items
}

fn certificate(config: &Config) -> Item {
    if !config.uses_tls() {
        return item(
            "tls certificate",
            Level::Ok,
            "not needed: the daemon listens on a loopback address",
        );
    }
    let (cert, _) = tls::paths(config);
    if !cert.exists() && config.tls.certificate.is_empty() {
        return item(
            "tls certificate",
            Level::Ok,
            "a self-signed certificate will be generated on first start",
        );
    }
    let certs = match tls::read_certs(&cert) {
        Ok(c) => c,
        Err(e) => return item("tls certificate", Level::Fail, e.to_string()),
    };
    let fingerprint = tls::fingerprint(&certs[0]);
    match x509_parser::parse_x509_certificate(&certs[0]) {
        Ok((_, parsed)) => {
            let validity = parsed.validity();
            let not_after = validity.not_after;
            match validity.time_to_expiration() {
                None => item(
                    "tls certificate",
                    Level::Fail,
                    format!(
                        "{} expired or not yet valid (not after {not_after})",
                        cert.display()
                    ),
                ),
                Some(left) if left.whole_days() < 30 => item(
                    "tls certificate",
                    Level::Warn,
                    format!(
                        "{} expires in {} days ({not_after}); sha256 {fingerprint}",
                        cert.display(),
                        left.whole_days()
                    ),
                ),
                Some(_) => item(
                    "tls certificate",
                    Level::Ok,
                    format!(
                        "{} valid until {not_after}; sha256 {fingerprint}",
                        cert.display()
                    ),
                ),
            }
        }
        Err(e) => item(
            "tls certificate",
            Level::Fail,
            format!("{}: cannot parse: {e}", cert.display()),
        ),
    }
}
