//! The page's model: one task that owns the training session (a [`Lab`] on the detected
//! backend), fed by a channel of [`Request`]s from the views. It runs in a Web Worker
//! ([`crate::worker`]), so that training steps, GPU kernel compilation and measurements never
//! hold up the page: each change of what it computes goes to the page as a [`Change`], which
//! the page applies to [`Outputs`], signals that the views read and draw. It never touches the
//! page itself. Everything it computes comes from the `neuralrg` library, with the library's
//! defaults.

use futures::StreamExt;
use futures::channel::mpsc::{UnboundedReceiver, UnboundedSender};
use futures::future::{Either, select};
use leptos::prelude::*;
use neuralrg::analysis::ReceptiveField;
use neuralrg::folder::{self, ModelFiles, Parameters};
use neuralrg::train::{EpochStats, TrainConfig};
use serde::{Deserialize, Serialize};
use wasm_bindgen::JsCast;

use crate::backend::Backend;
use crate::lab::{Lab, Measurement};

/// Measure (samples, MH, observables) every this many epochs while training.
pub const MEASURE_EVERY: usize = 20;
/// Refresh the receptive field and the mutual information every this many epochs.
pub const ANALYZE_EVERY: usize = 100;
/// Samples per measurement.
const MEASURE_SAMPLES: usize = 512;
/// The site whose receptive field is shown until one is clicked: site (0, 0), at the top of
/// the hierarchy.
pub const DEFAULT_SITE: usize = 0;
/// Train for at most this long before taking the requests that came meanwhile (milliseconds).
const SLICE_MS: f64 = 40.0;
/// The speed control's choices: milliseconds per step (0: full speed) and their labels.
pub const PACES: [(u32, &str); 4] = [
    (0, "full speed"),
    (250, "4 steps/s"),
    (1000, "1 step/s"),
    (3000, "1 step per 3 s"),
];

/// What the views ask the model for.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Request {
    /// Train continuously (`true`) or pause.
    Run(bool),
    /// One training step (while paused).
    Step,
    /// Train at most one step per this many milliseconds while running (0: as fast as the
    /// backend goes), so that a class can watch the panels change.
    Pace(u32),
    /// Drop the session and pause: the next step trains this configuration from scratch.
    Reset(TrainConfig),
    /// The receptive field of a latent site (also the one refreshed while training).
    Field(usize),
    /// The mutual-information matrices.
    MutualInformation,
    /// The browser lost the WebGPU device (the reason): go on on the CPU.
    DeviceLost(String),
    /// Open the model in these files `(path, bytes)` (see [`ModelFiles::sort`]) and pause: the
    /// session goes on from its checkpoint.
    Open(Vec<(String, Vec<u8>)>),
    /// Save the session as a model file (published in [`Outputs::download`]).
    Save,
    /// Whether the page's tab is hidden (`document.hidden`): browsers throttle a hidden page, so
    /// training pauses while it is.
    Hidden(bool),
    /// Destroy the WebGPU device, as a driver reset would (the end-to-end test's
    /// `window.neuralrgLoseDevice()`).
    LoseDevice,
}

/// What the model sends the page: one change of [`Outputs`] each.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Change {
    /// The model's end of the worker is listening.
    Ready,
    /// The backend, in words and as `webgpu` or `cpu`.
    Backend {
        label: String,
        short: String,
    },
    Running(bool),
    Error(Option<String>),
    Notice(Option<String>),
    /// A fresh session: nothing trained, nothing shown.
    Clear,
    Stats(Stats),
    /// The next row of the training history.
    Train(EpochStats),
    Measurement(Measurement),
    Field(ReceptiveField),
    /// The mutual-information matrices `(latent z, physical x)`.
    MutualInformation(Vec<f64>, Vec<f64>),
    Model(ModelInfo),
    /// The configuration the model now trains (after a reset, or of a model opened): the
    /// controls follow it, so that they never show another one.
    Config(TrainConfig),
    /// A model file to download: its name and bytes.
    Download(String, Vec<u8>),
    /// The model stopped on a panic (its message).
    Fatal(String),
}

impl Change {
    /// The backend the model trains on, as the page names it.
    fn backend(backend: &Backend) -> Self {
        Self::Backend {
            label: backend.label(),
            short: backend.short().into(),
        }
    }
}

/// The model opened or saved last, as the page shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelInfo {
    /// What was done, in words: opened from which checkpoint, or saved as which file.
    pub what: String,
    /// The epoch of its checkpoint.
    pub epoch: usize,
    /// `log q` at the [`neuralrg::analysis::probes`] (the command line prints the same numbers
    /// for the same model).
    pub log_q: Vec<f64>,
}

/// The numbers of the statistics line (also read by the end-to-end test).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Stats {
    pub epoch: usize,
    pub f: f64,
    pub f_first: f64,
    pub relative_error: f64,
    /// Median wall time of the last 9 steps (never the first, which compiles GPU kernels).
    pub ms_per_step: f64,
}

/// The model's state as the views see it: signals that the model writes (`error` is also
/// written by the controls, for a setting they refuse).
#[derive(Clone, Copy)]
pub struct Outputs {
    /// The backend, in words, once detected.
    pub backend: RwSignal<Option<String>>,
    /// `webgpu` or `cpu`.
    pub backend_short: RwSignal<String>,
    pub running: RwSignal<bool>,
    pub error: RwSignal<Option<String>>,
    /// A passing state of the session (for example paused while the tab is hidden).
    pub notice: RwSignal<Option<String>>,
    pub stats: RwSignal<Stats>,
    /// One row per epoch of this session (as a run folder's `records/train.csv`).
    pub train: RwSignal<Vec<EpochStats>>,
    /// The measurements of this session, in order.
    pub measurements: RwSignal<Vec<Measurement>>,
    /// The newest receptive field.
    pub field: RwSignal<Option<ReceptiveField>>,
    /// The newest mutual-information matrices `(latent z, physical x)`.
    pub mi: RwSignal<Option<(Vec<f64>, Vec<f64>)>>,
    /// The model opened or saved last in this session.
    pub model: RwSignal<Option<ModelInfo>>,
    /// The configuration the model trains (the controls follow it).
    pub config: RwSignal<Option<TrainConfig>>,
    /// A model file to download: `(file name, bytes)` (the views download it and clear this).
    pub download: RwSignal<Option<(String, Vec<u8>)>>,
}

impl Outputs {
    pub fn new(error: Option<String>) -> Self {
        Self {
            backend: RwSignal::new(None),
            backend_short: RwSignal::new(String::new()),
            running: RwSignal::new(false),
            error: RwSignal::new(error),
            notice: RwSignal::new(None),
            stats: RwSignal::new(Stats::default()),
            train: RwSignal::new(Vec::new()),
            measurements: RwSignal::new(Vec::new()),
            field: RwSignal::new(None),
            mi: RwSignal::new(None),
            model: RwSignal::new(None),
            config: RwSignal::new(None),
            download: RwSignal::new(None),
        }
    }

    /// Applies one change from the model (all but [`Change::Ready`] and [`Change::Fatal`],
    /// which [`crate::worker`] handles).
    pub fn apply(&self, change: Change) {
        match change {
            Change::Ready | Change::Fatal(_) => {}
            Change::Backend { label, short } => {
                self.backend.set(Some(label));
                self.backend_short.set(short);
            }
            Change::Running(on) => self.running.set(on),
            Change::Error(e) => self.error.set(e),
            Change::Notice(n) => self.notice.set(n),
            Change::Clear => {
                self.stats.set(Stats::default());
                self.train.set(Vec::new());
                self.measurements.set(Vec::new());
                self.field.set(None);
                self.mi.set(None);
                self.model.set(None);
            }
            Change::Stats(s) => self.stats.set(s),
            Change::Train(row) => self.train.update(|t| t.push(row)),
            Change::Measurement(m) => self.measurements.update(|ms| ms.push(m)),
            Change::Field(f) => self.field.set(Some(f)),
            Change::MutualInformation(z, x) => self.mi.set(Some((z, x))),
            Change::Model(info) => self.model.set(Some(info)),
            Change::Config(c) => self.config.set(Some(c)),
            Change::Download(name, bytes) => self.download.set(Some((name, bytes))),
        }
    }
}

/// The model's end of [`Outputs`]: sends each change to the page, and keeps the little of it
/// that the model reads back.
struct Publish<F: Fn(Change)> {
    post: F,
    /// Whether a notice is shown.
    notice: bool,
    /// The first F of the session.
    f_first: Option<f64>,
}

impl<F: Fn(Change)> Publish<F> {
    fn send(&self, change: Change) {
        (self.post)(change);
    }

    fn clear(&mut self) {
        self.f_first = None;
        self.send(Change::Clear);
    }

    fn notice(&mut self, notice: Option<String>) {
        if notice.is_some() || self.notice {
            self.notice = notice.is_some();
            self.send(Change::Notice(notice));
        }
    }
}

/// The global scope's property `name` (the model runs in a worker or, in tests, a window).
fn global(name: &str) -> wasm_bindgen::JsValue {
    js_sys::Reflect::get(&js_sys::global(), &name.into()).unwrap_or_default()
}

fn now_ms() -> f64 {
    global("performance")
        .dyn_into::<web_sys::Performance>()
        .map_or(0.0, |p| p.now())
}

/// Waits `ms` milliseconds, letting the event loop take messages meanwhile.
async fn sleep(ms: i32) {
    let promise = js_sys::Promise::new(&mut |resolve, _| {
        if let Ok(set_timeout) = global("setTimeout").dyn_into::<js_sys::Function>() {
            let _ = set_timeout.call2(&js_sys::global(), &resolve, &ms.into());
        }
    });
    let _ = wasm_bindgen_futures::JsFuture::from(promise).await;
}

/// The model's task: waits for a request while paused, trains in slices of [`SLICE_MS`] while
/// running (taking the requests that came meanwhile between slices; one step per slice, and a
/// wait for the next step's time, when the speed control slows it down), measures and analyzes.
/// `sender` is the requests' own channel (the lost-device callback sends on it); `post` sends
/// a change to the page.
pub async fn run(
    prefer_cpu: bool,
    mut config: TrainConfig,
    sender: UnboundedSender<Request>,
    mut requests: UnboundedReceiver<Request>,
    post: impl Fn(Change),
) {
    let mut out = Publish {
        post,
        notice: false,
        f_first: None,
    };
    let mut backend = Backend::detect(prefer_cpu, move |why| {
        let _ = sender.unbounded_send(Request::DeviceLost(why));
    })
    .await;
    out.send(Change::backend(&backend));
    let mut lab: Option<Box<dyn Lab>> = None;
    let mut running = false;
    let mut hidden = false;
    let mut site = DEFAULT_SITE;
    let mut step_ms: Vec<f64> = Vec::new();
    // The speed control: the least time per step, and when the next step may start.
    let (mut pace_ms, mut next_step_at) = (0.0f64, 0.0f64);
    let pause = |running: &mut bool, out: &Publish<_>| {
        *running = false;
        out.send(Change::Running(false));
    };
    loop {
        // Browsers throttle hidden tabs to about one timer a second or a minute: pause and say
        // so rather than train at that pace.
        if running && hidden {
            out.notice(Some(
                "Paused while the tab is hidden; training goes on when you come back.".into(),
            ));
            sleep(250).await;
        } else {
            out.notice(None);
        }
        // Paused: wait for the next request. Running: take those that came during the slice.
        let mut todo = Vec::new();
        if !running {
            match requests.next().await {
                Some(r) => todo.push(r),
                None => return,
            }
        } else if now_ms() < next_step_at {
            // Slowed down: wait for the next step's time, taking any request at once.
            let wait = Box::pin(sleep((next_step_at - now_ms()).ceil() as i32));
            if let Either::Left((r, _)) = select(requests.next(), wait).await {
                match r {
                    Some(r) => todo.push(r),
                    None => return,
                }
            }
        }
        while let Ok(r) = requests.try_recv() {
            todo.push(r);
        }
        let (mut single, mut field, mut mi) = (false, None, false);
        let (mut measure, mut save) = (false, false);
        for r in todo {
            match r {
                Request::Run(on) => {
                    running = on;
                    out.send(Change::Running(on));
                }
                Request::Step => single = true,
                Request::Pace(ms) => {
                    pace_ms = f64::from(ms);
                    next_step_at = 0.0;
                }
                Request::Reset(c) => {
                    config = c;
                    out.send(Change::Config(config.clone()));
                    // The chosen site may not exist on the new lattice.
                    site = DEFAULT_SITE;
                    pause(&mut running, &out);
                    lab = None;
                    step_ms.clear();
                    out.clear();
                }
                // A site of the lattice in force (a click on the old grid may cross a Reset).
                Request::Field(s) if s < config.mera.lattice.sites() => {
                    site = s;
                    field = Some(s);
                }
                Request::Field(_) => {}
                Request::MutualInformation => mi = true,
                // Nothing more runs on a lost GPU, and its parameters cannot be read back: stop
                // cleanly, say so, and go on with the CPU backend from a fresh session.
                Request::DeviceLost(why) => {
                    backend = Backend::Cpu {
                        reason: format!("the WebGPU device was lost ({why})"),
                    };
                    out.send(Change::backend(&backend));
                    pause(&mut running, &out);
                    lab = None;
                    step_ms.clear();
                    out.clear();
                    (single, field, mi, measure, save) = (false, None, false, false, false);
                    out.send(Change::Error(Some(format!(
                        "The WebGPU device was lost ({why}): training stopped. The page now uses the CPU; press Start to train again from the beginning."
                    ))));
                }
                Request::Open(files) => match open(&backend, files).await {
                    Ok((opened, info)) => {
                        config = opened.lab.config().clone();
                        site = DEFAULT_SITE;
                        pause(&mut running, &out);
                        step_ms.clear();
                        out.clear();
                        out.send(Change::Error(None));
                        out.send(Change::Stats(Stats {
                            epoch: info.epoch,
                            f: f64::NAN,
                            f_first: f64::NAN,
                            relative_error: f64::NAN,
                            ms_per_step: 0.0,
                        }));
                        out.send(Change::Config(config.clone()));
                        out.send(Change::Model(info));
                        lab = Some(opened.lab);
                        // Show what the model does, without training it.
                        (single, measure, field, mi) = (false, true, Some(site), true);
                    }
                    Err(e) => out.send(Change::Error(Some(format!("Cannot open the model: {e}")))),
                },
                Request::Save => save = true,
                Request::Hidden(h) => hidden = h,
                Request::LoseDevice => {
                    if let Ok(lose) = global("neuralrgLoseDevice").dyn_into::<js_sys::Function>() {
                        let _ = lose.call0(&js_sys::global());
                    }
                }
            }
        }
        let training = (running && !hidden && now_ms() >= next_step_at) || single;
        if !training && field.is_none() && !mi && !measure && !save {
            continue;
        }
        if lab.is_none() {
            match backend.lab(config.clone()) {
                Ok(l) => lab = Some(l),
                Err(e) => {
                    out.send(Change::Error(Some(e)));
                    pause(&mut running, &out);
                    continue;
                }
            }
        }
        let session = lab.as_mut().expect("session created above");
        if training {
            let slice = now_ms();
            loop {
                let t0 = now_ms();
                match session.step().await {
                    Ok(s) => {
                        step_ms.push(now_ms() - t0);
                        let seconds = step_ms[step_ms.len() - 1] / 1000.0;
                        out.send(Change::Train(EpochStats { seconds, ..s }));
                        // The last 9 steps, never the first (it compiles the GPU kernels).
                        let from = step_ms
                            .len()
                            .saturating_sub(9)
                            .max(usize::from(step_ms.len() > 1));
                        let mut recent = step_ms[from..].to_vec();
                        recent.sort_by(f64::total_cmp);
                        let f_first = *out.f_first.get_or_insert(s.f);
                        out.send(Change::Stats(Stats {
                            epoch: s.epoch,
                            f: s.f,
                            f_first,
                            relative_error: s.relative_error,
                            ms_per_step: recent[recent.len() / 2],
                        }));
                    }
                    Err(d) => {
                        out.send(Change::Error(Some(d.to_string())));
                        pause(&mut running, &out);
                        break;
                    }
                }
                let epoch = session.epoch();
                if single || epoch.is_multiple_of(MEASURE_EVERY) {
                    out.send(Change::Measurement(session.measure(MEASURE_SAMPLES).await));
                }
                if epoch.is_multiple_of(ANALYZE_EVERY) {
                    field = Some(site);
                    mi = true;
                }
                if pace_ms > 0.0 {
                    next_step_at = t0 + pace_ms;
                }
                if single || !running || pace_ms > 0.0 || now_ms() - slice > SLICE_MS {
                    break;
                }
            }
        }
        if measure {
            out.send(Change::Measurement(session.measure(MEASURE_SAMPLES).await));
        }
        if save {
            match save_model(session.as_ref()).await {
                Ok((info, name, bytes)) => {
                    out.send(Change::Model(info));
                    out.send(Change::Download(name, bytes));
                }
                Err(e) => out.send(Change::Error(Some(format!("Cannot save the model: {e}")))),
            }
        }
        if let Some(s) = field {
            out.send(Change::Field(session.receptive_field(s).await));
        }
        if mi {
            let (z, x) = session.mutual_information().await;
            out.send(Change::MutualInformation(z, x));
        }
        // Take the messages that came meanwhile.
        sleep(0).await;
    }
}

/// Opens the model in `files` on `backend`, within what the page offers ([`crate::page_limits`]).
async fn open(
    backend: &Backend,
    files: Vec<(String, Vec<u8>)>,
) -> Result<(crate::lab::Opened, ModelInfo), String> {
    let files = ModelFiles::sort(files)?;
    crate::page_limits(&files.config)?;
    let opened = backend.open(&files)?;
    let epoch = opened.lab.epoch();
    let mut what = format!("Opened {} (epoch {epoch}", opened.checkpoint);
    if let Some(p) = &files.parameters {
        what.push_str(&format!(
            ", trained on {} with neuralrg {}",
            p.backend, p.version
        ));
    }
    what.push(')');
    for (name, why) in &opened.skipped {
        what.push_str(&format!("; passed over the damaged {name} ({why})"));
    }
    let log_q = opened.lab.log_q_probes().await;
    Ok((opened, ModelInfo { what, epoch, log_q }))
}

/// The session as a model file: a run folder with its `parameters.json` and checkpoint in a
/// tar archive ([`folder::pack`]); with its description and file name.
async fn save_model(session: &dyn Lab) -> Result<(ModelInfo, String, Vec<u8>), String> {
    let epoch = session.epoch();
    let checkpoint = session.checkpoint().await?;
    let params = Parameters::of_model(session.config().clone(), epoch, session.backend_name());
    let seconds = (js_sys::Date::now() / 1000.0) as u64;
    let bytes = folder::pack(&params, epoch, &checkpoint, seconds)?;
    let run = &params.options.name;
    let name = format!("{run}-epoch{epoch}.tar");
    let log_q = session.log_q_probes().await;
    let what = format!(
        "Saved {name} (epoch {epoch}): `tar xf {name}` makes the run folder {run}, which sample --folder and analyze --folder read and train --load --epochs N trains on"
    );
    Ok((ModelInfo { what, epoch, log_q }, name, bytes))
}
