//! Figures, drawn on any plotters backend: PNG and SVG natively, a canvas in the browser.
//!
//! Heat maps of receptive fields (diverging colours around zero, one scale per panel) and of
//! mutual-information matrices (sequential colours from zero, one scale per panel).

use plotters::coord::Shift;
use plotters::prelude::*;

use crate::analysis::ReceptiveField;
use crate::lattice::Lattice;
use crate::records::{MeasureRow, Observable};
use crate::train::EpochStats;

/// Colour scale of a heat map.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Scale {
    /// Blue (negative), white (zero), red (positive), symmetric around zero.
    Diverging,
    /// White (zero) to dark blue (the maximum).
    Sequential,
}

fn mix(a: (u8, u8, u8), b: (u8, u8, u8), t: f64) -> RGBColor {
    let t = t.clamp(0.0, 1.0);
    let m = |x: u8, y: u8| (x as f64 + (y as f64 - x as f64) * t).round() as u8;
    RGBColor(m(a.0, b.0), m(a.1, b.1), m(a.2, b.2))
}

/// The colour of `v` on `scale` with range `max` (`|v| <= max`).
pub fn colour(scale: Scale, v: f64, max: f64) -> RGBColor {
    let t = if max > 0.0 { v / max } else { 0.0 };
    let white = (255, 255, 255);
    match scale {
        Scale::Diverging if t >= 0.0 => mix(white, (178, 24, 43), t),
        Scale::Diverging => mix(white, (33, 102, 172), -t),
        Scale::Sequential => mix(white, (8, 48, 107), t),
    }
}

/// A `rows x cols` heat map of `values` (row-major) with a caption that gives its range.
pub fn heatmap<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    values: &[f64],
    rows: usize,
    cols: usize,
    caption: &str,
    scale: Scale,
) -> Result<(), String> {
    let err = |e: DrawingAreaErrorKind<DB::ErrorType>| e.to_string();
    let max = values.iter().map(|v| v.abs()).fold(0.0, f64::max);
    let range = match scale {
        Scale::Diverging => format!("±{max:.3}"),
        Scale::Sequential => format!("0 to {max:.3}"),
    };
    let mut chart = ChartBuilder::on(area)
        .caption(format!("{caption} [{range}]"), ("sans-serif", 13))
        .margin(4)
        .build_cartesian_2d(0..cols as i32, 0..rows as i32)
        .map_err(err)?;
    chart
        .draw_series(
            (0..rows)
                .flat_map(|r| (0..cols).map(move |c| (r, c)))
                .map(|(r, c)| {
                    let y = (rows - 1 - r) as i32;
                    Rectangle::new(
                        [(c as i32, y), (c as i32 + 1, y + 1)],
                        colour(scale, values[r * cols + c], max).filled(),
                    )
                }),
        )
        .map_err(err)?;
    Ok(())
}

/// The receptive-field figure: one row of panels per RG level (`fields` grouped by level, each
/// with a label), each panel `dx/dz_k` on the lattice with its own symmetric colour scale.
pub fn receptive_figure<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    lattice: Lattice,
    fields: &[(String, ReceptiveField)],
) -> Result<(), String> {
    area.fill(&WHITE).map_err(|e| e.to_string())?;
    let levels: Vec<usize> = {
        let mut l: Vec<usize> = fields.iter().map(|(_, f)| f.level).collect();
        l.dedup();
        l
    };
    let cols = levels
        .iter()
        .map(|lv| fields.iter().filter(|(_, f)| f.level == *lv).count())
        .max()
        .unwrap_or(1);
    let area = area
        .titled(
            "Receptive fields dx/dz_k of latent sites k (rows: RG level)",
            ("sans-serif", 16),
        )
        .map_err(|e| e.to_string())?;
    let panels = area.split_evenly((levels.len(), cols));
    let (rows, width) = if lattice.dim() == 2 {
        (lattice.side(), lattice.side())
    } else {
        (1, lattice.side())
    };
    for (r, level) in levels.iter().enumerate() {
        for (c, (label, f)) in fields.iter().filter(|(_, f)| f.level == *level).enumerate() {
            let (row, col) = lattice.coords(f.site);
            let caption = format!("level {level}, {label} ({row},{col})");
            heatmap(
                &panels[r * cols + c],
                &f.values,
                rows,
                width,
                &caption,
                Scale::Diverging,
            )?;
        }
    }
    Ok(())
}

/// Mutual-information matrices side by side, each with its own colour scale.
pub fn mi_figure<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    panels: &[(String, Vec<f64>)],
    vars: usize,
) -> Result<(), String> {
    area.fill(&WHITE).map_err(|e| e.to_string())?;
    let area = area
        .titled(
            "Pairwise mutual information (site x site)",
            ("sans-serif", 16),
        )
        .map_err(|e| e.to_string())?;
    let cells = area.split_evenly((1, panels.len().max(1)));
    for (cell, (caption, m)) in cells.iter().zip(panels) {
        heatmap(cell, m, vars, vars, caption, Scale::Sequential)?;
    }
    Ok(())
}

/// Registers the bundled DejaVu Sans as the `sans-serif` font for the bitmap backend (native).
#[cfg(not(target_arch = "wasm32"))]
pub fn register_font() {
    static FONT: &[u8] = include_bytes!("../assets/DejaVuSans.ttf");
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let _ = plotters::style::register_font("sans-serif", FontStyle::Normal, FONT);
    });
}

/// A grid of spin configurations (black `+1`, white `-1`), up to `rows x cols` of them; 1D
/// configurations are stacked as the rows of one panel.
pub fn spin_grid<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    lattice: Lattice,
    spins: &[f64],
    title: &str,
) -> Result<(), String> {
    let err = |e: DrawingAreaErrorKind<DB::ErrorType>| e.to_string();
    area.fill(&WHITE).map_err(err)?;
    let area = area.titled(title, ("sans-serif", 16)).map_err(err)?;
    let n = lattice.sites();
    let count = spins.len() / n;
    let draw = |cell: &DrawingArea<DB, Shift>,
                rows: usize,
                cols: usize,
                values: &[f64]|
     -> Result<(), String> {
        let (w, h) = cell.dim_in_pixel();
        let side = (w as f64 / cols as f64).min(h as f64 / rows as f64);
        for r in 0..rows {
            for c in 0..cols {
                let (x0, y0) = ((c as f64 * side) as i32, (r as f64 * side) as i32);
                let (x1, y1) = (
                    ((c + 1) as f64 * side) as i32,
                    ((r + 1) as f64 * side) as i32,
                );
                let colour = if values[r * cols + c] > 0.0 {
                    BLACK
                } else {
                    WHITE
                };
                cell.draw(&Rectangle::new([(x0, y0), (x1, y1)], colour.filled()))
                    .map_err(err)?;
            }
        }
        cell.draw(&Rectangle::new(
            [
                (0, 0),
                ((cols as f64 * side) as i32, (rows as f64 * side) as i32),
            ],
            BLACK.stroke_width(1),
        ))
        .map_err(err)
    };
    if lattice.dim() == 1 {
        return draw(&area.margin(4, 4, 4, 4), count, n, spins);
    }
    let per_side = (count as f64).sqrt().ceil().max(1.0) as usize;
    let cells = area.split_evenly((per_side, per_side));
    for (cell, config) in cells.iter().zip(spins.chunks(n)) {
        draw(
            &cell.margin(3, 3, 3, 3),
            lattice.side(),
            lattice.side(),
            config,
        )?;
    }
    Ok(())
}

/// A figure that can be drawn on any backend.
pub trait Figure {
    fn draw<DB: DrawingBackend>(&self, area: &DrawingArea<DB, Shift>) -> Result<(), String>;
}

/// [`receptive_figure`] as a [`Figure`].
pub struct ReceptiveFigure<'a> {
    pub lattice: Lattice,
    pub fields: &'a [(String, ReceptiveField)],
}

impl Figure for ReceptiveFigure<'_> {
    fn draw<DB: DrawingBackend>(&self, area: &DrawingArea<DB, Shift>) -> Result<(), String> {
        receptive_figure(area, self.lattice, self.fields)
    }
}

/// [`mi_figure`] as a [`Figure`].
pub struct MiFigure<'a> {
    pub panels: &'a [(String, Vec<f64>)],
    pub vars: usize,
}

impl Figure for MiFigure<'_> {
    fn draw<DB: DrawingBackend>(&self, area: &DrawingArea<DB, Shift>) -> Result<(), String> {
        mi_figure(area, self.panels, self.vars)
    }
}

/// [`spin_grid`] as a [`Figure`].
pub struct SpinFigure<'a> {
    pub lattice: Lattice,
    pub spins: &'a [f64],
    pub title: String,
}

impl Figure for SpinFigure<'_> {
    fn draw<DB: DrawingBackend>(&self, area: &DrawingArea<DB, Shift>) -> Result<(), String> {
        spin_grid(area, self.lattice, self.spins, &self.title)
    }
}

/// Draws a figure into `<stem>.png` and `<stem>.svg` (native).
#[cfg(not(target_arch = "wasm32"))]
pub fn save(stem: &std::path::Path, size: (u32, u32), figure: &impl Figure) -> Result<(), String> {
    register_font();
    let png = stem.with_extension("png");
    let svg = stem.with_extension("svg");
    {
        let root = BitMapBackend::new(&png, size).into_drawing_area();
        figure.draw(&root)?;
        root.present()
            .map_err(|e| format!("{}: {e}", png.display()))?;
    }
    let root = SVGBackend::new(&svg, size).into_drawing_area();
    figure.draw(&root)?;
    root.present()
        .map_err(|e| format!("{}: {e}", svg.display()))?;
    Ok(())
}

/// The training monitor's data: a run's records.
#[derive(Debug, Clone)]
pub struct Monitor {
    /// One row per epoch.
    pub train: Vec<EpochStats>,
    /// The periodic measurements.
    pub measurements: Vec<MeasureRow>,
    /// The bound `-ln Z_x`.
    pub bound: f64,
    /// The observable drawn.
    pub observable: Observable,
    /// Its exact value, if known or given.
    pub exact: Option<f64>,
}

fn range(values: impl Iterator<Item = f64>) -> (f64, f64) {
    let (lo, hi) = values
        .filter(|v| v.is_finite())
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), v| {
            (a.min(v), b.max(v))
        });
    if !lo.is_finite() {
        return (0.0, 1.0);
    }
    let pad = ((hi - lo) * 0.05).max(1e-9 * hi.abs().max(1.0));
    (lo - pad, hi + pad)
}

impl Figure for Monitor {
    /// Four panels: F with the bound, the relative error (log axis), acceptance rates, and the
    /// observable with error bars and its exact value.
    fn draw<DB: DrawingBackend>(&self, area: &DrawingArea<DB, Shift>) -> Result<(), String> {
        area.fill(&WHITE).map_err(|e| e.to_string())?;
        let panels = area.split_evenly((2, 2));
        let epochs = self.epochs();
        free_energy_panel(&panels[0], &self.train, self.bound, epochs)?;
        relative_error_panel(&panels[1], &self.train, epochs)?;
        let acceptance: Vec<(f64, f64, f64)> = self
            .measurements
            .iter()
            .map(|m| (m.epoch as f64, m.mh_acceptance, m.hmc_acceptance))
            .collect();
        rates_panel(
            &panels[2],
            "acceptance",
            &acceptance,
            ["Metropolis-Hastings", "HMC (latent)"],
            epochs,
        )?;
        let observable: Vec<(f64, f64, f64)> = self
            .measurements
            .iter()
            .map(|m| {
                let (mean, err) = m.observable(self.observable);
                (m.epoch as f64, mean, err)
            })
            .collect();
        observable_panel(
            &panels[3],
            &format!(
                "{} (Metropolis-Hastings)",
                format!("{:?}", self.observable).to_lowercase()
            ),
            &observable,
            self.exact,
            epochs,
        )
    }
}

impl Monitor {
    /// The x range of the panels: the last epoch recorded (at least 1).
    pub fn epochs(&self) -> f64 {
        self.train.last().map_or(1.0, |r| r.epoch as f64).max(1.0)
    }
}

const PANEL_FONT: (&str, u32) = ("sans-serif", 14);

/// The variational free energy per epoch with the exact bound `-ln Z_x`.
pub fn free_energy_panel<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    train: &[EpochStats],
    bound: f64,
    epochs: f64,
) -> Result<(), String> {
    let err = |e: DrawingAreaErrorKind<DB::ErrorType>| e.to_string();
    let font = PANEL_FONT;
    let (lo, hi) = range(train.iter().map(|r| r.f).chain([bound]));
    let mut c = ChartBuilder::on(area)
        .caption("free energy F (units of T)", font)
        .margin(8)
        .x_label_area_size(28)
        .y_label_area_size(60)
        .build_cartesian_2d(0.0..epochs, lo..hi)
        .map_err(err)?;
    c.configure_mesh()
        .x_desc("epoch")
        .x_labels(6)
        .draw()
        .map_err(err)?;
    c.draw_series(LineSeries::new(
        train.iter().map(|r| (r.epoch as f64, r.f)),
        &BLUE,
    ))
    .map_err(err)?
    .label("F")
    .legend(|(x, y)| PathElement::new([(x, y), (x + 15, y)], BLUE));
    c.draw_series(LineSeries::new(
        [(0.0, bound), (epochs, bound)],
        RED.stroke_width(2),
    ))
    .map_err(err)?
    .label("-ln Z_x (exact)")
    .legend(|(x, y)| PathElement::new([(x, y), (x + 15, y)], RED));
    c.configure_series_labels()
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()
        .map_err(err)?;
    Ok(())
}

/// The relative error `(F + ln Z_x) / ln Z_x` per epoch on a log axis.
pub fn relative_error_panel<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    train: &[EpochStats],
    epochs: f64,
) -> Result<(), String> {
    let err = |e: DrawingAreaErrorKind<DB::ErrorType>| e.to_string();
    let rel: Vec<(f64, f64)> = train
        .iter()
        .filter(|r| r.relative_error > 0.0)
        .map(|r| (r.epoch as f64, r.relative_error))
        .collect();
    let (rlo, rhi) = rel.iter().fold((f64::INFINITY, 0.0f64), |(a, b), r| {
        (a.min(r.1), b.max(r.1))
    });
    let (rlo, rhi) = if rel.is_empty() {
        (1e-4, 1.0)
    } else {
        (rlo * 0.8, rhi * 1.25)
    };
    let mut c = ChartBuilder::on(area)
        .caption("relative error (F + ln Z_x) / ln Z_x", PANEL_FONT)
        .margin(8)
        .x_label_area_size(28)
        .y_label_area_size(60)
        .build_cartesian_2d(0.0..epochs, (rlo..rhi).log_scale())
        .map_err(err)?;
    c.configure_mesh()
        .x_desc("epoch")
        .x_labels(6)
        .y_label_formatter(&|v| format!("{:.2}%", 100.0 * v))
        .draw()
        .map_err(err)?;
    c.draw_series(LineSeries::new(rel, &BLUE)).map_err(err)?;
    Ok(())
}

/// Two rates in [0, 1] per measurement, `(epoch, first, second)` (a non-finite second value is
/// left out): acceptance of MH and HMC, or MH acceptance and the effective sample size.
pub fn rates_panel<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    title: &str,
    rates: &[(f64, f64, f64)],
    labels: [&str; 2],
    epochs: f64,
) -> Result<(), String> {
    let err = |e: DrawingAreaErrorKind<DB::ErrorType>| e.to_string();
    let mut c = ChartBuilder::on(area)
        .caption(title, PANEL_FONT)
        .margin(8)
        .x_label_area_size(28)
        .y_label_area_size(60)
        .build_cartesian_2d(0.0..epochs, 0.0..1.05)
        .map_err(err)?;
    c.configure_mesh()
        .x_desc("epoch")
        .x_labels(6)
        .draw()
        .map_err(err)?;
    let first: Vec<(f64, f64)> = rates.iter().map(|a| (a.0, a.1)).collect();
    let second: Vec<(f64, f64)> = rates
        .iter()
        .filter(|a| a.2.is_finite())
        .map(|a| (a.0, a.2))
        .collect();
    for (points, colour, label) in [(first, BLUE, labels[0]), (second, GREEN, labels[1])] {
        c.draw_series(LineSeries::new(points.clone(), &colour))
            .map_err(err)?
            .label(label)
            .legend(move |(x, y)| PathElement::new([(x, y), (x + 15, y)], colour));
        c.draw_series(points.iter().map(|&p| Circle::new(p, 3, colour.filled())))
            .map_err(err)?;
    }
    c.configure_series_labels()
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()
        .map_err(err)?;
    Ok(())
}

/// An observable per measurement, `(epoch, mean, stderr)`, with error bars and its exact value.
pub fn observable_panel<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    title: &str,
    points: &[(f64, f64, f64)],
    exact: Option<f64>,
    epochs: f64,
) -> Result<(), String> {
    let err = |e: DrawingAreaErrorKind<DB::ErrorType>| e.to_string();
    let (olo, ohi) = range(
        points
            .iter()
            .flat_map(|o| [o.1 - o.2, o.1 + o.2])
            .chain(exact),
    );
    let mut c = ChartBuilder::on(area)
        .caption(title, PANEL_FONT)
        .margin(8)
        .x_label_area_size(28)
        .y_label_area_size(60)
        .build_cartesian_2d(0.0..epochs, olo..ohi)
        .map_err(err)?;
    c.configure_mesh()
        .x_desc("epoch")
        .x_labels(6)
        .draw()
        .map_err(err)?;
    c.draw_series(
        points
            .iter()
            .map(|o| ErrorBar::new_vertical(o.0, o.1 - o.2, o.1, o.1 + o.2, BLUE.filled(), 6)),
    )
    .map_err(err)?;
    if let Some(x) = exact {
        c.draw_series(LineSeries::new(
            [(0.0, x), (epochs, x)],
            RED.stroke_width(2),
        ))
        .map_err(err)?
        .label(format!("exact {x:.6}"))
        .legend(|(x, y)| PathElement::new([(x, y), (x + 15, y)], RED));
        c.configure_series_labels()
            .background_style(WHITE.mix(0.8))
            .border_style(BLACK)
            .draw()
            .map_err(err)?;
    }
    Ok(())
}

/// Relative error against temperature, one line per MERA depth, with error bars (the sweep's
/// figure, as the original's `paperPlot/plotCore.py`). `points` are `(depth, T, error, stderr)`.
pub struct SweepFigure<'a> {
    pub points: &'a [(usize, f64, f64, f64)],
    pub title: String,
}

impl Figure for SweepFigure<'_> {
    fn draw<DB: DrawingBackend>(&self, area: &DrawingArea<DB, Shift>) -> Result<(), String> {
        let err = |e: DrawingAreaErrorKind<DB::ErrorType>| e.to_string();
        area.fill(&WHITE).map_err(err)?;
        let (tlo, thi) = range(self.points.iter().map(|p| p.1));
        let (elo, ehi) = range(
            self.points
                .iter()
                .flat_map(|p| [p.2 - p.3, p.2 + p.3])
                .chain([0.0]),
        );
        let mut c = ChartBuilder::on(area)
            .caption(&self.title, ("sans-serif", 16))
            .margin(12)
            .x_label_area_size(36)
            .y_label_area_size(70)
            .build_cartesian_2d(tlo..thi, elo..ehi)
            .map_err(err)?;
        c.configure_mesh()
            .x_desc("T")
            .y_desc("relative error")
            .y_label_formatter(&|v| format!("{:.2}%", 100.0 * v))
            .draw()
            .map_err(err)?;
        let mut depths: Vec<usize> = self.points.iter().map(|p| p.0).collect();
        depths.sort();
        depths.dedup();
        for (i, depth) in depths.iter().enumerate() {
            let colour = Palette99::pick(i).to_rgba();
            let mut line: Vec<(f64, f64, f64)> = self
                .points
                .iter()
                .filter(|p| p.0 == *depth)
                .map(|p| (p.1, p.2, p.3))
                .collect();
            line.sort_by(|a, b| a.0.total_cmp(&b.0));
            c.draw_series(LineSeries::new(
                line.iter().map(|p| (p.0, p.1)),
                colour.stroke_width(2),
            ))
            .map_err(err)?
            .label(format!("depth {depth}"))
            .legend(move |(x, y)| PathElement::new([(x, y), (x + 15, y)], colour.stroke_width(2)));
            c.draw_series(line.iter().map(|p| {
                ErrorBar::new_vertical(p.0, p.1 - p.2, p.1, p.1 + p.2, colour.filled(), 8)
            }))
            .map_err(err)?;
        }
        c.configure_series_labels()
            .background_style(WHITE.mix(0.8))
            .border_style(BLACK)
            .draw()
            .map_err(err)?;
        Ok(())
    }
}
