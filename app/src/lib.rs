//! # NeuralRG in the browser
//!
//! A Leptos (client-side rendered) page that trains the `neuralrg` flow on WebGPU (Burn's wgpu
//! backend; Burn's Flex CPU backend when the browser has no adapter), samples from it and shows
//! what it learned: loss against the exact bound, sampled configurations, Metropolis-Hastings
//! acceptance and effective sample size, energy and `<m^2>` against exact values, receptive
//! fields and mutual information. The whole setup lives in the URL query, so a configuration is
//! a link.
//!
//! A model ([`model`]: one task that owns the training session, fed by a channel of requests)
//! and views (the components here, which send requests and draw what the model publishes). The
//! model runs in a Web Worker ([`worker`]), so the page stays responsive while it trains.

pub mod backend;
pub mod lab;
pub mod model;
pub mod panels;
pub mod worker;

use futures::channel::mpsc::UnboundedSender;
use leptos::prelude::*;
use neuralrg::lattice::T_C;
use neuralrg::observables::exact_values;
use neuralrg::train::TrainConfig;
use wasm_bindgen::prelude::*;

use crate::model::{Outputs, PACES, Request};
use crate::panels::Canvases;

/// Shows panics in the page (the `#fatal` box of index.html) as well as in the console, so a
/// failure is never a silently dead page.
pub fn install_panic_hook() {
    std::panic::set_hook(Box::new(|info| {
        console_error_panic_hook::hook(info);
        show_fatal(&info.to_string());
    }));
}

fn show_fatal(message: &str) {
    if let Some(el) = web_sys::window()
        .and_then(|w| w.document())
        .and_then(|d| d.get_element_by_id("fatal"))
    {
        el.set_text_content(Some(&format!(
            "The app stopped: {message}. Reload the page to start again."
        )));
        let _ = el.remove_attribute("hidden");
    }
}

/// Mounts the app on the page's body.
pub fn start() {
    install_panic_hook();
    leptos::mount::mount_to_body(App);
}

/// The views' state: the setup being edited, the chosen site, the canvases, the model's
/// outputs and its request channel (all cheap to copy into closures).
#[derive(Clone, Copy)]
struct Ui {
    config: RwSignal<TrainConfig>,
    prefer_cpu: RwSignal<bool>,
    /// What the address hides (`hide=`), kept in the address.
    hide: StoredValue<Vec<String>>,
    selected: RwSignal<Option<usize>>,
    canvases: Canvases,
    out: Outputs,
    requests: StoredValue<UnboundedSender<Request>>,
}

impl Ui {
    fn request(&self, r: Request) {
        // The model lives as long as the page: a send cannot fail.
        self.requests.with_value(|q| {
            let _ = q.unbounded_send(r);
        });
    }

    /// Sets one setting by its name (the configuration's serde name, as in the URL), parsed and
    /// validated by the library within [`page_config`]'s limits; a new lattice gets the full MERA
    /// depth. A valid change resets the session and updates the address; an invalid one is shown
    /// and not applied.
    fn edit(&self, key: &str, value: &str) {
        let mut base = self.config.get_untracked();
        if key == "L" || key == "d" {
            base.mera.depth = None;
        }
        match page_config(&format!("{}&{key}={value}", base.to_query())) {
            Ok(c) => {
                self.out.error.set(None);
                self.config.set(c.clone());
                self.request(Request::Reset(c));
                self.write_url();
            }
            Err(e) => {
                self.out.error.set(Some(e));
                // Put the controls back to the configuration in force.
                self.config.update(|_| {});
            }
        }
    }

    /// Whether the address hides `part` (a panel or a part of the page, [`HIDEABLE`]).
    fn hides(&self, part: &str) -> bool {
        self.hide.with_value(|h| h.iter().any(|p| p == part))
    }

    /// Starts over from the preset `name` (nothing for an unknown name).
    fn preset(&self, name: &str) {
        if let Some(c) = presets()
            .iter()
            .find(|p| p.name == name)
            .and_then(|p| page_config(&p.query).ok())
        {
            self.out.error.set(None);
            self.config.set(c.clone());
            self.request(Request::Reset(c));
            self.write_url();
        }
    }

    /// The setup as the page's address (`history.replaceState`: no reload, no history spam).
    fn write_url(&self) {
        let mut query = self.config.get_untracked().to_query();
        if self.prefer_cpu.get_untracked() {
            query.push_str("&cpu=true");
        }
        let hide = self.hide.get_value();
        if !hide.is_empty() {
            query.push_str(&format!("&hide={}", hide.join(",")));
        }
        if let Some(w) = web_sys::window()
            && let Ok(h) = w.history()
        {
            let _ = h.replace_state_with_url(&JsValue::NULL, "", Some(&format!("?{query}")));
        }
    }
}

/// A named starting point for a lecture, chosen in the page or with `?preset=NAME`.
#[derive(Debug, Clone, PartialEq)]
pub struct Preset {
    pub name: &'static str,
    pub label: &'static str,
    /// Its settings in the address form (the rest are the defaults).
    pub query: String,
}

/// The page's presets.
pub fn presets() -> Vec<Preset> {
    let tc = T_C;
    [
        (
            "first-look",
            "first look: 4x4 at T_c",
            format!("L=4&d=2&T={tc}&nlayers=4&nmlp=2&nhidden=10&batch=256&lr=0.005"),
        ),
        ("critical", "critical 8x8", format!("L=8&d=2&T={tc}")),
        ("ordered", "ordered 8x8, T=1.8", "L=8&d=2&T=1.8".to_string()),
        (
            "disordered",
            "disordered 8x8, T=3.2",
            "L=8&d=2&T=3.2".to_string(),
        ),
        ("chain", "1D chain, L=16, T=1", "L=16&d=1&T=1".to_string()),
    ]
    .into_iter()
    .map(|(name, label, query)| Preset { name, label, query })
    .collect()
}

/// What `hide=` can hide: the panels by name, and parts of the page.
pub const HIDEABLE: [&str; 11] = [
    "header",
    "controls",
    "stats",
    "loss",
    "samples",
    "rg",
    "rates",
    "observables",
    "field",
    "mi",
    "footer",
];

/// The page's own address keys, beside the settings (named as in `parameters.json`).
pub const PAGE_KEYS: [&str; 3] = ["cpu", "preset", "hide"];

/// The page's address, read.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Address {
    /// The settings: the preset's, then those the address gives (which win).
    pub settings: String,
    /// Train on the CPU even where there is WebGPU (`cpu=true`).
    pub cpu: bool,
    /// The parts hidden (`hide=controls,mi`).
    pub hide: Vec<String>,
    /// What in the address the page does not know, one line each (shown in the page).
    pub unknown: Vec<String>,
}

/// Reads the page's query (without `?`): presets, hidden parts, the CPU switch and the
/// settings; names what it does not know instead of ignoring it.
pub fn read_address(query: &str) -> Address {
    let mut a = Address::default();
    let mut preset = String::new();
    for (key, value) in query.split('&').filter_map(|kv| kv.split_once('=')) {
        match key {
            "cpu" => a.cpu = value == "true",
            "preset" => match presets().into_iter().find(|p| p.name == value) {
                Some(p) => preset = p.query,
                None => a.unknown.push(format!(
                    "preset={value} is no preset (there are {})",
                    presets()
                        .iter()
                        .map(|p| p.name)
                        .collect::<Vec<_>>()
                        .join(", ")
                )),
            },
            "hide" => {
                for part in value.split(',').filter(|p| !p.is_empty()) {
                    if HIDEABLE.contains(&part) {
                        a.hide.push(part.to_string());
                    } else {
                        a.unknown.push(format!(
                            "hide={part}: nothing of that name to hide (there are {})",
                            HIDEABLE.join(", ")
                        ));
                    }
                }
            }
            _ => {}
        }
    }
    let unknown: Vec<String> = TrainConfig::unknown_in_query(query)
        .into_iter()
        .filter(|k| !PAGE_KEYS.contains(&k.as_str()))
        .collect();
    if !unknown.is_empty() {
        a.unknown.push(format!(
            "the address has keys that are no setting, ignored: {} (settings are named as in parameters.json; the page's own keys are {})",
            unknown.join(", "),
            PAGE_KEYS.join(", ")
        ));
    }
    a.settings = if preset.is_empty() {
        query.to_string()
    } else {
        format!("{preset}&{query}")
    };
    a
}

/// Starts a download of `url` (a data or object URL) as the file `name`.
fn download_url(url: &str, name: &str) {
    if let Some(a) = web_sys::window()
        .and_then(|w| w.document())
        .and_then(|d| d.create_element("a").ok())
    {
        let a: web_sys::HtmlAnchorElement = a.unchecked_into();
        a.set_href(url);
        a.set_download(name);
        a.click();
    }
}

/// Downloads `text` as the file `name` (of type `mime`).
fn download_text(text: &str, name: &str, mime: &str) -> Result<(), String> {
    download_blob(&js_sys::Array::of1(&JsValue::from_str(text)), name, mime)
}

/// Downloads `bytes` as the file `name` (of type `mime`).
fn download_bytes(bytes: &[u8], name: &str, mime: &str) -> Result<(), String> {
    let data = js_sys::Uint8Array::from(bytes);
    download_blob(&js_sys::Array::of1(&data), name, mime)
}

/// Downloads a blob of `parts` (strings or byte arrays) as the file `name`.
fn download_blob(parts: &js_sys::Array, name: &str, mime: &str) -> Result<(), String> {
    let bag = web_sys::BlobPropertyBag::new();
    bag.set_type(mime);
    let blob = web_sys::Blob::new_with_blob_sequence_and_options(parts, &bag)
        .map_err(|e| format!("{e:?}"))?;
    let url = web_sys::Url::create_object_url_with_blob(&blob).map_err(|e| format!("{e:?}"))?;
    download_url(&url, name);
    // The download has started from the URL; it is no longer needed after a while.
    let revoke = wasm_bindgen::closure::Closure::once_into_js(move || {
        let _ = web_sys::Url::revoke_object_url(&url);
    });
    if let Some(w) = web_sys::window() {
        let _ =
            w.set_timeout_with_callback_and_timeout_and_arguments_0(revoke.unchecked_ref(), 60_000);
    }
    Ok(())
}

/// Whether a file of this name can hold a model (what [`neuralrg::folder::ModelFiles`] reads);
/// the other files of a picked run folder are not read.
fn holds_model(name: &str) -> bool {
    name == "parameters.json" || name.ends_with(".ckpt") || name.ends_with(".tar")
}

/// Reads the files chosen or dropped that can hold a model and asks the model to open them.
fn open_files(ui: Ui, files: web_sys::FileList) {
    let chosen: Vec<web_sys::File> = (0..files.length())
        .filter_map(|i| files.get(i))
        .filter(|f| holds_model(&f.name()))
        .collect();
    leptos::task::spawn_local(async move {
        let mut read = Vec::new();
        for file in chosen {
            // In a picked folder, the path within it (run/savings/epoch-000100.ckpt).
            let path = js_sys::Reflect::get(&file, &"webkitRelativePath".into())
                .ok()
                .and_then(|p| p.as_string())
                .filter(|p| !p.is_empty())
                .unwrap_or_else(|| file.name());
            match wasm_bindgen_futures::JsFuture::from(file.array_buffer()).await {
                Ok(buffer) => read.push((path, js_sys::Uint8Array::new(&buffer).to_vec())),
                Err(e) => {
                    ui.out.error.set(Some(format!("Cannot read {path}: {e:?}")));
                    return;
                }
            }
        }
        ui.request(Request::Open(read));
    });
}

/// Downloads a canvas as `neuralrg-<name>.png`.
fn download_canvas(canvas: NodeRef<leptos::html::Canvas>, name: &str) -> Result<(), String> {
    let c = canvas.get_untracked().ok_or("the panel is not shown")?;
    let url = c.to_data_url().map_err(|e| format!("{e:?}"))?;
    download_url(&url, &format!("neuralrg-{name}.png"));
    Ok(())
}

/// Lattice sides the page offers (its `L` control).
pub const PAGE_SIDES: [usize; 3] = [4, 8, 16];

/// The temperatures the page's slider offers.
pub const PAGE_TEMPERATURES: (f64, f64) = (0.5, 5.0);

/// Memory a training step in the page may take: a tab's WebAssembly memory is at most 4 GiB,
/// and well before that the page would stall.
pub const PAGE_MEMORY: u64 = 1 << 30;

/// A configuration from the page's query (its URL form), accepted only within what the page
/// offers ([`page_limits`]). The error names the value and what is allowed.
pub fn page_config(query: &str) -> Result<TrainConfig, String> {
    let c = TrainConfig::from_query(query).map_err(|e| e.to_string())?;
    page_limits(&c)?;
    Ok(c)
}

/// Whether the page offers `c` (set in the page, or of a model opened there): its lattice sides,
/// its temperatures, and a training step that fits [`PAGE_MEMORY`]. The error names the value
/// and what is allowed.
pub fn page_limits(c: &TrainConfig) -> Result<(), String> {
    let l = c.mera.lattice.side();
    if !PAGE_SIDES.contains(&l) {
        return Err(format!(
            "L = {l} is not offered in the page: 4, 8 or 16 (train larger lattices with the command line)"
        ));
    }
    if !(PAGE_TEMPERATURES.0..=PAGE_TEMPERATURES.1).contains(&c.t) {
        return Err(format!(
            "T = {} is not offered in the page: from {} to {} (the slider's range)",
            c.t, PAGE_TEMPERATURES.0, PAGE_TEMPERATURES.1
        ));
    }
    neuralrg::resources::check(
        &format!("training at L={l} with batch {}", c.optimizer.batch),
        neuralrg::resources::training_bytes(c, 4),
        Some(PAGE_MEMORY),
    )
}

/// The page's query string (without `?`).
fn url_query() -> String {
    web_sys::window()
        .and_then(|w| w.location().search().ok())
        .unwrap_or_default()
        .trim_start_matches('?')
        .to_string()
}

/// Shows a drawing or download failure in the page's error area.
fn report(result: Result<(), String>, ui: Ui) {
    if let Err(e) = result {
        ui.out.error.set(Some(format!("drawing failed: {e}")));
    }
}

/// The page's measurements as a run folder's measurement rows (what the page does not measure
/// is NaN).
fn measure_rows(ms: &[lab::Measurement]) -> Vec<neuralrg::records::MeasureRow> {
    ms.iter()
        .map(|m| neuralrg::records::MeasureRow {
            epoch: m.epoch,
            ess: m.ess,
            mh_acceptance: m.acceptance,
            energy: m.energy.0,
            energy_err: m.energy.1,
            m2: m.m2.0,
            m2_err: m.m2.1,
            ..Default::default()
        })
        .collect()
}

/// The panels draw what the model publishes, each when its data change.
fn draw_panels(ui: Ui) {
    let c = ui.canvases;
    // Exact energy and <m^2> of the setup (computed once per setup).
    let exact = Memo::new(move |_| ui.config.with(|c| exact_values(c.mera.lattice, c.t)));
    Effect::new(move |_| {
        let bound = ui.config.with(|c| c.relaxation().loss_bound());
        ui.out.train.with(|train| {
            if train.is_empty() {
                report(panels::blank(&[c.loss]), ui);
            } else {
                report(panels::loss(c, train, bound), ui);
            }
        });
    });
    Effect::new(move |_| {
        let lattice = ui.config.with_untracked(|c| c.mera.lattice);
        let epochs = ui.out.stats.with_untracked(|s| s.epoch.max(1) as f64);
        let exact = exact.get_untracked();
        ui.out.measurements.with(|ms| {
            report(
                if ms.is_empty() {
                    panels::blank(&[c.samples, c.rg, c.rates, c.observables])
                } else {
                    panels::measurements(c, epochs, ms, lattice, exact.energy_per_site, exact.m2)
                },
                ui,
            );
        });
    });
    Effect::new(move |_| {
        let lattice = ui.config.with_untracked(|c| c.mera.lattice);
        ui.out.field.with(|f| match f {
            Some(f) => report(panels::field(c, lattice, f), ui),
            None => report(panels::blank(&[c.field]), ui),
        });
    });
    Effect::new(move |_| {
        let n = ui.config.with_untracked(|c| c.mera.lattice.sites());
        ui.out.mi.with(|mi| match mi {
            Some((z, x)) => report(panels::mutual_information(c, n, z.clone(), x.clone()), ui),
            None => report(panels::blank(&[c.mi]), ui),
        });
    });
}

/// The whole page.
#[component]
pub fn App() -> impl IntoView {
    let query = url_query();
    let address = read_address(&query);
    let (config, url_error) = match page_config(&address.settings) {
        Ok(c) => (c, None),
        Err(e) => (
            TrainConfig::from_query("").expect("the defaults are valid"),
            Some(format!(
                "the address holds a bad setting ({e}); using the defaults"
            )),
        ),
    };
    let prefer_cpu = address.cpu;
    let unknown = address.unknown.clone();
    let out = Outputs::new(url_error);
    let requests = worker::spawn(prefer_cpu, config.clone(), out);
    let ui = Ui {
        config: RwSignal::new(config),
        prefer_cpu: RwSignal::new(prefer_cpu),
        hide: StoredValue::new(address.hide),
        selected: RwSignal::new(None),
        canvases: Canvases::new(),
        out,
        requests: StoredValue::new(requests),
    };
    ui.write_url();
    draw_panels(ui);
    // The controls and the address follow the configuration the model trains (that of a model
    // opened, or the last reset's, when a click crossed an open).
    Effect::new(move |_| {
        if let Some(c) = ui.out.config.get()
            && ui.config.with_untracked(|now| *now != c)
        {
            ui.selected.set(None);
            ui.config.set(c);
            ui.write_url();
        }
    });
    // A model saved: download its file.
    Effect::new(move |_| {
        if let Some((name, bytes)) = ui.out.download.get() {
            report(download_bytes(&bytes, &name, "application/x-tar"), ui);
            ui.out.download.set(None);
        }
    });
    // Model files dropped anywhere on the page are opened.
    let _ = window_event_listener(leptos::ev::dragover, |e| e.prevent_default());
    let _ = window_event_listener(leptos::ev::drop, move |e| {
        e.prevent_default();
        if let Some(files) = e.data_transfer().and_then(|d| d.files()) {
            open_files(ui, files);
        }
    });
    let c = ui.canvases;
    view! {
        <header hidden=ui.hides("header")>
            <h1>"Neural Network Renormalization Group"</h1>
            <p class="lead">
                "A normalizing flow built like a MERA: RealNVP blocks that disentangle and "
                "decimate 2x2 plaquettes, level by level. It learns to turn independent "
                "Gaussian noise z into configurations x of the (relaxed) Ising model by "
                "minimizing the variational free energy. After Li and Wang, PRL 121, 260601 (2018)."
            </p>
            <p id="backend">{move || ui.out.backend.get().unwrap_or_else(|| "looking for WebGPU...".into())}</p>
        </header>
        <div id="error" class="error" hidden=move || ui.out.error.get().is_none()>
            {move || ui.out.error.get().unwrap_or_default()}
        </div>
        <div id="notice" class="notice" hidden=move || ui.out.notice.get().is_none()>
            {move || ui.out.notice.get().unwrap_or_default()}
        </div>
        <div id="unknown" class="notice" hidden=unknown.is_empty()>
            {unknown.iter().map(|u| view! { <p>{u.clone()}</p> }).collect_view()}
        </div>
        <div hidden=ui.hides("controls")><Controls ui/></div>
        <div hidden=ui.hides("stats")><StatsLine ui/><ModelLine ui/></div>
        <main class="panels">
            <Panel ui name="loss" title="Free energy" canvas=c.loss height=420
                text="F = <log q(x) - log p(x)> over a batch of samples is an upper bound of the exact free energy -ln Z (red). The gap, relative to ln Z (bottom, log scale), shows how well the flow has learned the Boltzmann distribution."/>
            <Panel ui name="samples" title="Samples" canvas=c.samples height=420
                text="Configurations drawn directly from the flow (black +1, white -1): fields x from the network, spins given the fields. Near T_c they show clusters of every size."/>
            <Panel ui name="rg" title="Renormalization in pictures" canvas=c.rg height=420
                text="One configuration drawn from the flow, seen at every scale. Top: the physical field x, then the variables each MERA level passes on to the next (the sublattices of side L/2, L/4, ...: the coarse-grained configuration). Bottom: the latent variables each level decimates, on that level's lattice (grey: the sites that go on). Look for order emerging at coarse scales near and below T_c: there the coarse variables share one sign over the whole lattice, while the decimated ones become independent Gaussian noise as the flow learns."/>
            <Panel ui name="rates" title="Exact sampling" canvas=c.rates height=300
                text="The flow's samples come with their exact probability, so Metropolis-Hastings with the flow as proposal corrects them into exact samples. The acceptance rate and the effective sample size of the importance weights rise as the flow improves."/>
            <Panel ui name="observables" title="Observables" canvas=c.observables height=300
                text="Energy and squared magnetization per site from the corrected (MH) samples with their error bars, against the exact values (red; exact <m^2> is known for up to 20 sites)."/>
            <FieldPanel ui/>
            <Panel ui name="mi" title="Mutual information" canvas=c.mi height=300
                text="Pairwise mutual information between sites (Gaussian estimate). The physical variables x are strongly correlated; the learned latent variables z are nearly independent: the network has found a representation in which the physics is simple."/>
        </main>
        <footer hidden=ui.hides("footer")>
            <p>
                "The setup is kept in the address: copy it to share this configuration. "
                "Add cpu=true to train on the CPU even where WebGPU is available, preset=NAME to start "
                "from a preset, and hide=controls,mi (any of " {HIDEABLE.join(", ")} ") to embed a stripped-down view."
            </p>
        </footer>
    }
}

/// A titled canvas with a short explanation for students, and a button that downloads it as
/// PNG; `name` is its name in `hide=` and in the file name.
#[component]
fn Panel(
    ui: Ui,
    name: &'static str,
    title: &'static str,
    text: &'static str,
    canvas: NodeRef<leptos::html::Canvas>,
    height: u32,
) -> impl IntoView {
    view! {
        <section class="panel" id=format!("panel-{name}") hidden=ui.hides(name)>
            <h2>{title}<PngButton ui name canvas/></h2>
            <canvas node_ref=canvas width="560" height=height.to_string()></canvas>
            <p class="explain">{text}</p>
        </section>
    }
}

/// Downloads a panel's canvas as `neuralrg-<name>.png`.
#[component]
fn PngButton(ui: Ui, name: &'static str, canvas: NodeRef<leptos::html::Canvas>) -> impl IntoView {
    view! {
        <button class="small export" title="Download this panel as PNG" data-panel=name
            on:click=move |_| report(download_canvas(canvas, name), ui)>"PNG"</button>
    }
}

/// The receptive-field panel: a clickable lattice (coloured by RG level) and the field of the
/// chosen latent site.
#[component]
fn FieldPanel(ui: Ui) -> impl IntoView {
    let sites = move || {
        let lattice = ui.config.with(|c| c.mera.lattice);
        let (rows, cols) = neuralrg::plot::grid(lattice);
        let cells = (0..rows * cols)
            .map(|i| {
                let level = lattice.rg_level(i);
                let (r, c) = lattice.coords(i);
                view! {
                    <button
                        class=move || format!("site level{level}{}", if ui.selected.get() == Some(i) { " chosen" } else { "" })
                        title=format!("latent site ({r},{c}), RG level {level}")
                        on:click=move |_| {
                            ui.selected.set(Some(i));
                            ui.request(Request::Field(i));
                        }
                    ></button>
                }
            })
            .collect_view();
        view! {
            <div class="sites" style=format!("grid-template-columns: repeat({cols}, 1fr)")>{cells}</div>
        }
    };
    view! {
        <section class="panel" id="panel-field" hidden=ui.hides("field")>
            <h2>"Receptive fields"<PngButton ui name="field" canvas=ui.canvases.field/></h2>
            <div class="field">
                <div class="picker">
                    {sites}
                    <p class="legend">"Click a latent site. Colour: RG level (light = fine scale, dark = top of the hierarchy)."</p>
                </div>
                <canvas node_ref=ui.canvases.field width="300" height="300"></canvas>
            </div>
            <p class="explain">
                "How the physical field x responds to one latent variable z_k: dx/dz_k, averaged over latent samples "
                "(the colours saturate at the 95th percentile of |dx/dz| off the site itself, outlined, so that the tails show). "
                "Latent variables at the bottom of the hierarchy act locally; those at higher RG levels move whole blocks, "
                "like the wavelets of a renormalization group transformation."
            </p>
        </section>
    }
}

/// The numbers of the run; `data-*` attributes carry them for the end-to-end test.
#[component]
fn StatsLine(ui: Ui) -> impl IntoView {
    let bound = move || ui.config.with(|c| c.relaxation().loss_bound());
    view! {
        <p id="stats"
            data-epoch=move || ui.out.stats.get().epoch.to_string()
            data-f=move || ui.out.stats.get().f.to_string()
            data-f-first=move || ui.out.stats.get().f_first.to_string()
            data-ms-per-step=move || format!("{:.2}", ui.out.stats.get().ms_per_step)
            data-backend=move || ui.out.backend_short.get()
            data-running=move || ui.out.running.get().to_string()>
            {move || {
                let s = ui.out.stats.get();
                if s.epoch == 0 {
                    format!("not trained yet · exact bound -ln Z = {:.4}", bound())
                } else if s.f.is_nan() {
                    format!(
                        "epoch {} (opened; Start trains on) · exact bound -ln Z = {:.4}",
                        s.epoch,
                        bound()
                    )
                } else {
                    format!(
                        "epoch {} · F = {:.4} · bound {:.4} · relative error {:.3}% · {:.1} ms/step",
                        s.epoch,
                        s.f,
                        bound(),
                        100.0 * s.relative_error,
                        s.ms_per_step
                    )
                }
            }}
        </p>
    }
}

/// The model opened or saved last, with its `log q` at the probe configurations (the command
/// line prints the same numbers for the same model); `data-log-q` carries them for the
/// end-to-end test.
#[component]
fn ModelLine(ui: Ui) -> impl IntoView {
    let model = ui.out.model;
    view! {
        <p id="model" class="model" hidden=move || model.with(|m| m.is_none())
            data-epoch=move || model.with(|m| m.as_ref().map(|m| m.epoch.to_string()).unwrap_or_default())
            data-log-q=move || model.with(|m| m.as_ref().map(|m| m.log_q.iter().map(|v| v.to_string()).collect::<Vec<_>>().join(",")).unwrap_or_default())>
            {move || model.with(|m| m.as_ref().map(|m| format!(
                "{} · log q at the probe configurations ({}): {} (train's summary.json and sample --json give the same numbers for the same model)",
                m.what,
                neuralrg::analysis::PROBE_NAMES.join(", "),
                m.log_q.iter().map(|v| format!("{v:.4}")).collect::<Vec<_>>().join(", ")
            )).unwrap_or_default())}
        </p>
    }
}

/// The setup and the run buttons.
#[component]
fn Controls(ui: Ui) -> impl IntoView {
    let get = move |f: fn(&TrainConfig) -> String| move || ui.config.with(f);
    let number = move |key: &'static str,
                       label: &'static str,
                       title: &'static str,
                       read: fn(&TrainConfig) -> String| {
        view! {
            <label title=title>
                {label}
                <input type="number" name=key min="0" step="any" prop:value=get(read)
                    on:change=move |ev| ui.edit(key, &event_target_value(&ev))/>
            </label>
        }
    };
    let depths = move || {
        let max = ui.config.with(|c| c.mera.lattice.depth());
        (1..=max)
            .map(|d| view! { <option value=d.to_string()>{d}</option> })
            .collect_view()
    };
    // The run-folder picker picks folders (`webkitdirectory`, which the view macro has no
    // attribute for).
    let folder_input = NodeRef::<leptos::html::Input>::new();
    Effect::new(move |_| {
        if let Some(input) = folder_input.get() {
            input.set_webkitdirectory(true);
        }
    });
    // Files chosen in a file picker: opened as one model.
    let pick = move |ev: leptos::ev::Event| {
        let input = event_target::<web_sys::HtmlInputElement>(&ev);
        if let Some(files) = input.files() {
            open_files(ui, files);
        }
        // Choosing the same files again opens them again.
        input.set_value("");
    };
    let preset = move || {
        ui.config.with(|c| {
            presets()
                .into_iter()
                .find(|p| page_config(&p.query).as_ref() == Ok(c))
                .map_or("", |p| p.name)
        })
    };
    view! {
        <section class="controls">
            <label title="A named starting point (also ?preset=NAME in the address)">"preset"
                <select name="preset" prop:value=preset on:change=move |ev| ui.preset(&event_target_value(&ev))>
                    <option value="">"custom"</option>
                    {presets().into_iter().map(|p| view! { <option value=p.name>{p.label}</option> }).collect_view()}
                </select>
            </label>
            <label title="Lattice side L (a power of two)">"L"
                <select name="L" prop:value=get(|c| c.mera.lattice.side().to_string())
                    on:change=move |ev| ui.edit("L", &event_target_value(&ev))>
                    <option value="4">"4"</option>
                    <option value="8">"8"</option>
                    <option value="16">"16"</option>
                </select>
            </label>
            <label title="Dimension">"d"
                <select name="d" prop:value=get(|c| c.mera.lattice.dim().to_string())
                    on:change=move |ev| ui.edit("d", &event_target_value(&ev))>
                    <option value="1">"1"</option>
                    <option value="2">"2"</option>
                </select>
            </label>
            <label class="temperature" title="Temperature (the tick marks T_c of the 2D model)">
                {move || format!("T = {:.3}", ui.config.with(|c| c.t))}
                <input type="range" name="T" min=PAGE_TEMPERATURES.0 max=PAGE_TEMPERATURES.1 step="0.001" list="tc"
                    prop:value=get(|c| c.t.to_string())
                    on:change=move |ev| ui.edit("T", &event_target_value(&ev))/>
                <datalist id="tc"><option value=T_C.to_string() label="T_c"></option></datalist>
                <button class="small" title="Set T to the critical temperature of the 2D Ising model"
                    on:click=move |_| ui.edit("T", &T_C.to_string())>"T_c"</button>
            </label>
            <label title="MERA levels built (1 to log2 L)">"depth"
                <select name="depthMERA" prop:value=get(|c| c.mera.depth().to_string())
                    on:change=move |ev| ui.edit("depthMERA", &event_target_value(&ev))>
                    {depths}
                </select>
            </label>
            {number("nrepeat", "nrepeat", "Disentangler-decimator pairs per level", |c| c.mera.nrepeat.to_string())}
            {number("nlayers", "nlayers", "Coupling layers per RealNVP block", |c| c.mera.nlayers.to_string())}
            {number("nmlp", "nmlp", "Hidden layers per MLP", |c| c.mera.nmlp.to_string())}
            {number("nhidden", "nhidden", "Hidden width of the MLPs", |c| c.mera.nhidden.to_string())}
            {number("batch", "batch", "Samples per training step", |c| c.optimizer.batch.to_string())}
            {number("lr", "lr", "Adam learning rate", |c| c.optimizer.lr.to_string())}
            {number("seed", "seed", "Seed of weights and samples", |c| c.seed.to_string())}
            <label title="Z2-symmetrized flow: q(x) = (q(x) + q(-x)) / 2">
                <input type="checkbox" name="symmetry" prop:checked=move || ui.config.with(|c| c.symmetry)
                    on:change=move |ev| {
                        let on = event_target::<web_sys::HtmlInputElement>(&ev).checked();
                        ui.edit("symmetry", if on { "true" } else { "false" });
                    }/>
                "symmetry"
            </label>
            <div class="buttons">
                <button id="start" on:click=move |_| { ui.out.error.set(None); ui.request(Request::Run(!ui.out.running.get_untracked())) }>
                    {move || if ui.out.running.get() { "Pause" } else { "Start" }}
                </button>
                <button id="step" disabled=move || ui.out.running.get() on:click=move |_| ui.request(Request::Step)>"Step"</button>
                <label title="Slow training down to watch the panels change (the time of a step stays the backend's)">"speed"
                    <select id="speed" name="speed" on:change=move |ev| {
                        if let Ok(ms) = event_target_value(&ev).parse() {
                            ui.request(Request::Pace(ms));
                        }
                    }>
                        {PACES.iter().map(|&(ms, label)| view! { <option value=ms.to_string()>{label}</option> }).collect_view()}
                    </select>
                </label>
                <button id="reset" on:click=move |_| ui.request(Request::Reset(ui.config.get_untracked()))>"Reset"</button>
                <button id="mi" title="Recompute the mutual information now" on:click=move |_| ui.request(Request::MutualInformation)>"Update MI"</button>
                <button id="csv" title="Download the loss history, one row per epoch (as a run folder's records/train.csv)"
                    on:click=move |_| report(ui.out.train.with_untracked(|t| download_text(&neuralrg::records::to_csv(t), "train.csv", "text/csv")), ui)>"History CSV"</button>
                <button id="csv-measurements" title="Download the measurements (as a run folder's records/measurements.csv)"
                    on:click=move |_| report(ui.out.measurements.with_untracked(|m| download_text(&neuralrg::records::to_csv(&measure_rows(m)), "measurements.csv", "text/csv")), ui)>"Measurements CSV"</button>
            </div>
            <div class="buttons models">
                <label class="button" title="Open a model: a run folder's parameters.json with a checkpoint from its savings/, a checkpoint alone, or a model file (.tar) saved here; or drop them on the page">
                    "Open model"
                    <input type="file" id="open-files" multiple accept=".json,.ckpt,.tar" hidden
                        on:change=pick/>
                </label>
                <label class="button" title="Open a run folder written by train (its newest good checkpoint)">
                    "Open run folder"
                    <input type="file" id="open-folder" node_ref=folder_input hidden
                        on:change=pick/>
                </label>
                <button id="save" title="Download this model as a run folder in one file (.tar): tar xf, then sample --folder, analyze --folder or train --load"
                    on:click=move |_| ui.request(Request::Save)>"Save model"</button>
            </div>
        </section>
    }
}
