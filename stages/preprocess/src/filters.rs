//! The image filters nucleus detection is built from, each usable on its own: a separable
//! Gaussian blur (scipy's `nearest` edges), a tiled background estimate, Otsu's threshold on a
//! 256-bin histogram (with the clipped variant the detector uses), percentiles, vectorised
//! minimum / maximum and a running maximum (van Herk / Gil–Werman). `nuclei.rs` composes them.

/// Gives `buffer` length `len` without clearing what it holds: for buffers every element of which
/// is written before it is read. Zero-filling a dozen 5 MB planes per field costs measurable time.
pub(crate) fn set_len_for_overwrite<T: Copy + Default>(buffer: &mut Vec<T>, len: usize) {
    buffer.resize(len, T::default());
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

pub(crate) fn gaussian_blur_into(
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
    let (radius, kernel) = gaussian_kernel(sigma);
    // Horizontal pass over an edge-padded copy of each row. The kernel is symmetric, so each
    // pair of taps at ±k costs one multiply. Each output pixel is the centre tap, then the pairs
    // k = 1..=radius added in order (the order fixes the result to the bit); a block of
    // `BLUR_LANES` pixels is summed in registers over every k before it is stored, so the taps
    // cost two loads each and no store.
    set_len_for_overwrite(horizontal, values.len());
    set_len_for_overwrite(padded, width + 2 * radius);
    for (row_in, row_out) in values
        .chunks_exact(width)
        .zip(horizontal.chunks_exact_mut(width))
    {
        padded[..radius].fill(row_in[0]);
        padded[radius..radius + width].copy_from_slice(row_in);
        padded[radius + width..].fill(row_in[width - 1]);
        blur_line(&kernel, radius, row_out, |offset, x| {
            let at = (radius as isize + offset) as usize + x;
            &padded[at..at + BLUR_LANES.min(width - x)]
        });
    }
    // Vertical pass: each output row is a weighted sum of (clamped) input rows, paired likewise.
    set_len_for_overwrite(output, values.len());
    let source_row = |y: isize| -> &[f32] {
        let clamped = y.clamp(0, height as isize - 1) as usize;
        &horizontal[clamped * width..(clamped + 1) * width]
    };
    for (y, row_out) in output.chunks_exact_mut(width).enumerate() {
        let y = y as isize;
        blur_line(&kernel, radius, row_out, |offset, x| {
            &source_row(y + offset)[x..x + BLUR_LANES.min(width - x)]
        });
    }
}

/// The normalised Gaussian kernel truncated at 4σ: its radius and its 2·radius + 1 weights.
fn gaussian_kernel(sigma: f32) -> (usize, Vec<f32>) {
    let radius = (4.0 * sigma + 0.5) as usize;
    let raw: Vec<f32> = (0..=2 * radius)
        .map(|i| {
            let offset = i as f32 - radius as f32;
            (-0.5 * offset * offset / (sigma * sigma)).exp()
        })
        .collect();
    let total: f32 = raw.iter().sum();
    (
        radius,
        raw.into_iter().map(|weight| weight / total).collect(),
    )
}

/// Pixels of a line blurred at once, in registers (8 AVX2 vectors of f32).
const BLUR_LANES: usize = 64;

/// One line of a separable blur: `tap(offset, x)` gives the `BLUR_LANES` (fewer at the line's
/// end) source values at distance `offset` from the output pixels starting at `x`.
#[inline(always)]
fn blur_line<'a>(
    kernel: &[f32],
    radius: usize,
    row_out: &mut [f32],
    tap: impl Fn(isize, usize) -> &'a [f32],
) {
    let centre_weight = kernel[radius];
    let mut x = 0;
    while x + BLUR_LANES <= row_out.len() {
        let centre: &[f32; BLUR_LANES] = tap(0, x).try_into().expect("a full block");
        let mut sum = [0.0f32; BLUR_LANES];
        for (sum, &value) in sum.iter_mut().zip(centre) {
            *sum = centre_weight * value;
        }
        for k in 1..=radius {
            let weight = kernel[radius + k];
            let left: &[f32; BLUR_LANES] = tap(-(k as isize), x).try_into().expect("a full block");
            let right: &[f32; BLUR_LANES] = tap(k as isize, x).try_into().expect("a full block");
            for ((sum, &a), &b) in sum.iter_mut().zip(left).zip(right) {
                *sum += weight * (a + b);
            }
        }
        row_out[x..x + BLUR_LANES].copy_from_slice(&sum);
        x += BLUR_LANES;
    }
    if x < row_out.len() {
        let rest = &mut row_out[x..];
        for (out, &value) in rest.iter_mut().zip(tap(0, x)) {
            *out = centre_weight * value;
        }
        for k in 1..=radius {
            let weight = kernel[radius + k];
            let (left, right) = (tap(-(k as isize), x), tap(k as isize, x));
            for ((out, &a), &b) in rest.iter_mut().zip(left).zip(right) {
                *out += weight * (a + b);
            }
        }
    }
}

/// Writes `max(smoothed - background, 0)` into `foreground`, the background being the
/// tile-minimum estimate smoothed over the tile grid and interpolated back to full size.
pub(crate) fn subtract_background(
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
            // `f32::min`, not `if value < *low`: the comparison was compiled into a masked store
            // (`vmaskmovps`), microcoded and slow on AMD. The two agree here: `low` starts at
            // infinity and never becomes NaN, and a NaN value leaves it as it is either way.
            for (low, &value) in band_min.iter_mut().zip(row) {
                *low = low.min(value);
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
pub(crate) fn larger(a: f32, b: f32) -> f32 {
    if b > a {
        b
    } else {
        a
    }
}

/// Lanes of the reductions below: wide enough for two AVX2 registers.
pub(crate) const LANES: usize = 16;

/// (minimum, maximum) of NaN-free `values` (±infinity when empty). Kept in `LANES` running
/// minima and maxima, which vectorise, where a `fold(f32::min)` is a chain of dependent scalar
/// operations; min and max are exact, so the order does not change the result.
pub(crate) fn min_max(values: &[f32]) -> (f32, f32) {
    let mut low = [f32::INFINITY; LANES];
    let mut high = [f32::NEG_INFINITY; LANES];
    let chunks = values.chunks_exact(LANES);
    let rest = chunks.remainder();
    // Separate passes over the lanes for the minima and the maxima: one loop doing both was
    // compiled into shuffles and blends of packed masks, not `vminps`/`vmaxps`.
    for chunk in chunks {
        let chunk: &[f32; LANES] = chunk.try_into().expect("LANES values");
        for (low, &value) in low.iter_mut().zip(chunk) {
            *low = if value < *low { value } else { *low };
        }
        for (high, &value) in high.iter_mut().zip(chunk) {
            *high = if value > *high { value } else { *high };
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
pub(crate) const OTSU_CLIP_PERCENTILE: f64 = 99.5;

/// The `percentile`-th percentile of `values` (linear interpolation between order statistics,
/// numpy's default). Exact, without sorting: the values are non-negative, so their IEEE bit
/// patterns order like the values; a histogram of the top 12 bits (sign, exponent and three
/// mantissa bits: small enough to stay in L1) finds the buckets holding the wanted order
/// statistics, and only those buckets' values (gathered in `scratch`) are partially sorted.
pub(crate) fn percentile(values: &[f32], percentile: f64, scratch: &mut Vec<f32>) -> f32 {
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
pub(crate) fn otsu_threshold_clipped(values: &[f32], clip: f32) -> f32 {
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
pub(crate) fn running_max(
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

#[cfg(test)]
mod tests {
    use super::*;

    /// The blur as it was before its taps were summed in register blocks: every tap added to the
    /// whole output row, one k at a time. Same operations per pixel, in the same order.
    fn row_by_row_blur(values: &[f32], width: usize, height: usize, sigma: f32) -> Vec<f32> {
        let (radius, kernel) = gaussian_kernel(sigma);
        let at = |line: &[f32], i: isize| line[i.clamp(0, line.len() as isize - 1) as usize];
        let mut horizontal = vec![0.0f32; values.len()];
        for (row_in, row_out) in values.chunks(width).zip(horizontal.chunks_mut(width)) {
            for (x, out) in row_out.iter_mut().enumerate() {
                *out = kernel[radius] * row_in[x];
            }
            for k in 1..=radius {
                for (x, out) in row_out.iter_mut().enumerate() {
                    let x = x as isize;
                    *out += kernel[radius + k]
                        * (at(row_in, x - k as isize) + at(row_in, x + k as isize));
                }
            }
        }
        let mut output = vec![0.0f32; values.len()];
        let row = |y: isize| {
            let y = y.clamp(0, height as isize - 1) as usize;
            &horizontal[y * width..(y + 1) * width]
        };
        for (y, row_out) in output.chunks_mut(width).enumerate() {
            let y = y as isize;
            for (out, &value) in row_out.iter_mut().zip(row(y)) {
                *out = kernel[radius] * value;
            }
            for k in 1..=radius {
                for ((out, &a), &b) in row_out
                    .iter_mut()
                    .zip(row(y - k as isize))
                    .zip(row(y + k as isize))
                {
                    *out += kernel[radius + k] * (a + b);
                }
            }
        }
        output
    }

    #[test]
    fn blocked_blur_is_the_row_by_row_blur_to_the_bit() {
        // Widths below, at and between multiples of the block, so both the blocks and the
        // remainder are checked; values like a 16-bit field's.
        for (width, height) in [(7, 5), (64, 9), (150, 41), (200, 3)] {
            let values: Vec<f32> = (0..width * height)
                .map(|i| ((i as u64 * 2654435761) % 65536) as f32)
                .collect();
            for sigma in [0.7, 2.0, 4.0] {
                let ours = gaussian_blur(&values, width, height, sigma);
                let expected = row_by_row_blur(&values, width, height, sigma);
                let differing = ours
                    .iter()
                    .zip(&expected)
                    .filter(|(a, b)| a.to_bits() != b.to_bits())
                    .count();
                assert_eq!(differing, 0, "{width}x{height}, sigma {sigma}");
            }
        }
    }
}
