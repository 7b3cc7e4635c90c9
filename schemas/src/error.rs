//! Errors raised while checking or moving tables between stages; each names the file and, where
//! there is one, the column.

use std::path::PathBuf;

/// Everything that can go wrong when a table is read, validated or written.
#[derive(Debug, thiserror::Error)]
pub enum SchemaError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: not a readable Parquet file (truncated or corrupt?): {source}")]
    Parquet {
        path: PathBuf,
        #[source]
        source: parquet::errors::ParquetError,
    },
    #[error("{path}: {source}")]
    Arrow {
        path: PathBuf,
        #[source]
        source: arrow_schema::ArrowError,
    },
    #[error("{path}: missing required column `{column}` of table `{table}`")]
    MissingColumn {
        path: PathBuf,
        table: &'static str,
        column: String,
    },
    #[error("{path}: column `{column}` of table `{table}` has type {found}, expected {expected}")]
    WrongType {
        path: PathBuf,
        table: &'static str,
        column: String,
        expected: String,
        found: String,
    },
    #[error("{path}: column `{column}` of table `{table}` must not contain nulls (row {row})")]
    UnexpectedNull {
        path: PathBuf,
        table: &'static str,
        column: String,
        row: usize,
    },
    #[error("{path}: column `{column}` holds a non-finite value (NaN or inf) at row {row}")]
    NonFinite {
        path: PathBuf,
        column: String,
        row: usize,
    },
    #[error("{path}: table `{table}` has no feature column (expected at least one numeric column not starting with `Metadata_`)")]
    NoFeatures { path: PathBuf, table: &'static str },
    #[error("{path}: tensor column `{column}`: {reason}")]
    BadTensor {
        path: PathBuf,
        column: String,
        reason: String,
    },
    #[error("{path}: file says it holds table `{found}`, expected `{expected}`")]
    WrongTable {
        path: PathBuf,
        expected: &'static str,
        found: String,
    },
    #[error("{path}: provenance metadata: {reason}")]
    BadProvenance { path: PathBuf, reason: String },
}
