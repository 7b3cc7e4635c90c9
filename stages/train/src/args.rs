//! Command-line interface of `pf-train` (clap derive; the doc comments are the help), resolved
//! into validated [`Settings`] before any data is read.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};
use phenoflow_schemas::ModelKind;

use crate::classifier::Architecture;

use crate::error::TrainError;

#[derive(Debug, Parser)]
#[command(
    name = "pf-train",
    version,
    subcommand_required = true,
    about = "Train a CytoAE / CytoVAE / SparseVAE / CytoVAEGAN / SparseVAEGAN (generative), or a supervised CNN / ResNet-18 (classifier), on a cells table (libtorch)",
    long_about = "Train, on CUDA when present and on the CPU otherwise, one of the seed paper's generative models \
                  of single cells (pf-train generative) or a supervised classifier of a label, the second seed's \
                  CNN or ResNet-18 (pf-train classifier), on a `cells` table. Each subcommand takes only its own \
                  flags; see pf-train generative --help and pf-train classifier --help.",
    after_long_help = "Examples:\n  \
        pf-train generative --cells out/cells.parquet --model cytovae --beta 1 --epochs 50 --output out/cytovae\n  \
        pf-train classifier --cells out/whole.parquet --model resnet18 --label treatment --epochs 20 --output out/resnet18\n  \
        pf-train --list-devices                          # what libtorch sees: CUDA, devices, cuDNN"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Track,

    /// Print what libtorch sees (CUDA, its devices, cuDNN) and exit; takes no other argument.
    #[arg(long, exclusive = true)]
    pub list_devices: bool,
}

/// The two tracks, each with its own flags.
#[derive(Debug, Subcommand)]
pub enum Track {
    /// A generative model of single cells: CytoAE, CytoVAE, SparseVAE, CytoVAEGAN, SparseVAEGAN (the first seed).
    #[command(
        long_about = "Train one of the seed paper's generative models of single cells on a `cells` table. Writes, \
                      into --output: checkpoint.safetensors (model weights), training_state.safetensors (optimiser \
                      and discriminator, for --resume), model_card.json (every setting, the data's hash, the seed), \
                      training_log.parquet (every loss term per epoch, train and validation), \
                      reference_outputs.safetensors (for pf-export's check) and reconstructions.png.",
        after_long_help = "Examples:\n  \
            pf-train generative --cells out/cells.parquet --model cytovae --beta 1 --epochs 50 --output out/cytovae\n  \
            pf-train generative --cells out/cells.parquet --model sparsevae --alpha 0.1 --sampler balanced --output out/svae\n  \
            pf-train generative --cells out/cells.parquet --model cytovae --epochs 80 --output out/cytovae --resume\n  \
            pf-train generative --cells out/cells.parquet --model cytovae --epochs 20 --start-from models/demo-cytovae/model_card.json --output out/m"
    )]
    Generative(GenerativeArgs),
    /// A supervised classifier of a label: the second seed's CNN or ResNet-18.
    #[command(
        long_about = "Train a supervised classifier of --label (the second seed) on a seeded hold-out split of a \
                      `cells` table (single cells, or whole fields from pf-preprocess whole). Writes, into --output: \
                      checkpoint.safetensors, classifier.json, training_log.parquet (loss, accuracy and balanced \
                      accuracy per epoch), metrics.parquet (accuracy, balanced accuracy, macro-F1, per-class \
                      precision / recall / F1, confusion counts, and the majority-class baseline) and \
                      class_predictions.parquet (every held-out image with its true and predicted label). \
                      pf-baseline with the same --label, --hold-out, --test-fraction and --seed holds out the same rows.",
        after_long_help = "Examples:\n  \
            pf-train classifier --cells out/whole.parquet --model resnet18 --label treatment --epochs 20 --output out/resnet18\n  \
            pf-train classifier --cells out/cells.parquet --model cnn --label Metadata_MoA --hold-out compound --class-weights balanced --output out/cnn"
    )]
    Classifier(ClassifierArgs),
}

/// The flags both tracks share: data, optimisation, device and output.
#[derive(Debug, Args)]
pub struct TrainingArgs {
    /// The `cells` table to train on (from pf-preprocess); repeat for per-plate shards.
    #[arg(long, required = true)]
    pub cells: Vec<PathBuf>,

    /// The folder to write the checkpoint, card, training log and the other outputs into.
    #[arg(long, alias = "out")]
    pub output: PathBuf,

    /// Number of epochs to train (at least 1; in total, when a generative run resumes).
    #[arg(long, default_value_t = 50, value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..=1_000_000))]
    pub epochs: usize,

    /// Cells per batch (with --sampler balanced: one cell per treatment or class, so their number).
    #[arg(long, default_value_t = 64)]
    pub batch_size: usize,

    /// Adam learning rate.
    #[arg(long, default_value_t = 1e-3)]
    pub learning_rate: f64,

    /// Adam weight decay (coupled L2 on every parameter, as the seeds' torch.optim.Adam); default
    /// 1e-3 for the generative models (the first seed), 0 for the classifiers.
    #[arg(long)]
    pub weight_decay: Option<f64>,

    /// shuffle: every training cell once per epoch; balanced: one cell per treatment (compound,
    /// concentration), or per class for a classifier, in every batch, cycling through their cells.
    #[arg(long, value_enum, default_value_t = SamplerArg::Shuffle)]
    pub sampler: SamplerArg,

    /// Pixel normalisation, applied on the device and recorded in the model card.
    #[arg(long, value_enum, default_value_t = NormalizationArg::PerImageChannelMax)]
    pub normalization: NormalizationArg,

    /// Divisor for --normalization fixed.
    #[arg(long, default_value_t = 65535.0)]
    pub fixed_divisor: f32,

    /// Seed of the split, the batch order, the weights and the sampling noise.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,

    /// auto (CUDA when present), cpu, cuda or cuda:N.
    #[arg(long, default_value = "auto")]
    pub device: String,

    /// Intra-op CPU threads (0 = libtorch's default, all cores; at most 1024).
    #[arg(long, default_value_t = 0, value_parser = clap::value_parser!(i32).range(0..=1024))]
    pub threads: i32,

    /// Allow TF32 matrix multiplies on Ampere or newer GPUs.
    #[arg(long)]
    pub tf32: bool,

    /// Let cuDNN time its convolution algorithms on the first batches and keep the fastest
    /// (faster on a GPU; the chosen algorithms, and so the last bits of the results, may differ
    /// from run to run).
    #[arg(long)]
    pub cudnn_benchmark: bool,

    /// Keep the whole dataset on the host and copy each batch to the device (for data sets that
    /// do not fit in GPU memory; by default it is moved to the device when it fits).
    #[arg(long)]
    pub data_on_host: bool,

    /// Hide the progress bar and the per-epoch lines (errors and warnings still print).
    #[arg(long, alias = "quiet")]
    pub no_progress: bool,
}

/// `pf-train generative`.
#[derive(Debug, Args)]
pub struct GenerativeArgs {
    /// Which model to train.
    #[arg(long, value_enum)]
    pub model: GenerativeModelArg,

    #[command(flatten)]
    pub training: TrainingArgs,

    /// Size of the latent space.
    #[arg(long, default_value_t = 256)]
    pub latent_dim: i64,

    /// Weight of the KL term (ignored by cytoae, which is β = 0; honoured by the GAN variants,
    /// unlike the seed code, which always used 1).
    #[arg(long, default_value_t = 1.0)]
    pub beta: f64,

    /// Prior probability that a latent dimension is active (sparse models).
    #[arg(long, default_value_t = 0.1)]
    pub alpha: f64,

    /// Fraction of cells held out for validation (a seeded split by cell).
    #[arg(long, default_value_t = 0.1)]
    pub validation_fraction: f64,

    /// How the spike selector is sampled (sparse models): vsc = the Variational Sparse Coding
    /// reference (η ~ U(0,1), temperature c, log γ capped at 0); dtu = the seed code (η ~ N(0,1),
    /// no temperature, log γ uncapped while sampling).
    #[arg(long, value_enum, default_value_t = SpikeSamplerArg::Vsc)]
    pub spike_sampler: SpikeSamplerArg,

    /// Initial temperature c of the vsc spike selector.
    #[arg(long, default_value_t = 50.0)]
    pub spike_temperature: f64,

    /// Added to c after every epoch (the reference's update per epoch).
    #[arg(long, default_value_t = 0.001)]
    pub spike_temperature_step: f64,

    /// log σ is clamped to ±this before use (the seed's SparseVAE overflowed without it).
    #[arg(long, default_value_t = 10.0)]
    pub log_sigma_limit: f64,

    /// Gradient-norm clip of the encoder/decoder (the seed: 10,000 for VAEs, 1,000 with a GAN;
    /// 0 = the seed's value for the model).
    #[arg(long, default_value_t = 0.0)]
    pub grad_clip_norm: f64,

    /// Continue the run in --output from its last finished epoch up to --epochs (same settings).
    #[arg(long)]
    pub resume: bool,

    /// Start from a finished run elsewhere (its model_card.json; the checkpoint, training state
    /// and log beside it), such as the demo model `make demo-model` makes: it must have been
    /// trained on the same cells (content hash), model, seed and settings, or the run stops with
    /// exit code 2. Training continues from its last epoch up to --epochs (none when equal); the
    /// card records where the run started.
    #[arg(long, conflicts_with = "resume", value_name = "MODEL_CARD")]
    pub start_from: Option<PathBuf>,

    /// How many cells to show in reconstructions.png.
    #[arg(long, default_value_t = 8)]
    pub n_reconstructions: usize,

    /// How many cells (validation cells first) to record, with the model's outputs on them, in
    /// reference_outputs.safetensors, against which an exported model is checked.
    #[arg(long, default_value_t = 64)]
    pub reference_cells: usize,
}

/// `pf-train classifier`.
#[derive(Debug, Args)]
pub struct ClassifierArgs {
    /// Which classifier to train.
    #[arg(long, value_enum)]
    pub model: Architecture,

    #[command(flatten)]
    pub training: TrainingArgs,

    /// The label and the hold-out split (the same flags as pf-baseline's).
    #[command(flatten)]
    pub split: phenoflow_kit::SplitArgs,

    /// Weight each class's cross-entropy by n / (classes · n_class) (balanced, as scikit-learn's
    /// class_weight="balanced"), or not at all.
    #[arg(long, value_enum, default_value_t = ClassWeightsArg::None)]
    pub class_weights: ClassWeightsArg,

    /// Random flips and 90° turns of every training image (the eight symmetries of the square;
    /// the orientation of a field carries no biology), or none.
    #[arg(long, value_enum, default_value_t = AugmentArg::Dihedral)]
    pub augment: AugmentArg,

    /// cnn: dropout before the fully connected layer.
    #[arg(long, default_value_t = 0.5)]
    pub dropout: f64,
}

impl std::ops::Deref for GenerativeArgs {
    type Target = TrainingArgs;
    fn deref(&self) -> &TrainingArgs {
        &self.training
    }
}

impl std::ops::Deref for ClassifierArgs {
    type Target = TrainingArgs;
    fn deref(&self) -> &TrainingArgs {
        &self.training
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum GenerativeModelArg {
    Cytoae,
    Cytovae,
    Sparsevae,
    Cytovaegan,
    Sparsevaegan,
}

impl GenerativeModelArg {
    pub fn kind(self) -> ModelKind {
        match self {
            GenerativeModelArg::Cytoae => ModelKind::CytoAe,
            GenerativeModelArg::Cytovae => ModelKind::CytoVae,
            GenerativeModelArg::Sparsevae => ModelKind::SparseVae,
            GenerativeModelArg::Cytovaegan => ModelKind::CytoVaeGan,
            GenerativeModelArg::Sparsevaegan => ModelKind::SparseVaeGan,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum AugmentArg {
    None,
    Dihedral,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ClassWeightsArg {
    None,
    Balanced,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum SamplerArg {
    Shuffle,
    Balanced,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum SpikeSamplerArg {
    Vsc,
    Dtu,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum NormalizationArg {
    /// Each image's channel by its own maximum (the seeds').
    PerImageChannelMax,
    /// Each channel by its maximum over the training cells.
    DatasetChannelMax,
    /// Every intensity by --fixed-divisor.
    Fixed,
}

/// The arguments, checked.
#[derive(Debug, Clone)]
pub struct Settings {
    pub cli_model: ModelKind,
    pub beta: f64,
    pub grad_clip_norm: f64,
    pub device: tch::Device,
}

impl GenerativeArgs {
    /// --weight-decay, or the generative models' default, 1e-3 (the first seed's).
    pub fn weight_decay(&self) -> f64 {
        self.training.weight_decay.unwrap_or(1e-3)
    }

    /// Checks everything that can be checked before reading data.
    pub fn settings(&self) -> Result<Settings, TrainError> {
        let model = self.model.kind();
        let bad = |message: String| Err(TrainError::Settings(message));
        if self.latent_dim < 1 {
            return bad(format!(
                "--latent-dim must be at least 1, got {}",
                self.latent_dim
            ));
        }
        self.training.check_optimisation(self.weight_decay())?;
        if !(0.0..0.9).contains(&self.validation_fraction) {
            return bad(format!(
                "--validation-fraction must be in [0, 0.9), got {}",
                self.validation_fraction
            ));
        }
        if !(self.alpha > 0.0 && self.alpha < 1.0) {
            return bad(format!("--alpha must be in (0, 1), got {}", self.alpha));
        }
        if !(self.beta >= 0.0 && self.beta.is_finite()) {
            return bad(format!("--beta must be ≥ 0, got {}", self.beta));
        }
        if model == ModelKind::CytoAe && self.beta != 1.0 && self.beta != 0.0 {
            return bad(format!(
                "cytoae is CytoVAE with β = 0; for β = {} use --model cytovae",
                self.beta
            ));
        }
        if self.log_sigma_limit.is_nan() || self.log_sigma_limit <= 0.0 {
            return bad("--log-sigma-limit must be positive".into());
        }
        if self.normalization == NormalizationArg::Fixed
            && (self.fixed_divisor.is_nan() || self.fixed_divisor <= 0.0)
        {
            return bad("--fixed-divisor must be positive".into());
        }
        let beta = if model == ModelKind::CytoAe {
            0.0
        } else {
            self.beta
        };
        let grad_clip_norm = if self.grad_clip_norm > 0.0 {
            self.grad_clip_norm
        } else if model.has_discriminator() {
            1_000.0
        } else {
            10_000.0
        };
        let device = parse_device(&self.device)?;
        Ok(Settings {
            cli_model: model,
            beta,
            grad_clip_norm,
            device,
        })
    }
}

impl ClassifierArgs {
    /// --weight-decay, or the classifiers' default, 0.
    pub fn weight_decay(&self) -> f64 {
        self.training.weight_decay.unwrap_or(0.0)
    }
}

impl TrainingArgs {
    /// The checks both tracks share: batch size, learning rate and weight decay (clap checks
    /// --epochs).
    pub fn check_optimisation(&self, weight_decay: f64) -> Result<(), TrainError> {
        let bad = |message: String| Err(TrainError::Settings(message));
        if self.batch_size < 2 {
            return bad(format!(
                "--batch-size must be at least 2 (batch normalisation needs two images), got {}",
                self.batch_size
            ));
        }
        if !(self.learning_rate > 0.0 && self.learning_rate.is_finite()) {
            return bad(format!(
                "--learning-rate must be positive, got {}",
                self.learning_rate
            ));
        }
        if !(weight_decay >= 0.0 && weight_decay.is_finite()) {
            return bad(format!("--weight-decay must be ≥ 0, got {weight_decay}"));
        }
        Ok(())
    }
}

/// `auto`, `cpu`, `cuda` or `cuda:N`; asking for CUDA where there is none is an error, not a
/// silent fallback.
pub fn parse_device(text: &str) -> Result<tch::Device, TrainError> {
    let cuda = |index: usize| {
        if tch::Cuda::is_available() && (index as i64) < tch::Cuda::device_count() {
            Ok(tch::Device::Cuda(index))
        } else {
            Err(TrainError::Settings(format!(
                "--device {text}: CUDA device {index} is not available (libtorch sees {} CUDA devices)",
                tch::Cuda::device_count()
            )))
        }
    };
    match text {
        "auto" => Ok(tch::Device::cuda_if_available()),
        "cpu" => Ok(tch::Device::Cpu),
        "cuda" => cuda(0),
        other => match other.strip_prefix("cuda:").and_then(|n| n.parse().ok()) {
            Some(index) => cuda(index),
            None => Err(TrainError::Settings(format!(
                "--device {other}: expected auto, cpu, cuda or cuda:N"
            ))),
        },
    }
}
