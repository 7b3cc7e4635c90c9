//! The sizes of the DTU reading of the seed architecture, derived from the input shape: shared by
//! pf-train, which builds the networks in libtorch, and pf-export, which writes the same networks
//! as ONNX, so the two can never disagree on a kernel or an upsampling target.

/// Channels of every hidden convolution.
pub const HIDDEN_CHANNELS: i64 = 32;
/// Kernel size of every encoder, decoder and discriminator convolution but the heads.
pub const KERNEL: i64 = 5;
/// Slope of every LeakyReLU.
pub const LEAKY_SLOPE: f64 = 0.01;
/// Batch-norm epsilon (PyTorch's default, as the seed code).
pub const BATCH_NORM_EPSILON: f64 = 1e-5;

/// Spatial size after each of the three encoder blocks (conv k5 valid, then pool 2) along one axis.
pub fn encoder_sizes(size: i64) -> [i64; 3] {
    let first = (size - (KERNEL - 1)) / 2;
    let second = (first - (KERNEL - 1)) / 2;
    let third = (second - (KERNEL - 1)) / 2;
    [first, second, third]
}

/// Fails for inputs too small for three valid 5×5 convolutions each followed by 2×2 pooling.
pub fn check(height: i64, width: i64) -> Result<(), String> {
    for (name, size) in [("height", height), ("width", width)] {
        let sizes = encoder_sizes(size);
        if sizes[2] < 1 || sizes[1] - (KERNEL - 1) < 1 {
            return Err(format!(
                "cells of {name} {size} are too small for the encoder (three 5×5 valid \
                 convolutions each followed by 2×2 pooling need at least 36 pixels)"
            ));
        }
    }
    Ok(())
}

/// The kernel of the encoder's last convolution: whatever is left after three blocks.
pub fn head_kernel(height: i64, width: i64) -> [i64; 2] {
    [encoder_sizes(height)[2], encoder_sizes(width)[2]]
}

/// The sizes the decoder upsamples to after its first three blocks (each block's 5×5 convolution
/// with padding 4 then grows the map by 4, back to the encoder's sizes).
pub fn upsample_targets(height: i64, width: i64) -> [[i64; 2]; 3] {
    let [h1, h2, _] = encoder_sizes(height);
    let [w1, w2, _] = encoder_sizes(width);
    let shrink = KERNEL - 1;
    [
        [h2 - shrink, w2 - shrink],
        [h1 - shrink, w1 - shrink],
        [height - shrink, width - shrink],
    ]
}

/// What a sparse model's profile multiplies μ by: the expectation of its spike selector s, so the
/// profile μ·E[s] is E[z], the mean of the latent the model was trained to decode (the seed takes
/// the mean of sampled z over a well's cells, which converges to the same).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum SpikeExpectation {
    /// The VSC reference: s = sigmoid(c·(η + γ − 1)), η ~ U(0, 1), γ = exp(min(log γ, 0)):
    /// E[s] = (softplus(c·γ) − softplus(c·(γ − 1))) / c, at the temperature c of the last
    /// epoch (→ γ as c grows).
    Vsc { temperature: f64 },
    /// The seed code: s = sigmoid(exp(log γ) + η − 1), η ~ N(0, 1), log γ uncapped:
    /// E[s] = Σᵢ wᵢ · sigmoid(exp(log γ) − 1 + √2·xᵢ) / √π over the Gauss–Hermite rule of
    /// [`GAUSS_HERMITE_NODES`] nodes (≈ sigmoid((γ − 1)/1.18); 0.30 at γ = 0, not 0).
    Dtu,
}

/// Nodes of the Gauss–Hermite rule behind [`SpikeExpectation::Dtu`] (its error on a sigmoid is
/// below 1e-7).
pub const GAUSS_HERMITE_NODES: usize = 24;

/// The `n`-node Gauss–Hermite rule (weight e^(−x²)): nodes xᵢ and weights wᵢ, by Newton's
/// method on the orthonormal Hermite recurrence (Numerical Recipes' `gauher`).
pub fn gauss_hermite(n: usize) -> (Vec<f64>, Vec<f64>) {
    let pi_to_minus_quarter = std::f64::consts::PI.powf(-0.25);
    let (mut x, mut w) = (vec![0.0; n], vec![0.0; n]);
    let nf = n as f64;
    let mut z = 0.0f64;
    for i in 0..n.div_ceil(2) {
        z = match i {
            0 => (2.0 * nf + 1.0).sqrt() - 1.85575 * (2.0 * nf + 1.0).powf(-0.16667),
            1 => z - 1.14 * nf.powf(0.426) / z,
            2 => 1.86 * z - 0.86 * x[0],
            3 => 1.91 * z - 0.91 * x[1],
            _ => 2.0 * z - x[i - 2],
        };
        let mut derivative = 1.0;
        for _ in 0..100 {
            let (mut p1, mut p2) = (pi_to_minus_quarter, 0.0);
            for j in 0..n {
                let p3 = p2;
                p2 = p1;
                let jf = j as f64;
                p1 = z * (2.0 / (jf + 1.0)).sqrt() * p2 - (jf / (jf + 1.0)).sqrt() * p3;
            }
            derivative = (2.0 * nf).sqrt() * p2;
            let previous = z;
            z = previous - p1 / derivative;
            if (z - previous).abs() <= 1e-14 {
                break;
            }
        }
        x[i] = z;
        x[n - 1 - i] = -z;
        w[i] = 2.0 / (derivative * derivative);
        w[n - 1 - i] = w[i];
    }
    (x, w)
}

/// The rule as an expectation over η ~ N(0, 1): E[f(η)] ≈ Σ weightᵢ · f(nodeᵢ), with
/// nodeᵢ = √2·xᵢ and weightᵢ = wᵢ/√π (the weights sum to 1).
pub fn standard_normal_rule() -> (Vec<f64>, Vec<f64>) {
    let (x, w) = gauss_hermite(GAUSS_HERMITE_NODES);
    let root_pi = std::f64::consts::PI.sqrt();
    (
        x.iter().map(|x| std::f64::consts::SQRT_2 * x).collect(),
        w.iter().map(|w| w / root_pi).collect(),
    )
}

/// E[s] of [`SpikeExpectation`] for one raw (uncapped) log γ, in f64: the reference the tensor
/// and ONNX versions are tested against.
pub fn spike_expectation(expectation: SpikeExpectation, log_gamma: f64) -> f64 {
    let sigmoid = |v: f64| 1.0 / (1.0 + (-v).exp());
    let softplus = |v: f64| v.max(0.0) + (-v.abs()).exp().ln_1p();
    match expectation {
        SpikeExpectation::Vsc { temperature: c } => {
            let gamma = log_gamma.min(0.0).exp();
            (softplus(c * gamma) - softplus(c * (gamma - 1.0))) / c
        }
        SpikeExpectation::Dtu => {
            let (nodes, weights) = standard_normal_rule();
            let gamma = log_gamma.exp();
            nodes
                .iter()
                .zip(&weights)
                .map(|(node, weight)| weight * sigmoid(gamma - 1.0 + node))
                .sum()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_of_the_seed_input() {
        assert_eq!(encoder_sizes(68), [32, 14, 5]);
        assert_eq!(head_kernel(68, 68), [5, 5]);
        assert_eq!(upsample_targets(68, 68), [[10, 10], [28, 28], [64, 64]]);
        assert!(check(68, 68).is_ok());
        assert!(check(30, 68).unwrap_err().contains("height 30"));
    }

    #[test]
    fn gauss_hermite_integrates_the_normal_moments() {
        let (nodes, weights) = standard_normal_rule();
        let moment =
            |k: i32| -> f64 { nodes.iter().zip(&weights).map(|(x, w)| w * x.powi(k)).sum() };
        assert!((moment(0) - 1.0).abs() < 1e-12);
        assert!(moment(1).abs() < 1e-12);
        assert!((moment(2) - 1.0).abs() < 1e-12);
        assert!((moment(4) - 3.0).abs() < 1e-10);
        assert!((moment(6) - 15.0).abs() < 1e-9);
    }

    #[test]
    fn spike_expectations_equal_direct_integration() {
        // E[sigmoid(a + η)], η ~ N(0,1), by the trapezoid rule on [−12, 12].
        let direct = |a: f64| {
            let steps = 200_000;
            let h = 24.0 / steps as f64;
            (0..=steps)
                .map(|i| {
                    let eta = -12.0 + i as f64 * h;
                    let f = (-0.5 * eta * eta).exp()
                        / (2.0 * std::f64::consts::PI).sqrt()
                        / (1.0 + (-(a + eta)).exp());
                    if i == 0 || i == steps {
                        0.5 * f * h
                    } else {
                        f * h
                    }
                })
                .sum::<f64>()
        };
        for log_gamma in [-20.0f64, -3.0, -1.0, 0.0, 0.5, 2.0] {
            let ours = spike_expectation(SpikeExpectation::Dtu, log_gamma);
            let expected = direct(log_gamma.exp() - 1.0);
            assert!(
                (ours - expected).abs() < 1e-7,
                "{log_gamma}: {ours} vs {expected}"
            );
        }
        // sigmoid(−1 + η) averages 0.30, as the sigmoid((γ − 1)/1.18) says at γ = 0.
        assert!((spike_expectation(SpikeExpectation::Dtu, -30.0) - 0.3).abs() < 0.01);
        // VSC: E over η ~ U(0,1), by the midpoint rule.
        for (c, log_gamma) in [(50.0, -0.7f64), (5.0, -0.1), (50.0, 0.3), (1.0, -5.0)] {
            let gamma = log_gamma.min(0.0).exp();
            let steps = 100_000;
            let direct: f64 = (0..steps)
                .map(|i| {
                    let eta = (i as f64 + 0.5) / steps as f64;
                    1.0 / (1.0 + (-c * (eta + gamma - 1.0)).exp()) / steps as f64
                })
                .sum();
            let ours = spike_expectation(SpikeExpectation::Vsc { temperature: c }, log_gamma);
            assert!(
                (ours - direct).abs() < 1e-7,
                "{c} {log_gamma}: {ours} vs {direct}"
            );
        }
    }
}
