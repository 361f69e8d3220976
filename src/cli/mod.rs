//! The command line: one file per subcommand. `main.rs` parses and calls [`run`].

mod ask;
mod backup;
mod client;
mod completions;
mod config_cmd;
mod doctor;
mod gpu;
mod ingest;
mod search;
mod serve;
mod status;
mod user;
mod volume;

use std::path::PathBuf;

use clap::{Parser, Subcommand};

use crate::config::{self, ConfigError, FileChoice, Loaded, Overrides};
use crate::store::LockError;
use crate::volume::VolumeError;

/// Exit status for an invalid configuration (sysexits `EX_CONFIG`).
pub const EXIT_CONFIG: u8 = 78;
/// Exit status when the data directory is held by another daemon (sysexits `EX_TEMPFAIL`).
pub const EXIT_LOCKED: u8 = 75;

/// sparkbrain: a private AI appliance. Serves models, keeps your documents in a searchable
/// knowledge base and answers questions with citations, all on this machine.
#[derive(Debug, Parser)]
#[command(name = "sparkbrain", version, propagate_version = true)]
pub struct Cli {
    /// Configuration file [default: /etc/sparkbrain/config.toml when it exists]
    #[arg(long, short = 'c', global = true, value_name = "FILE")]
    pub config: Option<PathBuf>,

    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the daemon in the foreground (this is what the systemd unit runs)
    Serve(serve::Args),
    /// Show whether a daemon is running on the configured data directory, where, and if it is ready
    Status(status::Args),
    /// Print the default configuration, or check a configuration file without starting
    #[command(subcommand)]
    Config(config_cmd::Command),
    /// Create and manage users directly in the store (run as root on the box; works whether or not the daemon runs)
    #[command(subcommand)]
    User(user::Command),
    /// Create, unlock, lock and inspect LUKS2-encrypted volumes and their keys (run as root on the box)
    #[command(subcommand)]
    Volume(volume::Command),
    /// Back up everything to a folder or S3, list, verify and restore archives (run as root on the box)
    #[command(subcommand)]
    Backup(backup::Command),
    /// Check the installation: runtime, models, data directory, TLS certificate, disk space
    Doctor(doctor::Args),
    /// Upload files and folders into a collection of the running daemon and wait until they are indexed (authenticates with SPARKBRAIN_API_KEY)
    Ingest(ingest::Args),
    /// Show the GPUs of the running daemon with their health, like nvidia-smi's summary (authenticates with SPARKBRAIN_API_KEY)
    Gpu(gpu::Args),
    /// Search the knowledge base of the running daemon (authenticates with SPARKBRAIN_API_KEY)
    Search(search::Args),
    /// Ask the knowledge base of the running daemon; streams the answer, then its sources (authenticates with SPARKBRAIN_API_KEY)
    Ask(ask::Args),
    /// Print a shell completion script, e.g. `sparkbrain completions bash > /etc/bash_completion.d/sparkbrain`
    Completions(completions::Args),
    /// Print the manual page (roff), e.g. `sparkbrain man | man -l -`
    Man,
    /// Extract one document's text as a JSON line (internal: the daemon runs it sandboxed)
    #[command(hide = true, name = "__extract")]
    Extract(crate::kb::extract::sandbox::ChildArgs),
}

/// Runs a parsed command line.
pub fn run(cli: Cli) -> anyhow::Result<()> {
    let file = match &cli.config {
        Some(path) => FileChoice::Explicit(path.clone()),
        None => FileChoice::System,
    };
    match cli.command {
        Command::Serve(args) => serve::run(&file, args),
        Command::Status(args) => status::run(&file, args),
        Command::Config(cmd) => config_cmd::run(cli.config.as_deref(), cmd),
        Command::User(cmd) => user::run(&file, cmd),
        Command::Volume(cmd) => volume::run(&file, cmd),
        Command::Doctor(args) => doctor::run(&file, args),
        Command::Backup(cmd) => backup::run(&file, cmd),
        Command::Ingest(args) => ingest::run(&file, args),
        Command::Search(args) => search::run(&file, args),
        Command::Gpu(args) => gpu::run(&file, args),
        Command::Ask(args) => ask::run(&file, args),
        Command::Completions(args) => completions::completions(args),
        Command::Man => completions::man(),
        // No configuration, no data directory: the child only reads the one file it is given.
        Command::Extract(args) => crate::kb::extract::sandbox::child_main(args),
    }
}

/// The exit status for an error: 78 for configuration errors, 75 for a held data directory,
/// 10–16 for volume failures (see [`VolumeError::exit_code`]), 20–23 for backup failures (see
/// [`crate::backup::BackupError::exit_code`]), 1 otherwise (clap uses 2 for
/// usage errors).
pub fn exit_code(err: &anyhow::Error) -> u8 {
    if let Some(e) = err.downcast_ref::<VolumeError>() {
        e.exit_code()
    } else if let Some(e) = err.downcast_ref::<crate::backup::BackupError>() {
        e.exit_code()
    } else if err.downcast_ref::<ConfigError>().is_some() {
        EXIT_CONFIG
    } else if err.downcast_ref::<LockError>().is_some() {
        EXIT_LOCKED
    } else {
        1
    }
}

/// Loads the configuration for commands that only read it.
fn load(file: &FileChoice) -> Result<Loaded, ConfigError> {
    config::load(file, &Overrides::default())
}
