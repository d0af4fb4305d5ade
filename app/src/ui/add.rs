//! Adding images: the drop zone, the file and folder pickers, indexing progress with Cancel,
//! and the list of files that were skipped and why. Class folders and a dropped `file,label`
//! CSV label the images (the worker reads them).

use app::{Request, human_seconds};
use leptos::prelude::*;
use wasm_bindgen_futures::spawn_local;
use web_sys::{DragEvent, HtmlInputElement};

use super::files;
use super::state::Ctx;

#[component]
pub fn AddImages(ctx: Ctx) -> impl IntoView {
    // `webkitdirectory` makes the picker choose folders; the view macro has no name for it.
    let folder_input = NodeRef::<leptos::html::Input>::new();
    Effect::new(move |_| {
        if let Some(el) = folder_input.get() {
            let _ = el.set_attribute("webkitdirectory", "");
        }
    });
    let on_pick = move |ev: leptos::ev::Event| {
        let input: HtmlInputElement = event_target(&ev);
        let list = input.files().map(|l| files::from_list(&l)).unwrap_or_default();
        ctx.add_files(list);
        input.set_value("");
    };
    let on_drop = move |ev: DragEvent| {
        ev.prevent_default();
        let Some(dt) = ev.data_transfer() else { return };
        let pending = files::from_drop(&dt);
        spawn_local(async move { ctx.add_files(pending.await) });
    };
    view! {
        <section class="drop" data-testid="drop-zone"
            on:dragover=move |ev: DragEvent| ev.prevent_default()
            on:drop=on_drop>
            <p>"Drop images, whole slides (SVS, pyramidal TIFF, a DICOM folder) or folders here, or "
                <label class="button">"choose files"
                    <input type="file" multiple accept="image/*,.svs,.tif,.tiff,.dcm,.ndpi,.mrxs,.czi,.scn,.vsi,.isyntax,.csv" data-testid="file-input" on:change=on_pick/>
                </label>" "
                <label class="button">"choose a folder"
                    <input type="file" multiple node_ref=folder_input data-testid="folder-input" on:change=on_pick/>
                </label>
            </p>
            <p class="muted">"A folder of class folders (" <code>"set/tumour/…"</code>", " <code>"set/stroma/…"</code>
                "), or images with a " <code>"file,label"</code> " CSV, is a labelled set for the lab."</p>
            {move || ctx.progress.get().map(|p| {
                let left = if p.per_second > 0.0 { (p.total - p.done) as f64 / p.per_second } else { 0.0 };
                view! {
                    <p class="progress">
                        <progress max=p.total.to_string() value=p.done.to_string()></progress>
                        {format!(" {} of {} · {:.1} images/s · {} left ", p.done, p.total, p.per_second, human_seconds(left))}
                        <button on:click=move |_| ctx.send(&Request::Cancel, &[])>"Cancel"</button>
                    </p>
                }
            })}
            {move || (!ctx.skipped.with(Vec::is_empty)).then(|| view! {
                <details class="skipped" open>
                    <summary>{move || format!("{} files skipped", ctx.skipped.with(Vec::len))}</summary>
                    <ul>{move || ctx.skipped.get().into_iter().map(|(n, r)| view! { <li data-testid="skipped" data-file=n.clone()><b>{n.clone()}</b>": "{r}</li> }).collect_view()}</ul>
                </details>
            })}
        </section>
    }
}
