//! Does a backend compute what the CPU computes? The largest relative differences between a
//! backend and Burn's Flex CPU backend on a tiny flow: the check behind the GPU tests (native
//! Vulkan, CUDA, WebGPU in the browser) and `bench --check`.

use crate::fused::{FlowAutodiff, FlowBackend};
use burn::backend::{Autodiff, Flex};
use burn::tensor::{Tensor, TensorData};
use rand::SeedableRng;
use rand::rngs::StdRng;

use crate::flow::Flow;
use crate::host::{block_on, read};
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
    config.lr = 1e-2;
    config
}

/// Compares backend `B` on `device` with the Flex CPU backend (native: blocks on the reads).
pub fn agreement<B: FlowAutodiff>(device: &B::Device) -> Agreement {
    block_on(agreement_async::<B>(device))
}

/// [`agreement`] for callers that cannot block (the browser).
pub async fn agreement_async<B: FlowAutodiff>(device: &B::Device) -> Agreement {
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
    let g =
        crate::sample::direct_async(&flow_g, &target_g, &mut StdRng::seed_from_u64(3), n, n).await;
    let c =
        crate::sample::direct_async(&flow_c, &target_c, &mut StdRng::seed_from_u64(3), n, n).await;
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
        let s = t.step_async().await.expect("finite loss");
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
