//! `pf-classify summarize`: the metrics of replicate runs (the same pipeline trained with
//! different seeds) as one `metrics_summary` table: for every (metric, protocol, scope) the mean,
//! the sample standard deviation (n − 1; null for one replicate), the range and how many
//! replicates have it. A seed paper's table compares configurations that differ by less than
//! their run-to-run spread; this is the number that says so.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use phenoflow_schemas::metrics::{read_metrics, write_metrics_summary, MetricSummary};
use phenoflow_schemas::{hash_file, InputError, Provenance, TableKind};

use crate::args::SummarizeArgs;

/// (metric, protocol, scope) → (values, counts) in replicate order.
type Collected = BTreeMap<(String, String, String), (Vec<f64>, Vec<Option<i64>>)>;

/// Reads each replicate's `metrics` table; a (metric, protocol, scope) listed twice in one file
/// is an error naming the file and the row.
pub fn collect(paths: &[PathBuf]) -> anyhow::Result<Collected> {
    let mut collected: Collected = BTreeMap::new();
    for path in paths {
        let mut seen: BTreeSet<(String, String, String)> = BTreeSet::new();
        for (row, (metric, protocol, scope, value, count)) in
            read_metrics(path)?.into_iter().enumerate()
        {
            let key = (metric, protocol, scope);
            if !seen.insert(key.clone()) {
                return Err(InputError(format!(
                    "{}: row {row}: ({}, {}, {}) appears twice",
                    path.display(),
                    key.0,
                    key.1,
                    key.2
                ))
                .into());
            }
            // A metric a replicate lacks (an MoA with no scorable query) is not padded: its
            // summary counts the replicates that have it.
            let entry = collected.entry(key).or_default();
            entry.0.push(value);
            entry.1.push(count);
        }
    }
    Ok(collected)
}

/// Mean, sample standard deviation, range and common count of each collected metric.
pub fn summarize(collected: &Collected) -> Vec<MetricSummary> {
    collected
        .iter()
        .map(|((metric, protocol, scope), (values, counts))| {
            let n = values.len();
            let mean = values.iter().sum::<f64>() / n as f64;
            let sd = (n > 1).then(|| {
                (values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (n - 1) as f64).sqrt()
            });
            let count = counts
                .first()
                .copied()
                .flatten()
                .filter(|first| counts.iter().all(|count| *count == Some(*first)));
            MetricSummary {
                metric: metric.clone(),
                protocol: protocol.clone(),
                scope: scope.clone(),
                mean,
                sd,
                min: values.iter().copied().fold(f64::INFINITY, f64::min),
                max: values.iter().copied().fold(f64::NEG_INFINITY, f64::max),
                replicates: n as i64,
                count,
            }
        })
        .collect()
}

/// One line per accuracy of the summary: `NSC  83.1 ± 2.3 % (3 replicates; 80.9–85.4)`.
pub fn accuracy_lines(rows: &[MetricSummary]) -> Vec<String> {
    rows.iter()
        .filter(|row| row.metric == "accuracy" && row.scope == "all")
        .map(|row| {
            let sd = row
                .sd
                .map_or("n/a".to_string(), |sd| format!("{:.1}", 100.0 * sd));
            format!(
                "  {:<9} accuracy {:.1} ± {sd} % ({} replicates; {:.1}–{:.1})",
                row.protocol,
                100.0 * row.mean,
                row.replicates,
                100.0 * row.min,
                100.0 * row.max
            )
        })
        .collect()
}

/// Runs `pf-classify summarize`.
pub fn run(args: &SummarizeArgs) -> anyhow::Result<()> {
    let inputs: Vec<&Path> = args.metrics.iter().map(PathBuf::as_path).collect();
    phenoflow_schemas::check_outputs_are_not_inputs(&[("--output", &args.output)], &inputs)?;
    for (index, path) in args.metrics.iter().enumerate() {
        if args.metrics[..index].contains(path) {
            return Err(InputError(format!(
                "--metrics {}: given twice; each replicate's metrics once",
                path.display()
            ))
            .into());
        }
    }
    let rows = summarize(&collect(&args.metrics)?);
    let mut provenance = Provenance::new(
        TableKind::MetricsSummary,
        "pf-classify",
        env!("CARGO_PKG_VERSION"),
        serde_json::json!({ "summary": "mean, sample sd (n-1), min, max over replicates" }),
    );
    for path in &args.metrics {
        provenance
            .inputs
            .insert(path.display().to_string(), hash_file(path)?);
    }
    write_metrics_summary(&args.output, &rows, &provenance)?;
    println!(
        "pf-classify summarize: {} replicates → {}",
        args.metrics.len(),
        args.output.display()
    );
    for line in accuracy_lines(&rows) {
        println!("{line}");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// (protocol, values, counts) of an accuracy across replicates.
    type Accuracy<'a> = (&'a str, &'a [f64], &'a [Option<i64>]);

    fn collected(values: &[Accuracy<'_>]) -> Collected {
        values
            .iter()
            .map(|(protocol, values, counts)| {
                (
                    ("accuracy".into(), protocol.to_string(), "all".into()),
                    (values.to_vec(), counts.to_vec()),
                )
            })
            .collect()
    }

    #[test]
    fn mean_and_sample_standard_deviation() {
        let rows = summarize(&collected(&[(
            "NSC",
            &[0.8, 0.9, 0.7],
            &[Some(103), Some(103), Some(103)],
        )]));
        assert_eq!(rows.len(), 1);
        assert!((rows[0].mean - 0.8).abs() < 1e-12);
        assert!((rows[0].sd.unwrap() - 0.1).abs() < 1e-12);
        assert_eq!((rows[0].min, rows[0].max), (0.7, 0.9));
        assert_eq!(rows[0].replicates, 3);
        assert_eq!(rows[0].count, Some(103));
    }

    #[test]
    fn one_replicate_has_no_spread_and_differing_counts_no_count() {
        let rows = summarize(&collected(&[
            ("NSC", &[0.5], &[Some(10)]),
            ("NSCB", &[0.4, 0.6], &[Some(9), Some(8)]),
        ]));
        assert_eq!(rows[0].sd, None);
        assert_eq!(rows[1].count, None);
        assert!(accuracy_lines(&rows)[0].contains("50.0 ± n/a %"));
        assert!(accuracy_lines(&rows)[1].contains("50.0 ± 14.1 %"));
    }
}
