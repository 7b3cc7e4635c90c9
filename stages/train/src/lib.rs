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

mod generative;
mod log;
mod resume;

use indicatif::ProgressBar;
use tch::{Device, Tensor};

use crate::args::{Cli, Track, TrainingArgs};
use crate::data::{derive_seed, epoch_batches};
use crate::error::TrainError;
use crate::generative::run_generative;

pub const CHECKPOINT_FILE: &str = "checkpoint.safetensors";
pub const TRAINING_STATE_FILE: &str = "training_state.safetensors";
pub const MODEL_CARD_FILE: &str = "model_card.json";
pub const TRAINING_LOG_FILE: &str = "training_log.parquet";
pub const RECONSTRUCTIONS_FILE: &str = "reconstructions.png";
pub const REFERENCE_OUTPUTS_FILE: &str = "reference_outputs.safetensors";
/// The int64 scalar, in the checkpoint and the training state, naming the epoch they hold.
pub const EPOCH_TENSOR: &str = "phenoflow.epochs_completed";

pub(crate) const STAGE: &str = "pf-train";
pub(crate) const VALIDATION_BATCH: usize = 256;
pub(crate) const PROGRESS_EVERY: usize = 20;
// Streams of the run's seed (see data::derive_seed).
pub(crate) const SPLIT_STREAM: u64 = 1;
pub(crate) const INIT_STREAM: u64 = 2;
const ORDER_STREAM: u64 = 1 << 32;
const NOISE_STREAM: u64 = 2 << 32;
pub(crate) const VALIDATION_STREAM: u64 = 3 << 32;

/// What this stage's own errors count as bad input (exit 2; see `phenoflow_kit::main`).
pub fn is_input_error(cause: &(dyn std::error::Error + 'static)) -> bool {
    cause
        .downcast_ref::<TrainError>()
        .is_some_and(TrainError::is_input_error)
}

/// The message for a call with training flags but no track (`pf-train --cells … --model cnn`, as
/// pf-train took them before its two subcommands); `None` for anything else, which clap answers.
pub fn missing_track(mut arguments: impl Iterator<Item = std::ffi::OsString>) -> Option<String> {
    let first = arguments.next()?;
    let first = first.to_string_lossy();
    let answered_elsewhere = [
        "--help",
        "-h",
        "--version",
        "-V",
        "--list-devices",
        phenoflow_kit::FLAGS_ARG,
    ];
    if !first.starts_with("--") || answered_elsewhere.contains(&first.as_ref()) {
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
