//! `pf-baseline`: the second seed's classical classifiers — a random forest and an RBF-kernel SVM
//! (smartcore) — on flattened, standardised pixels of a `cells` table or on the features of an
//! `embeddings` table, trained and scored on exactly the split `pf-train classifier`
//! uses (`phenoflow_evaluation::classification`), writing the same `metrics` and
//! `class_predictions` tables.

pub mod args;

use std::path::PathBuf;
use std::time::Instant;

use anyhow::Context;
use arrow_array::cast::AsArray;
use arrow_array::types::{Float32Type, Float64Type};
use arrow_array::Array;
use arrow_schema::DataType;
use phenoflow_evaluation::classification::{score_and_write, Annotations, CLASSIFIER_KEY};
use phenoflow_evaluation::seeded::derive_seed;

pub use crate::args::{ClassifierArg, Cli};
use phenoflow_schemas::tables::METADATA_PREFIX;
use phenoflow_schemas::{
    hash_file, read_provenance, CellPixels, InputError, ParquetTableReader, Provenance, TableKind,
    PIXELS_COLUMN,
};
use rayon::prelude::*;
use smartcore::ensemble::random_forest_classifier::{
    RandomForestClassifier, RandomForestClassifierParameters,
};
use smartcore::linalg::basic::matrix::DenseMatrix;
use smartcore::svm::svc::{SVCParameters, SVC};
use smartcore::svm::Kernels;

const FOREST_STREAM: u64 = 3 << 32;

/// Row-major features of every row.
#[derive(Debug)]
pub struct Features {
    pub n_rows: usize,
    pub n_features: usize,
    pub values: Vec<f64>,
    pub kind: TableKind,
}

/// Which table the inputs hold: all `cells` (pixels) or all `embeddings` (features). Files from
/// elsewhere (no provenance) are cells when they have a pixel column.
pub fn input_kind(paths: &[PathBuf]) -> anyhow::Result<TableKind> {
    let mut kind = None;
    for path in paths {
        let this_kind = match read_provenance(path)? {
            Some(provenance) => provenance.table,
            None => {
                let schema = phenoflow_schemas::parquet_io::file_schema(path)?;
                if schema.field_with_name(PIXELS_COLUMN).is_ok() {
                    TableKind::Cells
                } else {
                    TableKind::Embeddings
                }
            }
        };
        if !matches!(this_kind, TableKind::Cells | TableKind::Embeddings) {
            return Err(InputError(format!(
                "{}: holds a `{}` table; pf-baseline reads `cells` (pixels) or `embeddings` (features)",
                path.display(),
                this_kind.name()
            ))
            .into());
        }
        if *kind.get_or_insert(this_kind) != this_kind {
            return Err(InputError(format!(
                "{}: a `{}` table among `{}` tables",
                path.display(),
                this_kind.name(),
                kind.map(TableKind::name).unwrap_or_default()
            ))
            .into());
        }
    }
    Ok(kind.unwrap_or(TableKind::Cells))
}

/// Reads pixels (`cells`) or features (`embeddings`) of every row.
pub fn read_features(paths: &[PathBuf], kind: TableKind) -> anyhow::Result<Features> {
    let mut values = Vec::new();
    let mut n_features: Option<usize> = None;
    let mut n_rows = 0;
    for path in paths {
        let reader = ParquetTableReader::open(path, kind, 4096, None)?;
        for batch in reader {
            let batch = batch?;
            let width = if kind == TableKind::Cells {
                let pixels = CellPixels::from_batch(&batch, path)?;
                for row in 0..pixels.n_cells() {
                    values.extend(pixels.cell(row).iter().map(|&v| f64::from(v)));
                }
                pixels.shape().len()
            } else {
                let columns: Vec<_> = batch
                    .schema()
                    .fields()
                    .iter()
                    .enumerate()
                    .filter(|(_, field)| !field.name().starts_with(METADATA_PREFIX))
                    .map(|(index, _)| batch.column(index).clone())
                    .collect();
                for row in 0..batch.num_rows() {
                    for column in &columns {
                        values.push(match column.data_type() {
                            DataType::Float32 => {
                                f64::from(column.as_primitive::<Float32Type>().value(row))
                            }
                            _ => column.as_primitive::<Float64Type>().value(row),
                        });
                    }
                }
                columns.len()
            };
            if *n_features.get_or_insert(width) != width {
                return Err(InputError(format!(
                    "{}: {width} features per row, the first file has {}",
                    path.display(),
                    n_features.unwrap_or(width)
                ))
                .into());
            }
            n_rows += batch.num_rows();
        }
    }
    Ok(Features {
        n_rows,
        n_features: n_features.unwrap_or(0),
        values,
        kind,
    })
}

/// Standardises every feature by the training rows' mean and standard deviation (scikit-learn's
/// StandardScaler fitted on the training split; constant features are only centred) and returns
/// the training and test matrices.
pub fn standardise(
    features: &Features,
    train: &[usize],
    test: &[usize],
) -> (Vec<Vec<f64>>, Vec<Vec<f64>>) {
    let d = features.n_features;
    let row = |r: usize| &features.values[r * d..(r + 1) * d];
    let mut mean = vec![0.0; d];
    for &r in train {
        for (m, v) in mean.iter_mut().zip(row(r)) {
            *m += v;
        }
    }
    mean.iter_mut().for_each(|m| *m /= train.len() as f64);
    let mut variance = vec![0.0; d];
    for &r in train {
        for ((s, v), m) in variance.iter_mut().zip(row(r)).zip(&mean) {
            *s += (v - m) * (v - m);
        }
    }
    let scale: Vec<f64> = variance
        .iter()
        .map(|s| {
            let sd = (s / train.len() as f64).sqrt();
            if sd > 0.0 {
                1.0 / sd
            } else {
                1.0
            }
        })
        .collect();
    let transform = |rows: &[usize]| -> Vec<Vec<f64>> {
        rows.par_iter()
            .map(|&r| {
                row(r)
                    .iter()
                    .zip(&mean)
                    .zip(&scale)
                    .map(|((v, m), s)| (v - m) * s)
                    .collect()
            })
            .collect()
    };
    (transform(train), transform(test))
}

fn matrix(rows: &[Vec<f64>]) -> anyhow::Result<DenseMatrix<f64>> {
    DenseMatrix::from_2d_vec(&rows.to_vec())
        .map_err(|error| anyhow::anyhow!("building a matrix: {error}"))
}

/// Predictions and their confidence for the test rows.
#[derive(Debug)]
pub struct Predicted {
    pub classes: Vec<u32>,
    pub confidence: Vec<f64>,
}

/// A random forest of `trees` trees grown in parallel (each a bootstrap sample and √features
/// candidates per split, smartcore's trees), predicting by majority vote; the confidence is the
/// winning share of votes.
pub fn random_forest(
    train_x: &[Vec<f64>],
    train_y: &[u32],
    test_x: &[Vec<f64>],
    n_classes: usize,
    cli: &Cli,
) -> anyhow::Result<Predicted> {
    let x = matrix(train_x)?;
    let y: Vec<i32> = train_y.iter().map(|&c| c as i32).collect();
    let test = matrix(test_x)?;
    let mtry = cli
        .max_features
        .unwrap_or_else(|| (train_x[0].len() as f64).sqrt().floor().max(1.0) as usize);
    let votes: Vec<Vec<i32>> = (0..cli.trees)
        .into_par_iter()
        .map(|tree| -> anyhow::Result<Vec<i32>> {
            let mut parameters = RandomForestClassifierParameters::default()
                .with_n_trees(1)
                .with_m(mtry)
                .with_seed(derive_seed(cli.seed, FOREST_STREAM + u64::from(tree)));
            if let Some(depth) = cli.max_depth {
                parameters = parameters.with_max_depth(depth);
            }
            let forest = RandomForestClassifier::fit(&x, &y, parameters)
                .map_err(|error| anyhow::anyhow!("growing tree {tree}: {error}"))?;
            forest
                .predict(&test)
                .map_err(|error| anyhow::anyhow!("tree {tree}: {error}"))
        })
        .collect::<anyhow::Result<_>>()?;
    let n_test = test_x.len();
    let mut classes = Vec::with_capacity(n_test);
    let mut confidence = Vec::with_capacity(n_test);
    for row in 0..n_test {
        let mut counts = vec![0usize; n_classes];
        for tree in &votes {
            counts[tree[row] as usize] += 1;
        }
        let best = argmax(&counts.iter().map(|&c| c as f64).collect::<Vec<_>>());
        classes.push(best as u32);
        confidence.push(counts[best] as f64 / votes.len() as f64);
    }
    Ok(Predicted {
        classes,
        confidence,
    })
}

/// An RBF-kernel SVM, one-vs-one as libsvm / scikit-learn's SVC: a binary smartcore SVC per
/// pair of training classes (in parallel), each test row going to the class with the most
/// pairwise wins (ties to the larger summed decision margin, then the first class); the
/// confidence is the winner's share of its k − 1 duels.
pub fn svm(
    train_x: &[Vec<f64>],
    train_y: &[u32],
    test_x: &[Vec<f64>],
    n_classes: usize,
    cli: &Cli,
) -> anyhow::Result<Predicted> {
    let gamma = cli.gamma.unwrap_or(1.0 / train_x[0].len() as f64);
    let mut present: Vec<u32> = train_y.to_vec();
    present.sort_unstable();
    present.dedup();
    let pairs: Vec<(u32, u32)> = present
        .iter()
        .enumerate()
        .flat_map(|(i, &a)| present[i + 1..].iter().map(move |&b| (a, b)))
        .collect();
    let decisions: Vec<((u32, u32), Vec<f64>)> = pairs
        .par_iter()
        .map(|&(a, b)| -> anyhow::Result<((u32, u32), Vec<f64>)> {
            let rows: Vec<&[f64]> = (0..train_y.len())
                .filter(|&r| train_y[r] == a || train_y[r] == b)
                .map(|r| train_x[r].as_slice())
                .collect();
            let y: Vec<i32> = train_y
                .iter()
                .filter(|&&c| c == a || c == b)
                .map(|&c| c as i32)
                .collect();
            let (train_coordinates, test_coordinates) = isometric_coordinates(&rows, test_x);
            let x = matrix(&train_coordinates)?;
            let test = matrix(&test_coordinates)?;
            let parameters = SVCParameters::default()
                .with_c(cli.c)
                .with_kernel(Kernels::rbf().with_gamma(gamma))
                .with_seed(Some(cli.seed));
            let model = SVC::fit(&x, &y, &parameters).map_err(|error| {
                anyhow::anyhow!("fitting the SVM of classes {a} and {b}: {error}")
            })?;
            let decision = model
                .decision_function(&test)
                .map_err(|error| anyhow::anyhow!("SVM of classes {a} and {b}: {error}"))?;
            Ok(((a, b), decision))
        })
        .collect::<anyhow::Result<_>>()?;
    let n_test = test_x.len();
    let mut classes = Vec::with_capacity(n_test);
    let mut confidence = Vec::with_capacity(n_test);
    let duels = (present.len().max(2) - 1) as f64;
    for row in 0..n_test {
        let mut wins = vec![0.0f64; n_classes];
        let mut margins = vec![0.0f64; n_classes];
        for ((a, b), decision) in &decisions {
            // smartcore: a positive decision means the larger label (b).
            let value = decision[row];
            let winner = if value > 0.0 { *b } else { *a };
            wins[winner as usize] += 1.0;
            margins[winner as usize] += value.abs();
        }
        let max_wins = wins.iter().copied().fold(f64::MIN, f64::max);
        let best = (0..n_classes)
            .filter(|&c| wins[c] == max_wins)
            .max_by(|&p, &q| margins[p].total_cmp(&margins[q]).then(q.cmp(&p)))
            .unwrap_or(0);
        classes.push(best as u32);
        confidence.push(wins[best] / duels);
    }
    Ok(Predicted {
        classes,
        confidence,
    })
}

/// Coordinates of `train` and `test` rows in which every train–train and test–train Euclidean
/// distance is exactly the original one, in at most `train.len()` dimensions: an orthonormal basis
/// (modified Gram–Schmidt) of the training rows' affine span, plus one coordinate holding a test
/// row's distance from that span (0 for training rows). An RBF kernel sees the same data.
///
/// Needed because smartcore 0.5.5's SVC optimiser reads only the first n_samples features of
/// each row (`take(n)` in `Optimizer::optimize`), which is wrong whenever features outnumber
/// samples, as flattened pixels do.
pub fn isometric_coordinates(
    train: &[&[f64]],
    test: &[Vec<f64>],
) -> (Vec<Vec<f64>>, Vec<Vec<f64>>) {
    let origin = train[0];
    let centred =
        |row: &[f64]| -> Vec<f64> { row.iter().zip(origin).map(|(v, o)| v - o).collect() };
    let mut basis: Vec<Vec<f64>> = Vec::new();
    for row in &train[1..] {
        let mut v = centred(row);
        let norm_before = dot(&v, &v).sqrt();
        for q in &basis {
            let projection = dot(&v, q);
            v.iter_mut()
                .zip(q)
                .for_each(|(x, qi)| *x -= projection * qi);
        }
        let norm = dot(&v, &v).sqrt();
        if norm > 1e-9 * norm_before.max(1.0) {
            v.iter_mut().for_each(|x| *x /= norm);
            basis.push(v);
        }
    }
    let project = |row: &[f64], residual: bool| -> Vec<f64> {
        let u = centred(row);
        let mut coordinates: Vec<f64> = basis.iter().map(|q| dot(&u, q)).collect();
        let inside: f64 = coordinates.iter().map(|c| c * c).sum();
        coordinates.push(if residual {
            (dot(&u, &u) - inside).max(0.0).sqrt()
        } else {
            0.0
        });
        coordinates
    };
    (
        train.iter().map(|row| project(row, false)).collect(),
        test.iter().map(|row| project(row, true)).collect(),
    )
}

fn dot(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

/// Index of the largest value (the first on ties).
fn argmax(values: &[f64]) -> usize {
    let mut best = 0;
    for (i, &v) in values.iter().enumerate() {
        if v > values[best] {
            best = i;
        }
    }
    best
}

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
fn provenance(cli: &Cli) -> anyhow::Result<Provenance> {
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
    let mut provenance = Provenance::new(
        TableKind::Metrics,
        "pf-baseline",
        env!("CARGO_PKG_VERSION"),
        serde_json::to_value(params).expect("settings serialise to JSON"),
    );
    for path in &cli.input {
        provenance
            .inputs
            .insert(path.display().to_string(), hash_file(path)?);
    }
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
