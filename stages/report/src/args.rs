//! Command-line interface of `pf-report` (clap derive; the doc comments are the help).

use std::path::PathBuf;

use clap::Parser;

#[derive(Debug, Parser)]
#[command(
    name = "pf-report",
    version,
    about = "One self-contained HTML report of a profiling run, with the figures as PNGs beside it",
    long_about = "Draw what a biologist looks at after a run: learning curves, reconstructions, latent \
                  interpolations from the DMSO centre cell to chosen treatments, the MoA x latent-dimension \
                  correlation heatmap, NSC / NSCB confusion matrices with per-MoA recall, and a 2-D map of the \
                  treatment profiles; with the run's provenance and metrics, in one HTML file with the images \
                  embedded. Every input but the model card is optional; figures are drawn for what is given.",
    after_long_help = "Examples:\n  \
        pf-report --model-card out/demo/cytovae/model_card.json --decoder out/demo/decoder.onnx \\\n      \
            --cells out/demo/cells.parquet --embeddings out/demo/embeddings.parquet \\\n      \
            --treatments out/demo/treatments.parquet --predictions out/demo/predictions.parquet \\\n      \
            --metrics out/demo/metrics.parquet --pipeline pipelines/demo.toml --output out/demo/report\n  \
        pf-report --model-card out/svae/model_card.json --decoder out/svae/decoder.onnx \\\n      \
            --cells cells.parquet --embeddings emb.parquet --interpolate taxol@0.3 --output report"
)]
pub struct Cli {
    /// The model card pf-train wrote for a generative model (its training log is read from beside it).
    #[arg(long)]
    pub model_card: Option<PathBuf>,

    /// The metrics.parquet of a supervised classifier (pf-train classifier, pf-baseline);
    /// repeat to compare several on one page.
    #[arg(long)]
    pub classifier_metrics: Vec<PathBuf>,

    /// The decoder from pf-export (for reconstructions and interpolations).
    #[arg(long)]
    pub decoder: Option<PathBuf>,

    /// `cells` tables (repeat for shards): the original images.
    #[arg(long)]
    pub cells: Vec<PathBuf>,

    /// `embeddings` tables (repeat for shards): the profiles of single cells.
    #[arg(long)]
    pub embeddings: Vec<PathBuf>,

    /// The `treatments` table (the 2-D map).
    #[arg(long)]
    pub treatments: Option<PathBuf>,

    /// The `predictions` table (confusion matrices).
    #[arg(long)]
    pub predictions: Option<PathBuf>,

    /// The `metrics` table.
    #[arg(long)]
    pub metrics: Option<PathBuf>,

    /// pf-classify summarize's `metrics_summary` of replicate runs (one per training seed): the
    /// mean ± sd of NSC, NSCB and mAP across seeds, shown beside this run's.
    #[arg(long)]
    pub metrics_summary: Option<PathBuf>,

    /// pf-classify's metrics of the screen's ground truth (pf-synth's `ground_truth_cells.csv`
    /// through pf-aggregate): the ceiling the learned profile is shown against.
    #[arg(long)]
    pub oracle_metrics: Option<PathBuf>,

    /// pf-classify's metrics of hand-crafted features of the same cells (pf-embed --handcrafted),
    /// shown beside the learned profile's.
    #[arg(long)]
    pub baseline_metrics: Option<PathBuf>,

    /// What the `--metrics` profile is, in the comparison table (a CellProfiler-feature run:
    /// `CellProfiler features`).
    #[arg(long, default_value = "learned profile (this run)")]
    pub metrics_label: String,

    /// Another run's pf-classify metrics of the same screen, shown beside this run's (NSC, NSCB,
    /// mAP, and per MoA), as LABEL=PATH: e.g. `CellProfiler features=out/cp/metrics.parquet`
    /// next to a learned profile's. Repeatable.
    #[arg(long, value_name = "LABEL=PATH", value_parser = labelled_path)]
    pub compare_metrics: Vec<(String, PathBuf)>,

    /// The pipeline file that made the run (shown with the provenance).
    #[arg(long)]
    pub pipeline: Option<PathBuf>,

    /// Treatments to interpolate to from the control, as COMPOUND@CONCENTRATION (repeatable);
    /// default: the ones whose profiles are farthest from the control's.
    #[arg(long, value_name = "COMPOUND@CONCENTRATION")]
    pub interpolate: Vec<String>,

    /// How many treatments to interpolate to when none is named.
    #[arg(long, default_value_t = 3)]
    pub n_interpolations: usize,

    /// How many cells to show reconstructed.
    #[arg(long, default_value_t = 8)]
    pub n_reconstructions: usize,

    /// The control compound.
    #[arg(long, default_value = "DMSO")]
    pub control: String,

    /// The folder to write report.html and the PNGs into.
    #[arg(long)]
    pub output: PathBuf,
}

fn labelled_path(text: &str) -> Result<(String, PathBuf), String> {
    let (label, path) = text
        .split_once('=')
        .ok_or_else(|| format!("`{text}` is not LABEL=PATH"))?;
    if label.trim().is_empty() || path.is_empty() {
        return Err(format!(
            "`{text}`: the label and the path must both be given"
        ));
    }
    Ok((label.trim().to_string(), PathBuf::from(path)))
}
