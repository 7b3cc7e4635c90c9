//! `pf-report`: parse arguments, run, print the whole error chain, map it to an exit code
//! (2 = bad usage or input, 1 = runtime failure).

use clap::Parser;

fn main() -> std::process::ExitCode {
    let cli = pf_report::args::Cli::parse();
    match pf_report::run(cli) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            eprintln!(
                "pf-report: error: {}",
                phenoflow_schemas::chain_message(error.chain())
            );
            std::process::ExitCode::from(pf_report::exit_code(&error))
        }
    }
}
