//! Zero-shot classification of the whole collection against labels the user types: a bar per
//! label that filters the gallery, and the CSV of every image's label.

use app::{Classification, Request, classification_csv, parse_labels};
use leptos::prelude::*;

use super::state::{Ctx, Filter, download_text};

#[component]
pub fn Classify(ctx: Ctx) -> impl IntoView {
    let labels_text = RwSignal::new(String::new());
    let class_template = RwSignal::new(None::<String>); // None: the model's template
    let classify = move || {
        let labels = parse_labels(&labels_text.get_untracked());
        let template = class_template.get_untracked().or_else(|| ctx.template()).filter(|t| !t.trim().is_empty());
        if matches!(ctx.filter.get_untracked(), Some(Filter::Label(_))) {
            ctx.filter.set(None);
        }
        ctx.status.set(format!("Classifying {} images against {} labels…", ctx.thumbs.with_untracked(Vec::len), labels.len()));
        ctx.send(&Request::Classify { labels, template }, &[]);
    };
    let export_csv = move |_| {
        let Some(c) = ctx.classes.get_untracked() else { return };
        let rows: Vec<(String, &Classification)> =
            ctx.thumbs.with_untracked(|t| t.iter().filter_map(|t| c.rows.get(&t.id).map(|r| (t.name.clone(), r))).collect());
        download_text(&classification_csv(&c.labels, &rows), "text/csv", "obscura-classification.csv");
    };
    view! {
        <section class="classify">
            <h2>"Zero-shot classification"</h2>
            <div class="classify-form">
                <textarea data-testid="classify-labels" rows="4" placeholder="One label per line, e.g.\ntumour\nstroma\nlymphocytes"
                    prop:value=move || labels_text.get() on:input=move |ev| labels_text.set(event_target_value(&ev))></textarea>
                <label>"Template "
                    <input type="text" data-testid="classify-template"
                        prop:value=move || class_template.get().or_else(|| ctx.template()).unwrap_or_default()
                        on:input=move |ev| class_template.set(Some(event_target_value(&ev)))/>
                </label>
                <button data-testid="classify-run" on:click=move |_| classify()>"Classify"</button>
            </div>
            {move || ctx.classes.get().map(|c| {
                let mut counts = vec![0usize; c.labels.len()];
                for r in c.rows.values() { counts[r.label] += 1; }
                let total = c.rows.len().max(1);
                let stale = ctx.thumbs.with(Vec::len) != c.rows.len();
                view! {
                    <ul class="bars">
                        {c.labels.iter().cloned().enumerate().map(|(i, l)| {
                            let n = counts[i];
                            view! {
                                <li>
                                    <button data-testid="label-bar" data-label=l.clone() data-count=n.to_string()
                                        aria-pressed=move || (ctx.filter.get() == Some(Filter::Label(i))).to_string()
                                        on:click=move |_| ctx.filter.update(|f| *f = if *f == Some(Filter::Label(i)) { None } else { Some(Filter::Label(i)) })
                                        title="Show only these images in the collection">
                                        <span class="bar-label">{l.clone()}</span>
                                        <meter min="0" max=total.to_string() value=n.to_string()></meter>
                                        <span class="bar-count">{n}</span>
                                    </button>
                                </li>
                            }
                        }).collect_view()}
                    </ul>
                    <p>
                        <button data-testid="export-csv" on:click=export_csv>"Export CSV"</button>
                        {stale.then_some(" The collection changed since: classify again to include every image.")}
                    </p>
                }
            })}
        </section>
    }
}
