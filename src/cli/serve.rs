//! `sparkbrain serve`: run the daemon in the foreground.

use std::path::PathBuf;

use crate::config::{self, FileChoice, Overrides};
use crate::telemetry::logging;

/// Arguments of `serve`; each overrides the configuration.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Address to listen on, e.g. 127.0.0.1:8470 (non-loopback addresses get TLS 1.3)
    #[arg(long, value_name = "IP:PORT")]
    bind: Option<String>,
    /// Data directory (database, blobs, keys, certificates)
    #[arg(long, value_name = "DIR")]
    data_dir: Option<PathBuf>,
    /// Log filter, e.g. info or debug or "info,sparkbrain=debug"
    #[arg(long, value_name = "FILTER")]
    log_level: Option<String>,
}

/// Loads the configuration, sets up logging and runs the daemon until a signal stops it.
pub fn run(file: &FileChoice, args: Args) -> anyhow::Result<()> {
    let overrides = Overrides {
        bind: args.bind,
        data_dir: args.data_dir,
        log_level: args.log_level,
    };
    let loaded = config::load(file, &overrides)?;
    logging::init(&loaded.config.log.level, loaded.config.log.format);
    match &loaded.file {
        Some(path) => {
            tracing::info!(file = %path.display(), version = env!("CARGO_PKG_VERSION"), "starting sparkbrain")
        }
        None => tracing::info!(
            version = env!("CARGO_PKG_VERSION"),
            "starting sparkbrain with the built-in configuration"
        ),
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("sparkbrain")
        .build()?;
    let result = runtime.block_on(crate::daemon::run(loaded.config, loaded.file));
    // Do not wait for a runtime load still running on a blocking thread after a stop request.
    runtime.shutdown_timeout(std::time::Duration::from_secs(1));
    result
}
