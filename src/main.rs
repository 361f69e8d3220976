use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = sparkbrain::cli::Cli::parse();
    match sparkbrain::cli::run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        // `sparkbrain man | head`: the reader leaving early is not an error.
        Err(err)
            if err
                .downcast_ref::<std::io::Error>()
                .is_some_and(|e| e.kind() == std::io::ErrorKind::BrokenPipe) =>
        {
            ExitCode::SUCCESS
        }
        Err(err) => {
            eprintln!("sparkbrain: error: {err:#}");
            ExitCode::from(sparkbrain::cli::exit_code(&err))
        }
    }
}
