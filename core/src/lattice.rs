//! The periodic hypercubic lattice of the spec (section 1): side `L`, a power of two `>= 4`,
//! dimension `d` in {1, 2}, sites in row-major order `i = row * L + col`.

use serde::{Deserialize, Serialize};

/// Why a lattice or a temperature was refused.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum InputError {
    #[error("L = {0} is not allowed: the lattice side must be a power of two >= 4 (4, 8, 16, ...)")]
    Side(usize),
    #[error("d = {0} is not allowed: the dimension must be 1 or 2")]
    Dimension(usize),
    #[error("T = {0} is not allowed: the temperature must be a finite number > 0")]
    Temperature(f64),
    #[error(
        "L = {0} with d = {1} is not allowed: at most {MAX_SITES} sites (L <= 4096 in 2D, L <= 2^24 in 1D)"
    )]
    TooLarge(usize, usize),
}

/// The most sites a lattice may have (`2^24`: a field of one sample is 64 MiB in f32), so that
/// every size derived from it fits in 32-bit arithmetic on wasm32 too.
pub const MAX_SITES: usize = 1 << 24;

/// A periodic lattice whose side is a power of two (checked on construction).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "RawLattice", into = "RawLattice")]
pub struct Lattice {
    l: usize,
    d: usize,
}

#[derive(Serialize, Deserialize)]
struct RawLattice {
    #[serde(rename = "L")]
    l: usize,
    d: usize,
}

impl TryFrom<RawLattice> for Lattice {
    type Error = InputError;
    fn try_from(raw: RawLattice) -> Result<Self, Self::Error> {
        Lattice::new(raw.l, raw.d)
    }
}

impl From<Lattice> for RawLattice {
    fn from(lat: Lattice) -> Self {
        RawLattice { l: lat.l, d: lat.d }
    }
}

impl Default for Lattice {
    /// The 8x8 lattice (the programs' and the page's default).
    fn default() -> Self {
        Self { l: 8, d: 2 }
    }
}

/// `-L` and `-d` (clap ids `L` and `d`, the settings' names), checked together on parsing.
#[cfg(feature = "cli")]
impl clap::Args for Lattice {
    fn augment_args(cmd: clap::Command) -> clap::Command {
        let default = Lattice::default();
        cmd.arg(
            clap::Arg::new("L")
                .short('L')
                .value_name("L")
                .value_parser(clap::value_parser!(usize))
                .default_value(default.l.to_string())
                .help("Lattice side, a power of two >= 4"),
        )
        .arg(
            clap::Arg::new("d")
                .short('d')
                .value_name("D")
                .value_parser(clap::value_parser!(usize))
                .default_value(default.d.to_string())
                .help("Lattice dimension, 1 or 2"),
        )
    }

    fn augment_args_for_update(cmd: clap::Command) -> clap::Command {
        Self::augment_args(cmd)
    }
}

#[cfg(feature = "cli")]
impl clap::FromArgMatches for Lattice {
    fn from_arg_matches(m: &clap::ArgMatches) -> Result<Self, clap::Error> {
        let get = |id: &str| *m.get_one::<usize>(id).expect("the option has a default");
        Lattice::new(get("L"), get("d"))
            .map_err(|e| clap::Error::raw(clap::error::ErrorKind::ValueValidation, e))
    }

    fn update_from_arg_matches(&mut self, m: &clap::ArgMatches) -> Result<(), clap::Error> {
        *self = Self::from_arg_matches(m)?;
        Ok(())
    }
}

impl Lattice {
    /// A lattice of side `l` in `d` dimensions; `l` must be a power of two `>= 4`, `d` 1 or 2.
    pub fn new(l: usize, d: usize) -> Result<Self, InputError> {
        if !(d == 1 || d == 2) {
            return Err(InputError::Dimension(d));
        }
        if l < 4 || !l.is_power_of_two() {
            return Err(InputError::Side(l));
        }
        if l.checked_pow(d as u32).is_none_or(|n| n > MAX_SITES) {
            return Err(InputError::TooLarge(l, d));
        }
        Ok(Self { l, d })
    }

    /// Side length `L`.
    pub fn side(&self) -> usize {
        self.l
    }

    /// Dimension `d`.
    pub fn dim(&self) -> usize {
        self.d
    }

    /// Number of sites `N = L^d`.
    pub fn sites(&self) -> usize {
        self.l.pow(self.d as u32)
    }

    /// Number of MERA levels, `log2 L`.
    pub fn depth(&self) -> usize {
        self.l.trailing_zeros() as usize
    }

    /// Number of nearest-neighbour bonds (`d * N` on a periodic lattice with `L >= 4`).
    pub fn bonds(&self) -> usize {
        self.d * self.sites()
    }

    /// Coordinates `(row, col)` of site `i` (`row = 0` in 1D).
    pub fn coords(&self, i: usize) -> (usize, usize) {
        if self.d == 1 {
            (0, i)
        } else {
            (i / self.l, i % self.l)
        }
    }

    /// Site index of `(row, col)`, both taken modulo `L` (`row` ignored in 1D).
    pub fn index(&self, row: usize, col: usize) -> usize {
        let (r, c) = (row % self.l, col % self.l);
        if self.d == 1 { c } else { r * self.l + c }
    }

    /// Each bond `(i, j)` once: the right neighbour and, in 2D, the lower neighbour of every site.
    pub fn bond_list(&self) -> Vec<(usize, usize)> {
        let mut bonds = Vec::with_capacity(self.bonds());
        for i in 0..self.sites() {
            let (r, c) = self.coords(i);
            bonds.push((i, self.index(r, c + 1)));
            if self.d == 2 {
                bonds.push((i, self.index(r + 1, c)));
            }
        }
        bonds
    }

    /// The dense 0/1 adjacency matrix `A`, row-major `N x N` (for tests and small lattices).
    pub fn adjacency(&self) -> Vec<f64> {
        let n = self.sites();
        let mut a = vec![0.0; n * n];
        for (i, j) in self.bond_list() {
            a[i * n + j] = 1.0;
            a[j * n + i] = 1.0;
        }
        a
    }

    /// RG level of a latent site: the 2-adic valuation `min(v2(row), v2(col))` of its
    /// coordinates (with `v2(0) = log2 L`), capped at the top level `log2 L - 1`, whose four
    /// sites are all final outputs of the last level.
    pub fn rg_level(&self, i: usize) -> usize {
        let (r, c) = self.coords(i);
        let v2 = |x: usize| {
            if x == 0 {
                self.depth()
            } else {
                x.trailing_zeros() as usize
            }
        };
        let v = if self.d == 1 { v2(c) } else { v2(r).min(v2(c)) };
        v.min(self.depth() - 1)
    }
}

/// Checks a temperature: finite and positive.
pub fn check_temperature(t: f64) -> Result<f64, InputError> {
    if t.is_finite() && t > 0.0 {
        Ok(t)
    } else {
        Err(InputError::Temperature(t))
    }
}

/// The critical temperature of the 2D Ising model, `2 / ln(1 + sqrt 2)`.
pub const T_C: f64 = 2.269_185_314_213_022;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rejects_bad_sides_and_dimensions() {
        for l in [0, 1, 2, 3, 6, 12] {
            assert_eq!(Lattice::new(l, 2), Err(InputError::Side(l)));
        }
        assert_eq!(Lattice::new(8, 3), Err(InputError::Dimension(3)));
        assert!(check_temperature(0.0).is_err());
        assert!(check_temperature(-1.0).is_err());
        assert!(check_temperature(f64::NAN).is_err());
    }

    #[test]
    fn adjacency_is_periodic_and_regular() {
        for lat in [Lattice::new(4, 2).unwrap(), Lattice::new(8, 1).unwrap()] {
            let n = lat.sites();
            let a = lat.adjacency();
            for i in 0..n {
                let deg: f64 = (0..n).map(|j| a[i * n + j]).sum();
                assert_eq!(deg, 2.0 * lat.dim() as f64);
            }
        }
        assert!((T_C - 2.0 / (1.0 + 2f64.sqrt()).ln()).abs() < 1e-15);
    }

    #[test]
    fn rg_levels_are_two_adic_valuations() {
        let lat = Lattice::new(8, 2).unwrap();
        assert_eq!(lat.rg_level(lat.index(1, 3)), 0);
        assert_eq!(lat.rg_level(lat.index(2, 4)), 1);
        assert_eq!(lat.rg_level(lat.index(4, 0)), 2);
        assert_eq!(lat.rg_level(lat.index(0, 0)), 2);
    }
}
