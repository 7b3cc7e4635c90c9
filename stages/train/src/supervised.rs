//! `pf-train classifier`: supervised classification of a label (treatment, compound,
//! MoA, ...) from images, the second seed's track. The split, the scores and the tables written
//! are those of `phenoflow_evaluation::classification`, shared with `pf-baseline`, so every
//! classifier is scored on the same held-out images.

use std::time::Instant;

use anyhow::Context;
use phenoflow_evaluation::classification::{
    score_and_write, Annotations, Evaluation, CLASSIFIER_KEY,
};
use phenoflow_schemas::{atomic_write, hash_files, Normalization, Provenance, TableKind};
use serde::Serialize;
use tch::nn::{self, ModuleT};
use tch::{Device, Kind, Reduction, Tensor};

use crate::adam::Adam;
use crate::args::{
    parse_device, AugmentArg, ClassWeightsArg, ClassifierArgs, NormalizationArg, SamplerArg,
};
use crate::classifier::{Architecture, Classifier, MIN_SIDE};
use crate::data::{derive_seed, CellData};
use crate::error::TrainError;
use crate::log::{write_log, LogRow};
use crate::{
    check_finite, checkpoint, describe, place_pixels, progress_bar, start_epoch, CHECKPOINT_FILE,
    INIT_STREAM, STAGE, TRAINING_LOG_FILE,
};

pub const CLASSIFIER_CARD_FILE: &str = "classifier.json";

const EVALUATION_BATCH: usize = 256;
const TERMS: [&str; 1] = ["loss"];

/// Everything needed to use or reproduce a trained classifier.
#[derive(Debug, Serialize)]
pub struct ClassifierCard {
    pub format: &'static str,
    pub architecture: Architecture,
    pub input_shape: [i64; 3],
    pub channel_names: Vec<String>,
    pub normalization: Normalization,
    pub label_column: String,
    pub classes: Vec<String>,
    pub hold_out: &'static str,
    pub test_fraction: f64,
    pub class_weights: &'static str,
    pub sampler: &'static str,
    pub augment: &'static str,
    pub epochs: usize,
    pub batch_size: usize,
    pub learning_rate: f64,
    pub weight_decay: f64,
    pub dropout: f64,
    pub seed: u64,
    pub cells: String,
    pub content_hash: String,
    pub n_images: usize,
    pub n_train: usize,
    pub n_test: usize,
    pub parameter_count: usize,
    pub checkpoint: &'static str,
    pub stage_version: &'static str,
}

/// The held-out images' predictions with the softmax probability of each.
struct Scored {
    predicted: Vec<u32>,
    confidence: Vec<f64>,
    loss: f64,
}

pub fn run(cli: &ClassifierArgs) -> anyhow::Result<()> {
    crate::configure_backend(cli);
    let architecture = cli.model;
    check_settings(cli)?;
    let device = parse_device(&cli.device)?;
    let started = Instant::now();
    let images = Images::read(cli, architecture)?;
    let mut net = Net::new(cli, architecture, &images, device);
    if !cli.no_progress {
        eprintln!(
            "pf-train: {} on {device:?}: {} images of {:?} ({} train, {} test held out {}), {} classes of `{}`, read in {:.1} s; {} parameters",
            architecture.name(),
            images.data.n_cells(),
            images.data.shape,
            images.split.train.len(),
            images.split.test.len(),
            images.hold_out.name(),
            images.n_classes,
            cli.split.label,
            started.elapsed().as_secs_f64(),
            net.parameter_count,
        );
    }

    std::fs::create_dir_all(&cli.output)
        .with_context(|| format!("creating {}", cli.output.display()))?;
    let mut log_rows: Vec<LogRow> = Vec::new();
    let mut scored = None;
    for epoch in 0..cli.epochs {
        let (rows, result) = train_epoch(cli, &images, &mut net, device, epoch)?;
        log_rows.extend(rows);
        scored = Some(result);
    }
    let scored = scored.expect("at least one epoch");
    write_outputs(cli, architecture, &images, &net, &log_rows, &scored)
}

/// The settings only the supervised models have, in range.
fn check_settings(cli: &ClassifierArgs) -> anyhow::Result<()> {
    let bad = |message: String| -> anyhow::Result<()> { Err(TrainError::Settings(message).into()) };
    cli.check_optimisation(cli.weight_decay())?;
    if !(0.0..1.0).contains(&cli.dropout) {
        return bad(format!("--dropout must be in [0, 1), got {}", cli.dropout));
    }
    Ok(())
}

/// The labelled images, the hold-out split and what follows from it: the batch size (one image
/// per class present under the balanced sampler), the pixel normalisation, the test labels.
struct Images {
    annotations: Annotations,
    data: CellData,
    split: phenoflow_evaluation::classification::SplitIndices,
    train: Vec<i64>,
    balanced: bool,
    batch_size: usize,
    normalization: Normalization,
    n_classes: usize,
    test_truth: Vec<u32>,
    hold_out: phenoflow_evaluation::classification::HoldOut,
}

impl Images {
    fn read(cli: &ClassifierArgs, architecture: Architecture) -> anyhow::Result<Self> {
        let first = cli.cells[0].clone();
        // The labels first: a wrong --label fails before the pixels are read.
        let annotations = Annotations::read(&cli.cells, TableKind::Cells, &cli.split.label)?;
        let data = CellData::read(&cli.cells)?;
        if annotations.len() != data.n_cells() {
            return Err(TrainError::Data {
                path: first,
                reason: format!(
                    "read {} label rows but {} images",
                    annotations.len(),
                    data.n_cells()
                ),
            }
            .into());
        }
        let [_, height, width] = data.shape;
        if height < MIN_SIDE || width < MIN_SIDE {
            return Err(TrainError::Data {
                path: first,
                reason: format!(
                    "images are {height}×{width}; {} needs at least {MIN_SIDE}×{MIN_SIDE}",
                    architecture.name()
                ),
            }
            .into());
        }
        let n_classes = annotations.classes.len();
        let hold_out = cli.split.hold_out;
        let split = annotations.split(hold_out, cli.split.test_fraction, cli.seed)?;
        let train: Vec<i64> = split.train.iter().map(|&row| row as i64).collect();
        let balanced = cli.sampler == SamplerArg::Balanced;
        let batch_size = if balanced {
            let mut present: Vec<u32> = split
                .train
                .iter()
                .map(|&row| annotations.labels[row])
                .collect();
            present.sort_unstable();
            present.dedup();
            present.len()
        } else {
            cli.batch_size
        };
        if train.len() < batch_size {
            return Err(TrainError::Data {
                path: first,
                reason: format!(
                "{} training images are fewer than one batch of {batch_size}; lower --batch-size",
                train.len()
            ),
            }
            .into());
        }
        let normalization = match cli.normalization {
            NormalizationArg::PerImageChannelMax => Normalization::PerImageChannelMax,
            NormalizationArg::Fixed => Normalization::Fixed {
                divisor: cli.fixed_divisor,
            },
            NormalizationArg::DatasetChannelMax => Normalization::DatasetChannelMax {
                channel_max: data.channel_max(&train),
            },
        };

        let test_truth: Vec<u32> = split
            .test
            .iter()
            .map(|&row| annotations.labels[row])
            .collect();
        Ok(Self {
            annotations,
            data,
            split,
            train,
            balanced,
            batch_size,
            normalization,
            n_classes,
            test_truth,
            hold_out,
        })
    }
}

/// The network on its device with its optimiser, the pixels and labels placed for training,
/// and the class weights of the loss.
struct Net {
    store: nn::VarStore,
    model: Classifier,
    optimizer: Adam,
    pixels: Tensor,
    labels: Tensor,
    class_weights: Option<Tensor>,
    parameter_count: usize,
}

impl Net {
    fn new(
        cli: &ClassifierArgs,
        architecture: Architecture,
        images: &Images,
        device: Device,
    ) -> Self {
        let weight_decay = cli.weight_decay();
        let [channels, height, width] = images.data.shape;
        // Class weights n / (k · n_c) over the training images (scikit-learn's "balanced").
        let mut train_counts = vec![0usize; images.n_classes];
        for &row in &images.split.train {
            train_counts[images.annotations.labels[row] as usize] += 1;
        }
        let class_weights = match cli.class_weights {
            ClassWeightsArg::None => None,
            ClassWeightsArg::Balanced => {
                let present = train_counts.iter().filter(|&&n| n > 0).count() as f64;
                let weights: Vec<f32> = train_counts
                    .iter()
                    .map(|&n| {
                        if n == 0 {
                            1.0
                        } else {
                            (images.split.train.len() as f64 / (present * n as f64)) as f32
                        }
                    })
                    .collect();
                Some(Tensor::from_slice(&weights).to_device(device))
            }
        };

        // Drawn on the CPU and then moved: the same initial weights on every device.
        let mut store = nn::VarStore::new(Device::Cpu);
        tch::manual_seed(derive_seed(cli.seed, INIT_STREAM) as i64);
        let model = Classifier::new(
            &store.root(),
            architecture,
            channels,
            height,
            width,
            images.n_classes as i64,
            cli.dropout,
        );
        store.set_kind(Kind::Float);
        store.set_device(device);
        let parameter_count = crate::model::parameter_count(&store);
        let optimizer = Adam::new(&store, cli.learning_rate, weight_decay);
        let pixels = place_pixels(images.data.pixels.shallow_clone(), device, cli.data_on_host);
        let label_of_image: Vec<i64> = images
            .annotations
            .labels
            .iter()
            .map(|&l| i64::from(l))
            .collect();
        let labels = Tensor::from_slice(&label_of_image).to_device(pixels.device());
        Self {
            store,
            model,
            optimizer,
            pixels,
            labels,
            class_weights,
            parameter_count,
        }
    }
}

/// One epoch over the training images, then the held-out ones: the log rows and the scores.
fn train_epoch(
    cli: &ClassifierArgs,
    images: &Images,
    net: &mut Net,
    device: Device,
    epoch: usize,
) -> anyhow::Result<(Vec<LogRow>, Scored)> {
    let mut log_rows = Vec::new();
    let epoch_number = epoch + 1;
    let (order, n_batches) = start_epoch(
        &images.train,
        &images.annotations.labels,
        images.batch_size,
        images.balanced,
        cli.seed,
        epoch,
        net.pixels.device(),
    );
    let progress = progress_bar(n_batches, epoch_number, cli.epochs, cli.no_progress);
    let epoch_started = Instant::now();
    let mut loss_sum = Tensor::zeros([], (Kind::Double, device));
    let mut correct_sum = Tensor::zeros([], (Kind::Int64, device));
    for batch in 0..n_batches {
        let index = order.narrow(
            0,
            (batch * images.batch_size) as i64,
            images.batch_size as i64,
        );
        let batch_images = crate::model::normalize(
            &net.pixels.index_select(0, &index).to_device(device),
            &images.normalization,
        );
        let batch_images = if cli.augment == AugmentArg::Dihedral {
            dihedral(&batch_images)
        } else {
            batch_images
        };
        let targets = net.labels.index_select(0, &index).to_device(device);
        let logits = net.model.forward_t(&batch_images, true);
        let loss = logits.cross_entropy_loss(
            &targets,
            net.class_weights.as_ref(),
            Reduction::Mean,
            -100,
            0.0,
        );
        net.optimizer.zero_grad();
        loss.backward();
        net.optimizer.step();
        loss_sum += loss.detach().to_kind(Kind::Double);
        correct_sum += logits
            .argmax(-1, false)
            .eq_tensor(&targets)
            .sum(Kind::Int64);
        if (batch + 1) % 10 == 0 || batch + 1 == n_batches {
            let mean = loss_sum.double_value(&[]) / (batch + 1) as f64;
            check_finite(&[mean], &TERMS, epoch_number, "train")?;
            let rate =
                ((batch + 1) * images.batch_size) as f64 / epoch_started.elapsed().as_secs_f64();
            progress.set_position((batch + 1) as u64);
            progress.set_message(format!("{} | {rate:.0} img/s", describe(&TERMS, &[mean])));
        }
    }
    progress.finish_and_clear();
    let train_seconds = epoch_started.elapsed().as_secs_f64();
    let train_loss = loss_sum.double_value(&[]) / n_batches as f64;
    check_finite(&[train_loss], &TERMS, epoch_number, "train")?;
    let train_accuracy =
        correct_sum.int64_value(&[]) as f64 / (n_batches * images.batch_size) as f64;
    let result = evaluate(
        &net.model,
        &net.pixels,
        &net.labels,
        &images.split.test,
        &images.normalization,
        net.class_weights.as_ref(),
        device,
    );
    check_finite(&[result.loss], &TERMS, epoch_number, "test")?;
    let evaluation = Evaluation::new(
        &images.annotations.classes,
        &images.test_truth,
        &result.predicted,
    );
    let images_per_second = (n_batches * images.batch_size) as f64 / train_seconds;
    for (split_name, term, value) in [
        ("train", "loss", train_loss),
        ("train", "accuracy", train_accuracy),
        ("test", "loss", result.loss),
        ("test", "accuracy", evaluation.accuracy()),
        ("test", "balanced_accuracy", evaluation.balanced_accuracy()),
        ("train", "images_per_second", images_per_second),
        ("train", "seconds", train_seconds),
    ] {
        log_rows.push(LogRow {
            epoch: epoch_number as i32,
            split: split_name.into(),
            term: term.into(),
            value,
        });
    }
    if !cli.no_progress {
        eprintln!(
                "pf-train: epoch {epoch_number}/{}: train loss {train_loss:.4}, accuracy {train_accuracy:.3} | test loss {:.4}, accuracy {:.3}, balanced accuracy {:.3} | {images_per_second:.0} img/s, {train_seconds:.1} s",
                cli.epochs,
                result.loss,
                evaluation.accuracy(),
                evaluation.balanced_accuracy()
            );
    }
    Ok((log_rows, result))
}

/// Weights, card, log, scores and per-image predictions of the last epoch (the test split is
/// never used to pick an epoch).
fn write_outputs(
    cli: &ClassifierArgs,
    architecture: Architecture,
    images: &Images,
    net: &Net,
    log_rows: &[LogRow],
    scored: &Scored,
) -> anyhow::Result<()> {
    let weight_decay = cli.weight_decay();
    let cells_description = cli
        .cells
        .iter()
        .map(|path| path.display().to_string())
        .collect::<Vec<_>>()
        .join(",");
    let content_hash = hash_files(&cli.cells)?;
    let card = ClassifierCard {
        format: "phenoflow.classifier",
        architecture,
        input_shape: images.data.shape,
        channel_names: images.data.channel_names.clone(),
        normalization: images.normalization.clone(),
        label_column: cli.split.label.clone(),
        classes: images.annotations.classes.clone(),
        hold_out: images.hold_out.name(),
        test_fraction: cli.split.test_fraction,
        class_weights: match cli.class_weights {
            ClassWeightsArg::None => "none",
            ClassWeightsArg::Balanced => "balanced",
        },
        sampler: if images.balanced {
            "balanced"
        } else {
            "shuffle"
        },
        augment: match cli.augment {
            AugmentArg::None => "none",
            AugmentArg::Dihedral => "dihedral",
        },
        epochs: cli.epochs,
        batch_size: images.batch_size,
        learning_rate: cli.learning_rate,
        weight_decay,
        dropout: cli.dropout,
        seed: cli.seed,
        cells: cells_description.clone(),
        content_hash: content_hash.clone(),
        n_images: images.data.n_cells(),
        n_train: images.split.train.len(),
        n_test: images.split.test.len(),
        parameter_count: net.parameter_count,
        checkpoint: CHECKPOINT_FILE,
        stage_version: env!("CARGO_PKG_VERSION"),
    };
    let params = serde_json::to_value(&card)?;
    let mut provenance = Provenance::new(
        TableKind::TrainingLog,
        STAGE,
        env!("CARGO_PKG_VERSION"),
        params,
    );
    provenance.inputs.insert(cells_description, content_hash);
    provenance.seed = Some(cli.seed);
    provenance
        .extra
        .insert(CLASSIFIER_KEY.into(), architecture.name().into());
    provenance
        .extra
        .insert("label_column".into(), cli.split.label.clone());

    checkpoint::write(
        &cli.output.join(CHECKPOINT_FILE),
        &checkpoint::named_tensors(&net.store, ""),
    )?;
    write_log(&cli.output.join(TRAINING_LOG_FILE), log_rows, &provenance)?;
    let scores = score_and_write(
        &cli.output,
        &images.annotations,
        &images.split,
        images.hold_out,
        &scored.predicted,
        &scored.confidence,
        &provenance,
    )?;
    let card_path = cli.output.join(CLASSIFIER_CARD_FILE);
    atomic_write(&card_path, serde_json::to_string_pretty(&card)?.as_bytes())
        .with_context(|| format!("writing {}", card_path.display()))?;
    println!(
        "{}; wrote {}",
        scores.summary(architecture.name()),
        cli.output.display()
    );
    Ok(())
}

/// Each image flipped left-right, flipped top-bottom and (when square) transposed, each with
/// probability ½ (libtorch's generator, seeded per epoch): one of the eight symmetries of the
/// square, uniformly.
pub fn dihedral(images: &Tensor) -> Tensor {
    let n = images.size()[0];
    let coin = || Tensor::rand([n, 1, 1, 1], (Kind::Float, images.device())).lt(0.5);
    let mut out = images.flip([3]).where_self(&coin(), images);
    out = out.flip([2]).where_self(&coin(), &out);
    let size = images.size();
    if size[2] == size[3] {
        out = out.transpose(2, 3).where_self(&coin(), &out);
    }
    out
}

/// Logits of the held-out images in evaluation mode, batch by batch.
fn evaluate(
    model: &Classifier,
    pixels: &Tensor,
    labels: &Tensor,
    rows: &[usize],
    normalization: &Normalization,
    class_weights: Option<&Tensor>,
    device: Device,
) -> Scored {
    tch::no_grad(|| {
        let mut predicted = Vec::with_capacity(rows.len());
        let mut confidence = Vec::with_capacity(rows.len());
        let mut loss_sum = 0.0;
        for chunk in rows.chunks(EVALUATION_BATCH) {
            let index: Vec<i64> = chunk.iter().map(|&row| row as i64).collect();
            let index = Tensor::from_slice(&index).to_device(pixels.device());
            let images = crate::model::normalize(
                &pixels.index_select(0, &index).to_device(device),
                normalization,
            );
            let targets = labels.index_select(0, &index).to_device(device);
            let logits = model.forward_t(&images, false);
            let loss =
                logits.cross_entropy_loss(&targets, class_weights, Reduction::Sum, -100, 0.0);
            loss_sum += loss.double_value(&[]);
            let (best, which) = logits.softmax(-1, Kind::Float).max_dim(-1, false);
            let best = Vec::<f32>::try_from(best.to_device(Device::Cpu)).expect("floats");
            let which = Vec::<i64>::try_from(which.to_device(Device::Cpu)).expect("indices");
            confidence.extend(best.into_iter().map(f64::from));
            predicted.extend(which.into_iter().map(|class| class as u32));
        }
        Scored {
            predicted,
            confidence,
            loss: loss_sum / rows.len().max(1) as f64,
        }
    })
}
