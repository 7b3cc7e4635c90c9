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

/// Whether a relative path from a file would lead outside the folder it is relative to: an
/// absolute path, or one with a `..` component (checked on the text, before any link).
pub fn leaves_its_root(path: &Path) -> bool {
    path.is_absolute()
        || path
            .components()
            .any(|c| matches!(c, std::path::Component::ParentDir))
}

/// Whether a name from a file is one plain file or folder name: not empty, no `/` or `\`, not
/// `.` or `..` (so that joining it to a folder stays in that folder).
pub fn is_plain_file_name(name: &str) -> bool {
    !name.is_empty() && !name.contains(['/', '\\']) && name != "." && name != ".."
}

/// Opens a file for reading only if it is a regular file (after following links): a FIFO or a
/// device given as an input would block or never end. The error's kind is `InvalidInput`.
pub fn open_regular_file(path: &Path) -> std::io::Result<std::fs::File> {
    let metadata = std::fs::metadata(path)?;
    if !metadata.is_file() {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            if metadata.is_dir() {
                "is a folder, not a file"
            } else {
                "is not a regular file (a FIFO, socket or device?)"
            },
        ));
    }
    std::fs::File::open(path)
}

/// Refuses outputs that name one of the inputs, or each other: the input would be replaced while
/// it is read. Paths are compared after resolving links (an output that does not exist yet
/// cannot be an input, but two new outputs can still collide by name).
pub fn check_outputs_are_not_inputs(
    outputs: &[(&str, &Path)],
    inputs: &[&Path],
) -> Result<(), crate::InputError> {
    let resolve = |path: &Path| std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf());
    for (index, (flag, output)) in outputs.iter().enumerate() {
        let resolved = resolve(output);
        if let Some(input) = inputs.iter().find(|input| resolve(input) == resolved) {
            return Err(crate::InputError(format!(
                "{flag} {} is also an input ({}): it would be overwritten while it is read",
                output.display(),
                input.display()
            )));
        }
        if let Some((other_flag, _)) = outputs[..index]
            .iter()
            .find(|(_, other)| resolve(other) == resolved)
        {
            return Err(crate::InputError(format!(
                "{flag} and {other_flag} are the same file {}",
                output.display()
            )));
        }
    }
    Ok(())
}

#[cfg(test)]
mod regular_file_tests {
    use super::*;

    #[test]
    fn a_fifo_is_refused_without_blocking() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("field.tif");
        let made = std::process::Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .unwrap();
        assert!(made.success());
        let error = open_regular_file(&fifo).unwrap_err();
        assert_eq!(error.kind(), std::io::ErrorKind::InvalidInput);
        assert!(error.to_string().contains("not a regular file"));
        let error = open_regular_file(dir.path()).unwrap_err();
        assert!(error.to_string().contains("folder"));
        std::fs::write(dir.path().join("ok"), b"x").unwrap();
        assert!(open_regular_file(&dir.path().join("ok")).is_ok());
    }
}
