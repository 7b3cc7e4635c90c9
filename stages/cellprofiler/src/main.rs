//! `pf-cellprofiler`: parse arguments, run, print the whole error chain, map it to an exit code
//! (2 = bad usage or input, 1 = runtime failure).

use clap::Parser;

fn main() -> std::process::ExitCode {
    let cli = pf_cellprofiler::args::Cli::parse();
    match pf_cellprofiler::run(cli) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            eprintln!(
                "pf-cellprofiler: error: {}",
                phenoflow_schemas::chain_message(error.chain())
            );
            std::process::ExitCode::from(pf_cellprofiler::exit_code(&error))
        }
    }
}
