//! pf-baseline's input: the features of every row, from a `cells` table's flattened pixels or
//! an `embeddings` table's feature columns, and their standardisation (fitted on the training
//! rows only).

use std::path::PathBuf;

use arrow_array::cast::AsArray;
use arrow_array::types::{Float32Type, Float64Type};
use arrow_array::Array;
use arrow_schema::DataType;

use phenoflow_schemas::tables::METADATA_PREFIX;
use phenoflow_schemas::{
    read_provenance, CellPixels, InputError, ParquetTableReader, TableKind, PIXELS_COLUMN,
};
use rayon::prelude::*;

/// Row-major features of every row.
#[derive(Debug)]
pub struct Features {
    pub n_rows: usize,
    pub n_features: usize,
    pub values: Vec<f64>,
    pub kind: TableKind,
}

/// Which table the inputs hold: all `cells` (pixels) or all `embeddings` (features). Files from
/// elsewhere (no provenance) are cells when they have a pixel column.
pub fn input_kind(paths: &[PathBuf]) -> anyhow::Result<TableKind> {
    let mut kind = None;
    for path in paths {
        let this_kind = match read_provenance(path)? {
            Some(provenance) => provenance.table,
            None => {
                let schema = phenoflow_schemas::parquet_io::file_schema(path)?;
                if schema.field_with_name(PIXELS_COLUMN).is_ok() {
                    TableKind::Cells
                } else {
                    TableKind::Embeddings
                }
            }
        };
        if !matches!(this_kind, TableKind::Cells | TableKind::Embeddings) {
            return Err(InputError(format!(
                "{}: holds a `{}` table; pf-baseline reads `cells` (pixels) or `embeddings` (features)",
                path.display(),
                this_kind.name()
            ))
            .into());
        }
        if *kind.get_or_insert(this_kind) != this_kind {
            return Err(InputError(format!(
                "{}: a `{}` table among `{}` tables",
                path.display(),
                this_kind.name(),
                kind.map(TableKind::name).unwrap_or_default()
            ))
            .into());
        }
    }
    Ok(kind.unwrap_or(TableKind::Cells))
}

/// Reads pixels (`cells`) or features (`embeddings`) of every row.
pub fn read_features(paths: &[PathBuf], kind: TableKind) -> anyhow::Result<Features> {
    let mut values = Vec::new();
    let mut n_features: Option<usize> = None;
    let mut n_rows = 0;
    for path in paths {
        let reader = ParquetTableReader::open(path, kind, 4096, None)?;
        for batch in reader {
            let batch = batch?;
            let width = if kind == TableKind::Cells {
                let pixels = CellPixels::from_batch(&batch, path)?;
                for row in 0..pixels.n_cells() {
                    values.extend(pixels.cell(row).iter().map(|&v| f64::from(v)));
                }
                pixels.shape().len()
            } else {
                let columns: Vec<_> = batch
                    .schema()
                    .fields()
                    .iter()
                    .enumerate()
                    .filter(|(_, field)| !field.name().starts_with(METADATA_PREFIX))
                    .map(|(index, _)| batch.column(index).clone())
                    .collect();
                for row in 0..batch.num_rows() {
                    for column in &columns {
                        values.push(match column.data_type() {
                            DataType::Float32 => {
                                f64::from(column.as_primitive::<Float32Type>().value(row))
                            }
                            _ => column.as_primitive::<Float64Type>().value(row),
                        });
                    }
                }
                columns.len()
            };
            if *n_features.get_or_insert(width) != width {
                return Err(InputError(format!(
                    "{}: {width} features per row, the first file has {}",
                    path.display(),
                    n_features.unwrap_or(width)
                ))
                .into());
            }
            n_rows += batch.num_rows();
        }
    }
    Ok(Features {
        n_rows,
        n_features: n_features.unwrap_or(0),
        values,
        kind,
    })
}

/// Standardises every feature by the training rows' mean and standard deviation (scikit-learn's
/// StandardScaler fitted on the training split; constant features are only centred) and returns
/// the training and test matrices.
pub fn standardise(
    features: &Features,
    train: &[usize],
    test: &[usize],
) -> (Vec<Vec<f64>>, Vec<Vec<f64>>) {
    let d = features.n_features;
    let row = |r: usize| &features.values[r * d..(r + 1) * d];
    let mut mean = vec![0.0; d];
    for &r in train {
        for (m, v) in mean.iter_mut().zip(row(r)) {
            *m += v;
        }
    }
    mean.iter_mut().for_each(|m| *m /= train.len() as f64);
    let mut variance = vec![0.0; d];
    for &r in train {
        for ((s, v), m) in variance.iter_mut().zip(row(r)).zip(&mean) {
            *s += (v - m) * (v - m);
        }
    }
    let scale: Vec<f64> = variance
        .iter()
        .map(|s| {
            let sd = (s / train.len() as f64).sqrt();
            if sd > 0.0 {
                1.0 / sd
            } else {
                1.0
            }
        })
        .collect();
    let transform = |rows: &[usize]| -> Vec<Vec<f64>> {
        rows.par_iter()
            .map(|&r| {
                row(r)
                    .iter()
                    .zip(&mean)
                    .zip(&scale)
                    .map(|((v, m), s)| (v - m) * s)
                    .collect()
            })
            .collect()
    };
    (transform(train), transform(test))
}
