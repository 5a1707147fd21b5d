//! The fused block-layer operation on the CPU (Flex) against the reference tensor code it
//! replaces: outputs, log-determinants and gradients (parameters and inputs) of single layers and
//! of whole flows, L = 4 and 8, 1D and 2D, generate and infer, symmetrized and not, in f32 (both
//! instruction sets of the CPU kernel) and f64; twenty training steps; the kernel's `exp` and
//! `tanh`. (The same checks on Vulkan are in gpu.rs, on WebGPU and wasm32 in app/tests/web.rs.)
//!
//! Tolerances: f32 relative 1e-4 on outputs and log-determinants, 1e-3 on gradients; f64 1e-10.
//! Relative differences are `|a - b| / max(|a|, |b|, 1)`, the largest over all entries.

use std::sync::Arc;

use burn::backend::{Autodiff, Flex};
use burn::tensor::{Tensor, TensorData, TensorPrimitive};
use neuralrg::agreement;
use neuralrg::coupling::Direction;
use neuralrg::fused::{self, FlowBackend, Kernel, LayerPlan, cpu};
use neuralrg::host::block_on;
use neuralrg::lattice::Lattice;
use neuralrg::mera::MeraConfig;
use neuralrg::train::{TrainConfig, Trainer};
use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};

mod common;

type Ad = Autodiff<Flex>;

fn worst(a: &[f64], b: &[f64]) -> f64 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(a, b)| (a - b).abs() / a.abs().max(b.abs()).max(1.0))
        .fold(0.0, f64::max)
}

fn host<B: burn::tensor::backend::Backend, const D: usize>(t: Tensor<B, D>) -> Vec<f64> {
    t.into_data().iter::<f64>().collect()
}

fn tensor<B: burn::tensor::backend::Backend, const D: usize>(
    v: Vec<f64>,
    shape: [usize; D],
) -> Tensor<B, D> {
    Tensor::from_data(TensorData::new(v, shape), &Default::default())
}

fn uniform(n: usize, a: f64, seed: u64) -> Vec<f64> {
    let mut rng = StdRng::seed_from_u64(seed);
    (0..n).map(|_| rng.random_range(-a..a)).collect()
}

fn config(l: usize, d: usize) -> MeraConfig {
    let lattice = Lattice::new(l, d).unwrap();
    MeraConfig {
        lattice,
        depth: None,
        nrepeat: 1,
        nlayers: 4,
        nmlp: 2,
        nhidden: 8,
    }
}

/// The kernel against the reference on every block layer of the hierarchy, both directions:
/// outputs (with the log-determinant column), and the backward pass.
fn layers_agree(tol_out: f64, tol_grad: f64) {
    for (l, d) in [(4, 2), (8, 2), (4, 1), (8, 1)] {
        let c = config(l, d);
        let mera = c.init::<Flex>(5, &Default::default());
        let n = c.lattice.sites();
        let batch = 37; // not a multiple of the lanes: partial groups
        for (i, plan) in mera.plans().iter().enumerate() {
            let p = c.block().num_params();
            // Non-zero scales, weights of the usual size.
            let params = uniform(p, 0.4, 100 + i as u64);
            let state = uniform(batch * (n + 1), 2.0, 200 + i as u64);
            let grad = uniform(batch * (n + 1), 1.0, 300 + i as u64);
            for direction in [Direction::Generate, Direction::Infer] {
                let what = format!("L={l} d={d} layer {i} {direction:?}");
                let st = tensor::<Flex, 2>(state.clone(), [batch, n + 1]);
                let pt = tensor::<Flex, 1>(params.clone(), [p]);
                let gt = tensor::<Flex, 2>(grad.clone(), [batch, n + 1]);
                let reference = fused::reference_layer(st.clone(), pt.clone(), plan, direction);
                let kernel =
                    fused::block_layer(Kernel::Fused, st.clone(), pt.clone(), plan, direction);
                let diff = worst(&host(kernel), &host(reference));
                assert!(diff < tol_out, "{what}: outputs differ by {diff:e}");

                let (rs, rp) = fused::reference_layer_backward(
                    st.clone(),
                    pt.clone(),
                    plan,
                    direction,
                    gt.clone(),
                );
                // Training's forward pass gives the same state and saves what the backward needs.
                let (trained, saved) = Flex::block_layer_train(
                    st.into_primitive().tensor(),
                    pt.clone().into_primitive().tensor(),
                    plan,
                    direction,
                );
                let trained = Tensor::<Flex, 2>::from_primitive(TensorPrimitive::Float(trained));
                let reference = fused::reference_layer(
                    tensor::<Flex, 2>(state.clone(), [batch, n + 1]),
                    pt.clone(),
                    plan,
                    direction,
                );
                let diff = worst(&host(trained), &host(reference));
                assert!(
                    diff < tol_out,
                    "{what}: training outputs differ by {diff:e}"
                );
                let (ks, kp) = Flex::block_layer_backward(
                    saved,
                    pt.into_primitive().tensor(),
                    plan,
                    direction,
                    gt.into_primitive().tensor(),
                );
                let ks = Tensor::<Flex, 2>::from_primitive(TensorPrimitive::Float(ks));
                let kp = Tensor::<Flex, 1>::from_primitive(TensorPrimitive::Float(kp));
                let ds = worst(&host(ks), &host(rs));
                let dp = worst(&host(kp), &host(rp));
                assert!(ds < tol_grad, "{what}: input gradients differ by {ds:e}");
                assert!(
                    dp < tol_grad,
                    "{what}: parameter gradients differ by {dp:e}"
                );
            }
        }
    }
}

#[test]
fn block_layers_match_the_reference_f32() {
    cpu::use_portable(false);
    eprintln!("instruction set: {:?}", cpu::isa());
    layers_agree(1e-4, 1e-3);
}

#[test]
fn block_layers_match_the_reference_f32_portable_code() {
    if common::child_process("block_layers_match_the_reference_f32_portable_code", false) {
        cpu::use_portable(true);
        assert_eq!(cpu::isa(), cpu::Isa::Portable);
        layers_agree(1e-4, 1e-3);
    }
}

#[test]
fn block_layers_match_the_reference_f64() {
    if common::f64_process("block_layers_match_the_reference_f64") {
        layers_agree(1e-10, 1e-10);
    }
}

/// Whole flows (generate, infer, symmetrized log-density) and their gradients with respect to
/// the input and every block's parameters, fused against reference (`neuralrg::agreement`).
#[test]
fn whole_flows_match_the_reference_with_gradients() {
    let k = block_on(agreement::kernels::<Ad>(&Default::default()));
    eprintln!("{k:?}");
    assert!(k.holds_f32(), "{k:?}");
}

#[test]
fn whole_flows_match_the_reference_with_gradients_f64() {
    if common::f64_process("whole_flows_match_the_reference_with_gradients_f64") {
        let k = block_on(agreement::kernels::<Ad>(&Default::default()));
        eprintln!("{k:?}");
        assert!(k.outputs < 1e-10 && k.gradients < 1e-10, "{k:?}");
    }
}

#[test]
fn twenty_training_steps_match_the_reference() {
    let config =
        TrainConfig::from_query("L=8&d=2&nlayers=4&nmlp=2&nhidden=8&batch=64&seed=3").unwrap();
    let mut fused = Trainer::<Ad>::new(config.clone(), &Default::default()).unwrap();
    let mut reference = Trainer::<Ad>::new(config, &Default::default()).unwrap();
    reference.set_kernel(Kernel::Reference);
    for epoch in 1..=20 {
        let a = block_on(fused.step()).unwrap();
        let b = block_on(reference.step()).unwrap();
        let diff = ((a.loss - b.loss) / b.loss).abs();
        // Twenty Adam steps from the same start: rounding differences stay far below 1e-3.
        assert!(
            diff < 1e-4,
            "epoch {epoch}: loss {} vs {} ({diff:e})",
            a.loss,
            b.loss
        );
    }
    let pa = neuralrg::checkpoint::flat_parameters(&fused.flow_valid());
    let pb = neuralrg::checkpoint::flat_parameters(&reference.flow_valid());
    let diff = worst(&pa, &pb);
    assert!(diff < 1e-4, "parameters after 20 steps differ by {diff:e}");
}

#[test]
fn the_kernel_does_not_depend_on_the_number_of_threads() {
    // Chunks of rows are summed in a fixed order: one thread and all threads give the same bits.
    let c = config(8, 2);
    let mera = c.init::<Flex>(5, &Default::default());
    let plan: &Arc<LayerPlan> = &mera.plans()[0];
    let p = c.block().num_params();
    let batch = 600; // more rows than one chunk
    let params: Vec<f32> = uniform(p, 0.4, 1).iter().map(|&v| v as f32).collect();
    let state: Vec<f32> = uniform(batch * 65, 2.0, 2)
        .iter()
        .map(|&v| v as f32)
        .collect();
    let grad: Vec<f32> = uniform(batch * 65, 1.0, 3)
        .iter()
        .map(|&v| v as f32)
        .collect();
    let one = rayon::ThreadPoolBuilder::new()
        .num_threads(1)
        .build()
        .unwrap();
    let (out_all, saved_all) = cpu::forward_saving(&state, &params, plan, Direction::Infer);
    let (out_one, saved_one) =
        one.install(|| cpu::forward_saving(&state, &params, plan, Direction::Infer));
    assert_eq!((&out_all, &saved_all), (&out_one, &saved_one));
    assert_eq!(
        out_all,
        cpu::forward(&state, &params, plan, Direction::Infer)
    );
    let all = cpu::backward(&saved_all, &params, &grad, plan, Direction::Infer);
    let one = one.install(|| cpu::backward(&saved_one, &params, &grad, plan, Direction::Infer));
    assert_eq!(all, one);
}

#[test]
fn polynomial_exp_and_tanh_are_accurate() {
    let mut worst_exp = 0.0f64;
    let mut worst_tanh = 0.0f64;
    let steps = 400_000;
    for i in 0..=steps {
        let x = -87.0 + 175.0 * i as f64 / steps as f64;
        let xf = x as f32;
        let exact = (xf as f64).exp();
        let t = -10.0 + 20.0 * i as f64 / steps as f64;
        let tf = t as f32;
        for (e, th) in [
            (cpu::exp_f32(xf), cpu::tanh_f32(tf)),
            (
                cpu::exp_f32_with::<true>(xf),
                cpu::tanh_f32_with::<true>(tf),
            ),
        ] {
            worst_exp = worst_exp.max(((e as f64) - exact).abs() / exact);
            worst_tanh = worst_tanh.max(((th as f64) - (tf as f64).tanh()).abs());
        }
    }
    // Near 0, tanh's relative error.
    let mut worst_tanh_rel = 0.0f64;
    for i in 1..=100_000 {
        let x = (i as f64 * 1e-7) as f32;
        for th in [cpu::tanh_f32(x), cpu::tanh_f32_with::<true>(x)] {
            let exact = (x as f64).tanh();
            worst_tanh_rel = worst_tanh_rel.max(((th as f64) - exact).abs() / exact);
        }
    }
    eprintln!(
        "exp: relative error {worst_exp:e}; tanh: absolute error {worst_tanh:e}, relative \
         error near 0 {worst_tanh_rel:e}"
    );
    assert!(worst_exp < 3e-7, "exp relative error {worst_exp:e}");
    assert!(worst_tanh < 3e-7, "tanh absolute error {worst_tanh:e}");
    assert!(
        worst_tanh_rel < 1e-4,
        "tanh relative error near 0 {worst_tanh_rel:e}"
    );
    assert_eq!(cpu::exp_f32(-100.0), 0.0);
    assert_eq!(cpu::exp_f32(100.0), f32::INFINITY);
    assert!(cpu::exp_f32(f32::NAN).is_nan() && cpu::tanh_f32(f32::NAN).is_nan());
    assert_eq!(cpu::tanh_f32(30.0), 1.0);
    assert_eq!(cpu::tanh_f32(-30.0), -1.0);
}

#[test]
fn branch_free_elu_is_accurate_and_exact_for_positive_inputs() {
    let mut worst = 0.0f64;
    let steps = 200_000;
    for i in 0..=steps {
        let x = -100.0 + 110.0 * i as f64 / steps as f64;
        let xf = x as f32;
        let exact = if xf > 0.0 {
            xf as f64
        } else {
            (xf as f64).exp_m1()
        };
        for y in [cpu::elu_f32(xf), cpu::elu_f32_with::<true>(xf)] {
            if xf > 0.0 {
                assert_eq!(y, xf, "ELU({xf}) must be {xf}");
            }
            worst = worst.max(((y as f64) - exact).abs());
        }
    }
    eprintln!("ELU: absolute error {worst:e}");
    assert!(worst < 3e-7, "ELU absolute error {worst:e}");
    assert_eq!(cpu::elu_f32(-1e30), -1.0);
    assert_eq!(cpu::elu_f32(f32::NEG_INFINITY), -1.0);
    assert_eq!(cpu::elu_f32(0.0), 0.0);
    assert_eq!(cpu::elu_f32(3e38), 3e38);
    assert!(cpu::elu_f32(f32::NAN).is_nan() && cpu::elu_f32_with::<true>(f32::NAN).is_nan());
}
