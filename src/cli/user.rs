//! `sparkbrain user …`: manage users directly in the store, as the local administrator.
//!
//! These commands open the SQLite store themselves (WAL lets them run beside the daemon), so the
//! first admin can be created before anyone can sign in. Each change is audited with the local
//! account that made it.

use std::io::{BufRead, IsTerminal};

use anyhow::{Context, bail};

use super::load;
use crate::auth::{
    AuditEvent, AuthError, Outcome, Role, audit, check_password_policy, password, users,
};
use crate::config::FileChoice;
use crate::store::Store;
use crate::volume::Volumes;

/// User subcommands.
#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// Create a user; asks for the password twice on a terminal
    Add {
        /// Sign-in name (letters, digits, '.', '_', '-')
        name: String,
        /// admin, editor or viewer
        #[arg(long, default_value = "viewer")]
        role: String,
        /// Read the password from the first line of standard input instead of a prompt
        #[arg(long)]
        password_stdin: bool,
    },
    /// List users
    List {
        /// Print JSON instead of a table
        #[arg(long)]
        json: bool,
    },
    /// Set a new password (ends the user's sessions)
    Passwd {
        /// The user
        name: String,
        /// Read the password from the first line of standard input instead of a prompt
        #[arg(long)]
        password_stdin: bool,
    },
    /// Delete a user with their sessions and API keys
    Remove {
        /// The user
        name: String,
    },
}

/// Runs a user subcommand.
pub fn run(file: &FileChoice, cmd: Command) -> anyhow::Result<()> {
    let config = load(file)?.config;
    let volumes = Volumes::new(&config);
    volumes.require_data()?;
    let store = Store::open(&config.data_dir)
        .with_context(|| format!("cannot open the store in {}", config.data_dir.display()))?;
    let min_len = config.auth.min_password_length;
    let outcome = match cmd {
        Command::Add {
            name,
            role,
            password_stdin,
        } => {
            let role: Role = role.parse()?;
            users::validate_name("user", &name)?;
            let pw = read_password(password_stdin, min_len)?;
            let hash = password::hash(&pw).map_err(|e| anyhow::anyhow!(e))?;
            let user = store.with_conn(|c| {
                let result = users::insert(c, &name, role, &hash);
                record(
                    c,
                    "user.create",
                    &name,
                    &result.as_ref().map(|_| ()).map_err(|e| e.to_string()),
                )?;
                result
            })?;
            println!("created user {} with role {}", user.name, user.role);
            Ok(())
        }
        Command::List { json } => {
            let list = store.with_conn(|c| users::list(c).map_err(AuthError::from))?;
            if json {
                println!("{}", serde_json::to_string_pretty(&list)?);
            } else {
                println!("{:<24} {:<8} {:<9} GROUPS", "NAME", "ROLE", "STATE");
                for u in list {
                    let state = if u.disabled { "disabled" } else { "active" };
                    println!(
                        "{:<24} {:<8} {:<9} {}",
                        u.name,
                        u.role,
                        state,
                        u.groups.join(",")
                    );
                }
            }
            Ok(())
        }
        Command::Passwd {
            name,
            password_stdin,
        } => {
            let creds = store
                .with_conn(|c| users::credentials_by_name(c, &name).map_err(AuthError::from))?
                .ok_or_else(|| anyhow::anyhow!("no user named {name:?}"))?;
            let pw = read_password(password_stdin, min_len)?;
            let hash = password::hash(&pw).map_err(|e| anyhow::anyhow!(e))?;
            store.with_conn(|c| {
                users::set_password(c, creds.id, &hash)?;
                record(c, "user.update", &name, &Ok(()))
            })?;
            println!(
                "password of {} changed; their sessions have ended",
                creds.name
            );
            Ok(())
        }
        Command::Remove { name } => {
            store.with_conn(|c| {
                let creds = users::credentials_by_name(c, &name)?
                    .ok_or_else(|| AuthError::NotFound(format!("no user named {name:?}")))?;
                if creds.role == Role::Admin && !creds.disabled && users::enabled_admins(c)? <= 1 {
                    return Err(AuthError::Conflict(format!(
                        "{name:?} is the last enabled admin; make another admin first"
                    )));
                }
                users::delete(c, creds.id)?;
                record(c, "user.delete", &name, &Ok(()))
            })?;
            println!("removed user {name}");
            Ok(())
        }
    };
    if config.volume.required() {
        // The daemon is not told of changes made here; the admins who may unlock are.
        store
            .with_conn(|c| {
                Ok::<_, AuthError>(crate::auth::unlockers::export(c, &volumes.unlockers_file()))
            })?
            .map_err(|e| anyhow::anyhow!(e))?;
    }
    outcome
}

/// Audits a local administrator's change under `local:<unix user>`.
pub(super) fn record(
    conn: &rusqlite::Connection,
    action: &'static str,
    target: &str,
    result: &Result<(), String>,
) -> Result<(), AuthError> {
    let uid = nix::unistd::getuid();
    let who = nix::unistd::User::from_uid(uid)
        .ok()
        .flatten()
        .map_or_else(|| uid.to_string(), |u| u.name);
    let event = AuditEvent {
        actor: Some(format!("local:{who}")),
        action,
        target: Some(target.to_string()),
        outcome: if result.is_ok() {
            Outcome::Allowed
        } else {
            Outcome::Failed
        },
        source: Some("cli".into()),
        detail: result.as_ref().err().cloned(),
    };
    audit::record(conn, &event)?;
    Ok(())
}

fn read_password(from_stdin: bool, min_len: usize) -> anyhow::Result<String> {
    let password = if from_stdin {
        let mut line = String::new();
        std::io::stdin().lock().read_line(&mut line)?;
        line.trim_end_matches(['\r', '\n']).to_string()
    } else {
        if !std::io::stdin().is_terminal() {
            bail!("no terminal to ask for the password on; pipe it in with --password-stdin");
        }
        let first = rpassword::prompt_password("New password: ")?;
        check_password_policy(&first, min_len)?;
        let second = rpassword::prompt_password("Repeat it: ")?;
        if first != second {
            bail!("the two passwords differ; nothing was changed");
        }
        first
    };
    check_password_policy(&password, min_len)?;
    Ok(password)
}
