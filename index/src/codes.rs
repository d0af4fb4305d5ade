//! The graph's vectors as int8 codes: a quarter of the memory of f32 rows, so that a million
//! 512-d vectors fit a browser tab.
//!
//! A row is stored as its residual from the graph's `mean` (fixed when the graph is first built),
//! scaled into `[-127, 127]` by its own `scale`: `x ≈ mean + scale · code`. CLIP embeddings sit in a
//! narrow cone, so the residual is much shorter than the vector and its codes keep more of what
//! tells neighbours apart. Scores against an f32 query `q` are `q·mean + scale · (q·code)`; with
//! `q·mean` computed once per query, one row costs one f32 × i8 dot product.
//!
//! The quantisation error of one coordinate is at most `scale / 2`, so a score is off by at most
//! `scale / 2 · Σ|q_i|`; for unit 512-d CLIP-like rows that is of the order of 1e-3 (measured in
//! the tests and BENCHMARKS.md).

use crate::kernel::{dot, dot_i8};

#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Codes {
    pub dim: usize,
    pub mean: Vec<f32>,
    pub scales: Vec<f32>,
    pub codes: Blocks<i8>,
}

/// A query prepared for scoring against codes: the vector and its dot product with the mean.
#[derive(Clone, Copy)]
pub(crate) struct Query<'a> {
    pub vector: &'a [f32],
    pub offset: f32,
}

impl Codes {
    pub fn new(mean: Vec<f32>) -> Self {
        Self {
            dim: mean.len(),
            codes: Blocks::new(mean.len()),
            mean,
            scales: Vec::new(),
        }
    }

    /// Room for `extra` more rows' scales (the codes grow block by block, see [`Blocks`]).
    pub fn reserve(&mut self, extra: usize) {
        grow(&mut self.scales, extra);
    }

    /// Appends `v` (a unit vector) and returns its row.
    pub fn push(&mut self, v: &[f32]) -> usize {
        debug_assert_eq!(v.len(), self.dim);
        let max = v
            .iter()
            .zip(&self.mean)
            .fold(0.0f32, |m, (x, mu)| m.max((x - mu).abs()));
        let scale = max / 127.0;
        let inverse = if scale > 0.0 { 1.0 / scale } else { 0.0 };
        self.codes.push(
            v.iter()
                .zip(&self.mean)
                .map(|(x, mu)| ((x - mu) * inverse).round().clamp(-127.0, 127.0) as i8),
        );
        self.scales.push(scale);
        self.scales.len() - 1
    }

    /// Appends row `row` of `other` as it is (same mean: the codes carry over exactly).
    pub fn push_from(&mut self, other: &Codes, row: usize) -> usize {
        debug_assert_eq!(self.mean, other.mean);
        self.codes.push(other.code(row).iter().copied());
        self.scales.push(other.scales[row]);
        self.scales.len() - 1
    }

    pub fn code(&self, row: usize) -> &[i8] {
        self.codes.row(row)
    }

    pub fn query<'a>(&self, vector: &'a [f32]) -> Query<'a> {
        Query {
            vector,
            offset: dot(vector, &self.mean),
        }
    }

    /// The (approximate) dot product of the query with row `row`.
    #[inline]
    pub fn score(&self, q: Query<'_>, row: usize) -> f32 {
        q.offset + self.scales[row] * dot_i8(q.vector, self.code(row))
    }

    /// Row `row` as f32: `mean + scale · code`.
    pub fn decode(&self, row: usize, out: &mut [f32]) {
        let scale = self.scales[row];
        for ((o, mu), c) in out.iter_mut().zip(&self.mean).zip(self.code(row)) {
            *o = mu + scale * *c as f32;
        }
    }

    /// Heap bytes held.
    pub fn bytes(&self) -> usize {
        self.mean.capacity() * 4 + self.scales.capacity() * 4 + self.codes.bytes()
    }
}

/// The vectors a graph is built over: its int8 codes or, while the segment keeps them, its
/// exact f32 rows (`dim` wide), so that graphs up to `Config::f32_limit` are built on exact
/// distances, as hnswlib's and faiss's are.
#[derive(Clone, Copy)]
pub(crate) enum Rows<'a> {
    Codes(&'a Codes),
    Exact(&'a [f32], usize),
}

impl Rows<'_> {
    pub fn dim(&self) -> usize {
        match self {
            Rows::Codes(c) => c.dim,
            Rows::Exact(_, dim) => *dim,
        }
    }

    pub fn query<'q>(&self, vector: &'q [f32]) -> Query<'q> {
        match self {
            Rows::Codes(c) => c.query(vector),
            Rows::Exact(..) => Query {
                vector,
                offset: 0.0,
            },
        }
    }

    #[inline]
    pub fn score(&self, q: Query<'_>, row: usize) -> f32 {
        match self {
            Rows::Codes(c) => c.score(q, row),
            Rows::Exact(rows, dim) => dot(q.vector, &rows[row * dim..][..*dim]),
        }
    }

    pub fn decode(&self, row: usize, out: &mut [f32]) {
        match self {
            Rows::Codes(c) => c.decode(row, out),
            Rows::Exact(rows, dim) => out.copy_from_slice(&rows[row * dim..][..*dim]),
        }
    }
}

/// Rows of `width` items, kept in blocks of [`BLOCK_ROWS`] rows: growing never copies what is
/// there (no doubling, no moment with two copies of a 600 MB array) and leaves at most one
/// block's worth of unused capacity.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Blocks<T> {
    width: usize,
    rows: usize,
    blocks: Vec<Vec<T>>,
}

pub(crate) const BLOCK_ROWS: usize = 1 << 14;

impl<T: Copy> Blocks<T> {
    pub fn new(width: usize) -> Self {
        Self {
            width,
            rows: 0,
            blocks: Vec::new(),
        }
    }

    /// Rows from one flat array of `width`-item rows.
    pub fn from_flat(flat: &[T], width: usize) -> Self {
        let mut blocks = Self::new(width);
        for row in flat.chunks_exact(width) {
            blocks.push(row.iter().copied());
        }
        blocks
    }

    pub fn rows(&self) -> usize {
        self.rows
    }

    #[inline]
    pub fn row(&self, row: usize) -> &[T] {
        &self.blocks[row / BLOCK_ROWS][(row % BLOCK_ROWS) * self.width..][..self.width]
    }

    #[inline]
    pub fn row_mut(&mut self, row: usize) -> &mut [T] {
        &mut self.blocks[row / BLOCK_ROWS][(row % BLOCK_ROWS) * self.width..][..self.width]
    }

    /// Appends a row of exactly `width` items.
    pub fn push(&mut self, row: impl IntoIterator<Item = T>) {
        if self.rows.is_multiple_of(BLOCK_ROWS) {
            self.blocks.push(Vec::new());
        }
        let block = self.blocks.last_mut().expect("a block");
        if block.capacity() == block.len() {
            // Doubling within a block (small collections stay small), never past it.
            let full = BLOCK_ROWS * self.width;
            block.reserve_exact(block.len().max(64 * self.width).min(full - block.len()));
        }
        let before = block.len();
        block.extend(row);
        debug_assert_eq!(block.len() - before, self.width);
        self.rows += 1;
    }

    /// Every item, row after row.
    pub fn iter(&self) -> impl Iterator<Item = &T> {
        self.blocks.iter().flatten()
    }

    /// Heap bytes held.
    pub fn bytes(&self) -> usize {
        self.blocks.iter().map(|b| b.capacity()).sum::<usize>() * std::mem::size_of::<T>()
            + self.blocks.capacity() * std::mem::size_of::<Vec<T>>()
    }
}

/// Makes room for `extra` more items, growing by at least an eighth of the length.
pub(crate) fn grow<T>(v: &mut Vec<T>, extra: usize) {
    if v.capacity() - v.len() < extra {
        v.reserve_exact(extra.max(v.len() / 8));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernel::normalize;
    use crate::synthetic::Clusters;

    #[test]
    fn scores_are_within_the_quantisation_bound() {
        let dim = 512;
        let mut data = Clusters::new(dim, 20, 3).sample(400, 4);
        data.chunks_exact_mut(dim).for_each(|v| {
            normalize(v);
        });
        let mut mean = vec![0.0f32; dim];
        for v in data.chunks_exact(dim) {
            mean.iter_mut().zip(v).for_each(|(m, x)| *m += x / 400.0);
        }
        let mut codes = Codes::new(mean);
        for v in data.chunks_exact(dim) {
            codes.push(v);
        }
        let mut worst: f32 = 0.0;
        let mut decoded = vec![0.0; dim];
        for (i, q) in data.chunks_exact(dim).step_by(7).enumerate() {
            let query = codes.query(q);
            for (row, v) in data.chunks_exact(dim).enumerate() {
                let exact = dot(q, v);
                let got = codes.score(query, row);
                let bound = codes.scales[row] / 2.0 * q.iter().map(|x| x.abs()).sum::<f32>();
                assert!(
                    (got - exact).abs() <= bound + 1e-5,
                    "query {i} row {row}: {got} vs {exact}"
                );
                worst = worst.max((got - exact).abs());
            }
            codes.decode(i, &mut decoded);
            let err = decoded
                .iter()
                .zip(&data[i * dim..][..dim])
                .map(|(a, b)| (a - b).abs());
            assert!(err.fold(0.0, f32::max) <= codes.scales[i] / 2.0 + 1e-6);
        }
        assert!(worst < 2e-3, "worst score error {worst}");
    }
}
