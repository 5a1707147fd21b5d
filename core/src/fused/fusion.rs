//! The block layer on Burn's fusion backends (`Wgpu`, `Cuda`): each forward and backward pass is
//! registered with the fusion stream as one custom operation, as burn-vision registers its
//! custom operations, and runs the CubeCL kernels of [`super::cube`] when the stream executes.
//! Custom operations are never fused with their neighbours; the element-wise work around them
//! (the prior, the target, the loss) still is.

use std::marker::PhantomData;
use std::sync::Arc;

use burn::tensor::ops::FloatTensor;
use burn_fusion::stream::{Operation, OperationStreams};
use burn_fusion::{Fusion, FusionBackend, FusionRuntime};
use burn_ir::{CustomOpIr, HandleContainer, OperationIr, OperationOutput, TensorIr};

use super::{FlowBackend, LayerPlan};
use crate::coupling::Direction;

#[derive(Debug)]
struct Forward<B> {
    desc: CustomOpIr,
    plan: Arc<LayerPlan>,
    direction: Direction,
    _backend: PhantomData<B>,
}

impl<B: FusionBackend + FlowBackend> Operation<B::FusionRuntime> for Forward<B> {
    fn execute(
        &self,
        handles: &mut HandleContainer<<B::FusionRuntime as FusionRuntime>::FusionHandle>,
    ) {
        let ([state, params], [out]) = self.desc.as_fixed();
        let state = handles.get_float_tensor::<B>(state);
        let params = handles.get_float_tensor::<B>(params);
        let result = B::block_layer(state, params, &self.plan, self.direction);
        handles.register_float_tensor::<B>(&out.id, result);
    }
}

#[derive(Debug)]
struct Train<B> {
    desc: CustomOpIr,
    plan: Arc<LayerPlan>,
    direction: Direction,
    _backend: PhantomData<B>,
}

impl<B: FusionBackend + FlowBackend> Operation<B::FusionRuntime> for Train<B> {
    fn execute(
        &self,
        handles: &mut HandleContainer<<B::FusionRuntime as FusionRuntime>::FusionHandle>,
    ) {
        let ([state, params], [out, saved]) = self.desc.as_fixed();
        let state = handles.get_float_tensor::<B>(state);
        let params = handles.get_float_tensor::<B>(params);
        let (result, kept) = B::block_layer_train(state, params, &self.plan, self.direction);
        handles.register_float_tensor::<B>(&out.id, result);
        handles.register_float_tensor::<B>(&saved.id, kept);
    }
}

#[derive(Debug)]
struct Backward<B> {
    desc: CustomOpIr,
    plan: Arc<LayerPlan>,
    direction: Direction,
    _backend: PhantomData<B>,
}

impl<B: FusionBackend + FlowBackend> Operation<B::FusionRuntime> for Backward<B> {
    fn execute(
        &self,
        handles: &mut HandleContainer<<B::FusionRuntime as FusionRuntime>::FusionHandle>,
    ) {
        let ([saved, params, grad], [grad_state, grad_params]) = self.desc.as_fixed();
        let saved = handles.get_float_tensor::<B>(saved);
        let params = handles.get_float_tensor::<B>(params);
        let grad = handles.get_float_tensor::<B>(grad);
        let (gs, gp) = B::block_layer_backward(saved, params, &self.plan, self.direction, grad);
        handles.register_float_tensor::<B>(&grad_state.id, gs);
        handles.register_float_tensor::<B>(&grad_params.id, gp);
    }
}

impl<B: FusionBackend + FlowBackend> FlowBackend for Fusion<B> {
    fn has_kernel() -> bool {
        B::has_kernel()
    }

    fn block_layer(
        state: FloatTensor<Self>,
        params: FloatTensor<Self>,
        plan: &Arc<LayerPlan>,
        direction: Direction,
    ) -> FloatTensor<Self> {
        let client = state.client.clone();
        let out = TensorIr::uninit(
            client.create_empty_handle(),
            state.shape.clone(),
            state.dtype,
        );
        let streams = OperationStreams::with_inputs([&state, &params]);
        let desc = CustomOpIr::new(
            "neuralrg_block_layer",
            &[state.into_ir(), params.into_ir()],
            &[out],
        );
        client
            .register(
                streams,
                OperationIr::Custom(desc.clone()),
                Forward::<B> {
                    desc,
                    plan: plan.clone(),
                    direction,
                    _backend: PhantomData,
                },
            )
            .output()
    }

    fn block_layer_train(
        state: FloatTensor<Self>,
        params: FloatTensor<Self>,
        plan: &Arc<LayerPlan>,
        direction: Direction,
    ) -> (FloatTensor<Self>, FloatTensor<Self>) {
        let client = state.client.clone();
        let [batch, _] = state.shape.dims::<2>();
        let (w, nl) = (plan.block.width, plan.block.nlayers);
        let kept = (batch * plan.blocks() * nl * w).max(1);
        let out = TensorIr::uninit(
            client.create_empty_handle(),
            state.shape.clone(),
            state.dtype,
        );
        let saved = TensorIr::uninit(
            client.create_empty_handle(),
            burn::tensor::Shape::new([kept]),
            state.dtype,
        );
        let streams = OperationStreams::with_inputs([&state, &params]);
        let desc = CustomOpIr::new(
            "neuralrg_block_layer_train",
            &[state.into_ir(), params.into_ir()],
            &[out, saved],
        );
        let [out, saved] = client
            .register(
                streams,
                OperationIr::Custom(desc.clone()),
                Train::<B> {
                    desc,
                    plan: plan.clone(),
                    direction,
                    _backend: PhantomData,
                },
            )
            .outputs::<2>();
        (out, saved)
    }

    fn block_layer_backward(
        saved: FloatTensor<Self>,
        params: FloatTensor<Self>,
        plan: &Arc<LayerPlan>,
        direction: Direction,
        grad: FloatTensor<Self>,
    ) -> (FloatTensor<Self>, FloatTensor<Self>) {
        let client = grad.client.clone();
        let grad_state =
            TensorIr::uninit(client.create_empty_handle(), grad.shape.clone(), grad.dtype);
        let grad_params = TensorIr::uninit(
            client.create_empty_handle(),
            params.shape.clone(),
            params.dtype,
        );
        let streams = OperationStreams::with_inputs([&saved, &params, &grad]);
        let desc = CustomOpIr::new(
            "neuralrg_block_layer_backward",
            &[saved.into_ir(), params.into_ir(), grad.into_ir()],
            &[grad_state, grad_params],
        );
        let [gs, gp] = client
            .register(
                streams,
                OperationIr::Custom(desc.clone()),
                Backward::<B> {
                    desc,
                    plan: plan.clone(),
                    direction,
                    _backend: PhantomData,
                },
            )
            .outputs::<2>();
        (gs, gp)
    }
}
