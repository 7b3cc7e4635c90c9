//! ONNX Runtime as the stages that run exported models start it (`pf-embed` runs encoders,
//! `pf-report` decoders): the library loaded from `ORT_DYLIB_PATH` (`make setup` writes it into
//! `.phenoflow.env`; the conda environment's activation script sets it too), one environment per
//! process, and sessions opened with the same errors everywhere (a missing file or one ONNX
//! Runtime cannot load is bad input, exit code 2, named by path).

use std::path::{Path, PathBuf};

use anyhow::anyhow;
use phenoflow_schemas::InputError;

pub use ort::environment::Environment;
pub use ort::session::Session;

/// Loads ONNX Runtime from `ORT_DYLIB_PATH` and starts its environment (once per process;
/// sessions need it alive).
pub fn start() -> anyhow::Result<Environment> {
    let path = dylib_path()?;
    if !path.exists() {
        return Err(anyhow!("ORT_DYLIB_PATH={}: no such file", path.display()));
    }
    ort::init_from(&path)
        .map_err(|error| anyhow!("loading ONNX Runtime from {}: {error}", path.display()))?
        .with_name("phenoflow")
        .build()
        .map_err(|error| anyhow!("starting ONNX Runtime: {error}"))
}

/// Where ONNX Runtime is loaded from.
pub fn dylib_path() -> anyhow::Result<PathBuf> {
    std::env::var_os("ORT_DYLIB_PATH").map(PathBuf::from).ok_or_else(|| {
        anyhow!("ORT_DYLIB_PATH is not set: point it at libonnxruntime.so (`make setup` writes it into .phenoflow.env)")
    })
}

/// Whether the loaded ONNX Runtime has a CUDA execution provider (onnxruntime-gpu).
pub fn cuda_built() -> bool {
    use ort::ep::ExecutionProvider;
    ort::ep::CUDA::is_available().unwrap_or(false)
}

/// How a session runs: intra-op threads (0 = ONNX Runtime's default, all cores) and whether on
/// the CUDA execution provider (an error when it cannot be, not a silent fallback).
#[derive(Debug, Clone, Copy, Default)]
pub struct SessionOptions {
    pub threads: usize,
    pub cuda: bool,
}

/// Opens the model at `path` (`what` names it in errors: "encoder", "decoder"): a missing file
/// or one ONNX Runtime cannot load is bad input.
pub fn open(
    environment: &Environment,
    path: &Path,
    what: &str,
    options: SessionOptions,
) -> anyhow::Result<Session> {
    if !path.exists() {
        return Err(InputError(format!("{}: no such {what} file", path.display())).into());
    }
    let mut builder = Session::builder(environment).map_err(|error| anyhow!("{error}"))?;
    if options.threads > 0 {
        builder = builder
            .with_intra_threads(options.threads)
            .map_err(|error| anyhow!("{error}"))?;
    }
    if options.cuda {
        builder = builder
            .with_execution_providers([ort::ep::CUDA::default().build().error_on_failure()])
            .map_err(|error| anyhow!("{error}"))?;
    }
    builder.commit_from_file(path).map_err(|error| {
        InputError(format!(
            "{}: not a loadable ONNX model (truncated or corrupt?): {error}",
            path.display()
        ))
        .into()
    })
}

/// The names of a session's inputs.
pub fn input_names(session: &Session) -> Vec<String> {
    session
        .inputs()
        .iter()
        .map(|input| input.name().to_string())
        .collect()
}
