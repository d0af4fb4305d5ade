//! The persisted form of an [`Index`]. Little-endian throughout:
//!
//! ```text
//! magic        8 bytes  "OBSCIDX\n"
//! version      u32      FORMAT_VERSION
//! dim          u32
//! config       exact_limit u64, fresh_capacity u64, merge_factor u64, max_segment_len u64,
//!              max_dead_fraction f32, ef_construction u64, neighbor_heuristic u64 (0/1),
//!              ef_search u64, seed u64
//! next_tag     u32
//! len          u64      live vectors
//! fresh        rows u64, ids [u64; rows], vectors [f32; rows·dim]
//! segments     count u32, then each:
//!                tag u32, rows u64, upper layers L u64, layer sizes [u64; L],
//!                ids [u64; rows], tombstones [u64; ⌈rows/64⌉], vectors [f32; rows·dim],
//!                layer-0 links [u32; rows·64], layer-l links [u32; size_l·32] for l = 1..=L
//! checksum     u32      CRC-32 of every byte before it
//! ```
//!
//! `from_bytes` trusts nothing: it checks the magic, the checksum, the version, every length
//! against the bytes left (before allocating), that vectors are finite unit vectors, that live ids
//! are unique and add up to `len`, that every graph link stays inside its layer, and that no byte
//! is left over. Any failure is an error; it never panics.

use std::collections::HashSet;

use crate::graph::{Graph, UPPER_LINKS, ZERO_LINKS};
use crate::{Config, Error, Fresh, Index, Location, MAX_DIM, Result, Segment};

const MAGIC: &[u8; 8] = b"OBSCIDX\n";
/// The version `to_bytes` writes and `from_bytes` reads.
pub const FORMAT_VERSION: u32 = 1;
/// How far a stored vector's norm may be from 1 (they are stored normalised in f32).
const NORM_TOLERANCE: f32 = 1e-3;

impl Index {
    /// Serialises the whole index (see the format above).
    pub fn to_bytes(&self) -> Vec<u8> {
        let rows: usize = self.fresh.ids.len() + self.segments.iter().map(Segment::rows).sum::<usize>();
        let links: usize = self.segments.iter().map(|s| s.graph.bytes()).sum();
        let mut out = Writer(Vec::with_capacity(128 + rows * (12 + 4 * self.dim) + links));
        out.0.extend_from_slice(MAGIC);
        out.u32(FORMAT_VERSION);
        out.u32(self.dim as u32);
        let c = &self.config;
        for v in [c.exact_limit, c.fresh_capacity, c.merge_factor, c.max_segment_len] {
            out.u64(v as u64);
        }
        out.f32s(&[c.max_dead_fraction]);
        let heuristic = c.neighbor_heuristic as u64;
        for v in [c.ef_construction as u64, heuristic, c.ef_search as u64, c.seed] {
            out.u64(v);
        }
        out.u32(self.next_tag);
        out.u64(self.len() as u64);
        out.u64(self.fresh.ids.len() as u64);
        out.u64s(&self.fresh.ids);
        out.f32s(&self.fresh.vectors);
        out.u32(self.segments.len() as u32);
        for s in &self.segments {
            out.u32(s.tag);
            out.u64(s.rows() as u64);
            out.u64(s.graph.upper.len() as u64);
            for layer in &s.graph.upper {
                out.u64((layer.len() / UPPER_LINKS) as u64);
            }
            out.u64s(&s.ids);
            out.u64s(&s.dead);
            out.f32s(&s.vectors);
            out.u32s(&s.graph.zero);
            for layer in &s.graph.upper {
                out.u32s(layer);
            }
        }
        let checksum = crc32fast::hash(&out.0);
        out.u32(checksum);
        out.0
    }

    /// Reads what [`Index::to_bytes`] wrote, checking all of it.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self> {
        if bytes.len() < MAGIC.len() || &bytes[..MAGIC.len()] != MAGIC {
            return Err(corrupt("not an Obscura index (bad magic bytes)"));
        }
        let Some(body_len) = bytes.len().checked_sub(4).filter(|&n| n >= MAGIC.len() + 4) else {
            return Err(corrupt("truncated header"));
        };
        let (body, stored) = bytes.split_at(body_len);
        if crc32fast::hash(body) != u32::from_le_bytes(stored.try_into().expect("4 bytes")) {
            return Err(corrupt("checksum mismatch: the bytes were damaged or truncated"));
        }
        let mut r = Reader { bytes: body, at: MAGIC.len() };
        let version = r.u32()?;
        if version != FORMAT_VERSION {
            return Err(Error::UnsupportedVersion { found: version });
        }
        let dim = r.u32()? as usize;
        if dim == 0 || dim > MAX_DIM {
            return Err(corrupt(format!("dimension {dim} out of range")));
        }
        let mut config = Config {
            // `usize::MAX` (never build graphs) written by a 64-bit build stays "never" on wasm32.
            exact_limit: usize::try_from(r.u64()?).unwrap_or(usize::MAX),
            fresh_capacity: r.usize()?,
            merge_factor: r.usize()?,
            max_segment_len: r.usize()?,
            max_dead_fraction: r.f32()?,
            ef_construction: r.usize()?,
            neighbor_heuristic: match r.u64()? {
                0 => false,
                1 => true,
                other => return Err(corrupt(format!("neighbour heuristic flag {other}"))),
            },
            ef_search: r.usize()?,
            seed: 0,
        };
        config.seed = r.u64()?;
        config.check().map_err(|e| corrupt(format!("stored configuration: {e}")))?;
        let next_tag = r.u32()?;
        let len = r.u64()?;

        let mut index = Index::with_config(dim, config)?;
        index.next_tag = next_tag;
        let mut seen = HashSet::new();
        let mut live_id = |id: u64, index: &mut Index, location| {
            if !seen.insert(id) {
                return Err(corrupt(format!("id {id} is stored twice")));
            }
            index.locations.insert(id, location);
            Ok(())
        };

        let rows = r.count(8 + 4 * dim)?;
        let fresh = Fresh { ids: r.u64s(rows)?, vectors: r.vectors(rows, dim)? };
        for (row, &id) in fresh.ids.iter().enumerate() {
            live_id(id, &mut index, Location::Fresh(row as u32))?;
        }
        index.fresh = fresh;

        let segments = r.u32()? as usize;
        let mut tags = HashSet::new();
        for _ in 0..segments {
            let tag = r.u32()?;
            if tag >= next_tag || !tags.insert(tag) {
                return Err(corrupt(format!("segment tag {tag} is repeated or unissued")));
            }
            let rows = r.count(8 + 4 * dim + 4 * ZERO_LINKS)?;
            if rows == 0 || rows >= u32::MAX as usize {
                return Err(corrupt(format!("segment {tag} has {rows} rows")));
            }
            let layers = r.count(8)?;
            let mut sizes = Vec::with_capacity(layers);
            for _ in 0..layers {
                sizes.push(r.count(4 * UPPER_LINKS)?);
            }
            let ids = r.u64s(rows)?;
            let dead = r.u64s(rows.div_ceil(64))?;
            if rows % 64 != 0 && dead[rows / 64] >> (rows % 64) != 0 {
                return Err(corrupt(format!("segment {tag} has tombstones past its last row")));
            }
            let vectors = r.vectors(rows, dim)?;
            let zero = r.u32s(rows * ZERO_LINKS)?;
            let mut upper = Vec::with_capacity(layers);
            for size in sizes {
                upper.push(r.u32s(size * UPPER_LINKS)?);
            }
            let graph = Graph { zero, upper };
            graph
                .validate(rows)
                .map_err(|e| corrupt(format!("segment {tag} graph: {e}")))?;
            let segment = Segment {
                tag,
                dead_count: dead.iter().map(|w| w.count_ones() as usize).sum(),
                ids,
                vectors,
                dead,
                graph,
            };
            for row in (0..rows).filter(|&row| !segment.is_dead(row)) {
                let location = Location::Segment { tag, row: row as u32 };
                live_id(segment.ids[row], &mut index, location)?;
            }
            index.segments.push(segment);
        }
        if r.at != body.len() {
            return Err(corrupt(format!("{} unexpected bytes at the end", body.len() - r.at)));
        }
        if index.len() as u64 != len {
            return Err(corrupt(format!("header says {len} vectors, found {}", index.len())));
        }
        Ok(index)
    }
}

fn corrupt(reason: impl Into<String>) -> Error {
    Error::Corrupt(reason.into())
}

struct Writer(Vec<u8>);

impl Writer {
    fn u32(&mut self, v: u32) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }
    fn u64(&mut self, v: u64) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }
    fn u32s(&mut self, vs: &[u32]) {
        vs.iter().for_each(|v| self.u32(*v));
    }
    fn u64s(&mut self, vs: &[u64]) {
        vs.iter().for_each(|v| self.u64(*v));
    }
    fn f32s(&mut self, vs: &[f32]) {
        vs.iter().for_each(|v| self.0.extend_from_slice(&v.to_le_bytes()));
    }
}

struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8]> {
        let end = self.at.checked_add(n).filter(|&end| end <= self.bytes.len());
        let Some(end) = end else {
            return Err(corrupt(format!("truncated at byte {}", self.at)));
        };
        let slice = &self.bytes[self.at..end];
        self.at = end;
        Ok(slice)
    }

    fn u32(&mut self) -> Result<u32> {
        Ok(u32::from_le_bytes(self.take(4)?.try_into().expect("4 bytes")))
    }

    fn u64(&mut self) -> Result<u64> {
        Ok(u64::from_le_bytes(self.take(8)?.try_into().expect("8 bytes")))
    }

    fn f32(&mut self) -> Result<f32> {
        Ok(f32::from_bits(self.u32()?))
    }

    fn usize(&mut self) -> Result<usize> {
        usize::try_from(self.u64()?).map_err(|_| corrupt("a size does not fit this platform"))
    }

    /// A count of items that take at least `item_bytes` each: refused if the bytes left cannot
    /// hold them, so a damaged count never causes a huge allocation.
    fn count(&mut self, item_bytes: usize) -> Result<usize> {
        let n = self.u64()?;
        let left = (self.bytes.len() - self.at) as u64;
        if n.checked_mul(item_bytes as u64).is_none_or(|need| need > left) {
            return Err(corrupt(format!("count {n} at byte {} exceeds the data", self.at - 8)));
        }
        Ok(n as usize)
    }

    fn u32s(&mut self, n: usize) -> Result<Vec<u32>> {
        let bytes = self.take(n.checked_mul(4).ok_or_else(|| corrupt("length overflow"))?)?;
        Ok(bytes.chunks_exact(4).map(|b| u32::from_le_bytes(b.try_into().expect("4"))).collect())
    }

    fn u64s(&mut self, n: usize) -> Result<Vec<u64>> {
        let bytes = self.take(n.checked_mul(8).ok_or_else(|| corrupt("length overflow"))?)?;
        Ok(bytes.chunks_exact(8).map(|b| u64::from_le_bytes(b.try_into().expect("8"))).collect())
    }

    /// `rows` unit vectors of `dim` floats.
    fn vectors(&mut self, rows: usize, dim: usize) -> Result<Vec<f32>> {
        let n = rows.checked_mul(dim).ok_or_else(|| corrupt("length overflow"))?;
        let bytes = self.take(n.checked_mul(4).ok_or_else(|| corrupt("length overflow"))?)?;
        let vectors: Vec<f32> =
            bytes.chunks_exact(4).map(|b| f32::from_le_bytes(b.try_into().expect("4"))).collect();
        for (row, v) in vectors.chunks_exact(dim).enumerate() {
            let norm = crate::kernel::dot(v, v).sqrt();
            let unit = (norm - 1.0).abs() <= NORM_TOLERANCE; // false for NaN too
            if !unit || v.iter().any(|x| !x.is_finite()) {
                return Err(corrupt(format!("stored vector {row} is not a finite unit vector")));
            }
        }
        Ok(vectors)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::synthetic::{Clusters, Rng};

    fn sample_index() -> Index {
        let config = Config {
            exact_limit: 40,
            fresh_capacity: 16,
            max_segment_len: 64,
            ef_construction: 24,
            ..Config::default()
        };
        let dim = 6;
        let data = Clusters::new(dim, 3, 9).sample(150, 1);
        let mut index = Index::with_config(dim, config).unwrap();
        for (i, v) in data.chunks_exact(dim).enumerate() {
            index.insert(i as u64 * 3, v).unwrap();
        }
        index.compact_all();
        for (i, v) in data.chunks_exact(dim).enumerate().take(10) {
            index.insert(1000 + i as u64, v).unwrap();
        }
        for id in [0, 3, 6, 300, 1003] {
            index.remove(id);
        }
        index
    }

    #[test]
    fn round_trip_preserves_everything() {
        let index = sample_index();
        assert!(!index.segments.is_empty() && !index.fresh.ids.is_empty());
        assert!(index.segments.iter().any(|s| s.dead_count > 0));
        let bytes = index.to_bytes();
        let back = Index::from_bytes(&bytes).unwrap();
        assert_eq!(back, index);
        assert_eq!(back.to_bytes(), bytes);
        let empty = Index::new(4).unwrap();
        assert_eq!(Index::from_bytes(&empty.to_bytes()).unwrap(), empty);
    }

    /// Random damage is always an error, never a panic and never a silently different index.
    #[test]
    fn damaged_bytes_are_refused() {
        let bytes = sample_index().to_bytes();
        let mut rng = Rng::new(5);
        for case in 0..2000 {
            let mut damaged = bytes.clone();
            match case % 4 {
                0 => damaged.truncate(rng.below(bytes.len())),
                1 => {
                    let at = rng.below(bytes.len());
                    damaged[at] ^= 1 << rng.below(8);
                }
                2 => {
                    for _ in 0..1 + rng.below(8) {
                        let at = rng.below(bytes.len());
                        damaged[at] = rng.next_u64() as u8;
                    }
                }
                _ => damaged.extend((0..1 + rng.below(16)).map(|_| rng.next_u64() as u8)),
            }
            if damaged == bytes {
                continue;
            }
            let result = Index::from_bytes(&damaged);
            assert!(result.is_err(), "case {case}: damaged bytes accepted");
        }
    }

    /// Bytes with a valid checksum but inconsistent contents (a bug, or a crafted file) are
    /// refused by the structural checks.
    #[test]
    fn inconsistent_contents_with_valid_checksum_are_refused() {
        let index = sample_index();
        let reseal = |mut body: Vec<u8>| {
            body.truncate(body.len() - 4);
            let crc = crc32fast::hash(&body);
            body.extend_from_slice(&crc.to_le_bytes());
            body
        };
        let mut bad = index.clone();
        bad.segments[0].graph.zero[0] = 1_000_000;
        let err = Index::from_bytes(&bad.to_bytes()).unwrap_err();
        assert!(err.to_string().contains("beyond"), "{err}");

        let mut bad = index.clone();
        bad.fresh.vectors[0] *= 2.0;
        let err = Index::from_bytes(&bad.to_bytes()).unwrap_err();
        assert!(err.to_string().contains("unit vector"), "{err}");

        let mut bad = index.clone();
        let row = (0..).find(|&row| !bad.segments[0].is_dead(row)).unwrap();
        let id = bad.segments[0].ids[row];
        bad.fresh.ids[0] = id;
        let err = Index::from_bytes(&bad.to_bytes()).unwrap_err();
        assert!(err.to_string().contains("twice"), "{err}");

        let mut bytes = index.to_bytes();
        bytes[8..12].copy_from_slice(&2u32.to_le_bytes());
        assert_eq!(Index::from_bytes(&reseal(bytes)), Err(Error::UnsupportedVersion { found: 2 }));
        assert!(Index::from_bytes(b"PNG").is_err());
    }
}
