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
    /// Writing failed (a full disk, a lost file system): the machine's fault, not the input's.
    #[error("{path}: could not write the Parquet file: {source}")]
    Write {
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
    #[error("{path}: model card: {reason}")]
    BadModelCard { path: PathBuf, reason: String },
    #[error("{path}: {reason}")]
    BadMoaTable { path: PathBuf, reason: String },
    #[error("{path}: provenance metadata: {reason}")]
    BadProvenance { path: PathBuf, reason: String },
    #[error("{path}: label column `{column}`: {reason}")]
    BadLabel {
        path: PathBuf,
        column: String,
        reason: String,
    },
}

/// A problem with what the user gave a stage (a missing column, an unknown option value, an empty
/// selection): exit code 2. For stages without an error enum of their own.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct InputError(pub String);

/// I/O errors that say the user named something that is not there or not usable: a missing
/// file, a folder or FIFO given as a file, a symbolic-link loop, a path through a file.
pub fn io_is_bad_input(error: &std::io::Error) -> bool {
    use std::io::ErrorKind;
    matches!(error.kind(), ErrorKind::NotFound | ErrorKind::InvalidInput)
        // ELOOP, ENOTDIR, EISDIR, ENAMETOOLONG
        || matches!(error.raw_os_error(), Some(40 | 20 | 21 | 36))
}

/// An error and its causes on one line, `outer: cause: root`, as a stage prints it. A cause whose
/// text the message already ends with, after a `: ` (`{path}: {source}` messages), is not repeated: anyhow's
/// `{:#}` would print "…: No such file or directory (os error 2): No such file or directory
/// (os error 2)".
pub fn chain_message<'a>(
    chain: impl IntoIterator<Item = &'a (dyn std::error::Error + 'static)>,
) -> String {
    let mut message = String::new();
    for cause in chain {
        let text = cause.to_string();
        if message == text || message.ends_with(&format!(": {text}")) {
            continue;
        }
        if !message.is_empty() {
            message.push_str(": ");
        }
        message.push_str(&text);
    }
    message
}

/// The exit code for an error chain: 2 when any link is bad input (an [`InputError`], a
/// [`SchemaError`] other than I/O, or whatever `is_stage_input_error` recognises), 1 otherwise
/// (a failure of the machine: disk, memory, a bug).
pub fn exit_code<'a>(
    chain: impl IntoIterator<Item = &'a (dyn std::error::Error + 'static)>,
    is_stage_input_error: impl Fn(&(dyn std::error::Error + 'static)) -> bool,
) -> u8 {
    let bad_input = chain.into_iter().any(|cause| {
        cause.downcast_ref::<InputError>().is_some()
            || cause
                .downcast_ref::<SchemaError>()
                .is_some_and(|error| match error {
                    SchemaError::Io { source, .. } => io_is_bad_input(source),
                    SchemaError::Write { .. } => false,
                    _ => true,
                })
            || cause
                .downcast_ref::<std::io::Error>()
                .is_some_and(io_is_bad_input)
            || is_stage_input_error(cause)
    });
    if bad_input {
        2
    } else {
        1
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chain(error: &(dyn std::error::Error + 'static)) -> String {
        chain_message(std::iter::successors(Some(error), |cause| cause.source()))
    }

    #[test]
    fn a_cause_its_parent_spells_out_is_printed_once() {
        let missing = SchemaError::Io {
            path: PathBuf::from("x.parquet"),
            source: std::io::Error::new(std::io::ErrorKind::NotFound, "gone"),
        };
        assert_eq!(chain(&missing), "x.parquet: gone");
        // A parent that does not repeat its cause keeps it.
        #[derive(Debug, thiserror::Error)]
        #[error("reading the cells")]
        struct Outer(#[source] SchemaError);
        assert_eq!(chain(&Outer(missing)), "reading the cells: x.parquet: gone");
        // Only a whole `: cause` at the end counts as spelled out, not a word that ends alike.
        #[derive(Debug, thiserror::Error)]
        #[error("{0}")]
        struct Word(&'static str);
        #[derive(Debug, thiserror::Error)]
        #[error("no cells")]
        struct Ends(#[source] Word);
        assert_eq!(chain(&Ends(Word("cells"))), "no cells: cells");
    }
}
