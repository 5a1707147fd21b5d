//! The page's model: one task that owns the training session (a [`Lab`] on the detected
//! backend), fed by a channel of [`Request`]s from the views. What it computes it publishes in
//! [`Outputs`], signals that the views read and draw; it never touches the page itself.
//! Everything it computes comes from the `neuralrg` library, with the library's defaults.

use futures::StreamExt;
use futures::channel::mpsc::{UnboundedReceiver, UnboundedSender, unbounded};
use futures::future::{Either, select};
use leptos::prelude::*;
use neuralrg::analysis::ReceptiveField;
use neuralrg::train::{EpochStats, TrainConfig};

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
/// Train for at most this long before yielding to the browser (milliseconds).
const SLICE_MS: f64 = 40.0;
/// The speed control's choices: milliseconds per step (0: full speed) and their labels.
pub const PACES: [(u32, &str); 4] = [
    (0, "full speed"),
    (250, "4 steps/s"),
    (1000, "1 step/s"),
    (3000, "1 step per 3 s"),
];

/// What the views ask the model for.
#[derive(Debug, Clone, PartialEq)]
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
}

/// The numbers of the statistics line (also read by the end-to-end test).
#[derive(Debug, Clone, Default, PartialEq)]
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
    pub backend_short: RwSignal<&'static str>,
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
}

impl Outputs {
    pub fn new(error: Option<String>) -> Self {
        Self {
            backend: RwSignal::new(None),
            backend_short: RwSignal::new(""),
            running: RwSignal::new(false),
            error: RwSignal::new(error),
            notice: RwSignal::new(None),
            stats: RwSignal::new(Stats::default()),
            train: RwSignal::new(Vec::new()),
            measurements: RwSignal::new(Vec::new()),
            field: RwSignal::new(None),
            mi: RwSignal::new(None),
        }
    }

    /// A fresh session: nothing trained, nothing shown.
    fn clear(&self) {
        self.stats.set(Stats::default());
        self.train.set(Vec::new());
        self.measurements.set(Vec::new());
        self.field.set(None);
        self.mi.set(None);
    }
}

/// Starts the model for `config` (on the CPU when `prefer_cpu`, else WebGPU where there is
/// one); returns the channel its requests go in.
pub fn spawn(prefer_cpu: bool, config: TrainConfig, out: Outputs) -> UnboundedSender<Request> {
    let (requests, rx) = unbounded();
    leptos::task::spawn_local(run(prefer_cpu, config, requests.clone(), rx, out));
    requests
}

fn now_ms() -> f64 {
    web_sys::window()
        .and_then(|w| w.performance())
        .map_or(0.0, |p| p.now())
}

/// Whether the page's tab is hidden (`document.hidden`).
fn tab_hidden() -> bool {
    web_sys::window()
        .and_then(|w| w.document())
        .is_some_and(|d| d.hidden())
}

/// Waits `ms` milliseconds, letting the browser render and handle input meanwhile.
async fn sleep(ms: i32) {
    let promise = js_sys::Promise::new(&mut |resolve, _| {
        if let Some(w) = web_sys::window() {
            let _ = w.set_timeout_with_callback_and_timeout_and_arguments_0(&resolve, ms);
        }
    });
    let _ = wasm_bindgen_futures::JsFuture::from(promise).await;
}

/// The model's task: waits for a request while paused, trains in slices of [`SLICE_MS`] while
/// running (taking the requests that came meanwhile between slices; one step per slice, and a
/// wait for the next step's time, when the speed control slows it down), measures and analyzes.
async fn run(
    prefer_cpu: bool,
    mut config: TrainConfig,
    sender: UnboundedSender<Request>,
    mut requests: UnboundedReceiver<Request>,
    out: Outputs,
) {
    let mut backend = Backend::detect(prefer_cpu, move |why| {
        let _ = sender.unbounded_send(Request::DeviceLost(why));
    })
    .await;
    out.backend.set(Some(backend.label()));
    out.backend_short.set(backend.short());
    let mut lab: Option<Box<dyn Lab>> = None;
    let mut running = false;
    let mut site = DEFAULT_SITE;
    let mut step_ms: Vec<f64> = Vec::new();
    // The speed control: the least time per step, and when the next step may start.
    let (mut pace_ms, mut next_step_at) = (0.0f64, 0.0f64);
    let pause = |running: &mut bool| {
        *running = false;
        out.running.set(false);
    };
    loop {
        // Browsers throttle hidden tabs to about one timer a second or a minute: pause and say
        // so rather than train at that pace.
        if running && tab_hidden() {
            out.notice.set(Some(
                "Paused while the tab is hidden; training goes on when you come back.".into(),
            ));
            sleep(250).await;
        } else if out.notice.get_untracked().is_some() {
            out.notice.set(None);
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
        for r in todo {
            match r {
                Request::Run(on) => {
                    running = on;
                    out.running.set(on);
                }
                Request::Step => single = true,
                Request::Pace(ms) => {
                    pace_ms = f64::from(ms);
                    next_step_at = 0.0;
                }
                Request::Reset(c) => {
                    config = c;
                    pause(&mut running);
                    lab = None;
                    step_ms.clear();
                    out.clear();
                }
                Request::Field(s) => {
                    site = s;
                    field = Some(s);
                }
                Request::MutualInformation => mi = true,
                // Nothing more runs on a lost GPU, and its parameters cannot be read back: stop
                // cleanly, say so, and go on with the CPU backend from a fresh session.
                Request::DeviceLost(why) => {
                    backend = Backend::Cpu {
                        reason: format!("the WebGPU device was lost ({why})"),
                    };
                    out.backend.set(Some(backend.label()));
                    out.backend_short.set(backend.short());
                    pause(&mut running);
                    lab = None;
                    step_ms.clear();
                    out.clear();
                    (single, field, mi) = (false, None, false);
                    out.error.set(Some(format!(
                        "The WebGPU device was lost ({why}): training stopped. The page now uses the CPU; press Start to train again from the beginning."
                    )));
                }
            }
        }
        let training = (running && !tab_hidden() && now_ms() >= next_step_at) || single;
        if !training && field.is_none() && !mi {
            continue;
        }
        if lab.is_none() {
            match backend.lab(config.clone()) {
                Ok(l) => lab = Some(l),
                Err(e) => {
                    out.error.set(Some(e));
                    pause(&mut running);
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
                        out.train.update(|t| t.push(EpochStats { seconds, ..s }));
                        // The last 9 steps, never the first (it compiles the GPU kernels).
                        let from = step_ms
                            .len()
                            .saturating_sub(9)
                            .max(usize::from(step_ms.len() > 1));
                        let mut recent = step_ms[from..].to_vec();
                        recent.sort_by(f64::total_cmp);
                        let f_first = out.train.with_untracked(|t| t[0].f);
                        out.stats.set(Stats {
                            epoch: s.epoch,
                            f: s.f,
                            f_first,
                            relative_error: s.relative_error,
                            ms_per_step: recent[recent.len() / 2],
                        });
                    }
                    Err(d) => {
                        out.error.set(Some(d.to_string()));
                        pause(&mut running);
                        break;
                    }
                }
                let epoch = session.epoch();
                if single || epoch.is_multiple_of(MEASURE_EVERY) {
                    let m = session.measure(MEASURE_SAMPLES).await;
                    out.measurements.update(|ms| ms.push(m));
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
        if let Some(s) = field {
            out.field.set(Some(session.receptive_field(s).await));
        }
        if mi {
            out.mi.set(Some(session.mutual_information().await));
        }
        // Let the browser render and handle input.
        sleep(0).await;
    }
}
