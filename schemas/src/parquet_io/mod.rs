//! The one way stages read and write tables: Parquet (keys with zstd, float features plain, pixels
//! BYTE_STREAM_SPLIT), schema-checked on both sides,
//! provenance in the key-value metadata, and written to a temporary file in the output's folder
//! that is renamed into place only when the table is complete, so a crash or an error never leaves
//! a file that looks finished.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::{mpsc, Arc, Mutex};
use std::thread::JoinHandle;

use arrow_array::{Array, ArrayRef, FixedSizeListArray, UInt16Array};
use arrow_array::{RecordBatch, RecordBatchReader};
use arrow_schema::{DataType, SchemaRef};
use bytes::Bytes;
use parquet::arrow::arrow_reader::{
    ArrowReaderMetadata, ArrowReaderOptions, ParquetRecordBatchReader,
    ParquetRecordBatchReaderBuilder,
};
use parquet::arrow::arrow_writer::{compute_leaves, ArrowColumnChunk, ArrowRowGroupWriterFactory};
use parquet::arrow::ArrowSchemaConverter;
use parquet::arrow::{ArrowWriter, ProjectionMask};
use parquet::basic::Encoding;
use parquet::basic::{Compression, ZstdLevel};
use parquet::column::writer::{get_column_writer, ColumnCloseResult, ColumnWriter};
use parquet::errors::ParquetError;
use parquet::file::metadata::KeyValue;
use parquet::file::properties::WriterPropertiesPtr;
use parquet::file::properties::{EnabledStatistics, WriterProperties};
use parquet::file::writer::SerializedFileWriter;
use parquet::file::writer::{SerializedPageWriter, TrackedWrite};
use parquet::schema::types::{ColumnDescPtr, SchemaDescPtr};

use crate::provenance::extra_key_value;
use crate::tables::METADATA_PREFIX;
use crate::{Provenance, SchemaError, TableKind, PIXELS_COLUMN};

mod parallel;
mod reader;
mod writer;

pub use parallel::*;
pub use reader::*;
pub use writer::*;

#[cfg(test)]
mod tests {

    use arrow_array::{Float64Array, Int32Array, StringArray};
    use arrow_schema::Schema;

    use super::*;

    fn training_log_batch(values: Vec<f64>) -> RecordBatch {
        let n_rows = values.len();
        let schema = Arc::new(Schema::new(TableKind::TrainingLog.required_fields(None)));
        RecordBatch::try_new(
            schema,
            vec![
                Arc::new(Int32Array::from_iter_values(0..n_rows as i32)),
                Arc::new(StringArray::from(vec!["train"; n_rows])),
                Arc::new(StringArray::from(vec!["recon"; n_rows])),
                Arc::new(Float64Array::from(values)),
            ],
        )
        .unwrap()
    }

    fn provenance() -> Provenance {
        Provenance::new(
            TableKind::TrainingLog,
            "pf-test",
            "0.0.0",
            serde_json::json!({}),
        )
    }

    #[test]
    fn written_table_reads_back_with_provenance() {
        let directory = tempfile::tempdir().unwrap();
        let path = directory.path().join("log.parquet");
        let batch = training_log_batch(vec![3.0, 2.0, 1.0]);
        let mut writer = ParquetTableWriter::create(
            &path,
            TableKind::TrainingLog,
            batch.schema(),
            &provenance(),
            1024,
        )
        .unwrap();
        writer.write(&batch).unwrap();
        assert_eq!(writer.finish().unwrap(), 3);
        let reader = ParquetTableReader::open(&path, TableKind::TrainingLog, 2, None).unwrap();
        assert_eq!(reader.provenance(), Some(&provenance()));
        let batches: Vec<_> = reader.collect::<Result<_, _>>().unwrap();
        assert_eq!(batches.iter().map(|b| b.num_rows()).sum::<usize>(), 3);
        let wrong = ParquetTableReader::open(&path, TableKind::Metrics, 2, None).unwrap_err();
        assert!(wrong.to_string().contains("expected `metrics`"), "{wrong}");
    }

    #[test]
    fn feature_columns_are_plain_and_uncompressed_keys_are_not() {
        use arrow_array::{ArrayRef, Float32Array};
        use arrow_schema::Field;
        use parquet::file::reader::{FileReader, SerializedFileReader};
        let directory = tempfile::tempdir().unwrap();
        let path = directory.path().join("embeddings.parquet");
        let n = 4096;
        let mut fields = TableKind::Embeddings.required_fields(None);
        fields.push(Field::new("Cells_z0", DataType::Float32, false));
        let columns: Vec<ArrayRef> = fields
            .iter()
            .map(|field| -> ArrayRef {
                match field.data_type() {
                    DataType::Utf8 => Arc::new(StringArray::from(vec!["P1"; n])),
                    DataType::Int32 => Arc::new(Int32Array::from_iter_values(0..n as i32)),
                    DataType::Float64 => Arc::new(Float64Array::from(vec![0.5; n])),
                    DataType::Float32 => Arc::new(Float32Array::from_iter_values(
                        (0..n).map(|i| (i as f32 * 0.618).sin()),
                    )),
                    other => panic!("no test values for {other}"),
                }
            })
            .collect();
        let batch = RecordBatch::try_new(Arc::new(Schema::new(fields)), columns).unwrap();
        let provenance = Provenance::new(
            TableKind::Embeddings,
            "pf-test",
            "0.0.0",
            serde_json::json!({}),
        );
        let mut writer = ParquetTableWriter::create(
            &path,
            TableKind::Embeddings,
            batch.schema(),
            &provenance,
            n,
        )
        .unwrap();
        writer.write(&batch).unwrap();
        writer.finish().unwrap();
        let reader = SerializedFileReader::new(File::open(&path).unwrap()).unwrap();
        let group = reader.metadata().row_group(0);
        for chunk in group.columns() {
            let name = chunk.column_path().string();
            let dictionary = chunk.dictionary_page_offset().is_some();
            if name == "Cells_z0" {
                assert_eq!(chunk.compression(), Compression::UNCOMPRESSED, "{name}");
                assert!(!dictionary, "{name} has a dictionary");
            } else {
                assert!(
                    matches!(chunk.compression(), Compression::ZSTD(_)),
                    "{name}: {:?}",
                    chunk.compression()
                );
            }
        }
    }

    #[test]
    fn large_and_view_strings_are_read_as_utf8() {
        use arrow_array::{Array, ArrayRef, LargeStringArray, StringViewArray};
        let directory = tempfile::tempdir().unwrap();
        let log = training_log_batch(vec![3.0, 2.0]);
        for (name, text) in [
            (
                "large",
                Arc::new(LargeStringArray::from(vec!["train", "valid"])) as ArrayRef,
            ),
            (
                "view",
                Arc::new(StringViewArray::from(vec!["train", "valid"])),
            ),
        ] {
            // As pandas or Polars would write it: the string columns wide, no provenance.
            let mut columns = log.columns().to_vec();
            columns[1] = text.clone();
            columns[2] = text;
            let fields: Vec<arrow_schema::Field> = log
                .schema()
                .fields()
                .iter()
                .zip(&columns)
                .map(|(field, column)| {
                    field
                        .as_ref()
                        .clone()
                        .with_data_type(column.data_type().clone())
                })
                .collect();
            let batch = RecordBatch::try_new(Arc::new(Schema::new(fields)), columns).unwrap();
            let path = directory.path().join(format!("{name}.parquet"));
            let mut writer =
                ArrowWriter::try_new(File::create(&path).unwrap(), batch.schema(), None).unwrap();
            writer.write(&batch).unwrap();
            writer.close().unwrap();
            let reader = ParquetTableReader::open(&path, TableKind::TrainingLog, 16, None).unwrap();
            assert_eq!(
                reader.schema().field(1).data_type(),
                &DataType::Utf8,
                "{name}"
            );
            let batches: Vec<RecordBatch> = reader.collect::<Result<_, _>>().unwrap();
            let split = batches[0].column(1);
            assert_eq!(split.data_type(), &DataType::Utf8, "{name}");
            let split = split.as_any().downcast_ref::<StringArray>().unwrap();
            assert_eq!(
                (split.value(0), split.value(1)),
                ("train", "valid"),
                "{name}"
            );
        }
    }

    #[test]
    fn failed_write_leaves_no_file() {
        let directory = tempfile::tempdir().unwrap();
        let path = directory.path().join("log.parquet");
        let batch = training_log_batch(vec![1.0, f64::NAN]);
        let mut writer = ParquetTableWriter::create(
            &path,
            TableKind::TrainingLog,
            batch.schema(),
            &provenance(),
            1024,
        )
        .unwrap();
        let error = writer.write(&batch).unwrap_err();
        assert!(error.to_string().contains("column `Value`"), "{error}");
        drop(writer);
        let leftovers: Vec<_> = std::fs::read_dir(directory.path()).unwrap().collect();
        assert!(leftovers.is_empty(), "{leftovers:?}");
    }

    #[test]
    fn parallel_writer_writes_the_same_file_as_the_single_threaded_one() {
        let directory = tempfile::tempdir().unwrap();
        let (single, parallel) = (
            directory.path().join("single.parquet"),
            directory.path().join("parallel.parquet"),
        );
        // Batches of uneven sizes that straddle row groups of 7 rows.
        let batches: Vec<RecordBatch> = [5usize, 9, 1, 12, 3]
            .iter()
            .scan(0.0, |start, &n| {
                let values: Vec<f64> = (0..n).map(|i| *start + i as f64).collect();
                *start += n as f64;
                Some(training_log_batch(values))
            })
            .collect();
        let schema = batches[0].schema();
        let mut writer = ParquetTableWriter::create(
            &single,
            TableKind::TrainingLog,
            schema.clone(),
            &provenance(),
            7,
        )
        .unwrap();
        let mut parallel_writer = ParallelTableWriter::create(
            &parallel,
            TableKind::TrainingLog,
            schema,
            &provenance(),
            7,
            3,
        )
        .unwrap();
        for batch in &batches {
            writer.write(batch).unwrap();
            parallel_writer.write(batch).unwrap();
        }
        writer.append_extra("n_items", "5");
        parallel_writer.append_extra("n_items", "5");
        assert_eq!(writer.finish().unwrap(), 30);
        assert_eq!(parallel_writer.finish().unwrap(), 30);
        let read = |path: &Path| {
            let builder =
                ParquetRecordBatchReaderBuilder::try_new(File::open(path).unwrap()).unwrap();
            let groups = builder.metadata().num_row_groups();
            let key_values = footer_key_values(&builder);
            let rows: Vec<RecordBatch> =
                builder.build().unwrap().collect::<Result<_, _>>().unwrap();
            (
                groups,
                key_values,
                arrow_select::concat::concat_batches(&rows[0].schema(), &rows).unwrap(),
            )
        };
        let (single_groups, single_keys, single_rows) = read(&single);
        let (parallel_groups, parallel_keys, parallel_rows) = read(&parallel);
        assert_eq!((single_groups, parallel_groups), (5, 5));
        assert_eq!(single_keys, parallel_keys);
        assert_eq!(
            parallel_keys.get("phenoflow.n_items").map(String::as_str),
            Some("5")
        );
        assert_eq!(single_rows, parallel_rows);
        let values = parallel_rows
            .column(3)
            .as_any()
            .downcast_ref::<Float64Array>()
            .unwrap();
        assert_eq!(
            values.values().to_vec(),
            (0..30).map(f64::from).collect::<Vec<_>>()
        );
    }

    #[test]
    fn parallel_writer_writes_pixel_tensors_byte_for_byte_like_arrow_rs() {
        // Cells of fewer values than arrow-rs's mini-batch (handed over a batch at once), and of
        // more (a few cells at a time, over several pages of a row group).
        pixel_tensors_byte_for_byte(crate::TensorShape::new(2, 3, 4), &[0..5, 5..6, 6..19], 4);
        pixel_tensors_byte_for_byte(
            crate::TensorShape::new(3, 24, 24),
            &[0..130, 130..131, 131..450],
            200,
        );
    }

    fn pixel_tensors_byte_for_byte(
        shape: crate::TensorShape,
        cells: &[std::ops::Range<usize>],
        rows_per_group: usize,
    ) {
        use crate::{CellKeys, CellsBatchBuilder};
        let directory = tempfile::tempdir().unwrap();
        let (single, parallel) = (
            directory.path().join("single.parquet"),
            directory.path().join("parallel.parquet"),
        );
        let batch = |cells: std::ops::Range<usize>| {
            let mut builder = CellsBatchBuilder::with_capacity(shape, cells.len());
            for cell in cells {
                let keys = CellKeys {
                    plate: format!("P{}", cell % 3),
                    well: "B02".into(),
                    site: 1,
                    compound: "taxol".into(),
                    concentration: 0.3,
                    moa: Some("Microtubule stabilizers".into()),
                    batch: "Week1".into(),
                    object_number: cell as i32,
                    center_x: Some(cell as f64),
                    center_y: None,
                };
                let pixels: Vec<u16> = (0..shape.len())
                    .map(|i| (cell * 977 + i * 31) as u16)
                    .collect();
                builder.push(keys, &pixels);
            }
            builder.finish()
        };
        let batches: Vec<_> = cells.iter().cloned().map(batch).collect();
        let provenance =
            Provenance::new(TableKind::Cells, "pf-test", "0.0.0", serde_json::json!({}));
        let schema = batches[0].schema();
        let mut writer = ParquetTableWriter::create(
            &single,
            TableKind::Cells,
            schema.clone(),
            &provenance,
            rows_per_group,
        )
        .unwrap();
        let mut parallel_writer = ParallelTableWriter::create(
            &parallel,
            TableKind::Cells,
            schema,
            &provenance,
            rows_per_group,
            2,
        )
        .unwrap();
        for batch in &batches {
            writer.write(batch).unwrap();
            parallel_writer.write(batch).unwrap();
        }
        writer.finish().unwrap();
        parallel_writer.finish().unwrap();
        assert_eq!(
            std::fs::read(&single).unwrap(),
            std::fs::read(&parallel).unwrap()
        );
        let rows: usize = read_table(&parallel, TableKind::Cells)
            .unwrap()
            .iter()
            .map(|b| b.num_rows())
            .sum();
        assert_eq!(rows, cells.last().unwrap().end);
    }

    #[test]
    fn parallel_writer_rejects_bad_values_and_leaves_no_file() {
        let directory = tempfile::tempdir().unwrap();
        let path = directory.path().join("log.parquet");
        let good = training_log_batch(vec![1.0; 10]);
        let mut writer = ParallelTableWriter::create(
            &path,
            TableKind::TrainingLog,
            good.schema(),
            &provenance(),
            4,
            2,
        )
        .unwrap();
        writer.write(&good).unwrap();
        let error = writer
            .write(&training_log_batch(vec![f64::NAN]))
            .unwrap_err();
        assert!(error.to_string().contains("column `Value`"), "{error}");
        drop(writer);
        let leftovers: Vec<_> = std::fs::read_dir(directory.path()).unwrap().collect();
        assert!(leftovers.is_empty(), "{leftovers:?}");
    }

    #[test]
    fn footers_give_null_counts_and_the_largest_row_group_without_reading_rows() {
        let directory = tempfile::tempdir().unwrap();
        let path = directory.path().join("log.parquet");
        let batch = training_log_batch((0..1000).map(f64::from).collect());
        let mut writer = ParquetTableWriter::create(
            &path,
            TableKind::TrainingLog,
            batch.schema(),
            &provenance(),
            100,
        )
        .unwrap();
        writer.write(&batch).unwrap();
        writer.finish().unwrap();
        let (index, bytes) = largest_row_group(&path, None).unwrap().unwrap();
        assert!(index < 10, "{index}");
        // 100 rows of an int32, two short strings and a float64, uncompressed.
        assert!((1_000..100_000).contains(&bytes), "{bytes}");
        let value: BTreeSet<String> = ["Value".to_string()].into();
        let (_, value_bytes) = largest_row_group(&path, Some(&value)).unwrap().unwrap();
        // 100 float64 values and their page header.
        assert!(
            (800..bytes).contains(&value_bytes),
            "{value_bytes} of {bytes}"
        );
        let nulls = column_null_counts(&path).unwrap();
        assert_eq!(nulls.get("Value"), Some(&Some(0)));
        assert_eq!(nulls.len(), 4, "{nulls:?}");
    }

    /// A full disk, injected: the temporary file is a link to /dev/full, where every write
    /// fails with ENOSPC.
    #[test]
    fn a_full_disk_is_a_write_error_that_leaves_nothing() {
        let batch = training_log_batch((0..100_000).map(f64::from).collect());
        for parallel in [false, true] {
            let directory = tempfile::tempdir().unwrap();
            let path = directory.path().join("log.parquet");
            std::os::unix::fs::symlink("/dev/full", crate::atomic::temp_path_for(&path)).unwrap();
            let result = if parallel {
                ParallelTableWriter::create(
                    &path,
                    TableKind::TrainingLog,
                    batch.schema(),
                    &provenance(),
                    1000,
                    2,
                )
                .and_then(|mut writer| {
                    writer.write(&batch)?;
                    writer.finish()
                })
            } else {
                ParquetTableWriter::create(
                    &path,
                    TableKind::TrainingLog,
                    batch.schema(),
                    &provenance(),
                    1000,
                )
                .and_then(|mut writer| {
                    writer.write(&batch)?;
                    writer.finish()
                })
            };
            let error = result.unwrap_err();
            assert!(
                matches!(error, SchemaError::Write { .. } | SchemaError::Io { .. }),
                "{error:?}"
            );
            let message = error.to_string();
            assert!(!message.contains("not a readable"), "{message}");
            assert!(message.contains("log.parquet"), "{message}");
            // A machine failure, not bad input: exit code 1.
            assert_eq!(
                crate::exit_code([&error as &dyn std::error::Error], |_| false),
                1
            );
            let leftovers: Vec<_> = std::fs::read_dir(directory.path()).unwrap().collect();
            assert!(leftovers.is_empty(), "parallel {parallel}: {leftovers:?}");
        }
    }

    #[test]
    fn truncated_file_is_a_clear_error() {
        let directory = tempfile::tempdir().unwrap();
        let path = directory.path().join("log.parquet");
        let batch = training_log_batch(vec![1.0]);
        let mut writer = ParquetTableWriter::create(
            &path,
            TableKind::TrainingLog,
            batch.schema(),
            &provenance(),
            1024,
        )
        .unwrap();
        writer.write(&batch).unwrap();
        writer.finish().unwrap();
        let bytes = std::fs::read(&path).unwrap();
        std::fs::write(&path, &bytes[..bytes.len() / 2]).unwrap();
        let error = ParquetTableReader::open(&path, TableKind::TrainingLog, 2, None).unwrap_err();
        assert!(
            error.to_string().contains("truncated or corrupt"),
            "{error}"
        );
        assert!(error.to_string().contains("log.parquet"), "{error}");
    }
}
