//! Wells → treatments: every treatment's wells aggregated (median or mean) and their batches
//! joined.

use std::collections::{BTreeMap, BTreeSet};

use phenoflow_schemas::concentration_key;

use crate::args::Aggregation;
use crate::input_error;
use crate::normalize;
use crate::wells::Wells;

/// Treatment profiles: the median (or mean) of each treatment's wells.
#[derive(Debug, Clone, Default)]
pub struct Treatments {
    pub compound: Vec<String>,
    pub concentration: Vec<f64>,
    pub moa: Vec<Option<String>>,
    pub batches: Vec<String>,
    pub count: Vec<i64>,
    pub features: Vec<Vec<f64>>,
}

pub(crate) fn aggregate_treatments(
    wells: &Wells,
    aggregation: Aggregation,
) -> anyhow::Result<Treatments> {
    let mut groups: BTreeMap<(String, i64), Vec<usize>> = BTreeMap::new();
    for row in 0..wells.plate.len() {
        groups
            .entry((
                wells.compound[row].clone(),
                concentration_key(wells.concentration[row]),
            ))
            .or_default()
            .push(row);
    }
    let mut out = Treatments::default();
    for ((compound, _), rows) in groups {
        let moas: BTreeSet<Option<&String>> = rows.iter().map(|&r| wells.moa[r].as_ref()).collect();
        if moas.len() > 1 {
            return Err(input_error(format!(
                "treatment ({compound}, {}) has wells with different MoAs: {moas:?}",
                wells.concentration[rows[0]]
            )));
        }
        let batches: BTreeSet<&str> = rows.iter().map(|&r| wells.batch[r].as_str()).collect();
        let n_features = wells.feature_names.len();
        let profile: Vec<f64> = (0..n_features)
            .map(|f| {
                let mut values: Vec<f64> = rows.iter().map(|&r| wells.features[r][f]).collect();
                match aggregation {
                    Aggregation::Mean => values.iter().sum::<f64>() / values.len() as f64,
                    Aggregation::Median => normalize::median(&mut values),
                }
            })
            .collect();
        out.compound.push(compound);
        out.concentration.push(wells.concentration[rows[0]]);
        out.moa.push(wells.moa[rows[0]].clone());
        out.batches
            .push(batches.into_iter().collect::<Vec<_>>().join(";"));
        out.count.push(rows.len() as i64);
        out.features.push(profile);
    }
    Ok(out)
}
