//! The teaching lab in the worker: evaluating the model on the collection's labelled images
//! (zero-shot, retrieval, linear probe) and mapping the embeddings to 2-D, through `index::lab`,
//! the code `weights-tool eval` runs natively.

use app::Event;
use index::lab::{self, map, probe::ProbeOptions};

use crate::model::embed_texts;
use crate::state::{STATE, post};

/// Posts progress at most every 100 ms (and the last step), so a long fit does not flood the page.
struct Ticker {
    stage: &'static str,
    last: f64,
}

impl Ticker {
    fn new(stage: &'static str) -> Self {
        Ticker { stage, last: 0.0 }
    }
    fn tick(&mut self, done: usize, total: usize) {
        let now = js_sys::Date::now();
        if now - self.last >= 100.0 || done == total {
            self.last = now;
            post(&Event::LabProgress { stage: self.stage.into(), done, total });
        }
    }
}

/// The loaded model's base: a result is for the model that was loaded when it started.
fn base() -> String {
    STATE.with(|s| s.borrow().base.clone())
}

pub(crate) async fn evaluate(templates: Vec<String>, probe: bool) -> Result<(), String> {
    let started = js_sys::Date::now();
    let base_at_start = base();
    let templates: Vec<String> = templates.into_iter().map(|t| t.trim().to_string()).filter(|t| !t.is_empty()).collect();
    // The labelled images, by name: the order `weights-tool eval` walks a folder in, so that the
    // probe's seeded split is the same images natively and here.
    let mut rows: Vec<(String, u64, String, Vec<f32>)> = STATE.with(|s| {
        let s = s.borrow();
        s.items.iter().filter_map(|(&id, e)| Some((e.name.clone(), id, e.label.clone()?, e.embedding.clone()))).collect()
    });
    rows.sort_by(|a, b| a.0.cmp(&b.0).then(a.1.cmp(&b.1)));
    let mut ids = Vec::with_capacity(rows.len());
    let mut labels = Vec::with_capacity(rows.len());
    let mut images = Vec::with_capacity(rows.len());
    for (_, id, label, embedding) in rows {
        ids.push(id);
        labels.push(label);
        images.push(embedding);
    }
    if ids.is_empty() {
        return Err("no labelled images: add a folder of class folders (set/tumour/…, set/stroma/…) or images with a file,label CSV".into());
    }
    let refs: Vec<&str> = labels.iter().map(String::as_str).collect();
    let (classes, truth) = lab::labels::class_indices(&refs);
    if classes.len() < 2 {
        return Err(format!("the labelled images are all \"{}\": evaluation needs at least two classes", classes[0]));
    }
    let mut ticker = Ticker::new("embed prompts");
    let mut prompts = Vec::with_capacity(classes.len());
    for (c, class) in classes.iter().enumerate() {
        let texts = lab::zero_shot::prompts(class, &templates);
        let mut embedded = Vec::with_capacity(texts.len());
        for chunk in texts.chunks(16) {
            let refs: Vec<&str> = chunk.iter().map(String::as_str).collect();
            embedded.extend(embed_texts(&refs).await?);
        }
        prompts.push(embedded);
        ticker.tick(c + 1, classes.len());
        if base() != base_at_start {
            return Err("another model was loaded during the evaluation: evaluate again".into());
        }
    }
    let model = base_at_start.clone();
    let options = ProbeOptions::default();
    let mut ticker = Ticker::new("linear probe");
    let report = lab::evaluate(&model, &templates, &classes, &prompts, &images, &truth, probe.then_some(&options), &mut |d, t| ticker.tick(d, t));
    let seconds = (js_sys::Date::now() - started) / 1000.0;
    post(&Event::Evaluated { base: base_at_start, ids, report, seconds });
    Ok(())
}

/// At most this many points for the map's trustworthiness (it is quadratic).
const TRUST_SAMPLE: usize = 2000;

pub(crate) async fn map(method: String) -> Result<(), String> {
    let started = js_sys::Date::now();
    let base = base();
    let (ids, rows): (Vec<u64>, Vec<Vec<f32>>) = STATE.with(|s| s.borrow().items.iter().map(|(&id, e)| (id, e.embedding.clone())).unzip());
    if rows.len() < 3 {
        return Err("the map needs at least three images".into());
    }
    let points: Vec<[f32; 2]> = match method.as_str() {
        "pca" => map::pca(&rows, 2, 0).projected.iter().map(|p| [p[0], p.get(1).copied().unwrap_or(0.0)]).collect(),
        "umap" => {
            let mut ticker = Ticker::new("umap");
            map::umap(&rows, &map::UmapOptions::default(), &mut |d, t| ticker.tick(d, t))
        }
        other => return Err(format!("unknown map method {other:?} (pca or umap)")),
    };
    if points.iter().flatten().any(|v| !v.is_finite()) {
        return Err("the map is not finite: some embeddings hold NaN or infinity".into());
    }
    let seconds = (js_sys::Date::now() - started) / 1000.0;
    let m = rows.len().min(TRUST_SAMPLE);
    let step = rows.len() / m;
    let sub: Vec<Vec<f32>> = (0..m).map(|i| rows[i * step].clone()).collect();
    let sub_points: Vec<[f32; 2]> = (0..m).map(|i| points[i * step]).collect();
    // scikit-learn's definition needs k < n/2 (2n ≥ 3k + 2); 10 where the set allows.
    let k = 10.min((2 * m).saturating_sub(2) / 3).max(1);
    let trustworthiness = map::trustworthiness(&sub, &sub_points, k);
    post(&Event::Mapped { base, method, ids, points, seconds, trustworthiness, k });
    Ok(())
}
