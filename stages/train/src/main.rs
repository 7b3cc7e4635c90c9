//! `pf-train`: the stage kit parses its arguments, runs it, prints the whole error chain and
//! maps it to an exit code (2 = bad usage or input, 1 = a failure of the machine).

fn main() -> std::process::ExitCode {
    // `--list-devices` takes no other argument (clap refuses it with any), so it is answered
    // before clap asks for the training arguments it otherwise requires.
    if std::env::args_os().skip(1).eq(["--list-devices"]) {
        println!("{}", pf_train::describe_devices());
        return std::process::ExitCode::SUCCESS;
    }
    if let Some(message) = pf_train::missing_track(std::env::args_os().skip(1)) {
        eprintln!("pf-train: error: {message}");
        return std::process::ExitCode::from(2);
    }
    phenoflow_kit::main("pf-train", pf_train::run, pf_train::is_input_error)
}
