//! What a run folder holds, in forms that every platform reads and writes: `parameters.json`
//! ([`Parameters`]), the names of the checkpoints in `savings/`, and a model in one file.
//!
//! A model in one file ([`pack`]) is a tar archive of a run folder with its `parameters.json`
//! and one checkpoint, `NAME/parameters.json` and `NAME/savings/epoch-NNNNNN.ckpt`: the page
//! downloads it, and `tar xf` turns it into a run folder that `sample --folder NAME` and
//! `analyze --folder NAME` read (and `train --folder NAME --load` trains on). [`ModelFiles`]
//! sorts out what the page is given to open: a run folder's `parameters.json` with its
//! checkpoints, the files of a picked folder, a checkpoint alone (format 3 holds its settings),
//! or such an archive. Files on disk, locks and signals are [`crate::run`]'s (native only).

use std::io::Read;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::checkpoint::{self, CheckpointError};
use crate::device::{DeviceKind, DeviceList};
use crate::fused::FlowAutodiff;
use crate::train::{TrainConfig, Trainer};

/// Everything about a run that is not the training configuration.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunOptions {
    /// Run folder.
    pub folder: PathBuf,
    /// A label for the run.
    pub name: String,
    /// Total epochs (one Adam step each).
    pub epochs: usize,
    /// Save a checkpoint every this many epochs (and always at the end).
    #[serde(rename = "savePeriod")]
    pub save_period: usize,
    /// Compute device.
    pub device: DeviceKind,
    /// Train in f64.
    pub double: bool,
    /// Skip HMC measurements during training.
    #[serde(rename = "skipHMC")]
    pub skip_hmc: bool,
    /// Checkpoints kept besides the final one.
    pub keep: usize,
    /// Persistent latent-space HMC chains measured every `savePeriod` epochs (0: none).
    #[serde(default = "default_hmc_chains")]
    pub hmc_chains: usize,
    /// Data-parallel training on these devices (`--devices`; absent: on `device` alone).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub devices: Option<DeviceList>,
    /// A warm start: the run began from the newest good checkpoint of this run folder (or this
    /// checkpoint file), a model of the same network trained with other settings, with its own
    /// temperature, a fresh optimizer and epoch 0 (absent: from the seeded initialization).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub init: Option<PathBuf>,
}

fn default_hmc_chains() -> usize {
    DEFAULT_HMC_CHAINS
}

/// Persistent HMC chains measured during training, unless set otherwise.
pub const DEFAULT_HMC_CHAINS: usize = 32;

/// Epochs between checkpoints (and measurements), unless set otherwise.
pub const DEFAULT_SAVE_PERIOD: usize = 50;

/// The `parameters.json` format this build writes; files of a newer format are refused.
pub const PARAMETERS_FORMAT: u32 = 1;

fn format_1() -> u32 {
    1
}

/// `parameters.json`: the training configuration, the run options and provenance.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Parameters {
    /// Format of this file ([`PARAMETERS_FORMAT`]; files without the key are format 1).
    #[serde(default = "format_1")]
    pub format: u32,
    #[serde(flatten)]
    pub config: TrainConfig,
    #[serde(flatten)]
    pub options: RunOptions,
    /// Burn backend name, for example `autodiff<flex>`.
    pub backend: String,
    /// neuralrg version that wrote the file.
    pub version: String,
}

impl Parameters {
    /// Reads `parameters.json`'s text (`path` names the file in messages); a file of a newer
    /// format is refused, naming both formats.
    pub fn parse(text: &str, path: &str) -> Result<Self, String> {
        let invalid = |e: serde_json::Error| format!("{path} is not a valid parameters file: {e}");
        let value: serde_json::Value = serde_json::from_str(text).map_err(invalid)?;
        if let Some(format) = value.get("format").and_then(|f| f.as_u64())
            && format > PARAMETERS_FORMAT as u64
        {
            return Err(format!(
                "{path} is of format {format}, newer than this build's (it reads format {PARAMETERS_FORMAT}): use the neuralrg that wrote it, or a newer one"
            ));
        }
        serde_json::from_value(value).map_err(invalid)
    }

    /// The parameters of a model trained outside a run folder (in the page): a run named
    /// [`TrainConfig::run_name`], in the folder of that name, `epochs` trained on `backend`,
    /// with the command line's defaults for the rest (`train --load --epochs N` goes on there to
    /// epoch N; without `--epochs` the run is complete).
    pub fn of_model(config: TrainConfig, epochs: usize, backend: String) -> Self {
        let name = config.run_name();
        Self {
            format: PARAMETERS_FORMAT,
            config,
            options: RunOptions {
                folder: PathBuf::from(&name),
                name,
                epochs,
                save_period: DEFAULT_SAVE_PERIOD,
                device: DeviceKind::Cpu,
                double: false,
                skip_hmc: false,
                keep: DEFAULT_KEEP,
                hmc_chains: DEFAULT_HMC_CHAINS,
                devices: None,
                init: None,
            },
            backend,
            version: env!("CARGO_PKG_VERSION").into(),
        }
    }

    /// `parameters.json`'s text.
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).expect("parameters serialize")
    }
}

/// Checkpoints kept besides the final one, unless set otherwise.
pub const DEFAULT_KEEP: usize = 3;

/// The name of the checkpoint of `epoch` in a run folder's `savings/`.
pub fn checkpoint_name(epoch: usize) -> String {
    format!("epoch-{epoch:06}.ckpt")
}

/// The epoch of a checkpoint's file name (`None` for any other name).
pub fn checkpoint_epoch(name: &str) -> Option<usize> {
    name.strip_prefix("epoch-")?
        .strip_suffix(".ckpt")?
        .parse()
        .ok()
}

/// A model in one file: a tar archive of the run folder `NAME/` (`NAME` the run's name) with
/// its `parameters.json` and the checkpoint of `epoch`, files dated `mtime` (seconds since 1970).
/// A name that is no plain folder name (empty, with `/`, `\\` or `..`) is refused.
pub fn pack(
    parameters: &Parameters,
    epoch: usize,
    checkpoint: &[u8],
    mtime: u64,
) -> Result<Vec<u8>, String> {
    let name = &parameters.options.name;
    if name.is_empty() || name.contains(['/', '\\']) || name.contains("..") {
        return Err(format!(
            "the run's name {name:?} is no plain folder name, which a model file needs"
        ));
    }
    let mut tar = tar::Builder::new(Vec::new());
    let mut add = |path: String, bytes: &[u8], dir: bool| {
        let mut h = tar::Header::new_ustar();
        h.set_entry_type(if dir {
            tar::EntryType::Directory
        } else {
            tar::EntryType::Regular
        });
        h.set_mode(if dir { 0o755 } else { 0o644 });
        h.set_size(bytes.len() as u64);
        h.set_mtime(mtime);
        tar.append_data(&mut h, path, bytes)
            .expect("writing to memory cannot fail");
    };
    add(format!("{name}/"), &[], true);
    add(
        format!("{name}/parameters.json"),
        parameters.to_json().as_bytes(),
        false,
    );
    add(format!("{name}/savings/"), &[], true);
    add(
        format!("{name}/savings/{}", checkpoint_name(epoch)),
        checkpoint,
        false,
    );
    Ok(tar.into_inner().expect("writing to memory cannot fail"))
}

/// Whether `bytes` are a tar archive (the `ustar` magic of POSIX and GNU tar).
fn is_tar(bytes: &[u8]) -> bool {
    bytes.get(257..262) == Some(b"ustar")
}

/// The regular files of a tar archive: (path, bytes).
fn unpack(bytes: &[u8], name: &str) -> Result<Vec<(String, Vec<u8>)>, String> {
    let bad = |e: std::io::Error| format!("{name} is not a readable tar archive: {e}");
    let mut files = Vec::new();
    let mut archive = tar::Archive::new(bytes);
    for entry in archive.entries().map_err(bad)? {
        let mut entry = entry.map_err(bad)?;
        if !entry.header().entry_type().is_file() {
            continue;
        }
        let path = entry.path().map_err(bad)?.to_string_lossy().into_owned();
        let mut data = Vec::new();
        entry.read_to_end(&mut data).map_err(bad)?;
        files.push((format!("{name}:{path}"), data));
    }
    Ok(files)
}

/// One model, sorted out of the files given to open it.
#[derive(Debug)]
pub struct ModelFiles {
    /// The training configuration: `parameters.json`'s, else the one the newest checkpoint holds.
    pub config: TrainConfig,
    /// `parameters.json`, when it was among the files.
    pub parameters: Option<Parameters>,
    /// The checkpoints `(file, epoch, bytes)`, newest first (the epoch from the file's name, or
    /// else from its header).
    pub checkpoints: Vec<(String, usize, Vec<u8>)>,
}

impl ModelFiles {
    /// Sorts out `(path, bytes)` files given to open one model: a run folder's `parameters.json`
    /// and checkpoints (any other file of the folder is passed over), a checkpoint alone, or tar
    /// archives of those (what [`pack`] writes, or `tar cf` of a run folder). Errors name the
    /// file and what is expected.
    pub fn sort(files: Vec<(String, Vec<u8>)>) -> Result<Self, String> {
        let mut all = Vec::new();
        for (path, bytes) in files {
            if is_tar(&bytes) || path.ends_with(".tar") {
                all.extend(unpack(&bytes, &path)?);
            } else {
                all.push((path, bytes));
            }
        }
        let base = |p: &str| p.rsplit(['/', '\\', ':']).next().unwrap_or(p).to_string();
        let mut parameters: Option<(String, Parameters)> = None;
        let mut checkpoints = Vec::new();
        for (path, bytes) in all {
            let file = base(&path);
            if file == "parameters.json" {
                if let Some((first, _)) = &parameters {
                    return Err(format!(
                        "two parameters.json were given ({first} and {path}): open one run's files at a time"
                    ));
                }
                let text = String::from_utf8_lossy(&bytes);
                parameters = Some((path.clone(), Parameters::parse(&text, &path)?));
            } else if checkpoint_epoch(&file).is_some() || file.ends_with(".ckpt") {
                let epoch = checkpoint_epoch(&file)
                    .or_else(|| checkpoint::sections(&bytes).ok().map(|s| s.epoch))
                    .unwrap_or(0);
                checkpoints.push((path, epoch, bytes));
            }
        }
        if checkpoints.is_empty() {
            return Err(
                "no checkpoint among the files: open a run folder, or its parameters.json with a checkpoint from its savings/ folder (epoch-NNNNNN.ckpt), or a model file (.tar)"
                    .into(),
            );
        }
        checkpoints.sort_by_key(|c| std::cmp::Reverse(c.1));
        let config = match &parameters {
            Some((_, p)) => p.config.clone(),
            None => checkpoints
                .iter()
                .find_map(|(_, _, bytes)| {
                    let stored = checkpoint::sections(bytes).ok()?.config?;
                    serde_json::from_slice::<TrainConfig>(stored).ok()
                })
                .ok_or_else(|| {
                    format!(
                        "{} does not hold its settings (checkpoint format 2, or damaged): open it with its run's parameters.json",
                        checkpoints[0].0
                    )
                })?,
        };
        Ok(Self {
            config,
            parameters: parameters.map(|(_, p)| p),
            checkpoints,
        })
    }
}

/// A trainer restored from the newest good checkpoint of several.
pub struct Loaded<B: FlowAutodiff> {
    pub trainer: Trainer<B>,
    /// The checkpoint loaded.
    pub name: String,
    /// Damaged checkpoints passed over for it, with why.
    pub skipped: Vec<(String, String)>,
}

/// Why no checkpoint was loaded.
#[derive(Debug)]
pub enum NotLoaded<E> {
    /// A checkpoint could not be read (the reader's error).
    Read(E),
    /// A checkpoint is intact but not for this configuration or this build.
    Refused(String, CheckpointError),
    /// Every checkpoint is damaged: each with why.
    Damaged(Vec<(String, String)>),
}

impl<E: std::fmt::Display> NotLoaded<E> {
    /// What to tell the user, `source` naming where the checkpoints came from (a run folder).
    pub fn message(&self, source: &str) -> String {
        match self {
            Self::Read(e) => e.to_string(),
            Self::Refused(name, e) => format!("cannot load checkpoint {name}: {e}"),
            Self::Damaged(all) => {
                let list: Vec<String> = all
                    .iter()
                    .map(|(name, why)| format!("{name}: {why}"))
                    .collect();
                format!(
                    "no checkpoint of {source} can be loaded: {}",
                    list.join("; ")
                )
            }
        }
    }
}

/// Restores a trainer for `config` from the newest good checkpoint of `(name, bytes)`, newest
/// first, read one at a time: a damaged one (cut short, bytes changed) is passed over for the
/// next older one; one that is intact but not for this configuration is refused.
pub fn newest_good<B: FlowAutodiff, E, Bytes: AsRef<[u8]>>(
    config: &TrainConfig,
    newest_first: impl IntoIterator<Item = (String, Result<Bytes, E>)>,
    device: &B::Device,
) -> Result<Loaded<B>, NotLoaded<E>> {
    newest_good_with(newest_first, |bytes| {
        Trainer::from_checkpoint(config.clone(), bytes, device)
    })
}

/// [`newest_good`] with the trainer made from a checkpoint's bytes by `restore` (a resumed run,
/// or a warm start).
pub fn newest_good_with<B: FlowAutodiff, E, Bytes: AsRef<[u8]>>(
    newest_first: impl IntoIterator<Item = (String, Result<Bytes, E>)>,
    restore: impl Fn(&[u8]) -> Result<Trainer<B>, CheckpointError>,
) -> Result<Loaded<B>, NotLoaded<E>> {
    let mut skipped = Vec::new();
    for (name, bytes) in newest_first {
        let bytes = bytes.map_err(NotLoaded::Read)?;
        match restore(bytes.as_ref()) {
            Ok(trainer) => {
                return Ok(Loaded {
                    trainer,
                    name,
                    skipped,
                });
            }
            Err(e) if e.is_damage() => skipped.push((name, e.to_string())),
            Err(e) => return Err(NotLoaded::Refused(name, e)),
        }
    }
    Err(NotLoaded::Damaged(skipped))
}
