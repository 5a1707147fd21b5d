//! The flow: invertibility, log-determinants against brute-force Jacobians, `log p~` against a
//! dense computation, parameter counts.

use burn::backend::Flex;
use burn::module::Module;
use burn::tensor::{Tensor, TensorData, backend::Backend};
use neuralrg::flow::{Flow, log_normal};
use neuralrg::fused::FlowBackend;
use neuralrg::ising::{Relaxation, Target};
use neuralrg::lattice::{Lattice, T_C};
use neuralrg::mera::MeraConfig;
use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};

mod common;
use common::Jitter;

type F32 = Flex;
/// Flex in a process that computes in f64 (see [`common::f64_process`]).
type F64 = Flex;

fn config(l: usize, d: usize, nrepeat: usize) -> MeraConfig {
    let lattice = Lattice::new(l, d).unwrap();
    MeraConfig {
        lattice,
        depth: None,
        nrepeat,
        nlayers: 4,
        nmlp: 2,
        nhidden: 8,
    }
}

fn flow<B: FlowBackend>(c: MeraConfig, symmetric: bool) -> Flow<B> {
    let f = Flow {
        mera: c.init::<B>(7, &Default::default()),
        symmetric,
    };
    f.map(&mut Jitter(StdRng::seed_from_u64(3), 0.3))
}

fn random<B: Backend>(batch: usize, n: usize, seed: u64) -> Tensor<B, 2> {
    let mut rng = StdRng::seed_from_u64(seed);
    let v: Vec<f64> = (0..batch * n)
        .map(|_| rng.random_range(-2.0..2.0))
        .collect();
    Tensor::from_data(TensorData::new(v, [batch, n]), &Default::default())
}

fn host<B: Backend, const D: usize>(t: Tensor<B, D>) -> Vec<f64> {
    t.into_data().iter::<f64>().collect()
}

fn max_diff(a: &[f64], b: &[f64]) -> f64 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f64::max)
}

fn round_trips<B: FlowBackend>(tol: f64) {
    for (l, d) in [(4, 2), (8, 2), (4, 1), (8, 1)] {
        let c = config(l, d, 2);
        let f = flow::<B>(c, false);
        let n = c.lattice.sites();
        let z = random::<B>(16, n, 11);
        let (x, ld_gen) = f.mera.generate(z.clone());
        let (z2, ld_inf) = f.mera.infer(x.clone());
        assert!(
            max_diff(&host(z.clone()), &host(z2)) < tol,
            "z -> x -> z at L={l} d={d}"
        );
        // The two directions' log-determinants are negatives of each other.
        let sum: Vec<f64> = host(ld_gen.clone() + ld_inf);
        assert!(
            sum.iter().all(|s| s.abs() < tol * 100.0),
            "logdets at L={l} d={d}: {sum:?}"
        );
        assert!(
            host(ld_gen).iter().any(|v| v.abs() > 1e-3),
            "jittered flow is not volume preserving"
        );
        let (zx, _) = f.mera.infer(z.clone());
        let (x2, _) = f.mera.generate(zx);
        assert!(
            max_diff(&host(z), &host(x2)) < tol,
            "x -> z -> x at L={l} d={d}"
        );
    }
}

#[test]
fn round_trips_f32() {
    round_trips::<F32>(1e-4);
}

#[test]
fn round_trips_f64() {
    if common::f64_process("round_trips_f64") {
        round_trips::<F64>(1e-10);
    }
}

/// `ln|det|` of a dense `n x n` matrix by LU with partial pivoting.
fn log_abs_det(mut a: Vec<f64>, n: usize) -> f64 {
    let mut ld = 0.0;
    for k in 0..n {
        let p = (k..n)
            .max_by(|&i, &j| a[i * n + k].abs().total_cmp(&a[j * n + k].abs()))
            .unwrap();
        for c in 0..n {
            a.swap(k * n + c, p * n + c);
        }
        let pivot = a[k * n + k];
        ld += pivot.abs().ln();
        for i in k + 1..n {
            let f = a[i * n + k] / pivot;
            for c in k..n {
                a[i * n + c] -= f * a[k * n + c];
            }
        }
    }
    ld
}

/// Jacobian of the infer map at `x` by central differences: `J[i][j] = dz_i / dx_j`.
fn jacobian(f: &Flow<F64>, x: &[f64], eps: f64) -> Vec<f64> {
    let n = x.len();
    let mut rows = Vec::with_capacity(2 * n * n);
    for j in 0..n {
        for sign in [1.0, -1.0] {
            let mut p = x.to_vec();
            p[j] += sign * eps;
            rows.extend(p);
        }
    }
    let batch = Tensor::<F64, 2>::from_data(TensorData::new(rows, [2 * n, n]), &Default::default());
    let z = host(f.mera.infer(batch).0);
    let mut jac = vec![0.0; n * n];
    for j in 0..n {
        for i in 0..n {
            jac[i * n + j] = (z[(2 * j) * n + i] - z[(2 * j + 1) * n + i]) / (2.0 * eps);
        }
    }
    jac
}

#[test]
fn log_determinants_match_brute_force_jacobians() {
    if !common::f64_process("log_determinants_match_brute_force_jacobians") {
        return;
    }
    for (l, d) in [(4, 2), (8, 1)] {
        let c = config(l, d, 1);
        let n = c.lattice.sites();
        for symmetric in [false, true] {
            let f = flow::<F64>(c, symmetric);
            let x = host(random::<F64>(1, n, 5));
            let xt = Tensor::<F64, 2>::from_data(
                TensorData::new(x.clone(), [1, n]),
                &Default::default(),
            );
            // log q by brute force: log N(z) + ln|det dz/dx|, symmetrized over +-x if asked.
            let brute = |x: &[f64]| -> f64 {
                let xt = Tensor::<F64, 2>::from_data(
                    TensorData::new(x.to_vec(), [1, n]),
                    &Default::default(),
                );
                let z = f.mera.infer(xt).0;
                host(log_normal(z))[0] + log_abs_det(jacobian(&f, x, 1e-5), n)
            };
            let plain = brute(&x);
            let expected = if symmetric {
                let neg: Vec<f64> = x.iter().map(|v| -v).collect();
                let (a, b) = (plain, brute(&neg));
                a.max(b) + (-(a - b).abs()).exp().ln_1p() - std::f64::consts::LN_2
            } else {
                plain
            };
            let got = host(f.log_prob(xt))[0];
            assert!(
                (got - expected).abs() < 1e-6,
                "L={l} d={d} symmetric={symmetric}: {got} vs {expected}"
            );
        }
    }
}

/// Dense inverse by Gauss-Jordan elimination (f64).
fn inverse(mut a: Vec<f64>, n: usize) -> Vec<f64> {
    let mut inv: Vec<f64> = (0..n * n)
        .map(|i| if i / n == i % n { 1.0 } else { 0.0 })
        .collect();
    for k in 0..n {
        let p = (k..n)
            .max_by(|&i, &j| a[i * n + k].abs().total_cmp(&a[j * n + k].abs()))
            .unwrap();
        for c in 0..n {
            a.swap(k * n + c, p * n + c);
            inv.swap(k * n + c, p * n + c);
        }
        let pivot = a[k * n + k];
        for c in 0..n {
            a[k * n + c] /= pivot;
            inv[k * n + c] /= pivot;
        }
        for i in 0..n {
            if i != k {
                let f = a[i * n + k];
                for c in 0..n {
                    a[i * n + c] -= f * a[k * n + c];
                    inv[i * n + c] -= f * inv[k * n + c];
                }
            }
        }
    }
    inv
}

fn dense_log_prob(rel: &Relaxation, x: &[f64]) -> f64 {
    let n = x.len();
    let kinv = inverse(rel.dense_k(), n);
    let quad: f64 = (0..n)
        .map(|i| (0..n).map(|j| x[i] * kinv[i * n + j] * x[j]).sum::<f64>())
        .sum();
    -0.5 * quad + x.iter().map(|v| v.cosh().ln()).sum::<f64>()
}

fn check_log_prob<B: Backend>(rel_tol: f64) {
    for (l, d, t) in [(4, 2, T_C), (8, 2, 1.7), (8, 1, 0.9), (16, 1, 3.0)] {
        let lat = Lattice::new(l, d).unwrap();
        let rel = Relaxation::new(lat, t).unwrap();
        let target = Target::<B>::new(rel.clone(), &Default::default());
        let x = random::<B>(5, lat.sites(), 9);
        let got = host(target.log_prob(x.clone()));
        let xs = host(x);
        for (b, g) in got.iter().enumerate() {
            let want = dense_log_prob(&rel, &xs[b * lat.sites()..(b + 1) * lat.sites()]);
            assert!(
                (g - want).abs() <= rel_tol * want.abs().max(1.0),
                "L={l} d={d} T={t}: {g} vs {want}"
            );
        }
        // K is positive definite with smallest eigenvalue 0.1.
        assert!((rel.delta - (0.1 + 2.0 * d as f64 / t)).abs() < 1e-15);
    }
}

#[test]
fn log_prob_matches_dense_computation() {
    check_log_prob::<F32>(1e-5);
}

#[test]
fn log_prob_matches_dense_computation_f64() {
    if common::f64_process("log_prob_matches_dense_computation_f64") {
        check_log_prob::<F64>(1e-11);
    }
}

#[test]
fn parameter_counts_match_the_spec() {
    for (l, expected) in [(4, 25_280), (8, 37_920), (16, 50_560)] {
        let lattice = Lattice::new(l, 2).unwrap();
        let c = MeraConfig {
            lattice,
            depth: None,
            nrepeat: 1,
            nlayers: 10,
            nmlp: 3,
            nhidden: 10,
        };
        assert_eq!(c.num_params(), expected, "formula at L={l}");
        let built = c.init::<F32>(1, &Default::default());
        assert_eq!(built.num_params(), expected, "built network at L={l}");
        assert_eq!(c.block().num_params(), 6_320);
    }
}
