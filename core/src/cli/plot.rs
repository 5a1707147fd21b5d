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
use crate::records::{self, Observable};
use crate::run::{self, RunError};
use clap::Parser;

/// Draw the training monitor of a run folder: F against the exact bound, the relative error
/// (log axis), Metropolis-Hastings and HMC acceptance, and an observable with error bars against
/// its exact value. Writes pic/monitor.png and pic/monitor.svg.
#[derive(Parser, Debug)]
#[command(version, args_override_self = true)]
struct Cli {
    /// Run folder written by `train`.
    #[arg(long)]
    folder: PathBuf,
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
    /// Output folder (default: the run's pic/).
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

fn run_cli(args: Cli) -> Result<(), RunError> {
    if let Some(per) = args.per.filter(|p| !(p.is_finite() && *p > 0.0)) {
        return Err(RunError::Input(format!(
            "per = {per} is not allowed: a number of seconds > 0"
        )));
    }
    let params = run::read_parameters(&args.folder)?;
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
    let pic = args.out.clone().unwrap_or_else(|| args.folder.join("pic"));
    std::fs::create_dir_all(&pic).map_err(|e| RunError::Io(format!("{}: {e}", pic.display())))?;
    loop {
        let monitor = Monitor {
            train: records::read(&args.folder).map_err(RunError::Io)?,
            measurements: records::read(&args.folder).map_err(RunError::Io)?,
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
        if finished(&args.folder) {
            eprintln!("plot: the run has finished");
            return Ok(());
        }
        // Nobody writes the folder and it is not finished: the run was stopped or died.
        if !run::is_being_written(&args.folder) {
            eprintln!(
                "plot: the run is not training (stopped or died before its end); resume it with: train --load --folder {}",
                args.folder.display()
            );
            return Ok(());
        }
        std::thread::sleep(Duration::from_secs_f64(per));
    }
}
