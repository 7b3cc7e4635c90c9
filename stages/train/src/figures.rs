//! `reconstructions.png`: originals (top row) above their reconstructions (bottom row), each cell
//! an RGB composite of its first three channels (DNA → red, F-actin → green, β-tubulin → blue;
//! grey for one- or two-channel cells) of the normalised intensities clipped to [0, 1], scaled 2×.

use std::path::Path;

use tch::{Device, Kind, Tensor};

const SCALE: usize = 2;
const GAP: usize = 4;

/// Renders the grid and writes it atomically.
pub fn write_reconstructions(
    path: &Path,
    originals: &Tensor,
    reconstructions: &Tensor,
) -> std::io::Result<()> {
    let [n_cells, n_channels, height, width] = originals.size()[..] else {
        return Err(std::io::Error::other("expected [N, C, H, W] tensors"));
    };
    let (n_cells, n_channels, height, width) = (
        n_cells as usize,
        n_channels as usize,
        height as usize,
        width as usize,
    );
    let to_values = |tensor: &Tensor| -> Vec<f32> {
        let flat = tensor
            .to_device(Device::Cpu)
            .to_kind(Kind::Float)
            .clamp(0.0, 1.0)
            .flatten(0, -1);
        Vec::<f32>::try_from(&flat).expect("float pixels")
    };
    let rows = [to_values(originals), to_values(reconstructions)];
    let image_width = n_cells * (width * SCALE + GAP) + GAP;
    let image_height = 2 * (height * SCALE + GAP) + GAP;
    let mut rgb = vec![255u8; image_width * image_height * 3];
    let plane = height * width;
    for (row_index, values) in rows.iter().enumerate() {
        for cell in 0..n_cells {
            let cell_values = &values[cell * n_channels * plane..(cell + 1) * n_channels * plane];
            let left = GAP + cell * (width * SCALE + GAP);
            let top = GAP + row_index * (height * SCALE + GAP);
            for y in 0..height * SCALE {
                for x in 0..width * SCALE {
                    let pixel = (y / SCALE) * width + x / SCALE;
                    let colour = |slot: usize| {
                        let channel = if n_channels >= 3 { slot } else { 0 };
                        (cell_values[channel * plane + pixel] * 255.0).round() as u8
                    };
                    let offset = ((top + y) * image_width + left + x) * 3;
                    rgb[offset..offset + 3].copy_from_slice(&[colour(0), colour(1), colour(2)]);
                }
            }
        }
    }
    let mut bytes = Vec::new();
    {
        let mut encoder = png::Encoder::new(&mut bytes, image_width as u32, image_height as u32);
        encoder.set_color(png::ColorType::Rgb);
        encoder.set_depth(png::BitDepth::Eight);
        let mut writer = encoder.write_header().map_err(std::io::Error::other)?;
        writer
            .write_image_data(&rgb)
            .map_err(std::io::Error::other)?;
    }
    phenoflow_schemas::atomic_write(path, &bytes)
}
