//! `pf-synth`: parse arguments, run, print the whole error chain, map it to an exit code
//! (2 = bad usage, 1 = runtime failure).

use clap::Parser;

fn main() -> std::process::ExitCode {
    let cli = pf_synth::args::Cli::parse();
    match pf_synth::run(cli) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("pf-synth: error: {error:#}");
            std::process::ExitCode::from(pf_synth::exit_code(&error))
        }
    }
}
