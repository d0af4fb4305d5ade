//! Search: the query box (words, or an image dropped on it), the template toggle, the
//! similarity threshold, and the ranked results.

use app::{Hit, Query, Request};
use leptos::prelude::*;
use web_sys::{DragEvent, KeyboardEvent};

use super::gallery::grid_keys;
use super::state::{Ctx, PAGE};

#[component]
pub fn Search(ctx: Ctx) -> impl IntoView {
    let threshold = RwSignal::new(0.0f32);
    let on_query_drop = move |ev: DragEvent| {
        ev.prevent_default();
        ev.stop_propagation();
        let Some(file) = ev.data_transfer().and_then(|d| d.files()).and_then(|f| f.get(0)) else { return };
        let request = Request::QueryImage { name: file.name(), limit: PAGE };
        ctx.last_query.set_value(None);
        ctx.send(&request, &[file]);
    };
    let on_keydown = move |ev: KeyboardEvent| {
        if ev.key() == "Enter" {
            ctx.search(PAGE)
        }
    };
    let show_more = move |_| {
        let more = ctx.limit.get_untracked() + PAGE;
        ctx.limit.set(more);
        let request = match ctx.last_query.get_value() {
            Some(Request::Search { text, .. }) => Request::Search { text, limit: more },
            Some(Request::Similar { id, .. }) => Request::Similar { id, limit: more },
            _ => return,
        };
        ctx.last_query.set_value(Some(request.clone()));
        ctx.send(&request, &[]);
    };
    let result_items = move || {
        let (q, hits) = ctx.results.get()?;
        let t = threshold.get();
        let shown: Vec<(Hit, String, String)> = ctx.by_id.with_value(|m| {
            hits.iter().filter(|h| h.score >= t).filter_map(|h| m.get(&h.id).map(|(n, u)| (*h, n.clone(), u.clone()))).collect()
        });
        let title = match q {
            Query::Text { text } => format!("“{text}”"),
            Query::Similar { id } => format!("Similar to {}", ctx.name_of(id).unwrap_or_default()),
            Query::Image { name } => format!("Similar to {name} (not added)"),
        };
        Some((title, shown, hits.len()))
    };
    let origin = move |id: u64| ctx.origins.with_value(|m| m.get(&id).cloned());
    view! {
        <section class="search" on:dragover=move |ev: DragEvent| ev.prevent_default() on:drop=on_query_drop>
            <input type="search" data-testid="search-input" placeholder="Search with words, or drop an image here"
                prop:value=move || ctx.query.get()
                on:input=move |ev| ctx.query.set(event_target_value(&ev))
                on:keydown=on_keydown/>
            <button on:click=move |_| ctx.search(PAGE)>"Search"</button>
            <label title="Wrap the query in the model's prompt template">
                <input type="checkbox" prop:checked=move || ctx.use_template.get() on:change=move |ev| ctx.use_template.set(event_target_checked(&ev))/>
                {move || format!(" template: {}", ctx.template().unwrap_or_else(|| "none".into()))}
            </label>
            <label>" min. similarity "
                <input type="range" min="-0.2" max="0.6" step="0.01" prop:value=move || threshold.get().to_string()
                    on:input=move |ev| threshold.set(event_target_value(&ev).parse().unwrap_or(0.0))/>
                {move || format!(" {:.2}", threshold.get())}
            </label>
        </section>
        {move || result_items().map(|(title, shown, n)| view! {
            <section class="results">
                <h2>{title}</h2>
                <ol class="grid" on:keydown=move |ev| grid_keys(&ev)>
                    {shown.into_iter().map(|(h, name, url)| {
                        let o = origin(h.id);
                        view! {
                            <li data-testid="result" data-file=name.clone() data-score=h.score.to_string()
                                data-slide=o.as_ref().map(|o| o.slide.clone())
                                data-x=o.as_ref().map(|o| o.x.to_string())
                                data-y=o.as_ref().map(|o| o.y.to_string())
                                data-size=o.as_ref().map(|o| o.size.to_string())>
                                <button on:click=move |_| ctx.similar(h.id) title=format!("{name}: find similar")>
                                    <img src=url alt=name.clone()/>
                                </button>
                                <span class="score">{format!("{:.3}", h.score)}</span>
                                <span class="name">{name.clone()}</span>
                            </li>
                        }
                    }).collect_view()}
                </ol>
                {(n >= ctx.limit.get_untracked()).then(|| view! { <button on:click=show_more>"Show more"</button> })}
            </section>
        })}
    }
}
