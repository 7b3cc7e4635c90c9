//! Saving a generative run after every epoch (checkpoint, training state, card, log, each
//! written to a temporary file and renamed) and restoring it for `--resume` / `--start-from`,
//! after checking the settings it was trained with are these.

use std::path::Path;

use phenoflow_schemas::model_card::Hyperparameters;
use phenoflow_schemas::ModelCard;
use tch::{Device, Tensor};

use crate::checkpoint;
use crate::error::TrainError;
use crate::log::{log_provenance, write_log, LogRow};
use crate::trainer::Trainer;
use crate::{
    CHECKPOINT_FILE, EPOCH_TENSOR, MODEL_CARD_FILE, TRAINING_LOG_FILE, TRAINING_STATE_FILE,
};

/// A resumed run must be the same run: same model, data, seed and settings (only the number of
/// epochs may grow).
pub(crate) fn check_resumable(
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

pub(crate) fn restore(
    trainer: &mut Trainer,
    out: &Path,
    epochs_completed: usize,
) -> Result<(), TrainError> {
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

pub(crate) fn save(
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
