//! The biology of the synthetic screen: what a cell looks like (a vector of morphology and stain
//! parameters), how each mechanism of action changes it, how strongly at a given dose, how
//! compounds of one MoA differ, how cells within a well differ, and how batches (weeks) and plates
//! shift the measurements. The phenotypes are documented in the stage's README.

use crate::rng::Rng;

/// The parameters of one cell's appearance, indexed by [`P`].
pub type Look = [f32; N_PARAMS];

/// Names of the entries of a [`Look`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(usize)]
pub enum P {
    /// Nucleus radius (px).
    NucleusRadius,
    /// Nucleus elongation (≥ 1).
    NucleusAspect,
    /// DNA stain intensity of the nucleus.
    Dna,
    /// Graininess of the chromatin (0–1).
    Texture,
    /// Chromatin condensation of a mitotic cell (0–1): a smaller, brighter, lobed nucleus.
    Condensation,
    /// Expected number of extra nuclei (multinucleation).
    ExtraNuclei,
    /// Expected number of micronuclei (fragmented DNA).
    Micronuclei,
    /// Cell radius (px).
    CellRadius,
    /// Cell elongation (≥ 1); 1 is a rounded cell.
    CellAspect,
    /// F-actin at the cell cortex.
    ActinCortex,
    /// F-actin in the cytoplasm.
    ActinInterior,
    /// Number of actin stress fibres.
    ActinFibres,
    /// Number of actin aggregates.
    ActinAggregates,
    /// β-tubulin in filaments.
    TubulinFilaments,
    /// Diffuse β-tubulin.
    TubulinDiffuse,
    /// Filament width (px): bundles are thick.
    FilamentWidth,
    /// A bright central microtubule aster (monopolar spindle).
    Aster,
    /// A bright perinuclear tubulin spot (aggresome).
    Aggresome,
    /// Overall brightness of all stains.
    Brightness,
    /// How strongly cells of the field cluster (field level).
    Clustering,
    /// Relative number of cells per field (field level).
    Density,
}

pub const N_PARAMS: usize = P::Density as usize + 1;

/// The entries of a [`Look`] in [`P`] order, as the ground-truth columns name them
/// (`Cells_Truth_<name>`).
pub const PARAM_NAMES: [&str; N_PARAMS] = [
    "NucleusRadius",
    "NucleusAspect",
    "Dna",
    "Texture",
    "Condensation",
    "ExtraNuclei",
    "Micronuclei",
    "CellRadius",
    "CellAspect",
    "ActinCortex",
    "ActinInterior",
    "ActinFibres",
    "ActinAggregates",
    "TubulinFilaments",
    "TubulinDiffuse",
    "FilamentWidth",
    "Aster",
    "Aggresome",
    "Brightness",
    "Clustering",
    "Density",
];

/// An untreated (DMSO) MCF-7 cell at 20×, in the units of [`P`].
pub fn control_look() -> Look {
    let mut look = [0.0; N_PARAMS];
    look[P::NucleusRadius as usize] = 10.0;
    look[P::NucleusAspect as usize] = 1.2;
    look[P::Dna as usize] = 2600.0;
    look[P::Texture as usize] = 0.15;
    look[P::CellRadius as usize] = 24.0;
    look[P::CellAspect as usize] = 1.35;
    look[P::ActinCortex as usize] = 900.0;
    look[P::ActinInterior as usize] = 300.0;
    look[P::ActinFibres as usize] = 3.0;
    look[P::TubulinFilaments as usize] = 1800.0;
    look[P::TubulinDiffuse as usize] = 250.0;
    look[P::FilamentWidth as usize] = 1.0;
    look[P::Brightness as usize] = 1.0;
    look[P::Density as usize] = 1.0;
    look
}

/// The twelve MoAs of BBBC021, in alphabetical order.
pub const MOAS: [&str; 12] = [
    "Actin disruptors",
    "Aurora kinase inhibitors",
    "Cholesterol-lowering",
    "DNA damage",
    "DNA replication",
    "Eg5 inhibitors",
    "Epithelial",
    "Kinase inhibitors",
    "Microtubule destabilizers",
    "Microtubule stabilizers",
    "Protein degradation",
    "Protein synthesis",
];

/// The look of a fully affected cell of each MoA. Unknown MoAs (and DMSO) look like controls.
pub fn moa_target(moa: &str) -> Look {
    let mut look = control_look();
    let mut set = |param: P, value: f32| look[param as usize] = value;
    let base = control_look();
    let scaled = |param: P, factor: f32| base[param as usize] * factor;
    match moa {
        "Actin disruptors" => {
            set(P::ActinAggregates, 9.0);
            set(P::ActinFibres, 0.0);
            set(P::ActinCortex, scaled(P::ActinCortex, 0.45));
            set(P::CellRadius, scaled(P::CellRadius, 0.85));
        }
        "Aurora kinase inhibitors" => {
            set(P::ExtraNuclei, 2.2);
            set(P::NucleusRadius, scaled(P::NucleusRadius, 1.2));
            set(P::CellRadius, scaled(P::CellRadius, 1.45));
            set(P::Dna, scaled(P::Dna, 1.15));
        }
        "Cholesterol-lowering" => {
            set(P::CellRadius, scaled(P::CellRadius, 1.1));
            set(P::ActinInterior, scaled(P::ActinInterior, 1.3));
            set(P::TubulinDiffuse, scaled(P::TubulinDiffuse, 1.2));
        }
        "DNA damage" => {
            set(P::NucleusRadius, scaled(P::NucleusRadius, 1.35));
            set(P::Micronuclei, 3.0);
            set(P::Texture, 0.55);
            set(P::CellRadius, scaled(P::CellRadius, 1.2));
        }
        "DNA replication" => {
            set(P::NucleusRadius, scaled(P::NucleusRadius, 1.25));
            set(P::Dna, scaled(P::Dna, 1.35));
            set(P::Texture, 0.35);
            set(P::CellRadius, scaled(P::CellRadius, 1.1));
        }
        "Eg5 inhibitors" => {
            set(P::Condensation, 1.0);
            set(P::CellAspect, 1.0);
            set(P::CellRadius, scaled(P::CellRadius, 0.7));
            set(P::Aster, 1800.0);
            set(P::TubulinFilaments, scaled(P::TubulinFilaments, 0.5));
        }
        "Epithelial" => {
            set(P::Clustering, 1.0);
            set(P::CellRadius, scaled(P::CellRadius, 0.85));
            set(P::ActinCortex, scaled(P::ActinCortex, 1.7));
            set(P::CellAspect, 1.1);
        }
        "Kinase inhibitors" => {
            set(P::CellRadius, scaled(P::CellRadius, 1.2));
            set(P::ActinFibres, 8.0);
            set(P::CellAspect, 1.65);
        }
        "Microtubule destabilizers" => {
            set(P::TubulinFilaments, 0.0);
            set(P::TubulinDiffuse, scaled(P::TubulinDiffuse, 2.6));
            set(P::Condensation, 0.6);
            set(P::CellRadius, scaled(P::CellRadius, 0.8));
            set(P::CellAspect, 1.0);
        }
        "Microtubule stabilizers" => {
            set(P::TubulinFilaments, scaled(P::TubulinFilaments, 2.4));
            set(P::FilamentWidth, 2.0);
            set(P::Condensation, 0.5);
            set(P::Micronuclei, 2.0);
            set(P::CellAspect, 1.05);
        }
        "Protein degradation" => {
            set(P::Aggresome, 1800.0);
            set(P::CellRadius, scaled(P::CellRadius, 1.1));
            set(P::Dna, scaled(P::Dna, 0.9));
            set(P::ActinInterior, scaled(P::ActinInterior, 1.3));
        }
        "Protein synthesis" => {
            set(P::Brightness, 0.6);
            set(P::CellRadius, scaled(P::CellRadius, 0.75));
            set(P::NucleusRadius, scaled(P::NucleusRadius, 0.85));
            set(P::Density, 0.75);
        }
        _ => {}
    }
    look
}

/// Fraction of a responding population's cells that show the phenotype at full effect.
const PENETRANCE: f32 = 0.85;
/// Fraction of cells in mitosis in any well (rounded, condensed DNA, an aster): it makes single
/// mitotic-arrest cells ambiguous, as in real data.
const MITOTIC_FRACTION: f32 = 0.04;
/// Hill coefficient of every dose-response curve.
const HILL: f32 = 1.5;

/// One compound's version of its MoA: its own strength and a few off-target differences, and its
/// own potency (EC50).
#[derive(Debug, Clone)]
pub struct CompoundEffect {
    pub target: Look,
    pub ec50_um: f32,
    /// How far the compound goes towards its MoA's look (0.65–1.25; 0 for the control, 0.3 × the
    /// draw for unannotated compounds).
    pub strength: f32,
}

impl CompoundEffect {
    /// `concentrations` are the compound's annotated concentrations (µM): the EC50 is drawn
    /// around their geometric mean, so the dose range spans the response.
    pub fn new(seed: u64, compound: &str, moa: &str, concentrations: &[f64]) -> Self {
        let mut rng = Rng::for_name(seed, &format!("compound/{compound}"));
        let base = control_look();
        let moa_look = moa_target(moa);
        let strength = rng.range(0.65, 1.25);
        let mut target = base;
        for index in 0..N_PARAMS {
            let delta = moa_look[index] - base[index];
            // Off-target effects: every compound also nudges some parameters of its own.
            let off_target = if rng.chance(0.3) {
                base[index] * 0.12 * rng.normal()
            } else {
                0.0
            };
            target[index] = base[index] + strength * delta + off_target;
        }
        let positive: Vec<f64> = concentrations
            .iter()
            .copied()
            .filter(|c| *c > 0.0)
            .collect();
        let geometric_mean = if positive.is_empty() {
            1.0
        } else {
            (positive.iter().map(|c| c.ln()).sum::<f64>() / positive.len() as f64).exp() as f32
        };
        Self {
            target,
            ec50_um: geometric_mean * 10f32.powf(rng.range(-0.6, 0.3)),
            strength,
        }
    }

    /// Response in [0, 1] at `concentration` µM (Hill curve).
    pub fn response(&self, concentration: f64) -> f32 {
        if concentration <= 0.0 {
            return 0.0;
        }
        let ratio = (concentration as f32 / self.ec50_um).powf(HILL);
        ratio / (1.0 + ratio)
    }

    /// The control look (DMSO and unannotated compounds without effect).
    pub fn control() -> Self {
        Self {
            target: control_look(),
            ec50_um: 1.0,
            strength: 0.0,
        }
    }
}

/// Measurement differences of a week (batch) and of a plate within it.
#[derive(Debug, Clone)]
pub struct Acquisition {
    /// Gain per channel (DNA, F-actin, β-tubulin).
    pub gain: [f32; 3],
    /// Background per channel (camera offset + autofluorescence).
    pub background: [f32; 3],
    /// Illumination falls off across the field by up to this fraction, along `illumination_angle`.
    pub illumination_strength: f32,
    pub illumination_angle: f32,
    /// Number of [1 4 6 4 1] blur passes (optics).
    pub blur_passes: usize,
    /// Cells of this week are a little larger or smaller (growth conditions).
    pub cell_scale: f32,
    /// Camera gain: photons per grey level, sets the shot noise.
    pub photons_per_level: f32,
}

impl Acquisition {
    pub fn new(seed: u64, week: &str, plate: &str) -> Self {
        let mut week_rng = Rng::for_name(seed, &format!("week/{week}"));
        let mut plate_rng = Rng::for_name(seed, &format!("plate/{plate}"));
        let mut gain = [0.0; 3];
        let mut background = [0.0; 3];
        for channel in 0..3 {
            gain[channel] = week_rng.log_normal(0.35) * plate_rng.log_normal(0.06);
            background[channel] = week_rng.range(250.0, 700.0) * plate_rng.log_normal(0.05);
        }
        Self {
            gain,
            background,
            illumination_strength: week_rng.range(0.05, 0.35),
            illumination_angle: week_rng.range(0.0, std::f32::consts::TAU),
            blur_passes: 1 + week_rng.below(2),
            cell_scale: week_rng.log_normal(0.12),
            photons_per_level: week_rng.range(0.25, 0.6),
        }
    }
}

/// The look of one cell of a well whose compound has `effect` at response `response`.
pub fn draw_cell_look(
    rng: &mut Rng,
    effect: &CompoundEffect,
    response: f32,
    acquisition: &Acquisition,
) -> Look {
    let base = control_look();
    // Responders show most of the phenotype; the others only a trace of it.
    let strength = if rng.chance(PENETRANCE * response) {
        response * rng.range(0.7, 1.15)
    } else {
        response * rng.range(0.0, 0.15)
    };
    let mut look = base;
    for index in 0..N_PARAMS {
        look[index] = base[index] + strength * (effect.target[index] - base[index]);
    }
    // Cell-to-cell variation.
    let size = rng.log_normal(0.12) * acquisition.cell_scale;
    look[P::CellRadius as usize] *= size;
    look[P::NucleusRadius as usize] *= size.sqrt() * rng.log_normal(0.08);
    look[P::NucleusAspect as usize] =
        (look[P::NucleusAspect as usize] * rng.log_normal(0.12)).max(1.0);
    look[P::CellAspect as usize] = (look[P::CellAspect as usize] * rng.log_normal(0.15)).max(1.0);
    for param in [
        P::Dna,
        P::ActinCortex,
        P::ActinInterior,
        P::TubulinFilaments,
        P::TubulinDiffuse,
    ] {
        look[param as usize] *= rng.log_normal(0.2);
    }
    look[P::ActinFibres as usize] *= rng.log_normal(0.3);
    if rng.chance(MITOTIC_FRACTION) {
        look[P::Condensation as usize] = look[P::Condensation as usize].max(rng.range(0.7, 1.0));
        look[P::CellAspect as usize] = 1.0;
        look[P::CellRadius as usize] *= 0.75;
        look[P::Aster as usize] = look[P::Aster as usize].max(1200.0);
    }
    look
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_moa_of_bbbc021_changes_the_look() {
        for moa in MOAS {
            assert_ne!(moa_target(moa), control_look(), "{moa}");
        }
        assert_eq!(moa_target("DMSO"), control_look());
    }

    #[test]
    fn dose_response_rises_through_the_ec50() {
        let effect =
            CompoundEffect::new(1, "taxol", "Microtubule stabilizers", &[0.003, 0.03, 0.3]);
        let low = effect.response(0.0003);
        let middle = effect.response(f64::from(effect.ec50_um));
        let high = effect.response(30.0);
        assert!(
            low < 0.05 && (middle - 0.5).abs() < 1e-3 && high > 0.95,
            "{low} {middle} {high}"
        );
        assert_eq!(effect.response(0.0), 0.0);
    }

    #[test]
    fn compounds_of_one_moa_differ() {
        let a = CompoundEffect::new(1, "AZ138", "Eg5 inhibitors", &[1.0]);
        let b = CompoundEffect::new(1, "AZ-C", "Eg5 inhibitors", &[1.0]);
        assert_ne!(a.target, b.target);
    }
}
