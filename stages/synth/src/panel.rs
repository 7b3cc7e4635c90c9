//! A PNG panel of the phenotypes, for people: one row per MoA (DMSO first, then the 12 MoAs in
//! alphabetical order), each with an example field and six single cells at the top concentration
//! of one of the MoA's compounds. Composite colours: DNA red, F-actin green, β-tubulin blue, each
//! channel stretched between its background and its 99.7th percentile over the whole panel.

use std::collections::BTreeMap;
use std::io::BufWriter;
use std::path::Path;

use crate::layout::{plate_map, Field, Well};
use crate::phenotype::{Acquisition, CompoundEffect};
use crate::render::{acquire, draw_cell, Canvas};
use crate::rng::Rng;
use crate::{render_field, FieldSize};

const FIELD_PX: usize = 204;
const CROP_PX: usize = 68;
const GAP: usize = 6;

/// The MoAs in panel order with, for each, the compound with most wells and its top concentration.
fn examples() -> Vec<(String, Well)> {
    let mut by_moa: BTreeMap<String, Vec<Well>> = BTreeMap::new();
    for well in plate_map() {
        if let Some(moa) = well.moa.clone() {
            by_moa.entry(moa).or_default().push(well);
        }
    }
    let mut rows: Vec<(String, Well)> = by_moa
        .into_iter()
        .map(|(moa, wells)| {
            let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
            for well in &wells {
                *counts.entry(&well.compound).or_default() += 1;
            }
            let compound = counts
                .iter()
                .max_by_key(|(_, count)| **count)
                .map(|(c, _)| c.to_string())
                .unwrap_or_default();
            let top = wells
                .iter()
                .filter(|w| w.compound == compound)
                .max_by(|a, b| a.concentration.total_cmp(&b.concentration))
                .cloned()
                .expect("the compound has wells");
            (moa, top)
        })
        .collect();
    rows.sort_by_key(|(moa, _)| (moa != "DMSO", moa.clone()));
    rows
}

/// Writes the panel to `path`.
pub fn write_panel(path: &Path, seed: u64) -> anyhow::Result<()> {
    let rows = examples();
    let effects = crate::compound_effects(seed);
    let width = FIELD_PX + GAP + 3 * CROP_PX + 2 * GAP;
    let row_height = FIELD_PX.max(2 * CROP_PX + GAP);
    let height = rows.len() * (row_height + GAP);
    // Channels in [0,1) after the contrast stretch; start as raw levels minus background.
    let mut image = vec![[0.0f32; 3]; width * height];
    for (row_index, (_moa, well)) in rows.iter().enumerate() {
        let effect = effects
            .get(&well.compound)
            .cloned()
            .unwrap_or_else(CompoundEffect::control);
        // The same acquisition for every row, so that rows compare.
        let reference_plate = Well {
            plate: "Week1_22123".into(),
            ..well.clone()
        };
        let field = Field {
            well: reference_plate.clone(),
            site: 1,
            image_number: 1,
            file_names: Default::default(),
        };
        let acquisition = Acquisition::new(seed, reference_plate.week(), &reference_plate.plate);
        let top = row_index * (row_height + GAP);
        let field_images = render_field(
            seed,
            &field,
            &effect,
            FieldSize {
                width: FIELD_PX,
                height: FIELD_PX,
                mean_cells: 7.0,
            },
        );
        blit(
            &mut image,
            width,
            0,
            top,
            FIELD_PX,
            FIELD_PX,
            &field_images,
            &acquisition,
        );
        let response = effect.response(well.concentration);
        let mut rng = Rng::for_name(seed, &format!("panel/{}", well.compound));
        for crop_index in 0..6 {
            let mut canvas = Canvas::new(CROP_PX, CROP_PX);
            let look = crate::phenotype::draw_cell_look(&mut rng, &effect, response, &acquisition);
            draw_cell(
                &mut canvas,
                &mut rng,
                CROP_PX as f32 / 2.0,
                CROP_PX as f32 / 2.0,
                &look,
            );
            let crop = acquire(canvas, &mut rng, &acquisition);
            let left = FIELD_PX + GAP + (crop_index % 3) * (CROP_PX + GAP);
            let crop_top = top + (crop_index / 3) * (CROP_PX + GAP);
            blit(
                &mut image,
                width,
                left,
                crop_top,
                CROP_PX,
                CROP_PX,
                &crop,
                &acquisition,
            );
        }
    }
    let mut bytes = Vec::with_capacity(width * height * 3);
    let limits: [f32; 3] = std::array::from_fn(|channel| {
        let mut values: Vec<f32> = image
            .iter()
            .map(|pixel| pixel[channel])
            .filter(|v| *v > 0.0)
            .collect();
        if values.is_empty() {
            return 1.0;
        }
        let rank = ((values.len() - 1) as f32 * 0.997) as usize;
        *values.select_nth_unstable_by(rank, f32::total_cmp).1
    });
    for pixel in &image {
        for channel in 0..3 {
            bytes.push(
                (255.0 * (pixel[channel] / limits[channel].max(1.0)).clamp(0.0, 1.0)).round() as u8,
            );
        }
    }
    let file = std::fs::File::create(path)?;
    let mut encoder = png::Encoder::new(BufWriter::new(file), width as u32, height as u32);
    encoder.set_color(png::ColorType::Rgb);
    encoder.set_depth(png::BitDepth::Eight);
    let mut writer = encoder.write_header()?;
    writer.write_image_data(&bytes)?;
    writer.finish()?;
    Ok(())
}

/// Copies background-subtracted levels of a rendered image into the panel (DNA→red,
/// F-actin→green, β-tubulin→blue).
#[allow(clippy::too_many_arguments)]
fn blit(
    image: &mut [[f32; 3]],
    panel_width: usize,
    left: usize,
    top: usize,
    width: usize,
    height: usize,
    channels: &[Vec<u16>; 3],
    acquisition: &Acquisition,
) {
    for y in 0..height {
        for x in 0..width {
            let pixel = &mut image[(top + y) * panel_width + left + x];
            for channel in 0..3 {
                pixel[channel] = (f32::from(channels[channel][y * width + x])
                    - acquisition.background[channel])
                    .max(0.0);
            }
        }
    }
}
