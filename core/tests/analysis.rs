//! Looking inside: Jacobian columns against finite differences, mutual-information estimators
//! on Gaussians with known answers, latent against physical mutual information after training,
//! and the `analyze` command end to end.

use std::process::Command;

mod common;
use common::{Jitter, assert_refused};

use burn::backend::{Autodiff, Flex};
use burn::module::{AutodiffModule, Module};
use burn::tensor::{Tensor, TensorData};
use neuralrg::analysis::{
    latents, mean_off_diagonal, mi_gaussian, mi_ksg, receptive_fields, rg_picture,
};
use neuralrg::flow::Flow;
use neuralrg::host::block_on;
use neuralrg::ising::Target;
use neuralrg::lattice::{Lattice, T_C};
use neuralrg::mera::MeraConfig;
use neuralrg::sample;
use neuralrg::train::{TrainConfig, Trainer};
use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};
use rand_distr::{Distribution, StandardNormal};

#[test]
fn jacobian_columns_match_central_differences() {
    if !common::f64_process("jacobian_columns_match_central_differences") {
        return;
    }
    type B = Autodiff<Flex>;
    for (l, d) in [(4, 2), (8, 1)] {
        let lattice = Lattice::new(l, d).unwrap();
        let n = lattice.sites();
        let config = MeraConfig {
            lattice,
            depth: None,
            nrepeat: 1,
            nlayers: 4,
            nmlp: 2,
            nhidden: 8,
        };
        let flow = Flow::<B> {
            mera: config.init(3, &Default::default()),
            symmetric: false,
        }
        .map(&mut Jitter(StdRng::seed_from_u64(1), 0.3));
        let mut rng = StdRng::seed_from_u64(2);
        let z: Vec<f64> = (0..n).map(|_| StandardNormal.sample(&mut rng)).collect();
        let sites: Vec<usize> = vec![0, n / 2 + 1, n - 1];
        let fields = block_on(receptive_fields(&flow, lattice, &z, &sites));
        let eps = 1e-6;
        for f in &fields {
            let mut rows = z.clone();
            rows.extend(z.iter().copied());
            rows[f.site] += eps;
            rows[n + f.site] -= eps;
            let zt =
                Tensor::<Flex, 2>::from_data(TensorData::new(rows, [2, n]), &Default::default());
            let x: Vec<f64> = flow
                .valid()
                .mera
                .generate(zt)
                .0
                .into_data()
                .iter::<f64>()
                .collect();
            for i in 0..n {
                let fd = (x[i] - x[n + i]) / (2.0 * eps);
                assert!(
                    (fd - f.values[i]).abs() < 1e-6,
                    "L={l} d={d} k={} i={i}: {} vs {fd}",
                    f.site,
                    f.values[i]
                );
            }
            assert_eq!(f.level, lattice.rg_level(f.site));
        }
    }
}

fn bivariate(rho: f64, samples: usize, seed: u64) -> Vec<f64> {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut data = Vec::with_capacity(2 * samples);
    for _ in 0..samples {
        let (a, b): (f64, f64) = (
            StandardNormal.sample(&mut rng),
            StandardNormal.sample(&mut rng),
        );
        data.extend([a, rho * a + (1.0 - rho * rho).sqrt() * b]);
    }
    data
}

/// Tolerances: the Gaussian estimate within 0.02 nats, KSG (k = 3) within 0.04 nats, at 3000
/// samples (their standard deviations there are about 0.01 and 0.015 nats).
#[test]
fn mutual_information_estimators_recover_known_values() {
    for (seed, rho) in [0.0f64, 0.3, 0.6, 0.9, -0.7].into_iter().enumerate() {
        let exact = -0.5 * (1.0 - rho * rho).ln();
        let data = bivariate(rho, 3000, seed as u64);
        let g = mi_gaussian(&data, 2)[1];
        let k = mi_ksg(&data, 2, 3)[1];
        println!("rho {rho:+.1}: exact {exact:.4}, Gaussian {g:.4}, KSG {k:.4}");
        assert!(
            (g - exact).abs() < 0.02,
            "Gaussian estimate {g} vs {exact} at rho {rho}"
        );
        assert!(
            (k - exact).abs() < 0.04,
            "KSG estimate {k} vs {exact} at rho {rho}"
        );
    }
    // Independent, non-Gaussian variables: both near zero.
    let mut rng = StdRng::seed_from_u64(9);
    let data: Vec<f64> = (0..6000)
        .map(|_| rng.random_range(-1.0f64..1.0).powi(3))
        .collect();
    assert!(mi_gaussian(&data, 2)[1].abs() < 0.02);
    assert!(mi_ksg(&data, 2, 3)[1].abs() < 0.04);
}

#[test]
fn the_trained_flow_removes_most_mutual_information() {
    let mut config = TrainConfig::paper(8, 2, T_C).unwrap();
    config.optimizer.batch = 256;
    let mut trainer = Trainer::<Autodiff<Flex>>::new(config.clone(), &Default::default()).unwrap();
    for _ in 0..60 {
        block_on(trainer.step()).unwrap();
    }
    let flow = trainer.flow_valid();
    let target = Target::<Flex>::new(config.relaxation(), &Default::default());
    let n = config.mera.lattice.sites();
    let chain = block_on(sample::metropolis_parallel(
        &flow,
        &target,
        &mut StdRng::seed_from_u64(5),
        3000,
        10,
        500,
    ));
    let x = Tensor::<Flex, 2>::from_data(
        TensorData::new(chain.x.clone(), [3000, n]),
        &Default::default(),
    );
    let z: Vec<f64> = flow.latent(x).into_data().iter::<f64>().collect();
    let (mz, mx) = (
        mean_off_diagonal(&mi_gaussian(&z, n), n),
        mean_off_diagonal(&mi_gaussian(&chain.x, n), n),
    );
    println!(
        "acceptance {:.3}; mean off-diagonal MI: latent {mz:.5}, physical {mx:.5}, ratio {:.3}",
        chain.acceptance,
        mz / mx
    );
    assert!(
        mz < 0.1 * mx,
        "latent MI {mz} is not clearly below physical MI {mx}"
    );
}

fn run(bin: &str, args: &[&str]) -> std::process::Output {
    Command::new(bin).args(args).output().expect("run binary")
}

#[test]
fn analyze_writes_figures_and_refuses_bad_input() {
    let dir = std::env::temp_dir().join(format!("neuralrg-analyze-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let folder = dir.to_str().unwrap();
    let out = run(
        env!("CARGO_BIN_EXE_train"),
        &[
            "-L", "4", "-nlayers", "2", "-nhidden", "4", "-batch", "64", "-epochs", "3", "-folder",
            folder,
        ],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let analyze = env!("CARGO_BIN_EXE_analyze");
    let out = run(
        analyze,
        &[
            "--folder",
            folder,
            "--samples",
            "300",
            "--ksg",
            "--ksg-samples",
            "200",
            "--layer",
            "2",
        ],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for name in ["receptive_fields", "mutual_information"] {
        let png = dir.join("pic").join(format!("{name}.png"));
        let img = image::open(&png).unwrap_or_else(|e| panic!("{}: {e}", png.display()));
        assert!(img.width() > 100 && img.height() > 100);
        let svg = std::fs::read_to_string(dir.join("pic").join(format!("{name}.svg"))).unwrap();
        assert!(
            svg.starts_with("<svg") && svg.contains("<rect"),
            "{name}.svg"
        );
    }
    let csv = std::fs::read_to_string(dir.join("records/receptive_fields.csv")).unwrap();
    assert_eq!(
        csv.lines().count(),
        1 + 2 * 3 * 16,
        "2 levels x 3 sites x 16 values"
    );
    for stem in [
        "mi_z_gaussian",
        "mi_x_gaussian",
        "mi_layer2_gaussian",
        "mi_z_ksg",
        "mi_x_ksg",
    ] {
        let m = std::fs::read_to_string(dir.join("records").join(format!("{stem}.csv"))).unwrap();
        assert_eq!(m.lines().count(), 16, "{stem}");
    }
    for (args, needle) in [
        (
            vec!["--folder", folder, "--site", "4,0"],
            "site (4,0) is outside the 4x4 lattice",
        ),
        (vec!["--folder", folder, "--site", "a,b"], "site \"a,b\""),
        (
            vec!["--folder", dir.join("nothing-here").to_str().unwrap()],
            "parameters.json",
        ),
    ] {
        assert_refused(&run(analyze, &args), needle);
    }
}

/// The RG picture's bookkeeping: each level works on the sublattice of side L / 2^k, passes a
/// quarter of it (1D: half) on, and what it decimates plus what the last level passes on are
/// exactly the latent variables `z`, each site once.
#[test]
fn the_rg_picture_decimates_every_latent_variable_once() {
    type B = Flex;
    for (l, d, nrepeat, depth, symmetric) in [
        (4, 2, 1, None, false),
        (8, 2, 2, Some(2), true),
        (16, 1, 1, None, true),
    ] {
        let lattice = Lattice::new(l, d).unwrap();
        let n = lattice.sites();
        let config = MeraConfig {
            lattice,
            depth,
            nrepeat,
            nlayers: 4,
            nmlp: 2,
            nhidden: 8,
        };
        let flow = Flow::<B> {
            mera: config.init(5, &Default::default()),
            symmetric,
        }
        .map(&mut Jitter(StdRng::seed_from_u64(4), 0.3));
        let mut rng = StdRng::seed_from_u64(9);
        let x: Vec<f64> = (0..n).map(|_| rng.random_range(-2.0..2.0)).collect();
        let picture = block_on(rg_picture(&flow, &config, &x));
        let z = block_on(latents(&flow, &x));
        let case = format!("L={l} d={d} nrepeat={nrepeat} depth={depth:?}");
        assert_eq!(picture.levels.len(), config.depth(), "{case}");
        if !symmetric {
            let off = picture.x.iter().zip(&x).map(|(a, b)| (a - b).abs());
            assert!(
                off.fold(0.0, f64::max) < 1e-6,
                "{case}: x is the configuration (f32)"
            );
        }
        let mut seen = vec![None; n];
        let mut put = |site: usize, v: f64| {
            assert!(seen[site].is_none(), "{case}: site {site} twice");
            seen[site] = Some(v);
        };
        for (k, level) in picture.levels.iter().enumerate() {
            let h = 1 << k;
            assert_eq!(level.side, l / h, "{case}, level {k}");
            let rows = if d == 2 { level.side } else { 1 };
            assert_eq!(
                level.decimated.len(),
                rows * level.side,
                "{case}, level {k}"
            );
            let kept = level.decimated.iter().filter(|v| v.is_nan()).count();
            assert_eq!(kept, level.kept.len(), "{case}, level {k}");
            assert_eq!(kept * if d == 2 { 4 } else { 2 }, level.decimated.len());
            for (i, &v) in level.decimated.iter().enumerate() {
                if !v.is_nan() {
                    let (r, c) = (i / level.side, i % level.side);
                    put(lattice.index(r * h, c * h), v);
                }
            }
        }
        let last = picture.levels.last().unwrap();
        let (h, side) = (l / (last.side / 2), last.side / 2);
        for (i, &v) in last.kept.iter().enumerate() {
            put(lattice.index((i / side) * h, (i % side) * h), v);
        }
        for (site, v) in seen.iter().enumerate() {
            let v = v.unwrap_or_else(|| panic!("{case}: site {site} never decimated"));
            assert!(
                (v - z[site]).abs() <= 1e-5 * (1.0 + z[site].abs()),
                "{case}: site {site}: picture {v}, latent {}",
                z[site]
            );
        }
    }
}
