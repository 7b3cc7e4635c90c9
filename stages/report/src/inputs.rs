//! Reading the run's tables for the report: training log, embeddings, the pixels of chosen
//! cells, predictions and metrics. Errors name the file and the column.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};

use arrow_array::cast::AsArray;
use arrow_array::types::{Float32Type, Float64Type, Int32Type};
use arrow_array::RecordBatch;
use phenoflow_schemas::{CellPixels, InputError, ModelCard, ParquetTableReader, TableKind};

/// (plate, well, site, object number): a cell's identity across tables.
pub type CellKey = (String, String, i32, i32);

/// A string column (`Utf8`, `LargeUtf8` or `Utf8View`, as pyarrow, pandas and polars write them).
pub(crate) fn strings(
    batch: &RecordBatch,
    name: &str,
    path: &Path,
) -> anyhow::Result<Vec<Option<String>>> {
    let column = batch
        .column_by_name(name)
        .ok_or_else(|| InputError(format!("{}: no column `{name}`", path.display())))?;
    if !matches!(
        column.data_type(),
        arrow_schema::DataType::Utf8
            | arrow_schema::DataType::LargeUtf8
            | arrow_schema::DataType::Utf8View
    ) {
        return Err(InputError(format!(
            "{}: column `{name}` is {}, not text",
            path.display(),
            column.data_type()
        ))
        .into());
    }
    Ok(phenoflow_schemas::text_values(column.as_ref()).expect("a text column"))
}

fn int32s(batch: &RecordBatch, name: &str, path: &Path) -> anyhow::Result<Vec<i32>> {
    let column = batch
        .column_by_name(name)
        .and_then(|column| column.as_primitive_opt::<Int32Type>())
        .ok_or_else(|| InputError(format!("{}: no Int32 column `{name}`", path.display())))?;
    Ok(column.values().to_vec())
}

/// (epoch, value) points.
pub type Points = Vec<(f64, f64)>;
/// (term, train points, validation points) of a pf-train training log, loss terms only.
pub type Curves = Vec<(String, Points, Points)>;

pub fn read_training_log(path: &Path) -> anyhow::Result<Curves> {
    let mut curves: BTreeMap<String, (Points, Points)> = BTreeMap::new();
    let mut order: Vec<String> = Vec::new();
    for batch in phenoflow_schemas::read_table(path, TableKind::TrainingLog)? {
        let epochs = int32s(&batch, "Epoch", path)?;
        let splits = strings(&batch, "Split", path)?;
        let terms = strings(&batch, "Term", path)?;
        let values = batch
            .column_by_name("Value")
            .expect("validated")
            .as_primitive::<Float64Type>();
        for row in 0..batch.num_rows() {
            let term = terms[row].clone().unwrap_or_default();
            if term == "images_per_second" || term == "seconds" {
                continue;
            }
            if !curves.contains_key(&term) {
                order.push(term.clone());
            }
            let entry = curves.entry(term).or_default();
            let point = (f64::from(epochs[row]), values.value(row));
            match splits[row].as_deref() {
                Some("validation") => entry.1.push(point),
                _ => entry.0.push(point),
            }
        }
    }
    if order.is_empty() {
        return Err(InputError(format!("{}: the training log has no rows", path.display())).into());
    }
    Ok(order
        .into_iter()
        .map(|term| {
            let (train, validation) = curves.remove(&term).unwrap_or_default();
            (term, train, validation)
        })
        .collect())
}

/// Single-cell profiles with their keys.
#[derive(Debug, Default)]
pub struct Embeddings {
    pub keys: Vec<CellKey>,
    pub compound: Vec<String>,
    pub concentration: Vec<f64>,
    pub moa: Vec<Option<String>>,
    /// Row-major `[n, latent_dim]`.
    pub features: Vec<f32>,
    pub latent_dim: usize,
    /// γ, when pf-embed wrote it (`--with-gamma`).
    pub gamma: Option<Vec<f32>>,
}

impl Embeddings {
    pub fn read(paths: &[PathBuf]) -> anyhow::Result<Self> {
        let mut embeddings = Embeddings::default();
        let mut gamma: Vec<f32> = Vec::new();
        let mut has_gamma = true;
        for path in paths {
            let reader = ParquetTableReader::open(path, TableKind::Embeddings, 8192, None)?;
            let schema = reader.schema().clone();
            let feature_names: Vec<String> = schema
                .fields()
                .iter()
                .filter(|field| field.name().starts_with("Cells_"))
                .map(|field| field.name().clone())
                .collect();
            let gamma_names: Vec<String> = schema
                .fields()
                .iter()
                .filter(|field| {
                    field.name().starts_with("Posterior_") && field.name().contains("_gamma")
                })
                .map(|field| field.name().clone())
                .collect();
            if feature_names.is_empty() {
                return Err(InputError(format!(
                    "{}: no `Cells_*` feature columns",
                    path.display()
                ))
                .into());
            }
            if embeddings.latent_dim != 0 && embeddings.latent_dim != feature_names.len() {
                return Err(InputError(format!(
                    "{}: {} features, the first embeddings table has {}",
                    path.display(),
                    feature_names.len(),
                    embeddings.latent_dim
                ))
                .into());
            }
            embeddings.latent_dim = feature_names.len();
            has_gamma &= gamma_names.len() == feature_names.len();
            for batch in reader {
                let batch = batch?;
                let plates = strings(&batch, phenoflow_schemas::columns::PLATE, path)?;
                let wells = strings(&batch, phenoflow_schemas::columns::WELL, path)?;
                let sites = int32s(&batch, phenoflow_schemas::columns::SITE, path)?;
                let objects = int32s(&batch, phenoflow_schemas::columns::OBJECT_NUMBER, path)?;
                let compounds = strings(&batch, phenoflow_schemas::columns::COMPOUND, path)?;
                let moas = strings(&batch, phenoflow_schemas::columns::MOA, path)?;
                let concentrations = batch
                    .column_by_name(phenoflow_schemas::columns::CONCENTRATION)
                    .expect("validated")
                    .as_primitive::<Float64Type>();
                let read_block = |names: &[String]| -> anyhow::Result<Vec<Vec<f32>>> {
                    names
                        .iter()
                        .map(|name| {
                            batch
                                .column_by_name(name)
                                .and_then(|column| column.as_primitive_opt::<Float32Type>())
                                .map(|column| column.values().to_vec())
                                .ok_or_else(|| {
                                    InputError(format!(
                                        "{}: column `{name}` is not Float32",
                                        path.display()
                                    ))
                                    .into()
                                })
                        })
                        .collect()
                };
                let columns = read_block(&feature_names)?;
                let gamma_columns = if has_gamma {
                    read_block(&gamma_names)?
                } else {
                    Vec::new()
                };
                for row in 0..batch.num_rows() {
                    embeddings.keys.push((
                        plates[row].clone().unwrap_or_default(),
                        wells[row].clone().unwrap_or_default(),
                        sites[row],
                        objects[row],
                    ));
                    embeddings
                        .compound
                        .push(compounds[row].clone().unwrap_or_default());
                    embeddings.concentration.push(concentrations.value(row));
                    embeddings.moa.push(moas[row].clone());
                    embeddings
                        .features
                        .extend(columns.iter().map(|column| column[row]));
                    gamma.extend(gamma_columns.iter().map(|column| column[row]));
                }
            }
        }
        if embeddings.keys.is_empty() {
            return Err(InputError("the embeddings tables have no rows".into()).into());
        }
        embeddings.gamma = has_gamma.then_some(gamma);
        Ok(embeddings)
    }

    pub fn n_cells(&self) -> usize {
        self.keys.len()
    }

    pub fn profile(&self, row: usize) -> &[f32] {
        &self.features[row * self.latent_dim..(row + 1) * self.latent_dim]
    }
}

/// The normalised pixels of the wanted cells, found by key in the cells tables.
pub fn read_cell_pixels(
    paths: &[PathBuf],
    wanted: &[CellKey],
    card: &ModelCard,
) -> anyhow::Result<HashMap<CellKey, Vec<f32>>> {
    let wanted: BTreeSet<&CellKey> = wanted.iter().collect();
    let mut found = HashMap::new();
    let n_channels = card.input_shape[0] as usize;
    for path in paths {
        let columns = [
            phenoflow_schemas::columns::PLATE,
            phenoflow_schemas::columns::WELL,
            phenoflow_schemas::columns::SITE,
            phenoflow_schemas::columns::OBJECT_NUMBER,
            phenoflow_schemas::PIXELS_COLUMN,
        ];
        let reader = ParquetTableReader::open(path, TableKind::Cells, 4096, Some(&columns))?;
        for batch in reader {
            let batch = batch?;
            let plates = strings(&batch, phenoflow_schemas::columns::PLATE, path)?;
            let wells = strings(&batch, phenoflow_schemas::columns::WELL, path)?;
            let sites = int32s(&batch, phenoflow_schemas::columns::SITE, path)?;
            let objects = int32s(&batch, phenoflow_schemas::columns::OBJECT_NUMBER, path)?;
            let pixels = CellPixels::from_batch(&batch, path)?;
            let shape = pixels.shape();
            if [
                shape.channels as i64,
                shape.height as i64,
                shape.width as i64,
            ] != card.input_shape
            {
                return Err(InputError(format!(
                    "{}: cells are {}x{}x{}, the model takes {:?}",
                    path.display(),
                    shape.channels,
                    shape.height,
                    shape.width,
                    card.input_shape
                ))
                .into());
            }
            for row in 0..batch.num_rows() {
                let key = (
                    plates[row].clone().unwrap_or_default(),
                    wells[row].clone().unwrap_or_default(),
                    sites[row],
                    objects[row],
                );
                if wanted.contains(&key) {
                    let mut normalised = vec![0f32; shape.len()];
                    card.normalization
                        .apply(pixels.cell(row), n_channels, &mut normalised);
                    found.insert(key, normalised);
                }
            }
        }
    }
    if let Some(missing) = wanted.iter().find(|key| !found.contains_key(**key)) {
        return Err(InputError(format!(
            "cell {missing:?} of the embeddings is in none of the cells tables given (are they the same run?)"
        ))
        .into());
    }
    Ok(found)
}

/// One confusion matrix per protocol: (protocol, classes, counts[true][predicted]).
/// (protocol, classes, counts[true][predicted]).
pub type Confusion = (String, Vec<String>, Vec<Vec<usize>>);

pub fn confusion_matrices(path: &Path) -> anyhow::Result<Vec<Confusion>> {
    let mut pairs: BTreeMap<String, Vec<(String, String)>> = BTreeMap::new();
    for batch in phenoflow_schemas::read_table(path, TableKind::Predictions)? {
        let protocols = strings(&batch, "Protocol", path)?;
        let truths = strings(&batch, phenoflow_schemas::columns::MOA, path)?;
        let predictions = strings(&batch, "Predicted_MoA", path)?;
        for row in 0..batch.num_rows() {
            pairs
                .entry(protocols[row].clone().unwrap_or_default())
                .or_default()
                .push((
                    truths[row].clone().unwrap_or_default(),
                    predictions[row].clone().unwrap_or_default(),
                ));
        }
    }
    Ok(pairs
        .into_iter()
        .map(|(protocol, pairs)| {
            let classes: Vec<String> = pairs
                .iter()
                .flat_map(|(truth, predicted)| [truth.clone(), predicted.clone()])
                .collect::<BTreeSet<_>>()
                .into_iter()
                .collect();
            let index: HashMap<&String, usize> = classes
                .iter()
                .enumerate()
                .map(|(i, class)| (class, i))
                .collect();
            let mut counts = vec![vec![0usize; classes.len()]; classes.len()];
            for (truth, predicted) in &pairs {
                counts[index[truth]][index[predicted]] += 1;
            }
            (protocol, classes, counts)
        })
        .collect())
}

pub use phenoflow_schemas::metrics::{read_metrics, read_metrics_summary, MetricRow};
