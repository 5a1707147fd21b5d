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
