//! Writing a synthetic screen: the fields rendered in parallel and written as 16-bit TIFFs, the
//! image and MoA tables in BBBC021's layout (or CPJUMP1's), the ground truth, all into a partial
//! folder that replaces the output only when complete.

use std::collections::BTreeMap;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use anyhow::Context;
use indicatif::ProgressBar;
use rayon::prelude::*;

use crate::args;
use crate::cpjump1;
use crate::layout;
use crate::layout::{Field, IMAGE_TABLE_HEADER, MOA_TABLE};
use crate::phenotype::CompoundEffect;
use crate::tiff_io::write_tiff;
use crate::truth::{ground_truth_cells_header, ground_truth_rows, ground_truth_treatments};
use crate::{render_field_with_truth, GROUND_TRUTH_CELLS, GROUND_TRUTH_TREATMENTS};

/// Renders one field, writes its three TIFFs under `partial`, and returns its ground-truth rows.
pub(crate) fn render_and_write(
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

/// Every field's images into the partial folder (rayon over fields) and every drawn cell's
/// ground truth, in field order; a failure removes the partial folder.
pub(crate) fn render_fields(
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
pub(crate) fn write_tables(
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

pub(crate) fn progress_bar(settings: &args::Settings, n_fields: usize) -> ProgressBar {
    phenoflow_kit::progress_bar(n_fields, "rendering", "fields", settings.no_progress)
}

/// `--preset cpjump1`: the CPJUMP1-like screen, written and renamed into place like the other.
pub(crate) fn write_cpjump1(
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

pub(crate) fn partial_path(output: &Path) -> PathBuf {
    let name = output
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "screen".into());
    output.with_file_name(format!(".{name}.partial"))
}

/// Puts the finished folder in place of `output` (removing an old one only once the new one is
/// complete).
pub(crate) fn replace_folder(partial: &Path, output: &Path) -> anyhow::Result<()> {
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
