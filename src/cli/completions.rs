//! `sparkbrain completions SHELL` and `sparkbrain man`, generated from the same clap definitions.

use clap::CommandFactory;

use super::Cli;

/// Arguments of `completions`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The shell to generate for
    #[arg(value_enum)]
    shell: clap_complete::Shell,
}

/// Prints the completion script.
pub fn completions(args: Args) -> anyhow::Result<()> {
    let mut cmd = Cli::command();
    clap_complete::generate(args.shell, &mut cmd, "sparkbrain", &mut std::io::stdout());
    Ok(())
}

/// Prints the man page; its SUBCOMMANDS section lists every subcommand with its help.
pub fn man() -> anyhow::Result<()> {
    clap_mangen::Man::new(Cli::command()).render(&mut std::io::stdout().lock())?;
    Ok(())
}
