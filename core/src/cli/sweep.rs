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
//!
//! `--devices` runs the grid concurrently, one process per device (`--per-device` for more);
//! `--shard I/N` takes every N-th run from the I-th, so N machines share one grid in a shared
//! folder; a run another process is writing (its folder lock) is skipped. Each sweep rebuilds
//! `results.csv` and the figure from every finished run of the grid.

use std::fmt::Write as _;
use std::io::{BufRead, Write as _};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, Stdio};
use std::str::FromStr;
use std::time::Duration;

use crate::cli;
use crate::device::{BackendJob, DeviceKind, DeviceList, dispatch};
use crate::fused::FlowAutodiff;
use crate::lattice::Lattice;
use crate::plot::{self, SweepFigure};
use crate::run::{self, Parameters, RunError, RunOptions, Summary, write_atomic};
use crate::train::{Schedule, TrainConfig};
use clap::Parser;
use indicatif::{MultiProgress, ProgressBar, ProgressStyle};
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
    /// Train the grid's runs concurrently, one process per device, comma-separated: cuda:0,cuda:1
    /// or cpu:0,cpu:1 (CPU workers share the cores) or a mix. Logs in <folder>/logs/.
    #[arg(long, conflicts_with = "device")]
    devices: Option<DeviceList>,
    /// Concurrent runs on each device of --devices (small runs share a large GPU).
    #[arg(long = "per-device", default_value_t = 1, requires = "devices")]
    per_device: usize,
    /// Take only every N-th run of the grid, from the I-th (0 <= I < N): N machines sharing the
    /// sweep folder split the grid without coordination.
    #[arg(long, value_name = "I/N")]
    shard: Option<Shard>,
    /// Train only the grid's run of this name, reporting progress on stdout (the processes of
    /// --devices).
    #[arg(long, hide = true)]
    worker: Option<String>,
}

/// `--shard I/N`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Shard {
    index: usize,
    count: usize,
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
                    devices: None,
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
    if args.per_device == 0 {
        return Err(bad("--per-device 0 is not allowed: at least 1"));
    }
    let grid = plan(&settings)?;
    let mut runs: Vec<Parameters> = match &args.worker {
        Some(name) => {
            let run = grid
                .iter()
                .find(|r| &r.options.name == name)
                .ok_or_else(|| bad(format!("{} has no run {name}", args.settings.display())))?;
            vec![run.clone()]
        }
        None => grid
            .iter()
            .enumerate()
            .filter(|(i, _)| args.shard.is_none_or(|s| i % s.count == s.index))
            .map(|(_, r)| r.clone())
            .collect(),
    };
    let devices = args
        .devices
        .as_ref()
        .map_or(vec![args.device], DeviceList::devices);
    for r in &mut runs {
        r.options.device = devices[0];
        for &d in &devices {
            super::train::check_memory(&r.config, false, d)?;
        }
    }
    run::stop_on_signals()?;
    let sweep = Sweep {
        settings,
        settings_file: args.settings.clone(),
        grid,
    };
    if args.worker.is_some() {
        // Stop (with a checkpoint) when the parent sweep stops or dies.
        run::stop_when_stdin_closes();
        return dispatch(
            false,
            args.device,
            Train {
                sweep: &sweep,
                runs,
                worker: true,
            },
        )?;
    }
    match &args.devices {
        None => dispatch(
            false,
            args.device,
            Train {
                sweep: &sweep,
                runs,
                worker: false,
            },
        )??,
        Some(list) => {
            for d in list.devices() {
                dispatch(false, d, Probe)?;
            }
            sweep.concurrent(runs, list, args.per_device)?
        }
    }
    sweep.results()
}

/// Starts nothing: `dispatch` has checked that the device is there.
struct Probe;

impl BackendJob for Probe {
    type Output = ();
    fn run<B: FlowAutodiff>(self, _: B::Device) {}
}

struct Sweep {
    settings: Settings,
    settings_file: PathBuf,
    /// Every run of the grid, in order (whatever this process trains of it).
    grid: Vec<Parameters>,
}

fn read_summary(folder: &Path) -> Option<Summary> {
    serde_json::from_str(&std::fs::read_to_string(folder.join("summary.json")).ok()?).ok()
}

/// What a run of the grid needs.
enum State {
    /// Finished (its summary written).
    Finished,
    /// Another process is writing its folder.
    Busy,
    /// To train, from its checkpoint when `resume`.
    Todo { resume: bool },
}

impl Sweep {
    /// The run's state; a folder trained with other settings is refused.
    fn state(&self, params: &Parameters) -> Result<State, RunError> {
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
                    self.settings_file.display(),
                    differ.join(", ")
                )));
            }
        }
        Ok(
            match read_summary(folder).filter(|s| s.epochs >= params.options.epochs) {
                Some(_) => State::Finished,
                None => State::Todo {
                    resume: !run::checkpoints(folder).is_empty(),
                },
            },
        )
    }

    fn interrupted(&self, e: RunError) -> RunError {
        match e {
            RunError::Interrupted(msg) => RunError::Interrupted(format!(
                "{msg}; run the same sweep again to resume: sweep {}",
                self.settings_file.display()
            )),
            e => e,
        }
    }

    /// Runs `runs` in child processes (`--worker`), `per_device` at a time on each device.
    fn concurrent(
        &self,
        runs: Vec<Parameters>,
        devices: &DeviceList,
        per_device: usize,
    ) -> Result<(), RunError> {
        let logs = self.settings.folder.join("logs");
        std::fs::create_dir_all(&logs).map_err(|e| bad(format!("{}: {e}", logs.display())))?;
        let exe = std::env::current_exe().map_err(|e| RunError::Io(e.to_string()))?;
        let slots: Vec<DeviceKind> = devices
            .devices()
            .into_iter()
            .flat_map(|d| std::iter::repeat_n(d, per_device))
            .collect();
        // CPU workers share the cores (unless RAYON_NUM_THREADS says otherwise).
        let cpu_slots = slots.iter().filter(|d| !d.is_gpu()).count().max(1);
        let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
        let cpu_threads = (threads / cpu_slots).max(1).to_string();
        let total = self.grid.len();
        let bars = MultiProgress::new();
        let style = ProgressStyle::with_template(
            "  {prefix:24} {bar:24} {pos}/{len} epochs  {msg}  [{elapsed_precise} < {eta_precise}]",
        )
        .expect("valid template");
        // Lines above the bars on a terminal; plain lines in a log.
        let terminal = std::io::IsTerminal::is_terminal(&std::io::stderr());
        let say = |line: String| {
            if terminal {
                let _ = bars.println(line);
            } else {
                eprintln!("{line}");
            }
        };
        let mut queue: std::collections::VecDeque<Parameters> = runs.into();
        let mut running: Vec<(usize, Child, Parameters, std::thread::JoinHandle<()>)> = Vec::new();
        let mut failures = Vec::new();
        let mut stopping = false;
        loop {
            while !stopping
                && let Some(slot) = (0..slots.len()).find(|s| running.iter().all(|r| r.0 != *s))
            {
                let Some(params) = queue.pop_front() else {
                    break;
                };
                let n = self
                    .grid
                    .iter()
                    .position(|g| g.options.name == params.options.name)
                    .map_or(0, |i| i + 1);
                let label = format!("[{n}/{total}] {}", params.options.name);
                match self.state(&params)? {
                    State::Finished => {
                        say(format!("{label}: finished, skipped"));
                        continue;
                    }
                    State::Busy => {
                        say(format!("{label}: another process is training it, skipped"));
                        continue;
                    }
                    State::Todo { .. } => {}
                }
                let device = slots[slot];
                let log_path = logs.join(format!("{}.log", params.options.name));
                let log = std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(&log_path)
                    .map_err(|e| RunError::Io(format!("{}: {e}", log_path.display())))?;
                let mut command = Command::new(&exe);
                command
                    .arg(&self.settings_file)
                    .args([
                        "--worker",
                        &params.options.name,
                        "--device",
                        &device.to_string(),
                    ])
                    .stdin(Stdio::piped())
                    .stdout(Stdio::piped())
                    .stderr(log);
                if !device.is_gpu() && std::env::var_os("RAYON_NUM_THREADS").is_none() {
                    command.env("RAYON_NUM_THREADS", &cpu_threads);
                }
                let mut child = command
                    .spawn()
                    .map_err(|e| RunError::Io(format!("cannot start {}: {e}", exe.display())))?;
                say(format!(
                    "{label}: training on {device} (log {})",
                    log_path.display()
                ));
                let bar = bars.add(ProgressBar::new(params.options.epochs as u64));
                bar.set_style(style.clone());
                bar.set_prefix(format!("{} {device}", params.options.name));
                let stdout = child.stdout.take().expect("piped");
                let reader = std::thread::spawn(move || {
                    for line in std::io::BufReader::new(stdout)
                        .lines()
                        .map_while(Result::ok)
                    {
                        let mut words = line.split_whitespace();
                        if words.next() == Some("progress")
                            && let (Some(epoch), Some(rel)) = (words.next(), words.next())
                        {
                            bar.set_position(epoch.parse().unwrap_or(0));
                            bar.set_message(format!("rel.err = {rel}%"));
                        }
                    }
                    bar.finish_and_clear();
                });
                running.push((slot, child, params, reader));
            }
            if running.is_empty() {
                break;
            }
            if !stopping && run::stop_requested() {
                stopping = true;
                say("stopping: every run writes a checkpoint at the end of its epoch".into());
                for r in &mut running {
                    drop(r.1.stdin.take());
                }
            }
            std::thread::sleep(Duration::from_millis(200));
            let mut i = 0;
            while i < running.len() {
                let Ok(Some(status)) = running[i].1.try_wait() else {
                    i += 1;
                    continue;
                };
                let (_, _, params, reader) = running.swap_remove(i);
                let _ = reader.join();
                let log_path = logs.join(format!("{}.log", params.options.name));
                let name = &params.options.name;
                match status.code() {
                    Some(0) => say(format!("{name}: finished")),
                    Some(130) => say(format!("{name}: stopped with a checkpoint")),
                    code => {
                        let last = std::fs::read_to_string(&log_path)
                            .ok()
                            .and_then(|t| {
                                t.lines()
                                    .rev()
                                    .find(|l| !l.trim().is_empty())
                                    .map(String::from)
                            })
                            .unwrap_or_default();
                        say(format!(
                            "{name}: failed ({last}; log {})",
                            log_path.display()
                        ));
                        failures.push((code, format!("{name}: {last}")));
                    }
                }
            }
        }
        if stopping {
            return Err(self.interrupted(RunError::Interrupted("stopped by a signal".into())));
        }
        match failures.first() {
            None => Ok(()),
            Some((code, _)) => {
                let all: Vec<&str> = failures.iter().map(|f| f.1.as_str()).collect();
                let msg = format!("{} of the runs failed: {}", failures.len(), all.join("; "));
                Err(if *code == Some(2) {
                    bad(msg)
                } else {
                    RunError::Io(msg)
                })
            }
        }
    }

    /// `results.csv` and the figure from every finished run of the grid.
    fn results(&self) -> Result<(), RunError> {
        let results: Vec<(usize, Summary)> = self
            .grid
            .iter()
            .filter_map(|p| {
                let s = read_summary(&p.options.folder)?;
                (s.epochs >= p.options.epochs).then_some((p.config.depth, s))
            })
            .collect();
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
        if points.is_empty() {
            println!(
                "0 of {} runs finished; {} has the header only",
                self.grid.len(),
                folder.join("results.csv").display()
            );
            return Ok(());
        }
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
            "{} of {} runs finished; results in {} and {}",
            results.len(),
            self.grid.len(),
            folder.join("results.csv").display(),
            folder.join("relative_error.{png,svg}").display()
        );
        Ok(())
    }
}

/// Trains `runs` one after another in this process; as a worker (`--worker`) it reports
/// progress on stdout (`progress EPOCH REL_ERR_PERCENT`) instead of drawing a bar.
struct Train<'a> {
    sweep: &'a Sweep,
    runs: Vec<Parameters>,
    worker: bool,
}

impl BackendJob for Train<'_> {
    type Output = Result<(), RunError>;
    fn run<B: FlowAutodiff>(self, device: B::Device) -> Self::Output {
        let sweep = self.sweep;
        let total = sweep.grid.len();
        for params in self.runs {
            let folder = params.options.folder.clone();
            let n = sweep
                .grid
                .iter()
                .position(|g| g.options.name == params.options.name)
                .map_or(0, |i| i + 1);
            let label = format!(
                "[{n}/{total}] T={:?} depth={}",
                params.config.t, params.config.depth
            );
            let resume = match sweep.state(&params)? {
                State::Finished => {
                    eprintln!("{label}: finished, skipped");
                    continue;
                }
                State::Busy => {
                    eprintln!("{label}: another process is training it, skipped");
                    continue;
                }
                State::Todo { resume } => resume,
            };
            let opened = match run::open::<B>(&params, resume, &device) {
                Ok(opened) => opened,
                // Taken by another machine since the check.
                Err(_) if run::is_being_written(&folder) => {
                    eprintln!("{label}: another process is training it, skipped");
                    continue;
                }
                Err(e) => return Err(e),
            };
            eprintln!(
                "{label}: {} at epoch {} in {}",
                if resume { "resuming" } else { "training" },
                opened.trainer.epoch,
                folder.display()
            );
            let bar = if self.worker {
                ProgressBar::hidden()
            } else {
                ProgressBar::new(params.options.epochs as u64)
            };
            bar.set_style(
                ProgressStyle::with_template(
                    "  {bar:30} {pos}/{len} epochs  {msg}  [{elapsed_precise} < {eta_precise}]",
                )
                .expect("valid template"),
            );
            bar.set_position(opened.trainer.epoch as u64);
            let worker = self.worker;
            let summary = run::train::<B>(opened, params, |s, _| {
                if worker {
                    let mut out = std::io::stdout().lock();
                    let _ = writeln!(out, "progress {} {:.3}", s.epoch, 100.0 * s.relative_error);
                    let _ = out.flush();
                }
                bar.set_position(s.epoch as u64);
                bar.set_message(format!("rel.err = {:.3}%", 100.0 * s.relative_error));
            });
            bar.finish_and_clear();
            summary.map_err(|e| sweep.interrupted(e))?;
        }
        Ok(())
    }
}
