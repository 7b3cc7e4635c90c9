//! Nucleus detection on the DNA channel, in the manner of CellProfiler's IdentifyPrimaryObjects:
//!
//! 1. Gaussian smoothing (`smoothing_sigma`, truncated at 4σ, edges repeated).
//! 2. Background estimate: the minimum of the smoothed image over `background_block`-pixel tiles
//!    (larger than a nucleus, so every tile sees some background), smoothed over the tile grid
//!    and interpolated bilinearly back to full size; subtracted, which flattens uneven
//!    illumination.
//! 3. Threshold: Otsu's (256-bin histogram) on the background-subtracted image, times
//!    `threshold_scale`.
//! 4. Splitting touching nuclei: seeds are the local maxima of a more strongly smoothed image
//!    (`declump_sigma`) within `min_distance` pixels, inside the foreground; plateaus count once.
//!    Foreground pixels are flooded from the seeds in order of decreasing intensity (a
//!    marker-based watershed on intensity), so dividing lines fall on the dim necks between
//!    nuclei. Foreground pieces that no seed reaches become objects of their own.
//! 5. Objects smaller than `min_area` or larger than `max_area` pixels are dropped.
//!
//! Objects are numbered in the order their seeds appear in a raster scan, which is deterministic.

use std::collections::{BinaryHeap, VecDeque};

use crate::image_io::GrayImage;

/// Parameters of the detector; the defaults suit BBBC021 (MCF-7 at 1024×1280, nuclei ~20–40 px).
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct NucleusParams {
    pub smoothing_sigma: f32,
    /// Tile size of the background estimate in pixels; 0 disables background subtraction.
    pub background_block: usize,
    pub threshold_scale: f32,
    pub declump_sigma: f32,
    pub min_distance: usize,
    pub min_area: usize,
    /// 0 means no upper limit.
    pub max_area: usize,
}

impl Default for NucleusParams {
    fn default() -> Self {
        Self {
            smoothing_sigma: 2.0,
            background_block: 64,
            threshold_scale: 1.0,
            declump_sigma: 4.0,
            min_distance: 8,
            min_area: 80,
            max_area: 0,
        }
    }
}

/// One detected nucleus: centroid in pixel coordinates (x = column, y = row, 0-based) and area.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Nucleus {
    pub center_x: f64,
    pub center_y: f64,
    pub area: usize,
}

/// Detects nuclei in a DNA-stain image.
pub fn detect_nuclei(image: &GrayImage, params: &NucleusParams) -> Vec<Nucleus> {
    let (width, height) = (image.width, image.height);
    if width == 0 || height == 0 {
        return Vec::new();
    }
    let raw: Vec<f32> = image.pixels.iter().map(|&value| f32::from(value)).collect();
    let smoothed = gaussian_blur(&raw, width, height, params.smoothing_sigma);
    let foreground = if params.background_block > 0 {
        let background = estimate_background(&smoothed, width, height, params.background_block);
        smoothed
            .iter()
            .zip(&background)
            .map(|(value, floor)| (value - floor).max(0.0))
            .collect()
    } else {
        smoothed.clone()
    };
    let threshold = otsu_threshold(&foreground) * params.threshold_scale;
    let mask: Vec<bool> = foreground.iter().map(|&value| value > threshold).collect();
    if !mask.iter().any(|&inside| inside) {
        return Vec::new();
    }
    let seed_image = if (params.declump_sigma - params.smoothing_sigma).abs() < f32::EPSILON {
        smoothed
    } else {
        gaussian_blur(&raw, width, height, params.declump_sigma)
    };
    let labels = watershed_from_maxima(&seed_image, &mask, width, height, params.min_distance);
    object_statistics(&labels, width, params)
}

/// Separable Gaussian blur, kernel truncated at 4σ, edge pixels repeated (scipy's `nearest`).
pub fn gaussian_blur(values: &[f32], width: usize, height: usize, sigma: f32) -> Vec<f32> {
    if sigma <= 0.0 {
        return values.to_vec();
    }
    let radius = (4.0 * sigma + 0.5) as usize;
    let kernel: Vec<f32> = {
        let raw: Vec<f32> = (0..=2 * radius)
            .map(|i| {
                let offset = i as f32 - radius as f32;
                (-0.5 * offset * offset / (sigma * sigma)).exp()
            })
            .collect();
        let total: f32 = raw.iter().sum();
        raw.into_iter().map(|weight| weight / total).collect()
    };
    // Horizontal pass over an edge-padded copy of each row; the loop over x is the inner one so
    // that it vectorises.
    let mut horizontal = vec![0.0f32; values.len()];
    let mut padded = vec![0.0f32; width + 2 * radius];
    for (row_in, row_out) in values.chunks_exact(width).zip(horizontal.chunks_exact_mut(width)) {
        padded[..radius].fill(row_in[0]);
        padded[radius..radius + width].copy_from_slice(row_in);
        padded[radius + width..].fill(row_in[width - 1]);
        for (k, &weight) in kernel.iter().enumerate() {
            for (out, &value) in row_out.iter_mut().zip(&padded[k..k + width]) {
                *out += weight * value;
            }
        }
    }
    // Vertical pass: each output row is a weighted sum of (clamped) input rows.
    let mut output = vec![0.0f32; values.len()];
    for (y, row_out) in output.chunks_exact_mut(width).enumerate() {
        for (k, &weight) in kernel.iter().enumerate() {
            let source_y = (y + k).saturating_sub(radius).min(height - 1);
            let row_in = &horizontal[source_y * width..(source_y + 1) * width];
            for (out, &value) in row_out.iter_mut().zip(row_in) {
                *out += weight * value;
            }
        }
    }
    output
}

/// Tile-minimum background, smoothed over the tile grid and interpolated back to full size.
fn estimate_background(values: &[f32], width: usize, height: usize, block: usize) -> Vec<f32> {
    let grid_width = width.div_ceil(block);
    let grid_height = height.div_ceil(block);
    let mut grid = vec![f32::INFINITY; grid_width * grid_height];
    for (y, row) in values.chunks_exact(width).enumerate() {
        let grid_row = &mut grid[(y / block) * grid_width..(y / block + 1) * grid_width];
        for (x, &value) in row.iter().enumerate() {
            let cell = &mut grid_row[x / block];
            *cell = cell.min(value);
        }
    }
    let grid = gaussian_blur(&grid, grid_width, grid_height, 1.0);
    let sample = |position: f32, n: usize| -> (usize, usize, f32) {
        let clamped = position.clamp(0.0, (n - 1) as f32);
        let low = clamped.floor() as usize;
        let high = (low + 1).min(n - 1);
        (low, high, clamped - low as f32)
    };
    let x_samples: Vec<_> = (0..width)
        .map(|x| sample((x as f32 + 0.5) / block as f32 - 0.5, grid_width))
        .collect();
    let mut background = vec![0.0f32; values.len()];
    for (y, row) in background.chunks_exact_mut(width).enumerate() {
        let (y0, y1, fy) = sample((y as f32 + 0.5) / block as f32 - 0.5, grid_height);
        for (out, &(x0, x1, fx)) in row.iter_mut().zip(&x_samples) {
            let top = grid[y0 * grid_width + x0] * (1.0 - fx) + grid[y0 * grid_width + x1] * fx;
            let bottom = grid[y1 * grid_width + x0] * (1.0 - fx) + grid[y1 * grid_width + x1] * fx;
            *out = top * (1.0 - fy) + bottom * fy;
        }
    }
    background
}

/// Otsu's threshold over a 256-bin histogram spanning the values' range (as scikit-image).
pub fn otsu_threshold(values: &[f32]) -> f32 {
    let (min, max) = values
        .iter()
        .fold((f32::INFINITY, f32::NEG_INFINITY), |(lo, hi), &v| (lo.min(v), hi.max(v)));
    if !(max > min) {
        return min;
    }
    const N_BINS: usize = 256;
    let bin_width = (max - min) / N_BINS as f32;
    let mut histogram = [0u64; N_BINS];
    for &value in values {
        let bin = (((value - min) / bin_width) as usize).min(N_BINS - 1);
        histogram[bin] += 1;
    }
    let centre = |bin: usize| f64::from(min) + (bin as f64 + 0.5) * f64::from(bin_width);
    let total: u64 = histogram.iter().sum();
    let total_sum: f64 = histogram
        .iter()
        .enumerate()
        .map(|(bin, &count)| count as f64 * centre(bin))
        .sum();
    let (mut weight_low, mut sum_low) = (0.0f64, 0.0f64);
    let (mut best_variance, mut best_bin) = (-1.0f64, 0usize);
    for (bin, &count) in histogram.iter().enumerate().take(N_BINS - 1) {
        weight_low += count as f64;
        sum_low += count as f64 * centre(bin);
        let weight_high = total as f64 - weight_low;
        if weight_low == 0.0 || weight_high == 0.0 {
            continue;
        }
        let mean_low = sum_low / weight_low;
        let mean_high = (total_sum - sum_low) / weight_high;
        let between = weight_low * weight_high * (mean_low - mean_high).powi(2);
        if between > best_variance {
            best_variance = between;
            best_bin = bin;
        }
    }
    centre(best_bin) as f32
}

/// Separable maximum filter over a (2r+1)² window, edges clamped.
fn max_filter(values: &[f32], width: usize, height: usize, radius: usize) -> Vec<f32> {
    let mut horizontal = vec![0.0f32; values.len()];
    for (row_in, row_out) in values.chunks_exact(width).zip(horizontal.chunks_exact_mut(width)) {
        for (x, out) in row_out.iter_mut().enumerate() {
            let window = &row_in[x.saturating_sub(radius)..(x + radius + 1).min(width)];
            *out = window.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        }
    }
    let mut output = vec![f32::NEG_INFINITY; values.len()];
    for y in 0..height {
        let row_out = &mut output[y * width..(y + 1) * width];
        for source_y in y.saturating_sub(radius)..(y + radius + 1).min(height) {
            let row_in = &horizontal[source_y * width..(source_y + 1) * width];
            for (out, &value) in row_out.iter_mut().zip(row_in) {
                *out = out.max(value);
            }
        }
    }
    output
}

const NEIGHBOURS: [(isize, isize); 8] = [
    (-1, -1),
    (0, -1),
    (1, -1),
    (-1, 0),
    (1, 0),
    (-1, 1),
    (0, 1),
    (1, 1),
];

fn neighbours(index: usize, width: usize, height: usize) -> impl Iterator<Item = usize> {
    let (x, y) = ((index % width) as isize, (index / width) as isize);
    NEIGHBOURS.iter().filter_map(move |&(dx, dy)| {
        let (nx, ny) = (x + dx, y + dy);
        (nx >= 0 && ny >= 0 && (nx as usize) < width && (ny as usize) < height)
            .then(|| ny as usize * width + nx as usize)
    })
}

/// Labels the foreground: 0 is background, objects are 1..=n.
fn watershed_from_maxima(
    intensity: &[f32],
    mask: &[bool],
    width: usize,
    height: usize,
    min_distance: usize,
) -> Vec<u32> {
    let local_max = max_filter(intensity, width, height, min_distance);
    let mut labels = vec![0u32; intensity.len()];
    let mut n_labels = 0u32;
    // Seeds: foreground pixels equal to their neighbourhood maximum; a connected plateau of such
    // pixels is one seed.
    let is_seed = |index: usize| mask[index] && intensity[index] >= local_max[index];
    let mut queue = VecDeque::new();
    for start in 0..intensity.len() {
        if labels[start] != 0 || !is_seed(start) {
            continue;
        }
        n_labels += 1;
        labels[start] = n_labels;
        queue.push_back(start);
        while let Some(index) = queue.pop_front() {
            for neighbour in neighbours(index, width, height) {
                if labels[neighbour] == 0 && is_seed(neighbour) {
                    labels[neighbour] = n_labels;
                    queue.push_back(neighbour);
                }
            }
        }
    }
    // Priority flood: brightest pixels first, first come first served among equals.
    let (low, high) = intensity
        .iter()
        .fold((f32::INFINITY, f32::NEG_INFINITY), |(lo, hi), &v| (lo.min(v), hi.max(v)));
    let scale = if high > low { 65535.0 / (high - low) } else { 0.0 };
    let level = |index: usize| ((intensity[index] - low) * scale) as u16;
    let mut heap: BinaryHeap<(u16, std::cmp::Reverse<u64>, u32)> = BinaryHeap::new();
    let mut order = 0u64;
    for (index, &label) in labels.iter().enumerate() {
        if label != 0 {
            heap.push((level(index), std::cmp::Reverse(order), index as u32));
            order += 1;
        }
    }
    while let Some((_, _, index)) = heap.pop() {
        let index = index as usize;
        let label = labels[index];
        for neighbour in neighbours(index, width, height) {
            if labels[neighbour] == 0 && mask[neighbour] {
                labels[neighbour] = label;
                heap.push((level(neighbour), std::cmp::Reverse(order), neighbour as u32));
                order += 1;
            }
        }
    }
    // Foreground no seed reached (its maximum lay within `min_distance` of a brighter object
    // across background) becomes objects of its own.
    for start in 0..intensity.len() {
        if labels[start] != 0 || !mask[start] {
            continue;
        }
        n_labels += 1;
        labels[start] = n_labels;
        queue.push_back(start);
        while let Some(index) = queue.pop_front() {
            for neighbour in neighbours(index, width, height) {
                if labels[neighbour] == 0 && mask[neighbour] {
                    labels[neighbour] = n_labels;
                    queue.push_back(neighbour);
                }
            }
        }
    }
    labels
}

fn object_statistics(labels: &[u32], width: usize, params: &NucleusParams) -> Vec<Nucleus> {
    let n_labels = labels.iter().copied().max().unwrap_or(0) as usize;
    let mut sums = vec![(0usize, 0.0f64, 0.0f64); n_labels + 1];
    for (index, &label) in labels.iter().enumerate() {
        if label != 0 {
            let entry = &mut sums[label as usize];
            entry.0 += 1;
            entry.1 += (index % width) as f64;
            entry.2 += (index / width) as f64;
        }
    }
    sums.into_iter()
        .skip(1)
        .filter(|&(area, _, _)| {
            area >= params.min_area && (params.max_area == 0 || area <= params.max_area)
        })
        .map(|(area, sum_x, sum_y)| Nucleus {
            center_x: sum_x / area as f64,
            center_y: sum_y / area as f64,
            area,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A dark image with bright discs at the given centres and radius.
    fn discs(width: usize, height: usize, centres: &[(f64, f64)], radius: f64) -> GrayImage {
        let mut pixels = vec![100u16; width * height];
        for y in 0..height {
            for x in 0..width {
                for &(cx, cy) in centres {
                    let distance = ((x as f64 - cx).powi(2) + (y as f64 - cy).powi(2)).sqrt();
                    if distance <= radius {
                        pixels[y * width + x] = (3000.0 - 1500.0 * distance / radius) as u16;
                    }
                }
            }
        }
        GrayImage {
            width,
            height,
            pixels,
        }
    }

    #[test]
    fn finds_separate_discs_at_their_centres() {
        let centres = [(30.0, 30.0), (100.0, 40.0), (60.0, 110.0)];
        let image = discs(160, 150, &centres, 10.0);
        let params = NucleusParams {
            background_block: 0,
            ..NucleusParams::default()
        };
        let found = detect_nuclei(&image, &params);
        assert_eq!(found.len(), 3, "{found:?}");
        for (nucleus, &(cx, cy)) in found.iter().zip(&centres) {
            assert!((nucleus.center_x - cx).abs() < 1.0 && (nucleus.center_y - cy).abs() < 1.0);
        }
    }

    #[test]
    fn splits_two_touching_discs() {
        let image = discs(120, 80, &[(45.0, 40.0), (70.0, 40.0)], 14.0);
        let params = NucleusParams {
            background_block: 0,
            declump_sigma: 3.0,
            ..NucleusParams::default()
        };
        let found = detect_nuclei(&image, &params);
        assert_eq!(found.len(), 2, "{found:?}");
        assert!((found[0].center_x - 45.0).abs() < 3.0, "{found:?}");
        assert!((found[1].center_x - 70.0).abs() < 3.0, "{found:?}");
    }

    #[test]
    fn min_area_drops_specks_and_empty_image_has_none() {
        let image = discs(100, 100, &[(50.0, 50.0), (20.0, 20.0)], 3.0);
        let params = NucleusParams {
            background_block: 0,
            min_area: 200,
            ..NucleusParams::default()
        };
        assert!(detect_nuclei(&image, &params).is_empty());
        let flat = GrayImage {
            width: 50,
            height: 40,
            pixels: vec![7; 2000],
        };
        assert!(detect_nuclei(&flat, &NucleusParams::default()).is_empty());
    }

    #[test]
    fn background_gradient_is_removed() {
        let mut image = discs(256, 256, &[(64.0, 64.0), (192.0, 192.0)], 10.0);
        for y in 0..256 {
            for x in 0..256 {
                image.pixels[y * 256 + x] += (x * 6) as u16;
            }
        }
        let found = detect_nuclei(&image, &NucleusParams::default());
        assert_eq!(found.len(), 2, "{found:?}");
    }

    #[test]
    fn gaussian_preserves_constant_and_mass() {
        let values = vec![5.0f32; 40 * 30];
        let blurred = gaussian_blur(&values, 40, 30, 2.5);
        assert!(blurred.iter().all(|v| (v - 5.0).abs() < 1e-4));
        let mut impulse = vec![0.0f32; 41 * 41];
        impulse[20 * 41 + 20] = 1.0;
        let spread: f32 = gaussian_blur(&impulse, 41, 41, 2.0).iter().sum();
        assert!((spread - 1.0).abs() < 1e-4);
    }

    #[test]
    fn otsu_separates_two_modes() {
        let mut values = vec![10.0f32; 500];
        values.extend(vec![200.0f32; 300]);
        let threshold = otsu_threshold(&values);
        assert!(threshold > 10.0 && threshold < 200.0, "{threshold}");
    }
}
