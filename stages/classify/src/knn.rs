//! 1-nearest-neighbour MoA prediction over treatment profiles with the hold-outs of the BBBC021
//! benchmark, and MoA retrieval mean average precision.
//!
//! - **NSC** (not-same-compound): a query's candidates are all other treatments whose compound
//!   differs from the query's.
//! - **NSCB** (not-same-compound-or-batch): candidates must also share no batch with the query (a
//!   treatment's batches are those of its wells). MoAs left with no admissible same-MoA candidate
//!   for any of their treatments cannot be scored; they are dropped from queries and candidates, as
//!   in the DeepProfiler reference (BBBC021: 92 treatments, 10 MoAs). Queries left with no
//!   admissible candidate at all (a treatment whose wells span every batch) are dropped too. The
//!   accuracy over all queries (the dropped ones counted wrong) is reported next to it.
//!
//! **Tie-breaking**: treatments are ordered by (compound, concentration); among candidates at the
//! same distance, the first in that order wins. Rankings for average precision use the same order.

use std::collections::{BTreeMap, BTreeSet};

/// One treatment profile.
#[derive(Debug, Clone, PartialEq)]
pub struct Treatment {
    pub compound: String,
    pub concentration: f64,
    pub moa: String,
    pub batches: BTreeSet<String>,
    pub features: Vec<f64>,
}

/// How distances are measured.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Metric {
    /// 1 − cosine similarity (the benchmark's standard).
    Cosine,
    /// Euclidean distance (the seed implementation's).
    Euclidean,
}

/// A hold-out rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HoldOut {
    NotSameCompound,
    NotSameCompoundOrBatch,
}

/// The prediction for one query.
#[derive(Debug, Clone, PartialEq)]
pub struct Prediction {
    pub query: usize,
    pub nearest: usize,
    pub distance: f64,
    pub correct: bool,
}

/// The outcome of one protocol.
#[derive(Debug, Clone, PartialEq)]
pub struct Evaluation {
    pub predictions: Vec<Prediction>,
    /// Queries dropped because their MoA cannot be scored under the hold-out.
    pub n_dropped: usize,
}

impl Evaluation {
    pub fn n_correct(&self) -> usize {
        self.predictions.iter().filter(|p| p.correct).count()
    }

    pub fn accuracy(&self) -> f64 {
        self.n_correct() as f64 / self.predictions.len().max(1) as f64
    }
}

/// Pairwise distances between all treatments.
pub fn distance_matrix(treatments: &[Treatment], metric: Metric) -> Vec<Vec<f64>> {
    let prepared: Vec<Vec<f64>> = match metric {
        Metric::Cosine => treatments
            .iter()
            .map(|t| {
                let norm = t.features.iter().map(|v| v * v).sum::<f64>().sqrt();
                t.features
                    .iter()
                    .map(|v| v / norm.max(f64::MIN_POSITIVE))
                    .collect()
            })
            .collect(),
        Metric::Euclidean => treatments.iter().map(|t| t.features.clone()).collect(),
    };
    prepared
        .iter()
        .map(|a| {
            prepared
                .iter()
                .map(|b| match metric {
                    Metric::Cosine => 1.0 - a.iter().zip(b).map(|(x, y)| x * y).sum::<f64>(),
                    Metric::Euclidean => a
                        .iter()
                        .zip(b)
                        .map(|(x, y)| (x - y) * (x - y))
                        .sum::<f64>()
                        .sqrt(),
                })
                .collect()
        })
        .collect()
}

fn admissible(treatments: &[Treatment], query: usize, candidate: usize, hold_out: HoldOut) -> bool {
    let (q, c) = (&treatments[query], &treatments[candidate]);
    if query == candidate || q.compound == c.compound {
        return false;
    }
    match hold_out {
        HoldOut::NotSameCompound => true,
        HoldOut::NotSameCompoundOrBatch => q.batches.is_disjoint(&c.batches),
    }
}

/// 1-NN predictions for the treatments in `members` (indices into `treatments`, which must be
/// sorted by compound and concentration) under `hold_out`.
pub fn evaluate(
    treatments: &[Treatment],
    distances: &[Vec<f64>],
    members: &[usize],
    hold_out: HoldOut,
) -> Evaluation {
    let mut included: Vec<usize> = members.to_vec();
    let mut n_dropped = 0;
    if hold_out == HoldOut::NotSameCompoundOrBatch {
        let scorable: BTreeSet<&str> = members
            .iter()
            .filter(|&&q| {
                members.iter().any(|&c| {
                    admissible(treatments, q, c, hold_out) && treatments[c].moa == treatments[q].moa
                })
            })
            .map(|&q| treatments[q].moa.as_str())
            .collect();
        included.retain(|&i| scorable.contains(treatments[i].moa.as_str()));
        n_dropped = members.len() - included.len();
    }
    let predictions: Vec<Prediction> = included
        .iter()
        .filter_map(|&query| {
            let mut best: Option<(usize, f64)> = None;
            for &candidate in &included {
                if !admissible(treatments, query, candidate, hold_out) {
                    continue;
                }
                let distance = distances[query][candidate];
                if best.is_none_or(|(_, best_distance)| distance < best_distance) {
                    best = Some((candidate, distance));
                }
            }
            best.map(|(nearest, distance)| Prediction {
                query,
                nearest,
                distance,
                correct: treatments[nearest].moa == treatments[query].moa,
            })
        })
        .collect();
    // A query with no admissible candidate at all (under NSCB: a treatment whose wells span
    // every batch, such as a positive control) cannot be scored either.
    n_dropped += included.len() - predictions.len();
    Evaluation {
        predictions,
        n_dropped,
    }
}

/// Mean average precision of MoA retrieval: each query ranks its NSC candidates by distance;
/// positives are candidates of the same MoA (necessarily another compound). Queries without a
/// positive are skipped. Returns (mAP over queries, per-MoA mAP, number of queries scored).
pub fn mean_average_precision(
    treatments: &[Treatment],
    distances: &[Vec<f64>],
    members: &[usize],
) -> (f64, BTreeMap<String, f64>, usize) {
    let mut per_moa: BTreeMap<String, Vec<f64>> = BTreeMap::new();
    for &query in members {
        let mut ranked: Vec<usize> = members
            .iter()
            .copied()
            .filter(|&c| admissible(treatments, query, c, HoldOut::NotSameCompound))
            .collect();
        // Stable sort: equal distances keep the (compound, concentration) order.
        ranked.sort_by(|&a, &b| distances[query][a].total_cmp(&distances[query][b]));
        let n_positive = ranked
            .iter()
            .filter(|&&c| treatments[c].moa == treatments[query].moa)
            .count();
        if n_positive == 0 {
            continue;
        }
        let mut hits = 0usize;
        let mut precision_sum = 0.0;
        for (rank, &candidate) in ranked.iter().enumerate() {
            if treatments[candidate].moa == treatments[query].moa {
                hits += 1;
                precision_sum += hits as f64 / (rank + 1) as f64;
            }
        }
        per_moa
            .entry(treatments[query].moa.clone())
            .or_default()
            .push(precision_sum / n_positive as f64);
    }
    let all: Vec<f64> = per_moa.values().flatten().copied().collect();
    let mean = |values: &[f64]| values.iter().sum::<f64>() / values.len().max(1) as f64;
    (
        mean(&all),
        per_moa
            .iter()
            .map(|(moa, values)| (moa.clone(), mean(values)))
            .collect(),
        all.len(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn treatment(
        compound: &str,
        concentration: f64,
        moa: &str,
        batch: &str,
        features: &[f64],
    ) -> Treatment {
        Treatment {
            compound: compound.into(),
            concentration,
            moa: moa.into(),
            batches: batch.split(';').map(String::from).collect(),
            features: features.to_vec(),
        }
    }

    /// A query (A, MoA X, week 1) whose nearest neighbour is its own compound at another dose;
    /// next comes a same-week treatment of MoA Y, then another-week treatment of MoA X.
    fn hand_built() -> Vec<Treatment> {
        vec![
            treatment("A", 0.1, "X", "W1", &[1.0, 0.0]),
            treatment("A", 1.0, "X", "W1", &[0.99, 0.01]),
            treatment("B", 1.0, "Y", "W1", &[0.95, 0.05]),
            treatment("C", 1.0, "X", "W2", &[0.8, 0.2]),
            treatment("D", 1.0, "Y", "W2", &[0.0, 1.0]),
            treatment("E", 1.0, "Y", "W3", &[0.1, 1.0]),
        ]
    }

    #[test]
    fn each_hold_out_rule_changes_the_answer() {
        let treatments = hand_built();
        let distances = distance_matrix(&treatments, Metric::Cosine);
        let all: Vec<usize> = (0..treatments.len()).collect();
        // Without any hold-out the nearest to A@0.1 would be A@1 (same compound): NSC skips it
        // and finds B (same week, wrong MoA).
        let nsc = evaluate(&treatments, &distances, &all, HoldOut::NotSameCompound);
        let query = nsc.predictions.iter().find(|p| p.query == 0).unwrap();
        assert_eq!((query.nearest, query.correct), (2, false));
        // NSCB also skips B (same week) and finds C (another week, right MoA).
        let nscb = evaluate(
            &treatments,
            &distances,
            &all,
            HoldOut::NotSameCompoundOrBatch,
        );
        let query = nscb.predictions.iter().find(|p| p.query == 0).unwrap();
        assert_eq!((query.nearest, query.correct), (3, true));
        assert_eq!(nscb.n_dropped, 0);
    }

    #[test]
    fn nscb_drops_moas_confined_to_one_batch() {
        let mut treatments = hand_built();
        treatments.push(treatment("F", 1.0, "Z", "W4", &[0.5, 0.5]));
        treatments.push(treatment("G", 1.0, "Z", "W4", &[0.5, 0.6]));
        let distances = distance_matrix(&treatments, Metric::Cosine);
        let all: Vec<usize> = (0..treatments.len()).collect();
        let nsc = evaluate(&treatments, &distances, &all, HoldOut::NotSameCompound);
        assert_eq!(nsc.predictions.len(), 8);
        let nscb = evaluate(
            &treatments,
            &distances,
            &all,
            HoldOut::NotSameCompoundOrBatch,
        );
        assert_eq!(nscb.n_dropped, 2, "MoA Z sits in one week only");
        assert_eq!(nscb.predictions.len(), 6);
        assert!(nscb
            .predictions
            .iter()
            .all(|p| treatments[p.nearest].moa != "Z"));
    }

    #[test]
    fn a_query_sharing_every_batch_is_dropped_not_ignored() {
        let mut treatments = hand_built();
        treatments.push(treatment("T", 1.0, "X", "W1;W2;W3", &[0.7, 0.3]));
        let distances = distance_matrix(&treatments, Metric::Cosine);
        let all: Vec<usize> = (0..treatments.len()).collect();
        let nscb = evaluate(
            &treatments,
            &distances,
            &all,
            HoldOut::NotSameCompoundOrBatch,
        );
        assert_eq!(nscb.n_dropped, 1);
        assert_eq!(nscb.predictions.len() + nscb.n_dropped, all.len());
        assert!(nscb
            .predictions
            .iter()
            .all(|p| p.query != 6 && p.nearest != 6));
    }

    #[test]
    fn ties_go_to_the_first_treatment_in_order() {
        let treatments = vec![
            treatment("A", 1.0, "X", "W1", &[1.0, 0.0]),
            treatment("B", 1.0, "Y", "W2", &[0.0, 1.0]),
            treatment("C", 1.0, "Z", "W3", &[0.0, 1.0]),
        ];
        let distances = distance_matrix(&treatments, Metric::Euclidean);
        let nsc = evaluate(
            &treatments,
            &distances,
            &[0, 1, 2],
            HoldOut::NotSameCompound,
        );
        assert_eq!(nsc.predictions[0].nearest, 1, "B and C tie; B comes first");
    }

    #[test]
    fn average_precision_by_hand() {
        let treatments = hand_built();
        let distances = distance_matrix(&treatments, Metric::Cosine);
        let all: Vec<usize> = (0..treatments.len()).collect();
        let (_, per_moa, n_queries) = mean_average_precision(&treatments, &distances, &all);
        assert_eq!(n_queries, 6);
        // A@0.1 ranks B (Y), C (X), E, D: one positive at rank 2 → AP 1/2. A@1 likewise → 1/2.
        // C ranks B (Y), A@1, A@0.1 (both X), ... → AP (1/2 + 2/3) / 2. MoA X is their mean.
        let expected = (0.5 + 0.5 + (0.5 + 2.0 / 3.0) / 2.0) / 3.0;
        assert!((per_moa["X"] - expected).abs() < 1e-12, "{per_moa:?}");
    }

    #[test]
    fn cosine_ignores_scale_and_euclidean_does_not() {
        let treatments = vec![
            treatment("A", 1.0, "X", "W1", &[1.0, 1.0]),
            treatment("B", 1.0, "X", "W1", &[10.0, 10.0]),
        ];
        assert!(distance_matrix(&treatments, Metric::Cosine)[0][1].abs() < 1e-12);
        assert!(
            (distance_matrix(&treatments, Metric::Euclidean)[0][1] - 162f64.sqrt()).abs() < 1e-9
        );
    }
}
