//! Hamiltonian Monte Carlo as in the original (spec section 4): persistent chains, leapfrog
//! step 0.2, 10 leapfrog steps per trajectory, 10 trajectories per measurement, a Metropolis
//! test per chain and trajectory.
//!
//! - latent space: chains on `z` with `U(z) = -[log N(z) + log p~(g(z)) - log q(g(z))]`, whose
//!   pushforward through `g` is the target (for a symmetrized flow, `q = q_sym` and measured
//!   fields get a random sign, which makes them exact samples of `p`);
//! - physical space: chains on `x` with `U(x) = -log p~(x)`.

use burn::module::AutodiffModule;
use burn::tensor::{Bool, Tensor, TensorData};
use rand::RngExt;
use rand::rngs::StdRng;
use serde::{Deserialize, Serialize};

use crate::flow::{Flow, log_normal, logaddexp, normal_noise, random_signs};
use crate::fused::FlowAutodiff;
use crate::host::read;
use crate::ising::Target;

/// Where the chains live.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Space {
    /// Chains on the latent `z`.
    Latent,
    /// Chains on the physical field `x`.
    Physical,
}

/// Where fresh chains start.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "cli", derive(clap::ValueEnum))]
pub enum Start {
    /// From the prior `N(0, I)` in either space, as the original does (in physical space the
    /// chains then have to find the target on their own: a real test of the sampler).
    #[default]
    Prior,
    /// A warm start from the flow: physical chains start at flow samples `x = g(z)` (latent
    /// chains start at `z ~ N(0, I)` either way, which is the flow's own start).
    Flow,
}

/// Leapfrog settings.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct HmcConfig {
    /// Leapfrog step size (0.2).
    pub step: f64,
    /// Leapfrog steps per trajectory (10).
    pub leapfrog: usize,
    /// Trajectories per measurement (10).
    pub trajectories: usize,
}

impl Default for HmcConfig {
    fn default() -> Self {
        Self {
            step: 0.2,
            leapfrog: 10,
            trajectories: 10,
        }
    }
}

/// Persistent chains: one state per row, `[chains, N]`.
#[derive(Debug, Clone)]
pub struct Chains<B: FlowAutodiff> {
    pub space: Space,
    pub state: Tensor<B::InnerBackend, 2>,
}

/// `U` per chain.
fn potential<B: FlowAutodiff>(
    space: Space,
    flow: &Flow<B>,
    target: &Target<B>,
    q: Tensor<B, 2>,
) -> Tensor<B, 1> {
    match space {
        Space::Physical => target.log_prob(q).neg(),
        Space::Latent => {
            let (x, lq_plain) = flow.generate(q.clone());
            let lq = if flow.symmetric {
                let (_, lq_flip) = flow.infer(x.clone().neg());
                logaddexp(lq_plain, lq_flip).sub_scalar(std::f64::consts::LN_2)
            } else {
                lq_plain
            };
            (log_normal(q) + target.log_prob(x) - lq).neg()
        }
    }
}

/// `U` and its gradient at `q`.
fn grad_potential<B: FlowAutodiff>(
    space: Space,
    flow: &Flow<B>,
    target: &Target<B>,
    q: Tensor<B::InnerBackend, 2>,
) -> (Tensor<B::InnerBackend, 1>, Tensor<B::InnerBackend, 2>) {
    let q = Tensor::<B, 2>::from_inner(q).require_grad();
    let u = potential(space, flow, target, q.clone());
    let grads = u.clone().sum().backward();
    let g = q.grad(&grads).expect("the chain state requires grad");
    (u.inner(), g)
}

impl<B: FlowAutodiff> Chains<B> {
    /// `chains` fresh chains from `start`: `N(0, I)`, or (physical space) flow samples.
    pub fn new(
        space: Space,
        start: Start,
        flow: &Flow<B>,
        rng: &mut StdRng,
        chains: usize,
    ) -> Self {
        let device = flow.mera.device();
        let n = flow.mera.sites();
        let z = normal_noise::<B::InnerBackend>(rng, chains, n, &device);
        let state = match (space, start) {
            (Space::Physical, Start::Flow) => flow.valid().generate(z).0,
            _ => z,
        };
        Self { space, state }
    }

    /// One trajectory for every chain; returns the fraction of chains that accepted.
    pub async fn trajectory(
        &mut self,
        flow: &Flow<B>,
        target: &Target<B>,
        rng: &mut StdRng,
        config: HmcConfig,
    ) -> f64 {
        let [chains, n] = self.state.dims();
        let device = self.state.device();
        let eps = config.step;
        let p0 = normal_noise::<B::InnerBackend>(rng, chains, n, &device);
        let (u0, g0) = grad_potential(self.space, flow, target, self.state.clone());
        let mut q = self.state.clone();
        let mut p = p0.clone() - g0.mul_scalar(eps / 2.0);
        let mut u = u0.clone();
        for step in 0..config.leapfrog {
            q = q + p.clone().mul_scalar(eps);
            let (ui, gi) = grad_potential(self.space, flow, target, q.clone());
            u = ui;
            let scale = if step + 1 == config.leapfrog {
                eps / 2.0
            } else {
                eps
            };
            p = p - gi.mul_scalar(scale);
        }
        let h0 = u0 + (p0.clone() * p0).sum_dim(1).squeeze_dim(1).mul_scalar(0.5);
        let h1 = u + (p.clone() * p).sum_dim(1).squeeze_dim(1).mul_scalar(0.5);
        let dh = read(h0 - h1).await;
        let accept: Vec<bool> = dh
            .iter()
            .map(|d| d.is_finite() && (*d >= 0.0 || rng.random::<f64>() < d.exp()))
            .collect();
        let accepted = accept.iter().filter(|a| **a).count();
        // Selection, not `state + (q - state) * mask`: a rejected proposal that overflowed
        // (`q = inf`) would give `inf * 0 = NaN` and poison its chain for good.
        let mask = Tensor::<B::InnerBackend, 1, Bool>::from_data(
            TensorData::new(accept, [chains]),
            &device,
        )
        .unsqueeze_dim::<2>(1)
        .expand([chains, n]);
        self.state = self.state.clone().mask_where(mask, q);
        accepted as f64 / chains as f64
    }

    /// One measurement: `config.trajectories` trajectories, then the physical fields of the
    /// chains (row-major `[chains, N]` on the host) and the mean acceptance per trajectory.
    pub async fn measure(
        &mut self,
        flow: &Flow<B>,
        target: &Target<B>,
        rng: &mut StdRng,
        config: HmcConfig,
    ) -> (Vec<f64>, f64) {
        let mut acc = 0.0;
        for _ in 0..config.trajectories {
            acc += self.trajectory(flow, target, rng, config).await;
        }
        let x = match self.space {
            Space::Physical => self.state.clone(),
            Space::Latent => {
                let inner = flow.valid().generate(self.state.clone()).0;
                if flow.symmetric {
                    let chains = inner.dims()[0];
                    inner * random_signs::<B::InnerBackend>(rng, chains, &self.state.device())
                } else {
                    inner
                }
            }
        };
        (read(x).await, acc / config.trajectories.max(1) as f64)
    }
}
