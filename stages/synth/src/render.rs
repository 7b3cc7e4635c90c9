//! Drawing a field: cells placed on the plane (scattered, or in clusters), each drawn as
//! fluorescence in three stains — DNA (nuclei, micronuclei, condensed chromatin), F-actin (cortex,
//! cytoplasm, stress fibres, aggregates) and β-tubulin (a radial filament network, diffuse
//! tubulin, asters, aggresomes) — then uneven illumination, optical blur, per-channel gain and
//! background, shot noise and read noise, and 16-bit quantisation.

use crate::phenotype::{Acquisition, Look, P};
use crate::rng::Rng;

/// Channel order of a rendered field (the tensor order of `pf-preprocess` too).
pub const DNA: usize = 0;
pub const ACTIN: usize = 1;
pub const TUBULIN: usize = 2;

/// Three float planes being drawn into.
#[derive(Debug)]
pub struct Canvas {
    pub width: usize,
    pub height: usize,
    pub planes: [Vec<f32>; 3],
}

impl Canvas {
    pub fn new(width: usize, height: usize) -> Self {
        Self {
            width,
            height,
            planes: std::array::from_fn(|_| vec![0.0; width * height]),
        }
    }

    /// Calls `shade(x, y)` for every pixel within `radius` of (cx, cy) and adds the result to
    /// `channel`.
    fn paint(
        &mut self,
        channel: usize,
        cx: f32,
        cy: f32,
        radius: f32,
        mut shade: impl FnMut(f32, f32) -> f32,
    ) {
        let x0 = (cx - radius).floor().max(0.0) as usize;
        let y0 = (cy - radius).floor().max(0.0) as usize;
        let x1 = ((cx + radius).ceil() as usize).min(self.width.saturating_sub(1));
        let y1 = ((cy + radius).ceil() as usize).min(self.height.saturating_sub(1));
        if cx + radius < 0.0 || cy + radius < 0.0 || x0 > x1 || y0 > y1 {
            return;
        }
        let plane = &mut self.planes[channel];
        for y in y0..=y1 {
            let row = &mut plane[y * self.width..(y + 1) * self.width];
            for (x, value) in row.iter_mut().enumerate().take(x1 + 1).skip(x0) {
                *value += shade(x as f32 - cx, y as f32 - cy);
            }
        }
    }

    /// A Gaussian spot.
    fn spot(&mut self, channel: usize, cx: f32, cy: f32, sigma: f32, amplitude: f32) {
        let inverse = 1.0 / (2.0 * sigma * sigma);
        self.paint(channel, cx, cy, 3.0 * sigma, |dx, dy| {
            amplitude * (-(dx * dx + dy * dy) * inverse).exp()
        });
    }

    /// A filament along a gently curving path from (x, y) in direction `angle` for `length` px.
    #[allow(clippy::too_many_arguments)]
    fn filament(
        &mut self,
        channel: usize,
        x: f32,
        y: f32,
        angle: f32,
        curvature: f32,
        length: f32,
        width: f32,
        amplitude: f32,
    ) {
        let step = 0.8;
        let sigma = 0.5 * width.max(0.6);
        let (mut px, mut py, mut direction) = (x, y, angle);
        let mut travelled = 0.0;
        while travelled < length {
            // Filaments fade towards their tips.
            let fade = 1.0 - 0.5 * travelled / length;
            self.spot(channel, px, py, sigma, amplitude * fade * step * 0.5);
            px += step * direction.cos();
            py += step * direction.sin();
            direction += curvature * step;
            travelled += step;
        }
    }
}

/// An ellipse with a wobbly outline: `rho` is 1 on the outline.
#[derive(Debug, Clone, Copy)]
struct Outline {
    semi_major: f32,
    semi_minor: f32,
    cos: f32,
    sin: f32,
    wobble: f32,
    phase: f32,
}

impl Outline {
    fn new(radius: f32, aspect: f32, angle: f32, wobble: f32, phase: f32) -> Self {
        let aspect = aspect.max(1.0);
        Self {
            semi_major: radius * aspect.sqrt(),
            semi_minor: radius / aspect.sqrt(),
            cos: angle.cos(),
            sin: angle.sin(),
            wobble,
            phase,
        }
    }

    fn rho(&self, dx: f32, dy: f32) -> f32 {
        let u = (dx * self.cos + dy * self.sin) / self.semi_major;
        let v = (-dx * self.sin + dy * self.cos) / self.semi_minor;
        let rho = (u * u + v * v).sqrt();
        if self.wobble == 0.0 {
            return rho;
        }
        let polar = v.atan2(u);
        rho / (1.0 + self.wobble * (3.0 * polar + self.phase).sin())
    }

    fn extent(&self) -> f32 {
        self.semi_major * (1.0 + self.wobble) * 1.25 + 2.0
    }

    /// The point of the outline (scaled by `fraction`) in direction `angle` from the centre.
    fn point(&self, angle: f32, fraction: f32) -> (f32, f32) {
        let (u, v) = (self.semi_major * angle.cos(), self.semi_minor * angle.sin());
        (
            fraction * (u * self.cos - v * self.sin),
            fraction * (u * self.sin + v * self.cos),
        )
    }
}

/// Draws one cell whose nucleus sits at (cx, cy).
pub fn draw_cell(canvas: &mut Canvas, rng: &mut Rng, cx: f32, cy: f32, look: &Look) {
    let get = |param: P| look[param as usize];
    let brightness = get(P::Brightness).max(0.05);

    // Cytoplasm and cortex (F-actin), centred a little off the nucleus.
    let cell = Outline::new(
        get(P::CellRadius).max(6.0),
        get(P::CellAspect),
        rng.range(0.0, std::f32::consts::TAU),
        rng.range(0.04, 0.12),
        rng.range(0.0, std::f32::consts::TAU),
    );
    let offset = 0.25 * get(P::CellRadius);
    let (ox, oy) = (
        cx + rng.range(-offset, offset),
        cy + rng.range(-offset, offset),
    );
    let (cortex, interior) = (
        get(P::ActinCortex) * brightness,
        get(P::ActinInterior) * brightness,
    );
    let diffuse_tubulin = get(P::TubulinDiffuse) * brightness;
    canvas.paint(ACTIN, ox, oy, cell.extent(), |dx, dy| {
        let rho = cell.rho(dx, dy);
        let ring = (rho - 0.92) / 0.1;
        cortex * (-ring * ring).exp() + interior * ((1.0 - rho) / 0.15).clamp(0.0, 1.0)
    });
    canvas.paint(TUBULIN, ox, oy, cell.extent(), |dx, dy| {
        let rho = cell.rho(dx, dy);
        diffuse_tubulin * ((1.0 - rho) / 0.3).clamp(0.0, 1.0) * (1.0 - 0.3 * rho)
    });
    let n_fibres = rng.poisson(get(P::ActinFibres).max(0.0)).min(14);
    for _ in 0..n_fibres {
        let start = rng.range(0.0, std::f32::consts::TAU);
        let end = start + rng.range(2.2, 4.0);
        let (x0, y0) = cell.point(start, 0.85);
        let (x1, y1) = cell.point(end, 0.85);
        let length = ((x1 - x0).powi(2) + (y1 - y0).powi(2)).sqrt();
        canvas.filament(
            ACTIN,
            ox + x0,
            oy + y0,
            (y1 - y0).atan2(x1 - x0),
            0.0,
            length,
            1.0,
            0.7 * cortex * rng.range(0.5, 1.0),
        );
    }
    let n_aggregates = rng.poisson(get(P::ActinAggregates).max(0.0)).min(20);
    for _ in 0..n_aggregates {
        let (x, y) = cell.point(rng.range(0.0, std::f32::consts::TAU), rng.range(0.2, 0.9));
        canvas.spot(
            ACTIN,
            ox + x,
            oy + y,
            1.6,
            3200.0 * brightness * rng.range(0.5, 1.2),
        );
    }

    // Microtubules radiate from the nucleus to the cell edge.
    let nucleus_radius = get(P::NucleusRadius).max(3.0);
    let width = get(P::FilamentWidth).max(0.6);
    let n_filaments = if width > 1.5 { 9 } else { 15 };
    let filament_intensity = get(P::TubulinFilaments).max(0.0) * brightness;
    if filament_intensity > 1.0 {
        for _ in 0..n_filaments {
            let angle = rng.range(0.0, std::f32::consts::TAU);
            let (ex, ey) = cell.point(angle, 0.95);
            let reach =
                ((ox + ex - cx).powi(2) + (oy + ey - cy).powi(2)).sqrt() - 0.8 * nucleus_radius;
            if reach > 2.0 {
                let (sx, sy) = (
                    cx + 0.8 * nucleus_radius * angle.cos(),
                    cy + 0.8 * nucleus_radius * angle.sin(),
                );
                let direction = (oy + ey - sy).atan2(ox + ex - sx);
                canvas.filament(
                    TUBULIN,
                    sx,
                    sy,
                    direction,
                    0.02 * rng.normal(),
                    reach,
                    width,
                    filament_intensity * rng.range(0.4, 1.0),
                );
            }
        }
    }
    let aster = get(P::Aster) * brightness;
    if aster > 1.0 {
        canvas.spot(TUBULIN, cx, cy, 3.5, aster);
        for k in 0..6 {
            let angle = k as f32 * std::f32::consts::TAU / 6.0 + rng.range(-0.3, 0.3);
            canvas.filament(TUBULIN, cx, cy, angle, 0.0, 9.0, 1.2, 0.5 * aster);
        }
    }
    let aggresome = get(P::Aggresome) * brightness;
    if aggresome > 1.0 {
        let angle = rng.range(0.0, std::f32::consts::TAU);
        canvas.spot(
            TUBULIN,
            cx + 1.2 * nucleus_radius * angle.cos(),
            cy + 1.2 * nucleus_radius * angle.sin(),
            3.0,
            aggresome,
        );
    }

    // Nuclei (DNA).
    let condensation = get(P::Condensation).clamp(0.0, 1.0);
    let dna = get(P::Dna) * brightness * (1.0 + 1.4 * condensation);
    let texture = get(P::Texture).clamp(0.0, 1.0);
    let radius = nucleus_radius * (1.0 - 0.45 * condensation);
    let n_extra = rng.poisson(get(P::ExtraNuclei).max(0.0)).min(3);
    let mut nuclei = vec![(cx, cy, radius)];
    for k in 0..n_extra {
        let angle = k as f32 * 2.1 + rng.range(0.0, 1.0);
        nuclei.push((
            cx + 1.15 * radius * angle.cos(),
            cy + 1.15 * radius * angle.sin(),
            0.8 * radius,
        ));
    }
    for &(x, y, r) in &nuclei {
        let outline = Outline::new(
            r,
            get(P::NucleusAspect),
            rng.range(0.0, std::f32::consts::TAU),
            0.04 + 0.25 * condensation,
            rng.range(0.0, 6.3),
        );
        let sharpness = 2.0 - 0.6 * condensation;
        let mut grain = Rng::new(rng.next_u64());
        canvas.paint(DNA, x, y, outline.extent(), |dx, dy| {
            let rho = outline.rho(dx, dy);
            let body = (-rho.powf(2.0 * sharpness)).exp();
            if body < 1e-3 {
                return 0.0;
            }
            dna * body * (1.0 + texture * (2.0 * grain.uniform() - 1.0))
        });
    }
    let n_micronuclei = rng.poisson(get(P::Micronuclei).max(0.0)).min(6);
    for _ in 0..n_micronuclei {
        let angle = rng.range(0.0, std::f32::consts::TAU);
        let distance = radius * rng.range(1.25, 1.9);
        canvas.spot(
            DNA,
            cx + distance * angle.cos(),
            cy + distance * angle.sin(),
            rng.range(1.2, 2.2),
            0.9 * dna,
        );
    }
}

/// Where the cells of a field sit: scattered, or (clustering → 1) in tight groups. Nuclei keep
/// apart by about their size. Returns nucleus centres.
pub fn place_cells(
    rng: &mut Rng,
    width: usize,
    height: usize,
    looks: &[Look],
    clustering: f32,
) -> Vec<(f32, f32)> {
    let (w, h) = (width as f32, height as f32);
    let n_clusters = (looks.len() / 7).max(1);
    let clustered = rng.chance(clustering.clamp(0.0, 1.0));
    let centres: Vec<(f32, f32)> = (0..n_clusters)
        .map(|_| (rng.range(0.0, w), rng.range(0.0, h)))
        .collect();
    let mut placed: Vec<(f32, f32, f32)> = Vec::with_capacity(looks.len());
    for look in looks {
        let radius = look[P::NucleusRadius as usize].max(3.0);
        for _attempt in 0..40 {
            let (x, y) = if clustered {
                let (ccx, ccy) = centres[rng.below(centres.len())];
                let spread = 1.6 * look[P::CellRadius as usize];
                (ccx + spread * rng.normal(), ccy + spread * rng.normal())
            } else {
                (rng.range(0.0, w), rng.range(0.0, h))
            };
            if x < 0.0 || y < 0.0 || x >= w || y >= h {
                continue;
            }
            let clear = placed.iter().all(|&(px, py, pr)| {
                (px - x).powi(2) + (py - y).powi(2) > (1.15 * (pr + radius) + 2.0).powi(2)
            });
            if clear {
                placed.push((x, y, radius));
                break;
            }
        }
    }
    placed.into_iter().map(|(x, y, _)| (x, y)).collect()
}

/// One pass of the separable [1 4 6 4 1]/16 binomial filter (σ ≈ 1 px), edges repeated.
fn binomial_blur(plane: &mut [f32], width: usize, height: usize, scratch: &mut Vec<f32>) {
    const TAPS: [f32; 5] = [1.0 / 16.0, 4.0 / 16.0, 6.0 / 16.0, 4.0 / 16.0, 1.0 / 16.0];
    scratch.clear();
    scratch.resize(plane.len(), 0.0);
    for y in 0..height {
        for x in 0..width {
            let mut sum = 0.0;
            for (k, tap) in TAPS.iter().enumerate() {
                let sx = (x + k).saturating_sub(2).min(width - 1);
                sum += tap * plane[y * width + sx];
            }
            scratch[y * width + x] = sum;
        }
    }
    for y in 0..height {
        for x in 0..width {
            let mut sum = 0.0;
            for (k, tap) in TAPS.iter().enumerate() {
                let sy = (y + k).saturating_sub(2).min(height - 1);
                sum += tap * scratch[sy * width + x];
            }
            plane[y * width + x] = sum;
        }
    }
}

/// Turns drawn fluorescence into camera images: illumination, blur, gain, background, noise.
pub fn acquire(canvas: Canvas, rng: &mut Rng, acquisition: &Acquisition) -> [Vec<u16>; 3] {
    let Canvas {
        width,
        height,
        planes,
    } = canvas;
    let channels: Vec<(Vec<f32>, f32, f32)> = planes
        .into_iter()
        .enumerate()
        .map(|(channel, plane)| {
            (
                plane,
                acquisition.gain[channel],
                acquisition.background[channel],
            )
        })
        .collect();
    let images = acquire_planes(channels, width, height, rng, acquisition);
    images.try_into().expect("three channels")
}

/// [`acquire`] for any number of planes, each with its own (gain, background); the field's
/// illumination, blur and camera are shared.
pub fn acquire_planes(
    channels: Vec<(Vec<f32>, f32, f32)>,
    width: usize,
    height: usize,
    rng: &mut Rng,
    acquisition: &Acquisition,
) -> Vec<Vec<u16>> {
    let (cos, sin) = (
        acquisition.illumination_angle.cos(),
        acquisition.illumination_angle.sin(),
    );
    let half_diagonal = 0.5 * ((width * width + height * height) as f32).sqrt();
    let mut scratch = Vec::new();
    let photons = acquisition.photons_per_level;
    channels
        .into_iter()
        .map(|(mut plane, gain, background)| {
            for y in 0..height {
                for x in 0..width {
                    let along = ((x as f32 - 0.5 * width as f32) * cos
                        + (y as f32 - 0.5 * height as f32) * sin)
                        / half_diagonal;
                    plane[y * width + x] *=
                        1.0 - acquisition.illumination_strength * 0.5 * (1.0 + along);
                }
            }
            for _ in 0..acquisition.blur_passes {
                binomial_blur(&mut plane, width, height, &mut scratch);
            }
            plane
                .iter()
                .map(|&signal| {
                    let level = gain * signal + background;
                    // Shot noise: Poisson in photons, approximated by a normal at these counts.
                    let photon_count = level * photons;
                    let noisy = (photon_count + photon_count.sqrt() * rng.normal()) / photons
                        + 6.0 * rng.normal();
                    noisy.round().clamp(0.0, 65535.0) as u16
                })
                .collect()
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::phenotype::control_look;

    #[test]
    fn a_cell_lights_all_three_stains_around_its_nucleus() {
        let mut canvas = Canvas::new(96, 96);
        draw_cell(&mut canvas, &mut Rng::new(5), 48.0, 48.0, &control_look());
        let at = |channel: usize, x: usize, y: usize| canvas.planes[channel][y * 96 + x];
        assert!(at(DNA, 48, 48) > 1000.0, "nucleus centre is bright in DNA");
        assert!(at(DNA, 5, 5) < 1.0, "far corner is dark in DNA");
        assert!(canvas.planes[ACTIN].iter().sum::<f32>() > 0.0);
        assert!(canvas.planes[TUBULIN].iter().sum::<f32>() > 0.0);
    }

    #[test]
    fn placement_keeps_nuclei_apart() {
        let looks = vec![control_look(); 30];
        let centres = place_cells(&mut Rng::new(9), 400, 400, &looks, 0.0);
        assert!(centres.len() >= 20);
        for (i, a) in centres.iter().enumerate() {
            for b in &centres[i + 1..] {
                assert!((a.0 - b.0).powi(2) + (a.1 - b.1).powi(2) > 20.0 * 20.0);
            }
        }
    }

    #[test]
    fn acquisition_adds_background_and_stays_in_range() {
        let canvas = Canvas::new(32, 32);
        let acquisition = Acquisition::new(1, "Week1", "Week1_1");
        let images = acquire(canvas, &mut Rng::new(2), &acquisition);
        let mean = images[0].iter().map(|&v| f32::from(v)).sum::<f32>() / 1024.0;
        assert!((mean - acquisition.background[0]).abs() < 20.0, "{mean}");
    }
}
