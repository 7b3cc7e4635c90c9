//! `pf-train`: trains one of the seed paper's generative models on a `cells` table with libtorch
//! (CUDA when present, the CPU otherwise, the same code), writing a safetensors checkpoint, a model
//! card, a per-epoch training log table and a reconstruction figure. See README.md.

pub mod adam;
pub mod args;
pub mod checkpoint;
pub mod classifier;
pub mod data;
pub mod error;
pub mod figures;
pub mod init;
pub mod loss;
pub mod model;
pub mod supervised;
pub mod trainer;

use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use anyhow::Context;
use arrow_array::{Float64Array, Int32Array, StringArray};
use arrow_schema::{DataType, Field, Schema};
use indicatif::ProgressBar;
use phenoflow_schemas::model_card::{
    Hyperparameters, TrainingData, MODEL_CARD_FORMAT, MODEL_CARD_VERSION,
};
use phenoflow_schemas::{hash_files, ModelCard, Normalization, Provenance, TableKind};
use tch::{Device, Kind, Tensor};

use crate::args::{
    Cli, GenerativeArgs, NormalizationArg, SamplerArg, Settings, SpikeSamplerArg, Track,
    TrainingArgs,
};
use crate::data::{count_treatments, derive_seed, epoch_batches, CellData, Split};
use crate::error::TrainError;
use crate::model::Geometry;
use crate::trainer::{term_names, Objective, Trainer};

pub const CHECKPOINT_FILE: &str = "checkpoint.safetensors";
pub const TRAINING_STATE_FILE: &str = "training_state.safetensors";
pub const MODEL_CARD_FILE: &str = "model_card.json";
pub const TRAINING_LOG_FILE: &str = "training_log.parquet";
pub const RECONSTRUCTIONS_FILE: &str = "reconstructions.png";
pub const REFERENCE_OUTPUTS_FILE: &str = "reference_outputs.safetensors";
/// The int64 scalar, in the checkpoint and the training state, naming the epoch they hold.
pub const EPOCH_TENSOR: &str = "phenoflow.epochs_completed";

pub(crate) const STAGE: &str = "pf-train";
const VALIDATION_BATCH: usize = 256;
const PROGRESS_EVERY: usize = 20;
// Streams of the run's seed (see data::derive_seed).
const SPLIT_STREAM: u64 = 1;
pub(crate) const INIT_STREAM: u64 = 2;
const ORDER_STREAM: u64 = 1 << 32;
const NOISE_STREAM: u64 = 2 << 32;
const VALIDATION_STREAM: u64 = 3 << 32;

/// What this stage's own errors count as bad input (exit 2; see `phenoflow_kit::main`).
pub fn is_input_error(cause: &(dyn std::error::Error + 'static)) -> bool {
    cause
        .downcast_ref::<TrainError>()
        .is_some_and(TrainError::is_input_error)
}

/// One row of the training log.
#[derive(Debug, Clone, PartialEq)]
pub struct LogRow {
    pub epoch: i32,
    pub split: String,
    pub term: String,
    pub value: f64,
}

/// The message for a call with training flags but no track (`pf-train --cells … --model cnn`, as
/// pf-train took them before its two subcommands); `None` for anything else, which clap answers.
pub fn missing_track(mut arguments: impl Iterator<Item = std::ffi::OsString>) -> Option<String> {
    let first = arguments.next()?;
    let first = first.to_string_lossy();
    let answered_by_clap = ["--help", "-h", "--version", "-V", "--list-devices"];
    if !first.starts_with("--") || answered_by_clap.contains(&first.as_ref()) {
        return None;
    }
    if first == phenoflow_kit::FLAGS_ARG {
        return None;
    }
    Some(format!(
        "`{first}` before a track: name it first, `pf-train generative …` (--model cytoae, \
         cytovae, sparsevae, cytovaegan or sparsevaegan) or `pf-train classifier …` (--model cnn or \
         resnet18); each takes its own flags (pf-train generative --help, pf-train classifier --help)"
    ))
}

/// What libtorch sees: CUDA and its devices, cuDNN, and where `--device auto` trains.
pub fn describe_devices() -> String {
    let yes = |b: bool| if b { "yes" } else { "no" };
    format!(
        "pf-train: libtorch sees CUDA available: {}, CUDA devices: {}, cuDNN available: {}; --device auto trains on {:?}",
        yes(tch::Cuda::is_available()),
        tch::Cuda::device_count(),
        yes(tch::Cuda::cudnn_is_available()),
        tch::Device::cuda_if_available()
    )
}

/// Thread count, TF32 and cuDNN autotuning, for both tracks; before any CUDA context exists.
pub(crate) fn configure_backend(cli: &TrainingArgs) {
    if cli.threads > 0 {
        tch::set_num_threads(cli.threads);
    }
    if cli.tf32 {
        // libtorch reads this when it first creates its CUDA context: TF32 for cuBLAS matrix
        // multiplies (cuDNN convolutions allow TF32 by default).
        std::env::set_var("TORCH_ALLOW_TF32_CUBLAS_OVERRIDE", "1");
    }
    if cli.cudnn_benchmark {
        tch::Cuda::cudnn_set_benchmark(true);
    }
}

pub fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Track::Generative(args) => run_generative(&args),
        Track::Classifier(args) => supervised::run(&args),
    }
}

/// `pf-train generative`.
fn run_generative(cli: &GenerativeArgs) -> anyhow::Result<()> {
    configure_backend(cli);
    let settings = cli.settings()?;
    let device = settings.device;
    let previous = Previous::find(cli)?;
    let started = Instant::now();
    let cells = Cells::read(cli)?;
    let (data, split) = (&cells.data, &cells.split);
    let mut card = model_card(cli, &settings, &cells, previous.as_ref());
    if let Some(previous) = &previous {
        check_resumable(
            &previous.card,
            &card,
            &previous.path,
            cli.start_from.is_some(),
        )?;
    }
    let pixels = place_pixels(data.pixels.shallow_clone(), device, cli.data_on_host);
    let mut trainer = Trainer::new(
        settings.cli_model,
        cells.geometry,
        device,
        Objective {
            beta: settings.beta,
            alpha: cli.alpha,
            grad_clip_norm: settings.grad_clip_norm,
            spike_vsc: cli.spike_sampler == SpikeSamplerArg::Vsc,
            spike_temperature: cli.spike_temperature,
            spike_temperature_step: cli.spike_temperature_step,
        },
        card.normalization.clone(),
        cli.learning_rate,
        cli.weight_decay(),
        cli.log_sigma_limit,
        derive_seed(cli.seed, INIT_STREAM),
    );
    card.parameter_count = model::parameter_count(&trainer.vae_store);
    card.discriminator_parameter_count = model::parameter_count(&trainer.discriminator_store);
    let mut log_rows = Vec::new();
    let mut first_epoch = 0;
    if let Some(previous) = &previous {
        first_epoch = previous.card.epochs_completed;
        restore(&mut trainer, &previous.folder, first_epoch)?;
        log_rows = read_log(&previous.folder.join(TRAINING_LOG_FILE))?;
        log_rows.retain(|row| (row.epoch as usize) <= first_epoch);
    }
    if !cli.no_progress {
        eprintln!(
            "pf-train: {} on {:?}: {} cells ({} train, {} validation, {} treatments) of {:?} read in {:.1} s; {} parameters; {}",
            settings.cli_model.name(),
            device,
            data.n_cells(),
            split.train.len(),
            split.validation.len(),
            data.treatments.len(),
            data.shape,
            started.elapsed().as_secs_f64(),
            card.parameter_count,
            if first_epoch == cli.epochs {
                format!("no further epoch (started from a run of {first_epoch})")
            } else {
                format!("epochs {}..{}", first_epoch + 1, cli.epochs)
            }
        );
    }
    std::fs::create_dir_all(&cli.output)
        .with_context(|| format!("creating {}", cli.output.display()))?;
    if first_epoch == cli.epochs {
        // --start-from a run that already has every epoch asked for: its model, as it is.
        card.epochs_completed = first_epoch;
        save(&trainer, &card, &log_rows, &cli.output)?;
    }
    for epoch in first_epoch..cli.epochs {
        log_rows.extend(train_epoch(
            cli,
            &mut trainer,
            &cells,
            &pixels,
            device,
            epoch,
        )?);
        card.epochs_completed = epoch + 1;
        save(&trainer, &card, &log_rows, &cli.output)?;
    }
    write_final_outputs(cli, &trainer, &card, split, &pixels, device)?;
    if !cli.no_progress {
        eprintln!(
            "pf-train: wrote {} ({} epochs) in {:.1} s",
            cli.output.display(),
            card.epochs_completed,
            started.elapsed().as_secs_f64()
        );
    }
    Ok(())
}

/// The run `--start-from` or `--resume` continues: its card, that card's path and its folder.
struct Previous {
    card: ModelCard,
    path: std::path::PathBuf,
    folder: std::path::PathBuf,
}

impl Previous {
    fn find(cli: &GenerativeArgs) -> anyhow::Result<Option<Self>> {
        Ok(match (&cli.start_from, cli.resume) {
            (Some(start), _) => Some(Self {
                // The cause names the file.
                card: ModelCard::read(start).context("--start-from")?,
                path: start.clone(),
                folder: start
                    .parent()
                    .map(Path::to_path_buf)
                    .unwrap_or_else(|| std::path::PathBuf::from(".")),
            }),
            (None, true) => {
                let path = cli.output.join(MODEL_CARD_FILE);
                Some(Self {
                    card: ModelCard::read(&path).context("--resume")?,
                    path,
                    folder: cli.output.clone(),
                })
            }
            (None, false) => None,
        })
    }
}

/// The training cells, their content hash, the model's geometry and the validation split, with
/// the batch size the sampler gives; too few cells or treatments for one batch is bad input.
struct Cells {
    data: CellData,
    hash: String,
    description: String,
    geometry: Geometry,
    split: Split,
    batch_size: usize,
}

impl Cells {
    fn read(cli: &GenerativeArgs) -> anyhow::Result<Self> {
        // Hash the input on another thread while it is being read.
        let cells_paths = cli.cells.clone();
        let hasher = std::thread::spawn(move || hash_files(&cells_paths));
        let data = CellData::read(&cli.cells)?;
        let hash = hasher.join().expect("hashing thread")?;
        let description = cli
            .cells
            .iter()
            .map(|path| path.display().to_string())
            .collect::<Vec<_>>()
            .join(",");
        let first_cells = cli.cells[0].clone();
        let geometry = Geometry {
            channels: data.shape[0],
            height: data.shape[1],
            width: data.shape[2],
            latent_dim: cli.latent_dim,
        };
        geometry.check().map_err(|reason| TrainError::Data {
            path: first_cells.clone(),
            reason,
        })?;
        let split = Split::new(
            data.n_cells(),
            cli.validation_fraction,
            derive_seed(cli.seed, SPLIT_STREAM),
        );
        let n_train_treatments = count_treatments(&split.train, &data.treatment_of_cell);
        let batch_size = match cli.sampler {
            SamplerArg::Shuffle => cli.batch_size,
            SamplerArg::Balanced => n_train_treatments,
        };
        if batch_size < 2 {
            return Err(TrainError::Data {
                path: first_cells.clone(),
                reason: "--sampler balanced needs at least two treatments among the training cells"
                    .into(),
            }
            .into());
        }
        if split.train.len() < batch_size {
            return Err(TrainError::Data {
                path: first_cells.clone(),
                reason: format!(
                    "{} training cells are fewer than one batch of {batch_size}; lower --batch-size",
                    split.train.len()
                ),
            }
            .into());
        }
        Ok(Self {
            data,
            hash,
            description,
            geometry,
            split,
            batch_size,
        })
    }
}

/// The model card of this run: every setting, the data's hash, where it started from.
fn model_card(
    cli: &GenerativeArgs,
    settings: &Settings,
    cells: &Cells,
    previous: Option<&Previous>,
) -> ModelCard {
    let (data, split) = (&cells.data, &cells.split);
    let hyperparameters = Hyperparameters {
        latent_dim: cli.latent_dim,
        beta: settings.beta,
        alpha: cli.alpha,
        epochs: cli.epochs,
        batch_size: cells.batch_size,
        learning_rate: cli.learning_rate,
        weight_decay: cli.weight_decay(),
        validation_fraction: cli.validation_fraction,
        sampler: match cli.sampler {
            SamplerArg::Shuffle => "shuffle".into(),
            SamplerArg::Balanced => "balanced".into(),
        },
        spike_sampler: match cli.spike_sampler {
            SpikeSamplerArg::Vsc => "vsc".into(),
            SpikeSamplerArg::Dtu => "dtu".into(),
        },
        spike_temperature: cli.spike_temperature,
        spike_temperature_step: cli.spike_temperature_step,
        log_sigma_limit: cli.log_sigma_limit,
        grad_clip_norm: settings.grad_clip_norm,
        reconstruction_loss: "sum-squared-error".into(),
    };
    let normalization = match cli.normalization {
        NormalizationArg::PerImageChannelMax => Normalization::PerImageChannelMax,
        NormalizationArg::Fixed => Normalization::Fixed {
            divisor: cli.fixed_divisor,
        },
        NormalizationArg::DatasetChannelMax => Normalization::DatasetChannelMax {
            channel_max: data.channel_max(&split.train),
        },
    };
    ModelCard {
        format: MODEL_CARD_FORMAT.into(),
        format_version: MODEL_CARD_VERSION,
        model: settings.cli_model,
        architecture: "dtu".into(),
        input_shape: data.shape,
        channel_names: data.channel_names.clone(),
        normalization,
        hyperparameters: hyperparameters.clone(),
        seed: cli.seed,
        data: TrainingData {
            cells: cells.description.clone(),
            content_hash: cells.hash.clone(),
            n_cells: data.n_cells(),
            n_train: split.train.len(),
            n_validation: split.validation.len(),
            n_treatments: data.treatments.len(),
        },
        epochs_completed: 0,
        parameter_count: 0,
        discriminator_parameter_count: 0,
        checkpoint: CHECKPOINT_FILE.into(),
        stage_version: env!("CARGO_PKG_VERSION").into(),
        started_from: previous
            .and_then(|p| p.card.started_from.clone())
            .or_else(|| {
                cli.start_from.as_ref().map(|path| {
                    format!(
                        "{} ({} epochs)",
                        path.display(),
                        previous.map_or(0, |p| p.card.epochs_completed)
                    )
                })
            }),
    }
}

/// One epoch: the training batches, then the validation cells; its rows of the training log.
fn train_epoch(
    cli: &GenerativeArgs,
    trainer: &mut Trainer,
    cells: &Cells,
    pixels: &Tensor,
    device: Device,
    epoch: usize,
) -> anyhow::Result<Vec<LogRow>> {
    let (data, split, batch_size) = (&cells.data, &cells.split, cells.batch_size);
    let names = term_names(trainer.kind);
    let mut log_rows = Vec::new();
    let epoch_number = epoch + 1;
    let (order, n_batches) = start_epoch(
        &split.train,
        &data.treatment_of_cell,
        batch_size,
        cli.sampler == SamplerArg::Balanced,
        cli.seed,
        epoch,
        pixels.device(),
    );
    let progress = progress_bar(n_batches, epoch_number, cli.epochs, cli.no_progress);
    let epoch_started = Instant::now();
    let mut sums: Vec<Tensor> = names
        .iter()
        .map(|_| Tensor::zeros([], (Kind::Double, device)))
        .collect();
    for batch in 0..n_batches {
        let index = order.narrow(0, (batch * batch_size) as i64, batch_size as i64);
        let images = trainer.normalize(&pixels.index_select(0, &index).to_device(device));
        let terms = trainer.train_step(&images, epoch);
        for (sum, term) in sums.iter_mut().zip(&terms) {
            *sum += term.to_kind(Kind::Double);
        }
        if (batch + 1) % PROGRESS_EVERY == 0 || batch + 1 == n_batches {
            let means: Vec<f64> = sums
                .iter()
                .map(|sum| sum.double_value(&[]) / (batch + 1) as f64)
                .collect();
            check_finite(&means, names, epoch_number, "train")?;
            let rate = ((batch + 1) * batch_size) as f64 / epoch_started.elapsed().as_secs_f64();
            progress.set_position((batch + 1) as u64);
            progress.set_message(format!("{} | {rate:.0} img/s", describe(names, &means)));
        }
    }
    let train_means: Vec<f64> = sums
        .iter()
        .map(|sum| sum.double_value(&[]) / n_batches as f64)
        .collect();
    let train_seconds = epoch_started.elapsed().as_secs_f64();
    progress.finish_and_clear();
    check_finite(&train_means, names, epoch_number, "train")?;
    tch::manual_seed(derive_seed(cli.seed, VALIDATION_STREAM + epoch as u64) as i64);
    let validation_means: Vec<f64> = if split.validation.is_empty() {
        Vec::new()
    } else {
        trainer
            .evaluate(pixels, &split.validation, epoch, VALIDATION_BATCH)
            .iter()
            .map(|mean| mean.double_value(&[]))
            .collect()
    };
    check_finite(&validation_means, names, epoch_number, "validation")?;
    let images_per_second = (n_batches * batch_size) as f64 / train_seconds;
    for (split_name, means) in [("train", &train_means), ("validation", &validation_means)] {
        for (term, value) in names.iter().zip(means.iter()) {
            log_rows.push(LogRow {
                epoch: epoch_number as i32,
                split: split_name.into(),
                term: (*term).into(),
                value: *value,
            });
        }
    }
    for (term, value) in [
        ("images_per_second", images_per_second),
        ("seconds", train_seconds),
    ] {
        log_rows.push(LogRow {
            epoch: epoch_number as i32,
            split: "train".into(),
            term: term.into(),
            value,
        });
    }
    if !cli.no_progress {
        let validation = if validation_means.is_empty() {
            String::new()
        } else {
            format!(" | validation {}", describe(names, &validation_means))
        };
        eprintln!(
                "pf-train: epoch {epoch_number}/{}: train {}{validation} | {images_per_second:.0} img/s, {train_seconds:.1} s",
                cli.epochs,
                describe(names, &train_means)
            );
    }
    Ok(log_rows)
}

/// Reconstructions of the first validation cells (training cells when none are held out),
/// decoded from their profile vectors (never a sampled z), and the reference outputs an exported
/// model must reproduce.
fn write_final_outputs(
    cli: &GenerativeArgs,
    trainer: &Trainer,
    card: &ModelCard,
    split: &Split,
    pixels: &Tensor,
    device: Device,
) -> anyhow::Result<()> {
    let shown: Vec<i64> = if split.validation.is_empty() {
        &split.train
    } else {
        &split.validation
    }
    .iter()
    .take(cli.n_reconstructions.max(1))
    .copied()
    .collect();
    tch::no_grad(|| -> anyhow::Result<()> {
        let index = Tensor::from_slice(&shown).to_device(pixels.device());
        let images = trainer.normalize(&pixels.index_select(0, &index).to_device(device));
        let profiles = trainer.vae.profile(
            &images,
            trainer.spike_sampler(card.epochs_completed.saturating_sub(1)),
        );
        let reconstructions = trainer.vae.decoder.forward_t(&profiles, false);
        let path = cli.output.join(RECONSTRUCTIONS_FILE);
        figures::write_reconstructions(&path, &images, &reconstructions)
            .with_context(|| format!("writing {}", path.display()))
    })?;
    let reference: Vec<i64> = split
        .validation
        .iter()
        .chain(&split.train)
        .take(cli.reference_cells)
        .copied()
        .collect();
    write_reference_outputs(
        trainer,
        card.epochs_completed.saturating_sub(1),
        pixels,
        &reference,
        &cli.output.join(REFERENCE_OUTPUTS_FILE),
    )?;
    Ok(())
}

/// The model's evaluation-mode outputs on some cells, with their normalised inputs and row numbers
/// in the cells table: `input`, `mu`, `log_sigma`, [`gamma`, `spike_mean`], `profile` and `reconstruction` (the
/// decoder applied to the profile), the reference an exported model must reproduce.
fn write_reference_outputs(
    trainer: &Trainer,
    last_epoch: usize,
    pixels: &Tensor,
    cells: &[i64],
    path: &Path,
) -> anyhow::Result<()> {
    if cells.is_empty() {
        return Ok(());
    }
    let device = trainer.vae_store.device();
    let tensors = tch::no_grad(|| {
        let index = Tensor::from_slice(cells).to_device(pixels.device());
        let input = trainer.normalize(&pixels.index_select(0, &index).to_device(device));
        // One pass, uncapped: γ = exp(min(log γ, 0)) as the export caps it; E[s] from the raw value.
        let (mu, log_sigma, raw_log_gamma) = trainer.vae.encode(&input, false, false);
        let gamma = raw_log_gamma.as_ref().map(|raw| raw.clamp_max(0.0).exp());
        let sampler = trainer.spike_sampler(last_epoch);
        let spike_mean = raw_log_gamma.as_ref().map(|raw| sampler.expectation(raw));
        let profile = model::gated_profile(&mu, raw_log_gamma.as_ref(), sampler);
        let reconstruction = trainer.vae.decoder.forward_t(&profile, false);
        let mut tensors = vec![
            ("cell_index".to_string(), Tensor::from_slice(cells)),
            ("input".to_string(), input),
            ("mu".to_string(), mu),
            ("log_sigma".to_string(), log_sigma),
            ("profile".to_string(), profile),
            ("reconstruction".to_string(), reconstruction),
        ];
        tensors.extend(gamma.map(|gamma| ("gamma".to_string(), gamma)));
        tensors.extend(spike_mean.map(|mean| ("spike_mean".to_string(), mean)));
        tensors
            .into_iter()
            .map(|(name, tensor)| (name, tensor.to_device(Device::Cpu).contiguous()))
            .collect::<Vec<_>>()
    });
    checkpoint::write(path, &tensors)?;
    Ok(())
}

/// Starts an epoch of any model: the batch order of the training rows (shuffled, or one row per
/// group per batch when `balanced`) on `device`, its number of batches, and libtorch's generator
/// seeded for the epoch's noise (dropout, sampling, augmentation).
pub(crate) fn start_epoch(
    train: &[i64],
    group_of_row: &[u32],
    batch_size: usize,
    balanced: bool,
    seed: u64,
    epoch: usize,
    device: Device,
) -> (Tensor, usize) {
    let order = epoch_batches(
        train,
        group_of_row,
        batch_size,
        balanced,
        derive_seed(seed, ORDER_STREAM + epoch as u64),
    );
    let n_batches = order.len() / batch_size;
    let order = Tensor::from_slice(&order).to_device(device);
    tch::manual_seed(derive_seed(seed, NOISE_STREAM + epoch as u64) as i64);
    (order, n_batches)
}

/// Moves the dataset to the device when it fits; otherwise keeps it on the host and says so.
pub(crate) fn place_pixels(pixels: Tensor, device: Device, data_on_host: bool) -> Tensor {
    if device == Device::Cpu || data_on_host {
        return pixels;
    }
    match pixels.f_to_device(device) {
        Ok(resident) => resident,
        Err(error) => {
            eprintln!(
                "pf-train: the dataset ({:.1} GB) does not fit on {device:?} ({error}); keeping it on the host and copying each batch",
                (pixels.numel() * 2) as f64 / 1e9
            );
            pixels
        }
    }
}

pub(crate) fn describe(names: &[&str], means: &[f64]) -> String {
    names
        .iter()
        .zip(means)
        .map(|(name, value)| format!("{name} {value:.4}"))
        .collect::<Vec<_>>()
        .join(", ")
}

pub(crate) fn check_finite(
    means: &[f64],
    names: &[&'static str],
    epoch: usize,
    split: &'static str,
) -> Result<(), TrainError> {
    match names
        .iter()
        .zip(means)
        .find(|(_, value)| !value.is_finite())
    {
        Some((term, value)) => Err(TrainError::NonFinite {
            epoch,
            split,
            term,
            value: *value,
        }),
        None => Ok(()),
    }
}

pub(crate) fn progress_bar(
    n_batches: usize,
    epoch: usize,
    n_epochs: usize,
    quiet: bool,
) -> ProgressBar {
    phenoflow_kit::progress_bar(
        n_batches,
        &format!("epoch {epoch}/{n_epochs}"),
        "batches",
        quiet,
    )
}

/// A resumed run must be the same run: same model, data, seed and settings (only the number of
/// epochs may grow).
fn check_resumable(
    previous: &ModelCard,
    current: &ModelCard,
    path: &Path,
    may_be_finished: bool,
) -> Result<(), TrainError> {
    let bad = |reason: String| TrainError::Resume {
        path: path.to_path_buf(),
        reason,
    };
    let same_hyperparameters = Hyperparameters {
        epochs: previous.hyperparameters.epochs,
        ..current.hyperparameters.clone()
    };
    if previous.model != current.model {
        return Err(bad(format!(
            "it trained {}, not {}",
            previous.model.name(),
            current.model.name()
        )));
    }
    if previous.data.content_hash != current.data.content_hash {
        return Err(bad(format!(
            "it was trained on other data ({})",
            previous.data.cells
        )));
    }
    if previous.seed != current.seed {
        return Err(bad(format!("it used --seed {}", previous.seed)));
    }
    if previous.hyperparameters != same_hyperparameters {
        return Err(bad(format!(
            "its settings differ: {}",
            serde_json::to_string(&previous.hyperparameters).unwrap_or_default()
        )));
    }
    if previous.normalization != current.normalization {
        return Err(bad("its pixel normalisation differs".into()));
    }
    if previous.epochs_completed > current.hyperparameters.epochs
        || (previous.epochs_completed == current.hyperparameters.epochs && !may_be_finished)
    {
        return Err(bad(format!(
            "it already finished {} epochs; ask for more with --epochs",
            previous.epochs_completed
        )));
    }
    Ok(())
}

fn restore(trainer: &mut Trainer, out: &Path, epochs_completed: usize) -> Result<(), TrainError> {
    let checkpoint_path = out.join(CHECKPOINT_FILE);
    let state_path = out.join(TRAINING_STATE_FILE);
    let weights = checkpoint::read(&checkpoint_path)?;
    let state = checkpoint::read(&state_path)?;
    for (path, tensors) in [(&checkpoint_path, &weights), (&state_path, &state)] {
        let epoch = tensors
            .get(EPOCH_TENSOR)
            .map(|tensor| tensor.int64_value(&[0]));
        if epoch != Some(epochs_completed as i64) {
            return Err(TrainError::Resume {
                path: path.clone(),
                reason: format!(
                    "it holds epoch {}, the model card says {epochs_completed} epochs were completed \
                     (a crash while saving?); train again without --resume",
                    epoch.map_or("?".to_string(), |epoch| epoch.to_string())
                ),
            });
        }
    }
    checkpoint::load_into(&trainer.vae_store, &weights, "", &checkpoint_path)?;
    checkpoint::load_into(
        &trainer.discriminator_store,
        &state,
        "discriminator.",
        &state_path,
    )?;
    let find = |name: &str| {
        state
            .get(name)
            .map(|tensor| tensor.to_device(trainer.vae_store.device()))
    };
    let resume_error = |reason| TrainError::Resume {
        path: state_path.clone(),
        reason,
    };
    trainer
        .vae_optimizer
        .load_state("adam.vae", &find)
        .map_err(resume_error)?;
    trainer
        .discriminator_optimizer
        .load_state("adam.discriminator", &find)
        .map_err(resume_error)?;
    Ok(())
}

fn save(
    trainer: &Trainer,
    card: &ModelCard,
    log_rows: &[LogRow],
    out: &Path,
) -> anyhow::Result<()> {
    // Each file records the epoch it holds, so a resume can tell a set of files that a crash
    // interrupted half-way through saving (they are written one after the other).
    let epoch_tensor = || {
        (
            EPOCH_TENSOR.to_string(),
            Tensor::from_slice(&[card.epochs_completed as i64]),
        )
    };
    let mut weights = checkpoint::named_tensors(&trainer.vae_store, "");
    weights.push(epoch_tensor());
    checkpoint::write(&out.join(CHECKPOINT_FILE), &weights)?;
    let mut state = checkpoint::named_tensors(&trainer.discriminator_store, "discriminator.");
    state.push(epoch_tensor());
    for (name, tensor) in trainer
        .vae_optimizer
        .state("adam.vae")
        .into_iter()
        .chain(trainer.discriminator_optimizer.state("adam.discriminator"))
    {
        state.push((name, tensor.to_device(Device::Cpu).contiguous()));
    }
    checkpoint::write(&out.join(TRAINING_STATE_FILE), &state)?;
    write_log(
        &out.join(TRAINING_LOG_FILE),
        log_rows,
        &log_provenance(card),
    )?;
    card.write(&out.join(MODEL_CARD_FILE))?;
    Ok(())
}

fn log_schema() -> Arc<Schema> {
    Arc::new(Schema::new(vec![
        Field::new("Epoch", DataType::Int32, false),
        Field::new("Split", DataType::Utf8, false),
        Field::new("Term", DataType::Utf8, false),
        Field::new("Value", DataType::Float64, false),
    ]))
}

/// The provenance of a generative model's training log.
fn log_provenance(card: &ModelCard) -> Provenance {
    let params = serde_json::json!({
        "model": card.model.name(),
        "hyperparameters": card.hyperparameters,
        "normalization": card.normalization,
    });
    let mut provenance = Provenance::new(
        TableKind::TrainingLog,
        STAGE,
        env!("CARGO_PKG_VERSION"),
        params,
    );
    provenance
        .inputs
        .insert(card.data.cells.clone(), card.data.content_hash.clone());
    provenance.seed = Some(card.seed);
    provenance
}

pub(crate) fn write_log(
    path: &Path,
    rows: &[LogRow],
    provenance: &Provenance,
) -> anyhow::Result<()> {
    let columns: Vec<arrow_array::ArrayRef> = vec![
        Arc::new(Int32Array::from_iter_values(
            rows.iter().map(|row| row.epoch),
        )),
        Arc::new(StringArray::from_iter_values(
            rows.iter().map(|row| row.split.as_str()),
        )),
        Arc::new(StringArray::from_iter_values(
            rows.iter().map(|row| row.term.as_str()),
        )),
        Arc::new(Float64Array::from_iter_values(
            rows.iter().map(|row| row.value),
        )),
    ];
    Ok(phenoflow_schemas::write_table_at_once(
        path,
        TableKind::TrainingLog,
        log_schema(),
        columns,
        provenance,
    )?)
}

/// Reads a training log written by [`write_log`] (to append to it when resuming).
pub fn read_log(path: &Path) -> anyhow::Result<Vec<LogRow>> {
    use arrow_array::cast::AsArray;
    use arrow_array::types::{Float64Type, Int32Type};
    let mut rows = Vec::new();
    for batch in phenoflow_schemas::read_table(path, TableKind::TrainingLog)? {
        let epochs = batch
            .column_by_name("Epoch")
            .expect("validated")
            .as_primitive::<Int32Type>();
        let splits = batch
            .column_by_name("Split")
            .expect("validated")
            .as_string::<i32>();
        let terms = batch
            .column_by_name("Term")
            .expect("validated")
            .as_string::<i32>();
        let values = batch
            .column_by_name("Value")
            .expect("validated")
            .as_primitive::<Float64Type>();
        for row in 0..batch.num_rows() {
            rows.push(LogRow {
                epoch: epochs.value(row),
                split: splits.value(row).to_string(),
                term: terms.value(row).to_string(),
                value: values.value(row),
            });
        }
    }
    Ok(rows)
}
