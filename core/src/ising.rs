//! The target: the Hubbard-Stratonovich relaxation of the Ising model (spec section 1).
//!
//! `log p~(x) = -1/2 x^T K^-1 x + sum_i ln cosh(x_i)` with `K = A/T + delta I`. `K` is
//! circulant, so it is diagonal in the real Fourier basis `Q` of the ring (2D: `Q (x) Q`); the
//! quadratic form is `sum_k y_k^2 / mu_k` with `y = Q^T x` (2D: `Q^T X Q`), two small matmuls
//! per batch instead of a dense `N x N` inverse.

use burn::tensor::{Tensor, TensorData, backend::Backend};
use rand::rngs::StdRng;
use rand_distr::{Distribution, StandardNormal};
use serde::Serialize;

use crate::exact;
use crate::lattice::{InputError, Lattice, check_temperature};

/// The relaxation's constants for one lattice and temperature (host side, f64).
#[derive(Debug, Clone, Serialize)]
pub struct Relaxation {
    pub lattice: Lattice,
    /// Temperature `T`.
    pub t: f64,
    /// Diagonal shift `delta = 0.1 - lambda_min(A/T) = 0.1 + 2d/T`.
    pub delta: f64,
    /// `ln det K`.
    pub ln_det_k: f64,
    /// `fix = N delta/2 + (N/2) ln(2 pi) + 1/2 ln det K - N ln 2`, so `ln Z_x = ln Z_Ising + fix`.
    pub fix: f64,
    /// Exact `ln Z_Ising`.
    pub ln_z_ising: f64,
    /// `ln Z_x`; the best reachable loss is `-ln Z_x`.
    pub ln_z_x: f64,
}

impl Relaxation {
    /// The relaxation at temperature `t > 0`.
    pub fn new(lattice: Lattice, t: f64) -> Result<Self, InputError> {
        let t = check_temperature(t)?;
        let n = lattice.sites() as f64;
        let delta = 0.1 + 2.0 * lattice.dim() as f64 / t;
        let ln_det_k: f64 = eigenvalues(lattice, t, delta).iter().map(|m| m.ln()).sum();
        let fix = n * delta / 2.0 + n / 2.0 * (2.0 * std::f64::consts::PI).ln() + 0.5 * ln_det_k
            - n * 2f64.ln();
        let ln_z_ising = exact::ising(lattice.side(), lattice.dim(), t).ln_z;
        Ok(Self {
            lattice,
            t,
            delta,
            ln_det_k,
            fix,
            ln_z_ising,
            ln_z_x: ln_z_ising + fix,
        })
    }

    /// The loss bound `-ln Z_x`.
    pub fn loss_bound(&self) -> f64 {
        -self.ln_z_x
    }

    /// Relative error of a variational free energy `F` (in units of T): `(F + ln Z_x) / ln Z_x`.
    pub fn relative_error(&self, f: f64) -> f64 {
        (f + self.ln_z_x) / self.ln_z_x
    }

    /// The dense matrix `K` (row-major `N x N`), for tests and checks.
    pub fn dense_k(&self) -> Vec<f64> {
        let n = self.lattice.sites();
        let mut k: Vec<f64> = self
            .lattice
            .adjacency()
            .iter()
            .map(|a| a / self.t)
            .collect();
        for i in 0..n {
            k[i * n + i] += self.delta;
        }
        k
    }
}

/// Mode number of column `c` of the real Fourier basis of a ring of `l` sites.
fn mode(c: usize, l: usize) -> usize {
    if c == 0 {
        0
    } else if c == l - 1 {
        l / 2
    } else {
        c.div_ceil(2)
    }
}

/// The real orthonormal Fourier basis of a ring of `l` sites (`l` even), row-major `Q[j][c]`:
/// column 0 is constant, columns `2m-1, 2m` are `cos, sin` of mode `m`, column `l-1` alternates.
pub fn fourier_basis(l: usize) -> Vec<f64> {
    let lf = l as f64;
    let mut q = vec![0.0; l * l];
    for j in 0..l {
        for c in 0..l {
            let m = mode(c, l) as f64;
            let phase = 2.0 * std::f64::consts::PI * m * j as f64 / lf;
            q[j * l + c] = if c == 0 || c == l - 1 {
                phase.cos() / lf.sqrt()
            } else if c % 2 == 1 {
                (2.0 / lf).sqrt() * phase.cos()
            } else {
                (2.0 / lf).sqrt() * phase.sin()
            };
        }
    }
    q
}

/// Eigenvalues `mu` of `K` in the order of the basis (`Q` in 1D, `Q (x) Q` row-major in 2D).
fn eigenvalues(lattice: Lattice, t: f64, delta: f64) -> Vec<f64> {
    let l = lattice.side();
    let ring: Vec<f64> = (0..l)
        .map(|c| 2.0 * (2.0 * std::f64::consts::PI * mode(c, l) as f64 / l as f64).cos())
        .collect();
    if lattice.dim() == 1 {
        ring.iter().map(|a| a / t + delta).collect()
    } else {
        let mut mu = Vec::with_capacity(l * l);
        for a in &ring {
            for b in &ring {
                mu.push((a + b) / t + delta);
            }
        }
        mu
    }
}

/// The target density on a device: `log p~(x)` for a batch of fields.
#[derive(Debug, Clone)]
pub struct Target<B: Backend> {
    pub relaxation: Relaxation,
    /// Fourier basis `Q`, `[L, L]`.
    basis: Tensor<B, 2>,
    /// `1 / mu_k` laid out like the transformed field: `[1, N]`.
    inv_mu: Tensor<B, 2>,
}

impl<B: Backend> Target<B> {
    /// Puts the relaxation's constants on `device`.
    pub fn new(relaxation: Relaxation, device: &B::Device) -> Self {
        let lat = relaxation.lattice;
        let l = lat.side();
        let basis = Tensor::from_data(TensorData::new(fourier_basis(l), [l, l]), device);
        let inv: Vec<f64> = eigenvalues(lat, relaxation.t, relaxation.delta)
            .iter()
            .map(|m| 1.0 / m)
            .collect();
        let inv_mu = Tensor::from_data(TensorData::new(inv, [1, lat.sites()]), device);
        Self {
            relaxation,
            basis,
            inv_mu,
        }
    }

    /// `log p~(x)` for `x` of shape `[batch, N]`; returns `[batch]`.
    pub fn log_prob(&self, x: Tensor<B, 2>) -> Tensor<B, 1> {
        let [batch, n] = x.dims();
        let l = self.relaxation.lattice.side();
        let y = if self.relaxation.lattice.dim() == 1 {
            x.clone().matmul(self.basis.clone())
        } else {
            // Columns, then rows: (X Q)^T Q = (Q^T X Q)^T; mu is symmetric in (a, b).
            let xq = x.clone().reshape([batch * l, l]).matmul(self.basis.clone());
            let xqt = xq
                .reshape([batch, l, l])
                .swap_dims(1, 2)
                .reshape([batch * l, l]);
            xqt.matmul(self.basis.clone()).reshape([batch, n])
        };
        let quad = (y.clone() * y * self.inv_mu.clone()).sum_dim(1);
        let lncosh = ln_cosh(x).sum_dim(1);
        (lncosh - quad.mul_scalar(0.5)).squeeze_dim(1)
    }
}

/// The exact heat bath of the Hubbard-Stratonovich pair: the relaxation is the field marginal of
/// `p(x, s) ~ exp(-1/2 x^T K^-1 x + x . s)` over Ising spins `s`, whose conditionals are
/// independent spins `P(s_i = +1 | x) = sigmoid(2 x_i)` and a Gaussian field
/// `x | s ~ N(K s, K)`. A sweep draws the spins given the field, then the field given the spins:
/// it leaves `p~(x)` invariant and needs no step size (host side, f64; `K` and its Cholesky
/// factor are dense `N x N`).
#[derive(Debug, Clone)]
pub struct HeatBath {
    n: usize,
    /// `K`, row-major.
    k: Vec<f64>,
    /// The lower Cholesky factor `C` of `K = C C^T`, row-major.
    chol: Vec<f64>,
}

impl HeatBath {
    /// The heat bath of `relaxation` (`K` is positive definite: its smallest eigenvalue is 0.1).
    pub fn new(relaxation: &Relaxation) -> Self {
        let n = relaxation.lattice.sites();
        let k = relaxation.dense_k();
        let mut chol = vec![0.0; n * n];
        for i in 0..n {
            for j in 0..=i {
                let dot: f64 = (0..j).map(|m| chol[i * n + m] * chol[j * n + m]).sum();
                chol[i * n + j] = if i == j {
                    (k[i * n + i] - dot).sqrt()
                } else {
                    (k[i * n + j] - dot) / chol[j * n + j]
                };
            }
        }
        Self { n, k, chol }
    }

    /// One sweep of the field `x` (`N` values) in place: spins given `x`, then `x` given them.
    pub fn sweep(&self, x: &mut [f64], rng: &mut StdRng) {
        let n = self.n;
        let s = crate::observables::spins_from_fields(x, rng);
        let noise: Vec<f64> = (0..n).map(|_| StandardNormal.sample(rng)).collect();
        for (i, xi) in x.iter_mut().enumerate() {
            let row = &self.k[i * n..(i + 1) * n];
            let mean: f64 = row.iter().zip(&s).map(|(a, b)| a * b).sum();
            let c = &self.chol[i * n..i * n + i + 1];
            *xi = mean + c.iter().zip(&noise).map(|(a, b)| a * b).sum::<f64>();
        }
    }
}

/// `ln cosh(x)` computed stably: `|x| + ln(1 + exp(-2|x|)) - ln 2`.
pub fn ln_cosh<B: Backend, const D: usize>(x: Tensor<B, D>) -> Tensor<B, D> {
    let a = x.abs();
    a.clone() + a.mul_scalar(-2.0).exp().log1p() - std::f64::consts::LN_2
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_heat_bath_factor_reproduces_k() {
        for (l, d) in [(4, 2), (8, 1)] {
            let rel = Relaxation::new(Lattice::new(l, d).unwrap(), 2.3).unwrap();
            let bath = HeatBath::new(&rel);
            let n = bath.n;
            for i in 0..n {
                for j in 0..n {
                    let cc: f64 = (0..n)
                        .map(|m| bath.chol[i * n + m] * bath.chol[j * n + m])
                        .sum();
                    assert!(
                        (cc - bath.k[i * n + j]).abs() < 1e-12,
                        "L={l} d={d} ({i}, {j})"
                    );
                }
                assert!(
                    bath.chol[i * n + i + 1..(i + 1) * n]
                        .iter()
                        .all(|&c| c == 0.0)
                );
            }
        }
    }

    #[test]
    fn fourier_basis_is_orthonormal_and_diagonalizes_k() {
        for (l, d) in [(4, 2), (8, 1), (8, 2)] {
            let lat = Lattice::new(l, d).unwrap();
            let q = fourier_basis(l);
            for a in 0..l {
                for b in 0..l {
                    let dot: f64 = (0..l).map(|j| q[j * l + a] * q[j * l + b]).sum();
                    assert!((dot - if a == b { 1.0 } else { 0.0 }).abs() < 1e-12);
                }
            }
            let rel = Relaxation::new(lat, 2.5).unwrap();
            let mu = eigenvalues(lat, 2.5, rel.delta);
            let min = mu.iter().cloned().fold(f64::INFINITY, f64::min);
            assert!((min - 0.1).abs() < 1e-12, "smallest eigenvalue of K is 0.1");
        }
    }
}
