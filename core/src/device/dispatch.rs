//! Starting a backend on the devices named (native only).

use super::DeviceKind;
use crate::fused::FlowAutodiff;
use crate::host::block_on;

/// The requested device cannot be used: what is missing and what to do.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("--device {device}: {reason}")]
pub struct DeviceError {
    pub device: DeviceKind,
    pub reason: String,
}

/// Work to run on the backend the options choose (generic code, one dispatch).
pub trait BackendJob {
    type Output;
    fn run<B: FlowAutodiff>(self, device: B::Device) -> Self::Output;
}

/// Work on several devices of one backend (data-parallel training).
pub trait DevicesJob {
    type Output;
    fn run<B: FlowAutodiff>(self, devices: Vec<B::Device>) -> Self::Output;
}

/// A [`BackendJob`] as a [`DevicesJob`] on one device.
struct One<J>(J);

impl<J: BackendJob> DevicesJob for One<J> {
    type Output = J::Output;
    fn run<B: FlowAutodiff>(self, devices: Vec<B::Device>) -> Self::Output {
        let device = devices.into_iter().next().expect("one device");
        self.0.run::<B>(device)
    }
}

/// Runs `job` on the backend and device for `device`, in f64 when `double` (on the CPU: Flex
/// computes in f64 once its device is told so, before the first tensor); prints the backend and
/// device name to stderr first. Refuses devices that are not there (or not compiled in) and f64
/// on GPUs.
pub fn dispatch<J: BackendJob>(
    double: bool,
    device: DeviceKind,
    job: J,
) -> Result<J::Output, DeviceError> {
    dispatch_all(double, &[device], One(job))
}

/// [`dispatch`] on several devices of one backend (`cpu` workers, `cuda:N` or `vulkan:N`
/// devices), started in the order given; refuses a list that mixes backends.
pub fn dispatch_all<J: DevicesJob>(
    double: bool,
    devices: &[DeviceKind],
    job: J,
) -> Result<J::Output, DeviceError> {
    use burn::backend::{Autodiff, Flex};
    let device = *devices.first().expect("at least one device");
    let refuse = |reason: String| DeviceError { device, reason };
    if let Some(other) = devices.iter().find(|d| !d.same_backend(device)) {
        return Err(refuse(format!(
            "cannot train one model on {device} and {other} together: list devices of one \
             backend (cpu:N, cuda:N or vulkan:N)"
        )));
    }
    if double && device.is_gpu() {
        return Err(refuse(
            "f64 (--double) runs on the CPU only: Burn 0.21's GPU backends have no f64 (drop \
             --double or use --device cpu)"
                .into(),
        ));
    }
    let indices = || {
        devices
            .iter()
            .map(|d| match d {
                DeviceKind::Cuda(n) | DeviceKind::Vulkan(n) => *n,
                _ => 0,
            })
            .collect::<Vec<_>>()
    };
    match device {
        DeviceKind::Cpu | DeviceKind::Flex => {
            if double {
                use burn::tensor::{DType, set_default_dtypes};
                set_default_dtypes::<Flex>(&Default::default(), DType::F64, DType::I32).map_err(
                    |e| refuse(format!("the CPU backend cannot switch to f64 here: {e:?}")),
                )?;
            }
            let all = vec![Default::default(); devices.len()];
            Ok(start::<Autodiff<Flex>, J>(job, all, "cpu"))
        }
        DeviceKind::Cuda(_) => cuda_backend(&indices(), job).map_err(refuse),
        DeviceKind::Vulkan(_) => wgpu_backend(Some(&indices()), job).map_err(refuse),
        DeviceKind::Wgpu if devices.len() > 1 => Err(refuse(
            "wgpu is one device (the default adapter): list vulkan:N devices instead".into(),
        )),
        DeviceKind::Wgpu => wgpu_backend(None, job).map_err(refuse),
    }
}

/// Where compiled GPU kernels and autotune results are kept between runs: `NEURALRG_KERNEL_CACHE`,
/// or `~/.cache/neuralrg/cubecl`.
pub fn kernel_cache_dir() -> std::path::PathBuf {
    std::env::var_os("NEURALRG_KERNEL_CACHE")
        .map(Into::into)
        .unwrap_or_else(|| {
            let home = std::env::var_os("HOME").unwrap_or_else(|| ".".into());
            std::path::PathBuf::from(home).join(".cache/neuralrg/cubecl")
        })
}

/// Keeps CubeCL's compiled kernels and autotune results in [`kernel_cache_dir`] (a user's own
/// `cubecl.toml` or `burn.toml` still wins where it sets a cache): the first step of a second
/// run then skips most of the compilation. Once per process, before any GPU starts.
#[cfg(any(feature = "cuda", feature = "wgpu"))]
fn configure_kernel_cache() {
    use burn::cubecl::config::{CubeClRuntimeConfig, RuntimeConfig, cache::CacheConfig};
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let dir = kernel_cache_dir();
        let _ = std::fs::create_dir_all(&dir);
        let mut config = CubeClRuntimeConfig::from_current_dir();
        if config.compilation.cache.is_none() {
            config.compilation.cache = Some(CacheConfig::File(dir.clone()));
        }
        if matches!(config.autotune.cache, CacheConfig::Target) {
            config.autotune.cache = CacheConfig::File(dir);
        }
        CubeClRuntimeConfig::set(config.override_from_env());
    });
}

fn start<B: FlowAutodiff, J: DevicesJob>(job: J, devices: Vec<B::Device>, name: &str) -> J::Output {
    eprintln!("neuralrg: backend {} on {name}", B::name(&devices[0]));
    job.run::<B>(devices)
}

#[cfg(feature = "cuda")]
fn cuda_backend<J: DevicesJob>(indices: &[usize], job: J) -> Result<J::Output, String> {
    use burn::backend::{Autodiff, Cuda, cuda::CudaDevice};
    use cudarc::driver::CudaContext;
    configure_kernel_cache();
    // SAFETY (both checks): they only try to dlopen the libraries by their usual names.
    if !unsafe { cudarc::driver::sys::is_culib_present() } {
        return Err(
            "no CUDA driver: libcuda.so could not be loaded (is an NVIDIA driver installed?)"
                .into(),
        );
    }
    if !unsafe { cudarc::nvrtc::sys::is_culib_present() } {
        return Err("no NVRTC: libnvrtc.so could not be loaded (install the CUDA toolkit, or put its lib64 folder on LD_LIBRARY_PATH)".into());
    }
    let include = cuda_path().map(|p| p.join("include"));
    if !include.as_ref().is_some_and(|p| p.join("cuda.h").exists()) {
        return Err(format!(
            "no CUDA headers ({}): kernels are compiled with NVRTC at run time and need them; set CUDA_PATH to the CUDA toolkit",
            include.map_or(
                "CUDA_PATH unset, /usr/local/cuda missing".into(),
                |p| format!("{} has no cuda.h", p.display())
            )
        ));
    }
    let count =
        CudaContext::device_count().map_err(|e| format!("the CUDA driver failed: {e:?}"))?;
    let mut names = Vec::new();
    for &n in indices {
        if n >= count.max(0) as usize {
            return Err(format!(
                "cuda:{n} is not there: there are {count} CUDA devices (cuda:0 to cuda:{})",
                count - 1
            ));
        }
        names.push(
            CudaContext::new(n)
                .and_then(|c| c.name())
                .map_err(|e| format!("CUDA device {n} failed to start: {e:?}"))?,
        );
    }
    let devices = indices.iter().map(|&n| CudaDevice::new(n)).collect();
    Ok(start::<Autodiff<Cuda>, J>(job, devices, &names.join(", ")))
}

#[cfg(not(feature = "cuda"))]
fn cuda_backend<J: DevicesJob>(_: &[usize], _: J) -> Result<J::Output, String> {
    Err("this build has no CUDA backend (rebuild with `--features cuda`)".into())
}

/// Where NVRTC looks for the CUDA headers (the same places as cubecl-cuda).
#[cfg(feature = "cuda")]
fn cuda_path() -> Option<std::path::PathBuf> {
    if let Ok(p) = std::env::var("CUDA_PATH") {
        return Some(p.into());
    }
    ["/usr/local/cuda", "/opt/cuda"]
        .iter()
        .map(std::path::PathBuf::from)
        .find(|p| p.exists())
        .or_else(|| {
            std::path::Path::new("/usr/bin/nvcc")
                .exists()
                .then(|| "/usr".into())
        })
}

/// The Vulkan adapter `n` (or wgpu's default adapter when `None`), started, with its name.
/// Refuses, naming what is missing, when there is no such adapter. Each adapter is started once
/// per process (Burn's runtime cannot be started twice on one device).
#[cfg(feature = "wgpu")]
pub fn wgpu_device(n: Option<usize>) -> Result<(burn::backend::wgpu::WgpuDevice, String), String> {
    use std::collections::HashMap;
    use std::sync::{Mutex, OnceLock};
    type Started = HashMap<Option<usize>, (burn::backend::wgpu::WgpuDevice, String)>;
    static STARTED: OnceLock<Mutex<Started>> = OnceLock::new();
    let mut started = STARTED
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|e| e.into_inner());
    if let Some(found) = started.get(&n) {
        return Ok(found.clone());
    }
    let found = start_wgpu_device(n)?;
    started.insert(n, found.clone());
    Ok(found)
}

#[cfg(feature = "wgpu")]
fn start_wgpu_device(
    n: Option<usize>,
) -> Result<(burn::backend::wgpu::WgpuDevice, String), String> {
    use burn::backend::wgpu::{RuntimeOptions, WgpuDevice, graphics, init_setup};
    use wgpu::{Backends, DeviceType, Instance, InstanceDescriptor};

    configure_kernel_cache();
    let backends = if n.is_some() {
        Backends::VULKAN
    } else {
        Backends::PRIMARY
    };
    let instance = Instance::new(InstanceDescriptor {
        backends,
        ..InstanceDescriptor::new_without_display_handle()
    });
    let adapters = crate::host::block_on(instance.enumerate_adapters(backends));
    let infos: Vec<_> = adapters.iter().map(|a| a.get_info()).collect();
    if infos.is_empty() {
        return Err(if n.is_some() {
            "no Vulkan adapter found (install a Vulkan driver: NVIDIA's, or Mesa's mesa-vulkan-drivers for software Vulkan)".into()
        } else {
            "no GPU adapter found by wgpu (Vulkan, Metal or DirectX 12)".into()
        });
    }
    let device = match n {
        None => WgpuDevice::DefaultDevice,
        Some(n) => {
            let Some(info) = infos.get(n) else {
                return Err(format!(
                    "there are {} Vulkan adapters (vulkan:0 to vulkan:{}): {}",
                    infos.len(),
                    infos.len() - 1,
                    infos
                        .iter()
                        .map(|i| i.name.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                ));
            };
            let same = infos[..n]
                .iter()
                .filter(|i| i.device_type == info.device_type)
                .count();
            match info.device_type {
                DeviceType::DiscreteGpu => WgpuDevice::DiscreteGpu(same),
                DeviceType::IntegratedGpu => WgpuDevice::IntegratedGpu(same),
                DeviceType::VirtualGpu => WgpuDevice::VirtualGpu(same),
                DeviceType::Cpu if same == 0 => WgpuDevice::Cpu,
                _ => return Err(format!("adapter {n} ({}) cannot be selected", info.name)),
            }
        }
    };
    let setup = if n.is_some() {
        init_setup::<graphics::Vulkan>(&device, RuntimeOptions::default())
    } else {
        init_setup::<graphics::AutoGraphicsApi>(&device, RuntimeOptions::default())
    };
    let info = setup.adapter.get_info();
    Ok((device, format!("{} ({:?})", info.name, info.backend)))
}

#[cfg(feature = "wgpu")]
fn wgpu_backend<J: DevicesJob>(indices: Option<&[usize]>, job: J) -> Result<J::Output, String> {
    use burn::backend::{Autodiff, Wgpu};
    let started = match indices {
        None => vec![wgpu_device(None)?],
        Some(ns) => ns
            .iter()
            .map(|&n| wgpu_device(Some(n)))
            .collect::<Result<_, _>>()?,
    };
    let (devices, names): (Vec<_>, Vec<_>) = started.into_iter().unzip();
    Ok(start::<Autodiff<Wgpu>, J>(job, devices, &names.join(", ")))
}

#[cfg(not(feature = "wgpu"))]
fn wgpu_backend<J: DevicesJob>(_: Option<&[usize]>, _: J) -> Result<J::Output, String> {
    Err("this build has no wgpu/Vulkan backend (rebuild with `--features vulkan`)".into())
}

/// [`crate::agreement::agreement`] of `device` against the CPU (`bench --check`, the GPU
/// tests). Not generic: it is compiled once, here, for every backend.
pub fn agreement(device: DeviceKind) -> Result<crate::agreement::Agreement, DeviceError> {
    dispatch(false, device, AgreementJob)
}

/// [`crate::agreement::kernels`] on `device`: its fused block layers against its reference
/// tensor code (the GPU tests, `bench --check`). Not generic, like [`agreement`].
pub fn kernel_agreement(
    device: DeviceKind,
) -> Result<crate::agreement::KernelAgreement, DeviceError> {
    dispatch(false, device, KernelJob)
}

/// [`crate::agreement::agreement`] as a job for [`dispatch`].
struct AgreementJob;

impl BackendJob for AgreementJob {
    type Output = crate::agreement::Agreement;
    fn run<B: FlowAutodiff>(self, device: B::Device) -> Self::Output {
        block_on(crate::agreement::agreement::<B>(&device))
    }
}

/// [`crate::agreement::kernels`] as a job for [`dispatch`].
struct KernelJob;

impl BackendJob for KernelJob {
    type Output = crate::agreement::KernelAgreement;
    fn run<B: FlowAutodiff>(self, device: B::Device) -> Self::Output {
        block_on(crate::agreement::kernels::<B>(&device))
    }
}
