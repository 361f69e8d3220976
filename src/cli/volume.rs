//! `sparkbrain volume …`: create, unlock, lock and inspect LUKS2 volumes, and manage their keys.
//! Run as root on the box. Passphrases come from the terminal, or from the first line of
//! standard input when it is not a terminal (scripts).

use std::io::{BufRead, IsTerminal, Write};
use std::path::PathBuf;

use anyhow::Context;

use super::load;
use crate::config::FileChoice;
use crate::store::lock_holder;
use crate::volume::{CreateRequest, Secret, VolumeError, VolumeStatus, Volumes};

/// Volume subcommands.
#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// Format DEVICE as a LUKS2 volume (argon2id) with an ext4 filesystem, record it, unlock and
    /// mount it (at the data directory unless --mount). Destroys what is on DEVICE.
    Create {
        /// The block device, best a stable /dev/disk/by-id/… path
        device: PathBuf,
        /// The volume's name (1–32 of a–z, 0–9, '-', '_')
        #[arg(long)]
        name: String,
        /// Where to mount it [default: the configured data_dir]
        #[arg(long, value_name = "DIR")]
        mount: Option<PathBuf>,
        /// Format even when DEVICE holds a filesystem, partition table or LUKS header
        #[arg(long)]
        force: bool,
        /// Do not ask for confirmation (needed when standard input is not a terminal)
        #[arg(long)]
        yes: bool,
    },
    /// Open and mount a volume: with its key file or TPM2 key if it has one, else a passphrase
    Unlock {
        /// The volume
        name: String,
        /// Ask for the passphrase even when a key file exists
        #[arg(long)]
        passphrase: bool,
    },
    /// Unmount and close a volume (refused while the daemon uses it: stop it first)
    Lock {
        /// The volume
        name: String,
    },
    /// Show every volume: device, lock state, mount, key slots
    Status {
        /// Print JSON
        #[arg(long)]
        json: bool,
    },
    /// Add, remove or change keys
    #[command(subcommand)]
    Key(KeyCommand),
    /// Copy the LUKS2 header (with its key slots) to FILE: without it a damaged header loses all data
    HeaderBackup {
        /// The volume
        name: String,
        /// The backup file (must not exist; keep it off the box)
        #[arg(long)]
        to: PathBuf,
    },
}

/// Key subcommands.
#[derive(Debug, clap::Subcommand)]
pub enum KeyCommand {
    /// Add a passphrase, or (--key-file) a random key file for unattended unlock
    Add {
        /// The volume
        name: String,
        /// Generate /etc/sparkbrain/keys/NAME.key (0400) instead of a new passphrase
        #[arg(long, conflicts_with = "tpm2")]
        key_file: bool,
        /// Bind a key to this box's TPM2 with systemd-cryptenroll
        #[arg(long)]
        tpm2: bool,
    },
    /// Wipe a key slot (never the last one)
    Remove {
        /// The volume
        name: String,
        /// The slot (see `volume status`)
        #[arg(long)]
        slot: u32,
    },
    /// Change a passphrase
    Passwd {
        /// The volume
        name: String,
    },
}

/// Runs a volume subcommand; volume failures end with their own exit code.
pub fn run(file: &FileChoice, cmd: Command) -> anyhow::Result<()> {
    let config = load(file)?.config;
    let volumes = Volumes::new(&config);
    match cmd {
        Command::Create {
            device,
            name,
            mount,
            force,
            yes,
        } => {
            if !yes {
                confirm(
                    &format!(
                        "Everything on {} will be destroyed. Type the volume name ({name}) to go on: ",
                        device.display()
                    ),
                    &name,
                )?;
            }
            let passphrase = read_new_passphrase()?;
            let status = volumes.create(&CreateRequest {
                device: &device,
                name: &name,
                mount: mount.as_deref(),
                force,
                passphrase: &passphrase,
            })?;
            println!(
                "created volume {name} on {}; unlocked and mounted at {}",
                status.device.display(),
                status.mount.display()
            );
            if volumes.data_volume() != Some(name.as_str()) && status.mount == config.data_dir {
                println!(
                    "set `[volume] data = \"{name}\"` in the configuration so that the daemon keeps its data only there"
                );
            }
            Ok(())
        }
        Command::Unlock { name, passphrase } => {
            let key = if passphrase {
                Some(read_passphrase("Passphrase: ")?)
            } else if volumes.key_file(&name).exists() {
                None
            } else {
                // Already open (by the daemon), or a TPM2 key: no passphrase needed.
                match volumes.unlock(&name, None) {
                    Ok(status) => return report_unlocked(&status),
                    // No key file and no TPM2 key; anything else would fail again.
                    Err(VolumeError::Refused(_)) => Some(read_passphrase("Passphrase: ")?),
                    Err(e) => return Err(e.into()),
                }
            };
            let status = volumes.unlock(&name, key.as_ref())?;
            report_unlocked(&status)
        }
        Command::Lock { name } => {
            if volumes.data_volume() == Some(name.as_str())
                && let Some(holder) = lock_holder(&config.data_dir)
            {
                return Err(VolumeError::Busy(format!(
                    "the daemon (pid {}) uses volume {name}: stop it first (systemctl stop sparkbrain)",
                    holder.pid
                ))
                .into());
            }
            volumes.lock(&name)?;
            println!("volume {name} is locked");
            Ok(())
        }
        Command::Status { json } => {
            let all = volumes.status()?;
            if json {
                // A reader that stops early (`| head`) is not an error (see main).
                writeln!(std::io::stdout(), "{}", serde_json::to_string_pretty(&all)?)?;
            } else if all.is_empty() {
                println!(
                    "no volumes (create one with `sparkbrain volume create DEVICE --name NAME`)"
                );
            } else {
                for v in &all {
                    print_status(v);
                }
            }
            Ok(())
        }
        Command::Key(KeyCommand::Add {
            name,
            key_file,
            tpm2,
        }) => {
            let existing = read_passphrase("An existing passphrase of the volume: ")?;
            if key_file {
                let path = volumes.add_key_file(&name, &existing)?;
                println!(
                    "added key file {}; the volume now unlocks unattended",
                    path.display()
                );
            } else if tpm2 {
                volumes.enroll_tpm2(&name, &existing)?;
                println!("bound a key to this box's TPM2");
            } else {
                let new = read_new_passphrase()?;
                volumes.add_key(&name, &existing, &new)?;
                println!("added a passphrase");
            }
            Ok(())
        }
        Command::Key(KeyCommand::Remove { name, slot }) => {
            let other = read_passphrase("A passphrase of another slot: ")?;
            volumes.remove_key(&name, slot, &other)?;
            println!("wiped key slot {slot}");
            Ok(())
        }
        Command::Key(KeyCommand::Passwd { name }) => {
            let old = read_passphrase("Current passphrase: ")?;
            let new = read_new_passphrase()?;
            volumes.change_passphrase(&name, &old, &new)?;
            println!("passphrase changed");
            Ok(())
        }
        Command::HeaderBackup { name, to } => {
            volumes.header_backup(&name, &to)?;
            println!(
                "wrote the LUKS2 header of {name} to {}; it holds the key slots: keep it as safe as the passphrase",
                to.display()
            );
            Ok(())
        }
    }
}

fn report_unlocked(status: &VolumeStatus) -> anyhow::Result<()> {
    println!(
        "volume {} is unlocked and mounted at {}",
        status.name,
        status.mounted_at.as_deref().unwrap_or("?")
    );
    Ok(())
}

fn print_status(v: &VolumeStatus) {
    let state = match (&v.mounted_at, v.unlocked) {
        (Some(at), _) => format!("unlocked, mounted at {at}"),
        (None, true) => "unlocked, not mounted".to_string(),
        (None, false) => "locked".to_string(),
    };
    println!(
        "{}{}: {state}\n  device   {}{}\n  uuid     {}\n  mount    {}\n  keys     slots {}{}{}\n  created  {}",
        v.name,
        if v.data { " (data volume)" } else { "" },
        v.device.display(),
        if v.present { "" } else { " (not present)" },
        v.uuid,
        v.mount.display(),
        v.key_slots
            .as_ref()
            .map(|s| format!("{s:?}"))
            .unwrap_or_else(|| "unknown".into()),
        if v.key_file { ", key file" } else { "" },
        if v.tpm2_enrolled { ", TPM2" } else { "" },
        v.created
    );
}

/// Asks for the volume's name on a terminal; refuses without a terminal (use --yes).
fn confirm(prompt: &str, expected: &str) -> anyhow::Result<()> {
    if !std::io::stdin().is_terminal() {
        return Err(VolumeError::Refused(
            "standard input is not a terminal, so nobody can confirm: add --yes to format anyway"
                .into(),
        )
        .into());
    }
    print!("{prompt}");
    std::io::stdout().flush()?;
    let mut answer = String::new();
    std::io::stdin().lock().read_line(&mut answer)?;
    if answer.trim() != expected {
        return Err(VolumeError::Refused("not confirmed; nothing was changed".into()).into());
    }
    Ok(())
}

fn read_passphrase(prompt: &str) -> anyhow::Result<Secret> {
    let pw = if std::io::stdin().is_terminal() {
        rpassword::prompt_password(prompt)?
    } else {
        let mut line = String::new();
        std::io::stdin()
            .lock()
            .read_line(&mut line)
            .context("cannot read the passphrase from standard input")?;
        line.trim_end_matches(['\n', '\r']).to_string()
    };
    if pw.is_empty() {
        return Err(VolumeError::Refused("the passphrase is empty".into()).into());
    }
    Ok(Secret::new(pw.into_bytes()))
}

fn read_new_passphrase() -> anyhow::Result<Secret> {
    let first = read_passphrase("New passphrase: ")?;
    if std::io::stdin().is_terminal() {
        let second = read_passphrase("Repeat it: ")?;
        if !first.matches(&second) {
            return Err(VolumeError::Refused("the passphrases differ".into()).into());
        }
    }
    Ok(first)
}
