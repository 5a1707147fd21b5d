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
use crate::stats::mean_error;

/// Everything that determines a training run's result (stored in `parameters.json`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainConfig {
    /// Lattice side `L` and dimension `d`.
    #[serde(flatten)]
    pub lattice: Lattice,
    /// Temperature `T`.
    #[serde(rename = "T")]
    pub t: f64,
    /// MERA levels built (`depthMERA`), `1..=log2 L`.
    #[serde(rename = "depthMERA")]
    pub depth: usize,
    /// Copies of the [disentangler, decimator] pair per level.
    pub nrepeat: usize,
    /// Affine coupling layers per RealNVP block.
    pub nlayers: usize,
    /// Hidden layers per MLP.
    pub nmlp: usize,
    /// Hidden width of the MLPs.
    pub nhidden: usize,
    /// Z2-symmetrized flow.
    pub symmetry: bool,
    /// Weight of the Z2 penalty (unused when `symmetry`).
    pub alpha: f64,
    /// Samples per training step (one step per epoch).
    pub batch: usize,
    /// Adam learning rate.
    pub lr: f64,
    /// Coupled L2 weight decay.
    pub weight_decay: f64,
    /// Per-tensor gradient-norm clipping threshold, if any.
    pub clip: Option<f64>,
    /// How the learning rate changes over the epochs (runs written before it existed trained
    /// with the paper's constant rate).
    #[serde(default)]
    pub schedule: Schedule,
    /// Seed of the weights, masks and sample streams.
    pub seed: u64,
}

/// The learning rate over the epochs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum Schedule {
    /// The paper's recipe: `lr` at every epoch.
    #[default]
    Constant,
    /// A linear warm-up over the first `warmup` epochs, then a cosine decay from `lr` to 0 at
    /// epoch `epochs` (and 0 after it): the noise of the last epochs' steps dies out, so the flow
    /// settles at the bottom of the loss it reached instead of rattling around it.
    Cosine { epochs: usize, warmup: usize },
}

impl Schedule {
    /// The learning rate of epoch `epoch` (1-based) for the base rate `lr`.
    pub fn lr(&self, lr: f64, epoch: usize) -> f64 {
        match *self {
            Self::Constant => lr,
            Self::Cosine { epochs, warmup } => {
                if epoch <= warmup {
                    lr * epoch as f64 / warmup.max(1) as f64
                } else if epoch >= epochs {
                    0.0
                } else {
                    let progress = (epoch - warmup) as f64 / (epochs - warmup).max(1) as f64;
                    0.5 * lr * (1.0 + (std::f64::consts::PI * progress).cos())
                }
            }
        }
    }
}

/// A configuration that cannot be trained, with the value and what is allowed.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ConfigError {
    #[error(transparent)]
    Input(#[from] InputError),
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

    /// The settings on which `self` (`a`) and `other` (`b`) differ, by their `parameters.json`
    /// names (sorted).
    pub fn differences(&self, other: &TrainConfig) -> Vec<Difference> {
        let (a, b) = (
            serde_json::to_value(self).expect("configuration serializes"),
            serde_json::to_value(other).expect("configuration serializes"),
        );
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

    /// The paper's configuration (`nlayers 10, nmlp 3, nhidden 10, nrepeat 1`, symmetrized,
    /// batch 512, Adam lr 1e-3 with weight decay 1e-3) at side `l`, dimension `d`, temperature `t`.
    pub fn paper(l: usize, d: usize, t: f64) -> Result<Self, ConfigError> {
        let lattice = Lattice::new(l, d)?;
        let config = Self {
            lattice,
            t,
            depth: lattice.depth(),
            nrepeat: 1,
            nlayers: 10,
            nmlp: 3,
            nhidden: 10,
            symmetry: true,
            alpha: 1.0,
            batch: 512,
            lr: 1e-3,
            weight_decay: 1e-3,
            clip: None,
            schedule: Schedule::Constant,
            seed: 1,
        };
        config.validate()?;
        Ok(config)
    }

    /// Checks every value; the message names the value and what is allowed.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let lat = Lattice::new(self.lattice.side(), self.lattice.dim())?;
        check_temperature(self.t)?;
        let max_depth = lat.depth();
        if self.depth < 1 || self.depth > max_depth {
            return Err(bad(
                "depthMERA",
                self.depth,
                format!("an integer from 1 to log2 L = {max_depth}"),
            ));
        }
        for (name, v) in [
            ("nrepeat", self.nrepeat),
            ("nlayers", self.nlayers),
            ("nmlp", self.nmlp),
            ("nhidden", self.nhidden),
            ("batch", self.batch),
        ] {
            if v == 0 {
                return Err(bad(name, v, "an integer >= 1"));
            }
        }
        if !(self.lr.is_finite() && self.lr > 0.0) {
            return Err(bad("lr", self.lr, "a finite number > 0"));
        }
        if !(self.alpha.is_finite() && self.alpha >= 0.0) {
            return Err(bad("alpha", self.alpha, "a finite number >= 0"));
        }
        if !(self.weight_decay.is_finite() && self.weight_decay >= 0.0) {
            return Err(bad(
                "weight-decay",
                self.weight_decay,
                "a finite number >= 0",
            ));
        }
        if let Some(c) = self.clip.filter(|c| !(c.is_finite() && *c > 0.0)) {
            return Err(bad("clip", c, "a finite number > 0"));
        }
        if let Schedule::Cosine { epochs, warmup } = self.schedule
            && (epochs == 0 || warmup >= epochs)
        {
            return Err(bad(
                "schedule",
                format!("cosine over {epochs} epochs with {warmup} warm-up epochs"),
                "at least one epoch after the warm-up",
            ));
        }
        Ok(())
    }

    /// The configuration as a URL query (`L=8&d=2&T=2.269185&depthMERA=3&...`), with the
    /// command line's names; the browser app keeps its whole setup in the address this way.
    /// Floats are written in their shortest exact form, so [`TrainConfig::from_query`] gives back
    /// exactly this configuration.
    pub fn to_query(&self) -> String {
        let mut q = format!(
            "L={}&d={}&T={}&depthMERA={}&nrepeat={}&nlayers={}&nmlp={}&nhidden={}&batch={}&lr={}&symmetry={}&alpha={}&weightDecay={}&seed={}",
            self.lattice.side(),
            self.lattice.dim(),
            self.t,
            self.depth,
            self.nrepeat,
            self.nlayers,
            self.nmlp,
            self.nhidden,
            self.batch,
            self.lr,
            self.symmetry,
            self.alpha,
            self.weight_decay,
            self.seed
        );
        if let Some(c) = self.clip {
            q.push_str(&format!("&clip={c}"));
        }
        if let Schedule::Cosine { epochs, warmup } = self.schedule {
            q.push_str(&format!("&schedule=cosine:{epochs}:{warmup}"));
        }
        q
    }

    /// Reads [`TrainConfig::to_query`]'s form (a leading `?` is allowed). Missing keys take the
    /// paper's values for the given `L`, `d` (defaults 8, 2) and `T` (default `T_c`), with the
    /// full MERA depth; unknown keys are ignored; a bad value is an error naming it.
    pub fn from_query(query: &str) -> Result<Self, ConfigError> {
        let pairs: Vec<(&str, &str)> = query
            .trim_start_matches('?')
            .split('&')
            .filter_map(|kv| kv.split_once('='))
            .collect();
        let get = |k: &str| pairs.iter().rev().find(|(key, _)| *key == k).map(|p| p.1);
        fn num<T: std::str::FromStr>(
            name: &'static str,
            v: Option<&str>,
            allowed: &str,
        ) -> Result<Option<T>, ConfigError> {
            v.map(|v| v.parse::<T>().map_err(|_| bad(name, v, allowed)))
                .transpose()
        }
        let l = num("L", get("L"), "a power of two >= 4")?.unwrap_or(8);
        let d = num("d", get("d"), "1 or 2")?.unwrap_or(2);
        let t = num("T", get("T"), "a number > 0")?.unwrap_or(crate::lattice::T_C);
        let mut c = Self::paper(l, d, t)?;
        let int = "an integer >= 1";
        c.depth = num("depthMERA", get("depthMERA"), int)?.unwrap_or(c.depth);
        c.nrepeat = num("nrepeat", get("nrepeat"), int)?.unwrap_or(c.nrepeat);
        c.nlayers = num("nlayers", get("nlayers"), int)?.unwrap_or(c.nlayers);
        c.nmlp = num("nmlp", get("nmlp"), int)?.unwrap_or(c.nmlp);
        c.nhidden = num("nhidden", get("nhidden"), int)?.unwrap_or(c.nhidden);
        c.batch = num("batch", get("batch"), int)?.unwrap_or(c.batch);
        c.lr = num("lr", get("lr"), "a number > 0")?.unwrap_or(c.lr);
        c.symmetry = num("symmetry", get("symmetry"), "true or false")?.unwrap_or(c.symmetry);
        c.alpha = num("alpha", get("alpha"), "a number >= 0")?.unwrap_or(c.alpha);
        c.weight_decay =
            num("weightDecay", get("weightDecay"), "a number >= 0")?.unwrap_or(c.weight_decay);
        c.clip = num("clip", get("clip"), "a number > 0")?.or(c.clip);
        c.seed = num("seed", get("seed"), "an integer >= 0")?.unwrap_or(c.seed);
        if let Some(v) = get("schedule") {
            let allowed = "constant or cosine:EPOCHS:WARMUP";
            c.schedule = match v.split(':').collect::<Vec<_>>()[..] {
                ["constant"] => Schedule::Constant,
                ["cosine", e, w] => Schedule::Cosine {
                    epochs: e.parse().map_err(|_| bad("schedule", v, allowed))?,
                    warmup: w.parse().map_err(|_| bad("schedule", v, allowed))?,
                },
                _ => return Err(bad("schedule", v, allowed)),
            };
        }
        c.validate()?;
        Ok(c)
    }

    /// The network architecture.
    pub fn mera(&self) -> MeraConfig {
        MeraConfig {
            lattice: self.lattice,
            depth: self.depth,
            nrepeat: self.nrepeat,
            nlayers: self.nlayers,
            nmlp: self.nmlp,
            nhidden: self.nhidden,
        }
    }

    /// The relaxation target's constants.
    pub fn relaxation(&self) -> Relaxation {
        Relaxation::new(self.lattice, self.t).expect("validated temperature")
    }

    /// A fresh flow with weights from the seed.
    pub fn init_flow<B: burn::tensor::backend::Backend>(&self, device: &B::Device) -> Flow<B> {
        Flow {
            mera: self.mera().init(self.seed, device),
            symmetric: self.symmetry,
        }
    }

    /// The Adam optimizer of the spec.
    pub fn optimizer<B: FlowAutodiff>(&self) -> OptimizerAdaptor<Adam, Flow<B>, B> {
        AdamConfig::new()
            .with_epsilon(1e-8)
            .with_weight_decay(
                (self.weight_decay > 0.0).then(|| WeightDecayConfig::new(self.weight_decay as f32)),
            )
            .with_grad_clipping(self.clip.map(|c| GradientClippingConfig::Norm(c as f32)))
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

/// Statistics of one training step.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
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
        let optim = config.optimizer();
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

    /// One epoch: one Adam step on a fresh batch. On a non-finite loss nothing is changed and
    /// [`Diverged`] is returned.
    pub fn step(&mut self) -> Result<EpochStats, Diverged> {
        crate::host::block_on(self.step_async())
    }

    /// [`Trainer::step`] for callers that cannot block (the browser): the one readback of the
    /// step is awaited.
    pub async fn step_async(&mut self) -> Result<EpochStats, Diverged> {
        let epoch = self.epoch + 1;
        let flow = self.flow.take().expect("flow present between steps");
        let device = flow.mera.device();
        let batch = self.config.batch;
        let rows = self.peers.as_ref().map_or(0..batch, |p| p.rows(batch));
        let mut rng = self.config.epoch_rng(epoch);
        let z = normal_noise_rows::<B>(
            &mut rng,
            batch,
            self.config.lattice.sites(),
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
        let lr = self.config.schedule.lr(self.config.lr, epoch);
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
        })
    }

    /// The trained parameters and optimizer state as bytes (see [`crate::checkpoint`]).
    pub fn to_checkpoint(&self) -> Result<Vec<u8>, crate::checkpoint::CheckpointError> {
        crate::checkpoint::encode(self.epoch, &self.config, self.flow(), &self.optim)
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
}
