//! The `plot` monitor: figures from a run's records, bad input refused.

mod common;
use common::{assert_refused, run};

#[test]
fn plot_draws_the_monitor_and_refuses_bad_input() {
    let dir = std::env::temp_dir().join(format!("neuralrg-plot-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let folder = dir.to_str().unwrap();
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
        folder,
    ];
    let out = run(env!("CARGO_BIN_EXE_train"), &args);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The run has ended, so --per draws once and returns.
    let out = run(
        env!("CARGO_BIN_EXE_plot"),
        &["--folder", folder, "--per", "0.1", "--exact", "0.7"],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let png = image::open(dir.join("pic/monitor.png")).unwrap();
    assert!(png.width() >= 1000 && png.height() >= 700);
    let svg = std::fs::read_to_string(dir.join("pic/monitor.svg")).unwrap();
    assert!(
        svg.starts_with("<svg") && svg.contains("exact 0.7000"),
        "the given exact line is drawn"
    );
    for (args, needle) in [
        (
            vec!["--folder", dir.join("missing").to_str().unwrap()],
            "parameters.json",
        ),
        (vec!["--folder", folder, "--per", "0"], "per = 0"),
        (
            vec!["--folder", folder, "--observable", "entropy"],
            "entropy",
        ),
    ] {
        let out = run(env!("CARGO_BIN_EXE_plot"), &args);
        assert_refused(&out, needle);
    }
}
