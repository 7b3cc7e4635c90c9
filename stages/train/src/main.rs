//! `pf-train`: parse arguments, run, print the whole error chain, map it to an exit code
//! (2 = bad usage or input, 1 = runtime failure).

use clap::Parser;

fn main() -> std::process::ExitCode {
    // `--list-devices` takes no other argument (clap refuses it with any), so it is answered
    // before clap asks for the training arguments it otherwise requires.
    if std::env::args_os().skip(1).eq(["--list-devices"]) {
        println!("{}", pf_train::describe_devices());
        return std::process::ExitCode::SUCCESS;
    }
    let cli = pf_train::args::Cli::parse();
    match pf_train::run(cli) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            eprintln!(
                "pf-train: error: {}",
                phenoflow_schemas::chain_message(error.chain())
            );
            std::process::ExitCode::from(pf_train::exit_code(&error))
        }
    }
}
