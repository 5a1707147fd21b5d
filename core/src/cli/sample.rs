//! `sample`: draws configurations from a trained run with a chosen sampler and measures the
//! Ising observables with error bars, beside exact values where they are known.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use crate::cli;
use crate::device::{BackendJob, DeviceKind, dispatch};
use crate::fused::FlowAutodiff;
use crate::host::block_on;
use crate::observables::{self, Estimate, Observables, spins_from_fields};
use crate::plot::{self, SpinFigure};
use crate::resources;
use crate::run::{self, Parameters, RunError, write_atomic};
use crate::sample::{self, DrawConfig, Drawn, Sampler, npy_bytes};
use crate::stats::tau_int;
use clap::Parser;
use rand::SeedableRng;
use rand::rngs::StdRng;

/// Draw Ising configurations from a trained NeuralRG run and measure energy, |m|, m^2,
/// susceptibility, specific heat and the Binder cumulant per site, with jackknife errors over
/// 20 blocks (fewer and longer for a correlated chain: each at least 5 tau_int), beside the exact
/// values (energy and specific heat always; the magnetization
/// moments by enumeration when N <= 20).
///
/// Writes samples/<sampler>_x.npy (fields, float32 [n, N]), samples/<sampler>_spins.npy (spins,
/// int8 +-1 [n, N], one spin configuration drawn per field) and pic/samples_<sampler>.png.
#[derive(Parser, Debug)]
#[command(version, args_override_self = true)]
struct Cli {
    /// Run folder written by `train` (or unpacked from the page's model file with `tar xf`).
    #[arg(long)]
    folder: PathBuf,
    // The sampler and its settings, declared with their defaults in `DrawConfig`.
    #[command(flatten, next_help_heading = "Sampler")]
    draw: DrawConfig,
    /// Print the table as one JSON object (with `log_q_probes`: the flow's log q at three fixed
    /// configurations, as the page shows for a model it opens).
    #[arg(long)]
    json: bool,
    /// Seed of the samples.
    #[arg(long, default_value_t = 11)]
    seed: u64,
    /// Output folder (default: the run folder's samples/ and pic/).
    #[arg(long)]
    out: Option<PathBuf>,
    /// Compute device: cpu (Burn's Flex backend; also `flex`), cuda[:N], vulkan[:N] or wgpu.
    #[arg(long, default_value_t = DeviceKind::Cpu)]
    device: DeviceKind,
}

pub fn main() -> ExitCode {
    cli::main(run_cli)
}

fn run_cli(args: Cli) -> Result<(), RunError> {
    args.draw.validate().map_err(RunError::Input)?;
    let params = run::read_parameters(&args.folder)?;
    let d = &args.draw;
    let need = resources::sampling_bytes(
        &params.config,
        if params.options.double { 8 } else { 4 },
        d.n,
        d.batch,
        if d.sampler.is_hmc() { d.chains } else { 0 },
    );
    resources::check_here(
        &format!(
            "sampling {} configurations of {} sites",
            d.n,
            params.config.mera.lattice.sites()
        ),
        need,
        args.device.is_gpu(),
    )
    .map_err(RunError::Input)?;
    dispatch(params.options.double, args.device, Job { args, params })?
}

struct Job {
    args: Cli,
    params: Parameters,
}

impl BackendJob for Job {
    type Output = Result<(), RunError>;
    fn run<B: FlowAutodiff>(self, device: B::Device) -> Self::Output {
        let Job { args, params } = self;
        let lattice = params.config.mera.lattice;
        let n_sites = lattice.sites();
        let trainer = run::load_trainer::<B>(&args.folder, &params.config, &device)?;
        let mut rng = StdRng::seed_from_u64(args.seed);
        let t0 = Instant::now();
        let progress = cli::Progress::new("sample", args.draw.work());
        let drawn = block_on(sample::draw(
            trainer.flow(),
            &trainer.target,
            &args.draw,
            &mut rng,
            &progress,
        ));
        let seconds = t0.elapsed().as_secs_f64();
        progress.stage("observables and files");
        let n = drawn.x.len() / n_sites;
        let spins = spins_from_fields(&drawn.x, &mut StdRng::seed_from_u64(args.seed ^ 0x5EED));
        let chained = args.draw.sampler.is_chain();
        // Metropolis-Hastings and heat-bath chains: one jackknife block per chain, so the errors
        // hold their spread.
        let blocks = if chained { args.draw.mh_chains } else { 20 };
        let obs = observables::measure_blocks(lattice, params.config.t, &drawn.x, &mut rng, blocks);
        let (m2s, energies): (Vec<f64>, Vec<f64>) = drawn
            .x
            .chunks(n_sites)
            .map(|x| observables::rao_blackwell(lattice, x))
            .unzip();
        // Integrated autocorrelation times of the energy and m^2, and the effective number of
        // independent configurations by the slower of the two.
        let tau = chained.then(|| Tau {
            energy: tau_int(&energies),
            m2: tau_int(&m2s),
            n,
        });
        let ln_zx = params.config.relaxation().ln_z_x;
        let convergence = chained.then(|| {
            sample::Convergence::judge(
                &energies,
                &m2s,
                args.draw.mh_chains,
                &drawn.log_w,
                ln_zx,
                args.draw.sampler.is_local(),
            )
        });
        let warnings = convergence.map(|c| c.warnings()).unwrap_or_default();

        let name = args.draw.sampler.name();
        let (samples_dir, pic) = match &args.out {
            Some(o) => (o.clone(), o.clone()),
            None => (args.folder.join("samples"), args.folder.join("pic")),
        };
        for dir in [&samples_dir, &pic] {
            std::fs::create_dir_all(dir)
                .map_err(|e| RunError::Io(format!("{}: {e}", dir.display())))?;
        }
        write_atomic(
            &samples_dir.join(format!("{name}_x.npy")),
            &npy_bytes(&drawn.x, n, n_sites, false),
        )?;
        write_atomic(
            &samples_dir.join(format!("{name}_spins.npy")),
            &npy_bytes(&spins, n, n_sites, true),
        )?;
        let shown = n.min(if lattice.dim() == 2 { 16 } else { 64 });
        let title = format!(
            "{name}: {shown} of {n} configurations, L={} T={:.4}",
            lattice.side(),
            params.config.t
        );
        plot::save(
            &pic.join(format!("samples_{name}")),
            (720, 760),
            &SpinFigure {
                lattice,
                spins: &spins[..shown * n_sites],
                title,
            },
        )
        .map_err(RunError::Io)?;

        progress.finish();
        if args.json {
            let o = &obs;
            let json = serde_json::json!({
                "sampler": name,
                "n": n,
                "acceptance": drawn.acceptance,
                "ess": drawn.ess,
                "tau_int": tau.map(|t| t.energy),
                "tau_int_m2": tau.map(|t| t.m2),
                "effective_samples": tau.map(|t| t.effective()),
                "ln_zx": drawn.ln_z.map(|z| serde_json::json!({"mean": z.0, "stderr": z.1, "exact": ln_zx})),
                "convergence": convergence,
                "converged": warnings.is_empty(),
                "warnings": warnings,
                "biased": args.draw.sampler == Sampler::Direct,
                "seconds": seconds,
                "log_q_probes": block_on(crate::analysis::log_q_probes(&trainer.flow_valid(), lattice)),
                "observables": {
                    "energy_per_site": o.energy_per_site, "abs_m": o.abs_m, "m2": o.m2,
                    "susceptibility": o.susceptibility, "specific_heat": o.specific_heat, "binder_u4": o.binder_u4,
                },
            });
            println!("{json}");
        } else {
            let chain = ChainReport { tau, convergence };
            print_table(name, n, &drawn, &chain, seconds, &obs, ln_zx);
        }
        for w in &warnings {
            eprintln!("warning: {w}");
        }
        if !warnings.is_empty() {
            eprintln!("warning: {}", sample::NOT_CONVERGED_ADVICE);
        }
        Ok(())
    }
}

/// Autocorrelation of a chain's measurements.
#[derive(Debug, Clone, Copy)]
struct Tau {
    energy: f64,
    m2: f64,
    /// Measurements.
    n: usize,
}

impl Tau {
    /// `n / tau_int` by the slower of the energy and `m^2`.
    fn effective(self) -> f64 {
        self.n as f64 / self.energy.max(self.m2)
    }
}

struct ChainReport {
    tau: Option<Tau>,
    convergence: Option<sample::Convergence>,
}

fn print_table(
    name: &str,
    n: usize,
    d: &Drawn,
    chain: &ChainReport,
    seconds: f64,
    o: &Observables,
    ln_zx: f64,
) {
    println!(
        "sampler {name}, {n} configurations in {seconds:.1} s ({:.0}/s)",
        n as f64 / seconds
    );
    if let Some(a) = d.acceptance {
        println!("acceptance          {a:.4}");
    }
    if let Some(t) = chain.tau {
        println!("tau_int (energy)    {:.2}", t.energy);
        println!("tau_int (m^2)       {:.2}", t.m2);
        println!("effective samples   {:.0}", t.effective());
    }
    if let Some(e) = d.ess {
        println!("ESS / proposals     {e:.4}");
    }
    if let Some((z, err)) = d.ln_z {
        println!("ln Z_x (importance) {z:.4} ± {err:.4}   exact {ln_zx:.4}");
    }
    if let Some(c) = chain.convergence {
        if c.missing_mass.is_nan() {
            println!("split R-hat         {:.4}", c.rhat);
        } else {
            println!(
                "split R-hat         {:.4}   mass not reached {:+.2}% ({:+.1} sigma)",
                c.rhat,
                100.0 * c.missing_mass,
                c.missing_sigma
            );
        }
    }
    let biased = name == "direct";
    if biased {
        println!("(direct samples are the flow's, not the target's: biased, so no sigma)");
    }
    println!(
        "{:<16} {:>12} {:>10} {:>12} {:>8}",
        "observable", "mean", "stderr", "exact", "sigma"
    );
    let row = |label: &str, e: &Estimate| {
        let (exact, sigma) = match e.exact {
            Some(x) if biased => (format!("{x:.6}"), "biased".into()),
            Some(x) => (
                format!("{x:.6}"),
                format!("{:+.1}", (e.mean - x) / e.stderr.max(1e-300)),
            ),
            None => ("-".into(), "".into()),
        };
        println!(
            "{label:<16} {:>12.6} {:>10.6} {exact:>12} {sigma:>8}",
            e.mean, e.stderr
        );
    };
    row("energy/site", &o.energy_per_site);
    row("|m|", &o.abs_m);
    row("m^2", &o.m2);
    row("susceptibility", &o.susceptibility);
    row("specific heat", &o.specific_heat);
    row("Binder U4", &o.binder_u4);
}
