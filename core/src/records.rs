//! The records of a training run: one [`EpochStats`] per epoch (`records/train.csv`) and one
//! [`MeasureRow`] per measurement (`records/measurements.csv`), as serde structs. Their CSV form
//! is written and read here only, by column name (so files with their columns in another order,
//! or a measurement file of an older version without some columns, still read); the summary,
//! the monitor plot, the sweep and the browser app's history all use these types.

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::observables::Observables;
use crate::train::EpochStats;

/// One measurement during training: Metropolis-Hastings on one batch of flow proposals and the
/// persistent latent-space HMC chains. A column missing from an older file reads as NaN.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct MeasureRow {
    pub epoch: usize,
    /// Effective sample size of the importance weights, as a fraction of the batch.
    pub ess: f64,
    /// Metropolis-Hastings acceptance.
    pub mh_acceptance: f64,
    /// Integrated autocorrelation time of the energy along the MH chain.
    pub mh_tau: f64,
    /// HMC acceptance (NaN without HMC chains).
    pub hmc_acceptance: f64,
    /// Energy per site, and its standard error.
    pub energy: f64,
    pub energy_err: f64,
    /// `<|m|>`.
    pub abs_m: f64,
    pub abs_m_err: f64,
    /// `<m^2>`.
    pub m2: f64,
    pub m2_err: f64,
    /// Susceptibility per site.
    pub susceptibility: f64,
    pub susceptibility_err: f64,
    /// Specific heat per site.
    pub specific_heat: f64,
    pub specific_heat_err: f64,
    /// Binder cumulant `U4`.
    pub binder_u4: f64,
    pub binder_u4_err: f64,
}

impl Default for MeasureRow {
    fn default() -> Self {
        let n = f64::NAN;
        Self {
            epoch: 0,
            ess: n,
            mh_acceptance: n,
            mh_tau: n,
            hmc_acceptance: n,
            energy: n,
            energy_err: n,
            abs_m: n,
            abs_m_err: n,
            m2: n,
            m2_err: n,
            susceptibility: n,
            susceptibility_err: n,
            specific_heat: n,
            specific_heat_err: n,
            binder_u4: n,
            binder_u4_err: n,
        }
    }
}

/// The observables of a [`MeasureRow`] (the monitor plot's choice).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "cli", derive(clap::ValueEnum))]
pub enum Observable {
    Energy,
    AbsM,
    M2,
    Susceptibility,
    SpecificHeat,
    BinderU4,
}

impl MeasureRow {
    /// The row of one measurement at `epoch`.
    pub fn new(
        epoch: usize,
        (ess, mh_acceptance, mh_tau, hmc_acceptance): (f64, f64, f64, f64),
        obs: &Observables,
    ) -> Self {
        Self {
            epoch,
            ess,
            mh_acceptance,
            mh_tau,
            hmc_acceptance,
            energy: obs.energy_per_site.mean,
            energy_err: obs.energy_per_site.stderr,
            abs_m: obs.abs_m.mean,
            abs_m_err: obs.abs_m.stderr,
            m2: obs.m2.mean,
            m2_err: obs.m2.stderr,
            susceptibility: obs.susceptibility.mean,
            susceptibility_err: obs.susceptibility.stderr,
            specific_heat: obs.specific_heat.mean,
            specific_heat_err: obs.specific_heat.stderr,
            binder_u4: obs.binder_u4.mean,
            binder_u4_err: obs.binder_u4.stderr,
        }
    }

    /// An observable's mean and standard error.
    pub fn observable(&self, which: Observable) -> (f64, f64) {
        match which {
            Observable::Energy => (self.energy, self.energy_err),
            Observable::AbsM => (self.abs_m, self.abs_m_err),
            Observable::M2 => (self.m2, self.m2_err),
            Observable::Susceptibility => (self.susceptibility, self.susceptibility_err),
            Observable::SpecificHeat => (self.specific_heat, self.specific_heat_err),
            Observable::BinderU4 => (self.binder_u4, self.binder_u4_err),
        }
    }
}

/// A row of a CSV table (its header from the field names).
pub trait Row: Serialize + DeserializeOwned + Default {}

impl<T: Serialize + DeserializeOwned + Default> Row for T {}

/// A row of a run folder's records file.
pub trait Record: Row {
    /// Its file in a run folder.
    const FILE: &'static str;
    /// The epoch it belongs to.
    fn epoch(&self) -> usize;
}

impl Record for EpochStats {
    const FILE: &'static str = "records/train.csv";
    fn epoch(&self) -> usize {
        self.epoch
    }
}

impl Record for MeasureRow {
    const FILE: &'static str = "records/measurements.csv";
    fn epoch(&self) -> usize {
        self.epoch
    }
}

/// One finished run of a sweep (its `results.csv`).
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
pub struct SweepRow {
    #[serde(rename = "L")]
    pub l: usize,
    pub d: usize,
    #[serde(rename = "T")]
    pub t: f64,
    /// MERA depth.
    pub depth: usize,
    pub epochs: usize,
    /// F averaged over the last epochs (the run's summary) and its standard error.
    #[serde(rename = "F")]
    pub f: f64,
    #[serde(rename = "F_stderr")]
    pub f_stderr: f64,
    #[serde(rename = "lnZx")]
    pub ln_zx: f64,
    /// `(F + ln Z_x) / ln Z_x` and its standard error.
    pub relative_error: f64,
    pub relative_error_stderr: f64,
    pub seconds_per_epoch: f64,
}

#[cfg(not(target_arch = "wasm32"))]
impl SweepRow {
    /// The row of a finished run of MERA depth `depth`.
    pub fn new(depth: usize, s: &crate::run::Summary) -> Self {
        Self {
            l: s.l,
            d: s.d,
            t: s.t,
            depth,
            epochs: s.epochs,
            f: s.f,
            f_stderr: s.f_stderr,
            ln_zx: s.ln_zx,
            relative_error: s.relative_error,
            relative_error_stderr: s.f_stderr / s.ln_zx.abs(),
            seconds_per_epoch: s.seconds_per_epoch,
        }
    }
}

/// The CSV header line of a record type (without the newline).
pub fn header<R: Row>() -> String {
    let text = to_csv(&[R::default()]);
    text.lines().next().unwrap_or_default().to_string()
}

/// Rows as CSV text with its header line (floats in their shortest exact form).
pub fn to_csv<R: Row>(rows: &[R]) -> String {
    let mut w = csv::Writer::from_writer(Vec::new());
    for row in rows {
        w.serialize(row).expect("a record serializes");
    }
    let bytes = w.into_inner().expect("writing to memory");
    let mut text = String::from_utf8(bytes).expect("CSV of numbers is UTF-8");
    if rows.is_empty() {
        // The writer writes the header with the first row; an empty file still has one.
        text = format!("{}\n", header::<R>());
    }
    text
}

/// One row as a CSV line, without the header (and with its newline).
pub fn to_line<R: Row>(row: &R) -> String {
    let mut w = csv::WriterBuilder::new()
        .has_headers(false)
        .from_writer(Vec::new());
    w.serialize(row).expect("a record serializes");
    String::from_utf8(w.into_inner().expect("writing to memory")).expect("UTF-8")
}

/// The rows of CSV text, by column name; rows that do not read (a line cut short by a crash)
/// are left out. A text without a header has no rows.
pub fn from_csv<R: Row>(text: &str) -> Vec<R> {
    csv::ReaderBuilder::new()
        .flexible(true)
        .from_reader(text.as_bytes())
        .deserialize()
        .filter_map(Result::ok)
        .collect()
}

/// The rows of a run folder's records file (none when it is not there yet).
#[cfg(not(target_arch = "wasm32"))]
pub fn read<R: Record>(folder: &std::path::Path) -> Result<Vec<R>, String> {
    let path = folder.join(R::FILE);
    match std::fs::read_to_string(&path) {
        Ok(text) => Ok(from_csv(&text)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
        Err(e) => Err(format!("{}: {e}", path.display())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_round_trip_by_column_name() {
        let row = EpochStats {
            epoch: 7,
            loss: -31.25,
            f: -31.2500000001,
            f_std: 0.1,
            f_stderr: 1e-7,
            relative_error: 2.5e-3,
            seconds: 0.123456,
        };
        let text = to_csv(&[row, EpochStats { epoch: 8, ..row }]);
        assert!(text.starts_with("epoch,loss,F,F_std,F_stderr,relative_error,seconds\n"));
        assert_eq!(
            from_csv::<EpochStats>(&text),
            [row, EpochStats { epoch: 8, ..row }]
        );
        assert_eq!(
            to_csv::<EpochStats>(&[]),
            format!("{}\n", header::<EpochStats>())
        );
        // Written by an older version (`{:?}` floats), columns in another order, a cut line.
        let old = "F,epoch,loss,F_std,F_stderr,relative_error,seconds\n-1.5,3,-1.5,0.25,0.01,0.001,0.2\n-1.4,4,-1.4";
        let rows = from_csv::<EpochStats>(old);
        assert_eq!(rows.len(), 1);
        assert_eq!((rows[0].epoch, rows[0].f, rows[0].seconds), (3, -1.5, 0.2));
        // A measurement file without some columns: they read as NaN; NaN round-trips.
        let m = from_csv::<MeasureRow>("epoch,ess,m2,m2_err\n10,0.5,0.7,0.01\n");
        assert_eq!(
            (m[0].epoch, m[0].observable(Observable::M2)),
            (10, (0.7, 0.01))
        );
        assert!(m[0].hmc_acceptance.is_nan());
        let back = from_csv::<MeasureRow>(&to_csv(&m));
        assert!(back[0].energy.is_nan() && back[0].ess == 0.5);
        assert_eq!(
            to_line(&row),
            text.lines().nth(1).unwrap().to_string() + "\n"
        );
    }
}
