//! `pf-preprocess`: parse arguments, run, print the whole error chain, map it to an exit code
//! (2 = bad usage or input, 1 = runtime failure).

use clap::Parser;

/// Each field allocates and frees plane-sized buffers and crops; glibc's malloc returns such
/// large blocks to the kernel, so every field faulted in and zeroed fresh pages. mimalloc keeps
/// and reuses them.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    let cli = pf_preprocess::args::Cli::parse();
    match pf_preprocess::run(cli) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            eprintln!(
                "pf-preprocess: error: {}",
                phenoflow_schemas::chain_message(error.chain())
            );
            std::process::ExitCode::from(pf_preprocess::exit_code(&error))
        }
    }
}
