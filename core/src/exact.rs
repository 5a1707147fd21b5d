//! Exact results for the periodic Ising model (spec section 1), in f64.
//!
//! 2D: Kaufman's finite-lattice formula (four products over the `gamma_k`), evaluated in log
//! space with a signed sum, so that the product that vanishes at exactly `T_c` is handled.
//! 1D: the transfer matrix, `Z = (2 cosh K)^L + (2 sinh K)^L`.
//! Energy and specific heat are the first and second derivatives of `ln Z` in `beta`, carried
//! exactly through the formulas by forward-mode automatic differentiation ([`Jet`]).

use serde::Serialize;

/// Exact thermodynamics of the periodic Ising model with `J = 1`, `k_B = 1`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Exact {
    /// `ln Z_Ising`.
    pub ln_z: f64,
    /// Free energy per site, `-T ln Z / N`.
    pub free_energy_per_site: f64,
    /// Internal energy per site, `-(d ln Z / d beta) / N`.
    pub energy_per_site: f64,
    /// Specific heat per site, `beta^2 (d^2 ln Z / d beta^2) / N`.
    pub specific_heat_per_site: f64,
}

/// Exact solution for side `l` (any `l >= 2`; periodic, so `l = 2` has doubled bonds), dimension
/// `d` in {1, 2}, temperature `t > 0`.
pub fn ising(l: usize, d: usize, t: f64) -> Exact {
    assert!(
        l >= 2 && (d == 1 || d == 2) && t > 0.0,
        "exact::ising: bad (L, d, T)"
    );
    let beta = Jet::var(1.0 / t);
    let ln_z = if d == 1 {
        ln_z_1d(l, beta)
    } else {
        ln_z_2d(l, beta)
    };
    let n = l.pow(d as u32) as f64;
    Exact {
        ln_z: ln_z.v,
        free_energy_per_site: -t * ln_z.v / n,
        energy_per_site: -ln_z.d / n,
        specific_heat_per_site: beta.v * beta.v * ln_z.dd / n,
    }
}

fn ln_z_1d(l: usize, k: Jet) -> Jet {
    let l = l as f64;
    let a = k.map_ln2cosh().scale(l);
    let b = k.map_ln2sinh().scale(l);
    // ln(e^a + e^b) with b < a.
    a + (b - a).exp().ln1p()
}

fn ln_z_2d(l: usize, k: Jet) -> Jet {
    let lf = l as f64;
    let two_k = k.scale(2.0);
    // cosh(2K) coth(2K)
    let c = two_k.cosh() * two_k.cosh() / two_k.sinh();
    let gamma = |j: usize| -> Jet {
        if j == 0 {
            two_k + k.tanh().ln()
        } else {
            (c - Jet::constant((std::f64::consts::PI * j as f64 / lf).cos())).acosh()
        }
    };
    let mut p_cosh_odd = Jet::constant(0.0);
    let mut p_sinh_odd = Jet::constant(0.0);
    let mut p_cosh_even = Jet::constant(0.0);
    let mut p_sinh_even_rest = Jet::constant(0.0); // without the r = 0 factor
    for r in 0..l {
        let g_odd = gamma(2 * r + 1).scale(lf / 2.0);
        let g_even = gamma(2 * r).scale(lf / 2.0);
        p_cosh_odd = p_cosh_odd + g_odd.map_ln2cosh();
        p_sinh_odd = p_sinh_odd + g_odd.map_ln2sinh();
        p_cosh_even = p_cosh_even + g_even.map_ln2cosh();
        if r > 0 {
            p_sinh_even_rest = p_sinh_even_rest + g_even.map_ln2sinh();
        }
    }
    // The r = 0 factor 2 sinh(L gamma_0 / 2) changes sign at T_c: keep it linear.
    let s0 = gamma(0).scale(lf / 2.0).sinh().scale(2.0);
    let m = p_cosh_odd
        .v
        .max(p_sinh_odd.v)
        .max(p_cosh_even.v)
        .max(p_sinh_even_rest.v);
    let shift = |p: Jet| (p - Jet::constant(m)).exp();
    let sum =
        shift(p_cosh_odd) + shift(p_sinh_odd) + shift(p_cosh_even) + s0 * shift(p_sinh_even_rest);
    let n = (l * l) as f64;
    let prefactor = two_k.sinh().scale(2.0).ln().scale(n / 2.0) - Jet::constant(2f64.ln());
    prefactor + Jet::constant(m) + sum.ln()
}

/// A number with its first and second derivatives in one variable (forward-mode AD).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Jet {
    /// Value.
    pub v: f64,
    /// First derivative.
    pub d: f64,
    /// Second derivative.
    pub dd: f64,
}

impl Jet {
    /// The independent variable at `v`.
    pub fn var(v: f64) -> Self {
        Self { v, d: 1.0, dd: 0.0 }
    }
    /// A constant.
    pub fn constant(v: f64) -> Self {
        Self { v, d: 0.0, dd: 0.0 }
    }
    /// `f(self)` given `f`, `f'`, `f''` at `self.v` (chain rule to second order).
    fn chain(self, f: f64, f1: f64, f2: f64) -> Self {
        Self {
            v: f,
            d: f1 * self.d,
            dd: f2 * self.d * self.d + f1 * self.dd,
        }
    }
    fn scale(self, a: f64) -> Self {
        Self {
            v: a * self.v,
            d: a * self.d,
            dd: a * self.dd,
        }
    }
    fn exp(self) -> Self {
        let e = self.v.exp();
        self.chain(e, e, e)
    }
    fn ln(self) -> Self {
        self.chain(self.v.ln(), 1.0 / self.v, -1.0 / (self.v * self.v))
    }
    fn ln1p(self) -> Self {
        let u = 1.0 + self.v;
        self.chain(self.v.ln_1p(), 1.0 / u, -1.0 / (u * u))
    }
    fn sinh(self) -> Self {
        self.chain(self.v.sinh(), self.v.cosh(), self.v.sinh())
    }
    fn cosh(self) -> Self {
        self.chain(self.v.cosh(), self.v.sinh(), self.v.cosh())
    }
    fn tanh(self) -> Self {
        let t = self.v.tanh();
        self.chain(t, 1.0 - t * t, -2.0 * t * (1.0 - t * t))
    }
    fn acosh(self) -> Self {
        let u = self.v;
        let s = (u * u - 1.0).sqrt();
        self.chain(u.acosh(), 1.0 / s, -u / (s * s * s))
    }
    /// `ln(2 cosh x)`, stable for large `|x|`.
    fn map_ln2cosh(self) -> Self {
        let x = self.v;
        let t = x.tanh();
        self.chain(x.abs() + (-2.0 * x.abs()).exp().ln_1p(), t, 1.0 - t * t)
    }
    /// `ln(2 sinh x)` for `x > 0`, stable for large `x`.
    fn map_ln2sinh(self) -> Self {
        let x = self.v;
        let coth = 1.0 / x.tanh();
        self.chain(x + (-(-2.0 * x).exp()).ln_1p(), coth, 1.0 - coth * coth)
    }
}

impl std::ops::Add for Jet {
    type Output = Jet;
    fn add(self, o: Jet) -> Jet {
        Jet {
            v: self.v + o.v,
            d: self.d + o.d,
            dd: self.dd + o.dd,
        }
    }
}

impl std::ops::Sub for Jet {
    type Output = Jet;
    fn sub(self, o: Jet) -> Jet {
        Jet {
            v: self.v - o.v,
            d: self.d - o.d,
            dd: self.dd - o.dd,
        }
    }
}

impl std::ops::Mul for Jet {
    type Output = Jet;
    fn mul(self, o: Jet) -> Jet {
        Jet {
            v: self.v * o.v,
            d: self.d * o.v + self.v * o.d,
            dd: self.dd * o.v + 2.0 * self.d * o.d + self.v * o.dd,
        }
    }
}

impl std::ops::Div for Jet {
    type Output = Jet;
    fn div(self, o: Jet) -> Jet {
        let inv = o.chain(1.0 / o.v, -1.0 / (o.v * o.v), 2.0 / (o.v * o.v * o.v));
        self * inv
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Brute-force enumeration of the periodic 4x4 model.
    #[test]
    fn kaufman_matches_enumeration_at_l4() {
        let lat = crate::lattice::Lattice::new(4, 2).unwrap();
        let bonds = lat.bond_list();
        for t in [1.5, crate::lattice::T_C, 3.3] {
            let beta = 1.0 / t;
            let (mut z, mut e1, mut e2) = (0.0f64, 0.0f64, 0.0f64);
            for s in 0u32..(1 << 16) {
                let spin = |i: usize| if s >> i & 1 == 1 { 1.0 } else { -1.0 };
                let e: f64 = -bonds.iter().map(|&(i, j)| spin(i) * spin(j)).sum::<f64>();
                let w = (-beta * e).exp();
                z += w;
                e1 += w * e;
                e2 += w * e * e;
            }
            let (mean, var) = (e1 / z, e2 / z - (e1 / z).powi(2));
            let ex = ising(4, 2, t);
            assert!((ex.ln_z - z.ln()).abs() < 1e-11, "lnZ at T={t}");
            assert!((ex.energy_per_site - mean / 16.0).abs() < 1e-10);
            assert!((ex.specific_heat_per_site - beta * beta * var / 16.0).abs() < 1e-9);
        }
    }

    #[test]
    fn jet_derivatives_match_finite_differences() {
        let f = |x: Jet| (x.cosh() * x.sinh() / x.tanh()).acosh().map_ln2sinh();
        let x = 0.7;
        let h = 1e-5;
        let j = f(Jet::var(x));
        let fd1 = (f(Jet::constant(x + h)).v - f(Jet::constant(x - h)).v) / (2.0 * h);
        let fd2 = (f(Jet::constant(x + h)).v - 2.0 * j.v + f(Jet::constant(x - h)).v) / (h * h);
        assert!((j.d - fd1).abs() < 1e-7 * fd1.abs().max(1.0));
        assert!((j.dd - fd2).abs() < 1e-3 * fd2.abs().max(1.0));
    }
}
