//! One fused operation per MERA block layer: a RealNVP block applied to every block of one
//! layer of the hierarchy, in either direction, as a single backend operation with a
//! hand-written backward pass (Burn's backend-extension mechanism).
//!
//! The operation works on the flow's *state* `[batch, N + 1]`: the field in site order and, in
//! the last column, the log-determinant accumulated so far. It gathers each block's sites from
//! the field, runs the block's coupling layers, scatters the results back, adds the blocks'
//! log-determinants to the last column and leaves every other site as it was. Its backward pass
//! gives the gradients with respect to the block's packed parameters and to the input state
//! (HMC and the receptive fields differentiate with respect to `z`).
//!
//! [`FlowBackend`]'s default implementation is the plain tensor code of
//! [`crate::coupling::reference`]: the definition every kernel is tested against, and the path
//! of any backend without a kernel. [`cpu`] is the kernel of Burn's Flex backend (natively and in
//! wasm32); `cube` holds the CubeCL kernels of the GPU backends (wgpu: Vulkan and WebGPU; CUDA)
//! and `fusion` registers them with Burn's fusion as custom operations (feature
//! `gpu-kernels`); the autodiff backend wraps any kernel with its backward pass ([`autodiff`]).

mod autodiff;
pub mod cpu;
#[cfg(feature = "gpu-kernels")]
mod cube;
#[cfg(feature = "gpu-kernels")]
mod fusion;

use std::sync::Arc;

use burn::backend::Autodiff;
use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::ops::FloatTensor;
use burn::tensor::{Int, Tensor, TensorData, TensorPrimitive};

use crate::coupling::{Direction, RealNvpConfig, reference};

/// Everything about one block layer that is not a tensor: the block's architecture and masks,
/// and the layer's site table. Shared (`Arc`) by the network and the autodiff graph.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LayerPlan {
    /// The RealNVP block's architecture.
    pub block: RealNvpConfig,
    /// The block's masks, `nlayers x width`, 1 = kept.
    pub masks: Vec<u8>,
    /// The sites of all blocks of the layer, block after block (`width` each).
    pub sites: Vec<usize>,
    /// Sites of the field, `N`.
    pub n: usize,
    /// The state's columns in the order blocks first, then the other sites, then the
    /// log-determinant (the reference's gather), and its inverse.
    order: Vec<usize>,
    inverse: Vec<usize>,
}

impl LayerPlan {
    /// The plan of a layer with these sites (block after block) on a field of `n` sites.
    pub fn new(block: RealNvpConfig, masks: Vec<u8>, sites: Vec<usize>, n: usize) -> Self {
        assert_eq!(
            masks.len(),
            block.nlayers * block.width,
            "one mask per coupling layer"
        );
        assert!(masks.iter().all(|&m| m <= 1), "masks are 0 or 1");
        assert_eq!(sites.len() % block.width, 0, "whole blocks");
        let mut in_block = vec![false; n];
        for &s in &sites {
            assert!(s < n && !in_block[s], "site {s} twice or outside the field");
            in_block[s] = true;
        }
        let mut order = sites.clone();
        order.extend((0..n).filter(|&s| !in_block[s]));
        order.push(n);
        let mut inverse = vec![0; n + 1];
        order.iter().enumerate().for_each(|(p, &c)| inverse[c] = p);
        Self {
            block,
            masks,
            sites,
            n,
            order,
            inverse,
        }
    }

    /// Blocks in the layer.
    pub fn blocks(&self) -> usize {
        self.sites.len() / self.block.width
    }
}

/// A backend that can run a whole block layer as one operation (see the module docs).
pub trait FlowBackend: Backend {
    /// Whether [`FlowBackend::block_layer`] is a kernel of this backend (the default is the
    /// reference tensor code).
    fn has_kernel() -> bool {
        false
    }

    /// Applies the block with packed `params` to every block of `plan`'s layer of `state`
    /// (`[batch, N + 1]`) in `direction`; returns the new state.
    fn block_layer(
        state: FloatTensor<Self>,
        params: FloatTensor<Self>,
        plan: &Arc<LayerPlan>,
        direction: Direction,
    ) -> FloatTensor<Self> {
        let out = reference_layer::<Self>(float(state), float(params), plan, direction);
        out.into_primitive().tensor()
    }

    /// [`FlowBackend::block_layer`] for training: the new state, and what
    /// [`FlowBackend::block_layer_backward`] needs (`saved`). The default saves the input state;
    /// the kernels save each coupling layer's input of every row.
    fn block_layer_train(
        state: FloatTensor<Self>,
        params: FloatTensor<Self>,
        plan: &Arc<LayerPlan>,
        direction: Direction,
    ) -> (FloatTensor<Self>, FloatTensor<Self>) {
        let out = Self::block_layer(state.clone(), params, plan, direction);
        (out, state)
    }

    /// The backward pass of [`FlowBackend::block_layer_train`], from what it saved: from the
    /// gradient of the output state, the gradients of the input state and of the parameters.
    /// The default differentiates the reference with Burn's autodiff.
    fn block_layer_backward(
        saved: FloatTensor<Self>,
        params: FloatTensor<Self>,
        plan: &Arc<LayerPlan>,
        direction: Direction,
        grad: FloatTensor<Self>,
    ) -> (FloatTensor<Self>, FloatTensor<Self>) {
        let (gs, gp) = reference_layer_backward::<Self>(
            float(saved),
            float(params),
            plan,
            direction,
            float(grad),
        );
        (gs.into_primitive().tensor(), gp.into_primitive().tensor())
    }
}

/// An autodiff backend whose inner backend runs block layers too: what training, HMC and the
/// receptive fields need.
pub trait FlowAutodiff: AutodiffBackend<InnerBackend: FlowBackend> + FlowBackend {}

impl<B> FlowAutodiff for B
where
    B: AutodiffBackend + FlowBackend,
    B::InnerBackend: FlowBackend,
{
}

fn float<B: Backend, const D: usize>(t: FloatTensor<B>) -> Tensor<B, D> {
    Tensor::from_primitive(TensorPrimitive::Float(t))
}

/// The block layer with plain tensor operations: gather the blocks (one `select`), apply the
/// block ([`reference::apply`]), put them back with the other sites and the log-determinant
/// (one `cat`, one `select`).
pub fn reference_layer<B: Backend>(
    state: Tensor<B, 2>,
    params: Tensor<B, 1>,
    plan: &LayerPlan,
    direction: Direction,
) -> Tensor<B, 2> {
    let device = state.device();
    let [batch, cols] = state.dims();
    assert_eq!(cols, plan.n + 1, "state is [batch, N + 1]");
    let index = |v: &[usize]| -> Tensor<B, 1, Int> {
        let v: Vec<i64> = v.iter().map(|&i| i as i64).collect();
        let len = v.len();
        Tensor::from_data(TensorData::new(v, [len]), &device)
    };
    let (w, m) = (plan.block.width, plan.sites.len());
    let v = state.select(1, index(&plan.order));
    let blocks = v
        .clone()
        .slice([0..batch, 0..m])
        .reshape([batch * m / w, w]);
    let (out, ld) = reference::apply(&plan.block, &params, &plan.masks, blocks, direction);
    let ld = ld.reshape([batch, m / w]).sum_dim(1);
    let rest = v.clone().slice([0..batch, m..plan.n]);
    let old_ld = v.slice([0..batch, plan.n..plan.n + 1]);
    Tensor::cat(vec![out.reshape([batch, m]), rest, old_ld + ld], 1).select(1, index(&plan.inverse))
}

/// The backward pass of [`reference_layer`] by Burn's autodiff: from the gradient of the
/// output state, the gradients of the input state and of the parameters.
pub fn reference_layer_backward<B: Backend>(
    state: Tensor<B, 2>,
    params: Tensor<B, 1>,
    plan: &LayerPlan,
    direction: Direction,
    grad: Tensor<B, 2>,
) -> (Tensor<B, 2>, Tensor<B, 1>) {
    let state = Tensor::<Autodiff<B>, 2>::from_inner(state).require_grad();
    let params = Tensor::<Autodiff<B>, 1>::from_inner(params).require_grad();
    let out = reference_layer(state.clone(), params.clone(), plan, direction);
    let grads = (out * Tensor::from_inner(grad)).sum().backward();
    let gs = state.grad(&grads).expect("the state requires grad");
    let gp = params.grad(&grads).expect("the parameters require grad");
    (gs, gp)
}

/// Which implementation a network runs its block layers with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
pub enum Kernel {
    /// The backend's fused operation where it has one, else the reference.
    #[default]
    Fused,
    /// The reference tensor code, always (for comparisons and benchmarks).
    Reference,
}

/// One block layer of `state` through the chosen implementation.
pub fn block_layer<B: FlowBackend>(
    kernel: Kernel,
    state: Tensor<B, 2>,
    params: Tensor<B, 1>,
    plan: &Arc<LayerPlan>,
    direction: Direction,
) -> Tensor<B, 2> {
    if kernel == Kernel::Reference || !B::has_kernel() {
        return reference_layer(state, params, plan, direction);
    }
    float(B::block_layer(
        state.into_primitive().tensor(),
        params.into_primitive().tensor(),
        plan,
        direction,
    ))
}
