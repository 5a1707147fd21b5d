//! Small statistics helpers in f64: mean, standard deviation, standard error, log-mean-exp.

/// Mean, sample standard deviation and standard error of the mean of independent values.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct MeanError {
    pub mean: f64,
    pub std: f64,
    pub stderr: f64,
}

/// Mean, standard deviation and standard error (`std / sqrt(n)`) of independent samples.
pub fn mean_error(v: &[f64]) -> MeanError {
    let n = v.len() as f64;
    let mean = v.iter().sum::<f64>() / n;
    let var = if v.len() > 1 {
        v.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n - 1.0)
    } else {
        0.0
    };
    MeanError {
        mean,
        std: var.sqrt(),
        stderr: (var / n).sqrt(),
    }
}

/// `ln(mean(exp(v)))`, stable (log-sum-exp).
pub fn log_mean_exp(v: &[f64]) -> f64 {
    let m = v.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
    if !m.is_finite() {
        return m;
    }
    m + (v.iter().map(|x| (x - m).exp()).sum::<f64>() / v.len() as f64).ln()
}

/// Integrated autocorrelation time `tau = 1 + 2 sum_t rho(t)` of a series, with Sokal's
/// automatic window (the smallest `W` with `W >= c tau(W)`, `c = 5`). `tau = 1` for independent
/// samples; the error of the mean is `sqrt(tau var / n)`.
pub fn tau_int(series: &[f64]) -> f64 {
    let n = series.len();
    if n < 4 {
        return 1.0;
    }
    let mean = series.iter().sum::<f64>() / n as f64;
    let d: Vec<f64> = series.iter().map(|v| v - mean).collect();
    let c0 = d.iter().map(|v| v * v).sum::<f64>() / n as f64;
    if c0 <= 0.0 {
        return 1.0;
    }
    let mut tau = 1.0;
    for t in 1..n / 2 {
        let ct = d[..n - t]
            .iter()
            .zip(&d[t..])
            .map(|(a, b)| a * b)
            .sum::<f64>()
            / n as f64;
        tau += 2.0 * ct / c0;
        if t as f64 >= 5.0 * tau {
            break;
        }
    }
    tau.max(1.0)
}

/// Mean and its error for a correlated series: the standard error inflated by the integrated
/// autocorrelation time, `sqrt(tau var / n)`.
pub fn mean_error_correlated(series: &[f64]) -> MeanError {
    let me = mean_error(series);
    let tau = tau_int(series);
    MeanError {
        stderr: me.stderr * tau.sqrt(),
        ..me
    }
}

/// The number of jackknife blocks for a chain (row-major `[n, cols]`, rows in chain order):
/// `max_blocks`, unless that makes a block shorter than five integrated autocorrelation times of
/// the most correlated column; then fewer, longer blocks (at least 2), so that the blocks are
/// nearly independent and the error is not too small.
pub fn chain_blocks(data: &[f64], cols: usize, max_blocks: usize) -> usize {
    let n = data.len() / cols.max(1);
    let tau = (0..cols)
        .map(|c| {
            let column: Vec<f64> = data.iter().skip(c).step_by(cols).copied().collect();
            tau_int(&column)
        })
        .fold(1.0f64, f64::max);
    let size = (5.0 * tau).ceil() as usize;
    (n / size.max(1)).clamp(2, max_blocks.max(2))
}

/// Split R-hat (Gelman et al., Bayesian Data Analysis, 3rd ed., 11.4) of `chains` equal chains
/// laid end to end in `series`: each chain is cut in half, and the variance between the halves'
/// means is compared with the variance within them. Near 1 when the chains agree; well above
/// 1 when they sample different regions (or one is stuck). `1.0` if there is too little data.
pub fn split_rhat(series: &[f64], chains: usize) -> f64 {
    let len = series.len() / chains.max(1) / 2;
    if chains == 0 || len < 2 {
        return 1.0;
    }
    let halves: Vec<&[f64]> = (0..2 * chains)
        .map(|h| {
            let (chain, half) = (h / 2, h % 2);
            let start = chain * (series.len() / chains) + half * len;
            &series[start..start + len]
        })
        .collect();
    let stats: Vec<MeanError> = halves.iter().map(|h| mean_error(h)).collect();
    let means: Vec<f64> = stats.iter().map(|m| m.mean).collect();
    let within = stats.iter().map(|m| m.std * m.std).sum::<f64>() / stats.len() as f64;
    let between = len as f64 * mean_error(&means).std.powi(2);
    if within <= 0.0 {
        return if between > 0.0 { f64::INFINITY } else { 1.0 };
    }
    let n = len as f64;
    (((n - 1.0) / n * within + between / n) / within).sqrt()
}

/// Error of a function of means by jackknife over `blocks` consecutive blocks (which also
/// absorbs autocorrelations shorter than a block): `f` maps the means of the columns of `data`
/// (row-major `[n, cols]`) to a value. Returns `(f(all means), error)`.
pub fn jackknife<F: Fn(&[f64]) -> f64>(
    data: &[f64],
    cols: usize,
    blocks: usize,
    f: F,
) -> (f64, f64) {
    let n = data.len() / cols;
    let blocks = blocks.min(n).max(2);
    let size = n / blocks;
    let column_sums = |rows: std::ops::Range<usize>| -> Vec<f64> {
        let mut s = vec![0.0; cols];
        for r in rows {
            s.iter_mut()
                .zip(&data[r * cols..(r + 1) * cols])
                .for_each(|(a, v)| *a += v);
        }
        s
    };
    let used = size * blocks;
    let total = column_sums(0..used);
    let full: Vec<f64> = total.iter().map(|t| t / used as f64).collect();
    let estimates: Vec<f64> = (0..blocks)
        .map(|b| {
            let part = column_sums(b * size..(b + 1) * size);
            let means: Vec<f64> = total
                .iter()
                .zip(&part)
                .map(|(t, p)| (t - p) / (used - size) as f64)
                .collect();
            f(&means)
        })
        .collect();
    let mean = estimates.iter().sum::<f64>() / blocks as f64;
    let var = estimates.iter().map(|e| (e - mean).powi(2)).sum::<f64>() * (blocks - 1) as f64
        / blocks as f64;
    (f(&full), var.sqrt())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// AR(1) with coefficient phi has tau = (1 + phi) / (1 - phi); checked within 10 %.
    #[test]
    fn tau_int_of_ar1_series() {
        use rand::SeedableRng;
        use rand_distr::{Distribution, StandardNormal};
        let mut rng = rand::rngs::StdRng::seed_from_u64(4);
        for phi in [0.0, 0.5, 0.8, 0.9] {
            let mut x = 0.0f64;
            let series: Vec<f64> = (0..400_000)
                .map(|_| {
                    let e: f64 = StandardNormal.sample(&mut rng);
                    x = phi * x + e;
                    x
                })
                .collect();
            let (tau, exact) = (tau_int(&series), (1.0 + phi) / (1.0 - phi));
            assert!(
                (tau - exact).abs() < 0.1 * exact,
                "phi {phi}: tau {tau} vs {exact}"
            );
        }
    }

    /// An AR(1) chain with `tau_int` = 50, 2000 steps long (40 tau): the error from
    /// [`chain_blocks`]' blocks covers the true mean (0) as often as a t-distribution with the
    /// blocks' degrees of freedom says, checked over 1000 chains (tolerance: 4 binomial standard
    /// errors). Twenty fixed blocks of 100 steps (2 tau) cover it too rarely.
    #[test]
    fn jackknife_errors_of_a_correlated_chain_cover_the_mean() {
        use rand::SeedableRng;
        use rand_distr::{Distribution, StandardNormal};
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        let phi: f64 = 49.0 / 51.0; // tau = (1 + phi) / (1 - phi) = 50
        let (chains, n) = (1000, 2000);
        let (mut within1, mut within2, mut fixed1, mut blocks_seen) = (0, 0, 0, 0);
        for _ in 0..chains {
            let e0: f64 = StandardNormal.sample(&mut rng);
            let mut x = e0 / (1.0 - phi * phi).sqrt(); // stationary start
            let series: Vec<f64> = (0..n)
                .map(|_| {
                    let e: f64 = StandardNormal.sample(&mut rng);
                    x = phi * x + e;
                    x
                })
                .collect();
            let blocks = chain_blocks(&series, 1, 20);
            blocks_seen += blocks;
            let (mean, err) = jackknife(&series, 1, blocks, |m| m[0]);
            within1 += usize::from(mean.abs() < err);
            within2 += usize::from(mean.abs() < 2.0 * err);
            let (mean, err) = jackknife(&series, 1, 20, |m| m[0]);
            fixed1 += usize::from(mean.abs() < err);
        }
        let rate = |k: usize| k as f64 / chains as f64;
        let tol = |p: f64| 4.0 * (p * (1.0 - p) / chains as f64).sqrt();
        // About ten blocks (the chains' own tau estimates vary): Student's t with 9 degrees of
        // freedom covers 0.657 within one error and 0.923 within two.
        let mean_blocks = blocks_seen as f64 / chains as f64;
        assert!((7.0..=14.0).contains(&mean_blocks), "{mean_blocks} blocks");
        let (p1, p2) = (0.657, 0.923);
        assert!(
            (rate(within1) - p1).abs() < tol(p1) + 0.02,
            "within one error: {}",
            rate(within1)
        );
        assert!(
            (rate(within2) - p2).abs() < tol(p2) + 0.02,
            "within two errors: {}",
            rate(within2)
        );
        // Twenty blocks of 2 tau: the error is too small by a fifth, and covers too rarely.
        assert!(
            rate(fixed1) < rate(within1) - 0.04,
            "twenty short blocks should undercover: {} against {}",
            rate(fixed1),
            rate(within1)
        );
        eprintln!(
            "coverage: {} and {} with {mean_blocks} blocks, {} with 20",
            rate(within1),
            rate(within2),
            rate(fixed1)
        );
    }

    #[test]
    fn split_rhat_tells_agreeing_chains_from_disagreeing_ones() {
        use rand::SeedableRng;
        use rand_distr::{Distribution, StandardNormal};
        let mut rng = rand::rngs::StdRng::seed_from_u64(3);
        let mut draw = |shift: f64| -> Vec<f64> {
            (0..1000)
                .map(|_| {
                    let e: f64 = StandardNormal.sample(&mut rng);
                    shift + e
                })
                .collect()
        };
        let same: Vec<f64> = (0..8).flat_map(|_| draw(0.0)).collect();
        let r = split_rhat(&same, 8);
        assert!((r - 1.0).abs() < 0.01, "agreeing chains: {r}");
        // One chain of eight elsewhere (a chain stuck at another state).
        let mut one_off: Vec<f64> = (0..7).flat_map(|_| draw(0.0)).collect();
        one_off.extend(draw(1.0));
        let r = split_rhat(&one_off, 8);
        assert!(r > 1.05, "one chain elsewhere: {r}");
        assert_eq!(split_rhat(&[1.0, 2.0], 8), 1.0);
    }

    #[test]
    fn jackknife_of_a_ratio() {
        // Two columns, ratio of means: exact 2 with a small spread.
        let data: Vec<f64> = (0..1000)
            .flat_map(|i| [2.0 + (i % 7) as f64 * 0.01, 1.0])
            .collect();
        let (v, e) = jackknife(&data, 2, 20, |m| m[0] / m[1]);
        assert!((v - 2.03).abs() < 0.001 && e < 0.01);
    }

    #[test]
    fn log_mean_exp_is_stable() {
        assert!((log_mean_exp(&[1000.0, 1000.0]) - 1000.0).abs() < 1e-12);
        assert!((log_mean_exp(&[0.0, 2f64.ln()]) - 1.5f64.ln()).abs() < 1e-12);
        let me = mean_error(&[1.0, 2.0, 3.0]);
        assert_eq!(me.mean, 2.0);
        assert!((me.std - 1.0).abs() < 1e-15);
    }
}
