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
