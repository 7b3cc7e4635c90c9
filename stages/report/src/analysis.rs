//! The numbers behind the figures: which cells to show, treatment profiles and centre cells (as
//! the seed computed them, on the raw single-cell profiles), MoA × latent correlations, active
//! dimensions of sparse models, and a PCA of the treatment profiles.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use arrow_array::cast::AsArray;
use arrow_array::types::{Float32Type, Float64Type};
use phenoflow_schemas::{concentration_key, InputError, TableKind};

use crate::inputs::Embeddings;

/// Up to `n` cells: the first cell of each MoA in turn (sorted MoAs), then further cells.
pub fn cells_to_show(embeddings: &Embeddings, n: usize) -> Vec<usize> {
    let mut first_of: BTreeMap<String, usize> = BTreeMap::new();
    for row in 0..embeddings.n_cells() {
        let label = embeddings.moa[row]
            .clone()
            .unwrap_or_else(|| embeddings.compound[row].clone());
        first_of.entry(label).or_insert(row);
    }
    let mut shown: Vec<usize> = first_of.into_values().take(n).collect();
    for row in 0..embeddings.n_cells() {
        if shown.len() >= n {
            break;
        }
        if !shown.contains(&row) {
            shown.push(row);
        }
    }
    shown.sort_unstable();
    shown
}

/// A treatment's profile on the raw single-cell profiles and its centre cell.
#[derive(Debug, Clone)]
pub struct TreatmentProfile {
    pub compound: String,
    pub concentration: f64,
    pub profile: Vec<f32>,
    /// The row of the cell nearest (Euclidean) to the profile.
    pub centre_cell: usize,
}

/// Wells (plate + well) by mean, treatments by the median over their wells, as the seed did.
pub fn treatment_profiles(embeddings: &Embeddings) -> Vec<TreatmentProfile> {
    let dim = embeddings.latent_dim;
    let mut wells: BTreeMap<(String, i64, String, String), Vec<usize>> = BTreeMap::new();
    for row in 0..embeddings.n_cells() {
        let (plate, well, _, _) = &embeddings.keys[row];
        wells
            .entry((
                embeddings.compound[row].clone(),
                concentration_key(embeddings.concentration[row]),
                plate.clone(),
                well.clone(),
            ))
            .or_default()
            .push(row);
    }
    // (compound, concentration key) → (concentration, well means, cells).
    type Accumulated = (f64, Vec<Vec<f32>>, Vec<usize>);
    let mut treatments: BTreeMap<(String, i64), Accumulated> = BTreeMap::new();
    for ((compound, key, _, _), rows) in wells {
        let mut mean = vec![0f32; dim];
        for &row in &rows {
            for (sum, value) in mean.iter_mut().zip(embeddings.profile(row)) {
                *sum += value / rows.len() as f32;
            }
        }
        let entry = treatments
            .entry((compound, key))
            .or_insert_with(|| (embeddings.concentration[rows[0]], Vec::new(), Vec::new()));
        entry.1.push(mean);
        entry.2.extend(rows);
    }
    treatments
        .into_iter()
        .map(|((compound, _), (concentration, well_means, rows))| {
            let profile: Vec<f32> = (0..dim)
                .map(|d| {
                    let mut values: Vec<f32> = well_means.iter().map(|mean| mean[d]).collect();
                    values.sort_by(f32::total_cmp);
                    let middle = values.len() / 2;
                    if values.len() % 2 == 1 {
                        values[middle]
                    } else {
                        (values[middle - 1] + values[middle]) / 2.0
                    }
                })
                .collect();
            let distance = |row: usize| -> f32 {
                embeddings
                    .profile(row)
                    .iter()
                    .zip(&profile)
                    .map(|(a, b)| (a - b) * (a - b))
                    .sum()
            };
            let centre_cell = rows
                .iter()
                .copied()
                .min_by(|&a, &b| distance(a).total_cmp(&distance(b)))
                .expect("a treatment has cells");
            TreatmentProfile {
                compound,
                concentration,
                profile,
                centre_cell,
            }
        })
        .collect()
}

/// The treatments named `COMPOUND@CONCENTRATION`, or the `n` farthest from the control.
pub fn interpolation_targets(
    treatments: &[TreatmentProfile],
    control: usize,
    named: &[String],
    n: usize,
) -> anyhow::Result<Vec<usize>> {
    if !named.is_empty() {
        return named
            .iter()
            .map(|name| {
                let (compound, concentration) = name.rsplit_once('@').ok_or_else(|| {
                    InputError(format!(
                        "--interpolate {name}: expected COMPOUND@CONCENTRATION, e.g. taxol@0.3"
                    ))
                })?;
                let concentration: f64 = concentration.parse().map_err(|_| {
                    InputError(format!(
                        "--interpolate {name}: `{concentration}` is not a number"
                    ))
                })?;
                treatments
                    .iter()
                    .position(|t| {
                        t.compound == compound
                            && concentration_key(t.concentration)
                                == concentration_key(concentration)
                    })
                    .ok_or_else(|| {
                        InputError(format!(
                            "--interpolate {name}: no such treatment in the embeddings"
                        ))
                        .into()
                    })
            })
            .collect();
    }
    let control_profile = &treatments[control].profile;
    let mut by_distance: Vec<(f32, usize)> = treatments
        .iter()
        .enumerate()
        .filter(|(index, _)| *index != control)
        .map(|(index, t)| {
            (
                t.profile
                    .iter()
                    .zip(control_profile)
                    .map(|(a, b)| (a - b) * (a - b))
                    .sum(),
                index,
            )
        })
        .collect();
    by_distance.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
    Ok(by_distance
        .into_iter()
        .take(n)
        .map(|(_, index)| index)
        .collect())
}

/// MoAs, |r| per MoA and dimension, and the dimensions in display order.
pub type MoaCorrelation = (Vec<String>, Vec<Vec<f64>>, Vec<usize>);

/// |Pearson r| between each MoA's indicator and each latent dimension over the cells with an
/// MoA: (MoAs, matrix[moa][dim], dims sorted by column sum, descending). `None` with < 2 MoAs.
pub fn moa_latent_correlation(embeddings: &Embeddings) -> Option<MoaCorrelation> {
    let moas: Vec<String> = embeddings
        .moa
        .iter()
        .flatten()
        .cloned()
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    if moas.len() < 2 {
        return None;
    }
    let dim = embeddings.latent_dim;
    let rows: Vec<usize> = (0..embeddings.n_cells())
        .filter(|&row| embeddings.moa[row].is_some())
        .collect();
    let n = rows.len() as f64;
    let mut mean = vec![0f64; dim];
    let mut square = vec![0f64; dim];
    let mut moa_sum: BTreeMap<&String, (f64, Vec<f64>)> = moas
        .iter()
        .map(|moa| (moa, (0.0, vec![0f64; dim])))
        .collect();
    for &row in &rows {
        let entry = moa_sum
            .get_mut(embeddings.moa[row].as_ref().expect("filtered"))
            .expect("a known MoA");
        entry.0 += 1.0;
        for (d, &value) in embeddings.profile(row).iter().enumerate() {
            let value = f64::from(value);
            mean[d] += value / n;
            square[d] += value * value / n;
            entry.1[d] += value;
        }
    }
    let matrix: Vec<Vec<f64>> = moas
        .iter()
        .map(|moa| {
            let (count, sums) = &moa_sum[moa];
            let p = count / n;
            (0..dim)
                .map(|d| {
                    let std = (square[d] - mean[d] * mean[d]).max(0.0).sqrt();
                    if std <= 0.0 || p <= 0.0 || p >= 1.0 {
                        return 0.0;
                    }
                    let moa_mean = sums[d] / count;
                    (p * (moa_mean - mean[d]) / (std * (p * (1.0 - p)).sqrt())).abs()
                })
                .collect()
        })
        .collect();
    let mut order: Vec<usize> = (0..dim).collect();
    let column_sum = |d: usize| matrix.iter().map(|row| row[d]).sum::<f64>();
    order.sort_by(|&a, &b| column_sum(b).total_cmp(&column_sum(a)));
    Some((moas, matrix, order))
}

/// For sparse models with γ in the embeddings: per MoA, the mean fraction of latent dimensions
/// whose spike probability γ exceeds 0.5.
pub fn active_fraction(embeddings: &Embeddings) -> Option<Vec<(String, f64, usize)>> {
    let gamma = embeddings.gamma.as_ref()?;
    let dim = embeddings.latent_dim;
    let mut by_moa: BTreeMap<String, (f64, usize)> = BTreeMap::new();
    for row in 0..embeddings.n_cells() {
        let label = embeddings.moa[row]
            .clone()
            .unwrap_or_else(|| "(none)".into());
        let active = gamma[row * dim..(row + 1) * dim]
            .iter()
            .filter(|&&g| g > 0.5)
            .count() as f64
            / dim as f64;
        let entry = by_moa.entry(label).or_default();
        entry.0 += active;
        entry.1 += 1;
    }
    Some(
        by_moa
            .into_iter()
            .map(|(moa, (sum, count))| (moa, sum / count as f64, count))
            .collect(),
    )
}

/// The treatment profiles of a `treatments` table (the control excluded) and their MoAs.
#[derive(Debug, Clone, Default)]
pub struct TreatmentMapInput {
    pub compounds: Vec<String>,
    pub concentrations: Vec<f64>,
    pub profiles: Vec<Vec<f64>>,
    pub labels: Vec<String>,
    /// The distinct MoAs, sorted; a point's category is its index here.
    pub moas: Vec<String>,
}

/// Reads the treatment profiles to map (the control excluded).
pub fn treatment_map_input(path: &Path, control: &str) -> anyhow::Result<TreatmentMapInput> {
    let mut input = TreatmentMapInput::default();
    for batch in phenoflow_schemas::read_table(path, TableKind::Treatments)? {
        let compounds = crate::inputs::strings(&batch, phenoflow_schemas::columns::COMPOUND, path)?;
        let concentrations = batch
            .column_by_name(phenoflow_schemas::columns::CONCENTRATION)
            .expect("validated")
            .as_primitive::<Float64Type>();
        let moas = crate::inputs::strings(&batch, phenoflow_schemas::columns::MOA, path)?;
        let features: Vec<Vec<f64>> = batch
            .schema()
            .fields()
            .iter()
            .zip(batch.columns())
            .filter(|(field, _)| !field.name().starts_with(phenoflow_schemas::columns::PREFIX))
            .filter_map(|(_, column)| {
                column
                    .as_primitive_opt::<Float64Type>()
                    .map(|values| values.values().to_vec())
                    .or_else(|| {
                        column
                            .as_primitive_opt::<Float32Type>()
                            .map(|values| values.values().iter().map(|&v| f64::from(v)).collect())
                    })
            })
            .collect();
        for row in 0..batch.num_rows() {
            let compound = compounds[row].clone().unwrap_or_default();
            if compound == control {
                continue;
            }
            input.compounds.push(compound);
            input.concentrations.push(concentrations.value(row));
            input
                .profiles
                .push(features.iter().map(|column| column[row]).collect());
            input
                .labels
                .push(moas[row].clone().unwrap_or_else(|| "(none)".into()));
        }
    }
    input.moas = input
        .labels
        .iter()
        .cloned()
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    Ok(input)
}

impl TreatmentMapInput {
    fn category(&self, row: usize) -> usize {
        self.moas
            .binary_search(&self.labels[row])
            .expect("a listed MoA")
    }
}

/// A treatment on a 2-D map: (x, y, MoA index).
pub type MapPoint = (f64, f64, usize);

/// The treatment profiles on their first two principal components: (points (x, y, MoA index),
/// explained variance ratios); no points for fewer than three treatments.
pub fn treatment_pca(input: &TreatmentMapInput) -> (Vec<MapPoint>, (f64, f64)) {
    let mut profiles = input.profiles.clone();
    if profiles.len() < 3 {
        return (Vec::new(), (0.0, 0.0));
    }
    let dim = profiles[0].len();
    let n = profiles.len() as f64;
    let mean: Vec<f64> = (0..dim)
        .map(|d| profiles.iter().map(|p| p[d]).sum::<f64>() / n)
        .collect();
    for profile in &mut profiles {
        for (value, m) in profile.iter_mut().zip(&mean) {
            *value -= m;
        }
    }
    let mut covariance = vec![vec![0f64; dim]; dim];
    for profile in &profiles {
        for (row, &left) in covariance.iter_mut().zip(profile.iter()) {
            for (cell, &right) in row.iter_mut().zip(profile.iter()) {
                *cell += left * right / (n - 1.0);
            }
        }
    }
    let total: f64 = covariance.iter().enumerate().map(|(i, row)| row[i]).sum();
    let mut components: Vec<(Vec<f64>, f64)> = Vec::new();
    for component in 0..2 {
        // Power iteration with deflation against the components found so far.
        let mut vector: Vec<f64> = (0..dim)
            .map(|d| 1.0 + ((d * 7 + component * 3) % 11) as f64 / 11.0)
            .collect();
        let mut eigenvalue = 0.0;
        for _ in 0..500 {
            let mut next: Vec<f64> = (0..dim)
                .map(|i| (0..dim).map(|j| covariance[i][j] * vector[j]).sum())
                .collect();
            for (found, _) in &components {
                let projection: f64 = next.iter().zip(found).map(|(a, b)| a * b).sum();
                for (value, f) in next.iter_mut().zip(found) {
                    *value -= projection * f;
                }
            }
            let norm = next.iter().map(|v| v * v).sum::<f64>().sqrt();
            if norm == 0.0 {
                break;
            }
            eigenvalue = norm;
            vector = next.into_iter().map(|v| v / norm).collect();
        }
        components.push((vector, eigenvalue));
    }
    let points = profiles
        .iter()
        .enumerate()
        .map(|(row, profile)| {
            let project = |component: &Vec<f64>| {
                profile
                    .iter()
                    .zip(component)
                    .map(|(a, b)| a * b)
                    .sum::<f64>()
            };
            (
                project(&components[0].0),
                project(&components[1].0),
                input.category(row),
            )
        })
        .collect();
    let ratio = |value: f64| if total > 0.0 { value / total } else { 0.0 };
    (points, (ratio(components[0].1), ratio(components[1].1)))
}

/// The fewest treatments a t-SNE map is drawn for: below, neighbourhoods of perplexity ≥ 3 do
/// not exist.
pub const TSNE_MIN_POINTS: usize = 10;

/// The most treatments a t-SNE map is drawn for: exact t-SNE keeps three n × n matrices and
/// costs n² per iteration (2,000 points: 96 MB and seconds; a 100k-compound screen would take
/// hundreds of GB), so larger screens get the PCA map only, with a note.
pub const TSNE_MAX_POINTS: usize = 2_000;

/// The t-SNE perplexity for `n` points: scikit-learn's default 30, or less where `n` is small
/// (the exact method needs n − 1 ≥ 3 · perplexity).
pub fn tsne_perplexity(n: usize) -> f64 {
    (((n - 1) / 3) as f64).min(30.0)
}

/// Exact t-SNE (the `bhtsne` crate) of the L2-normalised treatment profiles, so that distances
/// rank pairs as pf-classify's cosine does; perplexity [`tsne_perplexity`], 1000 iterations,
/// early exaggeration 12 for 250, initialised from the PCA map scaled to a standard deviation of
/// 1e-4 along PC1, as scikit-learn's `init="pca"`, on one thread (bhtsne sums in parallel, and a
/// parallel sum's order depends on the threads): the same map on every machine. `None` below
/// [`TSNE_MIN_POINTS`] or above [`TSNE_MAX_POINTS`] treatments.
pub fn treatment_tsne(input: &TreatmentMapInput, pca: &[MapPoint]) -> Option<Vec<MapPoint>> {
    let n = input.profiles.len();
    if !(TSNE_MIN_POINTS..=TSNE_MAX_POINTS).contains(&n) || pca.len() != n {
        return None;
    }
    let normalised: Vec<Vec<f64>> = input
        .profiles
        .iter()
        .map(|profile| {
            let norm = profile.iter().map(|v| v * v).sum::<f64>().sqrt();
            let norm = if norm > 0.0 { norm } else { 1.0 };
            profile.iter().map(|v| v / norm).collect()
        })
        .collect();
    let mean = pca.iter().map(|p| p.0).sum::<f64>() / n as f64;
    let sd = (pca.iter().map(|p| (p.0 - mean).powi(2)).sum::<f64>() / (n - 1) as f64).sqrt();
    let scale = if sd > 0.0 { 1e-4 / sd } else { 1.0 };
    let init: Vec<f64> = pca
        .iter()
        .flat_map(|p| [p.0 * scale, p.1 * scale])
        .collect();
    let fit = || {
        let mut tsne: bhtsne::tSNE<f64, Vec<f64>> = bhtsne::tSNE::new(&normalised);
        tsne.perplexity(tsne_perplexity(n))
            .epochs(1000)
            .initial_embedding(init)
            .exact(|a, b| {
                a.iter()
                    .zip(b)
                    .map(|(x, y)| (x - y).powi(2))
                    .sum::<f64>()
                    .sqrt()
            });
        tsne.embedding()
    };
    let embedding = match rayon::ThreadPoolBuilder::new().num_threads(1).build() {
        Ok(pool) => pool.install(fit),
        Err(_) => return None,
    };
    Some(
        (0..n)
            .map(|row| {
                (
                    embedding[2 * row],
                    embedding[2 * row + 1],
                    input.category(row),
                )
            })
            .collect(),
    )
}

/// `treatment_map.csv`: each mapped treatment with its MoA and its PCA and t-SNE coordinates
/// (empty where a map was not drawn), to re-plot or check.
pub fn treatment_map_csv(
    input: &TreatmentMapInput,
    pca: &[MapPoint],
    tsne: Option<&[MapPoint]>,
) -> String {
    let quote = |text: &str| format!("\"{}\"", text.replace('"', "\"\""));
    let mut out =
        String::from("Metadata_Compound,Metadata_Concentration,Metadata_MoA,PC1,PC2,tSNE1,tSNE2\n");
    for row in 0..input.profiles.len() {
        let pair = |points: Option<&[MapPoint]>| match points.and_then(|p| p.get(row)) {
            Some(point) => format!("{:?},{:?}", point.0, point.1),
            None => ",".to_string(),
        };
        out.push_str(&format!(
            "{},{:?},{},{},{}\n",
            quote(&input.compounds[row]),
            input.concentrations[row],
            quote(&input.labels[row]),
            pair(Some(pca)),
            pair(tsne)
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// 12 MoA clusters of 9 treatments in 64 dimensions (a deterministic generator), mapped by
    /// our t-SNE and checked against scikit-learn's by `tests/python/check_tsne.py`.
    #[test]
    fn tsne_map_keeps_neighbourhoods_as_scikit_learn_does() {
        let mut state = 7u64;
        let mut uniform = move || {
            state = state
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            ((state >> 11) as f64) / ((1u64 << 53) as f64)
        };
        let mut normal = move || {
            let (a, b) = (uniform().max(1e-12), uniform());
            (-2.0 * a.ln()).sqrt() * (std::f64::consts::TAU * b).cos()
        };
        let dim = 64;
        let centres: Vec<Vec<f64>> = (0..12)
            .map(|_| (0..dim).map(|_| normal()).collect())
            .collect();
        let mut input = TreatmentMapInput::default();
        for (moa, centre) in centres.iter().enumerate() {
            for treatment in 0..9 {
                input.compounds.push(format!("c{moa}_{treatment}"));
                input.concentrations.push(1.0);
                input
                    .profiles
                    .push(centre.iter().map(|c| c + 0.8 * normal()).collect());
                input.labels.push(format!("moa{moa:02}"));
            }
        }
        input.moas = (0..12).map(|moa| format!("moa{moa:02}")).collect();
        let (pca, _) = treatment_pca(&input);
        let tsne = treatment_tsne(&input, &pca).expect("108 points");
        assert_eq!(tsne, treatment_tsne(&input, &pca).unwrap(), "deterministic");
        let csv = treatment_map_csv(&input, &pca, Some(&tsne));
        assert_eq!(csv.lines().count(), 109);
        assert!(csv.starts_with("Metadata_Compound,Metadata_Concentration,Metadata_MoA,PC1,PC2,tSNE1,tSNE2\n\"c0_0\",1.0,\"moa00\","));
        let temp = tempfile::tempdir().unwrap();
        let path = temp.path().join("map.csv");
        let mut text = String::from("label,x,y");
        for d in 0..dim {
            text.push_str(&format!(",f{d}"));
        }
        text.push('\n');
        for (row, point) in tsne.iter().enumerate() {
            let profile = &input.profiles[row];
            let norm = profile.iter().map(|v| v * v).sum::<f64>().sqrt();
            text.push_str(&format!(
                "{},{:?},{:?}",
                input.labels[row], point.0, point.1
            ));
            for value in profile {
                text.push_str(&format!(",{:?}", value / norm));
            }
            text.push('\n');
        }
        std::fs::write(&path, text).unwrap();
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
        let python = std::env::var_os("PHENOFLOW_PYTHON")
            .map(std::path::PathBuf::from)
            .unwrap_or_else(|| root.join(".venv/bin/python"));
        let output = std::process::Command::new(python)
            .arg(root.join("tests/python/check_tsne.py"))
            .arg(&path)
            .arg(tsne_perplexity(input.profiles.len()).to_string())
            .output()
            .expect("the project's venv python");
        let stdout = String::from_utf8_lossy(&output.stdout);
        assert!(
            output.status.success(),
            "{stdout}{}",
            String::from_utf8_lossy(&output.stderr)
        );
        eprintln!("{stdout}");
    }

    #[test]
    fn too_few_treatments_get_no_tsne_map() {
        let mut input = TreatmentMapInput::default();
        for row in 0..TSNE_MIN_POINTS - 1 {
            input.compounds.push(format!("c{row}"));
            input.concentrations.push(1.0);
            input
                .profiles
                .push(vec![row as f64, 1.0, (row * row) as f64]);
            input.labels.push("m".into());
        }
        input.moas = vec!["m".into()];
        let (pca, _) = treatment_pca(&input);
        assert_eq!(pca.len(), TSNE_MIN_POINTS - 1);
        assert!(treatment_tsne(&input, &pca).is_none());
        // Nor too many: an exact map of a large screen would take the machine.
        let mut many = TreatmentMapInput::default();
        for row in 0..=TSNE_MAX_POINTS {
            many.compounds.push(format!("c{row}"));
            many.concentrations.push(1.0);
            many.profiles.push(vec![row as f64, 1.0, (row % 7) as f64]);
            many.labels.push("m".into());
        }
        many.moas = vec!["m".into()];
        let (pca, _) = treatment_pca(&many);
        assert!(treatment_tsne(&many, &pca).is_none());
        assert_eq!(tsne_perplexity(10), 3.0);
        assert_eq!(tsne_perplexity(103), 30.0);
    }

    fn embeddings(rows: &[(&str, &str, &str, [f32; 2])]) -> Embeddings {
        let mut e = Embeddings {
            latent_dim: 2,
            ..Default::default()
        };
        for (index, (well, compound, moa, profile)) in rows.iter().enumerate() {
            e.keys
                .push(("P1".into(), well.to_string(), 1, index as i32));
            e.compound.push(compound.to_string());
            e.concentration.push(1.0);
            e.moa.push(Some(moa.to_string()));
            e.features.extend(profile);
        }
        e
    }

    #[test]
    fn centre_cell_is_nearest_the_median_of_well_means() {
        let e = embeddings(&[
            ("A01", "c", "m", [0.0, 0.0]),
            ("A01", "c", "m", [2.0, 0.0]),
            ("A02", "c", "m", [10.0, 0.0]),
            ("A03", "c", "m", [1.2, 0.0]),
        ]);
        // Well means 1, 10, 1.2 → median 1.2 → nearest cell: the one at 1.2.
        let treatments = treatment_profiles(&e);
        assert_eq!(treatments.len(), 1);
        assert!((treatments[0].profile[0] - 1.2).abs() < 1e-6);
        assert_eq!(treatments[0].centre_cell, 3);
    }

    #[test]
    fn a_dimension_that_separates_moas_correlates_fully() {
        let e = embeddings(&[
            ("A01", "a", "x", [1.0, 0.3]),
            ("A02", "a", "x", [1.0, -0.2]),
            ("A03", "b", "y", [-1.0, 0.1]),
            ("A04", "b", "y", [-1.0, -0.2]),
        ]);
        let (moas, matrix, order) = moa_latent_correlation(&e).unwrap();
        assert_eq!(moas, ["x", "y"]);
        assert!((matrix[0][0] - 1.0).abs() < 1e-9);
        assert_eq!(order[0], 0);
    }
}
