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
