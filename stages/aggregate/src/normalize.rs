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

/// A plate with fewer control wells than this gets a warning and a floored scale.
pub const FEW_CONTROLS: usize = 5;

/// Per-feature centre and scale of a plate's control wells: mean and standard deviation (ddof 0;
/// a constant feature gets scale 1, as sklearn's StandardScaler behind pycytominer does) for
/// `DmsoZscore`, median and 1.4826 · MAD + 1e-18 for `MadRobustize`.
pub fn plate_statistics(
    matrix: &[Vec<f64>],
    controls: &[usize],
    method: Normalization,
) -> (Vec<f64>, Vec<f64>) {
    let n_features = matrix.first().map_or(0, Vec::len);
    let n = controls.len() as f64;
    (0..n_features)
        .map(|feature| match method {
            Normalization::MadRobustize => {
                let mut values: Vec<f64> = column_values(matrix, controls, feature).collect();
                let centre = median(&mut values);
                let mut deviations: Vec<f64> = values.iter().map(|v| (v - centre).abs()).collect();
                (centre, 1.4826 * median(&mut deviations) + 1e-18)
            }
            _ => {
                let mean = column_values(matrix, controls, feature).sum::<f64>() / n;
                let variance = column_values(matrix, controls, feature)
                    .map(|v| (v - mean).powi(2))
                    .sum::<f64>()
                    / n;
                (mean, if variance > 0.0 { variance.sqrt() } else { 1.0 })
            }
        })
        .unzip()
}

/// Per-plate normalisation of `plates` (each: its rows and its control rows), in place. A plate
/// with fewer than [`FEW_CONTROLS`] control wells has each feature's scale floored at the median
/// of that feature's scale over the plates with enough controls (when there are any): two or
/// three control wells can agree by chance and blow a feature up. Returns the plates floored.
pub fn per_plate(
    matrix: &mut [Vec<f64>],
    plates: &[(String, Vec<usize>, Vec<usize>)],
    method: Normalization,
) -> Vec<String> {
    let statistics: Vec<(Vec<f64>, Vec<f64>)> = plates
        .iter()
        .map(|(_, _, controls)| plate_statistics(matrix, controls, method))
        .collect();
    let well_controlled: Vec<usize> = (0..plates.len())
        .filter(|&p| plates[p].2.len() >= FEW_CONTROLS)
        .collect();
    let n_features = matrix.first().map_or(0, Vec::len);
    let floors: Option<Vec<f64>> = (!well_controlled.is_empty()).then(|| {
        (0..n_features)
            .map(|f| {
                let mut scales: Vec<f64> = well_controlled
                    .iter()
                    .map(|&p| statistics[p].1[f])
                    .collect();
                median(&mut scales)
            })
            .collect()
    });
    let mut floored = Vec::new();
    for (p, (plate, rows, controls)) in plates.iter().enumerate() {
        let (centres, mut scales) = statistics[p].clone();
        if controls.len() < FEW_CONTROLS {
            if let Some(floors) = &floors {
                for (scale, floor) in scales.iter_mut().zip(floors) {
                    *scale = scale.max(*floor);
                }
                floored.push(plate.clone());
            }
        }
        for &row in rows {
            for (f, value) in matrix[row].iter_mut().enumerate() {
                *value = (*value - centres[f]) / scales[f];
            }
        }
    }
    floored
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

/// How TVN regularises the controls' covariance before whitening.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum TvnRegularization {
    /// Ledoit–Wolf shrinkage towards (mean eigenvalue) · I, with the data-driven coefficient of
    /// scikit-learn's `LedoitWolf` (assume_centered = False).
    LedoitWolf,
    /// Eigenvalues + `--tvn-ridge` × the mean eigenvalue.
    Ridge,
}

/// The controls' mean and covariance (ddof 0), and the centred control rows.
fn control_moments(
    matrix: &[Vec<f64>],
    controls: &[usize],
) -> (Vec<f64>, Vec<Vec<f64>>, Vec<Vec<f64>>) {
    let n_features = matrix.first().map_or(0, Vec::len);
    let n = controls.len() as f64;
    let mean: Vec<f64> = (0..n_features)
        .map(|f| column_values(matrix, controls, f).sum::<f64>() / n)
        .collect();
    let centred: Vec<Vec<f64>> = controls
        .iter()
        .map(|&row| matrix[row].iter().zip(&mean).map(|(v, m)| v - m).collect())
        .collect();
    let mut covariance = vec![vec![0.0; n_features]; n_features];
    for row in &centred {
        for i in 0..n_features {
            for j in i..n_features {
                covariance[i][j] += row[i] * row[j] / n;
            }
        }
    }
    let upper = covariance.clone();
    for (i, row) in covariance.iter_mut().enumerate() {
        for (j, value) in row.iter_mut().enumerate().take(i) {
            *value = upper[j][i];
        }
    }
    (mean, covariance, centred)
}

/// scikit-learn's Ledoit–Wolf shrinkage coefficient for centred rows `x` and their covariance
/// `covariance` (= xᵀx / n): δ = ‖S − μI‖²_F / p, β = min(δ, (Σₖ‖xₖ‖⁴/n − ‖S‖²_F)/(n p)) / δ.
pub fn ledoit_wolf_shrinkage(x: &[Vec<f64>], covariance: &[Vec<f64>]) -> f64 {
    let (n, p) = (x.len() as f64, covariance.len() as f64);
    if x.is_empty() || covariance.is_empty() {
        return 0.0;
    }
    let trace: f64 = (0..covariance.len()).map(|i| covariance[i][i]).sum();
    let mu = trace / p;
    let frobenius: f64 = covariance.iter().flatten().map(|v| v * v).sum();
    let fourth: f64 = x
        .iter()
        .map(|row| row.iter().map(|v| v * v).sum::<f64>().powi(2))
        .sum();
    let beta = (fourth / n - frobenius) / (p * n);
    let delta = (frobenius - 2.0 * mu * trace + p * mu * mu) / p;
    let beta = beta.min(delta);
    if beta <= 0.0 || delta <= 0.0 {
        0.0
    } else {
        beta / delta
    }
}

/// What a TVN fit used: the shrinkage coefficient (Ledoit–Wolf) or ε (ridge), and the mean
/// eigenvalue of the controls' covariance.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TvnFit {
    pub shrinkage: f64,
    pub epsilon: f64,
    pub mean_eigenvalue: f64,
}

/// Typical variation normalisation fitted on `controls`, applied to every row, in place:
/// x' = (x − μ) V D^(−1/2), V and λ the eigenvectors and eigenvalues of the controls' covariance,
/// D = (1 − s) λ + s·λ̄ (Ledoit–Wolf, s its coefficient) or λ + r·λ̄ (ridge r), λ̄ the mean
/// eigenvalue. Components come largest first, with no back-rotation.
pub fn tvn(
    matrix: &mut [Vec<f64>],
    controls: &[usize],
    regularization: TvnRegularization,
    ridge: f64,
) -> TvnFit {
    let n_features = matrix.first().map_or(0, Vec::len);
    let (mean, covariance, centred) = control_moments(matrix, controls);
    let (eigenvalues, eigenvectors) = symmetric_eigen(&covariance);
    let mean_eigenvalue = (eigenvalues.iter().map(|l| l.max(0.0)).sum::<f64>()
        / n_features.max(1) as f64)
        .max(f64::MIN_POSITIVE);
    let fit = match regularization {
        TvnRegularization::LedoitWolf => TvnFit {
            shrinkage: ledoit_wolf_shrinkage(&centred, &covariance),
            epsilon: 0.0,
            mean_eigenvalue,
        },
        TvnRegularization::Ridge => TvnFit {
            shrinkage: 0.0,
            epsilon: ridge * mean_eigenvalue,
            mean_eigenvalue,
        },
    };
    let scales: Vec<f64> = eigenvalues
        .iter()
        .map(|&l| {
            let d =
                (1.0 - fit.shrinkage) * l.max(0.0) + fit.shrinkage * mean_eigenvalue + fit.epsilon;
            1.0 / d.max(f64::MIN_POSITIVE).sqrt()
        })
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
    fit
}

/// The covariance (ddof 1, as numpy's `np.cov`) of `rows` plus `lambda` · I.
fn regularised_covariance(matrix: &[Vec<f64>], rows: &[usize], lambda: f64) -> Vec<Vec<f64>> {
    let (_, mut covariance, _) = control_moments(matrix, rows);
    let n = rows.len() as f64;
    for (i, row) in covariance.iter_mut().enumerate() {
        for value in row.iter_mut() {
            *value *= n / (n - 1.0);
        }
        row[i] += lambda;
    }
    covariance
}

/// A symmetric positive definite matrix to the power `power` (±1/2), through its eigenvectors.
fn matrix_power(matrix: &[Vec<f64>], power: f64) -> Vec<Vec<f64>> {
    let (values, vectors) = symmetric_eigen(matrix);
    let n = matrix.len();
    let powered: Vec<f64> = values
        .iter()
        .map(|l| l.max(f64::MIN_POSITIVE).powf(power))
        .collect();
    (0..n)
        .map(|i| {
            (0..n)
                .map(|j| {
                    (0..n)
                        .map(|k| vectors[i][k] * powered[k] * vectors[j][k])
                        .sum()
                })
                .collect()
        })
        .collect()
}

/// CORAL (Sun, Feng & Saenko 2016), per batch, as the DeepProfiler BBBC021 evaluation pairs it
/// with TVN: the rows of each batch are multiplied by Cₛ^(−1/2) Cₜ^(1/2), with Cₛ the covariance
/// of the batch's control wells and Cₜ that of all control wells (both ddof 1, + λI; no
/// centring, as in the paper's code). `batches` lists each batch's rows and control rows; a
/// batch needs two control wells.
pub fn coral(
    matrix: &mut [Vec<f64>],
    batches: &[(String, Vec<usize>, Vec<usize>)],
    controls: &[usize],
    lambda: f64,
) {
    let target_root = matrix_power(&regularised_covariance(matrix, controls, lambda), 0.5);
    let n_features = target_root.len();
    for (_, rows, batch_controls) in batches {
        let source = matrix_power(
            &regularised_covariance(matrix, batch_controls, lambda),
            -0.5,
        );
        let transform: Vec<Vec<f64>> = (0..n_features)
            .map(|i| {
                (0..n_features)
                    .map(|j| {
                        (0..n_features)
                            .map(|k| source[i][k] * target_root[k][j])
                            .sum()
                    })
                    .collect()
            })
            .collect();
        for &row in rows {
            let x = matrix[row].clone();
            for (j, value) in matrix[row].iter_mut().enumerate() {
                *value = (0..n_features).map(|i| x[i] * transform[i][j]).sum();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zscore_makes_controls_standard() {
        let mut matrix = vec![vec![1.0, 5.0], vec![3.0, 5.0], vec![10.0, 7.0]];
        let plate = [(String::new(), vec![0, 1, 2], vec![0, 1])];
        per_plate(&mut matrix, &plate, Normalization::DmsoZscore);
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
        let plate = [(String::new(), vec![3], vec![0, 1, 2])];
        per_plate(&mut matrix, &plate, Normalization::MadRobustize);
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
        tvn(&mut matrix, &controls, TvnRegularization::Ridge, 1e-9);
        for i in 0..3 {
            for j in 0..3 {
                let covariance: f64 = matrix.iter().map(|row| row[i] * row[j]).sum::<f64>() / 40.0;
                let expected = if i == j && i < 2 { 1.0 } else { 0.0 };
                assert!((covariance - expected).abs() < 1e-6, "{i} {j} {covariance}");
            }
        }
    }

    #[test]
    fn a_plate_with_few_controls_has_its_scale_floored() {
        // Plate a: six controls with standard deviation 1; plate b: two controls 0.002 apart.
        let mut matrix: Vec<Vec<f64>> = [-1.0, 1.0, -1.0, 1.0, -1.0, 1.0, 5.0, 0.0, 0.002, 3.0]
            .iter()
            .map(|v| vec![*v])
            .collect();
        let plates = vec![
            ("a".to_string(), (0..7).collect(), (0..6).collect()),
            ("b".to_string(), vec![7, 8, 9], vec![7, 8]),
        ];
        let floored = per_plate(&mut matrix, &plates, Normalization::DmsoZscore);
        assert_eq!(floored, vec!["b".to_string()]);
        assert_eq!(matrix[6][0], 5.0, "plate a: mean 0, sd 1");
        assert!(
            (matrix[9][0] - 2.999).abs() < 1e-12,
            "plate b: (3 − 0.001) / 1, not / 0.001"
        );
    }
}
