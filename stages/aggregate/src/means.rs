//! Cells → well means read straight from Parquet, the default for `--cell-aggregation mean` on
//! Parquet cells (`--engine auto`): each row group is decoded by arrow-rs on a worker of its own,
//! a batch at a time, and its rows' features are summed in f64 per group key as they pass; only
//! the running sums of the row groups in flight are held. Polars' streaming group-by computed the
//! same means with a row-encoded hash of every cell's keys (a third of the run on 500k cells) and
//! buffers that faulted in fresh pages (`README`, "Feature tables on disk"). The result is the
//! grouped frame Polars' group-by would give (key columns, cell count, f64 means), handed to the
//! same join, sort and checks; `--engine polars` keeps the Polars path, and a test holds the two
//! equal.
//!
//! The same pass checks that every cell appears once (`input::check_no_duplicate_cells`, which
//! the Polars path runs as a group-by of its own): each row's identity (site and object number, or
//! CellProfiler's image and object numbers) is kept per well, and each well's are sorted.
//!
//! Each row group's bytes are memory-mapped while it is decoded (`mapped.rs`): pages are sliced
//! out of the page cache, not copied. Before any row group is read, every column chunk must lie
//! inside its file (`parquet_io::check_column_chunks`).
//!
//! A table this reader does not take (CSV, an input that is not a regular file, a key column
//! neither text nor a float, an integer feature, an identity column not an integer, or inputs
//! whose column types differ) goes to Polars, so nothing changes for it.

use std::collections::HashMap;
use std::fs::File;
use std::path::{Path, PathBuf};

use anyhow::Context;
use arrow_array::cast::AsArray;
use arrow_array::types::{Float32Type, Float64Type};
use arrow_array::{Array, RecordBatch};
use arrow_schema::DataType;
use parquet::arrow::arrow_reader::{
    ArrowReaderMetadata, ArrowReaderOptions, ParquetRecordBatchReaderBuilder,
};
use parquet::arrow::ProjectionMask;
use polars::prelude::{Column, DataFrame, IdxSize};
use rayon::prelude::*;

use crate::mapped::{map_or_read_range, Window};

/// The name the provenance records for this reader (`cell_engine`).
pub(crate) const ENGINE: &str = "arrow-rs";

/// Cells decoded at a time per worker: 8,192 × 256 float32 features is 8 MiB, which the
/// allocator reuses from batch to batch.
const BATCH_ROWS: usize = 8192;

/// How a group-key column is read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum KeyKind {
    Text,
    Number,
}

/// One row's value in a key column: text, or a float's bits (-0.0 and NaN made canonical, so
/// they group as Polars groups them).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum KeyValue {
    Text(String),
    Bits(u64),
}

type Key = Vec<Option<KeyValue>>;

/// A cell's identity within its well: up to three integer columns (unsigned ones by their bits,
/// which keeps distinct values distinct), and which of them are null (Polars groups nulls as a
/// value, so two cells both without an object number in one well are one cell listed twice).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
struct CellId {
    values: [i64; 3],
    nulls: u8,
}

/// A Parquet input's footer, and where the key and feature columns are in it.
struct Input {
    path: PathBuf,
    /// The handle the footer was read through: row groups are mapped from it, so a file
    /// replaced under the same name meanwhile is not the one read.
    file: File,
    /// The file's length in bytes when its footer was read.
    length: u64,
    metadata: ArrowReaderMetadata,
    projection: Vec<usize>,
}

/// What the reader needs to know of every input: how its keys are read, and the identity
/// columns that name a cell within a well (none where the inputs lack them).
struct Layout {
    kinds: Vec<KeyKind>,
    identity: &'static [&'static str],
}

/// Per-row-group sums: the groups in the order first seen, their cell counts and f64 sums
/// (group-major, `features` per group).
#[derive(Default)]
struct Partial {
    keys: Vec<Key>,
    index: HashMap<Key, usize>,
    counts: Vec<u64>,
    sums: Vec<f64>,
    /// The cells' identities, per group.
    cells: Vec<Vec<CellId>>,
}

impl Partial {
    fn group(&mut self, key: Key, features: usize) -> usize {
        if let Some(&group) = self.index.get(&key) {
            return group;
        }
        let group = self.keys.len();
        self.index.insert(key.clone(), group);
        self.keys.push(key);
        self.counts.push(0);
        self.sums.resize(self.sums.len() + features, 0.0);
        self.cells.push(Vec::new());
        group
    }
}

/// The grouped well frame (`keys` columns, then `count_column`, then one f64 mean per feature),
/// groups in the order first seen; `None` when an input is not one this reader takes. `keys`
/// start with the plate and the well; a cell listed twice in a well is an input error.
pub(crate) fn well_means(
    paths: &[PathBuf],
    keys: &[&str],
    features: &[String],
    count_column: &str,
) -> anyhow::Result<Option<DataFrame>> {
    let Some((inputs, layout)) = open_inputs(paths, keys, features)? else {
        return Ok(None);
    };
    let kinds = &layout.kinds;
    let units: Vec<(usize, usize)> = inputs
        .iter()
        .enumerate()
        .flat_map(|(file, input)| {
            (0..input.metadata.metadata().num_row_groups()).map(move |group| (file, group))
        })
        .collect();
    // Row groups are summed in parallel and merged in file order, so the sums (and the means'
    // last bits) do not depend on which worker took which row group.
    let partials: Vec<Partial> = units
        .par_iter()
        .map(|&(file, row_group)| sum_row_group(&inputs[file], row_group, keys, &layout, features))
        .collect::<anyhow::Result<_>>()?;
    let mut total = Partial::default();
    for mut partial in partials {
        let keys = std::mem::take(&mut partial.keys);
        for (group, key) in keys.into_iter().enumerate() {
            let into = total.group(key, features.len());
            total.counts[into] += partial.counts[group];
            let from = &partial.sums[group * features.len()..(group + 1) * features.len()];
            let to = &mut total.sums[into * features.len()..(into + 1) * features.len()];
            for (to, from) in to.iter_mut().zip(from) {
                *to += from;
            }
            let cells = std::mem::take(&mut partial.cells[group]);
            if total.cells[into].is_empty() {
                total.cells[into] = cells;
            } else {
                total.cells[into].extend_from_slice(&cells);
            }
        }
    }
    check_each_cell_once(&mut total, keys, layout.identity)?;
    frame(&total, keys, kinds, features, count_column).map(Some)
}

/// Every cell once per well (plate and well, the first two keys): the groups of one well are
/// pooled, and each well's identities sorted in parallel.
fn check_each_cell_once(
    total: &mut Partial,
    keys: &[&str],
    identity: &[&str],
) -> anyhow::Result<()> {
    if identity.is_empty() {
        return Ok(());
    }
    let mut wells: HashMap<(&Option<KeyValue>, &Option<KeyValue>), Vec<CellId>> = HashMap::new();
    for (key, cells) in total.keys.iter().zip(&mut total.cells) {
        let cells = std::mem::take(cells);
        wells
            .entry((&key[0], &key[1]))
            .and_modify(|pooled| pooled.extend_from_slice(&cells))
            .or_insert(cells);
    }
    let duplicate = wells.into_par_iter().find_map_any(|(well, mut cells)| {
        cells.sort_unstable();
        cells
            .windows(2)
            .find(|pair| pair[0] == pair[1])
            .map(|pair| (well, pair[0]))
    });
    let Some(((plate, well), cell)) = duplicate else {
        return Ok(());
    };
    let shown = |value: &Option<KeyValue>| match value {
        Some(KeyValue::Text(text)) => format!("{text:?}"),
        Some(KeyValue::Bits(bits)) => f64::from_bits(*bits).to_string(),
        None => "null".into(),
    };
    let mut named = vec![
        format!("{} = {}", keys[0], shown(plate)),
        format!("{} = {}", keys[1], shown(well)),
    ];
    named.extend(identity.iter().enumerate().map(|(at, name)| {
        if cell.nulls & (1 << at) != 0 {
            format!("{name} = null")
        } else {
            format!("{name} = {}", cell.values[at])
        }
    }));
    Err(crate::input::duplicate_cell(&named))
}

/// Reads each input's footer and checks that this reader takes its columns.
fn open_inputs(
    paths: &[PathBuf],
    keys: &[&str],
    features: &[String],
) -> anyhow::Result<Option<(Vec<Input>, Layout)>> {
    let mut inputs = Vec::new();
    let mut kinds: Option<Vec<KeyKind>> = None;
    let mut feature_types: Option<Vec<DataType>> = None;
    let mut identities: Option<&'static [&'static str]> = None;
    for path in paths {
        if crate::input::is_csv(path) {
            return Ok(None);
        }
        let file = open(path)?;
        let stat = file
            .metadata()
            .with_context(|| format!("reading {}", path.display()))?;
        if !stat.is_file() {
            return Ok(None);
        }
        let length = stat.len();
        let metadata = ArrowReaderMetadata::load(&file, Default::default())
            .with_context(|| format!("reading the footer of {}", path.display()))?;
        let schema = metadata.schema().clone();
        let index = |name: &str| schema.index_of(name).ok();
        let mut projection = Vec::new();
        let mut these_kinds = Vec::new();
        for name in keys {
            let Some(at) = index(name) else {
                return Ok(None);
            };
            let kind = match schema.field(at).data_type() {
                DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => KeyKind::Text,
                DataType::Float64 | DataType::Float32 => KeyKind::Number,
                _ => return Ok(None),
            };
            projection.push(at);
            these_kinds.push(kind);
        }
        let metadata = with_dictionary_keys(metadata, keys);
        let schema = metadata.schema().clone();
        let index = |name: &str| schema.index_of(name).ok();
        let mut these_types = Vec::new();
        for name in features {
            let Some(at) = index(name) else {
                return Ok(None);
            };
            let data_type = schema.field(at).data_type().clone();
            if !matches!(data_type, DataType::Float32 | DataType::Float64) {
                return Ok(None);
            }
            projection.push(at);
            these_types.push(data_type);
        }
        let identity = crate::input::cell_identity(|name| index(name).is_some()).unwrap_or(&[]);
        for name in identity {
            let at = index(name).expect("found above");
            if !schema.field(at).data_type().is_integer() {
                return Ok(None);
            }
            if !projection.contains(&at) {
                projection.push(at);
            }
        }
        // Inputs that disagree on a column's type (or on which columns name a cell) are Polars'
        // to refuse or reconcile.
        if kinds.get_or_insert_with(|| these_kinds.clone()) != &these_kinds
            || feature_types.get_or_insert_with(|| these_types.clone()) != &these_types
            || *identities.get_or_insert(identity) != identity
        {
            return Ok(None);
        }
        phenoflow_schemas::parquet_io::check_column_chunks(path, metadata.metadata(), length)?;
        inputs.push(Input {
            path: path.clone(),
            file,
            length,
            metadata,
            projection,
        });
    }
    Ok(kinds.map(|kinds| {
        let layout = Layout {
            kinds,
            identity: identities.unwrap_or(&[]),
        };
        (inputs, layout)
    }))
}

fn open(path: &Path) -> anyhow::Result<File> {
    File::open(path).with_context(|| format!("opening {}", path.display()))
}

/// The bytes of one row group's projected column chunks, mapped (offsets checked against the
/// file's length when it was opened).
fn map_row_group(input: &Input, row_group: usize, mask: &ProjectionMask) -> anyhow::Result<Window> {
    let chunks = input.metadata.metadata().row_group(row_group).columns();
    let (start, end) = chunks
        .iter()
        .enumerate()
        .filter(|(leaf, _)| mask.leaf_included(*leaf))
        .map(|(_, chunk)| {
            phenoflow_schemas::parquet_io::column_chunk_range(chunk)
                .expect("every column chunk was checked when the file was opened")
        })
        .fold((u64::MAX, 0), |(low, high), (start, end)| {
            (low.min(start), high.max(end))
        });
    let (start, length) = if start < end {
        (start, end - start)
    } else {
        (0, 0)
    };
    // A file cut short since its footer was read would end the process when a mapped page
    // past its end is touched (SIGBUS): said as an error instead.
    let now = input
        .file
        .metadata()
        .with_context(|| format!("reading {}", input.path.display()))?
        .len();
    anyhow::ensure!(
        now >= input.length,
        "{}: the file shrank from {} to {now} bytes while it was read (another program is writing it?)",
        input.path.display(),
        input.length
    );
    let (offset, bytes) = map_or_read_range(&input.file, start, length).with_context(|| {
        format!(
            "{}: reading row group {row_group} ({length} bytes at offset {start})",
            input.path.display()
        )
    })?;
    Ok(Window {
        offset,
        bytes,
        file_length: input.length,
    })
}

/// One row group's sums, a batch at a time.
fn sum_row_group(
    input: &Input,
    row_group: usize,
    keys: &[&str],
    layout: &Layout,
    features: &[String],
) -> anyhow::Result<Partial> {
    let mask = ProjectionMask::roots(
        input.metadata.parquet_schema(),
        input.projection.iter().copied(),
    );
    let window = map_row_group(input, row_group, &mask)?;
    let reader = ParquetRecordBatchReaderBuilder::new_with_metadata(window, input.metadata.clone())
        .with_row_groups(vec![row_group])
        .with_projection(mask)
        .with_batch_size(BATCH_ROWS)
        .build()
        .with_context(|| format!("reading {}", input.path.display()))?;
    let mut partial = Partial::default();
    for batch in reader {
        let batch = batch
            .with_context(|| format!("reading {} (row group {row_group})", input.path.display()))?;
        sum_batch(&mut partial, &batch, keys, layout, features, &input.path)?;
    }
    Ok(partial)
}

/// The footer read again with the text key columns as dictionaries (arrow-rs keeps the
/// file's own dictionary pages, and builds one where a page is plain): rows are then compared
/// by their dictionary index, not their text, and no string is copied out per row. The metadata
/// as it was where the reader does not take that schema.
fn with_dictionary_keys(metadata: ArrowReaderMetadata, keys: &[&str]) -> ArrowReaderMetadata {
    let schema = metadata.schema();
    let fields: Vec<arrow_schema::FieldRef> = schema
        .fields()
        .iter()
        .map(|field| match field.data_type() {
            DataType::Utf8 | DataType::LargeUtf8 if keys.contains(&field.name().as_str()) => {
                std::sync::Arc::new(field.as_ref().clone().with_data_type(DataType::Dictionary(
                    Box::new(DataType::Int32),
                    Box::new(field.data_type().clone()),
                )))
            }
            _ => field.clone(),
        })
        .collect();
    let hinted = arrow_schema::Schema::new_with_metadata(fields, schema.metadata().clone());
    let options = ArrowReaderOptions::new().with_schema(std::sync::Arc::new(hinted));
    ArrowReaderMetadata::try_new(metadata.metadata().clone(), options).unwrap_or(metadata)
}

/// A key column of one batch.
enum KeyColumn<'a> {
    Dictionary(&'a arrow_array::Int32DictionaryArray, &'a dyn Array),
    Utf8(&'a arrow_array::StringArray),
    LargeUtf8(&'a arrow_array::LargeStringArray),
    View(&'a arrow_array::StringViewArray),
    Float64(&'a arrow_array::Float64Array),
    Float32(&'a arrow_array::Float32Array),
}

/// A borrowed key value, compared row to row without allocating.
#[derive(PartialEq)]
enum KeyRef<'a> {
    Text(&'a str),
    Bits(u64),
    /// An index into the batch's dictionary: the same index is the same text (two indices may
    /// hold the same text, which only cuts a run in two; both halves find one group).
    Index(i32),
}

/// -0.0 groups with 0.0 and every NaN with every other, as in Polars.
fn canonical_bits(value: f64) -> u64 {
    if value.is_nan() {
        f64::NAN.to_bits()
    } else if value == 0.0 {
        0.0f64.to_bits()
    } else {
        value.to_bits()
    }
}

impl<'a> KeyColumn<'a> {
    fn of(array: &'a dyn Array) -> Self {
        match array.data_type() {
            DataType::Dictionary(_, _) => {
                let dictionary = array.as_dictionary::<arrow_array::types::Int32Type>();
                Self::Dictionary(dictionary, dictionary.values().as_ref())
            }
            DataType::Utf8 => Self::Utf8(array.as_string::<i32>()),
            DataType::LargeUtf8 => Self::LargeUtf8(array.as_string::<i64>()),
            DataType::Utf8View => Self::View(array.as_string_view()),
            DataType::Float64 => Self::Float64(array.as_primitive::<Float64Type>()),
            DataType::Float32 => Self::Float32(array.as_primitive::<Float32Type>()),
            other => unreachable!("open_inputs admits no key column of type {other}"),
        }
    }

    fn get(&self, row: usize) -> Option<KeyRef<'a>> {
        let valid = match self {
            Self::Dictionary(a, values) => a.is_valid(row) && values.is_valid(a.key(row)?),
            Self::Utf8(a) => a.is_valid(row),
            Self::LargeUtf8(a) => a.is_valid(row),
            Self::View(a) => a.is_valid(row),
            Self::Float64(a) => a.is_valid(row),
            Self::Float32(a) => a.is_valid(row),
        };
        valid.then(|| match self {
            Self::Dictionary(a, _) => KeyRef::Index(a.keys().value(row)),
            Self::Utf8(a) => KeyRef::Text(a.value(row)),
            Self::LargeUtf8(a) => KeyRef::Text(a.value(row)),
            Self::View(a) => KeyRef::Text(a.value(row)),
            Self::Float64(a) => KeyRef::Bits(canonical_bits(a.value(row))),
            Self::Float32(a) => KeyRef::Bits(canonical_bits(f64::from(a.value(row)))),
        })
    }
}

impl KeyColumn<'_> {
    /// A row's key value, owned (the text behind a dictionary index).
    fn owned(&self, row: usize) -> Option<KeyValue> {
        self.get(row).map(|value| match (value, self) {
            (KeyRef::Index(index), Self::Dictionary(_, values)) => {
                let index = index as usize;
                KeyValue::Text(match values.data_type() {
                    DataType::LargeUtf8 => values.as_string::<i64>().value(index).to_string(),
                    _ => values.as_string::<i32>().value(index).to_string(),
                })
            }
            (KeyRef::Text(text), _) => KeyValue::Text(text.to_string()),
            (KeyRef::Bits(bits), _) => KeyValue::Bits(bits),
            (KeyRef::Index(_), _) => unreachable!("only dictionaries give indices"),
        })
    }
}

/// Adds one batch: rows are cut into runs of equal keys (cells of a well are usually
/// consecutive), each run's features summed into its group.
fn sum_batch(
    partial: &mut Partial,
    batch: &RecordBatch,
    keys: &[&str],
    layout: &Layout,
    features: &[String],
    path: &Path,
) -> anyhow::Result<()> {
    let column = |name: &str| {
        batch
            .column_by_name(name)
            .expect("the projection holds every key and feature column")
    };
    let key_columns: Vec<KeyColumn> = keys
        .iter()
        .map(|name| KeyColumn::of(column(name)))
        .collect();
    debug_assert_eq!(key_columns.len(), layout.kinds.len());
    let identity: Vec<Vec<Option<i64>>> = layout
        .identity
        .iter()
        .map(|name| integers(column(name)))
        .collect();
    let rows = batch.num_rows();
    let same = |a: usize, b: usize| key_columns.iter().all(|c| c.get(a) == c.get(b));
    let mut runs: Vec<(usize, usize, usize)> = Vec::new();
    let mut start = 0;
    for row in 1..=rows {
        if row == rows || !same(row, start) {
            let key: Key = key_columns.iter().map(|c| c.owned(start)).collect();
            let group = partial.group(key, features.len());
            partial.counts[group] += (row - start) as u64;
            if !identity.is_empty() {
                partial.cells[group].extend((start..row).map(|row| {
                    let mut cell = CellId::default();
                    for (at, values) in identity.iter().enumerate() {
                        match values[row] {
                            Some(value) => cell.values[at] = value,
                            None => cell.nulls |= 1 << at,
                        }
                    }
                    cell
                }));
            }
            runs.push((start, row, group));
            start = row;
        }
    }
    let width = features.len();
    for (index, name) in features.iter().enumerate() {
        let array = column(name);
        if array.null_count() > 0 {
            return Err(crate::input::null_feature(
                path,
                name,
                array.null_count() as u64,
            ));
        }
        match array.data_type() {
            DataType::Float32 => {
                let values = array.as_primitive::<Float32Type>().values();
                for &(from, to, group) in &runs {
                    partial.sums[group * width + index] += lane_sum(&values[from..to]);
                }
            }
            DataType::Float64 => {
                let values = array.as_primitive::<Float64Type>().values();
                for &(from, to, group) in &runs {
                    partial.sums[group * width + index] += lane_sum(&values[from..to]);
                }
            }
            other => unreachable!("open_inputs admits no feature column of type {other}"),
        }
    }
    Ok(())
}

/// An integer column's values as i64 (u64 by its bits), nulls as `None`.
fn integers(array: &dyn Array) -> Vec<Option<i64>> {
    use arrow_array::types::{
        Int16Type, Int32Type, Int64Type, Int8Type, UInt16Type, UInt32Type, UInt64Type, UInt8Type,
    };
    fn widen<T: arrow_array::ArrowPrimitiveType>(
        array: &dyn Array,
        to_i64: impl Fn(T::Native) -> i64,
    ) -> Vec<Option<i64>> {
        array
            .as_primitive::<T>()
            .iter()
            .map(|value| value.map(&to_i64))
            .collect()
    }
    match array.data_type() {
        DataType::Int8 => widen::<Int8Type>(array, i64::from),
        DataType::Int16 => widen::<Int16Type>(array, i64::from),
        DataType::Int32 => widen::<Int32Type>(array, i64::from),
        DataType::Int64 => widen::<Int64Type>(array, |v| v),
        DataType::UInt8 => widen::<UInt8Type>(array, i64::from),
        DataType::UInt16 => widen::<UInt16Type>(array, i64::from),
        DataType::UInt32 => widen::<UInt32Type>(array, i64::from),
        DataType::UInt64 => widen::<UInt64Type>(array, |v| v as i64),
        other => unreachable!("open_inputs admits no identity column of type {other}"),
    }
}

/// Sum in f64 over eight lanes (which the compiler vectorises), then the lanes in order.
fn lane_sum<T: Copy + Into<f64>>(values: &[T]) -> f64 {
    let mut lanes = [0.0f64; 8];
    let chunks = values.chunks_exact(8);
    let rest = chunks.remainder();
    for chunk in chunks {
        for (lane, &value) in lanes.iter_mut().zip(chunk) {
            *lane += value.into();
        }
    }
    lanes.iter().sum::<f64>() + rest.iter().map(|&value| value.into()).sum::<f64>()
}

/// The grouped frame: key columns as read (text, or f64), the cell count, the means.
fn frame(
    total: &Partial,
    keys: &[&str],
    kinds: &[KeyKind],
    features: &[String],
    count_column: &str,
) -> anyhow::Result<DataFrame> {
    let groups = total.keys.len();
    let mut columns = Vec::new();
    for (position, (name, kind)) in keys.iter().zip(kinds).enumerate() {
        let values = total.keys.iter().map(|key| key[position].as_ref());
        columns.push(match kind {
            KeyKind::Text => Column::new(
                (*name).into(),
                values
                    .map(|value| match value {
                        Some(KeyValue::Text(text)) => Some(text.as_str()),
                        _ => None,
                    })
                    .collect::<Vec<_>>(),
            ),
            KeyKind::Number => Column::new(
                (*name).into(),
                values
                    .map(|value| match value {
                        Some(KeyValue::Bits(bits)) => Some(f64::from_bits(*bits)),
                        _ => None,
                    })
                    .collect::<Vec<_>>(),
            ),
        });
    }
    columns.push(Column::new(
        count_column.into(),
        total
            .counts
            .iter()
            .map(|&count| count as IdxSize)
            .collect::<Vec<_>>(),
    ));
    let width = features.len();
    for (index, name) in features.iter().enumerate() {
        columns.push(Column::new(
            name.as_str().into(),
            (0..groups)
                .map(|group| total.sums[group * width + index] / total.counts[group] as f64)
                .collect::<Vec<f64>>(),
        ));
    }
    DataFrame::new(groups, columns).context("building the well frame")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lane_sums_add_every_value() {
        let values: Vec<f32> = (0..21).map(|v| v as f32 * 0.5).collect();
        assert_eq!(lane_sum(&values), 105.0);
        assert_eq!(lane_sum::<f32>(&[]), 0.0);
        let doubles: Vec<f64> = (0..13).map(f64::from).collect();
        assert_eq!(lane_sum(&doubles), 78.0);
    }

    #[test]
    fn negative_zero_and_nans_group_together() {
        assert_eq!(canonical_bits(-0.0), canonical_bits(0.0));
        assert_eq!(canonical_bits(f64::NAN), canonical_bits(-f64::NAN));
        assert_ne!(canonical_bits(1.0), canonical_bits(-1.0));
    }
}
