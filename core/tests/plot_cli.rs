//! The `plot` monitor: figures from a run's records, and sweeps compared; bad input refused.

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

#[test]
fn plot_compares_sweeps_and_refuses_a_file_that_is_not_a_results_table() {
    let dir = std::env::temp_dir().join(format!("neuralrg-plot-results-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(dir.join("cold")).unwrap();
    let header =
        "L,d,T,depth,epochs,F,F_stderr,lnZx,relative_error,relative_error_stderr,seconds_per_epoch";
    let table = |e: f64| {
        format!(
            "{header}\n16,2,2.0,4,100,-660.0,0.03,662.7,{e},0.00005,0.1\n16,2,2.2,4,100,-606.0,0.03,608.9,{},0.00005,0.1\n",
            e + 0.001
        )
    };
    std::fs::write(dir.join("warm.csv"), table(0.002)).unwrap();
    std::fs::write(dir.join("cold/results.csv"), table(0.003)).unwrap();
    std::fs::write(dir.join("notes.txt"), "T,error\n2.0,0.1\n").unwrap();
    let path = |p: &str| dir.join(p).to_str().unwrap().to_string();
    let out = run(
        env!("CARGO_BIN_EXE_plot"),
        &[
            "--results",
            &format!("my recipe={}", path("warm.csv")),
            "--results",
            &path("cold/results.csv"),
            "--out",
            &path("figure"),
        ],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        image::open(dir.join("figure/relative_error.png"))
            .unwrap()
            .width()
            >= 800
    );
    let svg = std::fs::read_to_string(dir.join("figure/relative_error.svg")).unwrap();
    // The given label, the folder's name for a results.csv, and the paper's L=16 numbers.
    for label in ["my recipe", "cold", "the paper (5000 epochs of 512)"] {
        assert!(svg.contains(label), "no {label} in the legend");
    }
    // One table without a label: its lines are named by depth, as in `sweep`'s own figure.
    let out = run(
        env!("CARGO_BIN_EXE_plot"),
        &["--results", &path("warm.csv"), "--out", &path("alone")],
    );
    assert!(out.status.success());
    let svg = std::fs::read_to_string(dir.join("alone/relative_error.svg")).unwrap();
    assert!(svg.contains("depth 4") && !svg.contains("warm"));
    for (args, needle) in [
        (
            vec!["--results".to_string(), path("notes.txt")],
            "is not allowed",
        ),
        (
            vec!["--results".to_string(), path("missing.csv")],
            "missing.csv",
        ),
        (
            vec![
                "--results".to_string(),
                path("warm.csv"),
                "--folder".to_string(),
                path("cold"),
            ],
            "--folder",
        ),
    ] {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        assert_refused(&run(env!("CARGO_BIN_EXE_plot"), &args), needle);
    }
}
