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

use std::collections::BTreeMap;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use anyhow::Context;
use indicatif::ProgressBar;
use rayon::prelude::*;

use crate::args::Cli;
use crate::layout::{
    concentration_key, select_fields, Field, Selection, IMAGE_TABLE_HEADER, MOA_TABLE,
};
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

fn write_tiff(path: &Path, width: usize, height: usize, pixels: &[u16]) -> anyhow::Result<()> {
    let file =
        std::fs::File::create(path).with_context(|| format!("creating {}", path.display()))?;
    let mut encoder = tiff::encoder::TiffEncoder::new(BufWriter::new(file))
        .with_context(|| format!("writing {}", path.display()))?;
    encoder
        .write_image::<tiff::encoder::colortype::Gray16>(width as u32, height as u32, pixels)
        .with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}

/// The per-cell ground truth pf-synth writes beside the image table.
pub const GROUND_TRUTH_CELLS: &str = "ground_truth_cells.csv";
/// The per-treatment ground truth.
pub const GROUND_TRUTH_TREATMENTS: &str = "ground_truth_treatments.csv";

/// Renders one field, writes its three TIFFs under `partial`, and returns its ground-truth rows.
fn render_and_write(
    settings: &args::Settings,
    partial: &Path,
    effects: &BTreeMap<String, CompoundEffect>,
    field: &Field,
    progress: &ProgressBar,
) -> anyhow::Result<String> {
    let (images, cells) = render_field_with_truth(
        settings.seed,
        field,
        &effects[&field.well.compound],
        settings.size,
    );
    for (file_name, pixels) in field
        .file_names
        .iter()
        .zip([&images[0], &images[2], &images[1]])
    {
        // File order is DAPI (w1), tubulin (w2), actin (w4); images are DNA, actin, tubulin.
        write_tiff(
            &partial.join(field.folder()).join(file_name),
            settings.size.width,
            settings.size.height,
            pixels,
        )?;
    }
    progress.inc(1);
    Ok(ground_truth_rows(field, &cells))
}

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

/// Every field's images into the partial folder (rayon over fields) and every drawn cell's
/// ground truth, in field order; a failure removes the partial folder.
fn render_fields(
    settings: &args::Settings,
    partial: &Path,
    effects: &BTreeMap<String, CompoundEffect>,
    fields: &[Field],
) -> anyhow::Result<()> {
    let progress = progress_bar(settings, fields.len());
    let truth_path = partial.join(GROUND_TRUTH_CELLS);
    let mut truth = BufWriter::new(
        std::fs::File::create(&truth_path)
            .with_context(|| format!("creating {}", truth_path.display()))?,
    );
    writeln!(truth, "{}", ground_truth_cells_header())?;
    // In chunks, so the ground truth is written in field order without holding all of it.
    let result = fields
        .chunks(256)
        .try_for_each(|chunk| -> anyhow::Result<()> {
            let rows = chunk
                .par_iter()
                .map(|field| render_and_write(settings, partial, effects, field, &progress))
                .collect::<anyhow::Result<Vec<String>>>()?;
            for row in rows {
                truth.write_all(row.as_bytes())?;
            }
            Ok(())
        });
    let result = result.and_then(|()| truth.flush().map_err(anyhow::Error::from));
    drop(truth);
    progress.finish_and_clear();
    if let Err(error) = result {
        let _ = std::fs::remove_dir_all(partial);
        return Err(error);
    }
    Ok(())
}

/// The tables beside the images: the ground truth per treatment, the image and MoA tables in
/// the published layout, and pf-synth.json (the settings and the number of fields).
fn write_tables(
    settings: &args::Settings,
    partial: &Path,
    effects: &BTreeMap<String, CompoundEffect>,
    fields: &[Field],
) -> anyhow::Result<()> {
    std::fs::write(
        partial.join(GROUND_TRUTH_TREATMENTS),
        ground_truth_treatments(fields, effects),
    )?;
    let mut table = String::with_capacity(fields.len() * 300);
    table.push_str(IMAGE_TABLE_HEADER);
    for field in fields {
        table.push('\n');
        table.push_str(&layout::image_table_row(field));
    }
    table.push('\n');
    std::fs::write(partial.join("BBBC021_v1_image.csv"), table)?;
    std::fs::write(partial.join("BBBC021_v1_moa.csv"), MOA_TABLE)?;
    let mut params = BufWriter::new(std::fs::File::create(partial.join("pf-synth.json"))?);
    writeln!(
        params,
        "{}",
        serde_json::json!({
            "stage": "pf-synth",
            "stage_version": env!("CARGO_PKG_VERSION"),
            "seed": settings.seed,
            "annotated_only": settings.selection.annotated_only,
            "weeks": settings.selection.weeks,
            "replicates": settings.selection.max_replicate,
            "dmso_wells_per_plate": settings.selection.dmso_wells_per_plate,
            "sites": settings.selection.sites,
            "field_width": settings.size.width,
            "field_height": settings.size.height,
            "cells_per_field": settings.size.mean_cells,
            "n_fields": fields.len(),
        })
    )?;
    params.flush()?;
    drop(params);
    Ok(())
}

fn progress_bar(settings: &args::Settings, n_fields: usize) -> ProgressBar {
    phenoflow_kit::progress_bar(n_fields, "rendering", "fields", settings.no_progress)
}

/// `--preset cpjump1`: the CPJUMP1-like screen, written and renamed into place like the other.
fn write_cpjump1(
    settings: &args::Settings,
    design: &cpjump1::Design,
    output: &Path,
    started: std::time::Instant,
) -> anyhow::Result<()> {
    let partial = partial_path(output);
    if partial.exists() {
        std::fs::remove_dir_all(&partial)
            .with_context(|| format!("removing {}", partial.display()))?;
    }
    std::fs::create_dir_all(&partial).with_context(|| format!("creating {}", partial.display()))?;
    let progress = progress_bar(settings, 0);
    let result = cpjump1::write(&partial, settings.seed, design, settings.size, &progress);
    progress.finish_and_clear();
    let fields = match result {
        Ok(fields) => fields,
        Err(error) => {
            let _ = std::fs::remove_dir_all(&partial);
            return Err(error);
        }
    };
    std::fs::write(
        partial.join("pf-synth.json"),
        serde_json::json!({
            "stage": "pf-synth",
            "stage_version": env!("CARGO_PKG_VERSION"),
            "preset": "cpjump1",
            "seed": settings.seed,
            "compounds": design.n_compounds,
            "plates": design.n_plates,
            "dmso_wells_per_plate": design.dmso_wells_per_plate,
            "sites": design.sites,
            "channels": cpjump1::CHANNELS,
            "field_width": settings.size.width,
            "field_height": settings.size.height,
            "cells_per_field": settings.size.mean_cells,
            "n_fields": fields.len(),
        })
        .to_string()
            + "\n",
    )?;
    replace_folder(&partial, output)?;
    eprintln!(
        "pf-synth: wrote a CPJUMP1-like screen of {} fields ({} compounds + DMSO, {} plates, 5 channels) of {}x{} to {} in {:.1} s",
        fields.len(),
        design.n_compounds,
        design.n_plates,
        settings.size.width,
        settings.size.height,
        output.display(),
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

fn partial_path(output: &Path) -> PathBuf {
    let name = output
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "screen".into());
    output.with_file_name(format!(".{name}.partial"))
}

/// Puts the finished folder in place of `output` (removing an old one only once the new one is
/// complete).
fn replace_folder(partial: &Path, output: &Path) -> anyhow::Result<()> {
    if output.exists() {
        let old = output.with_file_name(format!(
            ".{}.old",
            output
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default()
        ));
        let _ = std::fs::remove_dir_all(&old);
        std::fs::rename(output, &old)
            .with_context(|| format!("moving the old {} aside", output.display()))?;
        std::fs::rename(partial, output)
            .with_context(|| format!("renaming {} to {}", partial.display(), output.display()))?;
        std::fs::remove_dir_all(&old).with_context(|| format!("removing {}", old.display()))?;
    } else {
        if let Some(parent) = output.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent)?;
        }
        std::fs::rename(partial, output)
            .with_context(|| format!("renaming {} to {}", partial.display(), output.display()))?;
    }
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
