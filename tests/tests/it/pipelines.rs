//! pf-run and the emitted files: incremental re-runs, replicates, pre-flight checks, Snakemake (locally and under the SLURM profile), the conda environment, and the drift of docs/cli and pipelines/generated.

use super::*;

/// A small pipeline over the tiny synthetic screen (2 plates, 2 shards), every stage for real.
/// The tiny synthetic screen end to end. Its train step keeps pf-train's old flag names (`out`,
/// `quiet`, now `output`, `no-progress`): the stages list hidden aliases, so older pipeline files
/// still run.
pub(crate) const TINY_PIPELINE: &str = r#"
[pipeline]
name = "tiny"
description = "tiny synthetic screen end to end"
workdir = "out"
shards = 2

[[step]]
name = "synth"
stage = "pf-synth"
outputs = { output = "synthetic" }
params = { preset = "tiny", seed = 3, force = true, no-progress = true }

[[step]]
name = "preprocess"
stage = "pf-preprocess"
command = "bbbc021"
fan_out = "shard"
inputs = { image-csv = "@synth.output/BBBC021_v1_image.csv", moa-csv = "@synth.output/BBBC021_v1_moa.csv" }
outputs = { output = "cells.parquet" }
params = { no-progress = true }

[[step]]
name = "train"
stage = "pf-train"
command = "generative"
inputs = { cells = "@preprocess.output" }
outputs = { out = "model" }
params = { model = "cytovae", epochs = 1, batch-size = 32, latent-dim = 8, quiet = true, threads = 2 }

[[step]]
name = "export"
stage = "pf-export"
inputs = { model-card = "@train.out/model_card.json" }
outputs = { encoder = "encoder.onnx", decoder = "decoder.onnx" }

[[step]]
name = "embed"
stage = "pf-embed"
fan_out = "shard"
inputs = { cells = "@preprocess.output", encoder = "@export.encoder" }
outputs = { output = "embeddings.parquet" }
params = { no-progress = true, threads = 2 }

[[step]]
name = "aggregate"
stage = "pf-aggregate"
inputs = { input = "@embed.output" }
outputs = { wells = "wells.parquet", treatments = "treatments.parquet" }
params = { normalize = "dmso-zscore" }

[[step]]
name = "classify"
stage = "pf-classify"
inputs = { treatments = "@aggregate.treatments" }
outputs = { predictions = "predictions.parquet", metrics = "metrics.parquet" }

[[step]]
name = "report"
stage = "pf-report"
inputs = { model-card = "@train.out/model_card.json", decoder = "@export.decoder", cells = "@preprocess.output", embeddings = "@embed.output", treatments = "@aggregate.treatments", predictions = "@classify.predictions", metrics = "@classify.metrics", pipeline = "tiny.toml" }
outputs = { output = "report" }
"#;

/// How many steps a run executed, from its closing line.
pub(crate) fn n_ran(outcome: &Outcome) -> usize {
    let line = outcome
        .stderr
        .lines()
        .find(|line| line.contains(" ran "))
        .unwrap_or_else(|| panic!("{}", outcome.stderr));
    line.split(" ran ")
        .nth(1)
        .unwrap()
        .split(' ')
        .next()
        .unwrap()
        .parse()
        .unwrap()
}

#[test]
fn pipelines_rerun_only_what_changed() {
    let temp = tempfile::tempdir().unwrap();
    let folder = temp.path();
    std::fs::write(folder.join("tiny.toml"), TINY_PIPELINE).unwrap();
    let first = pf_run(folder, &["run", "tiny.toml", "--jobs", "2"]);
    first.assert_success();
    assert_eq!(n_ran(&first), 10, "{}", first.stderr);
    // Seven figures (the PCA and t-SNE maps among them): one week only, so NSCB has no
    // candidates and no confusion matrix.
    check_report_in_chromium(&folder.join("out/report"), 7, folder);
    let map = std::fs::read_to_string(folder.join("out/report/treatment_map.csv")).unwrap();
    assert!(
        map.starts_with(
            "Metadata_Compound,Metadata_Concentration,Metadata_MoA,PC1,PC2,tSNE1,tSNE2\n"
        ),
        "{map}"
    );
    assert!(
        map.lines().skip(1).all(|line| !line.ends_with(",,")),
        "every treatment has t-SNE coordinates: {map}"
    );
    // Run twice: nothing runs.
    let second = pf_run(folder, &["run", "tiny.toml"]);
    assert_eq!(n_ran(second.assert_success()), 0, "{}", second.stderr);
    // Touch an input without changing it: nothing runs.
    let csv = folder.join("out/synthetic/BBBC021_v1_image.csv");
    std::fs::write(&csv, std::fs::read(&csv).unwrap()).unwrap();
    let touched = pf_run(folder, &["run", "tiny.toml"]);
    assert_eq!(n_ran(touched.assert_success()), 0, "{}", touched.stderr);
    // Change one param: that step and its dependents run, nothing else.
    std::fs::write(
        folder.join("tiny.toml"),
        TINY_PIPELINE.replace("\"dmso-zscore\"", "\"none\""),
    )
    .unwrap();
    let dry = pf_run(folder, &["run", "tiny.toml", "--dry-run"]);
    assert!(
        dry.assert_success()
            .stdout
            .contains("would run   aggregate        because its params or paths changed"),
        "{}",
        dry.stdout
    );
    assert!(
        dry.stdout
            .contains("would run   classify         because `aggregate` runs before it"),
        "{}",
        dry.stdout
    );
    assert!(dry.stdout.contains("up to date  train"), "{}", dry.stdout);
    let changed = pf_run(folder, &["run", "tiny.toml"]);
    assert_eq!(n_ran(changed.assert_success()), 3, "{}", changed.stderr);
    assert!(changed
        .stderr
        .contains("run   aggregate (its params or paths changed)"));
    // Corrupt an intermediate file: its producer runs again and restores it; since the content
    // comes back the same, its consumers have nothing to do.
    let embeddings = folder.join("out/embeddings.shard0.parquet");
    let good = std::fs::read(&embeddings).unwrap();
    std::fs::write(&embeddings, b"not parquet").unwrap();
    let repaired = pf_run(folder, &["run", "tiny.toml"]);
    assert_eq!(n_ran(repaired.assert_success()), 1, "{}", repaired.stderr);
    assert!(repaired.stderr.contains(
        "run   embed[0] (output out/embeddings.shard0.parquet changed since it was written)"
    ));
    assert_eq!(std::fs::read(&embeddings).unwrap(), good);
    // --from and --only force.
    let from = pf_run(folder, &["run", "tiny.toml", "--from", "embed"]);
    assert_eq!(n_ran(from.assert_success()), 5, "{}", from.stderr);
    let only = pf_run(folder, &["run", "tiny.toml", "--only", "classify"]);
    assert_eq!(n_ran(only.assert_success()), 1, "{}", only.stderr);
    let metrics = std::fs::read(folder.join("out/metrics.parquet")).unwrap();
    // A failing step stops what depends on it and leaves earlier outputs intact.
    std::fs::write(
        folder.join("tiny.toml"),
        TINY_PIPELINE.replace("batch-size = 32", "batch-size = 100000"),
    )
    .unwrap();
    let cells_before = std::fs::read(folder.join("out/cells.shard1.parquet")).unwrap();
    let failed = pf_run(folder, &["run", "tiny.toml"]);
    failed.assert_failure(
        1,
        &[
            "FAIL  train",
            "1 step(s) failed (train), 6 skipped",
            "fewer than one batch of 100000",
        ],
    );
    assert_eq!(
        std::fs::read(folder.join("out/cells.shard1.parquet")).unwrap(),
        cells_before
    );
    assert!(folder.join("out/model/checkpoint.safetensors").exists());
    assert_eq!(
        std::fs::read(folder.join("out/metrics.parquet")).unwrap(),
        metrics
    );
    assert!(temp_files(&folder.join("out")).is_empty());
}

/// The tiny pipeline trained with two seeds: training to classification once per seed, then a
/// summary across them and a report per seed that shows it.
pub(crate) fn seeded_tiny_pipeline() -> String {
    let mut text = TINY_PIPELINE.replace("shards = 2\n", "shards = 2\nseeds = [3, 5]\n");
    for step in [
        "train",
        "export",
        "embed",
        "aggregate",
        "classify",
        "report",
    ] {
        text = text.replace(
            &format!("name = \"{step}\"\n"),
            &format!("name = \"{step}\"\nper_seed = true\n"),
        );
    }
    text = text.replace("latent-dim = 8,", "latent-dim = 8, seed = \"${seed}\",");
    text = text.replace(
        "metrics = \"@classify.metrics\", pipeline",
        "metrics = \"@classify.metrics\", metrics-summary = \"@summary.output\", pipeline",
    );
    text.push_str(
        "\n[[step]]\nname = \"summary\"\nstage = \"pf-classify\"\ncommand = \"summarize\"\n\
         inputs = { metrics = \"@classify.metrics\" }\noutputs = { output = \"summary.parquet\" }\n",
    );
    text
}

#[test]
fn seeded_pipelines_train_once_per_seed_and_summarise_like_pandas() {
    let temp = tempfile::tempdir().unwrap();
    let folder = temp.path();
    std::fs::write(folder.join("tiny.toml"), seeded_tiny_pipeline()).unwrap();
    let first = pf_run(folder, &["run", "tiny.toml", "--jobs", "2"]);
    first.assert_success();
    // synth, 2 preprocess shards, then per seed: train, export, 2 embed shards, aggregate,
    // classify, report; and the summary.
    assert_eq!(n_ran(&first), 3 + 2 * 7 + 1, "{}", first.stderr);
    let out = folder.join("out");
    let cards: Vec<serde_json::Value> = [3, 5]
        .iter()
        .map(|seed| {
            let path = out.join(format!("seed{seed}/model/model_card.json"));
            serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
        })
        .collect();
    assert_eq!(
        (cards[0]["seed"].as_u64(), cards[1]["seed"].as_u64()),
        (Some(3), Some(5))
    );
    assert_ne!(
        std::fs::read(out.join("seed3/encoder.onnx")).unwrap(),
        std::fs::read(out.join("seed5/encoder.onnx")).unwrap(),
        "two seeds, two models"
    );
    let (metrics3, metrics5, summary) = (
        out.join("seed3/metrics.parquet"),
        out.join("seed5/metrics.parquet"),
        out.join("summary.parquet"),
    );
    run_python(
        "check_profiles.py",
        &[
            "summary",
            "--metrics",
            &arg(&metrics3),
            "--metrics",
            &arg(&metrics5),
            "--summary",
            &arg(&summary),
        ],
    )
    .assert_success();
    for seed in [3, 5] {
        let page =
            std::fs::read_to_string(out.join(format!("seed{seed}/report/report.html"))).unwrap();
        assert!(page.contains("<h2>Across seeds</h2>"), "seed {seed}");
        assert!(
            page.contains("trained with 2 different seeds"),
            "seed {seed}"
        );
    }
    // `--only train` is every seed's; `--seeds` runs other replicates without editing the file.
    let dry = pf_run(folder, &["run", "tiny.toml", "--dry-run", "--seeds", "3,9"]);
    let dry = dry.assert_success();
    assert!(
        dry.stdout.contains("up to date  train-seed3"),
        "{}",
        dry.stdout
    );
    assert!(
        dry.stdout
            .contains("would run   train-seed9      because never run here"),
        "{}",
        dry.stdout
    );
    assert!(!dry.stdout.contains("seed5"), "{}", dry.stdout);
    let only = pf_run(folder, &["run", "tiny.toml", "--only", "classify"]);
    assert_eq!(n_ran(only.assert_success()), 2, "{}", only.stderr);
    // A run with other seeds and another fan-out width (one shard: the steps run whole): its
    // report counts the steps of that run (pf-run records its overrides), not the file's 2 × 2
    // embed shards, whose records of the first run are still there.
    pf_run(
        folder,
        &[
            "run",
            "tiny.toml",
            "--seeds",
            "3",
            "--shards",
            "1",
            "--jobs",
            "2",
        ],
    )
    .assert_success();
    let page = std::fs::read_to_string(out.join("seed3/report/report.html")).unwrap();
    for step in [
        "<td>preprocess</td><td>pf-preprocess</td>",
        "<td>embed-seed3</td><td>pf-embed</td>",
    ] {
        assert!(
            page.contains(&format!("{step}<td class=\"num\">1</td>")),
            "{step}: {}",
            &page[page.find("Wall time per step").unwrap_or(0)..]
        );
    }
    let times = &page[page.find("Wall time per step").unwrap()..];
    assert!(!times.contains("seed5"), "{times}");
    // pf-classify summarize refuses the same replicate twice and a table that is not metrics.
    classify(&[
        "summarize",
        "--metrics",
        &arg(&metrics3),
        "--metrics",
        &arg(&metrics3),
        "--output",
        &arg(&folder.join("twice.parquet")),
    ])
    .assert_failure(2, &["given twice"]);
    classify(&[
        "summarize",
        "--metrics",
        &arg(&out.join("seed3/treatments.parquet")),
        "--output",
        &arg(&folder.join("wrong.parquet")),
    ])
    .assert_failure(2, &["seed3/treatments.parquet"]);
    assert!(!folder.join("twice.parquet").exists() && !folder.join("wrong.parquet").exists());
}

#[test]
fn pipeline_files_are_checked_before_anything_runs() {
    let temp = tempfile::tempdir().unwrap();
    let folder = temp.path();
    let check = |text: String, fragments: &[&str]| {
        std::fs::write(folder.join("p.toml"), text).unwrap();
        pf_run(folder, &["run", "p.toml"]).assert_failure(2, fragments);
        assert!(!folder.join("out").exists(), "something ran");
    };
    check(
        TINY_PIPELINE.replace(
            "fan_out = \"shard\"\ninputs = { cells",
            "fan_out = \"shard\"\ncolour = 1\ninputs = { cells",
        ),
        &["p.toml", "unknown field `colour`", "line 41"],
    );
    check(
        TINY_PIPELINE.replace("stage = \"pf-export\"", "stage = \"pf-exprot\""),
        &["step `export`: unknown stage `pf-exprot`"],
    );
    check(
        TINY_PIPELINE.replace("epochs = 1,", "epochs = 1, learning-rat = 0.1,"),
        &["step `train`: pf-train generative does not accept --learning-rat (see `pf-train generative --help`)"],
    );
    // A flag that only the help text names (pf-classify's examples show `summarize --output`)
    // is not one of the step's flags: the stage lists its flags, pf-run no longer reads --help.
    check(
        TINY_PIPELINE.replace(
            "outputs = { predictions = \"predictions.parquet\", metrics = \"metrics.parquet\" }",
            "outputs = { predictions = \"predictions.parquet\", metrics = \"metrics.parquet\", output = \"x.parquet\" }",
        ),
        &["step `classify`: pf-classify does not accept --output"],
    );
    // A subcommand the stage does not have.
    check(
        TINY_PIPELINE.replace("command = \"bbbc021\"", "command = \"bbbc022\""),
        &["step `preprocess`: pf-preprocess does not know the command `bbbc022`"],
    );
    check(
        TINY_PIPELINE.replace("\"@synth.output/BBBC021_v1_moa.csv\"", "\"moa.csv\""),
        &["step `preprocess`: input --moa-csv moa.csv does not exist and no step produces it"],
    );
    check(
        TINY_PIPELINE.replace("\"@train.out/model_card.json\"", "\"@classify.metrics\""),
        &["cycle", "export", "classify"],
    );
    check(
        TINY_PIPELINE.replace(
            "outputs = { wells = \"wells.parquet\"",
            "outputs = { wells = \"cells.shard0.parquet\"",
        ),
        &["out/cells.shard0.parquet is written by two steps: `preprocess[0]` and `aggregate`"],
    );
}

#[test]
fn snakemake_runs_the_emitted_pipeline_like_pf_run() {
    let temp = tempfile::tempdir().unwrap();
    let (ours, theirs) = (temp.path().join("pf-run"), temp.path().join("snakemake"));
    for folder in [&ours, &theirs] {
        std::fs::create_dir_all(folder).unwrap();
        std::fs::write(folder.join("tiny.toml"), TINY_PIPELINE).unwrap();
    }
    pf_run(&ours, &["run", "tiny.toml"]).assert_success();
    pf_run(
        &theirs,
        &["emit", "snakemake", "tiny.toml", "--output", "Snakefile"],
    )
    .assert_success();
    let snakemake = python().parent().unwrap().join("snakemake");
    let bin_dir = format!("bin_dir={}", stage("pf-run").parent().unwrap().display());
    let dry = run_in(
        &theirs,
        &snakemake,
        &["-n", "--cores", "2", "--config", &bin_dir],
    );
    dry.assert_success();
    assert!(
        dry.stdout.contains("preprocess") && dry.stdout.contains("classify"),
        "{}",
        dry.stdout
    );
    run_in(&theirs, &snakemake, &["--cores", "2", "--config", &bin_dir]).assert_success();
    assert!(theirs.join("out/logs/embed.1.log").exists());
    // The fan-out width is a config key: five jobs per fan-out step, and the merge reads five.
    let wide = run_in(
        &theirs,
        &snakemake,
        &[
            "-n",
            "-p",
            "--forceall",
            "--cores",
            "2",
            "--config",
            &bin_dir,
            "shards=5",
        ],
    );
    wide.assert_success();
    let plan = format!("{}{}", wide.stdout, wide.stderr);
    assert!(plan.contains("--shard 4/5"), "{plan}");
    assert!(
        plan.contains("--cells out/cells.shard4.parquet --out out/model"),
        "{plan}"
    );
    assert!(
        plan.contains("--output out/embeddings.shard4.parquet"),
        "embed runs per shard too: {plan}"
    );
    // make and Nextflow fix the width when the file is emitted: --shards picks it there, and
    // pf-run takes the same flag.
    let emitted = |format: &str| {
        let outcome = pf_run(&theirs, &["emit", format, "tiny.toml", "--shards", "5"]);
        outcome.assert_success();
        outcome.stdout.clone()
    };
    let make = emitted("make");
    assert!(
        make.contains("--shard 4/5")
            && make.contains("--cells out/cells.shard4.parquet --out out/model"),
        "{make}"
    );
    let nextflow = emitted("nextflow");
    assert!(
        nextflow.contains("Channel.of(0..4)")
            && nextflow.contains("--shard ${shard}/5")
            && nextflow.contains("--cells out/cells.shard4.parquet --out out/model"),
        "{nextflow}"
    );
    let snakefile = emitted("snakemake");
    assert!(
        snakefile.contains("config.get(\"shards\", 5)"),
        "{snakefile}"
    );
    let planned = pf_run(&theirs, &["run", "tiny.toml", "--dry-run", "--shards", "3"]);
    planned.assert_success();
    let planned = format!("{}{}", planned.stdout, planned.stderr);
    assert!(
        planned.contains("preprocess[2]") && !planned.contains("preprocess[3]"),
        "{planned}"
    );
    let table = |folder: &Path, name: &str, columns: &str| {
        let outcome = run_python(
            "read_table.py",
            &[&arg(&folder.join("out").join(name)), columns],
        );
        outcome.assert_success();
        outcome.stdout.clone()
    };
    let metrics = table(
        &ours,
        "metrics.parquet",
        "Metric,Protocol,Scope,Value,Count",
    );
    assert!(metrics.contains("accuracy"), "{metrics}");
    assert_eq!(
        metrics,
        table(
            &theirs,
            "metrics.parquet",
            "Metric,Protocol,Scope,Value,Count"
        )
    );
    assert_eq!(
        table(
            &ours,
            "predictions.parquet",
            "Metadata_Compound,Protocol,Predicted_MoA,Distance"
        ),
        table(
            &theirs,
            "predictions.parquet",
            "Metadata_Compound,Protocol,Predicted_MoA,Distance"
        )
    );
}

/// The jobs of a Snakemake dry run: rule → (resources line, shell command) of its first job.
pub(crate) fn dry_run_jobs(output: &str) -> std::collections::BTreeMap<String, (String, String)> {
    let mut jobs = std::collections::BTreeMap::new();
    let mut rule: Option<String> = None;
    let mut resources = String::new();
    for line in output.lines() {
        if let Some(name) = line.strip_prefix("rule ").and_then(|l| l.strip_suffix(':')) {
            rule = Some(name.to_string());
            resources.clear();
        } else if let Some(value) = line.trim_start().strip_prefix("resources: ") {
            resources = value.to_string();
        } else if let Some(command) = line.strip_prefix("Shell command: ") {
            if let Some(name) = rule.take() {
                jobs.entry(name)
                    .or_insert_with(|| (resources.clone(), command.to_string()));
            }
        }
    }
    jobs
}

#[test]
fn snakemake_under_the_slurm_profile_asks_each_job_for_its_resources() {
    let temp = tempfile::tempdir().unwrap();
    let folder = temp.path();
    // The seed pipeline as a cluster user runs it: its data folder and pipeline file in place.
    std::fs::create_dir_all(folder.join("data/bbbc021-singlecell")).unwrap();
    std::fs::create_dir_all(folder.join("pipelines")).unwrap();
    std::fs::copy(
        root().join("pipelines/seed-cytovae.toml"),
        folder.join("pipelines/seed-cytovae.toml"),
    )
    .unwrap();
    pf_run(
        folder,
        &[
            "emit",
            "snakemake",
            "pipelines/seed-cytovae.toml",
            "--output",
            "Snakefile",
        ],
    )
    .assert_success();
    let snakemake = python().parent().unwrap().join("snakemake");
    let bin_dir = format!("bin_dir={}", stage("pf-run").parent().unwrap().display());
    let profile = arg(&root().join("pipelines/profiles/slurm"));
    // `--cores 64`: a dry run caps threads at the local cores; on SLURM each job gets its own.
    let dry = run_in(
        folder,
        &snakemake,
        &[
            "-s",
            "Snakefile",
            "--profile",
            &profile,
            "--dry-run",
            "--cores",
            "64",
            "--config",
            &bin_dir,
        ],
    );
    dry.assert_success();
    let text = format!("{}{}", dry.stdout, dry.stderr);
    assert!(text.contains("Using profile"), "{text}");
    assert!(text.contains("total                       37"), "{text}");
    let jobs = dry_run_jobs(&text);
    // (rule, mem_mb, runtime, gpu, threads)
    for (rule, mem_mb, runtime, gpu, threads) in [
        ("preprocess", 8000, 120, false, 2),
        ("train_seed0", 32000, 1440, true, 8),
        ("train_seed2", 32000, 1440, true, 8),
        ("export_seed1", 8000, 30, false, 1),
        ("embed_seed1", 16000, 240, true, 4),
        ("aggregate_seed0", 16000, 120, false, 4),
        ("classify_seed0", 4000, 30, false, 1),
        ("summary", 4000, 30, false, 1),
        ("report_seed2", 8000, 60, false, 2),
    ] {
        let (resources, command) = jobs
            .get(rule)
            .unwrap_or_else(|| panic!("no job of {rule}: {text}"));
        assert!(
            resources.contains(&format!("mem_mb={mem_mb},"))
                && resources.contains(&format!("runtime={runtime}")),
            "{rule}: {resources}"
        );
        assert_eq!(resources.contains("gpu=1"), gpu, "{rule}: {resources}");
        assert!(
            command.starts_with(&format!(
                "RAYON_NUM_THREADS={threads} POLARS_MAX_THREADS={threads} "
            )),
            "{rule}: {command}"
        );
        assert!(command.ends_with(".log 2>&1"), "{rule}: {command}");
    }
    // The pipeline's [vars] are config keys: the data folder is chosen when Snakemake runs
    // (shell-quoted, so a folder with a space stays one argument).
    let elsewhere = folder.join("other place/singlecell");
    std::fs::create_dir_all(&elsewhere).unwrap();
    let moved = run_in(
        folder,
        &snakemake,
        &[
            "-s",
            "Snakefile",
            "--dry-run",
            "-p",
            "--cores",
            "4",
            "--config",
            &bin_dir,
            &format!("data={}", arg(&elsewhere)),
        ],
    );
    moved.assert_success();
    let moved_jobs = dry_run_jobs(&format!("{}{}", moved.stdout, moved.stderr));
    assert!(
        moved_jobs["preprocess"]
            .1
            .contains(&format!("--root '{}' ", arg(&elsewhere))),
        "{:?}",
        moved_jobs["preprocess"]
    );
    assert!(
        jobs["train_seed1"].1.contains("--seed 1 "),
        "{:?}",
        jobs["train_seed1"]
    );
    assert!(
        jobs["train_seed1"].1.contains("--threads 8 "),
        "{:?}",
        jobs["train_seed1"]
    );
    // The linter: a log per job, parameters through params, a conda environment per rule.
    let lint = run_in(
        folder,
        &snakemake,
        &["--lint", "-s", "Snakefile", "--config", &bin_dir],
    );
    let lints: std::collections::BTreeSet<&str> = lint
        .stdout
        .lines()
        .chain(lint.stderr.lines())
        .filter_map(|line| line.trim_start().strip_prefix("* "))
        .collect();
    assert!(
        lints.is_empty() && lint.code == Some(0),
        "{lints:?}\n{}{}",
        lint.stdout,
        lint.stderr
    );
}

/// A pin of `name` (`name==version`) in a requirements-like text.
pub(crate) fn pinned(text: &str, name: &str) -> String {
    text.lines()
        .map(str::trim)
        .map(|line| line.trim_start_matches("- "))
        .find(|line| line.starts_with(&format!("{name}==")))
        .unwrap_or_else(|| panic!("no {name}== in:\n{text}"))
        .split_whitespace()
        .next()
        .unwrap()
        .to_string()
}

#[test]
fn the_conda_environment_of_the_emitted_rules_gives_the_stages_their_libraries() {
    // Its pins are what `make setup` installs.
    let environment =
        std::fs::read_to_string(root().join("pipelines/envs/phenoflow.yaml")).unwrap();
    let requirements =
        std::fs::read_to_string(root().join("tests/python/requirements.txt")).unwrap();
    assert_eq!(
        pinned(&environment, "torch"),
        pinned(&requirements, "torch")
    );
    let makefile = std::fs::read_to_string(root().join("Makefile")).unwrap();
    let ort_version = makefile
        .lines()
        .find_map(|line| line.strip_prefix("ORT_VERSION := "))
        .unwrap()
        .trim();
    assert_eq!(
        pinned(&environment, "onnxruntime-gpu"),
        format!("onnxruntime-gpu=={ort_version}")
    );
    // Its post-deploy script, run as Snakemake runs it: inside the new environment, here a
    // prefix whose Python is the project's (the same wheels, laid out as in a conda prefix).
    let temp = tempfile::tempdir().unwrap();
    let prefix = temp.path().join("prefix");
    std::fs::create_dir_all(prefix.join("bin")).unwrap();
    std::fs::write(
        prefix.join("bin/python"),
        format!("#!/bin/sh\nexec '{}' \"$@\"\n", arg(&python())),
    )
    .unwrap();
    run(
        Path::new("chmod"),
        &["+x", &arg(&prefix.join("bin/python"))],
    )
    .assert_success();
    let script = root().join("pipelines/envs/phenoflow.post-deploy.sh");
    let deployed: Outcome = std::process::Command::new("sh")
        .arg(&script)
        .env("CONDA_PREFIX", &prefix)
        .output()
        .unwrap()
        .into();
    deployed.assert_success();
    let activate = prefix.join("etc/conda/activate.d/phenoflow.sh");
    let activation = std::fs::read_to_string(&activate).unwrap();
    assert!(
        activation.contains("/torch/lib") && activation.contains("libonnxruntime.so."),
        "{activation}"
    );
    // A job outside the environment has no ONNX Runtime: pf-embed stops and names the variable.
    let folder = temp.path().join("run");
    std::fs::create_dir_all(&folder).unwrap();
    std::fs::write(folder.join("tiny.toml"), TINY_PIPELINE).unwrap();
    let job = |activated: bool| -> Outcome {
        let command = format!(
            "{}exec '{}' run tiny.toml",
            if activated {
                format!(". '{}' && ", arg(&activate))
            } else {
                String::new()
            },
            arg(&stage("pf-run"))
        );
        std::process::Command::new("bash")
            .args(["-c", &command])
            .current_dir(&folder)
            .env_remove("ORT_DYLIB_PATH")
            .env_remove("LD_LIBRARY_PATH")
            .output()
            .unwrap()
            .into()
    };
    let outside = job(false);
    assert_ne!(outside.code, Some(0), "{}", outside.stderr);
    assert!(
        outside.stderr.contains("ORT_DYLIB_PATH is not set"),
        "{}",
        outside.stderr
    );
    // The emitted rules name it; a conda_env setting that names no file is refused.
    pf_run(
        &folder,
        &["emit", "snakemake", "tiny.toml", "--output", "Snakefile"],
    )
    .assert_success();
    let snakemake = python().parent().unwrap().join("snakemake");
    let bin_dir = format!("bin_dir={}", arg(stage("pf-run").parent().unwrap()));
    let snakefile = std::fs::read_to_string(folder.join("Snakefile")).unwrap();
    let rules = snakefile.matches("\nrule ").count();
    assert!(rules > 5, "{snakefile}");
    assert_eq!(
        snakefile.matches("\n    conda: CONDA_ENV\n").count(),
        rules - 1,
        "every rule but `all`: {snakefile}"
    );
    let elsewhere = folder.join("no-such-env.yaml");
    let refused = run_in(
        &folder,
        &snakemake,
        &[
            "-n",
            "--config",
            &bin_dir,
            &format!("conda_env={}", arg(&elsewhere)),
        ],
    );
    let said = format!("{}{}", refused.stdout, refused.stderr);
    assert!(
        refused.code == Some(1) && said.contains("no-such-env.yaml: no such file"),
        "{said}"
    );
    // Activated in it, the pipeline runs through.
    let inside = job(true);
    inside.assert_success();
    assert!(
        folder.join("out/report/report.html").exists(),
        "{}",
        inside.stderr
    );
}

#[test]
fn help_texts_in_docs_cli_do_not_drift() {
    // docs/cli/ holds the --help of every stage and subcommand (`make cli-docs`); written again
    // from the binaries under test, every file is the same and none is missing or left over.
    let temp = tempfile::tempdir().unwrap();
    let bin_dir = stage("pf-run").parent().unwrap().to_path_buf();
    std::process::Command::new(root().join("tests/cli_docs.sh"))
        .arg(&bin_dir)
        .arg(temp.path())
        .env("PHENOFLOW_PYTHON", python())
        .output()
        .map(Outcome::from)
        .unwrap()
        .assert_success();
    let texts = |folder: &Path| -> std::collections::BTreeMap<String, String> {
        std::fs::read_dir(folder)
            .unwrap()
            .map(|entry| entry.unwrap().path())
            .filter(|path| path.extension().is_some_and(|extension| extension == "txt"))
            .map(|path| {
                (
                    path.file_name().unwrap().to_string_lossy().into_owned(),
                    std::fs::read_to_string(&path).unwrap(),
                )
            })
            .collect()
    };
    let (written, shipped) = (texts(temp.path()), texts(&root().join("docs/cli")));
    assert!(written.len() >= 17, "{:?}", written.keys());
    assert_eq!(
        written.keys().collect::<Vec<_>>(),
        shipped.keys().collect::<Vec<_>>(),
        "docs/cli is out of date: run `make cli-docs`"
    );
    for (name, text) in &written {
        assert_eq!(
            text, &shipped[name],
            "docs/cli/{name} is out of date: run `make cli-docs`"
        );
    }
}

#[test]
fn emitted_files_of_the_shipped_pipelines_do_not_drift() {
    let pipelines = root().join("pipelines");
    let mut n_checked = 0;
    for entry in std::fs::read_dir(&pipelines).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_none_or(|extension| extension != "toml") {
            continue;
        }
        let name = path.file_stem().unwrap().to_string_lossy().into_owned();
        let relative = format!("pipelines/{name}.toml");
        for (format, file) in [
            ("make", "pipeline.mk"),
            ("snakemake", "Snakefile"),
            ("nextflow", "main.nf"),
        ] {
            let emitted = pf_run(&root(), &["emit", format, &relative]);
            emitted.assert_success();
            let committed = pipelines.join("generated").join(&name).join(file);
            let committed = std::fs::read_to_string(&committed).unwrap_or_else(|_| {
                panic!(
                    "{} is missing: run `make pipelines-generated`",
                    committed.display()
                )
            });
            assert!(
                emitted.stdout == committed,
                "pipelines/generated/{name}/{file} is stale: run `make pipelines-generated`"
            );
            n_checked += 1;
        }
    }
    assert!(n_checked >= 3, "no pipeline checked");
}

// ---------------------------------------------------------------------------------------------
// pf-report
