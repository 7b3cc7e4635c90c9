//! `--preset cpjump1`: a small screen in the manner of CPJUMP1 (the second seed's data): many
//! compound treatments at one dose, five Cell Painting channels (DNA, RNA, ER, AGP, Mito), DMSO
//! the majority of wells, several plates with their own acquisition, CellProfiler / pycytominer
//! style tables (`Metadata_*`, `Image_FileName_<channel>`, `Image_PathName_<channel>`).
//!
//! Each compound takes one of the twelve MoA phenotypes of the BBBC021 biology ([`crate::phenotype`])
//! with its own strength, off-target changes and potency, so compounds of one MoA look alike and
//! the treatment-classification task is hard in the same way as CPJUMP1's. The cells are drawn in
//! the three stains the biology models; DNA, AGP (F-actin, Golgi, plasma membrane) and Mito (the
//! cytoplasmic network drawn as tubulin) are those drawings, RNA (nucleoli and cytoplasm) and ER
//! (perinuclear and cytoplasmic) are mixtures of them. The latter two add their own gain,
//! background and noise but no biology of their own.

use std::fmt::Write as _;
use std::path::Path;

use anyhow::Context;
use indicatif::ProgressBar;
use rayon::prelude::*;

use crate::layout::{Field, Well};
use crate::phenotype::{CompoundEffect, MOAS};
use crate::render::{acquire_planes, ACTIN, DNA, TUBULIN};
use crate::rng::Rng;
use crate::tiff_io::write_tiff;
use crate::{draw_field, FieldSize};

/// The Cell Painting channels, in file and tensor order.
pub const CHANNELS: [&str; 5] = ["DNA", "RNA", "ER", "AGP", "Mito"];
/// CPJUMP1 profiled every compound at 5 µM.
pub const CONCENTRATION_UM: f64 = 5.0;
pub const IMAGE_TABLE: &str = "cpjump1_images.csv";
pub const MOA_TABLE: &str = "cpjump1_moa.csv";

/// The shape of the screen.
#[derive(Debug, Clone, Copy)]
pub struct Design {
    pub n_compounds: usize,
    pub n_plates: usize,
    /// Every compound has one well per plate; DMSO this many.
    pub dmso_wells_per_plate: usize,
    pub sites: u32,
}

/// A compound: a Broad-style identifier and its MoA.
#[derive(Debug, Clone)]
pub struct Compound {
    pub name: String,
    pub moa: String,
}

/// The compounds of the screen: MoAs in turn (so every MoA has compounds once there are twelve),
/// names drawn from the seed.
pub fn compounds(seed: u64, n: usize) -> Vec<Compound> {
    let mut rng = Rng::for_name(seed, "cpjump1/compounds");
    (0..n)
        .map(|index| Compound {
            name: format!("BRD-K{:08}", rng.next_u64() % 100_000_000),
            moa: MOAS[index % MOAS.len()].to_string(),
        })
        .collect()
}

/// Well names of a 384-well plate in row-major order (`A01`, `A02`, ..., `P24`).
fn well_name(index: usize) -> String {
    let row = (b'A' + (index / 24) as u8) as char;
    format!("{row}{:02}", index % 24 + 1)
}

/// Every field: on each plate the compounds' wells and the DMSO wells in a seeded order (so DMSO
/// is scattered over the plate, as in CPJUMP1's layouts), then the sites of each well.
pub fn fields(seed: u64, design: &Design, compounds: &[Compound]) -> Vec<Field> {
    let mut fields = Vec::new();
    for plate_index in 0..design.n_plates {
        let plate = format!("BR{:08}", 117_000 + plate_index * 7 + 3);
        let mut contents: Vec<(String, f64, String)> = compounds
            .iter()
            .map(|c| (c.name.clone(), CONCENTRATION_UM, c.moa.clone()))
            .collect();
        contents.extend(
            (0..design.dmso_wells_per_plate).map(|_| ("DMSO".to_string(), 0.0, "DMSO".to_string())),
        );
        let mut rng = Rng::for_name(seed, &format!("cpjump1/platemap/{plate}"));
        for last in (1..contents.len()).rev() {
            contents.swap(last, rng.below(last + 1));
        }
        for (well_index, (compound, concentration, moa)) in contents.into_iter().enumerate() {
            let well = Well {
                plate: plate.clone(),
                well: well_name(well_index),
                compound,
                concentration,
                replicate: plate_index as u32 + 1,
                moa: Some(moa),
            };
            for site in 1..=design.sites {
                let stem = format!("{}_s{site}", well.well);
                fields.push(Field {
                    well: well.clone(),
                    site,
                    image_number: fields.len() + 1,
                    file_names: [
                        format!("{stem}_DNA.tif"),
                        format!("{stem}_RNA.tif"),
                        format!("{stem}_ER.tif"),
                    ],
                });
            }
        }
    }
    fields
}

/// The five 16-bit channels of one field.
pub fn render(seed: u64, field: &Field, effect: &CompoundEffect, size: FieldSize) -> Vec<Vec<u16>> {
    let (canvas, mut rng, acquisition) = draw_field(seed, field, effect, size);
    let planes = canvas.planes;
    let mix = |weights: [f32; 3]| -> Vec<f32> {
        (0..planes[0].len())
            .map(|i| {
                weights[DNA] * planes[DNA][i]
                    + weights[ACTIN] * planes[ACTIN][i]
                    + weights[TUBULIN] * planes[TUBULIN][i]
            })
            .collect()
    };
    let [dna_gain, actin_gain, tubulin_gain] = acquisition.gain;
    let [dna_background, actin_background, tubulin_background] = acquisition.background;
    let channels = vec![
        (planes[DNA].clone(), dna_gain, dna_background),
        // RNA: nucleoli and cytoplasmic RNA.
        (mix([0.35, 0.45, 0.2]), dna_gain, 0.8 * dna_background),
        // ER: perinuclear, spread through the cytoplasm.
        (
            mix([0.15, 0.25, 0.6]),
            tubulin_gain,
            0.9 * tubulin_background,
        ),
        (planes[ACTIN].clone(), actin_gain, actin_background),
        (planes[TUBULIN].clone(), tubulin_gain, tubulin_background),
    ];
    acquire_planes(channels, size.width, size.height, &mut rng, &acquisition)
}

/// Writes the screen into `folder` (which exists and is empty): one folder per plate, five TIFFs
/// per field, the image table and the MoA table. Returns the number of fields.
pub fn write(
    folder: &Path,
    seed: u64,
    design: &Design,
    size: FieldSize,
    progress: &ProgressBar,
) -> anyhow::Result<Vec<Field>> {
    let compounds = compounds(seed, design.n_compounds);
    let fields = fields(seed, design, &compounds);
    let effects: std::collections::BTreeMap<&str, CompoundEffect> = compounds
        .iter()
        .map(|c| {
            (
                c.name.as_str(),
                CompoundEffect::new(seed, &c.name, &c.moa, &[CONCENTRATION_UM]),
            )
        })
        .collect();
    let control = CompoundEffect::control();
    for plate in fields
        .iter()
        .map(|f| f.well.plate.as_str())
        .collect::<std::collections::BTreeSet<_>>()
    {
        std::fs::create_dir_all(folder.join(plate))
            .with_context(|| format!("creating {}", folder.join(plate).display()))?;
    }
    progress.set_length(fields.len() as u64);
    fields
        .par_iter()
        .try_for_each(|field| -> anyhow::Result<()> {
            let effect = effects
                .get(field.well.compound.as_str())
                .unwrap_or(&control);
            let images = render(seed, field, effect, size);
            for (channel, pixels) in CHANNELS.iter().zip(&images) {
                let path = folder
                    .join(&field.well.plate)
                    .join(format!("{}_s{}_{channel}.tif", field.well.well, field.site));
                write_tiff(&path, size.width, size.height, pixels)?;
            }
            progress.inc(1);
            Ok(())
        })?;

    let mut table = String::from(
        "Metadata_Plate,Metadata_Well,Metadata_Site,Metadata_Compound,Metadata_Concentration",
    );
    for channel in CHANNELS {
        write!(table, ",Image_FileName_{channel},Image_PathName_{channel}")?;
    }
    table.push('\n');
    for field in &fields {
        let well = &field.well;
        write!(
            table,
            "{},{},{},{},{}",
            well.plate, well.well, field.site, well.compound, well.concentration
        )?;
        for channel in CHANNELS {
            write!(
                table,
                ",{}_s{}_{channel}.tif,{}",
                well.well, field.site, well.plate
            )?;
        }
        table.push('\n');
    }
    std::fs::write(folder.join(IMAGE_TABLE), table)?;
    let mut moa = String::from("compound,concentration,moa\nDMSO,0,DMSO\n");
    for compound in &compounds {
        writeln!(moa, "{},{CONCENTRATION_UM},{}", compound.name, compound.moa)?;
    }
    std::fs::write(folder.join(MOA_TABLE), moa)?;
    Ok(fields)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dmso_is_the_majority_class_and_every_compound_is_on_every_plate() {
        let design = Design {
            n_compounds: 30,
            n_plates: 3,
            dmso_wells_per_plate: 40,
            sites: 2,
        };
        let compounds = compounds(4, design.n_compounds);
        let fields = fields(4, &design, &compounds);
        assert_eq!(fields.len(), 3 * (30 + 40) * 2);
        let dmso = fields.iter().filter(|f| f.well.compound == "DMSO").count();
        assert_eq!(dmso, 3 * 40 * 2);
        for compound in &compounds {
            let plates: std::collections::BTreeSet<&str> = fields
                .iter()
                .filter(|f| f.well.compound == compound.name)
                .map(|f| f.well.plate.as_str())
                .collect();
            assert_eq!(plates.len(), 3);
        }
        let names: std::collections::BTreeSet<&str> =
            compounds.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(names.len(), 30, "compound names are distinct");
    }

    #[test]
    fn five_channels_differ_and_carry_signal() {
        let design = Design {
            n_compounds: 2,
            n_plates: 1,
            dmso_wells_per_plate: 1,
            sites: 1,
        };
        let compounds = compounds(1, 2);
        let field = &fields(1, &design, &compounds)[0];
        let size = FieldSize {
            width: 128,
            height: 128,
            mean_cells: 8.0,
        };
        let images = render(1, field, &CompoundEffect::control(), size);
        assert_eq!(images.len(), 5);
        for (i, a) in images.iter().enumerate() {
            assert_eq!(a.len(), 128 * 128);
            for b in &images[i + 1..] {
                assert_ne!(a, b);
            }
        }
    }
}
