//! `pf-report`: the stage kit parses its arguments, runs it, prints the whole error chain and
//! maps it to an exit code (2 = bad usage or input, 1 = a failure of the machine).

fn main() -> std::process::ExitCode {
    phenoflow_kit::main(
        "pf-report",
        pf_report::run,
        phenoflow_kit::no_stage_input_errors,
    )
}
