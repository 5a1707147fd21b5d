//! Run folders (native only): `parameters.json`, `savings/` checkpoints written atomically,
//! `records/train.csv` one row per epoch, `pic/`, and `summary.json` at the end.
//! A run is resumed exactly from its newest checkpoint: same epoch, optimizer state and sample
//! stream, so a stopped and resumed run ends bit-identical to an uninterrupted one.
//!
//! One process writes a run folder at a time: [`FolderLock`] (an advisory lock on `.lock`,
//! released by the system when the holder exits or dies). SIGINT and SIGTERM (after
//! [`stop_on_signals`]) end training at the end of the current epoch with a checkpoint.

use std::fs;
use std::io::{Read, Seek, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Instant;

use serde::{Deserialize, Serialize};

pub use crate::folder::{
    DEFAULT_HMC_CHAINS, DEFAULT_SAVE_PERIOD, PARAMETERS_FORMAT, Parameters, RunOptions,
};
use crate::folder::{NotLoaded, checkpoint_epoch, checkpoint_name};
use crate::fused::FlowAutodiff;
use crate::hmc::{Chains, HmcConfig, Space, Start};
use crate::host::block_on;
use crate::ising::Target;
use crate::mera::splitmix64;
use crate::observables;
use crate::records::{self, MeasureRow, Record};
use crate::sample;
use crate::stats::tau_int;
use crate::train::{EpochStats, TrainConfig, Trainer};
use rand::SeedableRng;
use rand::rngs::StdRng;

/// `summary.json`, written when a run finishes.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Summary {
    #[serde(rename = "L")]
    pub l: usize,
    pub d: usize,
    #[serde(rename = "T")]
    pub t: f64,
    pub epochs: usize,
    /// Mean F of the last `window` epochs.
    #[serde(rename = "F")]
    pub f: f64,
    /// Standard error of that mean (from the per-epoch standard errors).
    #[serde(rename = "F_stderr")]
    pub f_stderr: f64,
    /// Epochs averaged.
    pub window: usize,
    #[serde(rename = "lnZx")]
    pub ln_zx: f64,
    pub loss_bound: f64,
    pub relative_error: f64,
    pub seconds_per_epoch: f64,
    pub parameters: usize,
    pub folder: PathBuf,
    /// `log q` of the trained flow at the [`crate::analysis::probes`]: the same numbers where
    /// the model is opened (the page, `sample --json`) say it is the same model.
    #[serde(default)]
    pub log_q_probes: Vec<f64>,
}

/// Why a run could not go on; the binaries turn these into a message and exit code.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// Bad input (exit code 2).
    #[error("{0}")]
    Input(String),
    /// Training diverged (exit code 1).
    #[error("{0}")]
    Diverged(String),
    /// I/O (exit code 1).
    #[error("{0}")]
    Io(String),
    /// Stopped by SIGINT or SIGTERM after a checkpoint (exit code 130).
    #[error("{0}")]
    Interrupted(String),
}

impl From<crate::device::DeviceError> for RunError {
    fn from(e: crate::device::DeviceError) -> Self {
        Self::Input(e.to_string())
    }
}

fn io(path: &Path, e: impl std::fmt::Display) -> RunError {
    RunError::Io(format!("{}: {e}", path.display()))
}

/// Writes `bytes` to `path` atomically: a temporary file of a unique name in the same folder,
/// synced, renamed over `path`, then the folder synced (so the rename survives a crash). On an
/// error the temporary file is removed and `path` is left as it was.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), RunError> {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("file");
    let tmp = path.with_file_name(format!(
        ".{name}.{}.{}.tmp",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    ));
    let written = fs::File::create(&tmp)
        .and_then(|mut f| f.write_all(bytes).and_then(|_| f.sync_all()))
        .map_err(|e| io(&tmp, e))
        .and_then(|_| fs::rename(&tmp, path).map_err(|e| io(path, e)));
    if written.is_err() {
        let _ = fs::remove_file(&tmp);
        return written;
    }
    // Not every file system can sync a directory; the rename is done either way.
    if let Some(dir) = path.parent().and_then(|d| fs::File::open(d).ok()) {
        let _ = dir.sync_all();
    }
    Ok(())
}

/// The checkpoints of a run folder, oldest first, with their epochs.
pub fn checkpoints(folder: &Path) -> Vec<(usize, PathBuf)> {
    let mut found: Vec<(usize, PathBuf)> = fs::read_dir(folder.join("savings"))
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let p = e.path();
            let epoch = checkpoint_epoch(p.file_name()?.to_str()?)?;
            Some((epoch, p))
        })
        .collect();
    found.sort();
    found
}

/// Reads a run folder's `parameters.json`; one of a newer format is refused, naming both.
pub fn read_parameters(folder: &Path) -> Result<Parameters, RunError> {
    let path = folder.join("parameters.json");
    let text = fs::read_to_string(&path).map_err(|e| {
        if e.kind() == std::io::ErrorKind::NotFound {
            RunError::Input(format!("{} has no run to load: {} is missing (train a run there first, or pick the run's folder)", folder.display(), path.display()))
        } else {
            io(&path, e)
        }
    })?;
    Parameters::parse(&text, &path.display().to_string()).map_err(RunError::Input)
}

/// Loads the newest good checkpoint of a folder into a trainer. A damaged one (cut short,
/// bytes changed) is skipped with a warning naming it, for the next older one; a checkpoint that
/// is intact but not for this run (other settings, another format) is refused.
pub fn load_trainer<B: FlowAutodiff>(
    folder: &Path,
    config: &TrainConfig,
    device: &B::Device,
) -> Result<Trainer<B>, RunError> {
    newest_trainer(folder, |bytes| {
        Trainer::from_checkpoint(config.clone(), bytes, device)
    })
}

/// A warm start ([`Trainer::warm_started`]) for `config` from `from`: the newest good checkpoint
/// of that run folder, or that checkpoint file.
pub fn warm_start<B: FlowAutodiff>(
    from: &Path,
    config: &TrainConfig,
    device: &B::Device,
) -> Result<Trainer<B>, RunError> {
    let temperature = std::cell::Cell::new(None);
    let trainer = newest_trainer(from, |bytes| {
        let (trainer, stored) = Trainer::warm_started(config.clone(), bytes, device)?;
        temperature.set(stored.map(|c| c.t));
        Ok(trainer)
    })?;
    eprintln!(
        "neuralrg: warm start from {}{}",
        from.display(),
        temperature
            .get()
            .map(|t| format!(" (trained at T = {t:?})"))
            .unwrap_or_default()
    );
    Ok(trainer)
}

/// The trainer `restore` makes of the newest good checkpoint of the run folder `path` (or of the
/// checkpoint file `path`), damaged ones skipped with a warning.
fn newest_trainer<B: FlowAutodiff>(
    path: &Path,
    restore: impl Fn(&[u8]) -> Result<Trainer<B>, crate::checkpoint::CheckpointError>,
) -> Result<Trainer<B>, RunError> {
    let found = if path.is_file() {
        vec![(0, path.to_path_buf())]
    } else {
        checkpoints(path)
    };
    if found.is_empty() {
        return Err(RunError::Input(format!(
            "{} has no checkpoint in savings/ to load",
            path.display()
        )));
    }
    let newest_first = found.iter().rev().map(|(_, path)| {
        (
            path.display().to_string(),
            fs::read(path).map_err(|e| io(path, e)),
        )
    });
    match crate::folder::newest_good_with(newest_first, restore) {
        Ok(loaded) => {
            for (skip, why) in &loaded.skipped {
                eprintln!(
                    "warning: skipped the damaged checkpoint {skip} ({why}); loaded {} (epoch {})",
                    loaded.name, loaded.trainer.epoch
                );
            }
            Ok(loaded.trainer)
        }
        Err(NotLoaded::Read(e)) => Err(e),
        Err(why) => Err(RunError::Input(why.message(&path.display().to_string()))),
    }
}

/// The exclusive right to write one run folder: an advisory lock on its `.lock` file (which
/// holds the holder's pid), released when this value is dropped or the process ends in any way.
#[derive(Debug)]
pub struct FolderLock {
    _file: fs::File,
}

impl FolderLock {
    /// Takes the folder's lock (creating the folder), or refuses naming the holder's pid.
    pub fn acquire(folder: &Path) -> Result<Self, RunError> {
        fs::create_dir_all(folder).map_err(|e| io(folder, e))?;
        let path = folder.join(".lock");
        let mut file = fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(|e| io(&path, e))?;
        match file.try_lock() {
            Ok(()) => {}
            Err(fs::TryLockError::WouldBlock) => {
                let mut pid = String::new();
                let _ = file.read_to_string(&mut pid);
                return Err(RunError::Input(format!(
                    "{} is in use: another train or sweep (pid {}) is writing it; wait for it to end, or stop it",
                    folder.display(),
                    pid.trim()
                )));
            }
            Err(fs::TryLockError::Error(e)) => return Err(io(&path, e)),
        }
        file.set_len(0)
            .and_then(|_| file.rewind())
            .and_then(|_| write!(file, "{}", std::process::id()))
            .and_then(|_| file.flush())
            .map_err(|e| io(&path, e))?;
        Ok(Self { _file: file })
    }
}

/// Whether a process holds the run folder's lock now (a `train` or `sweep` writing it).
pub fn is_being_written(folder: &Path) -> bool {
    fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(folder.join(".lock"))
        .is_ok_and(|f| matches!(f.try_lock(), Err(fs::TryLockError::WouldBlock)))
}

/// Set by SIGINT or SIGTERM once [`stop_on_signals`] is installed.
static STOP: std::sync::OnceLock<Arc<AtomicBool>> = std::sync::OnceLock::new();

/// From now on SIGINT and SIGTERM ask [`train`] to stop at the end of the current epoch, after a
/// checkpoint; a second signal ends the process at once (exit code 130; the newest checkpoint
/// stays). For the command-line programs.
pub fn stop_on_signals() -> Result<(), RunError> {
    let flag = STOP.get_or_init(|| Arc::new(AtomicBool::new(false)));
    for signal in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register_conditional_shutdown(signal, 130, Arc::clone(flag))
            .and_then(|_| signal_hook::flag::register(signal, Arc::clone(flag)))
            .map_err(|e| RunError::Io(format!("cannot install the signal handlers: {e}")))?;
    }
    Ok(())
}

/// From now on the end of standard input (the parent process closed it, or died) asks
/// [`train`] to stop as a signal does: for the processes `sweep --devices` starts.
pub fn stop_when_stdin_closes() {
    let flag = Arc::clone(STOP.get_or_init(|| Arc::new(AtomicBool::new(false))));
    std::thread::spawn(move || {
        let _ = std::io::copy(&mut std::io::stdin().lock(), &mut std::io::sink());
        flag.store(true, Ordering::Relaxed);
    });
}

pub(crate) fn stop_requested() -> bool {
    STOP.get().is_some_and(|f| f.load(Ordering::Relaxed))
}

/// Rewrites a run's records file of `R` keeping the rows of epochs `<= epoch`; returns those rows
/// and the file opened for appending.
fn reopen_records<R: Record>(folder: &Path, epoch: usize) -> Result<(Vec<R>, fs::File), RunError> {
    let path = folder.join(R::FILE);
    // A file that is not there yet has no rows; one that cannot be read is an error (never
    // rewritten to its header).
    let text = match fs::read_to_string(&path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
        Err(e) => return Err(io(&path, e)),
    };
    let rows: Vec<R> = records::from_csv::<R>(&text)
        .into_iter()
        .filter(|r| r.epoch() <= epoch)
        .collect();
    write_atomic(&path, records::to_csv(&rows).as_bytes())?;
    let file = fs::OpenOptions::new()
        .append(true)
        .open(&path)
        .map_err(|e| io(&path, e))?;
    Ok((rows, file))
}

/// Appends one row to a records file opened by [`reopen_records`].
fn append<R: Record>(file: &mut fs::File, folder: &Path, row: &R) -> Result<(), RunError> {
    file.write_all(records::to_line(row).as_bytes())
        .map_err(|e| io(&folder.join(R::FILE), e))
}

/// One measurement during training: a Metropolis-Hastings chain of one batch of flow
/// proposals (acceptance, autocorrelation time of the energy, ESS, observables with errors) and
/// one HMC measurement (10 trajectories) of the persistent latent-space chains (acceptance).
/// Its random stream depends on the seed and the epoch only, so training is unaffected; the HMC
/// chains start afresh when a run is resumed.
fn measure<B: FlowAutodiff>(
    trainer: &Trainer<B>,
    chains: &mut Option<Chains<B>>,
    hmc_chains: usize,
) -> MeasureRow {
    let config = &trainer.config;
    let mut rng = StdRng::seed_from_u64(splitmix64(
        config.seed ^ 0x4D45_4153 ^ splitmix64(trainer.epoch as u64),
    ));
    let flow = trainer.flow_valid();
    let device = flow.mera.device();
    let target = Target::<B::InnerBackend>::new(config.relaxation(), &device);
    let chain = block_on(sample::metropolis(
        &flow,
        &target,
        &mut rng,
        config.optimizer.batch,
        config.optimizer.batch,
    ));
    let energies: Vec<f64> = chain
        .x
        .chunks(config.mera.lattice.sites())
        .map(|x| observables::rao_blackwell(config.mera.lattice, x).1)
        .collect();
    let obs = observables::measure(config.mera.lattice, config.t, &chain.x, &mut rng);
    let hmc = if hmc_chains > 0 {
        let c = chains.get_or_insert_with(|| {
            Chains::new(
                Space::Latent,
                Start::Prior,
                trainer.flow(),
                &mut rng,
                hmc_chains,
            )
        });
        block_on(c.measure(
            trainer.flow(),
            &trainer.target,
            &mut rng,
            HmcConfig::default(),
        ))
        .1
    } else {
        f64::NAN
    };
    MeasureRow::new(
        trainer.epoch,
        (
            sample::ess_fraction(&chain.proposal_log_w),
            chain.acceptance,
            tau_int(&energies),
            hmc,
        ),
        &obs,
    )
}

/// A run opened for training: its trainer, and the lock that keeps other writers out.
pub struct Opened<B: FlowAutodiff> {
    pub trainer: Trainer<B>,
    lock: FolderLock,
}

/// Opens a run in its folder, taking the folder's [`FolderLock`]: a new one (the folder must not
/// hold a run yet; warm-started when its options name an `init` model), or with `resume` the
/// folder's run at its newest good checkpoint.
pub fn open<B: FlowAutodiff>(
    params: &Parameters,
    resume: bool,
    device: &B::Device,
) -> Result<Opened<B>, RunError> {
    let folder = &params.options.folder;
    let lock = FolderLock::acquire(folder)?;
    // Temporary files of a writer killed mid-write (nobody else holds the lock now).
    for dir in [
        folder.clone(),
        folder.join("savings"),
        folder.join("records"),
    ] {
        for entry in fs::read_dir(&dir).into_iter().flatten().flatten() {
            let name = entry.file_name();
            let name = name.to_string_lossy();
            if name.starts_with('.') && name.ends_with(".tmp") {
                let _ = fs::remove_file(entry.path());
            }
        }
    }
    if resume {
        let trainer = load_trainer::<B>(folder, &params.config, device)?;
        return Ok(Opened { trainer, lock });
    }
    if let Some((epoch, _)) = checkpoints(folder).pop() {
        return Err(RunError::Input(format!(
            "{} already holds a run (checkpoint at epoch {epoch}): pass --load to resume it, or choose another --folder",
            folder.display()
        )));
    }
    let trainer = match &params.options.init {
        Some(from) => warm_start::<B>(from, &params.config, device)?,
        None => Trainer::new(params.config.clone(), device)
            .map_err(|e| RunError::Input(e.to_string()))?,
    };
    for sub in ["savings", "records", "pic"] {
        fs::create_dir_all(folder.join(sub)).map_err(|e| io(&folder.join(sub), e))?;
    }
    write_atomic(
        &folder.join(EpochStats::FILE),
        records::to_csv::<EpochStats>(&[]).as_bytes(),
    )?;
    Ok(Opened { trainer, lock })
}

/// Trains an [`open`]ed run up to `params.options.epochs`, writing checkpoints, records and the
/// summary. `on_epoch` sees every epoch's statistics (progress display). After SIGINT or SIGTERM
/// (see [`stop_on_signals`]) it writes a checkpoint at the end of the epoch and returns
/// [`RunError::Interrupted`].
pub fn train<B: FlowAutodiff>(
    opened: Opened<B>,
    params: Parameters,
    mut on_epoch: impl FnMut(&EpochStats, &Trainer<B>),
) -> Result<Summary, RunError> {
    // The lock is held until training returns.
    let Opened {
        mut trainer,
        lock: _lock,
    } = opened;
    let folder = params.options.folder.clone();
    // Checkpoints past the one loaded are damaged ones that loading skipped: set them aside
    // (kept for inspection) so that pruning never counts them as newer than the good ones.
    for (epoch, path) in checkpoints(&folder) {
        if epoch > trainer.epoch {
            let aside = path.with_extension("ckpt.damaged");
            fs::rename(&path, &aside).map_err(|e| io(&path, e))?;
        }
    }
    let json = serde_json::to_string_pretty(&params).expect("parameters serialize");
    write_atomic(&folder.join("parameters.json"), json.as_bytes())?;
    // Keep the records consistent with the checkpoint: drop rows written after it.
    let (mut history, mut csv) = reopen_records::<EpochStats>(&folder, trainer.epoch)?;
    let (_, mut measure_csv) = reopen_records::<MeasureRow>(&folder, trainer.epoch)?;
    let mut chains: Option<Chains<B>> = None;

    let save = |trainer: &Trainer<B>| -> Result<(), RunError> {
        let bytes = trainer
            .to_checkpoint()
            .map_err(|e| RunError::Io(e.to_string()))?;
        write_atomic(
            &folder.join("savings").join(checkpoint_name(trainer.epoch)),
            &bytes,
        )?;
        let all = checkpoints(&folder);
        let keep = params.options.keep.max(1);
        for (_, old) in all.iter().take(all.len().saturating_sub(keep)) {
            let _ = fs::remove_file(old);
        }
        Ok(())
    };

    let start_epoch = trainer.epoch;
    let t0 = Instant::now();
    let mut last = Instant::now();
    while trainer.epoch < params.options.epochs {
        let stats = match block_on(trainer.step()) {
            Ok(s) => s,
            Err(diverged) => {
                let good = checkpoints(&folder)
                    .pop()
                    .map(|(e, _)| {
                        format!(
                            "the last good checkpoint is epoch {e} in {}",
                            folder.join("savings").display()
                        )
                    })
                    .unwrap_or_else(|| "no checkpoint was written yet".into());
                return Err(RunError::Diverged(format!("{diverged}; {good}")));
            }
        };
        let seconds = last.elapsed().as_secs_f64();
        last = Instant::now();
        let row = EpochStats { seconds, ..stats };
        append(&mut csv, &folder, &row)?;
        history.push(row);
        on_epoch(&stats, &trainer);
        if trainer
            .epoch
            .is_multiple_of(params.options.save_period.max(1))
            || trainer.epoch == params.options.epochs
        {
            save(&trainer)?;
            if !params.options.skip_hmc {
                let row = measure(&trainer, &mut chains, params.options.hmc_chains);
                append(&mut measure_csv, &folder, &row)?;
            }
        }
        // A data-parallel group stops at the epoch its trainers agreed on.
        let stop = trainer.stop_agreed().unwrap_or_else(stop_requested);
        if stop && trainer.epoch < params.options.epochs {
            if checkpoints(&folder).last().map(|(e, _)| *e) != Some(trainer.epoch) {
                save(&trainer)?;
            }
            return Err(RunError::Interrupted(format!(
                "stopped by a signal at epoch {} of {}; checkpoint saved in {}",
                trainer.epoch,
                params.options.epochs,
                folder.join("savings").display()
            )));
        }
    }
    if checkpoints(&folder).last().map(|(e, _)| *e) != Some(trainer.epoch) {
        save(&trainer)?;
    }
    let done = trainer.epoch - start_epoch;
    let seconds_per_epoch = if done > 0 {
        t0.elapsed().as_secs_f64() / done as f64
    } else {
        // Resumed at its last epoch: the time the records hold.
        history.iter().map(|r| r.seconds).sum::<f64>() / history.len().max(1) as f64
    };
    if history.is_empty() {
        return Err(RunError::Io(format!(
            "{} has no rows up to epoch {}: cannot summarize the run",
            folder.join(EpochStats::FILE).display(),
            trainer.epoch
        )));
    }
    let mut summary = summarize(&params, &history, seconds_per_epoch, &folder);
    let probes = block_on(crate::analysis::log_q_probes(
        &trainer.flow_valid(),
        params.config.mera.lattice,
    ));
    // JSON has no NaN or infinity: a flow that gives one there is left without the key.
    if probes.iter().all(|v| v.is_finite()) {
        summary.log_q_probes = probes;
    }
    let json = serde_json::to_string_pretty(&summary).expect("summary serializes");
    write_atomic(&folder.join("summary.json"), json.as_bytes())?;
    Ok(summary)
}

/// The summary from the records: mean F over the last `min(20, epochs)` epochs.
fn summarize(
    params: &Parameters,
    history: &[EpochStats],
    seconds_per_epoch: f64,
    folder: &Path,
) -> Summary {
    let window = history.len().min(20);
    let tail = &history[history.len() - window..];
    let w = window.max(1) as f64;
    let f = tail.iter().map(|r| r.f).sum::<f64>() / w;
    let f_stderr = tail
        .iter()
        .map(|r| r.f_stderr * r.f_stderr)
        .sum::<f64>()
        .sqrt()
        / w;
    let rel = params.config.relaxation();
    Summary {
        l: params.config.mera.lattice.side(),
        d: params.config.mera.lattice.dim(),
        t: params.config.t,
        epochs: history.len(),
        f,
        f_stderr,
        window,
        ln_zx: rel.ln_z_x,
        loss_bound: rel.loss_bound(),
        relative_error: rel.relative_error(f),
        seconds_per_epoch,
        parameters: params.config.mera.num_params(),
        folder: folder.to_path_buf(),
        log_q_probes: Vec::new(),
    }
}
