//! `pf-aggregate`: single-cell (or well-level) profiles → well profiles → treatment profiles.
//!
//! Cells → wells is the part that sees every cell: the mean of Parquet cells is read straight
//! into float64 sums (`means.rs`), everything else runs in Polars (lazy scan of Parquet or CSV,
//! projection to the keys and features, group-by on plate + well). Wells → treatments, and
//! the optional well-level normalisation against control wells, run on the small well table in
//! plain Rust. Both outputs are written through `phenoflow-schemas`, so they are checked like
//! every other table.

pub mod args;
pub mod controls;
mod features;
mod input;
mod mapped;
mod means;
pub mod normalize;
mod output;
pub mod platemap;
pub mod select;
pub mod settings;
mod treatments;
mod wells;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use phenoflow_schemas::{
    check_outputs_are_not_inputs, concentration_key, hash_file, InputError, MoaTable,
};
use polars::prelude::LazyFrame;

use crate::args::Selection;
use crate::args::{Aggregation, Cli, InputLevel, PositiveControls};
use crate::features::{drop_na_columns, read_blocklist, select_features, MissingReport};
use crate::input::{
    check_no_duplicate_cells, check_no_null_features, check_row_groups, resolve_columns,
    scan_inputs,
};
use crate::output::{provenance, write_treatments, write_wells};
use crate::platemap::PlateMap;
use crate::settings::{Found, Params};
use crate::treatments::aggregate_treatments;
use crate::wells::{collect_wells, normalize_wells, well_frame, wells_by_plate_chunks, Wells};

pub(crate) fn input_error(message: String) -> anyhow::Error {
    InputError(message).into()
}

/// Runs the stage: resolve the settings, read the wells, compute, write.
pub fn run(cli: Cli) -> anyhow::Result<()> {
    let started = std::time::Instant::now();
    let params = Params::of(&cli);
    let inputs = Inputs::open(&cli)?;
    let (mut wells, mut found, missing) = read_wells(
        &cli,
        inputs.frame,
        inputs.platemap.as_ref(),
        inputs.moa_table.as_ref(),
    )?;
    set_aside_positive_controls(&cli, &mut wells, &mut found);
    check_every_treatment_has_wells(&cli, &wells, inputs.moa_table.as_ref(), &found)?;
    let normalization = normalize_wells(&mut wells, &cli)?;
    found.tvn_shrinkage = normalization.tvn.map(|fit| fit.shrinkage);
    found.tvn_epsilon = normalization.tvn.map(|fit| fit.epsilon);
    found.floored_plates = normalization.floored_plates;
    found.features_dropped = select_features(&mut wells, &cli, &missing, &inputs.blocklist)?;
    let treatments = aggregate_treatments(&wells, cli.well_aggregation)?;
    let provenance = provenance(&cli, &params, &found, inputs.hasher)?;
    write_wells(&cli.wells, &wells, &provenance)?;
    write_treatments(
        &cli.treatments,
        &treatments,
        &wells.feature_names,
        &provenance,
    )?;
    eprintln!(
        "pf-aggregate: {} wells and {} treatments ({} features) written to {} and {} in {:.2} s",
        wells.plate.len(),
        treatments.compound.len(),
        wells.feature_names.len(),
        cli.wells.display(),
        cli.treatments.display(),
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

/// The content hashes of the inputs, computed on a thread of their own while the cells are
/// aggregated (hashing a large input is otherwise a third of the run), read through memory-mapped
/// windows where a file can be mapped (`mapped.rs`).
pub(crate) type Hasher =
    std::thread::JoinHandle<Result<Vec<(String, String)>, phenoflow_schemas::SchemaError>>;

/// Everything the run reads before it aggregates: checked, and the cells' scan set up.
struct Inputs {
    moa_table: Option<MoaTable>,
    blocklist: Vec<String>,
    platemap: Option<PlateMap>,
    frame: LazyFrame,
    hasher: Hasher,
}

impl Inputs {
    fn open(cli: &Cli) -> anyhow::Result<Self> {
        let inputs: Vec<&Path> = cli
            .input
            .iter()
            .chain(cli.moa_csv.iter())
            .chain(cli.platemap.iter())
            .map(PathBuf::as_path)
            .collect();
        check_outputs_are_not_inputs(
            &[("--wells", &cli.wells), ("--treatments", &cli.treatments)],
            &inputs,
        )?;
        let moa_table = cli.moa_csv.as_deref().map(MoaTable::read).transpose()?;
        let blocklist = read_blocklist(cli)?;
        let platemap = PlateMap::read(cli)?;
        let frame = scan_inputs(cli)?;
        let hashed: Vec<PathBuf> = inputs.into_iter().map(Path::to_path_buf).collect();
        let hasher = std::thread::spawn(move || {
            hashed
                .into_iter()
                .map(|path| {
                    let hash = match crate::mapped::hash_mapped(&path) {
                        Some(hash) => hash,
                        None => hash_file(&path)?,
                    };
                    Ok((path.display().to_string(), hash))
                })
                .collect()
        });
        Ok(Self {
            moa_table,
            blocklist,
            platemap,
            frame,
            hasher,
        })
    }
}

/// Cells (or wells) → the well table: the columns resolved and checked, `drop-na-columns` on the
/// cells, the aggregate, the plate map and MoA table joined; every well has a MoA.
fn read_wells(
    cli: &Cli,
    mut frame: LazyFrame,
    platemap: Option<&PlateMap>,
    moa_table: Option<&MoaTable>,
) -> anyhow::Result<(Wells, Found, MissingReport)> {
    let schema = frame.collect_schema().map_err(|error| {
        input_error(format!(
            "{}: cannot read the columns: {error}",
            cli.input
                .iter()
                .map(|p| p.display().to_string())
                .collect::<Vec<_>>()
                .join(", ")
        ))
    })?;
    let schema = match platemap {
        Some(platemap) => {
            let annotated = platemap.annotated_schema(cli, &schema)?;
            eprintln!(
                "pf-aggregate: wells annotated from {} ({})",
                platemap.path.display(),
                platemap.describe()
            );
            Arc::new(annotated)
        }
        None => schema,
    };
    let (map, features) = resolve_columns(cli, &schema)?;
    check_row_groups(cli, &map, &features)?;
    let (features, missing) = if cli.feature_select.contains(&Selection::DropNaColumns) {
        drop_na_columns(&frame, features, cli.na_cutoff)?
    } else {
        check_no_null_features(cli, &features)?;
        (features, MissingReport::default())
    };
    // Only the median holds its values; the mean's running sums stream in bounded memory (745 MB
    // for that 2.3 GB table, 0.9× for 500k × 256 float32), and chunking would slow it by a third.
    let (well_frame, engine) =
        if cli.level == InputLevel::Cells && cli.cell_aggregation == Aggregation::Median {
            (
                wells_by_plate_chunks(cli, frame.clone(), &map, &features, platemap)?,
                "polars",
            )
        } else {
            well_frame(cli, frame.clone(), &map, &features, platemap)?
        };
    // The direct reader checks every cell's identity in its own pass (`means.rs`).
    if cli.level == InputLevel::Cells && engine != crate::means::ENGINE {
        check_no_duplicate_cells(&frame, &map, &schema)?;
    }
    let wells = collect_wells(cli, platemap, &well_frame, &map, &features, moa_table)?;
    drop(well_frame);
    if let Some((row, _)) = wells.moa.iter().enumerate().find(|(_, moa)| moa.is_none()) {
        return Err(input_error(format!(
            "well {}/{}: treatment ({}, {}) has no MoA{}",
            wells.plate[row],
            wells.well[row],
            wells.compound[row],
            wells.concentration[row],
            if moa_table.is_some() {
                " in --moa-csv"
            } else {
                ""
            }
        )));
    }
    let found = Found {
        columns: vec![
            Some(map.plate),
            Some(map.well),
            Some(map.compound),
            Some(map.concentration),
            map.moa,
            map.batch,
        ],
        platemap_columns: platemap.map(PlateMap::describe),
        cell_engine: (cli.level == InputLevel::Cells).then_some(engine),
        ..Found::default()
    };
    Ok((wells, found, missing))
}

/// Positive-control wells (a treatment at the same positions on every plate) are left out, or
/// kept with `--positive-controls keep`; either way the provenance names them.
fn set_aside_positive_controls(cli: &Cli, wells: &mut Wells, found: &mut Found) {
    let plate_controls = controls::find(wells, &cli.control);
    found.positive_control_treatments = plate_controls.describe();
    if plate_controls.wells.is_empty() {
        return;
    }
    match cli.positive_controls {
        PositiveControls::Drop => {
            wells.remove(&plate_controls.wells);
            found.positive_control_wells = plate_controls.wells.len();
            eprintln!(
                "pf-aggregate: {} positive-control well(s) left out (--positive-controls keep to keep them): {}",
                plate_controls.wells.len(),
                plate_controls.describe().join("; ")
            );
        }
        PositiveControls::Keep => eprintln!(
            "pf-aggregate: {} positive-control well(s) kept as treatment wells: {}",
            plate_controls.wells.len(),
            plate_controls.describe().join("; ")
        ),
    }
}

/// Every treatment of the MoA table has wells, unless `--allow-missing-treatments`.
fn check_every_treatment_has_wells(
    cli: &Cli,
    wells: &Wells,
    moa_table: Option<&MoaTable>,
    found: &Found,
) -> anyhow::Result<()> {
    let Some(table) = moa_table else {
        return Ok(());
    };
    let present: BTreeSet<(String, i64)> = wells
        .compound
        .iter()
        .zip(&wells.concentration)
        .map(|(c, k)| (c.clone(), concentration_key(*k)))
        .collect();
    let missing: Vec<String> = table
        .treatments()
        .filter(|(c, k, _)| !present.contains(&(c.to_string(), concentration_key(*k))))
        .map(|(c, k, _)| format!("({c}, {k})"))
        .collect();
    if missing.is_empty() || cli.allow_missing_treatments {
        return Ok(());
    }
    Err(input_error(format!(
        "{} treatment(s) of the MoA table have no wells: {} (pass --allow-missing-treatments for a partial screen){}",
        missing.len(),
        missing.iter().take(10).cloned().collect::<Vec<_>>().join(", "),
        if found.positive_control_wells > 0 {
            "; positive-control wells were left out (--positive-controls keep counts them)"
        } else {
            ""
        }
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn treatments_take_the_median_of_their_wells_and_join_batches() {
        let wells = Wells {
            plate: vec!["W1_1".into(), "W2_1".into(), "W3_1".into(), "W1_1".into()],
            well: vec!["B02".into(), "B02".into(), "B02".into(), "B03".into()],
            compound: vec![
                "taxol".into(),
                "taxol".into(),
                "taxol".into(),
                "DMSO".into(),
            ],
            concentration: vec![0.3, 0.3, 0.3, 0.0],
            moa: vec![
                Some("MS".into()),
                Some("MS".into()),
                Some("MS".into()),
                Some("DMSO".into()),
            ],
            batch: vec!["W1".into(), "W2".into(), "W3".into(), "W1".into()],
            count: vec![10, 10, 10, 10],
            feature_names: vec!["Cells_a".into()],
            features: vec![vec![1.0], vec![5.0], vec![2.0], vec![0.0]],
        };
        let treatments = aggregate_treatments(&wells, Aggregation::Median).unwrap();
        assert_eq!(treatments.compound, vec!["DMSO", "taxol"]);
        assert_eq!(treatments.features[1], vec![2.0]);
        assert_eq!(treatments.batches[1], "W1;W2;W3");
        assert_eq!(treatments.count, vec![1, 3]);
    }
}
