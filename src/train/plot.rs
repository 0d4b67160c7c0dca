//! Loss curves as PNG or SVG, with plotters.
//!
//! One line per series (training loss, held-out loss, one per variant in
//! `lpac compare`, …) against steps or seconds, with a legend. Non-finite
//! points (a diverged loss) are skipped; a series with a single point is drawn
//! as a dot; a plot with no points at all is an empty chart saying so.

use std::path::Path;

use plotters::coord::Shift;
use plotters::prelude::*;

/// One named curve: `(x, y)` points, x increasing (steps or seconds).
#[derive(Clone, Debug, PartialEq)]
pub struct Series {
    pub name: String,
    pub points: Vec<(f64, f64)>,
}

impl Series {
    pub fn new(name: impl Into<String>, points: Vec<(f64, f64)>) -> Series {
        Series { name: name.into(), points }
    }
}

/// The one typeface of every plot, built in (DejaVu Sans, its licence in
/// assets/fonts/): drawing text then needs no system fonts or fontconfig,
/// which GPU servers and containers often lack.
const FONT: &[u8] = include_bytes!("../../assets/fonts/DejaVuSans.ttf");

/// Makes the built-in typeface the one plotters finds as "sans-serif".
fn register_font() -> Result<(), String> {
    static REGISTERED: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    let ok = *REGISTERED.get_or_init(|| plotters::style::register_font("sans-serif", FontStyle::Normal, FONT).is_ok());
    if ok { Ok(()) } else { Err("the built-in font could not be read".into()) }
}

/// The picture's size in pixels.
const SIZE: (u32, u32) = (1024, 640);

/// Line colours, in series order (Tableau 10).
const COLORS: [RGBColor; 10] = [
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

/// Draws `series` as loss curves into `path`: PNG when it ends in `.png`, SVG
/// when it ends in `.svg` (any case). `x_label` names the x axis (`step`,
/// `seconds`, …); the y axis is `loss`.
pub fn plot_losses(path: &Path, series: &[Series], x_label: &str) -> Result<(), String> {
    let shown = path.display();
    register_font()?;
    let ext = path.extension().map(|e| e.to_string_lossy().to_ascii_lowercase());
    let result = match ext.as_deref() {
        Some("png") => {
            let root = BitMapBackend::new(path, SIZE).into_drawing_area();
            draw(&root, series, x_label).and_then(|()| root.present().map_err(|e| e.to_string()))
        }
        Some("svg") => {
            let root = SVGBackend::new(path, SIZE).into_drawing_area();
            draw(&root, series, x_label).and_then(|()| root.present().map_err(|e| e.to_string()))
        }
        _ => return Err(format!("cannot plot to `{shown}`: the file name must end in .png or .svg")),
    };
    result.map_err(|e| format!("cannot draw the plot `{shown}`: {e}"))
}

/// Only the finite points of a series.
fn finite_points(series: &Series) -> Vec<(f64, f64)> {
    series.points.iter().copied().filter(|(x, y)| x.is_finite() && y.is_finite()).collect()
}

/// `lo..hi` widened so that it is never empty and the data does not touch the
/// frame; `None` when the span overflows.
fn padded_range(lo: f64, hi: f64, pad_fraction: f64) -> Option<std::ops::Range<f64>> {
    let span = hi - lo;
    if !span.is_finite() {
        return None;
    }
    let pad = if span > 0.0 { span * pad_fraction } else { lo.abs().max(1.0) * 0.5 };
    let (a, b) = (lo - pad, hi + pad);
    (a.is_finite() && b.is_finite()).then_some(a..b)
}

fn draw<DB: DrawingBackend>(root: &DrawingArea<DB, Shift>, series: &[Series], x_label: &str) -> Result<(), String>
where
    DB::ErrorType: 'static,
{
    let err = |e: DrawingAreaErrorKind<DB::ErrorType>| e.to_string();
    root.fill(&WHITE).map_err(err)?;

    let curves: Vec<(&str, Vec<(f64, f64)>)> = series.iter().map(|s| (s.name.as_str(), finite_points(s))).collect();
    let all = curves.iter().flat_map(|(_, p)| p.iter().copied());
    let bounds = all.fold(None, |acc: Option<(f64, f64, f64, f64)>, (x, y)| {
        Some(match acc {
            None => (x, x, y, y),
            Some((x0, x1, y0, y1)) => (x0.min(x), x1.max(x), y0.min(y), y1.max(y)),
        })
    });
    let ranges = match bounds {
        None => None,
        Some((x0, x1, y0, y1)) => match (padded_range(x0, x1, 0.0), padded_range(y0, y1, 0.05)) {
            (Some(x), Some(y)) => Some((x, y)),
            _ => return Err("the points span a range too large to draw".to_string()),
        },
    };
    let (x_range, y_range) = ranges.clone().unwrap_or((0.0..1.0, 0.0..1.0));

    let mut chart = ChartBuilder::on(root)
        .caption("loss", ("sans-serif", 28))
        .margin(20)
        .x_label_area_size(50)
        .y_label_area_size(70)
        .build_cartesian_2d(x_range, y_range)
        .map_err(err)?;
    chart
        .configure_mesh()
        .x_desc(x_label)
        .y_desc("loss")
        .axis_desc_style(("sans-serif", 20))
        .label_style(("sans-serif", 16))
        .draw()
        .map_err(err)?;

    if ranges.is_none() {
        let grey = BLACK.mix(0.6);
        let style =
            TextStyle::from(("sans-serif", 24).into_font()).color(&grey).pos(plotters::style::text_anchor::Pos::new(
                plotters::style::text_anchor::HPos::Center,
                plotters::style::text_anchor::VPos::Center,
            ));
        chart.draw_series(std::iter::once(Text::new("no data to plot yet", (0.5, 0.5), style))).map_err(err)?;
        return Ok(());
    }

    let mut labelled = false;
    for (i, (name, points)) in curves.into_iter().enumerate() {
        let color = COLORS[i % COLORS.len()];
        let style = ShapeStyle::from(&color).stroke_width(2);
        let single = points.len() == 1;
        let drawn = if single {
            chart.draw_series(points.into_iter().map(move |p| Circle::new(p, 4, style.filled()))).map_err(err)?
        } else {
            chart.draw_series(LineSeries::new(points, style)).map_err(err)?
        };
        if !name.is_empty() {
            labelled = true;
            drawn.label(name).legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], style));
        }
    }
    if labelled {
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperRight)
            .label_font(("sans-serif", 16))
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK)
            .draw()
            .map_err(err)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    fn scratch_dir(tag: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("lpac-train-plot-{}-{tag}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("create scratch dir");
        dir
    }

    fn curves() -> Vec<Series> {
        let train: Vec<(f64, f64)> = (0..200).map(|s| (s as f64, 5.0 * (-(s as f64) / 60.0).exp() + 1.0)).collect();
        let mut eval: Vec<(f64, f64)> =
            (0..10).map(|k| (k as f64 * 20.0, 5.5 * (-(k as f64) / 3.0).exp() + 1.2)).collect();
        eval.push((200.0, f64::NAN));
        eval.push((f64::INFINITY, 1.0));
        vec![Series::new("train", train), Series::new("held-out", eval), Series::new("one point", vec![(100.0, 3.0)])]
    }

    const PNG_SIGNATURE: [u8; 8] = [0x89, b'P', b'N', b'G', b'\r', b'\n', 0x1a, b'\n'];

    #[test]
    fn draws_png_and_svg() {
        let dir = scratch_dir("both");
        let png = dir.join("loss.png");
        plot_losses(&png, &curves(), "step").unwrap();
        let bytes = std::fs::read(&png).unwrap();
        assert!(bytes.len() > 1000 && bytes.starts_with(&PNG_SIGNATURE), "{} bytes", bytes.len());

        let svg = dir.join("loss.SVG");
        plot_losses(&svg, &curves(), "seconds").unwrap();
        let text = std::fs::read_to_string(&svg).unwrap();
        assert!(text.contains("<svg"));
        assert!(text.contains("held-out") && text.contains("seconds"), "legend and axis label are drawn as text");
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn empty_and_degenerate_series_still_draw() {
        let dir = scratch_dir("empty");
        let svg = dir.join("empty.svg");
        plot_losses(&svg, &[], "step").unwrap();
        assert!(std::fs::read_to_string(&svg).unwrap().contains("no data to plot"));
        let png = dir.join("empty.png");
        plot_losses(&png, &[Series::new("train", vec![(0.0, f64::NAN)])], "step").unwrap();
        assert!(std::fs::read(&png).unwrap().starts_with(&PNG_SIGNATURE));
        // All points equal: the ranges are widened rather than empty.
        let flat = dir.join("flat.png");
        plot_losses(&flat, &[Series::new("flat", vec![(3.0, 2.0), (3.0, 2.0)])], "step").unwrap();
        assert!(std::fs::read(&flat).unwrap().starts_with(&PNG_SIGNATURE));
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn bad_paths_are_errors() {
        let dir = scratch_dir("bad");
        let err = plot_losses(&dir.join("loss.jpg"), &curves(), "step").unwrap_err();
        assert!(err.contains("loss.jpg") && err.contains(".png or .svg"), "{err}");
        let err = plot_losses(&dir.join("no/such/dir/loss.png"), &curves(), "step").unwrap_err();
        assert!(err.contains("loss.png"), "{err}");
        let huge = [Series::new("x", vec![(0.0, -f64::MAX), (1.0, f64::MAX)])];
        let err = plot_losses(&dir.join("huge.png"), &huge, "step").unwrap_err();
        assert!(err.contains("too large"), "{err}");
        let _ = std::fs::remove_dir_all(dir);
    }
}
