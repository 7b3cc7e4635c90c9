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

/// Gives `buffer` length `len` without clearing what it holds: for buffers every element of which
/// is written before it is read. Zero-filling a dozen 5 MB planes per field costs measurable time.
fn set_len_for_overwrite<T: Copy + Default>(buffer: &mut Vec<T>, len: usize) {
    buffer.resize(len, T::default());
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

/// Separable Gaussian blur, kernel truncated at 4σ, edge pixels repeated (scipy's `nearest`).
pub fn gaussian_blur(values: &[f32], width: usize, height: usize, sigma: f32) -> Vec<f32> {
    let mut output = Vec::new();
    gaussian_blur_into(
        values,
        width,
        height,
        sigma,
        &mut Vec::new(),
        &mut Vec::new(),
        &mut output,
    );
    output
}

fn gaussian_blur_into(
    values: &[f32],
    width: usize,
    height: usize,
    sigma: f32,
    horizontal: &mut Vec<f32>,
    padded: &mut Vec<f32>,
    output: &mut Vec<f32>,
) {
    if sigma <= 0.0 {
        output.clear();
        output.extend_from_slice(values);
        return;
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
    // Horizontal pass over an edge-padded copy of each row. The kernel is symmetric, so each
    // pair of taps at ±k costs one multiply; the loop over x is the inner one so that it
    // vectorises.
    set_len_for_overwrite(horizontal, values.len());
    set_len_for_overwrite(padded, width + 2 * radius);
    for (row_in, row_out) in values
        .chunks_exact(width)
        .zip(horizontal.chunks_exact_mut(width))
    {
        padded[..radius].fill(row_in[0]);
        padded[radius..radius + width].copy_from_slice(row_in);
        padded[radius + width..].fill(row_in[width - 1]);
        let centre_weight = kernel[radius];
        for (out, &value) in row_out.iter_mut().zip(&padded[radius..radius + width]) {
            *out = centre_weight * value;
        }
        for k in 1..=radius {
            let weight = kernel[radius + k];
            let left = &padded[radius - k..radius - k + width];
            let right = &padded[radius + k..radius + k + width];
            for ((out, &a), &b) in row_out.iter_mut().zip(left).zip(right) {
                *out += weight * (a + b);
            }
        }
    }
    // Vertical pass: each output row is a weighted sum of (clamped) input rows, paired likewise.
    set_len_for_overwrite(output, values.len());
    let source_row = |y: isize| -> &[f32] {
        let clamped = y.clamp(0, height as isize - 1) as usize;
        &horizontal[clamped * width..(clamped + 1) * width]
    };
    for (y, row_out) in output.chunks_exact_mut(width).enumerate() {
        let y = y as isize;
        let centre_weight = kernel[radius];
        for (out, &value) in row_out.iter_mut().zip(source_row(y)) {
            *out = centre_weight * value;
        }
        for k in 1..=radius {
            let weight = kernel[radius + k];
            let (above, below) = (source_row(y - k as isize), source_row(y + k as isize));
            for ((out, &a), &b) in row_out.iter_mut().zip(above).zip(below) {
                *out += weight * (a + b);
            }
        }
    }
}

/// Writes `max(smoothed - background, 0)` into `foreground`, the background being the
/// tile-minimum estimate smoothed over the tile grid and interpolated back to full size.
fn subtract_background(
    smoothed: &[f32],
    width: usize,
    height: usize,
    block: usize,
    foreground: &mut Vec<f32>,
) {
    let grid_width = width.div_ceil(block);
    let grid_height = height.div_ceil(block);
    // Tile minima: a column-wise running minimum over each band of `block` rows (element-wise,
    // so it vectorises), then the minimum of each tile's stretch of that row.
    let mut grid = vec![f32::INFINITY; grid_width * grid_height];
    let mut band_min = vec![f32::INFINITY; width];
    for (band, rows) in smoothed.chunks(block * width).enumerate() {
        band_min.fill(f32::INFINITY);
        for row in rows.chunks_exact(width) {
            for (low, &value) in band_min.iter_mut().zip(row) {
                *low = if value < *low { value } else { *low };
            }
        }
        for (cell, stretch) in grid[band * grid_width..(band + 1) * grid_width]
            .iter_mut()
            .zip(band_min.chunks(block))
        {
            *cell = min_max(stretch).0;
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
    // The background interpolated along x at every grid row, once; each image row then blends
    // two of these rows (the same arithmetic, in the same order, as interpolating per pixel).
    let along_x: Vec<f32> = (0..grid_height)
        .flat_map(|gy| {
            let grid_row = &grid[gy * grid_width..(gy + 1) * grid_width];
            x_samples
                .iter()
                .map(move |&(x0, x1, fx)| grid_row[x0] * (1.0 - fx) + grid_row[x1] * fx)
        })
        .collect();
    set_len_for_overwrite(foreground, smoothed.len());
    for (y, (row_out, row_in)) in foreground
        .chunks_exact_mut(width)
        .zip(smoothed.chunks_exact(width))
        .enumerate()
    {
        let (y0, y1, fy) = sample((y as f32 + 0.5) / block as f32 - 0.5, grid_height);
        let top = &along_x[y0 * width..(y0 + 1) * width];
        let bottom = &along_x[y1 * width..(y1 + 1) * width];
        for (((out, &value), &top), &bottom) in row_out.iter_mut().zip(row_in).zip(top).zip(bottom)
        {
            *out = larger(0.0, value - (top * (1.0 - fy) + bottom * fy));
        }
    }
}

/// The larger of two NaN-free values, `a` on ties: one `vmaxps`, where `f32::max` adds the NaN
/// checks (three instructions). `larger(0.0, x)` is +0.0 for x = -0.0, which the percentile's
/// bit-pattern ordering relies on.
#[inline]
fn larger(a: f32, b: f32) -> f32 {
    if b > a {
        b
    } else {
        a
    }
}

/// Lanes of the reductions below: wide enough for two AVX2 registers.
const LANES: usize = 16;

/// (minimum, maximum) of NaN-free `values` (±infinity when empty). Kept in `LANES` running
/// minima and maxima, which vectorise, where a `fold(f32::min)` is a chain of dependent scalar
/// operations; min and max are exact, so the order does not change the result.
fn min_max(values: &[f32]) -> (f32, f32) {
    let mut low = [f32::INFINITY; LANES];
    let mut high = [f32::NEG_INFINITY; LANES];
    let chunks = values.chunks_exact(LANES);
    let rest = chunks.remainder();
    for chunk in chunks {
        for lane in 0..LANES {
            let value = chunk[lane];
            low[lane] = if value < low[lane] { value } else { low[lane] };
            high[lane] = if value > high[lane] {
                value
            } else {
                high[lane]
            };
        }
    }
    let fold = |lanes: &[f32], pick: fn(f32, f32) -> f32, start: f32| {
        lanes.iter().chain(rest).copied().fold(start, pick)
    };
    (
        fold(&low, f32::min, f32::INFINITY),
        fold(&high, f32::max, f32::NEG_INFINITY),
    )
}

/// Percentile at which intensities are clipped before Otsu's threshold is computed.
const OTSU_CLIP_PERCENTILE: f64 = 99.5;

/// The `percentile`-th percentile of `values` (linear interpolation between order statistics,
/// numpy's default). Exact, without sorting: the values are non-negative, so their IEEE bit
/// patterns order like the values; a histogram of the top 12 bits (sign, exponent and three
/// mantissa bits: small enough to stay in L1) finds the buckets holding the wanted order
/// statistics, and only those buckets' values (gathered in `scratch`) are partially sorted.
fn percentile(values: &[f32], percentile: f64, scratch: &mut Vec<f32>) -> f32 {
    debug_assert!(values.iter().all(|&value| value >= 0.0));
    const SHIFT: u32 = 20;
    let bucket = |value: f32| (value.to_bits() >> SHIFT) as usize;
    let position = percentile / 100.0 * (values.len() - 1) as f64;
    let (low_rank, fraction) = (position.floor() as usize, position - position.floor());
    let high_rank = (low_rank + 1).min(values.len() - 1);
    // Four histograms, one per pixel modulo 4: neighbouring pixels mostly share a bucket, and a
    // single histogram would wait on its own previous increment.
    let mut partial = vec![[0u32; 1 << (32 - SHIFT)]; 4];
    let chunks = values.chunks_exact(4);
    for &value in chunks.remainder() {
        partial[0][bucket(value)] += 1;
    }
    for chunk in chunks {
        for (histogram, &value) in partial.iter_mut().zip(chunk) {
            histogram[bucket(value)] += 1;
        }
    }
    // The bucket holding `rank`, and how many values lie in lower buckets.
    let locate = |rank: usize| -> (usize, usize) {
        let mut below = 0usize;
        for index in 0..1 << (32 - SHIFT) {
            let count: usize = partial.iter().map(|h| h[index] as usize).sum();
            if below + count > rank {
                return (index, below);
            }
            below += count;
        }
        unreachable!("rank {rank} is below the number of values")
    };
    let (low_bucket, below) = locate(low_rank);
    let (high_bucket, _) = locate(high_rank);
    scratch.clear();
    scratch.extend(
        values
            .iter()
            .copied()
            .filter(|&value| (low_bucket..=high_bucket).contains(&bucket(value))),
    );
    // Ranks within the gathered values (every value of the buckets in between lies there too).
    let (_, &mut low, above) = scratch.select_nth_unstable_by(low_rank - below, f32::total_cmp);
    let high = if fraction > 0.0 && high_rank > low_rank {
        above.iter().copied().fold(f32::INFINITY, f32::min)
    } else {
        low
    };
    low + (high - low) * fraction as f32
}

/// Otsu's threshold over a 256-bin histogram spanning the values' range (as scikit-image).
pub fn otsu_threshold(values: &[f32]) -> f32 {
    otsu_threshold_clipped(values, f32::INFINITY)
}

/// Otsu's threshold of `min(value, clip)`.
fn otsu_threshold_clipped(values: &[f32], clip: f32) -> f32 {
    // max(min(v, clip)) = min(max(v), clip): min and max are monotone.
    let (min, max) = min_max(values);
    let max = max.min(clip);
    if max.partial_cmp(&min) != Some(std::cmp::Ordering::Greater) {
        return min;
    }
    const N_BINS: usize = 256;
    let bin_width = (max - min) / N_BINS as f32;
    let bins_per_unit = 1.0 / bin_width;
    // Neighbouring pixels mostly fall in the same bin, and a single histogram then waits on
    // its own previous increment; four histograms, one per pixel modulo 4, do not.
    // Bins are computed 64 at a time (which vectorises) before they are counted. The scaled
    // value x is at least 0 (values are at least `min`, and so is `clip`), so truncating
    // min(x, 255) equals min(truncated x, 255). The truncation is floor(x) read off the bits of
    // floor(x) + 2^23 (exact below 2^23): `as` would be a scalar, saturating conversion.
    let last_bin = (N_BINS - 1) as f32;
    let bin = |value: f32| {
        let x = ((value.min(clip) - min) * bins_per_unit).clamp(0.0, last_bin);
        ((x.floor() + 8_388_608.0).to_bits() - 0x4B00_0000) as u8
    };
    let mut partial = [[0u32; N_BINS]; 4];
    let mut bins = [0u8; 64];
    let chunks = values.chunks_exact(bins.len());
    for &value in chunks.remainder() {
        partial[0][usize::from(bin(value))] += 1;
    }
    for chunk in chunks {
        for (out, &value) in bins.iter_mut().zip(chunk) {
            *out = bin(value);
        }
        for quad in bins.chunks_exact(4) {
            for (histogram, &bin) in partial.iter_mut().zip(quad) {
                histogram[usize::from(bin)] += 1;
            }
        }
    }
    let mut histogram = [0u64; N_BINS];
    for (bin, count) in histogram.iter_mut().enumerate() {
        *count = partial.iter().map(|h| u64::from(h[bin])).sum();
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

/// Running maximum over windows of `2 * radius + 1` samples (edges clamped), by doubling: after
/// k passes each sample holds the maximum of the 2^k samples starting there, and two
/// overlapping such spans cover a window. Each pass is element-wise over the row, so it
/// vectorises (a prefix/suffix scan is a chain of dependent scalar maxima). The input is padded
/// with -inf, which a maximum ignores: the same as clamping the window at the edges.
fn running_max(
    input: &[f32],
    radius: usize,
    front: &mut Vec<f32>,
    back: &mut Vec<f32>,
    output: &mut [f32],
) {
    let n = input.len();
    let window = 2 * radius + 1;
    front.clear();
    front.resize(radius, f32::NEG_INFINITY);
    front.extend_from_slice(input);
    front.resize(n + 2 * radius, f32::NEG_INFINITY);
    let mut span = 1;
    while 2 * span <= window {
        back.clear();
        back.extend(
            front[..front.len() - span]
                .iter()
                .zip(&front[span..])
                .map(|(&a, &b)| larger(a, b)),
        );
        std::mem::swap(front, back);
        span *= 2;
    }
    // [i, i + window) = [i, i + span) ∪ [i + window - span, i + window).
    let shift = window - span;
    for ((out, &a), &b) in output
        .iter_mut()
        .zip(&front[..n])
        .zip(&front[shift..shift + n])
    {
        *out = larger(a, b);
    }
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
