//! Choosing the backend the model trains on (in its Web Worker): Burn's wgpu backend on WebGPU
//! when the browser has an adapter, otherwise Burn's Flex CPU backend (single-threaded wasm).

use burn::backend::wgpu::{RuntimeOptions, WgpuDevice, graphics, init_setup_async};
use burn::backend::{Autodiff, Flex, Wgpu};
use neuralrg::folder::ModelFiles;
use neuralrg::train::TrainConfig;
use wasm_bindgen::JsCast;
use wasm_bindgen_futures::JsFuture;

use crate::lab::{Lab, Opened, new_lab, open_lab};

/// The backend the page trains on.
#[derive(Debug, Clone, PartialEq)]
pub enum Backend {
    /// WebGPU through Burn's wgpu backend (fusion, WGSL kernels).
    WebGpu { device: WgpuDevice, adapter: String },
    /// Burn's Flex backend on the CPU, with the reason WebGPU is not used.
    Cpu { reason: String },
}

impl Backend {
    /// Finds a WebGPU adapter and starts Burn's wgpu runtime on it, or falls back to the CPU.
    /// Asks `navigator.gpu.requestAdapter()` first: without an adapter, wgpu's own start traps
    /// instead of returning an error. `on_lost` is called with the reason when the browser
    /// reports the device lost (`GPUDevice.lost`: a driver reset, the GPU taken away, or
    /// `destroy()`); nothing more runs on it then, and nothing can be read back from it.
    pub async fn detect(
        prefer_cpu: bool,
        on_lost: impl Fn(String) + Send + Sync + 'static,
    ) -> Self {
        if prefer_cpu {
            return Self::Cpu {
                reason: "CPU chosen in the URL (cpu=true)".into(),
            };
        }
        match webgpu_adapter().await {
            Err(reason) => Self::Cpu { reason },
            Ok(described) => {
                let device = WgpuDevice::default();
                let setup =
                    init_setup_async::<graphics::WebGpu>(&device, RuntimeOptions::default()).await;
                setup
                    .device
                    .set_device_lost_callback(move |reason, message| {
                        on_lost(format!("{reason:?}: {message}"));
                    });
                // A test hook: the end-to-end test loses the device on purpose, as a driver
                // reset would (GPUDevice.destroy() fires GPUDevice.lost); the page's
                // `window.neuralrgLoseDevice()` reaches it through the model.
                let gpu = setup.device.clone();
                let lose = wasm_bindgen::closure::Closure::<dyn Fn()>::new(move || gpu.destroy());
                let _ = js_sys::Reflect::set(
                    &js_sys::global(),
                    &"neuralrgLoseDevice".into(),
                    lose.as_ref(),
                );
                lose.forget();
                let info = setup.adapter.get_info();
                let adapter = if info.name.is_empty() {
                    described
                } else {
                    info.name.clone()
                };
                Self::WebGpu { device, adapter }
            }
        }
    }

    /// What the page says about it.
    pub fn label(&self) -> String {
        match self {
            Self::WebGpu { adapter, .. } => format!("WebGPU (Burn wgpu backend) on {adapter}"),
            Self::Cpu { reason } => format!("CPU (Burn Flex backend, one thread): {reason}"),
        }
    }

    /// Short name for the statistics line (`webgpu` or `cpu`).
    pub fn short(&self) -> &'static str {
        match self {
            Self::WebGpu { .. } => "webgpu",
            Self::Cpu { .. } => "cpu",
        }
    }

    /// A fresh training session for `config`.
    pub fn lab(&self, config: TrainConfig) -> Result<Box<dyn Lab>, String> {
        match self {
            Self::WebGpu { device, .. } => new_lab::<Autodiff<Wgpu>>(config, device),
            Self::Cpu { .. } => new_lab::<Autodiff<Flex>>(config, &Default::default()),
        }
    }

    /// A session from a model's files (see [`ModelFiles`]), at its checkpoint's epoch.
    pub fn open(&self, files: &ModelFiles) -> Result<Opened, String> {
        match self {
            Self::WebGpu { device, .. } => open_lab::<Autodiff<Wgpu>>(files, device),
            Self::Cpu { .. } => open_lab::<Autodiff<Flex>>(files, &Default::default()),
        }
    }
}

/// The adapter `navigator.gpu.requestAdapter()` gives, described by its `info` (vendor,
/// architecture, description: browsers disclose no more); else why there is none.
async fn webgpu_adapter() -> Result<String, String> {
    // The window's or, in the model's worker, the worker's navigator.
    let navigator = js_sys::Reflect::get(&js_sys::global(), &"navigator".into())
        .ok()
        .filter(|n| !n.is_undefined())
        .ok_or("no navigator")?;
    let gpu = js_sys::Reflect::get(&navigator, &"gpu".into()).unwrap_or_default();
    if gpu.is_undefined() || gpu.is_null() {
        return Err("this browser has no WebGPU (navigator.gpu is missing)".into());
    }
    let request = js_sys::Reflect::get(&gpu, &"requestAdapter".into())
        .ok()
        .and_then(|f| f.dyn_into::<js_sys::Function>().ok())
        .ok_or("navigator.gpu.requestAdapter is missing")?;
    let promise = request
        .call0(&gpu)
        .ok()
        .and_then(|p| p.dyn_into::<js_sys::Promise>().ok())
        .ok_or("navigator.gpu.requestAdapter() failed")?;
    match JsFuture::from(promise).await {
        Ok(adapter) if !adapter.is_null() && !adapter.is_undefined() => {
            let info = js_sys::Reflect::get(&adapter, &"info".into()).unwrap_or_default();
            let field = |k: &str| {
                js_sys::Reflect::get(&info, &k.into())
                    .ok()
                    .and_then(|v| v.as_string())
                    .filter(|s| !s.is_empty())
            };
            let parts: Vec<String> = ["vendor", "architecture", "description"]
                .iter()
                .filter_map(|k| field(k))
                .collect();
            Ok(if parts.is_empty() {
                "an undisclosed adapter".into()
            } else {
                parts.join(" ")
            })
        }
        Ok(_) => Err("WebGPU has no adapter here (requestAdapter() returned null)".into()),
        Err(e) => Err(format!("WebGPU adapter request failed: {e:?}")),
    }
}
