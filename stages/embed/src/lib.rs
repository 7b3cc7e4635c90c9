//! `pf-embed`: streams a `cells` table through an ONNX encoder (from `pf-export`) with ONNX
//! Runtime and writes an `embeddings` table. A reader thread decodes and normalises the next
//! batches (rayon over cells) while ONNX Runtime runs the current one; the pixel normalisation
//! comes from the model card embedded in the ONNX file, never from a flag.

pub mod args;
pub mod handcrafted;

mod encoder;
mod output;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::mpsc::{sync_channel, Receiver};
use std::time::Instant;

use anyhow::{anyhow, Context};
use arrow_array::cast::AsArray;
use arrow_array::{ArrayRef, RecordBatch};
use ort::value::TensorRef;
use phenoflow_schemas::{
    hash_file, parse_shard, shard_plates, CellPixels, InputError, ModelCard, ParquetTableReader,
    Provenance, TableKind,
};
use rayon::prelude::*;

use crate::args::Cli;
use crate::encoder::{open_encoder, profile_gate, Encoder, Gate};
use crate::output::{columns_of, keep_plates, start_output, OutputLayout};

pub(crate) const STAGE: &str = "pf-embed";
/// The sparse encoders' output with E[s] (pf-export's `SPIKE_MEAN_OUTPUT`).
pub(crate) const SPIKE_MEAN: &str = "spike_mean";
/// Batches decoded ahead of the one being embedded.
const PREFETCH: usize = 2;

/// One decoded, filtered and normalised batch.
struct Prepared {
    metadata: RecordBatch,
    inputs: Vec<f32>,
}

/// The plates of a cells table, sorted.
fn plates_of(path: &Path) -> anyhow::Result<Vec<String>> {
    let reader = ParquetTableReader::open(
        path,
        TableKind::Cells,
        65_536,
        Some(&[phenoflow_schemas::columns::PLATE]),
    )?;
    let mut plates = BTreeSet::new();
    for batch in reader {
        let batch = batch?;
        let column = batch
            .column_by_name(phenoflow_schemas::columns::PLATE)
            .expect("validated");
        for plate in column.as_string::<i32>().iter().flatten() {
            plates.insert(plate.to_string());
        }
    }
    Ok(plates.into_iter().collect())
}

/// Reads, filters and normalises batches on this thread and rayon's pool, sending them ahead.
fn spawn_reader(
    reader: ParquetTableReader,
    path: PathBuf,
    keep_plates_set: Option<BTreeSet<String>>,
    card: ModelCard,
    metadata_columns: Vec<usize>,
) -> Receiver<anyhow::Result<Prepared>> {
    let (sender, receiver) = sync_channel(PREFETCH);
    std::thread::spawn(move || {
        let n_channels = card.input_shape[0] as usize;
        for batch in reader {
            let prepared = (|| -> anyhow::Result<Option<Prepared>> {
                let batch = keep_plates(batch?, keep_plates_set.as_ref())?;
                if batch.num_rows() == 0 {
                    return Ok(None);
                }
                let pixels = CellPixels::from_batch(&batch, &path)?;
                let cell_len = pixels.shape().len();
                let mut inputs = vec![0f32; batch.num_rows() * cell_len];
                inputs
                    .par_chunks_mut(cell_len)
                    .enumerate()
                    .for_each(|(row, out)| {
                        card.normalization.apply(pixels.cell(row), n_channels, out)
                    });
                Ok(Some(Prepared {
                    metadata: batch.project(&metadata_columns)?,
                    inputs,
                }))
            })();
            let message = match prepared {
                Ok(None) => continue,
                Ok(Some(prepared)) => Ok(prepared),
                Err(error) => Err(error),
            };
            let failed = message.is_err();
            if sender.send(message).is_err() || failed {
                return;
            }
        }
    });
    receiver
}

/// The plates to keep: `--plate`, then `--shard` over the sorted plates (`None`: every cell).
fn selected_plates(cli: &Cli) -> anyhow::Result<Option<BTreeSet<String>>> {
    let shard = cli
        .shard
        .as_deref()
        .map(parse_shard)
        .transpose()
        .map_err(InputError)?;
    if cli.plate.is_empty() && shard.is_none() {
        return Ok(None);
    }
    let plates = plates_of(&cli.cells)?;
    let mut selected: BTreeSet<String> = plates.iter().cloned().collect();
    if !cli.plate.is_empty() {
        for plate in &cli.plate {
            if !selected.contains(plate) {
                return Err(InputError(format!(
                    "{}: --plate {plate}: no such plate (the table has {})",
                    cli.cells.display(),
                    plates.join(", ")
                ))
                .into());
            }
        }
        selected = cli.plate.iter().cloned().collect();
    }
    if let Some(shard) = shard {
        let in_shard = shard_plates(plates.iter().map(String::as_str), shard);
        selected.retain(|plate| in_shard.contains(plate));
    }
    Ok(Some(selected))
}

/// Runs the stage: resolve the settings, open the encoder and the cells, embed every batch,
/// write.
pub fn run(cli: Cli) -> anyhow::Result<()> {
    let mut inputs: Vec<&Path> = vec![cli.cells.as_path()];
    inputs.extend(cli.encoder.as_deref());
    phenoflow_schemas::check_outputs_are_not_inputs(&[("--output", &cli.output)], &inputs)?;
    if cli.batch_size == 0 {
        return Err(InputError("--batch-size must be at least 1".into()).into());
    }
    let keep = selected_plates(&cli)?;
    let Some(encoder_path) = cli.encoder.clone() else {
        return handcrafted::run(&cli, keep);
    };
    let started = Instant::now();
    let environment = phenoflow_onnx::start()?;
    let mut encoder = open_encoder(&environment, &encoder_path, cli.device, cli.threads)?;
    let card = encoder.card.clone();
    let gate = profile_gate(&cli, &card)?;
    let hasher = {
        let (cells, encoder) = (cli.cells.clone(), encoder_path.clone());
        std::thread::spawn(move || -> anyhow::Result<(String, String)> {
            Ok((hash_file(&cells)?, hash_file(&encoder)?))
        })
    };
    let reader = ParquetTableReader::open(&cli.cells, TableKind::Cells, cli.batch_size, None)?;
    let layout = OutputLayout::of(&cli, reader.schema(), &card, &encoder_path)?;
    let total_rows = reader.n_rows();
    let params = Params {
        model: card.model.name(),
        profile: gate.name(),
        with_log_sigma: cli.with_log_sigma,
        with_gamma: cli.with_gamma,
        plates: keep.as_ref().map(|plates| plates.iter().cloned().collect()),
        normalization: card.normalization.clone(),
    };
    let mut provenance = Provenance::new(
        TableKind::Embeddings,
        STAGE,
        env!("CARGO_PKG_VERSION"),
        serde_json::to_value(&params).expect("settings serialise to JSON"),
    );
    provenance.seed = Some(card.seed);
    provenance.extra.insert(
        "execution_provider".into(),
        encoder.execution_provider.into(),
    );
    let (cells_hash, encoder_hash) = hasher.join().expect("hashing thread")?;
    provenance
        .inputs
        .insert(cli.cells.display().to_string(), cells_hash);
    provenance
        .inputs
        .insert(encoder_path.display().to_string(), encoder_hash);
    let (mut writer, progress) = start_output(
        &cli,
        layout.schema.clone(),
        &provenance,
        total_rows,
        "embedding",
    )?;
    let receiver = spawn_reader(
        reader,
        cli.cells.clone(),
        keep,
        card.clone(),
        layout.metadata_columns.clone(),
    );
    let mut n_cells = 0usize;
    for prepared in receiver {
        let prepared = prepared.with_context(|| format!("reading {}", cli.cells.display()))?;
        let n_rows = prepared.metadata.num_rows();
        let columns = embed_batch(&cli, &mut encoder, &encoder_path, gate, &prepared, n_cells)?;
        writer.write(&RecordBatch::try_new(layout.schema.clone(), columns)?)?;
        n_cells += n_rows;
        progress.inc(n_rows as u64);
    }
    progress.finish_and_clear();
    if n_cells == 0 && (total_rows > 0 || !cli.plate.is_empty()) {
        return Err(InputError(format!("{}: no cells selected", cli.cells.display())).into());
    }
    if total_rows == 0 {
        // An empty shard of a screen with fewer plates than shards: an empty table.
        eprintln!(
            "pf-embed: {} holds no cells; writing an empty embeddings table",
            cli.cells.display()
        );
    }
    writer.finish()?;
    let seconds = started.elapsed().as_secs_f64();
    eprintln!(
        "pf-embed: {} cells → {} ({} features, {}, {}) in {seconds:.1} s ({:.0} cells/s)",
        n_cells,
        cli.output.display(),
        card.hyperparameters.latent_dim,
        gate.name(),
        encoder.execution_provider,
        n_cells as f64 / seconds
    );
    Ok(())
}

/// What changes the embeddings, recorded as their provenance params.
#[derive(Debug, serde::Serialize)]
struct Params {
    model: &'static str,
    profile: &'static str,
    with_log_sigma: bool,
    with_gamma: bool,
    plates: Option<Vec<String>>,
    normalization: phenoflow_schemas::Normalization,
}

/// One batch of cells through the encoder: the output columns (metadata, profile, log σ, γ);
/// `first_cell` numbers the batch's cells in errors.
fn embed_batch(
    cli: &Cli,
    encoder: &mut Encoder,
    encoder_path: &Path,
    gate: Gate,
    prepared: &Prepared,
    first_cell: usize,
) -> anyhow::Result<Vec<ArrayRef>> {
    let latent_dim = encoder.card.hyperparameters.latent_dim as usize;
    let [channels, height, width] = encoder.card.input_shape;
    let n_rows = prepared.metadata.num_rows();
    let input = TensorRef::from_array_view((
        [n_rows, channels as usize, height as usize, width as usize],
        &prepared.inputs[..],
    ))
    .map_err(|error| anyhow!("{error}"))?;
    let outputs = encoder
        .session
        .run(ort::inputs!["cells" => input])
        .map_err(|error| anyhow!("{}: ONNX Runtime: {error}", encoder_path.display()))?;
    let extract = |name: &str| -> anyhow::Result<Vec<f32>> {
        let value = outputs.get(name).ok_or_else(|| {
            InputError(format!(
                "{}: the encoder has no output `{name}`",
                encoder_path.display()
            ))
        })?;
        let (_, values) = value
            .try_extract_tensor::<f32>()
            .map_err(|error| anyhow!("output `{name}`: {error}"))?;
        if values.len() != n_rows * latent_dim {
            return Err(InputError(format!(
                "{}: output `{name}` has {} values for {n_rows} cells of latent size {latent_dim}",
                encoder_path.display(),
                values.len()
            ))
            .into());
        }
        Ok(values.to_vec())
    };
    let mut profile = extract("mu")?;
    let gamma = if cli.with_gamma {
        Some(extract("gamma")?)
    } else {
        None
    };
    if let Some(gate_output) = gate.output() {
        let gates = extract(gate_output).map_err(|error| {
            if gate == Gate::SpikeMean {
                error.context(
                    "a sparse encoder exported before encoders carried `spike_mean` lacks it: export the model again with pf-export (or pass --profile mu-gamma for the old profile)",
                )
            } else {
                error
            }
        })?;
        profile
            .iter_mut()
            .zip(&gates)
            .for_each(|(value, gate)| *value *= gate);
    }
    if let Some(row) = profile
        .chunks(latent_dim)
        .position(|row| row.iter().any(|value| !value.is_finite()))
    {
        return Err(anyhow!(
            "{}: the encoder gave a non-finite profile for cell {} of the selection",
            encoder_path.display(),
            first_cell + row
        ));
    }
    let mut columns: Vec<ArrayRef> = prepared.metadata.columns().to_vec();
    columns.extend(columns_of(&profile, n_rows, latent_dim));
    if cli.with_log_sigma {
        columns.extend(columns_of(&extract("log_sigma")?, n_rows, latent_dim));
    }
    if let Some(gamma) = &gamma {
        columns.extend(columns_of(gamma, n_rows, latent_dim));
    }
    Ok(columns)
}
