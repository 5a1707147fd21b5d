//! The `sweep` command: a grid of runs from a TOML file, skipped when finished and resumed when
//! interrupted, with a CSV of results and the relative-error figure; bad settings refused.

use std::process::{Command, Output};

mod common;
use common::assert_refused;

fn sweep(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_sweep"))
        .args(args)
        .output()
        .expect("run sweep")
}

#[test]
fn a_sweep_trains_skips_and_resumes() {
    let dir = std::env::temp_dir().join(format!("neuralrg-sweep-{}", std::process::id()));
    let (settings, folder) = grid(&dir);
    let s = settings.as_str();
    let out = sweep(&[s]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let csv = std::fs::read_to_string(folder.join("results.csv")).unwrap();
    assert_eq!(csv.lines().count(), 5, "{csv}");
    assert!(
        csv.lines().nth(1).unwrap().starts_with("4,2,2.0,1,3,"),
        "{csv}"
    );
    assert!(
        image::open(folder.join("relative_error.png"))
            .unwrap()
            .width()
            >= 800
    );
    assert!(
        std::fs::read_to_string(folder.join("relative_error.svg"))
            .unwrap()
            .contains("depth 2")
    );

    // Everything finished: a second call trains nothing.
    let out = sweep(&[s]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success());
    assert_eq!(stderr.matches("finished, skipped").count(), 4, "{stderr}");

    // An interrupted run (no summary yet) is resumed from its checkpoint, the others skipped.
    std::fs::remove_file(folder.join("T3.0_depth2/summary.json")).unwrap();
    let out = sweep(&[s]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert_eq!(stderr.matches("finished, skipped").count(), 3, "{stderr}");
    assert!(
        stderr.contains("T=3.0 depth=2: resuming at epoch 3"),
        "{stderr}"
    );
    assert!(folder.join("T3.0_depth2/summary.json").exists());

    // Settings changed since the runs were trained: refused, naming the setting, never passed
    // off as finished.
    let text = std::fs::read_to_string(&settings).unwrap();
    std::fs::write(
        &settings,
        text.replace("batch = 32", "batch = 32\nlr = 0.002"),
    )
    .unwrap();
    let out = sweep(&[s]);
    assert_refused(&out, "lr = 0.001 (run) vs 0.002 (settings)");
    assert!(!String::from_utf8_lossy(&out.stderr).contains("finished, skipped"));
}

#[test]
fn bad_settings_are_refused() {
    let dir = std::env::temp_dir().join(format!("neuralrg-sweep-bad-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    for (body, needle) in [
        (
            "folder = \"x\"\nL = 6\ntemperatures = [2.0]\nepochs = 1\n",
            "L = 6",
        ),
        (
            "folder = \"x\"\nL = 4\ntemperatures = [-1.0]\nepochs = 1\n",
            "T = -1",
        ),
        (
            "folder = \"x\"\nL = 4\ntemperatures = [2.0]\nepochs = 1\nspeed = 3\n",
            "not a valid sweep settings file",
        ),
        ("this is not toml", "not a valid sweep settings file"),
        (
            "folder = \"x\"\nL = 4\ntemperatures = [2.0, 2.5, 2.0]\nepochs = 1\n",
            "temperatures lists 2.0 twice: list each once",
        ),
        (
            "folder = \"x\"\nL = 4\ntemperatures = [2.0]\ndepths = [1, 1]\nepochs = 1\n",
            "depths lists 1 twice",
        ),
        // The [train] table is the training settings by name: an unknown one, a value of the
        // wrong kind, a grid axis, and the warm-up of the old (flat) schedule form are named.
        (
            "folder = \"x\"\nL = 4\ntemperatures = [2.0]\nepochs = 1\n[train]\nwarmup = 5\n",
            "[train] has no setting warmup",
        ),
        (
            "folder = \"x\"\nL = 4\ntemperatures = [2.0]\nepochs = 1\n[train]\nlr = \"fast\"\n",
            "lr = fast is not allowed: a number",
        ),
        (
            "folder = \"x\"\nL = 4\ntemperatures = [2.0]\nepochs = 1\n[train]\nT = 2.5\n",
            "[train] sets T",
        ),
        (
            "folder = \"x\"\nL = 4\ntemperatures = [2.0]\nepochs = 1\n[train]\nnhidden = 0\n",
            "nhidden = 0",
        ),
        (
            "folder = \"x\"\nL = 4\ntemperatures = [2.0]\nepochs = 10\n[train]\nschedule = { kind = \"cosine\", warmup = 10 }\n",
            "at least one epoch after the warm-up",
        ),
    ] {
        let path = dir.join("bad.toml");
        std::fs::write(&path, body).unwrap();
        let out = sweep(&[path.to_str().unwrap()]);
        assert_refused(&out, needle);
    }
    let out = sweep(&[dir.join("missing.toml").to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
}

/// A four-run grid (T = 2, 3 x depth 1, 2) of the tiny network in `dir`; returns the settings
/// file and the sweep folder.
fn grid(dir: &std::path::Path) -> (String, std::path::PathBuf) {
    let _ = std::fs::remove_dir_all(dir);
    std::fs::create_dir_all(dir).unwrap();
    let settings = dir.join("sweep.toml");
    let folder = dir.join("runs");
    std::fs::write(
        &settings,
        format!(
            "folder = {:?}\nL = 4\ntemperatures = [2.0, 3.0]\ndepths = [1, 2]\nepochs = 3\nrecipe = \"paper\"\n\n[train]\nnlayers = 2\nnhidden = 4\nnmlp = 1\nbatch = 32\n",
            folder.to_str().unwrap()
        ),
    )
    .unwrap();
    (settings.to_str().unwrap().to_string(), folder)
}

fn rows(folder: &std::path::Path) -> usize {
    std::fs::read_to_string(folder.join("results.csv"))
        .unwrap()
        .lines()
        .count()
        - 1
}

#[test]
fn shards_split_a_grid_and_devices_run_it_concurrently() {
    let dir = std::env::temp_dir().join(format!("neuralrg-sweep-shard-{}", std::process::id()));
    let (s, folder) = grid(&dir);
    // Shard 1/2 takes runs 2 and 4 of the grid; the results hold what is finished.
    let out = sweep(&[&s, "--shard", "1/2"]);
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "{err}");
    assert!(
        err.contains("[2/4] T=2.0 depth=2: training")
            && err.contains("[4/4] T=3.0 depth=2: training"),
        "{err}"
    );
    assert!(!err.contains("depth=1"), "{err}");
    assert_eq!(rows(&folder), 2);
    assert!(String::from_utf8_lossy(&out.stdout).contains("2 of 4 runs finished"));
    // A run another process is writing (its folder lock) is skipped, not trained twice.
    let busy = folder.join("T2.0_depth1");
    let lock = neuralrg::run::FolderLock::acquire(&busy).unwrap();
    let out = sweep(&[&s, "--shard", "0/2"]);
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "{err}");
    assert!(
        err.contains("[1/4] T=2.0 depth=1: another process is training it, skipped"),
        "{err}"
    );
    assert_eq!(rows(&folder), 3);
    drop(lock);
    // Two CPU worker processes finish the grid; the finished runs are skipped.
    let out = sweep(&[&s, "--devices", "cpu:0,cpu:1"]);
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "{err}");
    assert_eq!(err.matches("finished, skipped").count(), 3, "{err}");
    assert!(err.contains("T2.0_depth1: training on cpu"), "{err}");
    assert_eq!(rows(&folder), 4);
    assert!(folder.join("logs/T2.0_depth1.log").exists());
    // The whole grid again, concurrently from the start, gives the same results as the runs
    // trained one at a time and by shards (the sample streams depend on the seed only).
    let sequential = std::fs::read_to_string(folder.join("results.csv")).unwrap();
    std::fs::remove_dir_all(&folder).unwrap();
    let out = sweep(&[&s, "--devices", "cpu:0,cpu:1", "--per-device", "2"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let concurrent = std::fs::read_to_string(folder.join("results.csv")).unwrap();
    let without_time = |t: &str| -> Vec<String> {
        t.lines()
            .map(|l| l.rsplit_once(',').unwrap().0.to_string())
            .collect()
    };
    assert_eq!(without_time(&sequential), without_time(&concurrent));
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn bad_shards_and_device_lists_are_refused() {
    let dir = std::env::temp_dir().join(format!("neuralrg-sweep-badshard-{}", std::process::id()));
    let (s, folder) = grid(&dir);
    for (args, says) in [
        (&["--shard", "3/2"][..], "I = 3 must be below N = 2"),
        (&["--shard", "1/0"], "I = 1 must be below N = 0"),
        (&["--shard", "x"], "is not I/N"),
        (
            &["--devices", "cpu:0,cpu:0"],
            "lists the device cpu:0 twice",
        ),
        (&["--devices", "cpu:0,cuda:99"], "cuda"),
        (
            &["--devices", "cpu:0", "--per-device", "0"],
            "--per-device 0 is not allowed",
        ),
        (&["--per-device", "2"], "--devices"),
        (
            &["--devices", "cpu:1", "--device", "cpu"],
            "cannot be used with",
        ),
    ] {
        let out = sweep(&[&[s.as_str()][..], args].concat());
        assert_refused(&out, says);
    }
    assert!(!folder.join("T2.0_depth1").exists(), "nothing was trained");
    let _ = std::fs::remove_dir_all(&dir);
}

/// With `warm_start`, each temperature's run starts from the one listed before it (same
/// depth), recorded in its parameters.json; the results are by temperature. A run whose model
/// to start from did not finish is not started, and says which.
#[test]
fn a_warm_started_sweep_chains_its_temperatures() {
    let dir = std::env::temp_dir().join(format!("neuralrg-sweep-warm-{}", std::process::id()));
    let (settings, folder) = grid(&dir);
    let text = std::fs::read_to_string(&settings).unwrap();
    std::fs::write(
        &settings,
        // The default recipe: neuralrg's, which warm-starts.
        text.replace("temperatures = [2.0, 3.0]", "temperatures = [3.0, 2.0]")
            .replace("recipe = \"paper\"\n", ""),
    )
    .unwrap();
    // Only the second temperature's first run (the grid is T3.0_depth1, T3.0_depth2,
    // T2.0_depth1, T2.0_depth2): its model is not there.
    let out = sweep(&[&settings, "--shard", "2/4"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr.contains("not started, it starts from T3.0_depth1, which did not finish"),
        "{stderr}"
    );
    assert!(!folder.join("T2.0_depth1").exists());

    let out = sweep(&[&settings, "--devices", "cpu:0,cpu:1"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let init = |run: &str| {
        neuralrg::run::read_parameters(&folder.join(run))
            .unwrap()
            .options
            .init
    };
    assert_eq!(init("T3.0_depth1"), None);
    // The recipe's optimizer under the [train] table's batch: a cosine to 0 at epoch 3.
    let optimizer = neuralrg::run::read_parameters(&folder.join("T2.0_depth1"))
        .unwrap()
        .config
        .optimizer;
    assert_eq!(
        (optimizer.batch, optimizer.lr, optimizer.weight_decay),
        (32, 2e-3, 0.0)
    );
    assert_eq!(optimizer.schedule, neuralrg::train::Schedule::cosine(3, 0));
    assert_eq!(init("T2.0_depth1"), Some(folder.join("T3.0_depth1")));
    assert_eq!(init("T2.0_depth2"), Some(folder.join("T3.0_depth2")));
    let log = std::fs::read_to_string(folder.join("logs/T2.0_depth2.log")).unwrap();
    assert!(
        log.contains("warm start from") && log.contains("(trained at T = 3.0)"),
        "{log}"
    );
    let csv = std::fs::read_to_string(folder.join("results.csv")).unwrap();
    let temperatures: Vec<&str> = csv
        .lines()
        .skip(1)
        .map(|l| l.split(',').nth(2).unwrap())
        .collect();
    assert_eq!(temperatures, ["2.0", "2.0", "3.0", "3.0"], "{csv}");
}
