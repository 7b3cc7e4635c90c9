//! [`ParallelTableWriter`]: pixel tables whose row groups are encoded on threads of their own,
//! with a direct path for dense `uint16` tensors that writes the same bytes as arrow-rs.

use super::*;

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
pub(super) enum EncodedColumn {
    /// Through arrow-rs's generic writer.
    Arrow(ArrowColumnChunk),
    /// Through the pixel-tensor path: the chunk's bytes, from offset 0, and its metadata.
    Raw(Bytes, ColumnCloseResult),
}

/// Cells whose pixels [`RowGroupEncoder::encode_dense_u16`] widens and hands to arrow-rs at a
/// time: 64 cells of 68×68×3 are 3.6 MB of `i32` values and 1.8 MB of each level, which stay in
/// cache until arrow-rs reads them.
const DENSE_CELLS_AT_ONCE: usize = 64;

/// One encoder thread's buffers for [`RowGroupEncoder::encode_dense_u16`], kept from row group to
/// row group (allocated afresh, they were faulted in and zeroed page by page every time). They
/// hold the largest piece handed over until the writer finishes: 64 cells, or a whole batch of
/// cells smaller than arrow-rs's mini-batch (cutting those would change the pages).
#[derive(Debug, Default)]
pub(super) struct DenseScratch {
    values: Vec<i32>,
    definition: Vec<i16>,
    repetition: Vec<i16>,
    /// The list length `repetition` was filled for.
    repetition_step: usize,
}

/// What the encoders share: how to encode each column of a row group.
pub(super) struct RowGroupEncoder {
    factory: ArrowRowGroupWriterFactory,
    schema: SchemaRef,
    parquet_schema: SchemaDescPtr,
    properties: WriterPropertiesPtr,
}

/// `FixedSizeList<UInt16>` without nulls, the storage of a pixel tensor: (all rows' values,
/// values per row). `None` for every other column, or if anything is null.
pub(super) fn dense_u16_lists(column: &ArrayRef) -> Option<(&[u16], usize)> {
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
        scratch: &mut DenseScratch,
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
                raw[leaf] = Some(self.encode_dense_u16(descr, &dense, scratch)?);
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
        scratch: &mut DenseScratch,
    ) -> Result<(Bytes, ColumnCloseResult), ParquetError> {
        let (max_def, max_rep) = (descr.max_def_level(), descr.max_rep_level());
        // Room for the column chunk as raw uint16 up front (zstd makes it smaller): grown by
        // doubling, the chunk was copied into fresh memory again and again.
        let pixels: usize = columns.iter().map(|(pixels, _)| pixels.len()).sum();
        let mut sink = TrackedWrite::new(Vec::with_capacity(2 * pixels + (1 << 16)));
        let close = {
            let page_writer = Box::new(SerializedPageWriter::new(&mut sink));
            let ColumnWriter::Int32ColumnWriter(mut writer) =
                get_column_writer(descr, self.properties.clone(), page_writer)
            else {
                return Err(ParquetError::General(
                    "uint16 is not stored as INT32".into(),
                ));
            };
            let DenseScratch {
                values,
                definition,
                repetition,
                repetition_step,
            } = scratch;
            // Levels are only ever these two values, so a buffer of the right length and step
            // holds the right levels whatever row group filled it.
            if definition.first().is_some_and(|&level| level != max_def) {
                definition.clear();
            }
            // arrow-rs cuts a batch into mini-batches of `write_batch_size` levels, each
            // extended to the next row's start, and checks the page size after each: where a
            // row holds at least that many values every mini-batch is one row, so handing it
            // the rows a few at a time gives the same pages as all at once.
            let rows_at_once = |size: usize| {
                if size >= self.properties.write_batch_size() {
                    DENSE_CELLS_AT_ONCE * size
                } else {
                    usize::MAX
                }
            };
            let pieces = columns.iter().flat_map(|&(pixels, size)| {
                pixels
                    .chunks(rows_at_once(size).min(pixels.len()).max(1))
                    .map(move |piece| (piece, size))
            });
            for (pixels, size) in pieces {
                values.clear();
                values.extend(pixels.iter().map(|&value| i32::from(value)));
                definition.resize(values.len(), max_def);
                if repetition.len() != values.len() || *repetition_step != size {
                    // Each cell's first pixel starts a new list (level 0), the rest continue it;
                    // filled, then the starts set (a `%` per pixel cost a percent of the run).
                    repetition.clear();
                    repetition.resize(values.len(), max_rep);
                    for start in (0..values.len()).step_by(size.max(1)) {
                        repetition[start] = 0;
                    }
                    *repetition_step = size;
                }
                writer.write_batch(values, Some(definition), Some(repetition))?;
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
                std::thread::spawn(move || {
                    let mut scratch = DenseScratch::default();
                    loop {
                        let job = job_receiver.lock().expect("job queue").recv();
                        let Ok((index, batches)) = job else { break };
                        let chunks = encoder.encode(index, &batches, &mut scratch);
                        if done.send((index, chunks)).is_err() {
                            break;
                        }
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
