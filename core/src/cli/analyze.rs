//! `analyze`: looks inside a trained run, as in the paper's figure: receptive fields of latent
//! sites at each RG level, and mutual-information matrices of the latent and physical variables.
//!
//! Writes `pic/receptive_fields.{png,svg}`, `pic/mutual_information.{png,svg}` and the numbers
//! behind them as CSV in `records/` (or in `--out`).

use std::fmt::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;

use crate::analysis::{self, LookConfig, ReceptiveField};
use crate::cli;
use crate::device::{BackendJob, DeviceKind, dispatch};
use crate::fused::FlowAutodiff;
use crate::host::block_on;
use crate::lattice::Lattice;
use crate::plot::{self, MiFigure, ReceptiveFigure};
use crate::resources;
use crate::run::{self, RunError, write_atomic};
use crate::sample;
use clap::Parser;
use rand::SeedableRng;
use rand::rngs::StdRng;
use rand_distr::{Distribution, StandardNormal};

/// Look inside a trained NeuralRG run: receptive fields dx/dz_k of latent sites per RG level
/// (centre, edge and corner by default) and mutual-information matrices of the latent variables
/// z = g^-1(x) and of the physical variables x, with x samples of the target: the final states
/// of independent Metropolis-Hastings chains with the flow as proposal. For a symmetrized flow, x
/// is mapped through the branch (sign) that gives it the larger density.
#[derive(Parser, Debug)]
#[command(version, args_override_self = true)]
struct Cli {
    /// Run folder written by `train`.
    #[arg(long)]
    folder: PathBuf,
    /// Latent site ROW,COL (COL alone in 1D) whose receptive field to draw; repeat for more.
    /// Default: centre, edge and corner sites of every RG level.
    #[arg(long = "site", value_name = "ROW,COL")]
    sites: Vec<String>,
    // How much sampling, declared with its defaults in `LookConfig`.
    #[command(flatten)]
    look: LookConfig,
    /// Also estimate mutual information with the Kraskov (KSG) k-nearest-neighbour estimator.
    #[arg(long)]
    ksg: bool,
    /// Samples used by the KSG estimator (the first ones; its cost grows as samples x log(samples) per pair).
    #[arg(long = "ksg-samples", default_value_t = 1000)]
    ksg_samples: usize,
    /// Neighbours of the KSG estimator.
    #[arg(long, default_value_t = 3)]
    k: usize,
    /// Also show the mutual information of the outputs of the first LAYER block layers
    /// (infer direction; 0 is x, the number of layers is z).
    #[arg(long)]
    layer: Option<usize>,
    /// Output folder (default: the run's pic/ and records/).
    #[arg(long)]
    out: Option<PathBuf>,
    /// Seed of the samples.
    #[arg(long, default_value_t = 7)]
    seed: u64,
    /// Compute device: cpu (Burn's Flex backend; also `flex`), cuda[:N], vulkan[:N] or wgpu.
    #[arg(long, default_value_t = DeviceKind::Cpu)]
    device: DeviceKind,
}

pub fn main() -> ExitCode {
    cli::main(run_cli)
}

fn parse_site(text: &str, lattice: Lattice) -> Result<usize, RunError> {
    let l = lattice.side();
    let nums: Result<Vec<usize>, _> = text.split(',').map(|p| p.trim().parse::<usize>()).collect();
    let bad = || {
        RunError::Input(format!(
            "site {text:?} is not allowed: give ROW,COL with rows and columns from 0 to {} (COL alone in 1D)",
            l - 1
        ))
    };
    let (row, col) = match (nums.map_err(|_| bad())?.as_slice(), lattice.dim()) {
        (&[row, col], 2) => (row, col),
        (&[col], 1) | (&[0, col], 1) => (0, col),
        _ => return Err(bad()),
    };
    if row >= l || col >= l {
        return Err(RunError::Input(format!(
            "site ({row},{col}) is outside the {} lattice: rows and columns go from 0 to {}",
            if lattice.dim() == 2 {
                format!("{l}x{l}")
            } else {
                format!("{l}-site")
            },
            l - 1
        )));
    }
    Ok(lattice.index(row, col))
}

fn run_cli(args: Cli) -> Result<(), RunError> {
    args.look.validate().map_err(RunError::Input)?;
    if args.k == 0 {
        return Err(RunError::Input(
            "k = 0 is not allowed: an integer >= 1".into(),
        ));
    }
    if args.ksg && args.ksg_samples.min(args.look.samples) <= args.k {
        return Err(RunError::Input(format!(
            "ksg-samples = {} is not allowed: more than k = {} samples are needed",
            args.ksg_samples, args.k
        )));
    }
    let params = run::read_parameters(&args.folder)?;
    let need = resources::analysis_bytes(
        &params.config,
        if params.options.double { 8 } else { 4 },
        args.look.samples,
        args.look.jacobian_samples,
    );
    resources::check_here(
        &format!(
            "analyzing {} samples of {} sites",
            args.look.samples,
            params.config.mera.lattice.sites()
        ),
        need,
        args.device.is_gpu(),
    )
    .map_err(RunError::Input)?;
    dispatch(params.options.double, args.device, Go { args, params })?
}

struct Go {
    args: Cli,
    params: run::Parameters,
}

impl BackendJob for Go {
    type Output = Result<(), RunError>;
    fn run<B: FlowAutodiff>(self, device: B::Device) -> Self::Output {
        go::<B>(self.args, self.params, device)
    }
}

fn csv_matrix(m: &[f64], vars: usize) -> String {
    let mut s = String::new();
    for row in m.chunks(vars) {
        let line: Vec<String> = row.iter().map(|v| format!("{v:.6e}")).collect();
        s.push_str(&line.join(","));
        s.push('\n');
    }
    s
}

fn go<B: FlowAutodiff>(
    args: Cli,
    params: run::Parameters,
    device: B::Device,
) -> Result<(), RunError> {
    let lattice = params.config.mera.lattice;
    let n = lattice.sites();
    let trainer = run::load_trainer::<B>(&args.folder, &params.config, &device)?;
    let chosen: Vec<usize> = args
        .sites
        .iter()
        .map(|s| parse_site(s, lattice))
        .collect::<Result<_, _>>()?;
    if let Some(layer) = args.layer.filter(|&l| l > trainer.flow().mera.num_layers()) {
        return Err(RunError::Input(format!(
            "layer = {layer} is not allowed: the network has {} block layers",
            trainer.flow().mera.num_layers()
        )));
    }
    let (pic, records) = match &args.out {
        Some(out) => (out.clone(), out.clone()),
        None => (args.folder.join("pic"), args.folder.join("records")),
    };
    for dir in [&pic, &records] {
        std::fs::create_dir_all(dir)
            .map_err(|e| RunError::Io(format!("{}: {e}", dir.display())))?;
    }
    let mut rng = StdRng::seed_from_u64(args.seed);

    // Stages: receptive fields, target samples, Gaussian MI, (layers), (KSG), figures.
    let stages = 4 + u64::from(args.layer.is_some()) + u64::from(args.ksg);
    let progress = cli::Progress::new("analyze", stages);
    progress.stage(format!(
        "receptive fields at {} latent samples",
        args.look.jacobian_samples
    ));
    // Receptive fields at latent samples from the prior.
    let z: Vec<f64> = (0..args.look.jacobian_samples * n)
        .map(|_| StandardNormal.sample(&mut rng))
        .collect();
    let labelled: Vec<(String, usize)> = if chosen.is_empty() {
        analysis::representative_sites(lattice)
            .into_iter()
            .flat_map(|(_, s)| s.into_iter().map(|(l, k)| (l.to_string(), k)))
            .collect()
    } else {
        chosen.iter().map(|&k| ("chosen".to_string(), k)).collect()
    };
    let sites: Vec<usize> = labelled.iter().map(|(_, k)| *k).collect();
    let fields = block_on(analysis::receptive_fields(
        trainer.flow(),
        lattice,
        &z,
        &sites,
    ));
    let fields: Vec<(String, ReceptiveField)> =
        labelled.into_iter().map(|(l, _)| l).zip(fields).collect();
    let mut csv = String::from("latent_row,latent_col,level,label,row,col,dx_dz\n");
    for (label, f) in &fields {
        let (lr, lc) = lattice.coords(f.site);
        for (i, v) in f.values.iter().enumerate() {
            let (r, c) = lattice.coords(i);
            let _ = writeln!(csv, "{lr},{lc},{},{label},{r},{c},{v:.6e}", f.level);
        }
    }
    write_atomic(&records.join("receptive_fields.csv"), csv.as_bytes())?;
    let levels = fields
        .iter()
        .map(|(_, f)| f.level)
        .collect::<std::collections::BTreeSet<_>>()
        .len();
    let per_row = fields.len().div_ceil(levels.max(1)).max(1) as u32;
    plot::save(
        &pic.join("receptive_fields"),
        (260 * per_row, 250 * levels as u32 + 30),
        &ReceptiveFigure {
            lattice,
            fields: &fields,
        },
    )
    .map_err(RunError::Io)?;

    progress.inc(1);
    progress.stage(format!(
        "{} Metropolis-Hastings chains of {} proposals",
        args.look.samples, args.look.mh_steps
    ));
    // Exact samples of the target by independent Metropolis-Hastings, and their latents.
    let flow = trainer.flow_valid();
    let target = crate::ising::Target::<B::InnerBackend>::new(params.config.relaxation(), &device);
    let chain = block_on(sample::metropolis_parallel(
        &flow,
        &target,
        &mut rng,
        args.look.samples,
        args.look.mh_steps,
        512,
    ));
    let zs = block_on(analysis::latents(&flow, &chain.x));
    let layer_out = match args.layer {
        Some(layer) => block_on(analysis::layer_outputs(&flow, &chain.x, layer)),
        None => Vec::new(),
    };
    progress.inc(1);
    progress.stage("mutual information (Gaussian)");
    let mi_z = analysis::mi_gaussian(&zs, n);
    let mi_x = analysis::mi_gaussian(&chain.x, n);
    let (mz, mx) = (
        analysis::mean_off_diagonal(&mi_z, n),
        analysis::mean_off_diagonal(&mi_x, n),
    );
    // (file stem, caption, matrix)
    let mut panels = vec![
        (
            "mi_z_gaussian".to_string(),
            format!("latent z, Gaussian, mean {mz:.4}"),
            mi_z,
        ),
        (
            "mi_x_gaussian".to_string(),
            format!("physical x, Gaussian, mean {mx:.4}"),
            mi_x,
        ),
    ];
    if let Some(layer) = args.layer {
        progress.inc(1);
        progress.stage(format!("mutual information after {layer} layers"));
        let m = analysis::mi_gaussian(&layer_out, n);
        let caption = format!(
            "after {layer} layers, Gaussian, mean {:.4}",
            analysis::mean_off_diagonal(&m, n)
        );
        panels.push((format!("mi_layer{layer}_gaussian"), caption, m));
    }
    if args.ksg {
        progress.inc(1);
        progress.stage(format!(
            "mutual information (KSG, {} samples)",
            args.ksg_samples
        ));
        let s = args.ksg_samples.min(args.look.samples) * n;
        for (stem, name, data) in [
            ("mi_z_ksg", "latent z", &zs),
            ("mi_x_ksg", "physical x", &chain.x),
        ] {
            let m = analysis::mi_ksg(&data[..s], n, args.k);
            let caption = format!(
                "{name}, KSG k={}, mean {:.4}",
                args.k,
                analysis::mean_off_diagonal(&m, n)
            );
            panels.push((stem.to_string(), caption, m));
        }
    }
    progress.inc(1);
    progress.stage("figures and records");
    for (stem, _, m) in &panels {
        write_atomic(
            &records.join(format!("{stem}.csv")),
            csv_matrix(m, n).as_bytes(),
        )?;
    }
    let panels: Vec<(String, Vec<f64>)> = panels
        .into_iter()
        .map(|(_, caption, m)| (caption, m))
        .collect();
    plot::save(
        &pic.join("mutual_information"),
        (430 * panels.len() as u32, 460),
        &MiFigure {
            panels: &panels,
            vars: n,
        },
    )
    .map_err(RunError::Io)?;
    progress.inc(1);
    progress.finish();

    println!(
        "Metropolis-Hastings  {} chains x {} proposals, acceptance {:.3}, {} chains never moved",
        args.look.samples, args.look.mh_steps, chain.acceptance, chain.stuck
    );
    println!("mean off-diagonal mutual information (Gaussian estimate):");
    println!("  latent z    {mz:.5}");
    println!("  physical x  {mx:.5}");
    println!("  ratio z/x   {:.4}", mz / mx);
    println!(
        "figures       {}/receptive_fields.{{png,svg}}, {}/mutual_information.{{png,svg}}",
        pic.display(),
        pic.display()
    );
    println!(
        "numbers       {}/receptive_fields.csv, {}/mi_*.csv",
        records.display(),
        records.display()
    );
    Ok(())
}
