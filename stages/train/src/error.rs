//! What can go wrong in `pf-train`, each message naming the file, the epoch or the setting.

use std::path::PathBuf;

/// Errors of the training stage.
#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    /// A setting that cannot work (exit code 2).
    #[error("{0}")]
    Settings(String),
    /// The cells table cannot be used for training (exit code 2).
    #[error("{path}: {reason}")]
    Data { path: PathBuf, reason: String },
    /// A loss term became NaN or infinite: the run stops before writing a poisoned checkpoint.
    #[error("epoch {epoch}: {split} loss term `{term}` is not finite ({value}); lower the learning rate, clamp log σ harder (--log-sigma-limit) or check the input for saturated images")]
    NonFinite {
        epoch: usize,
        split: &'static str,
        term: &'static str,
        value: f64,
    },
    /// The run to resume was made with other settings or data (exit code 2).
    #[error("{path}: cannot resume: {reason}")]
    Resume { path: PathBuf, reason: String },
    /// Writing an output failed (exit code 1).
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A table could not be read: whether that is the input's fault (a missing or corrupt file,
    /// a wrong column: exit 2) or the machine's (a disk error: exit 1) is the contract's call,
    /// made on the cause.
    #[error("{0}")]
    Table(#[source] phenoflow_schemas::SchemaError),
    #[error("libtorch: {0}")]
    Torch(#[from] tch::TchError),
}

impl TrainError {
    /// Whether this error is the user's input rather than a failure of the run.
    pub fn is_input_error(&self) -> bool {
        matches!(
            self,
            TrainError::Settings(_) | TrainError::Data { .. } | TrainError::Resume { .. }
        )
    }
}
