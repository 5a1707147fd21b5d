//! Data-parallel training (`train --devices`): replicas on CPU threads against single-device
//! training with the same total batch.

mod common;

use std::path::Path;

use common::{assert_refused, final_parameters, scratch, stderr, train, train_small};

fn folder(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// The F column of `records/train.csv`.
fn free_energies(dir: &Path) -> Vec<f64> {
    neuralrg::records::read::<neuralrg::train::EpochStats>(dir)
        .unwrap()
        .iter()
        .map(|r| r.f)
        .collect()
}

/// The largest difference of two runs' per-epoch F (relative to |F|) and final parameters.
fn max_differences(a: &Path, b: &Path) -> (f64, f64) {
    let (fa, fb) = (free_energies(a), free_energies(b));
    assert_eq!(fa.len(), fb.len(), "epochs of {a:?} and {b:?}");
    let df = fa
        .iter()
        .zip(&fb)
        .map(|(x, y)| (x - y).abs() / x.abs())
        .fold(0.0, f64::max);
    let (pa, pb) = (final_parameters(a), final_parameters(b));
    assert_eq!(pa.len(), pb.len());
    let dp = pa
        .iter()
        .zip(&pb)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f64::max);
    (df, dp)
}

fn train_ok(dir: &Path, extra: &[&str]) {
    let out = train_small(dir, extra);
    assert!(out.status.success(), "train {extra:?}: {}", stderr(&out));
}

#[test]
fn two_cpu_replicas_train_as_one_device_does() {
    // 20 steps of the tiny configuration (batch 32: 16 rows per replica). The replicas sum their
    // gradients in another order than one device's backward pass, so the runs agree to rounding,
    // not to the bit: per-epoch F to 1e-6 relative in f64 and 1e-4 in f32 (measured: 4.7e-9 and
    // 6.0e-8), every parameter (read back in f32) to 1e-5 and 1e-4 (measured: 3.0e-8, one f32
    // rounding, in both).
    let dir = scratch("dp-vs-one");
    for (double, f_tol, p_tol) in [(true, 1e-6, 1e-5), (false, 1e-4, 1e-4)] {
        let extra: &[&str] = if double { &["-double"] } else { &[] };
        let one = dir.join(format!("one-{double}"));
        let two = dir.join(format!("two-{double}"));
        train_ok(&one, &[&["-epochs", "20", "-skipHMC"], extra].concat());
        train_ok(
            &two,
            &[
                &["-epochs", "20", "-skipHMC", "-devices", "cpu:0,cpu:1"],
                extra,
            ]
            .concat(),
        );
        let (df, dp) = max_differences(&one, &two);
        eprintln!("double={double}: F {df:e}, parameters {dp:e}");
        assert!(
            df <= f_tol && dp <= p_tol,
            "double={double}: F differs by {df:e} (relative), parameters by {dp:e}"
        );
        // The replicas did train: the parameters moved from the initialization.
        assert!(free_energies(&two)[0] != free_energies(&two)[19]);
    }
    // Three replicas (uneven shares: 11, 10, 11 rows of 32) sum to the same step too.
    let three = dir.join("three");
    train_ok(
        &three,
        &[
            "-epochs",
            "20",
            "-skipHMC",
            "-double",
            "-devices",
            "cpu:0,cpu:1,cpu:2",
        ],
    );
    let (df, dp) = max_differences(&dir.join("one-true"), &three);
    assert!(df <= 1e-6 && dp <= 1e-5, "three replicas: {df:e}, {dp:e}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_data_parallel_run_resumes_where_it_stopped() {
    let dir = scratch("dp-resume");
    let (straight, resumed) = (dir.join("straight"), dir.join("resumed"));
    let dp = ["-devices", "cpu:0,cpu:1", "-skipHMC"];
    train_ok(&straight, &[&dp[..], &["-epochs", "20"]].concat());
    train_ok(&resumed, &[&dp[..], &["-epochs", "10"]].concat());
    // --load keeps the stored devices (parameters.json holds them).
    let out = train(&["-load", "-folder", folder(&resumed), "-epochs", "20"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("data-parallel on cpu:0,cpu:1"),
        "{}",
        stderr(&out)
    );
    // In f32 a stopped and resumed run ends bit-identical to an uninterrupted one, data-parallel
    // as on one device.
    common::assert_same_run(&straight, &resumed);
    let stored = std::fs::read_to_string(resumed.join("parameters.json")).unwrap();
    assert!(stored.contains("\"devices\": \"cpu:0,cpu:1\""), "{stored}");
    // A data-parallel run goes on on one device, and back.
    let out = train(&[
        "-load",
        "-folder",
        folder(&resumed),
        "-epochs",
        "25",
        "-device",
        "cpu",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        !std::fs::read_to_string(resumed.join("parameters.json"))
            .unwrap()
            .contains("devices")
    );
    let out = train(&[
        "-load",
        "-folder",
        folder(&resumed),
        "-epochs",
        "30",
        "-devices",
        "cpu:0,cpu:1",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(free_energies(&resumed).len(), 30);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn bad_device_lists_are_refused() {
    let dir = scratch("dp-bad");
    let f = dir.join("run");
    for (extra, says) in [
        (
            &["-devices", "cpu:0,cpu:0"][..],
            "lists the device cpu:0 twice",
        ),
        (&["-devices", "cpu,flex"], "lists the device cpu:0 twice"),
        (
            &["-devices", "cuda:0,cuda"],
            "lists the device cuda:0 twice",
        ),
        (&["-devices", "cpu:0,gpu:1"], "unknown device `gpu:1`"),
        (
            &["-devices", "cpu:0,cuda:0"],
            "cannot train one model on cpu and cuda:0",
        ),
        (
            &["-devices", "cpu:1", "-device", "cpu"],
            "cannot be used with",
        ),
        (
            &["-devices", "wgpu,vulkan:0"],
            "cannot train one model on wgpu and vulkan:0",
        ),
    ] {
        let out = train_small(&f, &[&["-epochs", "1", "-skipHMC"], extra].concat());
        assert_refused(&out, says);
    }
    // A device that is not there (no CUDA on the machines the tests run on; where there is one,
    // there is no 64th).
    let out = train_small(&f, &["-epochs", "1", "-devices", "cuda:0,cuda:63"]);
    assert_refused(&out, "cuda");
    assert!(!f.join("savings").exists(), "nothing was trained");
    let _ = std::fs::remove_dir_all(&dir);
}
