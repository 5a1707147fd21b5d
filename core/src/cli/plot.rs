//! `plot`: the training monitor, as the original's `plot.py -folder F -per 30 -exact 0.544445`:
//! the free energy against the exact bound, the relative error on a log axis, the acceptance
//! rates and a measured observable with error bars against its exact value, into
//! `pic/monitor.{png,svg}`. With `--per` it redraws while the run trains and stops, saying so,
//! when the run ends or stops (nobody holds its folder's lock).

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use crate::cli;
use crate::observables::exact_values;
use crate::plot::{self, Monitor};
use crate::records::{self, Observable, SweepRow};
use crate::run::{self, RunError};
use crate::sweep;
use clap::Parser;

/// Draw the training monitor of a run folder: F against the exact bound, the relative error
/// (log axis), Metropolis-Hastings and HMC acceptance, and an observable with error bars against
/// its exact value. Writes pic/monitor.png and pic/monitor.svg. With --results instead: finished
/// sweeps side by side, relative error against T, into relative_error.png and .svg.
#[derive(Parser, Debug)]
#[command(version, args_override_self = true)]
struct Cli {
    /// Run folder written by `train`.
    #[arg(long, required_unless_present = "results")]
    folder: Option<PathBuf>,
    /// Instead of a run's monitor: a sweep's results table, as [LABEL=]FILE (label: the file's
    /// folder name for a results.csv, else its name; none for a single table), given once per
    /// sweep to compare. One line per table and MERA depth, and the paper's numbers where it has
    /// them (L=16 and 32, d=2, full depth).
    #[arg(long, conflicts_with_all = ["folder", "per", "exact", "observable"])]
    results: Vec<String>,
    /// Redraw every this many seconds while the run trains; stop when it ends, is stopped or dies.
    #[arg(long)]
    per: Option<f64>,
    /// Exact value of the observable to draw as a line (default: the project's own where known:
    /// energy and specific heat always, magnetization moments when N <= 20).
    #[arg(long)]
    exact: Option<f64>,
    /// Observable to draw.
    #[arg(long, value_enum, default_value_t = Observable::M2)]
    observable: Observable,
    /// Output folder (default: the run's pic/; with --results, the current folder).
    #[arg(long)]
    out: Option<PathBuf>,
}

pub fn main() -> ExitCode {
    cli::main(run_cli)
}

/// The run ended: its summary was written after its (latest) start.
fn finished(folder: &Path) -> bool {
    let modified = |p: PathBuf| std::fs::metadata(p).and_then(|m| m.modified()).ok();
    match (
        modified(folder.join("summary.json")),
        modified(folder.join("parameters.json")),
    ) {
        (Some(s), Some(p)) => s >= p,
        _ => false,
    }
}

/// `--results [LABEL=]FILE`: the label (the file's name unless given; none when `alone` and not
/// given, so that the lines are named by depth as in `sweep`'s own figure) and the sweep's rows.
fn read_results(arg: &str, alone: bool) -> Result<(String, Vec<SweepRow>), RunError> {
    let (label, file) = match arg.split_once('=') {
        Some((label, file)) if !Path::new(arg).exists() => (Some(label.to_string()), file),
        _ => (None, arg),
    };
    let path = Path::new(file);
    let text = std::fs::read_to_string(path)
        .map_err(|e| RunError::Input(format!("--results {file} cannot be read: {e}")))?;
    let rows: Vec<SweepRow> = records::from_csv(&text);
    if rows.is_empty() || !text.starts_with(&records::header::<SweepRow>()) {
        return Err(RunError::Input(format!(
            "--results {file} is not allowed: a sweep's results.csv with at least one finished run"
        )));
    }
    let name = |p: &Path| p.file_name().map(|n| n.to_string_lossy().into_owned());
    let label = label.unwrap_or_else(|| {
        if alone {
            return String::new();
        }
        match path.file_name() {
            Some(n) if n == "results.csv" => path.parent().and_then(name),
            _ => path.file_stem().map(|n| n.to_string_lossy().into_owned()),
        }
        .unwrap_or_else(|| file.to_string())
    });
    Ok((label, rows))
}

/// `plot --results`: the relative-error figure of finished sweeps.
fn compare(results: &[String], out: &Path) -> Result<(), RunError> {
    let sets = results
        .iter()
        .map(|r| read_results(r, results.len() == 1))
        .collect::<Result<Vec<_>, _>>()?;
    std::fs::create_dir_all(out).map_err(|e| RunError::Io(format!("{}: {e}", out.display())))?;
    sweep::save_figure(&out.join("relative_error"), &sets)?;
    eprintln!(
        "plot: {} sweep{}, {} runs -> {}",
        sets.len(),
        if sets.len() == 1 { "" } else { "s" },
        sets.iter().map(|s| s.1.len()).sum::<usize>(),
        out.join("relative_error.{png,svg}").display()
    );
    Ok(())
}

fn run_cli(args: Cli) -> Result<(), RunError> {
    if !args.results.is_empty() {
        return compare(&args.results, args.out.as_deref().unwrap_or(Path::new(".")));
    }
    let Some(folder) = args.folder.as_deref() else {
        return Err(RunError::Input("give --folder or --results".into()));
    };
    if let Some(per) = args.per.filter(|p| !(p.is_finite() && *p > 0.0)) {
        return Err(RunError::Input(format!(
            "per = {per} is not allowed: a number of seconds > 0"
        )));
    }
    let params = run::read_parameters(folder)?;
    let lattice = params.config.mera.lattice;
    let exact = exact_values(lattice, params.config.t);
    let known = match args.observable {
        Observable::Energy => Some(exact.energy_per_site),
        Observable::SpecificHeat => Some(exact.specific_heat),
        Observable::AbsM => exact.abs_m,
        Observable::M2 => exact.m2,
        Observable::Susceptibility => exact.susceptibility,
        Observable::BinderU4 => exact.binder_u4,
    };
    let pic = args.out.clone().unwrap_or_else(|| folder.join("pic"));
    std::fs::create_dir_all(&pic).map_err(|e| RunError::Io(format!("{}: {e}", pic.display())))?;
    loop {
        let monitor = Monitor {
            train: records::read(folder).map_err(RunError::Io)?,
            measurements: records::read(folder).map_err(RunError::Io)?,
            bound: params.config.relaxation().loss_bound(),
            observable: args.observable,
            exact: args.exact.or(known),
        };
        plot::save(&pic.join("monitor"), (1100, 800), &monitor).map_err(RunError::Io)?;
        eprintln!(
            "plot: {} epochs, {} measurements -> {}",
            monitor.train.len(),
            monitor.measurements.len(),
            pic.join("monitor.{png,svg}").display()
        );
        let Some(per) = args.per else { return Ok(()) };
        if finished(folder) {
            eprintln!("plot: the run has finished");
            return Ok(());
        }
        // Nobody writes the folder and it is not finished: the run was stopped or died.
        if !run::is_being_written(folder) {
            eprintln!(
                "plot: the run is not training (stopped or died before its end); resume it with: train --load --folder {}",
                folder.display()
            );
            return Ok(());
        }
        std::thread::sleep(Duration::from_secs_f64(per));
    }
}
