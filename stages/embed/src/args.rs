//! Command-line interface of `pf-embed` (clap derive; the doc comments are the help).

use std::path::PathBuf;

use clap::{Parser, ValueEnum};

#[derive(Debug, Parser)]
#[command(
    name = "pf-embed",
    version,
    about = "Embed every cell of a cells table with an ONNX encoder (ONNX Runtime, CUDA when present)",
    long_about = "Stream a `cells` table through an encoder written by pf-export, in batches, with the pixel \
                  normalisation recorded in the model card inside the ONNX file, and write an `embeddings` table: \
                  every Metadata_* column of the input and one float32 feature column per latent dimension \
                  (Cells_<Model>_z000, ...). The profile is the posterior mean mu (or mu gated by gamma for sparse \
                  models), never a sampled z.",
    after_long_help = "Examples:\n  \
        pf-embed --cells out/cells.parquet --encoder out/cytovae/encoder.onnx --output out/embeddings.parquet\n  \
        pf-embed --cells out/cells.parquet --encoder out/svae/encoder.onnx --plate Week1_22123 \\\n      \
            --output out/embeddings/Week1_22123.parquet\n  \
        pf-embed --cells out/cells.parquet --encoder out/svae/encoder.onnx --shard 0/4 --with-gamma \\\n      \
            --output out/embeddings/shard0.parquet"
)]
pub struct Cli {
    /// The `cells` table to embed.
    #[arg(long)]
    pub cells: PathBuf,

    /// The encoder from pf-export.
    #[arg(long, required_unless_present = "handcrafted")]
    pub encoder: Option<PathBuf>,

    /// Instead of an encoder, compute hand-crafted features of every cell (per channel: mean,
    /// standard deviation, 99th percentile, bright area and centre ratio of the background-
    /// subtracted signal): the baseline a learned profile must beat, through the same path.
    #[arg(
        long,
        conflicts_with_all = ["encoder", "with_gamma", "with_log_sigma"]
    )]
    pub handcrafted: bool,

    /// Where to write the `embeddings` table.
    #[arg(long)]
    pub output: PathBuf,

    /// Which vector is the profile: auto = mu for Gaussian models, mu·spike_mean for sparse ones
    /// (E[z]: spike_mean is the spike selector's expectation under the model's sampler);
    /// mu-gamma = mu·min(γ, 1), the earlier profile (E[z] only in the VSC sampler's limit).
    #[arg(long, value_enum, default_value_t = ProfileArg::Auto)]
    pub profile: ProfileArg,

    /// Also write log σ as `Posterior_<Model>_logsigma000`… (not picked up as features by default).
    #[arg(long)]
    pub with_log_sigma: bool,

    /// Also write γ as `Posterior_<Model>_gamma000`… (sparse models).
    #[arg(long)]
    pub with_gamma: bool,

    /// Embed only the cells of these plates (repeatable, or comma-separated).
    #[arg(long, value_delimiter = ',')]
    pub plate: Vec<String>,

    /// Embed only shard i of n: the plates whose position in the sorted plate list is i modulo n
    /// (whole plates, so per-well aggregation can run per shard).
    #[arg(long, value_name = "I/N")]
    pub shard: Option<String>,

    /// Cells per inference batch (1 to 65,536).
    #[arg(long, default_value_t = 256, value_parser = batch_size)]
    pub batch_size: usize,

    /// auto (CUDA execution provider when this ONNX Runtime has it, else CPU), cpu or cuda.
    #[arg(long, value_enum, default_value_t = DeviceArg::Auto)]
    pub device: DeviceArg,

    /// ONNX Runtime intra-op threads (0 = all cores; at most 1024).
    #[arg(long, default_value_t = 0, value_parser = phenoflow_schemas::parse_threads)]
    pub threads: usize,

    #[command(flatten)]
    pub progress: phenoflow_kit::ProgressArgs,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ProfileArg {
    Auto,
    Mu,
    MuSpikeMean,
    MuGamma,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum DeviceArg {
    Auto,
    Cpu,
    Cuda,
}

/// `--batch-size`: 1 to 65,536 cells (one batch of 3×68×68 float cells is then at most 3.6 GB).
fn batch_size(text: &str) -> Result<usize, String> {
    match text.trim().parse::<usize>() {
        Ok(size) if (1..=65_536).contains(&size) => Ok(size),
        _ => Err(format!(
            "`{text}`: expected a number of cells from 1 to 65536"
        )),
    }
}
