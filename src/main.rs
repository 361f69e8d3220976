use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = sparkbrain::cli::Cli::parse();
    match sparkbrain::cli::run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("sparkbrain: error: {err:#}");
            ExitCode::from(sparkbrain::cli::exit_code(&err))
        }
    }
}
