//! `pf-export`: writes the encoder and the decoder of a `pf-train` checkpoint as standard ONNX
//! models (opset 18, dynamic batch axis, named inputs and outputs, batch norm in inference mode as
//! `BatchNormalization`, the model card in the metadata), with no libtorch: the weights are read
//! from the safetensors checkpoint and the graph is the one `pf-train` builds, from the same
//! sizes (`phenoflow_schemas::architecture`).

pub mod args;
pub mod onnx;

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use anyhow::Context;
use phenoflow_schemas::architecture::{
    self, SpikeExpectation, BATCH_NORM_EPSILON, KERNEL, LEAKY_SLOPE,
};
use phenoflow_schemas::model_card::onnx_metadata;
use phenoflow_schemas::{InputError, ModelCard};
use prost::Message;

use crate::args::Cli;
use crate::onnx::{
    attribute_float, attribute_int, attribute_ints, attribute_string, batched_value, GraphBuilder,
};

/// Names of the graphs' inputs and outputs (pf-embed and pf-report rely on them).
pub const ENCODER_INPUT: &str = "cells";
pub const ENCODER_OUTPUTS: [&str; 4] = ["mu", "log_sigma", "gamma", SPIKE_MEAN_OUTPUT];

/// The encoder output of a sparse model holding E[s], the spike selector's expectation under
/// the model card's sampler (`phenoflow_schemas::architecture::SpikeExpectation`).
pub const SPIKE_MEAN_OUTPUT: &str = "spike_mean";

/// Adds the nodes computing `spike_mean` from `log_gamma_raw` (uncapped) or `capped` (the VSC
/// sampler's log γ ≤ 0), as pf-train's `SpikeSampler::expectation` does in libtorch.
fn spike_mean(graph: &mut GraphBuilder, expectation: SpikeExpectation, capped: &str) {
    match expectation {
        SpikeExpectation::Vsc { temperature } => {
            // (softplus(c·γ) − softplus(c·(γ − 1))) / c
            let c = graph.float_initializer("spike_temperature", &[], &[temperature as f32]);
            let one = graph.float_initializer("spike_one", &[], &[1.0]);
            let gamma = graph.node("Exp", &[capped], vec![]);
            let scaled = graph.node("Mul", &[&gamma, &c], vec![]);
            let upper = graph.node("Softplus", &[&scaled], vec![]);
            let shifted = graph.node("Sub", &[&gamma, &one], vec![]);
            let shifted = graph.node("Mul", &[&shifted, &c], vec![]);
            let lower = graph.node("Softplus", &[&shifted], vec![]);
            let difference = graph.node("Sub", &[&upper, &lower], vec![]);
            graph.node_with_outputs("Div", &[&difference, &c], &[SPIKE_MEAN_OUTPUT], vec![]);
        }
        SpikeExpectation::Dtu => {
            // Σᵢ weightᵢ · sigmoid(exp(log γ) − 1 + nodeᵢ) over the Gauss–Hermite rule.
            let (nodes, weights) = phenoflow_schemas::architecture::standard_normal_rule();
            let k = nodes.len() as i64;
            let as_f32 = |values: &[f64]| values.iter().map(|v| *v as f32).collect::<Vec<_>>();
            let nodes = graph.float_initializer("spike_nodes", &[k], &as_f32(&nodes));
            let weights = graph.float_initializer("spike_weights", &[k], &as_f32(&weights));
            let one = graph.float_initializer("spike_one", &[], &[1.0]);
            let last = graph.int64_initializer("spike_axis", &[1], &[2]);
            let gamma = graph.node("Exp", &["log_gamma_raw"], vec![]);
            let shifted = graph.node("Sub", &[&gamma, &one], vec![]);
            let column = graph.node("Unsqueeze", &[&shifted, &last], vec![]);
            let arguments = graph.node("Add", &[&column, &nodes], vec![]);
            let selectors = graph.node("Sigmoid", &[&arguments], vec![]);
            let weighted = graph.node("Mul", &[&selectors, &weights], vec![]);
            graph.node_with_outputs(
                "ReduceSum",
                &[&weighted, &last],
                &[SPIKE_MEAN_OUTPUT],
                vec![attribute_int("keepdims", 0)],
            );
        }
    }
}
pub const DECODER_INPUT: &str = "z";
pub const DECODER_OUTPUT: &str = "reconstruction";

/// The float tensors of a checkpoint, by name.
pub struct Weights {
    path: PathBuf,
    tensors: HashMap<String, (Vec<i64>, Vec<f32>)>,
}

impl std::fmt::Debug for Weights {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            formatter,
            "Weights({}, {} tensors)",
            self.path.display(),
            self.tensors.len()
        )
    }
}

impl Weights {
    /// Reads every float32 tensor of a safetensors file; errors name the file.
    pub fn read(path: &Path) -> anyhow::Result<Self> {
        let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
        let file = safetensors::SafeTensors::deserialize(&bytes).map_err(|error| {
            InputError(format!(
                "{}: not a readable safetensors checkpoint (truncated or corrupt?): {error:?}",
                path.display()
            ))
        })?;
        let mut tensors = HashMap::new();
        for (name, view) in file.tensors() {
            if view.dtype() != safetensors::Dtype::F32 {
                continue;
            }
            let values = view
                .data()
                .chunks_exact(4)
                .map(|bytes| f32::from_le_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]))
                .collect();
            let shape = view.shape().iter().map(|&dim| dim as i64).collect();
            tensors.insert(name, (shape, values));
        }
        Ok(Self {
            path: path.to_path_buf(),
            tensors,
        })
    }

    /// The tensor `name`, which must have `shape`.
    fn get(&self, name: &str, shape: &[i64]) -> anyhow::Result<&[f32]> {
        let (found_shape, values) = self.tensors.get(name).ok_or_else(|| {
            InputError(format!(
                "{}: checkpoint has no float32 tensor `{name}` (does it belong to this model card?)",
                self.path.display()
            ))
        })?;
        if found_shape != shape {
            return Err(InputError(format!(
                "{}: tensor `{name}` has shape {found_shape:?}, the model card implies {shape:?}",
                self.path.display()
            ))
            .into());
        }
        Ok(values)
    }
}

/// Adds `prefix.weight` / `prefix.bias` as a convolution.
fn convolution(
    graph: &mut GraphBuilder,
    weights: &Weights,
    input: &str,
    prefix: &str,
    shape: [i64; 4],
    padding: i64,
) -> anyhow::Result<String> {
    let weight_name = format!("{prefix}.weight");
    let bias_name = format!("{prefix}.bias");
    let weight = graph.float_initializer(&weight_name, &shape, weights.get(&weight_name, &shape)?);
    let bias = graph.float_initializer(
        &bias_name,
        &shape[..1],
        weights.get(&bias_name, &shape[..1])?,
    );
    Ok(graph.node(
        "Conv",
        &[input, &weight, &bias],
        vec![
            attribute_ints("kernel_shape", &shape[2..]),
            attribute_ints("pads", &[padding, padding, padding, padding]),
        ],
    ))
}

/// Adds `prefix.{weight,bias,running_mean,running_var}` as inference-mode batch norm.
fn batch_norm(
    graph: &mut GraphBuilder,
    weights: &Weights,
    input: &str,
    prefix: &str,
    channels: i64,
) -> anyhow::Result<String> {
    let mut inputs = vec![input.to_string()];
    for part in ["weight", "bias", "running_mean", "running_var"] {
        let name = format!("{prefix}.{part}");
        inputs.push(graph.float_initializer(&name, &[channels], weights.get(&name, &[channels])?));
    }
    let inputs: Vec<&str> = inputs.iter().map(String::as_str).collect();
    Ok(graph.node(
        "BatchNormalization",
        &inputs,
        vec![attribute_float("epsilon", BATCH_NORM_EPSILON as f32)],
    ))
}

fn leaky_relu(graph: &mut GraphBuilder, input: &str) -> String {
    graph.node(
        "LeakyRelu",
        &[input],
        vec![attribute_float("alpha", LEAKY_SLOPE as f32)],
    )
}

fn metadata(card: &ModelCard, role: &str) -> Vec<(String, String)> {
    vec![
        (
            onnx_metadata::MODEL_CARD.into(),
            serde_json::to_string(card).expect("a model card serialises"),
        ),
        (onnx_metadata::ROLE.into(), role.into()),
        (onnx_metadata::MODEL.into(), card.model.name().into()),
    ]
}

/// The encoder: normalised cells `[N, C, H, W]` → μ, log σ (clamped as in training) and, for
/// sparse models, γ = exp(min(log γ, 0)), each `[N, L]`.
pub fn encoder_model(card: &ModelCard, weights: &Weights) -> anyhow::Result<onnx::ModelProto> {
    let [channels, height, width] = card.input_shape;
    let latent = card.hyperparameters.latent_dim;
    let hidden = architecture::HIDDEN_CHANNELS;
    let mut graph = GraphBuilder::default();
    let mut x = ENCODER_INPUT.to_string();
    let mut in_channels = channels;
    for block in 0..3 {
        x = convolution(
            &mut graph,
            weights,
            &x,
            &format!("encoder.conv{block}"),
            [hidden, in_channels, KERNEL, KERNEL],
            0,
        )?;
        x = graph.node(
            "MaxPool",
            &[&x],
            vec![
                attribute_ints("kernel_shape", &[2, 2]),
                attribute_ints("strides", &[2, 2]),
            ],
        );
        x = leaky_relu(&mut graph, &x);
        x = batch_norm(
            &mut graph,
            weights,
            &x,
            &format!("encoder.norm{block}"),
            hidden,
        )?;
        in_channels = hidden;
    }
    let n_heads = card.model.n_heads();
    let [kernel_h, kernel_w] = architecture::head_kernel(height, width);
    x = convolution(
        &mut graph,
        weights,
        &x,
        "encoder.head",
        [n_heads * latent, hidden, kernel_h, kernel_w],
        0,
    )?;
    x = batch_norm(
        &mut graph,
        weights,
        &x,
        "encoder.head_norm",
        n_heads * latent,
    )?;
    x = graph.node("Flatten", &[&x], vec![attribute_int("axis", 1)]);
    let split = graph.int64_initializer("head_split", &[n_heads], &vec![latent; n_heads as usize]);
    let heads: Vec<String> = ["mu", "log_sigma_raw", "log_gamma_raw"][..n_heads as usize]
        .iter()
        .map(|name| name.to_string())
        .collect();
    let head_refs: Vec<&str> = heads.iter().map(String::as_str).collect();
    graph.node_with_outputs(
        "Split",
        &[&x, &split],
        &head_refs,
        vec![attribute_int("axis", 1)],
    );
    let limit = card.hyperparameters.log_sigma_limit as f32;
    let low = graph.float_initializer("log_sigma_min", &[], &[-limit]);
    let high = graph.float_initializer("log_sigma_max", &[], &[limit]);
    graph.node_with_outputs(
        "Clip",
        &["log_sigma_raw", &low, &high],
        &["log_sigma"],
        vec![],
    );
    let mut outputs = vec![
        batched_value("mu", &[latent]),
        batched_value("log_sigma", &[latent]),
    ];
    if let Some(expectation) = card.spike_expectation() {
        let zero = graph.float_initializer("log_gamma_max", &[], &[0.0]);
        let capped = graph.node("Clip", &["log_gamma_raw", "", &zero], vec![]);
        graph.node_with_outputs("Exp", &[&capped], &["gamma"], vec![]);
        outputs.push(batched_value("gamma", &[latent]));
        spike_mean(&mut graph, expectation, &capped);
        outputs.push(batched_value(SPIKE_MEAN_OUTPUT, &[latent]));
    }
    let doc = format!(
        "{} encoder from pf-train: input `cells` [batch, {channels}, {height}, {width}] float32, normalised as the \
         model card's `normalization` says; outputs the posterior mean `mu`, `log_sigma`{}",
        card.model.name(),
        if card.model.is_sparse() {
            ", the spike probabilities `gamma` and `spike_mean`, the expectation of the spike selector under the \
             model's sampler (the profile is mu · spike_mean)"
        } else {
            ""
        }
    );
    Ok(graph.into_model(
        "encoder",
        vec![batched_value(ENCODER_INPUT, &[channels, height, width])],
        outputs,
        &doc,
        metadata(card, onnx_metadata::ENCODER),
    ))
}

/// The decoder: latent vectors `z` `[N, L]` → reconstructions `[N, C, H, W]`.
pub fn decoder_model(card: &ModelCard, weights: &Weights) -> anyhow::Result<onnx::ModelProto> {
    let [channels, height, width] = card.input_shape;
    let latent = card.hyperparameters.latent_dim;
    let hidden = architecture::HIDDEN_CHANNELS;
    let mut graph = GraphBuilder::default();
    let shape = graph.int64_initializer("latent_shape", &[4], &[-1, latent, 1, 1]);
    let mut x = graph.node("Reshape", &[DECODER_INPUT, &shape], vec![]);
    let targets = architecture::upsample_targets(height, width);
    let mut in_channels = latent;
    for block in 0..4 {
        x = convolution(
            &mut graph,
            weights,
            &x,
            &format!("decoder.conv{block}"),
            [hidden, in_channels, KERNEL, KERNEL],
            KERNEL - 1,
        )?;
        x = batch_norm(
            &mut graph,
            weights,
            &x,
            &format!("decoder.norm{block}"),
            hidden,
        )?;
        x = leaky_relu(&mut graph, &x);
        if let Some(target) = targets.get(block) {
            // PyTorch's nearest upsampling to a size reads source pixel floor(dst · in / out).
            let sizes = graph.int64_initializer(&format!("upsample{block}_sizes"), &[2], target);
            x = graph.node(
                "Resize",
                &[&x, "", "", &sizes],
                vec![
                    attribute_ints("axes", &[2, 3]),
                    attribute_string("mode", "nearest"),
                    attribute_string("coordinate_transformation_mode", "asymmetric"),
                    attribute_string("nearest_mode", "floor"),
                ],
            );
        }
        in_channels = hidden;
    }
    x = convolution(
        &mut graph,
        weights,
        &x,
        "decoder.head",
        [channels, hidden, 1, 1],
        0,
    )?;
    graph.node_with_outputs(
        "LeakyRelu",
        &[&x],
        &[DECODER_OUTPUT],
        vec![attribute_float("alpha", LEAKY_SLOPE as f32)],
    );
    let doc = format!(
        "{} decoder from pf-train: input `z` [batch, {latent}] float32 (a profile vector: mu, or mu·spike_mean for \
         sparse models); output `reconstruction` [batch, {channels}, {height}, {width}] in normalised intensities",
        card.model.name()
    );
    Ok(graph.into_model(
        "decoder",
        vec![batched_value(DECODER_INPUT, &[latent])],
        vec![batched_value(DECODER_OUTPUT, &[channels, height, width])],
        &doc,
        metadata(card, onnx_metadata::DECODER),
    ))
}

pub fn run(cli: Cli) -> anyhow::Result<()> {
    phenoflow_schemas::check_outputs_are_not_inputs(
        &[("--encoder", &cli.encoder), ("--decoder", &cli.decoder)],
        &[&cli.model_card],
    )?;
    let card = ModelCard::read(&cli.model_card)?;
    if card.epochs_completed < card.hyperparameters.epochs && !cli.allow_unfinished {
        return Err(InputError(format!(
            "{}: training stopped after epoch {} of {} (killed, failed or still running); finish it with \
             pf-train generative --resume, or export it as it is with --allow-unfinished",
            cli.model_card.display(),
            card.epochs_completed,
            card.hyperparameters.epochs
        ))
        .into());
    }
    let checkpoint = card.checkpoint_path(&cli.model_card);
    let weights = Weights::read(&checkpoint)?;
    let [_, height, width] = card.input_shape;
    architecture::check(height, width)
        .map_err(|reason| InputError(format!("{}: {reason}", cli.model_card.display())))?;
    for (path, model) in [
        (&cli.encoder, encoder_model(&card, &weights)?),
        (&cli.decoder, decoder_model(&card, &weights)?),
    ] {
        phenoflow_schemas::atomic_write(path, &model.encode_to_vec())
            .with_context(|| format!("writing {}", path.display()))?;
    }
    eprintln!(
        "pf-export: {} ({} epochs) → {} and {}",
        card.model.name(),
        card.epochs_completed,
        cli.encoder.display(),
        cli.decoder.display()
    );
    Ok(())
}
