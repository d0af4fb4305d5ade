//! Tile decoders: uncompressed, LZW, deflate (with TIFF's horizontal predictor), JPEG (with
//! shared JPEGTables, and RGB components that only the container announces) and JPEG 2000
//! (raw codestreams; Aperio's YCbCr variant converted here). All pure Rust.

use super::Problem;

/// How a level's tiles are compressed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Codec {
    /// Interleaved 8-bit RGB, `predictor` 1 (none) or 2 (horizontal differencing).
    Raw { predictor: u16 },
    Lzw { predictor: u16 },
    Deflate { predictor: u16 },
    /// `tables`: the JPEGTables stream (quantisation and Huffman tables) that abbreviated tiles
    /// leave out. `colour`: what the container says the three components are.
    Jpeg { tables: Option<Vec<u8>>, colour: JpegColour },
    /// A JPEG 2000 codestream (or JP2). `ycbcr`: its components are YCbCr without the
    /// codestream's own colour transform (Aperio compression 33003), converted here.
    Jpeg2000 { ycbcr: bool },
}

/// What a container says a JPEG tile's components are. The container decides, not libjpeg's
/// rules for markers, because writers get the markers wrong both ways: Aperio's RGB tiles carry
/// no marker (libjpeg would take them for YCbCr), and opentile/wsidicomizer add an Adobe
/// "untransformed" marker to YCbCr frames of a DICOM whose Photometric says YBR_FULL_422.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JpegColour {
    /// TIFF Photometric RGB, DICOM RGB. A JFIF marker, which mandates YCbCr, still wins.
    Rgb,
    /// TIFF Photometric YCbCr, DICOM YBR_FULL(_422): converted to RGB whatever the markers say.
    YCbCr,
}

impl Codec {
    /// Decode one tile of `width` x `height` pixels into interleaved RGB.
    pub fn decode(&self, data: &[u8], width: u32, height: u32) -> Result<Vec<u8>, Problem> {
        let need = width as usize * height as usize * 3;
        let samples = match self {
            Self::Raw { predictor } => unpredict(data.to_vec(), need, width, *predictor)?,
            Self::Lzw { predictor } => unpredict(lzw(data, need)?, need, width, *predictor)?,
            Self::Deflate { predictor } => {
                let out = miniz_oxide::inflate::decompress_to_vec_zlib_with_limit(data, need)
                    .map_err(|e| Problem::Corrupt(format!("deflate data: {e}")))?;
                unpredict(out, need, width, *predictor)?
            }
            Self::Jpeg { tables, colour } => jpeg(data, tables.as_deref(), *colour, width, height)?,
            Self::Jpeg2000 { ycbcr } => jpeg2000(data, *ycbcr, width, height)?,
        };
        debug_assert_eq!(samples.len(), need);
        Ok(samples)
    }
}

/// LZW into a buffer of the tile's size: never more output than the tile holds, and a stream
/// without its end-of-information code is accepted once the tile is full.
fn lzw(data: &[u8], need: usize) -> Result<Vec<u8>, Problem> {
    let mut out = vec![0u8; need];
    let mut decoder = weezl::decode::Decoder::with_tiff_size_switch(weezl::BitOrder::Msb, 8);
    let (mut read, mut written) = (0, 0);
    while written < need {
        let r = decoder.decode_bytes(&data[read..], &mut out[written..]);
        read += r.consumed_in;
        written += r.consumed_out;
        match r.status {
            Ok(weezl::LzwStatus::Done) => break,
            Ok(weezl::LzwStatus::Ok) if r.consumed_in > 0 || r.consumed_out > 0 => {}
            Ok(_) => break,
            Err(e) => return Err(Problem::Corrupt(format!("LZW data: {e}"))),
        }
    }
    out.truncate(written);
    Ok(out)
}

fn unpredict(mut data: Vec<u8>, need: usize, width: u32, predictor: u16) -> Result<Vec<u8>, Problem> {
    if data.len() < need {
        return Err(Problem::Corrupt(format!("a tile holds {} bytes, its size needs {need}", data.len())));
    }
    data.truncate(need);
    match predictor {
        1 => {}
        2 => {
            let row = width as usize * 3;
            for line in data.chunks_exact_mut(row) {
                for i in 3..row {
                    line[i] = line[i].wrapping_add(line[i - 3]);
                }
            }
        }
        p => return Err(Problem::Unsupported(format!("TIFF predictor {p} (only 1 and 2 are)"))),
    }
    Ok(data)
}

/// The segments of a JPEG stream's header, up to its first scan: (marker, start, end) with
/// `start` at the 0xFF and `end` past the segment.
fn header_segments(data: &[u8]) -> Vec<(u8, usize, usize)> {
    let mut out = Vec::new();
    let mut pos = 2;
    while pos + 4 <= data.len() && data[pos] == 0xFF {
        let marker = data[pos + 1];
        if marker == 0xD8 || marker == 0x01 || (0xD0..=0xD7).contains(&marker) {
            pos += 2;
            continue;
        }
        if marker == 0xD9 {
            break;
        }
        let len = u16::from_be_bytes([data[pos + 2], data[pos + 3]]) as usize;
        let end = (pos + 2 + len).min(data.len());
        out.push((marker, pos, end));
        if marker == 0xDA {
            break;
        }
        pos = end;
    }
    out
}

/// Abbreviated tile + tables → one complete stream: the tables' segments are spliced in after
/// the tile's SOI.
fn with_tables(tile: &[u8], tables: &[u8]) -> Vec<u8> {
    let body = tables.strip_prefix(&[0xFF, 0xD8][..]).unwrap_or(tables);
    let body = body.strip_suffix(&[0xFF, 0xD9][..]).unwrap_or(body);
    let mut out = Vec::with_capacity(tile.len() + body.len());
    out.extend_from_slice(&tile[..2]);
    out.extend_from_slice(body);
    out.extend_from_slice(&tile[2..]);
    out
}

/// Whether the stream itself says how its three components are coded: a JFIF marker (YCbCr) or
/// an Adobe marker with its transform flag.
fn colour_marked(data: &[u8], segs: &[(u8, usize, usize)]) -> Option<bool> {
    for &(m, s, e) in segs {
        let body = &data[(s + 4).min(e)..e];
        if m == 0xE0 && body.starts_with(b"JFIF") {
            return Some(false);
        }
        if m == 0xEE && body.starts_with(b"Adobe") && body.len() >= 12 {
            return Some(body[11] == 0);
        }
    }
    None
}

/// Rename the three components 'R', 'G', 'B' in the frame and scan headers: the one hint the
/// decoder takes for "these are not YCbCr" (jpegli's convention), so no colour transform runs.
fn mark_rgb(data: &mut [u8]) {
    let mut ids = [0u8; 3];
    for (m, s, e) in header_segments(data) {
        let seg = &mut data[s..e];
        match m {
            0xC0..=0xC2 if seg.len() >= 10 + 9 && seg[9] == 3 => {
                for (i, id) in ids.iter_mut().enumerate() {
                    *id = seg[10 + 3 * i];
                    seg[10 + 3 * i] = b"RGB"[i];
                }
            }
            0xDA if seg.len() >= 5 => {
                let n = seg[4] as usize;
                for i in 0..n.min(3) {
                    let at = 5 + 2 * i;
                    if at < seg.len()
                        && let Some(k) = ids.iter().position(|&id| id == seg[at]) {
                            seg[at] = b"RGB"[k];
                        }
                }
            }
            _ => {}
        }
    }
}

/// Turn an Adobe marker's "untransformed" flag into "YCbCr".
fn mark_ycbcr(data: &mut [u8]) {
    for (m, s, e) in header_segments(data) {
        if m == 0xEE && data[(s + 4).min(e)..e].starts_with(b"Adobe") && e - s >= 16 && data[s + 15] == 0 {
            data[s + 15] = 1;
        }
    }
}

fn jpeg(tile: &[u8], tables: Option<&[u8]>, colour: JpegColour, width: u32, height: u32) -> Result<Vec<u8>, Problem> {
    if tile.len() < 4 || tile[..2] != [0xFF, 0xD8] {
        return Err(Problem::Corrupt("a JPEG tile does not start with a JPEG marker".into()));
    }
    // A cut-off tile decodes to grey without complaint; refuse it instead.
    let end = tile.iter().rposition(|&b| b != 0).unwrap_or(0);
    if end < 1 || tile[end - 1..=end] != [0xFF, 0xD9] {
        return Err(Problem::Corrupt("a JPEG tile ends before its end-of-image marker".into()));
    }
    let mut data = match tables {
        Some(t) if t.len() > 4 => with_tables(tile, t),
        _ => tile.to_vec(),
    };
    match colour {
        JpegColour::Rgb => {
            if colour_marked(&data, &header_segments(&data)) != Some(false) {
                mark_rgb(&mut data);
            }
        }
        JpegColour::YCbCr => mark_ycbcr(&mut data),
    }
    // The tile's size bounds what the stream may claim (plus a partial MCU).
    let options = zune_jpeg::zune_core::options::DecoderOptions::default()
        .jpeg_set_out_colorspace(zune_jpeg::zune_core::colorspace::ColorSpace::RGB)
        .set_max_width(width as usize + 16)
        .set_max_height(height as usize + 16)
        .set_strict_mode(true);
    let mut decoder =
        zune_jpeg::JpegDecoder::new_with_options(zune_jpeg::zune_core::bytestream::ZCursor::new(&data[..]), options);
    let pixels = decoder.decode().map_err(|e| Problem::Corrupt(format!("JPEG tile: {e:?}")))?;
    let info = decoder.info().ok_or_else(|| Problem::Corrupt("JPEG tile without a frame header".into()))?;
    // Grey tiles come out as RGB too (the output colour space asks for it).
    fit(pixels, info.width as u32, info.height as u32, width, height)
}

/// A tile whose stream is larger than the tile grid (some encoders round up to whole MCUs) is
/// cropped; a smaller one is corrupt.
fn fit(pixels: Vec<u8>, w: u32, h: u32, width: u32, height: u32) -> Result<Vec<u8>, Problem> {
    if pixels.len() != w as usize * h as usize * 3 {
        return Err(Problem::Corrupt(format!("a tile decoded to {} bytes for {w}x{h}", pixels.len())));
    }
    if (w, h) == (width, height) {
        return Ok(pixels);
    }
    if w < width || h < height {
        return Err(Problem::Corrupt(format!("a tile is {w}x{h}, the level's tiles are {width}x{height}")));
    }
    let mut out = Vec::with_capacity(width as usize * height as usize * 3);
    for row in pixels.chunks_exact(w as usize * 3).take(height as usize) {
        out.extend_from_slice(&row[..width as usize * 3]);
    }
    Ok(out)
}

fn jpeg2000(data: &[u8], ycbcr: bool, width: u32, height: u32) -> Result<Vec<u8>, Problem> {
    let settings = hayro_jpeg2000::DecodeSettings::default();
    let image = hayro_jpeg2000::Image::new(data, &settings)
        .map_err(|e| Problem::Corrupt(format!("JPEG 2000 tile: {e:?}")))?;
    let (w, h) = (image.width(), image.height());
    if w > width + 16 || h > height + 16 {
        return Err(Problem::Corrupt(format!("a JPEG 2000 tile claims {w}x{h}, the level's tiles are {width}x{height}")));
    }
    let mut ctx = hayro_jpeg2000::DecoderContext::default();
    let decoded = image.decode(&mut ctx).map_err(|e| Problem::Corrupt(format!("JPEG 2000 tile: {e:?}")))?;
    let channels = decoded.components().len();
    let raw = decoded.data_u8();
    let mut rgb = match channels {
        3 => raw,
        4 => raw.chunks_exact(4).flat_map(|p| [p[0], p[1], p[2]]).collect(),
        1 => raw.iter().flat_map(|&v| [v, v, v]).collect(),
        n => return Err(Problem::Unsupported(format!("a JPEG 2000 tile with {n} components"))),
    };
    if ycbcr && channels >= 3 {
        ycbcr_to_rgb(&mut rgb);
    }
    fit(rgb, w, h, width, height)
}

/// Full-range BT.601 (JFIF) YCbCr to RGB, rounded to nearest.
pub(crate) fn ycbcr_to_rgb(px: &mut [u8]) {
    for p in px.chunks_exact_mut(3) {
        let (y, cb, cr) = (p[0] as f32, p[1] as f32 - 128.0, p[2] as f32 - 128.0);
        let r = y + 1.402 * cr;
        let g = y - 0.344_136 * cb - 0.714_136 * cr;
        let b = y + 1.772 * cb;
        p[0] = r.round().clamp(0.0, 255.0) as u8;
        p[1] = g.round().clamp(0.0, 255.0) as u8;
        p[2] = b.round().clamp(0.0, 255.0) as u8;
    }
}
