//! `pf-report`: the figures a biologist looks at after a profiling run, in one self-contained
//! HTML file (images embedded) with PNGs beside it for papers. No Python at report time: tables
//! are read with phenoflow-schemas, figures drawn with plotters, and the decoder run with ONNX
//! Runtime for reconstructions and latent interpolations.

pub mod analysis;
pub mod args;
pub mod figures;
pub mod html;
pub mod inputs;
mod sections;

use std::path::Path;

use anyhow::{anyhow, Context};
use phenoflow_schemas::{InputError, ModelCard};

use crate::args::Cli;
use crate::figures::Tile;

/// The exported decoder in an ONNX Runtime session.
pub(crate) struct Decoder {
    path: std::path::PathBuf,
    session: phenoflow_onnx::Session,
    latent_dim: usize,
    // Sessions need their environment alive; ONNX Runtime allows one per process.
    _environment: phenoflow_onnx::Environment,
}

impl Decoder {
    fn open(path: &Path, card: &ModelCard) -> anyhow::Result<Self> {
        let environment = phenoflow_onnx::start()?;
        let session = phenoflow_onnx::open(
            &environment,
            path,
            "decoder",
            phenoflow_onnx::SessionOptions::default(),
        )?;
        let names = phenoflow_onnx::input_names(&session);
        if !names.iter().any(|name| name == "z") {
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
    let card = cli.model_card.as_deref().map(ModelCard::read).transpose()?;
    let mut page = sections::Page::default();
    if let (Some(card), Some(card_path)) = (card.as_ref(), cli.model_card.as_ref()) {
        sections::model(&cli, card, card_path, &mut page)?;
    }
    if let Some(path) = &cli.predictions {
        sections::confusion(path, &mut page)?;
    }
    if let Some(path) = &cli.treatments {
        sections::treatment_maps(&cli, path, &mut page)?;
    }
    sections::supervised(&cli, &mut page)?;
    let metrics = sections::Metrics::read(&cli)?;
    let provenance = sections::provenance(&cli, &page.log_paths)?;
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
    let page_html = html::page(&html::Report {
        card: card.as_ref(),
        supervised: &page.supervised,
        figures: &page.figures,
        metrics: &metrics.metrics,
        summary: &metrics.summary,
        compared: &metrics.compared,
        recall: &page.recall,
        active: page.active.as_ref(),
        provenance: &provenance,
        pipeline: pipeline_text.as_deref(),
        step_times: &step_times,
        notes: &page.notes,
    });
    write(&cli.output, &page, &page_html)
}

/// The report folder: treatment_map.csv, a PNG per figure, report.html last.
fn write(output: &Path, page: &sections::Page, html: &str) -> anyhow::Result<()> {
    std::fs::create_dir_all(output).with_context(|| format!("creating {}", output.display()))?;
    if let Some(text) = &page.map_csv {
        let path = output.join("treatment_map.csv");
        phenoflow_schemas::atomic_write(&path, text.as_bytes())
            .with_context(|| format!("writing {}", path.display()))?;
    }
    for figure in &page.figures {
        let path = output.join(format!("{}.png", figure.name));
        phenoflow_schemas::atomic_write(&path, &figure.png)
            .with_context(|| format!("writing {}", path.display()))?;
    }
    let report_path = output.join("report.html");
    phenoflow_schemas::atomic_write(&report_path, html.as_bytes())
        .with_context(|| format!("writing {}", report_path.display()))?;
    eprintln!(
        "pf-report: {} figures → {}",
        page.figures.len(),
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
