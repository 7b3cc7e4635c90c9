//! `pf-embed --handcrafted`: per-cell features that know nothing of the data, the baseline a
//! learned profile has to beat. Per channel: the background (5th percentile of the crop), then of
//! the background-subtracted signal max(x − background, 0) its mean, standard deviation (ddof 0),
//! 99th percentile, the fraction of pixels above mean + standard deviation ("bright area"), and
//! the mean signal of the central 16×16 pixels over (mean + 1) ("centre ratio"). Percentiles
//! interpolate linearly between order statistics, as numpy's default; the features equal
//! `cell_features` of `tests/python/handcrafted_baseline.py` (numpy), which the tests check.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Instant;

use arrow_array::{ArrayRef, Float32Array, RecordBatch};
use phenoflow_schemas::{
    hash_file, CellPixels, InputError, ParquetTableReader, Provenance, TableKind,
};
use rayon::prelude::*;

use crate::args::Cli;

/// The five features of each channel, in column order (feature-major, then channel).
pub const FEATURES: [&str; 5] = ["Mean", "Std", "P99", "BrightArea", "CentreRatio"];

/// numpy's default (linear) percentile of `sorted` values.
fn percentile(sorted: &[f32], q: f64) -> f64 {
    let position = q / 100.0 * (sorted.len() - 1) as f64;
    let (low, high) = (position.floor() as usize, position.ceil() as usize);
    let fraction = position - low as f64;
    sorted[low] as f64 + (sorted[high] as f64 - sorted[low] as f64) * fraction
}

/// The features of one cell `[C, H, W]` into `out` (`[5 · C]`, feature-major).
pub fn cell_features(
    pixels: &[u16],
    channels: usize,
    height: usize,
    width: usize,
    out: &mut [f32],
) {
    let plane = height * width;
    let mut sorted = vec![0f32; plane];
    for c in 0..channels {
        let values = &pixels[c * plane..(c + 1) * plane];
        for (s, v) in sorted.iter_mut().zip(values) {
            *s = *v as f32;
        }
        sorted.sort_unstable_by(f32::total_cmp);
        let background = percentile(&sorted, 5.0);
        let signal: Vec<f64> = values
            .iter()
            .map(|v| (*v as f64 - background).max(0.0))
            .collect();
        let n = plane as f64;
        let mean = signal.iter().sum::<f64>() / n;
        let std = (signal.iter().map(|s| (s - mean).powi(2)).sum::<f64>() / n).sqrt();
        let mut sorted_signal: Vec<f32> = signal.iter().map(|s| *s as f32).collect();
        sorted_signal.sort_unstable_by(f32::total_cmp);
        let p99 = percentile(&sorted_signal, 99.0);
        let threshold = mean + std;
        let area = signal.iter().filter(|s| **s > threshold).count() as f64 / n;
        let (y0, x0) = (
            (height / 2).saturating_sub(8),
            (width / 2).saturating_sub(8),
        );
        let (y1, x1) = ((height / 2 + 8).min(height), (width / 2 + 8).min(width));
        let mut centre = 0.0;
        for y in y0..y1 {
            for x in x0..x1 {
                centre += (values[y * width + x] as f64 - background).max(0.0);
            }
        }
        let centre_ratio = centre / ((y1 - y0) * (x1 - x0)).max(1) as f64 / (mean + 1.0);
        for (f, value) in [mean, std, p99, area, centre_ratio].into_iter().enumerate() {
            out[f * channels + c] = value as f32;
        }
    }
}

/// Runs `pf-embed --handcrafted`: every cell of the selection → its features, with the input's
/// `Metadata_*` columns, as an `embeddings` table.
pub fn run(cli: &Cli, keep: Option<BTreeSet<String>>) -> anyhow::Result<()> {
    let started = Instant::now();
    let cells_path = cli.cells.clone();
    let hasher = std::thread::spawn(move || hash_file(&cells_path));
    let reader = ParquetTableReader::open(&cli.cells, TableKind::Cells, cli.batch_size, None)?;
    let schema = reader.schema().clone();
    let shape = crate::output::pixel_shape(&schema, &cli.cells)?;
    let (channels, height, width) = (shape.channels, shape.height, shape.width);
    let metadata_columns = crate::output::metadata_indices(&schema);
    let names: Vec<String> = FEATURES
        .iter()
        .flat_map(|feature| {
            (0..channels).map(move |c| format!("Cells_Handcrafted_{feature}_ch{c}"))
        })
        .collect();
    let output_schema = crate::output::output_schema(&schema, &metadata_columns, &names);
    let params = HandcraftedParams {
        features: "handcrafted",
        per_channel: &FEATURES,
        plates: keep.as_ref().map(|plates| plates.iter().cloned().collect()),
    };
    let mut provenance = Provenance::new(
        TableKind::Embeddings,
        crate::STAGE,
        env!("CARGO_PKG_VERSION"),
        serde_json::to_value(&params)?,
    );
    let hash = hasher.join().expect("hashing thread")?;
    provenance
        .inputs
        .insert(cli.cells.display().to_string(), hash);
    let total = reader.n_rows();
    let (mut writer, progress) =
        crate::output::start_output(cli, output_schema.clone(), &provenance, total, "features")?;
    let n_features = names.len();
    let mut n_cells = 0usize;
    for batch in reader {
        let batch: RecordBatch = batch?;
        progress.inc(batch.num_rows() as u64);
        let batch = crate::output::keep_plates(batch, keep.as_ref())?;
        let n_rows = batch.num_rows();
        if n_rows == 0 {
            continue;
        }
        let pixels = CellPixels::from_batch(&batch, &cli.cells)?;
        let mut values = vec![0f32; n_rows * n_features];
        values
            .par_chunks_mut(n_features)
            .enumerate()
            .for_each(|(row, out)| cell_features(pixels.cell(row), channels, height, width, out));
        let mut columns: Vec<ArrayRef> = batch.project(&metadata_columns)?.columns().to_vec();
        columns.extend((0..n_features).map(|f| {
            Arc::new(Float32Array::from_iter_values(
                (0..n_rows).map(|row| values[row * n_features + f]),
            )) as ArrayRef
        }));
        writer.write(&RecordBatch::try_new(output_schema.clone(), columns)?)?;
        n_cells += n_rows;
    }
    progress.finish_and_clear();
    if n_cells == 0 && keep.is_some() {
        return Err(InputError(format!(
            "{}: no cells selected (--plate / --shard)",
            cli.cells.display()
        ))
        .into());
    }
    writer.finish()?;
    let seconds = started.elapsed().as_secs_f64();
    eprintln!(
        "pf-embed: {n_cells} cells → {} ({n_features} hand-crafted features) in {seconds:.1} s",
        cli.output.display()
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_interpolate_like_numpy() {
        let sorted = [1.0f32, 2.0, 3.0, 4.0, 10.0];
        assert_eq!(percentile(&sorted, 50.0), 3.0);
        assert!((percentile(&sorted, 99.0) - 9.76).abs() < 1e-9);
        assert!((percentile(&sorted, 5.0) - 1.2).abs() < 1e-9);
    }
}

/// What changes the hand-crafted features: recorded as the table's provenance params.
#[derive(Debug, serde::Serialize)]
struct HandcraftedParams<'a> {
    features: &'static str,
    per_channel: &'a [&'a str],
    plates: Option<Vec<String>>,
}
