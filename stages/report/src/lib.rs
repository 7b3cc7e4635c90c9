//! `pf-report`: the figures a biologist looks at after a profiling run, in one self-contained
//! HTML file (images embedded) with PNGs beside it for papers. No Python at report time: tables
//! are read with phenoflow-schemas, figures drawn with plotters, and the decoder run with ONNX
//! Runtime for reconstructions and latent interpolations.

pub mod analysis;
pub mod args;
pub mod figures;
pub mod html;
pub mod inputs;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{anyhow, Context};
use phenoflow_schemas::classification::read_classifier_metrics;
use phenoflow_schemas::{InputError, ModelCard};

use crate::args::Cli;
use crate::figures::{Figure, Tile};
use crate::inputs::{CellKey, Embeddings};

/// The exported decoder in an ONNX Runtime session.
struct Decoder {
    path: std::path::PathBuf,
    session: ort::session::Session,
    latent_dim: usize,
    // Sessions need their environment alive; ONNX Runtime allows one per process.
    _environment: ort::environment::Environment,
}

impl Decoder {
    fn open(path: &Path, card: &ModelCard) -> anyhow::Result<Self> {
        let dylib = std::env::var_os("ORT_DYLIB_PATH").ok_or_else(|| {
            anyhow!("ORT_DYLIB_PATH is not set: point it at libonnxruntime.so (`make setup` writes it into .phenoflow.env)")
        })?;
        let environment = ort::init_from(&dylib)
            .map_err(|error| anyhow!("loading ONNX Runtime: {error}"))?
            .build()
            .map_err(|error| anyhow!("starting ONNX Runtime: {error}"))?;
        let session = ort::session::Session::builder(&environment)
            .map_err(|error| anyhow!("{error}"))?
            .commit_from_file(path)
            .map_err(|error| {
                InputError(format!(
                    "{}: not a loadable ONNX model: {error}",
                    path.display()
                ))
            })?;
        if !session.inputs().iter().any(|input| input.name() == "z") {
            let names: Vec<&str> = session.inputs().iter().map(|input| input.name()).collect();
            return Err(InputError(format!(
                "{}: not a pf-export decoder (it takes `{}`, not `z`)",
                path.display(),
                names.join("`, `")
            ))
            .into());
        }
        Ok(Self {
            path: path.to_path_buf(),
            session,
            latent_dim: card.hyperparameters.latent_dim as usize,
            _environment: environment,
        })
    }

    /// Decodes `n` latent vectors (row-major) into normalised images.
    fn decode(&mut self, latent: &[f32], n: usize) -> anyhow::Result<Vec<f32>> {
        let input = ort::value::TensorRef::from_array_view(([n, self.latent_dim], latent))
            .map_err(|error| anyhow!("{error}"))?;
        let outputs = self
            .session
            .run(ort::inputs!["z" => input])
            .map_err(|error| anyhow!("{}: {error}", self.path.display()))?;
        let output = outputs.get("reconstruction").ok_or_else(|| {
            InputError(format!(
                "{}: no `reconstruction` output (is it a pf-export decoder?)",
                self.path.display()
            ))
        })?;
        let (_, values) = output
            .try_extract_tensor::<f32>()
            .map_err(|error| anyhow!("{error}"))?;
        Ok(values.to_vec())
    }
}

fn tile(pixels: Vec<f32>, card: &ModelCard, channel: Option<usize>) -> Tile {
    Tile {
        pixels,
        channels: card.input_shape[0] as usize,
        height: card.input_shape[1] as usize,
        width: card.input_shape[2] as usize,
        channel,
    }
}

pub fn run(cli: Cli) -> anyhow::Result<()> {
    if cli.model_card.is_none()
        && cli.classifier_metrics.is_empty()
        && cli.metrics.is_none()
        && cli.predictions.is_none()
        && cli.treatments.is_none()
    {
        return Err(InputError(
            "nothing to report: give --model-card (a generative model's run), --metrics / --predictions / \
             --treatments (a profiling run, learned or CellProfiler features) and/or --classifier-metrics \
             (supervised classifiers)"
                .into(),
        )
        .into());
    }
    let card = match &cli.model_card {
        Some(path) => Some(ModelCard::read(path)?),
        None => None,
    };
    let mut figures: Vec<Figure> = Vec::new();
    let mut notes: Vec<String> = Vec::new();
    let mut map_csv: Option<String> = None;
    let mut recall_tables = Vec::new();
    let mut active_table = None;
    let mut log_paths: Vec<PathBuf> = Vec::new();
    if let (Some(card), Some(card_path)) = (card.as_ref(), cli.model_card.as_ref()) {
        let model_dir = card_path.parent().unwrap_or(Path::new("."));
        // Learning curves.
        let log_path = model_dir.join("training_log.parquet");
        log_paths.push(log_path.clone());
        let log = inputs::read_training_log(&log_path)?;
        figures.push(figures::learning_curves(&log)?);

        let embeddings = if cli.embeddings.is_empty() {
            None
        } else {
            Some(Embeddings::read(&cli.embeddings)?)
        };
        let plane = card.input_shape.iter().product::<i64>() as usize;
        let latent_dim = card.hyperparameters.latent_dim as usize;

        // Reconstructions and interpolations need images, profiles and the decoder.
        if let (Some(embeddings), Some(decoder), false) =
            (&embeddings, &cli.decoder, cli.cells.is_empty())
        {
            if embeddings.latent_dim != latent_dim {
                return Err(InputError(format!(
                    "the embeddings have {} features, the model card's latent size is {latent_dim}",
                    embeddings.latent_dim
                ))
                .into());
            }
            let shown = analysis::cells_to_show(embeddings, cli.n_reconstructions);
            let treatments = analysis::treatment_profiles(embeddings);
            let control = treatments
                .iter()
                .position(|treatment| treatment.compound == cli.control);
            let targets = match control {
                None => {
                    notes.push(format!(
                        "No interpolation: no `{}` (control) cells in the embeddings.",
                        cli.control
                    ));
                    Vec::new()
                }
                Some(control) => analysis::interpolation_targets(
                    &treatments,
                    control,
                    &cli.interpolate,
                    cli.n_interpolations,
                )?,
            };
            let mut wanted: Vec<CellKey> = shown
                .iter()
                .map(|&row| embeddings.keys[row].clone())
                .collect();
            if let Some(control) = control {
                wanted.push(embeddings.keys[treatments[control].centre_cell].clone());
                for &target in &targets {
                    wanted.push(embeddings.keys[treatments[target].centre_cell].clone());
                }
            }
            let pixels = inputs::read_cell_pixels(&cli.cells, &wanted, card)?;

            // Reconstructions: decoded from each cell's profile vector.
            let mut latent = Vec::new();
            for &row in &shown {
                latent.extend_from_slice(embeddings.profile(row));
            }
            let mut decoder = Decoder::open(decoder, card)?;
            let decoded = decoder.decode(&latent, shown.len())?;
            let mut rows: Vec<(String, Vec<Tile>)> = Vec::new();
            let channel_names = &card.channel_names;
            let mut kinds: Vec<(String, Option<usize>)> = vec![("RGB composite".into(), None)];
            kinds.extend(
                channel_names
                    .iter()
                    .enumerate()
                    .map(|(index, name)| (name.clone(), Some(index))),
            );
            for (label, channel) in kinds {
                let originals = shown
                    .iter()
                    .map(|&row| tile(pixels[&embeddings.keys[row]].clone(), card, channel))
                    .collect();
                let reconstructed = (0..shown.len())
                    .map(|index| {
                        tile(
                            decoded[index * plane..(index + 1) * plane].to_vec(),
                            card,
                            channel,
                        )
                    })
                    .collect();
                rows.push((label.clone(), originals));
                rows.push((format!("{label}, decoded"), reconstructed));
            }
            let column_labels: Vec<String> = shown
                .iter()
                .map(|&row| {
                    embeddings.moa[row]
                        .clone()
                        .unwrap_or_else(|| embeddings.compound[row].clone())
                })
                .map(|label| label.chars().take(14).collect())
                .collect();
            figures.push(figures::tile_grid(
            "reconstructions",
            "Reconstructions",
            "Cells (one per MoA where there are several) and their reconstructions decoded from the profile vector \
             (μ, or μ·γ for sparse models), as an RGB composite (DNA → red, F-actin → green, β-tubulin → blue) and per \
             channel. Contrast: the model's normalised intensities (each image's channel divided by its maximum, as \
             in training), clipped to [0, 1] and shown linearly.",
            &rows,
            &column_labels,
            2,
        )?);

            // Interpolations from the control's centre cell to each target's.
            if let Some(control) = control {
                let steps = 8usize;
                let control_treatment = &treatments[control];
                let mut rows = Vec::new();
                for &target in &targets {
                    let target_treatment = &treatments[target];
                    let start = embeddings.profile(control_treatment.centre_cell);
                    let end = embeddings.profile(target_treatment.centre_cell);
                    let mut latent = Vec::with_capacity(steps * latent_dim);
                    for step in 0..steps {
                        let t = step as f32 / (steps - 1) as f32;
                        latent.extend(start.iter().zip(end).map(|(a, b)| a + (b - a) * t));
                    }
                    let decoded = decoder.decode(&latent, steps)?;
                    let mut tiles = vec![tile(
                        pixels[&embeddings.keys[control_treatment.centre_cell]].clone(),
                        card,
                        None,
                    )];
                    tiles.extend((0..steps).map(|index| {
                        tile(
                            decoded[index * plane..(index + 1) * plane].to_vec(),
                            card,
                            None,
                        )
                    }));
                    tiles.push(tile(
                        pixels[&embeddings.keys[target_treatment.centre_cell]].clone(),
                        card,
                        None,
                    ));
                    rows.push((
                        format!(
                            "{} {}",
                            target_treatment.compound, target_treatment.concentration
                        ),
                        tiles,
                    ));
                }
                if !rows.is_empty() {
                    let mut labels = vec![format!("{} cell", cli.control)];
                    labels.extend(
                        (0..steps).map(|step| format!("t={:.2}", step as f64 / (steps - 1) as f64)),
                    );
                    labels.push("target cell".into());
                    figures.push(figures::tile_grid(
                    "interpolations",
                    "Latent interpolations",
                    &format!(
                        "From the {} centre cell (the cell whose profile is nearest its treatment's profile) to each \
                         target treatment's centre cell: the two originals at the ends, the decoder's images of evenly \
                         spaced points between their profiles in between (clipped to [0, 1], no wrap-around).",
                        cli.control
                    ),
                    &rows,
                    &labels,
                    2,
                )?);
                }
            }
        } else {
            notes.push(
            "No reconstructions or interpolations: they need --decoder, --cells and --embeddings."
                .into(),
        );
        }

        // MoA × latent-dimension correlations over single cells.
        if let Some(embeddings) = &embeddings {
            match analysis::moa_latent_correlation(embeddings) {
                Some((moas, matrix, order)) => {
                    let colour_max = matrix.iter().flatten().copied().fold(0.3, f64::max);
                    let sorted: Vec<Vec<f64>> = matrix
                        .iter()
                        .map(|row| order.iter().map(|&dim| row[dim]).collect())
                        .collect();
                    figures.push(figures::matrix(
                    "moa_latent_heatmap",
                    "MoA × latent dimension",
                    "Absolute Pearson correlation between each MoA's indicator and each latent dimension over single \
                     cells; dimensions sorted by their total correlation, most informative first (as the seed).",
                    &sorted,
                    &moas,
                    None,
                    colour_max,
                    false,
                )?);
                }
                None => notes.push(
                    "No MoA × latent heatmap: the embeddings hold fewer than two MoAs.".into(),
                ),
            }
            active_table = analysis::active_fraction(embeddings);
        }
    }

    // Confusion matrices and recall (a learned or a CellProfiler-feature run alike).
    if let Some(path) = &cli.predictions {
        for (protocol, classes, counts) in inputs::confusion_matrices(path)? {
            let values: Vec<Vec<f64>> = counts
                .iter()
                .map(|row| row.iter().map(|&count| count as f64).collect())
                .collect();
            let colour_max = values.iter().flatten().copied().fold(1.0, f64::max);
            figures.push(figures::matrix(
                &format!("confusion_{}", protocol.to_lowercase()),
                &format!("Confusion matrix, {protocol}"),
                &format!("Treatments by true MoA (rows) and predicted MoA (columns) under the {protocol} hold-out; counts."),
                &values,
                &classes,
                Some(&classes),
                colour_max,
                true,
            )?);
            let recall: Vec<(String, usize, usize)> = classes
                .iter()
                .enumerate()
                .map(|(index, class)| {
                    (
                        class.clone(),
                        counts[index][index],
                        counts[index].iter().sum(),
                    )
                })
                .collect();
            recall_tables.push((protocol, recall));
        }
    }

    // 2-D maps of the treatment profiles: PCA, and t-SNE as the field expects beside it.
    if let Some(path) = &cli.treatments {
        let input = analysis::treatment_map_input(path, &cli.control)?;
        let (points, explained) = analysis::treatment_pca(&input);
        if points.len() >= 3 {
            figures.push(figures::scatter(
                    "treatment_map",
                    "Treatment profiles, PCA",
                    "Every treatment profile (the control excluded) projected on the first two principal components, \
                     coloured by MoA.",
                    &points,
                    &input.moas,
                    (
                        &format!("PC1 ({:.0} %)", 100.0 * explained.0),
                        &format!("PC2 ({:.0} %)", 100.0 * explained.1),
                    ),
                )?);
            let tsne = analysis::treatment_tsne(&input, &points);
            match &tsne {
                    Some(tsne) => figures.push(figures::scatter(
                        "treatment_tsne",
                        "Treatment profiles, t-SNE",
                        &format!(
                            "Exact t-SNE of the L2-normalised treatment profiles (distances rank pairs as pf-classify's \
                             cosine does), perplexity {:.0}, 1000 iterations, initialised from the PCA map as \
                             scikit-learn's init=\"pca\"; coloured by MoA. Neighbourhoods are meaningful, distances \
                             between clusters and cluster sizes are not. Coordinates in treatment_map.csv.",
                            analysis::tsne_perplexity(input.profiles.len())
                        ),
                        tsne,
                        &input.moas,
                        ("t-SNE 1", "t-SNE 2"),
                    )?),
                    None => notes.push(format!(
                        "No t-SNE map: {} treatments; it is drawn for {} to {}.",
                        input.profiles.len(),
                        analysis::TSNE_MIN_POINTS,
                        analysis::TSNE_MAX_POINTS
                    )),
                }
            map_csv = Some(analysis::treatment_map_csv(
                &input,
                &points,
                tsne.as_deref(),
            ));
        }
    }

    // Supervised classifiers (pf-train cnn / resnet18, pf-baseline): a confusion matrix each.
    let mut supervised = Vec::new();
    for path in &cli.classifier_metrics {
        let result = read_classifier_metrics(path)?;
        // pf-classify's MoA metrics share the table kind; their protocols are NSC / NSCB.
        if result.classifier.is_empty() || result.protocol.starts_with("NSC") {
            return Err(InputError(format!(
                "{}: the metrics of pf-classify's 1-NN MoA protocol ({}), not of a supervised classifier \
                 (pf-train --model cnn|resnet18, pf-baseline); give it as --metrics",
                path.display(),
                if result.protocol.is_empty() { "no classifier recorded" } else { &result.protocol }
            ))
            .into());
        }
        if result.evaluation.classes.is_empty() {
            return Err(InputError(format!(
                "{}: no per-class rows; not the metrics of a supervised classifier (pf-train --model cnn|resnet18, pf-baseline)",
                path.display()
            ))
            .into());
        }
        let values: Vec<Vec<f64>> = result
            .evaluation
            .confusion
            .iter()
            .map(|row| row.iter().map(|&count| count as f64).collect())
            .collect();
        let colour_max = values.iter().flatten().copied().fold(1.0, f64::max);
        let name = if result.classifier.is_empty() {
            "classifier".to_string()
        } else {
            result.classifier.clone()
        };
        figures.push(figures::matrix(
            &format!(
                "confusion_{}",
                name.replace(|c: char| !c.is_ascii_alphanumeric(), "_")
            ),
            &format!("Confusion matrix, {name}"),
            &format!(
                "Held-out images by true {} (rows) and predicted (columns), {} split; counts.",
                result.label_column, result.protocol
            ),
            &values,
            &result.evaluation.classes,
            Some(&result.evaluation.classes),
            colour_max,
            true,
        )?);
        log_paths.push(path.clone());
        supervised.push(result);
    }

    let metrics = match &cli.metrics {
        Some(path) => inputs::read_metrics(path)?,
        None => Vec::new(),
    };
    let summary = match &cli.metrics_summary {
        Some(path) => inputs::read_metrics_summary(path)?,
        None => Vec::new(),
    };
    let mut compared: Vec<(&str, Vec<inputs::MetricRow>)> = Vec::new();
    if !metrics.is_empty() {
        compared.push((cli.metrics_label.as_str(), metrics.clone()));
    }
    for (label, path) in &cli.compare_metrics {
        compared.push((label.as_str(), inputs::read_metrics(path)?));
    }
    for (name, path) in [
        ("hand-crafted features", &cli.baseline_metrics),
        (
            "oracle (the drawn phenotype parameters)",
            &cli.oracle_metrics,
        ),
    ] {
        if let Some(path) = path {
            compared.push((name, inputs::read_metrics(path)?));
        }
    }
    let mut provenance: BTreeMap<String, String> = BTreeMap::new();
    for path in cli
        .cells
        .iter()
        .chain(&cli.embeddings)
        .chain(cli.treatments.iter())
        .chain(cli.predictions.iter())
        .chain(cli.metrics.iter())
        .chain(cli.metrics_summary.iter())
        .chain(cli.baseline_metrics.iter())
        .chain(cli.oracle_metrics.iter())
        .chain(cli.compare_metrics.iter().map(|(_, path)| path))
        .chain(log_paths.iter())
    {
        if let Some(record) = phenoflow_schemas::read_provenance(path)? {
            provenance.insert(
                path.display().to_string(),
                format!(
                    "{} {} (params {})",
                    record.stage,
                    record.stage_version,
                    &record.params_hash()[..12]
                ),
            );
        }
    }
    let step_times = match &cli.pipeline {
        Some(path) => step_times(path),
        None => Vec::new(),
    };
    let pipeline_text = match &cli.pipeline {
        Some(path) => Some(
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?,
        ),
        None => None,
    };

    std::fs::create_dir_all(&cli.output)
        .with_context(|| format!("creating {}", cli.output.display()))?;
    if let Some(text) = &map_csv {
        let path = cli.output.join("treatment_map.csv");
        phenoflow_schemas::atomic_write(&path, text.as_bytes())
            .with_context(|| format!("writing {}", path.display()))?;
    }
    for figure in &figures {
        let path = cli.output.join(format!("{}.png", figure.name));
        phenoflow_schemas::atomic_write(&path, &figure.png)
            .with_context(|| format!("writing {}", path.display()))?;
    }
    let page = html::page(&html::Report {
        card: card.as_ref(),
        supervised: &supervised,
        figures: &figures,
        metrics: &metrics,
        summary: &summary,
        compared: &compared,
        recall: &recall_tables,
        active: active_table.as_ref(),
        provenance: &provenance,
        pipeline: pipeline_text.as_deref(),
        step_times: &step_times,
        notes: &notes,
    });
    let report_path = cli.output.join("report.html");
    phenoflow_schemas::atomic_write(&report_path, page.as_bytes())
        .with_context(|| format!("writing {}", report_path.display()))?;
    eprintln!(
        "pf-report: {} figures → {}",
        figures.len(),
        report_path.display()
    );
    Ok(())
}

/// Each step of the pipeline file that pf-run has recorded under its workdir: (step, stage,
/// concrete steps recorded of all, summed wall seconds when every one recorded its time), planned
/// with the overrides of pf-run's latest run (`--set`, `--seeds`, `--shards`), so its steps are
/// the ones counted. A pipeline that does not parse gives none, with a line on stderr.
fn step_times(path: &std::path::Path) -> Vec<html::StepTime> {
    use phenoflow_schemas::pipeline::{Overrides, Pipeline};
    let planned = Pipeline::read(path).and_then(|pipeline| {
        let overrides = std::fs::read(pipeline.overrides_path())
            .ok()
            .and_then(|bytes| serde_json::from_slice::<Overrides>(&bytes).ok());
        match overrides {
            Some(overrides) => Pipeline::read_overridden(path, &overrides),
            None => Ok(pipeline),
        }
    });
    let pipeline = match planned {
        Ok(pipeline) => pipeline,
        Err(error) => {
            eprintln!("pf-report: no wall times per step: {error}");
            return Vec::new();
        }
    };
    pipeline
        .specs
        .iter()
        .filter_map(|spec| {
            let steps: Vec<_> = pipeline
                .steps
                .iter()
                .filter(|step| step.spec_name == spec.name)
                .collect();
            let records: Vec<_> = steps
                .iter()
                .filter_map(|step| {
                    phenoflow_schemas::pipeline::StepRecord::read(&pipeline.record_path(step))
                })
                .collect();
            if records.is_empty() {
                return None;
            }
            let seconds: Option<Vec<f64>> = records.iter().map(|record| record.seconds).collect();
            Some(html::StepTime {
                step: spec.name.clone(),
                stage: spec.stage.clone(),
                recorded: records.len(),
                of: steps.len(),
                seconds: seconds.map(|all| all.iter().sum()),
            })
        })
        .collect()
}
