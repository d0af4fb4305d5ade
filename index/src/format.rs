//! The persisted form of an [`Index`]. Little-endian throughout:
//!
//! ```text
//! magic        8 bytes  "OBSCIDX\n"
//! version      u32      FORMAT_VERSION
//! dim          u32
//! config       exact_limit u64, step_rows u64, step_work u64, max_dead_fraction f32, ef_construction u64,
//!              ef_search u64, seed u64, f32_limit u64
//! len          u64      live vectors
//! fresh        rows u64, ids [u64; rows], vectors [f32; rows·dim]
//! graph        present u8 (0/1), then a segment
//! rebuild      present u8 (0/1), then a segment, next u64, moved [u32; next]
//! checksum     u32      CRC-32 of every byte before it
//!
//! segment      rows u64, mean [f32; dim], ids [u64; rows], tombstones [u64; ⌈rows/64⌉],
//!              scales [f32; rows], codes [i8; rows·dim], exact u8 (0/1) [+ f32; rows·dim],
//!              layer-0 links [u32; rows·M0],
//!              entry u32, top u8, upper nodes U u64, [node u32, offset u32, level u8; U],
//!              upper links [u32; Σ level·M]
//! ```
//!
//! `from_bytes` trusts nothing: it checks the magic, the checksum, the version, every length
//! against the bytes left (before allocating), that vectors are finite unit vectors and codes'
//! scales finite, that live ids are unique and add up to `len`, that every graph link stays
//! inside its layer, that a rebuild's moves are consistent, and that no byte is left over. Any
//! failure is an error; it never panics.

use crate::codes::Codes;
use crate::graph::{Graph, M, M0, MAX_LEVEL, Upper};
use crate::{
    Config, Error, Fresh, Index, Location, MAX_DIM, MAX_ROWS, NO_ROW, Rebuild, Result, Segment,
};

const MAGIC: &[u8; 8] = b"OBSCIDX\n";
/// The version `to_bytes` writes and `from_bytes` reads (1: f32 segments built by
/// instant-distance; 2: one int8 graph of our own).
pub const FORMAT_VERSION: u32 = 2;
/// How far a stored vector's norm may be from 1 (they are stored normalised in f32).
const NORM_TOLERANCE: f32 = 1e-3;

impl Index {
    /// Serialises the whole index (see the format above).
    pub fn to_bytes(&self) -> Vec<u8> {
        let rows = self.fresh.ids.len() + self.graph.as_ref().map_or(0, Segment::rows);
        let mut out = Writer(Vec::with_capacity(128 + rows * (12 + 4 * M0 + self.dim)));
        out.0.extend_from_slice(MAGIC);
        out.u32(FORMAT_VERSION);
        out.u32(self.dim as u32);
        let c = &self.config;
        out.u64(c.exact_limit as u64);
        out.u64(c.step_rows as u64);
        out.u64(c.step_work);
        out.f32s(&[c.max_dead_fraction]);
        for v in [
            c.ef_construction as u64,
            c.ef_search as u64,
            c.seed,
            c.f32_limit as u64,
        ] {
            out.u64(v);
        }
        out.u64(self.len() as u64);
        out.u64(self.fresh.ids.len() as u64);
        out.u64s(&self.fresh.ids);
        out.f32s(&self.fresh.vectors);
        out.0.push(self.graph.is_some() as u8);
        if let Some(graph) = &self.graph {
            out.segment(graph);
        }
        out.0.push(self.rebuild.is_some() as u8);
        if let Some(rebuild) = &self.rebuild {
            out.segment(&rebuild.into);
            out.u64(rebuild.moved.len() as u64);
            out.u32s(&rebuild.moved);
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
            return Err(corrupt(
                "checksum mismatch: the bytes were damaged or truncated",
            ));
        }
        let mut r = Reader {
            bytes: body,
            at: MAGIC.len(),
        };
        let version = r.u32()?;
        if version != FORMAT_VERSION {
            return Err(Error::UnsupportedVersion { found: version });
        }
        let dim = r.u32()? as usize;
        if dim == 0 || dim > MAX_DIM {
            return Err(corrupt(format!("dimension {dim} out of range")));
        }
        let config = Config {
            // `usize::MAX` (never build graphs) written by a 64-bit build stays "never" on wasm32.
            exact_limit: usize::try_from(r.u64()?).unwrap_or(usize::MAX),
            step_rows: r.usize()?,
            step_work: r.u64()?,
            max_dead_fraction: r.f32()?,
            ef_construction: r.usize()?,
            ef_search: r.usize()?,
            seed: r.u64()?,
            f32_limit: usize::try_from(r.u64()?).unwrap_or(usize::MAX),
        };
        config
            .check()
            .map_err(|e| corrupt(format!("stored configuration: {e}")))?;
        let len = r.u64()?;

        let mut index = Index::with_config(dim, config)?;
        let rows = r.count(8 + 4 * dim)?;
        if rows > MAX_ROWS {
            return Err(corrupt(format!("{rows} fresh rows")));
        }
        let fresh = Fresh {
            ids: r.u64s(rows)?,
            vectors: r.vectors(rows, dim)?,
        };
        for (row, &id) in fresh.ids.iter().enumerate() {
            index.locations.insert(id, Location::fresh(row));
        }
        index.fresh = fresh;
        let graph = match r.flag()? {
            false => None,
            true => Some(r.segment(dim).map_err(|e| corrupt(format!("graph: {e}")))?),
        };
        let rebuild = match r.flag()? {
            false => None,
            true => {
                let into = r
                    .segment(dim)
                    .map_err(|e| corrupt(format!("rebuild: {e}")))?;
                let next = r.count(4)?;
                let moved = r.u32s(next)?;
                Some(Rebuild { into, moved })
            }
        };
        if let Some(rebuild) = &rebuild {
            let Some(old) = &graph else {
                return Err(corrupt("a rebuild without a graph"));
            };
            check_rebuild(old, rebuild)?;
        }
        if let Some(graph) = &graph {
            for row in (0..graph.rows()).filter(|&row| !graph.is_dead(row)) {
                let id = graph.ids[row];
                if index.locations.insert(id, Location::graph(row)).is_some() {
                    return Err(corrupt(format!("id {id} is stored twice")));
                }
            }
        }
        if index.locations.len() != index.fresh.ids.len() + graph.as_ref().map_or(0, Segment::live)
        {
            return Err(corrupt("an id is stored twice"));
        }
        index.graph = graph;
        index.rebuild = rebuild;
        if r.at != body.len() {
            return Err(corrupt(format!(
                "{} unexpected bytes at the end",
                body.len() - r.at
            )));
        }
        if index.len() as u64 != len {
            return Err(corrupt(format!(
                "header says {len} vectors, found {}",
                index.len()
            )));
        }
        Ok(index)
    }
}

/// A rebuild moved old rows `0..next()` in order, each live one to the next row of `into`, and
/// `into` holds exactly those rows, with the same ids, codes and tombstones.
fn check_rebuild(old: &Segment, rebuild: &Rebuild) -> Result<()> {
    let bad = |what: String| Err(corrupt(format!("rebuild: {what}")));
    if rebuild.next() >= old.rows() {
        return bad(format!("{} of {} rows moved", rebuild.next(), old.rows()));
    }
    if rebuild.into.exact.is_some() != old.exact.is_some() {
        return bad("the f32 rows are kept in one graph and not the other".into());
    }
    if rebuild.into.codes.mean != old.codes.mean {
        return bad("the mean differs from the graph's".into());
    }
    let mut new_row = 0usize;
    for (row, &to) in rebuild.moved.iter().enumerate() {
        if to == NO_ROW {
            if !old.is_dead(row) {
                return bad(format!("live row {row} was not moved"));
            }
            continue;
        }
        if to as usize != new_row || new_row >= rebuild.into.rows() {
            return bad(format!("row {row} moved to {to}, expected {new_row}"));
        }
        let dim = old.codes.dim;
        fn exact(s: &Segment, row: usize, dim: usize) -> Option<&[f32]> {
            s.exact.as_ref().map(|e| &e[row * dim..][..dim])
        }
        let exact_same = exact(old, row, dim) == exact(&rebuild.into, new_row, dim);
        let same = old.ids[row] == rebuild.into.ids[new_row]
            && old.codes.code(row) == rebuild.into.codes.code(new_row)
            && exact_same
            && old.is_dead(row) == rebuild.into.is_dead(new_row);
        if !same {
            return bad(format!("row {row} and its copy {new_row} differ"));
        }
        new_row += 1;
    }
    if new_row != rebuild.into.rows() {
        return bad(format!("{} rows, {new_row} moved", rebuild.into.rows()));
    }
    Ok(())
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
        vs.iter()
            .for_each(|v| self.0.extend_from_slice(&v.to_le_bytes()));
    }
    fn segment(&mut self, s: &Segment) {
        self.u64(s.rows() as u64);
        self.f32s(&s.codes.mean);
        self.u64s(&s.ids);
        self.u64s(&s.dead);
        self.f32s(&s.codes.scales);
        self.0.extend(s.codes.codes.iter().map(|&c| c as u8));
        self.0.push(s.exact.is_some() as u8);
        if let Some(exact) = &s.exact {
            self.f32s(exact);
        }
        s.graph.zero.iter().for_each(|&v| self.u32(v));
        self.u32(s.graph.entry);
        self.0.push(s.graph.top);
        self.u64(s.graph.upper.len() as u64);
        for u in &s.graph.upper {
            self.u32(u.node);
            self.u32(u.offset);
            self.0.push(u.level);
        }
        self.u32s(&s.graph.upper_links);
    }
}

struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8]> {
        let end = self
            .at
            .checked_add(n)
            .filter(|&end| end <= self.bytes.len());
        let Some(end) = end else {
            return Err(corrupt(format!("truncated at byte {}", self.at)));
        };
        let slice = &self.bytes[self.at..end];
        self.at = end;
        Ok(slice)
    }

    fn u32(&mut self) -> Result<u32> {
        Ok(u32::from_le_bytes(
            self.take(4)?.try_into().expect("4 bytes"),
        ))
    }

    fn u64(&mut self) -> Result<u64> {
        Ok(u64::from_le_bytes(
            self.take(8)?.try_into().expect("8 bytes"),
        ))
    }

    fn flag(&mut self) -> Result<bool> {
        match self.take(1)?[0] {
            0 => Ok(false),
            1 => Ok(true),
            other => Err(corrupt(format!("flag {other} at byte {}", self.at - 1))),
        }
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
        if n.checked_mul(item_bytes as u64)
            .is_none_or(|need| need > left)
        {
            return Err(corrupt(format!(
                "count {n} at byte {} exceeds the data",
                self.at - 8
            )));
        }
        Ok(n as usize)
    }

    fn u32s(&mut self, n: usize) -> Result<Vec<u32>> {
        let bytes = self.take(n.checked_mul(4).ok_or_else(|| corrupt("length overflow"))?)?;
        Ok(bytes
            .chunks_exact(4)
            .map(|b| u32::from_le_bytes(b.try_into().expect("4")))
            .collect())
    }

    fn u64s(&mut self, n: usize) -> Result<Vec<u64>> {
        let bytes = self.take(n.checked_mul(8).ok_or_else(|| corrupt("length overflow"))?)?;
        Ok(bytes
            .chunks_exact(8)
            .map(|b| u64::from_le_bytes(b.try_into().expect("8")))
            .collect())
    }

    fn f32s(&mut self, n: usize) -> Result<Vec<f32>> {
        Ok(self.u32s(n)?.into_iter().map(f32::from_bits).collect())
    }

    /// A graph segment of `dim`-dimensional codes.
    fn segment(&mut self, dim: usize) -> Result<Segment> {
        let rows = self.count(8 + 4 + dim + 4 * M0)?;
        if rows == 0 || rows > MAX_ROWS {
            return Err(corrupt(format!("{rows} rows")));
        }
        let mean = self.f32s(dim)?;
        if mean.iter().any(|x| !x.is_finite() || x.abs() > 1.0) {
            return Err(corrupt("the codes' mean is not finite"));
        }
        let ids = self.u64s(rows)?;
        let dead = self.u64s(rows.div_ceil(64))?;
        if rows % 64 != 0 && dead[rows / 64] >> (rows % 64) != 0 {
            return Err(corrupt("tombstones past the last row"));
        }
        let scales = self.f32s(rows)?;
        if scales
            .iter()
            .any(|s| !s.is_finite() || *s < 0.0 || *s > 1.0)
        {
            return Err(corrupt("a code's scale is not in [0, 1]"));
        }
        let codes: Vec<i8> = self.take(rows * dim)?.iter().map(|&b| b as i8).collect();
        if codes.contains(&i8::MIN) {
            return Err(corrupt("a code is -128"));
        }
        let exact = match self.flag()? {
            true => Some(self.vectors(rows, dim)?),
            false => None,
        };
        let zero = crate::codes::Blocks::from_flat(&self.u32s(rows * M0)?, M0);
        let entry = self.u32()?;
        let top = self.take(1)?[0];
        let uppers = self.count(9)?;
        let mut upper = Vec::with_capacity(uppers);
        let mut slots = 0usize;
        for _ in 0..uppers {
            let u = Upper {
                node: self.u32()?,
                offset: self.u32()?,
                level: self.take(1)?[0],
            };
            if u.level == 0 || u.level > MAX_LEVEL {
                return Err(corrupt(format!(
                    "upper-layer node {} of level {}",
                    u.node, u.level
                )));
            }
            slots += u.level as usize * M;
            upper.push(u);
        }
        if slots
            .checked_mul(4)
            .is_none_or(|b| b > self.bytes.len() - self.at)
        {
            return Err(corrupt("upper-layer links exceed the data"));
        }
        let upper_links = self.u32s(slots)?;
        let graph = Graph {
            zero,
            upper,
            upper_links,
            entry,
            top,
        };
        graph
            .validate(rows)
            .map_err(|e| corrupt(format!("graph: {e}")))?;
        let dead_count = dead.iter().map(|w| w.count_ones() as usize).sum();
        let mut codes_of = Codes::new(mean);
        codes_of.scales = scales;
        codes_of.codes = crate::codes::Blocks::from_flat(&codes, dim);
        Ok(Segment {
            ids,
            codes: codes_of,
            exact,
            dead,
            dead_count,
            graph,
        })
    }

    /// `rows` unit vectors of `dim` floats.
    fn vectors(&mut self, rows: usize, dim: usize) -> Result<Vec<f32>> {
        let n = rows
            .checked_mul(dim)
            .ok_or_else(|| corrupt("length overflow"))?;
        let bytes = self.take(n.checked_mul(4).ok_or_else(|| corrupt("length overflow"))?)?;
        let vectors: Vec<f32> = bytes
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes(b.try_into().expect("4")))
            .collect();
        for (row, v) in vectors.chunks_exact(dim).enumerate() {
            let norm = crate::kernel::dot(v, v).sqrt();
            let unit = (norm - 1.0).abs() <= NORM_TOLERANCE; // false for NaN too
            if !unit || v.iter().any(|x| !x.is_finite()) {
                return Err(corrupt(format!(
                    "stored vector {row} is not a finite unit vector"
                )));
            }
        }
        Ok(vectors)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::synthetic::{Clusters, Rng};

    fn config() -> Config {
        Config {
            exact_limit: 40,
            step_rows: 16,
            ef_construction: 24,
            ..Config::default()
        }
    }

    /// Fresh rows, a graph with tombstones, and (with `rebuilding`) a rebuild half done.
    fn sample_index(rebuilding: bool) -> Index {
        sample_index_with(rebuilding, config())
    }

    fn sample_index_with(rebuilding: bool, config: Config) -> Index {
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
        if rebuilding {
            for id in (9..150).step_by(3).take(40) {
                index.remove(id * 3);
            }
            index.compact();
            assert!(index.rebuild.is_some());
            index.remove(27 * 3);
        }
        index
    }

    #[test]
    fn round_trip_preserves_everything() {
        for rebuilding in [false, true] {
            let index = sample_index(rebuilding);
            assert!(index.graph.is_some() && !index.fresh.ids.is_empty());
            assert!(index.graph.as_ref().unwrap().dead_count > 0);
            let bytes = index.to_bytes();
            let back = Index::from_bytes(&bytes).unwrap();
            assert_eq!(back, index);
            assert_eq!(back.to_bytes(), bytes);
        }
        // A graph past `f32_limit` (codes only), saved in the middle of its rebuild.
        let index = sample_index_with(
            true,
            Config {
                f32_limit: 60,
                ..config()
            },
        );
        let graph = index.graph.as_ref().unwrap();
        assert!(graph.exact.is_none() && index.rebuild.as_ref().unwrap().into.exact.is_none());
        assert_eq!(Index::from_bytes(&index.to_bytes()).unwrap(), index);
        let empty = Index::new(4).unwrap();
        assert_eq!(Index::from_bytes(&empty.to_bytes()).unwrap(), empty);
    }

    /// Random damage is always an error, never a panic and never a silently different index.
    #[test]
    fn damaged_bytes_are_refused() {
        for rebuilding in [false, true] {
            let bytes = sample_index(rebuilding).to_bytes();
            let mut rng = Rng::new(5);
            for case in 0..1000 {
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
    }

    /// Bytes with a valid checksum but inconsistent contents (a bug, or a crafted file) are
    /// refused by the structural checks.
    #[test]
    fn inconsistent_contents_with_valid_checksum_are_refused() {
        let index = sample_index(false);
        let refused = |bad: &Index, want: &str| {
            let err = Index::from_bytes(&bad.to_bytes()).unwrap_err();
            assert!(err.to_string().contains(want), "{err} (wanted {want})");
        };
        let mut bad = index.clone();
        bad.graph.as_mut().unwrap().graph.zero.row_mut(0)[0] = 1_000_000;
        refused(&bad, "beyond");

        let mut bad = index.clone();
        bad.fresh.vectors[0] *= 2.0;
        refused(&bad, "unit vector");

        let mut bad = index.clone();
        bad.graph.as_mut().unwrap().codes.scales[3] = f32::NAN;
        refused(&bad, "scale");

        let mut bad = index.clone();
        let graph = bad.graph.as_ref().unwrap();
        let row = (0..).find(|&row| !graph.is_dead(row)).unwrap();
        bad.fresh.ids[0] = graph.ids[row];
        refused(&bad, "twice");

        let mut bad = sample_index(true);
        let rebuild = bad.rebuild.as_mut().unwrap();
        let last = rebuild.into.rows() - 1;
        rebuild.into.ids[last] ^= 1;
        refused(&bad, "differ");

        let reseal = |mut body: Vec<u8>| {
            body.truncate(body.len() - 4);
            let crc = crc32fast::hash(&body);
            body.extend_from_slice(&crc.to_le_bytes());
            body
        };
        let mut bytes = index.to_bytes();
        bytes[8..12].copy_from_slice(&1u32.to_le_bytes());
        assert_eq!(
            Index::from_bytes(&reseal(bytes)),
            Err(Error::UnsupportedVersion { found: 1 })
        );
        assert!(Index::from_bytes(b"PNG").is_err());
    }
}
