//! The normalizing flow: a standard normal prior over all `N` sites pushed through the MERA
//! network, `x = g(z)`, with exact `log q(x) = log N(z) - ln|det dg/dz|`, and the
//! Z2-symmetrized flow `log q_sym(x) = logsumexp(log q(x), log q(-x)) - ln 2` (spec sections 2
//! and 3). *Generate* is `z -> x`, *infer* is `x -> z`.

use burn::module::Module;
use burn::tensor::{Tensor, TensorData, backend::Backend};
use rand::rngs::StdRng;
use rand_distr::{Distribution, StandardNormal};

use crate::fused::FlowBackend;
use crate::mera::Mera;

/// The flow: the MERA network and whether the density is Z2-symmetrized.
#[derive(Module, Debug)]
pub struct Flow<B: Backend> {
    pub mera: Mera<B>,
    /// Use `q_sym`: sampled signs are flipped with probability 1/2 and the density symmetrized.
    pub symmetric: bool,
}

/// `log N(z; 0, I)` per row, `[batch]`.
pub fn log_normal<B: Backend>(z: Tensor<B, 2>) -> Tensor<B, 1> {
    let n = z.dims()[1] as f64;
    let half_ln_2pi = 0.5 * (2.0 * std::f64::consts::PI).ln();
    (z.clone() * z)
        .sum_dim(1)
        .squeeze_dim(1)
        .mul_scalar(-0.5)
        .sub_scalar(n * half_ln_2pi)
}

/// `logsumexp(a, b)` elementwise, stable.
pub fn logaddexp<B: Backend, const D: usize>(a: Tensor<B, D>, b: Tensor<B, D>) -> Tensor<B, D> {
    let m = a.clone().max_pair(b.clone());
    let d = (a - b).abs().neg();
    m + d.exp().log1p()
}

/// Draws `batch x n` standard normals on the host (so every backend sees the same stream).
pub fn normal_noise<B: Backend>(
    rng: &mut StdRng,
    batch: usize,
    n: usize,
    device: &B::Device,
) -> Tensor<B, 2> {
    normal_noise_rows(rng, batch, n, 0..batch, device)
}

/// The rows `rows` of [`normal_noise`]`(rng, batch, n)`: the same stream is drawn, the other
/// rows are dropped (a data-parallel replica's share of the batch).
pub fn normal_noise_rows<B: Backend>(
    rng: &mut StdRng,
    batch: usize,
    n: usize,
    rows: std::ops::Range<usize>,
    device: &B::Device,
) -> Tensor<B, 2> {
    let v: Vec<f64> = (0..batch * n).map(|_| StandardNormal.sample(rng)).collect();
    let kept = v[rows.start * n..rows.end * n].to_vec();
    Tensor::from_data(TensorData::new(kept, [rows.len(), n]), device)
}

/// Random signs `+-1`, `[batch, 1]`.
pub fn random_signs<B: Backend>(
    rng: &mut StdRng,
    batch: usize,
    device: &B::Device,
) -> Tensor<B, 2> {
    use rand::RngExt;
    let v: Vec<f64> = (0..batch)
        .map(|_| if rng.random::<bool>() { 1.0 } else { -1.0 })
        .collect();
    Tensor::from_data(TensorData::new(v, [batch, 1]), device)
}

impl<B: FlowBackend> Flow<B> {
    /// `x = g(z)` with the non-symmetrized `log q(x)`.
    pub fn generate(&self, z: Tensor<B, 2>) -> (Tensor<B, 2>, Tensor<B, 1>) {
        let (x, logdet) = self.mera.generate(z.clone());
        (x, log_normal(z) - logdet)
    }

    /// `z = g^-1(x)` with the non-symmetrized `log q(x)`.
    pub fn infer(&self, x: Tensor<B, 2>) -> (Tensor<B, 2>, Tensor<B, 1>) {
        let (z, logdet) = self.mera.infer(x);
        let lq = log_normal(z.clone()) + logdet;
        (z, lq)
    }

    /// `x` oriented for the inverse map: for a symmetrized flow, `s x` with the sign `s = +-1`
    /// whose branch gives `x` the larger density (the mixture component `x` most likely came
    /// from); `x` itself otherwise. The latent variables of `x` are `g^-1(orient(x))`.
    pub fn orient(&self, x: Tensor<B, 2>) -> Tensor<B, 2> {
        if !self.symmetric {
            return x;
        }
        let (_, lq) = self.infer(x.clone());
        let (_, lq_neg) = self.infer(x.clone().neg());
        // s = 1 - 2 [q(-x) > q(x)]
        let sign = lq_neg
            .greater(lq)
            .float()
            .mul_scalar(-2.0)
            .add_scalar(1.0)
            .unsqueeze_dim(1);
        x * sign
    }

    /// The latent variables `z = g^-1(orient(x))`.
    pub fn latent(&self, x: Tensor<B, 2>) -> Tensor<B, 2> {
        self.mera.infer(self.orient(x)).0
    }

    /// `log q(x)` of the flow (symmetrized if the flow is).
    pub fn log_prob(&self, x: Tensor<B, 2>) -> Tensor<B, 1> {
        let (_, lq) = self.infer(x.clone());
        if self.symmetric {
            let (_, lq_neg) = self.infer(x.neg());
            logaddexp(lq, lq_neg).sub_scalar(std::f64::consts::LN_2)
        } else {
            lq
        }
    }

    /// Draws `batch` samples with their `log q` (a symmetrized flow flips each sample's sign
    /// with probability 1/2 and evaluates `q_sym`, which needs the extra inverse pass of `-x`).
    pub fn sample(&self, rng: &mut StdRng, batch: usize) -> Sample<B> {
        let device = self.mera.device();
        let n = self.mera.sites();
        let z = normal_noise::<B>(rng, batch, n, &device);
        let (x, lq_plain) = self.generate(z);
        if !self.symmetric {
            return Sample { x, log_q: lq_plain };
        }
        let (_, lq_flipped) = self.infer(x.clone().neg());
        let signs = random_signs::<B>(rng, batch, &device);
        let log_q = logaddexp(lq_plain, lq_flipped).sub_scalar(std::f64::consts::LN_2);
        Sample {
            x: x * signs,
            log_q,
        }
    }
}

/// A batch drawn from the flow.
#[derive(Debug, Clone)]
pub struct Sample<B: Backend> {
    /// Fields `[batch, N]`.
    pub x: Tensor<B, 2>,
    /// `log q(x)` of the flow that drew them (symmetrized if it is), `[batch]`.
    pub log_q: Tensor<B, 1>,
}
