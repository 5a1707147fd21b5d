//! The fault suite: bad files, killed and signalled processes, failing writes and two writers,
//! each with real processes and files. Every resume must end bit-identical to a run that was
//! never disturbed. (Unix: signals, `kill` and `ulimit`.)
#![cfg(unix)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use neuralrg::run;

mod common;
use common::{assert_refused, assert_same_run, records, scratch, stderr, train, train_small};

fn folder(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// `train` on the tiny configuration, started in the background.
fn spawn_small(dir: &Path, extra: &[&str]) -> Child {
    let mut args = common::SMALL.to_vec();
    args.extend(["-folder", folder(dir)]);
    args.extend(extra);
    Command::new(env!("CARGO_BIN_EXE_train"))
        .args(&args)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start train")
}

/// Waits until the run in `dir` has recorded more than `rows` epochs.
fn wait_for_rows(dir: &Path, rows: usize) {
    let t0 = Instant::now();
    while neuralrg::records::read::<neuralrg::train::EpochStats>(dir).map_or(0, |r| r.len()) <= rows
    {
        assert!(
            t0.elapsed() < Duration::from_secs(120),
            "the run never started"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn signal(child: &Child, name: &str) {
    let ok = Command::new("kill")
        .args([format!("-{name}"), child.id().to_string()])
        .status()
        .expect("kill")
        .success();
    assert!(ok, "kill -{name}");
}

fn newest(dir: &Path) -> PathBuf {
    run::checkpoints(dir).pop().expect("a checkpoint").1
}

fn edit_parameters(dir: &Path, edit: impl FnOnce(&mut serde_json::Value)) {
    let path = dir.join("parameters.json");
    let mut v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    edit(&mut v);
    std::fs::write(&path, serde_json::to_string_pretty(&v).unwrap()).unwrap();
}

#[test]
fn a_checkpoint_made_for_other_settings_is_refused_naming_each() {
    let dir = scratch("fault-mismatch");
    assert!(train_small(&dir, &["-epochs", "1"]).status.success());
    edit_parameters(&dir, |v| {
        v["nhidden"] = 5.into();
        v["T"] = 2.5.into();
    });
    let out = train(&["-load", "-folder", folder(&dir), "-epochs", "2"]);
    assert_refused(&out, "nhidden = 4 (checkpoint) vs 5 (parameters.json)");
    assert!(stderr(&out).contains("T = 2.269185314213022 (checkpoint) vs 2.5"));
    // `sample` reads checkpoints the same way.
    let out = common::run(
        env!("CARGO_BIN_EXE_sample"),
        &["--folder", folder(&dir), "-n", "64"],
    );
    assert_refused(&out, "nhidden");
}

#[test]
fn files_of_a_newer_format_are_refused_naming_both_versions() {
    let dir = scratch("fault-newer");
    assert!(train_small(&dir, &["-epochs", "1"]).status.success());
    let ckpt = newest(&dir);
    let good = std::fs::read(&ckpt).unwrap();
    let mut bytes = good.clone();
    bytes[8..12].copy_from_slice(&99u32.to_le_bytes());
    std::fs::write(&ckpt, &bytes).unwrap();
    let out = train(&["-load", "-folder", folder(&dir), "-epochs", "2"]);
    assert_refused(&out, "version 99 is newer than this build's");
    assert!(stderr(&out).contains(&format!("to {}", neuralrg::checkpoint::VERSION)));
    std::fs::write(&ckpt, &good).unwrap();
    edit_parameters(&dir, |v| v["format"] = 99.into());
    let out = train(&["-load", "-folder", folder(&dir), "-epochs", "2"]);
    assert_refused(&out, "format 99, newer than this build's");
    assert!(stderr(&out).contains(&format!("reads format {}", run::PARAMETERS_FORMAT)));
}

/// A flipped byte or a cut-short file as the newest checkpoint: the run resumes from the newest
/// good one, warning about the skipped file, and ends as if nothing had happened.
#[test]
fn a_damaged_newest_checkpoint_falls_back_to_the_newest_good_one() {
    let straight = scratch("fault-damage-straight");
    assert!(
        train_small(&straight, &["-epochs", "6", "-savePeriod", "2", "-skipHMC"])
            .status
            .success()
    );
    for damage in ["flip", "truncate"] {
        let dir = scratch(&format!("fault-damage-{damage}"));
        assert!(
            train_small(&dir, &["-epochs", "4", "-savePeriod", "2", "-skipHMC"])
                .status
                .success()
        );
        let ckpt = newest(&dir);
        let mut bytes = std::fs::read(&ckpt).unwrap();
        if damage == "flip" {
            let mid = bytes.len() / 2;
            bytes[mid] ^= 0x10;
        } else {
            bytes.truncate(bytes.len() - 100);
        }
        std::fs::write(&ckpt, &bytes).unwrap();
        let out = train(&["-load", "-folder", folder(&dir), "-epochs", "6"]);
        let err = stderr(&out);
        assert!(out.status.success(), "{damage}: {err}");
        assert!(
            err.contains("skipped the damaged checkpoint")
                && err.contains("epoch-000004.ckpt")
                && err.contains("(epoch 2)"),
            "{damage}: {err}"
        );
        assert_same_run(&straight, &dir);
        // The damaged file is set aside, not left among the checkpoints.
        assert!(dir.join("savings/epoch-000004.ckpt.damaged").exists());
    }
    // Damage everywhere: refused, naming each file.
    let dir = scratch("fault-damage-all");
    assert!(
        train_small(&dir, &["-epochs", "4", "-savePeriod", "2"])
            .status
            .success()
    );
    for (_, ckpt) in run::checkpoints(&dir) {
        let bytes = std::fs::read(&ckpt).unwrap();
        std::fs::write(&ckpt, &bytes[..bytes.len() / 3]).unwrap();
    }
    let out = train(&["-load", "-folder", folder(&dir), "-epochs", "6"]);
    assert_refused(&out, "epoch-000002.ckpt: checkpoint is truncated");
}

#[test]
fn a_damaged_parameters_file_is_refused() {
    let dir = scratch("fault-parameters");
    assert!(train_small(&dir, &["-epochs", "1"]).status.success());
    let path = dir.join("parameters.json");
    let text = std::fs::read_to_string(&path).unwrap();
    std::fs::write(&path, &text[..text.len() / 2]).unwrap();
    assert_refused(
        &train(&["-load", "-folder", folder(&dir)]),
        "is not a valid parameters file",
    );
    std::fs::write(&path, text.replace("\"nmlp\": 1", "\"nmlp\": \"one\"")).unwrap();
    assert_refused(
        &train(&["-load", "-folder", folder(&dir)]),
        "is not a valid parameters file",
    );
}

/// `--load` refuses options that would change the model or target, applies the ones a resume may
/// change (reporting them and writing them to parameters.json), and keeps stored values of the
/// options not given.
#[test]
fn load_applies_what_may_change_and_refuses_the_rest() {
    let dir = scratch("fault-load");
    assert!(
        train_small(&dir, &["-epochs", "2", "--keep", "1", "-skipHMC"])
            .status
            .success()
    );
    let out = train(&["-load", "-folder", folder(&dir), "-nhidden", "8", "-T", "3"]);
    assert_refused(&out, "nhidden = 8 (the run has 4)");
    assert!(stderr(&out).contains("T = 3.0 (the run has 2.269185314213022)"));
    // Giving the stored value is no change.
    let out = train(&["-load", "-folder", folder(&dir), "-nhidden", "4", "-L", "4"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("with its stored settings"),
        "{}",
        stderr(&out)
    );
    let out = train(&[
        "-load",
        "-folder",
        folder(&dir),
        "-lr",
        "0.002",
        "-epochs",
        "3",
    ]);
    let err = stderr(&out);
    assert!(out.status.success(), "{err}");
    assert!(
        err.lines().next().unwrap().contains("lr 0.001 -> 0.002") && err.contains("epochs 2 -> 3"),
        "{err}"
    );
    let p = run::read_parameters(&dir).unwrap();
    assert_eq!((p.config.optimizer.lr, p.options.epochs), (0.002, 3));
    assert_eq!(
        p.options.keep, 1,
        "--keep not given: the stored value stays"
    );
    assert!(p.options.skip_hmc);
    assert_eq!(run::checkpoints(&dir).len(), 1);
}

/// A second writer is refused naming the first one's pid; SIGINT ends the first at the end of an
/// epoch with a checkpoint and a message on how to resume, and the resumed run ends
/// bit-identical to one that was never stopped. SIGTERM does the same for a sweep.
#[test]
fn a_second_writer_is_refused_and_a_signal_stops_with_a_checkpoint() {
    let dir = scratch("fault-signal");
    let child = spawn_small(
        &dir,
        &["-epochs", "100000", "-savePeriod", "100000", "-skipHMC"],
    );
    wait_for_rows(&dir, 3);
    assert!(run::is_being_written(&dir));
    let pid = child.id();
    let out = train(&["-load", "-folder", folder(&dir), "-epochs", "100000"]);
    assert_refused(
        &out,
        &format!("is in use: another train or sweep (pid {pid})"),
    );
    signal(&child, "INT");
    let out = child.wait_with_output().unwrap();
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(130), "{err}");
    let last = err.lines().last().unwrap();
    assert!(
        last.contains("stopped by a signal at epoch")
            && last.contains(&format!(
                "resume with: train --load --folder {}",
                folder(&dir)
            )),
        "{err}"
    );
    assert!(!run::is_being_written(&dir));
    let (epoch, _) = run::checkpoints(&dir).pop().unwrap();
    assert_eq!(
        records(&dir).iter().map(|r| r.epoch).collect::<Vec<_>>(),
        (1..=epoch).collect::<Vec<_>>(),
        "a row per epoch up to the checkpoint"
    );
    let total = (epoch + 3).to_string();
    let out = train(&["-load", "-folder", folder(&dir), "-epochs", &total]);
    assert!(out.status.success(), "{}", stderr(&out));
    let straight = scratch("fault-signal-straight");
    assert!(
        train_small(
            &straight,
            &["-epochs", &total, "-savePeriod", "100000", "-skipHMC"]
        )
        .status
        .success()
    );
    assert_same_run(&straight, &dir);

    // A sweep stops the same way on SIGTERM, and its rerun resumes where it stopped.
    let sweep_dir = scratch("fault-signal-sweep");
    std::fs::create_dir_all(&sweep_dir).unwrap();
    let settings = sweep_dir.join("sweep.toml");
    std::fs::write(
        &settings,
        format!(
            "folder = {:?}\nL = 4\ntemperatures = [2.5]\ndepths = [2]\nepochs = 100000\nsave_period = 100000\nrecipe = \"paper\"\n[train]\nnlayers = 2\nnhidden = 4\nnmlp = 1\nbatch = 32\n",
            folder(&sweep_dir)
        ),
    )
    .unwrap();
    let child = Command::new(env!("CARGO_BIN_EXE_sweep"))
        .arg(&settings)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let run_dir = sweep_dir.join("T2.5_depth2");
    wait_for_rows(&run_dir, 3);
    signal(&child, "TERM");
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(130), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("run the same sweep again to resume"),
        "{}",
        stderr(&out)
    );
    let (epoch, _) = run::checkpoints(&run_dir).pop().unwrap();
    assert_eq!(records(&run_dir).len(), epoch);
    // Run again (to a near end): it resumes where it stopped.
    let text = std::fs::read_to_string(&settings).unwrap();
    std::fs::write(
        &settings,
        text.replace("epochs = 100000", &format!("epochs = {}", epoch + 3)),
    )
    .unwrap();
    let out = common::run(env!("CARGO_BIN_EXE_sweep"), &[settings.to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stderr(&out).contains(&format!("resuming at epoch {epoch}")),
        "{}",
        stderr(&out)
    );
    assert_eq!(records(&run_dir).len(), epoch + 3);
}

/// `kill -9` at many points of a run that saves every epoch (so that many kills land inside a
/// checkpoint write): every resume succeeds, and the run ends bit-identical to one never killed.
#[test]
fn kill_9_at_any_point_loses_nothing() {
    // About a millisecond per epoch and per save: kills land all over the run.
    let opts = [
        "-epochs",
        "2000",
        "-savePeriod",
        "1",
        "--keep",
        "2",
        "-skipHMC",
    ];
    let straight = scratch("fault-kill-straight");
    assert!(train_small(&straight, &opts).status.success());
    let dir = scratch("fault-kill");
    let mut kills = 0;
    for attempt in 0.. {
        assert!(attempt < 500, "the run never finished");
        let load = !run::checkpoints(&dir).is_empty();
        let mut child = spawn_small(
            &dir,
            &[&opts[..], if load { &["-load"] } else { &[] }].concat(),
        );
        // Kill after a varying delay: before the first epoch, between epochs, inside saves.
        std::thread::sleep(Duration::from_millis(5 + (attempt * 37 % 150) as u64));
        match child.try_wait().unwrap() {
            Some(status) => {
                let out = child.wait_with_output().unwrap();
                assert!(status.success(), "attempt {attempt}: {}", stderr(&out));
                break;
            }
            None => {
                child.kill().unwrap();
                child.wait().unwrap();
                kills += 1;
            }
        }
    }
    assert!(kills >= 10, "only {kills} kills landed");
    eprintln!("{kills} kills");
    assert_same_run(&straight, &dir);
}

/// A write that fails mid-checkpoint (the file size limit of `ulimit -f`, so that the write
/// returns an error instead of the process being killed): an error naming the file, no
/// temporary file left, the older checkpoint intact, and the resumed run ends as if nothing had
/// happened.
#[test]
fn a_write_failure_mid_checkpoint_is_an_error_and_the_run_resumes() {
    let dir = scratch("fault-fsize");
    assert!(
        train_small(&dir, &["-epochs", "2", "-skipHMC"])
            .status
            .success()
    );
    let size = std::fs::metadata(newest(&dir)).unwrap().len();
    // 12 blocks (of 512 or 1024 bytes): less than a checkpoint, more than the other files.
    assert!(size > 12 * 1024);
    let out = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "trap '' XFSZ; ulimit -f 12; exec {} -load -folder {} -epochs 4 -savePeriod 1",
            env!("CARGO_BIN_EXE_train"),
            folder(&dir)
        ))
        .output()
        .unwrap();
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("File too large") && !err.contains("panicked"),
        "{err}"
    );
    let left: Vec<_> = std::fs::read_dir(dir.join("savings"))
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(left, ["epoch-000002.ckpt"], "no temporary file is left");
    let out = train(&["-load", "-folder", folder(&dir), "-epochs", "4"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let straight = scratch("fault-fsize-straight");
    assert!(
        train_small(&straight, &["-epochs", "4", "-skipHMC"])
            .status
            .success()
    );
    assert_same_run(&straight, &dir);
}

/// A run resumed at its final epoch writes a complete summary (no `null`), and `plot --per`
/// stops with a message when the run it watches is not being trained.
#[test]
fn a_run_resumed_at_its_end_is_summarized_and_a_dead_run_stops_the_monitor() {
    let dir = scratch("fault-end");
    assert!(train_small(&dir, &["-epochs", "2"]).status.success());
    std::fs::remove_file(dir.join("summary.json")).unwrap();
    let out = train(&["-load", "-folder", folder(&dir)]);
    assert!(out.status.success(), "{}", stderr(&out));
    let summary = std::fs::read_to_string(dir.join("summary.json")).unwrap();
    assert!(!summary.contains("null"), "{summary}");
    let v: serde_json::Value = serde_json::from_str(&summary).unwrap();
    assert!(v["seconds_per_epoch"].as_f64().unwrap() > 0.0);
    // Died before its end: the summary is older than the parameters.
    std::fs::remove_file(dir.join("summary.json")).unwrap();
    let t0 = Instant::now();
    let out = common::run(
        env!("CARGO_BIN_EXE_plot"),
        &["--folder", folder(&dir), "--per", "0.2"],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("the run is not training"),
        "{}",
        stderr(&out)
    );
    assert!(t0.elapsed() < Duration::from_secs(60));
}

/// Configurations that cannot fit are refused before anything large is allocated, with the
/// estimate and what is available (or, past 64-bit sizes, saying so); lattices whose site count
/// would overflow 32-bit sizes are refused by the lattice itself.
#[test]
fn oversized_configurations_are_refused_with_the_estimate() {
    let dir = scratch("fault-oversized");
    let out = train(&["-L", "4096", "-folder", folder(&dir)]);
    assert_refused(&out, "training at L=4096 d=2 with batch 128 needs about");
    assert!(stderr(&out).contains("is available"), "{}", stderr(&out));
    assert!(!dir.join("savings").exists(), "nothing is written");
    assert_refused(&train(&["-L", "65536"]), "at most 16777216 sites");
    assert!(train_small(&dir, &["-epochs", "1"]).status.success());
    let sample = |n: &str| {
        common::run(
            env!("CARGO_BIN_EXE_sample"),
            &["--folder", folder(&dir), "-n", n],
        )
    };
    assert_refused(
        &sample("1000000000000"),
        "sampling 1000000000000 configurations of 16 sites needs about",
    );
    assert_refused(
        &sample("4611686018427387904"),
        "more memory than 64-bit sizes can count",
    );
    let out = common::run(
        env!("CARGO_BIN_EXE_analyze"),
        &["--folder", folder(&dir), "--samples", "1000000000000"],
    );
    assert_refused(
        &out,
        "analyzing 1000000000000 samples of 16 sites needs about",
    );
}
