//! One training session in the page: a [`Trainer`] on the chosen backend and the measurements
//! the panels show. Everything here calls the `neuralrg` library; nothing is re-implemented.

use std::future::Future;
use std::pin::Pin;

use neuralrg::analysis::{self, LookConfig, ReceptiveField, RgPicture};
use neuralrg::folder::{self, ModelFiles};
use neuralrg::fused::FlowAutodiff;
use neuralrg::ising::Target;
use neuralrg::observables;
use neuralrg::sample;
use neuralrg::train::{Diverged, EpochStats, TrainConfig, Trainer};
use rand::SeedableRng;
use rand::rngs::StdRng;
use rand_distr::{Distribution, StandardNormal};

/// A boxed future that may borrow the session (the browser is single-threaded: no `Send`).
pub type LocalFuture<'a, T> = Pin<Box<dyn Future<Output = T> + 'a>>;

/// Configurations shown in the sample grid.
pub const SHOWN_SAMPLES: usize = 16;

/// What one measurement of the current flow shows.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Measurement {
    /// Epochs trained when it was taken.
    pub epoch: usize,
    /// [`SHOWN_SAMPLES`] spin configurations drawn from the flow (signs of fields sampled from
    /// the flow, then spins drawn given the fields), row-major.
    pub spins: Vec<f64>,
    /// Acceptance rate of independent Metropolis-Hastings with the flow as proposal.
    pub acceptance: f64,
    /// Kish effective sample size of the importance weights, as a fraction of the samples.
    pub ess: f64,
    /// Energy per site from the Metropolis-Hastings chain: mean, standard error.
    pub energy: (f64, f64),
    /// `<m^2>` per site from the chain: mean, standard error.
    pub m2: (f64, f64),
    /// The first sample at every scale of the hierarchy.
    pub rg: RgPicture,
}

/// A training session on some backend (the trait object hides which).
pub trait Lab {
    /// The configuration being trained.
    fn config(&self) -> &TrainConfig;
    /// Epochs done.
    fn epoch(&self) -> usize;
    /// One Adam step.
    fn step(&mut self) -> LocalFuture<'_, Result<EpochStats, Diverged>>;
    /// Draws `samples` configurations: sample grid, acceptance, ESS, energy and `m^2`.
    fn measure(&mut self, samples: usize) -> LocalFuture<'_, Measurement>;
    /// The receptive field `dx/dz_site`, averaged over a few latent samples
    /// ([`LookConfig::quick`]).
    fn receptive_field(&mut self, site: usize) -> LocalFuture<'_, ReceptiveField>;
    /// Gaussian mutual-information matrices `(latent z, physical x)` from the final states of
    /// independent Metropolis-Hastings chains ([`LookConfig::quick`]).
    fn mutual_information(&mut self) -> LocalFuture<'_, (Vec<f64>, Vec<f64>)>;
    /// The session as a checkpoint (a run folder's `savings/epoch-NNNNNN.ckpt`).
    fn checkpoint(&self) -> LocalFuture<'_, Result<Vec<u8>, String>>;
    /// `log q` of the flow at the [`analysis::probes`].
    fn log_q_probes(&self) -> LocalFuture<'_, Vec<f64>>;
    /// Burn's name of the backend, as `parameters.json` records it.
    fn backend_name(&self) -> String;
}

struct Session<B: FlowAutodiff> {
    trainer: Trainer<B>,
    target: Target<B::InnerBackend>,
    /// Randomness of the measurements (training draws its own stream per epoch).
    rng: StdRng,
}

/// A new session for `config` on backend `B`.
pub fn new_lab<B: FlowAutodiff>(
    config: TrainConfig,
    device: &B::Device,
) -> Result<Box<dyn Lab>, String> {
    let trainer = Trainer::<B>::new(config, device).map_err(|e| e.to_string())?;
    Ok(session(trainer, device))
}

fn session<B: FlowAutodiff>(trainer: Trainer<B>, device: &B::Device) -> Box<dyn Lab> {
    let target = Target::new(trainer.config.relaxation(), device);
    let rng = StdRng::seed_from_u64(trainer.config.seed ^ 0x00AB_5EED);
    Box::new(Session {
        trainer,
        target,
        rng,
    })
}

/// A model opened in the page: its session, at the epoch of its checkpoint.
pub struct Opened {
    pub lab: Box<dyn Lab>,
    /// The checkpoint loaded.
    pub checkpoint: String,
    /// Damaged checkpoints passed over for it, with why.
    pub skipped: Vec<(String, String)>,
}

/// A session on backend `B` from the newest good checkpoint of `files`.
pub fn open_lab<B: FlowAutodiff>(files: &ModelFiles, device: &B::Device) -> Result<Opened, String> {
    let newest_first = files
        .checkpoints
        .iter()
        .map(|(name, _, bytes)| (name.clone(), Ok::<_, String>(bytes.as_slice())));
    let mut l = folder::newest_good::<B, String, _>(&files.config, newest_first, device)
        .map_err(|why| why.message("the files given"))?;
    // The page trains without an end: a cosine schedule (the default recipe's) trains on at its
    // rate after the warm-up, rather than at 0 past the epoch its run was planned to end at.
    l.trainer.config.optimizer.schedule.epochs = None;
    Ok(Opened {
        lab: session(l.trainer, device),
        checkpoint: l.name,
        skipped: l.skipped,
    })
}

impl<B: FlowAutodiff> Lab for Session<B> {
    fn config(&self) -> &TrainConfig {
        &self.trainer.config
    }

    fn epoch(&self) -> usize {
        self.trainer.epoch
    }

    fn step(&mut self) -> LocalFuture<'_, Result<EpochStats, Diverged>> {
        Box::pin(self.trainer.step())
    }

    fn measure(&mut self, samples: usize) -> LocalFuture<'_, Measurement> {
        Box::pin(async move {
            let config = &self.trainer.config;
            let (lattice, n) = (config.mera.lattice, config.mera.lattice.sites());
            let flow = self.trainer.flow_valid();
            let rng = &mut self.rng;
            let batch = config.optimizer.batch.min(samples);
            let d = sample::direct(&flow, &self.target, rng, samples, batch).await;
            let rg = analysis::rg_picture(&flow, &config.mera, &d.x[..n]).await;
            let ess = sample::ess_fraction(&d.log_w);
            let shown = SHOWN_SAMPLES.min(samples) * n;
            let spins = observables::spins_from_fields(&d.x[..shown], rng);
            let chain = sample::metropolis_chain(d, n, rng);
            let obs = observables::measure(lattice, config.t, &chain.x, rng);
            Measurement {
                epoch: self.trainer.epoch,
                spins,
                acceptance: chain.acceptance,
                ess,
                energy: (obs.energy_per_site.mean, obs.energy_per_site.stderr),
                m2: (obs.m2.mean, obs.m2.stderr),
                rg,
            }
        })
    }

    fn receptive_field(&mut self, site: usize) -> LocalFuture<'_, ReceptiveField> {
        Box::pin(async move {
            let config = &self.trainer.config;
            let n = config.mera.lattice.sites();
            let z: Vec<f64> = (0..LookConfig::quick().jacobian_samples * n)
                .map(|_| StandardNormal.sample(&mut self.rng))
                .collect();
            analysis::receptive_fields(self.trainer.flow(), config.mera.lattice, &z, &[site])
                .await
                .remove(0)
        })
    }

    fn mutual_information(&mut self) -> LocalFuture<'_, (Vec<f64>, Vec<f64>)> {
        Box::pin(async move {
            let n = self.trainer.config.mera.lattice.sites();
            let flow = self.trainer.flow_valid();
            let look = LookConfig::quick();
            let mh = sample::metropolis_parallel(
                &flow,
                &self.target,
                &mut self.rng,
                look.samples,
                look.mh_steps,
                512,
            )
            .await;
            let z = analysis::latents(&flow, &mh.x).await;
            (
                analysis::mi_gaussian(&z, n),
                analysis::mi_gaussian(&mh.x, n),
            )
        })
    }

    fn checkpoint(&self) -> LocalFuture<'_, Result<Vec<u8>, String>> {
        Box::pin(async move {
            self.trainer
                .to_checkpoint_async()
                .await
                .map_err(|e| e.to_string())
        })
    }

    fn log_q_probes(&self) -> LocalFuture<'_, Vec<f64>> {
        Box::pin(async move {
            let lattice = self.trainer.config.mera.lattice;
            analysis::log_q_probes(&self.trainer.flow_valid(), lattice).await
        })
    }

    fn backend_name(&self) -> String {
        B::name(&self.trainer.flow().mera.device())
    }
}
