//! An HNSW graph (Malkov & Yashunin), built by us, one insertion at a time, over int8 codes.
//!
//! Why our own builder rather than instant-distance (used before): instant-distance builds a graph
//! once, in parallel, and can neither add to it nor give the same graph twice natively (its
//! threads race); without its (3.7× slower) neighbour heuristic its graphs lose recall on
//! clustered data, and it keeps f32 vectors. Here a graph grows in place, in steps of bounded
//! work (`Index::compact`), and is identical for the same inserts in the same order on every
//! platform: levels come from a hash of the row, ties break by row, and all arithmetic is the
//! same IEEE operations in the same order natively and in wasm.
//!
//! - Layer 0 has [`M0`] link slots per node, the upper layers [`M`]. A node's level is drawn from
//!   a geometric distribution with p = 1/M (HNSW's `mL = 1/ln M`) by integer hashing.
//! - Neighbours are chosen with HNSW's heuristic (a candidate is kept only if it is closer to the
//!   new node than to every neighbour already kept), also when a full neighbour list is shrunk,
//!   as hnswlib does. This is what keeps clusters connected to each other.
//! - Search: greedy descent through the upper layers from the entry point, then a best-first
//!   search with `ef` candidates on layer 0. Tombstoned nodes are walked through, never returned.

use std::cmp::Reverse;
use std::collections::BinaryHeap;

#[cfg(test)]
use crate::codes::Codes;
use crate::codes::{Blocks, Rows};
use crate::topk::Scored;

/// Link slots per node on the upper layers (HNSW's `M`).
pub(crate) const M: usize = 16;
/// Link slots per node on layer 0 (`2·M`).
pub(crate) const M0: usize = 2 * M;
/// An empty link slot; the valid links of a node come first.
pub(crate) const NO_LINK: u32 = u32::MAX;
/// Levels above this are not drawn (p = 16^-16).
pub(crate) const MAX_LEVEL: u8 = 16;

/// A node on the upper layers: its links for layers `1..=level` start at `offset` in
/// `Graph::upper_links`, `M` slots per layer.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) struct Upper {
    pub node: u32,
    pub offset: u32,
    pub level: u8,
}

#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Graph {
    /// Layer 0: `M0` slots per node.
    pub zero: Blocks<u32>,
    /// The nodes of level ≥ 1, in increasing node order (nodes are appended in order).
    pub upper: Vec<Upper>,
    pub upper_links: Vec<u32>,
    /// The entry point (a node of the highest level) and that level; meaningless when empty.
    pub entry: u32,
    pub top: u8,
}

/// Reusable buffers of one builder, and a count of the work done with them.
#[derive(Default)]
pub(crate) struct Scratch {
    visited: Visited,
    decoded: Vec<f32>,
    base: Vec<f32>,
    /// Vector operations (scores and decodes, `dim` multiply-adds each) done so far: what a
    /// `compact` step is bounded by, whatever the data.
    pub ops: std::cell::Cell<u64>,
}

/// A set of nodes as a bitmap, cleared word by word after use.
#[derive(Default)]
struct Visited {
    bits: Vec<u64>,
    touched: Vec<u32>,
}

impl Visited {
    fn with_nodes(n: usize) -> Self {
        Self {
            bits: vec![0; n.div_ceil(64)],
            touched: Vec::new(),
        }
    }

    fn reset(&mut self, n: usize) {
        for &word in &self.touched {
            self.bits[word as usize] = 0;
        }
        self.touched.clear();
        if self.bits.len() < n.div_ceil(64) {
            self.bits.resize(n.div_ceil(64), 0);
        }
    }

    /// Marks `node`; true if it was not marked yet.
    #[inline]
    fn insert(&mut self, node: u32) -> bool {
        let (word, bit) = (node as usize / 64, 1u64 << (node % 64));
        let old = self.bits[word];
        if old & bit != 0 {
            return false;
        }
        if old == 0 {
            self.touched.push(word as u32);
        }
        self.bits[word] = old | bit;
        true
    }
}

/// The level of row `row` in a graph seeded with `seed`: geometric with p = 1/M, from integer
/// hashing only (no `ln`, whose last bit may differ between libms).
pub(crate) fn level_of(seed: u64, row: usize) -> u8 {
    let mut h = crate::synthetic::Rng::new(seed ^ (row as u64).wrapping_mul(0xD6E8_FEB8_6659_FD93));
    let mut level = 0;
    while level < MAX_LEVEL && h.next_u64().is_multiple_of(M as u64) {
        level += 1;
    }
    level
}

impl Default for Graph {
    fn default() -> Self {
        Self {
            zero: Blocks::new(M0),
            upper: Vec::new(),
            upper_links: Vec::new(),
            entry: 0,
            top: 0,
        }
    }
}

impl Graph {
    pub fn nodes(&self) -> usize {
        self.zero.rows()
    }

    fn upper_of(&self, node: u32) -> Option<&Upper> {
        self.upper
            .binary_search_by_key(&node, |u| u.node)
            .ok()
            .map(|i| &self.upper[i])
    }

    fn level(&self, node: u32) -> u8 {
        self.upper_of(node).map_or(0, |u| u.level)
    }

    /// Where the link slots of `node` on upper layer `layer` start in `upper_links`.
    fn upper_start(&self, layer: u8, node: u32) -> usize {
        let u = self.upper_of(node).expect("a node on an upper layer");
        debug_assert!(layer >= 1 && layer <= u.level);
        u.offset as usize + (layer as usize - 1) * M
    }

    /// The link slots of `node` on `layer`.
    fn slots(&self, layer: u8, node: u32) -> &[u32] {
        if layer == 0 {
            self.zero.row(node as usize)
        } else {
            &self.upper_links[self.upper_start(layer, node)..][..M]
        }
    }

    fn slots_mut(&mut self, layer: u8, node: u32) -> &mut [u32] {
        if layer == 0 {
            self.zero.row_mut(node as usize)
        } else {
            let start = self.upper_start(layer, node);
            &mut self.upper_links[start..][..M]
        }
    }

    fn links(&self, layer: u8, node: u32) -> impl Iterator<Item = u32> + '_ {
        self.slots(layer, node)
            .iter()
            .copied()
            .take_while(|&link| link != NO_LINK)
    }

    fn set_links(&mut self, layer: u8, node: u32, links: impl Iterator<Item = u32>) {
        let slots = self.slots_mut(layer, node);
        slots.fill(NO_LINK);
        for (slot, link) in slots.iter_mut().zip(links) {
            *slot = link;
        }
    }

    /// Greedy descent on `layer` from `from`: the node reached where no neighbour is better.
    fn greedy(&self, score: &impl Fn(u32) -> f32, layer: u8, mut from: Scored) -> Scored {
        loop {
            let mut moved = false;
            for next in self.links(layer, from.key as u32) {
                let candidate = Scored::new(score(next), next as u64);
                if candidate > from {
                    from = candidate;
                    moved = true;
                }
            }
            if !moved {
                return from;
            }
        }
    }

    /// The best-first search of one layer from `entries`: up to `ef` nodes, best first. Nodes for
    /// which `live` is false are expanded but not returned.
    #[allow(clippy::too_many_arguments)]
    fn search_layer(
        &self,
        score: &impl Fn(u32) -> f32,
        entries: &[Scored],
        ef: usize,
        layer: u8,
        visited: &mut Visited,
        live: &impl Fn(usize) -> bool,
    ) -> Vec<Scored> {
        let mut candidates = BinaryHeap::with_capacity(ef * 2);
        let mut nearest: BinaryHeap<Reverse<Scored>> = BinaryHeap::with_capacity(ef + 1);
        for &entry in entries {
            if visited.insert(entry.key as u32) {
                candidates.push(entry);
                if live(entry.key as usize) {
                    nearest.push(Reverse(entry));
                    if nearest.len() > ef {
                        nearest.pop();
                    }
                }
            }
        }
        while let Some(current) = candidates.pop() {
            if nearest.len() >= ef && current < nearest.peek().expect("ef ≥ 1").0 {
                break;
            }
            for next in self.links(layer, current.key as u32) {
                if !visited.insert(next) {
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
        // Ascending order of `Reverse` is best first.
        nearest
            .into_sorted_vec()
            .into_iter()
            .map(|Reverse(s)| s)
            .collect()
    }

    /// Searches for the nearest nodes by `score` (the query's similarity to a node) with `ef`
    /// candidates on layer 0; results go to `out`.
    pub fn search(
        &self,
        score: impl Fn(u32) -> f32,
        ef: usize,
        live: impl Fn(usize) -> bool,
        mut out: impl FnMut(Scored),
    ) {
        let n = self.nodes();
        if n == 0 {
            return;
        }
        let mut entry = Scored::new(score(self.entry), self.entry as u64);
        for layer in (1..=self.top).rev() {
            entry = self.greedy(&score, layer, entry);
        }
        let mut visited = Visited::with_nodes(n);
        for found in self.search_layer(&score, &[entry], ef, 0, &mut visited, &live) {
            out(found);
        }
    }

    /// Adds node `node` (= the current node count; its code is row `node` of `codes`), whose
    /// vector is `v`, at `level`, linking it with `ef_construction` candidates per layer.
    pub fn insert(
        &mut self,
        codes: Rows<'_>,
        v: &[f32],
        level: u8,
        ef_construction: usize,
        scratch: &mut Scratch,
    ) {
        let node = self.nodes() as u32;

        self.zero.push(std::iter::repeat_n(NO_LINK, M0));
        if level > 0 {
            let offset = self.upper_links.len() as u32;
            self.upper.push(Upper {
                node,
                offset,
                level,
            });
            self.upper_links
                .extend(std::iter::repeat_n(NO_LINK, level as usize * M));
        }
        if node == 0 {
            (self.entry, self.top) = (0, level);
            return;
        }
        let q = codes.query(v);
        // Counted apart from `scratch` (lent out below) and added to it at the end.
        let search_ops = std::cell::Cell::new(0u64);
        let ops = &search_ops;
        let score = |node: u32| {
            ops.set(ops.get() + 1);
            codes.score(q, node as usize)
        };
        let mut entry = Scored::new(score(self.entry), self.entry as u64);
        for layer in (level + 1..=self.top).rev() {
            entry = self.greedy(&score, layer, entry);
        }
        let mut entries = vec![entry];
        for layer in (0..=level.min(self.top)).rev() {
            scratch.visited.reset(self.nodes());
            let found = self.search_layer(
                &score,
                &entries,
                ef_construction,
                layer,
                &mut scratch.visited,
                &|_| true,
            );
            let width = if layer == 0 { M0 } else { M };
            let chosen = select(codes, &found, width, &mut scratch.decoded, &scratch.ops);
            self.set_links(layer, node, chosen.iter().map(|c| c.key as u32));
            for c in &chosen {
                self.link_back(
                    codes,
                    c.key as u32,
                    Scored::new(c.score, node as u64),
                    layer,
                    scratch,
                );
            }
            entries = found;
        }
        if level > self.top {
            (self.entry, self.top) = (node, level);
        }
        scratch.ops.set(scratch.ops.get() + search_ops.get());
    }

    /// Adds `new` (scored against `node`) to `node`'s links on `layer`, shrinking a full list
    /// with the heuristic.
    fn link_back(
        &mut self,
        codes: Rows<'_>,
        node: u32,
        new: Scored,
        layer: u8,
        scratch: &mut Scratch,
    ) {
        let slots = self.slots_mut(layer, node);
        let width = slots.len();
        if let Some(free) = slots.iter_mut().find(|s| **s == NO_LINK) {
            *free = new.key as u32;
            return;
        }
        let mut base = std::mem::take(&mut scratch.base);
        base.resize(codes.dim(), 0.0);
        codes.decode(node as usize, &mut base);
        let q = codes.query(&base);
        let mut candidates: Vec<Scored> = slots
            .iter()
            .map(|&link| Scored::new(codes.score(q, link as usize), link as u64))
            .collect();
        candidates.push(new);
        candidates.sort_by(|a, b| b.cmp(a));
        scratch.ops.set(scratch.ops.get() + 1 + width as u64);
        let chosen = select(
            codes,
            &candidates,
            width,
            &mut scratch.decoded,
            &scratch.ops,
        );
        scratch.base = base;
        self.set_links(layer, node, chosen.iter().map(|c| c.key as u32));
    }

    /// Checks every link of a graph over `n` nodes (a graph read from bytes must never send a
    /// search out of bounds or to a node that is not on the layer).
    pub fn validate(&self, n: usize) -> Result<(), String> {
        if self.zero.rows() != n {
            return Err(format!("{} layer-0 nodes, {n} expected", self.zero.rows()));
        }
        let mut offset = 0usize;
        let mut top = 0;
        for (i, u) in self.upper.iter().enumerate() {
            if i > 0 && u.node <= self.upper[i - 1].node {
                return Err(format!("upper-layer node {} out of order", u.node));
            }
            if u.node as usize >= n || u.level == 0 || u.level > MAX_LEVEL {
                return Err(format!("upper-layer node {} of level {}", u.node, u.level));
            }
            if u.offset as usize != offset {
                return Err(format!(
                    "upper-layer node {} links at {}, not {offset}",
                    u.node, u.offset
                ));
            }
            offset += u.level as usize * M;
            top = top.max(u.level);
        }
        if self.upper_links.len() != offset {
            return Err(format!(
                "{} upper-layer slots, {offset} expected",
                self.upper_links.len()
            ));
        }
        if n > 0 && (self.entry as usize >= n || self.level(self.entry) != top || self.top != top) {
            return Err(format!(
                "entry point {} at level {} is not on the top layer {top}",
                self.entry, self.top
            ));
        }
        if n == 0 && (self.entry, self.top) != (0, 0) {
            return Err("an empty graph has an entry point".into());
        }
        for node in 0..n as u32 {
            for layer in 0..=self.level(node) {
                let slots = self.slots(layer, node);
                let valid = slots.iter().take_while(|&&link| link != NO_LINK).count();
                if slots[valid..].iter().any(|&link| link != NO_LINK) {
                    return Err(format!(
                        "node {node} has a link after an empty slot on layer {layer}"
                    ));
                }
                for &link in &slots[..valid] {
                    if link as usize >= n || self.level(link) < layer {
                        return Err(format!("node {node} links to {link}, beyond layer {layer}"));
                    }
                }
            }
        }
        Ok(())
    }

    /// Heap bytes held by the links.
    pub fn bytes(&self) -> usize {
        self.zero.bytes()
            + self.upper.capacity() * std::mem::size_of::<Upper>()
            + self.upper_links.capacity() * 4
    }
}

/// HNSW's neighbour heuristic over `candidates` (best first, scored against the base node): keep
/// a candidate only if it is more similar to the base than to every candidate kept so far; at most
/// `width`.
fn select(
    codes: Rows<'_>,
    candidates: &[Scored],
    width: usize,
    decoded: &mut Vec<f32>,
    ops: &std::cell::Cell<u64>,
) -> Vec<Scored> {
    if candidates.len() <= width {
        return candidates.to_vec();
    }
    decoded.resize(codes.dim(), 0.0);
    let mut chosen: Vec<Scored> = Vec::with_capacity(width);
    for &c in candidates {
        if chosen.len() == width {
            break;
        }
        codes.decode(c.key as usize, decoded);
        ops.set(ops.get() + 2 + chosen.len() as u64);
        let q = codes.query(decoded);
        if chosen
            .iter()
            .all(|s| codes.score(q, s.key as usize) <= c.score)
        {
            chosen.push(c);
        }
    }
    chosen
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernel::normalize;
    use crate::synthetic::Clusters;

    fn build(n: usize, dim: usize, seed: u64) -> (Codes, Graph, Vec<f32>) {
        let mut data = Clusters::new(dim, 8, seed).sample(n, 1);
        data.chunks_exact_mut(dim).for_each(|v| {
            normalize(v);
        });
        let mut codes = Codes::new(vec![0.0; dim]);
        let mut graph = Graph::default();
        let mut scratch = Scratch::default();
        for (row, v) in data.chunks_exact(dim).enumerate() {
            codes.push(v);
            graph.insert(
                Rows::Codes(&codes),
                v,
                level_of(seed, row),
                40,
                &mut scratch,
            );
        }
        (codes, graph, data)
    }

    #[test]
    fn graph_finds_the_nearest_and_validates() {
        let dim = 32;
        let (codes, graph, data) = build(2000, dim, 3);
        assert_eq!(graph.validate(2000), Ok(()));
        assert!(graph.top >= 1, "2000 nodes reach level 1");
        let mut found = 0;
        for row in (0..2000).step_by(20) {
            let mut got = Vec::new();
            let q = codes.query(&data[row * dim..][..dim]);
            graph.search(
                |node| codes.score(q, node as usize),
                40,
                |_| true,
                |s| got.push(s),
            );
            found += got.iter().any(|s| s.key == row as u64) as usize;
        }
        assert_eq!(found, 100, "every row finds itself");
    }

    #[test]
    fn same_inserts_give_the_same_graph() {
        assert_eq!(build(500, 16, 9).1, build(500, 16, 9).1);
        assert_ne!(build(500, 16, 9).1, build(500, 16, 10).1);
    }

    #[test]
    fn levels_are_geometric_with_p_one_over_m() {
        let above = (0..160_000).filter(|&r| level_of(1, r) >= 1).count();
        assert!(
            (9_000..11_000).contains(&above),
            "{above} of 160000 on level ≥ 1"
        );
    }

    #[test]
    fn validate_rejects_out_of_range_gapped_and_off_layer_links() {
        let (_, graph, _) = build(300, 8, 2);
        assert!(graph.validate(299).is_err());
        let mut bad = graph.clone();
        let (node, gap) = (0..300)
            .find_map(|n| {
                bad.zero.row(n)[..M0 - 1]
                    .iter()
                    .position(|&l| l == NO_LINK)
                    .map(|p| (n, p))
            })
            .unwrap();
        bad.zero.row_mut(node)[gap + 1] = 0;
        assert!(
            bad.validate(300)
                .unwrap_err()
                .contains("after an empty slot")
        );
        let mut bad = graph.clone();
        bad.zero.row_mut(0)[0] = 300;
        assert!(bad.validate(300).unwrap_err().contains("beyond"));
        let mut bad = graph.clone();
        let flat = (0..300u32).find(|&n| bad.level(n) == 0).unwrap();
        bad.upper_links[0] = flat;
        assert!(bad.validate(300).unwrap_err().contains("beyond layer 1"));
    }
}
