//! The live panels: the figures of `neuralrg::plot` drawn on canvases with plotters-canvas.

use leptos::html::Canvas;
use leptos::prelude::*;
use neuralrg::analysis::ReceptiveField;
use neuralrg::lattice::Lattice;
use neuralrg::plot::{
    self, Heatmap, free_energy_panel, observable_panel, rates_panel, relative_error_panel,
};
use neuralrg::train::EpochStats;
use plotters::coord::Shift;
use plotters::prelude::*;
use plotters_canvas::CanvasBackend;

use crate::lab::Measurement;

/// The canvases of the page.
#[derive(Clone, Copy)]
pub struct Canvases {
    pub loss: NodeRef<Canvas>,
    pub samples: NodeRef<Canvas>,
    pub rates: NodeRef<Canvas>,
    pub observables: NodeRef<Canvas>,
    pub field: NodeRef<Canvas>,
    pub mi: NodeRef<Canvas>,
    pub rg: NodeRef<Canvas>,
}

impl Canvases {
    pub fn new() -> Self {
        Self {
            loss: NodeRef::new(),
            samples: NodeRef::new(),
            rates: NodeRef::new(),
            observables: NodeRef::new(),
            field: NodeRef::new(),
            mi: NodeRef::new(),
            rg: NodeRef::new(),
        }
    }
}

impl Default for Canvases {
    fn default() -> Self {
        Self::new()
    }
}

/// Draws on a canvas of the page (nothing when it is not mounted).
pub fn draw(
    canvas: NodeRef<Canvas>,
    figure: impl FnOnce(&DrawingArea<CanvasBackend, Shift>) -> Result<(), String>,
) -> Result<(), String> {
    let Some(element) = canvas.get_untracked() else {
        return Ok(());
    };
    let backend =
        CanvasBackend::with_canvas_object(element).ok_or("the canvas has no 2D context")?;
    let area = backend.into_drawing_area();
    area.fill(&WHITE).map_err(|e| e.to_string())?;
    figure(&area)?;
    area.present().map_err(|e| e.to_string())
}

/// Blanks these canvases (a panel with nothing to show: a new session).
pub fn blank(canvases: &[NodeRef<Canvas>]) -> Result<(), String> {
    for &canvas in canvases {
        draw(canvas, |_| Ok(()))?;
    }
    Ok(())
}

/// Free energy against the exact bound, and the relative error.
pub fn loss(c: Canvases, train: &[EpochStats], bound: f64) -> Result<(), String> {
    let epochs = train.last().map_or(1.0, |r| r.epoch as f64).max(1.0);
    draw(c.loss, |area| {
        let (top, bottom) = area.split_vertically(area.dim_in_pixel().1 / 2);
        free_energy_panel(&top, train, bound, epochs)?;
        relative_error_panel(&bottom, train, epochs)
    })
}

/// The sample grid, the MH rates and the observables against their exact values, over
/// `epochs` epochs.
pub fn measurements(
    c: Canvases,
    epochs: f64,
    measurements: &[Measurement],
    lattice: Lattice,
    exact_energy: f64,
    exact_m2: Option<f64>,
) -> Result<(), String> {
    let Some(last) = measurements.last() else {
        return Ok(());
    };
    let epochs = epochs.max(1.0);
    draw(c.samples, |area| {
        plot::spin_grid(
            area,
            lattice,
            &last.spins,
            &format!("samples from the flow, epoch {}", last.epoch),
        )
    })?;
    draw(c.rg, |area| plot::rg_figure(area, &last.rg))?;
    let rates: Vec<(f64, f64, f64)> = measurements
        .iter()
        .map(|m| (m.epoch as f64, m.acceptance, m.ess))
        .collect();
    draw(c.rates, |area| {
        rates_panel(
            area,
            "independent Metropolis-Hastings",
            &rates,
            ["acceptance rate", "effective sample size / n"],
            epochs,
        )
    })?;
    let series = |pick: fn(&Measurement) -> (f64, f64)| -> Vec<(f64, f64, f64)> {
        measurements
            .iter()
            .map(|m| {
                let (mean, err) = pick(m);
                (m.epoch as f64, mean, err)
            })
            .collect()
    };
    draw(c.observables, |area| {
        let (left, right) = area.split_horizontally(area.dim_in_pixel().0 / 2);
        observable_panel(
            &left,
            "energy per site (MH)",
            &series(|m| m.energy),
            Some(exact_energy),
            epochs,
        )?;
        observable_panel(&right, "<m^2> (MH)", &series(|m| m.m2), exact_m2, epochs)
    })
}

/// The receptive field of one latent site.
pub fn field(c: Canvases, lattice: Lattice, f: &ReceptiveField) -> Result<(), String> {
    let (r, col) = lattice.coords(f.site);
    let caption = format!(
        "dx/dz at ({r},{col}), level {}; self {}",
        f.level,
        plot::short(f.values[f.site])
    );
    draw(c.field, |area| {
        plot::heatmap(area, &Heatmap::field(f, lattice, caption))
    })
}

/// Mutual information of the latent and physical variables.
pub fn mutual_information(c: Canvases, n: usize, z: Vec<f64>, x: Vec<f64>) -> Result<(), String> {
    draw(c.mi, |area| {
        plot::mi_figure(
            area,
            &[("latent z".to_string(), z), ("physical x".to_string(), x)],
            n,
        )
    })
}
