//! A small deterministic random number generator (xoshiro256++ seeded through SplitMix64) and
//! the few distributions the generator needs. Every random stream is derived from the run's seed
//! and a name (a compound, a week, a field), so the output does not depend on thread scheduling.

/// xoshiro256++ (Blackman and Vigna): fast, small state, good statistical quality.
#[derive(Debug, Clone)]
pub struct Rng {
    state: [u64; 4],
}

fn splitmix64(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// FNV-1a of a string: names random streams.
pub fn hash_name(name: &str) -> u64 {
    name.bytes().fold(0xcbf2_9ce4_8422_2325u64, |hash, byte| {
        (hash ^ u64::from(byte)).wrapping_mul(0x0000_0100_0000_01B3)
    })
}

impl Rng {
    pub fn new(seed: u64) -> Self {
        let mut mixer = seed;
        Self {
            state: [
                splitmix64(&mut mixer),
                splitmix64(&mut mixer),
                splitmix64(&mut mixer),
                splitmix64(&mut mixer),
            ],
        }
    }

    /// The stream for `name` under `seed`.
    pub fn for_name(seed: u64, name: &str) -> Self {
        Self::new(seed ^ hash_name(name).rotate_left(17))
    }

    pub fn next_u64(&mut self) -> u64 {
        let [s0, s1, s2, s3] = &mut self.state;
        let result = s0.wrapping_add(*s3).rotate_left(23).wrapping_add(*s0);
        let t = *s1 << 17;
        *s2 ^= *s0;
        *s3 ^= *s1;
        *s1 ^= *s2;
        *s0 ^= *s3;
        *s2 ^= t;
        *s3 = s3.rotate_left(45);
        result
    }

    /// Uniform in [0, 1).
    pub fn uniform(&mut self) -> f32 {
        (self.next_u64() >> 40) as f32 / (1u64 << 24) as f32
    }

    /// Uniform in [low, high).
    pub fn range(&mut self, low: f32, high: f32) -> f32 {
        low + (high - low) * self.uniform()
    }

    /// Uniform integer in [0, n).
    pub fn below(&mut self, n: usize) -> usize {
        (((self.next_u64() >> 32) * n as u64) >> 32) as usize
    }

    /// Standard normal (Box–Muller).
    pub fn normal(&mut self) -> f32 {
        let u1 = (self.uniform()).max(1e-7);
        let u2 = self.uniform();
        (-2.0 * u1.ln()).sqrt() * (std::f32::consts::TAU * u2).cos()
    }

    /// exp(N(0, sigma²)): a multiplicative jitter around 1.
    pub fn log_normal(&mut self, sigma: f32) -> f32 {
        (sigma * self.normal()).exp()
    }

    pub fn chance(&mut self, probability: f32) -> bool {
        self.uniform() < probability
    }

    /// Poisson-distributed count (Knuth's method; means here are small).
    pub fn poisson(&mut self, mean: f32) -> usize {
        if mean > 30.0 {
            return (mean + mean.sqrt() * self.normal()).round().max(0.0) as usize;
        }
        let limit = (-mean).exp();
        let (mut count, mut product) = (0usize, self.uniform());
        while product > limit {
            count += 1;
            product *= self.uniform();
        }
        count
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn streams_are_reproducible_and_distinct() {
        let a: Vec<u64> = (0..4)
            .map(|_| Rng::for_name(1, "taxol").next_u64())
            .collect();
        assert!(a.windows(2).all(|pair| pair[0] == pair[1]));
        assert_ne!(
            Rng::for_name(1, "taxol").next_u64(),
            Rng::for_name(1, "DMSO").next_u64()
        );
        assert_ne!(
            Rng::for_name(1, "taxol").next_u64(),
            Rng::for_name(2, "taxol").next_u64()
        );
    }

    #[test]
    fn distributions_have_the_right_moments() {
        let mut rng = Rng::new(3);
        let n = 20_000;
        let normals: Vec<f32> = (0..n).map(|_| rng.normal()).collect();
        let mean = normals.iter().sum::<f32>() / n as f32;
        let variance = normals.iter().map(|x| (x - mean).powi(2)).sum::<f32>() / n as f32;
        assert!(
            mean.abs() < 0.03 && (variance - 1.0).abs() < 0.05,
            "{mean} {variance}"
        );
        let counts: Vec<usize> = (0..n).map(|_| rng.poisson(4.0)).collect();
        let mean = counts.iter().sum::<usize>() as f32 / n as f32;
        assert!((mean - 4.0).abs() < 0.1, "{mean}");
        assert!((0..1000).all(|_| rng.below(7) < 7));
    }
}
