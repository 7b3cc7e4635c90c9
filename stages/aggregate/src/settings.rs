//! What pf-aggregate records of a run: the parameters that change its output ([`Params`], from
//! the command line) and what the run found on the way ([`Found`]: the columns it read, the
//! positive controls it set aside, the normalisation's fitted values, the features it dropped),
//! serialised together as the tables' provenance params.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::args::Selection;
use crate::args::{Aggregation, Cli, PositiveControls};
use crate::normalize::{Normalization, TvnRegularization};

/// The settings that change the output tables.
#[derive(Debug, Clone, Serialize)]
pub struct Params {
    pub level: &'static str,
    pub cell_aggregation: Aggregation,
    pub well_aggregation: Aggregation,
    pub normalize: Normalization,
    pub control: String,
    pub tvn_regularization: TvnRegularization,
    pub tvn_ridge: f64,
    pub coral: bool,
    pub coral_lambda: f64,
    pub positive_controls: PositiveControls,
    pub feature_prefix: Vec<String>,
    pub feature_select: Vec<Selection>,
    pub min_variance: f64,
    pub corr_threshold: f64,
    pub na_cutoff: f64,
    pub blocklist: Option<String>,
}

impl Params {
    pub fn of(cli: &Cli) -> Self {
        Self {
            level: cli.level.as_str(),
            cell_aggregation: cli.cell_aggregation,
            well_aggregation: cli.well_aggregation,
            normalize: cli.normalize,
            control: cli.control.clone(),
            tvn_regularization: cli.tvn_regularization,
            tvn_ridge: cli.tvn_ridge,
            coral: cli.coral,
            coral_lambda: cli.coral_lambda,
            positive_controls: cli.positive_controls,
            feature_prefix: cli.feature_prefix.clone(),
            feature_select: cli.feature_select.clone(),
            min_variance: cli.min_variance,
            corr_threshold: cli.corr_threshold,
            na_cutoff: cli.na_cutoff,
            blocklist: cli
                .blocklist
                .as_ref()
                .map(|path| path.display().to_string()),
        }
    }
}

/// What the run found, recorded beside the parameters.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Found {
    /// The input columns of plate, well, compound, concentration, MoA and batch.
    pub columns: Vec<Option<String>>,
    pub platemap_columns: Option<String>,
    /// Who aggregated the cells: `arrow-rs` (Parquet read straight into running sums) or
    /// `polars` (its group-by); none for `--level wells`.
    pub cell_engine: Option<&'static str>,
    /// Positive-control wells left out (0 when they are kept).
    pub positive_control_wells: usize,
    pub positive_control_treatments: Vec<String>,
    pub tvn_shrinkage: Option<f64>,
    pub tvn_epsilon: Option<f64>,
    pub floored_plates: Vec<String>,
    /// Features each `--feature-select` operation dropped.
    pub features_dropped: BTreeMap<&'static str, usize>,
}

/// The provenance params of the output tables: the parameters and what was found, one object.
pub fn provenance_params(params: &Params, found: &Found) -> serde_json::Value {
    #[derive(Serialize)]
    struct Recorded<'a> {
        #[serde(flatten)]
        params: &'a Params,
        #[serde(flatten)]
        found: &'a Found,
    }
    serde_json::to_value(Recorded { params, found }).expect("settings serialise to JSON")
}
