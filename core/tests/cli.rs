//! The `train` command end to end: bad input, resuming bit-identically, the NaN guard.

use std::path::Path;

use burn::backend::{Autodiff, Flex};
use neuralrg::checkpoint::flat_parameters;
use neuralrg::records::MeasureRow;
use neuralrg::run;
use neuralrg::train::Schedule;

mod common;
use common::{assert_refused, final_parameters, records, scratch, stderr, train, train_small};

#[test]
fn bad_input_gets_one_line_and_exit_code_2() {
    let empty = scratch("empty");
    std::fs::create_dir_all(&empty).unwrap();
    let empty = empty.to_str().unwrap();
    for (args, needle) in [
        (vec!["-L", "6"], "L = 6"),
        (vec!["-L", "2"], "L = 2"),
        (vec!["-T", "0"], "T = 0"),
        (vec!["-T", "-1"], "T = -1"),
        (vec!["-d", "3"], "d = 3"),
        (vec!["-batch", "0"], "batch = 0"),
        (vec!["-epochs", "0"], "epochs = 0"),
        (vec!["--frobnicate"], "--frobnicate"),
        (vec!["-depthMERA", "5", "-L", "8"], "depthMERA = 5"),
        (vec!["-load", "-folder", empty], "parameters.json"),
        (
            vec!["--schedule", "cosine", "--warmup", "200", "-epochs", "100"],
            "schedule",
        ),
        (vec!["--recipe", "adam"], "adam"),
    ] {
        assert_refused(&train(&args), needle);
    }
}

/// Devices that are not there (or not allowed) are refused before Burn starts: exit code 2 and
/// a message naming what is missing, no panic.
#[test]
fn unavailable_devices_are_refused() {
    let dir = scratch("devices");
    let with = |device: &str, extra: &[&str]| {
        train_small(
            &dir,
            &[&["-epochs", "1", "--device", device], extra].concat(),
        )
    };
    assert_refused(&with("gpu", &[]), "unknown device `gpu`");
    assert_refused(&with("cuda:x", &[]), "cuda[:N]");
    assert_refused(&with("vulkan", &["--double"]), "f64");
    // This machine has no NVIDIA driver (CI neither): the message names the missing library.
    if !Path::new("/dev/nvidia0").exists() {
        assert_refused(&with("cuda", &[]), "libcuda");
    }
    // A Vulkan adapter that does not exist: the message lists the ones that do (software Vulkan
    // drivers may print their own warning lines first, so only the last line is checked).
    let out = with("vulkan:9", &[]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    let last = stderr.lines().last().unwrap_or("");
    assert!(
        last.contains("--device vulkan:9")
            && (last.contains("Vulkan adapters") || last.contains("no Vulkan adapter")),
        "{stderr}"
    );
    assert!(
        !dir.join("parameters.json").exists(),
        "nothing is written for a refused device"
    );
}

/// The recipe sets the optimizer settings a new run does not set: neuralrg's by default
/// (batch 128, lr 2e-3, no weight decay, a cosine warmed up over 4 % of the epochs, 76,800
/// samples' worth of epochs), the paper's with --recipe paper; options given win over either.
#[test]
fn the_recipe_sets_the_optimizer_settings_not_given() {
    let tiny = [
        "-L", "4", "-nlayers", "2", "-nhidden", "4", "-nmlp", "1", "-skipHMC",
    ];
    let run = |name: &str, extra: &[&str]| {
        let dir = scratch(name);
        let out = train(&[&tiny[..], &["-folder", dir.to_str().unwrap()], extra].concat());
        assert!(out.status.success(), "{}", stderr(&out));
        run::read_parameters(&dir).unwrap()
    };
    let ours = run("recipe-neuralrg", &["-epochs", "50"]);
    let o = ours.config.optimizer;
    assert_eq!(
        (o.batch, o.lr, o.weight_decay, o.clip),
        (128, 2e-3, 0.0, None)
    );
    assert_eq!(o.schedule, Schedule::cosine(50, 2));

    let paper = run("recipe-paper", &["-epochs", "2", "--recipe", "paper"]);
    let o = paper.config.optimizer;
    assert_eq!(
        (o.batch, o.lr, o.weight_decay, o.clip),
        (512, 1e-3, 1e-3, None)
    );
    assert_eq!(o.schedule, Schedule::constant());
    // Resuming, a recipe is checked against the run like the settings it sets.
    let folder = paper.options.folder.to_str().unwrap();
    let resume = |recipe: &str| {
        train(&[
            "-load", "-folder", folder, "-epochs", "3", "--recipe", recipe,
        ])
    };
    assert_refused(&resume("neuralrg"), "batch = 128 (the run has 512)");
    let out = resume("paper");
    assert!(out.status.success(), "{}", stderr(&out));

    let given = [
        "-epochs",
        "100",
        "--recipe",
        "paper",
        "--batch",
        "64",
        "--schedule",
        "cosine",
    ];
    let o = run("recipe-given", &given).config.optimizer;
    assert_eq!((o.batch, o.lr, o.weight_decay), (64, 1e-3, 1e-3));
    assert_eq!(o.schedule, Schedule::cosine(100, 4));

    // No --epochs: 76,800 samples.
    let epochs = run("recipe-epochs", &["--batch", "19200"]).options.epochs;
    assert_eq!(epochs, 4);
}

/// A cosine schedule ends at the run's epochs: resuming past them is refused, not trained at a
/// learning rate of 0.
#[test]
fn a_cosine_run_cannot_be_resumed_past_its_end() {
    let dir = scratch("cosine");
    let folder = dir.to_str().unwrap();
    let cosine = [
        "-epochs",
        "3",
        "--schedule",
        "cosine",
        "--warmup",
        "1",
        "-skipHMC",
    ];
    assert!(train_small(&dir, &cosine).status.success());
    assert_refused(
        &train(&["-load", "-folder", folder, "-epochs", "5"]),
        &format!("as a new run with its own schedule: train --init {folder} --epochs N"),
    );
}

#[test]
fn truncated_checkpoint_is_refused() {
    let dir = scratch("truncated");
    let folder = dir.to_str().unwrap();
    assert!(train_small(&dir, &["-epochs", "2"]).status.success());
    let (_, newest) = run::checkpoints(&dir).pop().unwrap();
    let bytes = std::fs::read(&newest).unwrap();
    std::fs::write(&newest, &bytes[..bytes.len() / 2]).unwrap();
    assert_refused(
        &train(&["-load", "-folder", folder, "-epochs", "4"]),
        "truncated",
    );
    // Without --load an existing run is never overwritten.
    assert_refused(&train(&["-folder", folder]), "--load");
}

/// A checkpoint of the first format (17 tensors per coupling layer, masks re-derived from the
/// seed) is refused with both versions named, exit code 2.
#[test]
fn a_checkpoint_of_the_old_format_is_refused_naming_both_versions() {
    let dir = scratch("old-format");
    let folder = dir.to_str().unwrap();
    assert!(train_small(&dir, &["-epochs", "1"]).status.success());
    let (_, newest) = run::checkpoints(&dir).pop().unwrap();
    let mut bytes = std::fs::read(&newest).unwrap();
    bytes[8..12].copy_from_slice(&1u32.to_le_bytes());
    std::fs::write(&newest, &bytes).unwrap();
    let out = train(&["-load", "-folder", folder, "-epochs", "2"]);
    assert_refused(&out, "version 1");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains(&format!(
            "reads version {} to {}",
            neuralrg::checkpoint::OLDEST,
            neuralrg::checkpoint::VERSION
        )),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn a_resumed_run_is_bit_identical_to_an_uninterrupted_one() {
    let (a, b) = (scratch("straight"), scratch("resumed"));
    assert!(
        train_small(&a, &["-savePeriod", "2", "-epochs", "7"])
            .status
            .success()
    );
    assert!(
        train_small(&b, &["-savePeriod", "2", "-epochs", "3"])
            .status
            .success()
    );
    // Simulate a crash after epoch 3 was saved but before more rows were trusted: resume.
    let out = train(&["-load", "-folder", b.to_str().unwrap(), "-epochs", "7"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(records(&a), records(&b));
    assert_eq!(records(&a).len(), 7);
    let (pa, pb) = (final_parameters(&a), final_parameters(&b));
    assert!(!pa.is_empty());
    assert!(
        pa.iter().zip(&pb).all(|(x, y)| x.to_bits() == y.to_bits()),
        "parameters differ"
    );
    let summary: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(b.join("summary.json")).unwrap()).unwrap();
    for key in [
        "L",
        "d",
        "T",
        "epochs",
        "F",
        "F_stderr",
        "lnZx",
        "relative_error",
        "seconds_per_epoch",
        "parameters",
    ] {
        assert!(!summary[key].is_null(), "summary.json lacks {key}");
    }
    assert_eq!(summary["epochs"], 7);
}

#[test]
fn divergence_stops_with_a_message_and_keeps_the_last_checkpoint() {
    let dir = scratch("diverge");
    let diverging = ["-lr", "1e6", "-epochs", "200", "-savePeriod", "1"];
    let out = train_small(&dir, &diverging);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("training diverged at epoch"), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    let (epoch, _) = run::checkpoints(&dir)
        .pop()
        .expect("a good checkpoint survives");
    assert!(
        stderr.contains(&format!("last good checkpoint is epoch {epoch}")),
        "{stderr}"
    );
    // The kept checkpoint loads and is finite.
    let params = run::read_parameters(&dir).unwrap();
    let trainer =
        run::load_trainer::<Autodiff<Flex>>(&dir, &params.config, &Default::default()).unwrap();
    assert!(
        flat_parameters(trainer.flow())
            .iter()
            .all(|v| v.is_finite())
    );
}

#[test]
fn the_papers_command_line_works_verbatim() {
    let dir = scratch("paper");
    let mut args: Vec<&str> = "-epochs 5000 -folder ./opt/16Ising -batch 512 -nlayers 10 -nmlp 3 -nhidden 10 -L 16 -nrepeat 1 -savePeriod 100 -symmetry"
        .split(' ')
        .collect();
    // Later options override earlier ones: keep the test short and out of the checkout.
    args.extend(["-epochs", "1", "-folder", dir.to_str().unwrap()]);
    let out = train(&args);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let params = run::read_parameters(&dir).unwrap();
    let c = &params.config;
    assert_eq!(
        (
            c.mera.lattice.side(),
            c.optimizer.batch,
            c.mera.nlayers,
            c.mera.nmlp,
            c.mera.nhidden,
            c.mera.nrepeat
        ),
        (16, 512, 10, 3, 10, 1)
    );
    assert!(c.symmetry);
    assert_eq!(params.options.save_period, 100);
    assert_eq!(c.mera.num_params(), 50_560);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("relative error") && stdout.contains("-592.875740"),
        "{stdout}"
    );
}

#[test]
fn measurements_are_recorded_every_save_period() {
    let dir = scratch("measure");
    let args = [
        "-L",
        "4",
        "-nlayers",
        "2",
        "-nhidden",
        "4",
        "-batch",
        "64",
        "-epochs",
        "4",
        "-savePeriod",
        "2",
        "--hmc-chains",
        "4",
        "-folder",
        dir.to_str().unwrap(),
    ];
    let out = train(&args);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = std::fs::read_to_string(dir.join("records/measurements.csv")).unwrap();
    assert_eq!(
        text.lines().next().unwrap(),
        "epoch,ess,mh_acceptance,mh_tau,hmc_acceptance,energy,energy_err,abs_m,abs_m_err,m2,m2_err,susceptibility,susceptibility_err,specific_heat,specific_heat_err,binder_u4,binder_u4_err"
    );
    let rows: Vec<MeasureRow> = neuralrg::records::read(&dir).unwrap();
    assert_eq!(
        rows.iter().map(|r| r.epoch).collect::<Vec<_>>(),
        [2, 4],
        "rows at epochs 2 and 4: {text}"
    );
    for r in &rows {
        for acceptance in [r.mh_acceptance, r.hmc_acceptance] {
            assert!((0.0..=1.0).contains(&acceptance), "{r:?}");
        }
        assert!(
            r.energy < 0.0 && r.energy_err > 0.0,
            "energy and its error: {r:?}"
        );
        assert!(r.m2.is_finite() && r.binder_u4_err.is_finite(), "{r:?}");
    }
}

#[test]
fn train_init_warm_starts_a_new_run_of_the_same_network() {
    let (a, b, c) = (scratch("init-a"), scratch("init-b"), scratch("init-c"));
    assert!(train_small(&a, &["-epochs", "4"]).status.success());
    let out = train_small(
        &b,
        &["-epochs", "2", "-T", "3.0", "--init", a.to_str().unwrap()],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stderr(&out).contains("warm start from"), "{}", stderr(&out));
    let params = neuralrg::run::read_parameters(&b).unwrap();
    assert_eq!(
        (params.options.init, params.config.t),
        (Some(a.clone()), 3.0)
    );
    assert_eq!(records(&b).len(), 2);
    let out = train_small(&c, &["-nhidden", "8", "--init", a.to_str().unwrap()]);
    assert_refused(&out, "nhidden = 4 (model) vs 8 (run)");
    let out = train_small(&c, &["--init", c.join("nowhere").to_str().unwrap()]);
    assert_refused(&out, "has no checkpoint in savings/ to load");
}
