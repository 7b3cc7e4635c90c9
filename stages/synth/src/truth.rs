//! The ground truth pf-synth writes beside its screen: every drawn cell (field, nucleus centre,
//! look) and every treatment with its compound's MoA, so a pipeline's numbers can be checked
//! against what was drawn.

use std::collections::BTreeMap;

use crate::layout;
use crate::layout::{concentration_key, Field};
use crate::phenotype;
use crate::phenotype::CompoundEffect;
use crate::DrawnCell;

/// The header of `ground_truth_cells.csv`.
pub fn ground_truth_cells_header() -> String {
    let mut header = String::from(
        "Metadata_Plate,Metadata_Well,Metadata_Site,Metadata_Compound,Metadata_Concentration,\
         Metadata_MoA,Metadata_Batch,Metadata_CellNumber,Metadata_Location_Center_X,\
         Metadata_Location_Center_Y",
    );
    for name in phenotype::PARAM_NAMES {
        header.push_str(",Cells_Truth_");
        header.push_str(name);
    }
    header
}

/// The rows of `ground_truth_cells.csv` for one field's drawn cells.
pub fn ground_truth_rows(field: &Field, cells: &[DrawnCell]) -> String {
    let well = &field.well;
    let mut rows = String::with_capacity(cells.len() * 320);
    for (number, ((x, y), look)) in cells.iter().enumerate() {
        rows.push_str(&format!(
            "{},{},{},{},{},{},{},{},{x},{y}",
            layout::csv_field(&well.plate),
            layout::csv_field(&well.well),
            field.site,
            layout::csv_field(&well.compound),
            well.concentration,
            layout::csv_field(well.moa.as_deref().unwrap_or("")),
            layout::csv_field(well.week()),
            number + 1,
        ));
        for value in look {
            rows.push_str(&format!(",{value}"));
        }
        rows.push('\n');
    }
    rows
}

/// `ground_truth_treatments.csv`: every treatment of the screen with its compound's MoA (as
/// drawn), strength and EC50, and the response at its concentration.
pub fn ground_truth_treatments(
    fields: &[Field],
    effects: &BTreeMap<String, CompoundEffect>,
) -> String {
    let mut seen = std::collections::BTreeSet::new();
    let mut table = String::from(
        "Metadata_Compound,Metadata_Concentration,Metadata_MoA,Truth_Strength,Truth_EC50_uM,Truth_Response\n",
    );
    for field in fields {
        let well = &field.well;
        if !seen.insert((well.compound.clone(), concentration_key(well.concentration))) {
            continue;
        }
        let effect = &effects[&well.compound];
        table.push_str(&format!(
            "{},{},{},{},{},{}\n",
            layout::csv_field(&well.compound),
            well.concentration,
            layout::csv_field(well.moa.as_deref().unwrap_or("")),
            effect.strength,
            effect.ec50_um,
            effect.response(well.concentration),
        ));
    }
    table
}
