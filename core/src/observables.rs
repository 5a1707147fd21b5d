//! Ising observables from samples of the field `x` (spec sections 1 and 4).
//!
//! Given `x`, spins are independent with `P(s_i = +1 | x) = sigmoid(2 x_i)`, so drawing `s | x`
//! for `x ~ p` gives exact Ising samples. Energy and `m^2` use the Rao-Blackwell estimators
//! `E[E | x] = -sum_<ij> tanh x_i tanh x_j` and
//! `E[m^2 | x] = (mean_i tanh x_i)^2 - sum_i tanh^2 x_i / N^2 + 1/N`; `|m|`, `m^4` and the
//! fluctuations (specific heat, susceptibility, Binder cumulant) use the sampled spins. Errors
//! come from a jackknife over 20 consecutive blocks, or fewer and longer ones when the chain is
//! correlated, so that every block spans at least five integrated autocorrelation times
//! ([`crate::stats::chain_blocks`]); never the naive `std/sqrt(n)` of a correlated chain.

use rand::RngExt;
use rand::rngs::StdRng;
use serde::Serialize;

use crate::exact;
use crate::lattice::Lattice;
use crate::stats::{chain_blocks, jackknife};

/// A mean with its error, beside the exact value where one is known.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Estimate {
    pub mean: f64,
    pub stderr: f64,
    pub exact: Option<f64>,
}

/// The observables per site.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Observables {
    pub energy_per_site: Estimate,
    pub abs_m: Estimate,
    pub m2: Estimate,
    pub susceptibility: Estimate,
    pub specific_heat: Estimate,
    pub binder_u4: Estimate,
}

/// Exact values known for a lattice and temperature: energy and specific heat always (Kaufman,
/// transfer matrix); the magnetization moments by enumerating all states when `N <= 20`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct ExactValues {
    pub energy_per_site: f64,
    pub specific_heat: f64,
    pub abs_m: Option<f64>,
    pub m2: Option<f64>,
    pub susceptibility: Option<f64>,
    pub binder_u4: Option<f64>,
}

/// The exact values for `lattice` at temperature `t`.
pub fn exact_values(lattice: Lattice, t: f64) -> ExactValues {
    let ex = exact::ising(lattice.side(), lattice.dim(), t);
    let mut out = ExactValues {
        energy_per_site: ex.energy_per_site,
        specific_heat: ex.specific_heat_per_site,
        abs_m: None,
        m2: None,
        susceptibility: None,
        binder_u4: None,
    };
    let n = lattice.sites();
    if n <= 20 {
        let bonds = lattice.bond_list();
        let (mut z, mut am, mut m2, mut m4) = (0.0f64, 0.0f64, 0.0f64, 0.0f64);
        let ground = -(bonds.len() as f64);
        for state in 0u32..(1 << n) {
            let spin = |i: usize| if state >> i & 1 == 1 { 1.0 } else { -1.0 };
            let e: f64 = -bonds.iter().map(|&(i, j)| spin(i) * spin(j)).sum::<f64>();
            let m = (0..n).map(spin).sum::<f64>() / n as f64;
            let w = (-(e - ground) / t).exp();
            z += w;
            am += w * m.abs();
            m2 += w * m * m;
            m4 += w * m.powi(4);
        }
        let (am, m2, m4) = (am / z, m2 / z, m4 / z);
        out.abs_m = Some(am);
        out.m2 = Some(m2);
        out.susceptibility = Some(n as f64 * (m2 - am * am) / t);
        out.binder_u4 = Some(1.0 - m4 / (3.0 * m2 * m2));
    }
    out
}

/// Spins drawn given fields (row-major `[n, N]`): `+1` with probability `sigmoid(2 x)`.
pub fn spins_from_fields(x: &[f64], rng: &mut StdRng) -> Vec<f64> {
    x.iter()
        .map(|&v| {
            if rng.random::<f64>() < 1.0 / (1.0 + (-2.0 * v).exp()) {
                1.0
            } else {
                -1.0
            }
        })
        .collect()
}

/// The Rao-Blackwell estimates `(E[m^2 | x], E[E | x])` of one configuration of fields.
pub fn rao_blackwell(lattice: Lattice, x: &[f64]) -> (f64, f64) {
    let n = x.len() as f64;
    let th: Vec<f64> = x.iter().map(|v| v.tanh()).collect();
    let mean = th.iter().sum::<f64>() / n;
    let m2 = mean * mean - th.iter().map(|t| t * t).sum::<f64>() / (n * n) + 1.0 / n;
    let e = -lattice
        .bond_list()
        .iter()
        .map(|&(i, j)| th[i] * th[j])
        .sum::<f64>();
    (m2, e)
}

/// Measures the observables on samples of the field (row-major `[n, N]`, in chain order if
/// they come from a chain), drawing one spin configuration per sample; jackknife errors over
/// at most 20 blocks ([`measure_blocks`]).
pub fn measure(lattice: Lattice, t: f64, x: &[f64], rng: &mut StdRng) -> Observables {
    measure_blocks(lattice, t, x, rng, 20)
}

/// [`measure`] with at most `max_blocks` jackknife blocks: for `k` independent chains laid end
/// to end, `k` blocks make each chain one block, so the errors include the spread between the
/// chains.
pub fn measure_blocks(
    lattice: Lattice,
    t: f64,
    x: &[f64],
    rng: &mut StdRng,
    max_blocks: usize,
) -> Observables {
    let n_sites = lattice.sites();
    let nf = n_sites as f64;
    let bonds = lattice.bond_list();
    let spins = spins_from_fields(x, rng);
    // Per sample: E_rb, m2_rb, E, E^2, |m|, m^2, m^4.
    const COLS: usize = 7;
    let mut rows = Vec::with_capacity(x.len() / n_sites * COLS);
    for (xs, ss) in x.chunks(n_sites).zip(spins.chunks(n_sites)) {
        let (m2_rb, e_rb) = rao_blackwell(lattice, xs);
        let e = -bonds.iter().map(|&(i, j)| ss[i] * ss[j]).sum::<f64>();
        let m = ss.iter().sum::<f64>() / nf;
        rows.extend([e_rb, m2_rb, e, e * e, m.abs(), m * m, m.powi(4)]);
    }
    let exact = exact_values(lattice, t);
    let blocks = chain_blocks(&rows, COLS, max_blocks);
    let est = |f: &dyn Fn(&[f64]) -> f64, exact: Option<f64>| {
        let (mean, stderr) = jackknife(&rows, COLS, blocks, f);
        Estimate {
            mean,
            stderr,
            exact,
        }
    };
    Observables {
        energy_per_site: est(&|m| m[0] / nf, Some(exact.energy_per_site)),
        abs_m: est(&|m| m[4], exact.abs_m),
        m2: est(&|m| m[1], exact.m2),
        susceptibility: est(&|m| nf * (m[5] - m[4] * m[4]) / t, exact.susceptibility),
        specific_heat: est(
            &|m| (m[3] - m[2] * m[2]) / (nf * t * t),
            Some(exact.specific_heat),
        ),
        binder_u4: est(&|m| 1.0 - m[6] / (3.0 * m[5] * m[5]), exact.binder_u4),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn enumeration_matches_the_reference_file_values_at_l4_tc() {
        let ex = exact_values(Lattice::new(4, 2).unwrap(), crate::lattice::T_C);
        assert!((ex.m2.unwrap() - 0.761_358_908_568_672_4).abs() < 1e-12);
        assert!((ex.abs_m.unwrap() - 0.843_860_444_813_419_9).abs() < 1e-12);
        assert!((ex.binder_u4.unwrap() - 0.617_199_318_412_458_9).abs() < 1e-12);
    }

    #[test]
    fn rao_blackwell_of_saturated_fields_is_the_spin_value() {
        let lat = Lattice::new(4, 1).unwrap();
        let (m2, e) = rao_blackwell(lat, &[50.0, 50.0, -50.0, -50.0]);
        assert!((m2 - 0.0).abs() < 1e-12);
        assert!((e - 0.0).abs() < 1e-12, "two ++ bonds, two +- bonds: E = 0");
    }
}
