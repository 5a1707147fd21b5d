//! Looking inside a trained flow (spec section 5): receptive fields (Jacobian columns
//! `dx/dz_k` of the generator) and mutual-information matrices, with a Gaussian estimate from
//! correlations and the Kraskov-Stögbauer-Grassberger k-nearest-neighbour estimator.
//!
//! Everything here works on host vectors or backend tensors only: no files, no threads, so the
//! browser app uses it as the native binaries do.

use burn::tensor::{Tensor, TensorData};

use crate::fused::{FlowAutodiff, FlowBackend};

use crate::flow::Flow;
use crate::host::read;
use crate::lattice::Lattice;
use crate::mera::MeraConfig;

/// The receptive field of a latent site: `dx_i/dz_k` for every physical site `i`.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ReceptiveField {
    /// The latent site `k`.
    pub site: usize,
    /// Its RG level (2-adic valuation of its coordinates, capped at the top level).
    pub level: usize,
    /// `dx_i/dz_k`, `i` in site order, averaged over the given latent samples.
    pub values: Vec<f64>,
}

/// How much sampling looking inside a flow takes: the `analyze` command's defaults
/// ([`LookConfig::default`]) and the page's lighter ones ([`LookConfig::quick`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "cli", derive(clap::Args))]
pub struct LookConfig {
    /// Samples of x for the mutual information: the final states of this many independent
    /// Metropolis-Hastings chains (flow proposals), so no sample repeats.
    #[cfg_attr(feature = "cli", arg(long, default_value_t = LookConfig::default().samples))]
    pub samples: usize,
    /// Proposals per Metropolis-Hastings chain.
    #[cfg_attr(feature = "cli", arg(long = "mh-steps", default_value_t = LookConfig::default().mh_steps))]
    pub mh_steps: usize,
    /// Latent samples the receptive fields are averaged over (1: at one sample).
    #[cfg_attr(feature = "cli", arg(long = "jacobian-samples", default_value_t = LookConfig::default().jacobian_samples))]
    pub jacobian_samples: usize,
}

impl Default for LookConfig {
    fn default() -> Self {
        Self {
            samples: 4000,
            mh_steps: 10,
            jacobian_samples: 32,
        }
    }
}

impl LookConfig {
    /// The live panels' look, redrawn while training in a browser tab: an eighth of the
    /// samples, 4 proposals per chain and 8 Jacobian samples (noisier, a few times faster).
    pub fn quick() -> Self {
        Self {
            samples: 512,
            mh_steps: 4,
            jacobian_samples: 8,
        }
    }

    /// Checks the counts; the message names the value and what is allowed.
    pub fn validate(&self) -> Result<(), String> {
        for (name, value, min) in [
            ("samples", self.samples, 2),
            ("jacobian-samples", self.jacobian_samples, 1),
            ("mh-steps", self.mh_steps, 1),
        ] {
            if value < min {
                return Err(format!(
                    "{name} = {value} is not allowed: an integer >= {min}"
                ));
            }
        }
        Ok(())
    }
}

/// Jacobian columns `dx/dz_k` of the plain generator `x = g(z)` for each latent site in
/// `sites`, averaged over the latent samples `z` (row-major `[samples, N]`; one row gives the
/// Jacobian at one sample). Reverse mode: each sample is repeated `N` times and row `i` of the
/// copy back-propagates `x_i`, so one backward pass gives the whole Jacobian of a chunk.
pub async fn receptive_fields<B: FlowAutodiff>(
    flow: &Flow<B>,
    lattice: Lattice,
    z: &[f64],
    sites: &[usize],
) -> Vec<ReceptiveField> {
    let n = lattice.sites();
    let samples = z.len() / n;
    assert!(
        samples > 0 && z.len() == samples * n,
        "z must hold whole samples of N values"
    );
    let device = flow.mera.device();
    let mut sum = vec![0.0; sites.len() * n];
    let chunk = (8192 / n).max(1);
    let mut start = 0;
    while start < samples {
        let count = chunk.min(samples - start);
        let mut rows = Vec::with_capacity(count * n * n);
        let mut diag = vec![0.0f64; count * n * n];
        for s in 0..count {
            let zs = &z[(start + s) * n..(start + s + 1) * n];
            for i in 0..n {
                rows.extend_from_slice(zs);
                diag[(s * n + i) * n + i] = 1.0;
            }
        }
        let zt = Tensor::<B, 2>::from_data(TensorData::new(rows, [count * n, n]), &device)
            .require_grad();
        let mask = Tensor::<B, 2>::from_data(TensorData::new(diag, [count * n, n]), &device);
        let (x, _) = flow.mera.generate(zt.clone());
        let grads = (x * mask).sum().backward();
        let g = read(zt.grad(&grads).expect("z requires grad")).await;
        // g[(s*n + i)*n + k] = dx_i/dz_k at sample s.
        for (c, &k) in sites.iter().enumerate() {
            for s in 0..count {
                for i in 0..n {
                    sum[c * n + i] += g[(s * n + i) * n + k];
                }
            }
        }
        start += count;
    }
    sites
        .iter()
        .enumerate()
        .map(|(c, &k)| ReceptiveField {
            site: k,
            level: lattice.rg_level(k),
            values: sum[c * n..(c + 1) * n]
                .iter()
                .map(|v| v / samples as f64)
                .collect(),
        })
        .collect()
}

/// The latent variables `z = g^{-1}(x)` of physical samples `x` (row-major `[samples, N]`), each
/// taken through the more probable sign branch of a symmetrized flow ([`Flow::orient`]):
/// without this the latent statistics are dominated by the `x -> -x` bimodality.
pub async fn latents<B: FlowBackend>(flow: &Flow<B>, x: &[f64]) -> Vec<f64> {
    through_oriented(flow, x, |xt| flow.mera.infer(xt).0).await
}

/// The variables after the first `layers` block layers of the inference direction `x -> z`
/// (the partial RG of the paper's layer-by-layer mutual information), of physical samples `x`
/// (row-major `[samples, N]`), each through its more probable sign branch as in [`latents`].
pub async fn layer_outputs<B: FlowBackend>(flow: &Flow<B>, x: &[f64], layers: usize) -> Vec<f64> {
    through_oriented(flow, x, |xt| flow.mera.infer_partial(xt, layers)).await
}

/// What the [`probes`] are, in order.
pub const PROBE_NAMES: [&str; 3] = ["all +1", "checkerboard", "wave"];

/// Three fixed configurations of `lattice` (row-major `[3, N]`): every field +1, a checkerboard
/// of +1 and -1, and a wave `cos(2 pi (row + 2 col) / L)`. The flow's `log q` on them
/// ([`log_q_probes`]) tells whether two programs hold the same model (the page shows it for a
/// model it opens or saves; `train` writes it to `summary.json`, `sample --json` prints it).
pub fn probes(lattice: Lattice) -> Vec<f64> {
    let (n, l) = (lattice.sites(), lattice.side() as f64);
    let mut x = vec![1.0; n];
    for i in 0..n {
        let (r, c) = lattice.coords(i);
        x.push(if (r + c) % 2 == 0 { 1.0 } else { -1.0 });
    }
    for i in 0..n {
        let (r, c) = lattice.coords(i);
        x.push((std::f64::consts::TAU * (r + 2 * c) as f64 / l).cos());
    }
    x
}

/// `log q` of the flow at the [`probes`] of its lattice.
pub async fn log_q_probes<B: FlowBackend>(flow: &Flow<B>, lattice: Lattice) -> Vec<f64> {
    let n = lattice.sites();
    let x = Tensor::<B, 2>::from_data(
        TensorData::new(probes(lattice), [PROBE_NAMES.len(), n]),
        &flow.mera.device(),
    );
    crate::host::read(flow.log_prob(x)).await
}

/// One sample seen at every scale of the hierarchy: the renormalization group in pictures.
/// Level `k` works on the sublattice of side `L / 2^k` (coordinates multiples of `2^k`); its
/// block layers decimate three quarters of those sites in 2D (half in 1D) into latent variables
/// and pass the rest, the sublattice of side `L / 2^(k+1)`, on to level `k + 1`.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct RgPicture {
    pub lattice: Lattice,
    /// The physical configuration `x` (site order), through its more probable sign branch as in
    /// [`latents`].
    pub x: Vec<f64>,
    /// The levels built, from the finest.
    pub levels: Vec<RgLevel>,
}

/// What one level of an [`RgPicture`] does to its sublattice.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct RgLevel {
    /// Side of the sublattice the level works on, `L / 2^k`.
    pub side: usize,
    /// The latent variables decimated at this level, on that sublattice (row-major, `side^d`
    /// values; NaN at the sites that go on).
    pub decimated: Vec<f64>,
    /// The variables that go on to the next level, on the sublattice of side `side / 2`
    /// (row-major). After the last level built they are latent variables too.
    pub kept: Vec<f64>,
}

/// The sites of the sublattice with spacing `h` (coordinates multiples of `h`), row-major.
fn sublattice(lattice: Lattice, h: usize) -> Vec<usize> {
    let side = lattice.side() / h;
    let rows = if lattice.dim() == 2 { side } else { 1 };
    (0..rows)
        .flat_map(|r| (0..side).map(move |c| (r, c)))
        .map(|(r, c)| lattice.index(r * h, c * h))
        .collect()
}

/// [`RgPicture`] of one physical configuration `x` (`N` values) through `flow`, whose
/// architecture is `mera`.
pub async fn rg_picture<B: FlowBackend>(flow: &Flow<B>, mera: &MeraConfig, x: &[f64]) -> RgPicture {
    let lattice = mera.lattice;
    let x = through_oriented(flow, x, |t| t).await;
    let mut levels = Vec::new();
    for k in 0..mera.depth() {
        let h = 1usize << k;
        let after = layer_outputs(flow, &x, 2 * mera.nrepeat * (k + 1)).await;
        let here = sublattice(lattice, h);
        let next = sublattice(lattice, 2 * h);
        let decimated = here
            .iter()
            .map(|s| {
                if next.contains(s) {
                    f64::NAN
                } else {
                    after[*s]
                }
            })
            .collect();
        levels.push(RgLevel {
            side: lattice.side() / h,
            decimated,
            kept: next.iter().map(|&s| after[s]).collect(),
        });
    }
    RgPicture { lattice, x, levels }
}

/// `map` applied to physical samples `x` (row-major `[samples, N]`), 512 at a time, each taken
/// through its more probable sign branch first ([`Flow::orient`]); the results on the host.
async fn through_oriented<B: FlowBackend>(
    flow: &Flow<B>,
    x: &[f64],
    map: impl Fn(Tensor<B, 2>) -> Tensor<B, 2>,
) -> Vec<f64> {
    let n = flow.mera.sites();
    let device = flow.mera.device();
    let mut out = Vec::with_capacity(x.len());
    for rows in x.chunks(512 * n) {
        let xt =
            Tensor::<B, 2>::from_data(TensorData::new(rows.to_vec(), [rows.len() / n, n]), &device);
        out.extend(read(map(flow.orient(xt))).await);
    }
    out
}

/// Where to look at each RG level, as `(level, [(label, site)])` from level 0 to the top: in 2D
/// a latent site near the centre, one on the edge (row 0) and one near the corner (0, 0); in 1D
/// one near the centre and one near each end of the ring. The top level's sites are its final
/// outputs `(L/2, L/2)`, `(0, L/2)`, `(0, 0)`.
pub fn representative_sites(lattice: Lattice) -> Vec<(usize, Vec<(&'static str, usize)>)> {
    let l = lattice.side();
    let top = lattice.depth() - 1;
    (0..=top)
        .map(|k| {
            let h = 1 << k;
            // Coordinates with 2-adic valuation exactly k (or >= k at the top level).
            let (mid, near) = if k == top { (l / 2, 0) } else { (l / 2 + h, h) };
            let sites = if lattice.dim() == 1 {
                vec![
                    ("centre", lattice.index(0, mid)),
                    ("left", lattice.index(0, near)),
                    ("right", lattice.index(0, l - near)),
                ]
            } else {
                vec![
                    ("centre", lattice.index(mid, mid)),
                    ("edge", lattice.index(0, mid)),
                    ("corner", lattice.index(near, near)),
                ]
            };
            (k, sites)
        })
        .collect()
}

/// Pairwise mutual information from correlations, `I = -1/2 ln(1 - rho^2)`, exact for jointly
/// Gaussian variables. `data` is row-major `[samples, vars]`; returns `[vars, vars]` with a
/// zero diagonal.
pub fn mi_gaussian(data: &[f64], vars: usize) -> Vec<f64> {
    let samples = data.len() / vars;
    let mut mean = vec![0.0; vars];
    for row in data.chunks(vars) {
        mean.iter_mut()
            .zip(row)
            .for_each(|(m, v)| *m += v / samples as f64);
    }
    let mut cov = vec![0.0; vars * vars];
    for row in data.chunks(vars) {
        for a in 0..vars {
            let da = row[a] - mean[a];
            for b in a..vars {
                cov[a * vars + b] += da * (row[b] - mean[b]);
            }
        }
    }
    let mut mi = vec![0.0; vars * vars];
    for a in 0..vars {
        for b in a + 1..vars {
            let denom = (cov[a * vars + a] * cov[b * vars + b]).sqrt();
            let rho = if denom > 0.0 {
                (cov[a * vars + b] / denom).clamp(-1.0, 1.0)
            } else {
                0.0
            };
            let v = -0.5 * (1.0 - rho * rho).max(1e-300).ln();
            mi[a * vars + b] = v;
            mi[b * vars + a] = v;
        }
    }
    mi
}

/// Pairwise mutual information by the Kraskov-Stögbauer-Grassberger estimator (their
/// algorithm 1, max-norm, `k` neighbours): `I = psi(k) + psi(n) - <psi(n_x+1) + psi(n_y+1)>`.
/// Ties (repeated states of a Metropolis chain) are broken by a deterministic jitter of 1e-9
/// times each variable's scale. Returns `[vars, vars]` with a zero diagonal.
pub fn mi_ksg(data: &[f64], vars: usize, k: usize) -> Vec<f64> {
    let samples = data.len() / vars;
    assert!(samples > k, "KSG needs more samples than neighbours");
    // Columns, jittered.
    let mut state = 0x2545_F491_4F6C_DD1Du64;
    let mut cols: Vec<Vec<f64>> = (0..vars)
        .map(|v| (0..samples).map(|s| data[s * vars + v]).collect())
        .collect();
    for col in &mut cols {
        let scale = col.iter().map(|v| v.abs()).fold(0.0, f64::max).max(1e-300);
        for v in col.iter_mut() {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            *v += 1e-9 * scale * ((state >> 11) as f64 / (1u64 << 53) as f64 - 0.5);
        }
    }
    let sorted: Vec<Vec<f64>> = cols
        .iter()
        .map(|c| {
            let mut s = c.clone();
            s.sort_by(f64::total_cmp);
            s
        })
        .collect();
    let base = digamma(k as f64) + digamma(samples as f64);
    let mut mi = vec![0.0; vars * vars];
    for a in 0..vars {
        // Order of the samples along variable a, for a pruned neighbour search.
        let mut order: Vec<usize> = (0..samples).collect();
        order.sort_by(|&i, &j| cols[a][i].total_cmp(&cols[a][j]));
        for b in a + 1..vars {
            let (x, y) = (&cols[a], &cols[b]);
            let mut acc = 0.0;
            let mut heap: Vec<f64> = Vec::with_capacity(k + 1);
            for (rank, &i) in order.iter().enumerate() {
                heap.clear();
                let mut kth = f64::INFINITY;
                let consider = |j: usize, heap: &mut Vec<f64>, kth: &mut f64| {
                    let d = (x[i] - x[j]).abs().max((y[i] - y[j]).abs());
                    if heap.len() < k || d < *kth {
                        let at = heap.partition_point(|&h| h <= d);
                        heap.insert(at, d);
                        heap.truncate(k);
                        if heap.len() == k {
                            *kth = heap[k - 1];
                        }
                    }
                };
                let (mut lo, mut hi) = (rank, rank + 1);
                loop {
                    let left = (lo > 0).then(|| (x[i] - x[order[lo - 1]]).abs());
                    let right = (hi < samples).then(|| (x[order[hi]] - x[i]).abs());
                    let go_left = match (left, right) {
                        (None, None) => break,
                        (Some(l), Some(r)) => l <= r,
                        (Some(_), None) => true,
                        (None, Some(_)) => false,
                    };
                    let dx = if go_left {
                        left.unwrap()
                    } else {
                        right.unwrap()
                    };
                    if heap.len() == k && dx >= kth {
                        break;
                    }
                    if go_left {
                        lo -= 1;
                        consider(order[lo], &mut heap, &mut kth);
                    } else {
                        consider(order[hi], &mut heap, &mut kth);
                        hi += 1;
                    }
                }
                let eps = kth;
                let nx = count_within(&sorted[a], x[i], eps);
                let ny = count_within(&sorted[b], y[i], eps);
                acc += digamma(nx as f64 + 1.0) + digamma(ny as f64 + 1.0);
            }
            let v = base - acc / samples as f64;
            mi[a * vars + b] = v;
            mi[b * vars + a] = v;
        }
    }
    mi
}

/// Number of values strictly within `eps` of `c`, `c` itself not counted.
fn count_within(sorted: &[f64], c: f64, eps: f64) -> usize {
    let lo = sorted.partition_point(|&v| v <= c - eps);
    let hi = sorted.partition_point(|&v| v < c + eps);
    hi - lo - 1
}

/// Mean of the off-diagonal entries of a `[vars, vars]` matrix.
pub fn mean_off_diagonal(m: &[f64], vars: usize) -> f64 {
    let total: f64 = (0..vars)
        .flat_map(|a| (0..vars).filter(move |&b| b != a).map(move |b| (a, b)))
        .map(|(a, b)| m[a * vars + b])
        .sum();
    total / (vars * (vars - 1)) as f64
}

/// The digamma function `psi(x)` for `x > 0` (recurrence to `x >= 10`, then the asymptotic
/// series; accurate to about 1e-12).
pub fn digamma(mut x: f64) -> f64 {
    let mut r = 0.0;
    while x < 10.0 {
        r -= 1.0 / x;
        x += 1.0;
    }
    let f = 1.0 / (x * x);
    r + x.ln()
        - 0.5 / x
        - f * (1.0 / 12.0 - f * (1.0 / 120.0 - f * (1.0 / 252.0 - f * (1.0 / 240.0 - f / 132.0))))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digamma_known_values() {
        let euler = 0.577_215_664_901_532_9;
        assert!((digamma(1.0) + euler).abs() < 1e-12);
        assert!((digamma(0.5) + euler + 2.0 * 2f64.ln()).abs() < 1e-12);
        assert!((digamma(10.0) - 2.251_752_589_066_721).abs() < 1e-12);
    }

    #[test]
    fn representative_sites_have_their_level() {
        for (l, d) in [(8, 2), (16, 2), (16, 1)] {
            let lat = Lattice::new(l, d).unwrap();
            for (k, sites) in representative_sites(lat) {
                for (label, s) in sites {
                    assert_eq!(lat.rg_level(s), k, "{label} at level {k}, L={l} d={d}");
                }
            }
        }
    }
}
