//! Nucleus detection on the DNA channel, in the manner of CellProfiler's IdentifyPrimaryObjects:
//!
//! 1. Gaussian smoothing (`smoothing_sigma`, truncated at 4σ, edges repeated).
//! 2. Background estimate: the minimum of the smoothed image over `background_block`-pixel tiles
//!    (larger than a nucleus, so every tile sees some background), smoothed over the tile grid
//!    and interpolated bilinearly back to full size; subtracted, which flattens uneven
//!    illumination.
//! 3. Threshold: Otsu's (256-bin histogram) on the background-subtracted image with values
//!    clipped at its 99.5th percentile (so that a few very bright objects, such as mitotic
//!    nuclei or debris, do not pull the threshold above ordinary nuclei), times
//!    `threshold_scale`.
//! 4. Splitting touching nuclei: seeds are the local maxima of a more strongly smoothed image
//!    (`declump_sigma`) within `min_distance` pixels, inside the foreground; plateaus count once.
//!    Foreground pixels are flooded from the seeds in order of decreasing intensity (a
//!    marker-based watershed on intensity), so dividing lines fall on the dim necks between
//!    nuclei. Foreground pieces that no seed reaches become objects of their own.
//! 5. Objects smaller than `min_area` or larger than `max_area` pixels are dropped.
//!
//! Objects are numbered in the order their seeds appear in a raster scan, which is deterministic.

use std::collections::VecDeque;

use crate::filters::*;
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

/// Reusable buffers of one detector thread. A field of 1024×1280 needs about a dozen full-size
/// planes; allocating them afresh for every field costs more (in page faults) than the
/// arithmetic, so each worker thread keeps its own.
#[derive(Debug, Default)]
struct Workspace {
    raw: Vec<f32>,
    smoothed: Vec<f32>,
    foreground: Vec<f32>,
    seed: Vec<f32>,
    local_max: Vec<f32>,
    scratch: Vec<f32>,
    line: Vec<f32>,
    prefix: Vec<f32>,
    suffix: Vec<f32>,
    mask: Vec<bool>,
    /// Indices of the foreground pixels, in raster order: the watershed and the statistics
    /// visit only these (typically a quarter of the field).
    foreground_pixels: Vec<u32>,
    labels: Vec<u32>,
    plane_prefix: Vec<f32>,
    plane_suffix: Vec<f32>,
    flood: BucketQueue,
    queue: VecDeque<usize>,
}

/// A priority queue over 65,536 integer levels that pops the highest level first and, within a
/// level, in insertion order: the same order as a binary heap keyed by (level, -insertion), in
/// O(1) per operation (the hierarchical queue of Vincent and Soille's watershed). Each level is
/// a linked list through one pool of entries, so a level costs two `u32` (512 kB for all, which
/// stays in cache) rather than a vector header and a heap block of its own.
#[derive(Debug)]
struct BucketQueue {
    /// First and last entry of each level's list (`NIL` when empty).
    first: Vec<u32>,
    last: Vec<u32>,
    /// (item, next entry of the same level); entries are never reused until `clear`.
    entries: Vec<(u32, u32)>,
    top: usize,
    len: usize,
}

const NIL: u32 = u32::MAX;

impl Default for BucketQueue {
    fn default() -> Self {
        Self {
            first: vec![NIL; 1 << 16],
            last: vec![NIL; 1 << 16],
            entries: Vec::new(),
            top: 0,
            len: 0,
        }
    }
}

impl BucketQueue {
    fn push(&mut self, level: u16, item: u32) {
        let level = usize::from(level);
        let entry = u32::try_from(self.entries.len()).expect("fewer than 2^32 entries");
        self.entries.push((item, NIL));
        match self.last[level] {
            NIL => self.first[level] = entry,
            tail => self.entries[tail as usize].1 = entry,
        }
        self.last[level] = entry;
        self.top = self.top.max(level);
        self.len += 1;
    }

    fn pop(&mut self) -> Option<u32> {
        if self.len == 0 {
            return None;
        }
        // Move down to the highest non-empty level (levels above `top` are all empty).
        while self.first[self.top] == NIL {
            self.top -= 1;
        }
        let entry = self.first[self.top] as usize;
        let (item, next) = self.entries[entry];
        self.first[self.top] = next;
        if next == NIL {
            self.last[self.top] = NIL;
        }
        self.len -= 1;
        if self.len == 0 {
            self.clear();
        }
        Some(item)
    }

    /// Empties the queue (levels above `top` are already empty).
    fn clear(&mut self) {
        self.first[..=self.top].fill(NIL);
        self.last[..=self.top].fill(NIL);
        self.entries.clear();
        self.top = 0;
        self.len = 0;
    }
}

thread_local! {
    static WORKSPACE: std::cell::RefCell<Workspace> = std::cell::RefCell::new(Workspace::default());
}

/// Detects nuclei in a DNA-stain image.
pub fn detect_nuclei(image: &GrayImage, params: &NucleusParams) -> Vec<Nucleus> {
    WORKSPACE.with(|workspace| detect_with(&mut workspace.borrow_mut(), image, params))
}

fn detect_with(ws: &mut Workspace, image: &GrayImage, params: &NucleusParams) -> Vec<Nucleus> {
    let (width, height) = (image.width, image.height);
    if width == 0 || height == 0 {
        return Vec::new();
    }
    ws.raw.clear();
    ws.raw
        .extend(image.pixels.iter().map(|&value| f32::from(value)));
    gaussian_blur_into(
        &ws.raw,
        width,
        height,
        params.smoothing_sigma,
        &mut ws.scratch,
        &mut ws.line,
        &mut ws.smoothed,
    );
    if params.background_block > 0 {
        subtract_background(
            &ws.smoothed,
            width,
            height,
            params.background_block,
            &mut ws.foreground,
        );
    } else {
        ws.foreground.clone_from(&ws.smoothed);
    }
    let clip = percentile(&ws.foreground, OTSU_CLIP_PERCENTILE, &mut ws.scratch);
    let threshold = otsu_threshold_clipped(&ws.foreground, clip) * params.threshold_scale;
    ws.mask.clear();
    ws.mask
        .extend(ws.foreground.iter().map(|&value| value > threshold));
    if !ws.mask.iter().any(|&inside| inside) {
        return Vec::new();
    }
    if (params.declump_sigma - params.smoothing_sigma).abs() < f32::EPSILON {
        ws.seed.clone_from(&ws.smoothed);
    } else {
        gaussian_blur_into(
            &ws.raw,
            width,
            height,
            params.declump_sigma,
            &mut ws.scratch,
            &mut ws.line,
            &mut ws.seed,
        );
    }
    max_filter_into(ws, width, height, params.min_distance);
    ws.foreground_pixels.clear();
    ws.foreground_pixels.extend(
        ws.mask
            .iter()
            .enumerate()
            .filter(|(_, &inside)| inside)
            .map(|(index, _)| index as u32),
    );
    watershed_from_maxima(ws, width, height);
    object_statistics(&ws.labels, &ws.foreground_pixels, width, params)
}

/// Separable maximum filter of `ws.seed` over a (2r+1)² window into `ws.local_max`. The
/// vertical pass runs the same block-wise prefix/suffix maxima over whole rows, so that it reads
/// memory in order and vectorises across x.
fn max_filter_into(ws: &mut Workspace, width: usize, height: usize, radius: usize) {
    set_len_for_overwrite(&mut ws.scratch, ws.seed.len());
    for (row_in, row_out) in ws
        .seed
        .chunks_exact(width)
        .zip(ws.scratch.chunks_exact_mut(width))
    {
        running_max(row_in, radius, &mut ws.prefix, &mut ws.suffix, row_out);
    }
    let window = 2 * radius + 1;
    let rows = &ws.scratch;
    set_len_for_overwrite(&mut ws.plane_prefix, rows.len());
    set_len_for_overwrite(&mut ws.plane_suffix, rows.len());
    let row = |y: usize| -> std::ops::Range<usize> { y * width..(y + 1) * width };
    for start in (0..height).step_by(window) {
        let end = (start + window).min(height);
        ws.plane_prefix[row(start)].copy_from_slice(&rows[row(start)]);
        for y in start + 1..end {
            let (done, rest) = ws.plane_prefix.split_at_mut(y * width);
            let previous = &done[(y - 1) * width..];
            for ((out, &above), &value) in rest[..width].iter_mut().zip(previous).zip(&rows[row(y)])
            {
                *out = larger(above, value);
            }
        }
        ws.plane_suffix[row(end - 1)].copy_from_slice(&rows[row(end - 1)]);
        for y in (start..end - 1).rev() {
            let (head, tail) = ws.plane_suffix.split_at_mut((y + 1) * width);
            let below = &tail[..width];
            for ((out, &under), &value) in
                head[y * width..].iter_mut().zip(below).zip(&rows[row(y)])
            {
                *out = larger(under, value);
            }
        }
    }
    set_len_for_overwrite(&mut ws.local_max, rows.len());
    for y in 0..height {
        let low = y.saturating_sub(radius);
        let high = (y + radius).min(height - 1);
        let prefix = &ws.plane_prefix[row(high)];
        if y < radius {
            ws.local_max[row(y)].copy_from_slice(prefix);
            continue;
        }
        let suffix = &ws.plane_suffix[row(low)];
        for ((out, &a), &b) in ws.local_max[row(y)].iter_mut().zip(suffix).zip(prefix) {
            *out = larger(a, b);
        }
    }
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

/// The 8-connected neighbours of `index`, in a fixed order.
#[inline]
fn for_each_neighbour(index: usize, width: usize, height: usize, mut visit: impl FnMut(usize)) {
    let (x, y) = (index % width, index / width);
    if x > 0 && y > 0 && x + 1 < width && y + 1 < height {
        for neighbour in [
            index - width - 1,
            index - width,
            index - width + 1,
            index - 1,
            index + 1,
            index + width - 1,
            index + width,
            index + width + 1,
        ] {
            visit(neighbour);
        }
        return;
    }
    for &(dx, dy) in &NEIGHBOURS {
        let (nx, ny) = (x as isize + dx, y as isize + dy);
        if nx >= 0 && ny >= 0 && (nx as usize) < width && (ny as usize) < height {
            visit(ny as usize * width + nx as usize);
        }
    }
}

/// Gives `label` to `start` and to every unlabelled pixel 8-connected to it through pixels that
/// satisfy `member` (breadth first, using `queue`).
fn grow_region(
    labels: &mut [u32],
    queue: &mut VecDeque<usize>,
    width: usize,
    height: usize,
    start: usize,
    label: u32,
    member: impl Fn(usize) -> bool,
) {
    labels[start] = label;
    queue.push_back(start);
    while let Some(index) = queue.pop_front() {
        for_each_neighbour(index, width, height, |neighbour| {
            if labels[neighbour] == 0 && member(neighbour) {
                labels[neighbour] = label;
                queue.push_back(neighbour);
            }
        });
    }
}

/// Labels the foreground of `ws.mask` into `ws.labels`: 0 is background, objects are 1..=n,
/// seeded at the local maxima of `ws.seed` (`ws.local_max` holds the neighbourhood maxima).
fn watershed_from_maxima(ws: &mut Workspace, width: usize, height: usize) {
    let Workspace {
        seed: intensity,
        local_max,
        mask,
        foreground_pixels,
        labels,
        flood,
        queue,
        ..
    } = ws;
    labels.clear();
    labels.resize(intensity.len(), 0);
    let mut n_labels = 0u32;
    // Seeds: foreground pixels equal to their neighbourhood maximum; a connected plateau of such
    // pixels is one seed.
    let is_seed = |index: usize| mask[index] && intensity[index] >= local_max[index];
    queue.clear();
    for &start in foreground_pixels.iter() {
        let start = start as usize;
        if labels[start] != 0 || !is_seed(start) {
            continue;
        }
        n_labels += 1;
        grow_region(labels, queue, width, height, start, n_labels, is_seed);
    }
    // Priority flood: brightest pixels first, first come first served among equals.
    let (low, high) = min_max(intensity);
    let scale = if high > low {
        65535.0 / (high - low)
    } else {
        0.0
    };
    let level = |index: usize| ((intensity[index] - low) * scale) as u16;
    flood.clear();
    for &index in foreground_pixels.iter() {
        if labels[index as usize] != 0 {
            flood.push(level(index as usize), index);
        }
    }
    while let Some(index) = flood.pop() {
        let index = index as usize;
        let label = labels[index];
        for_each_neighbour(index, width, height, |neighbour| {
            if labels[neighbour] == 0 && mask[neighbour] {
                labels[neighbour] = label;
                flood.push(level(neighbour), neighbour as u32);
            }
        });
    }
    // Foreground no seed reached (its maximum lay within `min_distance` of a brighter object
    // across background) becomes objects of its own.
    for &start in foreground_pixels.iter() {
        let start = start as usize;
        if labels[start] != 0 {
            continue;
        }
        n_labels += 1;
        grow_region(labels, queue, width, height, start, n_labels, |index| {
            mask[index]
        });
    }
}

fn object_statistics(
    labels: &[u32],
    foreground_pixels: &[u32],
    width: usize,
    params: &NucleusParams,
) -> Vec<Nucleus> {
    let n_labels = foreground_pixels
        .iter()
        .map(|&i| labels[i as usize])
        .max()
        .unwrap_or(0) as usize;
    let mut sums = vec![(0usize, 0.0f64, 0.0f64); n_labels + 1];
    for &index in foreground_pixels {
        let index = index as usize;
        let entry = &mut sums[labels[index] as usize];
        entry.0 += 1;
        entry.1 += (index % width) as f64;
        entry.2 += (index / width) as f64;
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
    fn running_max_matches_naive_window() {
        let input: Vec<f32> = (0..37).map(|i| ((i * 7919) % 23) as f32).collect();
        for radius in [0, 1, 3, 8, 40] {
            let mut output = vec![0.0; input.len()];
            running_max(
                &input,
                radius,
                &mut Vec::new(),
                &mut Vec::new(),
                &mut output,
            );
            for (i, &value) in output.iter().enumerate() {
                let window = &input[i.saturating_sub(radius)..(i + radius + 1).min(input.len())];
                assert_eq!(
                    value,
                    window.iter().copied().fold(f32::MIN, f32::max),
                    "r={radius} i={i}"
                );
            }
        }
    }

    #[test]
    fn max_filter_matches_naive_window_in_two_dimensions() {
        let (width, height, radius) = (23, 17, 3);
        let mut ws = Workspace {
            seed: (0..width * height)
                .map(|i| ((i * 7919) % 101) as f32)
                .collect(),
            ..Workspace::default()
        };
        max_filter_into(&mut ws, width, height, radius);
        for y in 0..height {
            for x in 0..width {
                let mut expected = f32::MIN;
                for yy in y.saturating_sub(radius)..(y + radius + 1).min(height) {
                    for xx in x.saturating_sub(radius)..(x + radius + 1).min(width) {
                        expected = expected.max(ws.seed[yy * width + xx]);
                    }
                }
                assert_eq!(ws.local_max[y * width + x], expected, "x={x} y={y}");
            }
        }
    }

    #[test]
    fn percentile_matches_numpy_linear() {
        let values: Vec<f32> = (1..=11).map(|v| v as f32).collect();
        assert_eq!(percentile(&values, 50.0, &mut Vec::new()), 6.0);
        assert!((percentile(&values, 99.5, &mut Vec::new()) - 10.95).abs() < 1e-5);
        // Against a full sort, on values with many ties and a wide range.
        let values: Vec<f32> = (0..10_007u32)
            .map(|i| ((i.wrapping_mul(2_654_435_761) >> 7) % 5000) as f32 * 0.37)
            .collect();
        let mut sorted = values.clone();
        sorted.sort_unstable_by(f32::total_cmp);
        for p in [0.0, 12.5, 50.0, 99.5, 100.0] {
            let position = p / 100.0 * (values.len() - 1) as f64;
            let low = sorted[position.floor() as usize];
            let high = sorted[(position.floor() as usize + 1).min(values.len() - 1)];
            let expected = low + (high - low) * (position - position.floor()) as f32;
            assert_eq!(percentile(&values, p, &mut Vec::new()), expected, "p={p}");
        }
    }

    #[test]
    fn otsu_separates_two_modes() {
        let mut values = vec![10.0f32; 500];
        values.extend(vec![200.0f32; 300]);
        let threshold = otsu_threshold(&values);
        assert!(threshold > 10.0 && threshold < 200.0, "{threshold}");
    }
}
