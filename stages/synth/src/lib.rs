//! `pf-synth`: a synthetic screen with known biology, in exactly the published BBBC021 layout
//! (`BBBC021_v1_image.csv`, `BBBC021_v1_moa.csv`, `Week<n>/<plate>/<well>_s<site>_w<k><GUID>.tif`),
//! so that `pf-preprocess` reads it through the same code path as the real data.
//!
//! Everything random is drawn from streams named after the seed and the thing drawn (a compound,
//! a week, a field), so the output is identical for a seed whatever the number of threads.

pub mod args;
pub mod cpjump1;
pub mod layout;
pub mod panel;
pub mod phenotype;
pub mod render;
pub mod rng;

mod output;
mod tiff_io;
mod truth;

use std::collections::BTreeMap;

use anyhow::Context;

use crate::args::Cli;
use crate::layout::{concentration_key, select_fields, Field, Selection};
use crate::output::{partial_path, render_fields, replace_folder, write_cpjump1, write_tables};
use crate::phenotype::{draw_cell_look, Acquisition, CompoundEffect, Look, MOAS, P};
use crate::render::{acquire, draw_cell, place_cells, Canvas};
use crate::rng::Rng;

/// How large each field is and how many cells it holds.
#[derive(Debug, Clone, Copy)]
pub struct FieldSize {
    pub width: usize,
    pub height: usize,
    pub mean_cells: f32,
}

/// Every compound's effect, from the whole plate map and the MoA table, never from the selection
/// (so a treatment looks the same in every preset): an annotated compound follows the MoA of the
/// MoA table, with its EC50 drawn around its annotated concentrations (BBBC021 annotates the
/// concentrations where the phenotype shows); an unannotated one gets a weak version of a random
/// MoA over all its concentrations (BBBC021's unannotated compounds were not visibly active).
pub fn compound_effects(seed: u64) -> BTreeMap<String, CompoundEffect> {
    let mut annotated: BTreeMap<String, (String, Vec<f64>)> = BTreeMap::new();
    for ((compound, key), moa) in layout::moa_by_treatment() {
        let entry = annotated
            .entry(compound)
            .or_insert_with(|| (moa.clone(), Vec::new()));
        entry.1.push(key as f64 / 1e6);
    }
    let mut all_doses: BTreeMap<String, Vec<f64>> = BTreeMap::new();
    for well in layout::plate_map() {
        let list = all_doses.entry(well.compound.clone()).or_default();
        if !list
            .iter()
            .any(|c| concentration_key(*c) == concentration_key(well.concentration))
        {
            list.push(well.concentration);
        }
    }
    all_doses
        .into_iter()
        .map(|(compound, doses)| {
            let effect = match annotated.get(&compound) {
                Some((moa, _)) if moa == "DMSO" => CompoundEffect::control(),
                Some((moa, annotated_doses)) => {
                    CompoundEffect::new(seed, &compound, moa, annotated_doses)
                }
                None => {
                    let mut rng = Rng::for_name(seed, &format!("unannotated/{compound}"));
                    let moa = MOAS[rng.below(MOAS.len())];
                    let mut effect = CompoundEffect::new(seed, &compound, moa, &doses);
                    let control = phenotype::control_look();
                    for (value, base) in effect.target.iter_mut().zip(control) {
                        *value = base + 0.3 * (*value - base);
                    }
                    effect.strength *= 0.3;
                    effect
                }
            };
            (compound, effect)
        })
        .collect()
}

/// Renders one field: its three 16-bit images (DNA, F-actin, β-tubulin).
pub fn render_field(
    seed: u64,
    field: &Field,
    effect: &CompoundEffect,
    size: FieldSize,
) -> [Vec<u16>; 3] {
    render_field_with_truth(seed, field, effect, size).0
}

/// One drawn cell: where its nucleus sits (px) and the look it was drawn with.
pub type DrawnCell = ((f32, f32), Look);

/// Renders one field and returns the cells it drew, in drawing order.
pub fn render_field_with_truth(
    seed: u64,
    field: &Field,
    effect: &CompoundEffect,
    size: FieldSize,
) -> ([Vec<u16>; 3], Vec<DrawnCell>) {
    let mut cells = Vec::new();
    let (canvas, mut rng, acquisition) =
        draw_field_recording(seed, field, effect, size, Some(&mut cells));
    (acquire(canvas, &mut rng, &acquisition), cells)
}

/// Draws one field's cells as fluorescence (before the camera), with the field's random stream
/// and acquisition settings.
pub fn draw_field(
    seed: u64,
    field: &Field,
    effect: &CompoundEffect,
    size: FieldSize,
) -> (Canvas, Rng, Acquisition) {
    draw_field_recording(seed, field, effect, size, None)
}

/// [`draw_field`], also recording each cell's nucleus centre and look into `record`.
fn draw_field_recording(
    seed: u64,
    field: &Field,
    effect: &CompoundEffect,
    size: FieldSize,
    record: Option<&mut Vec<DrawnCell>>,
) -> (Canvas, Rng, Acquisition) {
    let well = &field.well;
    let mut rng = Rng::for_name(
        seed,
        &format!("field/{}/{}/{}", well.plate, well.well, field.site),
    );
    let acquisition = Acquisition::new(seed, well.week(), &well.plate);
    let response = effect.response(well.concentration);
    let field_level = |param: P| 1.0 + response * (effect.target[param as usize] - 1.0);
    let density = field_level(P::Density).max(0.2);
    let clustering = response * effect.target[P::Clustering as usize];
    let n_cells = rng.poisson(size.mean_cells * density);
    let looks: Vec<Look> = (0..n_cells)
        .map(|_| draw_cell_look(&mut rng, effect, response, &acquisition))
        .collect();
    let centres = place_cells(&mut rng, size.width, size.height, &looks, clustering);
    let mut canvas = Canvas::new(size.width, size.height);
    for ((x, y), look) in centres.iter().zip(&looks) {
        draw_cell(&mut canvas, &mut rng, *x, *y, look);
    }
    if let Some(record) = record {
        record.extend(centres.iter().copied().zip(looks.iter().copied()));
    }
    (canvas, rng, acquisition)
}

/// The per-cell ground truth pf-synth writes beside the image table.
pub const GROUND_TRUTH_CELLS: &str = "ground_truth_cells.csv";
/// The per-treatment ground truth.
pub const GROUND_TRUTH_TREATMENTS: &str = "ground_truth_treatments.csv";

/// Runs the stage: the panel and/or a screen (BBBC021-like, or the CPJUMP1-like design), written
/// into a partial folder and renamed into place.
pub fn run(cli: Cli) -> anyhow::Result<()> {
    let settings = cli.settings()?;
    settings.threads.install()?;
    if let Some(panel_path) = &settings.panel {
        panel::write_panel(panel_path, settings.seed)
            .with_context(|| format!("writing the panel {}", panel_path.display()))?;
        eprintln!(
            "pf-synth: wrote the phenotype panel {}",
            panel_path.display()
        );
        if settings.output.is_none() {
            return Ok(());
        }
    }
    let Some(output) = &settings.output else {
        return Err(args::UsageError(
            "nothing to do: give --output (a screen) and/or --panel (a PNG)".into(),
        )
        .into());
    };
    if output.exists() && !settings.force {
        return Err(args::UsageError(format!(
            "{} exists; pass --force to replace it",
            output.display()
        ))
        .into());
    }
    let started = std::time::Instant::now();
    if let Some(design) = &settings.cpjump1 {
        return write_cpjump1(&settings, design, output, started);
    }
    let fields = select_fields(&settings.selection, settings.seed);
    if fields.is_empty() {
        anyhow::bail!(
            "the selection holds no field (weeks {:?})",
            settings.selection.weeks
        );
    }
    let effects = compound_effects(settings.seed);
    let partial = partial_path(output);
    if partial.exists() {
        std::fs::remove_dir_all(&partial)
            .with_context(|| format!("removing {}", partial.display()))?;
    }
    let folders: std::collections::BTreeSet<String> = fields.iter().map(Field::folder).collect();
    for folder in &folders {
        std::fs::create_dir_all(partial.join(folder))
            .with_context(|| format!("creating {}", partial.join(folder).display()))?;
    }
    render_fields(&settings, &partial, &effects, &fields)?;
    write_tables(&settings, &partial, &effects, &fields)?;
    replace_folder(&partial, output)?;
    eprintln!(
        "pf-synth: wrote {} fields ({} plates, {} wells) of {}x{} to {} in {:.1} s",
        fields.len(),
        folders.len(),
        fields.iter().filter(|f| f.site == 1).count(),
        settings.size.width,
        settings.size.height,
        output.display(),
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

/// What pf-synth's own errors count as bad usage (exit 2; see `phenoflow_kit::main`).
pub fn is_input_error(cause: &(dyn std::error::Error + 'static)) -> bool {
    cause.downcast_ref::<args::UsageError>().is_some()
}

/// The selection used by `--preset`.
pub fn preset_selection(preset: args::Preset) -> (Selection, FieldSize) {
    match preset {
        args::Preset::Tiny => (
            Selection {
                annotated_only: true,
                weeks: vec!["Week1".into()],
                max_replicate: 1,
                dmso_wells_per_plate: 2,
                sites: 1,
            },
            FieldSize {
                width: 256,
                height: 256,
                mean_cells: 12.0,
            },
        ),
        args::Preset::Demo => (
            Selection {
                annotated_only: true,
                weeks: vec![],
                max_replicate: 3,
                dmso_wells_per_plate: 2,
                sites: 1,
            },
            FieldSize {
                width: 384,
                height: 384,
                mean_cells: 30.0,
            },
        ),
        args::Preset::Cpjump1 => (
            Selection {
                annotated_only: true,
                weeks: vec![],
                max_replicate: 1,
                dmso_wells_per_plate: 16,
                sites: 3,
            },
            FieldSize {
                width: 256,
                height: 256,
                mean_cells: 20.0,
            },
        ),
        args::Preset::Full => (
            Selection {
                annotated_only: false,
                weeks: vec![],
                max_replicate: 3,
                dmso_wells_per_plate: 60,
                sites: 4,
            },
            FieldSize {
                width: 1280,
                height: 1024,
                mean_cells: 110.0,
            },
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every annotated compound of every preset's screen follows the MoA of the MoA table, with
    /// its EC50 from its annotated concentrations, whatever the preset selects (`full` once gave
    /// 25 of 38 compounds the weak random look of their first, unannotated, concentration).
    #[test]
    fn every_annotated_compound_shows_its_moa_in_every_preset() {
        let moas = layout::moa_by_treatment();
        let effects = compound_effects(1);
        let expected = |compound: &str| -> (String, CompoundEffect) {
            let (moa, doses): (Vec<&String>, Vec<f64>) = moas
                .iter()
                .filter(|((c, _), _)| c == compound)
                .map(|((_, key), moa)| (moa, *key as f64 / 1e6))
                .unzip();
            let moa = moas_agree(&moa);
            let effect = if moa == "DMSO" {
                CompoundEffect::control()
            } else {
                CompoundEffect::new(1, compound, &moa, &doses)
            };
            (moa, effect)
        };
        fn moas_agree(moas: &[&String]) -> String {
            assert!(moas.windows(2).all(|w| w[0] == w[1]));
            moas[0].clone()
        }
        let annotated: std::collections::BTreeSet<&String> = moas.keys().map(|(c, _)| c).collect();
        assert_eq!(annotated.len(), 39, "38 compounds and DMSO");
        for preset in [args::Preset::Tiny, args::Preset::Demo, args::Preset::Full] {
            let (selection, _) = preset_selection(preset);
            let fields = select_fields(&selection, 1);
            let mut seen = std::collections::BTreeSet::new();
            for field in &fields {
                let compound = &field.well.compound;
                if !annotated.contains(compound) || !seen.insert(compound.clone()) {
                    continue;
                }
                let (moa, effect) = expected(compound);
                let ours = &effects[compound];
                assert_eq!(ours.target, effect.target, "{preset:?}: {compound} ({moa})");
                assert_eq!(ours.ec50_um, effect.ec50_um, "{preset:?}: {compound}");
                if moa != "DMSO" {
                    assert_ne!(ours.target, phenotype::control_look(), "{compound}");
                }
            }
            if preset == args::Preset::Full {
                assert_eq!(seen.len(), 39, "full holds every annotated compound");
            }
        }
    }
}
