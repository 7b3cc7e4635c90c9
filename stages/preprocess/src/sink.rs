//! The output side: cells are appended in a deterministic order (fields in table order, cells in
//! detection order) and flushed to the Parquet writer in bounded batches, so memory does not grow
//! with the size of the screen. Work is done in parallel chunks of items whose results are then
//! written in order; a bad item either stops the run or, with `--skip-bad`, is counted and skipped.

use std::path::Path;

use arrow_array::RecordBatch;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use phenoflow_schemas::{
    CellKeys, CellsBatchBuilder, ParquetTableWriter, Provenance, TableKind, TensorShape,
};
use rayon::prelude::*;

use crate::error::PreprocessError;

/// Rows per Parquet row group of a `cells` table: ~55 MB of raw pixels at 3×68×68.
const ROWS_PER_GROUP: usize = 2048;

/// Rows per batch handed to the writer. The Parquet writer makes several transient copies of a
/// batch (uint16 widened to int32, repetition and definition levels); at 256 rows they stay
/// small enough for the allocator to reuse, where whole row groups cost fresh, zeroed pages.
const ROWS_PER_BATCH: usize = 256;

/// The cells produced from one input item (a field, or one pre-cropped cell).
#[derive(Debug, Default)]
pub struct ItemCells {
    pub keys: Vec<CellKeys>,
    /// `keys.len()` tensors back to back.
    pub pixels: Vec<u16>,
    /// Cells found but not written (crop reached outside the field).
    pub n_edge_skipped: usize,
}

/// Counts reported at the end of a run and stored in the output's metadata.
#[derive(Debug, Default, Clone)]
pub struct RunCounts {
    pub n_items: usize,
    pub n_cells: usize,
    pub n_skipped_items: usize,
    pub n_edge_skipped: usize,
}

/// Writes `cells` batches for a stream of items processed in parallel. Encoding and compressing
/// a batch happens on a writer thread of its own, so it overlaps the next chunk's work.
#[derive(Debug)]
pub struct CellsSink {
    writer: Option<BatchWriterThread>,
    builder: CellsBatchBuilder,
    pub counts: RunCounts,
    skip_bad: bool,
    progress: ProgressBar,
    shape: TensorShape,
}

/// The thread that owns the Parquet writer, fed through a channel of one batch.
#[derive(Debug)]
struct BatchWriterThread {
    sender: std::sync::mpsc::SyncSender<RecordBatch>,
    handle: std::thread::JoinHandle<Result<ParquetTableWriter, phenoflow_schemas::SchemaError>>,
}

impl BatchWriterThread {
    fn start(mut writer: ParquetTableWriter) -> Self {
        let (sender, receiver) = std::sync::mpsc::sync_channel::<RecordBatch>(1);
        let handle = std::thread::spawn(move || {
            for batch in receiver {
                writer.write(&batch)?;
            }
            Ok(writer)
        });
        Self { sender, handle }
    }

    fn send(&self, batch: RecordBatch) -> anyhow::Result<()> {
        // A send fails only when the thread has stopped on an error, which `join` reports.
        if self.sender.send(batch).is_err() {
            anyhow::bail!("the writer thread stopped early");
        }
        Ok(())
    }

    /// Waits for every batch to be written; returns the writer (or the first write error).
    fn join(self) -> anyhow::Result<ParquetTableWriter> {
        drop(self.sender);
        match self.handle.join() {
            Ok(result) => Ok(result?),
            Err(panic) => std::panic::resume_unwind(panic),
        }
    }
}

impl CellsSink {
    pub fn new(
        shape: TensorShape,
        n_items: usize,
        skip_bad: bool,
        show_progress: bool,
        unit: &str,
    ) -> Self {
        let progress = if show_progress {
            ProgressBar::with_draw_target(Some(n_items as u64), ProgressDrawTarget::stderr())
        } else {
            ProgressBar::hidden()
        };
        progress.set_style(
            ProgressStyle::with_template(&format!(
                "{{spinner}} [{{elapsed_precise}}] {{bar:40}} {{pos}}/{{len}} {unit} ({{per_sec}}, eta {{eta}}) {{msg}}"
            ))
            .expect("valid progress template"),
        );
        Self {
            writer: None,
            builder: CellsBatchBuilder::with_capacity(shape, ROWS_PER_BATCH),
            counts: RunCounts::default(),
            skip_bad,
            progress,
            shape,
        }
    }

    /// Processes `items` in parallel chunks with `work` and appends the results in item order.
    /// `describe` names an item in warnings.
    pub fn process<T: Sync>(
        &mut self,
        items: &[T],
        chunk_size: usize,
        describe: impl Fn(&T) -> String,
        work: impl Fn(&T) -> Result<ItemCells, PreprocessError> + Sync,
        output: &Path,
        provenance: &Provenance,
    ) -> anyhow::Result<()> {
        for chunk in items.chunks(chunk_size.max(1)) {
            let results: Vec<Result<ItemCells, PreprocessError>> =
                chunk.par_iter().map(&work).collect();
            for (item, result) in chunk.iter().zip(results) {
                self.progress.inc(1);
                self.counts.n_items += 1;
                match result {
                    Ok(cells) => self.append(cells, output, provenance)?,
                    Err(error) if self.skip_bad => {
                        self.counts.n_skipped_items += 1;
                        self.progress.suspend(|| {
                            eprintln!(
                                "pf-preprocess: warning: skipping {}: {error}",
                                describe(item)
                            )
                        });
                    }
                    Err(error) => {
                        return Err(anyhow::Error::new(error)
                            .context(format!("processing {}", describe(item))))
                    }
                }
            }
        }
        Ok(())
    }

    fn append(
        &mut self,
        cells: ItemCells,
        output: &Path,
        provenance: &Provenance,
    ) -> anyhow::Result<()> {
        self.counts.n_edge_skipped += cells.n_edge_skipped;
        let tensor_len = self.shape.len();
        for (index, keys) in cells.keys.into_iter().enumerate() {
            self.builder.push(
                keys,
                &cells.pixels[index * tensor_len..(index + 1) * tensor_len],
            );
            self.counts.n_cells += 1;
            if self.builder.len() >= ROWS_PER_BATCH {
                self.flush(output, provenance)?;
            }
        }
        Ok(())
    }

    fn flush(&mut self, output: &Path, provenance: &Provenance) -> anyhow::Result<()> {
        if self.builder.is_empty() {
            return Ok(());
        }
        if self.writer.is_none() {
            let writer = ParquetTableWriter::create(
                output,
                TableKind::Cells,
                self.builder.schema(),
                provenance,
                ROWS_PER_GROUP,
            )?;
            self.writer = Some(BatchWriterThread::start(writer));
        }
        let batch = self.builder.finish();
        self.builder.reserve(ROWS_PER_BATCH);
        self.writer
            .as_ref()
            .expect("writer started above")
            .send(batch)
    }

    /// Writes what is left, records the run's counts in the file's metadata and renames the
    /// file into place.
    pub fn finish(mut self, output: &Path, provenance: &Provenance) -> anyhow::Result<RunCounts> {
        self.progress.finish_and_clear();
        let counts = self.counts.clone();
        if counts.n_cells == 0 {
            return Err(phenoflow_schemas::InputError(format!(
                "no cells were produced from {} input item(s) ({} skipped as bad, {} cells at the edge): nothing written to {}",
                counts.n_items,
                counts.n_skipped_items,
                counts.n_edge_skipped,
                output.display()
            ))
            .into());
        }
        self.flush(output, provenance)?;
        let mut writer = self
            .writer
            .take()
            .expect("at least one batch was flushed")
            .join()?;
        writer.append_extra("n_items", &counts.n_items.to_string());
        writer.append_extra("n_skipped", &counts.n_skipped_items.to_string());
        writer.append_extra("n_edge_skipped", &counts.n_edge_skipped.to_string());
        writer.finish()?;
        Ok(counts)
    }
}
