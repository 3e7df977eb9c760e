//! Drawing: line charts and the FLOPs bar chart into an RGB buffer with plotters, text in DejaVu
//! Sans registered from bytes (no system font or library), written as a PNG.

use std::error::Error as StdError;
use std::ops::Range;
use std::path::Path;
use std::sync::Once;

use longlora::cost::flops::PaperFlops;
use longlora::fs::write_atomic;
use longlora::{Error, Result};
use plotters::coord::cartesian::Cartesian2d;
use plotters::coord::ranged1d::{DefaultFormatting, KeyPointHint, Ranged};
use plotters::coord::types::RangedCoordf64;
use plotters::coord::Shift;
use plotters::element::DashedPathElement;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

use super::inputs::Series;

/// Pixels of every chart: readable on a page and in a terminal image viewer.
pub const WIDTH: u32 = 900;
pub const HEIGHT: u32 = 600;
const FONT: &str = "sans-serif";

/// Distinguishable line colours (the "tab10" palette).
const PALETTE: [RGBColor; 10] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
    RGBColor(227, 119, 194),
    RGBColor(127, 127, 127),
    RGBColor(188, 189, 34),
    RGBColor(23, 190, 207),
];

/// How series `i` is drawn: the palette's colours solid, then again dashed, so that two curves
/// share a style only past twice the palette.
fn series_style(i: usize) -> (RGBColor, bool) {
    (PALETTE[i % PALETTE.len()], (i / PALETTE.len()) % 2 == 1)
}

type DrawResult = std::result::Result<(), Box<dyn StdError>>;
type Area<'a> = DrawingArea<BitMapBackend<'a>, Shift>;

fn register_font() {
    static FONT_ONCE: Once = Once::new();
    FONT_ONCE.call_once(|| {
        plotters::style::register_font(FONT, FontStyle::Normal, dejavu::sans::regular())
            .unwrap_or_else(|_| panic!("the bundled DejaVu Sans is a valid TrueType font"));
    });
}

/// Draws with `draw` on a white canvas and writes the PNG to `out`.
fn render(out: &Path, draw: impl FnOnce(&Area) -> DrawResult) -> Result<()> {
    register_font();
    let failed = |e: &dyn std::fmt::Display| {
        Error::io(
            out,
            std::io::Error::other(format!("drawing the chart failed: {e}")),
        )
    };
    let mut rgb = vec![0u8; (WIDTH * HEIGHT * 3) as usize];
    {
        let root = BitMapBackend::with_buffer(&mut rgb, (WIDTH, HEIGHT)).into_drawing_area();
        root.fill(&WHITE).map_err(|e| failed(&e))?;
        draw(&root).map_err(|e| failed(&e))?;
        root.present().map_err(|e| failed(&e))?;
    }
    let mut png_bytes = Vec::new();
    let mut encoder = png::Encoder::new(&mut png_bytes, WIDTH, HEIGHT);
    encoder.set_color(png::ColorType::Rgb);
    encoder.set_depth(png::BitDepth::Eight);
    let mut writer = encoder.write_header().map_err(|e| failed(&e))?;
    writer.write_image_data(&rgb).map_err(|e| failed(&e))?;
    writer.finish().map_err(|e| failed(&e))?;
    write_atomic(out, &png_bytes)
}

/// An f64 axis ticked at the values we choose (plotters' own picks round numbers only).
struct TickedAxis {
    range: Range<f64>,
    ticks: Vec<f64>,
}

impl Ranged for TickedAxis {
    type FormatOption = DefaultFormatting;
    type ValueType = f64;

    fn map(&self, value: &f64, limit: (i32, i32)) -> i32 {
        RangedCoordf64::from(self.range.clone()).map(value, limit)
    }

    fn key_points<Hint: KeyPointHint>(&self, _hint: Hint) -> Vec<f64> {
        self.ticks.clone()
    }

    fn range(&self) -> Range<f64> {
        self.range.clone()
    }
}

type Chart<'a, 'b> = ChartContext<'a, BitMapBackend<'b>, Cartesian2d<TickedAxis, RangedCoordf64>>;

/// What frames a chart: its title, axes and their descriptions.
struct Frame<'a> {
    title: &'a str,
    x: TickedAxis,
    y: Range<f64>,
    x_desc: &'a str,
    y_desc: &'a str,
    x_label: &'a dyn Fn(&f64) -> String,
    x_grid: bool,
}

/// A number as a tick label: no trailing ".0", no float noise.
fn tick_label(v: &f64) -> String {
    format!("{}", (v * 1e6).round() / 1e6)
}

/// The chart area with its title, mesh, tick labels and axis descriptions drawn.
fn chart_in<'a, 'b>(
    root: &'a Area<'b>,
    frame: Frame,
) -> std::result::Result<Chart<'a, 'b>, Box<dyn StdError>> {
    let mut ctx = ChartBuilder::on(root)
        .caption(frame.title, (FONT, 25))
        .margin(16)
        .x_label_area_size(56)
        .y_label_area_size(80)
        .build_cartesian_2d(frame.x, frame.y)?;
    let mut mesh = ctx.configure_mesh();
    if !frame.x_grid {
        mesh.disable_x_mesh();
    }
    mesh.x_desc(frame.x_desc)
        .y_desc(frame.y_desc)
        .x_label_formatter(frame.x_label)
        .y_label_formatter(&tick_label)
        .light_line_style(RGBColor(238, 238, 238))
        .label_style((FONT, 15))
        .axis_desc_style((FONT, 17))
        .draw()?;
    Ok(ctx)
}

/// The legend of the series drawn with labels.
fn draw_legend<'a, 'b: 'a>(ctx: &mut Chart<'a, 'b>, at: SeriesLabelPosition) -> DrawResult {
    ctx.configure_series_labels()
        .position(at)
        .label_font((FONT, 15))
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .draw()?;
    Ok(())
}

/// How the x values are laid out.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum XAxis {
    /// Evenly, ticks at round numbers (steps).
    Linear,
    /// By their base-2 logarithm, ticked at the values the data has (contexts, lengths).
    Log2,
}

/// A chart of one or more curves with a legend.
pub struct LineChart<'a> {
    pub title: &'a str,
    pub x_desc: &'a str,
    pub y_desc: &'a str,
    pub x_axis: XAxis,
    /// Fixed y limits (e.g. 0–100 %); else the data's, with a margin.
    pub y_range: Option<Range<f64>>,
    pub series: &'a [Series],
    /// Curves drawn faintly under `series` in the same colours (e.g. the unsmoothed loss).
    pub faint: &'a [Series],
    /// Marks every point (few points per curve).
    pub markers: bool,
}

/// `lo..hi` widened by a twentieth on each side, or by one when empty.
fn padded(lo: f64, hi: f64) -> Range<f64> {
    let pad = if hi > lo { (hi - lo) / 20.0 } else { 1.0 };
    lo - pad..hi + pad
}

fn bounds(values: impl Iterator<Item = f64>) -> (f64, f64) {
    values.fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), v| {
        (lo.min(v), hi.max(v))
    })
}

/// The x axis: the data's range, ticked at round numbers or at the data's own x values.
fn x_axis(chart: &LineChart) -> TickedAxis {
    let to_x = |x: f64| {
        if chart.x_axis == XAxis::Log2 {
            x.log2()
        } else {
            x
        }
    };
    let all = || {
        chart
            .series
            .iter()
            .flat_map(|s| s.points.iter().map(|p| to_x(p.0)))
    };
    let (lo, hi) = bounds(all());
    let range = padded(lo, hi);
    let ticks = match chart.x_axis {
        XAxis::Log2 => {
            let mut xs: Vec<f64> = all().collect();
            xs.sort_by(f64::total_cmp);
            xs.dedup();
            xs
        }
        XAxis::Linear => RangedCoordf64::from(range.clone()).key_points(10),
    };
    TickedAxis { range, ticks }
}

/// Draws `chart` into `out` (PNG). Every series needs at least one point.
pub fn draw_lines(out: &Path, chart: &LineChart) -> Result<()> {
    let log2 = chart.x_axis == XAxis::Log2;
    let to_x = move |x: f64| if log2 { x.log2() } else { x };
    let x = x_axis(chart);
    let y_range = chart.y_range.clone().unwrap_or_else(|| {
        let (lo, hi) = bounds(
            chart
                .series
                .iter()
                .flat_map(|s| s.points.iter().map(|p| p.1)),
        );
        padded(lo, hi)
    });
    let label = move |x: &f64| match log2 {
        true => tick_label(&x.exp2()),
        false => tick_label(x),
    };
    render(out, |root| {
        let names: Vec<&str> = chart.series.iter().map(|s| s.name.as_str()).collect();
        let (plot, legend) = root.split_horizontally(WIDTH - legend_width(root, &names)?);
        let frame = Frame {
            title: chart.title,
            x,
            y: y_range,
            x_desc: chart.x_desc,
            y_desc: chart.y_desc,
            x_label: &label,
            x_grid: true,
        };
        let mut ctx = chart_in(&plot, frame)?;
        for (i, s) in chart.faint.iter().enumerate() {
            let color = series_style(i).0.mix(0.25);
            let points = s.points.iter().map(|&(x, y)| (to_x(x), y));
            ctx.draw_series(LineSeries::new(points, color.stroke_width(1)))?;
        }
        for (i, s) in chart.series.iter().enumerate() {
            let (color, dashed) = series_style(i);
            let points: Vec<(f64, f64)> = s.points.iter().map(|&(x, y)| (to_x(x), y)).collect();
            if dashed {
                ctx.draw_series(DashedLineSeries::new(
                    points.clone(),
                    DASH,
                    DASH_GAP,
                    color.stroke_width(2),
                ))?;
            } else {
                ctx.draw_series(LineSeries::new(points.clone(), color.stroke_width(2)))?;
            }
            if chart.markers {
                ctx.draw_series(
                    points
                        .into_iter()
                        .map(|p| Circle::new(p, 4, color.filled())),
                )?;
            }
        }
        draw_side_legend(&legend, &names)
    })
}

/// Pixels of a dash and of the gap after it, on the curves and in the legend alike.
const DASH: i32 = 10;
const DASH_GAP: i32 = 6;
const LEGEND_FONT: (&str, u32) = (FONT, 15);
/// Pixels of a legend entry's line sample, and of the gaps around it.
const SAMPLE: i32 = 28;
const GAP: i32 = 8;

/// The width of a legend beside the plot that fits the longest name, at most a third of the chart.
fn legend_width(root: &Area, names: &[&str]) -> std::result::Result<u32, Box<dyn StdError>> {
    let font = LEGEND_FONT.into_text_style(root);
    let mut widest = 0;
    for name in names {
        widest = widest.max(root.estimate_text_size(name, &font)?.0);
    }
    Ok((widest + (SAMPLE + 3 * GAP) as u32).min(WIDTH / 3))
}

/// The legend in its own area beside the plot, one entry per series in `series_style`'s styles,
/// so that it never covers a curve.
fn draw_side_legend(area: &Area, names: &[&str]) -> DrawResult {
    let style = LEGEND_FONT
        .into_text_style(area)
        .pos(Pos::new(HPos::Left, VPos::Center));
    let row = 22;
    let top = 60;
    for (i, name) in names.iter().enumerate() {
        let (color, dashed) = series_style(i);
        let y = top + row * i as i32;
        let sample = vec![(0, y), (SAMPLE, y)];
        if dashed {
            area.draw(&DashedPathElement::new(
                sample,
                DASH,
                DASH_GAP,
                color.stroke_width(3),
            ))?;
        } else {
            area.draw(&PathElement::new(sample, color.stroke_width(3)))?;
        }
        area.draw(&Text::new(
            name.to_string(),
            (SAMPLE + GAP, y),
            style.clone(),
        ))?;
    }
    Ok(())
}

const ATTENTION_COLOR: RGBColor = RGBColor(214, 39, 40);
const REST_COLOR: RGBColor = RGBColor(120, 144, 176);

/// The paper's FLOPs figure as stacked bars: per context, full attention and S²-Attn side by side,
/// attention at the bottom, the rest on top, each bar labelled with its attention share.
pub fn draw_flops(out: &Path, title: &str, bars: &[(usize, PaperFlops, PaperFlops)]) -> Result<()> {
    const TERA: f64 = 1e12;
    let top = bars
        .iter()
        .map(|b| b.1.total().max(b.2.total()))
        .fold(0.0, f64::max)
        / TERA;
    let centers: Vec<f64> = (0..bars.len()).map(|i| i as f64 + 0.5).collect();
    let context_of = |x: &f64| {
        bars.get(x.floor() as usize)
            .map_or(String::new(), |b| b.0.to_string())
    };
    render(out, |root| {
        let frame = Frame {
            title,
            x: TickedAxis {
                range: 0.0..bars.len() as f64,
                ticks: centers,
            },
            y: 0.0..top * 1.15,
            x_desc: "context length (tokens)",
            y_desc: "TFLOPs (forward pass, one sequence)",
            x_label: &context_of,
            x_grid: false,
        };
        let mut ctx = chart_in(root, frame)?;
        let mut attention = Vec::new();
        let mut rest = Vec::new();
        let mut labels = Vec::new();
        for (i, (_, full, s2)) in bars.iter().enumerate() {
            for (left, name, f) in [(0.08, "full", full), (0.54, "S²-Attn", s2)] {
                let (x0, x1) = (i as f64 + left, i as f64 + left + 0.38);
                let (a, t) = (f.attention / TERA, f.total() / TERA);
                attention.push(Rectangle::new(
                    [(x0, 0.0), (x1, a)],
                    ATTENTION_COLOR.filled(),
                ));
                rest.push(Rectangle::new([(x0, a), (x1, t)], REST_COLOR.filled()));
                let share = format!("attn {:.0}%", 100.0 * f.attention_share());
                labels.push((name.to_string(), share, (x0 + x1) / 2.0, t));
            }
        }
        let swatch =
            |c: RGBColor| move |(x, y)| Rectangle::new([(x, y - 6), (x + 14, y + 6)], c.filled());
        ctx.draw_series(attention)?
            .label("attention: 4·N²·d per layer (S²-Attn: a quarter)")
            .legend(swatch(ATTENTION_COLOR));
        ctx.draw_series(rest)?
            .label("everything else: 2·P·N (P without the input embedding)")
            .legend(swatch(REST_COLOR));
        for (name, share, x, t) in labels {
            let style = TextStyle::from((FONT, 14)).pos(Pos::new(HPos::Center, VPos::Bottom));
            ctx.draw_series([
                Text::new(name, (x, t + top * 0.045), style.clone()),
                Text::new(share, (x, t + top * 0.01), style),
            ])?;
        }
        draw_legend(&mut ctx, SeriesLabelPosition::UpperLeft)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// No two of the first twenty series share a colour and a dash pattern.
    #[test]
    fn twenty_series_get_twenty_styles() {
        let styles: Vec<_> = (0..20).map(series_style).collect();
        for (i, a) in styles.iter().enumerate() {
            for (j, b) in styles.iter().enumerate().skip(i + 1) {
                assert!(a != b, "series {i} and {j} share the style {a:?}");
            }
        }
    }
}
