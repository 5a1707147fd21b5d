//! Helpers shared by the integration tests.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use burn::module::{ModuleMapper, Param};
use burn::tensor::{Tensor, TensorData, backend::Backend};
use rand::RngExt;
use rand::rngs::StdRng;

/// Runs the test `name` (this function's caller) with Flex computing in f64, and returns
/// whether the body should run in this process. Flex takes its float type per process, fixed
/// at the first tensor, so the test re-runs itself in a child process told to use f64 (the
/// same way `train --double` does) and checks that it passed there:
///
/// ```ignore
/// #[test]
/// fn round_trips_f64() {
///     if common::f64_process("round_trips_f64") { ... }
/// }
/// ```
pub fn f64_process(name: &str) -> bool {
    child_process(name, true)
}

/// Runs the test `name` again in a child process of its own (in f64 if `f64`), for tests that
/// change process-wide settings; returns whether the body should run in this process (the
/// child) and checks, in the parent, that it passed there.
pub fn child_process(name: &str, f64: bool) -> bool {
    const CHILD: &str = "NEURALRG_TEST_CHILD";
    if let Some(kind) = std::env::var_os(CHILD) {
        if kind == "f64" {
            use burn::tensor::{DType, set_default_dtypes};
            set_default_dtypes::<burn::backend::Flex>(&Default::default(), DType::F64, DType::I32)
                .expect("f64 is set before the first tensor of the process");
        }
        return true;
    }
    let out = Command::new(std::env::current_exe().expect("own test binary"))
        .args([name, "--exact", "--nocapture", "--test-threads", "1"])
        .env(CHILD, if f64 { "f64" } else { "f32" })
        .output()
        .expect("re-run the test in a child process");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && stdout.contains("1 passed"),
        "{name} in its own process failed:\n{stdout}\n{stderr}"
    );
    false
}

/// Runs a binary with arguments.
pub fn run(bin: &str, args: &[&str]) -> Output {
    Command::new(bin).args(args).output().expect("run binary")
}

/// A fresh scratch folder for one test (removed first if a previous run left it).
pub fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("neuralrg-test-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

/// Bad input: exit code 2, one line on stderr naming `needle`, no panic (besides the
/// `neuralrg: ...` lines a binary prints when it starts: the run folder, the device).
pub fn assert_refused(out: &Output, needle: &str) {
    let stderr = String::from_utf8_lossy(&out.stderr);
    let stderr: String = stderr
        .lines()
        .filter(|l| !l.starts_with("neuralrg: "))
        .map(|l| format!("{l}\n"))
        .collect();
    assert_eq!(
        out.status.code(),
        Some(2),
        "exit code for {needle:?}; stderr: {stderr}"
    );
    let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "one-line message expected, got: {stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert!(
        stderr.contains(needle),
        "message {stderr:?} should name {needle:?}"
    );
}

/// Adds uniform noise in `(-a, a)` to every parameter, so that scales are non-zero and tests are
/// not fooled by the volume-preserving initialization.
pub struct Jitter(pub StdRng, pub f64);

impl<B: Backend> ModuleMapper<B> for Jitter {
    fn map_float<const D: usize>(&mut self, param: Param<Tensor<B, D>>) -> Param<Tensor<B, D>> {
        let (id, t, mapper) = param.consume();
        let shape = t.shape();
        let noise: Vec<f64> = (0..shape.num_elements())
            .map(|_| self.0.random_range(-self.1..self.1))
            .collect();
        let t = t.clone() + Tensor::from_data(TensorData::new(noise, shape), &t.device());
        Param::from_mapped_value(id, t, mapper)
    }
}

/// Runs `train` with arguments.
pub fn train(args: &[&str]) -> Output {
    run(env!("CARGO_BIN_EXE_train"), args)
}

/// A tiny, fast configuration, with the paper's constant rate (a run of it can be resumed for
/// more epochs; a cosine schedule ends at the run's epochs).
pub const SMALL: &[&str] = &[
    "-L", "4", "-nlayers", "2", "-nhidden", "4", "-nmlp", "1", "-batch", "32", "--recipe", "paper",
];

/// `train` on the tiny configuration into `folder`, with more options.
pub fn train_small(folder: &Path, extra: &[&str]) -> Output {
    let mut args = SMALL.to_vec();
    args.extend(["-folder", folder.to_str().unwrap()]);
    args.extend(extra);
    train(&args)
}

/// `records/train.csv` without its wall-clock column.
pub fn records(folder: &Path) -> Vec<neuralrg::train::EpochStats> {
    neuralrg::records::read::<neuralrg::train::EpochStats>(folder)
        .unwrap()
        .into_iter()
        .map(|r| neuralrg::train::EpochStats { seconds: 0.0, ..r })
        .collect()
}

/// The parameters of a run folder's newest checkpoint, flattened.
pub fn final_parameters(folder: &Path) -> Vec<f64> {
    use burn::backend::{Autodiff, Flex};
    let params = neuralrg::run::read_parameters(folder).unwrap();
    let trainer =
        neuralrg::run::load_trainer::<Autodiff<Flex>>(folder, &params.config, &Default::default())
            .unwrap();
    neuralrg::checkpoint::flat_parameters(trainer.flow())
}

/// Two runs ended in the same state: the same records (but the clock) and bit-identical
/// parameters.
pub fn assert_same_run(a: &Path, b: &Path) {
    assert_eq!(records(a), records(b), "records of {a:?} and {b:?}");
    let (pa, pb) = (final_parameters(a), final_parameters(b));
    assert!(!pa.is_empty() && pa.len() == pb.len());
    assert!(
        pa.iter().zip(&pb).all(|(x, y)| x.to_bits() == y.to_bits()),
        "parameters of {a:?} and {b:?} differ"
    );
}

/// Stderr of a finished process, for messages.
pub fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}
