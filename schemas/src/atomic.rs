//! Writing a whole output file so that a crash never leaves something that looks finished: the
//! bytes go to a hidden temporary file in the destination's folder, which is then renamed.

use std::path::{Path, PathBuf};

/// The temporary path used for `path` by this process (same folder, so the rename is atomic).
pub fn temp_path_for(path: &Path) -> PathBuf {
    let folder = match path.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let file_name = path
        .file_name()
        .map(|name| name.to_string_lossy().into_owned())
        .unwrap_or_else(|| "output".to_string());
    folder.join(format!(".{file_name}.{}.tmp", std::process::id()))
}

/// Writes `bytes` to `path` atomically, creating the folder if needed.
pub fn atomic_write(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let temp = temp_path_for(path);
    if let Some(folder) = temp.parent() {
        std::fs::create_dir_all(folder)?;
    }
    let result = std::fs::write(&temp, bytes).and_then(|()| std::fs::rename(&temp, path));
    if result.is_err() {
        let _ = std::fs::remove_file(&temp);
    }
    result
}
