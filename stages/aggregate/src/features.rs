//! Feature selection as pycytominer's `feature_select` does it on the well table: columns with
//! too many missing values dropped, a blocklist, then the `select.rs` operations.

use std::collections::BTreeMap;

use anyhow::Context;
use polars::prelude::{col, len, DataType as PlDataType, Engine, Expr, LazyFrame};

use crate::args::Cli;
use crate::args::Selection;
use crate::input_error;
use crate::select;
use crate::wells::Wells;

/// What `drop-na-columns` did on the cells.
#[derive(Debug, Default)]
pub(crate) struct MissingReport {
    dropped: usize,
    /// Kept features that still miss values in some cells (skipped by the well aggregate).
    kept_with_missing: usize,
}

/// 1 where a feature value is missing (null, or NaN as pandas counts it), else 0.
pub(crate) fn missing_values(name: &str) -> Expr {
    let value = col(name).cast(PlDataType::Float64);
    value
        .clone()
        .is_null()
        .or(value.is_nan().fill_null(polars::prelude::lit(false)))
        .cast(PlDataType::UInt32)
}

/// pycytominer's `drop_na_columns` on the cells: features missing in more than `cutoff` of the
/// rows are dropped; the others may keep missing values, which the well aggregate skips.
pub(crate) fn drop_na_columns(
    frame: &LazyFrame,
    features: Vec<String>,
    cutoff: f64,
) -> anyhow::Result<(Vec<String>, MissingReport)> {
    // Missing is null or NaN, as pandas' isna (pycytominer's get_na_columns) counts it.
    let mut exprs: Vec<Expr> = features
        .iter()
        .map(|name| {
            missing_values(name)
                .sum()
                .cast(PlDataType::UInt64)
                .alias(name.as_str())
        })
        .collect();
    exprs.push(len().alias("__rows__"));
    let counts = frame
        .clone()
        .select(exprs)
        .collect_with_engine(Engine::Streaming)
        .map(|result| result.unwrap_single())
        .context("counting missing values")?;
    let count = |name: &str| -> anyhow::Result<u64> {
        Ok(counts
            .column(name)?
            .cast(&PlDataType::UInt64)?
            .u64()?
            .get(0)
            .unwrap_or(0))
    };
    let rows = count("__rows__")?.max(1);
    let mut kept = Vec::with_capacity(features.len());
    let mut report = MissingReport::default();
    for name in features {
        let missing = count(&name)?;
        if missing as f64 / rows as f64 > cutoff {
            report.dropped += 1;
        } else {
            if missing > 0 {
                report.kept_with_missing += 1;
            }
            kept.push(name);
        }
    }
    if kept.is_empty() {
        return Err(input_error(format!(
            "drop-na-columns: every feature is missing in more than {cutoff} of the cells"
        )));
    }
    Ok((kept, report))
}

/// The feature names `--feature-select blocklist` drops (none without that operation), read
/// before any cell is: a missing file or a `--blocklist` without its operation is reported at once.
pub(crate) fn read_blocklist(cli: &Cli) -> anyhow::Result<Vec<String>> {
    if !cli.feature_select.contains(&Selection::Blocklist) {
        if cli.blocklist.is_some() {
            return Err(input_error(
                "--blocklist is given but `blocklist` is not among --feature-select's operations"
                    .into(),
            ));
        }
        return Ok(Vec::new());
    }
    select::read_blocklist(cli.blocklist.as_deref())
}

/// The well-level operations of `--feature-select`, in order, on the normalised wells; returns
/// how many features each dropped.
pub(crate) fn select_features(
    wells: &mut Wells,
    cli: &Cli,
    missing: &MissingReport,
    blocklist: &[String],
) -> anyhow::Result<BTreeMap<&'static str, usize>> {
    let mut dropped = BTreeMap::new();
    if cli.feature_select.is_empty() {
        return Ok(dropped);
    }
    let before = wells.feature_names.len() + missing.dropped;
    for &operation in &cli.feature_select {
        if operation == Selection::DropNaColumns {
            dropped.insert(operation.as_str(), missing.dropped);
            continue;
        }
        let excluded = select::excluded(
            operation,
            &wells.feature_names,
            &wells.features,
            cli.min_variance,
            cli.corr_threshold,
            blocklist,
        );
        *dropped.entry(operation.as_str()).or_insert(0) += excluded.len();
        if excluded.len() == wells.feature_names.len() {
            return Err(input_error(format!(
                "--feature-select: {} would drop every one of the {} features left",
                operation.as_str(),
                wells.feature_names.len()
            )));
        }
        wells.remove_features(&excluded);
    }
    eprintln!(
        "pf-aggregate: feature selection kept {} of {} features ({}){}",
        wells.feature_names.len(),
        before,
        cli.feature_select
            .iter()
            .map(|operation| format!(
                "{} dropped {}",
                operation.as_str(),
                dropped.get(operation.as_str()).copied().unwrap_or(0)
            ))
            .collect::<Vec<_>>()
            .join(", "),
        if missing.kept_with_missing > 0 {
            format!(
                "; {} kept features miss values in some cells, which the well aggregate skips",
                missing.kept_with_missing
            )
        } else {
            String::new()
        }
    );
    Ok(dropped)
}
