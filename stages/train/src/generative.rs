//! `pf-train generative`: the first seed's models, as resolve → read → train → write: the run
//! to continue (`--resume`, `--start-from`), the cells and their split, the model card, one
//! epoch of training and validation, and the final outputs (reconstructions, the reference
//! outputs pf-export checks against).

use std::path::Path;
use std::time::Instant;

use anyhow::Context;
use phenoflow_schemas::model_card::{
    Hyperparameters, TrainingData, MODEL_CARD_FORMAT, MODEL_CARD_VERSION,
};
use phenoflow_schemas::{hash_files, ModelCard, Normalization};
use tch::{Device, Kind, Tensor};

use crate::args::{GenerativeArgs, NormalizationArg, SamplerArg, Settings, SpikeSamplerArg};
use crate::checkpoint;
use crate::data::{count_treatments, derive_seed, CellData, Split};
use crate::error::TrainError;
use crate::figures;
use crate::log::{read_log, LogRow};
use crate::model;
use crate::model::Geometry;
use crate::resume::{check_resumable, restore, save};
use crate::trainer::{term_names, Objective, Trainer};
use crate::{
    check_finite, configure_backend, describe, place_pixels, progress_bar, start_epoch,
    CHECKPOINT_FILE, INIT_STREAM, MODEL_CARD_FILE, PROGRESS_EVERY, RECONSTRUCTIONS_FILE,
    REFERENCE_OUTPUTS_FILE, SPLIT_STREAM, TRAINING_LOG_FILE, VALIDATION_BATCH, VALIDATION_STREAM,
};

/// `pf-train generative`.
pub(crate) fn run_generative(cli: &GenerativeArgs) -> anyhow::Result<()> {
    configure_backend(cli);
    let settings = cli.settings()?;
    let device = settings.device;
    let previous = Previous::find(cli)?;
    let started = Instant::now();
    let cells = Cells::read(cli)?;
    let (data, split) = (&cells.data, &cells.split);
    let mut card = model_card(cli, &settings, &cells, previous.as_ref());
    if let Some(previous) = &previous {
        check_resumable(
            &previous.card,
            &card,
            &previous.path,
            cli.start_from.is_some(),
        )?;
    }
    let pixels = place_pixels(data.pixels.shallow_clone(), device, cli.data_on_host);
    let mut trainer = Trainer::new(
        settings.cli_model,
        cells.geometry,
        device,
        Objective {
            beta: settings.beta,
            alpha: cli.alpha,
            grad_clip_norm: settings.grad_clip_norm,
            spike_vsc: cli.spike_sampler == SpikeSamplerArg::Vsc,
            spike_temperature: cli.spike_temperature,
            spike_temperature_step: cli.spike_temperature_step,
        },
        card.normalization.clone(),
        cli.learning_rate,
        cli.weight_decay(),
        cli.log_sigma_limit,
        derive_seed(cli.seed, INIT_STREAM),
    );
    card.parameter_count = model::parameter_count(&trainer.vae_store);
    card.discriminator_parameter_count = model::parameter_count(&trainer.discriminator_store);
    let mut log_rows = Vec::new();
    let mut first_epoch = 0;
    if let Some(previous) = &previous {
        first_epoch = previous.card.epochs_completed;
        restore(&mut trainer, &previous.folder, first_epoch)?;
        log_rows = read_log(&previous.folder.join(TRAINING_LOG_FILE))?;
        log_rows.retain(|row| (row.epoch as usize) <= first_epoch);
    }
    if !cli.no_progress {
        eprintln!(
            "pf-train: {} on {:?}: {} cells ({} train, {} validation, {} treatments) of {:?} read in {:.1} s; {} parameters; {}",
            settings.cli_model.name(),
            device,
            data.n_cells(),
            split.train.len(),
            split.validation.len(),
            data.treatments.len(),
            data.shape,
            started.elapsed().as_secs_f64(),
            card.parameter_count,
            if first_epoch == cli.epochs {
                format!("no further epoch (started from a run of {first_epoch})")
            } else {
                format!("epochs {}..{}", first_epoch + 1, cli.epochs)
            }
        );
    }
    std::fs::create_dir_all(&cli.output)
        .with_context(|| format!("creating {}", cli.output.display()))?;
    if first_epoch == cli.epochs {
        // --start-from a run that already has every epoch asked for: its model, as it is.
        card.epochs_completed = first_epoch;
        save(&trainer, &card, &log_rows, &cli.output)?;
    }
    for epoch in first_epoch..cli.epochs {
        log_rows.extend(train_epoch(
            cli,
            &mut trainer,
            &cells,
            &pixels,
            device,
            epoch,
        )?);
        card.epochs_completed = epoch + 1;
        save(&trainer, &card, &log_rows, &cli.output)?;
    }
    write_final_outputs(cli, &trainer, &card, split, &pixels, device)?;
    if !cli.no_progress {
        eprintln!(
            "pf-train: wrote {} ({} epochs) in {:.1} s",
            cli.output.display(),
            card.epochs_completed,
            started.elapsed().as_secs_f64()
        );
    }
    Ok(())
}

/// The run `--start-from` or `--resume` continues: its card, that card's path and its folder.
pub(crate) struct Previous {
    pub(crate) card: ModelCard,
    pub(crate) path: std::path::PathBuf,
    pub(crate) folder: std::path::PathBuf,
}

impl Previous {
    fn find(cli: &GenerativeArgs) -> anyhow::Result<Option<Self>> {
        Ok(match (&cli.start_from, cli.resume) {
            (Some(start), _) => Some(Self {
                // The cause names the file.
                card: ModelCard::read(start).context("--start-from")?,
                path: start.clone(),
                folder: start
                    .parent()
                    .map(Path::to_path_buf)
                    .unwrap_or_else(|| std::path::PathBuf::from(".")),
            }),
            (None, true) => {
                let path = cli.output.join(MODEL_CARD_FILE);
                Some(Self {
                    card: ModelCard::read(&path).context("--resume")?,
                    path,
                    folder: cli.output.clone(),
                })
            }
            (None, false) => None,
        })
    }
}

/// The training cells, their content hash, the model's geometry and the validation split, with
/// the batch size the sampler gives; too few cells or treatments for one batch is bad input.
pub(crate) struct Cells {
    pub(crate) data: CellData,
    pub(crate) hash: String,
    pub(crate) description: String,
    pub(crate) geometry: Geometry,
    pub(crate) split: Split,
    pub(crate) batch_size: usize,
}

impl Cells {
    fn read(cli: &GenerativeArgs) -> anyhow::Result<Self> {
        // Hash the input on another thread while it is being read.
        let cells_paths = cli.cells.clone();
        let hasher = std::thread::spawn(move || hash_files(&cells_paths));
        let data = CellData::read(&cli.cells)?;
        let hash = hasher.join().expect("hashing thread")?;
        let description = cli
            .cells
            .iter()
            .map(|path| path.display().to_string())
            .collect::<Vec<_>>()
            .join(",");
        let first_cells = cli.cells[0].clone();
        let geometry = Geometry {
            channels: data.shape[0],
            height: data.shape[1],
            width: data.shape[2],
            latent_dim: cli.latent_dim,
        };
        geometry.check().map_err(|reason| TrainError::Data {
            path: first_cells.clone(),
            reason,
        })?;
        let split = Split::new(
            data.n_cells(),
            cli.validation_fraction,
            derive_seed(cli.seed, SPLIT_STREAM),
        );
        let n_train_treatments = count_treatments(&split.train, &data.treatment_of_cell);
        let batch_size = match cli.sampler {
            SamplerArg::Shuffle => cli.batch_size,
            SamplerArg::Balanced => n_train_treatments,
        };
        if batch_size < 2 {
            return Err(TrainError::Data {
                path: first_cells.clone(),
                reason: "--sampler balanced needs at least two treatments among the training cells"
                    .into(),
            }
            .into());
        }
        if split.train.len() < batch_size {
            return Err(TrainError::Data {
                path: first_cells.clone(),
                reason: format!(
                    "{} training cells are fewer than one batch of {batch_size}; lower --batch-size",
                    split.train.len()
                ),
            }
            .into());
        }
        Ok(Self {
            data,
            hash,
            description,
            geometry,
            split,
            batch_size,
        })
    }
}

/// The model card of this run: every setting, the data's hash, where it started from.
pub(crate) fn model_card(
    cli: &GenerativeArgs,
    settings: &Settings,
    cells: &Cells,
    previous: Option<&Previous>,
) -> ModelCard {
    let (data, split) = (&cells.data, &cells.split);
    let hyperparameters = Hyperparameters {
        latent_dim: cli.latent_dim,
        beta: settings.beta,
        alpha: cli.alpha,
        epochs: cli.epochs,
        batch_size: cells.batch_size,
        learning_rate: cli.learning_rate,
        weight_decay: cli.weight_decay(),
        validation_fraction: cli.validation_fraction,
        sampler: match cli.sampler {
            SamplerArg::Shuffle => "shuffle".into(),
            SamplerArg::Balanced => "balanced".into(),
        },
        spike_sampler: match cli.spike_sampler {
            SpikeSamplerArg::Vsc => "vsc".into(),
            SpikeSamplerArg::Dtu => "dtu".into(),
        },
        spike_temperature: cli.spike_temperature,
        spike_temperature_step: cli.spike_temperature_step,
        log_sigma_limit: cli.log_sigma_limit,
        grad_clip_norm: settings.grad_clip_norm,
        reconstruction_loss: "sum-squared-error".into(),
    };
    let normalization = match cli.normalization {
        NormalizationArg::PerImageChannelMax => Normalization::PerImageChannelMax,
        NormalizationArg::Fixed => Normalization::Fixed {
            divisor: cli.fixed_divisor,
        },
        NormalizationArg::DatasetChannelMax => Normalization::DatasetChannelMax {
            channel_max: data.channel_max(&split.train),
        },
    };
    ModelCard {
        format: MODEL_CARD_FORMAT.into(),
        format_version: MODEL_CARD_VERSION,
        model: settings.cli_model,
        architecture: "dtu".into(),
        input_shape: data.shape,
        channel_names: data.channel_names.clone(),
        normalization,
        hyperparameters: hyperparameters.clone(),
        seed: cli.seed,
        data: TrainingData {
            cells: cells.description.clone(),
            content_hash: cells.hash.clone(),
            n_cells: data.n_cells(),
            n_train: split.train.len(),
            n_validation: split.validation.len(),
            n_treatments: data.treatments.len(),
        },
        epochs_completed: 0,
        parameter_count: 0,
        discriminator_parameter_count: 0,
        checkpoint: CHECKPOINT_FILE.into(),
        stage_version: env!("CARGO_PKG_VERSION").into(),
        started_from: previous
            .and_then(|p| p.card.started_from.clone())
            .or_else(|| {
                cli.start_from.as_ref().map(|path| {
                    format!(
                        "{} ({} epochs)",
                        path.display(),
                        previous.map_or(0, |p| p.card.epochs_completed)
                    )
                })
            }),
    }
}

/// One epoch: the training batches, then the validation cells; its rows of the training log.
pub(crate) fn train_epoch(
    cli: &GenerativeArgs,
    trainer: &mut Trainer,
    cells: &Cells,
    pixels: &Tensor,
    device: Device,
    epoch: usize,
) -> anyhow::Result<Vec<LogRow>> {
    let (data, split, batch_size) = (&cells.data, &cells.split, cells.batch_size);
    let names = term_names(trainer.kind);
    let mut log_rows = Vec::new();
    let epoch_number = epoch + 1;
    let (order, n_batches) = start_epoch(
        &split.train,
        &data.treatment_of_cell,
        batch_size,
        cli.sampler == SamplerArg::Balanced,
        cli.seed,
        epoch,
        pixels.device(),
    );
    let progress = progress_bar(n_batches, epoch_number, cli.epochs, cli.no_progress);
    let epoch_started = Instant::now();
    let mut sums: Vec<Tensor> = names
        .iter()
        .map(|_| Tensor::zeros([], (Kind::Double, device)))
        .collect();
    for batch in 0..n_batches {
        let index = order.narrow(0, (batch * batch_size) as i64, batch_size as i64);
        let images = trainer.normalize(&pixels.index_select(0, &index).to_device(device));
        let terms = trainer.train_step(&images, epoch);
        for (sum, term) in sums.iter_mut().zip(&terms) {
            *sum += term.to_kind(Kind::Double);
        }
        if (batch + 1) % PROGRESS_EVERY == 0 || batch + 1 == n_batches {
            let means: Vec<f64> = sums
                .iter()
                .map(|sum| sum.double_value(&[]) / (batch + 1) as f64)
                .collect();
            check_finite(&means, names, epoch_number, "train")?;
            let rate = ((batch + 1) * batch_size) as f64 / epoch_started.elapsed().as_secs_f64();
            progress.set_position((batch + 1) as u64);
            progress.set_message(format!("{} | {rate:.0} img/s", describe(names, &means)));
        }
    }
    let train_means: Vec<f64> = sums
        .iter()
        .map(|sum| sum.double_value(&[]) / n_batches as f64)
        .collect();
    let train_seconds = epoch_started.elapsed().as_secs_f64();
    progress.finish_and_clear();
    check_finite(&train_means, names, epoch_number, "train")?;
    tch::manual_seed(derive_seed(cli.seed, VALIDATION_STREAM + epoch as u64) as i64);
    let validation_means: Vec<f64> = if split.validation.is_empty() {
        Vec::new()
    } else {
        trainer
            .evaluate(pixels, &split.validation, epoch, VALIDATION_BATCH)
            .iter()
            .map(|mean| mean.double_value(&[]))
            .collect()
    };
    check_finite(&validation_means, names, epoch_number, "validation")?;
    let images_per_second = (n_batches * batch_size) as f64 / train_seconds;
    for (split_name, means) in [("train", &train_means), ("validation", &validation_means)] {
        for (term, value) in names.iter().zip(means.iter()) {
            log_rows.push(LogRow {
                epoch: epoch_number as i32,
                split: split_name.into(),
                term: (*term).into(),
                value: *value,
            });
        }
    }
    for (term, value) in [
        ("images_per_second", images_per_second),
        ("seconds", train_seconds),
    ] {
        log_rows.push(LogRow {
            epoch: epoch_number as i32,
            split: "train".into(),
            term: term.into(),
            value,
        });
    }
    if !cli.no_progress {
        let validation = if validation_means.is_empty() {
            String::new()
        } else {
            format!(" | validation {}", describe(names, &validation_means))
        };
        eprintln!(
                "pf-train: epoch {epoch_number}/{}: train {}{validation} | {images_per_second:.0} img/s, {train_seconds:.1} s",
                cli.epochs,
                describe(names, &train_means)
            );
    }
    Ok(log_rows)
}

/// Reconstructions of the first validation cells (training cells when none are held out),
/// decoded from their profile vectors (never a sampled z), and the reference outputs an exported
/// model must reproduce.
pub(crate) fn write_final_outputs(
    cli: &GenerativeArgs,
    trainer: &Trainer,
    card: &ModelCard,
    split: &Split,
    pixels: &Tensor,
    device: Device,
) -> anyhow::Result<()> {
    let shown: Vec<i64> = if split.validation.is_empty() {
        &split.train
    } else {
        &split.validation
    }
    .iter()
    .take(cli.n_reconstructions.max(1))
    .copied()
    .collect();
    tch::no_grad(|| -> anyhow::Result<()> {
        let index = Tensor::from_slice(&shown).to_device(pixels.device());
        let images = trainer.normalize(&pixels.index_select(0, &index).to_device(device));
        let profiles = trainer.vae.profile(
            &images,
            trainer.spike_sampler(card.epochs_completed.saturating_sub(1)),
        );
        let reconstructions = trainer.vae.decoder.forward_t(&profiles, false);
        let path = cli.output.join(RECONSTRUCTIONS_FILE);
        figures::write_reconstructions(&path, &images, &reconstructions)
            .with_context(|| format!("writing {}", path.display()))
    })?;
    let reference: Vec<i64> = split
        .validation
        .iter()
        .chain(&split.train)
        .take(cli.reference_cells)
        .copied()
        .collect();
    write_reference_outputs(
        trainer,
        card.epochs_completed.saturating_sub(1),
        pixels,
        &reference,
        &cli.output.join(REFERENCE_OUTPUTS_FILE),
    )?;
    Ok(())
}

/// The model's evaluation-mode outputs on some cells, with their normalised inputs and row numbers
/// in the cells table: `input`, `mu`, `log_sigma`, [`gamma`, `spike_mean`], `profile` and `reconstruction` (the
/// decoder applied to the profile), the reference an exported model must reproduce.
pub(crate) fn write_reference_outputs(
    trainer: &Trainer,
    last_epoch: usize,
    pixels: &Tensor,
    cells: &[i64],
    path: &Path,
) -> anyhow::Result<()> {
    if cells.is_empty() {
        return Ok(());
    }
    let device = trainer.vae_store.device();
    let tensors = tch::no_grad(|| {
        let index = Tensor::from_slice(cells).to_device(pixels.device());
        let input = trainer.normalize(&pixels.index_select(0, &index).to_device(device));
        // One pass, uncapped: γ = exp(min(log γ, 0)) as the export caps it; E[s] from the raw value.
        let (mu, log_sigma, raw_log_gamma) = trainer.vae.encode(&input, false, false);
        let gamma = raw_log_gamma.as_ref().map(|raw| raw.clamp_max(0.0).exp());
        let sampler = trainer.spike_sampler(last_epoch);
        let spike_mean = raw_log_gamma.as_ref().map(|raw| sampler.expectation(raw));
        let profile = model::gated_profile(&mu, raw_log_gamma.as_ref(), sampler);
        let reconstruction = trainer.vae.decoder.forward_t(&profile, false);
        let mut tensors = vec![
            ("cell_index".to_string(), Tensor::from_slice(cells)),
            ("input".to_string(), input),
            ("mu".to_string(), mu),
            ("log_sigma".to_string(), log_sigma),
            ("profile".to_string(), profile),
            ("reconstruction".to_string(), reconstruction),
        ];
        tensors.extend(gamma.map(|gamma| ("gamma".to_string(), gamma)));
        tensors.extend(spike_mean.map(|mean| ("spike_mean".to_string(), mean)));
        tensors
            .into_iter()
            .map(|(name, tensor)| (name, tensor.to_device(Device::Cpu).contiguous()))
            .collect::<Vec<_>>()
    });
    checkpoint::write(path, &tensors)?;
    Ok(())
}
