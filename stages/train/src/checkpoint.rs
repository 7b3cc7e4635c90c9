//! Saving and restoring variable stores as safetensors, atomically (temporary file + rename), with
//! every missing or misshapen tensor named.

use std::collections::HashMap;
use std::path::Path;

use tch::{nn, Device, Tensor};

use crate::error::TrainError;

/// The store's variables (parameters and batch-norm statistics) on the CPU, sorted by name,
/// with `prefix` prepended.
pub fn named_tensors(store: &nn::VarStore, prefix: &str) -> Vec<(String, Tensor)> {
    let mut tensors: Vec<(String, Tensor)> = store
        .variables()
        .into_iter()
        .map(|(name, tensor)| {
            (
                format!("{prefix}{name}"),
                tensor.detach().to_device(Device::Cpu).contiguous(),
            )
        })
        .collect();
    tensors.sort_by(|a, b| a.0.cmp(&b.0));
    tensors
}

/// Writes named tensors to `path` through a temporary file.
pub fn write(path: &Path, tensors: &[(String, Tensor)]) -> Result<(), TrainError> {
    let temp = phenoflow_schemas::temp_path_for(path);
    let result = Tensor::write_safetensors(tensors, &temp)
        .map_err(TrainError::from)
        .and_then(|()| {
            std::fs::rename(&temp, path).map_err(|source| TrainError::Io {
                path: path.to_path_buf(),
                source,
            })
        });
    if result.is_err() {
        let _ = std::fs::remove_file(&temp);
    }
    result
}

/// Reads every tensor of a safetensors file; a truncated or foreign file is an error naming it.
pub fn read(path: &Path) -> Result<HashMap<String, Tensor>, TrainError> {
    let tensors = Tensor::read_safetensors(path).map_err(|error| TrainError::Resume {
        path: path.to_path_buf(),
        reason: format!("not a readable safetensors file: {error}"),
    })?;
    Ok(tensors.into_iter().collect())
}

/// Copies `saved[prefix + name]` into each variable of `store`.
pub fn load_into(
    store: &nn::VarStore,
    saved: &HashMap<String, Tensor>,
    prefix: &str,
    path: &Path,
) -> Result<(), TrainError> {
    let bad = |reason: String| TrainError::Resume {
        path: path.to_path_buf(),
        reason,
    };
    tch::no_grad(|| {
        for (name, mut variable) in store.variables() {
            let key = format!("{prefix}{name}");
            let tensor = saved
                .get(&key)
                .ok_or_else(|| bad(format!("missing tensor `{key}`")))?;
            if tensor.size() != variable.size() {
                return Err(bad(format!(
                    "tensor `{key}` has shape {:?}, the model needs {:?}",
                    tensor.size(),
                    variable.size()
                )));
            }
            variable.copy_(tensor);
        }
        Ok(())
    })
}
