//! Cells → wells: the Polars group-by that sees every cell (per plate chunk, so memory stays flat),
//! collected into the well table, and the optional well-level normalisation against controls.

use std::collections::{BTreeMap, BTreeSet};

use anyhow::Context;
use phenoflow_schemas::{batch_of_plate, MoaTable};
use polars::prelude::{
    col, len, DataFrame, DataType as PlDataType, Engine, Expr, IntoLazy, LazyFrame,
    SortMultipleOptions,
};

use crate::args::Selection;
use crate::args::{Aggregation, CellEngine, Cli, InputLevel};
use crate::input::ColumnMap;
use crate::input_error;
use crate::means;
use crate::normalize;
use crate::normalize::Normalization;
use crate::platemap::PlateMap;

/// Well profiles, row-major features, in (plate, well) order.
#[derive(Debug, Clone, Default)]
pub struct Wells {
    pub plate: Vec<String>,
    pub well: Vec<String>,
    pub compound: Vec<String>,
    pub concentration: Vec<f64>,
    pub moa: Vec<Option<String>>,
    pub batch: Vec<String>,
    pub count: Vec<i64>,
    pub feature_names: Vec<String>,
    pub features: Vec<Vec<f64>>,
}

impl Wells {
    /// Removes the rows at `rows` (ascending indices).
    pub fn remove(&mut self, rows: &[usize]) {
        let drop: BTreeSet<usize> = rows.iter().copied().collect();
        let keep = |index: &usize| !drop.contains(index);
        retain_positions(&mut self.plate, keep);
        retain_positions(&mut self.well, keep);
        retain_positions(&mut self.compound, keep);
        retain_positions(&mut self.concentration, keep);
        retain_positions(&mut self.moa, keep);
        retain_positions(&mut self.batch, keep);
        retain_positions(&mut self.count, keep);
        retain_positions(&mut self.features, keep);
    }

    /// Removes the feature columns at `columns`, from the names and from every row.
    pub fn remove_features(&mut self, columns: &[usize]) {
        let drop: BTreeSet<usize> = columns.iter().copied().collect();
        let keep = |index: &usize| !drop.contains(index);
        retain_positions(&mut self.feature_names, keep);
        for row in &mut self.features {
            retain_positions(row, keep);
        }
    }
}

/// One feature's cells → well aggregate. NaN in a float feature: with `nan_is_missing`
/// (`--feature-select drop-na-columns`) it is skipped like a null; otherwise it makes the well's
/// value NaN, which `collect_wells` reports (the mean does so by itself; Polars' median would
/// sort NaN last and return a biased number without a word).
pub(crate) fn aggregate_expr(
    name: &str,
    aggregation: Aggregation,
    is_float: bool,
    nan_is_missing: bool,
) -> Expr {
    // No cast to float64 before aggregating: it would materialise a float64 copy of every
    // feature column (twice the input in memory); Polars sums float32 columns in float64.
    let column = if is_float && nan_is_missing {
        col(name).fill_nan(polars::prelude::lit(polars::prelude::NULL))
    } else {
        col(name)
    };
    match aggregation {
        Aggregation::Mean => column.mean(),
        Aggregation::Median if is_float && !nan_is_missing => {
            polars::prelude::when(col(name).is_nan().any(true))
                .then(polars::prelude::lit(f64::NAN))
                .otherwise(column.median())
        }
        Aggregation::Median => column.median(),
    }
    .alias(name)
}

/// Cells → wells (read straight into running sums, or by Polars' group-by), or the well table as
/// it is (`--level wells`); with the engine that computed the cells' aggregate.
pub(crate) fn well_frame(
    cli: &Cli,
    frame: LazyFrame,
    map: &ColumnMap,
    features: &[String],
    platemap: Option<&PlateMap>,
) -> anyhow::Result<(DataFrame, &'static str)> {
    // Everything that must be constant within a well is part of the group key: a well holding
    // two compounds (or concentrations, MoAs, batches) comes out as two rows of one well, which
    // `collect_wells` reports. (Aggregating such columns with `first()` would also force Polars'
    // in-memory fallback instead of the streaming group-by.)
    let mut key_names = vec![map.plate.as_str(), map.well.as_str()];
    // With --platemap the treatment comes from the plate map, joined after the group-by.
    if platemap.is_none() {
        key_names.extend([map.compound.as_str(), map.concentration.as_str()]);
    }
    key_names.extend(map.moa.as_deref());
    key_names.extend(map.batch.as_deref());
    let key_exprs: Vec<Expr> = key_names.iter().map(|name| col(*name)).collect();
    let mut aggs: Vec<Expr> = Vec::new();
    let mut frame = frame;
    let schema = frame
        .collect_schema()
        .context("reading the input's columns")?;
    let nan_is_missing = cli.feature_select.contains(&Selection::DropNaColumns);
    let direct = match (cli.level, cli.cell_aggregation, cli.engine) {
        (InputLevel::Cells, Aggregation::Mean, CellEngine::Auto) if !nan_is_missing => {
            means::well_means(
                &cli.input,
                &key_names,
                features,
                phenoflow_schemas::columns::COUNT_CELLS,
            )?
        }
        _ => None,
    };
    let engine = if direct.is_some() {
        means::ENGINE
    } else {
        "polars"
    };
    let grouped = match (cli.level, direct) {
        (_, Some(grouped)) => grouped.lazy(),
        (InputLevel::Cells, None) => {
            aggs.push(len().alias(phenoflow_schemas::columns::COUNT_CELLS));
            aggs.extend(features.iter().map(|name| {
                let is_float = matches!(
                    schema.get(name.as_str()),
                    Some(PlDataType::Float32 | PlDataType::Float64)
                );
                aggregate_expr(name, cli.cell_aggregation, is_float, nan_is_missing)
            }));
            frame.group_by(key_exprs.clone()).agg(aggs)
        }
        (InputLevel::Wells, None) => {
            // Already one row per well: a well appearing twice is an error found below.
            aggs.push(len().alias("__rows"));
            aggs.extend(
                features
                    .iter()
                    .map(|name| col(name.as_str()).min().alias(name.as_str())),
            );
            frame.group_by(key_exprs.clone()).agg(aggs)
        }
    };
    let grouped = match platemap {
        Some(platemap) => platemap.join(grouped, map),
        None => grouped,
    };
    let mut renamed = vec![
        (map.plate.as_str(), phenoflow_schemas::columns::PLATE),
        (map.well.as_str(), phenoflow_schemas::columns::WELL),
        (map.compound.as_str(), phenoflow_schemas::columns::COMPOUND),
        (
            map.concentration.as_str(),
            phenoflow_schemas::columns::CONCENTRATION,
        ),
    ];
    renamed.extend(
        map.moa
            .as_deref()
            .map(|moa| (moa, phenoflow_schemas::columns::MOA)),
    );
    renamed.extend(
        map.batch
            .as_deref()
            .map(|batch| (batch, phenoflow_schemas::columns::BATCH)),
    );
    renamed.retain(|(from, to)| from != to);
    // The streaming engine reads the input in morsels and keeps only per-well running
    // aggregates, so memory does not grow with the number of cells.
    let wells = grouped
        .sort(
            [map.plate.as_str(), map.well.as_str()],
            SortMultipleOptions::default(),
        )
        .rename(
            renamed.iter().map(|(from, _)| *from),
            renamed.iter().map(|(_, to)| *to),
            true,
        )
        .collect_with_engine(Engine::Streaming)
        .map(|result| result.unwrap_single())
        .with_context(|| {
            format!(
                "aggregating {}",
                cli.input
                    .iter()
                    .map(|p| p.display().to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        })?;
    Ok((wells, engine))
}

pub(crate) fn strings(frame: &DataFrame, name: &str) -> anyhow::Result<Vec<Option<String>>> {
    let column = frame
        .column(name)?
        .cast(&polars::prelude::DataType::String)?;
    Ok(column.str()?.iter().map(|v| v.map(String::from)).collect())
}

pub(crate) fn floats(frame: &DataFrame, name: &str) -> anyhow::Result<Vec<Option<f64>>> {
    let column = frame
        .column(name)?
        .cast(&polars::prelude::DataType::Float64)?;
    Ok(column.f64()?.iter().collect())
}

/// Moves the Polars well frame into [`Wells`], checking every well.
pub(crate) fn collect_wells(
    cli: &Cli,
    platemap: Option<&PlateMap>,
    frame: &DataFrame,
    map: &ColumnMap,
    features: &[String],
    moa_table: Option<&MoaTable>,
) -> anyhow::Result<Wells> {
    let plates = strings(frame, phenoflow_schemas::columns::PLATE)?;
    let wells = strings(frame, phenoflow_schemas::columns::WELL)?;
    let compounds = strings(frame, phenoflow_schemas::columns::COMPOUND)?;
    let concentrations = floats(frame, phenoflow_schemas::columns::CONCENTRATION)?;
    let moas = if map.moa.is_some() {
        strings(frame, phenoflow_schemas::columns::MOA)?
    } else {
        vec![None; frame.height()]
    };
    let batches = if map.batch.is_some() {
        strings(frame, phenoflow_schemas::columns::BATCH)?
    } else {
        vec![None; frame.height()]
    };
    let counts: Vec<Option<f64>> = match cli.level {
        InputLevel::Cells => floats(frame, phenoflow_schemas::columns::COUNT_CELLS)?,
        InputLevel::Wells => floats(frame, "__rows")?,
    };
    let feature_columns: Vec<Vec<Option<f64>>> = features
        .iter()
        .map(|name| floats(frame, name))
        .collect::<anyhow::Result<_>>()?;
    let mut out = Wells {
        feature_names: features.to_vec(),
        ..Wells::default()
    };
    for row in 0..frame.height() {
        let plate = plates[row]
            .clone()
            .ok_or_else(|| input_error(format!("a row has no plate (`{}` is null)", map.plate)))?;
        let well = wells[row].clone().ok_or_else(|| {
            input_error(format!(
                "plate {plate}: a row has no well (`{}` is null)",
                map.well
            ))
        })?;
        let name = format!("well {plate}/{well}");
        let compound = compounds[row].clone().ok_or_else(|| match platemap {
            Some(platemap) => input_error(format!(
                "{name}: not in --platemap {} (no compound or concentration for it)",
                platemap.path.display()
            )),
            None => input_error(format!("{name}: no compound")),
        })?;
        if row > 0
            && plates[row - 1].as_ref() == Some(&plate)
            && wells[row - 1].as_ref() == Some(&well)
        {
            return Err(input_error(format!(
                "{name}: holds more than one compound, concentration, MoA or batch (rows disagree on `{}`, `{}`{}{})",
                map.compound,
                map.concentration,
                map.moa.as_deref().map(|m| format!(", `{m}`")).unwrap_or_default(),
                map.batch.as_deref().map(|b| format!(", `{b}`")).unwrap_or_default(),
            )));
        }
        if cli.level == InputLevel::Wells && counts[row].unwrap_or(1.0) > 1.0 {
            return Err(input_error(format!(
                "{name}: appears {} times in a well-level table",
                counts[row].unwrap_or(0.0)
            )));
        }
        let concentration =
            concentrations[row].ok_or_else(|| input_error(format!("{name}: no concentration")))?;
        let moa = match moa_table {
            Some(table) => table
                .moa(&compound, concentration)
                .map(String::from)
                .or_else(|| moas[row].clone()),
            None => moas[row].clone(),
        };
        let batch = batches[row]
            .clone()
            .unwrap_or_else(|| batch_of_plate(&plate));
        let mut values = Vec::with_capacity(features.len());
        for (feature, column) in features.iter().zip(&feature_columns) {
            match column[row] {
                Some(value) if value.is_finite() => values.push(value),
                _ => {
                    return Err(input_error(format!(
                        "{name}: feature `{feature}` is NaN, infinite or missing (the input has such a value in this well)"
                    )))
                }
            }
        }
        out.plate.push(plate);
        out.well.push(well);
        out.compound.push(compound);
        out.concentration.push(concentration);
        out.moa.push(moa);
        out.batch.push(batch);
        out.count.push(counts[row].unwrap_or(1.0) as i64);
        out.features.push(values);
    }
    if out.plate.is_empty() {
        return Err(input_error("the input has no rows".into()));
    }
    Ok(out)
}

/// What the normalisation did, for the provenance.
#[derive(Debug, Clone, Default)]
pub struct NormalizationReport {
    pub tvn: Option<normalize::TvnFit>,
    pub floored_plates: Vec<String>,
    pub coral_batches: usize,
}

/// Rows and control rows of each group (plate or batch) of the well table.
pub(crate) fn groups_of(
    wells: &Wells,
    key: &[String],
    control: &str,
) -> Vec<(String, Vec<usize>, Vec<usize>)> {
    let mut groups: BTreeMap<&str, (Vec<usize>, Vec<usize>)> = BTreeMap::new();
    for (row, name) in key.iter().enumerate() {
        let entry = groups.entry(name.as_str()).or_default();
        entry.0.push(row);
        if wells.compound[row] == control {
            entry.1.push(row);
        }
    }
    groups
        .into_iter()
        .map(|(name, (rows, controls))| (name.to_string(), rows, controls))
        .collect()
}

/// Applies the well-level normalisation, then CORAL when asked.
pub(crate) fn normalize_wells(wells: &mut Wells, cli: &Cli) -> anyhow::Result<NormalizationReport> {
    let (normalization, control) = (cli.normalize, cli.control.as_str());
    let mut report = NormalizationReport::default();
    if normalization == Normalization::None && !cli.coral {
        return Ok(report);
    }
    let controls: Vec<usize> = (0..wells.plate.len())
        .filter(|&i| wells.compound[i] == control)
        .collect();
    if controls.len() < 2 {
        return Err(input_error(format!(
            "--normalize {normalization:?}{} needs control wells: found {} well(s) of `{control}`",
            if cli.coral { " --coral" } else { "" },
            controls.len()
        )));
    }
    match normalization {
        Normalization::None => {}
        Normalization::Tvn => {
            if controls.len() < normalize::FEW_CONTROLS {
                eprintln!(
                    "pf-aggregate: warning: TVN is fitted on only {} control well(s)",
                    controls.len()
                );
            }
            report.tvn = Some(normalize::tvn(
                &mut wells.features,
                &controls,
                cli.tvn_regularization,
                cli.tvn_ridge,
            ));
        }
        per_plate => {
            let plates = groups_of(wells, &wells.plate, control);
            if let Some((plate, _, _)) = plates.iter().find(|(_, _, c)| c.is_empty()) {
                return Err(input_error(format!(
                    "plate {plate} has no `{control}` wells to normalise against"
                )));
            }
            let few: Vec<String> = plates
                .iter()
                .filter(|(_, _, c)| c.len() < normalize::FEW_CONTROLS)
                .map(|(plate, _, c)| format!("{plate} ({})", c.len()))
                .collect();
            report.floored_plates = normalize::per_plate(&mut wells.features, &plates, per_plate);
            if !few.is_empty() {
                eprintln!(
                    "pf-aggregate: warning: {} of {} plates have fewer than {} `{control}` wells: {}{}; {}",
                    few.len(),
                    plates.len(),
                    normalize::FEW_CONTROLS,
                    few.iter().take(5).cloned().collect::<Vec<_>>().join(", "),
                    if few.len() > 5 { ", …" } else { "" },
                    if report.floored_plates.is_empty() {
                        "no plate has enough to floor their scale at, so their scales are as estimated"
                    } else {
                        "their scales are floored at the median over the other plates"
                    }
                );
            }
        }
    }
    if cli.coral {
        let batches = groups_of(wells, &wells.batch, control);
        for (batch, _, batch_controls) in &batches {
            if batch_controls.len() < 2 {
                return Err(input_error(format!(
                    "--coral: batch {batch} has {} `{control}` well(s); CORAL needs two per batch",
                    batch_controls.len()
                )));
            }
            if batch_controls.len() < normalize::FEW_CONTROLS {
                eprintln!(
                    "pf-aggregate: warning: batch {batch} has only {} `{control}` well(s) for CORAL",
                    batch_controls.len()
                );
            }
        }
        normalize::coral(&mut wells.features, &batches, &controls, cli.coral_lambda);
        report.coral_batches = batches.len();
    }
    Ok(report)
}

/// Keeps the elements of `values` whose position `keep` accepts.
pub(crate) fn retain_positions<T>(values: &mut Vec<T>, keep: impl Fn(&usize) -> bool) {
    let mut index = 0;
    values.retain(|_| {
        let kept = keep(&index);
        index += 1;
        kept
    });
}

/// Cells → wells with the median, in passes of whole plates. Polars' median keeps every value of
/// its groups until the end (a 2.3 GB table of CellProfiler cells took 3.4 GB); a pass holds at
/// most `--median-pass-mib` of feature values (256 by default: that table then took 0.77 GB, in
/// no more time), one plate larger than that is a pass of its own, and everything that fits is
/// one pass. Each pass is filtered to its plates (row-group statistics skip the rest of a
/// plate-ordered file); a well lies on one plate, so every well's aggregate is the same as in one
/// pass.
pub(crate) fn wells_by_plate_chunks(
    cli: &Cli,
    frame: LazyFrame,
    map: &ColumnMap,
    features: &[String],
    platemap: Option<&PlateMap>,
) -> anyhow::Result<DataFrame> {
    let counts = frame
        .clone()
        .group_by([col(map.plate.as_str())])
        .agg([len().alias("__cells")])
        .sort([map.plate.as_str()], SortMultipleOptions::default())
        .collect_with_engine(Engine::Streaming)
        .map(|result| result.unwrap_single())
        .context("counting the cells of each plate")?;
    let plates = counts
        .column(map.plate.as_str())?
        .as_materialized_series()
        .clone();
    let cells: Vec<u64> = counts
        .column("__cells")?
        .cast(&PlDataType::UInt64)?
        .u64()?
        .iter()
        .map(|count| count.unwrap_or(0))
        .collect();
    let bytes_per_cell = 8 * features.len().max(1) as u64;
    let mut chunks: Vec<Vec<usize>> = vec![Vec::new()];
    let budget = cli.median_pass_mib << 20;
    let mut held = 0u64;
    for (index, &count) in cells.iter().enumerate() {
        let bytes = count * bytes_per_cell;
        if held > 0 && held + bytes > budget {
            chunks.push(Vec::new());
            held = 0;
        }
        chunks.last_mut().expect("a chunk").push(index);
        held += bytes;
    }
    // A cell without a plate is an error that the one-pass path reports with its context.
    if chunks.len() == 1 || plates.null_count() > 0 {
        return well_frame(cli, frame, map, features, platemap).map(|(wells, _)| wells);
    }
    eprintln!(
        "pf-aggregate: {} plates aggregated in {} passes of at most {} MiB of feature values",
        cells.len(),
        chunks.len(),
        cli.median_pass_mib
    );
    let mut parts: Vec<DataFrame> = Vec::with_capacity(chunks.len());
    for chunk in chunks {
        let equalities: Vec<Expr> = chunk
            .iter()
            .map(|&index| {
                let plate = plates.get(index).expect("a counted plate");
                let plate =
                    polars::prelude::Scalar::new(plates.dtype().clone(), plate.into_static());
                col(map.plate.as_str()).eq(polars::prelude::lit(plate))
            })
            .collect();
        let filter = balanced_or(equalities);
        parts.push(well_frame(cli, frame.clone().filter(filter), map, features, platemap)?.0);
    }
    let mut joined = parts.remove(0);
    for part in &parts {
        joined.vstack_mut(part)?;
    }
    // Passes follow the plates' own order; one pass sorts the wells after the plate map's join
    // (which reads plates as text): the same order here, whatever the plate column's type.
    Ok(joined.sort(
        [
            phenoflow_schemas::columns::PLATE,
            phenoflow_schemas::columns::WELL,
        ],
        SortMultipleOptions::default(),
    )?)
}

/// `a or b or …` as a balanced tree (depth log₂ n, not n: a pass may hold thousands of small
/// plates).
pub(crate) fn balanced_or(mut terms: Vec<Expr>) -> Expr {
    while terms.len() > 1 {
        let mut next = Vec::with_capacity(terms.len().div_ceil(2));
        let mut pairs = terms.into_iter();
        while let Some(first) = pairs.next() {
            next.push(match pairs.next() {
                Some(second) => first.or(second),
                None => first,
            });
        }
        terms = next;
    }
    terms.pop().expect("at least one term")
}
