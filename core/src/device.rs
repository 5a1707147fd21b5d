//! Choosing a backend and device for the native binaries: `--device cpu|flex|cuda[:N]|
//! vulkan[:N]|wgpu`. A device that is not there is refused with a message naming what is
//! missing, before Burn starts (Burn's own failure would be a panic on its device thread).
//!
//! The names ([`DeviceKind`], [`DeviceList`]) are read everywhere, the browser included (a run
//! folder's `parameters.json` names its device); starting a backend on them is native only.

use std::fmt;
use std::str::FromStr;

/// The compute devices the binaries accept.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DeviceKind {
    /// The CPU backend (Flex). `ndarray`, the CPU backend of earlier versions, is read as `cpu`.
    #[default]
    Cpu,
    /// Burn's Flex CPU backend (the same as `cpu`).
    Flex,
    /// The N-th CUDA device (Burn's CUDA backend with fusion; kernels compiled by NVRTC).
    Cuda(usize),
    /// The N-th Vulkan adapter (Burn's wgpu backend with SPIR-V kernels).
    Vulkan(usize),
    /// wgpu's default adapter on its default graphics API (Vulkan, Metal or DirectX 12).
    Wgpu,
}

impl DeviceKind {
    /// Runs on a GPU backend (no f64 there).
    pub fn is_gpu(self) -> bool {
        matches!(self, Self::Cuda(_) | Self::Vulkan(_) | Self::Wgpu)
    }
}

/// The CPU backend has one device; `cpu:N` in a [`DeviceList`] names the N-th CPU worker.
impl DeviceKind {
    /// The same device in one spelling (`flex` is `cpu`), for comparisons.
    fn canonical(self) -> Self {
        match self {
            Self::Flex => Self::Cpu,
            d => d,
        }
    }

    /// Whether two devices run on the same backend (data-parallel replicas must).
    pub fn same_backend(self, other: Self) -> bool {
        std::mem::discriminant(&self.canonical()) == std::mem::discriminant(&other.canonical())
    }
}

/// `--devices`: comma-separated devices of `--device`, where `cpu:N` is the N-th CPU worker
/// (a replica thread of `train`, a process of `sweep`; `cpu` alone is `cpu:0`). Never empty,
/// never the same device twice.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceList {
    /// `(device, CPU worker index)`, in the order given.
    slots: Vec<(DeviceKind, usize)>,
}

impl DeviceList {
    /// The devices, in the order given (CPU workers as [`DeviceKind::Cpu`]).
    pub fn devices(&self) -> Vec<DeviceKind> {
        self.slots.iter().map(|s| s.0).collect()
    }

    /// How many devices.
    pub fn len(&self) -> usize {
        self.slots.len()
    }

    /// Always false (a list has at least one device).
    pub fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }
}

impl From<DeviceKind> for DeviceList {
    fn from(d: DeviceKind) -> Self {
        Self {
            slots: vec![(d.canonical(), 0)],
        }
    }
}

impl FromStr for DeviceList {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let mut slots: Vec<(DeviceKind, usize)> = Vec::new();
        for item in s.split(',').map(str::trim) {
            let slot = match item.split_once(':') {
                Some((name, n))
                    if ["cpu", "flex"].contains(&name.to_ascii_lowercase().as_str()) =>
                {
                    let n = n.parse::<usize>().map_err(|_| {
                        format!("unknown device `{item}` in `{s}`: use {DEVICE_CHOICES}, or cpu:N for the N-th CPU worker")
                    })?;
                    (DeviceKind::Cpu, n)
                }
                _ => (
                    item.parse::<DeviceKind>()
                        .map_err(|e| format!("{e}, or cpu:N for the N-th CPU worker (in `{s}`)"))?
                        .canonical(),
                    0,
                ),
            };
            if slots.contains(&slot) {
                return Err(format!(
                    "`{s}` lists the device {} twice: list each device once",
                    show(slot)
                ));
            }
            slots.push(slot);
        }
        Ok(Self { slots })
    }
}

fn show((device, worker): (DeviceKind, usize)) -> String {
    match device {
        DeviceKind::Cpu => format!("cpu:{worker}"),
        d => d.to_string(),
    }
}

impl fmt::Display for DeviceList {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let items: Vec<String> = self.slots.iter().map(|&s| show(s)).collect();
        write!(f, "{}", items.join(","))
    }
}

impl serde::Serialize for DeviceList {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for DeviceList {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// What `--device` accepts, for messages.
pub const DEVICE_CHOICES: &str = "cpu, flex, cuda[:N], vulkan[:N] or wgpu";

impl FromStr for DeviceKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let bad = || format!("unknown device `{s}`: use {DEVICE_CHOICES}");
        let (name, index) = match s.split_once(':') {
            Some((name, n)) => (name, Some(n.parse::<usize>().map_err(|_| bad())?)),
            None => (s, None),
        };
        Ok(match (name.to_ascii_lowercase().as_str(), index) {
            ("cpu", None) => Self::Cpu,
            ("flex", None) => Self::Flex,
            // Earlier versions had an ndarray backend; its runs resume on the CPU backend.
            ("ndarray", None) => Self::Cpu,
            ("cuda", n) => Self::Cuda(n.unwrap_or(0)),
            ("vulkan", n) => Self::Vulkan(n.unwrap_or(0)),
            ("wgpu", None) => Self::Wgpu,
            _ => return Err(bad()),
        })
    }
}

impl fmt::Display for DeviceKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Cpu => write!(f, "cpu"),
            Self::Flex => write!(f, "flex"),
            Self::Cuda(n) => write!(f, "cuda:{n}"),
            Self::Vulkan(n) => write!(f, "vulkan:{n}"),
            Self::Wgpu => write!(f, "wgpu"),
        }
    }
}

impl serde::Serialize for DeviceKind {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for DeviceKind {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(not(target_arch = "wasm32"))]
mod dispatch;
#[cfg(not(target_arch = "wasm32"))]
pub use dispatch::*;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_prints_devices() {
        for (s, d) in [
            ("cpu", DeviceKind::Cpu),
            ("flex", DeviceKind::Flex),
            ("cuda", DeviceKind::Cuda(0)),
            ("cuda:1", DeviceKind::Cuda(1)),
            ("vulkan:2", DeviceKind::Vulkan(2)),
            ("wgpu", DeviceKind::Wgpu),
        ] {
            assert_eq!(s.parse::<DeviceKind>(), Ok(d));
            assert_eq!(d.to_string().parse::<DeviceKind>(), Ok(d));
        }
        assert_eq!("ndarray".parse::<DeviceKind>(), Ok(DeviceKind::Cpu));
        for bad in ["gpu", "cuda:x", "cpu:1", "wgpu:0", ""] {
            let e = bad.parse::<DeviceKind>().unwrap_err();
            assert!(e.contains(DEVICE_CHOICES), "{e}");
        }
    }

    #[test]
    fn device_lists_refuse_duplicates() {
        let list: DeviceList = "cuda:0,cuda:1,cpu:1,flex".parse().unwrap();
        assert_eq!(list.to_string(), "cuda:0,cuda:1,cpu:1,cpu:0");
        assert_eq!(
            list.devices(),
            [
                DeviceKind::Cuda(0),
                DeviceKind::Cuda(1),
                DeviceKind::Cpu,
                DeviceKind::Cpu
            ]
        );
        for (bad, says) in [
            ("cuda:0,cuda", "cuda:0 twice"),
            ("cpu,cpu:0", "cpu:0 twice"),
            ("cpu,flex", "cpu:0 twice"),
            ("cpu:1,gpu", "unknown device `gpu`"),
            ("cpu:x", "unknown device `cpu:x`"),
            ("cuda:0,", "unknown device ``"),
        ] {
            let e = bad.parse::<DeviceList>().unwrap_err();
            assert!(e.contains(says), "{bad}: {e}");
        }
        assert!(DeviceKind::Cpu.same_backend(DeviceKind::Flex));
        assert!(DeviceKind::Cuda(0).same_backend(DeviceKind::Cuda(3)));
        assert!(!DeviceKind::Cuda(0).same_backend(DeviceKind::Vulkan(0)));
    }
}
