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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_mean_exp_is_stable() {
        assert!((log_mean_exp(&[1000.0, 1000.0]) - 1000.0).abs() < 1e-12);
        assert!((log_mean_exp(&[0.0, 2f64.ln()]) - 1.5f64.ln()).abs() < 1e-12);
        let me = mean_error(&[1.0, 2.0, 3.0]);
        assert_eq!(me.mean, 2.0);
        assert!((me.std - 1.0).abs() < 1e-15);
    }
}
