//! Command-line interface of `pf-classify` (clap derive; the doc comments are the help).

use std::path::PathBuf;

use clap::{Parser, ValueEnum};

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
            --predictions out/seed-predictions.parquet --metrics out/seed-metrics.parquet"
)]
pub struct Cli {
    /// The `treatments` table (from pf-aggregate).
    #[arg(long)]
    pub treatments: PathBuf,

    /// Where to write the `predictions` table.
    #[arg(long)]
    pub predictions: PathBuf,

    /// Where to write the `metrics` table.
    #[arg(long)]
    pub metrics: PathBuf,

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
    #[arg(long, default_value = "Metadata_Batch")]
    pub batch_column: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Protocol {
    Standard,
    SeedCompatible,
}
