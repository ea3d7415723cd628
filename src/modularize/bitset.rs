//! Fixed-length bitsets: genomes (one bit per kernel group) and kernel sets (one bit per kept
//! kernel), with popcount-based set operations.

use serde::{Deserialize, Serialize};

/// A set of bit positions `0..len`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "BitsData")]
pub struct Bits {
    len: usize,
    words: Vec<u64>,
}

/// [`Bits`] as read from a file, checked before use.
#[derive(Deserialize)]
struct BitsData {
    len: usize,
    words: Vec<u64>,
}

impl TryFrom<BitsData> for Bits {
    type Error = String;

    fn try_from(d: BitsData) -> std::result::Result<Self, String> {
        if d.words.len() != d.len.div_ceil(64) {
            return Err(format!(
                "a bitset of {} bits needs {} words, not {}",
                d.len,
                d.len.div_ceil(64),
                d.words.len()
            ));
        }
        let spare = d.words.len() * 64 - d.len;
        if spare > 0 && d.words.last().is_some_and(|w| w >> (64 - spare) != 0) {
            return Err(format!("a bitset of {} bits has bits set beyond its length", d.len));
        }
        Ok(Bits { len: d.len, words: d.words })
    }
}

impl Bits {
    /// All bits clear.
    pub fn zeros(len: usize) -> Self {
        Bits { len, words: vec![0; len.div_ceil(64)] }
    }

    /// Number of positions.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether there are no positions.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Bit `i`.
    pub fn get(&self, i: usize) -> bool {
        debug_assert!(i < self.len);
        self.words[i / 64] >> (i % 64) & 1 == 1
    }

    /// Sets bit `i` to `value`.
    pub fn set(&mut self, i: usize, value: bool) {
        debug_assert!(i < self.len);
        let mask = 1u64 << (i % 64);
        if value {
            self.words[i / 64] |= mask;
        } else {
            self.words[i / 64] &= !mask;
        }
    }

    /// Number of set bits.
    pub fn count(&self) -> usize {
        self.words.iter().map(|w| w.count_ones() as usize).sum()
    }

    /// `|self ∩ other|`.
    pub fn intersection_count(&self, other: &Bits) -> usize {
        self.words.iter().zip(&other.words).map(|(a, b)| (a & b).count_ones() as usize).sum()
    }

    /// `|self ∪ other|`.
    pub fn union_count(&self, other: &Bits) -> usize {
        self.words.iter().zip(&other.words).map(|(a, b)| (a | b).count_ones() as usize).sum()
    }

    /// Jaccard distance `1 − |A ∩ B| / |A ∪ B|` (0 for two empty sets).
    pub fn jaccard_distance(&self, other: &Bits) -> f64 {
        let union = self.union_count(other);
        if union == 0 { 0.0 } else { 1.0 - self.intersection_count(other) as f64 / union as f64 }
    }

    /// Positions of the set bits, ascending.
    pub fn ones(&self) -> impl Iterator<Item = usize> + '_ {
        (0..self.len).filter(|&i| self.get(i))
    }

    /// The raw words (for keys and files).
    pub fn words(&self) -> &[u64] {
        &self.words
    }
}

/// Mean pairwise Jaccard distance of `sets` (0 with fewer than two).
pub fn mean_pairwise_distance(sets: &[&Bits]) -> f64 {
    let n = sets.len();
    if n < 2 {
        return 0.0;
    }
    let mut sum = 0.0;
    for i in 0..n {
        for j in i + 1..n {
            sum += sets[i].jaccard_distance(sets[j]);
        }
    }
    sum / (n * (n - 1) / 2) as f64
}
