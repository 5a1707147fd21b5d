//! Checkpoints as bytes: the flow's parameters, the optimizer state and the epoch, with a
//! checksum so that a truncated or corrupt file is refused with a clear error (never a panic).
//!
//! Layout (little endian): `b"NEURALRG"`, format version `u32`, epoch `u64`, then two sections
//! (model, optimizer), each a `u64` length and MessagePack bytes of Burn's record at double
//! precision, then an FNV-1a 64-bit checksum of everything before it. The RNG state is not
//! stored: each epoch's samples are a function of the seed and the epoch ([`crate::train`]).

use burn::module::Module;
use burn::optim::Adam;
use burn::optim::Optimizer;
use burn::optim::adaptor::OptimizerAdaptor;
use burn::record::{DoublePrecisionSettings, NamedMpkBytesRecorder, Recorder};
use burn::tensor::backend::AutodiffBackend;

use crate::flow::Flow;

const MAGIC: &[u8; 8] = b"NEURALRG";
const VERSION: u32 = 1;

/// Why a checkpoint could not be written or read.
#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    #[error("not a neuralrg checkpoint (bad header)")]
    Header,
    #[error("checkpoint format version {0} is not supported (this build reads version {VERSION})")]
    Version(u32),
    #[error("checkpoint is truncated ({0} bytes)")]
    Truncated(usize),
    #[error("checkpoint is corrupt (checksum mismatch)")]
    Checksum,
    #[error("checkpoint does not match the run's parameters: {0}")]
    Record(String),
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

/// Encodes epoch, flow and optimizer state.
pub fn encode<B: AutodiffBackend>(
    epoch: usize,
    flow: &Flow<B>,
    optim: &OptimizerAdaptor<Adam, Flow<B>, B>,
) -> Result<Vec<u8>, CheckpointError> {
    let rec = Recorder_::default();
    let model = Recorder::<B>::record(&rec, flow.clone().into_record(), ())
        .map_err(|e| CheckpointError::Record(e.to_string()))?;
    let opt = Recorder::<B>::record(&rec, optim.to_record(), ())
        .map_err(|e| CheckpointError::Record(e.to_string()))?;
    let mut out = Vec::with_capacity(model.len() + opt.len() + 64);
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&VERSION.to_le_bytes());
    out.extend_from_slice(&(epoch as u64).to_le_bytes());
    for section in [&model, &opt] {
        out.extend_from_slice(&(section.len() as u64).to_le_bytes());
        out.extend_from_slice(section);
    }
    let sum = fnv1a(&out);
    out.extend_from_slice(&sum.to_le_bytes());
    Ok(out)
}

/// Splits and verifies a checkpoint: `(epoch, model bytes, optimizer bytes)`.
pub fn sections(bytes: &[u8]) -> Result<(usize, &[u8], &[u8]), CheckpointError> {
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
    if version != VERSION {
        return Err(CheckpointError::Version(version));
    }
    let epoch = u64_at(12)? as usize;
    let mut at = 20;
    let mut parts = Vec::new();
    for _ in 0..2 {
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
    Ok((epoch, parts[0], parts[1]))
}

/// Decodes a checkpoint into a flow and optimizer of the run's architecture.
#[allow(clippy::type_complexity)]
pub fn decode<B: AutodiffBackend>(
    bytes: &[u8],
    flow: Flow<B>,
    optim: OptimizerAdaptor<Adam, Flow<B>, B>,
    device: &B::Device,
) -> Result<(usize, Flow<B>, OptimizerAdaptor<Adam, Flow<B>, B>), CheckpointError> {
    let (epoch, model, opt) = sections(bytes)?;
    let rec = Recorder_::default();
    let record = Recorder::<B>::load(&rec, model.to_vec(), device)
        .map_err(|e| CheckpointError::Record(e.to_string()))?;
    let flow = flow.load_record(record);
    let orecord = Recorder::<B>::load(&rec, opt.to_vec(), device)
        .map_err(|e| CheckpointError::Record(e.to_string()))?;
    let optim = optim.load_record(orecord);
    Ok((epoch, flow, optim))
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
