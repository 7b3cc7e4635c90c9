//! The model card: the JSON file `pf-train` writes beside every checkpoint and that `pf-export`
//! and `pf-embed` read. It is part of the contract between stages because it says how a model's
//! inputs must be prepared (the pixel normalisation) and how its tensors are named and shaped,
//! so that nothing downstream re-types a training setting.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::SchemaError;

/// The `format` field of every model card.
pub const MODEL_CARD_FORMAT: &str = "phenoflow.model_card";
/// Bumped whenever a field changes meaning; readers accept only their own version.
pub const MODEL_CARD_VERSION: u32 = 2;

/// The metadata pf-export writes into every ONNX file and pf-embed reads back: the model card
/// (as JSON), which half of the model the file is, and the model's name.
pub mod onnx_metadata {
    /// The whole model card, as JSON.
    pub const MODEL_CARD: &str = "phenoflow.model_card";
    /// [`ENCODER`] or [`DECODER`].
    pub const ROLE: &str = "phenoflow.role";
    /// The model's name (`cytovae`, …).
    pub const MODEL: &str = "phenoflow.model";
    pub const ENCODER: &str = "encoder";
    pub const DECODER: &str = "decoder";
}

/// The generative models of the seed paper.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ModelKind {
    /// CytoVAE with β = 0: a plain (still stochastic) autoencoder.
    CytoAe,
    /// Gaussian VAE, loss = reconstruction + β·KL.
    CytoVae,
    /// Spike-and-slab VAE (Tonolini et al.), prior weight α.
    SparseVae,
    /// CytoVAE with a discriminator and feature-matching loss.
    CytoVaeGan,
    /// SparseVAE with a discriminator and feature-matching loss.
    SparseVaeGan,
}

impl ModelKind {
    pub const ALL: [ModelKind; 5] = [
        ModelKind::CytoAe,
        ModelKind::CytoVae,
        ModelKind::SparseVae,
        ModelKind::CytoVaeGan,
        ModelKind::SparseVaeGan,
    ];

    /// The lower-case name used on command lines, in files and in feature column names.
    pub fn name(self) -> &'static str {
        match self {
            ModelKind::CytoAe => "cytoae",
            ModelKind::CytoVae => "cytovae",
            ModelKind::SparseVae => "sparsevae",
            ModelKind::CytoVaeGan => "cytovaegan",
            ModelKind::SparseVaeGan => "sparsevaegan",
        }
    }

    /// The name in feature columns (`Cells_CytoVAE_z000`), as the seed paper writes it.
    pub fn display_name(self) -> &'static str {
        match self {
            ModelKind::CytoAe => "CytoAE",
            ModelKind::CytoVae => "CytoVAE",
            ModelKind::SparseVae => "SparseVAE",
            ModelKind::CytoVaeGan => "CytoVAEGAN",
            ModelKind::SparseVaeGan => "SparseVAEGAN",
        }
    }

    /// The encoder emits a third head, log γ (the spike probabilities).
    pub fn is_sparse(self) -> bool {
        matches!(self, ModelKind::SparseVae | ModelKind::SparseVaeGan)
    }

    /// Trained against a discriminator.
    pub fn has_discriminator(self) -> bool {
        matches!(self, ModelKind::CytoVaeGan | ModelKind::SparseVaeGan)
    }

    /// How many latent-sized heads the encoder's last layer has (μ, log σ [, log γ]).
    pub fn n_heads(self) -> i64 {
        if self.is_sparse() {
            3
        } else {
            2
        }
    }
}

/// How raw uint16 intensities become the model's float inputs. Applied identically in training
/// (on the device) and in embedding (on the host), from this one description.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "method", rename_all = "kebab-case")]
pub enum Normalization {
    /// Each image's channel divided by its own maximum over (H, W), the seeds' choice; an
    /// all-zero channel stays zero.
    PerImageChannelMax,
    /// Each channel divided by its maximum over the whole training set (recorded here).
    DatasetChannelMax { channel_max: Vec<f32> },
    /// Every intensity divided by one constant (e.g. 65535 or 40000).
    Fixed { divisor: f32 },
}

impl Normalization {
    /// Normalises one `[C,H,W]` cell into `out` (same length), exactly as training does.
    pub fn apply(&self, pixels: &[u16], n_channels: usize, out: &mut [f32]) {
        let plane = pixels.len() / n_channels.max(1);
        for channel in 0..n_channels {
            let range = channel * plane..(channel + 1) * plane;
            let scale = match self {
                Normalization::PerImageChannelMax => {
                    let max = pixels[range.clone()].iter().copied().max().unwrap_or(0);
                    1.0 / f32::from(max.max(1))
                }
                Normalization::DatasetChannelMax { channel_max } => {
                    1.0 / channel_max[channel].max(1.0)
                }
                Normalization::Fixed { divisor } => 1.0 / divisor,
            };
            for (value, pixel) in out[range.clone()].iter_mut().zip(&pixels[range]) {
                *value = f32::from(*pixel) * scale;
            }
        }
    }
}

/// Everything `pf-train` used, as recorded for reproduction.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Hyperparameters {
    pub latent_dim: i64,
    pub beta: f64,
    pub alpha: f64,
    pub epochs: usize,
    pub batch_size: usize,
    pub learning_rate: f64,
    pub weight_decay: f64,
    pub validation_fraction: f64,
    pub sampler: String,
    pub spike_sampler: String,
    pub spike_temperature: f64,
    pub spike_temperature_step: f64,
    pub log_sigma_limit: f64,
    pub grad_clip_norm: f64,
    pub reconstruction_loss: String,
}

/// The data a model was trained on.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrainingData {
    pub cells: String,
    pub content_hash: String,
    pub n_cells: usize,
    pub n_train: usize,
    pub n_validation: usize,
    pub n_treatments: usize,
}

/// The JSON model card.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelCard {
    pub format: String,
    pub format_version: u32,
    pub model: ModelKind,
    /// Which reading of the seed architecture (see pf-train's README); `dtu` today.
    pub architecture: String,
    /// `[C, H, W]` of one input cell.
    pub input_shape: [i64; 3],
    pub channel_names: Vec<String>,
    pub normalization: Normalization,
    pub hyperparameters: Hyperparameters,
    pub seed: u64,
    pub data: TrainingData,
    pub epochs_completed: usize,
    pub parameter_count: usize,
    pub discriminator_parameter_count: usize,
    /// The checkpoint file, relative to the card's folder.
    pub checkpoint: String,
    pub stage_version: String,
    /// The finished run this one started from (`pf-train generative --start-from`), with its epochs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_from: Option<String>,
}

impl ModelCard {
    /// The spike selector's expectation a sparse model's profile is gated by: the sampler it
    /// was trained with, at the temperature of its last epoch. `None` for Gaussian models.
    pub fn spike_expectation(&self) -> Option<crate::architecture::SpikeExpectation> {
        use crate::architecture::SpikeExpectation;
        if !self.model.is_sparse() {
            return None;
        }
        let h = &self.hyperparameters;
        Some(if h.spike_sampler == "dtu" {
            SpikeExpectation::Dtu
        } else {
            SpikeExpectation::Vsc {
                temperature: h.spike_temperature
                    + h.spike_temperature_step * self.epochs_completed.saturating_sub(1) as f64,
            }
        })
    }

    /// Reads and checks a card; every failure names the file.
    pub fn read(path: &Path) -> Result<Self, SchemaError> {
        let text = std::fs::read_to_string(path).map_err(|source| SchemaError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        Self::from_json(&text, path)
    }

    /// Parses and checks a card's JSON; `path` names where it came from in errors (a card file,
    /// or an ONNX model whose metadata carries it).
    pub fn from_json(text: &str, path: &Path) -> Result<Self, SchemaError> {
        let bad = |reason: String| SchemaError::BadModelCard {
            path: path.to_path_buf(),
            reason,
        };
        let card: ModelCard = serde_json::from_str(text).map_err(|error| bad(error.to_string()))?;
        if card.format != MODEL_CARD_FORMAT {
            return Err(bad(format!(
                "format is `{}`, expected `{MODEL_CARD_FORMAT}`",
                card.format
            )));
        }
        if card.format_version != MODEL_CARD_VERSION {
            return Err(bad(format!(
                "format_version is {}, this build reads {MODEL_CARD_VERSION}",
                card.format_version
            )));
        }
        // The checkpoint sits beside the card: a file name, never a path to elsewhere.
        if !crate::is_plain_file_name(&card.checkpoint) {
            return Err(bad(format!(
                "checkpoint `{}` must be a file name beside the card (no `/`, `\\` or `..`)",
                card.checkpoint
            )));
        }
        if card.input_shape.iter().any(|&dim| dim <= 0) || card.hyperparameters.latent_dim <= 0 {
            return Err(bad("input_shape and latent_dim must be positive".into()));
        }
        if let Normalization::DatasetChannelMax { channel_max } = &card.normalization {
            if channel_max.len() as i64 != card.input_shape[0] {
                return Err(bad(format!(
                    "normalization has {} channel maxima for {} channels",
                    channel_max.len(),
                    card.input_shape[0]
                )));
            }
        }
        Ok(card)
    }

    /// The checkpoint's path, resolved against the card's folder.
    pub fn checkpoint_path(&self, card_path: &Path) -> PathBuf {
        card_path
            .parent()
            .unwrap_or_else(|| Path::new("."))
            .join(&self.checkpoint)
    }

    /// Writes the card as pretty JSON to a temporary file beside `path`, then renames it.
    pub fn write(&self, path: &Path) -> Result<(), SchemaError> {
        let io_error = |source| SchemaError::Io {
            path: path.to_path_buf(),
            source,
        };
        let text = serde_json::to_string_pretty(self).expect("a model card serialises");
        crate::atomic_write(path, text.as_bytes()).map_err(io_error)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn per_image_channel_max_divides_each_channel_by_its_own_max() {
        let pixels = [1u16, 4, 2, 0, 0, 0];
        let mut out = [9.0f32; 6];
        Normalization::PerImageChannelMax.apply(&pixels, 2, &mut out);
        assert_eq!(out, [0.25, 1.0, 0.5, 0.0, 0.0, 0.0]);
        Normalization::Fixed { divisor: 2.0 }.apply(&pixels, 2, &mut out);
        assert_eq!(out, [0.5, 2.0, 1.0, 0.0, 0.0, 0.0]);
    }

    #[test]
    fn unknown_field_and_wrong_format_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("card.json");
        std::fs::write(&path, r#"{"format": "x"}"#).unwrap();
        let error = ModelCard::read(&path).unwrap_err().to_string();
        assert!(
            error.contains("card.json") && error.contains("missing field"),
            "{error}"
        );
    }
}
