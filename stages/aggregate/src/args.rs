//! Command-line interface of `pf-aggregate` (clap derive; the doc comments are the help).

use std::path::PathBuf;

use clap::{Parser, ValueEnum};

use crate::normalize::{Normalization, TvnRegularization};

#[derive(Debug, Parser)]
#[command(
    name = "pf-aggregate",
    version,
    about = "Aggregate single-cell profiles into well and treatment profiles",
    long_about = "Aggregate single-cell profiles (an `embeddings` table, or any Parquet/CSV table with Metadata_* keys \
                  and numeric features) into well profiles (plate + well; mean by default), optionally normalise them \
                  against control wells, and aggregate those into treatment profiles (compound + concentration; \
                  median by default). Several inputs (per-plate shards) are concatenated first.",
    after_long_help = "Examples:\n  \
        pf-aggregate --input out/embeddings.parquet \\\n      \
            --wells out/wells.parquet --treatments out/treatments.parquet\n  \
        pf-aggregate --input out/embeddings-Week1_22123.parquet \\\n      \
            --input out/embeddings-Week1_22141.parquet --normalize dmso-zscore \\\n      \
            --wells out/wells.parquet --treatments out/treatments.parquet\n  \
        pf-aggregate --level wells --input per_well_profiles.csv \\\n      \
            --plate-column Image_Metadata_Plate --well-column Image_Metadata_Well \\\n      \
            --compound-column Image_Metadata_Compound \\\n      \
            --concentration-column Image_Metadata_Concentration --moa-csv BBBC021_v1_moa.csv \\\n      \
            --wells out/wells.parquet --treatments out/treatments.parquet\n  \
        pf-aggregate --level wells --input per_well_keys_only.csv \\\n      \
            --plate-column Image_Metadata_Plate_DAPI --well-column Image_Metadata_Well_DAPI \\\n      \
            --platemap BBBC021_v1_image.csv --moa-csv BBBC021_v1_moa.csv \\\n      \
            --wells out/wells.parquet --treatments out/treatments.parquet"
)]
pub struct Cli {
    /// Input tables (Parquet or CSV); repeat for per-plate shards.
    #[arg(long, required = true)]
    pub input: Vec<PathBuf>,

    /// Where to write the `wells` table.
    #[arg(long)]
    pub wells: PathBuf,

    /// Where to write the `treatments` table.
    #[arg(long)]
    pub treatments: PathBuf,

    /// What one input row is: a cell (aggregated to wells) or already a well.
    #[arg(long, value_enum, default_value_t = InputLevel::Cells)]
    pub level: InputLevel,

    /// Cells → wells.
    #[arg(long, value_enum, default_value_t = Aggregation::Mean)]
    pub cell_aggregation: Aggregation,

    /// Wells → treatments.
    #[arg(long, value_enum, default_value_t = Aggregation::Median)]
    pub well_aggregation: Aggregation,

    /// Well-level normalisation against the control wells, before treatment aggregation.
    #[arg(long, value_enum, default_value_t = Normalization::None)]
    pub normalize: Normalization,

    /// The control compound.
    #[arg(long, default_value = "DMSO")]
    pub control: String,

    /// Positive-control wells (a treatment at the same well positions on every plate, as taxol
    /// at 0.3 µM on BBBC021): `drop` leaves them out of both tables, as the published per-well
    /// BBBC021 profiles do (the treatment keeps its other wells); `keep` treats them as treatment
    /// wells.
    #[arg(long, value_enum, default_value_t = PositiveControls::Drop)]
    pub positive_controls: PositiveControls,

    /// How TVN regularises the controls' covariance: Ledoit–Wolf shrinkage towards the mean
    /// eigenvalue (scikit-learn's coefficient), or a ridge of --tvn-ridge × the mean eigenvalue.
    #[arg(long, value_enum, default_value_t = TvnRegularization::LedoitWolf)]
    pub tvn_regularization: TvnRegularization,

    /// TVN ridge for `--tvn-regularization ridge`, relative to the mean eigenvalue of the
    /// controls' covariance.
    #[arg(long, default_value_t = 0.01, value_parser = phenoflow_schemas::parse_non_negative::<f64>)]
    pub tvn_ridge: f64,

    /// After the normalisation, align each batch's control covariance to that of all control
    /// wells (CORAL, as the DeepProfiler BBBC021 evaluation does after TVN).
    #[arg(long)]
    pub coral: bool,

    /// CORAL's regulariser λ (added to both covariances as λ·I; 1 in the CORAL paper).
    #[arg(long, default_value_t = 1.0, value_parser = phenoflow_schemas::parse_non_negative::<f64>)]
    pub coral_lambda: f64,

    /// Feature columns are the numeric columns starting with one of these prefixes
    /// (pycytominer's compartments by default).
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "Cells_,Nuclei_,Cytoplasm_"
    )]
    pub feature_prefix: Vec<String>,

    /// MoA table (`compound,concentration,moa`, as BBBC021_v1_moa.csv) joined on compound and
    /// numeric concentration; every treatment in it must have wells.
    #[arg(long)]
    pub moa_csv: Option<PathBuf>,

    /// A plate map or image table (CSV or Parquet) naming each well's compound and
    /// concentration by plate and well (pycytominer's `annotate`), for inputs keyed by plate and
    /// well only: joined onto the wells after aggregation; every well must be in it, with one
    /// treatment. An image table's several fields per well are fine.
    #[arg(long, value_name = "CSV|PARQUET")]
    pub platemap: Option<PathBuf>,

    /// --platemap's plate column [default: the first of Metadata_Plate, Image_Metadata_Plate,
    /// Image_Metadata_Plate_DAPI, Plate].
    #[arg(long, requires = "platemap")]
    pub platemap_plate_column: Option<String>,

    /// --platemap's well column [default: the first of Metadata_Well, Metadata_well_position,
    /// Image_Metadata_Well, Image_Metadata_Well_DAPI, Well, well_position].
    #[arg(long, requires = "platemap")]
    pub platemap_well_column: Option<String>,

    /// --platemap's compound column [default: the first of Metadata_Compound,
    /// Image_Metadata_Compound, Compound].
    #[arg(long, requires = "platemap")]
    pub platemap_compound_column: Option<String>,

    /// --platemap's concentration column [default: the first of Metadata_Concentration,
    /// Image_Metadata_Concentration, Concentration].
    #[arg(long, requires = "platemap")]
    pub platemap_concentration_column: Option<String>,

    /// Allow treatments of --moa-csv without wells (a partial screen).
    #[arg(long)]
    pub allow_missing_treatments: bool,

    /// Feature selection as pycytominer's feature_select does it, comma-separated, run in this
    /// order on the normalised wells (drop-na-columns runs on the cells, before aggregation);
    /// pycytominer's defaults are
    /// `variance-threshold,correlation-threshold,drop-na-columns,blocklist`.
    #[arg(long, value_enum, value_delimiter = ',', value_name = "OPERATIONS")]
    pub feature_select: Vec<Selection>,

    /// variance-threshold: features of variance (ddof 0) at most this over the wells are dropped.
    #[arg(long, default_value_t = 1e-6, value_parser = non_negative)]
    pub min_variance: f64,

    /// correlation-threshold: one of every two features whose Pearson correlation over the wells
    /// exceeds this is dropped.
    #[arg(long, default_value_t = 0.9, value_parser = fraction)]
    pub corr_threshold: f64,

    /// drop-na-columns: features missing in more than this fraction of the cells are dropped.
    #[arg(long, default_value_t = 0.05, value_parser = fraction)]
    pub na_cutoff: f64,

    /// How many MiB of feature values one pass of the median may hold (whole plates per pass);
    /// for tests and machines short of memory.
    #[arg(long, default_value_t = 256, hide = true, value_parser = clap::value_parser!(u64).range(1..=1_048_576))]
    pub median_pass_mib: u64,

    /// Who computes the cells' well means: `auto` reads Parquet cells straight into running f64
    /// sums (arrow-rs, a row group per worker; half Polars' time and a third of its memory on
    /// 500k cells × 256) and leaves CSV, medians, drop-na-columns and unusual column types to
    /// Polars; `polars` always uses Polars' streaming group-by. The provenance records which ran
    /// (`cell_engine`). Both equal pycytominer within 1e-6; the direct sums are the more exact.
    #[arg(long, value_enum, default_value_t = CellEngine::Auto)]
    pub engine: CellEngine,

    /// blocklist: a file of feature names, one per line (or a CSV with a `blocklist` column)
    /// [default: pycytominer's list of known-noisy CellProfiler features].
    #[arg(long, value_name = "FILE")]
    pub blocklist: Option<PathBuf>,

    /// Input column holding the plate.
    #[arg(long, default_value = phenoflow_schemas::columns::PLATE)]
    pub plate_column: String,

    /// Input column holding the well.
    #[arg(long, default_value = phenoflow_schemas::columns::WELL)]
    pub well_column: String,

    /// Input column holding the compound.
    #[arg(long, default_value = phenoflow_schemas::columns::COMPOUND)]
    pub compound_column: String,

    /// Input column holding the concentration.
    #[arg(long, default_value = phenoflow_schemas::columns::CONCENTRATION)]
    pub concentration_column: String,

    /// Input column holding the MoA [default: Metadata_MoA when present].
    #[arg(long)]
    pub moa_column: Option<String>,

    /// Input column holding the batch [default: Metadata_Batch when present, else the plate
    /// name before `_`].
    #[arg(long)]
    pub batch_column: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum CellEngine {
    Auto,
    Polars,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum InputLevel {
    Cells,
    Wells,
}

impl InputLevel {
    pub fn as_str(self) -> &'static str {
        match self {
            InputLevel::Cells => "cells",
            InputLevel::Wells => "wells",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum PositiveControls {
    Drop,
    Keep,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Aggregation {
    Mean,
    Median,
}

fn fraction(text: &str) -> Result<f64, String> {
    let value: f64 = text
        .parse()
        .map_err(|_| format!("`{text}` is not a number"))?;
    if (0.0..=1.0).contains(&value) {
        Ok(value)
    } else {
        Err(format!("{value} is not between 0 and 1"))
    }
}

fn non_negative(text: &str) -> Result<f64, String> {
    let value: f64 = text
        .parse()
        .map_err(|_| format!("`{text}` is not a number"))?;
    if value.is_finite() && value >= 0.0 {
        Ok(value)
    } else {
        Err(format!("{value} is not a finite number ≥ 0"))
    }
}

/// A feature-selection operation of `--feature-select` (pycytominer's names, in snake case in the
/// provenance).
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Selection {
    /// Drop features of variance ≤ --min-variance over the wells.
    VarianceThreshold,
    /// Drop one of every pair of features correlated above --corr-threshold over the wells.
    CorrelationThreshold,
    /// Drop features missing in more than --na-cutoff of the cells (before aggregation).
    DropNaColumns,
    /// Drop the features of the blocklist (pycytominer's default, or --blocklist).
    Blocklist,
}

impl Selection {
    pub fn as_str(self) -> &'static str {
        match self {
            Selection::VarianceThreshold => "variance_threshold",
            Selection::CorrelationThreshold => "correlation_threshold",
            Selection::DropNaColumns => "drop_na_columns",
            Selection::Blocklist => "blocklist",
        }
    }
}
