//! Does a backend compute what the CPU computes, and do its fused block layers compute what the
//! reference tensor code computes? The largest relative differences between a backend and Burn's
//! Flex CPU backend on a tiny flow ([`agreement`]), and between the fused kernels and the
//! reference on one backend ([`kernels`]): the checks behind the kernel tests (Flex natively and
//! in the browser, Vulkan, WebGPU) and `bench --check`.

use crate::fused::{FlowAutodiff, FlowBackend, Kernel};
use crate::lattice::Lattice;
use crate::mera::MeraConfig;
use burn::backend::{Autodiff, Flex};
use burn::module::{Module, ModuleMapper, Param};
use burn::tensor::{Tensor, TensorData};
use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};

use crate::flow::Flow;
use crate::host::read;
use crate::ising::Target;
use crate::train::{TrainConfig, Trainer};

/// Largest relative differences (`|a - b| / max(|a|, |b|, 1)`) from the CPU backend on a flow
/// with L = 4, two coupling layers, batch 64: three training steps (loss and spread of `f`, so
/// gradients and Adam updates must agree too), a sampling step (fields and log-weights from the
/// same noise) and the log-density of the same configurations (the inverse pass and its
/// log-determinant).
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct Agreement {
    pub training: f64,
    pub sampling: f64,
    pub log_density: f64,
}

impl Agreement {
    /// Relative tolerance for two f32 backends computing the same graph in a different order
    /// (fused kernels, other transcendental functions).
    pub const TOLERANCE: f64 = 1e-3;

    /// Every difference within [`Agreement::TOLERANCE`].
    pub fn holds(&self) -> bool {
        [self.training, self.sampling, self.log_density]
            .iter()
            .all(|d| *d <= Self::TOLERANCE)
    }
}

/// The tiny flow of the check.
pub fn config() -> TrainConfig {
    let mut config = TrainConfig::from_query("L=4&d=2&nlayers=2&nmlp=1&nhidden=8&batch=64&seed=7")
        .expect("valid");
    config.optimizer.lr = 1e-2;
    config
}

/// Compares backend `B` on `device` with the Flex CPU backend.
pub async fn agreement<B: FlowAutodiff>(device: &B::Device) -> Agreement {
    let config = config();
    let cpu = Default::default();
    let training = worst(
        &steps::<B>(&config, device).await,
        &steps::<Autodiff<Flex>>(&config, &cpu).await,
    );

    let n = 32;
    let flow_g = config.init_flow::<B::InnerBackend>(device);
    let flow_c = config.init_flow::<Flex>(&cpu);
    let target_g = Target::<B::InnerBackend>::new(config.relaxation(), device);
    let target_c = Target::<Flex>::new(config.relaxation(), &cpu);
    let g = crate::sample::direct(&flow_g, &target_g, &mut StdRng::seed_from_u64(3), n, n).await;
    let c = crate::sample::direct(&flow_c, &target_c, &mut StdRng::seed_from_u64(3), n, n).await;
    let sampling = worst(&g.x, &c.x).max(worst(&g.log_w, &c.log_w));

    let log_density = worst(
        &log_q(&flow_g, &c.x, device).await,
        &log_q(&flow_c, &c.x, &cpu).await,
    );
    Agreement {
        training,
        sampling,
        log_density,
    }
}

fn worst(a: &[f64], b: &[f64]) -> f64 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(a, b)| (a - b).abs() / a.abs().max(b.abs()).max(1.0))
        .fold(0.0, f64::max)
}

/// Loss and spread of `f` for three training steps.
async fn steps<B: FlowAutodiff>(config: &TrainConfig, device: &B::Device) -> Vec<f64> {
    let mut t = Trainer::<B>::new(config.clone(), device).expect("valid");
    let mut out = Vec::new();
    for _ in 0..3 {
        let s = t.step().await.expect("finite loss");
        out.extend([s.loss, s.f_std]);
    }
    out
}

async fn log_q<B: FlowBackend>(flow: &Flow<B>, x: &[f64], device: &B::Device) -> Vec<f64> {
    let sites = flow.mera.sites();
    let t = Tensor::<B, 2>::from_data(
        TensorData::new(x.to_vec(), [x.len() / sites, sites]),
        device,
    );
    read(flow.log_prob(t)).await
}

/// Largest relative differences between a backend's fused block layers and the reference tensor
/// code on the same backend, over flows with L = 4 and 8, 1D and 2D, symmetrized and not (four
/// coupling layers, nmlp 2, nhidden 8, every parameter jittered so that the scales are not
/// zero): `outputs` compares the generated fields and `log q`, the inferred latents and
/// `ln|det|`, and the symmetrized `log q`; `gradients` the gradients of a scalar that uses all of
/// them with respect to the input `z` and to every block's parameters.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct KernelAgreement {
    pub outputs: f64,
    pub gradients: f64,
}

impl KernelAgreement {
    /// f32 tolerances: relative 1e-4 on outputs, 1e-3 on gradients.
    pub fn holds_f32(&self) -> bool {
        self.outputs <= 1e-4 && self.gradients <= 1e-3
    }
}

/// Compares the fused block layers of backend `B` with its reference tensor code (see
/// [`KernelAgreement`]).
pub async fn kernels<B: FlowAutodiff>(device: &B::Device) -> KernelAgreement {
    let mut worst_out: f64 = 0.0;
    let mut worst_grad: f64 = 0.0;
    for (l, d) in [(4, 2), (8, 2), (4, 1), (8, 1)] {
        let lattice = Lattice::new(l, d).expect("valid lattice");
        let config = MeraConfig {
            lattice,
            depth: None,
            nrepeat: 1,
            nlayers: 4,
            nmlp: 2,
            nhidden: 8,
        };
        for symmetric in [false, true] {
            let fused =
                evaluate::<B>(&jittered::<B>(config, symmetric, Kernel::Fused, device)).await;
            let reference =
                evaluate::<B>(&jittered::<B>(config, symmetric, Kernel::Reference, device)).await;
            for (k, (a, b)) in fused.iter().zip(&reference).enumerate() {
                let w = worst(a, b);
                if k < 5 {
                    worst_out = worst_out.max(w);
                } else {
                    worst_grad = worst_grad.max(w);
                }
            }
        }
    }
    KernelAgreement {
        outputs: worst_out,
        gradients: worst_grad,
    }
}

/// Adds uniform noise in `(-0.3, 0.3)` to every parameter and makes it a leaf of the graph.
struct Jitter(StdRng);

impl<B: FlowAutodiff> ModuleMapper<B> for Jitter {
    fn map_float<const D: usize>(&mut self, param: Param<Tensor<B, D>>) -> Param<Tensor<B, D>> {
        let (id, t, mapper) = param.consume();
        let shape = t.shape();
        let noise: Vec<f64> = (0..shape.num_elements())
            .map(|_| self.0.random_range(-0.3..0.3))
            .collect();
        let t = t.clone() + Tensor::from_data(TensorData::new(noise, shape), &t.device());
        Param::from_mapped_value(id, t.detach().require_grad(), mapper)
    }
}

fn jittered<B: FlowAutodiff>(
    config: MeraConfig,
    symmetric: bool,
    kernel: Kernel,
    device: &B::Device,
) -> Flow<B> {
    Flow {
        mera: config.init::<B>(7, device).with_kernel(kernel),
        symmetric,
    }
    .map(&mut Jitter(StdRng::seed_from_u64(3)))
}

/// What a flow computes on a fixed batch, and the gradients of one scalar built from all of it.
async fn evaluate<B: FlowAutodiff>(flow: &Flow<B>) -> Vec<Vec<f64>> {
    let n = flow.mera.sites();
    let batch = 24;
    let mut rng = StdRng::seed_from_u64(11);
    let z: Vec<f64> = (0..batch * n)
        .map(|_| rng.random_range(-1.5..1.5))
        .collect();
    let z = Tensor::<B, 2>::from_data(TensorData::new(z, [batch, n]), &flow.mera.device())
        .require_grad();
    let (x, lq) = flow.generate(z.clone());
    let (zz, ld) = flow.mera.infer(x.clone().mul_scalar(0.7));
    let lp = flow.log_prob(x.clone());
    let loss = x.clone().powi_scalar(2).sum()
        + lq.clone().sum()
        + zz.clone().sin().sum()
        + ld.clone().sum()
        + lp.clone().sum();
    let grads = loss.backward();
    let mut out = vec![
        read(x.inner()).await,
        read(lq.inner()).await,
        read(zz.inner()).await,
        read(ld.inner()).await,
        read(lp.inner()).await,
        read(z.grad(&grads).expect("z requires grad")).await,
    ];
    for b in &flow.mera.blocks {
        out.push(read(b.params.grad(&grads).expect("parameters require grad")).await);
    }
    out
}
