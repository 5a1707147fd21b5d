//! `sample`: draws configurations from a trained run with a chosen sampler and measures the
//! Ising observables with error bars, beside exact values where they are known.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use crate::cli;
use crate::device::{BackendJob, DeviceKind, dispatch};
use crate::fused::FlowAutodiff;
use crate::hmc::{Chains, HmcConfig, Space, Start};
use crate::ising::Target;
use crate::observables::{self, Estimate, Observables, spins_from_fields};
use crate::plot::{self, SpinFigure};
use crate::resources;
use crate::run::{self, Parameters, RunError, write_atomic};
use crate::sample::{self, npy_bytes};
use crate::stats::tau_int;
use clap::{Parser, ValueEnum};
use rand::SeedableRng;
use rand::rngs::StdRng;

/// `--hmc-start`'s values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum HmcStart {
    Prior,
    Flow,
}

/// How configurations are drawn.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Sampler {
    /// Independent samples of the flow (biased by q != p; importance weights reported).
    Direct,
    /// Independent Metropolis-Hastings with the flow as proposal (exact).
    Mh,
    /// HMC on the latent variables z (exact).
    HmcLatent,
    /// HMC on the physical fields x (exact).
    HmcPhysical,
}

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
    /// Run folder written by `train`.
    #[arg(long)]
    folder: PathBuf,
    /// Sampler.
    #[arg(long, value_enum, default_value_t = Sampler::Mh)]
    sampler: Sampler,
    /// Number of configurations.
    #[arg(short = 'n', long = "n", default_value_t = 20000)]
    n: usize,
    /// Independent Metropolis-Hastings chains (n is split over them; the spread between them
    /// enters the errors, and split R-hat tells whether they agree).
    #[arg(long = "mh-chains", default_value_t = 8)]
    mh_chains: usize,
    /// Persistent HMC chains (n is split over them after --burn-in discarded measurements).
    #[arg(long, default_value_t = 64)]
    chains: usize,
    /// HMC measurements (of 10 trajectories each) discarded while the chains find the target.
    #[arg(long = "burn-in", default_value_t = 10)]
    burn_in: usize,
    /// Where HMC chains start: `prior` (N(0, I) in either space, as the original) or `flow`
    /// (physical chains warm-started at flow samples).
    #[arg(long = "hmc-start", value_enum, default_value_t = HmcStart::Prior)]
    hmc_start: HmcStart,
    /// Flow samples drawn per batch.
    #[arg(long, default_value_t = 512)]
    batch: usize,
    /// Print the table as one JSON object.
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
    for (name, v) in [
        ("n", args.n),
        ("chains", args.chains),
        ("mh-chains", args.mh_chains),
        ("batch", args.batch),
    ] {
        if v == 0 {
            return Err(RunError::Input(format!(
                "{name} = 0 is not allowed: an integer >= 1"
            )));
        }
    }
    let params = run::read_parameters(&args.folder)?;
    let hmc = matches!(args.sampler, Sampler::HmcLatent | Sampler::HmcPhysical);
    let need = resources::sampling_bytes(
        &params.config,
        if params.options.double { 8 } else { 4 },
        args.n,
        args.batch,
        if hmc { args.chains } else { 0 },
    );
    resources::check_here(
        &format!(
            "sampling {} configurations of {} sites",
            args.n,
            params.config.lattice.sites()
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

/// What a sampler returns: fields in measurement order and what it knows about itself.
struct Drawn {
    x: Vec<f64>,
    acceptance: Option<f64>,
    ess: Option<f64>,
    ln_z: Option<(f64, f64)>,
    /// Log-weights of the flow's proposals (empty for HMC).
    log_w: Vec<f64>,
}

impl BackendJob for Job {
    type Output = Result<(), RunError>;
    fn run<B: FlowAutodiff>(self, device: B::Device) -> Self::Output {
        let Job { args, params } = self;
        let lattice = params.config.lattice;
        let n_sites = lattice.sites();
        let trainer = run::load_trainer::<B>(&args.folder, &params.config, &device)?;
        let mut rng = StdRng::seed_from_u64(args.seed);
        let flow = trainer.flow_valid();
        let target = Target::<B::InnerBackend>::new(params.config.relaxation(), &device);
        let t0 = Instant::now();
        let hmc = matches!(args.sampler, Sampler::HmcLatent | Sampler::HmcPhysical);
        let progress = cli::Progress::new(
            "sample",
            if hmc {
                (args.n.div_ceil(args.chains) + args.burn_in) as u64
            } else {
                args.n as u64
            },
        );
        // Flow proposals a few batches at a time (the same stream as one call), for the progress.
        let draw = |rng: &mut StdRng| {
            progress.stage(format!("{} flow samples", args.n));
            let mut d = sample::Direct {
                x: Vec::with_capacity(args.n * n_sites),
                log_w: Vec::with_capacity(args.n),
            };
            while d.log_w.len() < args.n {
                let k = (8 * args.batch).min(args.n - d.log_w.len());
                let part = sample::direct(&flow, &target, rng, k, args.batch);
                d.x.extend(part.x);
                d.log_w.extend(part.log_w);
                progress.inc(k as u64);
            }
            d
        };
        let drawn = match args.sampler {
            Sampler::Direct => {
                let d = draw(&mut rng);
                Drawn {
                    ess: Some(sample::ess_fraction(&d.log_w)),
                    ln_z: Some(sample::importance_ln_z(&d.log_w)),
                    log_w: d.log_w,
                    x: d.x,
                    acceptance: None,
                }
            }
            Sampler::Mh => {
                let d = draw(&mut rng);
                progress.stage(format!("{} Metropolis-Hastings chains", args.mh_chains));
                let c = sample::metropolis_chains(d, n_sites, args.mh_chains, &mut rng);
                Drawn {
                    ess: Some(sample::ess_fraction(&c.proposal_log_w)),
                    ln_z: Some(sample::importance_ln_z(&c.proposal_log_w)),
                    log_w: c.proposal_log_w,
                    x: c.x,
                    acceptance: Some(c.acceptance),
                }
            }
            Sampler::HmcLatent | Sampler::HmcPhysical => {
                let space = if args.sampler == Sampler::HmcLatent {
                    Space::Latent
                } else {
                    Space::Physical
                };
                let start = match args.hmc_start {
                    HmcStart::Prior => Start::Prior,
                    HmcStart::Flow => Start::Flow,
                };
                let mut chains =
                    Chains::<B>::new(space, start, trainer.flow(), &mut rng, args.chains);
                let measurements = args.n.div_ceil(args.chains);
                let (mut x, mut acc) = (
                    Vec::with_capacity(measurements * args.chains * n_sites),
                    0.0,
                );
                progress.stage(format!(
                    "{} HMC chains, {} burn-in and {measurements} measurements",
                    args.chains, args.burn_in
                ));
                for m in 0..measurements + args.burn_in {
                    progress.inc(1);
                    let (xs, a) = chains.measure(
                        trainer.flow(),
                        &trainer.target,
                        &mut rng,
                        HmcConfig::default(),
                    );
                    if m >= args.burn_in {
                        x.extend(xs);
                        acc += a / measurements as f64;
                    }
                }
                // Chain after chain, so that consecutive rows are one chain's time series: the
                // jackknife blocks then span whole chains and their autocorrelation.
                let x = chain_major(&x, measurements, args.chains, n_sites);
                let x = x[..(args.n * n_sites).min(x.len())].to_vec();
                Drawn {
                    x,
                    acceptance: Some(acc),
                    ess: None,
                    ln_z: None,
                    log_w: Vec::new(),
                }
            }
        };
        let seconds = t0.elapsed().as_secs_f64();
        progress.stage("observables and files");
        let n = drawn.x.len() / n_sites;
        let spins = spins_from_fields(&drawn.x, &mut StdRng::seed_from_u64(args.seed ^ 0x5EED));
        let mh = args.sampler == Sampler::Mh;
        // Metropolis-Hastings: one jackknife block per chain, so the errors hold their spread.
        let blocks = if mh { args.mh_chains } else { 20 };
        let obs = observables::measure_blocks(lattice, params.config.t, &drawn.x, &mut rng, blocks);
        let (m2s, energies): (Vec<f64>, Vec<f64>) = drawn
            .x
            .chunks(n_sites)
            .map(|x| observables::rao_blackwell(lattice, x))
            .unzip();
        let tau = mh.then(|| tau_int(&energies));
        let ln_zx = params.config.relaxation().ln_z_x;
        let convergence = mh.then(|| {
            sample::Convergence::judge(&energies, &m2s, args.mh_chains, &drawn.log_w, ln_zx)
        });
        let warnings = convergence.map(|c| c.warnings()).unwrap_or_default();

        let name = args
            .sampler
            .to_possible_value()
            .expect("no skipped values")
            .get_name()
            .to_string();
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
                "tau_int": tau,
                "ln_zx": drawn.ln_z.map(|z| serde_json::json!({"mean": z.0, "stderr": z.1, "exact": ln_zx})),
                "convergence": convergence,
                "converged": warnings.is_empty(),
                "warnings": warnings,
                "biased": args.sampler == Sampler::Direct,
                "seconds": seconds,
                "observables": {
                    "energy_per_site": o.energy_per_site, "abs_m": o.abs_m, "m2": o.m2,
                    "susceptibility": o.susceptibility, "specific_heat": o.specific_heat, "binder_u4": o.binder_u4,
                },
            });
            println!("{json}");
        } else {
            let chain = ChainReport { tau, convergence };
            print_table(&name, n, &drawn, &chain, seconds, &obs, ln_zx);
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

/// Reorders states `[measurement][chain][site]` to `[chain][measurement][site]`.
fn chain_major(x: &[f64], measurements: usize, chains: usize, sites: usize) -> Vec<f64> {
    let mut out = Vec::with_capacity(x.len());
    for c in 0..chains {
        for m in 0..measurements {
            let at = (m * chains + c) * sites;
            out.extend_from_slice(&x[at..at + sites]);
        }
    }
    out
}

/// What a Metropolis-Hastings run knows about its chains.
struct ChainReport {
    tau: Option<f64>,
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
        println!("tau_int (energy)    {t:.2}");
    }
    if let Some(e) = d.ess {
        println!("ESS / proposals     {e:.4}");
    }
    if let Some((z, err)) = d.ln_z {
        println!("ln Z_x (importance) {z:.4} ± {err:.4}   exact {ln_zx:.4}");
    }
    if let Some(c) = chain.convergence {
        println!(
            "split R-hat         {:.4}   mass not reached {:+.2}% ({:+.1} sigma)",
            c.rhat,
            100.0 * c.missing_mass,
            c.missing_sigma
        );
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

#[cfg(test)]
mod tests {
    #[test]
    fn chain_major_puts_each_chain_s_states_together() {
        // Two measurements of three chains, one site: m0c0 m0c1 m0c2 m1c0 m1c1 m1c2.
        let x = [0.0, 1.0, 2.0, 3.0, 4.0, 5.0];
        assert_eq!(
            super::chain_major(&x, 2, 3, 1),
            [0.0, 3.0, 1.0, 4.0, 2.0, 5.0]
        );
    }
}
