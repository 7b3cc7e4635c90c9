//! The hostile-input catalogue: inputs a careless or hostile user gives, and what each stage
//! must do with them: a clear error (exit 2 for bad input, 1 for a failing machine) that names the
//! file and the row or column, nothing half-written, no code run, no path outside its root, no
//! value that exhausts the machine or hangs a stage. One test per case or family of cases; each
//! failed before its fix.
//!
//! | section | cases |
//! |---|---|
//! | code execution through `pf-run emit` | newline in name / description; `$(…)` in values and `--set`; a quote before a var in a Snakefile path; a var named as an engine setting, two vars that are one setting, a var in an output's file name; `"`, `\` and braces in Snakemake strings; `$` in Nextflow scripts; `stage` with a path; paths with spaces still run |
//! | paths that escape their roots | outputs absolute or `..`; `Image_PathName_*` absolute or `..`; `Multi_Cell_Image_Name` with `..`; a model card's checkpoint elsewhere |
//! | panics | `.npy` shape overflow; `--centers` at 1e300; text as `large_string` / `string_view` (pandas, Polars) under `--shard` |
//! | values that exhaust the machine or hang | `--crop-size 100000`; `--epochs 0`, `--jobs 0` (clap's ranges); `whole --size 20000`; `--threads 100000`; `--batch-size 1e8`; synthetic fields of 100000² px or 1e9 cells; `shards = 1000000`, `--shards` 0, 1025 or beyond 64 bits; 101 seeds (in the file or `--seeds`); a seed beyond i64; 100 seeds × 1024 shards planned in seconds; a var naming itself; a FIFO as a TIFF; a foreign Parquet's huge row group (over half the machine's memory in the columns read; the footer reading is unit-tested); a Parquet footer placing a column chunk outside its file (an exabyte long, past the end, at a negative offset: pf-aggregate's two engines, and pf-classify for every stage's table reader) |
//! | exit codes and messages | pf-train's flat flags of before its subcommands, one track's flag given to the other (and a pipeline file of then, named by pf-run's pre-flight); an output that is an input, two outputs that are one file, an empty CSV, a symbolic-link loop, a text concentration, `--resume` with nothing to resume, a missing input (named once, its cause once; pf-train too), a ragged CSV row, an unwritable `.pfrun`, a missing checkpoint |
//! | silently wrong numbers | a cell listed twice in one table; `NA` in a CSV feature; a null feature; conflicting MoA rows; the same input twice; CHW `.npy`; duplicate rows (image table, `metadata.csv`, `--centers`); classify metrics as classifier metrics; 0 scorable queries; a plate map with two treatments in a well, a well it lacks, no well column, a text concentration, an empty compound, profiles already annotated; NaN or negative sigmas and ridges; one column given as two keys to pf-aggregate |
//! | processes and state | a second pf-run on one workdir; shard records that collide; a killed pf-run's stage; an unfinished model exported; stale temporaries |
//! | disk full | a write to a full file system is exit 1 and leaves nothing |
//! | shipped pipelines on the project's data | more shards than plates |
//! | CellProfiler exports (`pf-cellprofiler`) | a compartment without `ImageNumber` (CSV, SQLite); a cytoplasm whose parent cell or nucleus does not exist; an image with no well; a compartment one object short (its image table's count, its sibling's); text in a measurement; a CSV not sorted by image; a truncated SQLite file; one another process holds locked; one merged from several runs (`TableNumber`); a view (a recursive query that never ends) or a generated column (`zeroblob` of 900 MB a row) where a table should be; a `--csv-prefix` that leaves its folder |
//! | feature selection and comparisons | an unknown `--feature-select` operation; a threshold or cutoff out of range or NaN; a missing `--blocklist`; a selection that drops every feature; `--blocklist` without its operation; a NaN cell under the median; `--compare-metrics` without a label or with a missing file |

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use phenoflow_e2e::{
    arg, pf_run, python, run, run_in, run_python, shared_data, stage, Call, Outcome,
};

fn nothing_left(folder: &Path, prefix: &str) {
    let left: Vec<_> = std::fs::read_dir(folder)
        .unwrap()
        .filter_map(Result::ok)
        .map(|entry| entry.file_name().to_string_lossy().into_owned())
        .filter(|name| name.starts_with(prefix) || name.ends_with(".tmp"))
        .collect();
    assert!(left.is_empty(), "left behind: {left:?}");
}

// ---------------------------------------------------------------------------------------------
// Code execution through `pf-run emit` (runs even under `make -n` / `snakemake -n`)

/// A pipeline whose only step runs pf-preprocess with a value the test chooses.
fn pipeline_with(param: &str, workdir: &str) -> String {
    format!(
        r#"[pipeline]
name = "hostile"
description = "values a user should not be able to turn into code"
workdir = "{workdir}"

[vars]
data = "data"

[[step]]
name = "preprocess"
stage = "pf-preprocess"
command = "singlecell"
inputs = {{ root = "${{data}}" }}
outputs = {{ output = "cells.parquet" }}
params = {{ plate = {param} }}
"#
    )
}

#[test]
fn control_characters_and_non_identifier_names_are_refused_before_emitting() {
    let temp = tempfile::tempdir().unwrap();
    let base = pipeline_with("\"P1\"", "out");
    let cases = [
        (
            base.replace("name = \"hostile\"", "name = \"x\\n$(shell touch pwned)\""),
            "[pipeline] name",
        ),
        (
            base.replace(
                "description = \"values",
                "description = \"line one\\nimport os; os.system('touch pwned')\\n",
            ),
            "control character",
        ),
        (
            base.replace(
                "stage = \"pf-preprocess\"",
                "stage = \"../../usr/bin/touch\"",
            ),
            "stage `../../usr/bin/touch`",
        ),
        (
            base.replace("name = \"preprocess\"", "name = \"a;touch pwned\""),
            "step name `a;touch pwned`",
        ),
        (
            base.replace("command = \"singlecell\"", "command = \"x y\""),
            "command `x y`",
        ),
        (
            base.replace("name = \"preprocess\"", "name = \"all\""),
            "step name `all` is reserved",
        ),
        (
            base.replace("name = \"preprocess\"", "name = \"hash-cache\""),
            "step name `hash-cache` is reserved",
        ),
        (
            format!("{base}\n[[step]]\nname = \"pre_process\"\nstage = \"pf-preprocess\"\n")
                .replace("name = \"preprocess\"", "name = \"pre-process\""),
            "would both be the rule `pre_process`",
        ),
    ];
    for (text, fragment) in cases {
        std::fs::write(temp.path().join("p.toml"), &text).unwrap();
        for engine in ["make", "snakemake", "nextflow"] {
            pf_run(temp.path(), &["emit", engine, "p.toml"]).assert_failure(2, &[fragment]);
        }
        pf_run(temp.path(), &["run", "p.toml"]).assert_failure(2, &[fragment]);
    }
    assert!(!temp.path().join("pwned").exists());
}

/// Values that are code in make, Python or Groovy, in a param, a var given with `--set`, and a
/// path: emitted, then dry-run by the engine, nothing runs.
#[test]
fn hostile_values_are_emitted_as_literals_and_dry_runs_execute_nothing() {
    let temp = tempfile::tempdir().unwrap();
    let marker = temp.path().join("pwned");
    let m = arg(&marker);
    let values = [
        format!("$(shell touch {m})"),
        format!("`touch {m}`"),
        format!("$$(touch {m})"),
        format!("x\\\" + __import__('os').system('touch {m}') + \\\""),
        format!("{{__import__('os').system('touch {m}')}}"),
        format!("\"\"\" + 'touch {m}'.execute() + \"\"\""),
        format!("$HOME/{m}"),
        format!("'; touch {m}; echo '"),
    ];
    let snakemake = python().parent().unwrap().join("snakemake");
    for (index, value) in values.iter().enumerate() {
        let folder = temp.path().join(format!("case{index}"));
        std::fs::create_dir_all(folder.join("data")).unwrap();
        let toml_value = format!("\"{}\"", value.replace('\\', "\\\\").replace('"', "\\\""));
        std::fs::write(folder.join("p.toml"), pipeline_with(&toml_value, "out")).unwrap();
        // In a param (the input folder exists, so the engines expand the whole rule).
        pf_run(&folder, &["emit", "make", "p.toml", "--output", "p.mk"]).assert_success();
        let dry = run_in(&folder, Path::new("make"), &["-n", "-f", "p.mk"]);
        assert_eq!(dry.code, Some(0), "make -n: {}{}", dry.stdout, dry.stderr);
        assert!(dry.stdout.contains("pf-preprocess"), "{}", dry.stdout);
        pf_run(
            &folder,
            &["emit", "snakemake", "p.toml", "--output", "Snakefile"],
        )
        .assert_success();
        let dry = run_in(&folder, &snakemake, &["-n", "-p", "--cores", "1"]);
        assert_eq!(
            dry.code,
            Some(0),
            "snakemake -n: {}{}",
            dry.stdout,
            dry.stderr
        );
        assert!(
            dry.stdout.contains("pf-preprocess") || dry.stderr.contains("pf-preprocess"),
            "{}{}",
            dry.stdout,
            dry.stderr
        );
        assert!(!marker.exists(), "case {index} ({value}) ran code");
        // The same value as a var on the command line, where it becomes a path: make may refuse
        // a path it cannot express (exit 2, saying so); whatever the engines do, nothing runs.
        let set = format!("data={value}");
        let made = pf_run(
            &folder,
            &["emit", "make", "p.toml", "--set", &set, "--output", "q.mk"],
        );
        if made.code == Some(0) {
            let _ = run_in(&folder, Path::new("make"), &["-n", "-f", "q.mk"]);
        } else {
            made.assert_failure(2, &["which a make target or prerequisite cannot hold"]);
        }
        let emitted = pf_run(
            &folder,
            &[
                "emit",
                "snakemake",
                "p.toml",
                "--set",
                &set,
                "--output",
                "Snakefile",
            ],
        );
        if emitted.code == Some(0) {
            let _ = run_in(&folder, &snakemake, &["-n", "--cores", "1"]);
        } else {
            // Snakemake has no escape for a brace in a file pattern.
            emitted.assert_failure(2, &["which Snakemake reads as a wildcard"]);
        }
        for extra in [vec![], vec!["--set", set.as_str()]] {
            let mut args = vec!["emit", "nextflow", "p.toml"];
            args.extend(extra.iter().copied());
            let nextflow = pf_run(&folder, &args);
            nextflow.assert_success();
            // Every `$` of a value is escaped; the only interpolations are pf-run's own.
            let script = nextflow.stdout;
            let unescaped: Vec<&str> = script
                .match_indices('$')
                .filter(|(at, _)| !script[..*at].ends_with('\\'))
                .map(|(at, _)| &script[at..(at + 16).min(script.len())])
                .filter(|text| {
                    !text.starts_with("${params.")
                        && !text.starts_with("${launchDir}")
                        && !text.starts_with("${shard}")
                })
                .collect();
            assert!(unescaped.is_empty(), "{unescaped:?} in\n{script}");
        }
        assert!(!marker.exists(), "case {index} ({value}) ran code");
    }
    // `${…}` in a file is a var reference (an undefined one is an error); from `--set` it is
    // inserted once, literally, and reaches the emitters as text.
    let folder = temp.path().join("case0");
    let groovy = format!("data=${{'touch {m}'.execute()}}");
    let nextflow = pf_run(&folder, &["emit", "nextflow", "p.toml", "--set", &groovy]);
    nextflow.assert_success();
    // The value is a Groovy string literal with its `$` escaped (inserted into the script as
    // text at run time, never evaluated).
    assert!(
        nextflow.stdout.contains("params.data = \"\\${'touch"),
        "{}",
        nextflow.stdout
    );
    pf_run(
        &folder,
        &[
            "emit",
            "snakemake",
            "p.toml",
            "--set",
            &groovy,
            "--output",
            "Snakefile",
        ],
    )
    .assert_failure(2, &["which Snakemake reads as a wildcard"]);
    assert!(!marker.exists());
    // Braces and brackets in a value are quoted for the shell: bash's brace expansion cannot
    // split `{x,--allow-outside-root}` into an extra flag.
    let braces = temp.path().join("braces");
    std::fs::create_dir_all(braces.join("data")).unwrap();
    std::fs::write(
        braces.join("p.toml"),
        pipeline_with("\"{x,--allow-outside-root}\"", "out"),
    )
    .unwrap();
    let emitted = pf_run(&braces, &["emit", "snakemake", "p.toml"]);
    emitted.assert_success();
    assert!(
        emitted
            .stdout
            .contains("--plate '{{x,--allow-outside-root}}'"),
        "{}",
        emitted.stdout
    );
    // The make recipe carries the value through to the shell unchanged: `make -n` prints it.
    let printed = run_in(&folder, Path::new("make"), &["-n", "-f", "p.mk"]);
    assert!(printed.stdout.contains(&values[0]), "{}", printed.stdout);
    assert!(!marker.exists());
}

/// Vars become settings of the emitted files (Snakemake config keys, Nextflow params): a path
/// around a var is built from literals, never pasted between quotes, so a quote in the path cannot
/// end a string; a var may not take an engine's own setting, clash with another, or name an
/// output's file; a seed larger than a seed can be is refused.
#[test]
fn vars_in_emitted_files_cannot_become_code_or_clash() {
    let temp = tempfile::tempdir().unwrap();
    let folder = temp.path();
    let marker = folder.join("pwned");
    let with = |vars: &str, input: &str, output: &str| {
        format!(
            "[pipeline]\nname = \"vars\"\nworkdir = \"out\"\n\n[vars]\n{vars}\n\n[[step]]\nname = \"preprocess\"\n\
             stage = \"pf-preprocess\"\ncommand = \"singlecell\"\ninputs = {{ root = {input} }}\n\
             outputs = {{ output = {output} }}\n"
        )
    };
    // A quote before the var in a path: text replacement between quotes let the rest of the
    // path out of its string, and Snakemake ran it when it read the file.
    let payload = format!(
        "\"x\\\"${{and}}+str(__import__('os').system('touch {}'))#\"",
        arg(&marker)
    );
    std::fs::write(
        folder.join("p.toml"),
        with("and = \"d\"", &payload, "\"cells.parquet\""),
    )
    .unwrap();
    pf_run(
        folder,
        &["emit", "snakemake", "p.toml", "--output", "Snakefile"],
    )
    .assert_success();
    let snakemake = python().parent().unwrap().join("snakemake");
    let bin_dir = format!("bin_dir={}", arg(stage("pf-run").parent().unwrap()));
    // Snakemake reads every rule (the dry run stops only at the input that is not there).
    let dry = run_in(
        folder,
        &snakemake,
        &["-n", "--cores", "1", "--config", &bin_dir],
    );
    assert!(
        dry.stderr.contains("Missing input files") || dry.stdout.contains("Missing input files"),
        "{}{}",
        dry.stdout,
        dry.stderr
    );
    let _ = run_in(folder, &snakemake, &["--lint", "--config", &bin_dir]);
    assert!(
        !marker.exists(),
        "the Snakefile ran code from a pipeline file"
    );
    pf_run(folder, &["emit", "nextflow", "p.toml"]).assert_success();
    let plain = |vars: &str, output: &str| with(vars, "\"${data}\"", output);
    for (engine, text, message) in [
        (
            "nextflow",
            plain("data = \"d\"\nroot = \"/elsewhere\"", "\"cells.parquet\""),
            "[vars] root is a setting of the emitted file itself",
        ),
        (
            "snakemake",
            plain("data = \"d\"\nbin_dir = \"/tmp\"", "\"cells.parquet\""),
            "[vars] bin_dir is a setting of the emitted file itself",
        ),
        (
            "snakemake",
            plain("data = \"d\"\nshards = \"3\"", "\"cells.parquet\""),
            "[vars] shards is a setting of the emitted file itself",
        ),
        (
            "snakemake",
            plain("data = \"d\"\nconda-env = \"x\"", "\"cells.parquet\""),
            "[vars] conda-env is a setting of the emitted file itself",
        ),
        (
            "snakemake",
            plain(
                "data = \"d\"\nmy-data = \"a\"\nmy_data = \"b\"",
                "\"cells.parquet\"",
            ),
            "[vars] my-data and my_data would be the same setting",
        ),
        (
            "nextflow",
            plain("data = \"d\"\nname = \"cells\"", "\"${name}.parquet\""),
            "an output's file name holds a var",
        ),
    ] {
        std::fs::write(folder.join("q.toml"), &text).unwrap();
        pf_run(folder, &["emit", engine, "q.toml"]).assert_failure(2, &[message]);
    }
    // The make fragment keeps the values: no setting to clash with.
    pf_run(folder, &["emit", "make", "q.toml"]).assert_success();
    // A seed that does not fit a signed 64-bit integer would reach pf-train as a negative one.
    std::fs::write(
        folder.join("s.toml"),
        "[pipeline]\nname = \"s\"\nworkdir = \"out\"\nseeds = [0]\n\n[[step]]\nname = \"train\"\n\
         stage = \"pf-train\"\nper_seed = true\noutputs = { out = \"m\" }\nparams = { seed = \"${seed}\" }\n",
    )
    .unwrap();
    pf_run(
        folder,
        &["emit", "make", "s.toml", "--seeds", "18446744073709551615"],
    )
    .assert_failure(2, &["18446744073709551615 is larger than a seed can be"]);
}

/// A workdir and a data folder with spaces: the emitted Makefile and Snakefile run the real
/// stages and write the same table as pf-run.
#[test]
fn paths_with_spaces_run_under_make_snakemake_and_pf_run() {
    let temp = tempfile::tempdir().unwrap();
    let data = temp.path().join("my data");
    let tiny = shared_data().join("bbbc021/singlecell_tiny");
    let status = Command::new("cp")
        .arg("-r")
        .arg(&tiny)
        .arg(&data)
        .status()
        .unwrap();
    assert!(status.success());
    let bin_dir = stage("pf-preprocess").parent().unwrap().to_path_buf();
    let text = pipeline_with("\"Week4_27861\"", "out dir/run 1")
        .replace("data = \"data\"", &format!("data = \"{}\"", arg(&data)));
    std::fs::write(temp.path().join("p.toml"), &text).unwrap();
    let table = |path: &Path| {
        let outcome = run_python(
            "read_table.py",
            &[
                &arg(path),
                "Metadata_Plate,Metadata_Well,Metadata_ObjectNumber",
            ],
        );
        outcome.assert_success();
        outcome.stdout
    };
    let output = temp.path().join("out dir/run 1/cells.parquet");
    pf_run(temp.path(), &["run", "p.toml"]).assert_success();
    let expected = table(&output);
    assert!(expected.contains("Week4_27861"), "{expected}");

    std::fs::remove_dir_all(temp.path().join("out dir")).unwrap();
    pf_run(temp.path(), &["emit", "make", "p.toml", "--output", "p.mk"]).assert_success();
    let made = run_in(
        temp.path(),
        Path::new("make"),
        &["-f", "p.mk", &format!("PF_BIN={}", arg(&bin_dir))],
    );
    assert_eq!(made.code, Some(0), "{}{}", made.stdout, made.stderr);
    assert_eq!(table(&output), expected);

    std::fs::remove_dir_all(temp.path().join("out dir")).unwrap();
    pf_run(
        temp.path(),
        &["emit", "snakemake", "p.toml", "--output", "Snakefile"],
    )
    .assert_success();
    let snakemake = python().parent().unwrap().join("snakemake");
    let ran = run_in(
        temp.path(),
        &snakemake,
        &[
            "--cores",
            "1",
            "--quiet",
            "--config",
            &format!("bin_dir={}", arg(&bin_dir)),
        ],
    );
    assert_eq!(ran.code, Some(0), "{}{}", ran.stdout, ran.stderr);
    assert_eq!(table(&output), expected);
}

// ---------------------------------------------------------------------------------------------
// Paths that escape their roots

#[test]
fn outputs_stay_inside_the_workdir() {
    let temp = tempfile::tempdir().unwrap();
    for output in [
        "/tmp/evil.parquet",
        "../evil.parquet",
        "a/../../evil.parquet",
    ] {
        let text = pipeline_with("\"P1\"", "out").replace("cells.parquet", output);
        std::fs::write(temp.path().join("p.toml"), text).unwrap();
        pf_run(temp.path(), &["run", "p.toml"])
            .assert_failure(2, &["must be a relative path inside the workdir"]);
        pf_run(temp.path(), &["emit", "make", "p.toml"])
            .assert_failure(2, &["must be a relative path inside the workdir"]);
    }
}

/// The DTU layout as a folder the test can spoil.
fn singlecell_copy(folder: &Path) -> PathBuf {
    let root = folder.join("singlecell");
    let status = Command::new("cp")
        .arg("-r")
        .arg(shared_data().join("bbbc021/singlecell_tiny"))
        .arg(&root)
        .status()
        .unwrap();
    assert!(status.success());
    root
}

fn rewrite_metadata(root: &Path, edit: impl Fn(&str) -> String) {
    let path = root.join("metadata.csv");
    let text = std::fs::read_to_string(&path).unwrap();
    std::fs::write(&path, edit(&text)).unwrap();
}

fn preprocess_singlecell(root: &Path, output: &Path) -> Outcome {
    Call::stage("pf-preprocess")
        .command("singlecell")
        .path("--root", root)
        .path("--output", output)
        .switch("--no-progress")
        .run()
}

#[test]
fn a_cell_folder_name_cannot_leave_the_images_folder() {
    let temp = tempfile::tempdir().unwrap();
    let root = singlecell_copy(temp.path());
    // Point the first row's folder at ../../ (with the file it names made to exist there).
    rewrite_metadata(&root, |text| {
        let mut lines: Vec<String> = text.lines().map(str::to_string).collect();
        let header: Vec<&str> = lines[0].split(',').collect();
        let column = header
            .iter()
            .position(|h| *h == "Multi_Cell_Image_Name")
            .unwrap();
        let mut fields: Vec<String> = lines[1].split(',').map(str::to_string).collect();
        fields[column] = format!("../../{}", fields[column]);
        lines[1] = fields.join(",");
        lines.join("\n") + "\n"
    });
    let output = temp.path().join("cells.parquet");
    preprocess_singlecell(&root, &output)
        .assert_failure(2, &["metadata.csv", "line 2", "is not a folder name"]);
    assert!(!output.exists());
}

/// Rewrites the first data row of a generated image table.
fn edit_first_row(images: &Path, edit: impl Fn(&[&str], &mut Vec<String>)) {
    let text = std::fs::read_to_string(images).unwrap();
    let mut lines: Vec<String> = text.lines().map(str::to_string).collect();
    let header: Vec<&str> = lines[0].split(',').collect();
    let mut fields: Vec<String> = lines[1].split(',').map(str::to_string).collect();
    edit(&header, &mut fields);
    lines[1] = fields.join(",");
    std::fs::write(images, lines.join("\n") + "\n").unwrap();
}

#[test]
fn image_paths_stay_inside_the_images_root_unless_allowed() {
    let temp = tempfile::tempdir().unwrap();
    let root = temp.path().join("screen");
    let (images, moa) = generated_field(&root);
    let output = temp.path().join("cells.parquet");
    let folder_column = |header: &[&str]| {
        header
            .iter()
            .position(|h| h.starts_with("Image_PathName_"))
            .unwrap()
    };
    // `..`: the same folder, reached from outside the root.
    edit_first_row(&images, |header, fields| {
        let at = folder_column(header);
        fields[at] = format!("../screen/{}", fields[at]);
    });
    preprocess_fields(&images, &moa, &output, &[]).assert_failure(
        2,
        &[
            "BBBC021_v1_image.csv",
            "line 2",
            "leads outside --images-root",
        ],
    );
    assert!(!output.exists());
    preprocess_fields(&images, &moa, &output, &["--allow-outside-root"]).assert_success();
    // An absolute folder.
    std::fs::remove_file(&output).unwrap();
    let absolute = arg(&root);
    edit_first_row(&images, |header, fields| {
        let at = folder_column(header);
        fields[at] = format!("{absolute}/{}", fields[at].trim_start_matches("../screen/"));
    });
    preprocess_fields(&images, &moa, &output, &[])
        .assert_failure(2, &["leads outside --images-root"]);
    preprocess_fields(&images, &moa, &output, &["--allow-outside-root"]).assert_success();
}

#[test]
fn a_field_listed_twice_is_an_error_not_twice_the_cells() {
    let temp = tempfile::tempdir().unwrap();
    let (images, moa) = generated_field(temp.path());
    let text = std::fs::read_to_string(&images).unwrap();
    let second = text.lines().nth(1).unwrap().to_string();
    std::fs::write(&images, format!("{text}{second}\n")).unwrap();
    let output = temp.path().join("cells.parquet");
    preprocess_fields(&images, &moa, &output, &[])
        .assert_failure(2, &["line 3", "the same images as line 2"]);
    assert!(!output.exists());
}

#[test]
fn numbers_that_are_not_numbers_are_usage_errors() {
    let temp = tempfile::tempdir().unwrap();
    let (images, moa) = generated_field(temp.path());
    let output = temp.path().join("cells.parquet");
    for (flag, value) in [
        ("--smoothing-sigma", "NaN"),
        ("--smoothing-sigma", "-1"),
        ("--declump-sigma", "inf"),
        ("--threshold-scale", "0"),
        ("--channels", ""),
    ] {
        let given = format!("{flag}={value}");
        preprocess_fields(&images, &moa, &output, &[&given]).assert_failure(2, &[flag]);
        assert!(!output.exists());
    }
    let cells = temp.path().join("cells.csv");
    std::fs::write(&cells, CELLS_CSV).unwrap();
    aggregate(&[&cells], temp.path(), &["--tvn-ridge=-1"])
        .assert_failure(2, &["--tvn-ridge", "finite number ≥ 0"]);
    // One column given as two keys: named, exit 2 (it was Polars' "duplicate output name", exit 1).
    aggregate(
        &[&cells],
        temp.path(),
        &["--compound-column", phenoflow_schemas::columns::PLATE],
    )
    .assert_failure(
        2,
        &["`Metadata_Plate` is both the --plate-column and the --compound-column"],
    );
    assert!(!temp.path().join("wells.parquet").exists());
}

#[test]
fn each_track_of_pf_train_takes_only_its_own_flags_and_ranges_are_clap_s() {
    let temp = tempfile::tempdir().unwrap();
    let common = ["--cells", "c.parquet", "--output", "o"];
    let train = |args: &[&str]| run(&stage("pf-train"), args);
    // The flat flags of before the subcommands: a usage error that lists the two tracks.
    let mut flat = common.to_vec();
    flat.extend(["--model", "cytovae"]);
    train(&flat).assert_failure(2, &["generative", "classifier"]);
    // A generative flag given to a classifier, and a classifier's flag given to a generative model.
    let mut classifier = vec!["classifier"];
    classifier.extend(common);
    classifier.extend(["--model", "cnn", "--latent-dim", "8"]);
    train(&classifier).assert_failure(2, &["--latent-dim"]);
    let mut generative = vec!["generative"];
    generative.extend(common);
    generative.extend(["--model", "cytovae", "--label", "treatment"]);
    train(&generative).assert_failure(2, &["--label"]);
    // A classifier is not a generative model, nor the reverse.
    let mut swapped = vec!["generative"];
    swapped.extend(common);
    swapped.extend(["--model", "cnn"]);
    train(&swapped).assert_failure(2, &["--model", "cnn"]);
    // Ranges clap checks before anything is read.
    let mut no_epochs = vec!["generative"];
    no_epochs.extend(common);
    no_epochs.extend(["--model", "cytovae", "--epochs", "0"]);
    train(&no_epochs).assert_failure(2, &["--epochs"]);
    std::fs::write(temp.path().join("p.toml"), SLEEPY).unwrap();
    pf_run(temp.path(), &["run", "p.toml", "--jobs", "0"]).assert_failure(2, &["--jobs"]);
    // A pipeline file of before the subcommands: the pre-flight names the step and the flag.
    std::fs::write(
        temp.path().join("old.toml"),
        "[pipeline]\nname = \"old\"\nworkdir = \"out\"\n\n[[step]]\nname = \"train\"\n\
         stage = \"pf-train\"\ninputs = { cells = \"c.parquet\" }\noutputs = { output = \"m\" }\n\
         params = { model = \"cytovae\" }\n",
    )
    .unwrap();
    pf_run(temp.path(), &["run", "old.toml", "--dry-run"])
        .assert_failure(2, &["step `train`", "--cells"]);
}

// ---------------------------------------------------------------------------------------------
// Panics

#[test]
fn an_npy_header_whose_shape_overflows_is_an_error_not_a_panic() {
    let temp = tempfile::tempdir().unwrap();
    let root = singlecell_copy(temp.path());
    // The first cell's file: a valid header with an absurd shape.
    let metadata = std::fs::read_to_string(root.join("metadata.csv")).unwrap();
    let header: Vec<&str> = metadata.lines().next().unwrap().split(',').collect();
    let row: Vec<&str> = metadata.lines().nth(1).unwrap().split(',').collect();
    let at = |name: &str| row[header.iter().position(|h| *h == name).unwrap()];
    let (field, id) = (at("Multi_Cell_Image_Name"), at("Single_Cell_Image_Id"));
    let path = root
        .join("singh_cp_pipeline_singlecell_images")
        .join(field)
        .join(format!("{field}_{id}.npy"));
    let dict = "{'descr': '<u2', 'fortran_order': False, 'shape': (4294967296, 4294967296, 3), }";
    let mut header_bytes = format!("{dict:<118}\n").into_bytes();
    header_bytes.truncate(118);
    header_bytes.push(b'\n');
    let mut bytes = b"\x93NUMPY\x01\x00".to_vec();
    bytes.extend_from_slice(&(header_bytes.len() as u16).to_le_bytes());
    bytes.extend_from_slice(&header_bytes);
    bytes.extend_from_slice(&[0u8; 16]);
    std::fs::write(&path, bytes).unwrap();
    let output = temp.path().join("cells.parquet");
    preprocess_singlecell(&root, &output).assert_failure(2, &["larger than any file can hold"]);
    assert!(!output.exists());
}

#[test]
fn text_columns_as_pandas_or_polars_write_them_are_read_not_a_panic() {
    // pf-embed --plate / --shard read the plates as Arrow `Utf8` and panicked on a cells table
    // whose text is `large_string` (pandas, Polars) or `string_view` (Polars).
    let temp = tempfile::tempdir().unwrap();
    let root = singlecell_copy(temp.path());
    let cells = temp.path().join("cells.parquet");
    preprocess_singlecell(&root, &cells).assert_success();
    let embed = |input: &Path, output: &Path| {
        Call::stage("pf-embed")
            .path("--cells", input)
            .switch("--handcrafted")
            .flag("--shard", "0/2")
            .path("--output", output)
            .switch("--no-progress")
            .run()
    };
    let plain = temp.path().join("plain.parquet");
    embed(&cells, &plain).assert_success();
    for kind in ["large_string", "string_view"] {
        let wide = temp.path().join(format!("cells-{kind}.parquet"));
        run(
            &python(),
            &[
                "-c".to_string(),
                format!(
                    "import sys, pyarrow as pa, pyarrow.parquet as pq; t = pq.read_table(sys.argv[1]); \
                     s = pa.schema([f.with_type(pa.{kind}()) if pa.types.is_string(f.type) else f \
                     for f in t.schema], metadata=t.schema.metadata); pq.write_table(t.cast(s), sys.argv[2])"
                ),
                arg(&cells),
                arg(&wide),
            ],
        )
        .assert_success();
        let output = temp.path().join(format!("embedded-{kind}.parquet"));
        embed(&wide, &output).assert_success();
        run(
            &python(),
            &[
                "-c".to_string(),
                "import sys, pyarrow.parquet as pq; a, b = (pq.read_table(p) for p in sys.argv[1:]); \
                 assert a.equals(b), 'differ'"
                    .to_string(),
                arg(&plain),
                arg(&output),
            ],
        )
        .assert_success();
    }
}

/// A field of generated images in the BBBC021 layout, and a centres table for it.
fn generated_field(folder: &Path) -> (PathBuf, PathBuf) {
    run_python(
        "make_fields.py",
        &[
            "--out",
            &arg(folder),
            "--n-fields",
            "1",
            "--height",
            "200",
            "--width",
            "240",
        ],
    )
    .assert_success();
    (
        folder.join("BBBC021_v1_image.csv"),
        folder.join("BBBC021_v1_moa.csv"),
    )
}

fn preprocess_fields(image_csv: &Path, moa_csv: &Path, output: &Path, extra: &[&str]) -> Outcome {
    let mut args = vec![
        "bbbc021".to_string(),
        "--image-csv".into(),
        arg(image_csv),
        "--moa-csv".into(),
        arg(moa_csv),
        "--output".into(),
        arg(output),
        "--no-progress".into(),
    ];
    args.extend(extra.iter().map(|s| s.to_string()));
    run(&stage("pf-preprocess"), &args)
}

#[test]
fn centres_far_outside_the_field_and_duplicate_centres_are_errors() {
    let temp = tempfile::tempdir().unwrap();
    let (images, moa) = generated_field(temp.path());
    let image_number = {
        let text = std::fs::read_to_string(&images).unwrap();
        let header: Vec<&str> = text.lines().next().unwrap().split(',').collect();
        let at = header.iter().position(|h| *h == "ImageNumber");
        at.map(|at| {
            text.lines()
                .nth(1)
                .unwrap()
                .split(',')
                .nth(at)
                .unwrap()
                .to_string()
        })
    };
    let Some(image_number) = image_number else {
        panic!("make_fields.py writes no ImageNumber column");
    };
    let output = temp.path().join("cells.parquet");
    for (rows, fragment) in [
        (
            format!("{image_number},1,1e300,50\n"),
            "outside the 240×200 field",
        ),
        (
            format!("{image_number},1,9223372036854775807,-9223372036854775808\n"),
            "outside the 240×200 field",
        ),
        (
            format!("{image_number},1,100,100\n{image_number},2,100,100\n"),
            "twice",
        ),
    ] {
        let centers = temp.path().join("centers.csv");
        std::fs::write(
            &centers,
            format!("ImageNumber,ObjectNumber,Location_Center_X,Location_Center_Y\n{rows}"),
        )
        .unwrap();
        preprocess_fields(&images, &moa, &output, &["--centers", &arg(&centers)])
            .assert_failure(2, &["centers.csv", fragment]);
        assert!(!output.exists());
    }
}

// ---------------------------------------------------------------------------------------------
// Values that exhaust the machine or hang a stage

#[test]
fn sizes_and_thread_counts_are_bounded_by_what_the_input_can_need() {
    let temp = tempfile::tempdir().unwrap();
    let (images, moa) = generated_field(temp.path());
    let output = temp.path().join("cells.parquet");
    preprocess_fields(
        &images,
        &moa,
        &output,
        &["--crop-size", "100000", "--edge", "zero"],
    )
    .assert_failure(2, &["--crop-size"]);
    preprocess_fields(&images, &moa, &output, &["--crop-size", "0"])
        .assert_failure(2, &["--crop-size"]);
    preprocess_fields(
        &images,
        &moa,
        &output,
        &["--crop-size", "512", "--edge", "zero"],
    )
    .assert_failure(2, &["larger than the 240×200 field"]);
    preprocess_fields(&images, &moa, &output, &["--threads", "100000"])
        .assert_failure(2, &["--threads", "1024"]);
    let whole = |size: &str| {
        Call::stage("pf-preprocess")
            .command("whole")
            .path("--image-csv", &images)
            .flag("--size", size)
            .path("--output", &output)
            .run()
    };
    whole("20000").assert_failure(2, &["--size"]);
    whole("0").assert_failure(2, &["--size"]);
    Call::stage("pf-embed")
        .flag("--cells", "c.parquet")
        .flag("--encoder", "e.onnx")
        .flag("--output", "o.parquet")
        .flag("--threads", "100000")
        .run()
        .assert_failure(2, &["--threads"]);
    Call::stage("pf-train")
        .command("generative")
        .flag("--cells", "c")
        .flag("--output", "o")
        .flag("--model", "cytovae")
        .flag("--threads", "100000")
        .run()
        .assert_failure(2, &["--threads"]);
    Call::stage("pf-synth")
        .flag("--threads", "100000")
        .run()
        .assert_failure(2, &["--threads"]);
    Call::stage("pf-synth")
        .flag("--field-size", "100000x100000")
        .run()
        .assert_failure(2, &["--field-size", "8192"]);
    Call::stage("pf-synth")
        .flag("--cells-per-field", "1e9")
        .run()
        .assert_failure(2, &["--cells-per-field", "2000"]);
    Call::stage("pf-synth")
        .flag("--dmso-wells-per-plate", "1000000000")
        .run()
        .assert_failure(2, &["at most 384 wells"]);
    Call::stage("pf-embed")
        .flag("--cells", "c.parquet")
        .flag("--encoder", "e.onnx")
        .flag("--output", "o.parquet")
        .flag("--batch-size", "100000000")
        .run()
        .assert_failure(2, &["--batch-size"]);
    assert!(!output.exists());
}

#[test]
fn a_huge_fan_out_and_a_var_that_names_itself_end_at_once() {
    let temp = tempfile::tempdir().unwrap();
    let text = pipeline_with("\"P1\"", "out")
        .replace("workdir = \"out\"", "workdir = \"out\"\nshards = 1000000");
    std::fs::write(temp.path().join("p.toml"), text).unwrap();
    pf_run(temp.path(), &["emit", "make", "p.toml"]).assert_failure(2, &["shards = 1000000"]);
    // `data = "${data}x"` is taken literally, once: no endless expansion.
    let text = pipeline_with("\"P1\"", "out").replace("data = \"data\"", "data = \"${data}x\"");
    std::fs::write(temp.path().join("p.toml"), text).unwrap();
    let started = Instant::now();
    let emitted = pf_run(temp.path(), &["emit", "make", "p.toml"]);
    assert!(started.elapsed() < Duration::from_secs(10));
    emitted.assert_success();
    assert!(emitted.stdout.contains("$${data}x"), "{}", emitted.stdout);
}

#[test]
fn many_seeds_are_bounded_and_the_widest_pipeline_is_planned_at_once() {
    let temp = tempfile::tempdir().unwrap();
    let seeds = |n: usize| {
        (0..n)
            .map(|seed| seed.to_string())
            .collect::<Vec<_>>()
            .join(", ")
    };
    let seeded = |n: usize, shards: usize| {
        pipeline_with("\"P1\"", "out")
            .replace(
                "workdir = \"out\"",
                &format!("workdir = \"out\"\nshards = {shards}\nseeds = [{}]", seeds(n)),
            )
            .replace("command = \"singlecell\"", "command = \"singlecell\"\nfan_out = \"shard\"")
            + "\n[[step]]\nname = \"embed\"\nstage = \"pf-embed\"\nper_seed = true\nfan_out = \"shard\"\n\
               inputs = { cells = \"@preprocess.output\" }\noutputs = { output = \"e.parquet\" }\n\
               \n[[step]]\nname = \"aggregate\"\nstage = \"pf-aggregate\"\n\
               inputs = { input = \"@embed.output\" }\noutputs = { wells = \"w.parquet\" }\n"
    };
    std::fs::write(temp.path().join("p.toml"), seeded(101, 2)).unwrap();
    pf_run(temp.path(), &["emit", "make", "p.toml"]).assert_failure(
        2,
        &[
            "p.toml",
            "[pipeline] seeds: 101 seeds; give between 1 and 100",
        ],
    );
    let many: Vec<String> = (0..101).map(|seed| seed.to_string()).collect();
    std::fs::write(temp.path().join("p.toml"), seeded(3, 2)).unwrap();
    pf_run(
        temp.path(),
        &["emit", "make", "p.toml", "--seeds", &many.join(",")],
    )
    .assert_failure(2, &["101 seeds"]);
    // --shards is held to the same bounds as the file's `shards`, and says it was the flag.
    for shards in ["0", "1025", "99999999999999999999999"] {
        pf_run(
            temp.path(),
            &["emit", "nextflow", "p.toml", "--shards", shards],
        )
        .assert_failure(2, &["--shards"]);
    }
    // The widest plan allowed (100 seeds × 1024 shards: 103,425 steps, one of them reading
    // 102,400 files) is planned and emitted in seconds: planning took minutes when each step
    // looked its producers up in a list.
    std::fs::write(temp.path().join("p.toml"), seeded(100, 1024)).unwrap();
    let started = Instant::now();
    let emitted = pf_run(
        temp.path(),
        &["emit", "snakemake", "p.toml", "-o", "Snakefile"],
    );
    emitted.assert_success();
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "{:?}",
        started.elapsed()
    );
}

#[test]
fn a_fifo_given_as_an_image_is_refused_without_blocking() {
    let temp = tempfile::tempdir().unwrap();
    let (images, moa) = generated_field(temp.path());
    // Replace the first channel's TIFF by a FIFO nobody writes to.
    let text = std::fs::read_to_string(&images).unwrap();
    let header: Vec<&str> = text.lines().next().unwrap().split(',').collect();
    let row: Vec<&str> = text.lines().nth(1).unwrap().split(',').collect();
    let file = header
        .iter()
        .position(|h| h.starts_with("Image_FileName_"))
        .unwrap();
    let folder = header
        .iter()
        .position(|h| h.starts_with("Image_PathName_"))
        .unwrap();
    let tiff = temp.path().join(row[folder]).join(row[file]);
    std::fs::remove_file(&tiff).unwrap();
    assert!(Command::new("mkfifo")
        .arg(&tiff)
        .status()
        .unwrap()
        .success());
    let output = temp.path().join("cells.parquet");
    let mut child = Command::new(stage("pf-preprocess"))
        .args([
            "bbbc021",
            "--image-csv",
            &arg(&images),
            "--moa-csv",
            &arg(&moa),
            "--output",
            &arg(&output),
            "--no-progress",
        ])
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if started.elapsed() > Duration::from_secs(60) {
            child.kill().unwrap();
            panic!("pf-preprocess blocked on a FIFO");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let mut stderr = String::new();
    std::io::Read::read_to_string(child.stderr.as_mut().unwrap(), &mut stderr).unwrap();
    assert_eq!(status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("not a regular file"), "{stderr}");
    assert!(!output.exists());
}

#[test]
fn missing_things_are_named_with_exit_2() {
    let temp = tempfile::tempdir().unwrap();
    // An empty image table.
    let empty = temp.path().join("empty.csv");
    std::fs::write(&empty, "").unwrap();
    preprocess_fields(&empty, &empty, &temp.path().join("c.parquet"), &[])
        .assert_failure(2, &["empty.csv", "empty file"]);
    // --resume where nothing was trained.
    let model = temp.path().join("model");
    std::fs::create_dir_all(&model).unwrap();
    Call::stage("pf-train")
        .command("generative")
        .path("--cells", &empty)
        .path("--output", &model)
        .flag("--model", "cytovae")
        .switch("--resume")
        .run()
        .assert_failure(2, &["--resume", "model_card.json", "No such file"]);
    // A ragged CSV row is named as what it is.
    let ragged = temp.path().join("ragged.csv");
    std::fs::write(&ragged, CELLS_CSV.replace("1.5,2.5", "1.5")).unwrap();
    aggregate(&[&ragged], temp.path(), &[])
        .assert_failure(2, &["ragged.csv", "a CSV row with too few fields"]);
    // pf-run where its state folder cannot be made: the path is named.
    let workdir = temp.path().join("run");
    std::fs::create_dir_all(temp.path().join("run/out")).unwrap();
    std::fs::create_dir_all(workdir.join("data")).unwrap();
    std::fs::write(
        workdir.join("out/.pfrun"),
        "a file where a folder should be",
    )
    .unwrap();
    std::fs::write(workdir.join("p.toml"), pipeline_with("\"P1\"", "out")).unwrap();
    pf_run(&workdir, &["run", "p.toml"]).assert_failure(1, &["out/.pfrun"]);
    // A missing input is named once, its cause once (the chain printed "No such file or
    // directory (os error 2): No such file or directory (os error 2)").
    let absent = temp.path().join("absent.parquet");
    let outcome = classify(
        &absent,
        &temp.path().join("p.parquet"),
        &temp.path().join("m.parquet"),
    );
    outcome.assert_failure(2, &["absent.parquet", "No such file or directory"]);
    assert_eq!(
        outcome.stderr.matches("No such file or directory").count(),
        1,
        "{}",
        outcome.stderr
    );
    // pf-train keeps the cause (it used to flatten every table error into "bad data" text, so
    // a disk error read as the input's fault): a missing file is still exit 2, named once.
    let outcome = train_tiny(&[&absent], &temp.path().join("model-absent"));
    outcome.assert_failure(2, &["absent.parquet", "No such file or directory"]);
    assert_eq!(
        outcome.stderr.matches("absent.parquet").count(),
        1,
        "{}",
        outcome.stderr
    );
}

fn classify(treatments: &Path, predictions: &Path, metrics: &Path) -> Outcome {
    Call::stage("pf-classify")
        .path("--treatments", treatments)
        .path("--predictions", predictions)
        .path("--metrics", metrics)
        .run()
}

/// A one-epoch CytoVAE of latent 8 on the given cells tables.
fn train_tiny(cells: &[&Path], model: &Path) -> Outcome {
    let mut args = vec!["generative".to_string()];
    for table in cells {
        args.push("--cells".to_string());
        args.push(arg(table));
    }
    args.extend(
        [
            "--output",
            &arg(model),
            "--model",
            "cytovae",
            "--epochs",
            "1",
            "--latent-dim",
            "8",
            "--batch-size",
            "32",
            "--no-progress",
            "--threads",
            "2",
        ]
        .map(str::to_string),
    );
    run(&stage("pf-train"), &args)
}

// ---------------------------------------------------------------------------------------------
// Silently wrong numbers

/// Writes a per-cell table with pyarrow / pandas from a few lines of Python.
fn python_table(code: &str) -> Outcome {
    run(&python(), &["-c", code])
}

fn aggregate(inputs: &[&Path], folder: &Path, extra: &[&str]) -> Outcome {
    let mut args = Vec::new();
    for input in inputs {
        args.push("--input".to_string());
        args.push(arg(input));
    }
    args.extend([
        "--wells".into(),
        arg(&folder.join("wells.parquet")),
        "--treatments".into(),
        arg(&folder.join("treatments.parquet")),
    ]);
    args.extend(extra.iter().map(|s| s.to_string()));
    run(&stage("pf-aggregate"), &args)
}

const CELLS_CSV: &str = "Metadata_Plate,Metadata_Well,Metadata_Compound,Metadata_Concentration,Metadata_MoA,Cells_a,Cells_b\n\
P1,A01,DMSO,0,DMSO,1.0,2.0\nP1,A01,DMSO,0,DMSO,1.5,2.5\nP1,A02,taxol,1,Microtubule,3.0,4.0\nP1,A02,taxol,1,Microtubule,3.5,4.5\n";

#[test]
fn a_platemap_that_disagrees_or_misses_a_well_is_named() {
    let temp = tempfile::tempdir().unwrap();
    let keys = temp.path().join("keys.csv");
    std::fs::write(
        &keys,
        "Metadata_Plate,Metadata_Well,Metadata_MoA,Cells_a\nP1,A01,DMSO,1.0\nP1,A02,Microtubule,3.0\n",
    )
    .unwrap();
    let platemap = |name: &str, text: &str| {
        let path = temp.path().join(name);
        std::fs::write(&path, text).unwrap();
        path
    };
    let good = "Metadata_Plate,Metadata_Well,Metadata_Compound,Metadata_Concentration\n\
                P1,A01,DMSO,0\nP1,A01,DMSO,0\nP1,A02,taxol,1\n";
    let output_written = || temp.path().join("wells.parquet").exists();
    // A well with two treatments (an image table whose fields disagree): which one is right?
    let two = platemap(
        "two.csv",
        &good.replace(
            "P1,A01,DMSO,0\nP1,A01,DMSO,0",
            "P1,A01,DMSO,0\nP1,A01,taxol,1",
        ),
    );
    let arg_two = arg(&two);
    aggregate(&[&keys], temp.path(), &["--platemap", &arg_two]).assert_failure(
        2,
        &[
            "two.csv",
            "well P1/A01 has two treatments: (DMSO, 0) on line 2 and (taxol, 1) on line 3",
        ],
    );
    // A well of the profiles that the plate map does not name: no silent null treatment.
    let short = platemap("short.csv", &good.replace("P1,A02,taxol,1\n", ""));
    let arg_short = arg(&short);
    aggregate(&[&keys], temp.path(), &["--platemap", &arg_short])
        .assert_failure(2, &["well P1/A02: not in --platemap", "short.csv"]);
    // A plate map without a well column, a concentration of text, an empty compound.
    let no_well = platemap("no_well.csv", &good.replace("Metadata_Well,", "Position,"));
    let arg_no_well = arg(&no_well);
    aggregate(&[&keys], temp.path(), &["--platemap", &arg_no_well]).assert_failure(
        2,
        &[
            "no_well.csv",
            "none of the columns Metadata_Well",
            "--platemap-well-column",
        ],
    );
    let text = platemap("text.csv", &good.replace("taxol,1", "taxol,1 uM"));
    let arg_text = arg(&text);
    aggregate(&[&keys], temp.path(), &["--platemap", &arg_text]).assert_failure(
        2,
        &[
            "text.csv",
            "concentration column `Metadata_Concentration`",
            "not numbers",
        ],
    );
    let empty = platemap(
        "empty_compound.csv",
        &good.replace("P1,A02,taxol,1", "P1,A02,,1"),
    );
    let arg_empty = arg(&empty);
    aggregate(&[&keys], temp.path(), &["--platemap", &arg_empty]).assert_failure(
        2,
        &[
            "empty_compound.csv",
            "line 4",
            "`Metadata_Compound` is empty",
        ],
    );
    // Profiles that already carry a treatment: two sources of truth.
    let annotated = temp.path().join("annotated.csv");
    std::fs::write(&annotated, CELLS_CSV).unwrap();
    let arg_good = arg(&platemap("good.csv", good));
    aggregate(&[&annotated], temp.path(), &["--platemap", &arg_good]).assert_failure(
        2,
        &["annotated.csv", "already has a `Metadata_Compound` column"],
    );
    assert!(!output_written(), "nothing written");
    aggregate(
        &[&keys],
        temp.path(),
        &["--platemap", &arg_good, "--level", "wells"],
    )
    .assert_success();
}

#[test]
fn missing_feature_values_are_named_never_skipped() {
    let temp = tempfile::tempdir().unwrap();
    // One `NA` makes the CSV column text: it was dropped without a word.
    let na = temp.path().join("na.csv");
    std::fs::write(&na, CELLS_CSV.replace("3.5,4.5", "NA,4.5")).unwrap();
    aggregate(&[&na], temp.path(), &[]).assert_failure(2, &["na.csv", "`Cells_a`", "not numeric"]);
    // An empty field is a null: the well's mean would have covered 1 of its 2 cells.
    let empty = temp.path().join("empty.csv");
    std::fs::write(&empty, CELLS_CSV.replace("3.5,4.5", ",4.5")).unwrap();
    aggregate(&[&empty], temp.path(), &[])
        .assert_failure(2, &["empty.csv", "`Cells_a`", "1 missing value"]);
    // A null in a Parquet file (a phenoflow-like embeddings table written by pyarrow).
    let parquet = temp.path().join("null.parquet");
    python_table(&format!(
        "import pyarrow as pa, pyarrow.parquet as pq\n\
         t = pa.table({{'Metadata_Plate': ['P1']*4, 'Metadata_Well': ['A01','A01','A02','A02'], \
         'Metadata_Compound': ['DMSO','DMSO','taxol','taxol'], 'Metadata_Concentration': [0.0,0.0,1.0,1.0], \
         'Metadata_MoA': ['DMSO','DMSO','Microtubule','Microtubule'], \
         'Cells_a': pa.array([1.0, None, 3.0, 3.5], pa.float32())}})\n\
         pq.write_table(t, '{}')",
        arg(&parquet)
    ))
    .assert_success();
    aggregate(&[&parquet], temp.path(), &[])
        .assert_failure(2, &["null.parquet", "`Cells_a`", "1 missing value"]);
    assert!(!temp.path().join("wells.parquet").exists());
    // The clean table aggregates.
    let clean = temp.path().join("clean.csv");
    std::fs::write(&clean, CELLS_CSV).unwrap();
    aggregate(&[&clean], temp.path(), &[]).assert_success();
}

#[test]
fn the_same_cells_twice_and_conflicting_moa_rows_are_errors() {
    let temp = tempfile::tempdir().unwrap();
    let cells = temp.path().join("cells.csv");
    std::fs::write(&cells, CELLS_CSV).unwrap();
    let copy = temp.path().join("copy.csv");
    std::fs::write(&copy, CELLS_CSV).unwrap();
    let out = temp.path().join("out");
    std::fs::create_dir_all(&out).unwrap();
    aggregate(&[&cells, &cells], &out, &[]).assert_failure(2, &["given twice"]);
    aggregate(&[&cells, &copy], &out, &[]).assert_failure(2, &["the same content"]);
    let moa = temp.path().join("moa.csv");
    std::fs::write(
        &moa,
        "compound,concentration,moa\nDMSO,0,DMSO\ntaxol,1,Microtubule\ntaxol,1.0,Actin disruptors\n",
    )
    .unwrap();
    aggregate(&[&cells], &out, &["--moa-csv", &arg(&moa)])
        .assert_failure(2, &["moa.csv", "line 4", "Actin disruptors", "Microtubule"]);
    // A byte-order mark before the header is not part of the first column's name.
    std::fs::write(
        &moa,
        "\u{feff}compound,concentration,moa\nDMSO,0,DMSO\ntaxol,1,Microtubule\n",
    )
    .unwrap();
    let no_moa = temp.path().join("no-moa.csv");
    std::fs::write(
        &no_moa,
        CELLS_CSV
            .replace(",Metadata_MoA", "")
            .replace(",DMSO,1", ",1")
            .replace(",DMSO,2", ",2")
            .replace(",Microtubule", ""),
    )
    .unwrap();
    aggregate(&[&no_moa], &out, &["--moa-csv", &arg(&moa)]).assert_success();
    assert!(!out.join("wells.parquet").exists() || out.join("treatments.parquet").exists());
}

#[test]
fn a_cell_listed_twice_in_one_table_is_an_error() {
    let temp = tempfile::tempdir().unwrap();
    let cells = temp.path().join("cells.csv");
    let header = "Metadata_Plate,Metadata_Well,Metadata_Site,Metadata_ObjectNumber,Metadata_Compound,Metadata_Concentration,Metadata_MoA,Cells_a\n";
    let rows = "P1,A01,1,1,DMSO,0,DMSO,1.0\nP1,A01,1,2,DMSO,0,DMSO,2.0\nP1,A02,1,1,taxol,1,Microtubule,3.0\n";
    std::fs::write(
        &cells,
        format!("{header}{rows}P1,A01,1,2,DMSO,0,DMSO,2.0\n"),
    )
    .unwrap();
    aggregate(&[&cells], temp.path(), &[]).assert_failure(
        2,
        &[
            "a cell appears more than once",
            "Metadata_Well = \"A01\"",
            "Metadata_ObjectNumber = 2",
        ],
    );
    std::fs::write(&cells, format!("{header}{rows}")).unwrap();
    aggregate(&[&cells], temp.path(), &[]).assert_success();
    // Distributed CellProfiler: every job's images start at ImageNumber 1; TableNumber tells
    // the jobs apart, so these are four cells, not duplicates.
    let cellprofiler = temp.path().join("cp.csv");
    std::fs::write(
        &cellprofiler,
        "Metadata_Plate,Metadata_Well,TableNumber,ImageNumber,ObjectNumber,Metadata_Compound,Metadata_Concentration,Metadata_MoA,Cells_a\n\
         P1,A01,1,1,1,DMSO,0,DMSO,1.0\nP1,A01,2,1,1,DMSO,0,DMSO,2.0\n\
         P1,A02,1,1,1,taxol,1,Microtubule,3.0\nP1,A02,2,1,1,taxol,1,Microtubule,3.5\n",
    )
    .unwrap();
    aggregate(&[&cellprofiler], temp.path(), &[]).assert_success();
    // Parquet cells go through the direct reader (its own check, `means.rs`): a copy of one cell
    // at the end of a shuffled table, in another row group than the original, is found by both
    // engines, and nothing is written.
    let parquet = temp.path().join("twice.parquet");
    run_python(
        "make_embeddings.py",
        &[
            "--out",
            &arg(&parquet),
            "--cells",
            "3000",
            "--features",
            "4",
            "--shuffle",
            "--row-group-size",
            "500",
            "--duplicate-row",
            "17",
        ],
    )
    .assert_success();
    let out = temp.path().join("parquet-out");
    std::fs::create_dir(&out).unwrap();
    for engine in ["auto", "polars"] {
        aggregate(&[&parquet], &out, &["--engine", engine]).assert_failure(
            2,
            &[
                "a cell appears more than once",
                "Metadata_Site = 1",
                "Metadata_ObjectNumber = ",
            ],
        );
        assert_eq!(std::fs::read_dir(&out).unwrap().count(), 0, "{engine}");
    }
}

/// `parquet` with one column chunk's place in the footer rewritten by `forge` (the pages left as
/// they are): what a damaged file, or one written to harm, gives the reader.
fn forge_footer(
    parquet: &Path,
    row_group: usize,
    column: &str,
    forge: impl Fn(
        parquet::file::metadata::ColumnChunkMetaDataBuilder,
    ) -> parquet::file::metadata::ColumnChunkMetaDataBuilder,
) -> Vec<u8> {
    use parquet::file::metadata::{ParquetMetaDataReader, ParquetMetaDataWriter};
    let content = bytes::Bytes::from(std::fs::read(parquet).unwrap());
    let footer_length = u32::from_le_bytes(
        content[content.len() - 8..content.len() - 4]
            .try_into()
            .unwrap(),
    );
    let pages = content.len() - 8 - footer_length as usize;
    let mut metadata = ParquetMetaDataReader::new()
        .parse_and_finish(&content)
        .unwrap()
        .into_builder();
    let mut row_groups = metadata.take_row_groups();
    let group = row_groups[row_group].clone();
    let columns = group
        .columns()
        .iter()
        .map(|chunk| {
            if chunk.column_descr().name() == column {
                forge(chunk.clone().into_builder()).build().unwrap()
            } else {
                chunk.clone()
            }
        })
        .collect();
    row_groups[row_group] = group
        .into_builder()
        .set_column_metadata(columns)
        .build()
        .unwrap();
    let metadata = metadata.set_row_groups(row_groups).build();
    let mut forged = content[..pages].to_vec();
    ParquetMetaDataWriter::new(&mut forged, &metadata)
        .finish()
        .unwrap();
    forged
}

#[test]
fn a_footer_that_places_a_column_outside_the_file_is_an_error() {
    let temp = tempfile::tempdir().unwrap();
    let parquet = temp.path().join("cells.parquet");
    run_python(
        "make_embeddings.py",
        &[
            "--out",
            &arg(&parquet),
            "--cells",
            "2000",
            "--features",
            "4",
            "--row-group-size",
            "500",
        ],
    )
    .assert_success();
    let out = temp.path().join("out");
    std::fs::create_dir(&out).unwrap();
    let forged = temp.path().join("forged.parquet");
    // A column chunk claiming an exabyte (read through a file, its first page's buffer would be
    // allocated at the size its header gives); one placed past the end; one at a negative offset.
    let size = |chunk: parquet::file::metadata::ColumnChunkMetaDataBuilder| {
        chunk.set_total_compressed_size(1 << 60)
    };
    let offset = |chunk: parquet::file::metadata::ColumnChunkMetaDataBuilder| {
        chunk
            .set_dictionary_page_offset(None)
            .set_data_page_offset(1 << 40)
    };
    let negative = |chunk: parquet::file::metadata::ColumnChunkMetaDataBuilder| {
        chunk
            .set_dictionary_page_offset(None)
            .set_data_page_offset(-4096)
    };
    for (what, content) in [
        (
            "size",
            forge_footer(&parquet, 2, "Cells_Synthetic_z003", size),
        ),
        (
            "offset",
            forge_footer(&parquet, 1, "Cells_Synthetic_z000", offset),
        ),
        (
            "negative",
            forge_footer(&parquet, 3, "Metadata_Well", negative),
        ),
    ] {
        std::fs::write(&forged, content).unwrap();
        for engine in ["auto", "polars"] {
            aggregate(&[&forged], &out, &["--engine", engine])
                .assert_failure(2, &["forged.parquet", "outside the file", "row group "]);
            assert_eq!(
                std::fs::read_dir(&out).unwrap().count(),
                0,
                "{what} {engine}"
            );
        }
    }
    // The untouched file is read.
    aggregate(&[&parquet], &out, &[]).assert_success();
    // Every stage's table reader checks the footer the same way (here pf-classify's treatments).
    let treatments = temp.path().join("forged-treatments.parquet");
    std::fs::write(
        &treatments,
        forge_footer(&out.join("treatments.parquet"), 0, "Metadata_MoA", size),
    )
    .unwrap();
    let predictions = temp.path().join("predictions.parquet");
    classify(
        &treatments,
        &predictions,
        &temp.path().join("metrics.parquet"),
    )
    .assert_failure(
        2,
        &[
            "forged-treatments.parquet",
            "outside the file",
            "column `Metadata_MoA`",
        ],
    );
    assert!(!predictions.exists());
    // And pf-cellprofiler's CytoTable input, which it reads on its own.
    let cytotable = temp.path().join("cytotable.parquet");
    run_python(
        "check_cellprofiler.py",
        &[
            "make-cytotable".into(),
            arg(&shared_data().join("cellprofiler/nf1_schwann/all_cellprofiler.sqlite")),
            arg(&cytotable),
        ],
    )
    .assert_success();
    let forged = temp.path().join("forged-cytotable.parquet");
    std::fs::write(
        &forged,
        forge_footer(&cytotable, 0, "Metadata_ImageNumber", offset),
    )
    .unwrap();
    let single_cells = temp.path().join("single_cells.parquet");
    Call::stage("pf-cellprofiler")
        .path("--cytotable", &forged)
        .path("--output", &single_cells)
        .run()
        .assert_failure(
            2,
            &[
                "forged-cytotable.parquet",
                "outside the file",
                "column `Metadata_ImageNumber`",
            ],
        );
    assert!(!single_cells.exists());
}

#[test]
fn outputs_that_are_inputs_and_unreadable_inputs_are_named() {
    let temp = tempfile::tempdir().unwrap();
    let cells = temp.path().join("cells.csv");
    std::fs::write(&cells, CELLS_CSV).unwrap();
    let wells = arg(&temp.path().join("wells.parquet"));
    Call::stage("pf-aggregate")
        .path("--input", &cells)
        .path("--wells", &cells)
        .flag("--treatments", &wells)
        .run()
        .assert_failure(2, &["--wells", "is also an input"]);
    Call::stage("pf-aggregate")
        .path("--input", &cells)
        .flag("--wells", &wells)
        .flag("--treatments", &wells)
        .run()
        .assert_failure(2, &["--treatments and --wells are the same file"]);
    assert_eq!(std::fs::read_to_string(&cells).unwrap(), CELLS_CSV);
    let (images, moa) = generated_field(&temp.path().join("screen"));
    preprocess_fields(&images, &moa, &images, &[])
        .assert_failure(2, &["--output", "is also an input"]);
    // An empty CSV, a symbolic-link loop, a text concentration: exit 2, the file named.
    let empty = temp.path().join("empty.csv");
    std::fs::write(&empty, "").unwrap();
    aggregate(&[&empty], temp.path(), &[]).assert_failure(2, &["empty.csv", "empty file"]);
    let (a, b) = (temp.path().join("loop-a"), temp.path().join("loop-b"));
    std::os::unix::fs::symlink(&a, &b).unwrap();
    std::os::unix::fs::symlink(&b, &a).unwrap();
    aggregate(&[&a], temp.path(), &[]).assert_failure(2, &["loop-a", "symbolic links"]);
    preprocess_fields(&a, &moa, &temp.path().join("c.parquet"), &[]).assert_failure(2, &["loop-a"]);
    let text = temp.path().join("text.csv");
    std::fs::write(&text, CELLS_CSV.replace("taxol,1,", "taxol,1 uM,")).unwrap();
    aggregate(&[&text], temp.path(), &[]).assert_failure(
        2,
        &[
            "text.csv",
            "concentration column `Metadata_Concentration`",
            "not numbers",
        ],
    );
}

#[test]
fn channel_first_npy_cells_and_duplicate_metadata_rows_are_errors() {
    let temp = tempfile::tempdir().unwrap();
    let root = singlecell_copy(temp.path());
    let duplicated = temp.path().join("dup");
    let status = Command::new("cp")
        .arg("-r")
        .arg(&root)
        .arg(&duplicated)
        .status()
        .unwrap();
    assert!(status.success());
    // Every cell stored CHW (3, 68, 68).
    let outcome = run(
        &python(),
        &[
            "-c",
            &format!(
                "import numpy as np, glob\n\
                 for f in glob.glob('{}/**/*.npy', recursive=True):\n    \
                 np.save(f, np.ascontiguousarray(np.moveaxis(np.load(f), -1, 0)))",
                arg(&root)
            ),
        ],
    );
    outcome.assert_success();
    let output = temp.path().join("cells.parquet");
    preprocess_singlecell(&root, &output).assert_failure(2, &["[3, 68, 68]", "channel-first"]);
    assert!(!output.exists());
    // The same row twice.
    rewrite_metadata(&duplicated, |text| {
        let second = text.lines().nth(1).unwrap().to_string();
        format!("{text}{second}\n")
    });
    preprocess_singlecell(&duplicated, &output).assert_failure(2, &["duplicate rows"]);
    assert!(!output.exists());
}

/// Treatments whose every MoA has one compound: no NSC query can be scored.
#[test]
fn no_scorable_query_is_reported_as_n_a_never_as_zero() {
    let temp = tempfile::tempdir().unwrap();
    let cells = temp.path().join("cells.csv");
    std::fs::write(&cells, CELLS_CSV).unwrap();
    aggregate(&[&cells], temp.path(), &[]).assert_success();
    let metrics = temp.path().join("metrics.parquet");
    let outcome = classify(
        &temp.path().join("treatments.parquet"),
        &temp.path().join("predictions.parquet"),
        &metrics,
    );
    outcome.assert_success();
    assert!(
        outcome.stdout.contains("accuracy n/a"),
        "{}",
        outcome.stdout
    );
    assert!(
        !outcome.stdout.contains("accuracy 0.000"),
        "{}",
        outcome.stdout
    );
    let table = run_python("read_table.py", &[&arg(&metrics), "Metric,Protocol,Value"]);
    table.assert_success();
    assert!(!table.stdout.contains("accuracy"), "{}", table.stdout);
    // A screen of controls only (the project's one-well fixture): nothing to score, n/a too.
    let controls: String = CELLS_CSV
        .lines()
        .filter(|line| !line.contains("taxol"))
        .map(|line| format!("{line}\n"))
        .collect();
    std::fs::write(&cells, controls).unwrap();
    std::fs::remove_file(temp.path().join("wells.parquet")).unwrap();
    std::fs::remove_file(temp.path().join("treatments.parquet")).unwrap();
    aggregate(&[&cells], temp.path(), &[]).assert_success();
    let outcome = classify(
        &temp.path().join("treatments.parquet"),
        &temp.path().join("predictions.parquet"),
        &metrics,
    );
    outcome.assert_success();
    assert!(
        outcome.stderr.contains("nothing to score"),
        "{}",
        outcome.stderr
    );
    assert!(
        outcome.stdout.contains("NSC       accuracy n/a"),
        "{}",
        outcome.stdout
    );
}

#[test]
fn moa_metrics_are_not_taken_for_a_classifiers_metrics() {
    let temp = tempfile::tempdir().unwrap();
    let cells = temp.path().join("cells.parquet");
    run_python(
        "make_embeddings.py",
        &["--out", &arg(&cells), "--cells", "6000", "--features", "8"],
    )
    .assert_success();
    aggregate(&[&cells], temp.path(), &[]).assert_success();
    let metrics = temp.path().join("metrics.parquet");
    classify(
        &temp.path().join("treatments.parquet"),
        &temp.path().join("predictions.parquet"),
        &metrics,
    )
    .assert_success();
    let report = temp.path().join("report");
    Call::stage("pf-report")
        .path("--classifier-metrics", &metrics)
        .path("--output", &report)
        .run()
        .assert_failure(
            2,
            &[
                "metrics.parquet",
                "1-NN MoA protocol",
                "not of a supervised classifier",
            ],
        );
    assert!(!report.exists());
    // A supervised classifier's metrics without their per-class rows (cut by hand): named too.
    Call::stage("pf-baseline")
        .path("--input", &cells)
        .flag("--classifier", "random-forest")
        .flag("--label", "Metadata_MoA")
        .flag("--trees", "5")
        .path("--output", temp.path().join("rf"))
        .run()
        .assert_success();
    let cut = temp.path().join("cut.parquet");
    run(
        &python(),
        &[
            "-c",
            "import sys, pyarrow.parquet as pq, pyarrow.compute as pc\n\
             t = pq.read_table(sys.argv[1])\n\
             pq.write_table(t.filter(pc.equal(t['Scope'], 'all')), sys.argv[2])",
            &arg(&temp.path().join("rf/metrics.parquet")),
            &arg(&cut),
        ],
    )
    .assert_success();
    Call::stage("pf-report")
        .path("--classifier-metrics", &cut)
        .path("--output", &report)
        .run()
        .assert_failure(
            2,
            &[
                "cut.parquet",
                "no per-class rows",
                "not the metrics of a supervised classifier",
            ],
        );
    assert!(!report.exists());
}

// ---------------------------------------------------------------------------------------------
// Processes and state

const SLEEPY: &str = r#"[pipeline]
name = "sleepy"
workdir = "out"

[[step]]
name = "synth"
stage = "pf-synth"
outputs = { output = "screen" }
params = { preset = "demo", seed = 1, force = true, no-progress = true, threads = 1 }
"#;

fn pid_of_stage(name: &str, parent: u32) -> Option<u32> {
    let entries = std::fs::read_dir("/proc").ok()?;
    for entry in entries.flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(status) = std::fs::read_to_string(format!("/proc/{pid}/status")) else {
            continue;
        };
        let field = |key: &str| {
            status
                .lines()
                .find(|line| line.starts_with(key))
                .map(|line| line[key.len()..].trim().to_string())
        };
        // pf-run's pre-flight also starts the stage (`--pf-flags`, `--version`) before it takes
        // the workdir's lock: only the step itself, which has an `--output`, counts.
        let is_step = std::fs::read(format!("/proc/{pid}/cmdline"))
            .map(|line| line.split(|&b| b == 0).any(|arg| arg == b"--output"))
            .unwrap_or(false);
        if field("Name:").as_deref() == Some(name)
            && field("PPid:").and_then(|p| p.parse().ok()) == Some(parent)
            && is_step
        {
            return Some(pid);
        }
    }
    None
}

fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .map(|status| !status.contains("State:\tZ"))
        .unwrap_or(false)
}

fn wait_for<T>(seconds: u64, mut probe: impl FnMut() -> Option<T>) -> Option<T> {
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(seconds) {
        if let Some(value) = probe() {
            return Some(value);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    None
}

#[test]
fn a_killed_pf_run_takes_its_stage_with_it_and_a_second_one_waits_its_turn() {
    let temp = tempfile::tempdir().unwrap();
    std::fs::write(temp.path().join("p.toml"), SLEEPY).unwrap();
    for signal in ["-TERM", "-KILL"] {
        let mut runner = Command::new(stage("pf-run"))
            .args(["run", "p.toml"])
            .current_dir(temp.path())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let child = wait_for(30, || pid_of_stage("pf-synth", runner.id()))
            .expect("pf-run started pf-synth");
        if signal == "-TERM" {
            // A second pf-run on the same workdir is refused while the first holds it.
            pf_run(temp.path(), &["run", "p.toml"])
                .assert_failure(2, &["in use by another pf-run"]);
        }
        let killed = Command::new("kill")
            .args([signal, &runner.id().to_string()])
            .status()
            .unwrap();
        assert!(killed.success());
        let status = runner.wait().unwrap();
        assert!(!status.success());
        assert!(
            wait_for(10, || (!alive(child)).then_some(())).is_some(),
            "pf-synth (pid {child}) outlived pf-run killed with {signal}"
        );
    }
    // The lock of the SIGKILLed run names a process that is gone: the next run takes it over.
    let dry = pf_run(temp.path(), &["run", "p.toml", "--dry-run"]);
    dry.assert_success();
}

#[test]
fn shard_records_cannot_collide_with_a_step_named_like_them() {
    let temp = tempfile::tempdir().unwrap();
    let root = arg(&shared_data().join("bbbc021/singlecell_tiny"));
    let text = format!(
        r#"[pipeline]
name = "collide"
workdir = "out"
shards = 2

[[step]]
name = "pp"
stage = "pf-preprocess"
command = "singlecell"
fan_out = "shard"
inputs = {{ root = "{root}" }}
outputs = {{ output = "a.parquet" }}
params = {{ no-progress = true }}

[[step]]
name = "pp_0_"
stage = "pf-preprocess"
command = "singlecell"
inputs = {{ root = "{root}" }}
outputs = {{ output = "b.parquet" }}
params = {{ no-progress = true }}

[[step]]
name = "overrides"
stage = "pf-preprocess"
command = "singlecell"
inputs = {{ root = "{root}" }}
outputs = {{ output = "c.parquet" }}
params = {{ no-progress = true }}
"#
    );
    std::fs::write(temp.path().join("p.toml"), text).unwrap();
    pf_run(temp.path(), &["run", "p.toml"]).assert_success();
    let again = pf_run(temp.path(), &["run", "p.toml"]);
    again.assert_success();
    // A step named like one of pf-run's own files keeps its record too (the overrides file has
    // two dots in its name, which no record has).
    assert!(again.stderr.contains("ran 0 of 4"), "{}", again.stderr);
    let records: Vec<String> = std::fs::read_dir(temp.path().join("out/.pfrun"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|name| {
            name.ends_with(".json") && name != "hash-cache.json" && name != "run.overrides.json"
        })
        .collect();
    assert_eq!(records.len(), 4, "{records:?}");
}

#[test]
fn stale_temporaries_of_dead_processes_are_removed_on_the_next_run() {
    let temp = tempfile::tempdir().unwrap();
    std::fs::write(temp.path().join("p.toml"), pipeline_with("\"P1\"", "out")).unwrap();
    let out = temp.path().join("out");
    std::fs::create_dir_all(&out).unwrap();
    std::fs::create_dir_all(temp.path().join("data")).unwrap();
    // pid 4194304 is above Linux's pid_max: no process has it.
    let stale = out.join(".cells.parquet.4194304.tmp");
    std::fs::write(&stale, b"half").unwrap();
    let live = out.join(format!(".cells.parquet.{}.tmp", std::process::id()));
    std::fs::write(&live, b"mine").unwrap();
    // The run fails (an empty data folder), after the clean-up.
    let outcome = pf_run(temp.path(), &["run", "p.toml"]);
    assert!(!stale.exists(), "{}", outcome.stderr);
    assert!(live.exists());
    std::fs::remove_file(&live).unwrap();
    nothing_left(&out, ".cells");
}

#[test]
fn an_unfinished_training_is_not_exported_and_a_card_cannot_point_elsewhere() {
    let temp = tempfile::tempdir().unwrap();
    let cells = temp.path().join("cells.parquet");
    preprocess_singlecell(&shared_data().join("bbbc021/singlecell_tiny"), &cells).assert_success();
    let model = temp.path().join("model");
    train_tiny(&[&cells], &model).assert_success();
    // As a killed `--epochs 5` run leaves it: the card of epoch 1 of 5.
    let card_path = model.join("model_card.json");
    let mut card: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&card_path).unwrap()).unwrap();
    card["hyperparameters"]["epochs"] = serde_json::json!(5);
    std::fs::write(&card_path, card.to_string()).unwrap();
    let export = |extra: &[&str]| {
        let mut args = vec![
            "--model-card".to_string(),
            arg(&card_path),
            "--encoder".into(),
            arg(&temp.path().join("e.onnx")),
            "--decoder".into(),
            arg(&temp.path().join("d.onnx")),
        ];
        args.extend(extra.iter().map(|s| s.to_string()));
        run(&stage("pf-export"), &args)
    };
    export(&[]).assert_failure(2, &["stopped after epoch 1 of 5", "--allow-unfinished"]);
    assert!(!temp.path().join("e.onnx").exists());
    export(&["--allow-unfinished"]).assert_success();
    // A missing checkpoint is named, exit 2.
    let checkpoint = model.join("checkpoint.safetensors");
    std::fs::rename(&checkpoint, model.join("moved")).unwrap();
    std::fs::remove_file(temp.path().join("e.onnx")).unwrap();
    export(&["--allow-unfinished"]).assert_failure(2, &["checkpoint.safetensors", "No such file"]);
    std::fs::rename(model.join("moved"), &checkpoint).unwrap();
    export(&["--allow-unfinished"]).assert_success();
    // A card whose checkpoint points out of its folder (paths escape their roots).
    card["checkpoint"] = serde_json::json!("../../../../etc/passwd");
    std::fs::write(&card_path, card.to_string()).unwrap();
    std::fs::remove_file(temp.path().join("e.onnx")).unwrap();
    export(&["--allow-unfinished"]).assert_failure(
        2,
        &["model_card.json", "must be a file name beside the card"],
    );
    assert!(!temp.path().join("e.onnx").exists());
}

// ---------------------------------------------------------------------------------------------
// Disk full

/// A 1 MiB tmpfs as the output folder (the tests run as root, as CI does).
#[test]
fn a_full_disk_is_a_machine_failure_and_leaves_nothing() {
    let temp = tempfile::tempdir().unwrap();
    let small = temp.path().join("small");
    std::fs::create_dir_all(&small).unwrap();
    let mounted = Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=1m", "tmpfs"])
        .arg(&small)
        .status()
        .unwrap();
    assert!(mounted.success(), "mounting a tmpfs needs root");
    let cells = temp.path().join("cells.parquet");
    preprocess_singlecell(&shared_data().join("bbbc021/singlecell_tiny"), &cells).assert_success();
    // 259 cells × 3 × 68 × 68 uint16 ≈ 7 MB compressed to a few MB: more than 1 MiB.
    let full = preprocess_singlecell(
        &shared_data().join("bbbc021/singlecell_tiny"),
        &small.join("cells.parquet"),
    );
    let left: Vec<_> = std::fs::read_dir(&small).unwrap().collect();
    let _ = Command::new("umount").arg(&small).status();
    assert_eq!(full.code, Some(1), "{}", full.stderr);
    assert!(!full.stderr.contains("not a readable"), "{}", full.stderr);
    assert!(
        full.stderr.contains("No space left") || full.stderr.contains("could not write"),
        "{}",
        full.stderr
    );
    assert!(left.is_empty(), "{left:?}");
}

// ---------------------------------------------------------------------------------------------
// Shipped pipelines on the project's own data

/// pipelines/bbbc021-singlecell.toml fans out to 4 shards; the project's fixture has 1 plate:
/// the empty shards preprocess and embed to empty tables and the pipeline runs through.
#[test]
fn a_shard_without_plates_gives_empty_tables_down_the_pipeline() {
    let temp = tempfile::tempdir().unwrap();
    let empty = temp.path().join("shard3.parquet");
    let outcome = Call::stage("pf-preprocess")
        .command("singlecell")
        .path("--root", shared_data().join("bbbc021/singlecell_tiny"))
        .flag("--shard", "3/4")
        .path("--output", &empty)
        .switch("--no-progress")
        .run();
    outcome.assert_success();
    assert!(
        outcome.stderr.contains("writing an empty table"),
        "{}",
        outcome.stderr
    );
    let cells = temp.path().join("cells.parquet");
    preprocess_singlecell(&shared_data().join("bbbc021/singlecell_tiny"), &cells).assert_success();
    let model = temp.path().join("model");
    train_tiny(&[&cells, &empty], &model).assert_success();
    let (encoder, decoder) = (temp.path().join("e.onnx"), temp.path().join("d.onnx"));
    Call::stage("pf-export")
        .path("--model-card", model.join("model_card.json"))
        .path("--encoder", &encoder)
        .path("--decoder", &decoder)
        .run()
        .assert_success();
    let embeddings = temp.path().join("embeddings.shard3.parquet");
    let embedded = Call::stage("pf-embed")
        .path("--cells", &empty)
        .path("--encoder", &encoder)
        .path("--output", &embeddings)
        .switch("--no-progress")
        .run();
    embedded.assert_success();
    assert!(
        embedded.stderr.contains("holds no cells"),
        "{}",
        embedded.stderr
    );
    let rows = phenoflow_schemas::read_table(&embeddings, phenoflow_schemas::TableKind::Embeddings)
        .unwrap();
    assert_eq!(rows.iter().map(|b| b.num_rows()).sum::<usize>(), 0);
}

// ---------------------------------------------------------------------------------------------
// CellProfiler exports (pf-cellprofiler)

#[test]
fn damaged_cellprofiler_exports_are_refused_by_file_and_column_with_nothing_written() {
    let temp = tempfile::tempdir().unwrap();
    let data = shared_data().join("cellprofiler");
    run_python(
        "make_hostile_cellprofiler.py",
        &[
            arg(&data.join("cpg0043_BR00116991_A01_1")),
            arg(&data.join("nf1_schwann/all_cellprofiler.sqlite")),
            arg(temp.path()),
        ],
    )
    .assert_success();
    let cases: [(&str, &str, &[&str]); 13] = [
        (
            "--csv-dir",
            "csv-no-imagenumber",
            &["csv-no-imagenumber/Cells.csv", "no `ImageNumber` column"],
        ),
        (
            "--csv-dir",
            "csv-dangling-parent",
            &[
                "Cytoplasm.csv: ImageNumber 1, object 5: Parent_Cells = 999",
                "names no object of",
            ],
        ),
        (
            "--csv-dir",
            "csv-no-metadata",
            &["Image.csv: ImageNumber 1 has no `Metadata_Well` value"],
        ),
        (
            "--csv-dir",
            "csv-short-cytoplasm",
            &[
                "Cytoplasm.csv: ImageNumber 1 has 108 objects",
                "Count_Cytoplasm = 109",
            ],
        ),
        (
            "--csv-dir",
            "csv-text-feature",
            &[
                "Nuclei.csv: ImageNumber 1, object 4",
                "`AreaShape_Area` holds `n/a`",
            ],
        ),
        (
            "--csv-dir",
            "csv-unsorted",
            &[
                "Nuclei.csv: ImageNumber 1 comes after ImageNumber 2",
                "sorted",
            ],
        ),
        (
            "--sqlite",
            "truncated.sqlite",
            &["truncated.sqlite: SQLite:", "damaged or truncated"],
        ),
        (
            "--sqlite",
            "no-imagenumber.sqlite",
            &["(table Per_Nuclei): no `ImageNumber` column"],
        ),
        (
            "--sqlite",
            "dangling-parent.sqlite",
            &["(table Per_Cytoplasm): ImageNumber 1, object 1: Parent_Nuclei = 999"],
        ),
        (
            "--sqlite",
            "no-metadata.sqlite",
            &["(table Per_Image): ImageNumber 2 has no `Metadata_Well` value"],
        ),
        (
            "--sqlite",
            "view.sqlite",
            &["view.sqlite: `Per_Nuclei` is a view", "its SQL is not run"],
        ),
        (
            "--sqlite",
            "generated.sqlite",
            &["column `Cells_Huge` of `Per_Cells` is a generated column"],
        ),
        (
            "--sqlite",
            "tablenumber.sqlite",
            &[
                "(table Per_Image): has a `TableNumber` column",
                "not supported",
            ],
        ),
    ];
    for (flag, case, fragments) in cases {
        let output = temp.path().join(format!("{case}.parquet"));
        run(
            &stage("pf-cellprofiler"),
            &[
                flag.to_string(),
                arg(&temp.path().join(case)),
                "--output".into(),
                arg(&output),
            ],
        )
        .assert_failure(2, fragments);
        assert!(!output.exists(), "{case}: an output was written");
    }
    nothing_left(temp.path(), ".");
    // A prefix that leaves the folder it names.
    Call::stage("pf-cellprofiler")
        .path("--csv-dir", temp.path().join("csv-unsorted"))
        .flag("--csv-prefix", "../../etc/")
        .path("--output", temp.path().join("x.parquet"))
        .run()
        .assert_failure(2, &["--csv-prefix", "not a plain file-name fragment"]);
}

#[test]
fn a_sqlite_backend_another_process_holds_locked_is_exit_2_after_the_busy_timeout() {
    let temp = tempfile::tempdir().unwrap();
    let backend = temp.path().join("locked.sqlite");
    std::fs::copy(
        shared_data().join("cellprofiler/nf1_schwann/all_cellprofiler.sqlite"),
        &backend,
    )
    .unwrap();
    // A writer holding an exclusive lock (rollback journal: readers are shut out until it ends).
    let mut holder = Command::new(python())
        .args([
            "-c",
            "import sqlite3, sys, time\n\
             c = sqlite3.connect(sys.argv[1], isolation_level=None)\n\
             c.execute('BEGIN EXCLUSIVE')\n\
             print('locked', flush=True)\n\
             time.sleep(60)",
            &arg(&backend),
        ])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(holder.stdout.as_mut().unwrap()),
        &mut line,
    )
    .unwrap();
    assert_eq!(line.trim(), "locked");
    let output = temp.path().join("cells.parquet");
    let started = Instant::now();
    let outcome = Call::stage("pf-cellprofiler")
        .path("--sqlite", &backend)
        .flag("--busy-timeout-ms", "300")
        .path("--output", &output)
        .run();
    holder.kill().unwrap();
    holder.wait().unwrap();
    outcome.assert_failure(
        2,
        &[
            "locked.sqlite: SQLite: database is locked",
            "--busy-timeout-ms",
        ],
    );
    assert!(started.elapsed() < Duration::from_secs(20));
    assert!(!output.exists());
}

#[test]
fn feature_selection_and_report_comparisons_refuse_bad_settings_by_name() {
    let temp = tempfile::tempdir().unwrap();
    let path = |name: &str| temp.path().join(name);
    let backend = shared_data().join("cellprofiler/nf1_schwann/all_cellprofiler.sqlite");
    Call::stage("pf-cellprofiler")
        .path("--sqlite", &backend)
        .path("--output", path("cells.parquet"))
        .run()
        .assert_success();
    run_python(
        "check_cellprofiler.py",
        &[
            "platemap".to_string(),
            arg(&path("cells.parquet")),
            arg(&path("platemap.csv")),
            arg(&path("moa.csv")),
        ],
    )
    .assert_success();
    let (platemap, moa) = (arg(&path("platemap.csv")), arg(&path("moa.csv")));
    // The classical path's median wells of one input, into the folder's wells.parquet.
    let median = |input: &str, extra: &[&str]| {
        let mut args = vec![
            "--cell-aggregation",
            "median",
            "--platemap",
            platemap.as_str(),
            "--moa-csv",
            moa.as_str(),
        ];
        args.extend_from_slice(extra);
        aggregate(&[&path(input)], temp.path(), &args)
    };
    for (extra, fragments) in [
        (
            &["--feature-select", "variance-threshold,sideways"][..],
            &["--feature-select", "sideways"][..],
        ),
        (
            &["--corr-threshold", "1.5"],
            &["--corr-threshold", "between 0 and 1"],
        ),
        (&["--na-cutoff=-0.1"], &["--na-cutoff", "between 0 and 1"]),
        (&["--min-variance", "NaN"], &["--min-variance"]),
        (&["--median-pass-mib", "0"], &["--median-pass-mib"]),
        (
            &[
                "--feature-select",
                "blocklist",
                "--blocklist",
                "/nonexistent/list.txt",
            ],
            &["/nonexistent/list.txt"],
        ),
        // A variance threshold above every feature's variance would leave no profile.
        (
            &[
                "--feature-select",
                "variance-threshold",
                "--min-variance",
                "1e300",
            ],
            &["variance_threshold would drop every one of the 1189 features"],
        ),
    ] {
        median("cells.parquet", extra).assert_failure(2, fragments);
        assert!(!path("wells.parquet").exists(), "{extra:?} wrote wells");
    }
    // --blocklist without the blocklist operation would be ignored without a word.
    median(
        "cells.parquet",
        &[
            "--feature-select",
            "variance-threshold",
            "--blocklist",
            "list.txt",
        ],
    )
    .assert_failure(2, &["--blocklist", "not among --feature-select"]);
    // A NaN (not a null) in a cell: the median would sort it last and return a biased number; it
    // is reported as the mean's is, and drop-na-columns counts it as missing, as pandas does.
    run_python(
        "check_cellprofiler.py",
        &[
            "inject-nan".to_string(),
            arg(&path("cells.parquet")),
            arg(&path("nan.parquet")),
        ],
    )
    .assert_success();

    median("nan.parquet", &[]).assert_failure(2, &["feature `Cells_AreaShape_Area` is NaN"]);
    assert!(!path("wells.parquet").exists());
    let skipped = median("nan.parquet", &["--feature-select", "drop-na-columns"]);
    skipped.assert_success();
    assert!(
        skipped
            .stderr
            .contains("1 kept features miss values in some cells"),
        "{}",
        skipped.stderr
    );
    // A comparison without a label, and one whose file is missing.
    median("cells.parquet", &[]).assert_success();
    Call::stage("pf-classify")
        .path("--treatments", path("treatments.parquet"))
        .path("--predictions", path("predictions.parquet"))
        .path("--metrics", path("metrics.parquet"))
        .run()
        .assert_success();
    for (value, fragment) in [
        ("=metrics.parquet", "LABEL=PATH"),
        (
            "other run=/nonexistent/metrics.parquet",
            "/nonexistent/metrics.parquet",
        ),
    ] {
        Call::stage("pf-report")
            .flag("--compare-metrics", value)
            .path("--metrics", path("metrics.parquet"))
            .path("--output", path("report"))
            .run()
            .assert_failure(2, &[fragment]);
    }
}
