//! The networks, in the DTU (PyTorch) reading of the seed architecture: see pf-train's README for
//! why this reading and how it differs from Lafarge's TensorFlow original.
//!
//! Encoder: three blocks of conv k5 (valid, bias) → max-pool 2 → LeakyReLU(0.01) → BatchNorm,
//! then a conv whose kernel covers what is left (5×5 for 68×68 inputs) to `n_heads·L` channels →
//! BatchNorm → flatten, split into μ, log σ [, log γ]. Decoder: four blocks of conv k5 pad 4 →
//! BatchNorm → LeakyReLU → nearest upsample (not after the last), then a 1×1 conv → LeakyReLU.
//! Discriminator: four feature levels (their activations are the feature-matching targets) and a
//! 1×1 logit clamped to ±10.

use phenoflow_schemas::ModelKind;
use tch::nn;
use tch::{Kind, Tensor};

use phenoflow_schemas::architecture::{self, SpikeExpectation, HIDDEN_CHANNELS, KERNEL};

/// Channels of the discriminator's last feature level.
pub const DISCRIMINATOR_TOP_CHANNELS: i64 = 64;

/// The input shape and the sizes every layer derives from it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Geometry {
    pub channels: i64,
    pub height: i64,
    pub width: i64,
    pub latent_dim: i64,
}

impl Geometry {
    /// Fails for inputs too small for the encoder.
    pub fn check(&self) -> Result<(), String> {
        if self.channels < 1 {
            return Err("cells have no channel".into());
        }
        architecture::check(self.height, self.width)
    }

    /// The kernel of the encoder's last convolution.
    pub fn head_kernel(&self) -> [i64; 2] {
        architecture::head_kernel(self.height, self.width)
    }

    /// The sizes the decoder upsamples to after its first three blocks.
    pub fn upsample_targets(&self) -> [[i64; 2]; 3] {
        architecture::upsample_targets(self.height, self.width)
    }
}

fn conv(
    path: nn::Path,
    in_channels: i64,
    out_channels: i64,
    kernel: [i64; 2],
    padding: i64,
) -> nn::Conv2D {
    crate::init::conv2d(
        path,
        crate::init::ConvShape {
            input: in_channels,
            output: out_channels,
            kernel,
            stride: 1,
            padding,
            bias: true,
        },
        crate::init::ConvInit::Pytorch,
    )
}

fn batch_norm(path: nn::Path, channels: i64) -> nn::BatchNorm {
    // PyTorch's defaults (scale 1, shift 0, eps 1e-5, momentum 0.1), as the seed code used.
    crate::init::batch_norm2d(path, channels)
}

/// The encoder; its output is `[B, n_heads·L]`.
#[derive(Debug)]
pub struct Encoder {
    blocks: Vec<(nn::Conv2D, nn::BatchNorm)>,
    head: nn::Conv2D,
    head_norm: nn::BatchNorm,
}

impl Encoder {
    pub fn new(path: nn::Path, geometry: Geometry, n_heads: i64) -> Self {
        let mut blocks = Vec::new();
        let mut in_channels = geometry.channels;
        for index in 0..3 {
            blocks.push((
                conv(
                    &path / format!("conv{index}"),
                    in_channels,
                    HIDDEN_CHANNELS,
                    [KERNEL, KERNEL],
                    0,
                ),
                batch_norm(&path / format!("norm{index}"), HIDDEN_CHANNELS),
            ));
            in_channels = HIDDEN_CHANNELS;
        }
        let out_channels = n_heads * geometry.latent_dim;
        Self {
            blocks,
            head: conv(
                &path / "head",
                HIDDEN_CHANNELS,
                out_channels,
                geometry.head_kernel(),
                0,
            ),
            head_norm: batch_norm(&path / "head_norm", out_channels),
        }
    }

    pub fn forward_t(&self, images: &Tensor, train: bool) -> Tensor {
        let mut x = images.shallow_clone();
        for (convolution, norm) in &self.blocks {
            x = x
                .apply(convolution)
                .max_pool2d_default(2)
                .leaky_relu()
                .apply_t(norm, train);
        }
        x.apply(&self.head)
            .apply_t(&self.head_norm, train)
            .flatten(1, -1)
    }
}

/// The decoder: `[B, L]` → `[B, C, H, W]`.
#[derive(Debug)]
pub struct Decoder {
    blocks: Vec<(nn::Conv2D, nn::BatchNorm)>,
    head: nn::Conv2D,
    upsample_targets: [[i64; 2]; 3],
    latent_dim: i64,
}

impl Decoder {
    pub fn new(path: nn::Path, geometry: Geometry) -> Self {
        let mut blocks = Vec::new();
        let mut in_channels = geometry.latent_dim;
        for index in 0..4 {
            blocks.push((
                conv(
                    &path / format!("conv{index}"),
                    in_channels,
                    HIDDEN_CHANNELS,
                    [KERNEL, KERNEL],
                    KERNEL - 1,
                ),
                batch_norm(&path / format!("norm{index}"), HIDDEN_CHANNELS),
            ));
            in_channels = HIDDEN_CHANNELS;
        }
        Self {
            blocks,
            head: conv(
                &path / "head",
                HIDDEN_CHANNELS,
                geometry.channels,
                [1, 1],
                0,
            ),
            upsample_targets: geometry.upsample_targets(),
            latent_dim: geometry.latent_dim,
        }
    }

    pub fn forward_t(&self, latent: &Tensor, train: bool) -> Tensor {
        let mut x = latent.view([-1, self.latent_dim, 1, 1]);
        for (index, (convolution, norm)) in self.blocks.iter().enumerate() {
            x = x.apply(convolution).apply_t(norm, train).leaky_relu();
            if let Some(target) = self.upsample_targets.get(index) {
                x = x.upsample_nearest2d(target, None, None);
            }
        }
        x.apply(&self.head).leaky_relu()
    }
}

/// What one pass of the VAE gives.
#[derive(Debug)]
pub struct VaeOutput {
    pub mu: Tensor,
    pub log_sigma: Tensor,
    /// Only for sparse models.
    pub log_gamma: Option<Tensor>,
    pub z: Tensor,
    pub reconstruction: Tensor,
}

/// How the spike selector of a sparse model is drawn.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum SpikeSampler {
    /// Variational Sparse Coding reference: s = sigmoid(c·(η + γ − 1)), η ~ U(0,1), γ ≤ 1.
    Vsc { temperature: f64 },
    /// The seed code: s = sigmoid(exp(log γ) + η − 1), η ~ N(0,1), log γ uncapped.
    Dtu,
}

/// Encoder + decoder of one of the five models.
#[derive(Debug)]
pub struct Vae {
    pub kind: ModelKind,
    pub geometry: Geometry,
    pub encoder: Encoder,
    pub decoder: Decoder,
    pub log_sigma_limit: f64,
}

impl Vae {
    pub fn new(path: nn::Path, kind: ModelKind, geometry: Geometry, log_sigma_limit: f64) -> Self {
        Self {
            kind,
            geometry,
            encoder: Encoder::new(&path / "encoder", geometry, kind.n_heads()),
            decoder: Decoder::new(&path / "decoder", geometry),
            log_sigma_limit,
        }
    }

    /// μ, log σ (clamped) and, for sparse models, log γ (capped at 0 when `cap_log_gamma`).
    pub fn encode(
        &self,
        images: &Tensor,
        train: bool,
        cap_log_gamma: bool,
    ) -> (Tensor, Tensor, Option<Tensor>) {
        let heads = self
            .encoder
            .forward_t(images, train)
            .chunk(self.kind.n_heads(), 1);
        let mu = heads[0].shallow_clone();
        let log_sigma = heads[1].clamp(-self.log_sigma_limit, self.log_sigma_limit);
        let log_gamma = heads.get(2).map(|log_gamma| {
            if cap_log_gamma {
                log_gamma.clamp_max(0.0)
            } else {
                log_gamma.shallow_clone()
            }
        });
        (mu, log_sigma, log_gamma)
    }

    /// One stochastic pass (the seeds sample in training and evaluation alike; the profile used
    /// downstream is never this z but its expectation, see [`Vae::profile`]).
    pub fn forward_t(&self, images: &Tensor, train: bool, spike: SpikeSampler) -> VaeOutput {
        let cap = matches!(spike, SpikeSampler::Vsc { .. });
        let (mu, log_sigma, log_gamma) = self.encode(images, train, cap);
        let z = sample_latent(&mu, &log_sigma, log_gamma.as_ref(), spike);
        let reconstruction = self.decoder.forward_t(&z, train);
        VaeOutput {
            mu,
            log_sigma,
            log_gamma,
            z,
            reconstruction,
        }
    }

    /// The deterministic profile vector, E[z]: μ, or for sparse models μ·E[s], the expectation of
    /// the spike selector under the sampler the model was trained with (pf-export writes the same
    /// into the ONNX encoder).
    pub fn profile(&self, images: &Tensor, spike: SpikeSampler) -> Tensor {
        let (mu, _, log_gamma) = self.encode(images, false, false);
        gated_profile(&mu, log_gamma.as_ref(), spike)
    }
}

/// μ, or μ·E[s] for a sparse model's raw (uncapped) log γ: the profile of [`Vae::profile`] from
/// outputs already computed.
pub fn gated_profile(mu: &Tensor, log_gamma: Option<&Tensor>, spike: SpikeSampler) -> Tensor {
    match log_gamma {
        Some(log_gamma) => mu * spike.expectation(log_gamma),
        None => mu.shallow_clone(),
    }
}

/// z = s ⊙ (μ + σ ⊙ ε) (s = 1 for Gaussian models), one draw; `log_gamma` as [`Vae::encode`]
/// gives it for `spike` (capped at 0 for the VSC sampler).
pub fn sample_latent(
    mu: &Tensor,
    log_sigma: &Tensor,
    log_gamma: Option<&Tensor>,
    spike: SpikeSampler,
) -> Tensor {
    let slab = mu + log_sigma.exp() * mu.randn_like();
    match log_gamma {
        None => slab,
        Some(log_gamma) => {
            let selector = match spike {
                SpikeSampler::Vsc { temperature } => {
                    ((mu.rand_like() + log_gamma.exp() - 1.0) * temperature).sigmoid()
                }
                SpikeSampler::Dtu => (log_gamma.exp() + mu.randn_like() - 1.0).sigmoid(),
            };
            selector * slab
        }
    }
}

impl SpikeSampler {
    /// The same sampler as the contract's [`SpikeExpectation`].
    pub fn as_expectation(self) -> SpikeExpectation {
        match self {
            SpikeSampler::Vsc { temperature } => SpikeExpectation::Vsc { temperature },
            SpikeSampler::Dtu => SpikeExpectation::Dtu,
        }
    }

    /// E[s] elementwise for raw (uncapped) log γ; the formulas of [`SpikeExpectation`].
    pub fn expectation(self, log_gamma: &Tensor) -> Tensor {
        match self {
            SpikeSampler::Vsc { temperature } => {
                let gamma = log_gamma.clamp_max(0.0).exp();
                ((&gamma * temperature).softplus() - ((gamma - 1.0) * temperature).softplus())
                    / temperature
            }
            SpikeSampler::Dtu => {
                let (nodes, weights) = architecture::standard_normal_rule();
                let shape = [1i64, 1, nodes.len() as i64];
                let options = (log_gamma.kind(), log_gamma.device());
                let nodes = Tensor::from_slice(&nodes)
                    .to_kind(options.0)
                    .to_device(options.1)
                    .view(shape);
                let weights = Tensor::from_slice(&weights)
                    .to_kind(options.0)
                    .to_device(options.1)
                    .view(shape);
                let shifted = (log_gamma.exp() - 1.0).unsqueeze(-1);
                ((shifted + nodes).sigmoid() * weights).sum_dim_intlist(-1, false, options.0)
            }
        }
    }
}

/// The discriminator; returns clamped logits `[B]` and the concatenated features of its four
/// levels `[B, F]` (39,904 for 3×68×68 inputs).
#[derive(Debug)]
pub struct Discriminator {
    convs: Vec<nn::Conv2D>,
    norms: Vec<nn::BatchNorm>,
    top_norm: nn::BatchNorm,
    logit: nn::Conv2D,
}

impl Discriminator {
    pub fn new(path: nn::Path, geometry: Geometry) -> Self {
        let convs = vec![
            conv(
                &path / "conv0",
                geometry.channels,
                HIDDEN_CHANNELS,
                [KERNEL, KERNEL],
                0,
            ),
            conv(
                &path / "conv1",
                HIDDEN_CHANNELS,
                HIDDEN_CHANNELS,
                [KERNEL, KERNEL],
                0,
            ),
            conv(
                &path / "conv2",
                HIDDEN_CHANNELS,
                HIDDEN_CHANNELS,
                [KERNEL, KERNEL],
                0,
            ),
            conv(
                &path / "conv3",
                HIDDEN_CHANNELS,
                DISCRIMINATOR_TOP_CHANNELS,
                geometry.head_kernel(),
                0,
            ),
        ];
        let norms = (1..4)
            .map(|index| batch_norm(&path / format!("norm{index}"), HIDDEN_CHANNELS))
            .collect();
        Self {
            convs,
            norms,
            top_norm: batch_norm(&path / "top_norm", DISCRIMINATOR_TOP_CHANNELS),
            logit: conv(&path / "logit", DISCRIMINATOR_TOP_CHANNELS, 1, [1, 1], 0),
        }
    }

    pub fn forward_t(&self, images: &Tensor, train: bool) -> (Tensor, Tensor) {
        let level0 = images
            .apply(&self.convs[0])
            .max_pool2d_default(2)
            .leaky_relu();
        let level1 = level0
            .apply_t(&self.norms[0], train)
            .apply(&self.convs[1])
            .max_pool2d_default(2)
            .leaky_relu();
        let level2 = level1
            .apply_t(&self.norms[1], train)
            .apply(&self.convs[2])
            .max_pool2d_default(2)
            .leaky_relu();
        let level3 = level2
            .apply_t(&self.norms[2], train)
            .apply(&self.convs[3])
            .apply_t(&self.top_norm, train);
        let logits = level3
            .leaky_relu()
            .apply(&self.logit)
            .flatten(1, -1)
            .clamp(-10.0, 10.0)
            .squeeze_dim(1);
        let features = Tensor::cat(
            &[
                level0.flatten(1, -1),
                level1.flatten(1, -1),
                level2.flatten(1, -1),
                level3.flatten(1, -1),
            ],
            1,
        );
        (logits, features)
    }
}

/// Number of trainable scalars in a variable store (batch-norm running statistics excluded).
pub fn parameter_count(store: &nn::VarStore) -> usize {
    store
        .trainable_variables()
        .iter()
        .map(|tensor| tensor.numel())
        .sum()
}

/// Model input from stored pixels under a normalisation (the seed's per-image channel maximum,
/// a dataset channel maximum, or a fixed divisor).
pub fn normalize(stored: &Tensor, normalization: &phenoflow_schemas::Normalization) -> Tensor {
    use phenoflow_schemas::Normalization;
    let pixels = to_float_pixels(stored);
    match normalization {
        Normalization::PerImageChannelMax => {
            let maxima = pixels.amax([2i64, 3].as_slice(), true).clamp_min(1.0);
            pixels / maxima
        }
        Normalization::DatasetChannelMax { channel_max } => {
            let maxima = Tensor::from_slice(channel_max)
                .to_device(pixels.device())
                .view([1, -1, 1, 1])
                .clamp_min(1.0);
            pixels / maxima
        }
        Normalization::Fixed { divisor } => pixels / f64::from(*divisor),
    }
}

/// The model's input from the resident int16 pixels (stored as value − 32768, see data.rs).
pub fn to_float_pixels(stored: &Tensor) -> Tensor {
    stored.to_kind(Kind::Float) + 32768.0
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::Device;

    fn geometry() -> Geometry {
        Geometry {
            channels: 3,
            height: 68,
            width: 68,
            latent_dim: 256,
        }
    }

    #[test]
    fn parameter_counts_match_the_seed_models() {
        // The counts of the seed's PyTorch models (models.md A.2), from the layer list and the
        // sizes of its saved weight files.
        for (kind, expected) in [
            (ModelKind::CytoVae, 747_107),
            (ModelKind::SparseVae, 952_675),
        ] {
            let store = nn::VarStore::new(Device::Cpu);
            let _ = Vae::new(store.root(), kind, geometry(), 10.0);
            assert_eq!(parameter_count(&store), expected, "{}", kind.name());
        }
        let store = nn::VarStore::new(Device::Cpu);
        let _ = Discriminator::new(store.root(), geometry());
        assert_eq!(parameter_count(&store), 105_345);
    }

    #[test]
    fn forward_shapes_for_every_model() {
        tch::manual_seed(0);
        let images = Tensor::rand([4, 3, 68, 68], (Kind::Float, Device::Cpu));
        for kind in ModelKind::ALL {
            let store = nn::VarStore::new(Device::Cpu);
            let vae = Vae::new(store.root(), kind, geometry(), 10.0);
            let output = vae.forward_t(&images, true, SpikeSampler::Vsc { temperature: 50.0 });
            assert_eq!(output.mu.size(), [4, 256]);
            assert_eq!(output.log_sigma.size(), [4, 256]);
            assert_eq!(output.log_gamma.is_some(), kind.is_sparse());
            assert_eq!(output.z.size(), [4, 256]);
            assert_eq!(output.reconstruction.size(), [4, 3, 68, 68]);
        }
        let store = nn::VarStore::new(Device::Cpu);
        let discriminator = Discriminator::new(store.root(), geometry());
        let (logits, features) = discriminator.forward_t(&images, true);
        assert_eq!(logits.size(), [4]);
        assert_eq!(features.size(), [4, 39_904]);
    }

    #[test]
    fn other_shapes_the_cells_table_declares() {
        let geometry = Geometry {
            channels: 5,
            height: 96,
            width: 80,
            latent_dim: 16,
        };
        geometry.check().unwrap();
        let store = nn::VarStore::new(Device::Cpu);
        let vae = Vae::new(store.root(), ModelKind::CytoVae, geometry, 10.0);
        let images = Tensor::rand([2, 5, 96, 80], (Kind::Float, Device::Cpu));
        let output = vae.forward_t(&images, true, SpikeSampler::Dtu);
        assert_eq!(output.reconstruction.size(), [2, 5, 96, 80]);
        let small = Geometry {
            height: 30,
            ..geometry
        };
        assert!(small.check().unwrap_err().contains("height 30"));
    }

    /// The profile of a sparse model is E[z] under the sampler it was trained with: equal to the
    /// Monte-Carlo mean of 20,000 sampled z of a briefly trained model within 5.5 standard
    /// errors for every element; μ·min(γ, 1), the profile before, is not under the seed's sampler.
    #[test]
    fn sparse_profile_is_the_mean_of_sampled_latents() {
        tch::manual_seed(3);
        let store = nn::VarStore::new(Device::Cpu);
        let vae = Vae::new(store.root(), ModelKind::SparseVae, geometry(), 10.0);
        let mut optimizer = nn::OptimizerConfig::build(nn::Adam::default(), &store, 1e-2).unwrap();
        let images = Tensor::rand([4, 3, 68, 68], (Kind::Float, Device::Cpu));
        for _ in 0..10 {
            let output = vae.forward_t(&images, true, SpikeSampler::Dtu);
            let loss = (output.reconstruction - &images).square().mean(Kind::Float);
            optimizer.backward_step(&loss);
        }
        let samples = 20_000i64;
        for sampler in [
            SpikeSampler::Dtu,
            SpikeSampler::Vsc { temperature: 50.0 },
            SpikeSampler::Vsc { temperature: 2.0 },
        ] {
            let cap = matches!(sampler, SpikeSampler::Vsc { .. });
            let (mean, standard_error, profile, legacy) = tch::no_grad(|| {
                let (mu, log_sigma, log_gamma) = vae.encode(&images, false, cap);
                let log_gamma = log_gamma.unwrap();
                let expand = |t: &Tensor| t.unsqueeze(0).expand([samples, -1, -1], false);
                let z = sample_latent(
                    &expand(&mu),
                    &expand(&log_sigma),
                    Some(&expand(&log_gamma)),
                    sampler,
                )
                .to_kind(Kind::Double);
                let legacy = &mu * log_gamma.clamp_max(0.0).exp();
                (
                    z.mean_dim(0, false, Kind::Double),
                    z.std_dim(0, true, false) / (samples as f64).sqrt(),
                    vae.profile(&images, sampler).to_kind(Kind::Double),
                    legacy.to_kind(Kind::Double),
                )
            });
            let worst = ((&mean - &profile).abs() / &standard_error)
                .max()
                .double_value(&[]);
            assert!(worst < 5.5, "{sampler:?}: {worst} standard errors");
            if sampler == SpikeSampler::Dtu {
                let legacy_worst = ((&mean - &legacy).abs() / &standard_error)
                    .max()
                    .double_value(&[]);
                assert!(legacy_worst > 50.0, "μ·min(γ,1) off by only {legacy_worst}");
            }
        }
    }

    #[test]
    fn tensor_spike_expectations_equal_the_contracts() {
        let values = [-8.0f64, -2.0, -0.5, 0.0, 0.4, 1.5];
        let log_gamma = Tensor::from_slice(&values).view([1, 6]);
        for sampler in [SpikeSampler::Dtu, SpikeSampler::Vsc { temperature: 7.0 }] {
            let ours = sampler.expectation(&log_gamma);
            for (i, &value) in values.iter().enumerate() {
                let expected = architecture::spike_expectation(sampler.as_expectation(), value);
                let got = ours.double_value(&[0, i as i64]);
                assert!(
                    (got - expected).abs() < 1e-12,
                    "{sampler:?} {value}: {got} vs {expected}"
                );
            }
        }
    }
}
