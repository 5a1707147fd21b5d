//! `sweep`: trains a grid of temperatures x MERA depths from a TOML settings file (format and
//! plan in [`crate::sweep`]). Finished runs are skipped and interrupted ones resumed, so an
//! interrupted sweep simply runs again.
//!
//! `--devices` runs the grid concurrently, one process per device (`--per-device` for more);
//! `--shard I/N` takes every N-th run from the I-th, so N machines share one grid in a shared
//! folder; a run another process is writing (its folder lock) is skipped. Each sweep rebuilds
//! `results.csv` and the figure from every finished run of the grid.

use std::io::{BufRead, Write as _};
use std::path::PathBuf;
use std::process::{Child, Command, ExitCode, Stdio};
use std::time::Duration;

use crate::cli;
use crate::device::{BackendJob, DeviceKind, DeviceList, dispatch};
use crate::fused::FlowAutodiff;
use crate::run::{self, Parameters, RunError};
use crate::sweep::{Grid, Settings, Shard, State};
use clap::Parser;
use indicatif::{MultiProgress, ProgressBar, ProgressStyle};

/// Train NeuralRG over a grid of temperatures and MERA depths given in a TOML settings file
/// (format: core/src/sweep.rs), skipping finished runs and
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

pub fn main() -> ExitCode {
    cli::main(run_cli)
}

fn bad(e: impl std::fmt::Display) -> RunError {
    RunError::Input(e.to_string())
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
    let grid = Grid::plan(settings, &args.settings)?;
    let mut runs: Vec<Parameters> = match &args.worker {
        Some(name) => vec![grid.run(name)?.clone()],
        None => grid.shard(args.shard),
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
    let sweep = &grid;
    if args.worker.is_some() {
        // Stop (with a checkpoint) when the parent sweep stops or dies.
        run::stop_when_stdin_closes();
        return dispatch(
            false,
            args.device,
            Train {
                sweep,
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
                sweep,
                runs,
                worker: false,
            },
        )??,
        Some(list) => {
            for d in list.devices() {
                dispatch(false, d, Probe)?;
            }
            concurrent(sweep, runs, list, args.per_device)?
        }
    }
    let finished = sweep.write_results()?;
    let folder = &sweep.settings.folder;
    if finished == 0 {
        println!(
            "0 of {} runs finished; {} has the header only",
            sweep.runs.len(),
            folder.join("results.csv").display()
        );
    } else {
        println!(
            "{finished} of {} runs finished; results in {} and {}",
            sweep.runs.len(),
            folder.join("results.csv").display(),
            folder.join("relative_error.{png,svg}").display()
        );
    }
    Ok(())
}

/// Starts nothing: `dispatch` has checked that the device is there.
struct Probe;

impl BackendJob for Probe {
    type Output = ();
    fn run<B: FlowAutodiff>(self, _: B::Device) {}
}

/// Runs `runs` in child processes (`--worker`), `per_device` at a time on each device.
fn concurrent(
    sweep: &Grid,
    runs: Vec<Parameters>,
    devices: &DeviceList,
    per_device: usize,
) -> Result<(), RunError> {
    let logs = sweep.settings.folder.join("logs");
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
            // The first run of the queue that can start: a warm start waits for its model.
            let mut ready = None;
            for (i, params) in queue.iter().enumerate() {
                let state = sweep.state(params)?;
                if !matches!(state, State::Waiting { .. }) {
                    ready = Some((i, state));
                    break;
                }
            }
            let Some((i, state)) = ready else {
                break;
            };
            let params = queue.remove(i).expect("found in the queue");
            let label = sweep.label(&params, &params.options.name);
            match state {
                State::Finished => {
                    say(format!("{label}: finished, skipped"));
                    continue;
                }
                State::Busy => {
                    say(format!("{label}: another process is training it, skipped"));
                    continue;
                }
                State::Todo { .. } | State::Waiting { .. } => {}
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
                .arg(&sweep.file)
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
            // Only warm starts whose model did not finish are left.
            for params in queue.drain(..) {
                if let State::Waiting { for_run } = sweep.state(&params)? {
                    let label = sweep.label(&params, &params.options.name);
                    say(format!(
                        "{label}: not started, it starts from {for_run}, which did not finish"
                    ));
                }
            }
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
        return Err(sweep.interrupted(RunError::Interrupted("stopped by a signal".into())));
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

/// Trains `runs` one after another in this process; as a worker (`--worker`) it reports
/// progress on stdout (`progress EPOCH REL_ERR_PERCENT`) instead of drawing a bar.
struct Train<'a> {
    sweep: &'a Grid,
    runs: Vec<Parameters>,
    worker: bool,
}

impl BackendJob for Train<'_> {
    type Output = Result<(), RunError>;
    fn run<B: FlowAutodiff>(self, device: B::Device) -> Self::Output {
        let sweep = self.sweep;
        for params in self.runs {
            let folder = params.options.folder.clone();
            let label = sweep.label(
                &params,
                &format!(
                    "T={:?} depth={}",
                    params.config.t,
                    params.config.mera.depth()
                ),
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
                // Trained by another process, or failed there.
                State::Waiting { for_run } => {
                    eprintln!(
                        "{label}: not started, it starts from {for_run}, which did not finish"
                    );
                    continue;
                }
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
