//! Training reaches the exact bound: L = 4, T_c, the paper's configuration, symmetrized.

use burn::backend::{Autodiff, Flex};
use neuralrg::lattice::T_C;
use neuralrg::train::{TrainConfig, Trainer};

#[test]
fn paper_configuration_at_l4_reaches_the_bound() {
    let config = TrainConfig::paper(4, 2, T_C).unwrap();
    let mut trainer = Trainer::<Autodiff<Flex>>::new(config, &Default::default()).unwrap();
    let bound = trainer.target.relaxation.loss_bound();
    let epochs = 300;
    let mut history = Vec::new();
    for _ in 0..epochs {
        history.push(trainer.step().expect("finite loss"));
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
    config.lr = 1e6;
    config.batch = 64;
    let mut trainer = Trainer::<Autodiff<Flex>>::new(config, &Default::default()).unwrap();
    let err = (0..200)
        .find_map(|_| trainer.step().err())
        .expect("training with lr 1e6 diverges");
    assert_eq!(
        trainer.epoch + 1,
        err.epoch,
        "the failed epoch is not counted"
    );
    assert!(err.to_string().contains("diverged"));
}
