//! CytoTable's Parquet output: already one row per cell (its presets join cytoplasm to cells and
//! nuclei with DuckDB), but named its own way: `Metadata_ImageNumber`, the image's metadata as
//! `Image_Metadata_*`, the object numbers as `Metadata_<Compartment>_Number_Object_Number` (SQLite
//! presets) or `Metadata_ObjectNumber` (CSV preset), features as `Cells_*` / `Cytoplasm_*` /
//! `Nuclei_*` of whatever numeric type the source had. This renames it to the `single_cells`
//! contract, row group by row group: `Image_Metadata_X` → `Metadata_X`, features as Float64 with
//! NaN as null, and drops the rows CytoTable's left joins leave without a cell (an image with no
//! objects).

use std::collections::HashSet;
use std::path::Path;
use std::sync::Arc;

use arrow_array::cast::AsArray;
use arrow_array::types::{
    Float32Type, Float64Type, Int16Type, Int32Type, Int64Type, Int8Type, UInt16Type, UInt32Type,
    UInt64Type, UInt8Type,
};
use arrow_array::{Array, ArrayRef, Float64Array, Int64Array, RecordBatch, StringArray};
use arrow_schema::{DataType, Field, Schema};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use phenoflow_schemas::{ParquetTableWriter, Provenance, TableKind};

use crate::args::Cli;
use crate::merge::{Summary, CELL_NUMBER, CYTOPLASM_NUMBER, IMAGE_NUMBER, NUCLEUS_NUMBER};

const IMAGE_CANDIDATES: &[&str] = &["Metadata_ImageNumber", "ImageNumber"];
const CELL_CANDIDATES: &[&str] = &[
    "Metadata_Cells_Number_Object_Number",
    "Cells_Number_Object_Number",
    "Metadata_Cells_ObjectNumber",
    "Cells_ObjectNumber",
    "Metadata_Cytoplasm_Parent_Cells",
    "Cytoplasm_Parent_Cells",
    "Metadata_ObjectNumber",
];
const CYTOPLASM_CANDIDATES: &[&str] = &[
    "Metadata_Cytoplasm_Number_Object_Number",
    "Cytoplasm_Number_Object_Number",
    "Metadata_Cytoplasm_ObjectNumber",
    "Cytoplasm_ObjectNumber",
];
const NUCLEUS_CANDIDATES: &[&str] = &[
    "Metadata_Nuclei_Number_Object_Number",
    "Nuclei_Number_Object_Number",
    "Metadata_Nuclei_ObjectNumber",
    "Nuclei_ObjectNumber",
    "Metadata_Cytoplasm_Parent_Nuclei",
    "Cytoplasm_Parent_Nuclei",
];
const COMPARTMENT_PREFIXES: &[&str] = &["Cells_", "Cytoplasm_", "Nuclei_"];

fn is_numeric(data_type: &DataType) -> bool {
    data_type.is_integer() || matches!(data_type, DataType::Float32 | DataType::Float64)
}

/// Any integer or float column as f64 values (None for null); `None` for another type.
fn floats(array: &dyn Array) -> Option<Vec<Option<f64>>> {
    macro_rules! convert {
        ($($type:ty),*) => {
            $(if let Some(values) = array.as_primitive_opt::<$type>() {
                return Some(values.iter().map(|value| value.map(|value| value as f64)).collect());
            })*
        };
    }
    convert!(
        Float64Type,
        Float32Type,
        Int64Type,
        Int32Type,
        Int16Type,
        Int8Type,
        UInt64Type,
        UInt32Type,
        UInt16Type,
        UInt8Type
    );
    None
}

/// Any integer column as i64 (exactly), or a float column's integral values; None for null, NaN
/// or a fraction; `None` for another type.
fn ints(array: &dyn Array) -> Option<Vec<Option<i64>>> {
    macro_rules! convert {
        ($($type:ty),*) => {
            $(if let Some(values) = array.as_primitive_opt::<$type>() {
                return Some(
                    values
                        .iter()
                        .map(|value| value.and_then(|value| i64::try_from(value).ok()))
                        .collect(),
                );
            })*
        };
    }
    convert!(
        Int64Type, Int32Type, Int16Type, Int8Type, UInt64Type, UInt32Type, UInt16Type, UInt8Type
    );
    floats(array).map(|values| {
        values
            .into_iter()
            .map(|value| value.and_then(crate::source::whole_number))
            .collect()
    })
}

fn texts(array: &dyn Array) -> Option<Vec<Option<String>>> {
    if let Some(values) = array.as_string_opt::<i32>() {
        return Some(values.iter().map(|v| v.map(String::from)).collect());
    }
    if let Some(values) = array.as_string_opt::<i64>() {
        return Some(values.iter().map(|v| v.map(String::from)).collect());
    }
    array
        .as_string_view_opt()
        .map(|values| values.iter().map(|v| v.map(String::from)).collect())
}

#[derive(Debug, Clone)]
enum Output {
    /// Text metadata (plate, well, any string column).
    Text,
    /// Integer metadata or an object number.
    Int,
    /// Float metadata or a feature.
    Real,
}

/// Converts one CytoTable file.
pub fn convert(cli: &Cli, path: &Path, provenance: &Provenance) -> anyhow::Result<Summary> {
    let file = phenoflow_schemas::open_regular_file(path)
        .map_err(|source| anyhow::Error::new(source).context(format!("{}", path.display())))?;
    let length = file
        .metadata()
        .map_err(|source| anyhow::Error::new(source).context(format!("{}", path.display())))?
        .len();
    let builder = ParquetRecordBatchReaderBuilder::try_new(file).map_err(|error| {
        crate::input_error(format!(
            "{}: not a readable Parquet file: {error}",
            path.display()
        ))
    })?;
    phenoflow_schemas::parquet_io::check_column_chunks(path, builder.metadata(), length)?;
    let schema = builder.schema().clone();
    let names: Vec<String> = schema.fields().iter().map(|f| f.name().clone()).collect();
    let find = |candidates: &[&str]| {
        candidates
            .iter()
            .find_map(|candidate| names.iter().position(|name| name == candidate))
    };
    let missing = |what: &str, candidates: &[&str]| {
        crate::input_error(format!(
            "{}: no {what} column (looked for {}; its columns: {})",
            path.display(),
            candidates.join(", "),
            crate::source::first_names(&names)
        ))
    };
    let image = find(IMAGE_CANDIDATES).ok_or_else(|| missing("image number", IMAGE_CANDIDATES))?;
    let cell =
        find(CELL_CANDIDATES).ok_or_else(|| missing("cell object number", CELL_CANDIDATES))?;
    let cytoplasm = find(CYTOPLASM_CANDIDATES);
    let nucleus = find(NUCLEUS_CANDIDATES);
    let renamed = |name: &str| -> String {
        match name.strip_prefix("Image_Metadata_") {
            Some(rest) => format!("Metadata_{rest}"),
            None => name.to_string(),
        }
    };
    let plate_wanted = renamed(&cli.plate_column);
    let well_wanted = renamed(&cli.well_column);
    let locate = |wanted: &str, flag: &str| -> anyhow::Result<usize> {
        names
            .iter()
            .position(|name| renamed(name) == wanted)
            .ok_or_else(|| {
                crate::input_error(format!(
                    "{}: no column `{wanted}` or `Image_{wanted}` ({flag} names it; its columns: {})",
                    path.display(),
                    crate::source::first_names(&names)
                ))
            })
    };
    let plate = locate(&plate_wanted, "--plate-column")?;
    let well = locate(&well_wanted, "--well-column")?;

    // (input column, output name, output type), in output order.
    let mut plan: Vec<(usize, String, Output)> = vec![
        (plate, "Metadata_Plate".into(), Output::Text),
        (well, "Metadata_Well".into(), Output::Text),
    ];
    let numbers: Vec<(Option<usize>, &str)> = vec![
        (Some(image), IMAGE_NUMBER),
        (Some(cell), CELL_NUMBER),
        (cytoplasm, CYTOPLASM_NUMBER),
        (nucleus, NUCLEUS_NUMBER),
    ];
    let used: HashSet<usize> = [
        Some(image),
        Some(cell),
        cytoplasm,
        nucleus,
        Some(plate),
        Some(well),
    ]
    .into_iter()
    .flatten()
    .collect();
    let mut taken: HashSet<String> = ["Metadata_Plate", "Metadata_Well"]
        .iter()
        .map(|name| name.to_string())
        .collect();
    taken.extend(numbers.iter().map(|(_, name)| name.to_string()));
    for (index, field) in schema.fields().iter().enumerate() {
        let name = renamed(field.name());
        if used.contains(&index) || !name.starts_with("Metadata_") || !taken.insert(name.clone()) {
            continue;
        }
        let output = match field.data_type() {
            data_type if data_type.is_integer() => Output::Int,
            DataType::Float32 | DataType::Float64 => Output::Real,
            DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => Output::Text,
            _ => continue,
        };
        plan.push((index, name, output));
    }
    let n_metadata = plan.len();
    for (index, name) in numbers
        .iter()
        .filter_map(|(index, name)| index.map(|index| (index, *name)))
    {
        plan.push((index, name.to_string(), Output::Int));
    }
    let n_numbers = plan.len() - n_metadata;
    let mut n_features = 0usize;
    for (index, field) in schema.fields().iter().enumerate() {
        let name = field.name();
        let Some(prefix) = COMPARTMENT_PREFIXES.iter().find(|p| name.starts_with(*p)) else {
            continue;
        };
        let measurement = &name[prefix.len()..];
        if used.contains(&index)
            || measurement.ends_with("Number_Object_Number")
            || measurement.ends_with("ObjectNumber")
            || measurement.starts_with("Parent_")
            || !is_numeric(field.data_type())
        {
            continue;
        }
        plan.push((index, name.clone(), Output::Real));
        n_features += 1;
    }
    if n_features == 0 {
        return Err(crate::input_error(format!(
            "{}: no numeric Cells_ / Cytoplasm_ / Nuclei_ measurement columns",
            path.display()
        )));
    }
    let fields: Vec<Field> = plan
        .iter()
        .enumerate()
        .map(|(position, (_, name, output))| {
            let data_type = match output {
                Output::Text => DataType::Utf8,
                Output::Int => DataType::Int64,
                Output::Real => DataType::Float64,
            };
            let is_number = (n_metadata..n_metadata + n_numbers).contains(&position);
            Field::new(name, data_type, position >= 2 && !is_number)
        })
        .collect();
    let out_schema = Arc::new(Schema::new(fields));
    let projection = parquet::arrow::ProjectionMask::roots(
        builder.parquet_schema(),
        plan.iter().map(|(index, _, _)| *index),
    );
    let reader = builder
        .with_projection(projection)
        .with_batch_size(4096)
        .build()
        .map_err(|error| {
            crate::input_error(format!(
                "{}: not a readable Parquet file: {error}",
                path.display()
            ))
        })?;
    // The projected batch holds the planned columns in file order.
    let mut order: Vec<usize> = plan.iter().map(|(index, _, _)| *index).collect();
    order.sort_unstable();
    order.dedup();
    let mut writer = ParquetTableWriter::create(
        &cli.output,
        TableKind::SingleCells,
        out_schema.clone(),
        provenance,
        crate::rows_per_group(n_features),
    )?;
    let mut summary = Summary {
        features: n_features,
        ..Summary::default()
    };
    let mut images = HashSet::new();
    let mut images_with_cells = HashSet::new();
    let mut first_row = 0usize;
    for batch in reader {
        let batch = batch.map_err(|error| {
            crate::input_error(format!("{}: reading failed: {error}", path.display()))
        })?;
        let column = |input: usize| -> &ArrayRef {
            batch.column(order.binary_search(&input).expect("projected column"))
        };
        let unreadable = |input: usize| {
            crate::input_error(format!(
                "{}: column `{}` holds {}, which is read as neither text nor numbers here",
                path.display(),
                schema.field(input).name(),
                schema.field(input).data_type()
            ))
        };
        let image_numbers = ints(column(image).as_ref()).ok_or_else(|| unreadable(image))?;
        let cell_numbers = ints(column(cell).as_ref()).ok_or_else(|| unreadable(cell))?;
        let keep: Vec<usize> = (0..batch.num_rows())
            .filter(|&row| {
                if let Some(number) = image_numbers[row] {
                    images.insert(number);
                }
                cell_numbers[row].is_some()
            })
            .collect();
        let mut arrays: Vec<ArrayRef> = Vec::with_capacity(plan.len());
        for (position, (input, _, output)) in plan.iter().enumerate() {
            let array = column(*input);
            let is_number = (n_metadata..n_metadata + n_numbers).contains(&position);
            arrays.push(match output {
                Output::Text => {
                    let values = match texts(array.as_ref()) {
                        Some(values) => values,
                        None => ints(array.as_ref())
                            .ok_or_else(|| unreadable(*input))?
                            .into_iter()
                            .map(|value| value.map(|value| value.to_string()))
                            .collect(),
                    };
                    if position < 2 {
                        if let Some(&row) = keep.iter().find(|&&row| {
                            values[row]
                                .as_deref()
                                .is_none_or(|text| text.trim().is_empty())
                        }) {
                            return Err(crate::input_error(format!(
                                "{}: row {}: `{}` is empty: every cell needs its plate and well",
                                path.display(),
                                first_row + row,
                                schema.field(*input).name()
                            )));
                        }
                    }
                    Arc::new(StringArray::from_iter(
                        keep.iter().map(|&row| values[row].clone()),
                    ))
                }
                Output::Int => {
                    let values = ints(array.as_ref()).ok_or_else(|| unreadable(*input))?;
                    if is_number {
                        if let Some(&row) = keep.iter().find(|&&row| values[row].is_none()) {
                            return Err(crate::input_error(format!(
                                "{}: row {}: `{}` is empty or not a whole number",
                                path.display(),
                                first_row + row,
                                schema.field(*input).name()
                            )));
                        }
                    }
                    Arc::new(Int64Array::from_iter(keep.iter().map(|&row| values[row])))
                }
                Output::Real => {
                    let values = floats(array.as_ref()).ok_or_else(|| unreadable(*input))?;
                    let is_feature = position >= n_metadata + n_numbers;
                    Arc::new(Float64Array::from_iter(keep.iter().map(|&row| {
                        let value = values[row].filter(|value| value.is_finite());
                        if is_feature && value.is_none() {
                            summary.missing_values += 1;
                        }
                        value
                    })))
                }
            });
        }
        for &row in &keep {
            if let Some(number) = image_numbers[row] {
                images_with_cells.insert(number);
            }
        }
        summary.cells += keep.len();
        first_row += batch.num_rows();
        writer.write(&RecordBatch::try_new(out_schema.clone(), arrays)?)?;
    }
    if summary.cells == 0 {
        return Err(crate::input_error(format!("{}: no cells", path.display())));
    }
    summary.images = images.len();
    summary.images_without_cells = images.len() - images_with_cells.len();
    for (key, value) in crate::summary_extras(&summary) {
        writer.append_extra(key, &value);
    }
    writer.finish()?;
    Ok(summary)
}
