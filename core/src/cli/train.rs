//! `train`: trains NeuralRG on the Ising relaxation and writes a run folder.
//!
//! The original's single-dash options work verbatim (`-epochs 5000 -L 16 -symmetry`), as do
//! the usual `--epochs` spellings.

use std::path::PathBuf;
use std::process::ExitCode;

use crate::cli;
use crate::device::{DeviceKind, DeviceList, DevicesJob, dispatch_all};
use crate::fused::FlowAutodiff;
use crate::parallel;
use crate::resources;
use crate::run::{self, Parameters, RunError, RunOptions};
use crate::train::{Recipe, ScheduleKind, TrainConfig};
use clap::Parser;
use indicatif::{ProgressBar, ProgressStyle};

/// Samples of a run that sets no --epochs: 600 epochs of the recipe's batch of 128, 150 of the
/// paper's 512.
const DEFAULT_SAMPLES: usize = 76_800;

/// Train NeuralRG (Li & Wang, PRL 121, 260601): a MERA-structured RealNVP flow fitted to the
/// Hubbard-Stratonovich relaxation of the Ising model by minimizing the variational free energy.
///
/// Defaults: the paper's network (nlayers 10, nmlp 3, nhidden 10, nrepeat 1, symmetrized) on an
/// 8x8 lattice at T_c, trained with neuralrg's recipe (batch 128, Adam lr 2e-3 without weight
/// decay on a cosine schedule; --recipe paper for the paper's) for 76,800 samples (600 epochs).
/// Single-dash long options (-epochs, -savePeriod, ...) are accepted as in the original code.
#[derive(Parser, Debug)]
#[command(version, allow_negative_numbers = true, args_override_self = true)]
struct Cli {
    /// Run folder (default: runs/<name>, name from the settings).
    #[arg(long)]
    folder: Option<PathBuf>,
    /// Name of the run (a label, and the folder name under runs/ when --folder is not given).
    #[arg(long)]
    name: Option<String>,
    /// Total epochs, one Adam step on a fresh batch each [default: 76,800 samples' worth, 600
    /// at batch 128 and 150 at 512; with --load: the stored value].
    #[arg(long)]
    epochs: Option<usize>,
    /// Save a checkpoint every this many epochs (the last epoch is always saved) [default: 50;
    /// with --load: the stored value].
    #[arg(long = "save-period", alias = "savePeriod")]
    save_period: Option<usize>,
    /// Checkpoints to keep in savings/ (the newest ones) [with --load: the stored value].
    #[arg(long, default_value_t = crate::folder::DEFAULT_KEEP)]
    keep: usize,
    /// Train in f64 (on the CPU; f32 is the default).
    #[arg(long)]
    double: bool,
    /// Resume the run in --folder from its newest good checkpoint. Options that change the model,
    /// the target or the sample stream are refused unless they match the run's; --epochs,
    /// --save-period, --keep, --device, --lr, --clip, --double, --skip-hmc and --hmc-chains take
    /// effect and are written to parameters.json; options not given keep their stored values.
    #[arg(long)]
    load: bool,
    /// Warm start: begin a new run from the newest good checkpoint of this run folder (or this
    /// checkpoint file), a model of the same network trained at another temperature or with
    /// another optimizer, with this run's settings, a fresh optimizer and epoch 0 (stored in
    /// parameters.json).
    #[arg(long, value_name = "RUN_FOLDER", conflicts_with = "load")]
    init: Option<PathBuf>,
    /// Training recipe of a new run: the defaults of the optimizer settings (--batch, --lr,
    /// --weight-decay, --schedule, --warmup); each one given on the command line still wins.
    /// neuralrg: batch 128, lr 2e-3, no weight decay, a cosine schedule warmed up over 4 % of the
    /// epochs (with the paper's samples and a sweep's warm starts, below the paper's L=16 numbers
    /// at all seven temperatures; README). paper: the paper's batch 512, lr 1e-3, weight decay
    /// 1e-3 at a constant rate. With --load, checked against the run like those settings.
    #[arg(long, value_enum, default_value_t = Recipe::default())]
    recipe: Recipe,
    /// Z2-symmetrize the flow (the default; the flag is accepted as in the original).
    #[arg(long = "symmetry", overrides_with = "symmetry")]
    symmetry_on: bool,
    /// Skip the measurements every savePeriod epochs (records/measurements.csv: Metropolis-Hastings
    /// on one batch of proposals, observables with errors, ESS, and the acceptance of persistent
    /// latent-space HMC chains).
    #[arg(long = "skip-hmc", alias = "skipHMC")]
    skip_hmc: bool,
    /// Persistent latent-space HMC chains of those measurements (0: no HMC, Metropolis-Hastings
    /// only).
    #[arg(long = "hmc-chains", alias = "hmcChains", default_value_t = run::DEFAULT_HMC_CHAINS)]
    hmc_chains: usize,
    /// Compute device: cpu (Burn's Flex backend; also `flex`), cuda[:N], vulkan[:N] or wgpu
    /// [with --load: the stored value].
    #[arg(long, default_value_t = DeviceKind::Cpu)]
    device: DeviceKind,
    /// Train one model data-parallel on these devices of one backend, comma-separated: cpu:0,cpu:1
    /// (replica threads on the CPU), cuda:0,cuda:1 or vulkan:0,vulkan:1. Each replica draws its
    /// share of every epoch's batch; gradients are summed with Burn's collective all-reduce
    /// [with --load: the stored value].
    #[arg(long, conflicts_with = "device")]
    devices: Option<DeviceList>,
    // The training settings, declared with their defaults in `TrainConfig`.
    #[command(
        flatten,
        next_help_heading = "Training settings (stored in parameters.json)"
    )]
    config: TrainConfig,
}

/// Whether the setting of this `parameters.json` name was given on the command line: its own
/// option (clap ids are the settings' names), for the schedule one of its group's options, for
/// an optimizer setting `--recipe`.
fn given_setting(given: &cli::Given, name: &str) -> bool {
    given.contains(name)
        || (given.contains("recipe")
            && ["batch", "lr", "weight_decay", "clip", "schedule"].contains(&name))
        || (name == "schedule" && given.contains("warmup"))
        || (name == "symmetry" && given.contains("symmetry_on"))
}

pub fn main() -> ExitCode {
    cli::main_given(run_cli)
}

/// `config` with each optimizer setting that was not given on the command line taken from
/// `recipe` (the options' own defaults are the default recipe's).
fn with_recipe(mut config: TrainConfig, recipe: Recipe, given: &cli::Given) -> TrainConfig {
    let (ours, mut optimizer) = (config.optimizer, recipe.optimizer());
    if given.contains("batch") {
        optimizer.batch = ours.batch;
    }
    if given.contains("lr") {
        optimizer.lr = ours.lr;
    }
    if given.contains("weight_decay") {
        optimizer.weight_decay = ours.weight_decay;
    }
    if given.contains("clip") {
        optimizer.clip = ours.clip;
    }
    if given.contains("schedule") {
        optimizer.schedule.kind = ours.schedule.kind;
    }
    if given.contains("warmup") {
        optimizer.schedule.warmup = ours.schedule.warmup;
    }
    config.optimizer = optimizer;
    config
}

/// With `--load`: the stored parameters with the options given on this command line applied,
/// and what changed ("epochs 150 -> 300"). Given options that would change the model, the
/// target or the sample stream are refused, naming each.
fn resumed(
    mut stored: Parameters,
    cli: &Cli,
    given: &cli::Given,
    config: &TrainConfig,
) -> Result<(Parameters, Vec<String>), RunError> {
    let mut refused = Vec::new();
    let mut changes = Vec::new();
    for d in config.differences(&stored.config) {
        if !given_setting(given, &d.name) {
            continue;
        }
        if TrainConfig::RESUMABLE.contains(&d.name.as_str()) {
            changes.push(format!("{} {} -> {}", d.name, d.b, d.a));
        } else {
            refused.push(format!("{} = {} (the run has {})", d.name, d.a, d.b));
        }
    }
    if !refused.is_empty() {
        return Err(RunError::Input(format!(
            "--load cannot change what the run in {} is: {}; drop those options, or train a new run in another folder",
            stored.options.folder.display(),
            refused.join(", ")
        )));
    }
    if given_setting(given, "lr") {
        stored.config.optimizer.lr = config.optimizer.lr;
    }
    if given_setting(given, "clip") {
        stored.config.optimizer.clip = config.optimizer.clip;
    }
    let o = &mut stored.options;
    // Each run option given on the command line replaces the stored one.
    macro_rules! take {
        ($id:literal, $name:literal, $field:ident, $value:expr) => {
            if given.contains($id) {
                let (old, new) = (o.$field.to_string(), $value.to_string());
                if old != new {
                    changes.push(format!("{} {old} -> {new}", $name));
                }
                o.$field = $value;
            }
        };
    }
    take!("epochs", "epochs", epochs, cli.epochs.expect("given"));
    take!(
        "save_period",
        "savePeriod",
        save_period,
        cli.save_period.expect("given")
    );
    take!("keep", "keep", keep, cli.keep);
    take!("device", "device", device, cli.device);
    take!("double", "double", double, cli.double);
    take!("skip_hmc", "skipHMC", skip_hmc, cli.skip_hmc);
    take!("hmc_chains", "hmc_chains", hmc_chains, cli.hmc_chains);
    Ok((stored, changes))
}

fn run_cli(cli: Cli, given: cli::Given) -> Result<(), RunError> {
    let config = with_recipe(cli.config.clone(), cli.recipe, &given);
    config
        .validate()
        .map_err(|e| RunError::Input(e.to_string()))?;
    if cli.keep == 0 {
        return Err(RunError::Input(
            "keep = 0 is not allowed: keep at least 1 checkpoint".into(),
        ));
    }
    if cli.epochs == Some(0) {
        return Err(RunError::Input(
            "epochs = 0 is not allowed: an integer >= 1 (the total number of epochs)".into(),
        ));
    }
    if cli.save_period == Some(0) {
        return Err(RunError::Input(
            "savePeriod = 0 is not allowed: an integer >= 1".into(),
        ));
    }
    let name = cli.name.clone().unwrap_or_else(|| config.run_name());
    let folder = cli
        .folder
        .clone()
        .unwrap_or_else(|| PathBuf::from("runs").join(&name));
    let params = if cli.load {
        let mut stored = run::read_parameters(&folder)?;
        stored.options.folder = folder.clone();
        let config = config.for_run(cli.epochs.unwrap_or(stored.options.epochs));
        let (params, changes) = resumed(stored, &cli, &given, &config)?;
        eprintln!(
            "neuralrg: resuming the run in {}{}",
            folder.display(),
            if changes.is_empty() {
                " with its stored settings".to_string()
            } else {
                format!(" with {} (written to parameters.json)", changes.join(", "))
            }
        );
        params
    } else {
        eprintln!("neuralrg: new run in {}", folder.display());
        let epochs = cli
            .epochs
            .unwrap_or_else(|| DEFAULT_SAMPLES.div_ceil(config.optimizer.batch));
        Parameters {
            format: run::PARAMETERS_FORMAT,
            config: config.for_run(epochs),
            options: RunOptions {
                folder: folder.clone(),
                name,
                epochs,
                save_period: cli.save_period.unwrap_or(run::DEFAULT_SAVE_PERIOD),
                device: cli.device,
                double: cli.double,
                skip_hmc: cli.skip_hmc,
                keep: cli.keep,
                hmc_chains: cli.hmc_chains,
                devices: cli.devices.clone(),
                init: cli.init.clone(),
            },
            backend: String::new(),
            version: env!("CARGO_PKG_VERSION").into(),
        }
    };
    if let Some(epochs) = params.config.optimizer.schedule.epochs
        && params.config.optimizer.schedule.kind == ScheduleKind::Cosine
        && params.options.epochs > epochs
    {
        return Err(RunError::Input(format!(
            "epochs = {} is past the end of this run's cosine schedule (epoch {epochs}, where \
             the learning rate reaches 0): at most {epochs}, or train on from it as a new run \
             with its own schedule: train --init {} --epochs N --folder NEW",
            params.options.epochs,
            params.options.folder.display()
        )));
    }
    params
        .config
        .validate()
        .map_err(|e| RunError::Input(e.to_string()))?;
    let mut params = params;
    if cli.load && given.contains("devices") {
        params.options.devices = cli.devices.clone();
    } else if cli.load && given.contains("device") {
        params.options.devices = None;
    }
    let double = params.options.double;
    let devices = match &params.options.devices {
        Some(list) => list.devices(),
        None => vec![params.options.device],
    };
    if let Some(list) = &params.options.devices {
        params.options.device = devices[0];
        eprintln!("neuralrg: data-parallel on {list}");
    }
    check_memory(&params.config, double, devices[0])?;
    run::stop_on_signals()?;
    dispatch_all(
        double,
        &devices,
        Go {
            params,
            resume: cli.load,
        },
    )?
}

/// Refuses a training configuration that cannot fit in this machine's memory (CPU; a GPU's
/// allocator reports its own limit).
pub(crate) fn check_memory(
    config: &TrainConfig,
    double: bool,
    device: DeviceKind,
) -> Result<(), RunError> {
    let need = resources::training_bytes(config, if double { 8 } else { 4 });
    let what = format!(
        "training at L={} d={} with batch {}",
        config.mera.lattice.side(),
        config.mera.lattice.dim(),
        config.optimizer.batch
    );
    resources::check_here(&what, need, device.is_gpu()).map_err(RunError::Input)
}

struct Go {
    params: Parameters,
    resume: bool,
}

impl DevicesJob for Go {
    type Output = Result<(), RunError>;
    fn run<B: FlowAutodiff>(self, devices: Vec<B::Device>) -> Self::Output {
        go::<B>(self.params, self.resume, devices)
    }
}

fn go<B: FlowAutodiff>(
    mut params: Parameters,
    resume: bool,
    devices: Vec<B::Device>,
) -> Result<(), RunError> {
    params.backend = B::name(&devices[0]);
    params.version = env!("CARGO_PKG_VERSION").into();
    params.format = run::PARAMETERS_FORMAT;
    // The epoch training resumes at (data-parallel runs open the folder themselves).
    let start = if resume {
        run::checkpoints(&params.options.folder)
            .last()
            .map_or(0, |c| c.0)
    } else {
        0
    };
    let rel = params.config.relaxation();
    let c = &params.config;
    eprintln!(
        "neuralrg: L={} d={} T={} on {} ({}), {} parameters, bound -ln Z_x = {:.6}",
        c.mera.lattice.side(),
        c.mera.lattice.dim(),
        c.t,
        params.backend,
        if params.options.double { "f64" } else { "f32" },
        c.mera.num_params(),
        rel.loss_bound()
    );
    let bar = ProgressBar::new(params.options.epochs as u64);
    bar.set_position(start as u64);
    if params.options.device.is_gpu() {
        // The first step compiles every fused kernel (minutes with an empty cache).
        bar.set_message("compiling GPU kernels (first step; cached for the next run)");
        bar.enable_steady_tick(std::time::Duration::from_millis(500));
    }
    bar.set_style(
        ProgressStyle::with_template(
            "{bar:30} {pos}/{len} epochs  {msg}  [{elapsed_precise} < {eta_precise}]",
        )
        .expect("valid template"),
    );
    let folder = params.options.folder.clone();
    let on_epoch = |s: &crate::train::EpochStats, _: &_| {
        bar.set_position(s.epoch as u64);
        bar.set_message(format!(
            "F = {:.4} ± {:.4}  rel.err = {:.3}%",
            s.f,
            s.f_stderr,
            100.0 * s.relative_error
        ));
    };
    let summary = if params.options.devices.is_some() {
        parallel::train::<B>(params, resume, devices, on_epoch)
    } else {
        let opened = run::open::<B>(&params, resume, &devices[0])?;
        run::train::<B>(opened, params, on_epoch)
    };
    bar.finish_and_clear();
    let s = summary.map_err(|e| match e {
        RunError::Interrupted(msg) => RunError::Interrupted(format!(
            "{msg}; resume with: train --load --folder {}",
            folder.display()
        )),
        e => e,
    })?;
    println!("epochs            {}", s.epochs);
    println!(
        "F (last {:>3})      {:.6} ± {:.6}",
        s.window, s.f, s.f_stderr
    );
    println!("bound -ln Z_x     {:.6}", s.loss_bound);
    println!("relative error    {:.4} %", 100.0 * s.relative_error);
    println!("seconds/epoch     {:.3}", s.seconds_per_epoch);
    println!("run folder        {}", s.folder.display());
    Ok(())
}
