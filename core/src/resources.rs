//! What a configuration needs in memory, estimated before anything large is allocated: a run
//! that cannot fit is refused with the estimate and what is available, instead of being killed
//! by the system or freezing a browser tab.
//!
//! The estimates count what grows with the lattice and the batch, in bytes of the float type
//! (4 for f32, 8 for f64), plus a fixed allowance for the program itself:
//! - training: every coupling layer keeps its input for the backward pass, for the flow and (with
//!   the Z2 symmetrization or penalty) the pass over the flipped fields: per sample
//!   `passes * 2 * nrepeat * nlayers * sum_k N_k` values, with `N_k = N / 2^(d k)` the sites of
//!   MERA level `k`; plus about eight fields (noise, output, gradients, the target);
//! - sampling: the stored fields (f64) with their spins and copies (32 bytes a value), one batch of flow
//!   evaluations, and each persistent HMC chain as one training sample (a leapfrog step
//!   differentiates the flow);
//! - analysis: the stored samples of `x` and `z` (f64), their `N x N` covariances, and the
//!   receptive fields' (or a batch's, at least 512) samples differentiated through the flow.
//!
//! Measured peaks (`bench`, f32, batch 512, paper network): L=16 46 MB, L=32 143 MB, against
//! estimates of 49 MB and 145 MB. All arithmetic is checked: `None` means more than `u64` holds.

use crate::train::TrainConfig;

/// The program, its libraries and Burn's allocator pools, before any field.
const BASELINE: u64 = 16 << 20;

/// Float values a training step keeps per sample.
fn training_values(config: &TrainConfig) -> Option<u64> {
    let lattice = config.mera.lattice;
    let n = lattice.sites() as u64;
    // Each MERA level halves the side: its sites shrink by 2^d.
    let shrink = 1u64 << lattice.dim();
    let (mut sites, mut level) = (0u64, n);
    for _ in 0..config.mera.depth() {
        sites = sites.checked_add(level)?;
        level /= shrink;
    }
    let passes: u64 = if config.symmetry || config.alpha > 0.0 {
        2
    } else {
        1
    };
    let couplings = 2u64
        .checked_mul(config.mera.nrepeat as u64)?
        .checked_mul(config.mera.nlayers as u64)?;
    passes
        .checked_mul(couplings)?
        .checked_mul(sites)?
        .checked_add(n.checked_mul(8)?)
}

/// Bytes of one training step at the configuration's batch (`float_bytes` 4 or 8).
pub fn training_bytes(config: &TrainConfig, float_bytes: u64) -> Option<u64> {
    training_values(config)?
        .checked_mul(config.optimizer.batch as u64)?
        .checked_mul(float_bytes)?
        .checked_add(BASELINE)
}

/// Bytes of `sample`: `n` stored configurations drawn `batch` at a time, and `chains`
/// persistent HMC chains (0 for the flow's own samplers).
pub fn sampling_bytes(
    config: &TrainConfig,
    float_bytes: u64,
    n: usize,
    batch: usize,
    chains: usize,
) -> Option<u64> {
    let sites = config.mera.lattice.sites() as u64;
    // The f64 fields, the spins drawn from them, their f32 and int8 copies for the files, and the
    // growth of the vectors that collect them: 28 bytes per value measured (Metropolis-Hastings,
    // n = 2,000,000 at L=4: 888 MB peak), 32 counted.
    let stored = (n as u64).checked_mul(sites)?.checked_mul(32)?;
    // A batch through the flow and its inverse (no backward pass): about a dozen fields.
    let batch = (batch as u64)
        .checked_mul(sites)?
        .checked_mul(12)?
        .checked_mul(float_bytes)?;
    let hmc = training_values(config)?
        .checked_mul(chains as u64)?
        .checked_mul(float_bytes)?;
    stored
        .checked_add(batch)?
        .checked_add(hmc)?
        .checked_add(BASELINE)
}

/// Bytes of `analyze`: `samples` stored pairs of fields `(x, z)` (f64) and their `N x N`
/// covariance matrices, and `jacobians` latent samples differentiated through the flow for the
/// receptive fields.
pub fn analysis_bytes(
    config: &TrainConfig,
    float_bytes: u64,
    samples: usize,
    jacobians: usize,
) -> Option<u64> {
    let sites = config.mera.lattice.sites() as u64;
    let stored = (samples as u64).checked_mul(sites)?.checked_mul(16)?;
    let covariances = sites.checked_mul(sites)?.checked_mul(8 * 4)?;
    let jac = training_values(config)?
        .checked_mul(jacobians.max(512) as u64)?
        .checked_mul(float_bytes)?;
    stored
        .checked_add(covariances)?
        .checked_add(jac)?
        .checked_add(BASELINE)
}

/// A size for people: `1.3 GB`, `48 MB`.
pub fn human(bytes: u64) -> String {
    let b = bytes as f64;
    if b >= 1e9 {
        format!("{:.1} GB", b / 1e9)
    } else {
        format!("{:.0} MB", (b / 1e6).max(1.0))
    }
}

/// Refuses `need` (`None`: beyond 64-bit arithmetic) when more than `available` bytes, naming
/// what needs it, the estimate and what is available.
pub fn check(what: &str, need: Option<u64>, available: Option<u64>) -> Result<(), String> {
    match (need, available) {
        (None, _) => Err(format!(
            "{what} needs more memory than 64-bit sizes can count: choose a smaller lattice, batch or sample count"
        )),
        (Some(need), Some(avail)) if need > avail => Err(format!(
            "{what} needs about {} of memory, and {} is available: choose a smaller lattice, batch or sample count",
            human(need),
            human(avail)
        )),
        _ => Ok(()),
    }
}

/// Memory this process may still use (native: the smaller of the system's available memory and
/// the cgroup's limit less its use; `None` where neither can be read).
#[cfg(not(target_arch = "wasm32"))]
pub fn available_bytes() -> Option<u64> {
    let read = |p: &str| std::fs::read_to_string(p).ok();
    let meminfo = read("/proc/meminfo").and_then(|t| {
        t.lines()
            .find(|l| l.starts_with("MemAvailable:"))
            .and_then(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
            .map(|kb| kb * 1024)
    });
    let cgroup = read("/sys/fs/cgroup/memory.max")
        .and_then(|m| m.trim().parse::<u64>().ok())
        .map(|max| {
            let used = read("/sys/fs/cgroup/memory.current")
                .and_then(|c| c.trim().parse::<u64>().ok())
                .unwrap_or(0);
            max.saturating_sub(used)
        });
    match (meminfo, cgroup) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// [`check`] against this machine's memory ([`available_bytes`]) for work on the CPU; work on a
/// GPU is not checked here (its allocator reports its own limit).
#[cfg(not(target_arch = "wasm32"))]
pub fn check_here(what: &str, need: Option<u64>, on_gpu: bool) -> Result<(), String> {
    check(what, need, if on_gpu { None } else { available_bytes() })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn estimates_match_the_measured_peaks_and_overflow_is_caught() {
        // bench's measured peaks at batch 512, f32: L=16 46 MB, L=32 143 MB.
        for (l, measured) in [(16usize, 46e6), (32, 143e6)] {
            let c = TrainConfig::paper(l, 2, 2.269).unwrap();
            let e = training_bytes(&c, 4).unwrap() as f64;
            assert!(
                (0.8..1.5).contains(&(e / measured)),
                "L={l}: estimate {e:e} against {measured:e}"
            );
        }
        let mut big = TrainConfig::paper(4096, 2, 2.269).unwrap();
        big.optimizer.batch = usize::MAX / 2;
        assert_eq!(training_bytes(&big, 8), None);
        assert!(
            check("train", None, Some(1))
                .unwrap_err()
                .contains("64-bit")
        );
        let need = training_bytes(&TrainConfig::paper(1024, 2, 2.269).unwrap(), 4);
        let msg = check("train at L=1024", need, Some(24_000_000_000)).unwrap_err();
        assert!(
            msg.contains("GB of memory, and 24.0 GB is available"),
            "{msg}"
        );
        assert!(check("x", Some(10), Some(11)).is_ok() && check("x", Some(10), None).is_ok());
    }
}
