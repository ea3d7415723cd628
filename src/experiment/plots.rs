//! Plots of the reports (SVG and PNG): the search over generations (fitness, accuracy, Diff)
//! per modularized model, and weak vs. patched TC F1 per model and rule.
//!
//! Text needs a TrueType font: `$CNNSPLITTER_FONT`, else a common system font (DejaVu Sans,
//! Liberation Sans, Arial, Helvetica). Without one the plots are skipped with a note.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

use crate::error::{Error, Result};
use crate::files::write_atomic;

const SIZE: (u32, u32) = (900, 520);

const FONT_CANDIDATES: &[&str] = &[
    "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/TTF/DejaVuSans.ttf",
    "/usr/share/fonts/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/truetype/liberation/LiberationSans-Regular.ttf",
    "/usr/share/fonts/liberation/LiberationSans-Regular.ttf",
    "/System/Library/Fonts/Supplemental/Arial.ttf",
    "/Library/Fonts/Arial.ttf",
    "C:\\Windows\\Fonts\\arial.ttf",
];

/// Registers a TrueType font as `sans-serif` once; `false` when none was found.
pub fn font_ready() -> bool {
    static READY: OnceLock<bool> = OnceLock::new();
    *READY.get_or_init(|| {
        let env = std::env::var_os("CNNSPLITTER_FONT").map(PathBuf::from);
        let candidates = env.into_iter().chain(FONT_CANDIDATES.iter().map(PathBuf::from));
        for path in candidates {
            if let Ok(bytes) = std::fs::read(&path) {
                let bytes: &'static [u8] = Box::leak(bytes.into_boxed_slice());
                if plotters::style::register_font("sans-serif", FontStyle::Normal, bytes).is_ok() {
                    return true;
                }
            }
        }
        false
    })
}

/// One line of a line chart.
pub struct Line {
    /// Legend label.
    pub label: String,
    /// Points `(x, y)`.
    pub points: Vec<(f64, f64)>,
}

/// Two bars per category.
pub struct Bars {
    /// Category labels (x axis).
    pub categories: Vec<String>,
    /// Legend labels of the two bars.
    pub labels: [String; 2],
    /// Values of the two bars per category, in [0, 1].
    pub values: Vec<[f64; 2]>,
}

const COLORS: [RGBColor; 4] =
    [RGBColor(31, 119, 180), RGBColor(214, 39, 40), RGBColor(44, 160, 44), RGBColor(148, 103, 189)];

fn draw_lines<DB: DrawingBackend>(
    root: DrawingArea<DB, Shift>,
    title: &str,
    x_desc: &str,
    lines: &[Line],
) -> std::result::Result<(), String> {
    let e = |e: DrawingAreaErrorKind<DB::ErrorType>| e.to_string();
    root.fill(&WHITE).map_err(e)?;
    let points = || lines.iter().flat_map(|l| l.points.iter());
    let x_min = points().map(|p| p.0).fold(f64::INFINITY, f64::min).min(1.0);
    let x_max = points().map(|p| p.0).fold(x_min + 1.0, f64::max);
    let y_max = points().map(|p| p.1).fold(1.0, f64::max);
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 22))
        .margin(16)
        .x_label_area_size(40)
        .y_label_area_size(50)
        .build_cartesian_2d(x_min..x_max, 0f64..y_max)
        .map_err(e)?;
    chart.configure_mesh().x_desc(x_desc).y_desc("value").draw().map_err(e)?;
    for (i, line) in lines.iter().enumerate() {
        let color = COLORS[i % COLORS.len()];
        chart
            .draw_series(LineSeries::new(line.points.iter().copied(), color.stroke_width(2)))
            .map_err(e)?
            .label(line.label.as_str())
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2)));
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::LowerRight)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .draw()
        .map_err(e)?;
    root.present().map_err(e)
}

fn draw_bars<DB: DrawingBackend>(
    root: DrawingArea<DB, Shift>,
    title: &str,
    bars: &Bars,
) -> std::result::Result<(), String> {
    let e = |e: DrawingAreaErrorKind<DB::ErrorType>| e.to_string();
    root.fill(&WHITE).map_err(e)?;
    let n = bars.categories.len().max(1) as f64;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 22))
        .margin(16)
        .x_label_area_size(50)
        .y_label_area_size(50)
        .build_cartesian_2d(0f64..n, 0f64..1.0)
        .map_err(e)?;
    chart.configure_mesh().disable_x_mesh().x_labels(0).y_desc("F1 of the target class").draw().map_err(e)?;
    for side in 0..2 {
        let color = COLORS[side];
        let rects = bars.values.iter().enumerate().map(move |(i, v)| {
            let x0 = i as f64 + 0.1 + 0.4 * side as f64;
            Rectangle::new([(x0, 0.0), (x0 + 0.38, v[side].clamp(0.0, 1.0))], color.filled())
        });
        chart
            .draw_series(rects)
            .map_err(e)?
            .label(bars.labels[side].as_str())
            .legend(move |(x, y)| Rectangle::new([(x, y - 5), (x + 14, y + 5)], color.filled()));
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperRight)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .draw()
        .map_err(e)?;
    let style = TextStyle::from(("sans-serif", 12).into_font()).pos(Pos::new(HPos::Center, VPos::Top));
    for (i, label) in bars.categories.iter().enumerate() {
        let (px, py) = chart.backend_coord(&(i as f64 + 0.5, 0.0));
        root.draw(&Text::new(label.as_str(), (px, py + 6), &style)).map_err(e)?;
    }
    root.present().map_err(e)
}

/// Draws with `draw` into `<stem>.svg` and `<stem>.png`.
fn render(
    stem: &Path,
    svg: impl FnOnce(DrawingArea<SVGBackend<'_>, Shift>) -> std::result::Result<(), String>,
    png: impl FnOnce(DrawingArea<BitMapBackend<'_>, Shift>) -> std::result::Result<(), String>,
) -> Result<()> {
    let failed = |m: String| Error::file(stem, format!("could not draw the plot: {m}"));
    let mut text = String::new();
    svg(SVGBackend::with_string(&mut text, SIZE).into_drawing_area()).map_err(failed)?;
    write_atomic(&stem.with_extension("svg"), text.as_bytes())?;
    let mut pixels = vec![0u8; (SIZE.0 * SIZE.1 * 3) as usize];
    png(BitMapBackend::with_buffer(&mut pixels, SIZE).into_drawing_area()).map_err(failed)?;
    let mut bytes = Vec::new();
    {
        let mut encoder = png::Encoder::new(&mut bytes, SIZE.0, SIZE.1);
        encoder.set_color(png::ColorType::Rgb);
        encoder.set_depth(png::BitDepth::Eight);
        let mut writer = encoder.write_header().map_err(|e| failed(e.to_string()))?;
        writer.write_image_data(&pixels).map_err(|e| failed(e.to_string()))?;
    }
    write_atomic(&stem.with_extension("png"), &bytes)
}

/// A line chart as `<stem>.svg` and `<stem>.png`.
pub fn line_chart(stem: &Path, title: &str, x_desc: &str, lines: &[Line]) -> Result<()> {
    render(stem, |a| draw_lines(a, title, x_desc, lines), |a| draw_lines(a, title, x_desc, lines))
}

/// A two-bar chart as `<stem>.svg` and `<stem>.png`.
pub fn bar_chart(stem: &Path, title: &str, bars: &Bars) -> Result<()> {
    render(stem, |a| draw_bars(a, title, bars), |a| draw_bars(a, title, bars))
}
