//! An incremental, persistent vector index for cosine similarity.
//!
//! ```text
//! insert ─▶ fresh rows (f32, searched exactly)
//!              │ compact(): a bounded number of rows per call
//!              ▼
//!           one HNSW graph over int8 codes, grown in place
//! search ─▶ top-k of the fresh rows and of the graph, merged
//! ```
//!
//! - New vectors go to the *fresh* rows, searched exactly. Collections up to
//!   [`Config::exact_limit`] vectors never leave them: exact search is fast enough there and
//!   needs no build.
//! - Beyond that, [`Index::compact`] moves at most [`Config::step_rows`] fresh rows per call into
//!   the graph (HNSW insertion, `graph.rs`) and returns whether more is pending, so a worker can
//!   interleave it with searches: no call does more than a few tens of milliseconds of work, and
//!   adding 1,000 vectors to a million costs 1,000 insertions, never a rebuild.
//! - The graph keeps its vectors as int8 codes (`codes.rs`): 512 bytes of a 512-d vector instead
//!   of 2048. Up to [`Config::f32_limit`] rows it also keeps them in f32 and searches by
//!   those, with exact scores; beyond, it searches by the codes and scores of graph rows are
//!   approximate (of the order of 1e-3, see `codes.rs`). Fresh rows always score exactly.
//! - Removing a fresh row is immediate; removing a graph row leaves a tombstone that searches walk
//!   through but never return. Past [`Config::max_dead_fraction`] tombstones the graph is rebuilt
//!   from its live rows, again a bounded number of rows per `compact` call, while the old graph
//!   goes on answering searches.
//! - Builds are deterministic: the same inserts (and removals and compactions) in the same order
//!   give byte-identical [`Index::to_bytes`] natively and in wasm.
//! - [`Index::to_bytes`] / [`Index::from_bytes`]: a versioned, checksummed format, checked in
//!   full on load (see `format.rs`).

use std::collections::HashMap;

mod codes;
mod format;
mod graph;
mod kernel;
pub mod lab;
pub mod synthetic;
mod topk;

use codes::{Codes, grow};
use graph::{Graph, Scratch};
use topk::{Scored, TopK};

pub use format::FORMAT_VERSION;

/// The largest dimension accepted (a sanity bound for `from_bytes`; CLIP uses 512 or 768).
pub const MAX_DIM: usize = 1 << 16;

/// The most rows the index holds (row numbers are 31-bit).
pub const MAX_ROWS: usize = (1 << 31) - 1;

/// What went wrong. Nothing in this crate panics on bad input.
#[derive(Debug, thiserror::Error, PartialEq)]
#[non_exhaustive]
pub enum Error {
    #[error("vector has {got} dimensions, the index holds {expected}-dimensional vectors")]
    DimensionMismatch { expected: usize, got: usize },
    #[error("vector has a non-finite value ({value}) at position {position}")]
    NotFinite { position: usize, value: f32 },
    #[error("vector is all zeros, so it has no direction to compare by cosine similarity")]
    ZeroVector,
    #[error("the index is full ({MAX_ROWS} rows)")]
    Full,
    #[error("invalid index configuration: {0}")]
    Config(String),
    #[error("index bytes are version {found}; this build reads version {FORMAT_VERSION}")]
    UnsupportedVersion { found: u32 },
    #[error("index bytes are corrupt: {0}")]
    Corrupt(String),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Tuning knobs. The defaults suit 512-d CLIP embeddings from a few hundred to a million
/// images; see BENCHMARKS.md for how they were chosen.
#[derive(Clone, Debug, PartialEq)]
pub struct Config {
    /// Up to this many vectors the index stays exact (no graph is built).
    pub exact_limit: usize,
    /// Rows moved into (or rebuilt into) the graph per `compact` call: bounds its time.
    pub step_rows: usize,
    /// A `compact` call also stops after the row during which its vector work passed this many
    /// multiply-adds (dimension × scores and decodes), so that a call takes about as long on any
    /// data (BENCHMARKS.md: the longest calls natively and in wasm).
    pub step_work: u64,
    /// The graph is rebuilt from its live rows when more than this fraction are tombstones.
    pub max_dead_fraction: f32,
    /// `ef_construction` of graph insertions.
    pub ef_construction: usize,
    /// Default `ef` of searches (see [`Index::search_ef`]).
    pub ef_search: usize,
    /// Seed of the graph's levels.
    pub seed: u64,
    /// While the graph holds at most this many rows it also keeps them in f32 and searches by
    /// them (exact scores; recall is the graph's alone). Beyond, only the int8 codes are kept: ~0.7 KB instead of ~2.7 KB per
    /// 512-d vector, so that a million fit a tab.
    pub f32_limit: usize,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            exact_limit: 4096,
            step_rows: 64,
            step_work: 30_000_000,
            max_dead_fraction: 0.25,
            ef_construction: 128,
            ef_search: 96,
            seed: 0x0b5c_0a1d,
            f32_limit: 100_000,
        }
    }
}

impl Config {
    fn check(&self) -> Result<()> {
        let fail = |what: &str| Err(Error::Config(what.to_string()));
        if self.step_rows == 0 || self.step_work == 0 {
            return fail("step_rows and step_work must be at least 1");
        }
        if !(0.0..1.0).contains(&self.max_dead_fraction) {
            return fail("max_dead_fraction must be in [0, 1)");
        }
        if self.ef_construction == 0 || self.ef_search == 0 {
            return fail("ef_construction and ef_search must be at least 1");
        }
        Ok(())
    }
}

/// A search result: the caller's id and its cosine similarity to the query.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Hit {
    pub id: u64,
    pub score: f32,
}

/// What one [`Index::compact`] call did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Compaction {
    /// Rows inserted into a graph by this call.
    pub built: usize,
    /// Whether another call would do more work.
    pub pending: bool,
}

/// Sizes, for benchmarks and the UI.
#[derive(Clone, Debug, PartialEq)]
pub struct Stats {
    /// Live vectors.
    pub len: usize,
    /// Vectors in the fresh (exact) rows.
    pub fresh: usize,
    /// Rows of the graph and how many of them are tombstones.
    pub graph_rows: usize,
    pub graph_dead: usize,
    /// Rows already in the graph being rebuilt, if one is.
    pub rebuilding: Option<usize>,
    /// Heap bytes held by vectors, codes, ids, links and the id map (estimated for the map).
    pub heap_bytes: usize,
}

/// Rows searched by brute force; insertions land here.
#[derive(Clone, Debug, Default, PartialEq)]
struct Fresh {
    ids: Vec<u64>,
    vectors: Vec<f32>,
}

/// Rows with an HNSW graph: appended to, never reordered; removals are tombstones.
#[derive(Clone, Debug, PartialEq)]
struct Segment {
    ids: Vec<u64>,
    codes: Codes,
    /// The rows in f32, while the segment is within `Config::f32_limit`.
    exact: Option<Vec<f32>>,
    /// Tombstones, one bit per row.
    dead: Vec<u64>,
    dead_count: usize,
    graph: Graph,
}

impl Segment {
    fn new(mean: Vec<f32>) -> Self {
        Self {
            ids: Vec::new(),
            codes: Codes::new(mean),
            exact: Some(Vec::new()),
            dead: Vec::new(),
            dead_count: 0,
            graph: Graph::default(),
        }
    }

    fn rows(&self) -> usize {
        self.ids.len()
    }

    fn live(&self) -> usize {
        self.rows() - self.dead_count
    }

    fn is_dead(&self, row: usize) -> bool {
        self.dead[row / 64] & (1 << (row % 64)) != 0
    }

    fn kill(&mut self, row: usize) {
        self.dead[row / 64] |= 1 << (row % 64);
        self.dead_count += 1;
    }

    /// Makes room for `extra` rows, dropping the f32 rows if they would pass `f32_limit`.
    fn reserve(&mut self, extra: usize, f32_limit: usize) {
        if self.rows() + extra > f32_limit {
            self.exact = None;
        }
        if let Some(exact) = &mut self.exact {
            grow(exact, extra * self.codes.dim);
        }
        grow(&mut self.ids, extra);
        self.codes.reserve(extra);
    }

    /// Appends the row whose code is already the last of `codes` and whose vector is `v`.
    fn link_last(&mut self, id: u64, v: &[f32], config: &Config, scratch: &mut Scratch) -> u32 {
        let row = self.ids.len();
        self.ids.push(id);
        if let Some(exact) = &mut self.exact {
            exact.extend_from_slice(v);
        }
        if self.dead.len() * 64 <= row {
            self.dead.push(0);
        }
        let level = graph::level_of(config.seed, row);
        let rows = match &self.exact {
            Some(exact) => codes::Rows::Exact(exact, self.codes.dim),
            None => codes::Rows::Codes(&self.codes),
        };
        self.graph
            .insert(rows, v, level, config.ef_construction, scratch);
        row as u32
    }

    fn bytes(&self) -> usize {
        self.ids.capacity() * 8
            + self.codes.bytes()
            + self.exact.as_ref().map_or(0, |e| e.capacity() * 4)
            + self.dead.capacity() * 8
            + self.graph.bytes()
    }

    /// Searches the graph, by the f32 rows while they are kept (exact scores), by the codes
    /// beyond.
    fn search(&self, query: &[f32], ef: usize, live: impl Fn(usize) -> bool, top: &mut TopK) {
        let dim = self.codes.dim;
        let out = |found: Scored| top.push(Scored::new(found.score, self.ids[found.key as usize]));
        match &self.exact {
            Some(exact) => {
                let score = |node: u32| kernel::dot(query, &exact[node as usize * dim..][..dim]);
                self.graph.search(score, ef, live, out);
            }
            None => {
                let q = self.codes.query(query);
                self.graph
                    .search(|node| self.codes.score(q, node as usize), ef, live, out);
            }
        }
    }

    /// Row `row` as f32: exact if kept, else decoded.
    fn vector(&self, row: usize, out: &mut [f32]) {
        match &self.exact {
            Some(exact) => out.copy_from_slice(&exact[row * out.len()..][..out.len()]),
            None => self.codes.decode(row, out),
        }
    }
}

/// A graph being rebuilt from the live rows of the current one: rows `0..moved.len()` of the
/// current graph have been moved, row `r` to row `moved[r]` of `into` (`NO_ROW` if it was dead).
#[derive(Clone, Debug, PartialEq)]
struct Rebuild {
    into: Segment,
    moved: Vec<u32>,
}

impl Rebuild {
    /// The first row of the current graph not yet moved.
    fn next(&self) -> usize {
        self.moved.len()
    }
}

const NO_ROW: u32 = u32::MAX;

/// Where an id's vector is: a fresh row, or a row of the graph (during a rebuild, of the old
/// graph: `Rebuild::moved` says where it went).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Location(u32);

const FRESH: u32 = 1 << 31;

impl Location {
    fn fresh(row: usize) -> Self {
        Self(row as u32 | FRESH)
    }
    fn graph(row: usize) -> Self {
        Self(row as u32)
    }
    fn fresh_row(self) -> Option<usize> {
        (self.0 & FRESH != 0).then_some((self.0 & !FRESH) as usize)
    }
    fn graph_row(self) -> Option<usize> {
        (self.0 & FRESH == 0).then_some(self.0 as usize)
    }
}

/// A cosine-similarity index over `dim`-dimensional vectors named by `u64` ids.
#[derive(Clone, Debug, PartialEq)]
pub struct Index {
    dim: usize,
    config: Config,
    fresh: Fresh,
    graph: Option<Segment>,
    rebuild: Option<Rebuild>,
    locations: HashMap<u64, Location>,
}

impl Index {
    /// An empty index with the default [`Config`].
    pub fn new(dim: usize) -> Result<Self> {
        Self::with_config(dim, Config::default())
    }

    pub fn with_config(dim: usize, config: Config) -> Result<Self> {
        if dim == 0 || dim > MAX_DIM {
            return Err(Error::Config(format!(
                "dimension must be 1..={MAX_DIM}, got {dim}"
            )));
        }
        config.check()?;
        Ok(Self {
            dim,
            config,
            fresh: Fresh::default(),
            graph: None,
            rebuild: None,
            locations: HashMap::new(),
        })
    }

    pub fn dim(&self) -> usize {
        self.dim
    }

    pub fn config(&self) -> &Config {
        &self.config
    }

    /// Live vectors.
    pub fn len(&self) -> usize {
        self.locations.len()
    }

    pub fn is_empty(&self) -> bool {
        self.locations.is_empty()
    }

    pub fn contains(&self, id: u64) -> bool {
        self.locations.contains_key(&id)
    }

    /// Adds `vector` under `id`, replacing any vector already there. The vector is stored
    /// normalised: scores are cosine similarities.
    pub fn insert(&mut self, id: u64, vector: &[f32]) -> Result<()> {
        let unit = self.unit(vector)?;
        if self.fresh.ids.len() >= MAX_ROWS {
            return Err(Error::Full);
        }
        self.remove(id);
        let row = self.fresh.ids.len();
        self.fresh.ids.push(id);
        self.fresh.vectors.extend_from_slice(&unit);
        self.locations.insert(id, Location::fresh(row));
        Ok(())
    }

    /// Removes `id`; returns whether it was there.
    pub fn remove(&mut self, id: u64) -> bool {
        let Some(location) = self.locations.remove(&id) else {
            return false;
        };
        if let Some(row) = location.fresh_row() {
            let last = self.fresh.ids.len() - 1;
            if row != last {
                let moved = self.fresh.ids[last];
                self.fresh.ids[row] = moved;
                self.fresh
                    .vectors
                    .copy_within(last * self.dim..(last + 1) * self.dim, row * self.dim);
                self.locations.insert(moved, Location::fresh(row));
            }
            self.fresh.ids.pop();
            self.fresh.vectors.truncate(last * self.dim);
        } else if let Some(row) = location.graph_row() {
            self.graph
                .as_mut()
                .expect("graph rows are in the graph")
                .kill(row);
            if let Some(rebuild) = &mut self.rebuild
                && row < rebuild.next()
            {
                rebuild.into.kill(rebuild.moved[row] as usize);
            }
        }
        true
    }

    /// The `k` vectors most similar to `query`, best first, with the default `ef`.
    pub fn search(&self, query: &[f32], k: usize) -> Result<Vec<Hit>> {
        self.search_ef(query, k, self.config.ef_search)
    }

    /// The `k` vectors most similar to `query`, best first. The graph is searched with
    /// `max(ef, k)` candidates: a larger `ef` is slower and finds more of the true neighbours.
    pub fn search_ef(&self, query: &[f32], k: usize, ef: usize) -> Result<Vec<Hit>> {
        let query = self.unit(query)?;
        let mut top = TopK::new(k);
        if k == 0 {
            return Ok(Vec::new());
        }
        for (id, row) in self
            .fresh
            .ids
            .iter()
            .zip(self.fresh.vectors.chunks_exact(self.dim))
        {
            top.push(Scored::new(kernel::dot(&query, row), *id));
        }
        let ef = ef.max(k);
        let moved = self.rebuild.as_ref().map_or(0, Rebuild::next);
        if let Some(graph) = &self.graph
            && graph.live() > 0
        {
            graph.search(
                &query,
                ef,
                |row| row >= moved && !graph.is_dead(row),
                &mut top,
            );
        }
        if let Some(rebuild) = &self.rebuild
            && rebuild.into.live() > 0
        {
            let into = &rebuild.into;
            into.search(&query, ef, |row| !into.is_dead(row), &mut top);
        }
        Ok(top
            .into_sorted()
            .into_iter()
            .map(|s| Hit {
                id: s.key,
                score: s.score,
            })
            .collect())
    }

    /// Does at most one step of background work (see the crate docs) and says whether more is
    /// pending. Call it until `pending` is false when idle; each call inserts at most
    /// `step_rows` rows into a graph.
    pub fn compact(&mut self) -> Compaction {
        let built = self.step();
        Compaction {
            built,
            pending: self.pending(),
        }
    }

    /// Runs `compact` until nothing is pending.
    pub fn compact_all(&mut self) {
        while self.compact().pending {}
    }

    pub fn stats(&self) -> Stats {
        // A hashbrown entry is the (u64, Location) pair plus a control byte.
        let map_bytes = self.locations.capacity() * (std::mem::size_of::<(u64, Location)>() + 1);
        let graph_bytes = self.graph.as_ref().map_or(0, Segment::bytes)
            + self
                .rebuild
                .as_ref()
                .map_or(0, |r| r.into.bytes() + r.moved.capacity() * 4);
        Stats {
            len: self.len(),
            fresh: self.fresh.ids.len(),
            graph_rows: self.graph.as_ref().map_or(0, Segment::rows),
            graph_dead: self.graph.as_ref().map_or(0, |g| g.dead_count),
            rebuilding: self.rebuild.as_ref().map(Rebuild::next),
            heap_bytes: self.fresh.ids.capacity() * 8
                + self.fresh.vectors.capacity() * 4
                + graph_bytes
                + map_bytes,
        }
    }

    /// Checks `vector` and returns it normalised.
    fn unit(&self, vector: &[f32]) -> Result<Vec<f32>> {
        if vector.len() != self.dim {
            return Err(Error::DimensionMismatch {
                expected: self.dim,
                got: vector.len(),
            });
        }
        if let Some((position, &value)) = vector.iter().enumerate().find(|(_, x)| !x.is_finite()) {
            return Err(Error::NotFinite { position, value });
        }
        let mut unit = vector.to_vec();
        // Scale first so that huge or tiny (but finite) vectors neither overflow nor vanish.
        let max = unit.iter().fold(0.0f32, |m, x| m.max(x.abs()));
        if max == 0.0 {
            return Err(Error::ZeroVector);
        }
        unit.iter_mut().for_each(|x| *x /= max);
        kernel::normalize(&mut unit);
        Ok(unit)
    }

    fn too_dead(&self) -> bool {
        self.graph.as_ref().is_some_and(|g| {
            g.dead_count > 0
                && g.dead_count as f64 > self.config.max_dead_fraction as f64 * g.rows() as f64
        })
    }

    fn pending(&self) -> bool {
        self.rebuild.is_some() || self.too_dead() || self.flush_due()
    }

    /// Fresh rows should move into the graph (and there is room for them).
    fn flush_due(&self) -> bool {
        let room = self.graph.as_ref().is_none_or(|g| g.rows() < MAX_ROWS);
        room && self.len() > self.config.exact_limit && !self.fresh.ids.is_empty()
    }

    /// One step: rebuilding first, then moving fresh rows into the graph.
    fn step(&mut self) -> usize {
        if self.rebuild.is_some() {
            return self.rebuild_step();
        }
        if self.too_dead() {
            let graph = self.graph.as_ref().expect("too_dead needs a graph");
            if graph.live() <= self.config.exact_limit {
                self.dissolve();
                return 0;
            }
            let mut into = Segment::new(graph.codes.mean.clone());
            // Rows whose f32 values are gone stay codes: decoded values are not exact.
            if graph.exact.is_none() {
                into.exact = None;
            }
            self.rebuild = Some(Rebuild {
                into,
                moved: Vec::with_capacity(graph.rows()),
            });
            return self.rebuild_step();
        }
        if self.flush_due() {
            return self.flush_step();
        }
        0
    }

    /// Moves up to `step_rows` of the newest fresh rows (fewer when `step_work` runs out) into
    /// the graph, made on first use with the mean of the fresh rows as the centre of its codes.
    fn flush_step(&mut self) -> usize {
        let dim = self.dim;
        let graph = self.graph.get_or_insert_with(|| {
            let rows = self.fresh.ids.len().min(8192);
            let mut mean = vec![0.0f64; dim];
            for v in self.fresh.vectors.chunks_exact(dim).take(rows) {
                mean.iter_mut().zip(v).for_each(|(m, x)| *m += *x as f64);
            }
            Segment::new(mean.iter().map(|m| (m / rows as f64) as f32).collect())
        });
        let n = self
            .fresh
            .ids
            .len()
            .min(self.config.step_rows)
            .min(MAX_ROWS - graph.rows());
        graph.reserve(n, self.config.f32_limit);
        let mut scratch = Scratch::default();
        // The last `n` fresh rows, in the order they came; those the work budget leaves over
        // close the gap (at most `step_rows` of them move down).
        let start = self.fresh.ids.len() - n;
        let mut moved = 0;
        while moved < n && scratch.ops.get() * (dim as u64) < self.config.step_work {
            let i = start + moved;
            let id = self.fresh.ids[i];
            let v = &self.fresh.vectors[i * dim..][..dim];
            graph.codes.push(v);
            let row = graph.link_last(id, v, &self.config, &mut scratch);
            self.locations.insert(id, Location::graph(row as usize));
            moved += 1;
        }
        for i in start + moved..start + n {
            let id = self.fresh.ids[i];
            self.fresh.ids[i - moved] = id;
            self.fresh
                .vectors
                .copy_within(i * dim..(i + 1) * dim, (i - moved) * dim);
            self.locations.insert(id, Location::fresh(i - moved));
        }
        let keep = self.fresh.ids.len() - moved;
        self.fresh.ids.truncate(keep);
        self.fresh.vectors.truncate(keep * dim);
        if self.fresh.ids.capacity() > 4 * keep.max(1024) {
            self.fresh.ids.shrink_to(keep.max(1024));
            self.fresh.vectors.shrink_to(keep.max(1024) * dim);
        }
        moved
    }

    /// Moves up to `step_rows` rows of the graph into the one being rebuilt; swaps them when
    /// all are moved.
    fn rebuild_step(&mut self) -> usize {
        let rebuild = self.rebuild.as_mut().expect("a rebuild");
        let old = self.graph.as_ref().expect("a rebuild has a graph");
        let start = rebuild.next();
        let end = (start + self.config.step_rows).min(old.rows());
        let mut scratch = Scratch::default();
        let mut v = vec![0.0; self.dim];
        let mut built = 0;
        rebuild.into.reserve(end - start, self.config.f32_limit);
        for row in start..end {
            if scratch.ops.get() * (self.dim as u64) >= self.config.step_work {
                break;
            }
            if old.is_dead(row) {
                rebuild.moved.push(NO_ROW);
                continue;
            }
            rebuild.into.codes.push_from(&old.codes, row);
            old.vector(row, &mut v);
            let new_row = rebuild
                .into
                .link_last(old.ids[row], &v, &self.config, &mut scratch);
            rebuild.moved.push(new_row);
            built += 1;
        }
        if rebuild.next() == old.rows() {
            let Rebuild { into, moved, .. } = self.rebuild.take().expect("a rebuild");
            for location in self.locations.values_mut() {
                if let Some(row) = location.graph_row() {
                    *location = Location::graph(moved[row] as usize);
                }
            }
            self.graph = Some(into);
        }
        built
    }

    /// Moves a mostly dead graph's few live rows back to the fresh rows (decoded, if the f32 rows
    /// were no longer kept) and drops the graph.
    fn dissolve(&mut self) {
        let graph = self.graph.take().expect("a graph to dissolve");
        let mut v = vec![0.0; self.dim];
        for row in (0..graph.rows()).filter(|&r| !graph.is_dead(r)) {
            graph.vector(row, &mut v);
            kernel::normalize(&mut v);
            let id = graph.ids[row];
            self.locations
                .insert(id, Location::fresh(self.fresh.ids.len()));
            self.fresh.ids.push(id);
            self.fresh.vectors.extend_from_slice(&v);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn small() -> Config {
        Config {
            exact_limit: 50,
            step_rows: 20,
            ef_construction: 40,
            ef_search: 40,
            ..Config::default()
        }
    }

    #[test]
    fn bad_vectors_are_errors() {
        let mut index = Index::new(3).unwrap();
        assert_eq!(
            index.insert(1, &[1.0, 2.0]),
            Err(Error::DimensionMismatch {
                expected: 3,
                got: 2
            })
        );
        assert_eq!(
            index
                .insert(1, &[1.0, f32::NAN, 0.0])
                .unwrap_err()
                .to_string(),
            "vector has a non-finite value (NaN) at position 1"
        );
        assert_eq!(index.insert(1, &[0.0; 3]), Err(Error::ZeroVector));
        assert_eq!(index.search(&[0.0; 3], 1), Err(Error::ZeroVector));
        assert!(matches!(Index::new(0), Err(Error::Config(_))));
        let bad = Config {
            step_rows: 0,
            ..Config::default()
        };
        assert!(Index::with_config(3, bad).is_err());
        assert!(index.is_empty());
    }

    #[test]
    fn scores_are_cosine_similarities_and_extreme_magnitudes_work() {
        let mut index = Index::new(2).unwrap();
        index.insert(1, &[3.0, 4.0]).unwrap();
        index.insert(2, &[1e-30, 0.0]).unwrap();
        index.insert(3, &[-3e30, 0.0]).unwrap();
        let hits = index.search(&[1.0, 0.0], 3).unwrap();
        let got: Vec<(u64, f32)> = hits.iter().map(|h| (h.id, h.score)).collect();
        assert_eq!(got, vec![(2, 1.0), (1, 0.6), (3, -1.0)]);
    }

    #[test]
    fn insert_replaces_and_remove_forgets() {
        let mut index = Index::new(2).unwrap();
        index.insert(7, &[1.0, 0.0]).unwrap();
        index.insert(8, &[0.0, 1.0]).unwrap();
        index.insert(7, &[0.0, 2.0]).unwrap();
        assert_eq!(index.len(), 2);
        assert_eq!(index.search(&[1.0, 0.0], 1).unwrap()[0].score, 0.0);
        assert!(index.remove(8));
        assert!(!index.remove(8));
        let hits = index.search(&[0.0, 1.0], 5).unwrap();
        assert_eq!(hits, vec![Hit { id: 7, score: 1.0 }]);
    }

    #[test]
    fn small_collections_stay_exact_and_large_ones_get_a_graph_in_bounded_steps() {
        let data = synthetic::Clusters::new(8, 4, 1).sample(400, 1);
        let mut index = Index::with_config(8, small()).unwrap();
        for (i, v) in data.chunks_exact(8).take(50).enumerate() {
            index.insert(i as u64, v).unwrap();
        }
        assert_eq!(
            index.compact(),
            Compaction {
                built: 0,
                pending: false
            }
        );
        for (i, v) in data.chunks_exact(8).enumerate().skip(50) {
            index.insert(i as u64, v).unwrap();
        }
        assert_eq!(
            index.compact(),
            Compaction {
                built: 20,
                pending: true
            }
        );
        let mut calls = 1;
        while index.compact().pending {
            calls += 1;
        }
        assert_eq!(calls, 400 / 20 - 1);
        let stats = index.stats();
        assert_eq!((stats.len, stats.fresh, stats.graph_rows), (400, 0, 400));
        // Searches run between steps and see every row.
        index.insert(1000, &data[..8]).unwrap();
        let hits = index.search(&data[..8], 2).unwrap();
        assert_eq!(hits.iter().map(|h| h.id).collect::<Vec<_>>(), vec![0, 1000]);
    }

    #[test]
    fn tombstones_are_purged_by_a_rebuild_that_serves_searches_meanwhile() {
        let dim = 8;
        let data = synthetic::Clusters::new(dim, 4, 2).sample(600, 5);
        let mut index = Index::with_config(dim, small()).unwrap();
        for (i, v) in data.chunks_exact(dim).enumerate() {
            index.insert(i as u64, v).unwrap();
        }
        index.compact_all();
        for id in (0..600).step_by(3) {
            index.remove(id);
        }
        assert!(index.compact().pending);
        assert!(index.stats().rebuilding.is_some());
        // Mid-rebuild: removals of moved and unmoved rows, and searches, all hold.
        assert!(index.remove(1) && index.remove(599));
        let live: Vec<u64> = (0..600)
            .filter(|id| id % 3 != 0 && *id != 1 && *id != 599)
            .collect();
        let hits = index.search(&data[2 * dim..][..dim], 400).unwrap();
        let mut ids: Vec<u64> = hits.iter().map(|h| h.id).collect();
        ids.sort();
        assert_eq!(
            ids, live,
            "a search during the rebuild sees every live row once"
        );
        index.compact_all();
        let stats = index.stats();
        assert_eq!(
            (
                stats.len,
                stats.graph_rows,
                stats.graph_dead,
                stats.rebuilding
            ),
            (398, 399, 1, None)
        );
        // (id 1 was removed after it had moved: a tombstone in the new graph.)
        for id in live.iter().step_by(17) {
            let hits = index.search(&data[*id as usize * dim..][..dim], 1).unwrap();
            assert_eq!(hits[0].id, *id);
        }
        // A mostly dead graph goes back to exact rows.
        for id in live.iter().skip(10) {
            index.remove(*id);
        }
        index.compact_all();
        let stats = index.stats();
        assert_eq!((stats.len, stats.fresh, stats.graph_rows), (10, 10, 0));
    }

    #[test]
    fn the_same_operations_give_the_same_bytes() {
        let run = || {
            let data = synthetic::Clusters::new(16, 5, 3).sample(700, 2);
            let mut index = Index::with_config(16, small()).unwrap();
            for (i, v) in data.chunks_exact(16).enumerate() {
                index.insert(i as u64, v).unwrap();
                if i % 7 == 0 {
                    index.remove(i as u64 / 2);
                }
                if i % 50 == 0 {
                    index.compact();
                }
            }
            index.compact_all();
            index.to_bytes()
        };
        assert_eq!(run(), run());
    }
}
