//! Errors of `pf-preprocess`: every message names the file and, where there is one, the row and
//! column, so a user can open the file and see the problem.

use std::path::PathBuf;

/// What can go wrong while turning microscopy files into a `cells` table.
#[derive(Debug, thiserror::Error)]
pub enum PreprocessError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: not a readable CSV file: {source}")]
    Csv {
        path: PathBuf,
        #[source]
        source: csv::Error,
    },
    #[error("{path}: missing required column `{column}` (columns present: {present})")]
    MissingColumn {
        path: PathBuf,
        column: String,
        present: String,
    },
    #[error("{path}: line {line}: column `{column}`: {reason}")]
    BadValue {
        path: PathBuf,
        line: u64,
        column: String,
        reason: String,
    },
    #[error("{path}: line {line}: treatment ({compound}, {concentration}) has no row in the MoA table {moa_path} (use --unannotated drop|keep to allow this)")]
    NoMoa {
        path: PathBuf,
        line: u64,
        compound: String,
        concentration: f64,
        moa_path: PathBuf,
    },
    #[error("{path}: not a readable TIFF image (missing, truncated or corrupt?): {reason}")]
    Tiff { path: PathBuf, reason: String },
    #[error("{path}: unsupported pixel type {found}; expected 8- or 16-bit unsigned grayscale")]
    PixelType { path: PathBuf, found: String },
    #[error("field at {csv} line {line}: channel images differ in size: {details}")]
    ChannelSizes {
        csv: PathBuf,
        line: u64,
        details: String,
    },
    #[error("{path}: not a usable .npy array: {reason}")]
    Npy { path: PathBuf, reason: String },
    #[error("{0}")]
    Invalid(String),
}

impl PreprocessError {
    /// Bad input (exit code 2) as opposed to a failure of the machine (exit code 1).
    pub fn is_bad_input(&self) -> bool {
        match self {
            PreprocessError::Io { source, .. } => phenoflow_schemas::io_is_bad_input(source),
            _ => true,
        }
    }
}

pub type Result<T, E = PreprocessError> = std::result::Result<T, E>;
