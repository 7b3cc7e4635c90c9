//! One model with its optimisers: a training step, a validation pass, and the loss terms both
//! report. Everything stays on the device; the host reads the terms only when it reports them.

use phenoflow_schemas::{ModelKind, Normalization};
use tch::{nn, Device, Kind, Tensor};

use crate::adam::Adam;
use crate::loss;
use crate::model::{Discriminator, Geometry, SpikeSampler, Vae};

/// The names of the loss terms, in the order they are logged.
pub fn term_names(kind: ModelKind) -> &'static [&'static str] {
    if kind.has_discriminator() {
        &[
            "loss",
            "reconstruction",
            "kl",
            "elbo",
            "feature_matching",
            "discriminator",
        ]
    } else {
        &["loss", "reconstruction", "kl", "elbo"]
    }
}

/// Loss weights and sampler settings of a run.
#[derive(Debug, Clone, Copy)]
pub struct Objective {
    pub beta: f64,
    pub alpha: f64,
    pub grad_clip_norm: f64,
    pub spike_vsc: bool,
    pub spike_temperature: f64,
    pub spike_temperature_step: f64,
}

/// The model, its discriminator (GAN variants) and their optimisers.
#[derive(Debug)]
pub struct Trainer {
    pub kind: ModelKind,
    pub vae_store: nn::VarStore,
    pub vae: Vae,
    pub discriminator_store: nn::VarStore,
    pub discriminator: Option<Discriminator>,
    pub vae_optimizer: Adam,
    pub discriminator_optimizer: Adam,
    pub objective: Objective,
    pub normalization: Normalization,
}

impl Trainer {
    /// Builds the networks with weights drawn after seeding libtorch with `init_seed`.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        kind: ModelKind,
        geometry: Geometry,
        device: Device,
        objective: Objective,
        normalization: Normalization,
        learning_rate: f64,
        weight_decay: f64,
        log_sigma_limit: f64,
        init_seed: u64,
    ) -> Self {
        // The weights are drawn on the CPU and then moved, so a seed gives the same initial
        // model on every device (CUDA's generator is another stream than the CPU's).
        tch::manual_seed(init_seed as i64);
        let mut vae_store = nn::VarStore::new(Device::Cpu);
        let vae = Vae::new(vae_store.root(), kind, geometry, log_sigma_limit);
        let mut discriminator_store = nn::VarStore::new(Device::Cpu);
        let discriminator = kind
            .has_discriminator()
            .then(|| Discriminator::new(discriminator_store.root(), geometry));
        vae_store.set_device(device);
        discriminator_store.set_device(device);
        let vae_optimizer = Adam::new(&vae_store, learning_rate, weight_decay);
        let discriminator_optimizer = Adam::new(&discriminator_store, learning_rate, weight_decay);
        Self {
            kind,
            vae_store,
            vae,
            discriminator_store,
            discriminator,
            vae_optimizer,
            discriminator_optimizer,
            objective,
            normalization,
        }
    }

    /// The spike sampler at a given epoch (the reference raises c once per epoch).
    pub fn spike_sampler(&self, epoch: usize) -> SpikeSampler {
        if self.objective.spike_vsc {
            SpikeSampler::Vsc {
                temperature: self.objective.spike_temperature
                    + self.objective.spike_temperature_step * epoch as f64,
            }
        } else {
            SpikeSampler::Dtu
        }
    }

    /// Raw int16 pixels → normalised float inputs, on the device.
    pub fn normalize(&self, stored: &Tensor) -> Tensor {
        crate::model::normalize(stored, &self.normalization)
    }

    /// The loss terms of one batch (with graphs, for the training step), in [`term_names`] order.
    fn terms(&self, images: &Tensor, train: bool, epoch: usize) -> (Vec<Tensor>, Option<Tensor>) {
        let output = self.vae.forward_t(images, train, self.spike_sampler(epoch));
        let reconstruction = loss::reconstruction(&output.reconstruction, images);
        let kl = match &output.log_gamma {
            Some(log_gamma) => loss::spike_and_slab_kl(
                &output.mu,
                &output.log_sigma,
                log_gamma,
                self.objective.alpha,
            ),
            None => loss::gaussian_kl(&output.mu, &output.log_sigma),
        };
        let elbo = -(&reconstruction + &kl);
        let variational = &reconstruction + &kl * self.objective.beta;
        let mut terms = Vec::new();
        let mut discriminator_loss = None;
        if let Some(discriminator) = &self.discriminator {
            let (real_logits, real_features) = discriminator.forward_t(images, train);
            let (_, fake_features) = discriminator.forward_t(&output.reconstruction, train);
            let feature_matching = loss::feature_matching(&fake_features, &real_features.detach());
            let (fake_logits, _) = discriminator.forward_t(&output.reconstruction.detach(), train);
            let d_loss = loss::discriminator(&real_logits, &fake_logits);
            terms.push(feature_matching);
            terms.push(d_loss.shallow_clone());
            discriminator_loss = Some(d_loss);
        }
        let objective = match terms.first() {
            Some(feature_matching) => variational + feature_matching,
            None => variational,
        };
        let mut all = vec![objective, reconstruction, kl, elbo];
        all.extend(terms);
        (all, discriminator_loss)
    }

    /// One optimisation step; returns the detached loss terms.
    pub fn train_step(&mut self, images: &Tensor, epoch: usize) -> Vec<Tensor> {
        let (terms, discriminator_loss) = self.terms(images, true, epoch);
        self.vae_optimizer.zero_grad();
        terms[0].backward();
        self.vae_optimizer
            .clip_grad_norm(self.objective.grad_clip_norm);
        self.vae_optimizer.step();
        if let Some(discriminator_loss) = discriminator_loss {
            // The VAE's backward pass also wrote gradients into the discriminator (through the
            // feature-matching term); they are discarded here, as in the seed.
            self.discriminator_optimizer.zero_grad();
            discriminator_loss.backward();
            self.discriminator_optimizer.step();
        }
        terms.iter().map(Tensor::detach).collect()
    }

    /// Mean loss terms over `cells` in evaluation mode (batch-norm running statistics).
    pub fn evaluate(
        &self,
        pixels: &Tensor,
        cells: &[i64],
        epoch: usize,
        batch_size: usize,
    ) -> Vec<Tensor> {
        let device = self.vae_store.device();
        let n_terms = term_names(self.kind).len();
        let mut sums: Vec<Tensor> = (0..n_terms)
            .map(|_| Tensor::zeros([], (Kind::Double, device)))
            .collect();
        tch::no_grad(|| {
            for chunk in cells.chunks(batch_size) {
                let index = Tensor::from_slice(chunk).to_device(pixels.device());
                let images = self.normalize(&pixels.index_select(0, &index).to_device(device));
                let (terms, _) = self.terms(&images, false, epoch);
                for (sum, term) in sums.iter_mut().zip(terms) {
                    *sum += term.to_kind(Kind::Double) * chunk.len() as f64;
                }
            }
        });
        sums.into_iter()
            .map(|sum| sum / cells.len().max(1) as f64)
            .collect()
    }
}
