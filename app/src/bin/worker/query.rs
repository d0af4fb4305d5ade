//! Questions asked of the collection: zero-shot classification and searches by text, by an
//! indexed image and by a query image.

use app::{Classification, Event, Hit, Query};
use model_wasm::Exif;
use web_sys::File;

use crate::add::read;
use crate::model::{embed_images, embed_texts};
use crate::state::{STATE, clip, post};

pub(crate) async fn classify(labels: Vec<String>, template: Option<String>) -> Result<(), String> {
    if labels.len() < 2 {
        return Err("type at least two labels, one per line".into());
    }
    let prompts: Vec<String> = labels.iter().map(|l| app::apply_template(template.as_deref(), l)).collect();
    let mut texts = Vec::new();
    for chunk in prompts.chunks(16) {
        let refs: Vec<&str> = chunk.iter().map(String::as_str).collect();
        texts.extend(embed_texts(&refs).await?);
    }
    let scale = clip()?.logit_scale();
    let rows: Vec<Classification> = STATE.with(|s| {
        s.borrow()
            .items
            .iter()
            .map(|(&id, e)| {
                let (label, probs) = app::zero_shot(&e.embedding, &texts, scale);
                Classification { id, label, confidence: probs[label], probs }
            })
            .collect()
    });
    post(&Event::Classified { labels, rows });
    Ok(())
}

// ------------------------------------------------------------------ search

fn search(query: Query, vector: &[f32], limit: usize, exclude: Option<u64>) -> Result<(), String> {
    let hits = STATE.with(|s| {
        let s = s.borrow();
        let Some(ix) = s.index.as_ref() else { return Ok(Vec::new()) };
        ix.search(vector, limit + usize::from(exclude.is_some())).map_err(|e| e.to_string())
    })?;
    let hits: Vec<Hit> =
        hits.into_iter().filter(|h| Some(h.id) != exclude).take(limit).map(|h| Hit { id: h.id, score: h.score }).collect();
    post(&Event::Results { query, hits });
    Ok(())
}

pub(crate) async fn search_text(text: String, limit: usize) -> Result<(), String> {
    let emb = embed_texts(&[text.as_str()]).await?;
    search(Query::Text { text }, &emb[0], limit, None)
}

pub(crate) fn similar(id: u64, limit: usize) -> Result<(), String> {
    let vector = STATE
        .with(|s| s.borrow().items.get(&id).map(|e| e.embedding.clone()))
        .ok_or_else(|| format!("no image with id {id}"))?;
    search(Query::Similar { id }, &vector, limit, Some(id))
}

pub(crate) async fn query_image(files: Vec<File>, name: String, limit: usize) -> Result<(), String> {
    let clip = clip()?;
    let file = files.first().ok_or("no query image was sent")?;
    let bytes = read(file).await?;
    let pixels = clip.pixels(&bytes, &name, Exif::Apply).map_err(|e| format!("{name}: {e}"))?;
    let emb = embed_images(&[pixels]).await?;
    search(Query::Image { name }, &emb[0], limit, None)
}
