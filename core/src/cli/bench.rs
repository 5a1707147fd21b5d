//! Benchmark: seconds per training epoch, direct samples per second and peak memory of the
//! paper configuration (symmetrized, batch 512) for each CPU backend and lattice size.
//!
//! Each measurement runs in a child process so that its peak memory (VmHWM) is its own.

use std::process::Command;
use std::time::Instant;

use burn::backend::{Autodiff, Flex, NdArray};
use burn::tensor::backend::AutodiffBackend;
use clap::Parser;
use neuralrg::lattice::T_C;
use neuralrg::train::{TrainConfig, Trainer};

/// Benchmark the paper configuration on the CPU backends.
#[derive(Parser, Debug)]
#[command(version, about)]
struct Args {
    /// Lattice sizes to measure.
    #[arg(short = 'L', long, value_delimiter = ',', default_values_t = vec![4, 8, 16])]
    sizes: Vec<usize>,
    /// Backends to measure (flex, ndarray).
    #[arg(long, value_delimiter = ',', default_values_t = vec!["flex".to_string(), "ndarray".to_string()])]
    backends: Vec<String>,
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
    /// Internal: run one measurement and print it as JSON.
    #[arg(long, hide = true, num_args = 2)]
    child: Option<Vec<String>>,
}

#[derive(serde::Serialize, serde::Deserialize)]
struct Row {
    backend: String,
    l: usize,
    params: usize,
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

fn measure<B: AutodiffBackend>(name: &str, l: usize, epochs: usize, batch: usize) -> Row {
    let device = B::Device::default();
    let mut config = TrainConfig::paper(l, 2, T_C).expect("valid paper configuration");
    config.batch = batch;
    let mut trainer = Trainer::<B>::new(config.clone(), &device).expect("valid");
    for _ in 0..2 {
        trainer.step().expect("finite loss");
    }
    let t0 = Instant::now();
    for _ in 0..epochs {
        trainer.step().expect("finite loss");
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
        params: config.mera().num_params(),
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

fn measure_sampling<B: AutodiffBackend>(name: &str, l: usize, batch: usize) -> SamplingRow {
    use neuralrg::hmc::{Chains, HmcConfig, Space};
    use neuralrg::ising::Target;
    use neuralrg::sample;
    let device = B::Device::default();
    let config = TrainConfig::paper(l, 2, T_C).expect("valid paper configuration");
    let trainer = Trainer::<B>::new(config.clone(), &device).expect("valid");
    let flow = trainer.flow_valid();
    let target = Target::<B::InnerBackend>::new(config.relaxation(), &device);
    let mut rng = config.epoch_rng(0);
    let n = 4 * batch;
    let _ = sample::direct(&flow, &target, &mut rng, batch, batch);
    let t0 = Instant::now();
    let _ = sample::direct(&flow, &target, &mut rng, n, batch);
    let direct = n as f64 / t0.elapsed().as_secs_f64();
    let t0 = Instant::now();
    let _ = sample::metropolis(&flow, &target, &mut rng, n, batch);
    let mh = n as f64 / t0.elapsed().as_secs_f64();
    let mut chains = Chains::<B>::new(Space::Latent, trainer.flow(), &mut rng, 64);
    let t0 = Instant::now();
    let _ = chains.measure(
        trainer.flow(),
        &trainer.target,
        &mut rng,
        HmcConfig::default(),
    );
    let hmc_latent = 64.0 / t0.elapsed().as_secs_f64();
    SamplingRow {
        backend: name.into(),
        l,
        direct,
        mh,
        hmc_latent,
    }
}

fn main() {
    let args = Args::parse();
    if let Some(child) = &args.child {
        let l: usize = child[1].parse().expect("size");
        if args.sampling {
            let row = match child[0].as_str() {
                "flex" => measure_sampling::<Autodiff<Flex>>("flex", l, args.batch),
                _ => measure_sampling::<Autodiff<NdArray>>("ndarray", l, args.batch),
            };
            println!("{}", serde_json::to_string(&row).unwrap());
            return;
        }
        let row = match child[0].as_str() {
            "flex" => measure::<Autodiff<Flex>>("flex", l, args.epochs, args.batch),
            _ => measure::<Autodiff<NdArray>>("ndarray", l, args.epochs, args.batch),
        };
        println!("{}", serde_json::to_string(&row).unwrap());
        return;
    }
    let threads = std::env::var("RAYON_NUM_THREADS").unwrap_or_else(|_| "all".into());
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
        for backend in &args.backends {
            for &l in &args.sizes {
                let out = Command::new(&exe)
                    .args([
                        "--sampling",
                        "--child",
                        backend,
                        &l.to_string(),
                        "--batch",
                        &args.batch.to_string(),
                    ])
                    .output()
                    .expect("run the measurement");
                match serde_json::from_str::<SamplingRow>(
                    String::from_utf8_lossy(&out.stdout).trim(),
                ) {
                    Ok(r) => println!(
                        "| {} | {} | {:.0} | {:.0} | {:.1} |",
                        r.backend, r.l, r.direct, r.mh, r.hmc_latent
                    ),
                    Err(_) => println!(
                        "| {backend} | {l} | failed: {} |",
                        String::from_utf8_lossy(&out.stderr)
                            .lines()
                            .last()
                            .unwrap_or("")
                    ),
                }
            }
        }
        return;
    }
    println!(
        "paper configuration (nlayers 10, nmlp 3, nhidden 10, nrepeat 1, symmetrized), T = T_c, batch {}, threads: {threads}",
        args.batch
    );
    println!("| backend | L | parameters | s/epoch | samples/s | peak memory (MB) |");
    println!("|---|---|---|---|---|---|");
    for backend in &args.backends {
        for &l in &args.sizes {
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
                .output()
                .expect("run the measurement");
            let line = String::from_utf8_lossy(&out.stdout);
            match serde_json::from_str::<Row>(line.trim()) {
                Ok(r) => println!(
                    "| {} | {} | {} | {:.3} | {:.0} | {:.0} |",
                    r.backend, r.l, r.params, r.seconds_per_epoch, r.samples_per_second, r.peak_mb
                ),
                Err(_) => println!(
                    "| {backend} | {l} | failed: {} |",
                    String::from_utf8_lossy(&out.stderr)
                        .lines()
                        .last()
                        .unwrap_or("")
                ),
            }
        }
    }
}
