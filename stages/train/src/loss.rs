//! The loss terms of the seed code (models.md B.2–B.3), each a per-image sum averaged over the
//! batch, so that their sizes are comparable with the seed's logs.

use tch::{Kind, Reduction, Tensor};

/// Σ over (C,H,W) of (x̂ − x)², averaged over the batch (the seed's p-norm 2 image loss).
pub fn reconstruction(reconstruction: &Tensor, images: &Tensor) -> Tensor {
    (reconstruction - images)
        .square()
        .sum_dim_intlist([1i64, 2, 3].as_slice(), false, Kind::Float)
        .mean(Kind::Float)
}

/// KL(N(μ, σ²) ‖ N(0, 1)) summed over the latent dimensions, averaged over the batch, with
/// σ = exp(log σ).
pub fn gaussian_kl(mu: &Tensor, log_sigma: &Tensor) -> Tensor {
    let per_dimension = (log_sigma * 2.0 + 1.0) - mu.square() - (log_sigma * 2.0).exp();
    (per_dimension.sum_dim_intlist(1i64, false, Kind::Float) * -0.5).mean(Kind::Float)
}

/// KL of the spike-and-slab posterior from the prior α·N(0,1) + (1−α)·δ₀ (Tonolini et al., as
/// both seed implementations write it), with γ = exp(log γ) clamped to [1e−6, 1 − 1e−6].
pub fn spike_and_slab_kl(
    mu: &Tensor,
    log_sigma: &Tensor,
    log_gamma: &Tensor,
    alpha: f64,
) -> Tensor {
    let gamma = log_gamma.exp().clamp(1e-6, 1.0 - 1e-6);
    let slab = ((log_sigma * 2.0 + 1.0) - mu.square() - (log_sigma * 2.0).exp()) * &gamma * -0.5;
    let one_minus_gamma = gamma.ones_like() - &gamma;
    let spike = &one_minus_gamma * (&one_minus_gamma / (1.0 - alpha)).log()
        + &gamma * (&gamma / alpha).log();
    (slab + spike)
        .sum_dim_intlist(1i64, false, Kind::Float)
        .mean(Kind::Float)
}

/// Σ over the discriminator's features of (D(x̂) − D(x))², averaged over the batch.
pub fn feature_matching(fake_features: &Tensor, real_features: &Tensor) -> Tensor {
    (fake_features - real_features)
        .square()
        .sum_dim_intlist(1i64, false, Kind::Float)
        .mean(Kind::Float)
}

/// Binary cross-entropy of the discriminator: real images labelled 1, reconstructions 0, averaged
/// over the 2B images (on clamped logits, as sigmoid then log would be).
pub fn discriminator(real_logits: &Tensor, fake_logits: &Tensor) -> Tensor {
    let logits = Tensor::cat(&[real_logits, fake_logits], 0);
    let targets = Tensor::cat(&[real_logits.ones_like(), fake_logits.zeros_like()], 0);
    logits.binary_cross_entropy_with_logits::<Tensor>(&targets, None, None, Reduction::Mean)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::Device;

    fn tensor(values: &[f32], shape: [i64; 2]) -> Tensor {
        Tensor::from_slice(values).view(shape)
    }

    #[test]
    fn gaussian_kl_equals_its_closed_form() {
        // Two images, two dimensions: KL = ½ Σ (σ² + μ² − 1 − ln σ²), averaged over images.
        let mu = tensor(&[0.5, -1.0, 0.0, 2.0], [2, 2]);
        let log_sigma = tensor(&[0.0, 0.3, -0.7, 0.1], [2, 2]);
        let closed_form = |m: f64, ls: f64| 0.5 * ((2.0 * ls).exp() + m * m - 1.0 - 2.0 * ls);
        let expected = (closed_form(0.5, 0.0)
            + closed_form(-1.0, 0.3)
            + closed_form(0.0, -0.7)
            + closed_form(2.0, 0.1))
            / 2.0;
        let value = gaussian_kl(&mu, &log_sigma).double_value(&[]);
        assert!((value - expected).abs() < 1e-5, "{value} vs {expected}");
        // The standard normal posterior has no divergence.
        let zero = gaussian_kl(
            &Tensor::zeros([3, 4], (Kind::Float, Device::Cpu)),
            &Tensor::zeros([3, 4], (Kind::Float, Device::Cpu)),
        );
        assert!(zero.double_value(&[]).abs() < 1e-7);
    }

    #[test]
    fn spike_and_slab_kl_equals_its_closed_form() {
        let alpha = 0.1;
        let mu = tensor(&[0.5, -1.0], [1, 2]);
        let log_sigma = tensor(&[0.2, -0.4], [1, 2]);
        let gamma = [0.3f64, 0.9];
        let log_gamma = tensor(&[(0.3f32).ln(), (0.9f32).ln()], [1, 2]);
        let mut expected = 0.0;
        for (j, (m, ls)) in [(0.5f64, 0.2f64), (-1.0, -0.4)].into_iter().enumerate() {
            let g = gamma[j];
            expected += 0.5 * g * ((2.0 * ls).exp() + m * m - 1.0 - 2.0 * ls)
                + (1.0 - g) * ((1.0 - g) / (1.0 - alpha)).ln()
                + g * (g / alpha).ln();
        }
        let value = spike_and_slab_kl(&mu, &log_sigma, &log_gamma, alpha).double_value(&[]);
        assert!((value - expected).abs() < 1e-5, "{value} vs {expected}");
        // With γ = α and a standard-normal slab, posterior and prior coincide.
        let at_prior = spike_and_slab_kl(
            &Tensor::zeros([1, 3], (Kind::Float, Device::Cpu)),
            &Tensor::zeros([1, 3], (Kind::Float, Device::Cpu)),
            &Tensor::full([1, 3], alpha.ln(), (Kind::Float, Device::Cpu)),
            alpha,
        );
        assert!(at_prior.double_value(&[]).abs() < 1e-6);
    }

    #[test]
    fn reconstruction_is_a_per_image_sum_averaged_over_the_batch() {
        let images = Tensor::zeros([2, 1, 2, 2], (Kind::Float, Device::Cpu));
        let reconstruction = Tensor::ones([2, 1, 2, 2], (Kind::Float, Device::Cpu)) * 0.5;
        // Each image: 4 pixels × 0.25.
        assert!((reconstruction_loss_value(&reconstruction, &images) - 1.0).abs() < 1e-7);
    }

    fn reconstruction_loss_value(reconstruction_: &Tensor, images: &Tensor) -> f64 {
        reconstruction(reconstruction_, images).double_value(&[])
    }

    #[test]
    fn discriminator_loss_is_the_mean_binary_cross_entropy() {
        let real = Tensor::from_slice(&[0.0f32, 2.0]);
        let fake = Tensor::from_slice(&[-1.0f32, 0.0]);
        let sigmoid = |x: f64| 1.0 / (1.0 + (-x).exp());
        let expected = -((sigmoid(0.0)).ln()
            + sigmoid(2.0).ln()
            + (1.0 - sigmoid(-1.0)).ln()
            + (1.0 - sigmoid(0.0)).ln())
            / 4.0;
        let value = discriminator(&real, &fake).double_value(&[]);
        assert!((value - expected).abs() < 1e-6);
    }
}
