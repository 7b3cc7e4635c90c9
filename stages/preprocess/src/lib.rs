//! `pf-preprocess`: from microscopy files to a `cells` Parquet table of single-cell tensors.
//!
//! Three layouts share one output path ([`sink`]): raw BBBC021-style fields with nucleus
//! detection ([`fields`]), pre-cropped `.npy` cells ([`singlecell`]) and whole fields resized
//! to N×N ([`fields`]). Every argument is resolved and every table is read and checked before
//! any image is opened.

pub mod args;
pub mod csv_table;
pub mod error;
pub mod fields;
pub mod filters;
pub mod geometry;
pub mod image_io;
pub mod layout;
pub mod nuclei;
pub mod settings;
pub mod singlecell;
pub mod sink;

use std::path::Path;

use phenoflow_schemas::{Provenance, TableKind};

use crate::args::{Cli, CommonArgs, Mode};
use crate::error::PreprocessError;
use crate::sink::RunCounts;

/// The stage's name as recorded in provenance.
pub const STAGE: &str = "pf-preprocess";

/// Runs the stage.
pub fn run(cli: Cli) -> anyhow::Result<()> {
    let common = match &cli.mode {
        Mode::Bbbc021(args) => &args.common,
        Mode::Singlecell(args) => &args.common,
        Mode::Whole(args) => &args.common,
    };
    common.threads.install()?;
    let mut inputs: Vec<&Path> = Vec::new();
    let mut outputs: Vec<(&str, &Path)> = vec![("--output", &common.output)];
    let metadata;
    match &cli.mode {
        Mode::Bbbc021(args) => {
            inputs.extend([args.table.image_csv.as_path(), args.moa_csv.as_path()]);
            inputs.extend(args.centers.as_deref());
            outputs.extend(args.table.manifest.as_deref().map(|m| ("--manifest", m)));
        }
        Mode::Whole(args) => {
            inputs.push(&args.table.image_csv);
            inputs.extend(args.moa_csv.as_deref());
            outputs.extend(args.table.manifest.as_deref().map(|m| ("--manifest", m)));
        }
        Mode::Singlecell(args) => {
            metadata = args.metadata_path();
            inputs.push(&metadata);
        }
    }
    phenoflow_schemas::check_outputs_are_not_inputs(&outputs, &inputs)?;
    let started = std::time::Instant::now();
    let counts = match &cli.mode {
        Mode::Bbbc021(args) => fields::run_bbbc021(args)?,
        Mode::Whole(args) => fields::run_whole(args)?,
        Mode::Singlecell(args) => singlecell::run(args)?,
    };
    report(common, &counts, started.elapsed().as_secs_f64());
    Ok(())
}

fn report(common: &CommonArgs, counts: &RunCounts, seconds: f64) {
    eprintln!(
        "pf-preprocess: wrote {} cells from {} items to {} in {:.1} s ({:.0} cells/s); {} items skipped as bad, {} cells skipped at the edge",
        counts.n_cells,
        counts.n_items,
        common.output.display(),
        seconds,
        counts.n_cells as f64 / seconds.max(1e-9),
        counts.n_skipped_items,
        counts.n_edge_skipped,
    );
}

/// A provenance record for a `cells` (or manifest) table with the hashes of the given inputs.
pub(crate) fn provenance(
    table: TableKind,
    params: &impl serde::Serialize,
    inputs: &[&Path],
) -> anyhow::Result<Provenance> {
    phenoflow_kit::provenance(table, STAGE, env!("CARGO_PKG_VERSION"), params, inputs)
}

/// What this stage's own errors count as bad input (exit 2; see `phenoflow_kit::main`).
pub fn is_input_error(cause: &(dyn std::error::Error + 'static)) -> bool {
    cause
        .downcast_ref::<PreprocessError>()
        .is_some_and(PreprocessError::is_bad_input)
}
