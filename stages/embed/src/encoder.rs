//! The exported encoder pf-embed runs: opened through phenoflow-onnx on CUDA when asked for or
//! available (the CPU otherwise, said so), its model card read from the ONNX metadata, and the
//! gate its profile vector μ is multiplied by (nothing, E[s] or γ) for sparse models.

use std::path::Path;

use anyhow::anyhow;
use ort::session::Session;
use phenoflow_schemas::model_card::onnx_metadata;
use phenoflow_schemas::{InputError, ModelCard};

use crate::args::{Cli, DeviceArg, ProfileArg};
use crate::SPIKE_MEAN;

/// An encoder session and the model card it carries.
pub struct Encoder {
    pub session: Session,
    pub card: ModelCard,
    pub execution_provider: &'static str,
}

impl std::fmt::Debug for Encoder {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            formatter,
            "Encoder({}, {})",
            self.card.model.name(),
            self.execution_provider
        )
    }
}

/// Opens an encoder, on CUDA when asked for or available (falling back to the CPU with a
/// message), and reads its model card; errors name the file.
pub fn open_encoder(
    environment: &phenoflow_onnx::Environment,
    path: &Path,
    device: DeviceArg,
    threads: usize,
) -> anyhow::Result<Encoder> {
    let build = |cuda: bool| {
        phenoflow_onnx::open(
            environment,
            path,
            "encoder",
            phenoflow_onnx::SessionOptions { threads, cuda },
        )
    };
    // Before a CUDA session is tried: a missing file is named as such, not as a CUDA failure.
    if !path.exists() {
        return Err(InputError(format!("{}: no such encoder file", path.display())).into());
    }
    let cuda_built = phenoflow_onnx::cuda_built();
    let (session, execution_provider) = match device {
        DeviceArg::Cpu => (build(false)?, "CPU"),
        DeviceArg::Cuda if !cuda_built => {
            return Err(anyhow!(
                "--device cuda: this ONNX Runtime ({}) has no CUDA execution provider; install onnxruntime-gpu",
                phenoflow_onnx::dylib_path().unwrap_or_default().display()
            ))
        }
        DeviceArg::Cuda => (build(true)?, "CUDA"),
        DeviceArg::Auto if cuda_built => match build(true) {
            Ok(session) => (session, "CUDA"),
            Err(error) => {
                eprintln!("pf-embed: CUDA execution provider unavailable ({error:#}); running on the CPU");
                (build(false)?, "CPU")
            }
        },
        DeviceArg::Auto => (build(false)?, "CPU"),
    };
    let metadata = session
        .metadata()
        .map_err(|error| anyhow!("{}: {error}", path.display()))?;
    let card_json = metadata.custom(onnx_metadata::MODEL_CARD).ok_or_else(|| {
        InputError(format!(
            "{}: not a phenoflow encoder (no `{}` in its metadata; export it with pf-export)",
            path.display(),
            onnx_metadata::MODEL_CARD
        ))
    })?;
    let role = metadata.custom(onnx_metadata::ROLE).unwrap_or_default();
    if role != onnx_metadata::ENCODER {
        return Err(InputError(format!(
            "{}: this is the {role}, not the encoder",
            path.display()
        ))
        .into());
    }
    let card = ModelCard::from_json(&card_json, path)?;
    drop(metadata);
    Ok(Encoder {
        session,
        card,
        execution_provider,
    })
}

/// What the profile μ is multiplied by: nothing, E[s] (`spike_mean`) or γ.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Gate {
    None,
    SpikeMean,
    Gamma,
}

impl Gate {
    pub(crate) fn name(self) -> &'static str {
        match self {
            Gate::None => "mu",
            Gate::SpikeMean => "mu-spike-mean",
            Gate::Gamma => "mu-gamma",
        }
    }

    /// The encoder output the profile is multiplied by.
    pub(crate) fn output(self) -> Option<&'static str> {
        match self {
            Gate::None => None,
            Gate::SpikeMean => Some(SPIKE_MEAN),
            Gate::Gamma => Some("gamma"),
        }
    }
}

/// `--profile` (and `--with-gamma`) against the model: sparse models' profiles are μ·E[s] by
/// default; a gate a dense model has not is an error.
pub(crate) fn profile_gate(cli: &Cli, card: &ModelCard) -> anyhow::Result<Gate> {
    let gate = match cli.profile {
        ProfileArg::Auto if card.model.is_sparse() => Gate::SpikeMean,
        ProfileArg::Auto | ProfileArg::Mu => Gate::None,
        ProfileArg::MuSpikeMean | ProfileArg::MuGamma if !card.model.is_sparse() => {
            return Err(InputError(format!(
                "--profile {}: {} is not a sparse model (it has no spike selector)",
                if cli.profile == ProfileArg::MuGamma {
                    "mu-gamma"
                } else {
                    "mu-spike-mean"
                },
                card.model.name()
            ))
            .into())
        }
        ProfileArg::MuSpikeMean => Gate::SpikeMean,
        ProfileArg::MuGamma => Gate::Gamma,
    };
    if cli.with_gamma && !card.model.is_sparse() {
        return Err(InputError(format!("--with-gamma: {} has no gamma", card.model.name())).into());
    }
    Ok(gate)
}
