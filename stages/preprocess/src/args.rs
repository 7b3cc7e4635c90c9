//! Command-line interface of `pf-preprocess` (clap derive; the doc comments are the help).

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use crate::geometry::EdgePolicy;
use crate::layout::Unannotated;

/// The largest `--crop-size`: a cell crop, not a field (BBBC021's cells fit in 68 px).
pub const MAX_CROP_SIZE: i64 = 1024;
/// The largest `whole --size` (the seeds use 128; BBBC021's fields are 1280×1024).
pub const MAX_WHOLE_SIZE: i64 = 4096;

#[derive(Debug, Parser)]
#[command(
    name = "pf-preprocess",
    version,
    about = "Turn microscopy files into a `cells` Parquet table of single-cell pixel tensors",
    long_about = "Turn microscopy files into a `cells` Parquet table (one row per cell: Metadata_* keys and a \
                  uint16 arrow.fixed_shape_tensor [C,H,W] of raw intensities).\n\n\
                  Three input layouts: `bbbc021` (image + MoA tables and one TIFF per channel; nuclei are \
                  detected on the first channel and cropped), `singlecell` (pre-cropped cells as .npy files, \
                  the DTU course layout) and `whole` (whole fields resized to N×N, the CPJUMP1 seed).",
    after_long_help = "Examples:\n  \
        pf-preprocess bbbc021 --image-csv BBBC021/BBBC021_v1_image.csv \\\n      \
            --moa-csv BBBC021/BBBC021_v1_moa.csv --images-root BBBC021 --output out/cells.parquet\n  \
        pf-preprocess bbbc021 --image-csv BBBC021_v1_image.csv --moa-csv BBBC021_v1_moa.csv \\\n      \
            --plate Week4_27481 --centers Nuclei.csv --output out/cells-Week4_27481.parquet\n  \
        pf-preprocess singlecell --root singlecell_tiny --output out/cells.parquet\n  \
        pf-preprocess whole --image-csv images.csv --size 128 --grey \\\n      \
            --channels DNA,RNA,ER,AGP,Mito --output out/whole.parquet"
)]
pub struct Cli {
    #[command(subcommand)]
    pub mode: Mode,
}

#[derive(Debug, Subcommand)]
pub enum Mode {
    /// Raw fields in the published BBBC021 layout: detect nuclei and crop cells around them.
    Bbbc021(Bbbc021Args),
    /// Pre-cropped single cells: `metadata.csv` + one `.npy` (HWC uint16) per cell.
    Singlecell(SinglecellArgs),
    /// Whole fields resized to N×N (optionally averaged to one grey channel).
    Whole(WholeArgs),
}

/// Options shared by every mode.
#[derive(Debug, Args)]
pub struct CommonArgs {
    /// The `cells` Parquet table to write (written to a temporary file and renamed when complete).
    #[arg(short, long)]
    pub output: PathBuf,

    /// Skip fields or cells whose files are bad instead of stopping; they are counted on stderr
    /// and in the output's metadata (`phenoflow.n_skipped`).
    #[arg(long)]
    pub skip_bad: bool,

    #[command(flatten)]
    pub threads: phenoflow_kit::ThreadsArgs,

    #[command(flatten)]
    pub progress: phenoflow_kit::ProgressArgs,
}

/// Options of the layouts driven by an image table (`bbbc021` and `whole`).
#[derive(Debug, Args)]
pub struct ImageTableArgs {
    /// Image table: `BBBC021_v1_image.csv` or a CellProfiler LoadData-style CSV with
    /// `Image_FileName_<channel>` / `Image_PathName_<channel>` columns.
    #[arg(long)]
    pub image_csv: PathBuf,

    /// Folder the `Image_PathName_*` values are relative to [default: the image table's folder].
    #[arg(long)]
    pub images_root: Option<PathBuf>,

    /// Also read images outside --images-root (absolute `Image_PathName_*` values or `..`, as
    /// CellProfiler LoadData tables often hold); by default such a row is an error.
    #[arg(long)]
    pub allow_outside_root: bool,

    /// Channel names (as in `Image_FileName_<name>`), in tensor order.
    #[arg(long, value_delimiter = ',', default_value = "DAPI,Actin,Tubulin")]
    pub channels: Vec<String>,

    /// Keep only these plates (repeat or comma-separate); used to shard work per plate.
    #[arg(long = "plate", value_delimiter = ',')]
    pub plates: Vec<String>,

    /// Keep only shard I of N: the plates whose position in the sorted plate list is I modulo N
    /// (how Snakemake / Nextflow fan a screen out over machines).
    #[arg(long, value_name = "I/N", value_parser = phenoflow_schemas::parse_shard)]
    pub shard: Option<(usize, usize)>,

    /// Fields whose treatment is not in the MoA table: drop them, keep them with a null MoA,
    /// or stop with an error.
    #[arg(long, value_enum, default_value_t = Unannotated::Drop)]
    pub unannotated: Unannotated,

    /// Also write the resolved field list (an `image_manifest` table) here.
    #[arg(long)]
    pub manifest: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct Bbbc021Args {
    #[command(flatten)]
    pub table: ImageTableArgs,

    /// MoA table (`BBBC021_v1_moa.csv`: compound, concentration, moa).
    #[arg(long)]
    pub moa_csv: PathBuf,

    /// Crop size in pixels (square; 1 to 1024, and no larger than the field).
    #[arg(long, default_value_t = 68, value_parser = clap::value_parser!(u16).range(1..=MAX_CROP_SIZE))]
    pub crop_size: u16,

    /// Cells whose crop reaches outside the field: skip them or pad with zeros.
    #[arg(long, value_enum, default_value_t = EdgePolicy::Skip)]
    pub edge: EdgePolicy,

    /// Crop at the centres of a CellProfiler object table (`ImageNumber`,
    /// `Location_Center_X`, `Location_Center_Y`) instead of detecting nuclei.
    #[arg(long)]
    pub centers: Option<PathBuf>,

    /// Gaussian smoothing of the DNA channel before thresholding (pixels).
    #[arg(long, default_value_t = 2.0, value_parser = phenoflow_schemas::parse_non_negative::<f32>)]
    pub smoothing_sigma: f32,

    /// Tile size of the background estimate (pixels, larger than a nucleus); 0 disables it.
    #[arg(long, default_value_t = 64)]
    pub background_block: usize,

    /// Multiplies Otsu's threshold (above 1: stricter).
    #[arg(long, default_value_t = 1.0, value_parser = phenoflow_schemas::parse_positive::<f32>)]
    pub threshold_scale: f32,

    /// Smoothing used to find one intensity peak per nucleus when splitting touching nuclei.
    #[arg(long, default_value_t = 4.0, value_parser = phenoflow_schemas::parse_non_negative::<f32>)]
    pub declump_sigma: f32,

    /// Minimum distance between two nucleus centres (pixels).
    #[arg(long, default_value_t = 8)]
    pub min_distance: usize,

    /// Smallest nucleus kept (pixels).
    #[arg(long, default_value_t = 80)]
    pub min_area: usize,

    /// Largest nucleus kept (pixels; 0: no limit).
    #[arg(long, default_value_t = 0)]
    pub max_area: usize,

    #[command(flatten)]
    pub common: CommonArgs,
}

#[derive(Debug, Args)]
pub struct SinglecellArgs {
    /// Folder holding `metadata.csv` and `singh_cp_pipeline_singlecell_images/`.
    #[arg(long)]
    pub root: PathBuf,

    /// Metadata table [default: <root>/metadata.csv].
    #[arg(long)]
    pub metadata: Option<PathBuf>,

    /// Folder of per-field sub-folders of `.npy` files
    /// [default: <root>/singh_cp_pipeline_singlecell_images].
    #[arg(long)]
    pub images_dir: Option<PathBuf>,

    /// Keep only these plates (repeat or comma-separate).
    #[arg(long = "plate", value_delimiter = ',')]
    pub plates: Vec<String>,

    /// Keep only shard I of N: the plates whose position in the sorted plate list is I modulo N.
    #[arg(long, value_name = "I/N", value_parser = phenoflow_schemas::parse_shard)]
    pub shard: Option<(usize, usize)>,

    #[command(flatten)]
    pub common: CommonArgs,
}

impl SinglecellArgs {
    /// `--metadata`, or `<root>/metadata.csv`.
    pub fn metadata_path(&self) -> PathBuf {
        self.metadata
            .clone()
            .unwrap_or_else(|| self.root.join("metadata.csv"))
    }
}

#[derive(Debug, Args)]
pub struct WholeArgs {
    #[command(flatten)]
    pub table: ImageTableArgs,

    /// MoA table joined on compound and concentration (optional for whole images).
    #[arg(long)]
    pub moa_csv: Option<PathBuf>,

    /// Output size N (the field is resized to N×N by area averaging; 1 to 4096).
    #[arg(long, default_value_t = 128, value_parser = clap::value_parser!(u16).range(1..=MAX_WHOLE_SIZE))]
    pub size: u16,

    /// Average the channels into one grey channel (the CPJUMP1 seed's input).
    #[arg(long)]
    pub grey: bool,

    #[command(flatten)]
    pub common: CommonArgs,
}
