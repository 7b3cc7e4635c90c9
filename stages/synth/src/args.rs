//! Command-line interface of `pf-synth` (clap derive; the doc comments are the help), resolved
//! into validated [`Settings`] before anything is generated.

use std::path::PathBuf;

use clap::{Parser, ValueEnum};

use crate::layout::Selection;
use crate::FieldSize;

/// The largest field side `--field-size` takes (BBBC021's fields are 1280×1024).
pub const MAX_FIELD_SIDE: usize = 8192;
/// The most cells per field `--cells-per-field` takes (BBBC021's fields hold about 40).
pub const MAX_CELLS_PER_FIELD: f32 = 2000.0;

#[derive(Debug, Parser)]
#[command(
    name = "pf-synth",
    version,
    about = "Generate a synthetic screen with known biology in the published BBBC021 layout",
    long_about = "Generate a synthetic screen in exactly the published BBBC021 layout: BBBC021_v1_image.csv, \
                  BBBC021_v1_moa.csv and one 16-bit TIFF per channel in Week<n>/<plate>/ folders, laid out on \
                  the real plate map (each compound in its real week, DMSO on every plate). Every MoA has its own \
                  phenotype with a dose-response, compounds of one MoA differ, cells within a well differ, and \
                  weeks differ in gain, background, illumination and blur. Deterministic for a seed.",
    after_long_help = "Examples:\n  \
        pf-synth --output out/synthetic                    # the demo screen: 742 wells, 384x384\n  \
        pf-synth --preset tiny --output out/tiny --seed 7  # a few fields of one week, for tests\n  \
        pf-synth --preset full --output /data/synthetic    # all 13,200 fields at 1280x1024\n  \
        pf-synth --panel phenotypes.png                    # example fields and crops per MoA\n  \
        pf-synth --preset cpjump1 --output out/cpjump1     # CPJUMP1-like: 24 compounds + DMSO, 5 channels"
)]
pub struct Cli {
    /// Folder to write the screen to (written to a hidden temporary folder, renamed when complete).
    #[arg(short, long)]
    pub output: Option<PathBuf>,

    /// Size preset: tiny (one week, one replicate, 256x256), demo (the 632 treated wells and 2
    /// DMSO wells per plate, one site, 384x384) or full (all 3,300 wells x 4 sites at 1280x1024,
    /// 13,200 fields) of the BBBC021 layout; or cpjump1: a CPJUMP1-like screen (the second seed's
    /// data) of --compounds compounds at 5 µM, one well per plate each, DMSO the majority
    /// (16 wells per plate), --plates plates, 3 sites, five Cell Painting channels, 256x256.
    #[arg(long, value_enum, default_value_t = Preset::Demo)]
    pub preset: Preset,

    /// Random seed: the same seed gives identical files.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,

    /// Keep only these weeks (comma-separated, e.g. Week1,Week2).
    #[arg(long, value_delimiter = ',')]
    pub weeks: Option<Vec<String>>,

    /// Replicate wells per treatment (1-3).
    #[arg(long)]
    pub replicates: Option<u32>,

    /// DMSO wells per plate (the real screen has 6).
    #[arg(long)]
    pub dmso_wells_per_plate: Option<usize>,

    /// Sites (fields) per well (1-4).
    #[arg(long)]
    pub sites: Option<u32>,

    /// Also generate the wells of compounds the MoA table does not annotate (as the real screen has).
    #[arg(long)]
    pub all_wells: bool,

    /// Field size as WIDTHxHEIGHT in pixels (at least 96x96).
    #[arg(long)]
    pub field_size: Option<String>,

    /// Mean number of cells per field (before treatment effects on density).
    #[arg(long)]
    pub cells_per_field: Option<f32>,

    /// Also write a PNG panel of example fields and crops per MoA.
    #[arg(long)]
    pub panel: Option<PathBuf>,

    /// cpjump1: number of compounds (their MoAs taken in turn from the twelve).
    #[arg(long, default_value_t = 24)]
    pub compounds: usize,

    /// cpjump1: number of plates (each its own batch).
    #[arg(long, default_value_t = 4)]
    pub plates: usize,

    /// Replace the output folder if it exists.
    #[arg(long)]
    pub force: bool,

    #[command(flatten)]
    pub threads: phenoflow_kit::ThreadsArgs,

    #[command(flatten)]
    pub progress: phenoflow_kit::ProgressArgs,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Preset {
    Tiny,
    Demo,
    Full,
    Cpjump1,
}

/// A bad argument (exit code 2).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct UsageError(pub String);

/// Everything a run needs, validated.
#[derive(Debug, Clone)]
pub struct Settings {
    pub output: Option<PathBuf>,
    /// The CPJUMP1-like screen instead of the BBBC021 layout.
    pub cpjump1: Option<crate::cpjump1::Design>,
    pub seed: u64,
    pub selection: Selection,
    pub size: FieldSize,
    pub panel: Option<PathBuf>,
    pub force: bool,
    pub threads: phenoflow_kit::ThreadsArgs,
    pub no_progress: bool,
}

impl Cli {
    /// Applies the preset, then the explicit options, and checks the result.
    pub fn settings(&self) -> Result<Settings, UsageError> {
        let (mut selection, mut size) = crate::preset_selection(self.preset);
        if let Some(weeks) = &self.weeks {
            for week in weeks {
                let number: Option<u32> = week.strip_prefix("Week").and_then(|n| n.parse().ok());
                if !number.is_some_and(|n| (1..=10).contains(&n)) {
                    return Err(UsageError(format!(
                        "--weeks: `{week}` is not one of Week1 … Week10"
                    )));
                }
            }
            selection.weeks = weeks.clone();
        }
        if let Some(replicates) = self.replicates {
            if !(1..=3).contains(&replicates) {
                return Err(UsageError(format!(
                    "--replicates must be 1, 2 or 3, not {replicates}"
                )));
            }
            selection.max_replicate = replicates;
        }
        if let Some(sites) = self.sites {
            if !(1..=4).contains(&sites) {
                return Err(UsageError(format!(
                    "--sites must be between 1 and 4, not {sites}"
                )));
            }
            selection.sites = sites;
        }
        if let Some(dmso) = self.dmso_wells_per_plate.filter(|&dmso| dmso > 384) {
            return Err(UsageError(format!(
                "--dmso-wells-per-plate {dmso}: a plate has at most 384 wells"
            )));
        }
        if let Some(dmso) = self.dmso_wells_per_plate {
            selection.dmso_wells_per_plate = dmso;
        }
        if self.all_wells {
            selection.annotated_only = false;
        }
        if let Some(text) = &self.field_size {
            let parsed = text.split_once(['x', 'X']).and_then(|(w, h)| {
                Some((
                    w.trim().parse::<usize>().ok()?,
                    h.trim().parse::<usize>().ok()?,
                ))
            });
            match parsed {
                Some((width, height))
                    if (96..=MAX_FIELD_SIDE).contains(&width)
                        && (96..=MAX_FIELD_SIDE).contains(&height) =>
                {
                    size.width = width;
                    size.height = height;
                }
                _ => {
                    return Err(UsageError(format!(
                        "--field-size `{text}`: expected WIDTHxHEIGHT, each from 96 to {MAX_FIELD_SIDE}"
                    )))
                }
            }
        }
        if let Some(cells) = self.cells_per_field {
            if !(cells.is_finite() && cells > 0.0 && cells <= MAX_CELLS_PER_FIELD) {
                return Err(UsageError(format!(
                    "--cells-per-field must be positive and at most {MAX_CELLS_PER_FIELD}, not {cells}"
                )));
            }
            size.mean_cells = cells;
        }
        let cpjump1 = if self.preset == Preset::Cpjump1 {
            if self.weeks.is_some() || self.replicates.is_some() || self.all_wells {
                return Err(UsageError(
                    "--weeks, --replicates and --all-wells belong to the BBBC021 layout, not --preset cpjump1".into(),
                ));
            }
            if !(2..=360).contains(&self.compounds) {
                return Err(UsageError(format!(
                    "--compounds must be between 2 and 360, not {}",
                    self.compounds
                )));
            }
            if !(1..=100).contains(&self.plates) {
                return Err(UsageError(format!(
                    "--plates must be between 1 and 100, not {}",
                    self.plates
                )));
            }
            let design = crate::cpjump1::Design {
                n_compounds: self.compounds,
                n_plates: self.plates,
                dmso_wells_per_plate: self.dmso_wells_per_plate.unwrap_or(16),
                sites: self.sites.unwrap_or(3),
            };
            if design.n_compounds + design.dmso_wells_per_plate > 384 {
                return Err(UsageError(format!(
                    "{} compounds and {} DMSO wells do not fit a 384-well plate",
                    design.n_compounds, design.dmso_wells_per_plate
                )));
            }
            Some(design)
        } else {
            None
        };
        Ok(Settings {
            cpjump1,
            output: self.output.clone(),
            seed: self.seed,
            selection,
            size,
            panel: self.panel.clone(),
            force: self.force,
            threads: self.threads,
            no_progress: self.progress.no_progress,
        })
    }
}
