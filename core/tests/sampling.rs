//! Samplers against exact answers on a 1D Gaussian-like target: the relaxation of the Ising
//! ring, for which `x | s ~ N(K s, K)`, so `E[x] = 0` and `Cov(x) = K + K C K` with the exact
//! spin correlations `C_jk = (t^r + t^(L-r)) / (1 + t^L)`, `t = tanh(1/T)`, `r = |j - k|`.

use burn::backend::{Autodiff, Flex};
use neuralrg::hmc::{Chains, HmcConfig, Space, Start};
use neuralrg::host::block_on;
use neuralrg::sample;
use neuralrg::stats::{mean_error, mean_error_correlated};
use neuralrg::train::{TrainConfig, Trainer};
use rand::SeedableRng;
use rand::rngs::StdRng;

type B = Autodiff<Flex>;

const L: usize = 8;
const T: f64 = 2.5;

/// Exact `E[mean_i x_i^2]` and `Var(mean_i x_i)` of the ring's relaxation.
fn exact_moments(config: &TrainConfig) -> (f64, f64) {
    let k = config.relaxation().dense_k();
    let t = (1.0 / T).tanh();
    let c = |j: usize, l: usize| {
        let r = j.abs_diff(l);
        (t.powi(r as i32) + t.powi((L - r) as i32)) / (1.0 + t.powi(L as i32))
    };
    let mut cov = k.clone();
    for i in 0..L {
        for j in 0..L {
            cov[i * L + j] += (0..L)
                .flat_map(|a| (0..L).map(move |b| (a, b)))
                .map(|(a, b)| k[i * L + a] * c(a, b) * k[b * L + j])
                .sum::<f64>();
        }
    }
    let var_site = (0..L).map(|i| cov[i * L + i]).sum::<f64>() / L as f64;
    let var_mean = cov.iter().sum::<f64>() / (L * L) as f64;
    (var_site, var_mean)
}

/// Per sample: `(mean_i x_i, mean_i x_i^2, (mean_i x_i)^2)`.
fn features(x: &[f64]) -> Vec<(f64, f64, f64)> {
    x.chunks(L)
        .map(|s| {
            let m = s.iter().sum::<f64>() / L as f64;
            (m, s.iter().map(|v| v * v).sum::<f64>() / L as f64, m * m)
        })
        .collect()
}

fn trained() -> (TrainConfig, Trainer<B>) {
    let mut config = TrainConfig::paper(L, 1, T).unwrap();
    (
        config.mera.nlayers,
        config.mera.nhidden,
        config.optimizer.batch,
    ) = (4, 8, 256);
    let mut trainer = Trainer::<B>::new(config.clone(), &Default::default()).unwrap();
    for _ in 0..300 {
        block_on(trainer.step()).unwrap();
    }
    (config, trainer)
}

/// Within 3 sigma of the exact value, with an error bar below 10 % of the quantity's `scale`.
fn check(
    failures: &mut Vec<String>,
    name: &str,
    what: &str,
    got: (f64, f64),
    exact: f64,
    scale: f64,
) {
    println!(
        "{name:>12} {what:>14}: {:.4} ± {:.4} (exact {exact:.4})",
        got.0, got.1
    );
    if (got.0 - exact).abs() >= 3.0 * got.1 {
        failures.push(format!(
            "{name} {what}: {} ± {} vs exact {exact}",
            got.0, got.1
        ));
    }
    if got.1 >= 0.1 * scale {
        failures.push(format!(
            "{name} {what}: error bar {} too wide to test anything",
            got.1
        ));
    }
}

/// [`check`] of `<mean x>`, `<x_i^2>` and `<(mean x)^2>` against the exact `(var_site,
/// var_mean)`, each estimated as `(mean, stderr)` by `estimate` from its per-sample feature.
fn check_moments(
    failures: &mut Vec<String>,
    name: &str,
    (var_site, var_mean): (f64, f64),
    estimate: impl Fn(fn(&(f64, f64, f64)) -> f64) -> (f64, f64),
) {
    check(
        failures,
        name,
        "<mean x>",
        estimate(|v| v.0),
        0.0,
        var_mean.sqrt(),
    );
    check(
        failures,
        name,
        "<x_i^2>",
        estimate(|v| v.1),
        var_site,
        var_site,
    );
    check(
        failures,
        name,
        "<(mean x)^2>",
        estimate(|v| v.2),
        var_mean,
        var_mean,
    );
}

#[test]
fn metropolis_and_hmc_recover_exact_moments() {
    let (config, trainer) = trained();
    let exact = exact_moments(&config);
    let mut failures = Vec::new();
    let target = trainer.target.clone();
    let flow = trainer.flow();

    // Independent Metropolis-Hastings: one long chain, errors with the autocorrelation time.
    let valid = trainer.flow_valid();
    let valid_target =
        neuralrg::ising::Target::<Flex>::new(config.relaxation(), &Default::default());
    let chain = block_on(sample::metropolis(
        &valid,
        &valid_target,
        &mut StdRng::seed_from_u64(1),
        20_000,
        1000,
    ));
    println!("MH acceptance {:.3}", chain.acceptance);
    assert!(chain.acceptance > 0.2, "acceptance {}", chain.acceptance);
    let f = features(&chain.x);
    check_moments(&mut failures, "MH", exact, |g| {
        let me = mean_error_correlated(&f.iter().map(g).collect::<Vec<_>>());
        (me.mean, me.stderr)
    });

    // A heat-bath sweep before each flow proposal, and the heat bath alone: independent chains,
    // per-chain time averages after burn-in.
    for (name, proposals) in [("MH+sweeps", true), ("heat bath", false)] {
        let local = sample::LocalMh {
            chains: 32,
            steps: 600,
            burn_in: 20,
            sweeps: 1,
            proposals,
            batch: 1000,
        };
        let chain = block_on(sample::metropolis_local(
            &valid,
            &valid_target,
            &mut StdRng::seed_from_u64(4),
            &local,
            &(),
        ));
        if proposals {
            println!("{name}: acceptance {:.3}", chain.acceptance);
            assert!(chain.acceptance > 0.2, "acceptance {}", chain.acceptance);
        }
        assert_eq!(chain.x.len(), local.chains * local.steps * L);
        let f = features(&chain.x);
        check_moments(&mut failures, name, exact, |g| {
            let means: Vec<f64> = f
                .chunks(local.steps)
                .map(|c| c.iter().map(g).sum::<f64>() / local.steps as f64)
                .collect();
            let me = mean_error(&means);
            (me.mean, me.stderr)
        });
    }

    // HMC in both spaces: independent chains, per-chain time averages after burn-in.
    for space in [Space::Physical, Space::Latent] {
        let mut rng = StdRng::seed_from_u64(2);
        // Physical chains from the prior N(0, I), as the original: burn-in finds the target.
        let mut chains = Chains::<B>::new(space, Start::Prior, flow, &mut rng, 128);
        let (mut sums, mut acc) = (vec![(0.0, 0.0, 0.0); 128], 0.0);
        let (burn, measurements) = (10, 12);
        for t in 0..burn + measurements {
            let (x, a) = block_on(chains.measure(flow, &target, &mut rng, HmcConfig::default()));
            if t >= burn {
                acc += a / measurements as f64;
                for (s, v) in sums.iter_mut().zip(features(&x)) {
                    (s.0, s.1, s.2) = (s.0 + v.0, s.1 + v.1, s.2 + v.2);
                }
            }
        }
        println!("HMC {space:?} acceptance {acc:.3}");
        assert!(acc > 0.3, "{space:?} acceptance {acc}");
        check_moments(&mut failures, &format!("HMC {space:?}"), exact, |g| {
            let me = mean_error(
                &sums
                    .iter()
                    .map(|s| g(s) / measurements as f64)
                    .collect::<Vec<_>>(),
            );
            (me.mean, me.stderr)
        });
    }
    assert!(failures.is_empty(), "{failures:#?}");
}

/// A proposal that overflows (a huge leapfrog step sends `q` to infinity) is rejected and leaves
/// its chain exactly where it was: finite, not NaN.
#[test]
fn a_rejected_overflowing_proposal_leaves_its_chain_untouched() {
    let config = TrainConfig::from_query("L=4&d=2&nlayers=2&nmlp=1&nhidden=4&batch=8").unwrap();
    let trainer = Trainer::<B>::new(config, &Default::default()).unwrap();
    let (flow, target) = (trainer.flow(), trainer.target.clone());
    for space in [Space::Physical, Space::Latent] {
        let mut rng = StdRng::seed_from_u64(5);
        let mut chains = Chains::<B>::new(space, Start::Flow, flow, &mut rng, 16);
        let before: Vec<f64> = chains.state.clone().into_data().iter::<f64>().collect();
        let wild = HmcConfig {
            step: 1e30,
            leapfrog: 3,
            trajectories: 1,
        };
        let accepted = block_on(chains.trajectory(flow, &target, &mut rng, wild));
        assert_eq!(
            accepted, 0.0,
            "{space:?}: an overflowing proposal was accepted"
        );
        let after: Vec<f64> = chains.state.clone().into_data().iter::<f64>().collect();
        assert!(
            after.iter().all(|v| v.is_finite()),
            "{space:?}: NaN or inf in a chain"
        );
        assert_eq!(before, after, "{space:?}: a rejected chain moved");
    }
}
