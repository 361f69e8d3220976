//! `sparkbrain config default|check`.

use std::path::{Path, PathBuf};

use crate::config::{self, DEFAULT_CONFIG, FileChoice, Overrides};

/// Configuration subcommands.
#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// Print the built-in default configuration, with a comment on every key
    Default,
    /// Validate a configuration (FILE, else --config, else /etc/sparkbrain/config.toml) and the SPARKBRAIN_* environment without starting
    Check {
        /// The file to check
        file: Option<PathBuf>,
    },
}

/// Runs a configuration subcommand.
pub fn run(global: Option<&Path>, cmd: Command) -> anyhow::Result<()> {
    match cmd {
        Command::Default => {
            print!("{DEFAULT_CONFIG}");
            Ok(())
        }
        Command::Check { file } => {
            let choice = match file.as_deref().or(global) {
                Some(p) => FileChoice::Explicit(p.to_path_buf()),
                None => FileChoice::System,
            };
            let loaded = config::load(&choice, &Overrides::default())?;
            let source = loaded.file.map_or_else(
                || "built-in default (no file)".to_string(),
                |p| p.display().to_string(),
            );
            let c = &loaded.config;
            println!("{source}: OK");
            println!("  data_dir     {}", c.data_dir.display());
            println!(
                "  server.bind  {} ({})",
                c.server.bind,
                if c.uses_tls() {
                    "TLS 1.3"
                } else {
                    "plain HTTP, loopback only"
                }
            );
            Ok(())
        }
    }
}
