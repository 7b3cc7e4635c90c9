//! Helpers for the end-to-end tests in `tests/it.rs`: where the release binaries, the project's
//! Python and the shared real data are, and running a command to completion.

use std::path::{Path, PathBuf};
use std::process::Command;

/// The workspace root.
pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ sits in the workspace root")
        .to_path_buf()
}

/// A stage binary of the same build as the running test: cargo puts test executables in
/// `<target>/<profile>/deps/`, the binaries one folder up, wherever `CARGO_TARGET_DIR` points (a
/// fixed `target/release` could hold stale binaries of another build).
pub fn stage(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("the test executable's path");
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("a test executable under <target>/<profile>/deps");
    let path = profile_dir.join(name);
    assert!(
        path.exists(),
        "{} is missing: run `make test` (or `cargo build --release --bins`) first",
        path.display()
    );
    path
}

/// The project's Python (the venv `make setup` made), which holds the reference tools.
pub fn python() -> PathBuf {
    let path = std::env::var_os("PHENOFLOW_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| root().join(".venv/bin/python"));
    assert!(
        path.exists(),
        "{} is missing: run `make setup` first",
        path.display()
    );
    path
}

/// A script under `tests/python`.
pub fn python_script(name: &str) -> PathBuf {
    root().join("tests/python").join(name)
}

/// The real data shared with the project (`../shared/data`, or `$PHENOFLOW_SHARED_DATA`).
pub fn shared_data() -> PathBuf {
    let path = std::env::var_os("PHENOFLOW_SHARED_DATA")
        .map(PathBuf::from)
        .unwrap_or_else(|| root().join("../shared/data"));
    assert!(
        path.join("README.md").exists(),
        "shared data not found at {}",
        path.display()
    );
    path
}

/// What a finished command did.
#[derive(Debug)]
pub struct Outcome {
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

impl Outcome {
    /// Panics with the command's output unless it exited 0.
    pub fn assert_success(&self) -> &Self {
        assert_eq!(
            self.code,
            Some(0),
            "command failed:\n{}\n{}",
            self.stdout,
            self.stderr
        );
        self
    }

    /// Panics unless the command failed with `code` and its stderr contains every fragment.
    pub fn assert_failure(&self, code: i32, fragments: &[&str]) -> &Self {
        assert_eq!(
            self.code,
            Some(code),
            "expected exit {code}:\n{}\n{}",
            self.stdout,
            self.stderr
        );
        for fragment in fragments {
            assert!(
                self.stderr.contains(fragment),
                "stderr lacks `{fragment}`:\n{}",
                self.stderr
            );
        }
        self
    }
}

/// Runs a program with arguments and collects its output.
pub fn run<S: AsRef<std::ffi::OsStr>>(program: &Path, args: &[S]) -> Outcome {
    run_in(Path::new("."), program, args)
}

impl From<std::process::Output> for Outcome {
    fn from(output: std::process::Output) -> Self {
        Outcome {
            code: output.status.code(),
            stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        }
    }
}

/// Runs a program in a folder with arguments and collects its output.
pub fn run_in<S: AsRef<std::ffi::OsStr>>(folder: &Path, program: &Path, args: &[S]) -> Outcome {
    Command::new(program)
        .args(args)
        .current_dir(folder)
        .output()
        .unwrap_or_else(|error| panic!("cannot start {}: {error}", program.display()))
        .into()
}

/// `pf-run` in a folder (pipelines name their files relative to where they run).
pub fn pf_run(folder: &Path, args: &[&str]) -> Outcome {
    run_in(folder, &stage("pf-run"), args)
}

/// A path as a command-line argument.
pub fn arg(path: &Path) -> String {
    path.display().to_string()
}

/// Runs one of the project's Python scripts with the project's Python.
pub fn run_python<S: AsRef<std::ffi::OsStr>>(script: &str, args: &[S]) -> Outcome {
    let mut full: Vec<std::ffi::OsString> = vec![python_script(script).into_os_string()];
    full.extend(args.iter().map(|arg| arg.as_ref().to_os_string()));
    run(&python(), &full)
}

/// Files in a folder whose names start with `.` and end in `.tmp` (half-written outputs).
pub fn temp_files(folder: &Path) -> Vec<PathBuf> {
    std::fs::read_dir(folder)
        .map(|entries| {
            entries
                .filter_map(Result::ok)
                .map(|entry| entry.path())
                .filter(|path| path.to_string_lossy().ends_with(".tmp"))
                .collect()
        })
        .unwrap_or_default()
}

/// A stage's command line, built flag by flag instead of as a list of strings:
/// `Call::stage("pf-train").command("generative").path("--cells", &cells).flag("--epochs", 2)
/// .switch("--no-progress").run()`.
#[derive(Debug, Clone)]
pub struct Call {
    program: PathBuf,
    args: Vec<std::ffi::OsString>,
    folder: Option<PathBuf>,
}

impl Call {
    /// One of the project's stage binaries.
    pub fn stage(name: &str) -> Self {
        Self {
            program: stage(name),
            args: Vec::new(),
            folder: None,
        }
    }

    /// A subcommand (or any positional argument).
    pub fn command(mut self, command: &str) -> Self {
        self.args.push(command.into());
        self
    }

    /// `--name value`.
    pub fn flag(mut self, name: &str, value: impl std::fmt::Display) -> Self {
        self.args.push(name.into());
        self.args.push(value.to_string().into());
        self
    }

    /// `--name path`.
    pub fn path(mut self, name: &str, path: impl AsRef<Path>) -> Self {
        self.args.push(name.into());
        self.args.push(path.as_ref().as_os_str().to_os_string());
        self
    }

    /// `--name path` once per path (`--cells a --cells b`).
    pub fn paths<P: AsRef<Path>>(mut self, name: &str, paths: impl IntoIterator<Item = P>) -> Self {
        for path in paths {
            self = self.path(name, path);
        }
        self
    }

    /// A flag without a value.
    pub fn switch(mut self, name: &str) -> Self {
        self.args.push(name.into());
        self
    }

    /// More arguments as they are.
    pub fn args<S: AsRef<std::ffi::OsStr>>(mut self, args: impl IntoIterator<Item = S>) -> Self {
        self.args
            .extend(args.into_iter().map(|arg| arg.as_ref().to_os_string()));
        self
    }

    /// Runs in `folder` instead of the current one.
    pub fn within(mut self, folder: &Path) -> Self {
        self.folder = Some(folder.to_path_buf());
        self
    }

    /// Runs it and collects its output.
    pub fn run(&self) -> Outcome {
        run_in(
            self.folder.as_deref().unwrap_or(Path::new(".")),
            &self.program,
            &self.args,
        )
    }
}
