//! `pf-run`: parse arguments, run, print the whole error chain, map it to an exit code
//! (2 = bad usage or pipeline file, 1 = a step failed).

use clap::Parser;

fn main() -> std::process::ExitCode {
    let arguments: Vec<std::ffi::OsString> = std::env::args_os().collect();
    if arguments.get(1).is_some_and(|a| a == pf_run::STAGE_WRAPPER) {
        return pf_run::exec_stage(&arguments[2..]);
    }
    let cli = pf_run::args::Cli::parse();
    match pf_run::run(cli) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            eprintln!(
                "pf-run: error: {}",
                phenoflow_schemas::chain_message(error.chain())
            );
            std::process::ExitCode::from(pf_run::exit_code(&error))
        }
    }
}
