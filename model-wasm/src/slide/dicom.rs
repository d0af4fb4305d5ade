//! DICOM VL Whole Slide Microscopy: the few elements a TILED_FULL pyramid needs, from Part 10
//! files in explicit VR little endian, with encapsulated (JPEG, JPEG 2000) or native pixel data.
//! Frame positions come from the Basic (or Extended) Offset Table, or from walking the fragment
//! headers when there is none: only headers are read, never the pixel data itself.

use super::codec::{Codec, JpegColour};
use std::rc::Rc;

use super::{Associated, Level, Problem, Source, Tiles, read_exact};

const TAG_IMAGE_TYPE: u32 = 0x0008_0008;
const TAG_SOP_CLASS: u32 = 0x0008_0016;
const TAG_SERIES_UID: u32 = 0x0020_000E;
const TAG_DIMENSION_ORG: u32 = 0x0020_9311;
const TAG_SAMPLES: u32 = 0x0028_0002;
const TAG_PHOTOMETRIC: u32 = 0x0028_0004;
const TAG_FRAMES: u32 = 0x0028_0008;
const TAG_ROWS: u32 = 0x0028_0010;
const TAG_COLUMNS: u32 = 0x0028_0011;
const TAG_PIXEL_SPACING: u32 = 0x0028_0030;
const TAG_BITS_ALLOCATED: u32 = 0x0028_0100;
const TAG_PLANAR: u32 = 0x0028_0006;
const TAG_MATRIX_COLUMNS: u32 = 0x0048_0006;
const TAG_MATRIX_ROWS: u32 = 0x0048_0007;
const TAG_IMAGED_WIDTH: u32 = 0x0048_0001;
const TAG_OPTICAL_PATHS: u32 = 0x0048_0302;
const TAG_FOCAL_PLANES: u32 = 0x0048_0303;
const TAG_EXTENDED_OFFSETS: u32 = 0x7FE0_0001;
const TAG_PIXEL_DATA: u32 = 0x7FE0_0010;
const ITEM: u32 = 0xFFFE_E000;
const ITEM_END: u32 = 0xFFFE_E00D;
const SEQUENCE_END: u32 = 0xFFFE_E0DD;

const WSI_SOP_CLASS: &str = "1.2.840.10008.5.1.4.1.1.77.1.6";

/// `DICM` after the 128-byte preamble.
pub fn is_dicom(head: &[u8]) -> bool {
    head.len() >= 132 && &head[128..132] == b"DICM"
}

/// The elements read, by tag; values of nested sequences are flattened in (first one wins), as
/// WSI keeps PixelSpacing in the shared functional groups.
#[derive(Default)]
struct Elements {
    values: std::collections::HashMap<u32, Vec<u8>>,
    /// Where the pixel data's value starts, and whether its length is undefined (encapsulated).
    pixel_data: Option<(u64, Option<u64>)>,
    extended_offsets: Option<Vec<u8>>,
}

impl Elements {
    fn text(&self, tag: u32) -> Option<String> {
        self.values.get(&tag).map(|v| String::from_utf8_lossy(v).trim_matches(|c: char| c == '\0' || c == ' ').to_string())
    }
    fn u16(&self, tag: u32) -> Option<u16> {
        self.values.get(&tag).filter(|v| v.len() >= 2).map(|v| u16::from_le_bytes([v[0], v[1]]))
    }
    fn u32(&self, tag: u32) -> Option<u32> {
        self.values.get(&tag).filter(|v| v.len() >= 4).map(|v| u32::from_le_bytes([v[0], v[1], v[2], v[3]]))
    }
    fn number(&self, tag: u32) -> Option<f64> {
        self.text(tag)?.split('\\').next()?.trim().parse().ok()
    }
}

fn read(src: &dyn Source, offset: u64, len: u64) -> Result<Vec<u8>, Problem> {
    if offset.checked_add(len).is_none_or(|e| e > src.len()) {
        return Err(Problem::Truncated(format!("{len} bytes at offset {offset} lie past the end of the file")));
    }
    let mut buf = vec![0; len as usize];
    read_exact(src, offset, &mut buf)?;
    Ok(buf)
}

/// Parse elements from `buf` (which starts at file offset `base`) until the pixel data.
/// Returns false when `buf` ended before the pixel data (read more and retry). Lengths are
/// checked before use: a claimed length past the buffer means "read more", never a panic.
fn parse(buf: &[u8], base: u64, out: &mut Elements, depth: u32) -> Result<bool, Problem> {
    if depth > 16 {
        return Err(Problem::Corrupt("sequences nested more than 16 deep".into()));
    }
    // Sequences of undefined length are parsed in place; `nest` counts how many we are inside,
    // so their elements (an icon image's pixel data) are not taken for the top level's.
    let mut nest = 0u32;
    let mut pos = 0usize;
    let end_of = |start: usize, len: u32| start.checked_add(len as usize).filter(|&e| e <= buf.len());
    while pos + 8 <= buf.len() {
        let group = u16::from_le_bytes([buf[pos], buf[pos + 1]]);
        let element = u16::from_le_bytes([buf[pos + 2], buf[pos + 3]]);
        let tag = (group as u32) << 16 | element as u32;
        if tag == ITEM_END {
            pos += 8;
            continue;
        }
        if tag == SEQUENCE_END {
            nest = nest.saturating_sub(1);
            pos += 8;
            continue;
        }
        let top = depth == 0 && nest == 0;
        if tag == ITEM {
            let len = u32::from_le_bytes(buf[pos + 4..pos + 8].try_into().unwrap());
            pos += 8;
            if len != u32::MAX {
                let Some(end) = end_of(pos, len) else { return Ok(false) };
                parse(&buf[pos..end], base + pos as u64, out, depth + 1)?;
                pos = end;
            }
            continue;
        }
        let vr = [buf[pos + 4], buf[pos + 5]];
        let long = matches!(&vr, b"OB" | b"OW" | b"OF" | b"SQ" | b"UT" | b"UN" | b"OD" | b"OL" | b"OV" | b"UC" | b"UR");
        if !vr[0].is_ascii_uppercase() || !vr[1].is_ascii_uppercase() {
            return Err(Problem::Unsupported("implicit VR data sets (only explicit VR little endian is read)".into()));
        }
        let (len, head) = if long {
            if pos + 12 > buf.len() {
                return Ok(false);
            }
            (u32::from_le_bytes(buf[pos + 8..pos + 12].try_into().unwrap()), 12)
        } else {
            (u16::from_le_bytes([buf[pos + 6], buf[pos + 7]]) as u32, 8)
        };
        let start = pos + head;
        if tag == TAG_PIXEL_DATA && top {
            out.pixel_data = Some((base + start as u64, (len != u32::MAX).then_some(len as u64)));
            return Ok(true);
        }
        if &vr == b"SQ" {
            if len == u32::MAX {
                nest += 1;
                pos = start;
                continue;
            }
            let Some(end) = end_of(start, len) else { return Ok(false) };
            parse(&buf[start..end], base + start as u64, out, depth + 1)?;
            pos = end;
            continue;
        }
        if len == u32::MAX {
            if tag == TAG_PIXEL_DATA {
                // Encapsulated pixel data of a nested image (an icon): skip its fragments up to
                // their sequence delimiter without reading them as elements.
                pos = start;
                loop {
                    if pos + 8 > buf.len() {
                        return Ok(false);
                    }
                    let t = (u16::from_le_bytes([buf[pos], buf[pos + 1]]) as u32) << 16 | u16::from_le_bytes([buf[pos + 2], buf[pos + 3]]) as u32;
                    let l = u32::from_le_bytes(buf[pos + 4..pos + 8].try_into().unwrap());
                    pos += 8;
                    if t == SEQUENCE_END {
                        break;
                    }
                    if t != ITEM {
                        return Err(Problem::Corrupt("a nested image's pixel data is not a sequence of fragments".into()));
                    }
                    let Some(end) = end_of(pos, l) else { return Ok(false) };
                    pos = end;
                }
                continue;
            }
            return Err(Problem::Corrupt(format!("element {tag:08X} of undefined length")));
        }
        let Some(end) = end_of(start, len) else { return Ok(false) };
        if tag == TAG_EXTENDED_OFFSETS && top {
            out.extended_offsets = Some(buf[start..end].to_vec());
        } else if len <= 4096 {
            out.values.entry(tag).or_insert_with(|| buf[start..end].to_vec());
        }
        pos = end;
    }
    Ok(false)
}

fn transfer_syntax(src: &dyn Source) -> Result<(String, u64), Problem> {
    // File meta: group 0002, explicit VR LE, right after "DICM".
    let head = read(src, 132, 12.min(src.len().saturating_sub(132)))?;
    if head.len() < 12 || head[0..4] != [2, 0, 0, 0] {
        return Err(Problem::Corrupt("no file meta information group".into()));
    }
    let group_len = u32::from_le_bytes(head[8..12].try_into().unwrap()) as u64;
    if group_len > 64 << 10 {
        return Err(Problem::Corrupt(format!("a file meta group of {group_len} bytes")));
    }
    let meta = read(src, 144, group_len)?;
    let mut e = Elements::default();
    parse(&meta, 144, &mut e, 1)?;
    let syntax = e.text(0x0002_0010).ok_or_else(|| Problem::Corrupt("no transfer syntax".into()))?;
    Ok((syntax, 144 + group_len))
}

fn syntax_codec(syntax: &str, photometric: &str) -> Result<Option<Codec>, Problem> {
    let refuse = |format| Err(Problem::Refused { format, hint: "re-encode the slide with JPEG baseline or JPEG 2000 frames" });
    Ok(match syntax {
        "1.2.840.10008.1.2.1" => None,
        "1.2.840.10008.1.2.4.50" | "1.2.840.10008.1.2.4.51" => Some(Codec::Jpeg { tables: None, colour: if photometric == "RGB" { JpegColour::Rgb } else { JpegColour::YCbCr } }),
        "1.2.840.10008.1.2.4.90" | "1.2.840.10008.1.2.4.91" => Some(Codec::Jpeg2000 { ycbcr: photometric == "YBR_FULL" }),
        "1.2.840.10008.1.2.4.80" | "1.2.840.10008.1.2.4.81" => return refuse("JPEG-LS frames"),
        "1.2.840.10008.1.2.4.201" | "1.2.840.10008.1.2.4.202" | "1.2.840.10008.1.2.4.203" => {
            return refuse("High-Throughput JPEG 2000 (HTJ2K) frames");
        }
        "1.2.840.10008.1.2.4.110" | "1.2.840.10008.1.2.4.111" | "1.2.840.10008.1.2.4.112" => return refuse("JPEG XL frames"),
        "1.2.840.10008.1.2" => return Err(Problem::Unsupported("implicit VR little endian (only explicit VR is read)".into())),
        s => return Err(Problem::Unsupported(format!("transfer syntax {s}"))),
    })
}

struct Instance {
    series: String,
    image_type: String,
    level: Option<Level>,
    mpp: Option<f64>,
    width: u32,
    height: u32,
}

/// Header bytes read at most, looking for the pixel data.
const MAX_HEADER: u64 = 64 << 20;

/// One instance of the folder; `Ok(None)` for one that is not a WSI image (an annotation, a
/// structured report): skipped, not an error for the slide.
fn instance(index: usize, name: &str, src: &dyn Source) -> Result<Option<Instance>, Problem> {
    let (syntax, start) = transfer_syntax(src)?;
    let mut want = 64 << 10;
    let e = loop {
        let len = want.min(src.len().saturating_sub(start));
        let buf = read(src, start, len)?;
        let mut e = Elements::default();
        let found = parse(&buf, start, &mut e, 0)?;
        if e.text(TAG_SOP_CLASS).is_some_and(|sop| sop != WSI_SOP_CLASS) {
            return Ok(None);
        }
        if found {
            break e;
        }
        if start + len >= src.len() {
            return Err(Problem::Truncated(format!("{name} has no pixel data")));
        }
        if want >= MAX_HEADER {
            return Err(Problem::Corrupt(format!("{name}: no pixel data in its first {} MB", MAX_HEADER >> 20)));
        }
        want *= 4;
    };
    if e.text(TAG_SOP_CLASS).is_none() {
        return Ok(None);
    }
    let image_type = e.text(TAG_IMAGE_TYPE).unwrap_or_default().to_ascii_uppercase();
    let width = e.u32(TAG_MATRIX_COLUMNS).unwrap_or(0);
    let height = e.u32(TAG_MATRIX_ROWS).unwrap_or(0);
    let series = e.text(TAG_SERIES_UID).unwrap_or_default();
    let base = Instance { series, image_type: image_type.clone(), level: None, mpp: None, width, height };
    if !image_type.contains("VOLUME") {
        return Ok(Some(base));
    }
    if let Some(org) = e.text(TAG_DIMENSION_ORG)
        && org == "TILED_SPARSE" {
            return Err(Problem::Refused { format: "DICOM TILED_SPARSE", hint: "re-export the slide as TILED_FULL (wsidicomizer does)" });
        }
    let samples = e.u16(TAG_SAMPLES).unwrap_or(0);
    if samples != 3 {
        return Err(Problem::Refused { format: "a fluorescence or multi-channel image", hint: "Obscura reads brightfield RGB slides (3 channels)" });
    }
    if e.u16(TAG_BITS_ALLOCATED).unwrap_or(8) != 8 {
        return Err(Problem::Unsupported("more than 8 bits per sample".into()));
    }
    let photometric = e.text(TAG_PHOTOMETRIC).unwrap_or_default();
    let codec = syntax_codec(&syntax, &photometric)?;
    let tile_w = e.u16(TAG_COLUMNS).unwrap_or(0) as u32;
    let tile_h = e.u16(TAG_ROWS).unwrap_or(0) as u32;
    if width == 0 || height == 0 || tile_w == 0 || tile_h == 0 || tile_w > 8192 || tile_h > 8192 || width > 1 << 30 || height > 1 << 30 {
        return Err(Problem::Corrupt(format!("{name}: image {width}x{height}, frames {tile_w}x{tile_h}")));
    }
    let frames = e.number(TAG_FRAMES).unwrap_or(1.0).clamp(0.0, u64::MAX as f64) as u64;
    let tiles = width.div_ceil(tile_w) as u64 * height.div_ceil(tile_h) as u64;
    if tiles > super::tiff::MAX_TILES {
        return Err(Problem::Corrupt(format!("{name}: {tiles} tiles")));
    }
    let planes = e.u16(TAG_FOCAL_PLANES).unwrap_or(1).max(1) as u64 * e.u32(TAG_OPTICAL_PATHS).unwrap_or(1).max(1) as u64;
    if frames < tiles || (planes == 1 && frames != tiles) {
        return Err(Problem::Corrupt(format!("{name}: {frames} frames for {tiles} tiles")));
    }
    let mpp = e
        .text(TAG_PIXEL_SPACING)
        .and_then(|s| s.split('\\').nth(1).and_then(|v| v.trim().parse::<f64>().ok()))
        .map(|mm| mm * 1000.0)
        .or_else(|| e.number(TAG_IMAGED_WIDTH).map(|mm| mm * 1000.0 / width as f64));
    let (data_start, data_len) = e.pixel_data.ok_or_else(|| Problem::Truncated(format!("{name} has no pixel data")))?;
    let (offsets, counts, codec) = match codec {
        None => {
            let size = tile_w as u64 * tile_h as u64 * 3;
            if e.u16(TAG_PLANAR).unwrap_or(0) != 0 {
                return Err(Problem::Unsupported("channels stored in separate planes".into()));
            }
            if data_start + size * tiles > src.len() {
                return Err(Problem::Truncated(format!("{name}: the pixel data is cut off")));
            }
            let offsets = (0..tiles).map(|i| data_start + i * size).collect();
            (offsets, vec![size; tiles as usize], Codec::Raw { predictor: 1 })
        }
        Some(codec) => {
            if data_len.is_some() {
                return Err(Problem::Corrupt(format!("{name}: compressed pixel data must be encapsulated")));
            }
            let (o, c) = frames_of(src, data_start, tiles as usize, e.extended_offsets.as_deref())?;
            (o, c, codec)
        }
    };
    Ok(Some(Instance {
        level: Some(Level {
            width,
            height,
            tile_width: tile_w,
            tile_height: tile_h,
            downsample: 1.0,
            codec,
            tiles: Tiles::Table { source: index, offsets, counts },
        }),
        mpp,
        ..base
    }))
}

/// Offsets and lengths of the first `frames` frames of encapsulated pixel data starting at
/// `start` (the Basic Offset Table item).
fn frames_of(src: &dyn Source, start: u64, frames: usize, extended: Option<&[u8]>) -> Result<(Vec<u64>, Vec<u64>), Problem> {
    let item = |at: u64| -> Result<(u32, u64), Problem> {
        let h = read(src, at, 8)?;
        let tag = (u16::from_le_bytes([h[0], h[1]]) as u32) << 16 | u16::from_le_bytes([h[2], h[3]]) as u32;
        Ok((tag, u32::from_le_bytes(h[4..8].try_into().unwrap()) as u64))
    };
    let (tag, bot_len) = item(start)?;
    if tag != ITEM {
        return Err(Problem::Corrupt("encapsulated pixel data without its offset table item".into()));
    }
    let first = start + 8 + bot_len;
    let mut starts: Vec<u64> = Vec::new();
    if let Some(ext) = extended.filter(|e| e.len() >= frames * 8) {
        starts = ext.chunks_exact(8).take(frames).map(|c| first + u64::from_le_bytes(c.try_into().unwrap())).collect();
    } else if bot_len >= frames as u64 * 4 {
        let bot = read(src, start + 8, frames as u64 * 4)?;
        starts = bot.chunks_exact(4).take(frames).map(|c| first + u32::from_le_bytes(c.try_into().unwrap()) as u64).collect();
    }
    let mut offsets = Vec::with_capacity(frames);
    let mut counts = Vec::with_capacity(frames);
    if !starts.is_empty() {
        // Each frame is the item at its offset (one fragment per frame: what WSI writers do).
        for s in starts {
            let (tag, len) = item(s)?;
            if tag != ITEM || s + 8 + len > src.len() {
                return Err(Problem::Truncated("a frame's fragment lies past the end of the file".into()));
            }
            offsets.push(s + 8);
            counts.push(len);
        }
    } else {
        // No offset table: one fragment per frame, found by walking the item headers.
        let mut at = first;
        while offsets.len() < frames {
            let (tag, len) = item(at)?;
            if tag == SEQUENCE_END {
                break;
            }
            if tag != ITEM || at + 8 + len > src.len() {
                return Err(Problem::Truncated("a frame's fragment lies past the end of the file".into()));
            }
            offsets.push(at + 8);
            counts.push(len);
            at += 8 + len;
        }
        if offsets.len() < frames {
            return Err(Problem::Corrupt(format!("{} fragments for {frames} frames", offsets.len())));
        }
    }
    Ok((offsets, counts))
}

pub struct Opened {
    pub levels: Vec<Level>,
    pub mpp: Option<f64>,
    pub associated: Vec<Associated>,
}

pub fn open(files: &[Rc<dyn Source>]) -> Result<Opened, Problem> {
    let mut levels = Vec::new();
    let mut associated = Vec::new();
    let mut series: Option<String> = None;
    for (i, src) in files.iter().enumerate() {
        let name = src.name();
        let mut head = vec![0u8; src.len().min(132) as usize];
        read_exact(src.as_ref(), 0, &mut head)?;
        if !is_dicom(&head) {
            continue; // DICOMDIR, notes, thumbnails of the folder: not instances
        }
        let inst = match instance(i, name, src.as_ref()) {
            Ok(Some(inst)) => inst,
            Ok(None) => continue, // not a WSI image: an annotation, a report
            Err(p) => return Err(p),
        };
        match &series {
            Some(s) if *s != inst.series && inst.level.is_some() => {
                return Err(Problem::Unsupported("the files belong to more than one slide (series); drop one slide's folder".into()));
            }
            None if inst.level.is_some() => series = Some(inst.series.clone()),
            _ => {}
        }
        match inst.level {
            Some(level) => levels.push((level, inst.mpp)),
            None => {
                let kind = if inst.image_type.contains("LABEL") {
                    "label"
                } else if inst.image_type.contains("OVERVIEW") {
                    "macro"
                } else {
                    "thumbnail"
                };
                associated.push(Associated { kind, width: inst.width, height: inst.height });
            }
        }
    }
    if levels.is_empty() {
        return Err(Problem::Unsupported("no VL Whole Slide Microscopy volume image among the DICOM files".into()));
    }
    levels.sort_by_key(|l| std::cmp::Reverse(l.0.width));
    levels.dedup_by(|a, b| a.0.width == b.0.width && a.0.height == b.0.height);
    let mpp = levels[0].1;
    Ok(Opened { levels: levels.into_iter().map(|(l, _)| l).collect(), mpp, associated })
}
