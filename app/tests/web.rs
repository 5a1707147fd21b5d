//! The `neuralrg` library compiled to wasm32 and run in headless Chromium (wasm-bindgen-test
//! with chromedriver; Chromium started with `--enable-unsafe-webgpu`, see tests/web-env.sh):
//! the app finds the WebGPU adapter, and training, sampling and the log-density on WebGPU agree
//! with the CPU backend (`neuralrg::agreement`, relative tolerance 1e-3); the fused block layers
//! (the CubeCL kernels on WebGPU, the CPU kernel with wasm SIMD) agree with the reference tensor
//! code, outputs (relative 1e-4) and gradients (1e-3).
#![cfg(target_arch = "wasm32")]

use std::cell::RefCell;

use app::backend::Backend;
use burn::backend::wgpu::WgpuDevice;
use burn::backend::{Autodiff, Flex, Wgpu};
use neuralrg::agreement::{Agreement, agreement, kernels};
use neuralrg::train::Trainer;
use wasm_bindgen_test::*;

wasm_bindgen_test_configure!(run_in_browser);

#[wasm_bindgen_test]
async fn webgpu_agrees_with_the_cpu_backend() {
    let device = webgpu_device().await;
    let a = agreement::<Autodiff<Wgpu>>(&device).await;
    web_sys::console::log_1(&format!("{a:?}").into());
    assert!(
        a.holds(),
        "differences beyond {}: {a:?}",
        Agreement::TOLERANCE
    );
}

/// The page's WebGPU device, started once for all tests (Burn's runtime starts once per device).
async fn webgpu_device() -> WgpuDevice {
    thread_local! {
        static DEVICE: RefCell<Option<WgpuDevice>> = const { RefCell::new(None) };
    }
    if let Some(device) = DEVICE.with(|d| d.borrow().clone()) {
        return device;
    }
    let device = match Backend::detect(false, |_| {}).await {
        Backend::WebGpu { device, adapter } => {
            web_sys::console::log_1(&format!("WebGPU adapter: {adapter}").into());
            device
        }
        Backend::Cpu { reason } => panic!("WebGPU expected in this browser: {reason}"),
    };
    DEVICE.with(|d| *d.borrow_mut() = Some(device.clone()));
    device
}

#[wasm_bindgen_test]
async fn webgpu_kernels_agree_with_the_reference() {
    let device = webgpu_device().await;
    let k = kernels::<Autodiff<Wgpu>>(&device).await;
    web_sys::console::log_1(&format!("WebGPU kernels: {k:?}").into());
    assert!(k.holds_f32(), "{k:?}");
}

#[wasm_bindgen_test]
async fn the_cpu_kernel_agrees_with_the_reference_in_wasm() {
    let k = kernels::<Autodiff<Flex>>(&Default::default()).await;
    web_sys::console::log_1(&format!("CPU kernel in wasm: {k:?}").into());
    assert!(k.holds_f32(), "{k:?}");
}

/// The CPU fallback trains in wasm: the loss is finite and falls over 20 steps.
#[wasm_bindgen_test]
async fn the_cpu_backend_trains_in_wasm() {
    let mut c = neuralrg::agreement::config();
    c.optimizer.lr = 0.02;
    let mut t = Trainer::<Autodiff<Flex>>::new(c, &Default::default()).expect("valid");
    let first = t.step().await.expect("finite").f;
    let mut last = first;
    for _ in 0..20 {
        last = t.step().await.expect("finite").f;
    }
    assert!(last < first, "F {first} -> {last}");
}
