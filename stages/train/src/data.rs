//! The training data: every cell of a `cells` table as one int16 tensor (raw uint16 intensity −
//! 32768, because libtorch has no general uint16 support) that lives on the device when it fits,
//! each cell's treatment, the seeded train/validation split and the per-epoch batch order.

use std::collections::BTreeMap;
use std::path::PathBuf;

use arrow_array::cast::AsArray;
use arrow_array::types::Float64Type;
pub use phenoflow_evaluation::seeded::{derive_seed, seeded_permutation};
use phenoflow_schemas::{
    concentration_key, CellPixels, ParquetTableReader, TableKind, PIXELS_COLUMN,
};
use tch::{Device, Tensor};

use crate::error::TrainError;

/// The cells of one table.
#[derive(Debug)]
pub struct CellData {
    /// `[N, C, H, W]` int16, value − 32768.
    pub pixels: Tensor,
    pub shape: [i64; 3],
    pub channel_names: Vec<String>,
    /// Index of each cell's treatment (compound, concentration) in `treatments`.
    pub treatment_of_cell: Vec<u32>,
    pub treatments: Vec<(String, f64)>,
}

impl CellData {
    pub fn n_cells(&self) -> usize {
        self.treatment_of_cell.len()
    }

    /// Reads whole tables (per-plate shards are concatenated in the order given); errors name
    /// the file.
    pub fn read(paths: &[PathBuf]) -> Result<Self, TrainError> {
        let mut values: Vec<i16> = Vec::new();
        let mut shape: Option<[i64; 3]> = None;
        let mut channel_names: Option<Vec<String>> = None;
        let mut treatment_index: BTreeMap<(String, i64), u32> = BTreeMap::new();
        let mut treatments = Vec::new();
        let mut treatment_of_cell = Vec::new();
        for path in paths {
            let bad = |reason: String| TrainError::Data {
                path: path.to_path_buf(),
                reason,
            };
            let columns = [
                phenoflow_schemas::columns::COMPOUND,
                phenoflow_schemas::columns::CONCENTRATION,
                PIXELS_COLUMN,
            ];
            let reader = ParquetTableReader::open(path, TableKind::Cells, 2048, Some(&columns))
                .map_err(TrainError::Table)?;
            if channel_names.is_none() {
                channel_names = reader
                    .provenance()
                    .and_then(|provenance| provenance.extra.get("channels"))
                    .map(|names| names.split(',').map(str::to_string).collect());
            }
            let n_rows = reader.n_rows();
            for batch in reader {
                let batch = batch.map_err(TrainError::Table)?;
                let pixels = CellPixels::from_batch(&batch, path).map_err(TrainError::Table)?;
                let tensor_shape = pixels.shape();
                let this_shape = [
                    tensor_shape.channels as i64,
                    tensor_shape.height as i64,
                    tensor_shape.width as i64,
                ];
                if *shape.get_or_insert(this_shape) != this_shape {
                    return Err(bad(format!(
                        "cells are {this_shape:?} (C, H, W), the first table's are {:?}",
                        shape.unwrap_or(this_shape)
                    )));
                }
                values.reserve(n_rows * tensor_shape.len());
                let compounds = batch
                    .column_by_name(phenoflow_schemas::columns::COMPOUND)
                    .and_then(|column| column.as_string_opt::<i32>())
                    .ok_or_else(|| bad("column `Metadata_Compound` is not a Utf8 column".into()))?;
                let concentrations = batch
                    .column_by_name(phenoflow_schemas::columns::CONCENTRATION)
                    .and_then(|column| column.as_primitive_opt::<Float64Type>())
                    .ok_or_else(|| {
                        bad("column `Metadata_Concentration` is not a Float64 column".into())
                    })?;
                for row in 0..batch.num_rows() {
                    let compound = compounds.value(row).to_string();
                    let concentration = concentrations.value(row);
                    let next = treatment_index.len() as u32;
                    let index = *treatment_index
                        .entry((compound.clone(), concentration_key(concentration)))
                        .or_insert_with(|| {
                            treatments.push((compound, concentration));
                            next
                        });
                    treatment_of_cell.push(index);
                    values.extend(
                        pixels
                            .cell(row)
                            .iter()
                            .map(|&value| (value ^ 0x8000) as i16),
                    );
                }
            }
        }
        let Some(shape) = shape.filter(|_| !treatment_of_cell.is_empty()) else {
            return Err(TrainError::Data {
                path: paths.first().cloned().unwrap_or_default(),
                reason: "the cells table has no rows".into(),
            });
        };
        let channel_names = channel_names
            .filter(|names| names.len() as i64 == shape[0])
            .unwrap_or_else(|| {
                (0..shape[0])
                    .map(|channel| format!("channel{channel}"))
                    .collect()
            });
        let n_cells = treatment_of_cell.len() as i64;
        let pixels = Tensor::from_slice(&values).view([n_cells, shape[0], shape[1], shape[2]]);
        Ok(Self {
            pixels,
            shape,
            channel_names,
            treatment_of_cell,
            treatments,
        })
    }

    /// Each channel's maximum over the given cells (for dataset-wide normalisation).
    pub fn channel_max(&self, cells: &[i64]) -> Vec<f32> {
        let selected = self.pixels.index_select(
            0,
            &Tensor::from_slice(cells).to_device(self.pixels.device()),
        );
        let maxima = crate::model::to_float_pixels(&selected)
            .amax([0i64, 2, 3].as_slice(), false)
            .to_device(Device::Cpu);
        Vec::<f32>::try_from(&maxima).expect("a float vector")
    }
}

/// The seeded split by cell: a random permutation, the first `n_validation` cells held out.
#[derive(Debug, Clone)]
pub struct Split {
    pub train: Vec<i64>,
    pub validation: Vec<i64>,
}

impl Split {
    pub fn new(n_cells: usize, validation_fraction: f64, seed: u64) -> Self {
        let mut n_validation = (n_cells as f64 * validation_fraction).round() as usize;
        if validation_fraction > 0.0 && n_cells >= 2 {
            n_validation = n_validation.max(1);
        }
        let order = seeded_permutation(n_cells, seed);
        Self {
            validation: order[..n_validation].to_vec(),
            train: order[n_validation..].to_vec(),
        }
    }
}

/// The order cells are visited in during one epoch, cut into batches of equal size (the last
/// incomplete batch is dropped, as the seed's `drop_last=True`).
pub fn epoch_batches(
    train: &[i64],
    treatment_of_cell: &[u32],
    batch_size: usize,
    balanced: bool,
    epoch_seed: u64,
) -> Vec<i64> {
    if !balanced {
        let order = seeded_permutation(train.len(), epoch_seed);
        let n_used = train.len() / batch_size * batch_size;
        return order[..n_used]
            .iter()
            .map(|&position| train[position as usize])
            .collect();
    }
    // One cell of every treatment per batch, each treatment's cells visited in a fresh random
    // order and recycled when exhausted; as many batches as one pass over the cells would take.
    let mut by_treatment: BTreeMap<u32, Vec<i64>> = BTreeMap::new();
    for &cell in train {
        by_treatment
            .entry(treatment_of_cell[cell as usize])
            .or_default()
            .push(cell);
    }
    let n_treatments = by_treatment.len();
    let n_batches = (train.len() / n_treatments).max(1);
    let mut columns: Vec<Vec<i64>> = Vec::with_capacity(n_treatments);
    for (offset, cells) in by_treatment.values().enumerate() {
        let mut column = Vec::with_capacity(n_batches);
        let mut round = 0u64;
        while column.len() < n_batches {
            let stream = derive_seed(epoch_seed, (offset as u64) << 20 | round);
            let order = seeded_permutation(cells.len(), stream);
            column.extend(order.iter().map(|&position| cells[position as usize]));
            round += 1;
        }
        column.truncate(n_batches);
        columns.push(column);
    }
    (0..n_batches)
        .flat_map(|batch| columns.iter().map(move |column| column[batch]))
        .collect()
}

/// The number of distinct treatments among `cells`.
pub fn count_treatments(cells: &[i64], treatment_of_cell: &[u32]) -> usize {
    let mut seen: Vec<u32> = cells
        .iter()
        .map(|&cell| treatment_of_cell[cell as usize])
        .collect();
    seen.sort_unstable();
    seen.dedup();
    seen.len()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_is_seeded_and_disjoint() {
        let a = Split::new(100, 0.1, 7);
        let b = Split::new(100, 0.1, 7);
        assert_eq!(a.validation, b.validation);
        assert_eq!(a.validation.len(), 10);
        let mut all: Vec<i64> = a.train.iter().chain(&a.validation).copied().collect();
        all.sort_unstable();
        assert_eq!(all, (0..100).collect::<Vec<_>>());
        assert_ne!(Split::new(100, 0.1, 8).validation, a.validation);
    }

    #[test]
    fn balanced_batches_hold_one_cell_per_treatment() {
        // Treatment 0 has 6 cells, treatment 1 has 2, treatment 2 has 4.
        let treatment_of_cell = [0, 0, 0, 0, 0, 0, 1, 1, 2, 2, 2, 2];
        let train: Vec<i64> = (0..12).collect();
        let order = epoch_batches(&train, &treatment_of_cell, 99, true, 3);
        assert_eq!(order.len(), 4 * 3);
        for batch in order.chunks(3) {
            let treatments: Vec<u32> = batch
                .iter()
                .map(|&cell| treatment_of_cell[cell as usize])
                .collect();
            assert_eq!(treatments, [0, 1, 2]);
        }
        let shuffled = epoch_batches(&train, &treatment_of_cell, 5, false, 3);
        assert_eq!(shuffled.len(), 10);
    }
}
