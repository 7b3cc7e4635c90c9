//! The house rules the code keeps (ARCHITECTURE.md, "Rules the tidy test enforces"): every Rust
//! file opens with a `//!` comment; every stage has a README, an `args.rs` and a `main.rs` of a
//! few lines through the stage kit; no stage depends on another; the contract, the kit and the evaluation crate pull in
//! no heavy crate; no stage's `run()` grows past 100 lines; key column names come from the contract.

use std::path::{Path, PathBuf};

use phenoflow_e2e::root;

/// Every `.rs` file under a folder, `target/` and hidden folders left out.
fn rust_files(folder: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    let mut pending = vec![folder.to_path_buf()];
    while let Some(folder) = pending.pop() {
        for entry in std::fs::read_dir(&folder).unwrap() {
            let path = entry.unwrap().path();
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            if path.is_dir() {
                if name != "target" && !name.starts_with('.') {
                    pending.push(path);
                }
            } else if name.ends_with(".rs") {
                files.push(path);
            }
        }
    }
    files.sort();
    files
}

fn stages() -> Vec<PathBuf> {
    let mut stages: Vec<PathBuf> = std::fs::read_dir(root().join("stages"))
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.join("Cargo.toml").is_file())
        .collect();
    stages.sort();
    assert!(stages.len() >= 11, "{stages:?}");
    stages
}

#[test]
fn every_rust_file_opens_with_a_module_comment() {
    let mut missing = Vec::new();
    for folder in ["schemas", "kit", "evaluation", "onnx", "stages", "tests"] {
        for file in rust_files(&root().join(folder)) {
            let text = std::fs::read_to_string(&file).unwrap();
            if !text.starts_with("//!") {
                missing.push(file.strip_prefix(root()).unwrap().display().to_string());
            }
        }
    }
    assert!(missing.is_empty(), "no `//!` opening: {missing:?}");
}

#[test]
fn every_stage_has_a_readme_its_arguments_and_a_main_through_the_kit() {
    for stage in stages() {
        let name = stage.file_name().unwrap().to_string_lossy().into_owned();
        for file in ["README.md", "src/args.rs", "src/main.rs"] {
            assert!(stage.join(file).is_file(), "stages/{name} has no {file}");
        }
        let main = std::fs::read_to_string(stage.join("src/main.rs")).unwrap();
        assert!(
            main.contains("phenoflow_kit::main("),
            "stages/{name}/src/main.rs does not run through phenoflow_kit::main"
        );
        let code_lines = main
            .lines()
            .filter(|line| {
                let line = line.trim();
                !line.is_empty() && !line.starts_with("//")
            })
            .count();
        assert!(
            code_lines <= 25,
            "stages/{name}/src/main.rs has {code_lines} lines of code: its work belongs in the library"
        );
    }
}

#[test]
fn no_stage_depends_on_another_and_the_ground_floor_stays_light() {
    let dependencies = |manifest: &Path| -> Vec<String> {
        let text = std::fs::read_to_string(manifest).unwrap();
        let table: toml::Table = text.parse().unwrap();
        ["dependencies", "dev-dependencies", "build-dependencies"]
            .iter()
            .filter_map(|section| table.get(*section).and_then(|value| value.as_table()))
            .flat_map(|section| section.keys().cloned())
            .collect()
    };
    for stage in stages() {
        let name = stage.file_name().unwrap().to_string_lossy().into_owned();
        let stage_deps: Vec<String> = dependencies(&stage.join("Cargo.toml"))
            .into_iter()
            .filter(|dependency| dependency.starts_with("pf-"))
            .collect();
        assert!(
            stage_deps.is_empty(),
            "stages/{name} depends on another stage: {stage_deps:?}"
        );
    }
    for crate_dir in ["schemas", "kit", "evaluation"] {
        let heavy: Vec<String> = dependencies(&root().join(crate_dir).join("Cargo.toml"))
            .into_iter()
            .filter(|dependency| {
                [
                    "polars",
                    "tch",
                    "torch-sys",
                    "ort",
                    "plotters",
                    "rusqlite",
                    "smartcore",
                ]
                .contains(&dependency.as_str())
            })
            .collect();
        assert!(heavy.is_empty(), "{crate_dir} pulls in {heavy:?}");
    }
}

#[test]
fn no_stage_run_function_grows_past_100_lines() {
    let mut long = Vec::new();
    for stage in stages() {
        for file in rust_files(&stage.join("src")) {
            let text = std::fs::read_to_string(&file).unwrap();
            let lines: Vec<&str> = text.lines().collect();
            for (start, line) in lines.iter().enumerate() {
                // run() and its per-track or per-mode siblings (run_generative, run_bbbc021, ...).
                let signature = line
                    .trim_start_matches("pub ")
                    .trim_start_matches("pub(crate) ");
                if !(signature.starts_with("fn run(") || signature.starts_with("fn run_")) {
                    continue;
                }
                let length = lines[start..]
                    .iter()
                    .position(|line| *line == "}")
                    .expect("a closing brace at column 0");
                if length > 100 {
                    long.push(format!(
                        "{}:{} ({length} lines)",
                        file.strip_prefix(root()).unwrap().display(),
                        start + 1
                    ));
                }
            }
        }
    }
    assert!(
        long.is_empty(),
        "run() reads as resolve → read → compute → write; split these: {long:?}"
    );
}

#[test]
fn key_column_names_come_from_the_contract() {
    // A whole `"Metadata_…"` string literal in a stage: the name belongs in
    // phenoflow_schemas::columns. pf-cellprofiler's list of CytoTable's spellings is the exception.
    let mut found = Vec::new();
    for stage in stages() {
        for file in rust_files(&stage.join("src")) {
            if file.ends_with("cellprofiler/src/cytotable.rs") {
                continue;
            }
            let text = std::fs::read_to_string(&file).unwrap();
            for (number, line) in text.lines().enumerate() {
                let mut rest = line;
                while let Some(start) = rest.find("\"Metadata_") {
                    let literal = &rest[start + 1..];
                    let end = literal.find('"').unwrap_or(literal.len());
                    let name = &literal[..end];
                    if name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
                        found.push(format!(
                            "{}:{}: \"{name}\"",
                            file.strip_prefix(root()).unwrap().display(),
                            number + 1
                        ));
                    }
                    rest = &literal[end.min(literal.len())..];
                    rest = rest.get(1..).unwrap_or("");
                }
            }
        }
    }
    assert!(
        found.is_empty(),
        "use phenoflow_schemas::columns: {found:?}"
    );
}
