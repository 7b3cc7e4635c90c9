//! The one way stages read and write tables: Parquet with zstd, schema-checked on both sides,
//! provenance in the key-value metadata, and written to a temporary file in the output's folder
//! that is renamed into place only when the table is complete, so a crash or an error never leaves
//! a file that looks finished.

use std::collections::BTreeMap;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow_array::{RecordBatch, RecordBatchReader};
use arrow_schema::SchemaRef;
use parquet::arrow::arrow_reader::{ParquetRecordBatchReader, ParquetRecordBatchReaderBuilder};
use parquet::arrow::ArrowSchemaConverter;
use parquet::arrow::{ArrowWriter, ProjectionMask};
use parquet::basic::Encoding;
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::metadata::KeyValue;
use parquet::file::properties::{EnabledStatistics, WriterProperties};

use crate::{Provenance, SchemaError, TableKind, PIXELS_COLUMN};

/// zstd level of every table: level 1 compresses pixel data nearly as well as 3 at twice the
/// speed, and the writer sits on the critical path of `pf-preprocess`.
const ZSTD_LEVEL: i32 = 1;

/// Writes one table atomically. Dropping the writer without calling [`finish`](Self::finish)
/// deletes the temporary file.
#[derive(Debug)]
pub struct ParquetTableWriter {
    kind: TableKind,
    final_path: PathBuf,
    temp_path: PathBuf,
    writer: Option<ArrowWriter<File>>,
    n_rows: usize,
}

impl ParquetTableWriter {
    /// Opens a writer for `kind` at `path` with the given Arrow schema, which is checked against
    /// the table's contract before anything is written. `rows_per_group` bounds the memory the
    /// writer buffers (pixel tables want a few thousand rows, feature tables far more).
    pub fn create(
        path: &Path,
        kind: TableKind,
        schema: SchemaRef,
        provenance: &Provenance,
        rows_per_group: usize,
    ) -> Result<Self, SchemaError> {
        kind.validate_schema(&schema, path)?;
        let io_error = |source| SchemaError::Io {
            path: path.to_path_buf(),
            source,
        };
        if path.file_name().is_none() {
            return Err(io_error(std::io::Error::other(
                "output path has no file name",
            )));
        }
        let temp_path = crate::atomic::temp_path_for(path);
        if let Some(folder) = temp_path.parent() {
            std::fs::create_dir_all(folder).map_err(io_error)?;
        }
        let file = File::create(&temp_path).map_err(|source| SchemaError::Io {
            path: temp_path.clone(),
            source,
        })?;
        // Provenance goes both into the file's key-value metadata (`pq.read_metadata(path)`,
        // what our reader uses) and into the embedded Arrow schema (pyarrow's
        // `table.schema.metadata`), so users find it whichever way they look.
        let key_values = provenance
            .to_key_values()
            .into_iter()
            .map(|(key, value)| KeyValue::new(key, value))
            .collect();
        let mut schema_metadata = schema.metadata().clone();
        schema_metadata.extend(provenance.to_key_values());
        let schema = Arc::new(schema.as_ref().clone().with_metadata(schema_metadata));
        let mut properties = WriterProperties::builder()
            .set_compression(Compression::ZSTD(
                ZstdLevel::try_new(ZSTD_LEVEL).expect("valid zstd level"),
            ))
            .set_max_row_group_row_count(Some(rows_per_group.max(1)))
            .set_key_value_metadata(Some(key_values));
        // Pixel tensors: Parquet stores uint16 as INT32, so half of every value's bytes are zero.
        // BYTE_STREAM_SPLIT puts those bytes in streams of their own, which zstd then squeezes
        // almost for free; dictionaries and min/max statistics would cost time and say nothing.
        let parquet_schema = ArrowSchemaConverter::new()
            .convert(&schema)
            .map_err(|source| SchemaError::Parquet {
                path: path.to_path_buf(),
                source,
            })?;
        for column in parquet_schema.columns() {
            if column.path().parts().first().map(String::as_str) == Some(PIXELS_COLUMN) {
                properties = properties
                    .set_column_encoding(column.path().clone(), Encoding::BYTE_STREAM_SPLIT)
                    .set_column_dictionary_enabled(column.path().clone(), false)
                    .set_column_statistics_enabled(column.path().clone(), EnabledStatistics::None);
            }
        }
        let properties = properties.build();
        let writer = ArrowWriter::try_new(file, schema, Some(properties)).map_err(|source| {
            SchemaError::Parquet {
                path: path.to_path_buf(),
                source,
            }
        })?;
        Ok(Self {
            kind,
            final_path: path.to_path_buf(),
            temp_path,
            writer: Some(writer),
            n_rows: 0,
        })
    }

    /// Validates and appends one batch.
    pub fn write(&mut self, batch: &RecordBatch) -> Result<(), SchemaError> {
        self.kind
            .validate_batch(batch, &self.final_path, self.n_rows)?;
        let writer = self.writer.as_mut().expect("writer used after finish");
        writer.write(batch).map_err(|source| SchemaError::Parquet {
            path: self.final_path.clone(),
            source,
        })?;
        self.n_rows += batch.num_rows();
        Ok(())
    }

    /// Adds a `phenoflow.<key>` fact known only at the end of the run (counts of skipped
    /// inputs, say) to the file's metadata; it is written by [`finish`](Self::finish).
    pub fn append_extra(&mut self, key: &str, value: &str) {
        let writer = self.writer.as_mut().expect("writer used after finish");
        writer.append_key_value_metadata(KeyValue::new(
            format!("phenoflow.{key}"),
            value.to_string(),
        ));
    }

    /// Rows written so far.
    pub fn n_rows(&self) -> usize {
        self.n_rows
    }

    /// Closes the file, flushes it to disk and renames it into place. Returns the row count.
    pub fn finish(mut self) -> Result<usize, SchemaError> {
        let writer = self.writer.take().expect("finish called once");
        let file = writer.into_inner().map_err(|source| SchemaError::Parquet {
            path: self.final_path.clone(),
            source,
        })?;
        let io_error = |source| SchemaError::Io {
            path: self.final_path.clone(),
            source,
        };
        file.sync_all().map_err(io_error)?;
        drop(file);
        std::fs::rename(&self.temp_path, &self.final_path).map_err(io_error)?;
        Ok(self.n_rows)
    }
}

impl Drop for ParquetTableWriter {
    fn drop(&mut self) {
        if self.writer.is_some() {
            // Not finished: the output must not exist in a half-written state.
            let _ = std::fs::remove_file(&self.temp_path);
        }
    }
}

/// Streams one table's record batches, checking its schema once and every batch's values.
#[derive(Debug)]
pub struct ParquetTableReader {
    kind: TableKind,
    path: PathBuf,
    schema: SchemaRef,
    provenance: Option<Provenance>,
    key_values: BTreeMap<String, String>,
    n_rows: usize,
    reader: ParquetRecordBatchReader,
    rows_read: usize,
}

impl ParquetTableReader {
    /// Opens `path` as table `kind`. Files written by phenoflow must say they hold `kind`; files
    /// from elsewhere (no provenance) are accepted when their columns fit. `columns`, when given,
    /// reads only those top-level columns (the schema check still covers the whole file).
    pub fn open(
        path: &Path,
        kind: TableKind,
        batch_rows: usize,
        columns: Option<&[&str]>,
    ) -> Result<Self, SchemaError> {
        let file = File::open(path).map_err(|source| SchemaError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        let parquet_error = |source| SchemaError::Parquet {
            path: path.to_path_buf(),
            source,
        };
        let builder = ParquetRecordBatchReaderBuilder::try_new(file).map_err(parquet_error)?;
        let key_values = footer_key_values(&builder);
        let provenance = if key_values.contains_key("phenoflow.schema") {
            let provenance = Provenance::from_key_values(&key_values, path)?;
            if provenance.table != kind {
                return Err(SchemaError::WrongTable {
                    path: path.to_path_buf(),
                    expected: kind.name(),
                    found: provenance.table.name().to_string(),
                });
            }
            Some(provenance)
        } else {
            None
        };
        let full_schema = builder.schema().clone();
        kind.validate_schema(&full_schema, path)?;
        let n_rows = usize::try_from(builder.metadata().file_metadata().num_rows()).unwrap_or(0);
        let builder = builder.with_batch_size(batch_rows.max(1));
        let builder = match columns {
            Some(names) => {
                let indices: Vec<usize> = names
                    .iter()
                    .map(|name| {
                        full_schema
                            .index_of(name)
                            .map_err(|_| SchemaError::MissingColumn {
                                path: path.to_path_buf(),
                                table: kind.name(),
                                column: name.to_string(),
                            })
                    })
                    .collect::<Result<_, _>>()?;
                let mask = ProjectionMask::roots(builder.parquet_schema(), indices);
                builder.with_projection(mask)
            }
            None => builder,
        };
        let reader = builder.build().map_err(parquet_error)?;
        Ok(Self {
            kind,
            path: path.to_path_buf(),
            schema: reader.schema(),
            provenance,
            key_values,
            n_rows,
            reader,
            rows_read: 0,
        })
    }

    /// The schema of the batches this reader yields (after projection).
    pub fn schema(&self) -> &SchemaRef {
        &self.schema
    }

    pub fn provenance(&self) -> Option<&Provenance> {
        self.provenance.as_ref()
    }

    /// All key-value metadata of the file.
    pub fn key_values(&self) -> &BTreeMap<String, String> {
        &self.key_values
    }

    /// Row count from the file footer.
    pub fn n_rows(&self) -> usize {
        self.n_rows
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Iterator for ParquetTableReader {
    type Item = Result<RecordBatch, SchemaError>;

    fn next(&mut self) -> Option<Self::Item> {
        let batch = match self.reader.next()? {
            Ok(batch) => batch,
            Err(source) => {
                return Some(Err(SchemaError::Arrow {
                    path: self.path.clone(),
                    source,
                }))
            }
        };
        let first_row = self.rows_read;
        self.rows_read += batch.num_rows();
        Some(
            self.kind
                .validate_batch(&batch, &self.path, first_row)
                .map(|()| batch),
        )
    }
}

/// The key-value metadata of a Parquet file's footer (keys without a value are left out).
fn footer_key_values(builder: &ParquetRecordBatchReaderBuilder<File>) -> BTreeMap<String, String> {
    builder
        .metadata()
        .file_metadata()
        .key_value_metadata()
        .map(|pairs| {
            pairs
                .iter()
                .filter_map(|pair| Some((pair.key.clone(), pair.value.clone()?)))
                .collect()
        })
        .unwrap_or_default()
}

/// The provenance of a Parquet file (from its footer only), or `None` for a file not written by
/// phenoflow.
pub fn read_provenance(path: &Path) -> Result<Option<Provenance>, SchemaError> {
    let builder = footer(path)?;
    let key_values = footer_key_values(&builder);
    if !key_values.contains_key("phenoflow.schema") {
        return Ok(None);
    }
    Provenance::from_key_values(&key_values, path).map(Some)
}

/// The Arrow schema of a Parquet file (all columns), without reading any rows.
pub fn file_schema(path: &Path) -> Result<SchemaRef, SchemaError> {
    Ok(footer(path)?.schema().clone())
}

/// A reader builder over `path`, which has read the footer (schema and key-value metadata) only.
fn footer(path: &Path) -> Result<ParquetRecordBatchReaderBuilder<File>, SchemaError> {
    let file = File::open(path).map_err(|source| SchemaError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    ParquetRecordBatchReaderBuilder::try_new(file).map_err(|source| SchemaError::Parquet {
        path: path.to_path_buf(),
        source,
    })
}

/// Reads a whole (small) table into memory.
pub fn read_table(path: &Path, kind: TableKind) -> Result<Vec<RecordBatch>, SchemaError> {
    ParquetTableReader::open(path, kind, 8192, None)?.collect()
}

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
