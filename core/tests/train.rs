//! Training reaches the exact bound: L = 4, T_c, the paper's configuration, symmetrized.

use burn::backend::{Autodiff, Flex};
use neuralrg::host::block_on;
use neuralrg::lattice::T_C;
use neuralrg::train::{Schedule, TrainConfig, Trainer};

#[test]
fn paper_configuration_at_l4_reaches_the_bound() {
    let config = TrainConfig::paper(4, 2, T_C).unwrap();
    let mut trainer = Trainer::<Autodiff<Flex>>::new(config, &Default::default()).unwrap();
    let bound = trainer.target.relaxation.loss_bound();
    let epochs = 300;
    let mut history = Vec::new();
    for _ in 0..epochs {
        history.push(block_on(trainer.step()).expect("finite loss"));
    }
    let last = &history[epochs - 20..];
    let f = last.iter().map(|s| s.f).sum::<f64>() / 20.0;
    let stderr = last.iter().map(|s| s.f_stderr.powi(2)).sum::<f64>().sqrt() / 20.0;
    let rel = (f - bound) / bound.abs();
    println!(
        "F(last 20) = {f:.5} +- {stderr:.5}, bound = {bound:.5}, relative error = {:.3} %",
        100.0 * rel
    );
    assert!(
        rel.abs() < 0.02,
        "F = {f} is not within 2 % of the bound {bound}"
    );
    assert!(
        f > bound - 3.0 * stderr,
        "F = {f} +- {stderr} is below the bound {bound}: a bug"
    );
    for s in &history {
        assert!(
            s.f > bound - 3.0 * s.f_stderr - 1e-9 * bound.abs() || s.epoch < 5,
            "epoch {} F = {} below the bound",
            s.epoch,
            s.f
        );
    }
    // Learning happened: the last epochs are far better than the first.
    assert!(
        history[0].f - f > 0.5,
        "F went from {} to {f}",
        history[0].f
    );
}

#[test]
fn a_huge_learning_rate_is_caught_by_the_nan_guard() {
    let mut config = TrainConfig::paper(4, 2, T_C).unwrap();
    config.optimizer.lr = 1e6;
    config.optimizer.batch = 64;
    let mut trainer = Trainer::<Autodiff<Flex>>::new(config, &Default::default()).unwrap();
    let err = (0..200)
        .find_map(|_| block_on(trainer.step()).err())
        .expect("training with lr 1e6 diverges");
    assert_eq!(
        trainer.epoch + 1,
        err.epoch,
        "the failed epoch is not counted"
    );
    assert!(err.to_string().contains("diverged"));
}

/// The browser app keeps its setup in the URL: the query round-trips every field exactly, fills
/// missing keys from the paper's configuration and names a bad value.
#[test]
fn the_url_query_round_trips_the_configuration() {
    let mut c = TrainConfig::paper(16, 1, 1.7).unwrap();
    c.mera.depth = Some(2);
    c.mera.nrepeat = 2;
    c.mera.nlayers = 4;
    c.mera.nmlp = 2;
    c.mera.nhidden = 7;
    c.optimizer.batch = 96;
    c.optimizer.lr = 0.0031;
    c.symmetry = false;
    c.alpha = 0.5;
    c.optimizer.weight_decay = 0.0;
    c.optimizer.clip = Some(2.5);
    c.optimizer.schedule = Schedule::cosine(300, 20);
    c.seed = 12345678901;
    let q = c.to_query();
    assert_eq!(TrainConfig::from_query(&q).unwrap(), c, "{q}");
    assert_eq!(TrainConfig::from_query(&format!("?{q}")).unwrap(), c);

    let defaults = TrainConfig::from_query("").unwrap();
    assert_eq!(defaults, TrainConfig::paper(8, 2, T_C).unwrap());
    let partial = TrainConfig::from_query("L=4&T=2.5&nhidden=5&unknown=1").unwrap();
    assert_eq!((partial.mera.lattice.side(), partial.t), (4, 2.5));
    assert_eq!((partial.mera.nhidden, partial.mera.depth()), (5, 2));
    assert_eq!(
        TrainConfig::unknown_in_query("L=4&unknown=1&schedule.end=3"),
        ["schedule.end", "unknown"]
    );

    for (q, named) in [
        ("L=6", "6"),
        ("T=-1", "T"),
        ("lr=fast", "lr"),
        ("L=4&depthMERA=3", "depthMERA"),
        ("symmetry=yes", "symmetry"),
        ("clip=big", "clip = big"),
        (
            "schedule=cosine",
            "schedule = cosine is not allowed: a group of settings",
        ),
        (
            "schedule.kind=cosine&schedule.epochs=10&schedule.warmup=10",
            "schedule",
        ),
        ("schedule.kind=linear", "schedule"),
    ] {
        let e = TrainConfig::from_query(q).unwrap_err().to_string();
        assert!(e.contains(named), "{q}: {e}");
    }
}

/// The cosine schedule ramps up linearly over the warm-up, starts its decay at the base rate,
/// passes half of it at the middle of the decay and ends at 0; the paper's schedule is constant.
#[test]
fn the_learning_rate_schedules() {
    assert_eq!(Schedule::constant().lr(1e-3, 1), 1e-3);
    assert_eq!(Schedule::constant().lr(1e-3, 5000), 1e-3);
    let cosine = Schedule::cosine(110, 10);
    let close = |a: f64, b: f64| (a - b).abs() < 1e-15;
    assert!(close(cosine.lr(1e-3, 1), 1e-4));
    assert!(close(cosine.lr(1e-3, 5), 5e-4));
    assert!(close(cosine.lr(1e-3, 10), 1e-3));
    assert!(close(cosine.lr(1e-3, 60), 5e-4));
    assert!(cosine.lr(1e-3, 109) > 0.0 && cosine.lr(1e-3, 109) < 1e-6);
    assert_eq!(cosine.lr(1e-3, 110), 0.0);
    let decay: Vec<f64> = (10..=110).map(|e| cosine.lr(1e-3, e)).collect();
    assert!(
        decay.windows(2).all(|w| w[1] < w[0]),
        "decreasing after warm-up"
    );
}

/// `parameters.json` (and a checkpoint's configuration) as earlier versions wrote it reads as
/// the same configuration: before schedules existed (no `schedule`), with the constant rate
/// (`{"kind": "constant"}`) and with a cosine (`{"kind": "cosine", "epochs": .., "warmup": ..}`);
/// and a run's configuration written now reads back equal.
#[test]
fn parameters_of_earlier_versions_still_read() {
    let old = r#"{"L":16,"d":2,"T":2.269185314213022,"depthMERA":4,"nrepeat":1,"nlayers":10,
        "nmlp":3,"nhidden":10,"symmetry":true,"alpha":1.0,"batch":512,"lr":0.001,
        "weight_decay":0.001,"clip":null,"seed":1"#;
    let mut expected = TrainConfig::paper(16, 2, neuralrg::lattice::T_C).unwrap();
    expected.mera.depth = Some(4);
    for (tail, schedule) in [
        ("}", Schedule::constant()),
        (r#","schedule":{"kind":"constant"}}"#, Schedule::constant()),
        (
            r#","schedule":{"kind":"cosine","epochs":5000,"warmup":200}}"#,
            Schedule::cosine(5000, 200),
        ),
    ] {
        let read: TrainConfig = serde_json::from_str(&format!("{old}{tail}")).unwrap();
        let mut want = expected.clone();
        want.optimizer.schedule = schedule;
        assert_eq!(read, want, "{tail}");
        let again: TrainConfig = serde_json::from_value(read.as_value()).unwrap();
        assert_eq!(again, read);
    }
    // A run stores its depth and its cosine's end.
    let mut c = TrainConfig::paper(8, 2, 2.5).unwrap();
    c.optimizer.schedule.kind = neuralrg::train::ScheduleKind::Cosine;
    let stored = c.for_run(300);
    assert_eq!(
        (stored.mera.depth, stored.optimizer.schedule.epochs),
        (Some(3), Some(300))
    );
}

/// A small run (L = 4) trained a few epochs.
fn small_trainer(epochs: usize) -> Trainer<Autodiff<Flex>> {
    let config = TrainConfig::from_query(
        "L=4&d=2&T=2.269185314213022&nlayers=4&nmlp=2&nhidden=10&batch=64&lr=0.005&seed=3",
    )
    .unwrap();
    let mut trainer = Trainer::<Autodiff<Flex>>::new(config, &Default::default()).unwrap();
    for _ in 0..epochs {
        block_on(trainer.step()).expect("finite loss");
    }
    trainer
}

/// The checkpoint written through asynchronous readbacks (the page's, on WebGPU) restores the
/// same run as the plain one: the same parameters and optimizer state, so that the next
/// training steps are identical; and a model in one file (the page's download) opens as the
/// run, every way the page offers: the archive, a checkpoint alone, a run folder's files with a
/// damaged newest checkpoint.
#[test]
fn a_model_file_restores_the_run_every_way_it_is_opened() {
    use neuralrg::analysis::log_q_probes;
    use neuralrg::checkpoint::flat_parameters;
    use neuralrg::folder::{self, ModelFiles, Parameters};
    let device = Default::default();
    let mut trainer = small_trainer(3);
    let config = trainer.config.clone();
    let lattice = config.mera.lattice;
    let plain = trainer.to_checkpoint().unwrap();
    let via_readback = block_on(trainer.to_checkpoint_async()).unwrap();
    let probes = block_on(log_q_probes(&trainer.flow_valid(), lattice));
    let mut restored: Vec<Trainer<Autodiff<Flex>>> = [&plain, &via_readback]
        .iter()
        .map(|b| Trainer::from_checkpoint(config.clone(), b, &device).unwrap())
        .collect();
    let next = block_on(trainer.step()).unwrap();
    for r in &mut restored {
        assert_eq!(r.epoch, 3);
        let s = block_on(r.step()).unwrap();
        assert_eq!(
            (s.loss, s.f),
            (next.loss, next.f),
            "the step after restoring"
        );
        assert_eq!(flat_parameters(r.flow()), flat_parameters(trainer.flow()));
    }

    let params = Parameters::of_model(config.clone(), 3, "autodiff<flex>".into());
    let name = config.run_name();
    assert_eq!(params.options.name, name);
    let packed = folder::pack(&params, 3, &via_readback, 1_700_000_000).unwrap();
    let mut odd = params.clone();
    odd.options.name = "../elsewhere".into();
    assert!(
        folder::pack(&odd, 3, &via_readback, 0)
            .unwrap_err()
            .contains("no plain folder name")
    );
    let open = |files: Vec<(String, Vec<u8>)>| {
        let m = ModelFiles::sort(files).unwrap();
        let newest: Vec<(String, Result<Vec<u8>, ()>)> = m
            .checkpoints
            .iter()
            .map(|(n, _, b)| (n.clone(), Ok(b.clone())))
            .collect();
        let loaded = folder::newest_good::<Autodiff<Flex>, (), _>(&m.config, newest, &device)
            .unwrap_or_else(|_| panic!("loads"));
        (m, loaded)
    };
    let (m, loaded) = open(vec![("model.tar".into(), packed.clone())]);
    assert_eq!(m.config, config);
    assert_eq!(m.parameters.unwrap().options.epochs, 3);
    assert_eq!(loaded.trainer.epoch, 3);
    assert!(
        loaded
            .name
            .ends_with(&format!("{name}/savings/epoch-000003.ckpt")),
        "{}",
        loaded.name
    );
    let again = block_on(log_q_probes(&loaded.trainer.flow_valid(), lattice));
    assert_eq!(again, probes, "log q at the probes");
    assert!(probes.iter().all(|v| v.is_finite()) && probes[0] != probes[2]);

    // A checkpoint alone holds its settings.
    let (m, loaded) = open(vec![("renamed.ckpt".into(), plain.clone())]);
    assert!(m.parameters.is_none());
    assert_eq!((m.config, loaded.trainer.epoch), (config.clone(), 3));

    // A picked run folder: its other files are passed over, a damaged newest checkpoint too.
    let mut cut = restored[0].to_checkpoint().unwrap();
    cut.truncate(cut.len() / 2);
    let (m, loaded) = open(vec![
        ("run/records/train.csv".into(), b"epoch,loss\n".to_vec()),
        ("run/parameters.json".into(), params.to_json().into_bytes()),
        ("run/savings/epoch-000003.ckpt".into(), plain.clone()),
        ("run/savings/epoch-000004.ckpt".into(), cut),
    ]);
    assert_eq!(
        m.checkpoints.iter().map(|c| c.1).collect::<Vec<_>>(),
        [4, 3]
    );
    assert_eq!((loaded.trainer.epoch, loaded.skipped.len()), (3, 1));
    assert!(
        loaded.skipped[0].1.contains("truncated"),
        "{:?}",
        loaded.skipped
    );

    // What cannot be opened says what is expected.
    let e = ModelFiles::sort(vec![(
        "run/parameters.json".into(),
        params.to_json().into_bytes(),
    )])
    .unwrap_err();
    assert!(e.contains("no checkpoint among the files"), "{e}");
    let json = params.to_json().into_bytes();
    let e = ModelFiles::sort(vec![
        ("a/parameters.json".into(), json.clone()),
        ("b/parameters.json".into(), json),
        ("a/savings/epoch-000003.ckpt".into(), plain.clone()),
    ])
    .unwrap_err();
    assert!(e.contains("two parameters.json"), "{e}");
    let e = ModelFiles::sort(vec![("x.tar".into(), b"not a tar archive".to_vec())]).unwrap_err();
    assert!(e.contains("x.tar"), "{e}");

    // The archive is a tar file that tar itself unpacks into a run folder the command line
    // reads; and `tar cf` of a run folder opens in the page.
    let Ok(tar) = std::process::Command::new("tar").arg("--version").output() else {
        println!("no tar program here: its part of the test skipped");
        return;
    };
    assert!(tar.status.success());
    let dir = std::env::temp_dir().join(format!("neuralrg-model-file-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("model.tar"), &packed).unwrap();
    let status = std::process::Command::new("tar")
        .args(["-xf", "model.tar"])
        .current_dir(&dir)
        .status()
        .unwrap();
    assert!(status.success());
    let run = dir.join(&name);
    let read = neuralrg::run::read_parameters(&run).unwrap();
    assert_eq!(read.config, config);
    let native =
        neuralrg::run::load_trainer::<Autodiff<Flex>>(&run, &read.config, &device).unwrap();
    assert_eq!(
        flat_parameters(native.flow()),
        flat_parameters(loaded.trainer.flow())
    );
    let status = std::process::Command::new("tar")
        .args(["-cf", "again.tar", &name])
        .current_dir(&dir)
        .status()
        .unwrap();
    assert!(status.success());
    let (m, loaded) = open(vec![(
        "again.tar".into(),
        std::fs::read(dir.join("again.tar")).unwrap(),
    )]);
    assert_eq!((m.config, loaded.trainer.epoch), (config, 3));
    std::fs::remove_dir_all(&dir).unwrap();
}

/// A warm start keeps the flow of the model it starts from (the same parameters, the same
/// log q) and begins a new run: epoch 0, this run's temperature and optimizer, and a fresh
/// Adam state (its first step moves every parameter by about the learning rate, which a
/// carried-over state would not). A model of another network is refused, naming the setting.
#[test]
fn a_warm_start_keeps_the_flow_and_starts_afresh() {
    use neuralrg::analysis::log_q_probes;
    use neuralrg::checkpoint::{CheckpointError, flat_parameters};
    let device = Default::default();
    let trainer = small_trainer(5);
    let bytes = trainer.to_checkpoint().unwrap();
    let lattice = trainer.config.mera.lattice;
    let mut config = trainer.config.clone();
    config.t = 3.0;
    config.seed = 4;
    config.optimizer.lr = 1e-3;
    config.optimizer.weight_decay = 0.0;
    config.optimizer.batch = 32;
    let (mut warm, from) =
        Trainer::<Autodiff<Flex>>::warm_started(config.clone(), &bytes, &device).unwrap();
    assert_eq!(from.map(|c| c.t), Some(trainer.config.t));
    assert_eq!((warm.epoch, warm.config.t), (0, 3.0));
    let before = flat_parameters(warm.flow());
    assert_eq!(before, flat_parameters(trainer.flow()));
    assert_eq!(
        block_on(log_q_probes(&warm.flow_valid(), lattice)),
        block_on(log_q_probes(&trainer.flow_valid(), lattice))
    );
    block_on(warm.step()).unwrap();
    assert_eq!(warm.epoch, 1);
    let moved: Vec<f64> = flat_parameters(warm.flow())
        .iter()
        .zip(&before)
        .map(|(a, b)| (a - b).abs())
        .filter(|d| *d > 0.0)
        .collect();
    let biggest = moved.iter().cloned().fold(0.0, f64::max);
    assert!(moved.len() > before.len() / 2, "{} moved", moved.len());
    assert!(
        (biggest - 1e-3).abs() < 2e-5,
        "a fresh Adam's first step is about lr: {biggest}"
    );

    let mut other = config;
    other.mera.nhidden = 8;
    let e = Trainer::<Autodiff<Flex>>::warm_started(other, &bytes, &device)
        .err()
        .expect("refused");
    assert!(matches!(e, CheckpointError::OtherNetwork(_)), "{e}");
    assert!(
        e.to_string().contains("nhidden = 10 (model) vs 8 (run)"),
        "{e}"
    );
}
