//! The collection file: how the app keeps a collection across reloads (in the origin-private file
//! system) and how it exports and imports one. One format for both, so an export is exactly what
//! the app would reload. `weights-tool embed --collection-out` writes it too (slides embedded
//! natively, then imported in the tab), so it lives here, beside the model whose manifest it names.
//!
//! ```text
//! "OBSCOLL1"  u32 header length  header (JSON: format, model, manifest sha256, dim)  u32 crc32
//! record*:    u8 kind  u32 body length  body  u32 crc32(kind, body)
//!   kind 1 (add):    u64 id  [u8; 32] sha256 of the file  u16 name length  name
//!                    u32 thumbnail length  thumbnail (JPEG)  dim × f32 (normalised embedding)
//!   kind 2 (remove): u64 id
//!   kind 3 (add a slide patch, format 2): the body of kind 1, then
//!                    u16 slide name length  slide name  u32 x  u32 y  u32 size  (level-0 pixels)
//!   kind 4 (label, format 3): u64 id  u16 label length  label (UTF-8; empty: no label)
//! ```
//!
//! Format 2 added kind 3, format 3 kind 4 (the labels of a teaching set, so they survive export
//! and import); older files are read as they are. A label record applies to the item with that id
//! added before it, and the last one wins: labelling later (a CSV dropped after the images) only
//! appends.
//!
//! All integers little-endian. The file is append-only while the app runs: each batch of images is
//! appended and flushed as it is embedded, so a tab closed mid-way loses at most the batch in
//! flight. A torn last record (the tab died inside a write) is detected by its length or checksum
//! and dropped on the next open ([`Parsed::valid_len`]); an imported file must be whole.

use serde::{Deserialize, Serialize};

const MAGIC: &[u8; 8] = b"OBSCOLL1";
pub const FORMAT: u32 = 3;
const ADD: u8 = 1;
const REMOVE: u8 = 2;
const ADD_PATCH: u8 = 3;
const LABEL: u8 = 4;

/// Where a slide patch lies in its slide: the square at (`x`, `y`) of side `size`, level-0 pixels.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Origin {
    pub slide: String,
    pub x: u32,
    pub y: u32,
    pub size: u32,
}

/// Long side of a stored thumbnail, in pixels.
pub const THUMB: u32 = 160;

/// The JPEG thumbnail stored with an item: at most [`THUMB`] pixels on the long side.
pub fn thumbnail(img: &crate::Rgb8) -> Result<Vec<u8>, String> {
    let scale = THUMB as f64 / img.width.max(img.height) as f64;
    let small = if scale < 1.0 {
        let (w, h) = (((img.width as f64 * scale).round() as u32).max(1), ((img.height as f64 * scale).round() as u32).max(1));
        crate::preprocess::resize(img, w, h, crate::preprocess::Resample::Bilinear)
    } else {
        img.clone()
    };
    let mut out = Vec::new();
    image::codecs::jpeg::JpegEncoder::new_with_quality(&mut out, 82)
        .encode(&small.data, small.width, small.height, image::ExtendedColorType::Rgb8)
        .map_err(|e| e.to_string())?;
    Ok(out)
}

/// Which model made the embeddings. Collections of different models never mix.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Header {
    pub format: u32,
    /// The model's path under `models/` (e.g. `demo`), for messages.
    pub model: String,
    /// sha256 of the model's `manifest.json`, hex: the same weights, shards and config.
    pub manifest_sha256: String,
    pub dim: usize,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Item {
    pub id: u64,
    pub hash: [u8; 32],
    pub name: String,
    pub thumb: Vec<u8>,
    pub embedding: Vec<f32>,
    /// Where a slide patch came from; `None` for an image file.
    pub origin: Option<Origin>,
}

#[derive(Debug, PartialEq, thiserror::Error)]
pub enum Error {
    #[error("not an Obscura collection file")]
    NotACollection,
    #[error("collection format {0} is newer than this app reads ({FORMAT}); update the app")]
    NewerFormat(u32),
    #[error("the collection header is damaged")]
    BadHeader,
    #[error("the collection file is damaged or cut off after {items} images (at byte {at})")]
    Damaged { items: usize, at: usize },
    #[error("an image record is malformed")]
    BadRecord,
    #[error("an image record has {got} values where the model has {dim}")]
    WrongDim { got: usize, dim: usize },
}

/// What a collection file holds: the items still in it (removals applied), in insertion order.
#[derive(Debug, PartialEq)]
pub struct Parsed {
    pub header: Header,
    pub items: Vec<Item>,
    /// The label of each labelled item (ids of `items` only).
    pub labels: std::collections::HashMap<u64, String>,
    /// Bytes up to the end of the last whole record; anything after is a torn write.
    pub valid_len: usize,
    /// Whether the file ends inside a record.
    pub torn: bool,
}

pub fn header_bytes(header: &Header) -> Vec<u8> {
    let json = serde_json::to_vec(header).expect("headers serialise");
    let mut out = Vec::with_capacity(json.len() + 16);
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&(json.len() as u32).to_le_bytes());
    out.extend_from_slice(&json);
    out.extend_from_slice(&crc32fast::hash(&json).to_le_bytes());
    out
}

fn record(kind: u8, body: &[u8], out: &mut Vec<u8>) {
    out.push(kind);
    out.extend_from_slice(&(body.len() as u32).to_le_bytes());
    out.extend_from_slice(body);
    let mut crc = crc32fast::Hasher::new();
    crc.update(&[kind]);
    crc.update(body);
    out.extend_from_slice(&crc.finalize().to_le_bytes());
}

/// Appends an add record for `item` to `out`.
pub fn add_record(item: &Item, out: &mut Vec<u8>) {
    let body = add_body(item);
    match &item.origin {
        None => record(ADD, &body, out),
        Some(o) => {
            let mut body = body;
            let slide = truncate_utf8(&o.slide, u16::MAX as usize);
            body.extend_from_slice(&(slide.len() as u16).to_le_bytes());
            body.extend_from_slice(slide.as_bytes());
            for v in [o.x, o.y, o.size] {
                body.extend_from_slice(&v.to_le_bytes());
            }
            record(ADD_PATCH, &body, out)
        }
    }
}

fn add_body(item: &Item) -> Vec<u8> {
    let name = truncate_utf8(&item.name, u16::MAX as usize);
    let mut body = Vec::with_capacity(8 + 32 + 2 + name.len() + 4 + item.thumb.len() + 4 * item.embedding.len());
    body.extend_from_slice(&item.id.to_le_bytes());
    body.extend_from_slice(&item.hash);
    body.extend_from_slice(&(name.len() as u16).to_le_bytes());
    body.extend_from_slice(name.as_bytes());
    body.extend_from_slice(&(item.thumb.len() as u32).to_le_bytes());
    body.extend_from_slice(&item.thumb);
    for x in &item.embedding {
        body.extend_from_slice(&x.to_le_bytes());
    }
    body
}

/// Appends a remove record for `id` to `out`.
pub fn remove_record(id: u64, out: &mut Vec<u8>) {
    record(REMOVE, &id.to_le_bytes(), out);
}

/// Appends a label record: `id`'s label becomes `label` (`None` removes it).
pub fn label_record(id: u64, label: Option<&str>, out: &mut Vec<u8>) {
    let label = truncate_utf8(label.unwrap_or_default(), u16::MAX as usize);
    let mut body = Vec::with_capacity(10 + label.len());
    body.extend_from_slice(&id.to_le_bytes());
    body.extend_from_slice(&(label.len() as u16).to_le_bytes());
    body.extend_from_slice(label.as_bytes());
    record(LABEL, &body, out);
}

/// A whole collection file holding `items` (an export, or a compacted store).
pub fn write(header: &Header, items: &[&Item]) -> Vec<u8> {
    write_labelled(header, items, &std::collections::HashMap::new())
}

/// [`write`], with each item's label from `labels` after its record.
pub fn write_labelled(header: &Header, items: &[&Item], labels: &std::collections::HashMap<u64, String>) -> Vec<u8> {
    let mut out = header_bytes(header);
    for item in items {
        add_record(item, &mut out);
        if let Some(l) = labels.get(&item.id) {
            label_record(item.id, Some(l), &mut out);
        }
    }
    out
}

fn truncate_utf8(s: &str, max: usize) -> &str {
    let mut end = s.len().min(max);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let end = self.at.checked_add(n)?;
        let s = self.bytes.get(self.at..end)?;
        self.at = end;
        Some(s)
    }
    fn u32(&mut self) -> Option<u32> {
        self.take(4).map(|b| u32::from_le_bytes(b.try_into().unwrap()))
    }
}

fn parse_add(body: &[u8], dim: usize, patch: bool) -> Result<Item, Error> {
    let bad = || Error::BadRecord;
    let mut r = Reader { bytes: body, at: 0 };
    let id = u64::from_le_bytes(r.take(8).ok_or_else(bad)?.try_into().unwrap());
    let hash: [u8; 32] = r.take(32).ok_or_else(bad)?.try_into().unwrap();
    let name_len = u16::from_le_bytes(r.take(2).ok_or_else(bad)?.try_into().unwrap()) as usize;
    let name = String::from_utf8_lossy(r.take(name_len).ok_or_else(bad)?).into_owned();
    let thumb_len = r.u32().ok_or_else(bad)? as usize;
    let thumb = r.take(thumb_len).ok_or_else(bad)?.to_vec();
    let rest = body.len() - r.at;
    if (!patch && rest != 4 * dim) || rest < 4 * dim {
        return Err(Error::WrongDim { got: rest / 4, dim });
    }
    let embedding = r.take(4 * dim).ok_or_else(bad)?.chunks_exact(4).map(|c| f32::from_le_bytes(c.try_into().unwrap())).collect();
    let origin = if patch {
        let len = u16::from_le_bytes(r.take(2).ok_or_else(bad)?.try_into().unwrap()) as usize;
        let slide = String::from_utf8_lossy(r.take(len).ok_or_else(bad)?).into_owned();
        let mut v = [0u32; 3];
        for x in &mut v {
            *x = r.u32().ok_or_else(bad)?;
        }
        if r.at != body.len() {
            return Err(bad());
        }
        Some(Origin { slide, x: v[0], y: v[1], size: v[2] })
    } else {
        None
    };
    Ok(Item { id, hash, name, thumb, embedding, origin })
}

/// Reads a collection file. A torn or damaged tail ends the reading (see [`Parsed::torn`]);
/// a bad header is an error.
pub fn parse(bytes: &[u8]) -> Result<Parsed, Error> {
    let mut r = Reader { bytes, at: 0 };
    if r.take(8) != Some(MAGIC.as_slice()) {
        return Err(Error::NotACollection);
    }
    let len = r.u32().ok_or(Error::BadHeader)? as usize;
    let json = r.take(len).ok_or(Error::BadHeader)?;
    let crc = r.u32().ok_or(Error::BadHeader)?;
    if crc32fast::hash(json) != crc {
        return Err(Error::BadHeader);
    }
    #[derive(Deserialize)]
    struct Version {
        format: u32,
    }
    let version: Version = serde_json::from_slice(json).map_err(|_| Error::BadHeader)?;
    if version.format > FORMAT {
        return Err(Error::NewerFormat(version.format));
    }
    let header: Header = serde_json::from_slice(json).map_err(|_| Error::BadHeader)?;

    let mut items: Vec<Item> = Vec::new();
    let mut labels = std::collections::HashMap::new();
    // Ids of `items`, for label records (a linear search would make a large file quadratic).
    let mut live = std::collections::HashSet::new();
    let mut valid_len = r.at;
    let mut torn = false;
    while r.at < bytes.len() {
        let whole = (|| {
            let kind = r.take(1)?[0];
            let len = r.u32()? as usize;
            let body = r.take(len)?;
            let crc = r.u32()?;
            let mut h = crc32fast::Hasher::new();
            h.update(&[kind]);
            h.update(body);
            (h.finalize() == crc).then_some((kind, body))
        })();
        let Some((kind, body)) = whole else {
            torn = true;
            break;
        };
        match kind {
            ADD | ADD_PATCH => {
                let item = parse_add(body, header.dim, kind == ADD_PATCH)?;
                live.insert(item.id);
                items.push(item);
            }
            REMOVE if body.len() == 8 => {
                let id = u64::from_le_bytes(body.try_into().unwrap());
                if live.remove(&id) {
                    items.retain(|i| i.id != id);
                }
                labels.remove(&id);
            }
            LABEL if body.len() >= 10 => {
                let id = u64::from_le_bytes(body[..8].try_into().unwrap());
                let len = u16::from_le_bytes(body[8..10].try_into().unwrap()) as usize;
                // A malformed label (whole and checksummed, so a writer's bug) is ignored: it
                // must not cost the images.
                if body.len() == 10 + len {
                    let label = String::from_utf8_lossy(&body[10..]).into_owned();
                    if label.is_empty() {
                        labels.remove(&id);
                    } else if live.contains(&id) {
                        labels.insert(id, label);
                    }
                }
            }
            // As above: a label record too short to name its image.
            LABEL => {}
            _ => {
                torn = true;
                break;
            }
        }
        valid_len = r.at;
    }
    Ok(Parsed { header, items, labels, valid_len, torn })
}

/// Reads an imported file: it must be whole.
pub fn parse_whole(bytes: &[u8]) -> Result<Parsed, Error> {
    let parsed = parse(bytes)?;
    if parsed.torn {
        return Err(Error::Damaged { items: parsed.items.len(), at: parsed.valid_len });
    }
    Ok(parsed)
}

/// Hex of a digest.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header() -> Header {
        Header { format: FORMAT, model: "demo".into(), manifest_sha256: "ab".repeat(32), dim: 3 }
    }

    fn item(id: u64, name: &str) -> Item {
        Item { id, hash: [id as u8; 32], name: name.into(), thumb: vec![0xff, 0xd8, id as u8], embedding: vec![id as f32, -0.5, 0.25], origin: None }
    }

    #[test]
    fn slide_patches_keep_their_origin_and_format_1_files_still_read() {
        let patch = Item {
            origin: Some(Origin { slide: "case 3/tumour.svs".into(), x: 1536, y: 768, size: 192 }),
            ..item(7, "tumour.svs (1536, 768)")
        };
        let file = write(&header(), &[&item(0, "a.png"), &patch]);
        assert_eq!(parse_whole(&file).unwrap().items, vec![item(0, "a.png"), patch]);
        let v1 = write(&Header { format: 1, ..header() }, &[&item(0, "a.png")]);
        assert_eq!(parse_whole(&v1).unwrap().items, vec![item(0, "a.png")]);
    }

    #[test]
    fn labels_survive_writing_and_follow_their_items() {
        let labels: std::collections::HashMap<u64, String> = [(0, "tumour".to_string()), (1, "stroma, loose".to_string())].into();
        let mut file = write_labelled(&header(), &[&item(0, "a.png"), &item(1, "b.png"), &item(2, "c.png")], &labels);
        let p = parse_whole(&file).unwrap();
        assert_eq!(p.labels, labels);
        // Relabel, unlabel, label after the fact, remove: the last record wins.
        label_record(0, Some("normal mucosa"), &mut file);
        label_record(1, None, &mut file);
        label_record(2, Some("mucus"), &mut file);
        label_record(9, Some("no such item"), &mut file);
        remove_record(2, &mut file);
        let p = parse_whole(&file).unwrap();
        assert_eq!(p.labels, [(0, "normal mucosa".to_string())].into());
        assert_eq!(p.items.len(), 2);
        // A malformed label record is ignored, the images after it kept.
        let mut odd = write(&header(), &[&item(0, "a.png")]);
        record(LABEL, &[0u8; 12], &mut odd);
        add_record(&item(1, "b.png"), &mut odd);
        let p = parse_whole(&odd).unwrap();
        assert_eq!(p.items.len(), 2);
        assert!(p.labels.is_empty());
        // A format-2 file (no labels) still reads.
        let v2 = write(&Header { format: 2, ..header() }, &[&item(0, "a.png")]);
        assert!(parse_whole(&v2).unwrap().labels.is_empty());
    }

    #[test]
    fn adds_and_removes_round_trip() {
        let mut file = write(&header(), &[&item(0, "a.png"), &item(1, "dir/b é.jpg")]);
        add_record(&item(2, "c.tif"), &mut file);
        remove_record(1, &mut file);
        let p = parse_whole(&file).unwrap();
        assert_eq!(p.header, header());
        assert_eq!(p.items, vec![item(0, "a.png"), item(2, "c.tif")]);
        assert_eq!(p.valid_len, file.len());
    }

    #[test]
    fn a_torn_tail_is_dropped_on_open_and_refused_on_import() {
        let whole = write(&header(), &[&item(0, "a.png"), &item(1, "b.png")]);
        let first = write(&header(), &[&item(0, "a.png")]).len();
        for cut in [first + 1, first + 5, whole.len() - 1] {
            let p = parse(&whole[..cut]).unwrap();
            assert!(p.torn, "cut at {cut}");
            assert_eq!(p.items, vec![item(0, "a.png")]);
            assert_eq!(p.valid_len, first);
            assert_eq!(parse_whole(&whole[..cut]), Err(Error::Damaged { items: 1, at: first }));
        }
        // A flipped bit inside a record fails its checksum.
        let mut flipped = whole.clone();
        flipped[first + 12] ^= 1;
        assert!(parse(&flipped).unwrap().torn);
    }

    #[test]
    fn headers_are_checked() {
        assert_eq!(parse(b"PNG...."), Err(Error::NotACollection));
        let mut h = header_bytes(&header());
        let last = h.len() - 5;
        h[last] ^= 1;
        assert_eq!(parse(&h), Err(Error::BadHeader));
        let newer = Header { format: FORMAT + 1, ..header() };
        assert_eq!(parse(&header_bytes(&newer)), Err(Error::NewerFormat(FORMAT + 1)));
        let mut wrong_dim = header_bytes(&Header { dim: 4, ..header() });
        add_record(&item(0, "a.png"), &mut wrong_dim);
        assert_eq!(parse(&wrong_dim), Err(Error::WrongDim { got: 3, dim: 4 }));
    }
}
