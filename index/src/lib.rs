//! An incremental, persistent vector index for cosine similarity.
//!
//! ```text
//! insert ─▶ fresh segment (exact: brute-force dot products)
//!              │ compact(): when the collection outgrows `exact_limit`
//!              ▼
//!           graph segments (HNSW, built by instant-distance), merged tier by tier
//! search ─▶ top-k of every segment, merged
//! ```
//!
//! - New vectors go to the *fresh* segment, searched exactly. Collections up to
//!   [`Config::exact_limit`] vectors never leave it: exact search is fast enough there and needs
//!   no build.
//! - [`Index::compact`] does at most one unit of work per call and returns whether more is
//!   pending, so a worker can interleave it with searches: it turns a full fresh segment into an
//!   HNSW *graph segment*, merges [`Config::merge_factor`] graph segments of one size tier into
//!   one (LSM-style size tiers, so adding 1,000 vectors to 100,000 rebuilds only small segments),
//!   or rebuilds a segment that is mostly tombstones. No call builds a graph over more than
//!   [`Config::max_segment_len`] vectors.
//! - Removing from the fresh segment is immediate; removing from a graph segment leaves a
//!   tombstone that searches walk through but never return, until that segment is next rebuilt.
//! - [`Index::to_bytes`] / [`Index::from_bytes`]: a versioned, checksummed format, checked in
//!   full on load (see `format.rs`).

use std::collections::HashMap;

mod format;
mod graph;
mod kernel;
pub mod synthetic;
mod topk;

use graph::Graph;
use topk::{Scored, TopK};

pub use format::FORMAT_VERSION;

/// The largest dimension accepted (a sanity bound for `from_bytes`; CLIP uses 512 or 768).
pub const MAX_DIM: usize = 1 << 16;

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
    #[error("invalid index configuration: {0}")]
    Config(String),
    #[error("index bytes are version {found}; this build reads version {FORMAT_VERSION}")]
    UnsupportedVersion { found: u32 },
    #[error("index bytes are corrupt: {0}")]
    Corrupt(String),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Tuning knobs. The defaults suit 512-d CLIP embeddings from a few hundred to a few hundred
/// thousand images; see BENCHMARKS.md for how they were chosen.
#[derive(Clone, Debug, PartialEq)]
pub struct Config {
    /// Up to this many vectors the index stays exact (no graphs are built).
    pub exact_limit: usize,
    /// Beyond `exact_limit`, the fresh segment becomes a graph segment once it holds this many.
    pub fresh_capacity: usize,
    /// How many graph segments of one size tier are merged into one.
    pub merge_factor: usize,
    /// No graph segment is built over more vectors than this: it bounds the work of one
    /// `compact` call (and the number of segments is about `len / max_segment_len` plus a few).
    pub max_segment_len: usize,
    /// A graph segment with more than this fraction of tombstones is rebuilt.
    pub max_dead_fraction: f32,
    /// `ef_construction` of the HNSW builds.
    pub ef_construction: usize,
    /// Whether builds pick neighbours with HNSW's diversity heuristic (instant-distance's
    /// default). It makes searches visit fewer nodes but builds several times slower.
    pub neighbor_heuristic: bool,
    /// Default `ef` of searches (see [`Index::search_ef`]).
    pub ef_search: usize,
    /// Seed of the graph builds. Builds in one thread (wasm) are reproducible; native builds run
    /// on several threads and their graphs differ slightly from run to run.
    pub seed: u64,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            exact_limit: 4096,
            fresh_capacity: 1024,
            merge_factor: 4,
            max_segment_len: 32_768,
            max_dead_fraction: 0.25,
            ef_construction: 40,
            neighbor_heuristic: false,
            ef_search: 64,
            seed: 0x0b5c_0a1d,
        }
    }
}

impl Config {
    fn check(&self) -> Result<()> {
        let fail = |what: &str| Err(Error::Config(what.to_string()));
        if self.fresh_capacity == 0 {
            return fail("fresh_capacity must be at least 1");
        }
        if self.merge_factor < 2 {
            return fail("merge_factor must be at least 2");
        }
        if self.max_segment_len < self.fresh_capacity || self.max_segment_len >= u32::MAX as usize
        {
            return fail("max_segment_len must be at least fresh_capacity and below 2^32");
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
    /// Vectors put into a newly built graph segment by this call (0: no graph was built).
    pub built: usize,
    /// Whether another call would do more work.
    pub pending: bool,
}

/// Sizes, for benchmarks and the UI.
#[derive(Clone, Debug, PartialEq)]
pub struct Stats {
    /// Live vectors.
    pub len: usize,
    /// Vectors in the fresh (exact) segment.
    pub fresh: usize,
    /// `(rows, tombstones)` of each graph segment.
    pub graph_segments: Vec<(usize, usize)>,
    /// Heap bytes held by vectors, ids, links and the id map (estimated for the map).
    pub heap_bytes: usize,
}

/// Rows searched by brute force; insertions land here.
#[derive(Clone, Debug, Default, PartialEq)]
struct Fresh {
    ids: Vec<u64>,
    vectors: Vec<f32>,
}

/// Rows with an HNSW graph; immutable but for tombstones.
#[derive(Clone, Debug, PartialEq)]
struct Segment {
    /// Names the segment in [`Location`]; never reused within an index.
    tag: u32,
    ids: Vec<u64>,
    vectors: Vec<f32>,
    /// Tombstones, one bit per row.
    dead: Vec<u64>,
    dead_count: usize,
    graph: Graph,
}

impl Segment {
    fn rows(&self) -> usize {
        self.ids.len()
    }

    fn live(&self) -> usize {
        self.rows() - self.dead_count
    }

    fn is_dead(&self, row: usize) -> bool {
        self.dead[row / 64] & (1 << (row % 64)) != 0
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Location {
    Fresh(u32),
    Segment { tag: u32, row: u32 },
}

/// The unit of work of one `compact` call.
#[derive(Debug, PartialEq)]
enum Job {
    /// Build a graph segment from the last `n` rows of the fresh segment.
    Flush(usize),
    /// Rebuild these segments' live rows into one graph segment (merge or purge).
    Rebuild(Vec<u32>),
    /// Move a mostly dead segment's few live rows back to the fresh segment.
    Dissolve(u32),
}

/// A cosine-similarity index over `dim`-dimensional vectors named by `u64` ids.
#[derive(Clone, Debug, PartialEq)]
pub struct Index {
    dim: usize,
    config: Config,
    fresh: Fresh,
    segments: Vec<Segment>,
    locations: HashMap<u64, Location>,
    next_tag: u32,
}

impl Index {
    /// An empty index with the default [`Config`].
    pub fn new(dim: usize) -> Result<Self> {
        Self::with_config(dim, Config::default())
    }

    pub fn with_config(dim: usize, config: Config) -> Result<Self> {
        if dim == 0 || dim > MAX_DIM {
            return Err(Error::Config(format!("dimension must be 1..={MAX_DIM}, got {dim}")));
        }
        config.check()?;
        Ok(Self {
            dim,
            config,
            fresh: Fresh::default(),
            segments: Vec::new(),
            locations: HashMap::new(),
            next_tag: 0,
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
        self.remove(id);
        let row = self.fresh.ids.len() as u32;
        self.fresh.ids.push(id);
        self.fresh.vectors.extend_from_slice(&unit);
        self.locations.insert(id, Location::Fresh(row));
        Ok(())
    }

    /// Removes `id`; returns whether it was there.
    pub fn remove(&mut self, id: u64) -> bool {
        match self.locations.remove(&id) {
            None => false,
            Some(Location::Fresh(row)) => {
                let row = row as usize;
                let last = self.fresh.ids.len() - 1;
                if row != last {
                    let moved = self.fresh.ids[last];
                    self.fresh.ids[row] = moved;
                    self.fresh.vectors.copy_within(last * self.dim..(last + 1) * self.dim, row * self.dim);
                    self.locations.insert(moved, Location::Fresh(row as u32));
                }
                self.fresh.ids.pop();
                self.fresh.vectors.truncate(last * self.dim);
                true
            }
            Some(Location::Segment { tag, row }) => {
                let segment = self.segment_mut(tag);
                let row = row as usize;
                segment.dead[row / 64] |= 1 << (row % 64);
                segment.dead_count += 1;
                true
            }
        }
    }

    /// The `k` vectors most similar to `query`, best first, with the default `ef`.
    pub fn search(&self, query: &[f32], k: usize) -> Result<Vec<Hit>> {
        self.search_ef(query, k, self.config.ef_search)
    }

    /// The `k` vectors most similar to `query`, best first. Graph segments are searched with
    /// `max(ef, k)` candidates: a larger `ef` is slower and finds more of the true neighbours.
    pub fn search_ef(&self, query: &[f32], k: usize, ef: usize) -> Result<Vec<Hit>> {
        let query = self.unit(query)?;
        let mut top = TopK::new(k);
        if k == 0 {
            return Ok(Vec::new());
        }
        for (id, row) in self.fresh.ids.iter().zip(self.fresh.vectors.chunks_exact(self.dim)) {
            top.push(Scored::new(kernel::dot(&query, row), *id));
        }
        let ef = ef.max(k);
        for segment in &self.segments {
            if segment.live() == 0 {
                continue;
            }
            segment.graph.search(
                &segment.vectors,
                self.dim,
                &query,
                ef,
                |row| !segment.is_dead(row),
                |found| top.push(Scored::new(found.score, segment.ids[found.key as usize])),
            );
        }
        Ok(top
            .into_sorted()
            .into_iter()
            .map(|s| Hit { id: s.key, score: s.score })
            .collect())
    }

    /// Does at most one unit of background work (see the crate docs) and says whether more is
    /// pending. Call it until `pending` is false when idle; each call builds at most
    /// `max_segment_len` vectors into a graph.
    pub fn compact(&mut self) -> Compaction {
        let built = match self.plan() {
            None => 0,
            Some(job) => self.run(job),
        };
        Compaction { built, pending: self.plan().is_some() }
    }

    /// Runs `compact` until nothing is pending.
    pub fn compact_all(&mut self) {
        while self.compact().pending {}
    }

    pub fn stats(&self) -> Stats {
        let segment_bytes: usize = self
            .segments
            .iter()
            .map(|s| s.ids.len() * 8 + s.vectors.len() * 4 + s.dead.len() * 8 + s.graph.bytes())
            .sum();
        // A hashbrown entry is the (u64, Location) pair plus a control byte, at a load of ~7/8.
        let map_bytes = self.locations.capacity() * (std::mem::size_of::<(u64, Location)>() + 1);
        Stats {
            len: self.len(),
            fresh: self.fresh.ids.len(),
            graph_segments: self.segments.iter().map(|s| (s.rows(), s.dead_count)).collect(),
            heap_bytes: self.fresh.ids.capacity() * 8
                + self.fresh.vectors.capacity() * 4
                + segment_bytes
                + map_bytes,
        }
    }

    /// Checks `vector` and returns it normalised.
    fn unit(&self, vector: &[f32]) -> Result<Vec<f32>> {
        if vector.len() != self.dim {
            return Err(Error::DimensionMismatch { expected: self.dim, got: vector.len() });
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

    fn segment_mut(&mut self, tag: u32) -> &mut Segment {
        self.segments
            .iter_mut()
            .find(|s| s.tag == tag)
            .expect("locations only name existing segments")
    }

    /// The next unit of work, if any: purges first, then flushing the fresh segment, then merges.
    fn plan(&self) -> Option<Job> {
        let c = &self.config;
        for segment in &self.segments {
            if segment.dead_count as f32 > c.max_dead_fraction * segment.rows() as f32 {
                return Some(if segment.live() < c.fresh_capacity {
                    Job::Dissolve(segment.tag)
                } else {
                    Job::Rebuild(vec![segment.tag])
                });
            }
        }
        let fresh = self.fresh.ids.len();
        if self.len() > c.exact_limit && fresh >= c.fresh_capacity {
            return Some(Job::Flush(fresh.min(c.max_segment_len)));
        }
        // Size tiers: tier t holds segments of [F^t, F^(t+1)) × fresh_capacity live rows.
        let tier = |live: usize| {
            let (mut t, mut bound) = (0, c.fresh_capacity * c.merge_factor);
            while live >= bound {
                t += 1;
                bound = bound.saturating_mul(c.merge_factor);
            }
            t
        };
        let mut by_size: Vec<&Segment> = self.segments.iter().collect();
        by_size.sort_by_key(|s| (s.live(), s.tag));
        let mut start = 0;
        while start < by_size.len() {
            let t = tier(by_size[start].live());
            let end = start + by_size[start..].iter().take_while(|s| tier(s.live()) == t).count();
            if end - start >= c.merge_factor {
                let mut chosen = Vec::new();
                let mut total = 0;
                for s in &by_size[start..start + c.merge_factor] {
                    if total + s.live() > c.max_segment_len {
                        break;
                    }
                    total += s.live();
                    chosen.push(s.tag);
                }
                if chosen.len() >= 2 {
                    return Some(Job::Rebuild(chosen));
                }
            }
            start = end;
        }
        None
    }

    /// Does `job`; returns how many rows went into a new graph.
    fn run(&mut self, job: Job) -> usize {
        let dim = self.dim;
        let (ids, vectors) = match job {
            Job::Flush(n) => {
                let keep = self.fresh.ids.len() - n;
                let ids = self.fresh.ids.split_off(keep);
                let vectors = self.fresh.vectors.split_off(keep * dim);
                // `split_off` leaves the fresh segment its whole capacity: hand it back.
                self.fresh.ids.shrink_to(keep.max(self.config.fresh_capacity));
                self.fresh.vectors.shrink_to(keep.max(self.config.fresh_capacity) * dim);
                (ids, vectors)
            }
            Job::Rebuild(tags) => {
                let mut ids = Vec::new();
                let mut vectors = Vec::new();
                for tag in tags {
                    let at = self.segments.iter().position(|s| s.tag == tag).expect("planned");
                    let segment = self.segments.swap_remove(at);
                    for row in (0..segment.rows()).filter(|&r| !segment.is_dead(r)) {
                        ids.push(segment.ids[row]);
                        vectors.extend_from_slice(&segment.vectors[row * dim..][..dim]);
                    }
                }
                (ids, vectors)
            }
            Job::Dissolve(tag) => {
                let at = self.segments.iter().position(|s| s.tag == tag).expect("planned");
                let segment = self.segments.swap_remove(at);
                for row in (0..segment.rows()).filter(|&r| !segment.is_dead(r)) {
                    let id = segment.ids[row];
                    let fresh_row = self.fresh.ids.len() as u32;
                    self.fresh.ids.push(id);
                    self.fresh.vectors.extend_from_slice(&segment.vectors[row * dim..][..dim]);
                    self.locations.insert(id, Location::Fresh(fresh_row));
                }
                return 0;
            }
        };
        if ids.is_empty() {
            return 0;
        }
        let tag = self.next_tag;
        self.next_tag += 1;
        let seed = self.config.seed ^ (tag as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        let c = &self.config;
        let built = graph::build(&vectors, dim, c.ef_construction, c.neighbor_heuristic, seed);
        let mut segment = Segment {
            tag,
            ids: Vec::with_capacity(ids.len()),
            vectors: Vec::with_capacity(vectors.len()),
            dead: vec![0; ids.len().div_ceil(64)],
            dead_count: 0,
            graph: built.graph,
        };
        for (row, &from) in built.order.iter().enumerate() {
            segment.ids.push(ids[from]);
            segment.vectors.extend_from_slice(&vectors[from * dim..][..dim]);
            self.locations.insert(ids[from], Location::Segment { tag, row: row as u32 });
        }
        let n = segment.rows();
        self.segments.push(segment);
        n
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn small() -> Config {
        Config {
            exact_limit: 50,
            fresh_capacity: 20,
            merge_factor: 3,
            max_segment_len: 200,
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
            Err(Error::DimensionMismatch { expected: 3, got: 2 })
        );
        assert_eq!(
            index.insert(1, &[1.0, f32::NAN, 0.0]).unwrap_err().to_string(),
            "vector has a non-finite value (NaN) at position 1"
        );
        assert_eq!(index.insert(1, &[0.0; 3]), Err(Error::ZeroVector));
        assert_eq!(index.search(&[0.0; 3], 1), Err(Error::ZeroVector));
        assert!(matches!(Index::new(0), Err(Error::Config(_))));
        let bad = Config { merge_factor: 1, ..Config::default() };
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
    fn small_collections_stay_exact_and_large_ones_get_graphs() {
        let data = synthetic::Clusters::new(8, 4, 1).sample(400, 1);
        let mut index = Index::with_config(8, small()).unwrap();
        for (i, v) in data.chunks_exact(8).take(50).enumerate() {
            index.insert(i as u64, v).unwrap();
        }
        assert_eq!(index.compact(), Compaction { built: 0, pending: false });
        for (i, v) in data.chunks_exact(8).enumerate().skip(50) {
            index.insert(i as u64, v).unwrap();
        }
        let first = index.compact();
        assert_eq!(first.built, 200, "flush at most max_segment_len");
        index.compact_all();
        let stats = index.stats();
        assert_eq!(stats.len, 400);
        assert!(stats.fresh < 20, "{stats:?}");
        assert!(stats.graph_segments.iter().all(|&(rows, _)| rows <= 200), "{stats:?}");
    }

    #[test]
    fn adding_a_little_to_a_large_index_rebuilds_only_small_segments() {
        let dim = 8;
        let data = synthetic::Clusters::new(dim, 4, 2).sample(1100, 3);
        let mut index = Index::with_config(dim, small()).unwrap();
        for (i, v) in data.chunks_exact(dim).take(1000).enumerate() {
            index.insert(i as u64, v).unwrap();
        }
        index.compact_all();
        let before = index.stats();
        let mut built = 0;
        for (i, v) in data.chunks_exact(dim).enumerate().skip(1000) {
            index.insert(i as u64, v).unwrap();
            built += index.compact().built;
        }
        index.compact_all();
        // 100 new rows, each rebuilt at most once per tier below the largest segments.
        assert!(built <= 100 * 4, "rebuilt {built} rows for 100 inserts; before {before:?}");
        assert_eq!(index.len(), 1100);
    }

    #[test]
    fn tombstoned_segments_are_purged() {
        let dim = 8;
        let data = synthetic::Clusters::new(dim, 4, 2).sample(300, 5);
        let mut index = Index::with_config(dim, small()).unwrap();
        for (i, v) in data.chunks_exact(dim).enumerate() {
            index.insert(i as u64, v).unwrap();
        }
        index.compact_all();
        assert!(!index.stats().graph_segments.is_empty());
        for id in 0..290 {
            index.remove(id);
        }
        index.compact_all();
        let stats = index.stats();
        assert_eq!(stats.len, 10);
        assert!(stats.graph_segments.iter().all(|&(_, dead)| dead == 0), "{stats:?}");
        let hits = index.search(&data[..dim], 20).unwrap();
        let mut ids: Vec<u64> = hits.iter().map(|h| h.id).collect();
        ids.sort();
        assert_eq!(ids, (290..300).collect::<Vec<_>>());
    }
}
