//! The wgpu backend on Vulkan agrees with the CPU backend: training steps, a sampling step and
//! the log-density (log-determinants) of the same configurations; and its fused block layers
//! (the CubeCL kernels) agree with its reference tensor code, outputs and gradients (see
//! `neuralrg::agreement`). In CI this runs on software Vulkan (Mesa's lavapipe);
//! tests/run.sh sets NEURALRG_REQUIRE_VULKAN=1, which turns a missing Vulkan driver into a
//! failure instead of a skip.
#![cfg(feature = "vulkan")]

use neuralrg::agreement::Agreement;
use neuralrg::device::{DeviceKind, agreement, kernel_agreement};
use neuralrg::host::block_on;

#[test]
fn vulkan_agrees_with_the_cpu_backend() {
    match agreement(DeviceKind::Vulkan(0)) {
        Ok(a) => {
            eprintln!("{a:?}");
            assert!(
                a.holds(),
                "differences beyond {}: {a:?}",
                Agreement::TOLERANCE
            );
        }
        Err(e) if std::env::var_os("NEURALRG_REQUIRE_VULKAN").is_some() => {
            panic!("NEURALRG_REQUIRE_VULKAN is set but: {e}")
        }
        Err(e) => eprintln!("skipped: {e}"),
    }
}

#[test]
fn vulkan_kernels_agree_with_the_reference() {
    match kernel_agreement(DeviceKind::Vulkan(0)) {
        Ok(k) => {
            eprintln!("{k:?}");
            assert!(k.holds_f32(), "fused kernels against the reference: {k:?}");
        }
        Err(e) if std::env::var_os("NEURALRG_REQUIRE_VULKAN").is_some() => {
            panic!("NEURALRG_REQUIRE_VULKAN is set but: {e}")
        }
        Err(e) => eprintln!("skipped: {e}"),
    }
}

/// The check itself, on the CPU: the reference against itself agrees exactly.
#[test]
fn the_reference_agrees_with_itself() {
    use burn::backend::{Autodiff, Flex};
    let a = block_on(neuralrg::agreement::agreement::<Autodiff<Flex>>(
        &Default::default(),
    ));
    assert_eq!((a.training, a.sampling, a.log_density), (0.0, 0.0, 0.0));
    assert!(a.holds());
}
