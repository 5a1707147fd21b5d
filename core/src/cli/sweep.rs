//! `sweep`: trains a grid of temperatures x MERA depths from a TOML settings file, as the
//! original's `core.py` + `setting.py` + `paperPlot/plotCore.py`. Finished runs are skipped and
//! interrupted ones resumed, so an interrupted sweep simply runs again.
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
//!
//! [train]                         # optional; defaults are the paper's configuration
//! nlayers = 10
//! nmlp = 3
//! nhidden = 10
//! nrepeat = 1
//! batch = 512
//! lr = 1e-3
//! symmetry = true
//! alpha = 1.0
//! seed = 1
//! schedule = "constant"           # or "cosine" (warm-up, then a cosine decay to 0 at `epochs`)
//! warmup = 100                    # warm-up epochs of the cosine schedule
//! ```
//!
//! A run folder whose `parameters.json` holds other training settings than the file asks for
//! (the `[train]` table or `L`, `d` edited since) is refused, naming the settings, rather than
//! passed off as finished or resumed with other settings; more `epochs` resume finished runs.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use crate::cli;
use crate::device::{BackendJob, DeviceKind, dispatch};
use crate::fused::FlowAutodiff;
use crate::lattice::Lattice;
use crate::plot::{self, SweepFigure};
use crate::run::{self, Parameters, RunError, RunOptions, Summary, write_atomic};
use crate::train::{Schedule, TrainConfig};
use clap::Parser;
use indicatif::{ProgressBar, ProgressStyle};
use serde::Deserialize;

/// Train NeuralRG over a grid of temperatures and MERA depths given in a TOML settings file
/// (see the crate README or this binary's source for the format), skipping finished runs and
/// resuming interrupted ones; writes results.csv and relative_error.{png,svg} (relative error
/// against T, one line per depth, with error bars) into the sweep folder.
#[derive(Parser, Debug)]
#[command(version)]
struct Cli {
    /// The settings file (TOML).
    settings: PathBuf,
    /// Compute device: cpu (Burn's Flex backend; also `flex`), cuda[:N], vulkan[:N] or wgpu.
    #[arg(long, default_value_t = DeviceKind::Cpu)]
    device: DeviceKind,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Settings {
    folder: PathBuf,
    #[serde(rename = "L")]
    l: usize,
    #[serde(default = "two")]
    d: usize,
    temperatures: Vec<f64>,
    #[serde(default)]
    depths: Vec<usize>,
    epochs: usize,
    #[serde(default = "fifty")]
    save_period: usize,
    #[serde(default = "yes")]
    skip_hmc: bool,
    #[serde(default)]
    train: TrainSettings,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct TrainSettings {
    nlayers: Option<usize>,
    nmlp: Option<usize>,
    nhidden: Option<usize>,
    nrepeat: Option<usize>,
    batch: Option<usize>,
    lr: Option<f64>,
    weight_decay: Option<f64>,
    clip: Option<f64>,
    symmetry: Option<bool>,
    alpha: Option<f64>,
    seed: Option<u64>,
    schedule: Option<SweepSchedule>,
    warmup: Option<usize>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
enum SweepSchedule {
    Constant,
    Cosine,
}

fn two() -> usize {
    2
}
fn fifty() -> usize {
    50
}
fn yes() -> bool {
    true
}

pub fn main() -> ExitCode {
    cli::main(run_cli)
}

fn bad(e: impl std::fmt::Display) -> RunError {
    RunError::Input(e.to_string())
}

/// Every run of the sweep, validated before anything trains.
fn plan(settings: &Settings) -> Result<Vec<Parameters>, RunError> {
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
    let tr = &settings.train;
    let mut runs = Vec::new();
    for &t in &settings.temperatures {
        for &depth in &depths {
            let mut config = TrainConfig::paper(settings.l, settings.d, 1.0).map_err(bad)?;
            config.t = t;
            config.depth = depth;
            config.nlayers = tr.nlayers.unwrap_or(config.nlayers);
            config.nmlp = tr.nmlp.unwrap_or(config.nmlp);
            config.nhidden = tr.nhidden.unwrap_or(config.nhidden);
            config.nrepeat = tr.nrepeat.unwrap_or(config.nrepeat);
            config.batch = tr.batch.unwrap_or(config.batch);
            config.lr = tr.lr.unwrap_or(config.lr);
            config.weight_decay = tr.weight_decay.unwrap_or(config.weight_decay);
            config.clip = tr.clip.or(config.clip);
            config.symmetry = tr.symmetry.unwrap_or(config.symmetry);
            config.alpha = tr.alpha.unwrap_or(config.alpha);
            config.seed = tr.seed.unwrap_or(config.seed);
            if tr.schedule == Some(SweepSchedule::Cosine) {
                config.schedule = Schedule::Cosine {
                    epochs: settings.epochs,
                    warmup: tr.warmup.unwrap_or(100),
                };
            } else if tr.warmup.is_some() {
                return Err(bad(
                    "warmup is set without schedule = \"cosine\": add it, or drop warmup",
                ));
            }
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
                },
                config,
                backend: String::new(),
                version: env!("CARGO_PKG_VERSION").into(),
            });
        }
    }
    Ok(runs)
}

fn run_cli(args: Cli) -> Result<(), RunError> {
    let text = std::fs::read_to_string(&args.settings).map_err(|e| {
        bad(format!(
            "cannot read the settings file {}: {e}",
            args.settings.display()
        ))
    })?;
    let settings: Settings = toml::from_str(&text).map_err(|e| {
        bad(format!(
            "{} is not a valid sweep settings file: {}",
            args.settings.display(),
            e.to_string().lines().next().unwrap_or("")
        ))
    })?;
    let mut runs = plan(&settings)?;
    for r in &mut runs {
        r.options.device = args.device;
        super::train::check_memory(&r.config, false, args.device)?;
    }
    run::stop_on_signals()?;
    dispatch(
        false,
        args.device,
        Sweep {
            settings,
            settings_file: args.settings,
            runs,
        },
    )?
}

struct Sweep {
    settings: Settings,
    settings_file: PathBuf,
    runs: Vec<Parameters>,
}

fn read_summary(folder: &Path) -> Option<Summary> {
    serde_json::from_str(&std::fs::read_to_string(folder.join("summary.json")).ok()?).ok()
}

impl BackendJob for Sweep {
    type Output = Result<(), RunError>;
    fn run<B: FlowAutodiff>(self, device: B::Device) -> Self::Output {
        let mut results = Vec::new();
        let total = self.runs.len();
        for (i, params) in self.runs.into_iter().enumerate() {
            let folder = params.options.folder.clone();
            let (t, depth) = (params.config.t, params.config.depth);
            if folder.join("parameters.json").exists() {
                let stored = run::read_parameters(&folder)?;
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
                        self.settings_file.display(),
                        differ.join(", ")
                    )));
                }
            }
            if let Some(s) = read_summary(&folder).filter(|s| s.epochs >= params.options.epochs) {
                eprintln!(
                    "[{}/{total}] T={t:?} depth={depth}: finished, skipped",
                    i + 1
                );
                results.push((depth, s));
                continue;
            }
            let resume = !run::checkpoints(&folder).is_empty();
            let opened = run::open::<B>(&params, resume, &device)?;
            eprintln!(
                "[{}/{total}] T={t:?} depth={depth}: {} at epoch {} in {}",
                i + 1,
                if resume { "resuming" } else { "training" },
                opened.trainer.epoch,
                folder.display()
            );
            let bar = ProgressBar::new(params.options.epochs as u64);
            bar.set_style(
                ProgressStyle::with_template(
                    "  {bar:30} {pos}/{len} epochs  {msg}  [{elapsed_precise} < {eta_precise}]",
                )
                .expect("valid template"),
            );
            bar.set_position(opened.trainer.epoch as u64);
            let summary = run::train::<B>(opened, params, |s, _| {
                bar.set_position(s.epoch as u64);
                bar.set_message(format!("rel.err = {:.3}%", 100.0 * s.relative_error));
            });
            bar.finish_and_clear();
            let summary = summary.map_err(|e| match e {
                RunError::Interrupted(msg) => RunError::Interrupted(format!(
                    "{msg}; run the same sweep again to resume: sweep {}",
                    self.settings_file.display()
                )),
                e => e,
            })?;
            results.push((depth, summary));
        }
        let mut csv = String::from(
            "L,d,T,depth,epochs,F,F_stderr,lnZx,relative_error,relative_error_stderr,seconds_per_epoch\n",
        );
        let mut points = Vec::new();
        for (depth, s) in &results {
            let rel_err = s.f_stderr / s.ln_zx.abs();
            let _ = writeln!(
                csv,
                "{},{},{:?},{depth},{},{:?},{:?},{:?},{:?},{:?},{:?}",
                s.l,
                s.d,
                s.t,
                s.epochs,
                s.f,
                s.f_stderr,
                s.ln_zx,
                s.relative_error,
                rel_err,
                s.seconds_per_epoch
            );
            points.push((*depth, s.t, s.relative_error, rel_err));
        }
        let folder = &self.settings.folder;
        write_atomic(&folder.join("results.csv"), csv.as_bytes())?;
        let title = format!(
            "relative error of F, L={} d={}, {} epochs",
            self.settings.l, self.settings.d, self.settings.epochs
        );
        plot::save(
            &folder.join("relative_error"),
            (900, 620),
            &SweepFigure {
                points: &points,
                title,
            },
        )
        .map_err(RunError::Io)?;
        println!(
            "{} runs; results in {} and {}",
            results.len(),
            folder.join("results.csv").display(),
            folder.join("relative_error.{png,svg}").display()
        );
        Ok(())
    }
}
