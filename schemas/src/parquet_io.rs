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

/// zstd level of every table: level 1 compresses pixel data nearly as well as 3 at twice the
/// speed, and the writer sits on the critical path of `pf-preprocess`.
const ZSTD_LEVEL: i32 = 1;

/// Writes one table atomically. A writer dropped before [`finish`](Self::finish) has put the
/// file in place (never finished, or finishing failed) deletes the temporary file.
#[derive(Debug)]
pub struct ParquetTableWriter {
    kind: TableKind,
    final_path: PathBuf,
    temp_path: PathBuf,
    writer: Option<ArrowWriter<File>>,
    n_rows: usize,
    /// The temporary file was renamed into place, or handed to a [`ParallelTableWriter`].
    done_with_temp: bool,
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
fn put_in_place(file: File, temp_path: &Path, final_path: &Path) -> Result<(), SchemaError> {
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

/// A [`ParquetTableWriter`] that encodes and compresses whole row groups on threads of its own
/// while the caller produces the next batches: for tables of pixels, where encoding (levels,
/// byte-stream split, zstd) is a third of a stage's work and one writer thread would become the
/// bottleneck. Row groups are appended to the file in order, so the file is the same as the
/// single-threaded writer's. At most `threads + 2` row groups are in flight; `write` blocks
/// when the encoders are behind, which bounds memory.
pub struct ParallelTableWriter {
    kind: TableKind,
    final_path: PathBuf,
    temp_path: PathBuf,
    rows_per_group: usize,
    pending: Vec<RecordBatch>,
    pending_rows: usize,
    next_group: usize,
    n_rows: usize,
    jobs: Option<mpsc::SyncSender<(usize, Vec<RecordBatch>)>>,
    encoders: Vec<JoinHandle<()>>,
    appender: Option<JoinHandle<Result<SerializedFileWriter<File>, ParquetError>>>,
    extras: Vec<KeyValue>,
    finished: bool,
}

impl std::fmt::Debug for ParallelTableWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ParallelTableWriter")
            .field("path", &self.final_path)
            .field("n_rows", &self.n_rows)
            .field("encoders", &self.encoders.len())
            .finish_non_exhaustive()
    }
}

/// One encoded column chunk of a row group.
enum EncodedColumn {
    /// Through arrow-rs's generic writer.
    Arrow(ArrowColumnChunk),
    /// Through the pixel-tensor path: the chunk's bytes, from offset 0, and its metadata.
    Raw(Bytes, ColumnCloseResult),
}

/// What the encoders share: how to encode each column of a row group.
struct RowGroupEncoder {
    factory: ArrowRowGroupWriterFactory,
    schema: SchemaRef,
    parquet_schema: SchemaDescPtr,
    properties: WriterPropertiesPtr,
}

/// `FixedSizeList<UInt16>` without nulls, the storage of a pixel tensor: (all rows' values,
/// values per row). `None` for every other column, or if anything is null.
fn dense_u16_lists(column: &ArrayRef) -> Option<(&[u16], usize)> {
    let lists = column.as_any().downcast_ref::<FixedSizeListArray>()?;
    let values = lists.values().as_any().downcast_ref::<UInt16Array>()?;
    let size = usize::try_from(lists.value_length())
        .ok()
        .filter(|&size| size > 0)?;
    // Slicing a list array slices its values too: row 0's values start at 0.
    let end = lists.len() * size;
    if values.len() < end {
        return None;
    }
    let nulls = values
        .nulls()
        .map_or(0, |nulls| nulls.slice(0, end).null_count());
    (lists.null_count() == 0 && nulls == 0).then(|| (&values.values()[..end], size))
}

impl RowGroupEncoder {
    /// Encodes one row group's batches into column chunks (any thread). Pixel tensors skip
    /// arrow-rs's generic nested-column path, which builds a repetition and a definition level
    /// and an index for every pixel and then gathers the pixels by index (a third of the
    /// encoding time): every pixel is present, so the levels are one fixed pattern per cell, and
    /// the values go to the Parquet column writer as they are. The bytes are the same.
    fn encode(
        &self,
        index: usize,
        batches: &[RecordBatch],
    ) -> Result<Vec<EncodedColumn>, ParquetError> {
        let Some(first) = batches.first() else {
            return Ok(Vec::new());
        };
        let mut arrow_writers = self.factory.create_column_writers(index)?;
        let mut leaf_of_column = Vec::with_capacity(self.schema.fields().len());
        let mut leaf = 0;
        for (field, column) in self.schema.fields().iter().zip(first.columns()) {
            leaf_of_column.push(leaf);
            leaf += compute_leaves(field, &column.slice(0, 0))?.len();
        }
        let mut raw: Vec<Option<(Bytes, ColumnCloseResult)>> = (0..leaf).map(|_| None).collect();
        for (column_index, field) in self.schema.fields().iter().enumerate() {
            let leaf = leaf_of_column[column_index];
            let columns: Vec<&ArrayRef> = batches
                .iter()
                .map(|batch| batch.column(column_index))
                .collect();
            let descr = self.parquet_schema.column(leaf);
            let dense: Option<Vec<(&[u16], usize)>> = columns
                .iter()
                .map(|column| dense_u16_lists(column))
                .collect();
            if let (1, Some(dense)) = (descr.max_rep_level(), dense) {
                raw[leaf] = Some(self.encode_dense_u16(descr, &dense)?);
                continue;
            }
            for column in columns {
                for (writer, leaves) in arrow_writers[leaf..]
                    .iter_mut()
                    .zip(compute_leaves(field, column)?)
                {
                    writer.write(&leaves)?;
                }
            }
        }
        arrow_writers
            .into_iter()
            .zip(raw)
            .map(|(writer, raw)| match raw {
                Some((bytes, close)) => Ok(EncodedColumn::Raw(bytes, close)),
                None => writer.close().map(EncodedColumn::Arrow),
            })
            .collect()
    }

    /// Encodes one pixel-tensor column: each batch's (pixels, pixels per row), as
    /// [`dense_u16_lists`] found them.
    fn encode_dense_u16(
        &self,
        descr: ColumnDescPtr,
        columns: &[(&[u16], usize)],
    ) -> Result<(Bytes, ColumnCloseResult), ParquetError> {
        let (max_def, max_rep) = (descr.max_def_level(), descr.max_rep_level());
        let mut sink = TrackedWrite::new(Vec::new());
        let close = {
            let page_writer = Box::new(SerializedPageWriter::new(&mut sink));
            let ColumnWriter::Int32ColumnWriter(mut writer) =
                get_column_writer(descr, self.properties.clone(), page_writer)
            else {
                return Err(ParquetError::General(
                    "uint16 is not stored as INT32".into(),
                ));
            };
            let (mut values, mut definition, mut repetition) = (Vec::new(), Vec::new(), Vec::new());
            for &(pixels, size) in columns {
                values.clear();
                values.extend(pixels.iter().map(|&value| i32::from(value)));
                definition.resize(values.len(), max_def);
                if repetition.len() != values.len() {
                    repetition.clear();
                    repetition.extend((0..values.len()).map(|i| {
                        if i % size == 0 {
                            0
                        } else {
                            max_rep
                        }
                    }));
                }
                writer.write_batch(&values, Some(&definition), Some(&repetition))?;
            }
            writer.close()?
        };
        Ok((Bytes::from(sink.into_inner()?), close))
    }
}

impl ParallelTableWriter {
    /// Opens a writer for `kind` at `path` (checked and written like [`ParquetTableWriter`]),
    /// with `threads` encoding threads and row groups of `rows_per_group` rows.
    pub fn create(
        path: &Path,
        kind: TableKind,
        schema: SchemaRef,
        provenance: &Provenance,
        rows_per_group: usize,
        threads: usize,
    ) -> Result<Self, SchemaError> {
        let mut single =
            ParquetTableWriter::create(path, kind, schema.clone(), provenance, rows_per_group)?;
        let (mut file_writer, factory) = single
            .writer
            .take()
            .expect("a fresh writer")
            .into_serialized_writer()
            .map_err(|source| SchemaError::Write {
                path: path.to_path_buf(),
                source,
            })?;
        // The temporary file now belongs to this writer (and is removed by its `Drop`).
        let temp_path = single.temp_path.clone();
        single.done_with_temp = true;
        drop(single);
        let encoder = Arc::new(RowGroupEncoder {
            factory,
            schema: schema.clone(),
            parquet_schema: Arc::new(file_writer.schema_descr().clone()),
            properties: file_writer.properties().clone(),
        });
        let threads = threads.max(1);
        let (jobs, job_receiver) = mpsc::sync_channel::<(usize, Vec<RecordBatch>)>(1);
        let job_receiver = Arc::new(Mutex::new(job_receiver));
        let (done, done_receiver) =
            mpsc::sync_channel::<(usize, Result<Vec<EncodedColumn>, ParquetError>)>(threads);
        let encoders = (0..threads)
            .map(|_| {
                let encoder = encoder.clone();
                let (job_receiver, done) = (job_receiver.clone(), done.clone());
                std::thread::spawn(move || loop {
                    let job = job_receiver.lock().expect("job queue").recv();
                    let Ok((index, batches)) = job else { break };
                    let chunks = encoder.encode(index, &batches);
                    if done.send((index, chunks)).is_err() {
                        break;
                    }
                })
            })
            .collect();
        drop(done);
        let appender = std::thread::spawn(move || {
            let mut encoded = BTreeMap::new();
            let mut next = 0usize;
            for (index, chunks) in done_receiver {
                encoded.insert(index, chunks);
                while let Some(chunks) = encoded.remove(&next) {
                    let mut row_group = file_writer.next_row_group()?;
                    for chunk in chunks? {
                        match chunk {
                            EncodedColumn::Arrow(chunk) => {
                                chunk.append_to_row_group(&mut row_group)?
                            }
                            EncodedColumn::Raw(bytes, close) => {
                                row_group.append_column(&bytes, close)?
                            }
                        }
                    }
                    row_group.close()?;
                    next += 1;
                }
            }
            Ok(file_writer)
        });
        Ok(Self {
            kind,
            final_path: path.to_path_buf(),
            temp_path,
            rows_per_group: rows_per_group.max(1),
            pending: Vec::new(),
            pending_rows: 0,
            next_group: 0,
            n_rows: 0,
            jobs: Some(jobs),
            encoders,
            appender: Some(appender),
            extras: Vec::new(),
            finished: false,
        })
    }

    /// Validates and appends one batch; hands a row group to the encoders when one is full.
    pub fn write(&mut self, batch: &RecordBatch) -> Result<(), SchemaError> {
        self.kind
            .validate_batch(batch, &self.final_path, self.n_rows)?;
        let mut offset = 0;
        while offset < batch.num_rows() {
            let take = (self.rows_per_group - self.pending_rows).min(batch.num_rows() - offset);
            self.pending.push(batch.slice(offset, take));
            self.pending_rows += take;
            offset += take;
            if self.pending_rows == self.rows_per_group {
                self.dispatch()?;
            }
        }
        self.n_rows += batch.num_rows();
        Ok(())
    }

    fn dispatch(&mut self) -> Result<(), SchemaError> {
        if self.pending_rows == 0 {
            return Ok(());
        }
        let batches = std::mem::take(&mut self.pending);
        self.pending_rows = 0;
        let sent = self
            .jobs
            .as_ref()
            .expect("writer used after finish")
            .send((self.next_group, batches));
        self.next_group += 1;
        if sent.is_err() {
            // The encoders stopped: the appender holds the reason.
            self.join()?;
            return Err(SchemaError::Write {
                path: self.final_path.clone(),
                source: ParquetError::General("the encoding threads stopped early".into()),
            });
        }
        Ok(())
    }

    /// Stops the encoders once they are done and returns the file writer (or the first error).
    fn join(&mut self) -> Result<SerializedFileWriter<File>, SchemaError> {
        drop(self.jobs.take());
        for encoder in self.encoders.drain(..) {
            if let Err(panic) = encoder.join() {
                std::panic::resume_unwind(panic);
            }
        }
        match self.appender.take().expect("joined once").join() {
            Ok(result) => result.map_err(|source| SchemaError::Write {
                path: self.final_path.clone(),
                source,
            }),
            Err(panic) => std::panic::resume_unwind(panic),
        }
    }

    /// Adds a `phenoflow.<key>` fact known only at the end of the run, as
    /// [`ParquetTableWriter::append_extra`].
    pub fn append_extra(&mut self, key: &str, value: &str) {
        self.extras.push(extra_key_value(key, value));
    }

    /// Rows written so far.
    pub fn n_rows(&self) -> usize {
        self.n_rows
    }

    /// Encodes what is left, closes the file, flushes it to disk and renames it into place.
    /// Returns the row count.
    pub fn finish(mut self) -> Result<usize, SchemaError> {
        self.dispatch()?;
        let mut file_writer = self.join()?;
        for key_value in std::mem::take(&mut self.extras) {
            file_writer.append_key_value_metadata(key_value);
        }
        let file = file_writer
            .into_inner()
            .map_err(|source| SchemaError::Write {
                path: self.final_path.clone(),
                source,
            })?;
        put_in_place(file, &self.temp_path, &self.final_path)?;
        self.finished = true;
        Ok(self.n_rows)
    }
}

impl Drop for ParallelTableWriter {
    fn drop(&mut self) {
        if !self.finished {
            // Not finished (dropped, or failed): stop the threads that still run and leave no
            // half-written output.
            drop(self.jobs.take());
            for encoder in self.encoders.drain(..) {
                let _ = encoder.join();
            }
            if let Some(appender) = self.appender.take() {
                let _ = appender.join();
            }
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

/// The schema with every top-level `LargeUtf8` / `Utf8View` column as `Utf8` (field names,
/// nullability and metadata kept), or `None` when there is none.
fn utf8_schema(schema: &SchemaRef) -> Option<SchemaRef> {
    let wide = |field: &arrow_schema::Field| {
        matches!(field.data_type(), DataType::LargeUtf8 | DataType::Utf8View)
    };
    if !schema.fields().iter().any(|field| wide(field)) {
        return None;
    }
    let fields: Vec<arrow_schema::Field> = schema
        .fields()
        .iter()
        .map(|field| {
            if wide(field) {
                field.as_ref().clone().with_data_type(DataType::Utf8)
            } else {
                field.as_ref().clone()
            }
        })
        .collect();
    Some(Arc::new(arrow_schema::Schema::new_with_metadata(
        fields,
        schema.metadata().clone(),
    )))
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
        let metadata =
            ArrowReaderMetadata::load(&file, ArrowReaderOptions::new()).map_err(parquet_error)?;
        // Text arrives as `Utf8`, `LargeUtf8` (pandas, Polars) or `Utf8View` (Polars); the
        // stages read one: every top-level string column is decoded as `Utf8`.
        let metadata = match utf8_schema(metadata.schema()) {
            Some(schema) => ArrowReaderMetadata::try_new(
                metadata.metadata().clone(),
                ArrowReaderOptions::new().with_schema(schema),
            )
            .map_err(parquet_error)?,
            None => metadata,
        };
        let builder = ParquetRecordBatchReaderBuilder::new_with_metadata(file, metadata);
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

/// Nulls per top-level column of a Parquet file, from the footer's statistics (no rows are
/// read): `None` for a column some row group has no null count for.
pub fn column_null_counts(path: &Path) -> Result<BTreeMap<String, Option<u64>>, SchemaError> {
    let builder = footer(path)?;
    let metadata = builder.metadata();
    let mut counts: BTreeMap<String, Option<u64>> = BTreeMap::new();
    for row_group in metadata.row_groups() {
        for column in row_group.columns() {
            let Some(name) = column.column_path().parts().first() else {
                continue;
            };
            let nulls = column.statistics().and_then(|s| s.null_count_opt());
            let entry = counts.entry(name.clone()).or_insert(Some(0));
            *entry = match (*entry, nulls) {
                (Some(sum), Some(n)) => Some(sum + n),
                _ => None,
            };
        }
    }
    Ok(counts)
}

/// The uncompressed size in bytes of a Parquet file's largest row group (from the footer),
/// counting only the top-level `columns` given (all when `None`), and that row group's index:
/// readers that load a row group's columns at a time need this much memory.
pub fn largest_row_group(
    path: &Path,
    columns: Option<&BTreeSet<String>>,
) -> Result<Option<(usize, u64)>, SchemaError> {
    let builder = footer(path)?;
    Ok(builder
        .metadata()
        .row_groups()
        .iter()
        .enumerate()
        .map(|(index, group)| {
            let bytes: i64 = group
                .columns()
                .iter()
                .filter(|column| {
                    columns.is_none_or(|wanted| {
                        column
                            .column_path()
                            .parts()
                            .first()
                            .is_some_and(|name| wanted.contains(name))
                    })
                })
                .map(|column| column.uncompressed_size().max(0))
                .sum();
            (index, bytes as u64)
        })
        .max_by_key(|(_, bytes)| *bytes))
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
        use crate::{CellKeys, CellsBatchBuilder, TensorShape};
        let directory = tempfile::tempdir().unwrap();
        let (single, parallel) = (
            directory.path().join("single.parquet"),
            directory.path().join("parallel.parquet"),
        );
        let shape = TensorShape::new(2, 3, 4);
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
        let batches = [batch(0..5), batch(5..6), batch(6..19)];
        let provenance =
            Provenance::new(TableKind::Cells, "pf-test", "0.0.0", serde_json::json!({}));
        let schema = batches[0].schema();
        let mut writer =
            ParquetTableWriter::create(&single, TableKind::Cells, schema.clone(), &provenance, 4)
                .unwrap();
        let mut parallel_writer =
            ParallelTableWriter::create(&parallel, TableKind::Cells, schema, &provenance, 4, 2)
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
        assert_eq!(rows, 19);
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
