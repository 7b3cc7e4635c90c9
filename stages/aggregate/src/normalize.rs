//! Well-level normalisation against control wells: per-plate z-score (pycytominer's
//! `standardize` on negative controls), per-plate MAD robustize (pycytominer's `mad_robustize`),
//! and typical variation normalisation (TVN: a whitening fitted on all control wells).

/// Which normalisation to apply to well profiles before treatment aggregation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Normalization {
    /// None.
    None,
    /// Per plate: (x − mean of the plate's control wells) / their standard deviation (ddof 0).
    DmsoZscore,
    /// Per plate: (x − median of the plate's control wells) / (1.4826 · their MAD + 1e-18).
    MadRobustize,
    /// Whitening fitted on every control well: (x − μ) V (Λ + ε)^(−1/2), with V, Λ the
    /// eigenvectors and eigenvalues of the controls' covariance (no back-rotation).
    Tvn,
}

/// Column-wise statistics of the rows `rows` of a row-major matrix.
fn column_values<'a>(
    matrix: &'a [Vec<f64>],
    rows: &'a [usize],
    feature: usize,
) -> impl Iterator<Item = f64> + 'a {
    rows.iter().map(move |&row| matrix[row][feature])
}

/// The median (the mean of the two middle values for an even count); sorts `values`.
pub fn median(values: &mut [f64]) -> f64 {
    values.sort_unstable_by(f64::total_cmp);
    let n = values.len();
    if n % 2 == 1 {
        values[n / 2]
    } else {
        0.5 * (values[n / 2 - 1] + values[n / 2])
    }
}

/// Standardises each feature of `rows` against `controls` (both indices into `matrix`), in place.
pub fn zscore(matrix: &mut [Vec<f64>], rows: &[usize], controls: &[usize]) {
    let n_features = matrix.first().map_or(0, Vec::len);
    for feature in 0..n_features {
        let n = controls.len() as f64;
        let mean = column_values(matrix, controls, feature).sum::<f64>() / n;
        let variance = column_values(matrix, controls, feature)
            .map(|v| (v - mean).powi(2))
            .sum::<f64>()
            / n;
        // sklearn's StandardScaler (behind pycytominer) leaves constant features unscaled.
        let scale = if variance > 0.0 { variance.sqrt() } else { 1.0 };
        for &row in rows {
            matrix[row][feature] = (matrix[row][feature] - mean) / scale;
        }
    }
}

/// Robust standardisation with the median and the scaled median absolute deviation, in place.
pub fn mad_robustize(matrix: &mut [Vec<f64>], rows: &[usize], controls: &[usize]) {
    let n_features = matrix.first().map_or(0, Vec::len);
    for feature in 0..n_features {
        let mut values: Vec<f64> = column_values(matrix, controls, feature).collect();
        let centre = median(&mut values);
        let mut deviations: Vec<f64> = values.iter().map(|v| (v - centre).abs()).collect();
        let mad = 1.4826 * median(&mut deviations);
        for &row in rows {
            matrix[row][feature] = (matrix[row][feature] - centre) / (mad + 1e-18);
        }
    }
}

/// Eigen-decomposition of a symmetric matrix by cyclic Jacobi rotations: returns (eigenvalues,
/// largest first, and the eigenvectors as the columns of a row-major matrix).
pub fn symmetric_eigen(matrix: &[Vec<f64>]) -> (Vec<f64>, Vec<Vec<f64>>) {
    let n = matrix.len();
    let mut a: Vec<Vec<f64>> = matrix.to_vec();
    let mut v: Vec<Vec<f64>> = (0..n)
        .map(|i| (0..n).map(|j| f64::from(u8::from(i == j))).collect())
        .collect();
    for _sweep in 0..100 {
        let off_diagonal: f64 = (0..n)
            .flat_map(|i| (0..n).filter(move |&j| j != i).map(move |j| (i, j)))
            .map(|(i, j)| a[i][j] * a[i][j])
            .sum();
        let scale: f64 = (0..n)
            .map(|i| a[i][i] * a[i][i])
            .sum::<f64>()
            .max(f64::MIN_POSITIVE);
        if off_diagonal <= 1e-24 * scale {
            break;
        }
        for p in 0..n {
            for q in p + 1..n {
                if a[p][q].abs() <= f64::MIN_POSITIVE {
                    continue;
                }
                let theta = (a[q][q] - a[p][p]) / (2.0 * a[p][q]);
                let t = theta.signum() / (theta.abs() + (theta * theta + 1.0).sqrt());
                let t = if theta == 0.0 { 1.0 } else { t };
                let (c, s) = (1.0 / (t * t + 1.0).sqrt(), t / (t * t + 1.0).sqrt());
                // A ← Jᵀ A J: rotate columns p and q, then rows p and q.
                for row in a.iter_mut() {
                    let (akp, akq) = (row[p], row[q]);
                    row[p] = c * akp - s * akq;
                    row[q] = s * akp + c * akq;
                }
                let (head, tail) = a.split_at_mut(q);
                for (apk, aqk) in head[p].iter_mut().zip(tail[0].iter_mut()) {
                    let (old_p, old_q) = (*apk, *aqk);
                    *apk = c * old_p - s * old_q;
                    *aqk = s * old_p + c * old_q;
                }
                for row in v.iter_mut() {
                    let (vkp, vkq) = (row[p], row[q]);
                    row[p] = c * vkp - s * vkq;
                    row[q] = s * vkp + c * vkq;
                }
            }
        }
    }
    // Largest eigenvalue first, so the whitened components come in order of variance.
    let mut order: Vec<usize> = (0..n).collect();
    order.sort_by(|&i, &j| a[j][j].total_cmp(&a[i][i]));
    let values = order.iter().map(|&i| a[i][i]).collect();
    let vectors = v
        .iter()
        .map(|row| order.iter().map(|&i| row[i]).collect())
        .collect();
    (values, vectors)
}

/// Typical variation normalisation fitted on `controls`, applied to every row, in place.
/// `ridge` is added to the eigenvalues, relative to the largest one.
pub fn tvn(matrix: &mut [Vec<f64>], controls: &[usize], ridge: f64) {
    let n_features = matrix.first().map_or(0, Vec::len);
    let n = controls.len() as f64;
    let mean: Vec<f64> = (0..n_features)
        .map(|f| column_values(matrix, controls, f).sum::<f64>() / n)
        .collect();
    let mut covariance = vec![vec![0.0; n_features]; n_features];
    for &row in controls {
        let centred: Vec<f64> = matrix[row].iter().zip(&mean).map(|(v, m)| v - m).collect();
        for i in 0..n_features {
            for j in 0..n_features {
                covariance[i][j] += centred[i] * centred[j] / n;
            }
        }
    }
    let (eigenvalues, eigenvectors) = symmetric_eigen(&covariance);
    let largest = eigenvalues.iter().copied().fold(0.0f64, f64::max);
    let epsilon = ridge * largest.max(f64::MIN_POSITIVE);
    let scales: Vec<f64> = eigenvalues
        .iter()
        .map(|&l| 1.0 / (l.max(0.0) + epsilon).sqrt())
        .collect();
    for row in matrix.iter_mut() {
        let centred: Vec<f64> = row.iter().zip(&mean).map(|(v, m)| v - m).collect();
        for (k, scale) in scales.iter().enumerate() {
            row[k] = scale
                * (0..n_features)
                    .map(|i| centred[i] * eigenvectors[i][k])
                    .sum::<f64>();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zscore_makes_controls_standard() {
        let mut matrix = vec![vec![1.0, 5.0], vec![3.0, 5.0], vec![10.0, 7.0]];
        zscore(&mut matrix, &[0, 1, 2], &[0, 1]);
        assert_eq!(matrix[0], vec![-1.0, 0.0]);
        assert_eq!(matrix[1], vec![1.0, 0.0]);
        assert_eq!(
            matrix[2],
            vec![8.0, 2.0],
            "constant control feature is only centred"
        );
    }

    #[test]
    fn mad_robustize_uses_scaled_mad() {
        let mut matrix = vec![vec![1.0], vec![2.0], vec![4.0], vec![10.0]];
        mad_robustize(&mut matrix, &[3], &[0, 1, 2]);
        // median 2, MAD median(|-1|,0,2) = 1 → scale 1.4826.
        assert!((matrix[3][0] - 8.0 / 1.4826).abs() < 1e-9);
    }

    #[test]
    fn eigen_decomposition_reconstructs_the_matrix() {
        let matrix = vec![
            vec![4.0, 1.0, 0.5],
            vec![1.0, 3.0, 0.2],
            vec![0.5, 0.2, 1.0],
        ];
        let (values, vectors) = symmetric_eigen(&matrix);
        for i in 0..3 {
            for j in 0..3 {
                let rebuilt: f64 = (0..3)
                    .map(|k| vectors[i][k] * values[k] * vectors[j][k])
                    .sum();
                assert!((rebuilt - matrix[i][j]).abs() < 1e-10, "{i} {j}");
            }
        }
    }

    #[test]
    fn tvn_whitens_the_controls() {
        let mut matrix: Vec<Vec<f64>> = (0..40)
            .map(|i| {
                let (a, b) = ((i as f64 * 0.7).sin(), (i as f64 * 1.3).cos());
                vec![3.0 * a + b, a - 2.0 * b, 0.5 * a]
            })
            .collect();
        let controls: Vec<usize> = (0..40).collect();
        tvn(&mut matrix, &controls, 1e-9);
        for i in 0..3 {
            for j in 0..3 {
                let covariance: f64 = matrix.iter().map(|row| row[i] * row[j]).sum::<f64>() / 40.0;
                let expected = if i == j && i < 2 { 1.0 } else { 0.0 };
                assert!((covariance - expected).abs() < 1e-6, "{i} {j} {covariance}");
            }
        }
    }
}
