//! The `training_log` table: every loss term per epoch and split, written after every epoch
//! and read back when a run resumes.

use std::path::Path;
use std::sync::Arc;

use arrow_array::{Float64Array, Int32Array, StringArray};
use arrow_schema::{DataType, Field, Schema};
use phenoflow_schemas::{ModelCard, Provenance, TableKind};

use crate::STAGE;

/// One row of the training log.
#[derive(Debug, Clone, PartialEq)]
pub struct LogRow {
    pub epoch: i32,
    pub split: String,
    pub term: String,
    pub value: f64,
}

pub(crate) fn log_schema() -> Arc<Schema> {
    Arc::new(Schema::new(vec![
        Field::new("Epoch", DataType::Int32, false),
        Field::new("Split", DataType::Utf8, false),
        Field::new("Term", DataType::Utf8, false),
        Field::new("Value", DataType::Float64, false),
    ]))
}

/// The provenance of a generative model's training log.
pub(crate) fn log_provenance(card: &ModelCard) -> Provenance {
    let params = serde_json::json!({
        "model": card.model.name(),
        "hyperparameters": card.hyperparameters,
        "normalization": card.normalization,
    });
    let mut provenance = Provenance::new(
        TableKind::TrainingLog,
        STAGE,
        env!("CARGO_PKG_VERSION"),
        params,
    );
    provenance
        .inputs
        .insert(card.data.cells.clone(), card.data.content_hash.clone());
    provenance.seed = Some(card.seed);
    provenance
}

pub(crate) fn write_log(
    path: &Path,
    rows: &[LogRow],
    provenance: &Provenance,
) -> anyhow::Result<()> {
    let columns: Vec<arrow_array::ArrayRef> = vec![
        Arc::new(Int32Array::from_iter_values(
            rows.iter().map(|row| row.epoch),
        )),
        Arc::new(StringArray::from_iter_values(
            rows.iter().map(|row| row.split.as_str()),
        )),
        Arc::new(StringArray::from_iter_values(
            rows.iter().map(|row| row.term.as_str()),
        )),
        Arc::new(Float64Array::from_iter_values(
            rows.iter().map(|row| row.value),
        )),
    ];
    Ok(phenoflow_schemas::write_table_at_once(
        path,
        TableKind::TrainingLog,
        log_schema(),
        columns,
        provenance,
    )?)
}

/// Reads a training log written by [`write_log`] (to append to it when resuming).
pub fn read_log(path: &Path) -> anyhow::Result<Vec<LogRow>> {
    use arrow_array::cast::AsArray;
    use arrow_array::types::{Float64Type, Int32Type};
    let mut rows = Vec::new();
    for batch in phenoflow_schemas::read_table(path, TableKind::TrainingLog)? {
        let epochs = batch
            .column_by_name("Epoch")
            .expect("validated")
            .as_primitive::<Int32Type>();
        let splits = batch
            .column_by_name("Split")
            .expect("validated")
            .as_string::<i32>();
        let terms = batch
            .column_by_name("Term")
            .expect("validated")
            .as_string::<i32>();
        let values = batch
            .column_by_name("Value")
            .expect("validated")
            .as_primitive::<Float64Type>();
        for row in 0..batch.num_rows() {
            rows.push(LogRow {
                epoch: epochs.value(row),
                split: splits.value(row).to_string(),
                term: terms.value(row).to_string(),
                value: values.value(row),
            });
        }
    }
    Ok(rows)
}
