//! Figures, drawn on any plotters backend: PNG and SVG natively, a canvas in the browser.
//!
//! Heat maps (receptive fields, mutual information, a sample at every RG scale) each with a
//! colour bar that gives its range: diverging colours around zero, or sequential from zero.
//! Line charts with whole-epoch ticks and their legends in a strip above the data.

use plotters::coord::Shift;
use plotters::prelude::*;

use crate::analysis::{ReceptiveField, RgPicture};
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

/// Width in pixels of a heat map's colour bar with its labels.
pub const BAR_WIDTH: u32 = 58;
/// Height in pixels of a legend strip above a chart.
const LEGEND_HEIGHT: u32 = 18;
/// The quantile of `|dx/dz|` off the self-term at which a receptive field's colours saturate:
/// the self-term (and the few largest neighbours) are clipped, so the tails show.
pub const FIELD_QUANTILE: f64 = 0.95;
/// Colour of a heat-map cell without a value.
const NO_VALUE: RGBColor = RGBColor(225, 225, 225);

/// A heat map: values on a `rows x cols` grid with a colour bar that gives its range.
#[derive(Debug, Clone, PartialEq)]
pub struct Heatmap<'a> {
    /// Row-major values; NaN is a cell without a value (drawn light grey).
    pub values: &'a [f64],
    pub rows: usize,
    pub cols: usize,
    pub caption: String,
    pub scale: Scale,
    /// The colours reach `|v| = range`; larger values take the colour of the scale's end and
    /// the colour bar's end labels say so (`>=`).
    pub range: f64,
    /// A cell drawn apart, outlined in black (the self-term of a receptive field).
    pub marked: Option<usize>,
}

impl<'a> Heatmap<'a> {
    /// A heat map whose colours span all of `values` (`max |v|`).
    pub fn new(values: &'a [f64], rows: usize, cols: usize, caption: String, scale: Scale) -> Self {
        Self {
            values,
            rows,
            cols,
            caption,
            scale,
            range: abs_quantile(values, None, 1.0),
            marked: None,
        }
    }

    /// The receptive field of one latent site: a symmetric scale saturating at the
    /// [`FIELD_QUANTILE`] of `|dx/dz|` off the self-term, the self-term outlined (its value
    /// belongs in the caption).
    pub fn field(f: &'a ReceptiveField, lattice: Lattice, caption: String) -> Self {
        let (rows, cols) = grid(lattice);
        let off = abs_quantile(&f.values, Some(f.site), FIELD_QUANTILE);
        Self {
            range: if off > 0.0 {
                off
            } else {
                abs_quantile(&f.values, None, 1.0)
            },
            marked: Some(f.site),
            ..Self::new(&f.values, rows, cols, caption, Scale::Diverging)
        }
    }

    /// Whether some value lies beyond the colour range.
    pub fn clipped(&self) -> bool {
        self.values
            .iter()
            .any(|v| v.abs() > self.range * (1.0 + 1e-12))
    }
}

/// Rows and columns of a lattice drawn as a grid (1D: one row).
pub fn grid(lattice: Lattice) -> (usize, usize) {
    if lattice.dim() == 2 {
        (lattice.side(), lattice.side())
    } else {
        (1, lattice.side())
    }
}

/// The `q` quantile (0 to 1, nearest rank) of `|v|` over the finite `values`, leaving out the
/// entry `skip`; 0 when there are none.
pub fn abs_quantile(values: &[f64], skip: Option<usize>, q: f64) -> f64 {
    let mut a: Vec<f64> = values
        .iter()
        .enumerate()
        .filter(|&(i, v)| Some(i) != skip && v.is_finite())
        .map(|(_, v)| v.abs())
        .collect();
    if a.is_empty() {
        return 0.0;
    }
    a.sort_by(f64::total_cmp);
    a[((a.len() - 1) as f64 * q.clamp(0.0, 1.0)).round() as usize]
}

/// A number for a tick or colour-bar label: three decimals, or three significant digits in
/// scientific notation when it is small.
pub fn short(v: f64) -> String {
    if v == 0.0 || v.abs() >= 0.01 {
        format!("{v:.3}")
    } else {
        format!("{v:.2e}")
    }
}

/// Epoch tick labels: whole epochs only (a tick between two epochs gets no label).
pub fn epoch_label(v: &f64) -> String {
    if (v - v.round()).abs() <= 1e-9 * v.abs().max(1.0) {
        format!("{}", v.round() as i64)
    } else {
        String::new()
    }
}

/// Draws `map`: the caption, the grid with square cells, and the colour bar on its right.
pub fn heatmap<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    map: &Heatmap,
) -> Result<(), String> {
    let err = |e: DrawingAreaErrorKind<DB::ErrorType>| e.to_string();
    let area = area.titled(&map.caption, ("sans-serif", 13)).map_err(err)?;
    let (w, h) = area.dim_in_pixel();
    let (rows, cols) = (map.rows.max(1), map.cols.max(1));
    let cell = ((w.saturating_sub(BAR_WIDTH + 8)) as f64 / cols as f64)
        .min((h.saturating_sub(8)) as f64 / rows as f64)
        .max(1.0);
    let (pw, ph) = ((cell * cols as f64) as u32, (cell * rows as f64) as u32);
    let plot = area.clone().shrink((4, 4), (pw, ph));
    // The pixel corner of row i, column j.
    let corner = |i: usize, j: usize| ((j as f64 * cell) as i32, (i as f64 * cell) as i32);
    for r in 0..rows {
        for c in 0..cols {
            let v = map.values[r * cols + c];
            let fill = if v.is_finite() {
                colour(map.scale, v, map.range)
            } else {
                NO_VALUE
            };
            plot.draw(&Rectangle::new(
                [corner(r, c), corner(r + 1, c + 1)],
                fill.filled(),
            ))
            .map_err(err)?;
        }
    }
    if let Some(m) = map.marked.filter(|&m| m < rows * cols) {
        let (r, c) = (m / cols, m % cols);
        plot.draw(&Rectangle::new(
            [corner(r, c), corner(r + 1, c + 1)],
            BLACK.stroke_width(2),
        ))
        .map_err(err)?;
    }
    plot.draw(&Rectangle::new(
        [(0, 0), (pw as i32 - 1, ph as i32 - 1)],
        BLACK.mix(0.5).stroke_width(1),
    ))
    .map_err(err)?;
    let bar = area.shrink(
        (pw + 10, 4),
        (BAR_WIDTH.min(w.saturating_sub(pw + 10)), ph.max(40)),
    );
    colour_bar(&bar, map.scale, map.range, map.clipped())
}

/// A vertical colour bar of `scale` over its range (diverging: `-range` to `range`, sequential:
/// 0 to `range`) with its end values (`>=` and `<=` when values beyond are clipped) and zero.
fn colour_bar<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    scale: Scale,
    range: f64,
    clipped: bool,
) -> Result<(), String> {
    let err = |e: DrawingAreaErrorKind<DB::ErrorType>| e.to_string();
    let (_, h) = area.dim_in_pixel();
    let (top, bottom, x0, x1) = (6i32, h as i32 - 6, 0i32, 10i32);
    let lo = if scale == Scale::Diverging {
        -range
    } else {
        0.0
    };
    let steps = 48;
    let y_of = |t: f64| bottom - ((bottom - top) as f64 * t).round() as i32;
    for s in 0..steps {
        let t = (s as f64 + 0.5) / steps as f64;
        let v = lo + (range - lo) * t;
        area.draw(&Rectangle::new(
            [
                (x0, y_of((s + 1) as f64 / steps as f64)),
                (x1, y_of(s as f64 / steps as f64)),
            ],
            colour(scale, v, range).filled(),
        ))
        .map_err(err)?;
    }
    area.draw(&Rectangle::new(
        [(x0, top), (x1, bottom)],
        BLACK.stroke_width(1),
    ))
    .map_err(err)?;
    let font = ("sans-serif", 11).into_font();
    let (more, less) = if clipped {
        ("\u{2265}", "\u{2264}")
    } else {
        ("", "")
    };
    let mut labels = vec![(1.0, format!("{more}{}", short(range)))];
    match scale {
        Scale::Diverging => {
            labels.push((0.5, "0".to_string()));
            labels.push((0.0, format!("{less}{}", short(-range))));
        }
        Scale::Sequential => labels.push((0.0, "0".to_string())),
    }
    for (t, text) in labels {
        area.draw(&PathElement::new([(x1, y_of(t)), (x1 + 3, y_of(t))], BLACK))
            .map_err(err)?;
        area.draw(&Text::new(text, (x1 + 5, y_of(t) - 6), font.clone()))
            .map_err(err)?;
    }
    Ok(())
}

/// Draws a row of legend entries (a short line in the series' colour, then its label) in a strip
/// at the top of `area` and returns the area below it, so that a legend never covers data.
fn with_legend<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    entries: &[(String, RGBColor)],
) -> Result<DrawingArea<DB, Shift>, String> {
    let err = |e: DrawingAreaErrorKind<DB::ErrorType>| e.to_string();
    if entries.is_empty() {
        return Ok(area.clone());
    }
    let (strip, rest) = area.split_vertically(LEGEND_HEIGHT);
    let font = ("sans-serif", 12).into_font();
    let mut x = 64i32;
    for (label, colour) in entries {
        let y = LEGEND_HEIGHT as i32 / 2;
        strip
            .draw(&PathElement::new(
                [(x, y), (x + 18, y)],
                colour.stroke_width(2),
            ))
            .map_err(err)?;
        strip
            .draw(&Text::new(label.clone(), (x + 22, y - 7), font.clone()))
            .map_err(err)?;
        let (tw, _) = strip
            .estimate_text_size(label, &TextStyle::from(font.clone()))
            .map_err(err)?;
        x += 22 + tw as i32 + 18;
    }
    Ok(rest)
}

/// The receptive-field figure: one row of panels per RG level (`fields` grouped by level, each
/// with a label), each panel `dx/dz_k` on the lattice with its own symmetric colour scale
/// saturating at the [`FIELD_QUANTILE`] off the self-term (outlined, its value in the caption).
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
            "Receptive fields dx/dz_k of latent sites k (rows: RG level; self-term outlined)",
            ("sans-serif", 16),
        )
        .map_err(|e| e.to_string())?;
    let panels = area.split_evenly((levels.len(), cols));
    for (r, level) in levels.iter().enumerate() {
        for (c, (label, f)) in fields.iter().filter(|(_, f)| f.level == *level).enumerate() {
            let (row, col) = lattice.coords(f.site);
            let caption = format!(
                "level {level}, {label} ({row},{col}); self {}",
                short(f.values[f.site])
            );
            heatmap(
                &panels[r * cols + c].margin(4, 4, 4, 4),
                &Heatmap::field(f, lattice, caption),
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
        heatmap(
            &cell.margin(4, 4, 4, 4),
            &Heatmap::new(m, vars, vars, caption.clone(), Scale::Sequential),
        )?;
    }
    Ok(())
}

/// One sample at every scale of the hierarchy ([`RgPicture`]): the top row the configuration
/// and the variables that go on after each level (sublattices of side L/2, L/4, ...), the
/// bottom row the latent variables decimated at each level, drawn on that level's lattice (the
/// sites that go on left grey). Each panel has its own symmetric colour scale.
pub fn rg_figure<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    picture: &RgPicture,
) -> Result<(), String> {
    let err = |e: DrawingAreaErrorKind<DB::ErrorType>| e.to_string();
    area.fill(&WHITE).map_err(err)?;
    let columns = picture.levels.len() + 1;
    let (top, bottom) = area.split_vertically(area.dim_in_pixel().1 / 2);
    let top = top
        .titled("going on to the next level", ("sans-serif", 13))
        .map_err(err)?;
    let bottom = bottom
        .titled(
            "latent variables decimated at each level",
            ("sans-serif", 13),
        )
        .map_err(err)?;
    let upper = top.split_evenly((1, columns));
    let lower = bottom.split_evenly((1, columns));
    let d2 = picture.lattice.dim() == 2;
    let shape = |side: usize| if d2 { (side, side) } else { (1, side) };
    let l = picture.lattice.side();
    let (rows, cols) = shape(l);
    heatmap(
        &upper[0].margin(2, 2, 2, 2),
        &Heatmap::new(
            &picture.x,
            rows,
            cols,
            format!("x, {l}x{l}"),
            Scale::Diverging,
        ),
    )?;
    for (k, level) in picture.levels.iter().enumerate() {
        let side = level.side / 2;
        let (rows, cols) = shape(side.max(1));
        let caption = if d2 {
            format!("after level {k}, {side}x{side}")
        } else {
            format!("after level {k}, {side}")
        };
        heatmap(
            &upper[k + 1].margin(2, 2, 2, 2),
            &Heatmap::new(&level.kept, rows, cols, caption, Scale::Diverging),
        )?;
        let (rows, cols) = shape(level.side);
        heatmap(
            &lower[k].margin(2, 2, 2, 2),
            &Heatmap::new(
                &level.decimated,
                rows,
                cols,
                format!("level {k}"),
                Scale::Diverging,
            ),
        )?;
    }
    Ok(())
}

/// [`rg_figure`] as a [`Figure`].
pub struct RgFigure<'a>(pub &'a RgPicture);

impl Figure for RgFigure<'_> {
    fn draw<DB: DrawingBackend>(&self, area: &DrawingArea<DB, Shift>) -> Result<(), String> {
        rg_figure(area, self.0)
    }
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

/// A grid of spin configurations (black `+1`, white `-1`, with that key below), up to
/// `rows x cols` of them; 1D configurations are stacked as the rows of one panel.
pub fn spin_grid<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    lattice: Lattice,
    spins: &[f64],
    title: &str,
) -> Result<(), String> {
    let err = |e: DrawingAreaErrorKind<DB::ErrorType>| e.to_string();
    area.fill(&WHITE).map_err(err)?;
    let area = area.titled(title, ("sans-serif", 16)).map_err(err)?;
    let (h, font) = (area.dim_in_pixel().1, ("sans-serif", 12).into_font());
    let (area, key) = area.split_vertically(h.saturating_sub(LEGEND_HEIGHT));
    for (i, (fill, label)) in [(BLACK, "spin +1"), (WHITE, "spin -1")].iter().enumerate() {
        let x = 8 + 90 * i as i32;
        key.draw(&Rectangle::new([(x, 3), (x + 12, 15)], fill.filled()))
            .map_err(err)?;
        key.draw(&Rectangle::new(
            [(x, 3), (x + 12, 15)],
            BLACK.stroke_width(1),
        ))
        .map_err(err)?;
        key.draw(&Text::new(*label, (x + 17, 2), font.clone()))
            .map_err(err)?;
    }
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
    let area = area
        .titled("free energy F (units of T)", font)
        .map_err(err)?;
    let area = with_legend(
        &area,
        &[("F".into(), BLUE), ("-ln Z_x (exact)".into(), RED)],
    )?;
    let mut c = ChartBuilder::on(&area)
        .margin(8)
        .x_label_area_size(36)
        .y_label_area_size(60)
        .build_cartesian_2d(0.0..epochs, lo..hi)
        .map_err(err)?;
    c.configure_mesh()
        .x_desc("epoch")
        .x_labels(6)
        .x_label_formatter(&epoch_label)
        .draw()
        .map_err(err)?;
    c.draw_series(LineSeries::new(
        train.iter().map(|r| (r.epoch as f64, r.f)),
        &BLUE,
    ))
    .map_err(err)?;
    c.draw_series(LineSeries::new(
        [(0.0, bound), (epochs, bound)],
        RED.stroke_width(2),
    ))
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
    let area = area
        .titled("relative error (F + ln Z_x) / ln Z_x", PANEL_FONT)
        .map_err(err)?;
    let mut c = ChartBuilder::on(&area)
        .margin(8)
        .x_label_area_size(36)
        .y_label_area_size(60)
        .build_cartesian_2d(0.0..epochs, (rlo..rhi).log_scale())
        .map_err(err)?;
    c.configure_mesh()
        .x_desc("epoch")
        .x_labels(6)
        .x_label_formatter(&epoch_label)
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
    let area = area.titled(title, PANEL_FONT).map_err(err)?;
    let area = with_legend(
        &area,
        &[
            (labels[0].to_string(), BLUE),
            (labels[1].to_string(), GREEN),
        ],
    )?;
    let mut c = ChartBuilder::on(&area)
        .margin(8)
        .x_label_area_size(36)
        .y_label_area_size(60)
        .build_cartesian_2d(0.0..epochs, 0.0..1.05)
        .map_err(err)?;
    c.configure_mesh()
        .x_desc("epoch")
        .x_labels(6)
        .x_label_formatter(&epoch_label)
        .draw()
        .map_err(err)?;
    let first: Vec<(f64, f64)> = rates.iter().map(|a| (a.0, a.1)).collect();
    let second: Vec<(f64, f64)> = rates
        .iter()
        .filter(|a| a.2.is_finite())
        .map(|a| (a.0, a.2))
        .collect();
    for (points, colour) in [(first, BLUE), (second, GREEN)] {
        c.draw_series(LineSeries::new(points.clone(), &colour))
            .map_err(err)?;
        c.draw_series(points.iter().map(|&p| Circle::new(p, 3, colour.filled())))
            .map_err(err)?;
    }
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
    let area = area.titled(title, PANEL_FONT).map_err(err)?;
    // Short labels: the panels are often half a canvas wide.
    let mut entries = vec![("sampled".to_string(), BLUE)];
    if let Some(x) = exact {
        entries.push((format!("exact {x:.4}"), RED));
    }
    let area = with_legend(&area, &entries)?;
    let mut c = ChartBuilder::on(&area)
        .margin(8)
        .x_label_area_size(36)
        .y_label_area_size(60)
        .build_cartesian_2d(0.0..epochs, olo..ohi)
        .map_err(err)?;
    c.configure_mesh()
        .x_desc("epoch")
        .x_labels(6)
        .x_label_formatter(&epoch_label)
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
        .map_err(err)?;
    }
    Ok(())
}

/// One line of a [`SweepFigure`]: relative errors against temperature.
#[derive(Debug, Clone, PartialEq)]
pub struct SweepLine {
    /// Its legend entry.
    pub label: String,
    /// `(T, relative error, its standard error)`, by temperature; an error of 0 draws no bar.
    pub points: Vec<(f64, f64, f64)>,
    /// Published numbers to compare with, drawn in black (the others in palette colours).
    pub reference: bool,
}

/// Relative error against temperature, one line each (per MERA depth, per recipe, the paper's
/// numbers), with error bars: the sweep's figure, as the original's `paperPlot/plotCore.py`.
pub struct SweepFigure<'a> {
    pub lines: &'a [SweepLine],
    pub title: String,
}

impl Figure for SweepFigure<'_> {
    fn draw<DB: DrawingBackend>(&self, area: &DrawingArea<DB, Shift>) -> Result<(), String> {
        let err = |e: DrawingAreaErrorKind<DB::ErrorType>| e.to_string();
        area.fill(&WHITE).map_err(err)?;
        let points = || self.lines.iter().flat_map(|l| &l.points);
        let (tlo, thi) = range(points().map(|p| p.0));
        let (elo, ehi) = range(points().flat_map(|p| [p.1 - p.2, p.1 + p.2]).chain([0.0]));
        let mut palette = Palette99::COLORS.iter().cycle();
        let colours: Vec<RGBColor> = self
            .lines
            .iter()
            .map(|l| match l.reference {
                true => BLACK,
                false => palette.next().map_or(BLACK, |&(r, g, b)| RGBColor(r, g, b)),
            })
            .collect();
        let area = area.titled(&self.title, ("sans-serif", 16)).map_err(err)?;
        let entries: Vec<(String, RGBColor)> = self
            .lines
            .iter()
            .zip(&colours)
            .map(|(l, c)| (l.label.clone(), *c))
            .collect();
        let area = with_legend(&area, &entries)?;
        let mut c = ChartBuilder::on(&area)
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
        for (line, &colour) in self.lines.iter().zip(&colours) {
            let mut points = line.points.clone();
            points.sort_by(|a, b| a.0.total_cmp(&b.0));
            c.draw_series(LineSeries::new(
                points.iter().map(|p| (p.0, p.1)),
                colour.stroke_width(2),
            ))
            .map_err(err)?;
            c.draw_series(
                points
                    .iter()
                    .map(|p| Circle::new((p.0, p.1), 3, colour.filled())),
            )
            .map_err(err)?;
            c.draw_series(points.iter().filter(|p| p.2 > 0.0).map(|p| {
                ErrorBar::new_vertical(p.0, p.1 - p.2, p.1, p.1 + p.2, colour.filled(), 8)
            }))
            .map_err(err)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn epoch_ticks_are_whole_numbers() {
        assert_eq!(epoch_label(&20.0), "20");
        assert_eq!(epoch_label(&0.0), "0");
        assert_eq!(epoch_label(&2.5), "");
        assert_eq!(epoch_label(&0.2), "");
        assert_eq!(epoch_label(&4999.999999999999), "5000");
    }

    #[test]
    fn quantiles_leave_out_the_skipped_entry_and_non_finite_values() {
        let v = [10.0, -1.0, 0.5, f64::NAN, 2.0];
        assert_eq!(abs_quantile(&v, None, 1.0), 10.0);
        assert_eq!(abs_quantile(&v, Some(0), 1.0), 2.0);
        assert_eq!(abs_quantile(&v, Some(0), 0.0), 0.5);
        assert_eq!(abs_quantile(&[], None, 0.5), 0.0);
    }

    /// A receptive field with a self-term of 1, neighbours of -0.2 and tails of 0.01: its scale
    /// saturates at the neighbours, far below the self-term, so that the tails are coloured.
    #[test]
    fn a_receptive_field_scale_shows_the_tails() {
        let lattice = Lattice::new(8, 2).unwrap();
        let site = lattice.index(3, 3);
        let mut values = vec![0.01; 64];
        values[site] = 1.0;
        for (r, c) in [(2, 3), (4, 3), (3, 2), (3, 4)] {
            values[lattice.index(r, c)] = -0.2;
        }
        let f = ReceptiveField {
            site,
            level: 0,
            values,
        };
        let map = Heatmap::field(&f, lattice, String::new());
        assert!(map.range >= 0.01 && map.range <= 0.2, "range {}", map.range);
        assert!(map.clipped());
        assert_eq!(map.marked, Some(site));
        let tail = colour(map.scale, 0.01, map.range);
        // Five times as far from white as on the self-term's scale (255 - 243 against 255 - 253).
        assert!(
            tail.1 <= 245,
            "a tail of 0.01 is drawn {tail:?}, nearly white"
        );
        // On the plain max |v| scale the same tail would be almost white.
        let plain = Heatmap::new(&f.values, 8, 8, String::new(), Scale::Diverging);
        assert!(!plain.clipped());
        assert!(colour(plain.scale, 0.01, plain.range).1 > 250);
    }

    /// A heat map draws its colour bar: the four values give three colours besides white, the
    /// bar's gradient dozens more.
    #[test]
    fn heat_maps_draw_a_colour_bar() {
        register_font();
        let (w, h) = (300u32, 200u32);
        let mut buf = vec![0u8; (w * h * 3) as usize];
        {
            let root = BitMapBackend::with_buffer(&mut buf, (w, h)).into_drawing_area();
            root.fill(&WHITE).unwrap();
            let values = [1.0, -1.0, 0.5, 0.0];
            heatmap(
                &root,
                &Heatmap::new(&values, 2, 2, "map".into(), Scale::Diverging),
            )
            .unwrap();
            root.present().unwrap();
        }
        // Not counting greys (black, white and the anti-aliased text).
        let mut colours: Vec<&[u8]> = buf
            .chunks(3)
            .filter(|p| p[0] != p[1] || p[1] != p[2])
            .collect();
        colours.sort();
        colours.dedup();
        assert!(colours.len() > 30, "{} colours", colours.len());
    }
}
