//! The Web Worker the model ([`crate::model`]) runs in, and the page's end of it.
//!
//! The page starts `worker_loader.js` (trunk's loader of the `worker` binary) as a module worker,
//! waits for its [`Change::Ready`], sends it the configuration to start with and then the views'
//! requests ([`ToWorker`]), and applies the changes ([`Change`]) it sends back to [`Outputs`]. Training,
//! GPU kernel compilation and measurements run in the worker; the page's thread only draws and
//! answers the user. Messages are MessagePack bytes (NaN travels as it is, which JSON cannot
//! carry; byte arrays as arrays of small integers, a little larger than the bytes).

use futures::StreamExt;
use futures::channel::mpsc::{UnboundedSender, unbounded};
use futures::channel::oneshot;
use leptos::prelude::Set;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use wasm_bindgen::JsCast;
use wasm_bindgen::prelude::*;

use crate::model::{self, Change, Outputs, Request};
use neuralrg::train::TrainConfig;

/// What the page sends the worker.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum ToWorker {
    /// Start the model for this configuration (on the CPU when `prefer_cpu`).
    Start {
        prefer_cpu: bool,
        config: TrainConfig,
    },
    Request(Request),
}

/// A message's bytes.
pub fn encode<T: Serialize>(message: &T) -> js_sys::Uint8Array {
    let bytes = rmp_serde::to_vec(message).expect("messages serialize");
    js_sys::Uint8Array::from(&bytes[..])
}

/// A message from its bytes.
pub fn decode<T: DeserializeOwned>(data: &JsValue) -> Result<T, String> {
    let bytes = js_sys::Uint8Array::new(data).to_vec();
    rmp_serde::from_slice(&bytes)
        .map_err(|e| format!("a message between the page and its worker is not readable: {e}"))
}

/// The page's end: starts the worker with the model for `config` (on the CPU when
/// `prefer_cpu`, else WebGPU where there is one); returns the channel the views' requests go
/// in. A worker that cannot start, or that stops on a panic, is shown as the page's fatal error.
pub fn spawn(prefer_cpu: bool, config: TrainConfig, out: Outputs) -> UnboundedSender<Request> {
    let (requests, mut rx) = unbounded::<Request>();
    let options = web_sys::WorkerOptions::new();
    options.set_type(web_sys::WorkerType::Module);
    let worker = match web_sys::Worker::new_with_options("./worker_loader.js", &options) {
        Ok(w) => w,
        Err(e) => {
            crate::show_fatal(&format!(
                "the Web Worker that trains could not start ({e:?})"
            ));
            return requests;
        }
    };
    let (ready, is_ready) = oneshot::channel::<()>();
    let mut ready = Some(ready);
    let on_message =
        Closure::<dyn FnMut(web_sys::MessageEvent)>::new(move |e: web_sys::MessageEvent| {
            match decode::<Change>(&e.data()) {
                Ok(Change::Ready) => {
                    if let Some(r) = ready.take() {
                        let _ = r.send(());
                    }
                }
                Ok(Change::Fatal(message)) => crate::show_fatal(&message),
                Ok(change) => out.apply(change),
                Err(e) => out.error.set(Some(e)),
            }
        });
    worker.set_onmessage(Some(on_message.as_ref().unchecked_ref()));
    on_message.forget();
    // A script error in the worker is an ErrorEvent; a worker that could not be loaded at all
    // gets a plain Event.
    let on_error = Closure::<dyn Fn(web_sys::Event)>::new(|e: web_sys::Event| {
        let why = e
            .dyn_ref::<web_sys::ErrorEvent>()
            .map_or("its script could not be loaded".to_string(), |e| {
                e.message()
            });
        crate::show_fatal(&format!("the Web Worker that trains failed: {why}"));
    });
    worker.set_onerror(Some(on_error.as_ref().unchecked_ref()));
    on_error.forget();
    // The page's part in two requests: the tab's visibility, and the end-to-end test's hook
    // that loses the WebGPU device on purpose.
    if let Some(w) = web_sys::window() {
        let sender = requests.clone();
        let lose = Closure::<dyn Fn()>::new(move || {
            let _ = sender.unbounded_send(Request::LoseDevice);
        });
        let _ = js_sys::Reflect::set(&w, &"neuralrgLoseDevice".into(), lose.as_ref());
        lose.forget();
        if let Some(d) = w.document() {
            // A page opened in a background tab starts hidden.
            let _ = requests.unbounded_send(Request::Hidden(d.hidden()));
            let sender = requests.clone();
            let doc = d.clone();
            let visibility = Closure::<dyn Fn()>::new(move || {
                let _ = sender.unbounded_send(Request::Hidden(doc.hidden()));
            });
            let _ = d.add_event_listener_with_callback(
                "visibilitychange",
                visibility.as_ref().unchecked_ref(),
            );
            visibility.forget();
        }
    }
    leptos::task::spawn_local(async move {
        if is_ready.await.is_err() {
            return;
        }
        let _ = worker.post_message(&encode(&ToWorker::Start { prefer_cpu, config }));
        while let Some(r) = rx.next().await {
            let _ = worker.post_message(&encode(&ToWorker::Request(r)));
        }
    });
    requests
}

/// The worker's end (the `worker` binary): runs the model on the page's messages and sends
/// its changes back; a panic is sent as [`Change::Fatal`].
pub fn start() {
    let scope: web_sys::DedicatedWorkerGlobalScope = js_sys::global().unchecked_into();
    let post = {
        let scope = scope.clone();
        move |change: Change| {
            let _ = scope.post_message(&encode(&change));
        }
    };
    let on_panic = post.clone();
    std::panic::set_hook(Box::new(move |info| {
        console_error_panic_hook::hook(info);
        on_panic(Change::Fatal(info.to_string()));
    }));
    let (requests, rx) = unbounded::<Request>();
    let mut rx = Some(rx);
    let to_page = post.clone();
    let on_message =
        Closure::<dyn FnMut(web_sys::MessageEvent)>::new(move |e: web_sys::MessageEvent| {
            match decode::<ToWorker>(&e.data()) {
                Ok(ToWorker::Start { prefer_cpu, config }) => {
                    if let Some(rx) = rx.take() {
                        wasm_bindgen_futures::spawn_local(model::run(
                            prefer_cpu,
                            config,
                            requests.clone(),
                            rx,
                            to_page.clone(),
                        ));
                    }
                }
                Ok(ToWorker::Request(r)) => {
                    let _ = requests.unbounded_send(r);
                }
                Err(e) => to_page(Change::Error(Some(e))),
            }
        });
    scope.set_onmessage(Some(on_message.as_ref().unchecked_ref()));
    on_message.forget();
    post(Change::Ready);
}
