//! The collection: the virtualised gallery (only the rows in view are in the DOM), filtered by a
//! classification label, a confusion-matrix cell or a lasso on the map; export, import and
//! removal; and the viewer for one image.

use app::Request;
use leptos::prelude::*;
use wasm_bindgen::JsCast;
use web_sys::{Element, HtmlElement, HtmlInputElement, KeyboardEvent};

use super::state::{Ctx, Filter};

/// Gallery cells: a square thumbnail and the gap after it, in CSS pixels.
const CELL: f64 = 120.0;
const PITCH: f64 = 128.0;

/// Arrow keys move the focus through a grid of buttons (results or gallery).
pub fn grid_keys(ev: &KeyboardEvent) {
    let step: i32 = match ev.key().as_str() {
        "ArrowRight" => 1,
        "ArrowLeft" => -1,
        "ArrowDown" | "ArrowUp" => 0,
        _ => return,
    };
    let Some(item) = ev.target().and_then(|t| t.dyn_into::<Element>().ok()).and_then(|e| e.closest("li").ok().flatten()) else {
        return;
    };
    let Some(list) = item.parent_element() else { return };
    let items = list.children();
    let n = items.length() as i32;
    let here = (0..n).find(|&i| items.item(i as u32).as_ref() == Some(&item)).unwrap_or(0);
    let columns = {
        let w = (item.client_width() as f64).max(1.0);
        ((list.client_width() as f64 + 8.0) / (w + 8.0)).floor().max(1.0) as i32
    };
    let to = match ev.key().as_str() {
        "ArrowDown" => here + columns,
        "ArrowUp" => here - columns,
        _ => here + step,
    };
    if let Some(button) = items.item(to.clamp(0, n - 1) as u32).and_then(|li| li.query_selector("button").ok().flatten()) {
        ev.prevent_default();
        let _ = button.unchecked_into::<HtmlElement>().focus();
    }
}

/// The zero-shot label of image `id` from the last classification, with its confidence.
fn classified(ctx: Ctx, id: u64) -> Option<String> {
    ctx.classes.with(|c| {
        let c = c.as_ref()?;
        let r = c.rows.get(&id)?;
        Some(format!("{} {:.0}%", c.labels[r.label], 100.0 * r.confidence))
    })
}

/// One image, large, with its labels and Remove.
#[component]
pub fn Viewer(ctx: Ctx) -> impl IntoView {
    let _ = window_event_listener(leptos::ev::keydown, move |ev| {
        if ev.key() == "Escape" {
            ctx.viewer.set(None);
        }
    });
    move || {
        ctx.viewer.get().and_then(|id| ctx.by_id.with_value(|m| m.get(&id).cloned()).map(|(name, url)| view! {
            <aside class="viewer" data-testid="viewer" aria-label="Selected image">
                <img src=url alt=name.clone()/>
                <div>
                    <h2>{name.clone()}</h2>
                    {move || ctx.labels.with(|l| l.get(&id).cloned()).map(|l| view! { <p data-testid="viewer-label">"Label: "<b>{l}</b></p> })}
                    <p>{move || classified(ctx, id).unwrap_or_default()}</p>
                    <p class="muted">"The thumbnail kept in this browser; the original file is not stored."</p>
                    <button data-testid="remove" on:click=move |_| ctx.send(&Request::Remove { ids: vec![id] }, &[])>"Remove from collection"</button>
                    " "<button on:click=move |_| ctx.viewer.set(None)>"Close (Esc)"</button>
                </div>
            </aside>
        }))
    }
}

#[component]
pub fn Gallery(ctx: Ctx) -> impl IntoView {
    let scroll_top = RwSignal::new(0.0f64);
    let gallery_size = RwSignal::new((960.0f64, 560.0f64));
    let gallery = NodeRef::<leptos::html::Div>::new();
    let measure = move || {
        if let Some(el) = gallery.get_untracked() {
            gallery_size.set((el.client_width() as f64, el.client_height() as f64));
            scroll_top.set(el.scroll_top() as f64);
        }
    };
    Effect::new(move |_| {
        if gallery.get().is_some() {
            measure();
        }
    });
    let _ = window_event_listener(leptos::ev::resize, move |_| measure());

    let on_import = move |ev: leptos::ev::Event| {
        let input: HtmlInputElement = event_target(&ev);
        if let Some(file) = input.files().and_then(|l| l.get(0)) {
            if ctx.model_ready() {
                ctx.status.set(format!("Importing {}…", file.name()));
                ctx.send(&Request::Import { name: file.name() }, &[file]);
            } else {
                ctx.error.set(Some("The model is still loading: import when it is ready.".into()));
            }
        }
        input.set_value("");
    };
    let clear_all = move |_| {
        let n = ctx.thumbs.with_untracked(Vec::len);
        let sure = web_sys::window()
            .and_then(|w| w.confirm_with_message(&format!("Remove all {n} images from this browser? Export first to keep them.")).ok())
            .unwrap_or(false);
        if sure {
            ctx.send(&Request::ClearCollection, &[]);
        }
    };

    // The gallery shows the filtered collection, rendering only the rows in view.
    let filtered = Memo::new(move |_| {
        ctx.filter.with(|filter| {
            ctx.classes.with(|c| {
                ctx.thumbs.with(|t| match (filter, c) {
                    (Some(Filter::Label(l)), Some(c)) => t.iter().filter(|t| c.rows.get(&t.id).is_some_and(|r| r.label == *l)).cloned().collect(),
                    (Some(Filter::Ids { ids, .. }), _) => t.iter().filter(|t| ids.contains(&t.id)).cloned().collect(),
                    _ => t.clone(),
                })
            })
        })
    });
    let filter_title = move || {
        let title = ctx.filter.with(|f| match f {
            Some(Filter::Label(l)) => ctx.classes.with(|c| c.as_ref().map(|c| c.labels[*l].clone())),
            Some(Filter::Ids { title, .. }) => Some(title.clone()),
            None => None,
        })?;
        Some(view! {
            " · showing " <span data-testid="gallery-filter">{title}</span> {format!(" ({})", filtered.with(Vec::len))} " "
            <button class="small" data-testid="clear-filter" on:click=move |_| ctx.filter.set(None)>"show all"</button>
        })
    };
    let columns = move || ((gallery_size.get().0 + PITCH - CELL) / PITCH).floor().max(1.0) as usize;
    let window = move || {
        let cols = columns();
        let n = filtered.with(Vec::len);
        let rows = n.div_ceil(cols);
        let first = ((scroll_top.get() / PITCH).floor() as usize).saturating_sub(2).min(rows);
        let last = (first + (gallery_size.get().1 / PITCH).ceil() as usize + 5).min(rows);
        (first, last, rows, cols)
    };
    let visible = move || {
        let (first, last, _, cols) = window();
        filtered.with(|t| t[(first * cols).min(t.len())..(last * cols).min(t.len())].to_vec())
    };
    view! {
        <section class="collection">
            <h2>"Collection: " <span data-testid="image-count">{move || ctx.thumbs.with(Vec::len)}</span>" images"
                {move || {
                    let n = ctx.labels.with(|l| l.len());
                    (n > 0).then(|| view! { <span class="muted" data-testid="labelled-count">{format!(" · {n} labelled")}</span> })
                }}
                {filter_title}
            </h2>
            <p class="toolbar">
                <button data-testid="export" on:click=move |_| ctx.send(&Request::Export, &[])>"Export collection"</button>
                " "<label class="button">"Import collection"
                    <input type="file" accept=".obscura" data-testid="import-input" on:change=on_import/>
                </label>
                " "<button data-testid="clear-all" on:click=clear_all>"Remove all images"</button>
            </p>
            <div class="gallery" node_ref=gallery on:scroll=move |_| measure()>
                <div class="gallery-space" style:height=move || format!("{}px", window().2 as f64 * PITCH)>
                    <ul class="grid fixed" on:keydown=move |ev| grid_keys(&ev)
                        style:transform=move || format!("translateY({}px)", window().0 as f64 * PITCH)
                        style:grid-template-columns=move || format!("repeat({}, {CELL}px)", columns())>
                        <For each=visible key=|t| t.id let:t>
                            <li data-testid="item" data-file=t.name.clone()>
                                <button on:click=move |_| ctx.similar(t.id) title=format!("{}: find similar", t.name)>
                                    <img src=t.url.clone() alt=t.name.clone()/>
                                </button>
                                {move || classified(ctx, t.id).map(|l| view! { <span class="name">{l}</span> })}
                            </li>
                        </For>
                    </ul>
                </div>
            </div>
        </section>
    }
}
