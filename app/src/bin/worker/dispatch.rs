//! Receives the page's requests and dispatches each to its handler.

use app::models;
use app::{Event, Request};
use js_sys::Array;
use wasm_bindgen::JsCast;
use wasm_bindgen::closure::Closure;
use wasm_bindgen_futures::spawn_local;
use web_sys::{File, MessageEvent};

use crate::add::add;
use crate::model::{clear_models, load};
use crate::models_local::{IMPORT_STARTED, import_model, keep_import, list_models, remove_model};
use crate::query::{classify, query_image, search_text, similar};
use crate::state::{STATE, post, scope};
use crate::store::{clear_collection, export, import, remove};

pub(crate) fn start() {
    let onmessage = Closure::<dyn Fn(MessageEvent)>::new(|msg: MessageEvent| {
        let data = Array::from(&msg.data());
        let Some(header) = data.get(0).as_string() else { return };
        let request: Request = match serde_json::from_str(&header) {
            Ok(r) => r,
            Err(e) => return post(&Event::Error { message: format!("bad request: {e}") }),
        };
        if request == Request::Cancel {
            STATE.with(|s| s.borrow().cancel.set(true));
            return;
        }
        let files: Vec<File> = data.iter().skip(1).filter_map(|v| v.dyn_into::<File>().ok()).collect();
        spawn_local(handle(request, files));
    });
    scope().set_onmessage(Some(onmessage.as_ref().unchecked_ref()));
    onmessage.forget();
    post(&Event::Booted);
}

async fn handle(request: Request, files: Vec<File>) {
    let result = match request {
        Request::Load { base, cpu } => {
            if let Err(message) = load(&base, cpu).await {
                post(&Event::ModelFailed { base, message });
            }
            Ok(())
        }
        Request::Add { names } => add(files, names).await,
        Request::Search { text, limit } => search_text(text, limit).await,
        Request::Similar { id, limit } => similar(id, limit),
        Request::QueryImage { name, limit } => query_image(files, name, limit).await,
        Request::ClearModels => clear_models().await,
        Request::Classify { labels, template } => classify(labels, template).await,
        Request::Remove { ids } => remove(ids).await,
        Request::ClearCollection => clear_collection().await,
        Request::Export => export().await,
        Request::Import { name } => import(files, name).await,
        Request::ImportModel { names, dtype } => {
            if STATE.with(|s| s.borrow().importing.replace(true)) {
                return post(&Event::ImportFailed { message: "a model is already being added: wait or cancel".into() });
            }
            STATE.with(|s| s.borrow().cancel.set(false));
            IMPORT_STARTED.with(|t| t.set(js_sys::Date::now()));
            let result = import_model(files, names, dtype).await;
            STATE.with(|s| s.borrow().importing.set(false));
            if let Err(message) = result {
                post(&Event::ImportFailed { message });
            }
            Ok(())
        }
        Request::KeepImport => keep_import().await,
        Request::DiscardImport => {
            STATE.with(|s| s.borrow_mut().pending = None);
            post(&Event::ImportFailed { message: "discarded: the converted model was not kept".into() });
            Ok(())
        }
        Request::ListModels => list_models().await,
        Request::RemoveModel { key } => remove_model(key).await,
        Request::SetTemplates { key, templates } => match models::set_templates(&key, templates).await {
            Ok(_) => list_models().await,
            Err(e) => Err(e),
        },
        Request::Evaluate { templates, probe } => crate::lab::evaluate(templates, probe).await.or_else(|message| Ok(post(&Event::LabFailed { message }))),
        Request::Map { method } => crate::lab::map(method).await.or_else(|message| Ok(post(&Event::LabFailed { message }))),
        Request::Cancel => Ok(()),
    };
    if let Err(message) = result {
        post(&Event::Error { message });
    }
}
