//! Feature selection as pycytominer's `feature_select` does it, for the classical CellProfiler
//! path (thousands of correlated, partly constant, partly noisy measurements):
//!
//! - `variance-threshold`: drop features whose variance over the wells (ddof 0) is at most
//!   `--min-variance` (scikit-learn's `VarianceThreshold`, pycytominer's default 1e-6);
//! - `correlation-threshold`: for every pair of features whose Pearson correlation over the wells
//!   exceeds `--corr-threshold` (0.9; signed, as pycytominer compares it), drop the one whose
//!   summed absolute correlation with all features is larger (pycytominer's
//!   `determine_high_cor_pair`, all pairs at once); ties in that sum (perfectly correlated
//!   features, equal to 1e-9) are broken by the feature's position, where pandas leaves them to
//!   rounding noise and an unstable sort;
//! - `drop-na-columns`: drop features missing in more than `--na-cutoff` (0.05) of the cells; the
//!   rest keep their missing values out of the well aggregate (pycytominer's `median` skips
//!   them). Without it a missing cell measurement is an error. It runs on the cells, before
//!   aggregation, whatever its place in the list: wells never hold missing values here;
//! - `blocklist`: drop the features of a blocklist (pycytominer's default list of known-noisy
//!   CellProfiler features, or `--blocklist FILE`).
//!
//! The well-level operations run in the order given, each on the features the previous left
//! (as pycytominer does), on the normalised wells; the treatments are built from what is kept.

use std::path::Path;

use crate::args::Selection;
use crate::input_error;

/// pycytominer's default blocklist, shipped with the stage.
const DEFAULT_BLOCKLIST: &str = include_str!("blocklist.txt");

/// The feature names of a blocklist file: one per line, or a CSV whose `blocklist` column holds
/// them (pycytominer's former format); `#` comments and blank lines skipped.
pub fn read_blocklist(path: Option<&Path>) -> anyhow::Result<Vec<String>> {
    let text = match path {
        None => DEFAULT_BLOCKLIST.to_string(),
        Some(path) => {
            crate::input::check_input_file(path)?;
            let bytes = std::fs::read(path)
                .map_err(|error| anyhow::Error::new(error).context(path.display().to_string()))?;
            String::from_utf8(bytes)
                .map_err(|_| input_error(format!("{}: not UTF-8 text", path.display())))?
        }
    };
    let mut names: Vec<String> = text
        .lines()
        .map(|line| line.trim().trim_matches('"').to_string())
        .filter(|line| !line.is_empty() && !line.starts_with('#'))
        .collect();
    if names.first().is_some_and(|first| first == "blocklist") {
        names.remove(0);
    }
    Ok(names)
}

/// The features one well-level operation drops, from `names` (the features still kept) over
/// `rows` (one vector per well, aligned with `names`).
pub fn excluded(
    selection: Selection,
    names: &[String],
    rows: &[Vec<f64>],
    min_variance: f64,
    corr_threshold: f64,
    blocklist: &[String],
) -> Vec<usize> {
    let n = rows.len();
    let column = |j: usize| rows.iter().map(move |row| row[j]);
    match selection {
        Selection::VarianceThreshold => (0..names.len())
            .filter(|&j| {
                let mean = column(j).sum::<f64>() / n as f64;
                let variance = column(j).map(|x| (x - mean) * (x - mean)).sum::<f64>() / n as f64;
                variance <= min_variance
            })
            .collect(),
        Selection::CorrelationThreshold => correlated(names.len(), rows, corr_threshold),
        Selection::Blocklist => (0..names.len())
            .filter(|&j| blocklist.contains(&names[j]))
            .collect(),
        Selection::DropNaColumns => Vec::new(),
    }
}

/// pycytominer's `correlation_threshold`: Pearson correlations of all feature pairs over the
/// wells (NaN for a constant feature, which then takes part in no pair); of each pair above the
/// threshold, the feature with the larger summed absolute correlation is dropped.
fn correlated(n_features: usize, rows: &[Vec<f64>], threshold: f64) -> Vec<usize> {
    let n = rows.len();
    // Standardised columns, contiguous: z_j = (x_j − mean) / ‖x_j − mean‖, so corr = z_i · z_j.
    let columns: Vec<Option<Vec<f64>>> = (0..n_features)
        .map(|j| {
            let mean = rows.iter().map(|row| row[j]).sum::<f64>() / n as f64;
            let centred: Vec<f64> = rows.iter().map(|row| row[j] - mean).collect();
            let norm = centred.iter().map(|x| x * x).sum::<f64>().sqrt();
            (norm > 0.0).then(|| centred.into_iter().map(|x| x / norm).collect())
        })
        .collect();
    let dot = |a: &[f64], b: &[f64]| a.iter().zip(b).map(|(x, y)| x * y).sum::<f64>();
    // Row i of the lower triangle (j < i), computed on both cores.
    let lower = |i: usize| -> Vec<f64> {
        (0..i)
            .map(|j| match (&columns[i], &columns[j]) {
                (Some(a), Some(b)) => dot(a, b).clamp(-1.0, 1.0),
                _ => f64::NAN,
            })
            .collect()
    };
    let threads = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .min(8);
    let triangle: Vec<Vec<f64>> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                let lower = &lower;
                scope.spawn(move || {
                    (0..n_features)
                        .filter(|i| i % threads == t)
                        .map(|i| (i, lower(i)))
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        let mut rows: Vec<Vec<f64>> = vec![Vec::new(); n_features];
        for handle in handles {
            for (i, row) in handle.join().expect("correlation thread") {
                rows[i] = row;
            }
        }
        rows
    });
    // Summed absolute correlation of each feature with every feature, itself included (1).
    let mut sums: Vec<f64> = (0..n_features)
        .map(|j| if columns[j].is_some() { 1.0 } else { 0.0 })
        .collect();
    for (i, row) in triangle.iter().enumerate() {
        for (j, &value) in row.iter().enumerate() {
            if !value.is_nan() {
                sums[i] += value.abs();
                sums[j] += value.abs();
            }
        }
    }
    // Perfectly correlated features (CellProfiler measures some things twice: a cell's and its
    // cytoplasm's minimum intensity) have equal sums up to rounding; pandas orders those by the
    // rounding noise of numpy's products and an unstable sort. Here sums equal to 1e-9 tie, and
    // ties go by position: the later feature is dropped.
    let key = |j: usize| (sums[j] * 1e9).round() as i64;
    let mut order: Vec<usize> = (0..n_features).collect();
    order.sort_by(|&a, &b| key(a).cmp(&key(b)).then(a.cmp(&b)));
    let mut rank = vec![0usize; n_features];
    for (position, &feature) in order.iter().enumerate() {
        rank[feature] = position;
    }
    let mut dropped = vec![false; n_features];
    for (i, row) in triangle.iter().enumerate() {
        for (j, &value) in row.iter().enumerate() {
            if value > threshold {
                dropped[if rank[i] > rank[j] { i } else { j }] = true;
            }
        }
    }
    (0..n_features).filter(|&j| dropped[j]).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(n: usize) -> Vec<String> {
        (0..n).map(|j| format!("Cells_f{j}")).collect()
    }

    #[test]
    fn constant_and_near_constant_features_fall_under_the_variance_threshold() {
        let rows = vec![
            vec![1.0, 1.0, 0.0],
            vec![1.0, 1.0005, 1.0],
            vec![1.0, 1.0, 2.0],
        ];
        let dropped = excluded(
            Selection::VarianceThreshold,
            &names(3),
            &rows,
            1e-6,
            0.9,
            &[],
        );
        assert_eq!(dropped, vec![0, 1]);
    }

    #[test]
    fn of_two_correlated_features_the_more_correlated_overall_goes() {
        // f0 and f1 move together; f2 correlates with f0 more than with f1, so f0 has the larger
        // summed absolute correlation (2.83 against 2.77) and is the one dropped, as pycytominer's
        // correlation_threshold drops it on this table.
        let rows = vec![
            vec![1.0, 1.1, 0.0],
            vec![2.0, 2.0, 1.0],
            vec![3.0, 3.2, 0.5],
            vec![4.0, 3.9, 2.0],
        ];
        let dropped = excluded(
            Selection::CorrelationThreshold,
            &names(3),
            &rows,
            1e-6,
            0.9,
            &[],
        );
        assert_eq!(dropped, vec![0]);
        // A constant feature correlates with nothing (NaN) and is kept by this operation.
        let rows: Vec<Vec<f64>> = rows.iter().map(|r| vec![r[0], 5.0]).collect();
        assert!(excluded(
            Selection::CorrelationThreshold,
            &names(2),
            &rows,
            1e-6,
            0.9,
            &[]
        )
        .is_empty());
    }

    #[test]
    fn the_default_blocklist_is_pycytominers() {
        let list = read_blocklist(None).unwrap();
        assert_eq!(list.len(), 55);
        assert!(list.contains(&"Nuclei_Granularity_16_RNA".to_string()));
        assert!(list.iter().all(|name| !name.starts_with('#')));
    }
}
