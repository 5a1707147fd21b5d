//! Checkpoints as bytes: the flow's masks and parameters, the optimizer state and the epoch,
//! with a checksum so that a truncated or corrupt file is refused with a clear error (never a
//! panic).
//!
//! Layout (little endian): `b"NEURALRG"`, format version `u32`, epoch `u64`, then four
//! sections, each a `u64` length and its bytes: the training configuration the checkpoint was
//! made for (JSON, as in `parameters.json`: loading compares it with the run's), the masks of
//! every block (JSON, one `nlayers x width` array of 0/1 per block layer: stored, so that loading
//! never re-derives them from the seed), the model and the optimizer (MessagePack bytes of Burn's
//! records at double precision); then an FNV-1a 64-bit checksum of everything before it. The RNG
//! state is not stored: each epoch's samples are a function of the seed and the epoch
//! ([`crate::train`]).
//!
//! Version 3 added the configuration section to version 2 (packed parameters, one tensor per
//! block), which is still read (its configuration is taken from `parameters.json`). Version 1
//! (17 tensors per coupling layer, masks re-derived from the seed) and versions newer than this
//! build's are refused, naming both.

use burn::module::Module;
use burn::optim::Adam;
use burn::optim::Optimizer;
use burn::optim::adaptor::OptimizerAdaptor;
use burn::record::{DoublePrecisionSettings, NamedMpkBytesRecorder, Recorder};

use crate::flow::Flow;
use crate::fused::FlowAutodiff;
use crate::train::TrainConfig;

const MAGIC: &[u8; 8] = b"NEURALRG";
/// The format this build writes.
pub const VERSION: u32 = 3;
/// The oldest format this build reads.
pub const OLDEST: u32 = 2;

/// Why a checkpoint could not be written or read.
#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    #[error("not a neuralrg checkpoint (bad header)")]
    Header,
    #[error(
        "checkpoint format version {0} is not supported: this build reads version {OLDEST} to \
         {VERSION} (version 1 is from neuralrg 0.1, before the parameters were packed; train the \
         run again)"
    )]
    Version(u32),
    #[error(
        "checkpoint format version {0} is newer than this build's (it reads version {OLDEST} to \
         {VERSION}): use the neuralrg that wrote it, or a newer one"
    )]
    Newer(u32),
    #[error("checkpoint is truncated ({0} bytes)")]
    Truncated(usize),
    #[error("checkpoint is corrupt (checksum mismatch)")]
    Checksum,
    #[error("checkpoint does not match the run's parameters: {0}")]
    Record(String),
    #[error(
        "the checkpoint was made for other settings than parameters.json holds: {0} \
         (restore parameters.json, or train a new run in another folder)"
    )]
    Mismatch(String),
    #[error(
        "the model to start from has another network than this run: {0} (a warm start keeps \
         the network and may change only T, alpha, the optimizer, the schedule and the seed)"
    )]
    OtherNetwork(String),
    #[error("run parameters are invalid: {0}")]
    Config(String),
}

type Recorder_ = NamedMpkBytesRecorder<DoublePrecisionSettings>;

/// FNV-1a, 64 bits.
pub fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, &b| {
        (h ^ b as u64).wrapping_mul(0x0100_0000_01b3)
    })
}

impl CheckpointError {
    /// The file is damaged (cut short, bytes changed): an older checkpoint may stand in for it.
    /// Every other error is a checkpoint that is intact but not for this run or this build.
    pub fn is_damage(&self) -> bool {
        matches!(self, Self::Header | Self::Truncated(_) | Self::Checksum)
    }
}

/// Encodes epoch, configuration, masks, flow and optimizer state.
pub fn encode<B: FlowAutodiff>(
    epoch: usize,
    config: &TrainConfig,
    flow: &Flow<B>,
    optim: &OptimizerAdaptor<Adam, Flow<B>, B>,
) -> Result<Vec<u8>, CheckpointError> {
    let config = serde_json::to_vec(config).expect("configuration serializes");
    let masks = serde_json::to_vec(&flow.mera.masks()).expect("masks serialize");
    let rec = Recorder_::default();
    let model = Recorder::<B>::record(&rec, flow.clone().into_record(), ())
        .map_err(|e| CheckpointError::Record(e.to_string()))?;
    let opt = Recorder::<B>::record(&rec, optim.to_record(), ())
        .map_err(|e| CheckpointError::Record(e.to_string()))?;
    let mut out = Vec::with_capacity(model.len() + opt.len() + 64);
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&VERSION.to_le_bytes());
    out.extend_from_slice(&(epoch as u64).to_le_bytes());
    for section in [&config, &masks, &model, &opt] {
        out.extend_from_slice(&(section.len() as u64).to_le_bytes());
        out.extend_from_slice(section);
    }
    let sum = fnv1a(&out);
    out.extend_from_slice(&sum.to_le_bytes());
    Ok(out)
}

/// [`encode`] on any backend, the browser's WebGPU included, where tensors are read back only
/// asynchronously: every parameter and every optimizer moment is read back once into a copy of
/// the flow and the optimizer on the CPU backend (the same values and parameter ids), which is
/// encoded. The bytes decode as [`encode`]'s do.
pub async fn encode_async<B: FlowAutodiff>(
    epoch: usize,
    config: &TrainConfig,
    flow: &Flow<B>,
    optim: &OptimizerAdaptor<Adam, Flow<B>, B>,
) -> Result<Vec<u8>, CheckpointError> {
    use burn::module::AutodiffModule;
    use burn::module::{ModuleMapper, ModuleVisitor, Param, ParamId};
    use burn::optim::record::AdaptorRecord;
    use burn::optim::{AdamState, AdaptiveMomentumState};
    use burn::tensor::{Tensor, TensorData};
    type Cpu = burn::backend::Autodiff<burn::backend::Flex>;
    /// The optimizer's record: Adam's state by parameter id.
    type Record<B> = <OptimizerAdaptor<Adam, Flow<B>, B> as Optimizer<Flow<B>, B>>::Record;

    /// One parameter flattened: its id, shape, values and Adam state (time, moments).
    struct Flat<T> {
        id: ParamId,
        shape: Vec<usize>,
        value: T,
        adam: Option<(usize, T, T, Option<T>)>,
    }
    struct Collect<B: FlowAutodiff> {
        record: Record<B>,
        flat: Vec<Flat<Tensor<B::InnerBackend, 1>>>,
    }
    impl<B: FlowAutodiff> ModuleVisitor<B::InnerBackend> for Collect<B> {
        fn visit_float<const D: usize>(&mut self, p: &Param<Tensor<B::InnerBackend, D>>) {
            let t = p.val();
            let adam = self.record.remove(&p.id).map(|r| {
                let m = r.into_state::<D>().momentum;
                let flat = |t: Tensor<B::InnerBackend, D>| t.reshape([-1]);
                (
                    m.time,
                    flat(m.moment_1),
                    flat(m.moment_2),
                    m.max_moment_2.map(flat),
                )
            });
            self.flat.push(Flat {
                id: p.id,
                shape: t.dims().to_vec(),
                value: t.reshape([-1]),
                adam,
            });
        }
    }
    let mut collect = Collect::<B> {
        record: optim.to_record(),
        flat: Vec::new(),
    };
    flow.valid().visit(&mut collect);
    let mut read = Vec::with_capacity(collect.flat.len());
    for f in collect.flat {
        let adam = match f.adam {
            Some((time, m1, m2, max)) => Some((
                time,
                crate::host::read(m1).await,
                crate::host::read(m2).await,
                match max {
                    Some(t) => Some(crate::host::read(t).await),
                    None => None,
                },
            )),
            None => None,
        };
        read.push(Flat {
            id: f.id,
            shape: f.shape,
            value: crate::host::read(f.value).await,
            adam,
        });
    }

    /// Puts the values read back into the CPU flow, in the same visiting order, under the
    /// original ids, and rebuilds the optimizer record for the CPU backend.
    struct Fill {
        read: std::vec::IntoIter<Flat<Vec<f64>>>,
        record: Record<Cpu>,
    }
    impl ModuleMapper<Cpu> for Fill {
        fn map_float<const D: usize>(&mut self, p: Param<Tensor<Cpu, D>>) -> Param<Tensor<Cpu, D>> {
            let f = self.read.next().expect("the same architecture");
            let device = p.val().device();
            let tensor = |v: Vec<f64>| {
                Tensor::<<Cpu as burn::tensor::backend::AutodiffBackend>::InnerBackend, D>::from_data(
                    TensorData::new(v, f.shape.clone()),
                    &device,
                )
            };
            if let Some((time, m1, m2, max)) = f.adam {
                let momentum = AdaptiveMomentumState {
                    time,
                    moment_1: tensor(m1),
                    moment_2: tensor(m2),
                    max_moment_2: max.map(tensor),
                };
                self.record
                    .insert(f.id, AdaptorRecord::from_state::<D>(AdamState { momentum }));
            }
            let value =
                Tensor::<Cpu, D>::from_data(TensorData::new(f.value, f.shape.clone()), &device);
            Param::initialized(f.id, value.require_grad())
        }
    }
    let device = Default::default();
    let fresh = config.init_flow::<Cpu>(&device);
    let fresh = Flow {
        mera: fresh
            .mera
            .with_masks(&config.mera, flow.mera.masks())
            .map_err(CheckpointError::Record)?,
        symmetric: flow.symmetric,
    };
    let mut fill = Fill {
        read: read.into_iter(),
        record: Default::default(),
    };
    let cpu_flow = fresh.map(&mut fill);
    let cpu_optim = config.adam::<Cpu>().load_record(fill.record);
    encode(epoch, config, &cpu_flow, &cpu_optim)
}

/// The sections of a checkpoint.
pub struct Sections<'a> {
    pub epoch: usize,
    /// JSON: the training configuration (version 3 on).
    pub config: Option<&'a [u8]>,
    /// JSON: the masks of every block.
    pub masks: &'a [u8],
    pub model: &'a [u8],
    pub optimizer: &'a [u8],
}

/// Splits and verifies a checkpoint.
pub fn sections(bytes: &[u8]) -> Result<Sections<'_>, CheckpointError> {
    let truncated = || CheckpointError::Truncated(bytes.len());
    if bytes.len() < 8 || &bytes[..8] != MAGIC {
        return Err(if bytes.len() < 8 && MAGIC.starts_with(bytes) {
            truncated()
        } else {
            CheckpointError::Header
        });
    }
    let u64_at = |at: usize| -> Result<u64, CheckpointError> {
        bytes
            .get(at..at + 8)
            .map(|b| u64::from_le_bytes(b.try_into().unwrap()))
            .ok_or_else(truncated)
    };
    let version = u32::from_le_bytes(bytes.get(8..12).ok_or_else(truncated)?.try_into().unwrap());
    if version > VERSION {
        return Err(CheckpointError::Newer(version));
    }
    if version < OLDEST {
        return Err(CheckpointError::Version(version));
    }
    let epoch = u64_at(12)? as usize;
    let mut at = 20;
    let mut parts = Vec::new();
    let count = if version >= 3 { 4 } else { 3 };
    for _ in 0..count {
        let len = usize::try_from(u64_at(at)?).map_err(|_| truncated())?;
        at += 8;
        let end = at
            .checked_add(len)
            .filter(|&e| e <= bytes.len())
            .ok_or_else(truncated)?;
        parts.push(&bytes[at..end]);
        at = end;
    }
    let sum = u64_at(at)?;
    if bytes.len() != at + 8 {
        return Err(CheckpointError::Checksum);
    }
    if fnv1a(&bytes[..at]) != sum {
        return Err(CheckpointError::Checksum);
    }
    let config = (count == 4).then(|| parts.remove(0));
    Ok(Sections {
        epoch,
        config,
        masks: parts[0],
        model: parts[1],
        optimizer: parts[2],
    })
}

/// Decodes a checkpoint into a flow (of the architecture of `config`, with the stored masks) and
/// an optimizer. A checkpoint made for another configuration is refused, naming each setting
/// that differs, except those a resumed run may change ([`TrainConfig::RESUMABLE`]).
#[allow(clippy::type_complexity)]
pub fn decode<B: FlowAutodiff>(
    bytes: &[u8],
    config: &TrainConfig,
    flow: Flow<B>,
    optim: OptimizerAdaptor<Adam, Flow<B>, B>,
    device: &B::Device,
) -> Result<(usize, Flow<B>, OptimizerAdaptor<Adam, Flow<B>, B>), CheckpointError> {
    let sections = sections(bytes)?;
    let (epoch, opt) = (sections.epoch, sections.optimizer);
    let (flow, _) = decode_network(
        &sections,
        config,
        |name| TrainConfig::RESUMABLE.contains(&name),
        ("checkpoint", "parameters.json", CheckpointError::Mismatch),
        flow,
        device,
    )?;
    let orecord = Recorder::<B>::load(&Recorder_::default(), opt.to_vec(), device)
        .map_err(|e| CheckpointError::Record(e.to_string()))?;
    Ok((epoch, flow, optim.load_record(orecord)))
}

/// Decodes only the flow of a checkpoint, for a warm start: the stored weights and masks in the
/// architecture of `config`; the checkpoint's temperature, optimizer, schedule and seed may
/// differ from `config`'s ([`TrainConfig::NOT_THE_NETWORK`]), any other setting may not. Returns
/// the flow and the checkpoint's configuration (absent in format-2 checkpoints).
pub fn decode_flow<B: FlowAutodiff>(
    bytes: &[u8],
    config: &TrainConfig,
    flow: Flow<B>,
    device: &B::Device,
) -> Result<(Flow<B>, Option<TrainConfig>), CheckpointError> {
    decode_network(
        &sections(bytes)?,
        config,
        |name| TrainConfig::NOT_THE_NETWORK.contains(&name),
        ("model", "run", CheckpointError::OtherNetwork),
        flow,
        device,
    )
}

/// The flow of a checkpoint's sections and its stored configuration (absent in format 2),
/// refused with `mismatch` (whose message names the checkpoint's configuration `theirs` and
/// `config` `ours`) when the two differ in a setting that `may_differ` does not allow.
fn decode_network<B: FlowAutodiff>(
    sections: &Sections<'_>,
    config: &TrainConfig,
    may_differ: impl Fn(&str) -> bool,
    (theirs, ours, mismatch): (&str, &str, fn(String) -> CheckpointError),
    flow: Flow<B>,
    device: &B::Device,
) -> Result<(Flow<B>, Option<TrainConfig>), CheckpointError> {
    let stored: Option<TrainConfig> = sections
        .config
        .map(|stored| {
            serde_json::from_slice(stored)
                .map_err(|e| CheckpointError::Record(format!("configuration: {e}")))
        })
        .transpose()?;
    if let Some(stored) = &stored {
        let differ: Vec<String> = stored
            .differences(config)
            .into_iter()
            .filter(|d| !may_differ(d.name.as_str()))
            .map(|d| d.versus(theirs, ours))
            .collect();
        if !differ.is_empty() {
            return Err(mismatch(differ.join(", ")));
        }
    }
    let config = &config.mera;
    let masks: Vec<Vec<u8>> = serde_json::from_slice(sections.masks)
        .map_err(|e| CheckpointError::Record(format!("masks: {e}")))?;
    let flow = Flow {
        mera: flow
            .mera
            .with_masks(config, masks)
            .map_err(CheckpointError::Record)?,
        symmetric: flow.symmetric,
    };
    let record = Recorder::<B>::load(&Recorder_::default(), sections.model.to_vec(), device)
        .map_err(|e| CheckpointError::Record(e.to_string()))?;
    Ok((flow.load_record(record), stored))
}

/// All float parameters of a module, flattened in visiting order (for comparisons).
pub fn flat_parameters<B: burn::tensor::backend::Backend, M: Module<B>>(module: &M) -> Vec<f64> {
    struct Collect(Vec<f64>);
    impl<B: burn::tensor::backend::Backend> burn::module::ModuleVisitor<B> for Collect {
        fn visit_float<const D: usize>(
            &mut self,
            p: &burn::module::Param<burn::tensor::Tensor<B, D>>,
        ) {
            self.0.extend(p.val().into_data().iter::<f64>());
        }
    }
    let mut c = Collect(Vec::new());
    module.visit(&mut c);
    c.0
}
