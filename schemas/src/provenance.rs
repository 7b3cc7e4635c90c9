//! Provenance carried as Parquet key-value metadata by every table a stage writes: which schema
//! and version, which stage and stage version, the parameters (and their hash), the content
//! hashes of the inputs, and the seed. Enough to tell whether an output is stale and how it was
//! made.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::Path;

use sha2::{Digest, Sha256};

use crate::{SchemaError, TableKind};

const KEY_PREFIX: &str = "phenoflow.";

/// The Parquet key-value pair of a stage-specific fact (`phenoflow.<key>`), as provenance's
/// `extra` entries are stored; for facts known only when a writer finishes.
pub(crate) fn extra_key_value(key: &str, value: &str) -> parquet::file::metadata::KeyValue {
    parquet::file::metadata::KeyValue::new(format!("{KEY_PREFIX}{key}"), value.to_string())
}

/// What a stage records about how it produced a table.
#[derive(Debug, Clone, PartialEq)]
pub struct Provenance {
    pub table: TableKind,
    pub stage: String,
    pub stage_version: String,
    /// Every parameter that changes the output data, as JSON (objects have sorted keys).
    pub params: serde_json::Value,
    /// Input file → BLAKE3 of its content (hex), see [`hash_file`].
    pub inputs: BTreeMap<String, String>,
    pub seed: Option<u64>,
    /// Stage-specific facts (counts of skipped fields, channel names, ...).
    pub extra: BTreeMap<String, String>,
}

impl Provenance {
    pub fn new(
        table: TableKind,
        stage: &str,
        stage_version: &str,
        params: serde_json::Value,
    ) -> Self {
        Self {
            table,
            stage: stage.to_string(),
            stage_version: stage_version.to_string(),
            params,
            inputs: BTreeMap::new(),
            seed: None,
            extra: BTreeMap::new(),
        }
    }

    /// SHA-256 of the canonical JSON of the parameters.
    pub fn params_hash(&self) -> String {
        hash_params(&self.params)
    }

    /// The Parquet key-value pairs, all under the `phenoflow.` prefix.
    pub fn to_key_values(&self) -> Vec<(String, String)> {
        let mut pairs = vec![
            ("schema".to_string(), self.table.name().to_string()),
            (
                "schema_version".to_string(),
                self.table.version().to_string(),
            ),
            ("stage".to_string(), self.stage.clone()),
            ("stage_version".to_string(), self.stage_version.clone()),
            ("params".to_string(), self.params.to_string()),
            ("params_hash".to_string(), self.params_hash()),
            (
                "inputs".to_string(),
                serde_json::to_string(&self.inputs).expect("a string map serialises"),
            ),
        ];
        if let Some(seed) = self.seed {
            pairs.push(("seed".to_string(), seed.to_string()));
        }
        pairs.extend(
            self.extra
                .iter()
                .map(|(key, value)| (key.clone(), value.clone())),
        );
        pairs
            .into_iter()
            .map(|(key, value)| (format!("{KEY_PREFIX}{key}"), value))
            .collect()
    }

    /// Reads provenance back from a file's key-value metadata.
    pub fn from_key_values(
        pairs: &BTreeMap<String, String>,
        path: &Path,
    ) -> Result<Self, SchemaError> {
        let bad = |reason: String| SchemaError::BadProvenance {
            path: path.to_path_buf(),
            reason,
        };
        let get = |key: &str| {
            pairs.get(&format!("{KEY_PREFIX}{key}")).ok_or_else(|| {
                bad(format!(
                    "no `{KEY_PREFIX}{key}` key (not written by phenoflow?)"
                ))
            })
        };
        let table_name = get("schema")?;
        let table = TableKind::from_name(table_name)
            .ok_or_else(|| bad(format!("unknown table `{table_name}`")))?;
        let params = serde_json::from_str(get("params")?)
            .map_err(|error| bad(format!("`params` is not JSON: {error}")))?;
        let inputs = serde_json::from_str(get("inputs")?)
            .map_err(|error| bad(format!("`inputs` is not a JSON object of strings: {error}")))?;
        let seed = match pairs.get(&format!("{KEY_PREFIX}seed")) {
            Some(seed) => Some(
                seed.parse()
                    .map_err(|error| bad(format!("`seed` is not an integer: {error}")))?,
            ),
            None => None,
        };
        const KNOWN: [&str; 8] = [
            "schema",
            "schema_version",
            "stage",
            "stage_version",
            "params",
            "params_hash",
            "inputs",
            "seed",
        ];
        let extra = pairs
            .iter()
            .filter_map(|(key, value)| {
                let key = key.strip_prefix(KEY_PREFIX)?;
                (!KNOWN.contains(&key)).then(|| (key.to_string(), value.clone()))
            })
            .collect();
        Ok(Self {
            table,
            stage: get("stage")?.clone(),
            stage_version: get("stage_version")?.clone(),
            params,
            inputs,
            seed,
            extra,
        })
    }
}

/// SHA-256 (hex) of the canonical JSON text of `params`.
pub fn hash_params(params: &serde_json::Value) -> String {
    hex(&Sha256::digest(params.to_string().as_bytes()))
}

/// BLAKE3 (hex, 256 bits) of a file's content, streamed. BLAKE3 rather than SHA-256 because
/// every stage hashes its inputs for the provenance, and inputs run to gigabytes: BLAKE3 reads
/// about 4 GB/s on one core (SIMD), SHA-256 about 1.1 GB/s even with the CPU's SHA extensions,
/// which made hashing a fifth of `pf-aggregate`'s run on 500k cells.
pub fn hash_file(path: &Path) -> Result<String, SchemaError> {
    let io_error = |source| SchemaError::Io {
        path: path.to_path_buf(),
        source,
    };
    let mut file = std::fs::File::open(path).map_err(io_error)?;
    let mut hasher = ContentHasher::default();
    let mut buffer = vec![0u8; 1 << 20];
    loop {
        let n_read = file.read(&mut buffer).map_err(io_error)?;
        if n_read == 0 {
            break;
        }
        hasher.update(&buffer[..n_read]);
    }
    Ok(hasher.finish())
}

/// [`hash_file`]'s hash of content given piece by piece (a file read through memory-mapped
/// windows, say): the same hash for the same bytes in the same order.
#[derive(Debug, Default, Clone)]
pub struct ContentHasher(blake3::Hasher);

impl ContentHasher {
    pub fn update(&mut self, bytes: &[u8]) {
        self.0.update(bytes);
    }

    /// The hash (hex) of everything given so far.
    pub fn finish(&self) -> String {
        self.0.finalize().to_hex().to_string()
    }
}

/// One content hash for a table given as one file or as shards: a single file's [`hash_file`];
/// for shards, the SHA-256 of the JSON list of their hashes in order.
pub fn hash_files(paths: &[std::path::PathBuf]) -> Result<String, SchemaError> {
    let hashes = paths
        .iter()
        .map(|path| hash_file(path))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(match hashes.as_slice() {
        [single] => single.clone(),
        many => hash_params(&serde_json::json!(many)),
    })
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|byte| format!("{byte:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_through_key_values() {
        let mut provenance = Provenance::new(
            TableKind::Cells,
            "pf-preprocess",
            "0.1.0",
            serde_json::json!({"crop_size_px": 68, "mode": "bbbc021"}),
        );
        provenance.inputs.insert("a.csv".into(), "00ff".into());
        provenance.seed = Some(7);
        provenance
            .extra
            .insert("n_skipped_fields".into(), "2".into());
        let pairs: BTreeMap<String, String> = provenance.to_key_values().into_iter().collect();
        assert_eq!(pairs["phenoflow.schema"], "cells");
        let back = Provenance::from_key_values(&pairs, Path::new("c.parquet")).unwrap();
        assert_eq!(back, provenance);
    }

    #[test]
    fn params_hash_ignores_key_order() {
        let a: serde_json::Value = serde_json::from_str(r#"{"a":1,"b":2}"#).unwrap();
        let b: serde_json::Value = serde_json::from_str(r#"{"b":2,"a":1}"#).unwrap();
        assert_eq!(hash_params(&a), hash_params(&b));
    }

    #[test]
    fn file_hash_is_blake3() {
        let directory = tempfile::tempdir().unwrap();
        let path = directory.path().join("abc.txt");
        std::fs::write(&path, "abc").unwrap();
        assert_eq!(
            hash_file(&path).unwrap(),
            "6437b3ac38465133ffb63b75273a8db548c558465d79db03fd359c6cd5bd9d85"
        );
        let mut pieces = ContentHasher::default();
        pieces.update(b"a");
        pieces.update(b"bc");
        assert_eq!(pieces.finish(), hash_file(&path).unwrap());
    }
}
