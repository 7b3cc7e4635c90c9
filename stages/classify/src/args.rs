//! Command-line interface of `pf-classify` (clap derive; the doc comments are the help).

use std::path::PathBuf;

use clap::{Parser, Subcommand, ValueEnum};

use crate::knn::Metric;

#[derive(Debug, Parser)]
#[command(
    name = "pf-classify",
    version,
    about = "MoA prediction by 1-nearest neighbour over treatment profiles (NSC, NSCB, mAP)",
    long_about = "Predict each treatment's mechanism of action as that of its nearest treatment profile, holding \
                  out the query's own compound (NSC) and also its batch (NSCB), and measure MoA retrieval mean \
                  average precision. Writes a predictions table and a metrics table and prints a summary.",
    after_long_help = "Examples:\n  \
        pf-classify --treatments out/treatments.parquet \\\n      \
            --predictions out/predictions.parquet --metrics out/metrics.parquet\n  \
        pf-classify --treatments out/treatments.parquet --protocol seed-compatible --metric euclidean \\\n      \
            --predictions out/seed-predictions.parquet --metrics out/seed-metrics.parquet\n  \
        pf-classify summarize --metrics seed0/metrics.parquet --metrics seed1/metrics.parquet \\\n      \
            --metrics seed2/metrics.parquet --output metrics-summary.parquet",
    args_conflicts_with_subcommands = true,
    subcommand_negates_reqs = true
)]
pub struct Cli {
    /// `summarize`: mean ± sd of replicate runs' metrics instead of scoring treatments.
    #[command(subcommand)]
    pub command: Option<Command>,

    /// The `treatments` table (from pf-aggregate).
    #[arg(long, required = true)]
    pub treatments: Option<PathBuf>,

    /// Where to write the `predictions` table.
    #[arg(long, required = true)]
    pub predictions: Option<PathBuf>,

    /// Where to write the `metrics` table.
    #[arg(long, required = true)]
    pub metrics: Option<PathBuf>,

    /// Distance between profiles.
    #[arg(long, value_enum, default_value_t = Metric::Cosine)]
    pub metric: Metric,

    /// standard: the control is excluded (BBBC021: 103 treatments, 12 MoAs), NSC and NSCB;
    /// seed-compatible: the control is a query and a candidate (104 treatments, 13 classes), NSC.
    #[arg(long, value_enum, default_value_t = Protocol::Standard)]
    pub protocol: Protocol,

    /// The control compound (and MoA label).
    #[arg(long, default_value = "DMSO")]
    pub control: String,

    /// The column holding each treatment's batches (`;`-separated) for NSCB.
    #[arg(long, default_value = phenoflow_schemas::columns::BATCH)]
    pub batch_column: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Protocol {
    Standard,
    SeedCompatible,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Summarise the `metrics` tables of replicate runs (one per training seed): mean, sample
    /// standard deviation, range and number of replicates of every metric, as a
    /// `metrics_summary` table, and the accuracies as `mean ± sd` on standard output.
    #[command(after_long_help = "Examples:\n  \
        pf-classify summarize --metrics out/seed0/metrics.parquet --metrics out/seed1/metrics.parquet \\\n      \
            --metrics out/seed2/metrics.parquet --output out/metrics-summary.parquet")]
    Summarize(SummarizeArgs),
}

#[derive(Debug, clap::Args)]
pub struct SummarizeArgs {
    /// A replicate's `metrics` table (from pf-classify); repeat once per replicate.
    #[arg(long, required = true, num_args = 1)]
    pub metrics: Vec<PathBuf>,

    /// Where to write the `metrics_summary` table.
    #[arg(long)]
    pub output: PathBuf,
}
