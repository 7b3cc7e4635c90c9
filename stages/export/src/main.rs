//! `pf-export`: parse arguments, run, print the whole error chain, map it to an exit code
//! (2 = bad usage or input, 1 = runtime failure).

use clap::Parser;

fn main() -> std::process::ExitCode {
    let cli = pf_export::args::Cli::parse();
    match pf_export::run(cli) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            eprintln!(
                "pf-export: error: {}",
                phenoflow_schemas::chain_message(error.chain())
            );
            std::process::ExitCode::from(pf_export::exit_code(&error))
        }
    }
}
