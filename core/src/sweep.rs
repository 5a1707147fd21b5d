//! A sweep: a grid of temperatures x MERA depths trained from one settings file, as the
//! original's `core.py` + `setting.py` + `paperPlot/plotCore.py`. This module holds its plan
//! (every run's parameters, validated before anything trains), which runs still need training,
//! shards of the grid for several machines, and the results table and figure rebuilt from the
//! finished runs; `sweep` (the command) reads the file and runs the plan.
//!
//! ```toml
//! folder = "sweeps/L8"            # one run folder per (T, depth) inside
//! L = 8
//! d = 2                           # optional, default 2
//! temperatures = [2.0, 2.269185314213022, 2.5]
//! depths = [1, 2, 3]              # optional, default: every depth 1..=log2 L
//! epochs = 500
//! save_period = 50                # optional
//! skip_hmc = true                 # optional, default true (no measurements during training)
//! recipe = "neuralrg"             # optional: "neuralrg" (the default) or "paper", the
//!                                 # optimizer's defaults and warm_start's (train --recipe)
//! warm_start = true               # optional (the recipe's): each temperature's runs start from
//!                                 # those of the nearest temperature listed before it
//!
//! [train]                         # optional: any training setting by its parameters.json
//! nlayers = 10                    # name; the others are the paper's network and the recipe's
//! nmlp = 3                        # optimizer
//! nhidden = 10
//! nrepeat = 1
//! batch = 128
//! lr = 2e-3
//! weight_decay = 0.0
//! symmetry = true
//! alpha = 1.0
//! seed = 1
//! # "constant", or "cosine": a linear warm-up (default: 4 % of `epochs`), then a cosine decay
//! # to 0 at `epochs`
//! schedule = { kind = "cosine", warmup = 800 }
//! ```
//!
//! A run folder whose `parameters.json` holds other training settings than the file asks for
//! (the `[train]` table or `L`, `d` edited since) is refused, naming the settings, rather than
//! passed off as finished or resumed with other settings; more `epochs` resume finished runs
//! of a constant rate (a cosine schedule ends at the `epochs` it was planned for).

use std::path::{Path, PathBuf};
use std::str::FromStr;

use serde::Deserialize;

use crate::device::DeviceKind;
use crate::lattice::{Lattice, T_C};
use crate::plot::{self, SweepFigure, SweepLine};
use crate::records::{self, SweepRow};
use crate::run::{self, Parameters, RunError, RunOptions, Summary, write_atomic};
use crate::train::{Recipe, TrainConfig};

/// A sweep's settings file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    /// The sweep folder: one run folder per (T, depth) inside, and the results.
    pub folder: PathBuf,
    /// Lattice side.
    #[serde(rename = "L")]
    pub l: usize,
    /// Lattice dimension.
    #[serde(default = "two")]
    pub d: usize,
    /// The grid's temperatures.
    pub temperatures: Vec<f64>,
    /// The grid's MERA depths (empty: every depth `1..=log2 L`).
    #[serde(default)]
    pub depths: Vec<usize>,
    /// Epochs of every run.
    pub epochs: usize,
    /// Checkpoint period of every run.
    #[serde(default = "default_save_period")]
    pub save_period: usize,
    /// No measurements during training.
    #[serde(default = "yes")]
    pub skip_hmc: bool,
    /// The training recipe: the optimizer's defaults under `[train]`, and `warm_start`'s.
    #[serde(default)]
    pub recipe: Recipe,
    /// Warm starts along the sweep (default: the recipe's): each temperature's run starts from
    /// the finished run (same depth) of the nearest temperature listed before it, with a fresh
    /// optimizer and the full `epochs`; the first temperature starts from the seeded
    /// initialization. Temperatures listed in order make a chain; listed from the middle
    /// outwards (`[2.4, 2.6, 2.2, ...]`), a tree whose branches train side by side under
    /// `--devices`.
    #[serde(default)]
    pub warm_start: Option<bool>,
    /// Training settings by name over the paper's configuration (see [`TrainConfig`]).
    #[serde(default)]
    pub train: serde_json::Map<String, serde_json::Value>,
}

fn two() -> usize {
    2
}
fn default_save_period() -> usize {
    run::DEFAULT_SAVE_PERIOD
}
fn yes() -> bool {
    true
}

fn bad(e: impl std::fmt::Display) -> RunError {
    RunError::Input(e.to_string())
}

/// The index of the temperature listed before `temperatures[i]` that is nearest to it (of two
/// as near, the one listed later); `None` for the first.
fn nearest_before(temperatures: &[f64], i: usize) -> Option<usize> {
    let t = temperatures[i];
    (0..i).rev().min_by(|&a, &b| {
        (temperatures[a] - t)
            .abs()
            .total_cmp(&(temperatures[b] - t).abs())
    })
}

/// `--shard I/N`: every N-th run of the grid from the I-th.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shard {
    index: usize,
    count: usize,
}

impl Shard {
    /// Whether the grid's `i`-th run (0-based) is this shard's.
    pub fn takes(&self, i: usize) -> bool {
        i % self.count == self.index
    }
}

impl FromStr for Shard {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let bad = || format!("`{s}` is not I/N: two integers with 0 <= I < N, for example 0/4");
        let (i, n) = s.split_once('/').ok_or_else(bad)?;
        let (index, count) = (
            i.trim().parse::<usize>().map_err(|_| bad())?,
            n.trim().parse::<usize>().map_err(|_| bad())?,
        );
        if index >= count {
            return Err(format!(
                "`{s}`: I = {index} must be below N = {count} (shards 0/{count} to {}/{count})",
                count.saturating_sub(1)
            ));
        }
        Ok(Self { index, count })
    }
}

/// The training configuration of every run: the `[train]` table over the paper's network at
/// the file's lattice with the recipe's optimizer.
fn base_config(settings: &Settings) -> Result<TrainConfig, RunError> {
    let given = serde_json::Value::Object(settings.train.clone());
    if let Some(key) = ["L", "d", "T", "depthMERA"]
        .into_iter()
        .find(|k| given.get(k).is_some())
    {
        return Err(bad(format!(
            "[train] sets {key}: a sweep sets L and d at the top of the file, and T and \
             depthMERA along its grid (temperatures, depths)"
        )));
    }
    let defaults = TrainConfig::default().as_value();
    let unknown = crate::settings::unknown_keys(&given, &defaults);
    if !unknown.is_empty() {
        let known: Vec<&str> = defaults
            .as_object()
            .into_iter()
            .flatten()
            .map(|(k, _)| k.as_str())
            .collect();
        return Err(bad(format!(
            "[train] has no setting {}: the settings are {} (a cosine schedule: schedule = \
             {{ kind = \"cosine\", warmup = 200 }})",
            unknown.join(", "),
            known.join(", ")
        )));
    }
    let config = TrainConfig {
        optimizer: settings.recipe.optimizer(),
        ..TrainConfig::paper(settings.l, settings.d, TrainConfig::default().t).map_err(bad)?
    };
    config
        .overlaid(given)
        .map_err(|e| bad(format!("[train]: {e}")))
}

/// A sweep's grid: its settings, the file they came from, and every run in order.
pub struct Grid {
    pub settings: Settings,
    pub file: PathBuf,
    /// Every run of the grid, temperature-major.
    pub runs: Vec<Parameters>,
}

/// What a run of the grid needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum State {
    /// Finished (its summary written).
    Finished,
    /// Another process is writing its folder.
    Busy,
    /// To train, from its checkpoint when `resume`.
    Todo { resume: bool },
    /// A warm start whose model to start from (this run of the grid) is not finished yet.
    Waiting { for_run: String },
}

/// The summary of a run that has trained all its epochs.
fn finished_summary(params: &Parameters) -> Option<Summary> {
    let folder = &params.options.folder;
    let summary: Summary =
        serde_json::from_str(&std::fs::read_to_string(folder.join("summary.json")).ok()?).ok()?;
    (summary.epochs >= params.options.epochs).then_some(summary)
}

impl Grid {
    /// Every run of the sweep in `file`, validated before anything trains.
    pub fn plan(settings: Settings, file: &Path) -> Result<Self, RunError> {
        let lattice = Lattice::new(settings.l, settings.d).map_err(bad)?;
        if settings.temperatures.is_empty() {
            return Err(bad("temperatures is empty: list at least one temperature"));
        }
        if settings.epochs == 0 || settings.save_period == 0 {
            return Err(bad("epochs and save_period must be >= 1"));
        }
        let depths = if settings.depths.is_empty() {
            (1..=lattice.depth()).collect()
        } else {
            settings.depths.clone()
        };
        // One run per (T, depth): a value listed twice would be one folder for two runs (and a
        // warm start from itself).
        let twice = |name: &str, values: Vec<String>| match (1..values.len())
            .find(|&i| values[..i].contains(&values[i]))
        {
            Some(i) => Err(bad(format!(
                "{name} lists {} twice: list each once",
                values[i]
            ))),
            None => Ok(()),
        };
        twice(
            "temperatures",
            settings
                .temperatures
                .iter()
                .map(|t| format!("{t:?}"))
                .collect(),
        )?;
        twice("depths", depths.iter().map(|d| d.to_string()).collect())?;
        let base = base_config(&settings)?;
        let mut runs: Vec<Parameters> = Vec::new();
        for (i, &t) in settings.temperatures.iter().enumerate() {
            let from = settings
                .warm_start
                .unwrap_or(settings.recipe.warm_starts())
                .then(|| nearest_before(&settings.temperatures, i))
                .flatten();
            for (k, &depth) in depths.iter().enumerate() {
                // The grid is temperature-major: run j * depths + k is temperature j, depth k.
                let init = from.map(|j| runs[j * depths.len() + k].options.folder.clone());
                let mut config = TrainConfig { t, ..base.clone() };
                config.mera.depth = Some(depth);
                let config = config.for_run(settings.epochs);
                config.validate().map_err(bad)?;
                // The temperature to full precision: two temperatures are two runs.
                let name = format!("T{t:?}_depth{depth}");
                runs.push(Parameters {
                    format: run::PARAMETERS_FORMAT,
                    options: RunOptions {
                        folder: settings.folder.join(&name),
                        name,
                        epochs: settings.epochs,
                        save_period: settings.save_period,
                        device: DeviceKind::Cpu,
                        double: false,
                        skip_hmc: settings.skip_hmc,
                        keep: 2,
                        hmc_chains: run::DEFAULT_HMC_CHAINS,
                        devices: None,
                        init,
                    },
                    config,
                    backend: String::new(),
                    version: env!("CARGO_PKG_VERSION").into(),
                });
            }
        }
        Ok(Self {
            settings,
            file: file.to_path_buf(),
            runs,
        })
    }

    /// The run called `name`.
    pub fn run(&self, name: &str) -> Result<&Parameters, RunError> {
        self.runs
            .iter()
            .find(|r| r.options.name == name)
            .ok_or_else(|| bad(format!("{} has no run {name}", self.file.display())))
    }

    /// The runs of a shard (all without one).
    pub fn shard(&self, shard: Option<Shard>) -> Vec<Parameters> {
        self.runs
            .iter()
            .enumerate()
            .filter(|(i, _)| shard.is_none_or(|s| s.takes(*i)))
            .map(|(_, r)| r.clone())
            .collect()
    }

    /// `[n/total] label` of a run, numbered in the grid from 1.
    pub fn label(&self, params: &Parameters, label: &str) -> String {
        let n = self
            .runs
            .iter()
            .position(|g| g.options.name == params.options.name)
            .map_or(0, |i| i + 1);
        format!("[{n}/{}] {label}", self.runs.len())
    }

    /// The run's state; a folder trained with other settings is refused.
    pub fn state(&self, params: &Parameters) -> Result<State, RunError> {
        let folder = &params.options.folder;
        if run::is_being_written(folder) {
            return Ok(State::Busy);
        }
        if folder.join("parameters.json").exists() {
            let stored = run::read_parameters(folder)?;
            let differ: Vec<String> = stored
                .config
                .differences(&params.config)
                .iter()
                .map(|d| d.versus("run", "settings"))
                .collect();
            if !differ.is_empty() {
                return Err(bad(format!(
                    "{} was trained with other settings than {} asks for: {}; move the folder away to train it again, or restore the settings",
                    folder.display(),
                    self.file.display(),
                    differ.join(", ")
                )));
            }
        }
        if self.finished(params) {
            return Ok(State::Finished);
        }
        let resume = !run::checkpoints(folder).is_empty();
        if !resume
            && let Some(from) = &params.options.init
            && let Some(before) = self.runs.iter().find(|r| &r.options.folder == from)
            && !self.finished(before)
        {
            return Ok(State::Waiting {
                for_run: before.options.name.clone(),
            });
        }
        Ok(State::Todo { resume })
    }

    fn finished(&self, params: &Parameters) -> bool {
        finished_summary(params).is_some()
    }

    /// The message of an interrupted run, with how to resume the sweep.
    pub fn interrupted(&self, e: RunError) -> RunError {
        match e {
            RunError::Interrupted(msg) => RunError::Interrupted(format!(
                "{msg}; run the same sweep again to resume: sweep {}",
                self.file.display()
            )),
            e => e,
        }
    }

    /// Rewrites `results.csv` and the figure (relative error against T, one line per depth,
    /// with error bars, and the paper's numbers where it has them; see [`figure_lines`]) from
    /// every finished run of the grid; returns how many are finished.
    pub fn write_results(&self) -> Result<usize, RunError> {
        let mut rows: Vec<SweepRow> = self
            .runs
            .iter()
            .filter_map(|p| finished_summary(p).map(|s| SweepRow::new(p.config.mera.depth(), &s)))
            .collect();
        // By temperature (a warm-started grid lists them in the order of its chain).
        rows.sort_by(|a, b| a.t.total_cmp(&b.t).then(a.depth.cmp(&b.depth)));
        let folder = &self.settings.folder;
        // Nothing trained yet (every run waiting or busy elsewhere): the folder may not exist.
        std::fs::create_dir_all(folder)
            .map_err(|e| RunError::Io(format!("{}: {e}", folder.display())))?;
        write_atomic(
            &folder.join("results.csv"),
            records::to_csv(&rows).as_bytes(),
        )?;
        if rows.is_empty() {
            return Ok(0);
        }
        let finished = rows.len();
        save_figure(&folder.join("relative_error"), &[(String::new(), rows)])?;
        Ok(finished)
    }
}

/// The legend of [`PAPER_RELATIVE_ERRORS`] in a figure: with its budget, since a sweep's may differ.
pub const PAPER_LABEL: &str = "the paper (5000 epochs of 512)";

/// The original authors' relative errors (`../shared/NEURALRG.md` section 7) as `(L, T, relative
/// error)`: d = 2, Z2-symmetrized, full depth, batch 512, 5000 epochs.
pub const PAPER_RELATIVE_ERRORS: [(usize, f64, f64); 11] = [
    (16, 2.0, 0.00287),
    (16, 2.2, 0.00431),
    (16, T_C, 0.00509),
    (16, 2.4, 0.00778),
    (16, 2.6, 0.01109),
    (16, 2.8, 0.01213),
    (16, 3.0, 0.01003),
    (32, 2.0, 0.00270),
    (32, 2.3, 0.00545),
    (32, 2.5, 0.00891),
    (32, 2.7, 0.01098),
];

/// The lines of the relative-error figure of finished sweeps' `sets` of `(label, rows)`: one
/// per set and MERA depth, labelled by the set's label and, where the set has several depths or
/// no label, by the depth; then the paper's numbers where every row is of one `(L, d)` that the
/// paper has, with full-depth runs among them.
pub fn figure_lines(sets: &[(String, Vec<SweepRow>)]) -> Vec<SweepLine> {
    let mut lines = Vec::new();
    for (label, rows) in sets {
        let mut depths: Vec<usize> = rows.iter().map(|r| r.depth).collect();
        depths.sort();
        depths.dedup();
        for &depth in &depths {
            let label = match (label.is_empty(), depths.len()) {
                (true, _) => format!("depth {depth}"),
                (false, 1) => label.clone(),
                (false, _) => format!("{label}, depth {depth}"),
            };
            let points = rows
                .iter()
                .filter(|r| r.depth == depth)
                .map(|r| (r.t, r.relative_error, r.relative_error_stderr))
                .collect();
            lines.push(SweepLine {
                label,
                points,
                reference: false,
            });
        }
    }
    let rows: Vec<&SweepRow> = sets.iter().flat_map(|(_, rows)| rows).collect();
    let full_depth = |r: &SweepRow| Lattice::new(r.l, r.d).is_ok_and(|l| l.depth() == r.depth);
    if let Some(first) = rows.first()
        && first.d == 2
        && rows.iter().all(|r| (r.l, r.d) == (first.l, first.d))
        && rows.iter().any(|r| full_depth(r))
    {
        let points: Vec<(f64, f64, f64)> = PAPER_RELATIVE_ERRORS
            .iter()
            .filter(|p| p.0 == first.l)
            .map(|p| (p.1, p.2, 0.0))
            .collect();
        if !points.is_empty() {
            lines.push(SweepLine {
                label: PAPER_LABEL.into(),
                points,
                reference: true,
            });
        }
    }
    lines
}

/// Draws the relative-error figure of finished sweeps' `sets` of `(label, rows)` (see
/// [`figure_lines`]) into `stem.png` and `stem.svg`.
pub fn save_figure(stem: &Path, sets: &[(String, Vec<SweepRow>)]) -> Result<(), RunError> {
    let rows: Vec<&SweepRow> = sets.iter().flat_map(|(_, rows)| rows).collect();
    let same = |f: fn(&SweepRow) -> usize| {
        let v = f(rows.first()?);
        rows.iter().all(|r| f(r) == v).then_some(v)
    };
    let mut title = "relative error of F".to_string();
    if let (Some(l), Some(d)) = (same(|r| r.l), same(|r| r.d)) {
        title += &format!(", L={l} d={d}");
    }
    if let Some(epochs) = same(|r| r.epochs) {
        title += &format!(", {epochs} epochs");
    }
    let lines = figure_lines(sets);
    plot::save(
        stem,
        (900, 620),
        &SweepFigure {
            lines: &lines,
            title,
        },
    )
    .map_err(RunError::Io)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_figure_has_a_line_per_sweep_and_depth_and_the_papers_where_it_has_numbers() {
        let row = |l, depth, t| SweepRow {
            l,
            d: 2,
            t,
            depth,
            relative_error: 0.01,
            ..Default::default()
        };
        let labels = |sets: &[(String, Vec<SweepRow>)]| -> Vec<String> {
            figure_lines(sets).into_iter().map(|l| l.label).collect()
        };
        let unlabelled = |rows| [(String::new(), rows)];
        assert_eq!(
            labels(&unlabelled(vec![
                row(16, 3, 2.0),
                row(16, 4, 2.0),
                row(16, 4, 2.2)
            ])),
            ["depth 3", "depth 4", PAPER_LABEL]
        );
        assert_eq!(
            labels(&[
                ("a".into(), vec![row(16, 4, 2.0)]),
                ("b".into(), vec![row(16, 4, 2.2)])
            ]),
            ["a", "b", PAPER_LABEL]
        );
        assert_eq!(
            labels(&[("a".into(), vec![row(32, 1, 2.0), row(32, 5, 2.0)])]),
            ["a, depth 1", "a, depth 5", PAPER_LABEL]
        );
        // No paper line: no numbers at L=8, no full-depth run, two sizes in one figure.
        for rows in [
            vec![row(8, 3, 2.0)],
            vec![row(16, 3, 2.0)],
            vec![row(16, 4, 2.0), row(32, 5, 2.0)],
        ] {
            assert!(!labels(&unlabelled(rows)).contains(&PAPER_LABEL.to_string()));
        }
        let lines = figure_lines(&unlabelled(vec![row(32, 5, 2.3)]));
        assert_eq!(lines[0].points, [(2.3, 0.01, 0.0)]);
        assert!(!lines[0].reference);
        let paper = &lines[1];
        assert!(paper.reference);
        assert_eq!(paper.points.len(), 4);
        assert!(paper.points.contains(&(2.3, 0.00545, 0.0)));
    }

    #[test]
    fn warm_starts_come_from_the_nearest_temperature_listed_before() {
        let settings: Settings = serde_json::from_value(serde_json::json!({
            "folder": "sweeps/tree", "L": 4, "epochs": 5, "warm_start": true,
            "temperatures": [2.4, 2.6, 2.2, 2.8, 2.0, 3.0, 2.5], "depths": [1, 2],
        }))
        .unwrap();
        let grid = Grid::plan(settings, Path::new("tree.toml")).unwrap();
        let from: Vec<(String, Option<String>)> = grid
            .runs
            .iter()
            .map(|r| {
                let name = |f: &Path| f.file_name().unwrap().to_string_lossy().into_owned();
                (r.options.name.clone(), r.options.init.as_deref().map(name))
            })
            .collect();
        let expect = |run: &str, init: Option<&str>| {
            let found = from.iter().find(|(n, _)| n == run).unwrap();
            assert_eq!(found.1.as_deref(), init, "{run}: {from:?}");
        };
        expect("T2.4_depth1", None);
        expect("T2.4_depth2", None);
        expect("T2.6_depth1", Some("T2.4_depth1"));
        expect("T2.2_depth2", Some("T2.4_depth2"));
        expect("T2.8_depth1", Some("T2.6_depth1"));
        expect("T2.0_depth2", Some("T2.2_depth2"));
        expect("T3.0_depth1", Some("T2.8_depth1"));
        // 2.4 and 2.6 are as near to 2.5: the later listed.
        expect("T2.5_depth2", Some("T2.6_depth2"));
    }
}
