//! PNG charts for experiment reports, so a run can be judged at a glance without external tools.
//!
//! Every chart goes through one renderer (`render`) working in "plot space": values are projected
//! first (log10 for log axes, percentile nines for latency CDFs, bar index for bars), so a single
//! plotters coordinate type serves all charts and unplottable values are dropped in one place.

use std::ops::Range;
use std::path::Path;
use std::sync::OnceLock;

use anyhow::{Context, Result};
use plotters::coord::ranged1d::{KeyPointHint, NoDefaultFormatting, ValueFormatter};
use plotters::coord::types::RangedCoordf64;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};
use plotters::style::{register_font, FontStyle};

/// One named line or point set.
#[derive(Debug, Clone, Default)]
pub struct Series {
    pub label: String,
    pub points: Vec<(f64, f64)>,
}

/// A shaded x-interval (e.g. a failure window) and labelled vertical marks (fault events).
#[derive(Debug, Clone, Default)]
pub struct Annotations {
    pub shaded: Vec<(f64, f64)>,
    pub marks: Vec<(f64, String)>,
}

/// How an axis maps values; Log drops non-positive values instead of failing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scale {
    Linear,
    Log,
}

/// What `scatter_with_lines` and `lines` share: titles, axis scales and the fault annotations.
pub struct Chart<'a> {
    pub title: &'a str,
    pub x_label: &'a str,
    pub y_label: &'a str,
    pub x_scale: Scale,
    pub y_scale: Scale,
    pub annotations: &'a Annotations,
}

const FONT_PATH: &str = "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf";
const WIDE: (u32, u32) = (1000, 500);
const COMPACT: (u32, u32) = (800, 450);
const MARGIN: u32 = 12;
const X_LABEL_AREA: u32 = 45;
const VERTICAL_LABEL_AREA: u32 = 220;
const Y_LABEL_AREA: u32 = 75;
/// Fraction of the data span left empty on each side, so extreme points and bar values stay visible.
const PAD: f64 = 0.06;
const TARGET_TICKS: f64 = 8.0;
/// Above this, drawing every scatter point costs time without changing the picture.
const MAX_SCATTER: usize = 200_000;
/// Markers only help while individual values can still be told apart.
const MAX_MARKED_POINTS: usize = 20;
const CDF_POINTS: usize = 1000;
const SHADE: RGBAColor = RGBAColor(255, 0, 0, 0.15);
const MARK: RGBAColor = RGBAColor(40, 40, 40, 0.8);
const DOT: RGBAColor = RGBAColor(70, 110, 160, 0.35);

/// One lifetime for both: the backend lives exactly as long as the chart drawn on it.
type Plot<'a> = ChartContext<'a, BitMapBackend<'a>, Cartesian2d<Axis, Axis>>;

/// `scatter` as translucent 1-pixel dots (every n-th point when there are more than 200k, so the result
/// is deterministic), `lines` (e.g. p50/p99 per second) drawn over them, shaded intervals under the data,
/// marks as thin vertical lines labelled at the top.
pub fn scatter_with_lines(path: &Path, chart: &Chart, scatter: &[(f64, f64)], lines: &[Series]) -> Result<()> {
    let step = scatter.len().div_ceil(MAX_SCATTER).max(1);
    let dots = project(chart, scatter.iter().step_by(step).copied());
    let lines = project_series(chart, lines);
    let all = dots.iter().chain(lines.iter().flat_map(|s| &s.points));
    let (x, y) = data_axes(chart, all);
    render(path, WIDE, chart.title, x, y, |plot| {
        draw_annotations(plot, chart)?;
        plot.draw_series(dots.iter().map(|&p| Pixel::new(p, DOT)))?;
        draw_lines(plot, &lines)
    })
}

/// Lines (with a point marker at each value when a series has ≤ 20 points), legend when more than one series.
pub fn lines(path: &Path, chart: &Chart, series: &[Series]) -> Result<()> {
    let series = project_series(chart, series);
    let (x, y) = data_axes(chart, series.iter().flat_map(|s| &s.points));
    render(path, WIDE, chart.title, x, y, |plot| {
        draw_annotations(plot, chart)?;
        draw_lines(plot, &series)
    })
}

/// Vertical bars, one per (label, value), in the given order, with the value printed above each bar.
/// Non-finite values leave an empty slot under their label.
pub fn bars(path: &Path, title: &str, y_label: &str, bars: &[(String, f64)]) -> Result<()> {
    let values: Vec<(f64, f64)> =
        bars.iter().enumerate().map(|(i, (_, v))| (i as f64, *v)).filter(|(_, v)| v.is_finite()).collect();
    let names: Vec<String> = bars.iter().map(|(name, _)| name.clone()).collect();
    // Bars grow from zero, so zero must be on the axis even when every value is far from it.
    let span = bounds(values.iter().map(|p| p.1)).map(|(lo, hi)| (lo.min(0.0), hi.max(0.0)));
    let x = Axis::names("", names);
    let y = Axis::numeric(y_label, Scale::Linear, span);
    render(path, COMPACT, title, x, y, |plot| {
        let fill = Palette99::pick(0).filled();
        plot.draw_series(values.iter().map(|&(i, v)| Rectangle::new([(i - 0.35, 0.0), (i + 0.35, v)], fill)))?;
        let style = TextStyle::from(("sans-serif", 14)).pos(Pos::new(HPos::Center, VPos::Bottom));
        plot.draw_series(values.iter().map(|&(i, v)| Text::new(format_value(v), (i, v), style.clone())))?;
        Ok(())
    })
}

/// Latency CDF on a "nines" axis, as HdrHistogram plots do: x = percentile on a log scale of 1/(1-q)
/// with ticks labelled 0%, 90%, 99%, 99.9%, 99.99%; y = latency. `series` hold SORTED latencies (ms)
/// per operation in `points[i].1`; `points[i].0` is ignored. At most ~1000 quantiles per series are
/// drawn, always including the maximum.
pub fn latency_cdf(path: &Path, title: &str, series: &[Series]) -> Result<()> {
    let curves: Vec<Series> = series
        .iter()
        .map(|s| Series { label: s.label.clone(), points: quantile_points(s.points.iter().map(|p| p.1)) })
        .collect();
    let points = || curves.iter().flat_map(|s| &s.points);
    let x = Axis::nines(bounds(points().map(|p| p.0)).map(|b| b.1));
    let y = Axis::numeric("latency (ms)", Scale::Linear, bounds(points().map(|p| p.1)));
    render(path, COMPACT, title, x, y, |plot| draw_lines(plot, &curves))
}

/// One axis in plot space: where it spans (None: no data), where its ticks go and how they read.
/// It is its own plotters coordinate so that tick placement and labels need no per-chart types.
struct Axis {
    desc: String,
    /// Category names run vertically, so that many long ones do not overlap.
    vertical_labels: bool,
    range: Option<Range<f64>>,
    ticks: Vec<f64>,
    label: Box<dyn Fn(f64) -> String>,
}

impl Axis {
    /// `span` is the (min, max) of the projected data.
    fn numeric(desc: &str, scale: Scale, span: Option<(f64, f64)>) -> Axis {
        let range = span.map(|s| padded(s, scale));
        let ticks = range.as_ref().map_or_else(Vec::new, |r| match scale {
            Scale::Linear => nice_ticks(r),
            Scale::Log => log_ticks(r),
        });
        let label: Box<dyn Fn(f64) -> String> = match scale {
            Scale::Linear => Box::new(format_value),
            Scale::Log => Box::new(|v| format_value(10f64.powf(v))),
        };
        Axis { desc: desc.to_string(), vertical_labels: false, range, ticks, label }
    }

    /// Categories sit at 0, 1, 2, … so bars can be drawn in the same coordinates as everything else.
    fn names(desc: &str, names: Vec<String>) -> Axis {
        let range = (!names.is_empty()).then(|| -0.5..names.len() as f64 - 0.5);
        let ticks = (0..names.len()).map(|i| i as f64).collect();
        // Plotters centres a rotated tick label on its tick; spaces as long
        // as the name put the visible half below the axis.
        let label = Box::new(move |v: f64| {
            names
                .get(v.round() as usize)
                .map(|n| format!("{}{n}", " ".repeat(n.chars().count() + 2)))
                .unwrap_or_default()
        });
        Axis { desc: desc.to_string(), vertical_labels: true, range, ticks, label }
    }

    /// `max` is the largest nines value, log10(1/(1-q)), of the data.
    fn nines(max: Option<f64>) -> Axis {
        // Always reach 90% so even a tiny sample shows one labelled decade.
        let range = max.map(|m| 0.0..m.max(1.0) * (1.0 + PAD));
        let last = range.as_ref().map_or(0, |r| r.end.floor() as i32);
        let ticks = (0..=last).map(f64::from).collect();
        Axis { desc: "percentile".to_string(), vertical_labels: false, range, ticks, label: Box::new(nines_label) }
    }

    /// Without data the frame still needs some span to be drawn on.
    fn span(&self) -> Range<f64> {
        self.range.clone().unwrap_or(0.0..1.0)
    }
}

impl Ranged for Axis {
    type FormatOption = NoDefaultFormatting;
    type ValueType = f64;

    fn map(&self, value: &f64, limit: (i32, i32)) -> i32 {
        RangedCoordf64::from(self.span()).map(value, limit)
    }

    fn key_points<Hint: KeyPointHint>(&self, hint: Hint) -> Vec<f64> {
        // Only bold grid lines: the fine default grid would clutter dense scatter plots.
        if hint.weight().allow_light_points() {
            Vec::new()
        } else {
            self.ticks.clone()
        }
    }

    fn range(&self) -> Range<f64> {
        self.span()
    }
}

impl ValueFormatter<f64> for Axis {
    fn format_ext(&self, value: &f64) -> String {
        (self.label)(*value)
    }
}

/// The one drawing routine: canvas, title, axes and grid, then the chart-specific `draw`
/// (skipped, with a "no data" notice instead, when either axis has nothing to span).
fn render(
    path: &Path,
    size: (u32, u32),
    title: &str,
    x: Axis,
    y: Axis,
    draw: impl FnOnce(&mut Plot) -> Result<()>,
) -> Result<()> {
    ensure_font()?;
    let has_data = x.range.is_some() && y.range.is_some();
    let (x_desc, y_desc) = (x.desc.clone(), y.desc.clone());
    let vertical = x.vertical_labels;
    // Vertical names need the height of the longest one below the plot.
    let (size, x_area) =
        if vertical { ((size.0, size.1 + VERTICAL_LABEL_AREA), VERTICAL_LABEL_AREA) } else { (size, X_LABEL_AREA) };
    let root = BitMapBackend::new(path, size).into_drawing_area();
    root.fill(&WHITE)?;
    let mut plot = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 22))
        .margin(MARGIN)
        .x_label_area_size(x_area)
        .y_label_area_size(Y_LABEL_AREA)
        .build_cartesian_2d(x, y)?;
    let x_labels = TextStyle::from(("sans-serif", 13));
    let x_labels = if vertical { x_labels.transform(FontTransform::Rotate90) } else { x_labels };
    plot.configure_mesh()
        .x_desc(x_desc)
        .y_desc(y_desc)
        .bold_line_style(RGBColor(225, 225, 225))
        .label_style(("sans-serif", 13))
        .x_label_style(x_labels)
        .axis_desc_style(("sans-serif", 15))
        .draw()?;
    if has_data {
        draw(&mut plot)?;
    } else {
        let centre = TextStyle::from(("sans-serif", 24)).pos(Pos::new(HPos::Center, VPos::Center));
        plot.draw_series([Text::new("no data", (0.5, 0.5), centre)])?;
    }
    root.present().with_context(|| format!("writing chart {}", path.display()))
}

/// Plotters' ab_glyph backend has no font of its own; register DejaVu once per process.
fn ensure_font() -> Result<()> {
    static FONT: OnceLock<Result<(), String>> = OnceLock::new();
    FONT.get_or_init(load_font).clone().map_err(anyhow::Error::msg)
}

fn load_font() -> Result<(), String> {
    let bytes = std::fs::read(FONT_PATH)
        .map_err(|e| format!("cannot read {FONT_PATH} ({e}); install the Debian package fonts-dejavu-core"))?;
    register_font("sans-serif", FontStyle::Normal, Box::leak(bytes.into_boxed_slice()))
        .map_err(|_| format!("{FONT_PATH} is not a usable TrueType font; reinstall fonts-dejavu-core"))
}

fn draw_annotations(plot: &mut Plot, chart: &Chart) -> Result<()> {
    let Range { start: x0, end: x1 } = plot.x_range();
    let Range { start: y0, end: y1 } = plot.y_range();
    let at = |v: f64| to_plot(chart.x_scale, v);
    // An interval that starts at or below zero on a log axis still covers the left edge.
    let shaded = chart.annotations.shaded.iter().filter_map(|&(lo, hi)| {
        let (lo, hi) = (at(lo).unwrap_or(x0).max(x0), at(hi)?.min(x1));
        (lo < hi).then(|| Rectangle::new([(lo, y0), (hi, y1)], SHADE.filled()))
    });
    plot.draw_series(shaded)?;
    let marks: Vec<(f64, &str)> = chart
        .annotations
        .marks
        .iter()
        .filter_map(|(v, label)| Some((at(*v)?, label.as_str())))
        .filter(|(x, _)| (x0..=x1).contains(x))
        .collect();
    plot.draw_series(marks.iter().map(|&(x, _)| PathElement::new([(x, y0), (x, y1)], MARK)))?;
    // Staggered so labels of events close in time do not print over each other.
    plot.draw_series(marks.iter().enumerate().map(|(i, &(x, label))| {
        EmptyElement::at((x, y1)) + Text::new(label.to_string(), (3, 2 + 14 * (i as i32 % 3)), ("sans-serif", 12))
    }))?;
    Ok(())
}

fn draw_lines(plot: &mut Plot, series: &[Series]) -> Result<()> {
    for (i, s) in series.iter().enumerate() {
        let colour = Palette99::pick(i).to_rgba();
        plot.draw_series(LineSeries::new(s.points.iter().copied(), colour.stroke_width(2)))?
            .label(s.label.as_str())
            .legend(move |(x, y)| PathElement::new([(x, y), (x + 20, y)], colour.stroke_width(2)));
        if s.points.len() <= MAX_MARKED_POINTS {
            plot.draw_series(s.points.iter().map(|&p| Circle::new(p, 4, colour.filled())))?;
        }
    }
    if series.len() > 1 {
        plot.configure_series_labels()
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK)
            .label_font(("sans-serif", 13))
            .draw()?;
    }
    Ok(())
}

/// Axes spanning the projected points and the annotations, so fault events outside the data still show.
fn data_axes<'p>(chart: &Chart, points: impl Iterator<Item = &'p (f64, f64)> + Clone) -> (Axis, Axis) {
    let notes = &chart.annotations;
    let note_xs = notes.shaded.iter().flat_map(|&(a, b)| [a, b]).chain(notes.marks.iter().map(|m| m.0));
    let note_xs = note_xs.filter_map(|v| to_plot(chart.x_scale, v));
    // Annotations alone are no data: without points the chart says so instead of showing an empty frame.
    let x_span = bounds(points.clone().map(|p| p.0)).and_then(|_| bounds(points.clone().map(|p| p.0).chain(note_xs)));
    let y_span = bounds(points.map(|p| p.1));
    (Axis::numeric(chart.x_label, chart.x_scale, x_span), Axis::numeric(chart.y_label, chart.y_scale, y_span))
}

fn project_series(chart: &Chart, series: &[Series]) -> Vec<Series> {
    series.iter().map(|s| Series { label: s.label.clone(), points: project(chart, s.points.iter().copied()) }).collect()
}

fn project(chart: &Chart, points: impl Iterator<Item = (f64, f64)>) -> Vec<(f64, f64)> {
    points.filter_map(|(x, y)| Some((to_plot(chart.x_scale, x)?, to_plot(chart.y_scale, y)?))).collect()
}

/// None for values the scale cannot show (non-finite, or non-positive on a log axis).
fn to_plot(scale: Scale, v: f64) -> Option<f64> {
    match scale {
        Scale::Linear => v.is_finite().then_some(v),
        Scale::Log => (v.is_finite() && v > 0.0).then(|| v.log10()),
    }
}

fn bounds(values: impl Iterator<Item = f64>) -> Option<(f64, f64)> {
    values.fold(None, |acc, v| match acc {
        None => Some((v, v)),
        Some((lo, hi)) => Some((lo.min(v), hi.max(v))),
    })
}

fn padded((lo, hi): (f64, f64), scale: Scale) -> Range<f64> {
    // A single value still needs a non-empty span to be placed on.
    let pad = if hi > lo { (hi - lo) * PAD } else { lo.abs().max(1.0) * 0.5 };
    // Counts and latencies never go below zero; a negative axis start would only waste room.
    let start = if scale == Scale::Linear && lo >= 0.0 { (lo - pad).max(0.0) } else { lo - pad };
    start..hi + pad
}

/// Ticks at 1, 2 or 5 times a power of ten, about TARGET_TICKS of them.
fn nice_ticks(r: &Range<f64>) -> Vec<f64> {
    let raw = (r.end - r.start) / TARGET_TICKS;
    let magnitude = 10f64.powf(raw.log10().floor());
    let step = [1.0, 2.0, 5.0, 10.0].into_iter().map(|m| m * magnitude).find(|&s| s >= raw).unwrap_or(raw);
    // Multiplying an integer index avoids the drift of repeatedly adding the step.
    let (first, last) = ((r.start / step).ceil() as i64, (r.end / step).floor() as i64);
    (first..=last).map(|i| i as f64 * step).collect()
}

/// Decades when the axis spans enough of them; otherwise round values, so narrow log axes still read.
fn log_ticks(r: &Range<f64>) -> Vec<f64> {
    let decades: Vec<f64> = (r.start.ceil() as i32..=r.end.floor() as i32).map(f64::from).collect();
    if decades.len() >= 3 {
        return decades;
    }
    let raw = 10f64.powf(r.start)..10f64.powf(r.end);
    nice_ticks(&raw).into_iter().filter(|&v| v > 0.0).map(f64::log10).collect()
}

/// Four significant digits without trailing zeros; scientific notation where that would be unreadable.
fn format_value(v: f64) -> String {
    let a = v.abs();
    if a != 0.0 && !(1e-3..1e6).contains(&a) {
        return format!("{v:.2e}");
    }
    let decimals = if a == 0.0 { 0 } else { (3 - a.log10().floor() as i32).max(0) as usize };
    let s = format!("{v:.decimals$}");
    if s.contains('.') {
        s.trim_end_matches('0').trim_end_matches('.').to_string()
    } else {
        s
    }
}

/// Tick k of the nines axis is the percentile 1 - 10^-k: 0%, 90%, 99%, 99.9%, …
fn nines_label(k: f64) -> String {
    let k = k.round() as i32;
    format!("{:.*}%", (k - 2).max(0) as usize, 100.0 * (1.0 - 10f64.powi(-k)))
}

/// (nines, latency) points of a sorted sample, spaced evenly along the nines axis so the tail,
/// where the interesting latencies are, gets as many points as the body.
fn quantile_points(sorted: impl Iterator<Item = f64>) -> Vec<(f64, f64)> {
    let values: Vec<f64> = sorted.filter(|v| v.is_finite()).collect();
    let Some(last) = values.len().checked_sub(1) else {
        return Vec::new();
    };
    let n = values.len() as f64;
    // Sample i has i of n values below it: q = i/n, nines = log10(n / (n - i)); the max is at log10(n).
    let top = n.log10();
    let mut indices: Vec<usize> = (0..CDF_POINTS)
        .map(|k| top * k as f64 / (CDF_POINTS - 1) as f64)
        .map(|x| ((n - n / 10f64.powf(x)).floor() as usize).min(last))
        .collect();
    indices.dedup();
    // Rounding can land the final step just short of the maximum, the one value a tail plot must show.
    if indices.last() != Some(&last) {
        indices.push(last);
    }
    indices.into_iter().map(|i| ((n / (n - i as f64)).log10(), values[i])).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode(path: &Path) -> (png::OutputInfo, Vec<u8>) {
        let mut reader = png::Decoder::new(std::fs::File::open(path).unwrap()).read_info().unwrap();
        let mut buf = vec![0; reader.output_buffer_size()];
        let info = reader.next_frame(&mut buf).unwrap();
        buf.truncate(info.buffer_size());
        (info, buf)
    }

    /// Bar charts grow downwards to hold their vertical names.
    const BARS: (u32, u32) = (COMPACT.0, COMPACT.1 + VERTICAL_LABEL_AREA);

    fn assert_png(path: &Path, size: (u32, u32)) {
        let (info, _) = decode(path);
        assert_eq!((info.width, info.height), size);
    }

    fn chart<'a>(annotations: &'a Annotations, x_scale: Scale, y_scale: Scale) -> Chart<'a> {
        Chart { title: "test chart", x_label: "time (s)", y_label: "value", x_scale, y_scale, annotations }
    }

    fn series(label: &str, points: Vec<(f64, f64)>) -> Series {
        Series { label: label.to_string(), points }
    }

    /// Pixel column of plot-space `x` on a WIDE chart whose x axis spans `range`; mirrors the
    /// ChartBuilder layout in `render` (margin and y label area to the left of the plot).
    fn column_of(x: f64, range: &Range<f64>) -> u32 {
        let left = (MARGIN + Y_LABEL_AREA) as f64;
        let right = (WIDE.0 - MARGIN) as f64;
        (left + (x - range.start) / (range.end - range.start) * (right - left)).round() as u32
    }

    #[test]
    fn shaded_interval_covers_its_columns_only() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("shade.png");
        let notes = Annotations { shaded: vec![(40.0, 60.0)], marks: vec![] };
        // Flat at the bottom over both probed columns, so no line crosses the rows looked at.
        let data = [series("s", vec![(0.0, 0.0), (70.0, 0.0), (100.0, 10.0)])];
        lines(&path, &chart(&notes, Scale::Linear, Scale::Linear), &data).unwrap();

        let (info, pixels) = decode(&path);
        let x_range = padded((0.0, 100.0), Scale::Linear);
        let channels = info.color_type.samples();
        let shade = [255, 217, 217];
        let rows = info.height * 3 / 10..info.height * 7 / 10;
        let shaded_rows = |column: u32| {
            rows.clone()
                .filter(|&row| {
                    let at = (row * info.width + column) as usize * channels;
                    pixels[at..at + 3].iter().zip(shade).all(|(&p, s)| p.abs_diff(s) <= 2)
                })
                .count()
        };
        let inside = shaded_rows(column_of(50.0, &x_range));
        let outside = shaded_rows(column_of(20.0, &x_range));
        assert!(inside * 10 >= rows.len() * 9, "only {inside} of {} rows shaded inside", rows.len());
        assert_eq!(outside, 0);
    }

    #[test]
    fn scatter_with_lines_renders_many_points_and_annotations() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("scatter.png");
        let notes =
            Annotations { shaded: vec![(10.0, 20.0)], marks: vec![(12.0, "kill n2".into()), (15.0, "heal".into())] };
        let scatter: Vec<(f64, f64)> = (0..300_000).map(|i| (i as f64 / 10_000.0, 1.0 + (i % 97) as f64)).collect();
        let p99 = series("p99", (0..30).map(|s| (s as f64, 96.0)).collect());
        let p50 = series("p50", (0..30).map(|s| (s as f64, 49.0)).collect());
        scatter_with_lines(&path, &chart(&notes, Scale::Linear, Scale::Log), &scatter, &[p50, p99]).unwrap();
        assert_png(&path, WIDE);
    }

    #[test]
    fn lines_skip_unplottable_values() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("lines.png");
        let notes = Annotations::default();
        let data = [series("a", vec![(-1.0, 0.0), (0.0, 5.0), (1.0, f64::NAN), (10.0, f64::INFINITY), (100.0, 50.0)])];
        lines(&path, &chart(&notes, Scale::Log, Scale::Log), &data).unwrap();
        assert_png(&path, WIDE);
    }

    #[test]
    fn empty_and_single_point_inputs_render() {
        let dir = tempfile::tempdir().unwrap();
        let notes = Annotations { shaded: vec![(1.0, 2.0)], marks: vec![(1.5, "fault".into())] };
        let c = chart(&notes, Scale::Linear, Scale::Linear);
        let cases: [(&str, Vec<Series>); 3] = [
            ("none.png", vec![]),
            ("empty.png", vec![series("empty", vec![])]),
            ("single.png", vec![series("one", vec![(3.0, 7.0)])]),
        ];
        for (name, data) in cases {
            let path = dir.path().join(name);
            lines(&path, &c, &data).unwrap();
            assert_png(&path, WIDE);
        }
        let path = dir.path().join("scatter-empty.png");
        scatter_with_lines(&path, &c, &[], &[]).unwrap();
        assert_png(&path, WIDE);
        let path = dir.path().join("bars-empty.png");
        bars(&path, "nothing", "ops", &[]).unwrap();
        assert_png(&path, BARS);
        let path = dir.path().join("cdf-empty.png");
        latency_cdf(&path, "nothing", &[series("get", vec![])]).unwrap();
        assert_png(&path, COMPACT);
    }

    #[test]
    fn bars_render() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bars.png");
        let data = [("put".to_string(), 1234.5), ("get".to_string(), 0.25), ("scan".to_string(), f64::NAN)];
        bars(&path, "throughput", "ops/s", &data).unwrap();
        assert_png(&path, BARS);
    }

    #[test]
    fn latency_cdf_renders() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cdf.png");
        let get: Vec<(f64, f64)> = (0..100_000).map(|i| (0.0, 1.0 + (i as f64 / 1000.0).powi(2))).collect();
        let put = series("put", vec![(0.0, 2.0)]);
        latency_cdf(&path, "latency", &[series("get", get), put]).unwrap();
        assert_png(&path, COMPACT);
    }

    #[test]
    fn quantile_points_are_capped_and_keep_the_max() {
        let sorted: Vec<f64> = (0..1_000_000).map(f64::from).collect();
        let points = quantile_points(sorted.iter().copied());
        assert!(points.len() <= CDF_POINTS + 1, "{} points", points.len());
        assert_eq!(points.first().unwrap().1, 0.0);
        assert_eq!(points.last().unwrap().1, 999_999.0);
        assert!((points.last().unwrap().0 - 6.0).abs() < 1e-9);
        assert!(points.windows(2).all(|w| w[0].0 < w[1].0 && w[0].1 <= w[1].1));
        assert_eq!(quantile_points([5.0].into_iter()), vec![(0.0, 5.0)]);
        assert!(quantile_points(std::iter::empty()).is_empty());
    }

    #[test]
    fn nines_ticks_read_as_percentiles() {
        let labels: Vec<String> = (0..5).map(|k| nines_label(f64::from(k))).collect();
        assert_eq!(labels, ["0%", "90%", "99%", "99.9%", "99.99%"]);
    }

    #[test]
    fn values_format_compactly() {
        assert_eq!(format_value(0.0), "0");
        assert_eq!(format_value(0.30000000000000004), "0.3");
        assert_eq!(format_value(1234.5678), "1235");
        assert_eq!(format_value(2e7), "2.00e7");
    }
}
