//! The output side: cells are appended in a deterministic order (fields in table order, cells in
//! detection order) and flushed to the Parquet writer in bounded batches, so memory does not grow
//! with the size of the screen. Items are worked on by every thread of the pool and their results
//! appended in order, with a bounded number in flight; a bad item either stops the run or, with
//! `--skip-bad`, is counted and skipped.

use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{mpsc, Condvar, Mutex};

use indicatif::ProgressBar;
use phenoflow_schemas::{
    CellKeys, CellsBatchBuilder, ParallelTableWriter, Provenance, TableKind, TensorShape,
};

use crate::error::PreprocessError;

/// Rows per Parquet row group of a `cells` table: ~28 MB of raw pixels at 3×68×68. Up to
/// `threads + 2` row groups are in flight in the writer.
const ROWS_PER_GROUP: usize = 1024;

/// Rows per batch handed to the writer. The Parquet encoder makes several transient copies of a
/// batch (uint16 widened to int32, repetition and definition levels) and encodes a row group
/// batch by batch; at 256 rows the copies stay small enough for the allocator to reuse.
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

/// Writes `cells` batches for a stream of items processed in parallel. Row groups are encoded
/// and compressed on the writer's own threads (as many as the pool has), so the encoding
/// overlaps the next items' work and never leaves a core idle at the end.
#[derive(Debug)]
pub struct CellsSink {
    writer: Option<ParallelTableWriter>,
    builder: CellsBatchBuilder,
    pub counts: RunCounts,
    skip_bad: bool,
    progress: ProgressBar,
    shape: TensorShape,
    allow_empty: bool,
}

impl CellsSink {
    pub fn new(
        shape: TensorShape,
        n_items: usize,
        skip_bad: bool,
        show_progress: bool,
        unit: &str,
    ) -> Self {
        let progress = phenoflow_kit::progress_bar(n_items, "pf-preprocess", unit, !show_progress);
        Self {
            writer: None,
            builder: CellsBatchBuilder::with_capacity(shape, ROWS_PER_BATCH),
            counts: RunCounts::default(),
            skip_bad,
            progress,
            shape,
            allow_empty: false,
        }
    }

    /// With no item at all to process, `finish` writes an empty table instead of failing (a
    /// shard of a screen with fewer plates than shards).
    pub fn allow_empty(mut self) -> Self {
        self.allow_empty = true;
        self
    }

    /// Processes `items` with `work` on every thread of the rayon pool and appends the results
    /// in item order on this thread. Workers take the next item as soon as they are free, so a
    /// slow field or a busy writer never leaves a core idle waiting for a whole chunk; at most
    /// `in_flight` items are taken beyond the next one to append, which bounds memory. `describe`
    /// names an item in warnings and errors.
    pub fn process<T: Sync>(
        &mut self,
        items: &[T],
        in_flight: usize,
        describe: impl Fn(&T) -> String,
        work: impl Fn(&T) -> Result<ItemCells, PreprocessError> + Sync,
        output: &Path,
        provenance: &Provenance,
    ) -> anyhow::Result<()> {
        let threads = rayon::current_num_threads();
        let window = in_flight.max(threads);
        let next_item = AtomicUsize::new(0);
        let stop = AtomicBool::new(false);
        // The index of the next item to append, which workers wait on to stay within the window.
        let appended = (Mutex::new(0usize), Condvar::new());
        let (sender, receiver) =
            mpsc::sync_channel::<(usize, Result<ItemCells, PreprocessError>)>(window);
        rayon::in_place_scope(|scope| {
            for _ in 0..threads {
                let sender = sender.clone();
                let (next_item, stop, appended, work) = (&next_item, &stop, &appended, &work);
                scope.spawn(move |_| loop {
                    let index = next_item.fetch_add(1, Ordering::Relaxed);
                    if index >= items.len() {
                        break;
                    }
                    {
                        let mut next_to_append = appended.0.lock().expect("lock");
                        while index >= *next_to_append + window && !stop.load(Ordering::Relaxed) {
                            next_to_append = appended.1.wait(next_to_append).expect("lock");
                        }
                    }
                    if stop.load(Ordering::Relaxed) {
                        break;
                    }
                    if sender.send((index, work(&items[index]))).is_err() {
                        break;
                    }
                });
            }
            drop(sender);
            let outcome =
                self.append_in_order(items, receiver, &appended, &describe, output, provenance);
            if outcome.is_err() {
                // Workers stop at their next item; the receiver is gone, so their sends fail.
                stop.store(true, Ordering::Relaxed);
                appended.1.notify_all();
            }
            outcome
        })
    }

    /// The consuming side of [`process`](Self::process): reorders results by item index and
    /// appends each as soon as all before it are in.
    fn append_in_order<T>(
        &mut self,
        items: &[T],
        receiver: mpsc::Receiver<(usize, Result<ItemCells, PreprocessError>)>,
        appended: &(Mutex<usize>, Condvar),
        describe: &impl Fn(&T) -> String,
        output: &Path,
        provenance: &Provenance,
    ) -> anyhow::Result<()> {
        let mut pending = std::collections::BTreeMap::new();
        let mut next_to_append = 0usize;
        for (index, result) in receiver {
            pending.insert(index, result);
            while let Some(result) = pending.remove(&next_to_append) {
                let item = &items[next_to_append];
                next_to_append += 1;
                *appended.0.lock().expect("lock") = next_to_append;
                appended.1.notify_all();
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
        debug_assert_eq!(next_to_append, items.len());
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

    /// Opens the output on the first batch (or at the end, for an empty table).
    fn start_writer(&mut self, output: &Path, provenance: &Provenance) -> anyhow::Result<()> {
        if self.writer.is_none() {
            self.writer = Some(ParallelTableWriter::create(
                output,
                TableKind::Cells,
                self.builder.schema(),
                provenance,
                ROWS_PER_GROUP,
                rayon::current_num_threads(),
            )?);
        }
        Ok(())
    }

    fn flush(&mut self, output: &Path, provenance: &Provenance) -> anyhow::Result<()> {
        if self.builder.is_empty() {
            return Ok(());
        }
        self.start_writer(output, provenance)?;
        let batch = self.builder.finish();
        self.builder.reserve(ROWS_PER_BATCH);
        self.writer
            .as_mut()
            .expect("writer started above")
            .write(&batch)?;
        Ok(())
    }

    /// Writes what is left, records the run's counts in the file's metadata and renames the
    /// file into place.
    pub fn finish(mut self, output: &Path, provenance: &Provenance) -> anyhow::Result<RunCounts> {
        self.progress.finish_and_clear();
        let counts = self.counts.clone();
        // Nothing to do (a shard that holds no plate) is a valid table with no rows.
        if counts.n_cells == 0 && !(counts.n_items == 0 && self.allow_empty) {
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
        self.start_writer(output, provenance)?;
        let mut writer = self.writer.take().expect("started above");
        writer.append_extra("n_items", &counts.n_items.to_string());
        writer.append_extra("n_skipped", &counts.n_skipped_items.to_string());
        writer.append_extra("n_edge_skipped", &counts.n_edge_skipped.to_string());
        writer.finish()?;
        Ok(counts)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow_array::{Array, Int32Array};
    use phenoflow_schemas::{read_table, CellKeys};

    const SHAPE: (usize, usize, usize) = (1, 2, 2);

    fn shape() -> TensorShape {
        TensorShape::new(SHAPE.0, SHAPE.1, SHAPE.2)
    }

    /// One cell whose object number is the item's index; later items finish first.
    fn slow_first(index: &usize) -> Result<ItemCells, PreprocessError> {
        std::thread::sleep(std::time::Duration::from_millis(2 * (12 - *index as u64)));
        Ok(ItemCells {
            keys: vec![CellKeys {
                plate: "P1".into(),
                well: "A01".into(),
                site: 1,
                compound: "DMSO".into(),
                concentration: 0.0,
                moa: Some("DMSO".into()),
                batch: "Week1".into(),
                object_number: *index as i32,
                center_x: None,
                center_y: None,
            }],
            pixels: vec![*index as u16; shape().len()],
            n_edge_skipped: 0,
        })
    }

    fn object_numbers(path: &Path) -> Vec<i32> {
        read_table(path, TableKind::Cells)
            .unwrap()
            .iter()
            .flat_map(|batch| {
                let column = batch
                    .column_by_name(phenoflow_schemas::columns::OBJECT_NUMBER)
                    .unwrap();
                let values = column.as_any().downcast_ref::<Int32Array>().unwrap();
                (0..values.len())
                    .map(|i| values.value(i))
                    .collect::<Vec<_>>()
            })
            .collect()
    }

    fn provenance() -> Provenance {
        Provenance::new(TableKind::Cells, "test", "0", serde_json::json!({}))
    }

    /// Runs `work` over items 0..12 through a sink on a pool of `threads`.
    fn run(
        threads: usize,
        skip_bad: bool,
        work: impl Fn(&usize) -> Result<ItemCells, PreprocessError> + Sync + Send,
        output: &Path,
    ) -> anyhow::Result<RunCounts> {
        let items: Vec<usize> = (0..12).collect();
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .unwrap();
        pool.install(|| {
            let mut sink = CellsSink::new(shape(), items.len(), skip_bad, false, "items");
            sink.process(
                &items,
                2,
                |i| format!("item {i}"),
                work,
                output,
                &provenance(),
            )?;
            sink.finish(output, &provenance())
        })
    }

    #[test]
    fn results_are_written_in_item_order_whatever_order_they_finish_in() {
        let temp = tempfile::tempdir().unwrap();
        let output = temp.path().join("cells.parquet");
        let counts = run(3, false, slow_first, &output).unwrap();
        assert_eq!((counts.n_items, counts.n_cells), (12, 12));
        assert_eq!(object_numbers(&output), (0..12).collect::<Vec<_>>());
    }

    #[test]
    fn a_bad_item_stops_the_run_with_its_name_or_is_skipped_and_counted() {
        let temp = tempfile::tempdir().unwrap();
        let output = temp.path().join("cells.parquet");
        let work = |index: &usize| {
            if *index == 5 {
                Err(PreprocessError::Invalid("broken on purpose".into()))
            } else {
                slow_first(index)
            }
        };
        let error = run(2, false, work, &output).unwrap_err();
        let message = format!("{error:#}");
        assert!(
            message.contains("processing item 5: broken on purpose"),
            "{message}"
        );
        assert!(!output.exists());

        let counts = run(2, true, work, &output).unwrap();
        assert_eq!(
            (counts.n_items, counts.n_skipped_items, counts.n_cells),
            (12, 1, 11)
        );
        let expected: Vec<i32> = (0..12).filter(|&i| i != 5).collect();
        assert_eq!(object_numbers(&output), expected);
    }
}
