//! TIFF and BigTIFF structure: IFDs and the tags a pyramid needs, read lazily from a
//! [`Source`]. Aperio SVS and generic tiled pyramidal TIFFs become [`Level`]s; formats built on
//! TIFF that we do not read (NDPI, SCN, OME-TIFF SubIFD pyramids, fluorescence) are named and
//! refused.

use super::codec::{Codec, JpegColour};
use super::{Associated, Format, Level, Problem, Source, Tiles, read_exact};

pub const NDPI: &str = "Hamamatsu NDPI";
pub const SCN: &str = "Leica SCN";
pub const OME: &str = "OME-TIFF with a SubIFD pyramid";

const TAG_SUBFILE: u16 = 254;
const TAG_WIDTH: u16 = 256;
const TAG_HEIGHT: u16 = 257;
const TAG_BITS: u16 = 258;
const TAG_COMPRESSION: u16 = 259;
const TAG_PHOTOMETRIC: u16 = 262;
const TAG_DESCRIPTION: u16 = 270;
const TAG_SAMPLES: u16 = 277;
const TAG_XRES: u16 = 282;
const TAG_PLANAR: u16 = 284;
const TAG_RES_UNIT: u16 = 296;
const TAG_PREDICTOR: u16 = 317;
const TAG_TILE_WIDTH: u16 = 322;
const TAG_TILE_HEIGHT: u16 = 323;
const TAG_TILE_OFFSETS: u16 = 324;
const TAG_TILE_COUNTS: u16 = 325;
const TAG_SUBIFDS: u16 = 330;
const TAG_JPEG_TABLES: u16 = 347;
const TAG_NDPI: u16 = 65420;

/// At most this many IFDs are followed (a loop in the chain is refused, not followed forever).
const MAX_IFDS: usize = 256;
/// At most this many tiles in one level (a 1M x 1M level of 256-px tiles is 15M).
pub(crate) const MAX_TILES: u64 = 1 << 26;

#[derive(Debug, Clone, Copy)]
struct Entry {
    tag: u16,
    kind: u16,
    count: u64,
    /// The value bytes when they fit in the entry, else their offset.
    inline: [u8; 8],
    offset: u64,
    fits: bool,
}

#[derive(Debug)]
struct Ifd {
    entries: Vec<Entry>,
}

impl Ifd {
    fn get(&self, tag: u16) -> Option<&Entry> {
        self.entries.iter().find(|e| e.tag == tag)
    }
}

struct Reader<'a> {
    src: &'a dyn Source,
    le: bool,
    big: bool,
}

fn type_size(kind: u16) -> Option<u64> {
    Some(match kind {
        1 | 2 | 6 | 7 => 1,
        3 | 8 => 2,
        4 | 9 | 11 | 13 => 4,
        5 | 10 | 12 | 16 | 17 | 18 => 8,
        _ => return None,
    })
}

impl Reader<'_> {
    fn u16(&self, b: &[u8]) -> u16 {
        let a = [b[0], b[1]];
        if self.le { u16::from_le_bytes(a) } else { u16::from_be_bytes(a) }
    }
    fn u32(&self, b: &[u8]) -> u32 {
        let a = [b[0], b[1], b[2], b[3]];
        if self.le { u32::from_le_bytes(a) } else { u32::from_be_bytes(a) }
    }
    fn u64(&self, b: &[u8]) -> u64 {
        let a: [u8; 8] = b[..8].try_into().unwrap();
        if self.le { u64::from_le_bytes(a) } else { u64::from_be_bytes(a) }
    }

    fn read(&self, offset: u64, len: u64) -> Result<Vec<u8>, Problem> {
        if offset.checked_add(len).is_none_or(|end| end > self.src.len()) {
            return Err(Problem::Truncated(format!(
                "{len} bytes at offset {offset} lie past the end of the file ({} bytes)",
                self.src.len()
            )));
        }
        let mut buf = vec![0; len as usize];
        read_exact(self.src, offset, &mut buf)?;
        Ok(buf)
    }

    fn ifd(&self, offset: u64) -> Result<(Ifd, u64), Problem> {
        let (count_size, entry_size, next_size) = if self.big { (8, 20, 8) } else { (2, 12, 4) };
        let head = self.read(offset, count_size)?;
        let n = if self.big { self.u64(&head) } else { self.u16(&head) as u64 };
        if n > 4096 {
            return Err(Problem::Corrupt(format!("an IFD at {offset} claims {n} entries")));
        }
        let body = self.read(offset + count_size, n * entry_size + next_size)?;
        let mut entries = Vec::with_capacity(n as usize);
        for e in body[..(n * entry_size) as usize].chunks_exact(entry_size as usize) {
            let tag = self.u16(&e[0..2]);
            let kind = self.u16(&e[2..4]);
            let (count, value) = if self.big { (self.u64(&e[4..12]), &e[12..20]) } else { (self.u32(&e[4..8]) as u64, &e[8..12]) };
            let Some(size) = type_size(kind) else { continue };
            let bytes = size.saturating_mul(count);
            let fits = bytes <= value.len() as u64;
            let mut inline = [0u8; 8];
            inline[..value.len()].copy_from_slice(value);
            let offset = if self.big { self.u64(value) } else { self.u32(value) as u64 };
            entries.push(Entry { tag, kind, count, inline, offset, fits });
        }
        let tail = &body[(n * entry_size) as usize..];
        let next = if self.big { self.u64(tail) } else { self.u32(tail) as u64 };
        Ok((Ifd { entries }, next))
    }

    fn bytes(&self, e: &Entry) -> Result<Vec<u8>, Problem> {
        let len = type_size(e.kind).unwrap_or(1).saturating_mul(e.count);
        if e.fits { Ok(e.inline[..len as usize].to_vec()) } else { self.read(e.offset, len) }
    }

    /// An integer array tag (BYTE, SHORT, LONG, LONG8, IFD).
    fn ints(&self, e: &Entry) -> Result<Vec<u64>, Problem> {
        let b = self.bytes(e)?;
        let size = type_size(e.kind).unwrap_or(1) as usize;
        Ok(b.chunks_exact(size)
            .map(|c| match e.kind {
                1 | 7 => c[0] as u64,
                3 => self.u16(c) as u64,
                4 | 13 => self.u32(c) as u64,
                16 | 18 => self.u64(c),
                _ => 0,
            })
            .collect())
    }

    /// The first value of an integer tag (only it is read, whatever the count says).
    fn int(&self, ifd: &Ifd, tag: u16) -> Result<Option<u64>, Problem> {
        match ifd.get(tag) {
            Some(e) if e.count > 0 => Ok(self.ints(&Entry { count: 1, ..*e })?.first().copied()),
            _ => Ok(None),
        }
    }

    fn rational(&self, ifd: &Ifd, tag: u16) -> Result<Option<f64>, Problem> {
        let Some(e) = ifd.get(tag) else { return Ok(None) };
        if e.kind != 5 {
            return Ok(None);
        }
        let b = self.bytes(e)?;
        if b.len() < 8 {
            return Ok(None);
        }
        let (n, d) = (self.u32(&b[0..4]) as f64, self.u32(&b[4..8]) as f64);
        Ok((d > 0.0).then_some(n / d))
    }

    fn text(&self, ifd: &Ifd, tag: u16) -> Result<Option<String>, Problem> {
        match ifd.get(tag) {
            Some(e) if e.count <= 1 << 20 => {
                let b = self.bytes(e)?;
                Ok(Some(String::from_utf8_lossy(&b).trim_end_matches('\0').to_string()))
            }
            _ => Ok(None),
        }
    }
}

/// Whether `head` starts a TIFF or BigTIFF file.
pub fn is_tiff(head: &[u8]) -> bool {
    head.len() >= 4 && (head[..4] == *b"II*\0" || head[..4] == *b"MM\0*" || head[..4] == *b"II+\0" || head[..4] == *b"MM\0+")
}

/// What [`open`] found in a TIFF.
pub struct Opened {
    pub format: Format,
    pub levels: Vec<Level>,
    pub mpp: Option<f64>,
    pub magnification: Option<f64>,
    pub associated: Vec<Associated>,
}

pub fn open(src: &dyn Source) -> Result<Opened, Problem> {
    let head = {
        let mut b = vec![0; src.len().min(16) as usize];
        read_exact(src, 0, &mut b)?;
        b
    };
    if !is_tiff(&head) || head.len() < 8 {
        return Err(Problem::Unknown);
    }
    let le = head[0] == b'I';
    let mut r = Reader { src, le, big: false };
    let version = r.u16(&head[2..4]);
    let first = if version == 43 {
        if head.len() < 16 {
            return Err(Problem::Truncated("the BigTIFF header is cut off".into()));
        }
        r.big = true;
        r.u64(&head[8..16])
    } else {
        r.u32(&head[4..8]) as u64
    };

    let mut ifds = Vec::new();
    let mut next = first;
    let mut seen = std::collections::HashSet::new();
    while next != 0 {
        if !seen.insert(next) || ifds.len() >= MAX_IFDS {
            return Err(Problem::Corrupt("the chain of IFDs loops".into()));
        }
        let (ifd, after) = r.ifd(next)?;
        ifds.push(ifd);
        next = after;
    }
    let Some(first_ifd) = ifds.first() else {
        return Err(Problem::Corrupt("the file has no image directory".into()));
    };
    let description = r.text(first_ifd, TAG_DESCRIPTION)?.unwrap_or_default();
    let svs = description.starts_with("Aperio");

    // Formats built on TIFF that this reader does not read: named, not half-read.
    if ifds.iter().any(|i| i.get(TAG_NDPI).is_some()) {
        return Err(Problem::Refused { format: NDPI, hint: "convert it to DICOM or pyramidal TIFF (e.g. with wsidicomizer or bfconvert)" });
    }
    if description.contains("leica-microsystems.com/scn") {
        return Err(Problem::Refused { format: SCN, hint: "convert it to DICOM or pyramidal TIFF (e.g. with wsidicomizer or bfconvert)" });
    }
    if description.contains("<OME") || first_ifd.get(TAG_SUBIFDS).is_some() {
        return Err(Problem::Refused { format: OME, hint: "export it as a pyramidal TIFF with every level in the main IFD chain, or as DICOM" });
    }

    let mut levels: Vec<Level> = Vec::new();
    let mut associated = Vec::new();
    for (n, ifd) in ifds.iter().enumerate() {
        let width = r.int(ifd, TAG_WIDTH)?.unwrap_or(0);
        let height = r.int(ifd, TAG_HEIGHT)?.unwrap_or(0);
        let desc = r.text(ifd, TAG_DESCRIPTION)?.unwrap_or_default();
        let tiled = ifd.get(TAG_TILE_OFFSETS).is_some();
        let line2 = desc.lines().nth(1).unwrap_or("").trim().to_ascii_lowercase();
        let kind = if line2.starts_with("label") {
            Some("label")
        } else if line2.starts_with("macro") {
            Some("macro")
        } else if !tiled {
            Some(if svs && n == 1 { "thumbnail" } else { "image" })
        } else {
            None
        };
        if let Some(kind) = kind {
            associated.push(Associated { kind, width: width as u32, height: height as u32 });
            continue;
        }
        // Generic TIFF: reduced-resolution images say so (NewSubfileType bit 0); anything else
        // after level 0 that is not a reduction of it (a mask, a second image) is not a level.
        let subfile = r.int(ifd, TAG_SUBFILE)?.unwrap_or(0);
        if let Some(l0) = levels.first() {
            let ratio_w = l0.width as f64 / width.max(1) as f64;
            let ratio_h = l0.height as f64 / height.max(1) as f64;
            let smaller = width < l0.width as u64 && height < l0.height as u64;
            let same_aspect = (ratio_w / ratio_h - 1.0).abs() < 0.05 || (ratio_w - ratio_h).abs() <= 1.0;
            if !smaller || !same_aspect || (!svs && subfile & 1 == 0 && subfile != 0) {
                associated.push(Associated { kind: "image", width: width as u32, height: height as u32 });
                continue;
            }
        }
        levels.push(level(&r, ifd, n, width, height)?);
    }
    if levels.is_empty() {
        return Err(Problem::Refused {
            format: "a TIFF without tiles",
            hint: "a plain (stripped) TIFF is an image, not a slide: add it as an image",
        });
    }
    levels.sort_by_key(|l| std::cmp::Reverse(l.width));

    let (mpp, magnification) = if svs {
        // A value no microscope gives is no value: the user is asked instead.
        (aperio_field(&description, "MPP").filter(|m| (0.01..50.0).contains(m)), aperio_field(&description, "AppMag"))
    } else {
        let res = r.rational(first_ifd, TAG_XRES)?;
        let unit = r.int(first_ifd, TAG_RES_UNIT)?.unwrap_or(2);
        let mpp = res.filter(|&v| v > 0.0).and_then(|v| match unit {
            3 => Some(1e4 / v),
            2 => Some(25_400.0 / v),
            _ => None,
        });
        // A TIFF saved without a real resolution says 72 or 96 dpi (about 350 µm/px): not a slide.
        (mpp.filter(|&m| m < 50.0), None)
    };
    Ok(Opened { format: if svs { Format::Svs } else { Format::Tiff }, levels, mpp, magnification, associated })
}

fn aperio_field(description: &str, key: &str) -> Option<f64> {
    description.split('|').find_map(|f| {
        let (k, v) = f.split_once('=')?;
        (k.trim() == key).then(|| v.trim().parse::<f64>().ok()).flatten()
    })
}

fn level(r: &Reader<'_>, ifd: &Ifd, n: usize, width: u64, height: u64) -> Result<Level, Problem> {
    let samples = r.int(ifd, TAG_SAMPLES)?.unwrap_or(1);
    let bits = r.int(ifd, TAG_BITS)?.unwrap_or(1);
    let photometric = r.int(ifd, TAG_PHOTOMETRIC)?.unwrap_or(2);
    let planar = r.int(ifd, TAG_PLANAR)?.unwrap_or(1);
    let compression = r.int(ifd, TAG_COMPRESSION)?.unwrap_or(1);
    let predictor = r.int(ifd, TAG_PREDICTOR)?.unwrap_or(1) as u16;
    if samples > 3 || (samples == 1 && photometric <= 1) || photometric == 5 {
        return Err(Problem::Refused {
            format: "a fluorescence or multi-channel image",
            hint: "Obscura reads brightfield RGB slides (3 channels)",
        });
    }
    if bits != 8 || samples != 3 {
        return Err(Problem::Unsupported(format!("{samples} samples of {bits} bits per pixel (8-bit RGB is supported)")));
    }
    if planar != 1 {
        return Err(Problem::Unsupported("channels stored in separate planes".into()));
    }
    let codec = match compression {
        1 => Codec::Raw { predictor },
        5 => Codec::Lzw { predictor },
        8 | 32946 => Codec::Deflate { predictor },
        7 => {
            let tables = match ifd.get(TAG_JPEG_TABLES) {
                Some(e) if e.count > 1 << 20 => return Err(Problem::Corrupt(format!("IFD {n}: JPEGTables of {} bytes", e.count))),
                Some(e) => Some(r.bytes(e)?),
                None => None,
            };
            Codec::Jpeg { tables, colour: if photometric == 2 { JpegColour::Rgb } else { JpegColour::YCbCr } }
        }
        33003 => Codec::Jpeg2000 { ycbcr: true },
        33004 | 33005 | 34712 => Codec::Jpeg2000 { ycbcr: false },
        6 => return Err(Problem::Unsupported("old-style JPEG (TIFF compression 6)".into())),
        22610 | 34934 => return Err(Problem::Refused { format: "JPEG XR tiles", hint: "re-encode the slide with JPEG or JPEG 2000 tiles" }),
        34892 => return Err(Problem::Refused { format: "lossy JPEG DNG tiles", hint: "re-encode the slide with JPEG tiles" }),
        50000..=50003 => return Err(Problem::Unsupported(format!("TIFF compression {compression} (ZSTD, WebP or JPEG XL)"))),
        c => return Err(Problem::Unsupported(format!("TIFF compression {c}"))),
    };
    let tile_w = r.int(ifd, TAG_TILE_WIDTH)?.unwrap_or(0);
    let tile_h = r.int(ifd, TAG_TILE_HEIGHT)?.unwrap_or(0);
    if width == 0 || height == 0 || width > 1 << 30 || height > 1 << 30 || tile_w == 0 || tile_h == 0 || tile_w > 8192 || tile_h > 8192 {
        return Err(Problem::Corrupt(format!("IFD {n}: image {width}x{height}, tiles {tile_w}x{tile_h}")));
    }
    let across = width.div_ceil(tile_w);
    let down = height.div_ceil(tile_h);
    if across * down > MAX_TILES {
        return Err(Problem::Corrupt(format!("IFD {n}: {across}x{down} tiles")));
    }
    // Their counts are checked before they are read: a claimed count sizes an allocation.
    let table = |tag: u16, what: &str| -> Result<Vec<u64>, Problem> {
        let e = ifd.get(tag).ok_or_else(|| Problem::Corrupt(format!("IFD {n} has no tile {what}")))?;
        if e.count < across * down || e.count > across * down * 3 {
            return Err(Problem::Corrupt(format!("IFD {n}: {} tile {what} for {across}x{down} tiles", e.count)));
        }
        r.ints(e)
    };
    let offsets = table(TAG_TILE_OFFSETS, "offsets")?;
    let counts = table(TAG_TILE_COUNTS, "byte counts")?;
    if (offsets.len() as u64) < across * down || counts.len() != offsets.len() {
        return Err(Problem::Corrupt(format!(
            "IFD {n}: {} tile offsets and {} byte counts for {across}x{down} tiles",
            offsets.len(),
            counts.len()
        )));
    }
    let len = r.src.len();
    if let Some(i) = (0..offsets.len()).find(|&i| counts[i] > 0 && offsets[i].saturating_add(counts[i]) > len) {
        return Err(Problem::Truncated(format!(
            "tile {i} of level {n} lies past the end of the file ({} bytes): the file is cut off",
            len
        )));
    }
    Ok(Level {
        width: width as u32,
        height: height as u32,
        tile_width: tile_w as u32,
        tile_height: tile_h as u32,
        downsample: 1.0,
        codec,
        tiles: Tiles::Table { source: 0, offsets, counts },
    })
}
