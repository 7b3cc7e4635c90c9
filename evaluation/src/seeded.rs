//! Seeded shuffles shared by every stage that splits or orders data (pf-train, pf-baseline): a
//! splitmix64 stream, kept out of any library's global generator so that nothing else drawing
//! random numbers can shift a split.

/// A seeded permutation of `0..n` (Fisher–Yates over a splitmix64 stream).
pub fn seeded_permutation(n: usize, seed: u64) -> Vec<i64> {
    let mut order: Vec<i64> = (0..n as i64).collect();
    let mut counter = seed;
    for last in (1..n).rev() {
        counter = counter.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let pick = (mix64(counter) % (last as u64 + 1)) as usize;
        order.swap(last, pick);
    }
    order
}

/// splitmix64's output function.
pub fn mix64(mut x: u64) -> u64 {
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^ (x >> 31)
}

/// A 63-bit mix of a run's seed and a stream number (epoch, split, ...), so every use draws its
/// own reproducible numbers.
pub fn derive_seed(seed: u64, stream: u64) -> u64 {
    mix64(seed ^ stream.wrapping_mul(0x9E37_79B9_7F4A_7C15)) & (i64::MAX as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn permutation_is_seeded_and_complete() {
        let a = seeded_permutation(50, 3);
        assert_eq!(a, seeded_permutation(50, 3));
        assert_ne!(a, seeded_permutation(50, 4));
        let mut sorted = a.clone();
        sorted.sort_unstable();
        assert_eq!(sorted, (0..50).collect::<Vec<_>>());
    }
}
