//! `sparkbrain backup create|list|verify|restore`.

use std::io::{BufRead, IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Subcommand;

use super::client::{Daemon, answer, local_endpoint};
use super::load;
use crate::backup::{
    self, BackupError, CreateRequest, Created, Decryption, IndexMode, RestoreOptions, Target,
};
use crate::config::{Config, FileChoice};

/// The systemd unit `--stop-service` stops and starts.
const SERVICE: &str = "sparkbrain.service";
/// How long `--stop-service` waits for the restored daemon to be ready.
const READY_TIMEOUT: Duration = Duration::from_secs(300);

/// `sparkbrain backup …`.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Take a backup: through the running daemon while it serves, or directly when it is stopped
    Create(CreateArgs),
    /// List the archives at a target, newest first
    List(ListArgs),
    /// Check an archive end to end (checksums, versions, database) without restoring it
    Verify(ArchiveArgs),
    /// Restore an archive into the data directory (the daemon must be stopped, or --stop-service)
    Restore(RestoreArgs),
}

/// Arguments of `backup create`.
#[derive(Debug, clap::Args)]
pub struct CreateArgs {
    /// A folder or s3://bucket/prefix [default: [backup] target]
    #[arg(long, value_name = "TARGET")]
    to: Option<String>,
    /// Encrypt with the passphrase in this file (first line) [default: [backup] passphrase_file]
    #[arg(long, value_name = "FILE", conflicts_with = "recipients")]
    passphrase_file: Option<PathBuf>,
    /// Encrypt to this age public key (repeatable) [default: [backup] recipients]
    #[arg(long = "recipient", value_name = "AGE1…")]
    recipients: Vec<String>,
    /// Include model files, not only the repository's configs
    #[arg(long)]
    with_models: bool,
    /// include: archive the indexes; rebuild: leave them out, rebuilt at first start
    #[arg(long, value_enum)]
    indexes: Option<IndexArg>,
    /// Run as the scheduled backup: configuration only; does nothing when no target is set
    #[arg(long, conflicts_with_all = ["to", "passphrase_file", "recipients", "with_models", "indexes"])]
    scheduled: bool,
    /// Print the result as JSON
    #[arg(long)]
    json: bool,
}

/// `--indexes`.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum IndexArg {
    /// Archive the indexes.
    Include,
    /// Rebuild them at restore.
    Rebuild,
}

/// Arguments of `backup list`.
#[derive(Debug, clap::Args)]
pub struct ListArgs {
    /// A folder or s3://bucket/prefix [default: [backup] target]
    #[arg(long, value_name = "TARGET")]
    to: Option<String>,
    /// Print JSON
    #[arg(long)]
    json: bool,
}

/// An archive and its key.
#[derive(Debug, clap::Args)]
pub struct ArchiveArgs {
    /// The archive: a path, or s3://bucket/prefix/sparkbrain-….tar.zst[.age]
    archive: String,
    /// The passphrase file of an archive encrypted with a passphrase
    #[arg(long, value_name = "FILE", conflicts_with = "identity")]
    passphrase_file: Option<PathBuf>,
    /// The age identity file of an archive encrypted to public keys
    #[arg(long, value_name = "FILE")]
    identity: Option<PathBuf>,
    /// Print JSON
    #[arg(long)]
    json: bool,
}

/// Arguments of `backup restore`.
#[derive(Debug, clap::Args)]
pub struct RestoreArgs {
    #[command(flatten)]
    archive: ArchiveArgs,
    /// Stop sparkbrain.service first, start it afterwards and wait until it is ready
    #[arg(long)]
    stop_service: bool,
    /// Also put back the configuration file, volume registry, key files and a model repository
    /// outside the data directory (the files replaced are kept as *.before-restore)
    #[arg(long)]
    with_system_files: bool,
    /// Do not ask for confirmation (needed when not on a terminal)
    #[arg(long)]
    yes: bool,
}

/// Runs `backup …`.
pub fn run(file: &FileChoice, command: Command) -> anyhow::Result<()> {
    let loaded = load(file)?;
    let config = loaded.config;
    match command {
        Command::Create(args) => create(&config, loaded.file.as_deref(), args),
        Command::List(args) => list(&config, args),
        Command::Verify(args) => verify(&config, args),
        Command::Restore(args) => restore(&config, loaded.file.as_deref(), args),
    }
}

fn create(config: &Config, config_file: Option<&Path>, args: CreateArgs) -> anyhow::Result<()> {
    if args.scheduled && config.backup.target.trim().is_empty() {
        println!(
            "no backup target is configured ([backup] target in the configuration); nothing to do"
        );
        return Ok(());
    }
    let request = CreateRequest {
        target: args.to,
        passphrase_file: args.passphrase_file,
        recipients: (!args.recipients.is_empty()).then_some(args.recipients),
        include_models: args.with_models.then_some(true),
        indexes: args.indexes.map(|i| match i {
            IndexArg::Include => IndexMode::Include,
            IndexArg::Rebuild => IndexMode::Rebuild,
        }),
    };
    // Settings are checked here too, so a mistake is reported before the daemon is asked.
    let options = backup::options_from(config, &request)?;
    options.encryption.check()?;
    let created: Created = if local_endpoint(config).pid.is_some() {
        let daemon = Daemon::connect_for_backups(config)?;
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let body = serde_json::json!({
            "target": request.target,
            "passphrase_file": request.passphrase_file,
            "recipients": request.recipients,
            "include_models": request.include_models,
            "indexes": request.indexes,
        });
        rt.block_on(async {
            let resp = daemon
                .request(reqwest::Method::POST, "/api/v1/backups")
                .json(&body)
                .send()
                .await
                .context("cannot reach the daemon")?;
            answer(resp).await
        })?
    } else {
        backup::create_offline(config, config_file, &options)?
    };
    if args.json {
        println!("{}", serde_json::to_string_pretty(&created)?);
        return Ok(());
    }
    println!(
        "backup written: {} ({}, {} documents, {} chunks, indexes {}) in {:.1} s",
        created.location,
        human_bytes(created.size_bytes),
        created.documents,
        created.chunks,
        match created.indexes {
            IndexMode::Include => "included",
            IndexMode::Rebuild => "to be rebuilt at restore",
        },
        created.duration_ms as f64 / 1000.0
    );
    if created.encrypted {
        println!(
            "encrypted: the archive includes the secrets (JWT signing key, TLS key, API key hashes, sessions, volume keys)"
        );
    } else {
        println!(
            "not encrypted: the archive leaves out the secrets (JWT signing key, TLS key, API key hashes, sessions, volume keys); after a restore users sign in again and API keys must be created again. Set [backup] passphrase_file to include them."
        );
    }
    for name in &created.pruned {
        println!("removed by retention: {name}");
    }
    Ok(())
}

fn list(config: &Config, args: ListArgs) -> anyhow::Result<()> {
    let text = args.to.unwrap_or_else(|| config.backup.target.clone());
    let target = Target::parse(&text, &config.backup.s3)?;
    let archives = target.list()?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&archives)?);
        return Ok(());
    }
    if archives.is_empty() {
        println!("no archives at {}", target.display());
    }
    for a in archives {
        println!(
            "{}  {:>10}  {}",
            a.created_at,
            human_bytes(a.size_bytes),
            a.location
        );
    }
    Ok(())
}

fn decryption(args: &ArchiveArgs) -> Decryption {
    match (&args.passphrase_file, &args.identity) {
        (Some(p), _) => Decryption::Passphrase(p.clone()),
        (None, Some(i)) => Decryption::Identity(i.clone()),
        (None, None) => Decryption::None,
    }
}

/// A local file holding the archive, downloading an `s3://` one into a scratch folder next
/// to the data directory (not /tmp, often a small tmpfs).
fn local_archive(
    config: &Config,
    archive: &str,
) -> anyhow::Result<(PathBuf, Option<tempfile::TempDir>)> {
    if archive.starts_with("s3://") {
        let (target, name) = backup::split_s3_url(archive, &config.backup.s3)?;
        let parent = config
            .data_dir
            .parent()
            .filter(|p| p.is_dir())
            .unwrap_or(Path::new("/var/tmp"));
        let scratch = tempfile::Builder::new()
            .prefix(".sparkbrain-restore-")
            .tempdir_in(parent)
            .with_context(|| format!("cannot create a download folder in {}", parent.display()))?;
        eprintln!("downloading {archive}…");
        let path = target.fetch(&name, scratch.path())?;
        return Ok((path, Some(scratch)));
    }
    let path = PathBuf::from(archive);
    if !path.is_file() {
        bail!("{archive}: no such archive file");
    }
    Ok((path, None))
}

fn verify(config: &Config, args: ArchiveArgs) -> anyhow::Result<()> {
    let (path, _scratch) = local_archive(config, &args.archive)?;
    let verified = backup::verify(&path, &decryption(&args))?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&verified)?);
        return Ok(());
    }
    let h = &verified.header;
    println!(
        "{}: intact and restorable by this sparkbrain ({} members, {} of content{})",
        args.archive,
        verified.members,
        human_bytes(verified.content_bytes),
        if verified.encrypted {
            ", encrypted"
        } else {
            ""
        }
    );
    println!(
        "taken {} on {} by sparkbrain {} (format {}, schema {}): {} documents, {} chunks, indexes {}, secrets {}",
        h.created_at,
        h.hostname,
        h.sparkbrain_version,
        h.format_version,
        h.schema_version,
        h.documents,
        h.chunks,
        if h.indexes_included {
            "included"
        } else {
            "to be rebuilt"
        },
        if h.secrets_included {
            "included"
        } else {
            "left out"
        },
    );
    Ok(())
}

fn restore(config: &Config, config_file: Option<&Path>, args: RestoreArgs) -> anyhow::Result<()> {
    let (path, _scratch) = local_archive(config, &args.archive.archive)?;
    let key = decryption(&args.archive);
    let running = local_endpoint(config).pid;
    if let Some(pid) = running
        && !args.stop_service
    {
        return Err(BackupError::Refused(format!(
            "the daemon (PID {pid}) is running on {}: stop it first (systemctl stop sparkbrain), or pass --stop-service",
            config.data_dir.display()
        ))
        .into());
    }
    confirm(config, &args)?;
    if running.is_some() {
        // Checked whole before the service goes down, so a bad archive costs no downtime.
        eprintln!(
            "verifying {} before stopping the service…",
            args.archive.archive
        );
        backup::verify(&path, &key)?;
        systemctl("stop")?;
    }
    let options = RestoreOptions {
        key,
        with_system_files: args.with_system_files,
    };
    let restored = backup::restore(config, config_file, &path, &options);
    if args.stop_service && running.is_some() {
        // Started again whatever happened: on failure the old data is still in place.
        systemctl("start")?;
    }
    let restored = restored?;
    if args.archive.json {
        println!("{}", serde_json::to_string_pretty(&restored)?);
    } else {
        let h = &restored.header;
        println!(
            "restored {} (taken {} on {}: {} documents, {} chunks) into {} in {:.1} s",
            args.archive.archive,
            h.created_at,
            h.hostname,
            h.documents,
            h.chunks,
            restored.data_dir.display(),
            restored.duration_ms as f64 / 1000.0
        );
        if !h.indexes_included {
            println!("the indexes are rebuilt from the database when the daemon starts");
        }
        if !h.secrets_included {
            println!(
                "the archive held no secrets: a new JWT signing key is made at start, users sign in again and API keys must be created again"
            );
        }
        if let Some(old) = &restored.kept_aside {
            println!(
                "the previous data is kept at {} until the restored daemon is ready, then removed",
                old.display()
            );
        }
        for f in &restored.system_files {
            println!("wrote {f}");
        }
        if restored.system_files_skipped > 0 {
            println!(
                "the archive also holds {} system file(s) (configuration, volume registry, keys): left alone; pass --with-system-files to put them back",
                restored.system_files_skipped
            );
        }
    }
    if args.stop_service && running.is_some() {
        wait_ready(config)?;
        println!("{SERVICE} is ready on the restored data");
    }
    Ok(())
}

fn confirm(config: &Config, args: &RestoreArgs) -> anyhow::Result<()> {
    if args.yes {
        return Ok(());
    }
    if !std::io::stdin().is_terminal() {
        bail!(
            "restoring replaces the data in {}; pass --yes to confirm when not on a terminal",
            config.data_dir.display()
        );
    }
    print!(
        "This replaces the data in {} with the archive's. Type 'restore' to go on: ",
        config.data_dir.display()
    );
    std::io::stdout().flush()?;
    let mut line = String::new();
    std::io::stdin().lock().read_line(&mut line)?;
    if line.trim() != "restore" {
        bail!("not confirmed; nothing was changed");
    }
    Ok(())
}

fn systemctl(verb: &str) -> anyhow::Result<()> {
    let status = std::process::Command::new("systemctl")
        .args([verb, SERVICE])
        .status()
        .with_context(|| format!("cannot run systemctl {verb} {SERVICE}"))?;
    if !status.success() {
        bail!("systemctl {verb} {SERVICE} failed ({status}); see journalctl -u {SERVICE}");
    }
    Ok(())
}

fn wait_ready(config: &Config) -> anyhow::Result<()> {
    let deadline = Instant::now() + READY_TIMEOUT;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    while Instant::now() < deadline {
        let endpoint = local_endpoint(config);
        if endpoint.pid.is_some()
            && let Ok(client) =
                super::client::http_client(&endpoint.url, endpoint.fingerprint.as_deref())
        {
            let ready = rt.block_on(async {
                client
                    .get(format!("{}/readyz", endpoint.url.trim_end_matches('/')))
                    .send()
                    .await
                    .is_ok_and(|r| r.status().is_success())
            });
            if ready {
                return Ok(());
            }
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    bail!(
        "{SERVICE} did not become ready within {} s; see journalctl -u {SERVICE}. The previous data stays in {}/.restore-old until it is",
        READY_TIMEOUT.as_secs(),
        config.data_dir.display()
    )
}

fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = n as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{n} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}
