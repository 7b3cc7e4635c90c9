//! `pf-baseline`: parse arguments, run, print the whole error chain, map it to an exit code
//! (2 = bad usage or input, 1 = runtime failure).

use clap::Parser;

fn main() -> std::process::ExitCode {
    let cli = pf_baseline::Cli::parse();
    match pf_baseline::run(cli) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            eprintln!(
                "pf-baseline: error: {}",
                phenoflow_schemas::chain_message(error.chain())
            );
            std::process::ExitCode::from(pf_baseline::exit_code(&error))
        }
    }
}
