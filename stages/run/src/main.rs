//! `pf-run`: the stage kit parses its arguments, runs it, prints the whole error chain and maps
//! it to an exit code (2 = bad usage or pipeline file, 1 = a step failed); `pf-run __stage` is
//! the wrapper each step runs under.

fn main() -> std::process::ExitCode {
    let arguments: Vec<std::ffi::OsString> = std::env::args_os().collect();
    if arguments.get(1).is_some_and(|a| a == pf_run::STAGE_WRAPPER) {
        return pf_run::exec_stage(&arguments[2..]);
    }
    phenoflow_kit::main("pf-run", pf_run::run, pf_run::is_input_error)
}
