//! The teaching lab: evaluate the model on the collection's labelled images (zero-shot metrics,
//! retrieval, confusion matrix whose cells open their images, linear probe and its few-shot
//! curve), compare with the last evaluation of another model, map the embeddings (PCA at once,
//! UMAP after) with hover, click and lasso, and export the figures and one HTML report.

use std::collections::{HashMap, HashSet};

use app::lab::{self as figures, MAP_SIZE, SUMMARY, confusion_value, heat, summary_value};
use app::Request;
use index::lab::Report;
use js_sys::Array;
use leptos::prelude::*;
use wasm_bindgen::JsCast;
use wasm_bindgen::prelude::*;
use web_sys::{Blob, BlobPropertyBag, HtmlCanvasElement, HtmlImageElement, PointerEvent, Url};

use super::state::{Ctx, Filter, download, download_text};

/// One evaluation as the page keeps it: which model, on what, and the report.
#[derive(Clone, Debug, PartialEq)]
pub struct Evaluation {
    /// The model's id (a catalog id or `local/<key>`): one evaluation per model is kept.
    pub key: String,
    /// Its name as shown (with the dtype for a model stored on this device).
    pub model: String,
    pub backend: String,
    /// The labelled images, in the report's order.
    pub ids: Vec<u64>,
    pub report: Report,
}

impl Evaluation {
    fn title(&self) -> String {
        format!("{} ({})", self.model, self.backend)
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct MapData {
    pub method: String,
    pub ids: Vec<u64>,
    pub points: Vec<[f32; 2]>,
    pub trustworthiness: f64,
    /// The neighbours the trustworthiness counts.
    pub k: usize,
}

#[derive(Clone, Copy)]
pub struct LabState {
    /// The prompt templates, one per line; `None`: the model's own.
    pub templates: RwSignal<Option<String>>,
    pub probe: RwSignal<bool>,
    /// What runs: stage, done, total.
    pub running: RwSignal<Option<(String, usize, usize)>>,
    /// The latest evaluation of each model, at most two (the comparison), newest last.
    pub evaluations: RwSignal<Vec<Evaluation>>,
    pub map: RwSignal<Option<MapData>>,
    /// Colour the map by the zero-shot prediction rather than the label.
    pub by_predicted: RwSignal<bool>,
    pub normalised: RwSignal<bool>,
}

impl LabState {
    pub fn new() -> Self {
        LabState {
            templates: RwSignal::new(None),
            probe: RwSignal::new(true),
            running: RwSignal::new(None),
            evaluations: RwSignal::new(Vec::new()),
            map: RwSignal::new(None),
            by_predicted: RwSignal::new(false),
            normalised: RwSignal::new(false),
        }
    }

    /// The collection is changing to another model's: the map goes, the evaluations stay (they
    /// are the comparison).
    pub fn clear(&self) {
        self.map.set(None);
        self.running.set(None);
        self.templates.set(None);
    }

    pub fn evaluated(&self, e: Evaluation) {
        self.running.set(None);
        self.evaluations.update(|list| {
            list.retain(|x| x.key != e.key);
            list.push(e);
            while list.len() > 2 {
                list.remove(0);
            }
        });
    }

    pub fn mapped(&self, m: MapData) {
        self.running.set(None);
        self.map.set(Some(m));
    }
}

/// Renders an SVG string to a PNG (twice its size) and saves it.
fn download_png(svg: String, name: String) {
    let opts = BlobPropertyBag::new();
    opts.set_type("image/svg+xml");
    let Ok(blob) = Blob::new_with_str_sequence_and_options(&Array::of1(&JsValue::from_str(&svg)), &opts) else { return };
    let Ok(url) = Url::create_object_url_with_blob(&blob) else { return };
    let Ok(img) = HtmlImageElement::new() else { return };
    let img2 = img.clone();
    let url2 = url.clone();
    let onload = Closure::once_into_js(move || {
        let _ = Url::revoke_object_url(&url2);
        let Some(canvas) = web_sys::window()
            .and_then(|w| w.document())
            .and_then(|d| d.create_element("canvas").ok())
            .and_then(|c| c.dyn_into::<HtmlCanvasElement>().ok())
        else {
            return;
        };
        let (w, h) = (img2.natural_width().max(1), img2.natural_height().max(1));
        canvas.set_width(2 * w);
        canvas.set_height(2 * h);
        let Some(g) = canvas.get_context("2d").ok().flatten().and_then(|c| c.dyn_into::<web_sys::CanvasRenderingContext2d>().ok()) else {
            return;
        };
        let _ = g.scale(2.0, 2.0);
        let _ = g.draw_image_with_html_image_element(&img2, 0.0, 0.0);
        let saved = Closure::once_into_js(move |blob: Option<Blob>| {
            if let Some(b) = blob {
                download(&b, &name);
            }
        });
        let _ = canvas.to_blob(saved.unchecked_ref());
    });
    img.set_onload(Some(onload.unchecked_ref()));
    img.set_src(&url);
}

fn slug(s: &str) -> String {
    s.chars().map(|c| if c.is_ascii_alphanumeric() { c.to_ascii_lowercase() } else { '-' }).collect::<String>().trim_matches('-').to_string()
}

#[component]
pub fn Lab(ctx: Ctx) -> impl IntoView {
    let lab = ctx.lab;
    let models = ctx.models;
    let model_templates = move || {
        let id = models.model.get()?;
        Some(models.templates_of(&id).join("\n"))
    };
    let templates_text = move || lab.templates.get().or_else(model_templates).unwrap_or_default();
    let labelled = move || {
        ctx.labels.with(|l| {
            let mut classes: Vec<&String> = l.values().collect();
            classes.sort();
            classes.dedup();
            (l.len(), classes.len())
        })
    };
    let evaluate = move |_| {
        let templates: Vec<String> = templates_text().lines().map(str::trim).filter(|t| !t.is_empty()).map(String::from).collect();
        lab.running.set(Some(("embed prompts".into(), 0, 1)));
        ctx.send(&Request::Evaluate { templates, probe: lab.probe.get_untracked() }, &[]);
    };
    let map = move |method: &str| {
        lab.running.set(Some((method.into(), 0, 1)));
        ctx.send(&Request::Map { method: method.into() }, &[]);
    };
    let current = move || {
        let key = models.model.get().unwrap_or_default();
        lab.evaluations.with(|l| l.iter().rev().find(|e| e.key == key).cloned())
    };
    let export_csv = move |_| {
        let list = lab.evaluations.get_untracked();
        let rows: Vec<(String, &Report)> = list.iter().map(|e| (e.title(), &e.report)).collect();
        let refs: Vec<(&str, &Report)> = rows.iter().map(|(n, r)| (n.as_str(), *r)).collect();
        download_text(&figures::metrics_csv(&refs), "text/csv", "obscura-lab-metrics.csv");
    };
    let map_figure = move || -> Option<String> {
        let m = lab.map.get()?;
        let (classes, colours) = map_colours(ctx, &m, lab.by_predicted.get(), current());
        Some(figures::map_svg(
            &format!("{} of {} images, coloured by {}", m.method.to_uppercase(), m.ids.len(), if lab.by_predicted.get() { "zero-shot prediction" } else { "label" }),
            &m.points,
            &colours,
            &classes,
        ))
    };
    let export_html = move |_| {
        let list = lab.evaluations.get_untracked();
        let rows: Vec<(String, &Report)> = list.iter().map(|e| (e.title(), &e.report)).collect();
        let refs: Vec<(&str, &Report)> = rows.iter().map(|(n, r)| (n.as_str(), *r)).collect();
        let when = String::from(js_sys::Date::new_0().to_iso_string());
        let map = untrack(map_figure);
        download_text(&figures::report_html(&refs, map.as_deref(), &format!("Made {}", &when[..10])), "text/html", "obscura-lab-report.html");
    };

    view! {
        <section class="lab" data-testid="lab">
            <h2>"Teaching lab"</h2>
            <p data-testid="lab-labelled">{move || {
                let (n, k) = labelled();
                if n == 0 {
                    "No labelled images yet: add a folder of class folders, or images with a file,label CSV.".to_string()
                } else {
                    format!("{n} labelled images in {k} classes.")
                }
            }}</p>
            <div class="lab-form">
                <label>"Prompt templates (one per line; several are ensembled)"
                    <textarea data-testid="lab-templates" rows="3" prop:value=templates_text
                        on:input=move |ev| lab.templates.set(Some(event_target_value(&ev)))></textarea>
                </label>
                <label><input type="checkbox" data-testid="lab-probe" prop:checked=move || lab.probe.get()
                    on:change=move |ev| lab.probe.set(event_target_checked(&ev))/>" linear probe and few-shot curve"</label>
                <button data-testid="lab-evaluate" disabled=move || lab.running.get().is_some() || labelled().1 < 2 on:click=evaluate>"Evaluate"</button>
                " "<button data-testid="map-pca" disabled=move || lab.running.get().is_some() on:click=move |_| map("pca")>"Map (PCA)"</button>
                " "<button data-testid="map-umap" disabled=move || lab.running.get().is_some() on:click=move |_| map("umap")>"Map (UMAP)"</button>
            </div>
            {move || lab.running.get().map(|(stage, done, total)| view! {
                <p class="progress" data-testid="lab-progress"><progress max=total.to_string() value=done.to_string()></progress>{format!(" {stage}: {done} of {total}")}</p>
            })}
            {move || (!lab.evaluations.with(Vec::is_empty)).then(|| view! {
                <Summary ctx=ctx/>
                <p class="toolbar">
                    <button data-testid="lab-export-csv" on:click=export_csv>"Metrics (CSV)"</button>
                    " "<button data-testid="lab-export-html" on:click=export_html>"Report (HTML)"</button>
                </p>
                <div class="lab-models">
                    {move || lab.evaluations.get().into_iter().rev().map(|e| view! { <ModelResult ctx=ctx e=e/> }).collect_view()}
                </div>
            })}
            {move || lab.map.get().map(|m| view! {
                <div class="lab-map">
                    <p>
                        {format!("{} map of {} images · trustworthiness (k = {}) {:.3} ", m.method.to_uppercase(), m.ids.len(), m.k, m.trustworthiness)}
                        <label><input type="checkbox" prop:checked=move || lab.by_predicted.get() on:change=move |ev| lab.by_predicted.set(event_target_checked(&ev))/>
                            " colour by zero-shot prediction"</label>
                        " "<button on:click=move |_| if let Some(s) = untrack(map_figure) { download_text(&s, "image/svg+xml", "obscura-map.svg") }>"SVG"</button>
                        " "<button on:click=move |_| if let Some(s) = untrack(map_figure) { download_png(s, "obscura-map.png".into()) }>"PNG"</button>
                    </p>
                    <p class="muted">"Hover a point for its image, click to open it, drag a lasso to show those images in the collection."</p>
                    <MapView ctx=ctx svg=Signal::derive(move || map_figure().unwrap_or_default())/>
                </div>
            })}
        </section>
    }
}

/// The evaluation of the current model's labelled images, for the map's colours: classes, and
/// each point's class (by label or by prediction), `None` when it has none.
fn map_colours(ctx: Ctx, m: &MapData, by_predicted: bool, current: Option<Evaluation>) -> (Vec<String>, Vec<Option<usize>>) {
    let labels = ctx.labels.get();
    let mut classes: Vec<String> = labels.values().cloned().collect();
    classes.sort();
    classes.dedup();
    if let Some(e) = &current {
        for c in &e.report.classes {
            if !classes.contains(c) {
                classes.push(c.clone());
            }
        }
    }
    let index: HashMap<&str, usize> = classes.iter().enumerate().map(|(i, c)| (c.as_str(), i)).collect();
    let predicted: HashMap<u64, usize> = match (&current, by_predicted) {
        (Some(e), true) => e.ids.iter().zip(&e.report.predicted).filter_map(|(&id, &p)| Some((id, index.get(e.report.classes[p].as_str()).copied()?))).collect(),
        _ => HashMap::new(),
    };
    let colours = m
        .ids
        .iter()
        .map(|id| if by_predicted { predicted.get(id).copied() } else { labels.get(id).and_then(|l| index.get(l.as_str()).copied()) })
        .collect();
    (classes, colours)
}

/// The metric table: a row per metric, a column per model.
#[component]
fn Summary(ctx: Ctx) -> impl IntoView {
    let lab = ctx.lab;
    view! {
        <table class="lab-summary" data-testid="lab-summary">
            <thead><tr><th>"metric"</th>
                {move || lab.evaluations.get().into_iter().map(|e| view! {
                    <th>{e.title()}<br/><span class="muted">{format!("{} images · {}", e.report.metrics.n, e.report.templates.len())}" template(s)"</span></th>
                }).collect_view()}
            </tr></thead>
            <tbody>
                {move || {
                    let list = lab.evaluations.get();
                    SUMMARY.iter().filter(|(key, _)| list.iter().any(|e| summary_value(&e.report, key).is_some())).map(|&(key, label)| {
                        let cells = list.iter().map(|e| {
                            let v = summary_value(&e.report, key);
                            view! {
                                <td data-testid="metric" data-key=key data-model=e.model.clone() data-value=v.map(|v| v.to_string()).unwrap_or_default()>
                                    {v.map_or("–".to_string(), |v| format!("{v:.3}"))}
                                </td>
                            }
                        }).collect_view();
                        view! { <tr><td>{label}</td>{cells}</tr> }
                    }).collect_view()
                }}
            </tbody>
        </table>
    }
}

/// One model's per-class table, confusion matrix and few-shot curve.
#[component]
fn ModelResult(ctx: Ctx, e: Evaluation) -> impl IntoView {
    let lab = ctx.lab;
    let r = e.report.clone();
    let title = e.title();
    let k = r.classes.len();
    let key = e.key.clone();
    let is_current = Memo::new(move |_| ctx.models.model.get().as_deref() == Some(key.as_str()));
    let confusion = r.metrics.confusion.clone();
    let classes = r.classes.clone();
    // What the cells need, shared by all of them.
    let cells = StoredValue::new((confusion.clone(), e.ids.clone(), r.truth.clone(), r.predicted.clone()));
    let cell_ids = move |row: usize, col: usize| -> HashSet<u64> {
        cells.with_value(|(_, ids, truth, predicted)| {
            ids.iter().zip(truth.iter().zip(predicted)).filter(|(_, (t, p))| **t == row && **p == col).map(|(id, _)| *id).collect()
        })
    };
    // The largest cell, counts and row shares: the heat map's scale.
    let max_of = |normalised: bool| {
        (0..k).flat_map(|r| (0..k).map(move |c| (r, c))).map(|(r, c)| confusion_value(&confusion, r, c, normalised)).fold(0.0, f64::max)
    };
    let max = [max_of(false), max_of(true)];
    let share = move |row: usize, col: usize, normalised: bool| -> f64 {
        let max = max[usize::from(normalised)];
        cells.with_value(|(m, ..)| if max > 0.0 { confusion_value(m, row, col, normalised) / max } else { 0.0 })
    };
    let confusion_svg = {
        let (t, c, m) = (title.clone(), classes.clone(), confusion.clone());
        move || figures::confusion_svg(&format!("{t}: confusion"), &c, &m, lab.normalised.get_untracked())
    };
    let confusion_svg2 = confusion_svg.clone();
    let few_shot = figures::few_shot_svg(&format!("{title}: linear probe"), &r);
    let few_shot2 = few_shot.clone();
    let base = slug(&e.model);
    let (b1, b2, b3) = (base.clone(), base.clone(), base.clone());
    view! {
        <div class="lab-model" data-testid="lab-model" data-model=e.model.clone()>
            <h3>{title.clone()}</h3>
            <p class="muted">"Templates: "{r.templates.join(" · ")}</p>
            <table class="per-class">
                <thead><tr><th>"class"</th><th>"precision"</th><th>"recall"</th><th>"F1"</th><th>"support"</th></tr></thead>
                <tbody>{r.metrics.per_class.iter().map(|c| view! {
                    <tr data-testid="per-class" data-class=c.label.clone()><td>{c.label.clone()}</td><td>{format!("{:.3}", c.precision)}</td><td>{format!("{:.3}", c.recall)}</td>
                        <td>{format!("{:.3}", c.f1)}</td><td>{c.support}</td></tr>
                }).collect_view()}</tbody>
            </table>
            <h4>"Confusion matrix "
                <label class="muted"><input type="checkbox" prop:checked=move || lab.normalised.get() on:change=move |ev| lab.normalised.set(event_target_checked(&ev))/>" share of each row"</label>
                " "<button class="small" on:click=move |_| download_text(&confusion_svg(), "image/svg+xml", &format!("obscura-confusion-{b1}.svg"))>"SVG"</button>
                " "<button class="small" on:click=move |_| download_png(confusion_svg2(), format!("obscura-confusion-{b2}.png"))>"PNG"</button>
            </h4>
            <p class="muted">"Rows: true class; columns: predicted. "{move || if is_current.get() { "A cell shows its images in the collection." } else { "(Another model's collection: load it to open the cells.)" }}</p>
            <table class="confusion" data-testid="confusion">
                <thead><tr><th></th>{classes.iter().map(|c| view! { <th class="col"><span>{c.clone()}</span></th> }).collect_view()}</tr></thead>
                <tbody>
                    {(0..k).map(|row| {
                        let classes = classes.clone();
                        let confusion = confusion.clone();
                        view! {
                            <tr><th>{classes[row].clone()}</th>
                                {(0..k).map(|col| {
                                    let n = confusion[row][col];
                                    let total: usize = confusion[row].iter().sum();
                                    let title = format!("{} → {}", classes[row], classes[col]);
                                    let filter_title = format!("true {title} (predicted)");
                                    view! {
                                        <td>
                                            <button data-testid="confusion-cell" data-row=row.to_string() data-col=col.to_string() data-count=n.to_string()
                                                disabled=move || n == 0 || !is_current.get()
                                                title=format!("{title}: {n} images")
                                                style:background=move || heat(share(row, col, lab.normalised.get()))
                                                style:color=move || { if share(row, col, lab.normalised.get()) > 0.5 { "white" } else { "#222" } }
                                                on:click=move |_| ctx.filter.set(Some(Filter::Ids { title: filter_title.clone(), ids: cell_ids(row, col) }))>
                                                {move || if lab.normalised.get() {
                                                    format!("{:.0}%", if total > 0 { 100.0 * n as f64 / total as f64 } else { 0.0 })
                                                } else {
                                                    n.to_string()
                                                }}
                                            </button>
                                        </td>
                                    }
                                }).collect_view()}
                            </tr>
                        }
                    }).collect_view()}
                </tbody>
            </table>
            {r.probe.clone().map(|p| view! {
                <h4>"Linear probe "
                    {few_shot.clone().map(|s| view! { <button class="small" on:click=move |_| download_text(&s, "image/svg+xml", &format!("obscura-few-shot-{b3}.svg"))>"SVG"</button> })}
                    " "{few_shot2.clone().map(|s| { let b = base.clone(); view! { <button class="small" on:click=move |_| download_png(s.clone(), format!("obscura-few-shot-{b}.png"))>"PNG"</button> } })}
                </h4>
                <p data-testid="probe" data-accuracy=p.metrics.accuracy.to_string() data-c=p.c.to_string()>
                    {format!("Logistic regression (L2) on the normalised embeddings: test accuracy {:.3} on {} held-out images; C = {} by {}-fold cross-validation on {}the {} training images.",
                        p.metrics.accuracy, p.test_size, p.c, p.folds,
                        if p.cv_rows < p.train_size { format!("a stratified {} of ", p.cv_rows) } else { String::new() }, p.train_size)}
                    {p.zero_shot_accuracy.map(|z| format!(" Zero-shot on the same test images: {z:.3}."))}
                </p>
                <div class="figure" inner_html=few_shot.clone().unwrap_or_default()></div>
            })}
            {r.probe.is_none().then(|| r.probe_error.clone()).flatten().map(|e| view! { <p class="muted">"No linear probe: "{e}</p> })}
            <p class="muted">{format!("{} labelled images evaluated", e.ids.len())}</p>
        </div>
    }
}

/// The map, drawn once as SVG (the exported figure), with hover, click and lasso on top.
#[component]
fn MapView(ctx: Ctx, svg: Signal<String>) -> impl IntoView {
    let lab = ctx.lab;
    let hover = RwSignal::new(None::<(u64, f64, f64)>);
    let lasso = RwSignal::new(Vec::<(f64, f64)>::new());
    let dragging = RwSignal::new(false);
    let host = NodeRef::<leptos::html::Div>::new();
    // Points in the plot's coordinates (the figure's plot area starts 26 units down).
    let layout = Memo::new(move |_| lab.map.with(|m| m.as_ref().map(|m| (m.ids.clone(), figures::map_layout(&m.points))).unwrap_or_default()));
    let local = move |ev: &PointerEvent| -> Option<(f64, f64)> {
        let el = host.get_untracked()?;
        let rect = el.get_bounding_client_rect();
        Some((ev.client_x() as f64 - rect.left(), ev.client_y() as f64 - rect.top() - 26.0))
    };
    let nearest = move |(x, y): (f64, f64)| -> Option<(u64, f64, f64)> {
        layout.with_untracked(|(ids, xy)| {
            let (i, d) = xy.iter().enumerate().map(|(i, p)| (i, (p[0] - x).powi(2) + (p[1] - y).powi(2))).min_by(|a, b| a.1.total_cmp(&b.1))?;
            (d <= 64.0).then(|| (ids[i], xy[i][0], xy[i][1]))
        })
    };
    let on_down = move |ev: PointerEvent| {
        if let Some(p) = local(&ev) {
            dragging.set(true);
            lasso.set(vec![p]);
        }
    };
    let on_move = move |ev: PointerEvent| {
        let Some(p) = local(&ev) else { return };
        if dragging.get_untracked() {
            lasso.update(|l| l.push(p));
        } else {
            hover.set(nearest(p));
        }
    };
    let on_up = move |ev: PointerEvent| {
        dragging.set(false);
        let path = lasso.get_untracked();
        lasso.set(Vec::new());
        let extent = path.iter().map(|p| (p.0 - path[0].0).abs() + (p.1 - path[0].1).abs()).fold(0.0, f64::max);
        if path.len() < 3 || extent < 6.0 {
            // A click: open the image under the pointer.
            if let Some((id, _, _)) = local(&ev).and_then(nearest) {
                ctx.viewer.set(Some(id));
            }
            return;
        }
        let ids: HashSet<u64> = layout.with_untracked(|(ids, xy)| ids.iter().zip(xy).filter(|(_, p)| inside(&path, p[0], p[1])).map(|(id, _)| *id).collect());
        let n = ids.len();
        ctx.filter.set(Some(Filter::Ids { title: format!("the lasso on the map ({n})"), ids }));
    };
    view! {
        <div class="map-host" node_ref=host data-testid="map"
            on:pointerdown=on_down on:pointermove=on_move on:pointerup=on_up on:pointerleave=move |_| { hover.set(None); dragging.set(false); lasso.set(Vec::new()); }>
            <div inner_html=move || svg.get()></div>
            <svg class="map-overlay" width=MAP_SIZE.to_string() height=(MAP_SIZE + 26.0).to_string()>
                <g transform="translate(0,26)">
                    {move || hover.get().map(|(_, x, y)| view! { <circle cx=x.to_string() cy=y.to_string() r="6" fill="none" stroke="#000" stroke-width="1.5"/> })}
                    <polyline fill="rgba(31,119,180,0.12)" stroke="#1f77b4" stroke-dasharray="4,3"
                        points=move || lasso.with(|l| l.iter().map(|(x, y)| format!("{x:.1},{y:.1}")).collect::<Vec<_>>().join(" "))/>
                </g>
            </svg>
            {move || hover.get().and_then(|(id, x, y)| {
                let url = ctx.thumb_of(id)?;
                let name = ctx.name_of(id).unwrap_or_default();
                let label = ctx.labels.with(|l| l.get(&id).cloned());
                Some(view! {
                    <div class="map-tip" data-testid="map-tip" style:left=format!("{}px", x + 12.0) style:top=format!("{}px", y + 38.0)>
                        <img src=url alt=name.clone()/>
                        <span>{name}{label.map(|l| format!(" · {l}"))}</span>
                    </div>
                })
            })}
        </div>
    }
}

/// Is (`x`, `y`) inside the polygon `path` (even-odd rule)?
fn inside(path: &[(f64, f64)], x: f64, y: f64) -> bool {
    let mut inside = false;
    let mut j = path.len() - 1;
    for i in 0..path.len() {
        let ((xi, yi), (xj, yj)) = (path[i], path[j]);
        if (yi > y) != (yj > y) && x < (xj - xi) * (y - yi) / (yj - yi) + xi {
            inside = !inside;
        }
        j = i;
    }
    inside
}
