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

/// Parses a `--shard I/N` value (0 ≤ I < N).
pub fn parse_shard(text: &str) -> Result<(usize, usize), String> {
    let parsed = text
        .split_once('/')
        .and_then(|(index, count)| Some((index.trim().parse().ok()?, count.trim().parse().ok()?)));
    match parsed {
        Some((index, count)) if count > 0 && index < count => Ok((index, count)),
        _ => Err(format!(
            "--shard {text}: expected I/N with 0 ≤ I < N, e.g. 0/4"
        )),
    }
}

/// The most worker threads any stage starts (a typo such as `--threads 100000` would otherwise
/// spawn that many).
pub const MAX_THREADS: usize = 1024;

/// Parses `--threads`: 0 (where a stage accepts it: all cores) up to [`MAX_THREADS`].
pub fn parse_threads(text: &str) -> Result<usize, String> {
    match text.trim().parse::<usize>() {
        Ok(threads) if threads <= MAX_THREADS => Ok(threads),
        _ => Err(format!(
            "`{text}`: expected a number of threads from 0 to {MAX_THREADS}"
        )),
    }
}

/// Parses a finite number ≥ 0 (a sigma, a ridge: NaN or a negative would give NaN or nonsense
/// without a word).
pub fn parse_non_negative<T>(text: &str) -> Result<T, String>
where
    T: std::str::FromStr + Into<f64> + Copy,
{
    match text.trim().parse::<T>() {
        Ok(value) if value.into().is_finite() && value.into() >= 0.0 => Ok(value),
        _ => Err(format!("`{text}`: expected a finite number ≥ 0")),
    }
}

/// Parses a finite number > 0.
pub fn parse_positive<T>(text: &str) -> Result<T, String>
where
    T: std::str::FromStr + Into<f64> + Copy,
{
    match text.trim().parse::<T>() {
        Ok(value) if value.into().is_finite() && value.into() > 0.0 => Ok(value),
        _ => Err(format!("`{text}`: expected a finite number > 0")),
    }
}

/// Shard `index` of `count` of a set of plates: the plates whose position in sorted order is
/// `index` modulo `count`. Whole plates, so every stage shards a screen the same way and
/// per-well work never spans shards.
pub fn shard_plates<'a>(
    plates: impl IntoIterator<Item = &'a str>,
    (index, count): (usize, usize),
) -> Vec<String> {
    let sorted: std::collections::BTreeSet<&str> = plates.into_iter().collect();
    sorted
        .into_iter()
        .enumerate()
        .filter(|(position, _)| position % count == index)
        .map(|(_, plate)| plate.to_string())
        .collect()
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
        assert_eq!(parse_shard("1/4"), Ok((1, 4)));
        assert!(parse_shard("4/4").is_err() && parse_shard("x").is_err());
        assert_eq!(shard_plates(["c", "a", "b", "a"], (1, 2)), ["b"]);
    }
}
