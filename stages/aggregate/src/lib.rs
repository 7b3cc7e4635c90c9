//! `pf-aggregate`: single-cell (or well-level) profiles → well profiles → treatment profiles.
//!
//! Cells → wells runs in Polars (lazy scan of Parquet or CSV, projection to the keys and
//! features, group-by on plate + well): the part that sees every cell. Wells → treatments, and
//! the optional well-level normalisation against control wells, run on the small well table in
//! plain Rust. Both outputs are written through `phenoflow-schemas`, so they are checked like
//! every other table.

pub mod args;
pub mod controls;
pub mod normalize;
pub mod platemap;
pub mod select;
pub mod settings;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context;
use arrow_array::{ArrayRef, Float64Array, Int64Array, RecordBatch, StringArray};
use arrow_schema::{DataType, Field, Schema};
use phenoflow_schemas::parquet_io::{column_null_counts, largest_row_group};
use phenoflow_schemas::{
    batch_of_plate, check_outputs_are_not_inputs, concentration_key, hash_file, read_provenance,
    InputError, MoaTable, ParquetTableReader, ParquetTableWriter, Provenance, TableKind,
};
use polars::prelude::{
    col, concat, len, DataFrame, DataType as PlDataType, Engine, Expr, LazyCsvReader,
    LazyFileListReader, LazyFrame, PlRefPath, ScanArgsParquet, SortMultipleOptions, UnionArgs,
};

use crate::args::{Aggregation, Cli, InputLevel, PositiveControls};
use crate::normalize::Normalization;
use crate::platemap::PlateMap;
use crate::select::Selection;
use crate::settings::{Found, Params};

pub(crate) fn input_error(message: String) -> anyhow::Error {
    InputError(message).into()
}

/// The canonical key columns and the input columns they come from.
#[derive(Debug, Clone)]
pub struct ColumnMap {
    pub plate: String,
    pub well: String,
    pub compound: String,
    pub concentration: String,
    pub moa: Option<String>,
    pub batch: Option<String>,
}

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

fn is_csv(path: &Path) -> bool {
    let text = path.to_string_lossy();
    text.ends_with(".csv") || text.ends_with(".csv.gz")
}

/// An input must be a regular, non-empty file (a FIFO would block, a folder is not a table).
pub(crate) fn check_input_file(path: &Path) -> anyhow::Result<()> {
    match std::fs::metadata(path) {
        Err(error) => Err(input_error(format!("{}: {error}", path.display()))),
        Ok(metadata) if !metadata.is_file() => Err(input_error(format!(
            "{}: not a regular file",
            path.display()
        ))),
        Ok(metadata) if metadata.len() == 0 => {
            Err(input_error(format!("{}: empty file", path.display())))
        }
        Ok(_) => Ok(()),
    }
}

/// One input as a lazy frame.
pub(crate) fn scan_one(path: &Path) -> anyhow::Result<LazyFrame> {
    scan_one_with_text(path, &[])
}

/// One input as a lazy frame, the named CSV columns read as text whatever they look like (a plate
/// named `001` stays `001`, not the number 1).
pub(crate) fn scan_one_with_text(path: &Path, text_columns: &[&str]) -> anyhow::Result<LazyFrame> {
    let text = path.to_string_lossy().to_string();
    if is_csv(path) {
        let overwrite = (!text_columns.is_empty()).then(|| {
            Arc::new(polars::prelude::Schema::from_iter(text_columns.iter().map(
                |name| polars::prelude::Field::new((*name).into(), PlDataType::String),
            )))
        });
        LazyCsvReader::new(PlRefPath::new(text.as_str()))
            .with_has_header(true)
            .with_infer_schema_length(Some(10_000))
            .with_dtype_overwrite(overwrite)
            .finish()
            .with_context(|| format!("reading {}", path.display()))
    } else {
        LazyFrame::scan_parquet(PlRefPath::new(text.as_str()), ScanArgsParquet::default())
            .with_context(|| format!("reading {}", path.display()))
    }
}

/// Opens the inputs (Parquet or CSV, several are concatenated: per-plate shards) as one lazy frame.
fn scan_inputs(cli: &Cli) -> anyhow::Result<LazyFrame> {
    let mut frames = Vec::new();
    let mut seen: BTreeMap<std::path::PathBuf, &Path> = BTreeMap::new();
    for path in &cli.input {
        check_input_file(path)?;
        // The same file twice would count every cell twice.
        let canonical = path.canonicalize().unwrap_or_else(|_| path.clone());
        if let Some(first) = seen.insert(canonical, path) {
            return Err(input_error(format!(
                "{} is given twice (also as {}): every cell would count twice",
                path.display(),
                first.display()
            )));
        }
        if !is_csv(path) {
            check_phenoflow_parquet(path, cli.level)?;
        }
        // Plate, well and compound are names: a CSV's plate `001` must stay `001`, as the plate
        // map's does and as pf-cellprofiler writes it.
        frames.push(scan_one_with_text(
            path,
            &[
                cli.plate_column.as_str(),
                cli.well_column.as_str(),
                cli.compound_column.as_str(),
            ],
        )?);
    }
    if frames.len() == 1 {
        return Ok(frames.pop().expect("one frame"));
    }
    concat(frames, UnionArgs::default()).context("concatenating the inputs")
}

/// Polars decodes a Parquet input a row group at a time: one row group whose columns we read
/// would not fit in half of this machine's memory (a foreign writer's choice) is refused before
/// it is read, with how to rewrite it.
fn check_row_groups(cli: &Cli, map: &ColumnMap, features: &[String]) -> anyhow::Result<()> {
    let mut read: BTreeSet<String> = features.iter().cloned().collect();
    read.extend(
        [&map.plate, &map.well, &map.compound, &map.concentration]
            .into_iter()
            .chain(map.moa.as_ref())
            .chain(map.batch.as_ref())
            .cloned(),
    );
    let limit = machine_memory_bytes() / 2;
    for path in cli.input.iter().filter(|path| !is_csv(path)) {
        if let Some((index, bytes)) = largest_row_group(path, Some(&read))? {
            if bytes > limit {
                return Err(input_error(format!(
                    "{}: row group {index} holds {:.1} GiB of the columns read, uncompressed, more than half of this \
                     machine's memory ({:.1} GiB), and Polars reads a row group at once; rewrite it with smaller row \
                     groups, e.g. pyarrow.parquet.write_table(..., row_group_size=65536)",
                    path.display(),
                    bytes as f64 / (1u64 << 30) as f64,
                    limit as f64 / (1u64 << 30) as f64
                )));
            }
        }
    }
    Ok(())
}

/// Physical memory (`MemTotal`), or 8 GiB where /proc/meminfo cannot say.
fn machine_memory_bytes() -> u64 {
    std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|text| {
            text.lines()
                .find_map(|line| line.strip_prefix("MemTotal:"))
                .and_then(|rest| {
                    rest.trim()
                        .trim_end_matches("kB")
                        .trim()
                        .parse::<u64>()
                        .ok()
                })
        })
        .map_or(8 << 30, |kib| kib * 1024)
}

/// A null feature value would make a well's mean cover fewer cells than its count says, without
/// a word: every feature column of every input must be null-free. Parquet footers answer from
/// their statistics; CSV files (and Parquet files without null counts) are scanned.
fn check_no_null_features(cli: &Cli, features: &[String]) -> anyhow::Result<()> {
    for path in &cli.input {
        let footer = if is_csv(path) {
            None
        } else {
            Some(column_null_counts(path)?)
        };
        let mut unknown: Vec<&str> = Vec::new();
        for feature in features {
            let known = footer
                .as_ref()
                .map(|counts| counts.get(feature).copied().unwrap_or(Some(0)));
            match known {
                Some(Some(0)) => {}
                Some(Some(nulls)) => return Err(null_feature(path, feature, nulls)),
                _ => unknown.push(feature),
            }
        }
        if unknown.is_empty() {
            continue;
        }
        let counts = scan_one(path)?
            .select(
                unknown
                    .iter()
                    .map(|name| col(*name).null_count().alias(*name))
                    .collect::<Vec<_>>(),
            )
            .collect()
            .with_context(|| format!("counting missing values in {}", path.display()))?;
        for name in unknown {
            let nulls = counts
                .column(name)?
                .cast(&PlDataType::UInt64)?
                .u64()?
                .get(0)
                .unwrap_or(0);
            if nulls > 0 {
                return Err(null_feature(path, name, nulls));
            }
        }
    }
    Ok(())
}

/// The columns that name one cell within a well, where the input has them (the first set found):
/// phenoflow's (site, object number), or CellProfiler's ([table number,] image number, object
/// number).
const CELL_IDENTITY: [&[&str]; 5] = [
    &[
        phenoflow_schemas::columns::SITE,
        phenoflow_schemas::columns::OBJECT_NUMBER,
    ],
    // pf-cellprofiler's single cells of an image table without a site: the image and the cell.
    &[
        phenoflow_schemas::columns::IMAGE_NUMBER,
        phenoflow_schemas::columns::OBJECT_NUMBER,
    ],
    // Distributed CellProfiler numbers images from 1 in every job: TableNumber tells them apart.
    &["TableNumber", "ImageNumber", "ObjectNumber"],
    &[
        phenoflow_schemas::columns::TABLE_NUMBER,
        "ImageNumber",
        "ObjectNumber",
    ],
    &["ImageNumber", "ObjectNumber"],
];

/// A cell listed twice (a duplicated row, a shard appended to itself) would count twice in its
/// well: where the input names its cells, every cell must appear once.
fn check_no_duplicate_cells(
    frame: &LazyFrame,
    map: &ColumnMap,
    schema: &polars::prelude::Schema,
) -> anyhow::Result<()> {
    let Some(identity) = CELL_IDENTITY
        .iter()
        .find(|columns| columns.iter().all(|c| schema.contains(c)))
    else {
        return Ok(());
    };
    let mut keys = vec![col(map.plate.as_str()), col(map.well.as_str())];
    keys.extend(identity.iter().map(|c| col(*c)));
    let duplicates = frame
        .clone()
        .group_by(keys)
        .agg([len().alias("__copies")])
        .filter(col("__copies").gt(polars::prelude::lit(1u32)))
        .limit(1)
        .collect_with_engine(Engine::Streaming)
        .map(|result| result.unwrap_single())
        .context("checking that every cell appears once")?;
    if duplicates.height() > 0 {
        let cell = duplicates
            .columns()
            .iter()
            .map(|column| {
                format!(
                    "{} = {}",
                    column.name(),
                    column.get(0).map(|v| v.to_string()).unwrap_or_default()
                )
            })
            .collect::<Vec<_>>()
            .join(", ");
        return Err(input_error(format!(
            "a cell appears more than once ({cell}): duplicate rows would count twice in their well"
        )));
    }
    Ok(())
}

fn null_feature(path: &Path, feature: &str, nulls: u64) -> anyhow::Error {
    input_error(format!(
        "{}: feature column `{feature}` holds {nulls} missing value(s) (null, an empty CSV field, or a CSV row \
         with too few fields); a well's mean would cover fewer cells than its count. Drop or impute them first, \
         or let --feature-select drop-na-columns drop the features missing in more than --na-cutoff of the \
         cells (the well aggregate then skips the rest, as pycytominer's does)",
        path.display()
    ))
}

/// A Parquet file written by phenoflow is checked against its table's contract (footer only);
/// other Parquet files (CellProfiler exports, say) are taken on their columns.
fn check_phenoflow_parquet(path: &Path, level: InputLevel) -> anyhow::Result<()> {
    let expected = match level {
        InputLevel::Cells => TableKind::Embeddings,
        InputLevel::Wells => TableKind::Wells,
    };
    if let Some(provenance) = read_provenance(path)? {
        // pf-cellprofiler's merged CellProfiler cells are cells too: keyed by plate and well
        // (the treatment comes from --platemap or their own columns), nullable features.
        if level == InputLevel::Cells && provenance.table == TableKind::SingleCells {
            ParquetTableReader::open(path, TableKind::SingleCells, 1, Some(&[]))?;
            return Ok(());
        }
        if provenance.table != expected {
            return Err(input_error(format!(
                "{}: holds a `{}` table; --level {} expects `{}`",
                path.display(),
                provenance.table.name(),
                level.as_str(),
                expected.name()
            )));
        }
        ParquetTableReader::open(path, expected, 1, Some(&[]))?;
    }
    Ok(())
}

/// The first 40 column names of a table, for a message that says which columns it has.
pub(crate) fn column_names(schema: &polars::prelude::Schema) -> String {
    schema
        .iter_names()
        .take(40)
        .map(|name| name.as_str())
        .collect::<Vec<_>>()
        .join(", ")
}

/// Resolves the key and feature columns against the input's schema.
fn resolve_columns(
    cli: &Cli,
    schema: &polars::prelude::Schema,
) -> anyhow::Result<(ColumnMap, Vec<String>)> {
    let inputs = cli
        .input
        .iter()
        .map(|p| p.display().to_string())
        .collect::<Vec<_>>()
        .join(", ");
    let require = |name: &str, option: &str| -> anyhow::Result<String> {
        if schema.contains(name) {
            Ok(name.to_string())
        } else {
            Err(input_error(format!(
                "{inputs}: no column `{name}` (set it with {option}); columns: {}",
                column_names(schema)
            )))
        }
    };
    let moa = match &cli.moa_column {
        Some(name) => Some(require(name, "--moa-column")?),
        None => schema
            .contains(phenoflow_schemas::columns::MOA)
            .then(|| phenoflow_schemas::columns::MOA.to_string()),
    };
    if moa.is_none() && cli.moa_csv.is_none() {
        return Err(input_error(format!(
            "{inputs}: no MoA column (`Metadata_MoA`, or --moa-column) and no --moa-csv to join one from"
        )));
    }
    let batch = match &cli.batch_column {
        Some(name) => Some(require(name, "--batch-column")?),
        None => schema
            .contains(phenoflow_schemas::columns::BATCH)
            .then(|| phenoflow_schemas::columns::BATCH.to_string()),
    };
    let map = ColumnMap {
        plate: require(&cli.plate_column, "--plate-column")?,
        well: require(&cli.well_column, "--well-column")?,
        compound: require(&cli.compound_column, "--compound-column")?,
        concentration: require(&cli.concentration_column, "--concentration-column")?,
        moa,
        batch,
    };
    if let Some(dtype) = schema.get(map.concentration.as_str()) {
        if !dtype.is_primitive_numeric() {
            return Err(input_error(format!(
                "{inputs}: concentration column `{}` is {dtype}, not numbers (a value such as `abc` or `1 uM`?)",
                map.concentration
            )));
        }
    }
    let keys: BTreeSet<&str> = [&map.plate, &map.well, &map.compound, &map.concentration]
        .into_iter()
        .map(String::as_str)
        .chain(map.moa.as_deref())
        .chain(map.batch.as_deref())
        .collect();
    let candidates: Vec<(&str, &PlDataType)> = schema
        .iter()
        .map(|(name, dtype)| (name.as_str(), dtype))
        .filter(|(name, _)| {
            !keys.contains(name)
                && !name.starts_with(phenoflow_schemas::columns::PREFIX)
                && cli
                    .feature_prefix
                    .iter()
                    .any(|prefix| name.starts_with(prefix.as_str()))
        })
        .collect();
    // A feature column read as text (one `NA` in a CSV makes the whole column text) would
    // otherwise be dropped without a word.
    if let Some((name, dtype)) = candidates
        .iter()
        .find(|(_, dtype)| !dtype.is_primitive_numeric())
    {
        return Err(input_error(format!(
            "{inputs}: feature column `{name}` is {dtype}, not numeric (a value such as `NA` or `#DIV/0!` in a CSV?); \
             fix or drop it, or narrow --feature-prefix"
        )));
    }
    let features: Vec<String> = candidates
        .iter()
        .map(|(name, _)| name.to_string())
        .collect();
    if features.is_empty() {
        return Err(input_error(format!(
            "{inputs}: no numeric feature column starting with {}",
            cli.feature_prefix.join(", ")
        )));
    }
    Ok((map, features))
}

/// One feature's cells → well aggregate. NaN in a float feature: with `nan_is_missing`
/// (`--feature-select drop-na-columns`) it is skipped like a null; otherwise it makes the well's
/// value NaN, which `collect_wells` reports (the mean does so by itself; Polars' median would
/// sort NaN last and return a biased number without a word).
fn aggregate_expr(
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

/// Cells → wells in Polars, or the well table as it is (`--level wells`).
fn well_frame(
    cli: &Cli,
    frame: LazyFrame,
    map: &ColumnMap,
    features: &[String],
    platemap: Option<&PlateMap>,
) -> anyhow::Result<DataFrame> {
    // Everything that must be constant within a well is part of the group key: a well holding
    // two compounds (or concentrations, MoAs, batches) comes out as two rows of one well, which
    // `collect_wells` reports. (Aggregating such columns with `first()` would also force Polars'
    // in-memory fallback instead of the streaming group-by.)
    let mut key_exprs = vec![col(map.plate.as_str()), col(map.well.as_str())];
    // With --platemap the treatment comes from the plate map, joined after the group-by.
    if platemap.is_none() {
        key_exprs.extend([col(map.compound.as_str()), col(map.concentration.as_str())]);
    }
    key_exprs.extend(map.moa.as_deref().map(col));
    key_exprs.extend(map.batch.as_deref().map(col));
    let mut aggs: Vec<Expr> = Vec::new();
    let mut frame = frame;
    let schema = frame
        .collect_schema()
        .context("reading the input's columns")?;
    let nan_is_missing = cli.feature_select.contains(&Selection::DropNaColumns);
    let grouped = match cli.level {
        InputLevel::Cells => {
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
        InputLevel::Wells => {
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
    grouped
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
        })
}

fn strings(frame: &DataFrame, name: &str) -> anyhow::Result<Vec<Option<String>>> {
    let column = frame
        .column(name)?
        .cast(&polars::prelude::DataType::String)?;
    Ok(column.str()?.iter().map(|v| v.map(String::from)).collect())
}

fn floats(frame: &DataFrame, name: &str) -> anyhow::Result<Vec<Option<f64>>> {
    let column = frame
        .column(name)?
        .cast(&polars::prelude::DataType::Float64)?;
    Ok(column.f64()?.iter().collect())
}

/// Moves the Polars well frame into [`Wells`], checking every well.
fn collect_wells(
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
fn groups_of(
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
fn normalize_wells(wells: &mut Wells, cli: &Cli) -> anyhow::Result<NormalizationReport> {
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
fn retain_positions<T>(values: &mut Vec<T>, keep: impl Fn(&usize) -> bool) {
    let mut index = 0;
    values.retain(|_| {
        let kept = keep(&index);
        index += 1;
        kept
    });
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

/// Treatment profiles: the median (or mean) of each treatment's wells.
#[derive(Debug, Clone, Default)]
pub struct Treatments {
    pub compound: Vec<String>,
    pub concentration: Vec<f64>,
    pub moa: Vec<Option<String>>,
    pub batches: Vec<String>,
    pub count: Vec<i64>,
    pub features: Vec<Vec<f64>>,
}

fn aggregate_treatments(wells: &Wells, aggregation: Aggregation) -> anyhow::Result<Treatments> {
    let mut groups: BTreeMap<(String, i64), Vec<usize>> = BTreeMap::new();
    for row in 0..wells.plate.len() {
        groups
            .entry((
                wells.compound[row].clone(),
                concentration_key(wells.concentration[row]),
            ))
            .or_default()
            .push(row);
    }
    let mut out = Treatments::default();
    for ((compound, _), rows) in groups {
        let moas: BTreeSet<Option<&String>> = rows.iter().map(|&r| wells.moa[r].as_ref()).collect();
        if moas.len() > 1 {
            return Err(input_error(format!(
                "treatment ({compound}, {}) has wells with different MoAs: {moas:?}",
                wells.concentration[rows[0]]
            )));
        }
        let batches: BTreeSet<&str> = rows.iter().map(|&r| wells.batch[r].as_str()).collect();
        let n_features = wells.feature_names.len();
        let profile: Vec<f64> = (0..n_features)
            .map(|f| {
                let mut values: Vec<f64> = rows.iter().map(|&r| wells.features[r][f]).collect();
                match aggregation {
                    Aggregation::Mean => values.iter().sum::<f64>() / values.len() as f64,
                    Aggregation::Median => normalize::median(&mut values),
                }
            })
            .collect();
        out.compound.push(compound);
        out.concentration.push(wells.concentration[rows[0]]);
        out.moa.push(wells.moa[rows[0]].clone());
        out.batches
            .push(batches.into_iter().collect::<Vec<_>>().join(";"));
        out.count.push(rows.len() as i64);
        out.features.push(profile);
    }
    Ok(out)
}

fn feature_fields(names: &[String]) -> Vec<Field> {
    names
        .iter()
        .map(|name| Field::new(name, DataType::Float64, false))
        .collect()
}

fn feature_arrays(names: &[String], rows: &[Vec<f64>]) -> Vec<ArrayRef> {
    (0..names.len())
        .map(|f| {
            Arc::new(Float64Array::from_iter_values(
                rows.iter().map(|row| row[f]),
            )) as ArrayRef
        })
        .collect()
}

fn write_table(
    path: &Path,
    kind: TableKind,
    mut columns: Vec<ArrayRef>,
    feature_names: &[String],
    features: &[Vec<f64>],
    provenance: &Provenance,
) -> anyhow::Result<()> {
    let mut fields = kind.required_fields(None);
    fields.extend(feature_fields(feature_names));
    columns.extend(feature_arrays(feature_names, features));
    let schema = Arc::new(Schema::new(fields));
    let batch = RecordBatch::try_new(schema.clone(), columns)?;
    let mut provenance = provenance.clone();
    provenance.table = kind;
    let mut writer = ParquetTableWriter::create(path, kind, schema, &provenance, 65_536)?;
    writer.write(&batch)?;
    writer.finish()?;
    Ok(())
}

fn string_array<T: AsRef<str>>(values: &[T]) -> ArrayRef {
    Arc::new(StringArray::from_iter_values(
        values.iter().map(AsRef::as_ref),
    ))
}

/// Cells → wells with the median, in passes of whole plates. Polars' median keeps every value of
/// its groups until the end (a 2.3 GB table of CellProfiler cells took 3.4 GB); a pass holds at
/// most `--median-pass-mib` of feature values (256 by default: that table then took 0.77 GB, in
/// no more time), one plate larger than that is a pass of its own, and everything that fits is
/// one pass. Each pass is filtered to its plates (row-group statistics skip the rest of a
/// plate-ordered file); a well lies on one plate, so every well's aggregate is the same as in one
/// pass.
fn wells_by_plate_chunks(
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
        return well_frame(cli, frame, map, features, platemap);
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
        parts.push(well_frame(
            cli,
            frame.clone().filter(filter),
            map,
            features,
            platemap,
        )?);
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
fn balanced_or(mut terms: Vec<Expr>) -> Expr {
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

/// What `drop-na-columns` did on the cells.
#[derive(Debug, Default)]
struct MissingReport {
    dropped: usize,
    /// Kept features that still miss values in some cells (skipped by the well aggregate).
    kept_with_missing: usize,
}

/// 1 where a feature value is missing (null, or NaN as pandas counts it), else 0.
fn missing_values(name: &str) -> Expr {
    let value = col(name).cast(PlDataType::Float64);
    value
        .clone()
        .is_null()
        .or(value.is_nan().fill_null(polars::prelude::lit(false)))
        .cast(PlDataType::UInt32)
}

/// pycytominer's `drop_na_columns` on the cells: features missing in more than `cutoff` of the
/// rows are dropped; the others may keep missing values, which the well aggregate skips.
fn drop_na_columns(
    frame: &LazyFrame,
    features: Vec<String>,
    cutoff: f64,
) -> anyhow::Result<(Vec<String>, MissingReport)> {
    // Missing is null or NaN, as pandas' isna (pycytominer's get_na_columns) counts it.
    let mut exprs: Vec<Expr> = features
        .iter()
        .map(|name| {
            missing_values(name)
                .sum()
                .cast(PlDataType::UInt64)
                .alias(name.as_str())
        })
        .collect();
    exprs.push(len().alias("__rows__"));
    let counts = frame
        .clone()
        .select(exprs)
        .collect_with_engine(Engine::Streaming)
        .map(|result| result.unwrap_single())
        .context("counting missing values")?;
    let count = |name: &str| -> anyhow::Result<u64> {
        Ok(counts
            .column(name)?
            .cast(&PlDataType::UInt64)?
            .u64()?
            .get(0)
            .unwrap_or(0))
    };
    let rows = count("__rows__")?.max(1);
    let mut kept = Vec::with_capacity(features.len());
    let mut report = MissingReport::default();
    for name in features {
        let missing = count(&name)?;
        if missing as f64 / rows as f64 > cutoff {
            report.dropped += 1;
        } else {
            if missing > 0 {
                report.kept_with_missing += 1;
            }
            kept.push(name);
        }
    }
    if kept.is_empty() {
        return Err(input_error(format!(
            "drop-na-columns: every feature is missing in more than {cutoff} of the cells"
        )));
    }
    Ok((kept, report))
}

/// The feature names `--feature-select blocklist` drops (none without that operation), read
/// before any cell is: a missing file or a `--blocklist` without its operation is reported at once.
fn read_blocklist(cli: &Cli) -> anyhow::Result<Vec<String>> {
    if !cli.feature_select.contains(&Selection::Blocklist) {
        if cli.blocklist.is_some() {
            return Err(input_error(
                "--blocklist is given but `blocklist` is not among --feature-select's operations"
                    .into(),
            ));
        }
        return Ok(Vec::new());
    }
    select::read_blocklist(cli.blocklist.as_deref())
}

/// The well-level operations of `--feature-select`, in order, on the normalised wells; returns
/// how many features each dropped.
fn select_features(
    wells: &mut Wells,
    cli: &Cli,
    missing: &MissingReport,
    blocklist: &[String],
) -> anyhow::Result<BTreeMap<&'static str, usize>> {
    let mut dropped = BTreeMap::new();
    if cli.feature_select.is_empty() {
        return Ok(dropped);
    }
    let before = wells.feature_names.len() + missing.dropped;
    for &operation in &cli.feature_select {
        if operation == Selection::DropNaColumns {
            dropped.insert(operation.as_str(), missing.dropped);
            continue;
        }
        let excluded = select::excluded(
            operation,
            &wells.feature_names,
            &wells.features,
            cli.min_variance,
            cli.corr_threshold,
            blocklist,
        );
        *dropped.entry(operation.as_str()).or_insert(0) += excluded.len();
        if excluded.len() == wells.feature_names.len() {
            return Err(input_error(format!(
                "--feature-select: {} would drop every one of the {} features left",
                operation.as_str(),
                wells.feature_names.len()
            )));
        }
        wells.remove_features(&excluded);
    }
    eprintln!(
        "pf-aggregate: feature selection kept {} of {} features ({}){}",
        wells.feature_names.len(),
        before,
        cli.feature_select
            .iter()
            .map(|operation| format!(
                "{} dropped {}",
                operation.as_str(),
                dropped.get(operation.as_str()).copied().unwrap_or(0)
            ))
            .collect::<Vec<_>>()
            .join(", "),
        if missing.kept_with_missing > 0 {
            format!(
                "; {} kept features miss values in some cells, which the well aggregate skips",
                missing.kept_with_missing
            )
        } else {
            String::new()
        }
    );
    Ok(dropped)
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

/// The content hashes of the inputs, computed on a thread of their own while Polars aggregates
/// (hashing a large input is otherwise a third of the run).
type Hasher =
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
                .map(|path| Ok((path.display().to_string(), hash_file(&path)?)))
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
    if cli.level == InputLevel::Cells {
        check_no_duplicate_cells(&frame, &map, &schema)?;
    }
    // Only the median holds its values; the mean's running sums stream in bounded memory (745 MB
    // for that 2.3 GB table, 0.9× for 500k × 256 float32), and chunking would slow it by a third.
    let well_frame =
        if cli.level == InputLevel::Cells && cli.cell_aggregation == Aggregation::Median {
            wells_by_plate_chunks(cli, frame, &map, &features, platemap)?
        } else {
            well_frame(cli, frame, &map, &features, platemap)?
        };
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

/// The provenance of both tables, with the inputs' hashes; two inputs with the same content (a
/// shard copied under another name) would count every cell twice and are refused.
fn provenance(
    cli: &Cli,
    params: &Params,
    found: &Found,
    hasher: Hasher,
) -> anyhow::Result<Provenance> {
    let mut provenance = Provenance::new(
        TableKind::Wells,
        "pf-aggregate",
        env!("CARGO_PKG_VERSION"),
        settings::provenance_params(params, found),
    );
    let hashes = hasher
        .join()
        .map_err(|_| anyhow::anyhow!("the input-hashing thread panicked"))??;
    let inputs = &hashes[..cli.input.len()];
    for (index, (path, hash)) in inputs.iter().enumerate() {
        if let Some((other, _)) = inputs[..index].iter().find(|(_, other)| other == hash) {
            return Err(input_error(format!(
                "{path} and {other} have the same content: every cell would count twice"
            )));
        }
    }
    provenance.inputs.extend(hashes);
    Ok(provenance)
}

fn write_wells(path: &Path, wells: &Wells, provenance: &Provenance) -> anyhow::Result<()> {
    let columns: Vec<ArrayRef> = vec![
        string_array(&wells.plate),
        string_array(&wells.well),
        string_array(&wells.compound),
        Arc::new(Float64Array::from(wells.concentration.clone())),
        Arc::new(StringArray::from_iter(
            wells.moa.iter().map(|m| m.as_deref()),
        )),
        string_array(&wells.batch),
        Arc::new(Int64Array::from(wells.count.clone())),
    ];
    write_table(
        path,
        TableKind::Wells,
        columns,
        &wells.feature_names,
        &wells.features,
        provenance,
    )
}

fn write_treatments(
    path: &Path,
    treatments: &Treatments,
    feature_names: &[String],
    provenance: &Provenance,
) -> anyhow::Result<()> {
    let columns: Vec<ArrayRef> = vec![
        string_array(&treatments.compound),
        Arc::new(Float64Array::from(treatments.concentration.clone())),
        Arc::new(StringArray::from_iter(
            treatments.moa.iter().map(|m| m.as_deref()),
        )),
        Arc::new(StringArray::from_iter(
            treatments.batches.iter().map(|b| Some(b.as_str())),
        )),
        Arc::new(Int64Array::from(treatments.count.clone())),
    ];
    write_table(
        path,
        TableKind::Treatments,
        columns,
        feature_names,
        &treatments.features,
        provenance,
    )
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
