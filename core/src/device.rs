//! Choosing a backend for the native binaries.

/// The compute devices the binaries accept.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum DeviceKind {
    /// The fastest CPU backend on this machine (Flex).
    Cpu,
    /// Burn's Flex CPU backend.
    Flex,
    /// Burn's ndarray CPU backend.
    Ndarray,
}

/// Work to run on the backend the options choose (generic code, one dispatch).
pub trait BackendJob {
    type Output;
    fn run<B: burn::tensor::backend::AutodiffBackend>(self) -> Self::Output;
}

/// Runs `job` on the backend for `device`, in f64 (on ndarray) when `double`.
pub fn dispatch<J: BackendJob>(double: bool, device: DeviceKind, job: J) -> J::Output {
    use burn::backend::{Autodiff, Flex, NdArray};
    match (double, device) {
        (true, _) => job.run::<Autodiff<NdArray<f64>>>(),
        (false, DeviceKind::Ndarray) => job.run::<Autodiff<NdArray>>(),
        (false, DeviceKind::Cpu | DeviceKind::Flex) => job.run::<Autodiff<Flex>>(),
    }
}
