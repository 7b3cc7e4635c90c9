//! Conventions for key values that every stage must apply the same way: how concentrations are
//! matched and what a plate's batch is.

/// Concentrations are matched as numbers (`0.003000` in BBBC021's image table is `0.003` in its
/// MoA table), at a resolution of 1e-6 µM: this is the integer key to compare.
pub fn concentration_key(concentration: f64) -> i64 {
    (concentration * 1e6).round() as i64
}

/// The batch of a plate: the part of its name before the first `_` (`Week4_27481` → `Week4`),
/// or the whole name when it has none. This is the NSCB hold-out key for BBBC021.
pub fn batch_of_plate(plate: &str) -> String {
    plate.split('_').next().unwrap_or(plate).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_follow_the_bbbc021_conventions() {
        assert_eq!(concentration_key(0.003000), concentration_key(0.003));
        assert_ne!(concentration_key(0.003), concentration_key(0.03));
        assert_eq!(batch_of_plate("Week4_27481"), "Week4");
        assert_eq!(batch_of_plate("P1"), "P1");
    }
}
