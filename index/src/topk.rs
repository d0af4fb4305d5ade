//! Keeping the best `k` of a stream of scored items.

use std::cmp::{Ordering, Reverse};
use std::collections::BinaryHeap;

/// A score and what it belongs to (a row number or a caller's id). Ordered by score, higher is
/// greater; equal scores order the smaller key as greater, so results are deterministic.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Scored {
    pub score: f32,
    pub key: u64,
}

impl Scored {
    pub fn new(score: f32, key: u64) -> Self {
        Self { score, key }
    }
}

impl Ord for Scored {
    fn cmp(&self, other: &Self) -> Ordering {
        self.score
            .total_cmp(&other.score)
            .then_with(|| other.key.cmp(&self.key))
    }
}

impl PartialOrd for Scored {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl PartialEq for Scored {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}

impl Eq for Scored {}

/// The `k` greatest items pushed so far.
pub(crate) struct TopK {
    k: usize,
    heap: BinaryHeap<Reverse<Scored>>,
}

impl TopK {
    pub fn new(k: usize) -> Self {
        Self {
            k,
            heap: BinaryHeap::with_capacity(k + 1),
        }
    }

    #[inline]
    pub fn push(&mut self, item: Scored) {
        if self.heap.len() < self.k {
            self.heap.push(Reverse(item));
        } else if let Some(mut worst) = self.heap.peek_mut()
            && item > worst.0
        {
            *worst = Reverse(item);
        }
    }

    /// Best first.
    pub fn into_sorted(self) -> Vec<Scored> {
        // Ascending order of `Reverse` is descending order of the items.
        self.heap
            .into_sorted_vec()
            .into_iter()
            .map(|Reverse(s)| s)
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_the_best_k_best_first_with_ties_by_key() {
        let mut top = TopK::new(3);
        for (score, key) in [(0.1, 1), (0.9, 2), (0.5, 3), (0.9, 0), (0.2, 4), (0.5, 5)] {
            top.push(Scored::new(score, key));
        }
        let got: Vec<(f32, u64)> = top.into_sorted().iter().map(|s| (s.score, s.key)).collect();
        assert_eq!(got, vec![(0.9, 0), (0.9, 2), (0.5, 3)]);
        assert!(TopK::new(0).into_sorted().is_empty());
    }
}
