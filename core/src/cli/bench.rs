//! Benchmark: seconds per training epoch, direct samples per second, peak memory and start-up
//! time (the first step, which compiles the GPU kernels) of the paper configuration
//! (symmetrized, batch 512) for each device and lattice size.
//!
//! Each measurement runs in a child process so that its peak memory (VmHWM) and its start-up
//! are its own.

use std::process::Command;
use std::time::Instant;

use crate::cli;
use crate::device::{BackendJob, DeviceKind, dispatch};
use crate::fused::FlowAutodiff;
use crate::fused::Kernel;
use crate::host::block_on;
use crate::lattice::T_C;
use crate::train::{TrainConfig, Trainer};
use clap::Parser;

/// Benchmark the paper configuration on CPU and GPU devices.
#[derive(Parser, Debug)]
#[command(version, about)]
struct Args {
    /// Lattice sizes to measure.
    #[arg(short = 'L', long, value_delimiter = ',', default_values_t = vec![4, 8, 16])]
    sizes: Vec<usize>,
    /// Devices to measure (cpu, cuda[:N], vulkan[:N], wgpu).
    #[arg(long, value_delimiter = ',', default_values_t = vec![DeviceKind::Cpu])]
    devices: Vec<DeviceKind>,
    /// Timed training epochs per measurement (after 2 warm-up epochs).
    #[arg(long, default_value_t = 10)]
    epochs: usize,
    /// Batch size.
    #[arg(long, default_value_t = 512)]
    batch: usize,
    /// Measure sampling instead of training: direct samples, independent Metropolis-Hastings
    /// and latent-space HMC (64 persistent chains, one measurement of 10 trajectories of 10
    /// leapfrog steps), in configurations per second.
    #[arg(long)]
    sampling: bool,
    /// Check each device against the CPU backend instead (training, sampling, log-density on
    /// a tiny flow; relative tolerance 1e-3) and print a table; exit code 1 if one disagrees.
    #[arg(long)]
    check: bool,
    /// Run the block layers with the reference tensor code instead of the fused kernels (the
    /// path they replace, for comparison).
    #[arg(long)]
    reference: bool,
    /// Measure data-parallel training instead: seconds per epoch of this many CPU replicas
    /// (`train --devices cpu:0,cpu:1,...`) against one device, with the same total batch.
    #[arg(long)]
    replicas: Option<usize>,
    /// Internal: run one measurement and print it as JSON.
    #[arg(long, hide = true, num_args = 2)]
    child: Option<Vec<String>>,
}

#[derive(serde::Serialize, serde::Deserialize)]
struct Row {
    backend: String,
    l: usize,
    params: usize,
    startup_s: f64,
    seconds_per_epoch: f64,
    samples_per_second: f64,
    peak_mb: f64,
}

fn peak_rss_mb() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok())
        })
        .map(|kb| kb / 1024.0)
        .unwrap_or(f64::NAN)
}

fn measure<B: FlowAutodiff>(
    device: B::Device,
    name: &str,
    l: usize,
    epochs: usize,
    batch: usize,
    kernel: Kernel,
) -> Row {
    let mut config = TrainConfig::paper(l, 2, T_C).expect("valid paper configuration");
    config.optimizer.batch = batch;
    let t0 = Instant::now();
    let mut trainer = Trainer::<B>::new(config.clone(), &device).expect("valid");
    trainer.set_kernel(kernel);
    block_on(trainer.step()).expect("finite loss");
    let startup_s = t0.elapsed().as_secs_f64();
    block_on(trainer.step()).expect("finite loss");
    let t0 = Instant::now();
    for _ in 0..epochs {
        block_on(trainer.step()).expect("finite loss");
    }
    let seconds_per_epoch = t0.elapsed().as_secs_f64() / epochs as f64;
    let flow = trainer.flow_valid();
    let mut rng = config.epoch_rng(0);
    let _ = flow.sample(&mut rng, batch).log_q.into_data();
    let t0 = Instant::now();
    let rounds = 3;
    for _ in 0..rounds {
        let _ = flow.sample(&mut rng, batch).log_q.into_data();
    }
    let samples_per_second = (rounds * batch) as f64 / t0.elapsed().as_secs_f64();
    Row {
        backend: name.into(),
        l,
        params: config.mera.num_params(),
        startup_s,
        seconds_per_epoch,
        samples_per_second,
        peak_mb: peak_rss_mb(),
    }
}

#[derive(serde::Serialize, serde::Deserialize)]
struct SamplingRow {
    backend: String,
    l: usize,
    direct: f64,
    mh: f64,
    hmc_latent: f64,
}

fn measure_sampling<B: FlowAutodiff>(
    device: B::Device,
    name: &str,
    l: usize,
    batch: usize,
    kernel: Kernel,
) -> SamplingRow {
    use crate::hmc::{Chains, HmcConfig, Space, Start};
    use crate::ising::Target;
    use crate::sample;
    let config = TrainConfig::paper(l, 2, T_C).expect("valid paper configuration");
    let mut trainer = Trainer::<B>::new(config.clone(), &device).expect("valid");
    trainer.set_kernel(kernel);
    let flow = trainer.flow_valid();
    let target = Target::<B::InnerBackend>::new(config.relaxation(), &device);
    let mut rng = config.epoch_rng(0);
    let n = 4 * batch;
    let _ = block_on(sample::direct(&flow, &target, &mut rng, batch, batch));
    let t0 = Instant::now();
    let _ = block_on(sample::direct(&flow, &target, &mut rng, n, batch));
    let direct = n as f64 / t0.elapsed().as_secs_f64();
    let t0 = Instant::now();
    let _ = block_on(sample::metropolis(&flow, &target, &mut rng, n, batch));
    let mh = n as f64 / t0.elapsed().as_secs_f64();
    let mut chains = Chains::<B>::new(Space::Latent, Start::Prior, trainer.flow(), &mut rng, 64);
    let t0 = Instant::now();
    let _ = block_on(chains.measure(
        trainer.flow(),
        &trainer.target,
        &mut rng,
        HmcConfig::default(),
    ));
    let hmc_latent = 64.0 / t0.elapsed().as_secs_f64();
    SamplingRow {
        backend: name.into(),
        l,
        direct,
        mh,
        hmc_latent,
    }
}

/// One measurement in a child process, as a JSON line.
struct Child {
    name: String,
    l: usize,
    epochs: usize,
    batch: usize,
    sampling: bool,
    kernel: Kernel,
}

impl BackendJob for Child {
    type Output = String;
    fn run<B: FlowAutodiff>(self, device: B::Device) -> String {
        if self.sampling {
            let row = measure_sampling::<B>(device, &self.name, self.l, self.batch, self.kernel);
            serde_json::to_string(&row).unwrap()
        } else {
            let row = measure::<B>(
                device,
                &self.name,
                self.l,
                self.epochs,
                self.batch,
                self.kernel,
            );
            serde_json::to_string(&row).unwrap()
        }
    }
}

pub fn main() {
    let args = Args::parse();
    if let Some(child) = &args.child {
        let job = Child {
            name: child[0].clone(),
            l: child[1].parse().expect("size"),
            epochs: args.epochs,
            batch: args.batch,
            sampling: args.sampling,
            kernel: if args.reference {
                Kernel::Reference
            } else {
                Kernel::Fused
            },
        };
        let device: DeviceKind = child[0].parse().expect("device");
        match dispatch(false, device, job) {
            Ok(json) => println!("{json}"),
            Err(e) => {
                eprintln!("error: {e}");
                std::process::exit(2);
            }
        }
        return;
    }
    if args.check {
        std::process::exit(check(&args.devices));
    }
    if let Some(replicas) = args.replicas {
        data_parallel(&args, replicas);
        return;
    }
    let threads = std::env::var("RAYON_NUM_THREADS").unwrap_or_else(|_| "all".into());
    let threads = format!(
        "{threads}; block layers: {}",
        if args.reference {
            "reference tensor code"
        } else {
            "fused kernels"
        }
    );
    let exe = std::env::current_exe().expect("own path");
    if args.sampling {
        println!(
            "sampling with the paper configuration (symmetrized), T = T_c, batch {}, threads: {threads}",
            args.batch
        );
        println!(
            "| backend | L | direct samples/s | MH samples/s | latent HMC samples/s (64 chains) |"
        );
        println!("|---|---|---|---|---|");
        let progress = cli::Progress::new("bench", (args.devices.len() * args.sizes.len()) as u64);
        for backend in &args.devices {
            let backend = &backend.to_string();
            for &l in &args.sizes {
                progress.stage(format!("sampling on {backend} at L={l}"));
                let out = Command::new(&exe)
                    .args([
                        "--sampling",
                        "--child",
                        backend,
                        &l.to_string(),
                        "--batch",
                        &args.batch.to_string(),
                    ])
                    .args(args.reference.then_some("--reference"))
                    .output()
                    .expect("run the measurement");
                progress.inc(1);
                match serde_json::from_str::<SamplingRow>(
                    String::from_utf8_lossy(&out.stdout).trim(),
                ) {
                    Ok(r) => progress.println(format!(
                        "| {} | {} | {:.0} | {:.0} | {:.1} |",
                        r.backend, r.l, r.direct, r.mh, r.hmc_latent
                    )),
                    Err(_) => progress.println(format!(
                        "| {backend} | {l} | failed: {} |",
                        String::from_utf8_lossy(&out.stderr)
                            .lines()
                            .last()
                            .unwrap_or("")
                    )),
                }
            }
        }
        progress.finish();
        return;
    }
    println!(
        "paper configuration (nlayers 10, nmlp 3, nhidden 10, nrepeat 1, symmetrized), T = T_c, batch {}, threads: {threads}",
        args.batch
    );
    println!(
        "| device | L | parameters | first step (s) | s/epoch | samples/s | peak host memory (MB) | peak GPU memory (MiB, nvidia-smi) |"
    );
    println!("|---|---|---|---|---|---|---|---|");
    let progress = cli::Progress::new("bench", (args.devices.len() * args.sizes.len()) as u64);
    for backend in &args.devices {
        let backend = &backend.to_string();
        for &l in &args.sizes {
            progress.stage(format!(
                "training on {backend} at L={l}: {} epochs",
                args.epochs
            ));
            let poller = GpuMemory::start();
            let out = Command::new(&exe)
                .args([
                    "--child",
                    backend,
                    &l.to_string(),
                    "--epochs",
                    &args.epochs.to_string(),
                    "--batch",
                    &args.batch.to_string(),
                ])
                .args(args.reference.then_some("--reference"))
                .output()
                .expect("run the measurement");
            progress.inc(1);
            let gpu_mb = poller.map_or("-".to_string(), |p| format!("{:.0}", p.peak_mb()));
            let line = String::from_utf8_lossy(&out.stdout);
            match serde_json::from_str::<Row>(line.trim()) {
                Ok(r) => progress.println(format!(
                    "| {} | {} | {} | {:.1} | {:.3} | {:.0} | {:.0} | {gpu_mb} |",
                    r.backend,
                    r.l,
                    r.params,
                    r.startup_s,
                    r.seconds_per_epoch,
                    r.samples_per_second,
                    r.peak_mb
                )),
                Err(_) => progress.println(format!(
                    "| {backend} | {l} | failed: {} |",
                    String::from_utf8_lossy(&out.stderr)
                        .lines()
                        .last()
                        .unwrap_or("")
                )),
            }
        }
    }
    progress.finish();
}

/// `bench --check`: each device against the CPU backend; the exit code.
fn check(devices: &[DeviceKind]) -> i32 {
    use crate::agreement::Agreement;
    println!(
        "largest relative difference from the CPU backend (tolerance {}), and of the fused block \
         layers from the reference tensor code on the device (outputs 1e-4, gradients 1e-3)",
        Agreement::TOLERANCE
    );
    println!(
        "| device | training | sampling | log-density | fused: outputs | fused: gradients | verdict |"
    );
    println!("|---|---|---|---|---|---|---|");
    let mut code = 0;
    for &device in devices {
        let result = crate::device::agreement(device)
            .and_then(|a| Ok((a, crate::device::kernel_agreement(device)?)));
        match result {
            Ok((a, k)) => {
                let holds = a.holds() && k.holds_f32();
                println!(
                    "| {device} | {:.1e} | {:.1e} | {:.1e} | {:.1e} | {:.1e} | {} |",
                    a.training,
                    a.sampling,
                    a.log_density,
                    k.outputs,
                    k.gradients,
                    if holds { "agrees" } else { "DISAGREES" }
                );
                if !holds {
                    code = 1;
                }
            }
            Err(e) => {
                println!(
                    "| {device} | - | - | - | - | - | unavailable: {} |",
                    e.reason
                );
                code = 1;
            }
        }
    }
    code
}

/// Peak GPU memory while a measurement runs, polled from `nvidia-smi` every 100 ms (NVIDIA
/// only): the largest `memory.used` above the value before the child started.
struct GpuMemory {
    child: std::process::Child,
    baseline: f64,
}

impl GpuMemory {
    fn used() -> Option<f64> {
        let out = Command::new("nvidia-smi")
            .args(["--query-gpu=memory.used", "--format=csv,noheader,nounits"])
            .output()
            .ok()?;
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .next()?
            .trim()
            .parse()
            .ok()
    }

    fn start() -> Option<Self> {
        let baseline = Self::used()?;
        let child = Command::new("nvidia-smi")
            .args([
                "--query-gpu=memory.used",
                "--format=csv,noheader,nounits",
                "-lms",
                "100",
            ])
            .stdout(std::process::Stdio::piped())
            .spawn()
            .ok()?;
        Some(Self { child, baseline })
    }

    fn peak_mb(mut self) -> f64 {
        let _ = self.child.kill();
        let out = self
            .child
            .wait_with_output()
            .map(|o| o.stdout)
            .unwrap_or_default();
        String::from_utf8_lossy(&out)
            .lines()
            .filter_map(|l| l.trim().parse::<f64>().ok())
            .fold(self.baseline, f64::max)
            - self.baseline
    }
}

/// `--replicas N`: one device against N CPU replicas, each a training run in a scratch folder
/// (checkpoint at the end only, no measurements), timed between epochs.
fn data_parallel(args: &Args, replicas: usize) {
    if replicas < 2 {
        eprintln!("error: --replicas {replicas} is not allowed: at least 2 (against one)");
        std::process::exit(2);
    }
    let threads = std::env::var("RAYON_NUM_THREADS").unwrap_or_else(|_| "all".into());
    println!(
        "data-parallel training on the CPU, paper configuration (symmetrized), T = T_c, batch {} in all, threads: {threads}",
        args.batch
    );
    println!(
        "| L | replicas | seconds per epoch (median of {}) | against one replica |",
        args.epochs
    );
    println!("|---|---|---|---|");
    let progress = cli::Progress::new("bench", 2 * args.sizes.len() as u64);
    for &l in &args.sizes {
        let mut one = f64::NAN;
        for n in [1, replicas] {
            progress.stage(format!("L={l}, {n} replica(s)"));
            let seconds = epoch_seconds(l, n, args);
            if n == 1 {
                one = seconds;
            }
            progress.println(format!(
                "| {l} | {n} | {seconds:.4} | {:.2}x |",
                seconds / one
            ));
            progress.inc(1);
        }
    }
}

/// The median seconds per epoch of a fresh run on `replicas` CPU replicas.
fn epoch_seconds(l: usize, replicas: usize, args: &Args) -> f64 {
    use crate::device::{DevicesJob, dispatch_all};
    use crate::run::{self, Parameters, RunOptions};
    let mut config = TrainConfig::paper(l, 2, T_C).expect("valid paper configuration");
    config.optimizer.batch = args.batch;
    let epochs = args.epochs + 2;
    let folder = std::env::temp_dir().join(format!(
        "neuralrg-bench-{}-L{l}-r{replicas}",
        std::process::id()
    ));
    let _ = std::fs::remove_dir_all(&folder);
    let params = Parameters {
        format: run::PARAMETERS_FORMAT,
        config,
        options: RunOptions {
            folder: folder.clone(),
            name: "bench".into(),
            epochs,
            save_period: epochs,
            device: DeviceKind::Cpu,
            double: false,
            skip_hmc: true,
            keep: 1,
            hmc_chains: 0,
            devices: (replicas > 1).then(|| {
                let list: Vec<String> = (0..replicas).map(|i| format!("cpu:{i}")).collect();
                list.join(",").parse().expect("a valid list")
            }),
            init: None,
        },
        backend: String::new(),
        version: env!("CARGO_PKG_VERSION").into(),
    };
    struct Job(Parameters);
    impl DevicesJob for Job {
        type Output = Vec<f64>;
        fn run<B: FlowAutodiff>(self, devices: Vec<B::Device>) -> Vec<f64> {
            let mut times = Vec::new();
            let mut last = Instant::now();
            let on_epoch = |_: &crate::train::EpochStats, _: &Trainer<B>| {
                times.push(last.elapsed().as_secs_f64());
                last = Instant::now();
            };
            let result = if devices.len() > 1 {
                crate::parallel::train::<B>(self.0, false, devices, on_epoch)
            } else {
                run::open::<B>(&self.0, false, &devices[0])
                    .and_then(|opened| run::train::<B>(opened, self.0, on_epoch))
            };
            result.expect("the benchmark run trains");
            times
        }
    }
    let devices = vec![DeviceKind::Cpu; replicas];
    let times = dispatch_all(false, &devices, Job(params)).expect("the CPU is there");
    let _ = std::fs::remove_dir_all(&folder);
    let mut timed = times[2..].to_vec();
    timed.sort_by(f64::total_cmp);
    timed[timed.len() / 2]
}
