//! The two classifiers of the second seed's baselines on standardised features: a random forest
//! and an RBF-kernel SVM (smartcore), with the SVM's one-vs-one votes turned into a prediction
//! and a confidence.

use phenoflow_evaluation::seeded::derive_seed;

pub use crate::args::Cli;
use crate::FOREST_STREAM;
use rayon::prelude::*;
use smartcore::ensemble::random_forest_classifier::{
    RandomForestClassifier, RandomForestClassifierParameters,
};
use smartcore::linalg::basic::matrix::DenseMatrix;
use smartcore::svm::svc::{SVCParameters, SVC};
use smartcore::svm::Kernels;

pub(crate) fn matrix(rows: &[Vec<f64>]) -> anyhow::Result<DenseMatrix<f64>> {
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

pub(crate) fn dot(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

/// Index of the largest value (the first on ties).
pub(crate) fn argmax(values: &[f64]) -> usize {
    let mut best = 0;
    for (i, &v) in values.iter().enumerate() {
        if v > values[best] {
            best = i;
        }
    }
    best
}
