//! The sections of the report, one function each: what the model learned (learning curves,
//! reconstructions and latent interpolations, the MoA × latent heatmap), the MoA confusion
//! matrices, the maps of the treatment profiles, the supervised classifiers, the metrics beside
//! each other, and the provenance of every input. Each adds its figures and notes to a [`Page`].

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use phenoflow_evaluation::classification::{read_classifier_metrics, ClassifierResult};
use phenoflow_schemas::metrics::MetricSummary;
use phenoflow_schemas::{InputError, ModelCard};

use crate::args::Cli;
use crate::figures::{Figure, Tile};
use crate::inputs::{CellKey, Embeddings, MetricRow};
use crate::{analysis, figures, html, inputs, tile, Decoder};

/// What the sections gathered for the page.
#[derive(Debug, Default)]
pub(crate) struct Page {
    pub figures: Vec<Figure>,
    pub notes: Vec<String>,
    /// The maps' coordinates, written beside the report as treatment_map.csv.
    pub map_csv: Option<String>,
    pub recall: Vec<html::Recall>,
    pub active: Option<Vec<(String, f64, usize)>>,
    /// Inputs read from beside the model card or given as classifier metrics, for the provenance.
    pub log_paths: Vec<PathBuf>,
    pub supervised: Vec<ClassifierResult>,
}

/// The generative model's run: learning curves, reconstructions and interpolations (with a
/// decoder, cells and embeddings), the MoA × latent-dimension heatmap, the active dimensions.
pub(crate) fn model(
    cli: &Cli,
    card: &ModelCard,
    card_path: &Path,
    page: &mut Page,
) -> anyhow::Result<()> {
    let model_dir = card_path.parent().unwrap_or(Path::new("."));
    // Learning curves.
    let log_path = model_dir.join("training_log.parquet");
    page.log_paths.push(log_path.clone());
    let log = inputs::read_training_log(&log_path)?;
    page.figures.push(figures::learning_curves(&log)?);

    let embeddings = if cli.embeddings.is_empty() {
        None
    } else {
        Some(Embeddings::read(&cli.embeddings)?)
    };
    // Reconstructions and interpolations need images, profiles and the decoder.
    if let (Some(embeddings), Some(decoder), false) =
        (&embeddings, &cli.decoder, cli.cells.is_empty())
    {
        decoded(cli, card, embeddings, decoder, page)?;
    } else {
        page.notes.push(
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
                page.figures.push(figures::matrix(
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
            None => page
                .notes
                .push("No MoA × latent heatmap: the embeddings hold fewer than two MoAs.".into()),
        }
        page.active = analysis::active_fraction(embeddings);
    }
    Ok(())
}

/// Reconstructions of cells decoded from their profiles, and interpolations from the control's
/// centre cell to each target treatment's.
fn decoded(
    cli: &Cli,
    card: &ModelCard,
    embeddings: &Embeddings,
    decoder: &Path,
    page: &mut Page,
) -> anyhow::Result<()> {
    let plane = card.input_shape.iter().product::<i64>() as usize;
    let latent_dim = card.hyperparameters.latent_dim as usize;
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
            page.notes.push(format!(
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
    page.figures.push(figures::tile_grid(
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
            page.figures.push(figures::tile_grid(
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
    Ok(())
}

/// Confusion matrices and recall per MoA (a learned or a CellProfiler-feature run alike).
pub(crate) fn confusion(path: &Path, page: &mut Page) -> anyhow::Result<()> {
    for (protocol, classes, counts) in inputs::confusion_matrices(path)? {
        let values: Vec<Vec<f64>> = counts
            .iter()
            .map(|row| row.iter().map(|&count| count as f64).collect())
            .collect();
        let colour_max = values.iter().flatten().copied().fold(1.0, f64::max);
        page.figures.push(figures::matrix(
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
        page.recall.push((protocol, recall));
    }

    Ok(())
}

/// 2-D maps of the treatment profiles: PCA, and t-SNE as the field expects beside it.
pub(crate) fn treatment_maps(cli: &Cli, path: &Path, page: &mut Page) -> anyhow::Result<()> {
    let input = analysis::treatment_map_input(path, &cli.control)?;
    let (points, explained) = analysis::treatment_pca(&input);
    if points.len() >= 3 {
        page.figures.push(figures::scatter(
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
                    Some(tsne) => page.figures.push(figures::scatter(
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
                    None => page.notes.push(format!(
                        "No t-SNE map: {} treatments; it is drawn for {} to {}.",
                        input.profiles.len(),
                        analysis::TSNE_MIN_POINTS,
                        analysis::TSNE_MAX_POINTS
                    )),
                }
        page.map_csv = Some(analysis::treatment_map_csv(
            &input,
            &points,
            tsne.as_deref(),
        ));
    }

    Ok(())
}

/// Supervised classifiers (pf-train cnn / resnet18, pf-baseline): a confusion matrix each.
pub(crate) fn supervised(cli: &Cli, page: &mut Page) -> anyhow::Result<()> {
    for path in &cli.classifier_metrics {
        let result = read_classifier_metrics(path)?;
        // pf-classify's MoA metrics share the table kind; their protocols are NSC / NSCB.
        if result.classifier.is_empty() || result.protocol.starts_with("NSC") {
            return Err(InputError(format!(
                "{}: the metrics of pf-classify's 1-NN MoA protocol ({}), not of a supervised classifier \
                 (pf-train classifier, pf-baseline); give it as --metrics",
                path.display(),
                if result.protocol.is_empty() { "no classifier recorded" } else { &result.protocol }
            ))
            .into());
        }
        if result.evaluation.classes.is_empty() {
            return Err(InputError(format!(
                "{}: no per-class rows; not the metrics of a supervised classifier (pf-train classifier, pf-baseline)",
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
        page.figures.push(figures::matrix(
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
        page.log_paths.push(path.clone());
        page.supervised.push(result);
    }

    Ok(())
}

/// pf-classify's metrics of this run, the spread of its replicates, and other runs of the same
/// screen beside it (compared runs, hand-crafted features, the oracle last).
#[derive(Debug)]
pub(crate) struct Metrics<'a> {
    pub metrics: Vec<MetricRow>,
    pub summary: Vec<MetricSummary>,
    pub compared: Vec<(&'a str, Vec<MetricRow>)>,
}

impl<'a> Metrics<'a> {
    pub fn read(cli: &'a Cli) -> anyhow::Result<Self> {
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
        Ok(Self {
            metrics,
            summary,
            compared,
        })
    }
}

/// Stage, version and parameters of every input that records them, by path.
pub(crate) fn provenance(
    cli: &Cli,
    log_paths: &[PathBuf],
) -> anyhow::Result<BTreeMap<String, String>> {
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
        .chain(log_paths)
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
    Ok(provenance)
}
