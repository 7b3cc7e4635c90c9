//! `pf-preprocess`: the stage kit parses its arguments, runs it, prints the whole error chain and
//! maps it to an exit code (2 = bad usage or input, 1 = a failure of the machine).

/// Each field allocates and frees plane-sized buffers and crops; glibc's malloc returns such
/// large blocks to the kernel, so every field faulted in and zeroed fresh pages. mimalloc keeps
/// and reuses them.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    phenoflow_kit::main(
        "pf-preprocess",
        pf_preprocess::run,
        pf_preprocess::is_input_error,
    )
}
