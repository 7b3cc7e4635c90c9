//! Plate controls: the positive-control wells a screen repeats on every plate, which the published
//! per-well BBBC021 profiles (Ljosa et al. 2013) leave out of the treatment profiles.
//!
//! On BBBC021, taxol at 0.3 µM is both one of the 103 treatments (three dose-series wells on the
//! Week1 plates) and the positive control (wells B11, C11, D11, E02, F02, G02 of all 55 plates).
//! Kept together, the treatment's wells span all ten weeks, so under NSCB it has no admissible
//! candidate and the benchmark's 92 queries (10 MoAs) become 91. The rule below finds such wells
//! from the layout alone, without naming a compound:
//!
//! a well is a positive-control well when its treatment (not the negative control) sits at that
//! same well position on **every** plate of the screen, on a screen of at least two plates whose
//! plates do not all carry the same treatments (a screen of replicate plates with one plate map
//! has no way to tell a control from a treatment, and nothing is set aside there).
//!
//! The treatment's other wells (taxol's Week1 dose series) stay, so the treatment keeps its
//! profile, from the wells the published table has.

use std::collections::{BTreeMap, BTreeSet};

use phenoflow_schemas::concentration_key;

use crate::wells::Wells;

/// What the rule found: the wells to set aside, and per treatment the positions it holds on
/// every plate.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PlateControls {
    /// Indices into the well table, ascending.
    pub wells: Vec<usize>,
    /// (compound, concentration, positions), in (compound, concentration) order.
    pub treatments: Vec<(String, f64, Vec<String>)>,
}

impl PlateControls {
    /// `taxol @ 0.3 (B11, C11, …)` per treatment, for messages and the provenance.
    pub fn describe(&self) -> Vec<String> {
        self.treatments
            .iter()
            .map(|(compound, concentration, positions)| {
                format!("{compound} @ {concentration} ({})", positions.join(", "))
            })
            .collect()
    }
}

/// Finds the positive-control wells of `wells` (see the module documentation).
pub fn find(wells: &Wells, negative_control: &str) -> PlateControls {
    type Key = (String, i64);
    // plate → treatment → positions
    let mut layout: BTreeMap<&str, BTreeMap<Key, BTreeSet<&str>>> = BTreeMap::new();
    for row in 0..wells.plate.len() {
        layout
            .entry(wells.plate[row].as_str())
            .or_default()
            .entry((
                wells.compound[row].clone(),
                concentration_key(wells.concentration[row]),
            ))
            .or_default()
            .insert(wells.well[row].as_str());
    }
    if layout.len() < 2 {
        return PlateControls::default();
    }
    let mut plates = layout.values();
    let first: BTreeSet<&Key> = plates.next().expect("two plates").keys().collect();
    if plates.all(|plate| plate.keys().collect::<BTreeSet<_>>() == first) {
        return PlateControls::default();
    }
    let mut control_positions: BTreeMap<Key, BTreeSet<&str>> = BTreeMap::new();
    for key in first {
        if key.0 == negative_control {
            continue;
        }
        let mut positions: Option<BTreeSet<&str>> = None;
        for plate in layout.values() {
            let Some(here) = plate.get(key) else {
                positions = Some(BTreeSet::new());
                break;
            };
            positions = Some(match positions {
                None => here.clone(),
                Some(so_far) => so_far.intersection(here).copied().collect(),
            });
        }
        let positions = positions.unwrap_or_default();
        if !positions.is_empty() {
            control_positions.insert(key.clone(), positions);
        }
    }
    let mut out = PlateControls::default();
    for row in 0..wells.plate.len() {
        let key = (
            wells.compound[row].clone(),
            concentration_key(wells.concentration[row]),
        );
        if control_positions
            .get(&key)
            .is_some_and(|positions| positions.contains(wells.well[row].as_str()))
        {
            out.wells.push(row);
        }
    }
    for ((compound, concentration), positions) in control_positions {
        out.treatments.push((
            compound,
            concentration as f64 / 1e6,
            positions.into_iter().map(String::from).collect(),
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn wells(rows: &[(&str, &str, &str, f64)]) -> Wells {
        let mut out = Wells::default();
        for (plate, well, compound, concentration) in rows {
            out.plate.push(plate.to_string());
            out.well.push(well.to_string());
            out.compound.push(compound.to_string());
            out.concentration.push(*concentration);
            out.moa.push(None);
            out.batch.push(plate.split('_').next().unwrap().to_string());
            out.count.push(1);
            out.features.push(vec![0.0]);
        }
        out
    }

    #[test]
    fn a_treatment_at_the_same_positions_on_every_plate_is_a_control_there_only() {
        let table = wells(&[
            ("W1_1", "B02", "DMSO", 0.0),
            ("W1_1", "B11", "taxol", 0.3),
            ("W1_1", "D05", "taxol", 0.3),
            ("W1_1", "C03", "a", 1.0),
            ("W2_1", "B02", "DMSO", 0.0),
            ("W2_1", "B11", "taxol", 0.3),
            ("W2_1", "C03", "b", 1.0),
        ]);
        let found = find(&table, "DMSO");
        assert_eq!(found.wells, vec![1, 5]);
        assert_eq!(found.describe(), vec!["taxol @ 0.3 (B11)"]);
    }

    #[test]
    fn replicate_plates_of_one_map_and_single_plates_have_no_plate_controls() {
        let replicates = wells(&[
            ("W1_1", "B11", "taxol", 0.3),
            ("W1_1", "C03", "a", 1.0),
            ("W1_2", "B11", "taxol", 0.3),
            ("W1_2", "C03", "a", 1.0),
        ]);
        assert_eq!(find(&replicates, "DMSO"), PlateControls::default());
        let single = wells(&[("W1_1", "B11", "taxol", 0.3), ("W1_1", "C03", "a", 1.0)]);
        assert_eq!(find(&single, "DMSO"), PlateControls::default());
    }

    #[test]
    fn a_treatment_on_every_plate_at_moving_positions_is_not_a_control() {
        let table = wells(&[
            ("W1_1", "B11", "taxol", 0.3),
            ("W1_1", "C03", "a", 1.0),
            ("W2_1", "C11", "taxol", 0.3),
            ("W2_1", "C03", "b", 1.0),
        ]);
        assert_eq!(find(&table, "DMSO"), PlateControls::default());
    }
}
