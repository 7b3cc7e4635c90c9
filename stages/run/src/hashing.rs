//! Content hashes of files and folders, cached by (path, size, modification time) so that a file
//! that was only touched is re-read once and then found unchanged, and an unchanged screen is not
//! re-read at all.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::UNIX_EPOCH;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
struct Entry {
    size: u64,
    modified_ns: u128,
    content_hash: String,
}

/// The cache, stored as JSON in the pipeline's state folder.
#[derive(Debug, Default)]
pub struct HashCache {
    path: Option<PathBuf>,
    entries: BTreeMap<String, Entry>,
    dirty: bool,
}

impl HashCache {
    /// Loads the cache at `path` (an unreadable cache is simply empty).
    pub fn load(path: &Path) -> Self {
        let entries = std::fs::read_to_string(path)
            .ok()
            .and_then(|text| serde_json::from_str(&text).ok())
            .unwrap_or_default();
        Self {
            path: Some(path.to_path_buf()),
            entries,
            dirty: false,
        }
    }

    pub fn save(&mut self) -> std::io::Result<()> {
        if let (Some(path), true) = (&self.path, self.dirty) {
            let text = serde_json::to_string(&self.entries).expect("the cache serialises");
            phenoflow_schemas::atomic_write(path, text.as_bytes())?;
            self.dirty = false;
        }
        Ok(())
    }

    /// Content hash of a file (BLAKE3), or of a folder (SHA-256 of its files' relative paths and hashes, sorted), or
    /// `None` when nothing is there.
    pub fn hash(&mut self, path: &Path) -> std::io::Result<Option<String>> {
        let metadata = match std::fs::metadata(path) {
            Ok(metadata) => metadata,
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(error) => return Err(error),
        };
        if metadata.is_dir() {
            let mut files = Vec::new();
            collect_files(path, path, &mut files)?;
            files.sort();
            let mut digest = Sha256::new();
            for relative in files {
                let file_hash = self.hash_file(&path.join(&relative))?;
                digest.update(relative.to_string_lossy().as_bytes());
                digest.update([0]);
                digest.update(file_hash.as_bytes());
                digest.update([b'\n']);
            }
            return Ok(Some(hex(&digest.finalize())));
        }
        self.hash_file(path).map(Some)
    }

    fn hash_file(&mut self, path: &Path) -> std::io::Result<String> {
        let metadata = std::fs::metadata(path)?;
        let modified_ns = metadata
            .modified()?
            .duration_since(UNIX_EPOCH)
            .map(|duration| duration.as_nanos())
            .unwrap_or(0);
        let key = path.to_string_lossy().into_owned();
        if let Some(entry) = self.entries.get(&key) {
            if entry.size == metadata.len() && entry.modified_ns == modified_ns {
                return Ok(entry.content_hash.clone());
            }
        }
        let content_hash = phenoflow_schemas::hash_file(path).map_err(std::io::Error::other)?;
        self.entries.insert(
            key,
            Entry {
                size: metadata.len(),
                modified_ns,
                content_hash: content_hash.clone(),
            },
        );
        self.dirty = true;
        Ok(content_hash)
    }
}

fn collect_files(root: &Path, folder: &Path, files: &mut Vec<PathBuf>) -> std::io::Result<()> {
    for entry in std::fs::read_dir(folder)? {
        let entry = entry?;
        let path = entry.path();
        let name = entry.file_name();
        // Hidden files are temporary files of writers still at work, or state.
        if name.to_string_lossy().starts_with('.') {
            continue;
        }
        if entry.file_type()?.is_dir() {
            collect_files(root, &path, files)?;
        } else {
            files.push(path.strip_prefix(root).expect("under root").to_path_buf());
        }
    }
    Ok(())
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|byte| format!("{byte:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn touching_keeps_the_hash_and_editing_changes_it() {
        let folder = tempfile::tempdir().unwrap();
        let file = folder.path().join("a.txt");
        std::fs::write(&file, "one").unwrap();
        let mut cache = HashCache::load(&folder.path().join(".cache.json"));
        let first = cache.hash(&file).unwrap().unwrap();
        let directory_hash = cache.hash(folder.path()).unwrap().unwrap();
        std::fs::write(&file, "one").unwrap();
        assert_eq!(cache.hash(&file).unwrap().unwrap(), first);
        std::fs::write(&file, "two").unwrap();
        assert_ne!(cache.hash(&file).unwrap().unwrap(), first);
        assert_ne!(cache.hash(folder.path()).unwrap().unwrap(), directory_hash);
        assert_eq!(cache.hash(&folder.path().join("missing")).unwrap(), None);
    }
}
