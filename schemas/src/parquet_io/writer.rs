//! [`ParquetTableWriter`]: one table written batch by batch on the caller's thread, into a
//! temporary file renamed into place by `finish`.

use super::*;

/// zstd level of every table: level 1 compresses pixel data nearly as well as 3 at twice the
/// speed, and the writer sits on the critical path of `pf-preprocess`.
pub(super) const ZSTD_LEVEL: i32 = 1;

/// Writes one table atomically. A writer dropped before [`finish`](Self::finish) has put the
/// file in place (never finished, or finishing failed) deletes the temporary file.
#[derive(Debug)]
pub struct ParquetTableWriter {
    kind: TableKind,
    final_path: PathBuf,
    pub(super) temp_path: PathBuf,
    pub(super) writer: Option<ArrowWriter<File>>,
    n_rows: usize,
    /// The temporary file was renamed into place, or handed to a [`ParallelTableWriter`].
    pub(super) done_with_temp: bool,
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
        // Feature columns (embeddings, wells, treatments): random-looking floats that a
        // dictionary only inflates (it fills, then falls back, keeping both) and zstd shrinks by
        // 7 %. PLAIN and uncompressed is the cheapest to read for every reader: the bench's 500k
        // cells × 256 float32 features take 489 MiB instead of 683, a fresh pyarrow reads them in
        // 0.5–0.6 s instead of 1.33, Polars scans them in 0.24–0.30 s instead of 1.15
        // (BYTE_STREAM_SPLIT reads as fast in pyarrow but 7× slower in Polars: README, "Feature
        // tables on disk").
        let feature_columns: std::collections::HashSet<&str> = if kind.has_features() {
            schema
                .fields()
                .iter()
                .filter(|field| {
                    !field.name().starts_with(METADATA_PREFIX)
                        && matches!(field.data_type(), DataType::Float32 | DataType::Float64)
                })
                .map(|field| field.name().as_str())
                .collect()
        } else {
            Default::default()
        };
        for column in parquet_schema.columns() {
            let top = column.path().parts().first().map(String::as_str);
            if top.is_some_and(|name| feature_columns.contains(name)) {
                properties = properties
                    .set_column_dictionary_enabled(column.path().clone(), false)
                    .set_column_encoding(column.path().clone(), Encoding::PLAIN)
                    .set_column_compression(column.path().clone(), Compression::UNCOMPRESSED);
            }
            if top == Some(PIXELS_COLUMN) {
                properties = properties
                    .set_column_encoding(column.path().clone(), Encoding::BYTE_STREAM_SPLIT)
                    .set_column_dictionary_enabled(column.path().clone(), false)
                    .set_column_statistics_enabled(column.path().clone(), EnabledStatistics::None);
            }
        }
        let properties = properties.build();
        let writer = ArrowWriter::try_new(file, schema, Some(properties)).map_err(|source| {
            let _ = std::fs::remove_file(&temp_path);
            SchemaError::Write {
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
            done_with_temp: false,
        })
    }

    /// Validates and appends one batch.
    pub fn write(&mut self, batch: &RecordBatch) -> Result<(), SchemaError> {
        self.kind
            .validate_batch(batch, &self.final_path, self.n_rows)?;
        let writer = self.writer.as_mut().expect("writer used after finish");
        writer.write(batch).map_err(|source| SchemaError::Write {
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
        writer.append_key_value_metadata(extra_key_value(key, value));
    }

    /// Rows written so far.
    pub fn n_rows(&self) -> usize {
        self.n_rows
    }

    /// Closes the file, flushes it to disk and renames it into place. Returns the row count.
    pub fn finish(mut self) -> Result<usize, SchemaError> {
        let writer = self.writer.take().expect("finish called once");
        let file = writer.into_inner().map_err(|source| SchemaError::Write {
            path: self.final_path.clone(),
            source,
        })?;
        put_in_place(file, &self.temp_path, &self.final_path)?;
        self.done_with_temp = true;
        Ok(self.n_rows)
    }
}

/// Flushes a complete temporary file to disk and renames it to its final path.
pub(super) fn put_in_place(
    file: File,
    temp_path: &Path,
    final_path: &Path,
) -> Result<(), SchemaError> {
    let io_error = |source| SchemaError::Io {
        path: final_path.to_path_buf(),
        source,
    };
    file.sync_all().map_err(io_error)?;
    drop(file);
    std::fs::rename(temp_path, final_path).map_err(io_error)
}

impl Drop for ParquetTableWriter {
    fn drop(&mut self) {
        if !self.done_with_temp {
            // Not finished: the output must not exist in a half-written state.
            let _ = std::fs::remove_file(&self.temp_path);
        }
    }
}

/// Writes a table small enough for one batch (metrics, predictions, logs, profiles) in one go:
/// `columns` under `schema`, recorded with `provenance` as a table of `kind`; validated and
/// atomic like every write.
pub fn write_table_at_once(
    path: &Path,
    kind: TableKind,
    schema: SchemaRef,
    columns: Vec<ArrayRef>,
    provenance: &Provenance,
) -> Result<(), SchemaError> {
    let batch =
        RecordBatch::try_new(schema.clone(), columns).map_err(|source| SchemaError::Arrow {
            path: path.to_path_buf(),
            source,
        })?;
    let mut provenance = provenance.clone();
    provenance.table = kind;
    let mut writer = ParquetTableWriter::create(path, kind, schema, &provenance, 65_536)?;
    writer.write(&batch)?;
    writer.finish().map(|_| ())
}
