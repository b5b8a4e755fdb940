//! Sets of byte ranges: what is on disk.

use serde::{Deserialize, Serialize};

/// Disjoint, sorted, merged half-open ranges `[start, end)`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RangeSet(Vec<(u64, u64)>);

impl RangeSet {
    /// Adds `[start, end)`, merging with neighbours.
    pub fn insert(&mut self, start: u64, end: u64) {
        if start >= end {
            return;
        }
        let mut merged = (start, end);
        let mut out = Vec::with_capacity(self.0.len() + 1);
        let mut placed = false;
        for &(s, e) in &self.0 {
            if e < merged.0 {
                out.push((s, e));
            } else if s > merged.1 {
                if !placed {
                    out.push(merged);
                    placed = true;
                }
                out.push((s, e));
            } else {
                merged = (merged.0.min(s), merged.1.max(e));
            }
        }
        if !placed {
            out.push(merged);
        }
        self.0 = out;
    }

    /// The bytes covered.
    pub fn covered(&self) -> u64 {
        self.0.iter().map(|(s, e)| e - s).sum()
    }

    /// How far from 0 the ranges cover without a gap.
    pub fn contiguous_prefix(&self) -> u64 {
        match self.0.first() {
            Some(&(0, e)) => e,
            _ => 0,
        }
    }

    /// The gaps of `[0, total)` not covered.
    pub fn missing(&self, total: u64) -> Vec<(u64, u64)> {
        let mut out = Vec::new();
        let mut at = 0;
        for &(s, e) in &self.0 {
            if s >= total {
                break;
            }
            if s > at {
                out.push((at, s));
            }
            at = at.max(e);
        }
        if at < total {
            out.push((at, total));
        }
        out
    }

    /// Keeps only what lies in `[0, total)`; anything else is from another file.
    pub fn is_within(&self, total: u64) -> bool {
        self.0.iter().all(|&(s, e)| s < e && e <= total)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merges_and_gaps() {
        let mut r = RangeSet::default();
        r.insert(10, 20);
        r.insert(30, 40);
        r.insert(20, 25);
        assert_eq!(r.0, vec![(10, 25), (30, 40)]);
        assert_eq!(r.missing(50), vec![(0, 10), (25, 30), (40, 50)]);
        assert_eq!(r.contiguous_prefix(), 0);
        r.insert(0, 35);
        assert_eq!(r.0, vec![(0, 40)]);
        assert_eq!(r.contiguous_prefix(), 40);
        assert_eq!(r.covered(), 40);
        assert_eq!(r.missing(40), vec![]);
        r.insert(5, 5);
        assert_eq!(r.0, vec![(0, 40)]);
        assert!(r.is_within(40) && !r.is_within(39));
    }
}
