//! The daemon: builds one [`App`] from the configuration, serves it, and runs its lifecycle
//! (systemd notifications, watchdog, graceful shutdown).

mod server;
pub mod tls;

use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use anyhow::Context;
use serde::Serialize;

use crate::auth::Auth;
use crate::backup::Backups;
use crate::config::Config;
use crate::config::ControlMode;
use crate::gpu::health::Health;
use crate::gpu::placement::GpuPlacement;
use crate::gpu::{Gpus, NvmlStatus};
use crate::inference::generators::Generators;
use crate::inference::{ModelManager, Runtime, RuntimeError};
use crate::kb::KnowledgeBase;
use crate::store::{BlobStore, DataDirLock, Store};
use crate::telemetry::metrics::{Metrics, ServingMetrics};
use crate::telemetry::systemd;
use crate::volume::{DataVolume, Volumes};

/// What the runtime loader produced.
pub struct RuntimeState {
    /// The loaded library, or why not.
    pub runtime: Result<Arc<Runtime>, RuntimeError>,
    /// The model repository's models (absent when the runtime failed).
    pub models: Option<Arc<ModelManager>>,
    /// The built-in embedding model: what it serves, or why it does not (absent when the
    /// runtime failed).
    pub embedding: Option<Result<String, String>>,
    /// The configured language models.
    pub generators: Arc<Generators>,
}

/// Everything a request handler may use; one per daemon, shared through axum state.
pub struct App {
    /// The effective configuration.
    pub config: Config,
    /// The SQLite store.
    pub store: Store,
    /// The blob store.
    pub blobs: BlobStore,
    /// Identity and audit.
    pub auth: Auth,
    /// Metrics registry.
    pub metrics: Metrics,
    /// The GPU supervisor.
    pub gpus: Arc<Gpus>,
    /// The encrypted volumes.
    pub volumes: Arc<Volumes>,
    /// Set once the runtime loader has finished.
    pub runtime: OnceLock<RuntimeState>,
    /// The knowledge base, once its indexes are open (or why they could not be).
    pub kb: OnceLock<Result<Arc<KnowledgeBase>, String>>,
    /// Backups.
    pub backups: Arc<Backups>,
    /// When the daemon started.
    pub started: Instant,
    /// SHA-256 fingerprint of the TLS certificate, when serving TLS.
    pub tls_fingerprint: Option<String>,
}

/// One readiness check.
#[derive(Debug, Clone, Serialize)]
pub struct Check {
    /// What was checked.
    pub name: &'static str,
    /// Whether it passed.
    pub ok: bool,
    /// What it found, or what is wrong and how to fix it.
    pub detail: String,
}

/// Whether the daemon can serve, with the reasons.
#[derive(Debug, Clone, Serialize)]
pub struct Readiness {
    /// All checks passed.
    pub ready: bool,
    /// The individual checks.
    pub checks: Vec<Check>,
}

impl App {
    /// Evaluates readiness: store open, runtime loaded, embedding model loaded.
    pub fn readiness(&self) -> Readiness {
        let mut checks = vec![match self.store.schema_version() {
            Ok(v) => Check {
                name: "store",
                ok: true,
                detail: format!("open, schema version {v}"),
            },
            Err(e) => Check {
                name: "store",
                ok: false,
                detail: e.to_string(),
            },
        }];
        match self.runtime.get() {
            None => {
                checks.push(Check {
                    name: "runtime",
                    ok: false,
                    detail: "loading ONNX Runtime".into(),
                });
            }
            Some(state) => {
                checks.push(match &state.runtime {
                    Ok(rt) => Check {
                        name: "runtime",
                        ok: true,
                        detail: format!(
                            "ONNX Runtime {} from {}",
                            rt.version(),
                            rt.library().display()
                        ),
                    },
                    Err(e) => Check {
                        name: "runtime",
                        ok: false,
                        detail: e.to_string(),
                    },
                });
                checks.push(match self.kb.get() {
                    Some(Ok(_)) => Check {
                        name: "knowledge_base",
                        ok: true,
                        detail: "indexes open".into(),
                    },
                    Some(Err(e)) => Check {
                        name: "knowledge_base",
                        ok: false,
                        detail: e.clone(),
                    },
                    None => Check {
                        name: "knowledge_base",
                        ok: false,
                        detail: "opening the indexes".into(),
                    },
                });
                checks.push(match &state.embedding {
                    Some(Ok(serving)) => Check {
                        name: "embedding_model",
                        ok: true,
                        detail: serving.clone(),
                    },
                    Some(Err(e)) => Check {
                        name: "embedding_model",
                        ok: false,
                        detail: e.clone(),
                    },
                    None => Check {
                        name: "embedding_model",
                        ok: false,
                        detail: "not loaded: ONNX Runtime is not available".into(),
                    },
                });
                let generators = state.generators.status();
                if !generators.is_empty() {
                    // A built-in model that cannot open is a configuration to fix; an upstream
                    // is not probed here, its failures are answered per request.
                    checks.push(Check {
                        name: "generators",
                        ok: generators.iter().all(|g| g.ready),
                        detail: generators
                            .iter()
                            .map(|g| format!("{}: {}", g.name, g.detail))
                            .collect::<Vec<_>>()
                            .join("; "),
                    });
                }
            }
        }
        checks.push(self.gpu_check());
        if let Some(name) = self.volumes.data_volume() {
            // Unmounted under a running daemon (someone forced it): say so, never serve on.
            checks.push(match self.volumes.data_state() {
                DataVolume::Locked(why) => Check {
                    name: "volume",
                    ok: false,
                    detail: format!("volume locked: {why}"),
                },
                DataVolume::Ready | DataVolume::NotRequired => Check {
                    name: "volume",
                    ok: true,
                    detail: format!(
                        "data volume {name:?} unlocked, {} on it",
                        self.config.data_dir.display()
                    ),
                },
            });
        }
        Readiness {
            ready: checks.iter().all(|c| c.ok),
            checks,
        }
    }

    /// GPUs: CPU-only is a normal state; failed GPUs or failed host services are not ready
    /// while no GPU is left to work on.
    fn gpu_check(&self) -> Check {
        let (ok, detail) = match self.gpus.nvml_status() {
            NvmlStatus::Disabled => (
                true,
                "CPU-only: GPU supervision is off ([gpu] enabled = false)".to_string(),
            ),
            NvmlStatus::Unavailable(why) => (true, format!("CPU-only: {why}")),
            NvmlStatus::Ok => {
                let gpus = self.gpus.statuses();
                let usable = gpus
                    .iter()
                    .filter(|g| g.health.health != Health::Failed)
                    .count();
                let not_healthy: Vec<String> = gpus
                    .iter()
                    .filter(|g| g.health.health != Health::Healthy)
                    .map(|g| {
                        format!(
                            "GPU {} {}: {}",
                            g.inventory.index,
                            g.health.health.as_str(),
                            g.health.reasons.join("; ")
                        )
                    })
                    .collect();
                let host = self.gpus.host_reasons();
                let mut detail = format!("{} GPUs, {usable} usable", gpus.len());
                if !host.is_empty() {
                    // A GPU degraded by a host service says so once, here, not per GPU.
                    detail.push_str(&format!("; {}", host.join("; ")));
                } else if !not_healthy.is_empty() {
                    detail.push_str(&format!("; {}", not_healthy.join("; ")));
                }
                ((gpus.is_empty() || usable > 0) && host.is_empty(), detail)
            }
        };
        Check {
            name: "gpus",
            ok,
            detail,
        }
    }

    /// The configured language models, once the runtime loader has run.
    pub fn generators(&self) -> Option<Arc<Generators>> {
        self.runtime.get().map(|s| s.generators.clone())
    }

    /// The model manager, once the runtime has loaded.
    pub fn models(&self) -> Option<Arc<ModelManager>> {
        self.runtime.get().and_then(|s| s.models.clone())
    }

    /// Seconds since start.
    pub fn uptime(&self) -> Duration {
        self.started.elapsed()
    }
}

/// Runs the daemon until SIGTERM or SIGINT. Returns after a clean shutdown.
pub async fn run(config: Config, config_file: Option<std::path::PathBuf>) -> anyhow::Result<()> {
    let started = Instant::now();
    // Handle SIGTERM/SIGINT from the start: the listener serves while the runtime loads, and
    // until these exist a signal would kill the process without draining in-flight requests.
    let mut signals = ShutdownSignals::new()?;
    let volumes = Arc::new(Volumes::new(&config));

    let tls = if config.uses_tls() {
        let setup = tls::setup(&config)?;
        tracing::info!(
            certificate = %setup.certificate.display(),
            sha256 = %setup.fingerprint,
            "serving TLS 1.3; clients can pin this certificate fingerprint"
        );
        Some(setup)
    } else {
        None
    };
    let addr = config.bind_addr();
    let listener = tokio::net::TcpListener::bind(addr).await.map_err(|e| {
        let hint = match e.kind() {
            std::io::ErrorKind::AddrInUse => {
                "another process listens there; choose another server.bind"
            }
            std::io::ErrorKind::PermissionDenied => {
                "ports below 1024 need privileges; choose a higher port"
            }
            std::io::ErrorKind::AddrNotAvailable => "this machine has no such address",
            _ => "check server.bind",
        };
        anyhow::anyhow!("cannot listen on {addr}: {e} ({hint})")
    })?;
    let grace = Duration::from_secs(config.server.shutdown_grace_seconds);
    let scheme = if tls.is_some() { "https" } else { "http" };
    let routes = RouterSwitch::new();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(server::serve(
        listener,
        tls.as_ref().map(|t| t.config.clone()),
        routes.router(),
        async {
            let _ = stop_rx.await;
        },
        grace,
    ));
    tracing::info!(%addr, "listening on {scheme}://{addr}");

    let mut watchdog = None;
    if wait_for_data_volume(&volumes, &routes, &mut signals, &mut watchdog)
        .await
        .is_none()
    {
        return shut_down(grace, stop_tx, server, watchdog, None).await;
    }

    let mut lock = DataDirLock::acquire(&config.data_dir)?;
    crate::backup::recover_interrupted_restore(&config.data_dir)?;
    let store = Store::open(&config.data_dir)?;
    let blobs = BlobStore::open(&config.data_dir)?;
    let mut auth = Auth::new(store.clone(), config.auth.clone(), &config.data_dir)?;
    if volumes.data_volume().is_some() {
        auth.keep_unlockers(volumes.unlockers_file()).await;
    }
    auth.issue_local_token(&config.data_dir)?;
    let metrics = Metrics::new().context("cannot set up metrics")?;
    let backups = Backups::new(&config, config_file, metrics.backup());
    let gpu_config = config.gpu.clone();
    let gpu_store = store.clone();
    let gpus = tokio::task::spawn_blocking(move || Gpus::open(&gpu_config, Some(gpu_store)))
        .await
        .context("the GPU supervisor failed to start")?;
    if gpus.nvml_status() == &NvmlStatus::Ok {
        let watcher = gpus.clone();
        let gpu_config = config.gpu.clone();
        tokio::spawn(async move { watcher.watch_host_services(&gpu_config).await });
    }
    lock.record_url(&format!("{scheme}://{addr}"))
        .context("cannot record the address in the data directory lock")?;

    let app = Arc::new(App {
        tls_fingerprint: tls.as_ref().map(|t| t.fingerprint.clone()),
        config,
        store,
        blobs,
        auth,
        metrics,
        gpus,
        volumes,
        runtime: OnceLock::new(),
        kb: OnceLock::new(),
        backups,
        started,
    });
    routes.set(crate::api::router(app.clone()));

    let loader_app = app.clone();
    let loader = tokio::task::spawn_blocking(move || {
        load_runtime(
            &loader_app.config,
            loader_app.metrics.serving(),
            &loader_app.gpus,
        )
    });
    // The indexes open (and replay) beside the runtime: both take a while on a big box.
    let kb_app = app.clone();
    let kb_loader = tokio::task::spawn_blocking(move || {
        KnowledgeBase::open(
            &kb_app.config,
            kb_app.store.clone(),
            kb_app.blobs.clone(),
            kb_app.metrics.kb(),
        )
    });
    // A stop request while the runtime loads is honoured at once; the loader thread is left
    // to finish on its own (the process exits without waiting for it).
    let stopped_early = tokio::select! {
        loaded = async { tokio::join!(loader, kb_loader) } => {
            let (state, kb) = loaded;
            let _ = app.runtime.set(state.context("the runtime loader failed")?);
            let kb = kb
                .map_err(|e| e.to_string())
                .and_then(|r| r.map_err(|e| e.to_string()));
            match &kb {
                Ok(kb) => kb.start(app.models(), &tokio::runtime::Handle::current()),
                Err(e) => tracing::error!(error = %e, "the knowledge base cannot open"),
            }
            let _ = app.kb.set(kb);
            false
        }
        () = signals.wait() => true,
    };
    if !stopped_early {
        let readiness = app.readiness();
        if readiness.ready {
            tracing::info!(elapsed_ms = started.elapsed().as_millis() as u64, "ready");
            match crate::backup::confirm_restore(&app.config.data_dir) {
                Ok(true) => tracing::info!(
                    "ready on restored data; removed the data the restore had kept aside"
                ),
                Ok(false) => {}
                Err(e) => tracing::warn!(error = %e, "cannot remove the data a restore kept aside"),
            }
        } else {
            for check in readiness.checks.iter().filter(|c| !c.ok) {
                tracing::warn!(check = check.name, "not ready: {}", check.detail);
            }
        }
        systemd::ready(&format!(
            "serving on {scheme}://{addr}{}",
            if readiness.ready {
                ""
            } else {
                " (not ready: see /readyz)"
            }
        ));
        start_watchdog(&mut watchdog);
        if let Some(models) = app.models()
            && models.mode() == ControlMode::Poll
        {
            let every = Duration::from_secs(app.config.serving.poll_interval_seconds);
            tokio::spawn(async move {
                let mut ticker = tokio::time::interval(every);
                ticker.tick().await;
                loop {
                    ticker.tick().await;
                    let models = models.clone();
                    let _ = tokio::task::spawn_blocking(move || models.poll()).await;
                }
            });
        }
        signals.wait().await;
    }
    shut_down(grace, stop_tx, server, watchdog, Some(app)).await
}

/// Serves the locked router until the data directory lies on the unlocked data volume (an
/// unlock over the API, `sparkbrain volume unlock` on the box, or a key file at start).
/// `None` when a stop signal came first.
async fn wait_for_data_volume(
    volumes: &Arc<Volumes>,
    routes: &RouterSwitch,
    signals: &mut ShutdownSignals,
    watchdog: &mut Option<tokio::task::JoinHandle<()>>,
) -> Option<()> {
    let DataVolume::Locked(first) = volumes.data_state() else {
        return Some(());
    };
    let name = volumes.data_volume().unwrap_or_default().to_string();
    // Unattended unlock with a key file or TPM2 key, when the volume has one.
    let unattended = volumes.clone();
    let tried = tokio::task::spawn_blocking(move || {
        let name = unattended.data_volume().unwrap_or_default().to_string();
        unattended.unlock(&name, None)
    })
    .await;
    match tried {
        Ok(Ok(_)) if volumes.data_state() == DataVolume::Ready => {
            tracing::info!(volume = %name, "unlocked the data volume with its key file or TPM2 key");
            return Some(());
        }
        Ok(Err(e)) => tracing::info!(volume = %name, "no unattended unlock: {e}"),
        _ => {}
    }
    tracing::warn!(volume = %name, "waiting for an admin to unlock the data volume: {first}");
    let state = Arc::new(crate::api::LockedState::new(volumes.clone(), first));
    routes.set(crate::api::locked_router(state.clone()));
    systemd::ready(&format!("locked: waiting for volume {name} to be unlocked"));
    start_watchdog(watchdog);
    let mut poll = tokio::time::interval(Duration::from_secs(2));
    loop {
        tokio::select! {
            () = state.unlocked.notified() => {}
            _ = poll.tick() => {}
            () = signals.wait() => return None,
        }
        let check = volumes.clone();
        match tokio::task::spawn_blocking(move || check.data_state()).await {
            Ok(DataVolume::Locked(why)) => {
                if let Ok(mut reason) = state.reason.lock() {
                    *reason = why;
                }
            }
            Ok(DataVolume::Ready | DataVolume::NotRequired) => {
                tracing::info!(volume = %name, "the data volume is unlocked; opening the store");
                systemd::status(&format!("volume {name} unlocked: opening the store"));
                return Some(());
            }
            Err(e) => tracing::error!("cannot check the data volume: {e}"),
        }
    }
}

fn start_watchdog(watchdog: &mut Option<tokio::task::JoinHandle<()>>) {
    if watchdog.is_none() {
        *watchdog =
            systemd::watchdog_interval().map(|every| tokio::spawn(systemd::watchdog(every)));
    }
}

/// Stops accepting, drains requests, and closes what the app opened (if it got that far).
async fn shut_down(
    grace: Duration,
    stop_tx: tokio::sync::oneshot::Sender<()>,
    server: tokio::task::JoinHandle<bool>,
    watchdog: Option<tokio::task::JoinHandle<()>>,
    app: Option<Arc<App>>,
) -> anyhow::Result<()> {
    tracing::info!(
        grace_seconds = grace.as_secs(),
        "shutting down: finishing in-flight requests"
    );
    systemd::stopping();
    let _ = stop_tx.send(());
    let finished = server.await.context("the server task failed")?;
    if let Some(w) = watchdog {
        w.abort();
    }
    if !finished {
        tracing::warn!("grace period over; dropping the requests still running");
    }
    let Some(app) = app else {
        tracing::info!("stopped");
        return Ok(());
    };
    app.gpus.stop();
    if let Some(Ok(kb)) = app.kb.get() {
        let kb = kb.clone();
        tokio::task::spawn_blocking(move || kb.shutdown())
            .await
            .context("the knowledge base did not shut down")?;
    }
    app.store
        .with_conn(|c| {
            c.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))
                .map_err(crate::store::StoreError::from)
        })
        .context("cannot checkpoint the database")?;
    tracing::info!("stopped");
    Ok(())
}

/// The router the listener serves: the locked router until the data volume is unlocked, then
/// the whole API, swapped in place without restarting the listener.
#[derive(Clone)]
struct RouterSwitch(Arc<std::sync::RwLock<axum::Router>>);

impl RouterSwitch {
    /// Answers 503 `starting` until the locked router or the whole API is set: a request
    /// that arrives while the store opens is told to retry, never that its route is unknown.
    fn new() -> RouterSwitch {
        RouterSwitch(Arc::new(std::sync::RwLock::new(
            crate::api::starting_router(),
        )))
    }

    fn set(&self, router: axum::Router) {
        if let Ok(mut current) = self.0.write() {
            *current = router;
        }
    }

    /// A router that hands every request to the current one.
    fn router(&self) -> axum::Router {
        let current = self.0.clone();
        axum::Router::new().fallback_service(tower::service_fn(
            move |req: axum::extract::Request| {
                let router = current
                    .read()
                    .map(|r| r.clone())
                    .unwrap_or_else(|_| crate::api::starting_router());
                tower::ServiceExt::oneshot(router, req)
            },
        ))
    }
}

fn load_runtime(config: &Config, metrics: ServingMetrics, gpus: &Arc<Gpus>) -> RuntimeState {
    match Runtime::load(&config.runtime) {
        Ok(runtime) => {
            let runtime = Arc::new(runtime);
            let repository = config.repository();
            if config.serving.repository.is_empty()
                && let Err(e) = std::fs::create_dir_all(&repository)
            {
                tracing::warn!(path = %repository.display(), error = %e, "cannot create the model repository");
            }
            let models = Arc::new(ModelManager::new(runtime.clone(), config, metrics));
            if gpus.nvml_status() == &NvmlStatus::Ok {
                models.set_placement(Arc::new(GpuPlacement::new(
                    gpus.clone(),
                    config.gpu.placement_memory_factor,
                )));
                let weak = Arc::downgrade(&models);
                gpus.on_health_change(Box::new(move |gpu, _before| {
                    if gpu.health.health != Health::Failed {
                        return;
                    }
                    let Some(models) = weak.upgrade() else {
                        return;
                    };
                    let index = gpu.inventory.index;
                    let why = gpu.health.reasons.join("; ");
                    // Reloading takes seconds; the sampler must keep sampling meanwhile.
                    let moved = std::thread::Builder::new()
                        .name("gpu-evacuate".into())
                        .spawn(move || models.evacuate(index, &why));
                    if let Err(e) = moved {
                        tracing::error!("cannot move models off GPU {index}: {e}");
                    }
                }));
            }
            models.load_startup(&config.serving.startup_models);
            // After the repository's models, so that one of the same name keeps its place.
            let name = &config.models.embedding_name;
            let embedding = Some(
                models
                    .load_builtin(name, &config.models, config.runtime.memory_mode)
                    .map(|()| {
                        format!(
                            "serving {name:?} from {}",
                            config.models.embedding_model.display()
                        )
                    })
                    .map_err(|e| e.to_string()),
            );
            RuntimeState {
                generators: Arc::new(Generators::open(config, Some(&runtime))),
                runtime: Ok(runtime),
                models: Some(models),
                embedding,
            }
        }
        // Upstream generators need no ONNX Runtime; built-in ones record why they cannot open.
        Err(e) => RuntimeState {
            runtime: Err(e),
            models: None,
            embedding: None,
            generators: Arc::new(Generators::open(config, None)),
        },
    }
}

/// SIGTERM and SIGINT handlers; a signal arriving after [`ShutdownSignals::new`] is kept until
/// [`ShutdownSignals::wait`].
struct ShutdownSignals {
    term: tokio::signal::unix::Signal,
    int: tokio::signal::unix::Signal,
}

impl ShutdownSignals {
    fn new() -> anyhow::Result<Self> {
        use tokio::signal::unix::{SignalKind, signal};
        Ok(ShutdownSignals {
            term: signal(SignalKind::terminate()).context("cannot handle SIGTERM")?,
            int: signal(SignalKind::interrupt()).context("cannot handle SIGINT")?,
        })
    }

    async fn wait(&mut self) {
        tokio::select! {
            _ = self.term.recv() => tracing::info!("received SIGTERM"),
            _ = self.int.recv() => tracing::info!("received SIGINT"),
        }
    }
}
