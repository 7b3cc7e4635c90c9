//! The report's figures, drawn with plotters into RGB buffers and encoded as PNG. Text uses the
//! DejaVu Sans font bundled in `assets/` (no system font lookup), so figures look the same on
//! every machine.

use plotters::prelude::*;
use plotters::style::FontStyle;

/// A finished figure: an RGB PNG and its size.
#[derive(Debug, Clone)]
pub struct Figure {
    pub name: String,
    pub title: String,
    pub caption: String,
    pub width: u32,
    pub height: u32,
    pub png: Vec<u8>,
}

static FONT: &[u8] = include_bytes!("../assets/DejaVuSans.ttf");

/// Registers the bundled font as plotters' `sans-serif` (once per process).
pub fn register_font() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        plotters::style::register_font("sans-serif", FontStyle::Normal, FONT)
            .unwrap_or_else(|_| panic!("the bundled DejaVu Sans font is valid"));
    });
}

fn plot_error<E: std::fmt::Debug>(error: E) -> anyhow::Error {
    anyhow::anyhow!("drawing a figure: {error:?}")
}

fn encode_png(rgb: &[u8], width: u32, height: u32) -> anyhow::Result<Vec<u8>> {
    let mut bytes = Vec::new();
    {
        let mut encoder = png::Encoder::new(&mut bytes, width, height);
        encoder.set_color(png::ColorType::Rgb);
        encoder.set_depth(png::BitDepth::Eight);
        let mut writer = encoder.write_header()?;
        writer.write_image_data(rgb)?;
    }
    Ok(bytes)
}

/// Draws with plotters on a white canvas and returns the PNG.
fn draw(
    width: u32,
    height: u32,
    before: impl FnOnce(&mut [u8]),
    paint: impl FnOnce(&DrawingArea<BitMapBackend<'_>, plotters::coord::Shift>) -> anyhow::Result<()>,
) -> anyhow::Result<Vec<u8>> {
    register_font();
    let mut rgb = vec![255u8; (width * height * 3) as usize];
    before(&mut rgb);
    {
        let root = BitMapBackend::with_buffer(&mut rgb, (width, height)).into_drawing_area();
        paint(&root)?;
        root.present().map_err(plot_error)?;
    }
    encode_png(&rgb, width, height)
}

/// Twelve distinguishable colours (Tableau-like), then grey.
pub fn category_colour(index: usize) -> RGBColor {
    const COLOURS: [(u8, u8, u8); 12] = [
        (31, 119, 180),
        (255, 127, 14),
        (44, 160, 44),
        (214, 39, 40),
        (148, 103, 189),
        (140, 86, 75),
        (227, 119, 194),
        (127, 127, 127),
        (188, 189, 34),
        (23, 190, 207),
        (0, 0, 128),
        (128, 128, 0),
    ];
    let (r, g, b) = COLOURS.get(index).copied().unwrap_or((90, 90, 90));
    RGBColor(r, g, b)
}

/// A perceptually ordered map from 0 to 1 (dark blue → teal → yellow, after viridis's anchors).
pub fn sequential_colour(value: f64) -> RGBColor {
    const ANCHORS: [(f64, f64, f64); 5] = [
        (68.0, 1.0, 84.0),
        (59.0, 82.0, 139.0),
        (33.0, 145.0, 140.0),
        (94.0, 201.0, 98.0),
        (253.0, 231.0, 37.0),
    ];
    let position = value.clamp(0.0, 1.0) * (ANCHORS.len() - 1) as f64;
    let low = (position.floor() as usize).min(ANCHORS.len() - 2);
    let t = position - low as f64;
    let (a, b) = (ANCHORS[low], ANCHORS[low + 1]);
    let mix = |x: f64, y: f64| (x + (y - x) * t).round() as u8;
    RGBColor(mix(a.0, b.0), mix(a.1, b.1), mix(a.2, b.2))
}

/// Whole epochs to label on an axis of `last` epochs: every one up to ten, then a round step
/// (2, 5, 10, 20, 50, …) that keeps ten labels or fewer. Never a fractional epoch.
pub fn epoch_ticks(last: usize) -> Vec<f64> {
    let last = last.max(1);
    let mut step = 1usize;
    let mut factors = [2usize, 5, 10].into_iter().cycle();
    let mut decade = 1usize;
    while last / step > 10 {
        let factor = factors.next().expect("cycles");
        if factor == 10 {
            decade *= 10;
            step = decade;
        } else {
            step = decade * factor;
        }
    }
    (1..=last)
        .filter(|epoch| epoch % step == 0)
        .map(|epoch| epoch as f64)
        .collect()
}

/// One line chart per loss term, train and validation against the epoch.
pub fn learning_curves(terms: &crate::inputs::Curves) -> anyhow::Result<Figure> {
    let columns = 3usize;
    let rows = terms.len().div_ceil(columns).max(1);
    let (width, height) = (1200u32, 320 * rows as u32);
    let png =
        draw(
            width,
            height,
            |_| {},
            |root| {
                root.fill(&WHITE).map_err(plot_error)?;
                let areas = root.split_evenly((rows, columns));
                for ((term, train, validation), area) in terms.iter().zip(areas.iter()) {
                    let all = train.iter().chain(validation);
                    let (mut low, mut high) = all.clone().fold(
                        (f64::INFINITY, f64::NEG_INFINITY),
                        |(low, high), &(_, y)| (low.min(y), high.max(y)),
                    );
                    if !(low.is_finite() && high.is_finite()) {
                        (low, high) = (0.0, 1.0);
                    }
                    let pad = ((high - low) * 0.08).max(1e-9);
                    let last_epoch = all.map(|&(x, _)| x).fold(1.0, f64::max);
                    // Epochs are whole numbers: an integer axis with whole-epoch ticks only.
                    let last_epoch = last_epoch.round() as i32;
                    let ticks = epoch_ticks(last_epoch as usize)
                        .into_iter()
                        .map(|tick| tick as i32)
                        .collect();
                    let mut chart = ChartBuilder::on(area)
                        .caption(term, ("sans-serif", 18))
                        .margin(10)
                        .x_label_area_size(34)
                        .y_label_area_size(70)
                        .build_cartesian_2d(
                            (0..last_epoch + 1).with_key_points(ticks),
                            (low - pad)..(high + pad),
                        )
                        .map_err(plot_error)?;
                    chart
                        .configure_mesh()
                        .x_desc("epoch")
                        .light_line_style(WHITE)
                        .draw()
                        .map_err(plot_error)?;
                    for (points, colour, label) in
                        [(train, BLUE, "train"), (validation, RED, "validation")]
                    {
                        if points.is_empty() {
                            continue;
                        }
                        chart
                            .draw_series(LineSeries::new(
                                points.iter().map(|&(x, y)| (x.round() as i32, y)),
                                colour.stroke_width(2),
                            ))
                            .map_err(plot_error)?
                            .label(label)
                            .legend(move |(x, y)| {
                                PathElement::new(vec![(x, y), (x + 18, y)], colour.stroke_width(2))
                            });
                        chart
                            .draw_series(points.iter().map(|&(x, y)| {
                                Circle::new((x.round() as i32, y), 3, colour.filled())
                            }))
                            .map_err(plot_error)?;
                    }
                    chart
                        .configure_series_labels()
                        .border_style(BLACK)
                        .background_style(WHITE.mix(0.8))
                        .draw()
                        .map_err(plot_error)?;
                }
                Ok(())
            },
        )?;
    Ok(Figure {
        name: "learning_curves".into(),
        title: "Learning curves".into(),
        caption: "Every loss term per epoch: the mean over the epoch's training batches (blue) and over the \
                  held-out validation cells in evaluation mode (red)."
            .into(),
        width,
        height,
        png,
    })
}

/// An image to place in a grid: `[C, H, W]` normalised intensities and how to show them.
#[derive(Debug, Clone)]
pub struct Tile {
    pub pixels: Vec<f32>,
    pub channels: usize,
    pub height: usize,
    pub width: usize,
    /// `None`: RGB composite of the first three channels; `Some(c)`: channel c in grey.
    pub channel: Option<usize>,
}

impl Tile {
    /// The tile's RGB colour at (y, x): intensities clipped to [0, 1], then scaled to 0–255 (no
    /// wrap-around: the seed cast unclipped decoder outputs to uint8).
    fn rgb(&self, y: usize, x: usize) -> [u8; 3] {
        let plane = self.height * self.width;
        let value = |channel: usize| {
            let v = self.pixels[channel * plane + y * self.width + x];
            (v.clamp(0.0, 1.0) * 255.0).round() as u8
        };
        match self.channel {
            Some(channel) => {
                let v = value(channel);
                [v, v, v]
            }
            None if self.channels >= 3 => [value(0), value(1), value(2)],
            None => {
                let v = value(0);
                [v, v, v]
            }
        }
    }
}

/// A grid of image tiles with row labels on the left and column labels on top.
pub fn tile_grid(
    name: &str,
    title: &str,
    caption: &str,
    rows: &[(String, Vec<Tile>)],
    column_labels: &[String],
    scale: usize,
) -> anyhow::Result<Figure> {
    let (tile_h, tile_w) = rows
        .first()
        .and_then(|(_, tiles)| tiles.first())
        .map(|tile| (tile.height * scale, tile.width * scale))
        .unwrap_or((68, 68));
    let n_columns = rows.iter().map(|(_, tiles)| tiles.len()).max().unwrap_or(1);
    let (left, top, gap) = (150usize, 30usize, 4usize);
    let width = (left + n_columns * (tile_w + gap) + gap) as u32;
    let height = (top + rows.len() * (tile_h + gap) + gap) as u32;
    let png = draw(
        width,
        height,
        |rgb| {
            for (row_index, (_, tiles)) in rows.iter().enumerate() {
                for (column, tile) in tiles.iter().enumerate() {
                    let x0 = left + column * (tile_w + gap);
                    let y0 = top + row_index * (tile_h + gap);
                    for y in 0..tile_h {
                        for x in 0..tile_w {
                            let offset = ((y0 + y) * width as usize + x0 + x) * 3;
                            rgb[offset..offset + 3]
                                .copy_from_slice(&tile.rgb(y / scale, x / scale));
                        }
                    }
                }
            }
        },
        |root| {
            let style = ("sans-serif", 14).into_font().color(&BLACK);
            for (row_index, (label, _)) in rows.iter().enumerate() {
                let y = (top + row_index * (tile_h + gap) + tile_h / 2) as i32;
                root.draw_text(label, &style, (6, y - 7))
                    .map_err(plot_error)?;
            }
            for (column, label) in column_labels.iter().enumerate() {
                let x = (left + column * (tile_w + gap)) as i32;
                root.draw_text(label, &style, (x + 2, 8))
                    .map_err(plot_error)?;
            }
            Ok(())
        },
    )?;
    Ok(Figure {
        name: name.into(),
        title: title.into(),
        caption: caption.into(),
        width,
        height,
        png,
    })
}

/// A matrix of values as coloured cells, with row and column labels (and the values written in
/// the cells when `annotate`).
#[allow(clippy::too_many_arguments)]
pub fn matrix(
    name: &str,
    title: &str,
    caption: &str,
    values: &[Vec<f64>],
    row_labels: &[String],
    column_labels: Option<&[String]>,
    colour_max: f64,
    annotate: bool,
) -> anyhow::Result<Figure> {
    let n_rows = values.len();
    let n_columns = values.first().map_or(0, Vec::len);
    let cell_w = if annotate {
        46
    } else {
        (900 / n_columns.max(1)).clamp(2, 40)
    };
    let cell_h = if annotate { 30 } else { 26 };
    let left = 230usize;
    let top = if column_labels.is_some() {
        190usize
    } else {
        30
    };
    let width = (left + n_columns * cell_w + 90) as u32;
    let height = (top + n_rows * cell_h + 40) as u32;
    let png = draw(
        width,
        height,
        |_| {},
        |root| {
            root.fill(&WHITE).map_err(plot_error)?;
            let label_style = ("sans-serif", 13).into_font().color(&BLACK);
            for (row, label) in row_labels.iter().enumerate() {
                let y = (top + row * cell_h + cell_h / 2) as i32 - 7;
                root.draw_text(label, &label_style, (6, y))
                    .map_err(plot_error)?;
                for (column, &value) in values[row].iter().enumerate() {
                    let x0 = (left + column * cell_w) as i32;
                    let y0 = (top + row * cell_h) as i32;
                    let colour = sequential_colour(if colour_max > 0.0 {
                        value / colour_max
                    } else {
                        0.0
                    });
                    root.draw(&Rectangle::new(
                        [(x0, y0), (x0 + cell_w as i32, y0 + cell_h as i32)],
                        colour.filled(),
                    ))
                    .map_err(plot_error)?;
                    if annotate {
                        let text_colour = if value / colour_max.max(1e-12) > 0.6 {
                            BLACK
                        } else {
                            WHITE
                        };
                        let text = format!("{value}");
                        root.draw_text(
                            &text,
                            &("sans-serif", 13).into_font().color(&text_colour),
                            (x0 + 6, y0 + 8),
                        )
                        .map_err(plot_error)?;
                    }
                }
            }
            if let Some(labels) = column_labels {
                let rotated = ("sans-serif", 13)
                    .into_font()
                    .transform(FontTransform::Rotate270)
                    .color(&BLACK);
                for (column, label) in labels.iter().enumerate() {
                    let x = (left + column * cell_w + cell_w / 2) as i32 - 7;
                    root.draw_text(label, &rotated, (x, top as i32 - 6))
                        .map_err(plot_error)?;
                }
            }
            // Colour bar.
            let bar_x = (left + n_columns * cell_w + 20) as i32;
            let bar_h = (n_rows * cell_h) as i32;
            for step in 0..bar_h {
                let value = 1.0 - step as f64 / bar_h.max(1) as f64;
                let y = top as i32 + step;
                root.draw(&Rectangle::new(
                    [(bar_x, y), (bar_x + 14, y + 1)],
                    sequential_colour(value).filled(),
                ))
                .map_err(plot_error)?;
            }
            root.draw_text(
                &format!("{colour_max:.2}"),
                &label_style,
                (bar_x + 18, top as i32),
            )
            .map_err(plot_error)?;
            root.draw_text("0", &label_style, (bar_x + 18, top as i32 + bar_h - 12))
                .map_err(plot_error)?;
            Ok(())
        },
    )?;
    Ok(Figure {
        name: name.into(),
        title: title.into(),
        caption: caption.into(),
        width,
        height,
        png,
    })
}

/// Points coloured by category with a legend (the 2-D map of treatment profiles).
pub fn scatter(
    name: &str,
    title: &str,
    caption: &str,
    points: &[(f64, f64, usize)],
    categories: &[String],
    axis_labels: (&str, &str),
) -> anyhow::Result<Figure> {
    let (width, height) = (1000u32, 720u32);
    let png = draw(
        width,
        height,
        |_| {},
        |root| {
            root.fill(&WHITE).map_err(plot_error)?;
            let (plot_area, legend_area) = root.split_horizontally(720);
            let bounds = |values: Vec<f64>| {
                let low = values.iter().copied().fold(f64::INFINITY, f64::min);
                let high = values.iter().copied().fold(f64::NEG_INFINITY, f64::max);
                let pad = ((high - low) * 0.06).max(1e-9);
                if low.is_finite() {
                    (low - pad)..(high + pad)
                } else {
                    -1.0..1.0
                }
            };
            let x_range = bounds(points.iter().map(|p| p.0).collect());
            let y_range = bounds(points.iter().map(|p| p.1).collect());
            let mut chart = ChartBuilder::on(&plot_area)
                .margin(14)
                .x_label_area_size(40)
                .y_label_area_size(56)
                .build_cartesian_2d(x_range, y_range)
                .map_err(plot_error)?;
            chart
                .configure_mesh()
                .x_desc(axis_labels.0)
                .y_desc(axis_labels.1)
                .light_line_style(WHITE)
                .draw()
                .map_err(plot_error)?;
            chart
                .draw_series(points.iter().map(|&(x, y, category)| {
                    Circle::new((x, y), 5, category_colour(category).filled())
                }))
                .map_err(plot_error)?;
            let style = ("sans-serif", 14).into_font().color(&BLACK);
            for (index, label) in categories.iter().enumerate() {
                let y = 30 + 24 * index as i32;
                legend_area
                    .draw(&Circle::new(
                        (14, y + 7),
                        6,
                        category_colour(index).filled(),
                    ))
                    .map_err(plot_error)?;
                legend_area
                    .draw_text(label, &style, (28, y))
                    .map_err(plot_error)?;
            }
            Ok(())
        },
    )?;
    Ok(Figure {
        name: name.into(),
        title: title.into(),
        caption: caption.into(),
        width,
        height,
        png,
    })
}

#[cfg(test)]
mod tests {
    use super::epoch_ticks;

    #[test]
    fn epoch_ticks_are_whole_and_at_most_ten() {
        assert_eq!(epoch_ticks(1), [1.0]);
        assert_eq!(epoch_ticks(2), [1.0, 2.0]);
        assert_eq!(epoch_ticks(10).len(), 10);
        assert_eq!(
            epoch_ticks(20),
            [2.0, 4.0, 6.0, 8.0, 10.0, 12.0, 14.0, 16.0, 18.0, 20.0]
        );
        assert_eq!(
            epoch_ticks(50),
            [5.0, 10.0, 15.0, 20.0, 25.0, 30.0, 35.0, 40.0, 45.0, 50.0]
        );
        assert_eq!(epoch_ticks(110).first(), Some(&20.0));
        for last in 1..2000 {
            let ticks = epoch_ticks(last);
            assert!(!ticks.is_empty() && ticks.len() <= 10, "{last}: {ticks:?}");
            assert!(ticks.iter().all(|t| t.fract() == 0.0 && *t <= last as f64));
        }
    }
}
