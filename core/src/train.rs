//! Training by minimizing the variational free energy (spec section 3).
//!
//! Per sample `f(x) = log q(x) - log p~(x)` with `x = g(z)`, `z ~ N(0, I)`; the mean of `f` is
//! the variational free energy `F >= -ln Z_x` (units of `T`). Without symmetrization the loss
//! adds the Z2 penalty `alpha * (mean log q(x) - mean log q(-x))`. Adam with coupled L2 weight
//! decay; optional per-tensor gradient-norm clipping; a guard that refuses non-finite losses.

use burn::grad_clipping::GradientClippingConfig;
use burn::module::{AutodiffModule, list_param_ids};
use burn::optim::adaptor::OptimizerAdaptor;
use burn::optim::decay::WeightDecayConfig;
use burn::optim::{Adam, AdamConfig, GradientsParams, Optimizer};
use burn::tensor::{Tensor, TensorData};

use crate::fused::{FlowAutodiff, FlowBackend};
use rand::SeedableRng;
use rand::rngs::StdRng;
use serde::{Deserialize, Serialize};

use crate::flow::{Flow, logaddexp, normal_noise_rows};
use crate::ising::{Relaxation, Target};
use crate::lattice::{InputError, Lattice, check_temperature};
use crate::mera::{MeraConfig, splitmix64};
use crate::settings;
use crate::stats::mean_error;

/// Everything that determines a training run's result (stored in `parameters.json`): each
/// setting, its name, its documentation and its default ([`TrainConfig::default`], the paper's
/// configuration) are declared once, here or in the two groups nested in it (the network,
/// [`MeraConfig`], and the optimizer, [`OptimizerConfig`], both flattened: their settings sit
/// beside the others in every form). The `train` options (clap, with the `cli` feature), the
/// sweep files' `[train]` table, the browser app's URL query and `parameters.json` are all
/// this struct's forms; a setting's name is its serde name.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "cli", derive(clap::Args))]
pub struct TrainConfig {
    /// The network: lattice, MERA depth and the RealNVP blocks' shape.
    #[serde(flatten)]
    #[cfg_attr(feature = "cli", command(flatten))]
    pub mera: MeraConfig,
    /// Temperature (> 0); the default is T_c = 2.269185...
    #[serde(rename = "T")]
    #[cfg_attr(feature = "cli", arg(short = 'T', id = "T", default_value_t = TrainConfig::default().t))]
    pub t: f64,
    /// Z2-symmetrized flow, q(x) = (q(x) + q(-x)) / 2 (the default; --no-symmetry trains the
    /// plain flow with the Z2 penalty instead).
    #[cfg_attr(feature = "cli", arg(long = "no-symmetry", id = "symmetry", action = clap::ArgAction::SetFalse))]
    pub symmetry: bool,
    /// Weight of the Z2 penalty alpha * (<log q(x)> - <log q(-x)>) of the plain flow.
    #[cfg_attr(feature = "cli", arg(long, default_value_t = TrainConfig::default().alpha))]
    pub alpha: f64,
    /// The optimizer: batch, Adam's rate and weight decay, clipping, schedule.
    #[serde(flatten)]
    #[cfg_attr(feature = "cli", command(flatten))]
    pub optimizer: OptimizerConfig,
    /// Seed of the weights, masks and sample streams.
    #[cfg_attr(feature = "cli", arg(long, default_value_t = TrainConfig::default().seed))]
    pub seed: u64,
}

impl Default for TrainConfig {
    /// The paper's configuration: its network ([`MeraConfig::default`], 8x8) and optimizer
    /// ([`OptimizerConfig::default`]), symmetrized, at `T_c`, seed 1.
    fn default() -> Self {
        Self {
            mera: MeraConfig::default(),
            t: crate::lattice::T_C,
            symmetry: true,
            alpha: 1.0,
            optimizer: OptimizerConfig::default(),
            seed: 1,
        }
    }
}

/// The optimizer's settings of a [`TrainConfig`].
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "cli", derive(clap::Args))]
pub struct OptimizerConfig {
    /// Samples per epoch (one Adam step on a fresh batch each).
    #[cfg_attr(feature = "cli", arg(long, default_value_t = Recipe::default().optimizer().batch))]
    pub batch: usize,
    /// Adam learning rate.
    #[cfg_attr(feature = "cli", arg(long, default_value_t = Recipe::default().optimizer().lr))]
    pub lr: f64,
    /// Coupled L2 weight decay of Adam.
    #[cfg_attr(feature = "cli", arg(long = "weight-decay", id = "weight_decay", alias = "weightDecay", default_value_t = Recipe::default().optimizer().weight_decay))]
    pub weight_decay: f64,
    /// Clip each parameter tensor's gradient to this L2 norm [default: off].
    #[cfg_attr(feature = "cli", arg(long))]
    pub clip: Option<f64>,
    /// How the learning rate changes over the epochs (runs written before it existed trained
    /// with the paper's constant rate).
    #[serde(default)]
    #[cfg_attr(feature = "cli", command(flatten))]
    pub schedule: Schedule,
}

impl Default for OptimizerConfig {
    /// The paper's: batch 512, Adam lr 1e-3 with weight decay 1e-3, no clipping, constant rate.
    /// (The library's configurations start from the paper's; `train` and `sweep` start from
    /// [`Recipe::default`].)
    fn default() -> Self {
        Self {
            batch: 512,
            lr: 1e-3,
            weight_decay: 1e-3,
            clip: None,
            schedule: Schedule::default(),
        }
    }
}

/// A training recipe: the optimizer settings a new run takes unless it sets them, and whether a
/// sweep warm-starts its temperatures. The run's length is not part of it: the paper's samples
/// (5000 epochs of 512) are 20000 epochs in neuralrg's batches of 128.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
#[cfg_attr(feature = "cli", derive(clap::ValueEnum))]
pub enum Recipe {
    /// neuralrg's: batches of 128, Adam lr 2e-3 without weight decay, warmed up over the first
    /// 4 % of the epochs and decayed to 0 by a cosine; a sweep warm-starts each temperature
    /// from the nearest one listed before it.
    #[default]
    Neuralrg,
    /// The paper's: batches of 512, Adam lr 1e-3 with weight decay 1e-3 at a constant rate;
    /// every run of a sweep starts from the seeded initialization.
    Paper,
}

impl Recipe {
    /// The recipe's optimizer.
    pub fn optimizer(self) -> OptimizerConfig {
        match self {
            Self::Neuralrg => OptimizerConfig {
                batch: 128,
                lr: 2e-3,
                weight_decay: 0.0,
                clip: None,
                schedule: Schedule {
                    kind: ScheduleKind::Cosine,
                    warmup: None,
                    epochs: None,
                },
            },
            Self::Paper => OptimizerConfig::default(),
        }
    }

    /// Whether a sweep warm-starts each temperature's runs from a finished neighbour's.
    pub fn warm_starts(self) -> bool {
        self == Self::Neuralrg
    }
}

impl std::fmt::Display for Recipe {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Neuralrg => "neuralrg",
            Self::Paper => "paper",
        })
    }
}

/// The learning rate over the epochs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(from = "ScheduleFields")]
#[cfg_attr(feature = "cli", derive(clap::Args))]
pub struct Schedule {
    /// Learning-rate schedule: constant (the paper's) or cosine (a linear warm-up over --warmup
    /// epochs, then a cosine decay to 0 at the run's last epoch, so that the noise of the last
    /// steps dies out and the flow settles at the bottom of the loss it reached).
    #[cfg_attr(feature = "cli", arg(long = "schedule", id = "schedule", value_enum, default_value_t = Recipe::default().optimizer().schedule.kind))]
    pub kind: ScheduleKind,
    /// Warm-up epochs of the cosine schedule [default: 4 % of the epochs].
    #[serde(default)]
    #[cfg_attr(feature = "cli", arg(long))]
    pub warmup: Option<usize>,
    /// The epoch at which the cosine reaches 0: set to the run's last epoch when a run starts
    /// ([`TrainConfig::for_run`]); without it the rate stays at `lr` after the warm-up.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "cli", arg(skip))]
    pub epochs: Option<usize>,
}

/// [`Schedule`] as written: a constant rate has no warm-up or end (runs written before the
/// warm-up became optional stored one), so that two constant schedules are one.
#[derive(Deserialize)]
struct ScheduleFields {
    kind: ScheduleKind,
    #[serde(default)]
    warmup: Option<usize>,
    #[serde(default)]
    epochs: Option<usize>,
}

impl From<ScheduleFields> for Schedule {
    fn from(f: ScheduleFields) -> Self {
        match f.kind {
            ScheduleKind::Constant => Self::default(),
            ScheduleKind::Cosine => Self {
                kind: f.kind,
                warmup: f.warmup,
                epochs: f.epochs,
            },
        }
    }
}

/// The kinds of [`Schedule`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
#[cfg_attr(feature = "cli", derive(clap::ValueEnum))]
pub enum ScheduleKind {
    /// `lr` at every epoch (the paper's recipe).
    Constant,
    /// Linear warm-up, then a cosine decay to 0.
    Cosine,
}

impl std::fmt::Display for ScheduleKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Constant => "constant",
            Self::Cosine => "cosine",
        })
    }
}

impl Default for Schedule {
    /// The paper's constant rate (also what a run written before schedules existed trained).
    fn default() -> Self {
        Self {
            kind: ScheduleKind::Constant,
            warmup: None,
            epochs: None,
        }
    }
}

/// The cosine schedule's warm-up when none is set: this fraction of the run's epochs.
pub const DEFAULT_WARMUP_FRACTION: f64 = 0.04;

impl Schedule {
    /// The paper's constant rate.
    pub fn constant() -> Self {
        Self::default()
    }

    /// A linear warm-up over the first `warmup` epochs, then a cosine decay to 0 at `epochs`.
    pub fn cosine(epochs: usize, warmup: usize) -> Self {
        Self {
            kind: ScheduleKind::Cosine,
            warmup: Some(warmup),
            epochs: Some(epochs),
        }
    }

    /// The warm-up epochs: the set ones, else [`DEFAULT_WARMUP_FRACTION`] of the run's epochs
    /// (none in a run of no set length).
    pub fn warmup(&self) -> usize {
        self.warmup.unwrap_or_else(|| {
            self.epochs
                .map_or(0, |e| (e as f64 * DEFAULT_WARMUP_FRACTION).round() as usize)
        })
    }

    /// The learning rate of epoch `epoch` (1-based) for the base rate `lr`.
    pub fn lr(&self, lr: f64, epoch: usize) -> f64 {
        if self.kind == ScheduleKind::Constant {
            return lr;
        }
        let warmup = self.warmup();
        if epoch <= warmup {
            return lr * epoch as f64 / warmup.max(1) as f64;
        }
        match self.epochs {
            None => lr,
            Some(epochs) if epoch >= epochs => 0.0,
            Some(epochs) => {
                let progress = (epoch - warmup) as f64 / (epochs - warmup).max(1) as f64;
                0.5 * lr * (1.0 + (std::f64::consts::PI * progress).cos())
            }
        }
    }
}

/// A configuration that cannot be trained, with the value and what is allowed.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ConfigError {
    #[error(transparent)]
    Input(#[from] InputError),
    #[error("{0}")]
    Setting(String),
    #[error("{name} = {value} is not allowed: {allowed}")]
    Value {
        name: &'static str,
        value: String,
        allowed: String,
    },
}

fn bad(name: &'static str, value: impl ToString, allowed: impl ToString) -> ConfigError {
    ConfigError::Value {
        name,
        value: value.to_string(),
        allowed: allowed.to_string(),
    }
}

/// One setting on which two configurations differ: its `parameters.json` name and both values.
#[derive(Debug, Clone, PartialEq)]
pub struct Difference {
    pub name: String,
    pub a: String,
    pub b: String,
}

impl Difference {
    /// `name = a (a_is) vs b (b_is)`, for messages.
    pub fn versus(&self, a_is: &str, b_is: &str) -> String {
        format!("{} = {} ({a_is}) vs {} ({b_is})", self.name, self.a, self.b)
    }
}

impl TrainConfig {
    /// Settings a resumed run may change (the optimizer's step size and clipping); every other
    /// one shapes the model, the target or the sample stream.
    pub const RESUMABLE: &'static [&'static str] = &["lr", "clip"];

    /// Settings a warm start may change (the target's temperature, the optimizer, the schedule
    /// and the seed of the sample stream); every other one shapes the network.
    pub const NOT_THE_NETWORK: &'static [&'static str] = &[
        "T",
        "alpha",
        "batch",
        "lr",
        "weight_decay",
        "clip",
        "schedule",
        "seed",
    ];

    /// The settings on which `self` (`a`) and `other` (`b`) differ, by their `parameters.json`
    /// names (sorted).
    pub fn differences(&self, other: &TrainConfig) -> Vec<Difference> {
        let (a, b) = (self.as_value(), other.as_value());
        let (serde_json::Value::Object(a), serde_json::Value::Object(b)) = (a, b) else {
            unreachable!("a configuration serializes to an object")
        };
        let show = |v: Option<&serde_json::Value>| match v {
            None | Some(serde_json::Value::Null) => "none".to_string(),
            Some(v) => v.to_string(),
        };
        let mut names: Vec<&String> = a.keys().collect();
        names.extend(b.keys().filter(|k| !a.contains_key(*k)));
        names
            .into_iter()
            .filter(|k| a.get(*k) != b.get(*k))
            .map(|k| Difference {
                name: k.clone(),
                a: show(a.get(k)),
                b: show(b.get(k)),
            })
            .collect()
    }

    /// The paper's configuration ([`TrainConfig::default`]) at side `l`, dimension `d`,
    /// temperature `t`.
    pub fn paper(l: usize, d: usize, t: f64) -> Result<Self, ConfigError> {
        let config = Self {
            mera: MeraConfig::paper(Lattice::new(l, d)?),
            t,
            ..Self::default()
        };
        config.validate()?;
        Ok(config)
    }

    /// The configuration as a run of `epochs` epochs stores it: the MERA depth written out, and
    /// a cosine schedule that names no end ending at the run's last epoch, its warm-up written
    /// out.
    pub fn for_run(mut self, epochs: usize) -> Self {
        self.mera.depth = Some(self.mera.depth());
        let schedule = &mut self.optimizer.schedule;
        if schedule.kind == ScheduleKind::Cosine {
            schedule.epochs.get_or_insert(epochs);
            schedule.warmup = Some(schedule.warmup());
        } else {
            *schedule = Schedule::default();
        }
        self
    }

    /// Checks every value; the message names the value and what is allowed.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let lat = Lattice::new(self.mera.lattice.side(), self.mera.lattice.dim())?;
        check_temperature(self.t)?;
        let max_depth = lat.depth();
        if let Some(depth) = self.mera.depth.filter(|d| !(1..=max_depth).contains(d)) {
            return Err(bad(
                "depthMERA",
                depth,
                format!("an integer from 1 to log2 L = {max_depth}"),
            ));
        }
        for (name, v) in [
            ("nrepeat", self.mera.nrepeat),
            ("nlayers", self.mera.nlayers),
            ("nmlp", self.mera.nmlp),
            ("nhidden", self.mera.nhidden),
            ("batch", self.optimizer.batch),
        ] {
            if v == 0 {
                return Err(bad(name, v, "an integer >= 1"));
            }
        }
        if !(self.optimizer.lr.is_finite() && self.optimizer.lr > 0.0) {
            return Err(bad("lr", self.optimizer.lr, "a finite number > 0"));
        }
        if !(self.alpha.is_finite() && self.alpha >= 0.0) {
            return Err(bad("alpha", self.alpha, "a finite number >= 0"));
        }
        if !(self.optimizer.weight_decay.is_finite() && self.optimizer.weight_decay >= 0.0) {
            return Err(bad(
                "weight-decay",
                self.optimizer.weight_decay,
                "a finite number >= 0",
            ));
        }
        if let Some(c) = self.optimizer.clip.filter(|c| !(c.is_finite() && *c > 0.0)) {
            return Err(bad("clip", c, "a finite number > 0"));
        }
        if let Some(epochs) = self.optimizer.schedule.epochs
            && self.optimizer.schedule.kind == ScheduleKind::Cosine
            && (epochs == 0 || self.optimizer.schedule.warmup() >= epochs)
        {
            return Err(bad(
                "schedule",
                format!(
                    "cosine over {epochs} epochs with {} warm-up epochs",
                    self.optimizer.schedule.warmup()
                ),
                "at least one epoch after the warm-up",
            ));
        }
        Ok(())
    }

    /// The configuration as a URL query (`L=8&d=2&T=2.269185314213022&nrepeat=1&...`): every
    /// setting by its name, a group's as `schedule.kind=cosine`, unset optional ones left out,
    /// floats in their shortest exact form (so [`TrainConfig::from_query`] gives back exactly
    /// this configuration). The browser app keeps its whole setup in the address this way.
    pub fn to_query(&self) -> String {
        settings::to_query(&self.as_value())
    }

    /// Reads [`TrainConfig::to_query`]'s form (a leading `?` is allowed): the given settings over
    /// [`TrainConfig::default`] (so a missing `depthMERA` is the full depth of the given `L`);
    /// keys that are no setting are ignored (see [`TrainConfig::unknown_in_query`]); a bad value
    /// is an error naming it.
    pub fn from_query(query: &str) -> Result<Self, ConfigError> {
        Self::default().overlaid(settings::query_object(query))
    }

    /// The keys of a query that are no setting of [`TrainConfig::from_query`].
    pub fn unknown_in_query(query: &str) -> Vec<String> {
        settings::unknown_keys(&settings::query_object(query), &Self::default().as_value())
    }

    /// This configuration with the settings of `given` (an object of settings by name, such as
    /// a query's or a settings file's table) laid over it, validated; a value of the wrong kind
    /// or out of range is an error naming it. Names that are no setting are not looked at (see
    /// [`settings::unknown_keys`]).
    pub fn overlaid(&self, given: serde_json::Value) -> Result<Self, ConfigError> {
        let mut value = self.as_value();
        if let Some(message) = settings::mistyped(&given, &value) {
            return Err(ConfigError::Setting(message));
        }
        let base = value.clone();
        settings::overlay(&mut value, given.clone());
        let config: Self = serde_json::from_value(value).map_err(|e| {
            // The setting that cannot be read, tried one by one (the lattice names its value).
            let culprit = settings::leaves(&given).into_iter().find_map(|(k, v)| {
                let mut one = base.clone();
                settings::overlay(&mut one, settings::at_path(&k, v.clone()));
                let e = serde_json::from_value::<Self>(one).err()?.to_string();
                Some(if e.contains(" is not allowed") {
                    e
                } else {
                    format!("{k} = {} is not allowed: {e}", settings::shown(&v))
                })
            });
            ConfigError::Setting(culprit.unwrap_or_else(|| e.to_string()))
        })?;
        config.validate()?;
        Ok(config)
    }

    /// The serde form (an object of settings by name).
    pub fn as_value(&self) -> serde_json::Value {
        serde_json::to_value(self).expect("configuration serializes")
    }

    /// The run's name from its settings (`L16_d2_T2.2692_depth4_nl10_nm3_nh10_nr1_sym`), the
    /// folder name under `runs/` when none is given.
    pub fn run_name(&self) -> String {
        format!(
            "L{}_d{}_T{:.4}_depth{}_nl{}_nm{}_nh{}_nr{}{}",
            self.mera.lattice.side(),
            self.mera.lattice.dim(),
            self.t,
            self.mera.depth(),
            self.mera.nlayers,
            self.mera.nmlp,
            self.mera.nhidden,
            self.mera.nrepeat,
            if self.symmetry { "_sym" } else { "" }
        )
    }

    /// The relaxation target's constants.
    pub fn relaxation(&self) -> Relaxation {
        Relaxation::new(self.mera.lattice, self.t).expect("validated temperature")
    }

    /// A fresh flow with weights from the seed.
    pub fn init_flow<B: burn::tensor::backend::Backend>(&self, device: &B::Device) -> Flow<B> {
        Flow {
            mera: self.mera.init(self.seed, device),
            symmetric: self.symmetry,
        }
    }

    /// The Adam optimizer of the spec.
    pub fn adam<B: FlowAutodiff>(&self) -> OptimizerAdaptor<Adam, Flow<B>, B> {
        AdamConfig::new()
            .with_epsilon(1e-8)
            .with_weight_decay(
                (self.optimizer.weight_decay > 0.0)
                    .then(|| WeightDecayConfig::new(self.optimizer.weight_decay as f32)),
            )
            .with_grad_clipping(
                self.optimizer
                    .clip
                    .map(|c| GradientClippingConfig::Norm(c as f32)),
            )
            .init()
    }

    /// The sample stream of epoch `epoch`: a function of the seed and the epoch only, so a
    /// resumed run draws exactly what an uninterrupted one would.
    pub fn epoch_rng(&self, epoch: usize) -> StdRng {
        StdRng::seed_from_u64(splitmix64(
            self.seed ^ splitmix64(0x5EED_0000 + epoch as u64),
        ))
    }
}

/// Statistics of one training step: a row of a run folder's `records/train.csv` (see
/// [`crate::records`]).
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
pub struct EpochStats {
    /// Epochs completed, this one included (1-based).
    pub epoch: usize,
    /// The optimized loss (F plus the Z2 penalty, if any).
    pub loss: f64,
    /// Variational free energy `F = mean f` of the batch (units of T).
    #[serde(rename = "F")]
    pub f: f64,
    /// Standard deviation of `f` over the batch.
    #[serde(rename = "F_std")]
    pub f_std: f64,
    /// Standard error of `F`.
    #[serde(rename = "F_stderr")]
    pub f_stderr: f64,
    /// `(F + ln Z_x) / ln Z_x`.
    pub relative_error: f64,
    /// Wall-clock seconds of the epoch, as its caller timed it (the trainer leaves 0: it cannot
    /// read a clock in a browser).
    pub seconds: f64,
}

/// Training stopped because the loss or a per-sample free energy was NaN or infinite.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error(
    "training diverged at epoch {epoch}: the loss is {loss} ({bad} of {batch} samples non-finite); lower --lr or set --clip"
)]
pub struct Diverged {
    pub epoch: usize,
    pub loss: f64,
    pub bad: usize,
    pub batch: usize,
}

/// The free energy per sample and the loss, without the optimizer: shared by training and
/// evaluation. Returns `(f [batch], loss [1])`.
pub fn free_energy<B: FlowBackend>(
    config: &TrainConfig,
    flow: &Flow<B>,
    target: &Target<B>,
    z: Tensor<B, 2>,
) -> (Tensor<B, 1>, Tensor<B, 1>) {
    let (x, lq_plain) = flow.generate(z);
    let lp = target.log_prob(x.clone());
    if config.symmetry {
        let (_, lq_flip) = flow.infer(x.neg());
        let lq = logaddexp(lq_plain, lq_flip).sub_scalar(std::f64::consts::LN_2);
        let f = lq - lp;
        (f.clone(), f.mean())
    } else if config.alpha > 0.0 {
        let (_, lq_flip) = flow.infer(x.neg());
        let f = lq_plain.clone() - lp;
        let penalty = (lq_plain.mean() - lq_flip.mean()).mul_scalar(config.alpha);
        (f.clone(), f.mean() + penalty)
    } else {
        let f = lq_plain - lp;
        (f.clone(), f.mean())
    }
}

/// The other trainers of a data-parallel group ([`crate::parallel`] on the native side): each
/// trainer of the group draws the same epoch stream and keeps its own rows of the batch; the
/// per-sample free energies, the loss and the gradients are summed over the group, so every
/// trainer takes the same Adam step, the one a single trainer takes on the whole batch.
pub trait Peers<B: FlowAutodiff> {
    /// This trainer's rows of an epoch's batch of `batch` samples.
    fn rows(&self, batch: usize) -> std::ops::Range<usize>;
    /// The element-wise sum of `t` over the group (every trainer calls it, in the same order).
    fn sum(&self, t: Tensor<B::InnerBackend, 1>) -> Tensor<B::InnerBackend, 1>;
    /// Whether this trainer's process was asked to stop (a signal); the group stops together.
    fn wants_stop(&self) -> bool;
}

/// The gradients summed over `peers`, in the module's parameter order (one all-reduce of all
/// of them, concatenated).
fn sum_gradients<B: FlowAutodiff>(
    peers: &dyn Peers<B>,
    flow: &Flow<B>,
    mut grads: GradientsParams,
) -> GradientsParams {
    let ids: Vec<_> = list_param_ids(flow)
        .into_iter()
        .filter_map(|id| Some((id, grads.remove::<B::InnerBackend, 1>(id)?)))
        .collect();
    if ids.is_empty() {
        return grads;
    }
    let lengths: Vec<usize> = ids.iter().map(|(_, g)| g.dims()[0]).collect();
    let flat = peers.sum(Tensor::cat(ids.iter().map(|(_, g)| g.clone()).collect(), 0));
    let mut offset = 0;
    for ((id, _), len) in ids.into_iter().zip(lengths) {
        grads.register::<B::InnerBackend, 1>(id, flat.clone().narrow(0, offset, len));
        offset += len;
    }
    grads
}

/// A training run in memory: flow, optimizer and the number of epochs done.
pub struct Trainer<B: FlowAutodiff> {
    pub config: TrainConfig,
    flow: Option<Flow<B>>,
    optim: OptimizerAdaptor<Adam, Flow<B>, B>,
    pub target: Target<B>,
    /// Epochs completed.
    pub epoch: usize,
    /// The data-parallel group this trainer belongs to, if any.
    peers: Option<Box<dyn Peers<B>>>,
    /// Whether the group agreed, at the last step, to stop.
    stop_agreed: bool,
}

impl<B: FlowAutodiff> Trainer<B> {
    /// A fresh run (epoch 0).
    pub fn new(config: TrainConfig, device: &B::Device) -> Result<Self, ConfigError> {
        config.validate()?;
        let target = Target::new(config.relaxation(), device);
        let flow = config.init_flow(device);
        let optim = config.adam();
        Ok(Self {
            config,
            flow: Some(flow),
            optim,
            target,
            epoch: 0,
            peers: None,
            stop_agreed: false,
        })
    }

    /// From now on this trainer trains together with `peers` (data parallelism): every trainer
    /// of the group must start from the same state (the same checkpoint).
    pub fn join(&mut self, peers: Box<dyn Peers<B>>) {
        self.peers = Some(peers);
    }

    /// In a data-parallel group: whether the group agreed at the last step to stop (one of
    /// its processes got a signal). `None` alone.
    pub fn stop_agreed(&self) -> Option<bool> {
        self.peers.as_ref().map(|_| self.stop_agreed)
    }

    /// The flow being trained.
    pub fn flow(&self) -> &Flow<B> {
        self.flow.as_ref().expect("flow present between steps")
    }

    /// Runs the flow's block layers with `kernel` from now on (comparisons and benchmarks).
    pub fn set_kernel(&mut self, kernel: crate::fused::Kernel) {
        let flow = self.flow.take().expect("flow present between steps");
        self.flow = Some(Flow {
            mera: flow.mera.with_kernel(kernel),
            symmetric: flow.symmetric,
        });
    }

    /// The flow without autodiff, for sampling and evaluation.
    pub fn flow_valid(&self) -> Flow<B::InnerBackend> {
        self.flow().valid()
    }

    /// One epoch: one Adam step on a fresh batch (its one readback awaited). On a non-finite
    /// loss nothing is changed and [`Diverged`] is returned.
    pub async fn step(&mut self) -> Result<EpochStats, Diverged> {
        let epoch = self.epoch + 1;
        let flow = self.flow.take().expect("flow present between steps");
        let device = flow.mera.device();
        let batch = self.config.optimizer.batch;
        let rows = self.peers.as_ref().map_or(0..batch, |p| p.rows(batch));
        let mut rng = self.config.epoch_rng(epoch);
        let z = normal_noise_rows::<B>(
            &mut rng,
            batch,
            self.config.mera.lattice.sites(),
            rows.clone(),
            &device,
        );
        let (f, mut loss) = free_energy(&self.config, &flow, &self.target, z);
        // One readback per step: the per-sample f and the loss together.
        let mut host = crate::host::read(Tensor::cat(
            vec![f.clone().detach(), loss.clone().detach()],
            0,
        ))
        .await;
        if let Some(peers) = &self.peers {
            // The loss is a mean over rows: this share's part of the batch's mean is its mean
            // times its fraction of the rows. The whole batch's f, the loss and the stop wish
            // are summed over the group (zeros at the other trainers' rows).
            let share = rows.len() as f64 / batch as f64;
            loss = loss.mul_scalar(share);
            let mut all = vec![0.0; batch + 2];
            all[rows.clone()].copy_from_slice(&host[..rows.len()]);
            all[batch] = host[rows.len()] * share;
            all[batch + 1] = f64::from(u8::from(peers.wants_stop()));
            let mine =
                Tensor::<B::InnerBackend, 1>::from_data(TensorData::new(all, [batch + 2]), &device);
            host = crate::host::read(peers.sum(mine)).await;
            self.stop_agreed = host.pop().is_some_and(|s| s > 0.0);
        }
        let (fs, loss_value) = host.split_at(batch);
        let loss_value = loss_value[0];
        let bad = fs.iter().filter(|v| !v.is_finite()).count();
        if bad > 0 || !loss_value.is_finite() {
            self.flow = Some(flow);
            return Err(Diverged {
                epoch,
                loss: loss_value,
                bad,
                batch,
            });
        }
        let mut grads = GradientsParams::from_grads(loss.backward(), &flow);
        if let Some(peers) = &self.peers {
            grads = sum_gradients(peers.as_ref(), &flow, grads);
        }
        let lr = self
            .config
            .optimizer
            .schedule
            .lr(self.config.optimizer.lr, epoch);
        self.flow = Some(self.optim.step(lr, flow, grads));
        self.epoch = epoch;
        let me = mean_error(fs);
        Ok(EpochStats {
            epoch,
            loss: loss_value,
            f: me.mean,
            f_std: me.std,
            f_stderr: me.stderr,
            relative_error: self.target.relaxation.relative_error(me.mean),
            seconds: 0.0,
        })
    }

    /// The trained parameters and optimizer state as bytes (see [`crate::checkpoint`]).
    pub fn to_checkpoint(&self) -> Result<Vec<u8>, crate::checkpoint::CheckpointError> {
        crate::checkpoint::encode(self.epoch, &self.config, self.flow(), &self.optim)
    }

    /// [`Trainer::to_checkpoint`] on any backend, the browser's WebGPU included (its tensors
    /// are read back asynchronously; see [`crate::checkpoint::encode_async`]).
    pub async fn to_checkpoint_async(&self) -> Result<Vec<u8>, crate::checkpoint::CheckpointError> {
        crate::checkpoint::encode_async(self.epoch, &self.config, self.flow(), &self.optim).await
    }

    /// Restores a run from [`Trainer::to_checkpoint`]'s bytes.
    pub fn from_checkpoint(
        config: TrainConfig,
        bytes: &[u8],
        device: &B::Device,
    ) -> Result<Self, crate::checkpoint::CheckpointError> {
        let mut trainer = Self::new(config, device)
            .map_err(|e| crate::checkpoint::CheckpointError::Config(e.to_string()))?;
        let (epoch, flow, optim) = crate::checkpoint::decode(
            bytes,
            &trainer.config,
            trainer.flow.take().expect("fresh flow"),
            trainer.optim,
            device,
        )?;
        trainer.flow = Some(flow);
        trainer.optim = optim;
        trainer.epoch = epoch;
        Ok(trainer)
    }

    /// A new run (epoch 0, a fresh optimizer) for `config` that starts from the flow of a
    /// checkpoint of the same network trained with other settings, another temperature for
    /// example (a warm start; see [`TrainConfig::NOT_THE_NETWORK`]). Returns the checkpoint's
    /// configuration too (absent in format-2 checkpoints).
    pub fn warm_started(
        config: TrainConfig,
        bytes: &[u8],
        device: &B::Device,
    ) -> Result<(Self, Option<TrainConfig>), crate::checkpoint::CheckpointError> {
        let mut trainer = Self::new(config, device)
            .map_err(|e| crate::checkpoint::CheckpointError::Config(e.to_string()))?;
        let (flow, from) = crate::checkpoint::decode_flow(
            bytes,
            &trainer.config,
            trainer.flow.take().expect("fresh flow"),
            device,
        )?;
        trainer.flow = Some(flow);
        Ok((trainer, from))
    }
}
