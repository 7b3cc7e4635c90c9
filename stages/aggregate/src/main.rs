//! `pf-aggregate`: the stage kit parses its arguments, runs it, prints the whole error chain and
//! maps it to an exit code (2 = bad usage or input, 1 = a failure of the machine).

/// Polars allocates and frees a buffer per column per morsel; glibc's malloc hands such large
/// buffers back to the kernel each time, so every morsel faults in and zeroes fresh pages (a
/// fifth of the run). mimalloc keeps and reuses them, as the Polars authors recommend.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    // Polars memory-maps local Parquet files unless its async reader is forced; the map makes
    // the whole input resident (2.4x the table's size for 500k cells x 256 features), the async
    // reader streams it (0.9x) at the same speed. A row group of an embedding table holds
    // millions of values (65,536 cells x 256 features = 16.8M), which is one decoding task under
    // Polars' default target of 16.8M values per thread, leaving a core idle at the start and
    // end of the scan; with 1M values per task the columns of a row group are decoded in
    // parallel (0.81 s -> 0.67 s on 2 cores for 500k x 256). Set before any thread starts; a
    // user's own settings win.
    for (name, value) in [
        ("POLARS_FORCE_ASYNC", "1"),
        ("POLARS_PARQUET_DECODE_TARGET_VALUES_PER_THREAD", "1048576"),
    ] {
        if std::env::var_os(name).is_none() {
            std::env::set_var(name, value);
        }
    }
    phenoflow_kit::main(
        "pf-aggregate",
        pf_aggregate::run,
        phenoflow_kit::no_stage_input_errors,
    )
}
