//! `pf-baseline`: the second seed's classical classifiers — a random forest and an RBF-kernel SVM
//! (smartcore) — on flattened, standardised pixels of a `cells` table or on the features of an
//! `embeddings` table, trained and scored on exactly the split `pf-train classifier`
//! uses (`phenoflow_evaluation::classification`), writing the same `metrics` and
//! `class_predictions` tables.

pub mod args;

mod classifiers;
mod features;

use std::time::Instant;

use anyhow::Context;
use phenoflow_evaluation::classification::{score_and_write, Annotations, CLASSIFIER_KEY};

pub use crate::args::{ClassifierArg, Cli};
use crate::classifiers::{random_forest, svm};
use crate::features::{input_kind, read_features, standardise};
use phenoflow_schemas::{InputError, Provenance, TableKind};

pub(crate) const FOREST_STREAM: u64 = 3 << 32;

/// The thread pool, and the classifiers' settings in range.
fn check_settings(cli: &Cli) -> anyhow::Result<()> {
    cli.threads.install()?;
    if cli.trees == 0 {
        return Err(InputError("--trees must be at least 1".into()).into());
    }
    if !(cli.c > 0.0 && cli.c.is_finite()) {
        return Err(InputError(format!("--c must be positive, got {}", cli.c)).into());
    }
    if let Some(gamma) = cli.gamma.filter(|g| !(*g > 0.0 && g.is_finite())) {
        return Err(InputError(format!("--gamma must be positive, got {gamma}")).into());
    }
    Ok(())
}

/// What changes the outputs, recorded as their provenance params.
#[derive(Debug, serde::Serialize)]
struct Params<'a> {
    classifier: &'static str,
    label: &'a str,
    hold_out: &'static str,
    test_fraction: f64,
    trees: u16,
    max_features: Option<usize>,
    max_depth: Option<u16>,
    c: f64,
    gamma: Option<f64>,
    /// Features are standardised on the training rows.
    standardised: bool,
}

/// The provenance of both tables: the params, the inputs' hashes, the seed, the classifier.
pub(crate) fn provenance(cli: &Cli) -> anyhow::Result<Provenance> {
    let params = Params {
        classifier: cli.classifier.name(),
        label: &cli.split.label,
        hold_out: cli.split.hold_out.name(),
        test_fraction: cli.split.test_fraction,
        trees: cli.trees,
        max_features: cli.max_features,
        max_depth: cli.max_depth,
        c: cli.c,
        gamma: cli.gamma,
        standardised: true,
    };
    let inputs: Vec<&std::path::Path> = cli.input.iter().map(|path| path.as_path()).collect();
    let mut provenance = phenoflow_kit::provenance(
        TableKind::Metrics,
        "pf-baseline",
        env!("CARGO_PKG_VERSION"),
        &params,
        &inputs,
    )?;
    provenance.seed = Some(cli.seed);
    provenance
        .extra
        .insert(CLASSIFIER_KEY.into(), cli.classifier.name().into());
    provenance
        .extra
        .insert("label_column".into(), cli.split.label.clone());
    Ok(provenance)
}

pub fn run(cli: Cli) -> anyhow::Result<()> {
    check_settings(&cli)?;
    let started = Instant::now();
    // The labels first: a wrong --label fails before the pixels are read.
    let kind = input_kind(&cli.input)?;
    let annotations = Annotations::read(&cli.input, kind, &cli.split.label)?;
    let features = read_features(&cli.input, kind)?;
    if annotations.len() != features.n_rows || features.n_rows == 0 {
        return Err(InputError(format!(
            "{}: {} label rows for {} feature rows",
            cli.input[0].display(),
            annotations.len(),
            features.n_rows
        ))
        .into());
    }
    let hold_out = cli.split.hold_out;
    let split = annotations.split(hold_out, cli.split.test_fraction, cli.seed)?;
    let (train_x, test_x) = standardise(&features, &split.train, &split.test);
    let train_y: Vec<u32> = split.train.iter().map(|&r| annotations.labels[r]).collect();
    eprintln!(
        "pf-baseline: {} on {} rows × {} {} ({} train, {} test held out {}), {} classes of `{}`",
        cli.classifier.name(),
        features.n_rows,
        features.n_features,
        if features.kind == TableKind::Cells {
            "pixels"
        } else {
            "features"
        },
        split.train.len(),
        split.test.len(),
        hold_out.name(),
        annotations.classes.len(),
        cli.split.label
    );
    let n_classes = annotations.classes.len();
    let predicted = match cli.classifier {
        ClassifierArg::RandomForest => random_forest(&train_x, &train_y, &test_x, n_classes, &cli)?,
        ClassifierArg::Svm => svm(&train_x, &train_y, &test_x, n_classes, &cli)?,
    };

    let provenance = provenance(&cli)?;
    std::fs::create_dir_all(&cli.output)
        .with_context(|| format!("creating {}", cli.output.display()))?;
    let scores = score_and_write(
        &cli.output,
        &annotations,
        &split,
        hold_out,
        &predicted.classes,
        &predicted.confidence,
        &provenance,
    )?;
    println!(
        "{}; wrote {} in {:.1} s",
        scores.summary(cli.classifier.name()),
        cli.output.display(),
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::classifiers::isometric_coordinates;
    use crate::features::Features;

    #[test]
    fn standardising_uses_the_training_rows_only() {
        let features = Features {
            n_rows: 4,
            n_features: 2,
            values: vec![1.0, 5.0, 3.0, 5.0, 100.0, 5.0, -7.0, 9.0],
            kind: TableKind::Embeddings,
        };
        let (train, test) = standardise(&features, &[0, 1], &[2, 3]);
        assert_eq!(train, vec![vec![-1.0, 0.0], vec![1.0, 0.0]]);
        assert_eq!(test, vec![vec![98.0, 0.0], vec![-9.0, 4.0]]);
    }

    #[test]
    fn isometric_coordinates_keep_every_distance_to_the_training_rows() {
        // 4 training rows in 50 dimensions, 3 test rows: far more features than rows.
        let row = |seed: usize| -> Vec<f64> {
            (0..50)
                .map(|j| (((seed * 37 + j * 11) % 17) as f64) - 8.0)
                .collect()
        };
        let train: Vec<Vec<f64>> = (0..4).map(row).collect();
        let test: Vec<Vec<f64>> = (10..13).map(row).collect();
        let refs: Vec<&[f64]> = train.iter().map(Vec::as_slice).collect();
        let (train_c, test_c) = isometric_coordinates(&refs, &test);
        assert!(train_c[0].len() <= train.len());
        let distance =
            |a: &[f64], b: &[f64]| a.iter().zip(b).map(|(x, y)| (x - y).powi(2)).sum::<f64>();
        for (i, a) in train.iter().enumerate() {
            for (j, b) in train.iter().enumerate() {
                assert!((distance(a, b) - distance(&train_c[i], &train_c[j])).abs() < 1e-6);
            }
            for (j, t) in test.iter().enumerate() {
                assert!((distance(a, t) - distance(&train_c[i], &test_c[j])).abs() < 1e-6);
            }
        }
    }
}
