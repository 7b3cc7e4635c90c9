//! The output side: cells are appended in a deterministic order (fields in table order, cells in
//! detection order) and flushed to the Parquet writer in bounded batches, so memory does not grow
//! with the size of the screen. Work is done in parallel chunks of items whose results are then
//! written in order; a bad item either stops the run or, with `--skip-bad`, is counted and skipped.

use std::path::Path;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use phenoflow_schemas::{
    CellKeys, CellsBatchBuilder, ParquetTableWriter, Provenance, TableKind, TensorShape,
};
use rayon::prelude::*;

use crate::error::PreprocessError;

/// Rows per Parquet row group (and per flushed batch) of a `cells` table: ~55 MB of raw pixels
/// at 3×68×68.
const ROWS_PER_GROUP: usize = 2048;

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

/// Writes `cells` batches for a stream of items processed in parallel.
#[derive(Debug)]
pub struct CellsSink {
    writer: Option<ParquetTableWriter>,
    builder: CellsBatchBuilder,
    pub counts: RunCounts,
    skip_bad: bool,
    progress: ProgressBar,
    shape: TensorShape,
}

impl CellsSink {
    pub fn new(shape: TensorShape, n_items: usize, skip_bad: bool, show_progress: bool, unit: &str) -> Self {
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
            builder: CellsBatchBuilder::new(shape),
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
            let results: Vec<Result<ItemCells, PreprocessError>> = chunk.par_iter().map(&work).collect();
            for (item, result) in chunk.iter().zip(results) {
                self.progress.inc(1);
                self.counts.n_items += 1;
                match result {
                    Ok(cells) => self.append(cells, output, provenance)?,
                    Err(error) if self.skip_bad => {
                        self.counts.n_skipped_items += 1;
                        self.progress.suspend(|| {
                            eprintln!("pf-preprocess: warning: skipping {}: {error}", describe(item))
                        });
                    }
                    Err(error) => {
                        return Err(anyhow::Error::new(error).context(format!("processing {}", describe(item))))
                    }
                }
            }
        }
        Ok(())
    }

    fn append(&mut self, cells: ItemCells, output: &Path, provenance: &Provenance) -> anyhow::Result<()> {
        self.counts.n_edge_skipped += cells.n_edge_skipped;
        let tensor_len = self.shape.len();
        for (index, keys) in cells.keys.into_iter().enumerate() {
            self.builder
                .push(keys, &cells.pixels[index * tensor_len..(index + 1) * tensor_len]);
            self.counts.n_cells += 1;
            if self.builder.len() >= ROWS_PER_GROUP {
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
            self.writer = Some(ParquetTableWriter::create(
                output,
                TableKind::Cells,
                self.builder.schema(),
                provenance,
                ROWS_PER_GROUP,
            )?);
        }
        let batch = self.builder.finish();
        self.writer
            .as_mut()
            .expect("writer created above")
            .write(&batch)?;
        Ok(())
    }

    /// Writes what is left, records the run's counts in the file's metadata and renames the
    /// file into place.
    pub fn finish(mut self, output: &Path, provenance: &Provenance) -> anyhow::Result<RunCounts> {
        self.progress.finish_and_clear();
        let counts = self.counts.clone();
        if counts.n_cells == 0 {
            anyhow::bail!(
                "no cells were produced from {} input item(s) ({} skipped as bad, {} cells at the edge): nothing written to {}",
                counts.n_items,
                counts.n_skipped_items,
                counts.n_edge_skipped,
                output.display()
            );
        }
        self.flush(output, provenance)?;
        let mut writer = self.writer.take().expect("at least one batch was flushed");
        writer.append_extra("n_items", &counts.n_items.to_string());
        writer.append_extra("n_skipped", &counts.n_skipped_items.to_string());
        writer.append_extra("n_edge_skipped", &counts.n_edge_skipped.to_string());
        writer.finish()?;
        Ok(counts)
    }
}
