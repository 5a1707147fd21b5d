//! The block layer on Burn's autodiff backend: one graph node per layer, whose backward pass is
//! the inner backend's [`FlowBackend::block_layer_backward`] (the pattern of Burn's
//! `examples/custom-cubecl-kernel`). The node keeps what the inner backend's forward pass saved
//! (the kernels: each coupling layer's input) and the parameters; the kernel recomputes the
//! MLPs' activations in the backward pass.

use std::sync::Arc;

use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::backend::autodiff::{Autodiff, NodeId};
use burn::tensor::ops::FloatTensor;

use super::{FlowBackend, LayerPlan, reference_layer};
use crate::coupling::Direction;

#[derive(Debug)]
struct BlockLayerBackward;

impl<B: FlowBackend> Backward<B, 2> for BlockLayerBackward {
    /// What the forward pass saved, the parameters (checkpointed), the layer, the direction.
    type State = (FloatTensor<B>, NodeId, Arc<LayerPlan>, Direction);

    fn backward(
        self,
        ops: Ops<Self::State, 2>,
        grads: &mut Gradients,
        checkpointer: &mut Checkpointer,
    ) {
        let [node_state, node_params] = ops.parents;
        let grad = grads.consume::<B>(&ops.node);
        let (saved, params, plan, direction) = ops.state;
        let params: FloatTensor<B> = checkpointer.retrieve_node_output(params);
        let (grad_state, grad_params) =
            B::block_layer_backward(saved, params, &plan, direction, grad);
        if let Some(node) = node_state {
            grads.register::<B>(node.id, grad_state);
        }
        if let Some(node) = node_params {
            grads.register::<B>(node.id, grad_params);
        }
    }
}

impl<B: FlowBackend, C: CheckpointStrategy> FlowBackend for Autodiff<B, C> {
    fn has_kernel() -> bool {
        B::has_kernel()
    }

    fn block_layer(
        state: FloatTensor<Self>,
        params: FloatTensor<Self>,
        plan: &Arc<LayerPlan>,
        direction: Direction,
    ) -> FloatTensor<Self> {
        if !B::has_kernel() {
            // No kernel below: Burn's autodiff differentiates the reference directly.
            let out =
                reference_layer::<Self>(super::float(state), super::float(params), plan, direction);
            return out.into_primitive().tensor();
        }
        match BlockLayerBackward
            .prepare::<C>([state.node.clone(), params.node.clone()])
            // Compute bound: under a checkpointing strategy its output is kept, not recomputed.
            .compute_bound()
            .stateful()
        {
            OpsKind::Tracked(mut prep) => {
                let params_id = prep.checkpoint(&params);
                let (out, saved) =
                    B::block_layer_train(state.primitive, params.primitive, plan, direction);
                prep.finish((saved, params_id, plan.clone(), direction), out)
            }
            OpsKind::UnTracked(prep) => prep.finish(B::block_layer(
                state.primitive,
                params.primitive,
                plan,
                direction,
            )),
        }
    }

    fn block_layer_backward(
        _saved: FloatTensor<Self>,
        _params: FloatTensor<Self>,
        _plan: &Arc<LayerPlan>,
        _direction: Direction,
        _grad: FloatTensor<Self>,
    ) -> (FloatTensor<Self>, FloatTensor<Self>) {
        unimplemented!("second derivatives of a block layer are not needed anywhere")
    }
}
