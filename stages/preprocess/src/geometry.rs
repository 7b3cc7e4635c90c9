//! Cutting crops around cell centres and resizing whole fields.
//!
//! Crop convention: for a centre (x, y) and an even size S, the crop covers columns
//! `round(x) - S/2 .. round(x) + S/2` (half-open; halves round to even, as numpy does) and the
//! same rows, so the centre pixel sits at
//! `(S/2, S/2)` in the crop. For odd S the centre pixel is exactly in the middle.
//!
//! Edge policy: a crop that would reach outside the field is either skipped (the default, as
//! CellProfiler-cropped data sets such as the DTU one contain only whole crops) or filled with
//! zeros outside the field.

use crate::image_io::GrayImage;

/// What to do with a cell whose crop reaches outside the field.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum EdgePolicy {
    /// Leave the cell out.
    Skip,
    /// Keep it; pixels outside the field are 0.
    Zero,
}

/// Appends the `[C,S,S]` crop centred on (center_x, center_y) to `out`; returns false (and
/// appends nothing) when the crop reaches outside the field and the policy is `Skip`.
pub fn crop_cell(
    channels: &[GrayImage],
    center_x: f64,
    center_y: f64,
    size: usize,
    edge: EdgePolicy,
    out: &mut Vec<u16>,
) -> bool {
    let Some(first) = channels.first() else {
        return false;
    };
    let (width, height) = (first.width as i64, first.height as i64);
    let left = center_x.round_ties_even() as i64 - (size / 2) as i64;
    let top = center_y.round_ties_even() as i64 - (size / 2) as i64;
    let inside =
        left >= 0 && top >= 0 && left + size as i64 <= width && top + size as i64 <= height;
    if !inside && edge == EdgePolicy::Skip {
        return false;
    }
    for channel in channels {
        for row in 0..size as i64 {
            let y = top + row;
            if inside {
                let start = (y * width + left) as usize;
                out.extend_from_slice(&channel.pixels[start..start + size]);
                continue;
            }
            for column in 0..size as i64 {
                let x = left + column;
                let value = if x >= 0 && y >= 0 && x < width && y < height {
                    channel.pixels[(y * width + x) as usize]
                } else {
                    0
                };
                out.push(value);
            }
        }
    }
    true
}

/// Area-averaging resize (each output pixel is the overlap-weighted mean of the input pixels it
/// covers, like OpenCV's INTER_AREA). At equal sizes it is the identity.
pub fn resize_area(
    values: &[f32],
    width: usize,
    height: usize,
    out_width: usize,
    out_height: usize,
) -> Vec<f32> {
    let weights = |n_in: usize, n_out: usize| -> Vec<Vec<(usize, f32)>> {
        let scale = n_in as f64 / n_out as f64;
        (0..n_out)
            .map(|i| {
                let (start, end) = (i as f64 * scale, (i + 1) as f64 * scale);
                let mut taps = Vec::new();
                let mut source = start.floor() as usize;
                while (source as f64) < end && source < n_in {
                    let overlap = (end.min(source as f64 + 1.0) - start.max(source as f64)) as f32;
                    if overlap > 0.0 {
                        taps.push((source, overlap / scale as f32));
                    }
                    source += 1;
                }
                taps
            })
            .collect()
    };
    let x_taps = weights(width, out_width);
    let y_taps = weights(height, out_height);
    let mut horizontal = vec![0.0f32; out_width * height];
    for (row_in, row_out) in values
        .chunks_exact(width)
        .zip(horizontal.chunks_exact_mut(out_width))
    {
        for (out, taps) in row_out.iter_mut().zip(&x_taps) {
            *out = taps.iter().map(|&(x, weight)| row_in[x] * weight).sum();
        }
    }
    let mut output = vec![0.0f32; out_width * out_height];
    for (row_out, taps) in output.chunks_exact_mut(out_width).zip(&y_taps) {
        for &(y, weight) in taps {
            let row_in = &horizontal[y * out_width..(y + 1) * out_width];
            for (out, &value) in row_out.iter_mut().zip(row_in) {
                *out += value * weight;
            }
        }
    }
    output
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ramp(width: usize, height: usize) -> GrayImage {
        GrayImage {
            width,
            height,
            pixels: (0..(width * height) as u16).collect(),
        }
    }

    #[test]
    fn crop_is_centred_and_skips_at_edges() {
        let image = ramp(10, 8);
        let mut out = Vec::new();
        assert!(crop_cell(
            std::slice::from_ref(&image),
            5.0,
            4.2,
            4,
            EdgePolicy::Skip,
            &mut out
        ));
        // Columns 3..7, rows 2..6.
        assert_eq!(&out[..4], &[23, 24, 25, 26]);
        assert_eq!(out[4 * 3 + 3], 56);
        out.clear();
        assert!(!crop_cell(
            std::slice::from_ref(&image),
            1.0,
            4.0,
            4,
            EdgePolicy::Skip,
            &mut out
        ));
        assert!(out.is_empty());
        assert!(crop_cell(&[image], 1.0, 4.0, 4, EdgePolicy::Zero, &mut out));
        assert_eq!(&out[..4], &[0, 20, 21, 22]);
    }

    #[test]
    fn resize_identity_and_halving() {
        let values: Vec<f32> = (0..16).map(|v| v as f32).collect();
        assert_eq!(resize_area(&values, 4, 4, 4, 4), values);
        let half = resize_area(&values, 4, 4, 2, 2);
        assert_eq!(half, vec![2.5, 4.5, 10.5, 12.5]);
        let third = resize_area(&[0.0, 3.0, 6.0], 3, 1, 2, 1);
        assert!(
            (third[0] - 1.0).abs() < 1e-6 && (third[1] - 5.0).abs() < 1e-6,
            "{third:?}"
        );
    }
}
