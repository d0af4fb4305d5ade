//! HNSW graphs: built by instant-distance, then held, searched and persisted by us.
//!
//! instant-distance 0.6 builds a good graph (parallel insertion with the neighbour-selection
//! heuristic), but the `Hnsw` it returns fixes `ef_search` at build time, keeps its graph private
//! and can only be persisted through serde into a layout it does not validate. So, once per build,
//! we read the graph out (serialise it with bincode and deserialise the same bytes into
//! [`HnswLayout`], a mirror of its fields) into flat arrays over *our* row-major vectors. That
//! gives us what the index needs: `ef` chosen per query, tombstones skipped during the search,
//! vectors stored once and contiguously, and a persisted form we check link by link.
//!
//! The search below is the one instant-distance runs (greedy descent through the upper layers
//! from node 0, then a best-first search with `ef` candidates on layer 0); a test checks that both
//! return the same neighbours.

use std::cmp::Reverse;
use std::collections::BinaryHeap;

use instant_distance::{Builder, Heuristic, Point};
use serde::{Deserialize, Serialize, Serializer};
use serde_big_array::BigArray;

use crate::kernel::dot;
use crate::topk::Scored;

/// Links per node on layer 0 (instant-distance's `2·M`).
pub(crate) const ZERO_LINKS: usize = 64;
/// Links per node on the upper layers (instant-distance's `M`).
pub(crate) const UPPER_LINKS: usize = 32;
/// An empty link slot; the valid links of a node come first.
pub(crate) const NO_LINK: u32 = u32::MAX;

/// A row of a segment's vector matrix, as instant-distance sees it.
#[derive(Clone, Copy)]
struct Row<'a>(&'a [f32]);

impl Point for Row<'_> {
    fn distance(&self, other: &Self) -> f32 {
        // Rows are unit vectors: cosine distance.
        1.0 - dot(self.0, other.0)
    }
}

/// Points serialise to nothing: the graph is all we read out, the vectors are ours already.
impl Serialize for Row<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_unit()
    }
}

/// Field-for-field mirror of `instant_distance::Hnsw<P>` (version 0.6.1, pinned in Cargo.toml).
#[derive(Deserialize)]
struct HnswLayout {
    _ef_search: usize,
    points: Vec<()>,
    zero: Vec<ZeroNode>,
    layers: Vec<Vec<UpperNode>>,
}

#[derive(Deserialize)]
struct ZeroNode(#[serde(with = "BigArray")] [u32; ZERO_LINKS]);

#[derive(Deserialize)]
struct UpperNode([u32; UPPER_LINKS]);

/// The links of an HNSW graph over `n` nodes, node `0` being the entry point.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Graph {
    /// Layer 0: `ZERO_LINKS` slots per node.
    pub zero: Vec<u32>,
    /// Layers 1, 2, …: layer `l` holds `UPPER_LINKS` slots for each of nodes `0..len_l`, where
    /// `len_1 ≥ len_2 ≥ …` (nodes are numbered by descending level).
    pub upper: Vec<Vec<u32>>,
}

/// A freshly built graph and the order of its nodes: node `i` is input row `order[i]`.
pub(crate) struct Built {
    pub graph: Graph,
    pub order: Vec<usize>,
}

/// Builds a graph over the rows of `vectors` (`n × dim`, unit rows, `n ≥ 1`).
pub(crate) fn build(
    vectors: &[f32],
    dim: usize,
    ef_construction: usize,
    heuristic: bool,
    seed: u64,
) -> Built {
    let rows: Vec<Row<'_>> = vectors.chunks_exact(dim).map(Row).collect();
    let n = rows.len();
    assert!(n > 0 && n < NO_LINK as usize, "graph segments hold 1..2^32-1 rows");
    let (hnsw, pids) = Builder::default()
        .ef_construction(ef_construction)
        .select_heuristic(heuristic.then(Heuristic::default))
        .seed(seed)
        .build_hnsw(rows);
    let mut order = vec![0; n];
    for (row, pid) in pids.into_iter().enumerate() {
        order[pid.into_inner() as usize] = row;
    }
    // Serialising into memory cannot fail, and the mirror is tested against the pinned version.
    let bytes = bincode::serialize(&hnsw).expect("serialise an instant-distance graph");
    drop(hnsw);
    let layout: HnswLayout =
        bincode::deserialize(&bytes).expect("instant-distance 0.6.1's Hnsw layout");
    assert_eq!((layout.points.len(), layout.zero.len()), (n, n));
    let graph = Graph {
        zero: layout.zero.iter().flat_map(|node| node.0).collect(),
        upper: layout
            .layers
            .iter()
            .map(|layer| layer.iter().flat_map(|node| node.0).collect())
            .collect(),
    };
    debug_assert_eq!(graph.validate(n), Ok(()));
    Built { graph, order }
}

impl Graph {
    /// Checks every link of a graph over `n` nodes (used on load: a graph read from bytes must
    /// never send a search out of bounds).
    pub fn validate(&self, n: usize) -> Result<(), String> {
        check_links(&self.zero, ZERO_LINKS, n).map_err(|e| format!("layer 0: {e}"))?;
        let mut below = n;
        for (i, layer) in self.upper.iter().enumerate() {
            let len = layer.len() / UPPER_LINKS;
            if len == 0 || len > below {
                return Err(format!("layer {} has {len} nodes, layer below {below}", i + 1));
            }
            check_links(layer, UPPER_LINKS, len).map_err(|e| format!("layer {}: {e}", i + 1))?;
            below = len;
        }
        Ok(())
    }

    /// The best-first search instant-distance runs, with `ef` candidates on layer 0. Nodes for
    /// which `live` is false are walked through but not returned. Results go into `out`.
    pub fn search(
        &self,
        vectors: &[f32],
        dim: usize,
        query: &[f32],
        ef: usize,
        live: impl Fn(usize) -> bool,
        mut out: impl FnMut(Scored),
    ) {
        let n = self.zero.len() / ZERO_LINKS;
        let score = |node: u32| dot(query, &vectors[node as usize * dim..][..dim]);

        // Greedy descent from the entry point through the upper layers.
        let mut entry = 0u32;
        let mut entry_score = score(0);
        for layer in self.upper.iter().rev() {
            loop {
                let mut moved = false;
                for &next in links(layer, UPPER_LINKS, entry) {
                    let s = score(next);
                    if s > entry_score {
                        (entry, entry_score) = (next, s);
                        moved = true;
                    }
                }
                if !moved {
                    break;
                }
            }
        }

        // Layer 0: `candidates` to expand, best first; `nearest` the best `ef` seen, worst on
        // top. Dead nodes are expanded (they keep the graph connected) but never kept.
        let mut visited = vec![0u64; n.div_ceil(64)];
        let mut visit = |node: u32| {
            let (word, bit) = (node as usize / 64, 1u64 << (node % 64));
            let seen = visited[word] & bit != 0;
            visited[word] |= bit;
            !seen
        };
        let mut candidates = BinaryHeap::with_capacity(ef * 2);
        let mut nearest: BinaryHeap<Reverse<Scored>> = BinaryHeap::with_capacity(ef + 1);
        visit(entry);
        candidates.push(Scored::new(entry_score, entry as u64));
        if live(entry as usize) {
            nearest.push(Reverse(Scored::new(entry_score, entry as u64)));
        }
        while let Some(current) = candidates.pop() {
            if nearest.len() >= ef && current < nearest.peek().expect("ef ≥ 1").0 {
                break;
            }
            for &next in links(&self.zero, ZERO_LINKS, current.key as u32) {
                if !visit(next) {
                    continue;
                }
                let candidate = Scored::new(score(next), next as u64);
                if nearest.len() < ef || candidate > nearest.peek().expect("ef ≥ 1").0 {
                    candidates.push(candidate);
                    if live(next as usize) {
                        nearest.push(Reverse(candidate));
                        if nearest.len() > ef {
                            nearest.pop();
                        }
                    }
                }
            }
        }
        for Reverse(found) in nearest {
            out(found);
        }
    }

    /// Heap bytes held by the links.
    pub fn bytes(&self) -> usize {
        (self.zero.len() + self.upper.iter().map(Vec::len).sum::<usize>()) * 4
    }
}

/// The valid links of `node` in a layer with `width` slots per node.
fn links(layer: &[u32], width: usize, node: u32) -> impl Iterator<Item = &u32> {
    layer[node as usize * width..][..width]
        .iter()
        .take_while(|&&link| link != NO_LINK)
}

fn check_links(layer: &[u32], width: usize, n: usize) -> Result<(), String> {
    if !layer.len().is_multiple_of(width) {
        return Err(format!("{} link slots is not a multiple of {width}", layer.len()));
    }
    for (node, slots) in layer.chunks_exact(width).enumerate() {
        let valid = slots.iter().take_while(|&&link| link != NO_LINK).count();
        if let Some(&bad) = slots[..valid].iter().find(|&&link| link as usize >= n) {
            return Err(format!("node {node} links to {bad}, beyond {n} nodes"));
        }
        if slots[valid..].iter().any(|&link| link != NO_LINK) {
            return Err(format!("node {node} has a link after an empty slot"));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::synthetic::Clusters;

    /// Our search over the extracted graph returns what instant-distance's own search returns.
    #[test]
    fn extracted_graph_searches_like_instant_distance() {
        let dim = 32;
        let data = Clusters::new(dim, 8, 7).sample(2000, 1);
        let rows: Vec<Row<'_>> = data.chunks_exact(dim).map(Row).collect();
        let ef = 40;
        let (theirs, pids) = Builder::default()
            .ef_construction(ef)
            .ef_search(ef)
            .seed(3)
            .build_hnsw(rows.clone());
        let ours = build(&data, dim, ef, true, 3);
        // Same seed, but natively the build runs on several threads: compare each graph's
        // search with its own node numbering, through the row each node holds.
        let row_of_ours = &ours.order;
        let mut row_of_theirs = vec![0; pids.len()];
        for (row, pid) in pids.iter().enumerate() {
            row_of_theirs[pid.into_inner() as usize] = row;
        }
        let reordered: Vec<f32> = row_of_ours
            .iter()
            .flat_map(|&row| data[row * dim..][..dim].iter().copied())
            .collect();
        let mut search = instant_distance::Search::default();
        let mut agree = 0;
        let queries = 100;
        for q in 0..queries {
            let query = &data[q * 17 * dim..][..dim];
            let want: Vec<usize> = theirs
                .search(&Row(query), &mut search)
                .take(10)
                .map(|item| row_of_theirs[item.pid.into_inner() as usize])
                .collect();
            let mut got = Vec::new();
            ours.graph
                .search(&reordered, dim, query, ef, |_| true, |s| got.push(s));
            got.sort_by(|a, b| b.cmp(a));
            let got: Vec<usize> = got.iter().take(10).map(|s| row_of_ours[s.key as usize]).collect();
            agree += want.iter().filter(|row| got.contains(row)).count();
        }
        // Both graphs are approximate; they must find (nearly) the same neighbours.
        let overlap = agree as f64 / (queries * 10) as f64;
        assert!(overlap > 0.97, "top-10 overlap with instant-distance {overlap}");
        assert_eq!(ours.graph.validate(2000), Ok(()));
    }

    #[test]
    fn validate_rejects_out_of_range_and_gapped_links() {
        let mut graph = build(&Clusters::new(8, 2, 1).sample(100, 2), 8, 20, false, 1).graph;
        assert_eq!(graph.validate(100), Ok(()));
        assert!(graph.validate(50).is_err());
        let gap = (0..graph.zero.len())
            .find(|&p| graph.zero[p] == NO_LINK && p % ZERO_LINKS != ZERO_LINKS - 1)
            .unwrap();
        graph.zero[gap + 1] = 0;
        assert!(graph.validate(100).unwrap_err().contains("after an empty slot"));
    }
}
