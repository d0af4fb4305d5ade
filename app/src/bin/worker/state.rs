//! The worker's state (model, index, collection, flags) and the helpers every request uses:
//! posting events to the page, reading JS errors, yielding to the event loop.

use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, HashMap};
use std::rc::Rc;

use app::collection::{self, Header};
use app::opfs;
use app::{Event, LocalModel};
use index::Index;
use js_sys::{Array, Promise};
use model_wasm::Clip;
use model_wasm::convert::Converted;
use wasm_bindgen::{JsCast, JsValue};
use wasm_bindgen_futures::JsFuture;
use web_sys::DedicatedWorkerGlobalScope;

/// What the worker keeps of an indexed image (its thumbnail lives only in the stored file).
pub(crate) struct Entry {
    pub(crate) hash: [u8; 32],
    /// The path within what was dropped (what a label CSV names).
    pub(crate) name: String,
    pub(crate) embedding: Vec<f32>,
    /// The class, for a labelled set (class folders or a CSV).
    pub(crate) label: Option<String>,
}

#[derive(Default)]
pub(crate) struct State {
    pub(crate) clip: Option<Rc<Clip>>,
    /// `models/...` path of the loaded model, and the sha256 of its manifest (hex).
    pub(crate) base: String,
    pub(crate) manifest_sha256: String,
    pub(crate) index: Option<Index>,
    /// The indexed images by id; ids only grow, so this is insertion order.
    pub(crate) items: BTreeMap<u64, Entry>,
    pub(crate) hashes: HashMap<[u8; 32], String>,
    pub(crate) next_id: u64,
    pub(crate) store: Option<opfs::File>,
    pub(crate) cancel: Cell<bool>,
    pub(crate) adding: Cell<bool>,
    /// A model import is running.
    pub(crate) importing: Cell<bool>,
    /// `compact_in_background` is running.
    pub(crate) compacting: Cell<bool>,
    /// A converted model that fell below the fidelity bound, waiting for Keep or Discard.
    pub(crate) pending: Option<(LocalModel, Converted)>,
}

thread_local! {
    pub(crate) static STATE: RefCell<State> = RefCell::new(State::default());
}

pub(crate) fn scope() -> DedicatedWorkerGlobalScope {
    js_sys::global().unchecked_into()
}

pub(crate) fn post(event: &Event) {
    post_with(event, None);
}

pub(crate) fn post_with(event: &Event, payload: Option<&JsValue>) {
    let msg = Array::new();
    msg.push(&JsValue::from_str(&serde_json::to_string(event).expect("events serialise")));
    if let Some(p) = payload {
        msg.push(p);
    }
    let _ = scope().post_message(&msg);
}

pub(crate) fn js_err(e: JsValue) -> String {
    e.as_string()
        .or_else(|| e.dyn_ref::<js_sys::Error>().map(|e| String::from(e.message())))
        .unwrap_or_else(|| format!("{e:?}"))
}

pub(crate) fn header() -> Result<Header, String> {
    STATE.with(|s| {
        let s = s.borrow();
        let clip = s.clip.as_ref().ok_or("the model is not loaded yet")?;
        Ok(Header {
            format: collection::FORMAT,
            model: s.base.trim_start_matches("models/").to_string(),
            manifest_sha256: s.manifest_sha256.clone(),
            dim: clip.config.projection_dim,
        })
    })
}

pub(crate) fn cancelled() -> bool {
    STATE.with(|s| s.borrow().cancel.get())
}

pub(crate) fn clip() -> Result<Rc<Clip>, String> {
    STATE.with(|s| s.borrow().clip.clone()).ok_or_else(|| "the model is not loaded yet".to_string())
}

/// Lets queued messages (Cancel, searches) run between batches.
pub(crate) async fn yield_now() {
    let p = Promise::new(&mut |resolve, _| {
        let _ = scope().set_timeout_with_callback_and_timeout_and_arguments_0(&resolve, 0);
    });
    let _ = JsFuture::from(p).await;
}

pub(crate) fn busy() -> Result<(), String> {
    if STATE.with(|s| s.borrow().adding.get()) {
        return Err("images are being added: wait for the end or cancel first".into());
    }
    Ok(())
}
