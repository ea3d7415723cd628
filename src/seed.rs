//! Seed mixing: every random draw of the tool comes from an explicit seed and an index through
//! [`mix_seed`], so that results do not depend on the order or the thread they are drawn in.

/// SplitMix64: decorrelates seeds derived from (seed, index).
pub fn mix_seed(seed: u64, index: u64) -> u64 {
    let mut z = seed ^ index.wrapping_mul(0x9E37_79B9_7F4A_7C15).wrapping_add(0xD1B5_4A32_D192_ED03);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}
