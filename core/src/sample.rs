//! Sampling with the flow (spec section 4): direct samples with importance weights, and the
//! independent Metropolis-Hastings chain that makes them exact samples of the target.

use crate::fused::{FlowAutodiff, FlowBackend};
use burn::module::AutodiffModule;
use burn::tensor::{Tensor, TensorData};
use rand::RngExt;
use rand::rngs::StdRng;

use crate::flow::Flow;
use crate::hmc::{Chains, HmcConfig, Space, Start};
use crate::host::read;
use crate::ising::{HeatBath, Target};
use crate::stats::log_mean_exp;

/// How configurations are drawn.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[cfg_attr(feature = "cli", derive(clap::ValueEnum))]
pub enum Sampler {
    /// Independent samples of the flow (biased by q != p; importance weights reported).
    Direct,
    /// Independent Metropolis-Hastings with the flow as proposal (exact).
    #[default]
    Mh,
    /// Metropolis-Hastings alternating heat-bath sweeps of the field with the flow's
    /// independent proposals (exact; reaches what the flow under-proposes).
    MhLocal,
    /// The heat-bath sweeps of mh-local without the flow's proposals (exact; no flow needed:
    /// the baseline that shows what the proposals add).
    HeatBath,
    /// HMC on the latent variables z (exact).
    HmcLatent,
    /// HMC on the physical fields x (exact).
    HmcPhysical,
}

impl Sampler {
    /// Its name (`mh`, `hmc-latent`, ...), as the command line and the output files write it.
    pub fn name(self) -> &'static str {
        match self {
            Self::Direct => "direct",
            Self::Mh => "mh",
            Self::MhLocal => "mh-local",
            Self::HeatBath => "heat-bath",
            Self::HmcLatent => "hmc-latent",
            Self::HmcPhysical => "hmc-physical",
        }
    }

    /// Whether it runs HMC chains.
    pub fn is_hmc(self) -> bool {
        matches!(self, Self::HmcLatent | Self::HmcPhysical)
    }

    /// Whether it runs Markov chains laid end to end (`--mh-chains` of them), not HMC.
    pub fn is_chain(self) -> bool {
        matches!(self, Self::Mh | Self::MhLocal | Self::HeatBath)
    }

    /// Whether its chains make local heat-bath moves (`--sweeps` per step).
    pub fn is_local(self) -> bool {
        matches!(self, Self::MhLocal | Self::HeatBath)
    }
}

/// What to draw: the sampler and its settings (the `sample` command's options).
#[derive(Debug, Clone, Copy, PartialEq)]
#[cfg_attr(feature = "cli", derive(clap::Args))]
pub struct DrawConfig {
    /// Sampler.
    #[cfg_attr(feature = "cli", arg(long, value_enum, default_value_t = DrawConfig::default().sampler))]
    pub sampler: Sampler,
    /// Number of configurations.
    #[cfg_attr(feature = "cli", arg(short = 'n', long = "n", default_value_t = DrawConfig::default().n))]
    pub n: usize,
    /// Chains of mh, mh-local and heat-bath (n is split over them; the spread between them
    /// enters the errors, and split R-hat tells whether they agree).
    #[cfg_attr(feature = "cli", arg(long = "mh-chains", default_value_t = DrawConfig::default().mh_chains))]
    pub mh_chains: usize,
    /// Persistent HMC chains (n is split over them after --burn-in discarded measurements).
    #[cfg_attr(feature = "cli", arg(long, default_value_t = DrawConfig::default().chains))]
    pub chains: usize,
    /// Heat-bath sweeps of the field (spins given the field, then the field given the spins)
    /// per step of mh-local (before its flow proposal) and of heat-bath.
    #[cfg_attr(feature = "cli", arg(long, default_value_t = DrawConfig::default().sweeps))]
    pub sweeps: usize,
    /// Measurements discarded while the chains find the target: of HMC (10 trajectories each),
    /// and steps of mh-local and heat-bath.
    #[cfg_attr(feature = "cli", arg(long = "burn-in", default_value_t = DrawConfig::default().burn_in))]
    pub burn_in: usize,
    /// Where HMC chains start: prior (N(0, I) in either space, as the original) or flow
    /// (physical chains warm-started at flow samples).
    #[cfg_attr(feature = "cli", arg(long = "hmc-start", value_enum, default_value_t = DrawConfig::default().hmc_start))]
    pub hmc_start: Start,
    /// Flow samples drawn per batch.
    #[cfg_attr(feature = "cli", arg(long, default_value_t = DrawConfig::default().batch))]
    pub batch: usize,
}

impl Default for DrawConfig {
    fn default() -> Self {
        Self {
            sampler: Sampler::default(),
            n: 20_000,
            mh_chains: 8,
            sweeps: 1,
            chains: 64,
            burn_in: 10,
            hmc_start: Start::Prior,
            batch: 512,
        }
    }
}

impl DrawConfig {
    /// Checks the counts; the message names the value and what is allowed.
    pub fn validate(&self) -> Result<(), String> {
        for (name, v) in [
            ("n", self.n),
            ("chains", self.chains),
            ("mh-chains", self.mh_chains),
            ("batch", self.batch),
        ] {
            if v == 0 {
                return Err(format!("{name} = 0 is not allowed: an integer >= 1"));
            }
        }
        if self.sampler == Sampler::HeatBath && self.sweeps == 0 {
            return Err(
                "sweeps = 0 is not allowed with --sampler heat-bath: an integer >= 1 (its chains would never move)"
                    .into(),
            );
        }
        Ok(())
    }

    /// Steps kept per chain of mh-local and heat-bath: `n` split over `--mh-chains`.
    pub fn local_steps(&self) -> usize {
        (self.n / self.mh_chains).max(1)
    }

    /// Units of work of [`draw`] (flow samples, or HMC measurements), for a progress bar.
    pub fn work(&self) -> u64 {
        if self.sampler.is_hmc() {
            (self.n.div_ceil(self.chains) + self.burn_in) as u64
        } else if self.sampler.is_local() {
            (self.local_steps() + self.burn_in) as u64
        } else {
            self.n as u64
        }
    }
}

/// What a sampler returns: fields in measurement order and what it knows about itself.
#[derive(Debug, Clone)]
pub struct Drawn {
    /// Fields, row-major `[n, N]`: Metropolis-Hastings and HMC lay them out chain after chain,
    /// so that consecutive rows are one chain's time series.
    pub x: Vec<f64>,
    /// Acceptance (Metropolis-Hastings, HMC).
    pub acceptance: Option<f64>,
    /// Effective sample size fraction of the flow's proposals.
    pub ess: Option<f64>,
    /// Importance-sampling `ln Z_x` and its error.
    pub ln_z: Option<(f64, f64)>,
    /// Log-weights of the flow's proposals (empty for HMC).
    pub log_w: Vec<f64>,
}

/// Progress of [`draw`]: a new stage, and units of work done.
pub trait Progress {
    fn stage(&self, message: String);
    fn inc(&self, units: u64);
}

impl Progress for () {
    fn stage(&self, _: String) {}
    fn inc(&self, _: u64) {}
}

/// Draws `config.n` configurations of the target with the chosen sampler: flow samples (with
/// importance weights), independent Metropolis-Hastings chains through them, or persistent HMC
/// chains (latent or physical) after `burn_in` discarded measurements.
pub async fn draw<B: FlowAutodiff>(
    flow: &Flow<B>,
    target: &Target<B>,
    config: &DrawConfig,
    rng: &mut StdRng,
    progress: &impl Progress,
) -> Drawn {
    let n_sites = flow.mera.sites();
    let n = config.n;
    if !config.sampler.is_hmc() {
        let valid = flow.valid();
        let device = valid.mera.device();
        let valid_target = Target::<B::InnerBackend>::new(target.relaxation.clone(), &device);
        if config.sampler.is_local() {
            let steps = config.local_steps();
            let proposals = config.sampler == Sampler::MhLocal;
            let sweeps = match config.sweeps {
                1 => "1 heat-bath sweep".to_string(),
                k => format!("{k} heat-bath sweeps"),
            };
            let step = if proposals {
                format!("{sweeps} and a flow proposal")
            } else {
                sweeps
            };
            progress.stage(format!(
                "{} chains, {} burn-in and {steps} steps of {step}",
                config.mh_chains, config.burn_in
            ));
            let local = LocalMh {
                chains: config.mh_chains,
                steps,
                burn_in: config.burn_in,
                sweeps: config.sweeps,
                proposals,
                batch: config.batch,
            };
            let c = metropolis_local(&valid, &valid_target, rng, &local, progress).await;
            return Drawn {
                ess: proposals.then(|| ess_fraction(&c.proposal_log_w)),
                ln_z: proposals.then(|| importance_ln_z(&c.proposal_log_w)),
                log_w: c.proposal_log_w,
                x: c.x,
                acceptance: proposals.then_some(c.acceptance),
            };
        }
        // Flow proposals a few batches at a time (the same stream as one call), for the progress.
        progress.stage(format!("{n} flow samples"));
        let mut d = Direct {
            x: Vec::with_capacity(n * n_sites),
            log_w: Vec::with_capacity(n),
        };
        while d.log_w.len() < n {
            let k = (8 * config.batch).min(n - d.log_w.len());
            let part = direct(&valid, &valid_target, rng, k, config.batch).await;
            d.x.extend(part.x);
            d.log_w.extend(part.log_w);
            progress.inc(k as u64);
        }
        if config.sampler == Sampler::Direct {
            return Drawn {
                ess: Some(ess_fraction(&d.log_w)),
                ln_z: Some(importance_ln_z(&d.log_w)),
                log_w: d.log_w,
                x: d.x,
                acceptance: None,
            };
        }
        progress.stage(format!("{} Metropolis-Hastings chains", config.mh_chains));
        let c = metropolis_chains(d, n_sites, config.mh_chains, rng);
        return Drawn {
            ess: Some(ess_fraction(&c.proposal_log_w)),
            ln_z: Some(importance_ln_z(&c.proposal_log_w)),
            log_w: c.proposal_log_w,
            x: c.x,
            acceptance: Some(c.acceptance),
        };
    }
    let space = if config.sampler == Sampler::HmcLatent {
        Space::Latent
    } else {
        Space::Physical
    };
    let mut chains = Chains::<B>::new(space, config.hmc_start, flow, rng, config.chains);
    let measurements = n.div_ceil(config.chains);
    let (mut x, mut acc) = (
        Vec::with_capacity(measurements * config.chains * n_sites),
        0.0,
    );
    progress.stage(format!(
        "{} HMC chains, {} burn-in and {measurements} measurements",
        config.chains, config.burn_in
    ));
    for m in 0..measurements + config.burn_in {
        progress.inc(1);
        let (xs, a) = chains
            .measure(flow, target, rng, HmcConfig::default())
            .await;
        if m >= config.burn_in {
            x.extend(xs);
            acc += a / measurements as f64;
        }
    }
    // Chain after chain, so that consecutive rows are one chain's time series: the jackknife
    // blocks then span whole chains and their autocorrelation.
    let x = chain_major(&x, measurements, config.chains, n_sites);
    Drawn {
        x: x[..(n * n_sites).min(x.len())].to_vec(),
        acceptance: Some(acc),
        ess: None,
        ln_z: None,
        log_w: Vec::new(),
    }
}

/// Reorders states `[measurement][chain][site]` to `[chain][measurement][site]`.
fn chain_major(x: &[f64], measurements: usize, chains: usize, sites: usize) -> Vec<f64> {
    let mut out = Vec::with_capacity(x.len());
    for c in 0..chains {
        for m in 0..measurements {
            let at = (m * chains + c) * sites;
            out.extend_from_slice(&x[at..at + sites]);
        }
    }
    out
}

/// A batch of direct samples on the host: fields and their log-weights.
#[derive(Debug, Clone)]
pub struct Direct {
    /// Fields, row-major `[n, N]`.
    pub x: Vec<f64>,
    /// `log p~(x) - log q(x)` per sample.
    pub log_w: Vec<f64>,
}

/// Draws `n` samples from the flow in batches of `batch` (host copies).
pub async fn direct<B: FlowBackend>(
    flow: &Flow<B>,
    target: &Target<B>,
    rng: &mut StdRng,
    n: usize,
    batch: usize,
) -> Direct {
    let mut x = Vec::with_capacity(n * flow.mera.sites());
    let mut log_w = Vec::with_capacity(n);
    while log_w.len() < n {
        let b = batch.min(n - log_w.len());
        let s = flow.sample(rng, b);
        let lw = target.log_prob(s.x.clone()) - s.log_q;
        x.extend(read(s.x).await);
        log_w.extend(read(lw).await);
    }
    Direct { x, log_w }
}

/// Kish effective sample size of importance weights given as logs, as a fraction of their
/// number: `(sum w)^2 / (n sum w^2)`.
pub fn ess_fraction(log_w: &[f64]) -> f64 {
    (2.0 * log_mean_exp(log_w) - log_mean_exp(&log_w.iter().map(|w| 2.0 * w).collect::<Vec<_>>()))
        .exp()
}

/// The Metropolis-Hastings test: accept a move whose log acceptance ratio is `log_ratio` with
/// probability `min(1, exp(log_ratio))` (a uniform is drawn only when it is below 1).
fn accept(log_ratio: f64, rng: &mut StdRng) -> bool {
    log_ratio >= 0.0 || rng.random::<f64>() < log_ratio.exp()
}

/// A chain of the independent Metropolis-Hastings sampler.
#[derive(Debug, Clone)]
pub struct MhChain {
    /// The chain's states, row-major `[n, N]` (a rejected proposal repeats the state).
    pub x: Vec<f64>,
    /// Accepted proposals over all proposals.
    pub acceptance: f64,
    /// Log-weights of all proposals (for the effective sample size).
    pub proposal_log_w: Vec<f64>,
}

/// Independent Metropolis-Hastings with the flow as proposal: a proposal `x'` replaces the
/// state `x` with probability `min(1, w(x') / w(x))`, `w = p~ / q`. The first proposal starts
/// the chain. Proposals are drawn `batch` at a time.
pub async fn metropolis<B: FlowBackend>(
    flow: &Flow<B>,
    target: &Target<B>,
    rng: &mut StdRng,
    n: usize,
    batch: usize,
) -> MhChain {
    let d = direct(flow, target, rng, n, batch).await;
    metropolis_chain(d, flow.mera.sites(), rng)
}

/// The independent Metropolis-Hastings chain through proposals already drawn (in order): the
/// host half of [`metropolis`], for callers that draw with [`direct`].
pub fn metropolis_chain(d: Direct, sites: usize, rng: &mut StdRng) -> MhChain {
    metropolis_chains(d, sites, 1, rng)
}

/// Independent Metropolis-Hastings as `chains` independent chains, each through its own
/// consecutive share of the proposals and starting at its first one; the states are laid end to
/// end, chain after chain (each `n / chains` long; the remainder of the proposals is unused).
/// The acceptance is the mean of the chains'.
pub fn metropolis_chains(d: Direct, sites: usize, chains: usize, rng: &mut StdRng) -> MhChain {
    let chains = chains.clamp(1, d.log_w.len().max(1));
    let len = d.log_w.len() / chains;
    let mut x = Vec::with_capacity(len * chains * sites);
    let mut acceptance = 0.0;
    for first in (0..chains).map(|c| c * len) {
        let (mut current, mut accepted) = (first, 0usize);
        for j in first..first + len {
            if j > first {
                let log_ratio = d.log_w[j] - d.log_w[current];
                if accept(log_ratio, rng) {
                    current = j;
                    accepted += 1;
                }
            }
            x.extend_from_slice(&d.x[current * sites..(current + 1) * sites]);
        }
        let rate = if len > 1 {
            accepted as f64 / (len - 1) as f64
        } else {
            1.0
        };
        acceptance += rate / chains as f64;
    }
    MhChain {
        x,
        acceptance,
        proposal_log_w: d.log_w,
    }
}

/// The settings of [`metropolis_local`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LocalMh {
    /// Chains, run side by side (one batch of flow proposals per step).
    pub chains: usize,
    /// Steps kept per chain (one measurement each).
    pub steps: usize,
    /// Steps discarded first.
    pub burn_in: usize,
    /// Heat-bath sweeps before each flow proposal.
    pub sweeps: usize,
    /// Whether a step ends with a flow proposal (false: the heat bath alone).
    pub proposals: bool,
    /// Flow samples per batch.
    pub batch: usize,
}

/// Metropolis-Hastings chains that alternate `sweeps` sweeps of the exact heat bath
/// ([`HeatBath`]) with one independent proposal `x'` of the flow, accepted with
/// `min(1, w(x') / w(x))`, `w = p~/q`. Each half leaves the target invariant. Where the flow is
/// good its proposals decorrelate a chain in one step; where it under-proposes (a state of large
/// weight, at which independent Metropolis-Hastings sticks) the local sweeps move the chain on.
/// Chains start at flow proposals and run side by side; after `burn_in` steps their states are
/// laid out chain after chain, `steps` each. The acceptance is that of the flow's proposals;
/// `proposal_log_w` holds all of them. Without `proposals` the chains are the heat bath alone
/// (started at flow samples; no log-weights).
pub async fn metropolis_local<B: FlowBackend>(
    flow: &Flow<B>,
    target: &Target<B>,
    rng: &mut StdRng,
    s: &LocalMh,
    progress: &impl Progress,
) -> MhChain {
    let sites = flow.mera.sites();
    let chains = s.chains.max(1);
    let device = flow.mera.device();
    let bath = HeatBath::new(&target.relaxation);
    let first = direct(flow, target, rng, chains, s.batch).await;
    let (mut x, mut log_w) = (first.x, first.log_w);
    let mut proposal_log_w = if s.proposals {
        log_w.clone()
    } else {
        Vec::new()
    };
    let mut states = vec![0.0; chains * s.steps * sites];
    let (mut accepted, mut proposed) = (0usize, 0usize);
    for step in 0..s.burn_in + s.steps {
        for state in x.chunks_mut(sites) {
            for _ in 0..s.sweeps {
                bath.sweep(state, rng);
            }
        }
        if s.proposals {
            if s.sweeps > 0 {
                log_w.clear();
                for part in x.chunks(s.batch * sites) {
                    let rows = part.len() / sites;
                    let xt =
                        Tensor::from_data(TensorData::new(part.to_vec(), [rows, sites]), &device);
                    let lw = target.log_prob(xt.clone()) - flow.log_prob(xt);
                    log_w.extend(read(lw).await);
                }
            }
            let p = direct(flow, target, rng, chains, s.batch).await;
            let current = x.chunks_mut(sites).zip(log_w.iter_mut());
            for ((state, lw), (new, new_lw)) in current.zip(p.x.chunks(sites).zip(&p.log_w)) {
                let log_ratio = new_lw - *lw;
                if accept(log_ratio, rng) {
                    state.copy_from_slice(new);
                    *lw = *new_lw;
                    accepted += 1;
                }
            }
            proposed += chains;
            proposal_log_w.extend(p.log_w);
        }
        if let Some(t) = step.checked_sub(s.burn_in) {
            for c in 0..chains {
                let at = (c * s.steps + t) * sites;
                states[at..at + sites].copy_from_slice(&x[c * sites..(c + 1) * sites]);
            }
        }
        progress.inc(1);
    }
    MhChain {
        x: states,
        acceptance: accepted as f64 / proposed.max(1) as f64,
        proposal_log_w,
    }
}

/// Whether Metropolis-Hastings chains can be trusted, from two symptoms of a flow whose
/// importance weights have a heavy tail: chains that disagree (one stuck at a rare state of
/// large weight), and proposals that have not yet reached part of the target's probability mass
/// (the importance estimate of `ln Z_x` falls short of the exact value).
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct Convergence {
    /// The largest split R-hat of the per-sample energy and `m^2` (Rao-Blackwell) over the chains.
    pub rhat: f64,
    /// `1 - Z_est / Z_exact`: the share of the target's mass the proposals missed (negative: an
    /// overestimate, within noise; NaN without proposals).
    pub missing_mass: f64,
    /// `(ln Z_exact - ln Z_est) / stderr`.
    pub missing_sigma: f64,
    /// Whether the chains make local moves (mh-local): then mass the proposals have not reached
    /// is reached by the moves, and only disagreeing chains are a symptom.
    pub local: bool,
}

impl Convergence {
    /// R-hat above this: the chains disagree.
    pub const RHAT_LIMIT: f64 = 1.05;
    /// A shortfall of `ln Z` beyond this many standard errors: mass not reached.
    pub const MISSING_SIGMA_LIMIT: f64 = 3.0;

    /// Judges `chains` chains laid end to end with per-sample `energy` and `m2` series, from
    /// proposals with log-weights `log_w`, against the exact `ln_z_exact`; `local`: the chains
    /// make local moves between proposals.
    pub fn judge(
        energy: &[f64],
        m2: &[f64],
        chains: usize,
        log_w: &[f64],
        ln_z_exact: f64,
        local: bool,
    ) -> Self {
        let rhat =
            crate::stats::split_rhat(energy, chains).max(crate::stats::split_rhat(m2, chains));
        let (missing_mass, missing_sigma) = if log_w.is_empty() {
            (f64::NAN, f64::NAN)
        } else {
            let (ln_z, err) = importance_ln_z(log_w);
            (
                1.0 - (ln_z - ln_z_exact).exp(),
                (ln_z_exact - ln_z) / err.max(1e-300),
            )
        };
        Self {
            rhat,
            missing_mass,
            missing_sigma,
            local,
        }
    }

    /// Why the chains cannot be trusted (empty: no symptom found), and what to do.
    pub fn warnings(&self) -> Vec<String> {
        let mut w = Vec::new();
        if self.rhat.is_nan() || self.rhat > Self::RHAT_LIMIT {
            let why = if self.local {
                "the chains have not mixed yet (longer chains, -n, or more --sweeps)"
            } else {
                "one is stuck at a rare state the flow under-proposes"
            };
            w.push(format!(
                "the chains disagree (split R-hat {:.3} > {}): {why}",
                self.rhat,
                Self::RHAT_LIMIT
            ));
        }
        if !self.local && self.missing_sigma > Self::MISSING_SIGMA_LIMIT {
            w.push(format!(
                "the proposals have not reached about {:.1}% of the target's probability mass (ln Z_x short of the exact value by {:.1} standard errors)",
                100.0 * self.missing_mass,
                self.missing_sigma
            ));
        }
        w
    }
}

/// What to do when [`Convergence::warnings`] is not empty.
pub const NOT_CONVERGED_ADVICE: &str = "the estimates may be off by more than their errors: train the flow longer, draw more samples (-n), or use --sampler mh-local or hmc-latent";

/// Many independent Metropolis-Hastings chains run side by side, `steps` proposals each; their
/// final states are independent samples of the target up to a bias that decays geometrically
/// with `steps`, and, unlike the states of one chain, they never repeat (which k-nearest-
/// neighbour estimators need).
#[derive(Debug, Clone)]
pub struct ParallelMh {
    /// Final states, row-major `[chains, N]`.
    pub x: Vec<f64>,
    /// Accepted proposals over all proposals after the first of each chain.
    pub acceptance: f64,
    /// Chains that never moved from their first proposal.
    pub stuck: usize,
}

/// Runs `chains` independent Metropolis-Hastings chains of `steps` proposals each (proposals
/// drawn `batch` at a time).
pub async fn metropolis_parallel<B: FlowBackend>(
    flow: &Flow<B>,
    target: &Target<B>,
    rng: &mut StdRng,
    chains: usize,
    steps: usize,
    batch: usize,
) -> ParallelMh {
    let sites = flow.mera.sites();
    let first = direct(flow, target, rng, chains, batch).await;
    let (mut x, mut log_w) = (first.x, first.log_w);
    let mut moved = vec![false; chains];
    let mut accepted = 0usize;
    for _ in 1..steps.max(1) {
        let p = direct(flow, target, rng, chains, batch).await;
        for c in 0..chains {
            let log_ratio = p.log_w[c] - log_w[c];
            if accept(log_ratio, rng) {
                x[c * sites..(c + 1) * sites].copy_from_slice(&p.x[c * sites..(c + 1) * sites]);
                log_w[c] = p.log_w[c];
                moved[c] = true;
                accepted += 1;
            }
        }
    }
    let proposals = chains * steps.max(1).saturating_sub(1);
    ParallelMh {
        x,
        acceptance: if proposals > 0 {
            accepted as f64 / proposals as f64
        } else {
            1.0
        },
        stuck: moved.iter().filter(|m| !**m).count(),
    }
}

/// Importance-sampling estimate of `ln Z_x = ln E_q[p~/q]` from log-weights, with its error
/// `sqrt((mean w^2 / (mean w)^2 - 1) / n)` (delta method), both computed in log space.
pub fn importance_ln_z(log_w: &[f64]) -> (f64, f64) {
    let n = log_w.len() as f64;
    let ln_z = log_mean_exp(log_w);
    let rel_var = (1.0 / ess_fraction(log_w) - 1.0).max(0.0);
    (ln_z, (rel_var / n).sqrt())
}

/// Writes a row-major `[rows, cols]` array as a NumPy `.npy` file (format version 1.0,
/// little-endian `<f4` for fields, `|i1` for spins): loadable with `numpy.load`.
pub fn npy_bytes(data: &[f64], rows: usize, cols: usize, as_spins: bool) -> Vec<u8> {
    let descr = if as_spins { "|i1" } else { "<f4" };
    let mut header =
        format!("{{'descr': '{descr}', 'fortran_order': False, 'shape': ({rows}, {cols}), }}");
    // Magic (6) + version (2) + length (2) + header, padded with spaces to a multiple of 64,
    // ending in a newline.
    let total = (10 + header.len() + 1).div_ceil(64) * 64;
    header.push_str(&" ".repeat(total - 10 - header.len() - 1));
    header.push('\n');
    let mut out = Vec::with_capacity(total + data.len() * 4);
    out.extend_from_slice(b"\x93NUMPY\x01\x00");
    out.extend_from_slice(&(header.len() as u16).to_le_bytes());
    out.extend_from_slice(header.as_bytes());
    for &v in data {
        if as_spins {
            out.push(if v > 0.0 { 1u8 } else { 0xFFu8 });
        } else {
            out.extend_from_slice(&(v as f32).to_le_bytes());
        }
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn chain_major_puts_each_chain_s_states_together() {
        // Two measurements of three chains, one site: m0c0 m0c1 m0c2 m1c0 m1c1 m1c2.
        let x = [0.0, 1.0, 2.0, 3.0, 4.0, 5.0];
        assert_eq!(
            super::chain_major(&x, 2, 3, 1),
            [0.0, 3.0, 1.0, 4.0, 2.0, 5.0]
        );
    }
}
