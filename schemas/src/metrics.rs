//! The `metrics` table (pf-classify's NSC / NSCB scores) and the `metrics_summary` table (the same
//! scores over replicate runs) as rows: what pf-classify writes and pf-report reads. String
//! columns are read whether Arrow holds them as `Utf8`, `LargeUtf8` or `Utf8View`.

use std::path::Path;
use std::sync::Arc;

use arrow_array::cast::AsArray;
use arrow_array::types::{Float64Type, Int64Type};
use arrow_array::{Array, ArrayRef, Float64Array, Int64Array, RecordBatch, StringArray};
use arrow_schema::Schema;

use crate::{Provenance, SchemaError, TableKind};

/// (metric, protocol, scope, value, count) of a `metrics` table.
pub type MetricRow = (String, String, String, f64, Option<i64>);

/// One (metric, protocol, scope) of a `metrics_summary` table across replicate runs.
#[derive(Debug, Clone, PartialEq)]
pub struct MetricSummary {
    pub metric: String,
    pub protocol: String,
    pub scope: String,
    pub mean: f64,
    /// Sample standard deviation (denominator n − 1); `None` with one replicate.
    pub sd: Option<f64>,
    pub min: f64,
    pub max: f64,
    pub replicates: i64,
    /// The replicates' common count (queries, support), or `None` when they differ.
    pub count: Option<i64>,
}

fn text(batch: &RecordBatch, name: &str) -> Vec<String> {
    let column = batch.column_by_name(name).expect("validated column");
    crate::text_values(column.as_ref())
        .expect("validated string column")
        .into_iter()
        .map(Option::unwrap_or_default)
        .collect()
}

fn floats(batch: &RecordBatch, name: &str) -> Float64Array {
    batch
        .column_by_name(name)
        .expect("validated column")
        .as_primitive::<Float64Type>()
        .clone()
}

fn integers(batch: &RecordBatch, name: &str) -> Int64Array {
    batch
        .column_by_name(name)
        .expect("validated column")
        .as_primitive::<Int64Type>()
        .clone()
}

/// The rows of a `metrics` table, in file order.
pub fn read_metrics(path: &Path) -> Result<Vec<MetricRow>, SchemaError> {
    let mut rows = Vec::new();
    for batch in crate::read_table(path, TableKind::Metrics)? {
        let (metrics, protocols, scopes) = (
            text(&batch, "Metric"),
            text(&batch, "Protocol"),
            text(&batch, "Scope"),
        );
        let (values, counts) = (floats(&batch, "Value"), integers(&batch, "Count"));
        for row in 0..batch.num_rows() {
            rows.push((
                metrics[row].clone(),
                protocols[row].clone(),
                scopes[row].clone(),
                values.value(row),
                (!counts.is_null(row)).then(|| counts.value(row)),
            ));
        }
    }
    Ok(rows)
}

/// The rows of a `metrics_summary` table, in file order.
pub fn read_metrics_summary(path: &Path) -> Result<Vec<MetricSummary>, SchemaError> {
    let mut rows = Vec::new();
    for batch in crate::read_table(path, TableKind::MetricsSummary)? {
        let (metrics, protocols, scopes) = (
            text(&batch, "Metric"),
            text(&batch, "Protocol"),
            text(&batch, "Scope"),
        );
        let (means, sds) = (floats(&batch, "Mean"), floats(&batch, "SD"));
        let (mins, maxs) = (floats(&batch, "Min"), floats(&batch, "Max"));
        let (replicates, counts) = (integers(&batch, "Replicates"), integers(&batch, "Count"));
        for row in 0..batch.num_rows() {
            rows.push(MetricSummary {
                metric: metrics[row].clone(),
                protocol: protocols[row].clone(),
                scope: scopes[row].clone(),
                mean: means.value(row),
                sd: (!sds.is_null(row)).then(|| sds.value(row)),
                min: mins.value(row),
                max: maxs.value(row),
                replicates: replicates.value(row),
                count: (!counts.is_null(row)).then(|| counts.value(row)),
            });
        }
    }
    Ok(rows)
}

/// Writes a `metrics_summary` table (through a temporary file, as every table).
pub fn write_metrics_summary(
    path: &Path,
    rows: &[MetricSummary],
    provenance: &Provenance,
) -> Result<(), SchemaError> {
    let schema = Arc::new(Schema::new(TableKind::MetricsSummary.required_fields(None)));
    let text = |get: fn(&MetricSummary) -> &str| -> ArrayRef {
        Arc::new(StringArray::from_iter_values(rows.iter().map(get)))
    };
    let float = |get: fn(&MetricSummary) -> f64| -> ArrayRef {
        Arc::new(Float64Array::from_iter_values(rows.iter().map(get)))
    };
    let columns: Vec<ArrayRef> = vec![
        text(|row| &row.metric),
        text(|row| &row.protocol),
        text(|row| &row.scope),
        float(|row| row.mean),
        Arc::new(Float64Array::from_iter(rows.iter().map(|row| row.sd))),
        float(|row| row.min),
        float(|row| row.max),
        Arc::new(Int64Array::from_iter_values(
            rows.iter().map(|row| row.replicates),
        )),
        Arc::new(Int64Array::from_iter(rows.iter().map(|row| row.count))),
    ];
    crate::write_table_at_once(path, TableKind::MetricsSummary, schema, columns, provenance)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_summary_reads_back_as_written() {
        let temp = tempfile::tempdir().unwrap();
        let path = temp.path().join("summary.parquet");
        let rows = vec![
            MetricSummary {
                metric: "accuracy".into(),
                protocol: "NSC".into(),
                scope: "all".into(),
                mean: 0.8,
                sd: Some(0.1),
                min: 0.7,
                max: 0.9,
                replicates: 3,
                count: Some(103),
            },
            MetricSummary {
                metric: "recall".into(),
                protocol: "NSCB".into(),
                scope: "Actin disruptors".into(),
                mean: 0.5,
                sd: None,
                min: 0.5,
                max: 0.5,
                replicates: 1,
                count: None,
            },
        ];
        let provenance = Provenance::new(
            TableKind::MetricsSummary,
            "test",
            "0",
            serde_json::json!({}),
        );
        write_metrics_summary(&path, &rows, &provenance).unwrap();
        assert_eq!(read_metrics_summary(&path).unwrap(), rows);
        assert!(
            read_metrics(&path).is_err(),
            "a summary is not a metrics table"
        );
    }
}
