//! Command-line interface of `pf-export` (clap derive; the doc comments are the help).

use std::path::PathBuf;

use clap::Parser;

#[derive(Debug, Parser)]
#[command(
    name = "pf-export",
    version,
    about = "Write a pf-train model's encoder and decoder as ONNX models",
    long_about = "Read a pf-train model card and its safetensors checkpoint and write the encoder (normalised cells → \
                  mu, log_sigma and, for sparse models, gamma) and the decoder (z → reconstruction) as standard \
                  ONNX models: opset 18, dynamic batch axis, batch norm in inference mode, the model card in the \
                  metadata. No libtorch is needed.",
    after_long_help = "Examples:\n  \
        pf-export --model-card out/cytovae/model_card.json \\\n      \
            --encoder out/cytovae/encoder.onnx --decoder out/cytovae/decoder.onnx"
)]
pub struct Cli {
    /// The model card pf-train wrote (its checkpoint is found beside it).
    #[arg(long)]
    pub model_card: PathBuf,

    /// Where to write the encoder.
    #[arg(long)]
    pub encoder: PathBuf,

    /// Where to write the decoder.
    #[arg(long)]
    pub decoder: PathBuf,

    /// Export a model whose training stopped before its last epoch (by default refused: a
    /// killed or still running pf-train leaves such a card).
    #[arg(long)]
    pub allow_unfinished: bool,
}
