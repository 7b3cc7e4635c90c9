//! Reading pf-aggregate's input and checking it before anything is computed: the files (Parquet
//! of this pipeline, foreign Parquet, CSV), their columns mapped to the canonical keys, row groups
//! that would not fit in memory, null features and cells listed twice.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::Arc;

use anyhow::Context;
use phenoflow_schemas::parquet_io::{column_null_counts, largest_row_group};
use phenoflow_schemas::{read_provenance, ParquetTableReader, TableKind};
use polars::prelude::{
    col, concat, len, DataType as PlDataType, Engine, LazyCsvReader, LazyFileListReader, LazyFrame,
    PlRefPath, ScanArgsParquet, UnionArgs,
};

use crate::args::{Cli, InputLevel};
use crate::input_error;

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

pub(crate) fn is_csv(path: &Path) -> bool {
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
pub(crate) fn scan_inputs(cli: &Cli) -> anyhow::Result<LazyFrame> {
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
pub(crate) fn check_row_groups(
    cli: &Cli,
    map: &ColumnMap,
    features: &[String],
) -> anyhow::Result<()> {
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
pub(crate) fn machine_memory_bytes() -> u64 {
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
pub(crate) fn check_no_null_features(cli: &Cli, features: &[String]) -> anyhow::Result<()> {
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
pub(crate) fn check_no_duplicate_cells(
    frame: &LazyFrame,
    map: &ColumnMap,
    schema: &polars::prelude::Schema,
) -> anyhow::Result<()> {
    let Some(identity) = cell_identity(|name| schema.contains(name)) else {
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
        let named: Vec<String> = duplicates
            .columns()
            .iter()
            .map(|column| {
                format!(
                    "{} = {}",
                    column.name(),
                    column.get(0).map(|v| v.to_string()).unwrap_or_default()
                )
            })
            .collect();
        return Err(duplicate_cell(&named));
    }
    Ok(())
}

/// The first set of [`CELL_IDENTITY`] columns a table has all of (`has` answers for one name).
pub(crate) fn cell_identity(has: impl Fn(&str) -> bool) -> Option<&'static [&'static str]> {
    CELL_IDENTITY
        .iter()
        .copied()
        .find(|columns| columns.iter().all(|name| has(name)))
}

/// A cell found twice, named by its key and identity columns (`name = value` each).
pub(crate) fn duplicate_cell(named: &[String]) -> anyhow::Error {
    input_error(format!(
        "a cell appears more than once ({}): duplicate rows would count twice in their well",
        named.join(", ")
    ))
}

pub(crate) fn null_feature(path: &Path, feature: &str, nulls: u64) -> anyhow::Error {
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
pub(crate) fn check_phenoflow_parquet(path: &Path, level: InputLevel) -> anyhow::Result<()> {
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
pub(crate) fn resolve_columns(
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
    // One column cannot be two keys (Polars would stop on a group-by with a duplicate name).
    let roles = [
        (Some(&map.plate), "--plate-column"),
        (Some(&map.well), "--well-column"),
        (Some(&map.compound), "--compound-column"),
        (Some(&map.concentration), "--concentration-column"),
        (map.moa.as_ref(), "--moa-column"),
        (map.batch.as_ref(), "--batch-column"),
    ];
    for (index, (column, flag)) in roles.iter().enumerate() {
        let Some(column) = column else { continue };
        if let Some((_, other)) = roles[..index]
            .iter()
            .find(|(earlier, _)| *earlier == Some(*column))
        {
            return Err(input_error(format!(
                "{inputs}: `{column}` is both the {other} and the {flag}; each key needs a column of its own"
            )));
        }
    }
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
