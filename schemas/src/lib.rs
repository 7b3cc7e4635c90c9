//! The contract between phenoflow stages: the Arrow schema of every table that passes between
//! stages, the Parquet reader and writer every stage uses (validated on read and on write,
//! zstd-compressed, written atomically), and the provenance metadata carried by every file.
//!
//! This crate deliberately depends on no heavy crate (no polars, tch or ort), so that every stage
//! can use it without paying for the others.

pub mod architecture;
mod atomic;
pub mod cells;
pub mod columns;
mod error;
pub mod keys;
pub mod metrics;
pub mod moa;
pub mod model_card;
pub mod parquet_io;
pub mod pipeline;
pub mod provenance;
pub mod tables;
pub mod tensor;
mod text;

pub use atomic::{
    atomic_write, check_outputs_are_not_inputs, is_plain_file_name, leaves_its_root,
    open_regular_file, temp_path_for,
};
pub use cells::{cells_schema, CellKeys, CellPixels, CellsBatchBuilder};
pub use error::{chain_message, exit_code, io_is_bad_input, InputError, SchemaError};
pub use keys::{
    batch_of_plate, concentration_key, parse_non_negative, parse_positive, parse_shard,
    parse_threads, shard_plates, MAX_THREADS,
};
pub use moa::MoaTable;
pub use model_card::{ModelCard, ModelKind, Normalization};
pub use parquet_io::{
    read_provenance, read_table, write_table_at_once, ParallelTableWriter, ParquetTableReader,
    ParquetTableWriter,
};
pub use provenance::{hash_file, hash_files, hash_params, ContentHasher, Provenance};
pub use tables::{ColumnSpec, ColumnType, TableKind};
pub use tensor::{TensorShape, PIXELS_COLUMN};
pub use text::text_values;

/// The result type of this crate.
pub type Result<T, E = SchemaError> = std::result::Result<T, E>;
