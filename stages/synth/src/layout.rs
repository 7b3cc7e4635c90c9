//! The layout of the synthetic screen: the real BBBC021 plate map (55 plates in 10 weeks, 60 wells
//! each, 6 DMSO wells per plate, each compound in one week, three replicate wells per treatment
//! on different plates), the real MoA table, and the selection of weeks, replicates and sites that
//! sets the size. Both tables are embedded (derived from the published `BBBC021_v1_image.csv` and
//! copied from `BBBC021_v1_moa.csv`, CR line endings and all).

use std::collections::BTreeMap;

use crate::rng::Rng;

/// One row per well of the real screen: plate, well, compound, concentration, replicate.
const PLATE_MAP: &str = include_str!("../data/bbbc021_platemap.csv");
/// The published MoA table, byte for byte.
pub const MOA_TABLE: &str = include_str!("../data/BBBC021_v1_moa.csv");

/// The header of the published `BBBC021_v1_image.csv`, byte for byte.
pub const IMAGE_TABLE_HEADER: &str = "TableNumber,ImageNumber,\"Image_FileName_DAPI\",\"Image_PathName_DAPI\",\"Image_FileName_Tubulin\",\"Image_PathName_Tubulin\",\"Image_FileName_Actin\",\"Image_PathName_Actin\",\"Image_Metadata_Plate_DAPI\",\"Image_Metadata_Well_DAPI\",Replicate,\"Image_Metadata_Compound\",Image_Metadata_Concentration";

/// One well of the plate map.
#[derive(Debug, Clone, PartialEq)]
pub struct Well {
    pub plate: String,
    pub well: String,
    pub compound: String,
    pub concentration: f64,
    pub replicate: u32,
    /// From the MoA table; `None` for the compounds BBBC021 does not annotate.
    pub moa: Option<String>,
}

impl Well {
    /// `Week4` for plate `Week4_27481`.
    pub fn week(&self) -> &str {
        self.plate.split('_').next().unwrap_or(&self.plate)
    }

    /// The week's number (`Week10` → 10).
    pub fn week_number(&self) -> u32 {
        self.week().trim_start_matches("Week").parse().unwrap_or(0)
    }
}

/// One field to generate.
#[derive(Debug, Clone)]
pub struct Field {
    pub well: Well,
    pub site: u32,
    /// `ImageNumber`, from 1 in table order.
    pub image_number: usize,
    /// File names of the DAPI (w1), tubulin (w2) and actin (w4) images.
    pub file_names: [String; 3],
}

impl Field {
    /// `Week4/Week4_27481`, as in `Image_PathName_*`.
    pub fn folder(&self) -> String {
        format!("{}/{}", self.well.week(), self.well.plate)
    }
}

/// (compound, concentration key) → MoA, from the embedded MoA table.
pub fn moa_by_treatment() -> BTreeMap<(String, i64), String> {
    MOA_TABLE
        .split(['\r', '\n'])
        .skip(1)
        .filter(|line| !line.trim().is_empty())
        .map(|line| {
            let parts: Vec<&str> = line.split(',').collect();
            let concentration: f64 = parts[1].parse().expect("embedded MoA table is well formed");
            (
                (parts[0].to_string(), concentration_key(concentration)),
                parts[2].to_string(),
            )
        })
        .collect()
}

/// Concentrations are matched as numbers, at 1e-6 µM.
pub fn concentration_key(concentration: f64) -> i64 {
    (concentration * 1e6).round() as i64
}

/// Every well of the real screen, in plate-map order, with its MoA where annotated.
pub fn plate_map() -> Vec<Well> {
    let moas = moa_by_treatment();
    PLATE_MAP
        .lines()
        .skip(1)
        .filter(|line| !line.is_empty())
        .map(|line| {
            // plate,well,compound,concentration,replicate; compound names may hold a comma
            // (`"ICI-182,780"`), so the outer fields are split off from both ends.
            let mut head = line.splitn(3, ',');
            let (plate, well, rest) = (head.next(), head.next(), head.next());
            let mut tail = rest
                .expect("embedded plate map is well formed")
                .rsplitn(3, ',');
            let (replicate, concentration, compound) = (tail.next(), tail.next(), tail.next());
            let compound = compound
                .expect("embedded plate map is well formed")
                .trim_matches('"');
            let concentration: f64 = concentration
                .and_then(|c| c.parse().ok())
                .expect("embedded plate map is well formed");
            Well {
                plate: plate.expect("plate").to_string(),
                well: well.expect("well").to_string(),
                compound: compound.to_string(),
                concentration,
                replicate: replicate.and_then(|r| r.parse().ok()).expect("replicate"),
                moa: moas
                    .get(&(compound.to_string(), concentration_key(concentration)))
                    .cloned(),
            }
        })
        .collect()
}

/// Which part of the screen to generate.
#[derive(Debug, Clone)]
pub struct Selection {
    /// Only wells whose treatment has an MoA (the 962 wells, 3,848 fields, the benchmark uses); otherwise all
    /// 3,300 wells, the unannotated compounds drawn as controls with weak random effects.
    pub annotated_only: bool,
    /// Weeks to keep (all when empty).
    pub weeks: Vec<String>,
    /// Keep treatment wells of replicates 1..=max_replicate (DMSO wells are kept on every plate
    /// that has a kept treatment well).
    pub max_replicate: u32,
    /// Keep at most this many DMSO wells per plate.
    pub dmso_wells_per_plate: usize,
    /// Sites per well (1–4).
    pub sites: u32,
}

/// The fields to generate, in image-table order (plate, well, site).
pub fn select_fields(selection: &Selection, seed: u64) -> Vec<Field> {
    let wells: Vec<Well> = plate_map()
        .into_iter()
        .filter(|well| {
            selection.weeks.is_empty() || selection.weeks.iter().any(|w| w == well.week())
        })
        .filter(|well| !selection.annotated_only || well.moa.is_some())
        .collect();
    let is_dmso = |well: &Well| well.compound == "DMSO";
    let kept_treatments: Vec<&Well> = wells
        .iter()
        .filter(|well| !is_dmso(well) && well.replicate <= selection.max_replicate)
        .collect();
    let plates: std::collections::BTreeSet<&str> = kept_treatments
        .iter()
        .map(|well| well.plate.as_str())
        .collect();
    let mut dmso_per_plate: BTreeMap<&str, usize> = BTreeMap::new();
    let mut kept = Vec::new();
    for well in &wells {
        if !plates.contains(well.plate.as_str()) {
            continue;
        }
        if is_dmso(well) {
            let count = dmso_per_plate.entry(well.plate.as_str()).or_insert(0);
            if *count >= selection.dmso_wells_per_plate {
                continue;
            }
            *count += 1;
        } else if well.replicate > selection.max_replicate {
            continue;
        }
        kept.push(well.clone());
    }
    let mut fields = Vec::new();
    for well in kept {
        for site in 1..=selection.sites {
            let mut rng = Rng::for_name(seed, &format!("guid/{}/{}/{site}", well.plate, well.well));
            let file_names = [1, 2, 4].map(|wavelength| {
                format!("{}_s{site}_w{wavelength}{}.tif", well.well, guid(&mut rng))
            });
            fields.push(Field {
                image_number: fields.len() + 1,
                well: well.clone(),
                site,
                file_names,
            });
        }
    }
    fields
}

/// A GUID in the style of the BBBC021 file names (`BEDC2073-A983-4B98-95E9-84466707A25D`).
fn guid(rng: &mut Rng) -> String {
    let (a, b) = (rng.next_u64(), rng.next_u64());
    format!(
        "{:08X}-{:04X}-{:04X}-{:04X}-{:012X}",
        a >> 32,
        (a >> 16) & 0xFFFF,
        a & 0xFFFF,
        b >> 48,
        b & 0xFFFF_FFFF_FFFF
    )
}

/// A CSV field, quoted (with doubled quotes) when it holds a comma, a quote or a line break.
pub fn csv_field(value: &str) -> String {
    if value.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", value.replace('"', "\"\""))
    } else {
        value.to_string()
    }
}

/// One row of the image table for `field`.
pub fn image_table_row(field: &Field) -> String {
    let folder = field.folder();
    let well = &field.well;
    format!(
        "{},{},\"{}\",\"{folder}\",\"{}\",\"{folder}\",\"{}\",\"{folder}\",\"{}\",\"{}\",{},\"{}\",{:.6}",
        well.week_number(),
        field.image_number,
        field.file_names[0],
        field.file_names[1],
        field.file_names[2],
        well.plate,
        well.well,
        well.replicate,
        well.compound,
        well.concentration
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plate_map_is_the_real_screen() {
        let wells = plate_map();
        assert_eq!(wells.len(), 3300, "55 plates x 60 wells");
        let annotated = wells.iter().filter(|w| w.moa.is_some()).count();
        let dmso = wells.iter().filter(|w| w.compound == "DMSO").count();
        assert_eq!(
            (annotated, dmso),
            (962, 330),
            "632 treated + 330 DMSO wells (3,848 fields)"
        );
        let weeks: std::collections::BTreeSet<&str> = wells.iter().map(Well::week).collect();
        assert_eq!(weeks.len(), 10);
        assert_eq!(moa_by_treatment().len(), 104);
    }

    #[test]
    fn full_selection_gives_13200_fields_and_annotated_3848_fields_at_four_sites() {
        let mut selection = Selection {
            annotated_only: false,
            weeks: vec![],
            max_replicate: 3,
            dmso_wells_per_plate: 60,
            sites: 4,
        };
        assert_eq!(select_fields(&selection, 1).len(), 13_200);
        selection.annotated_only = true;
        assert_eq!(select_fields(&selection, 1).len(), 3_848);
    }

    #[test]
    fn a_small_selection_keeps_dmso_on_its_plates() {
        let selection = Selection {
            annotated_only: true,
            weeks: vec!["Week1".into()],
            max_replicate: 1,
            dmso_wells_per_plate: 2,
            sites: 1,
        };
        let fields = select_fields(&selection, 1);
        assert!(!fields.is_empty());
        assert!(fields
            .iter()
            .all(|f| f.well.week() == "Week1" && f.well.moa.is_some()));
        assert!(fields.iter().any(|f| f.well.compound == "DMSO"));
        assert!(fields
            .iter()
            .all(|f| f.well.compound == "DMSO" || f.well.replicate == 1));
        let row = image_table_row(&fields[0]);
        assert_eq!(
            row.split(',').count(),
            IMAGE_TABLE_HEADER.split(',').count()
        );
    }
}
