//! The same pipeline for other engines: a GNU make fragment, a Snakefile and a Nextflow DSL2
//! script that call the same binaries with the same arguments, fan-out steps once per per-plate
//! shard (`--shard i/N`) and merge the shards where a step reads all of them. On a cluster, a
//! user runs these with Snakemake's or Nextflow's executors (SLURM, Kubernetes, cloud batch).
//!
//! Outputs whose file name has no extension (`synthetic`, `cytovae`) are folders.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use anyhow::Context;
use phenoflow_schemas::pipeline::{
    ConcreteStep, Overrides, ParamValue, Pipeline, Source, MAX_SHARDS,
};

use crate::args::{EmitArgs, EmitFormat};
use crate::shell_words;

pub fn emit(args: &EmitArgs) -> anyhow::Result<()> {
    let overrides = args.overrides.overrides();
    // With the values themselves first: every path is checked as the engine will see it by
    // default. Then with a stand-in for each var, which each engine's text turns into its own
    // setting (a Snakemake config key, a Nextflow param).
    let pipeline = Pipeline::read_overridden(&args.pipeline, &overrides)?;
    let emit_one = |pipeline: &Pipeline| -> anyhow::Result<String> {
        Ok(match args.format {
            EmitFormat::Make => make(pipeline)?,
            EmitFormat::Snakemake => snakemake(pipeline)?,
            EmitFormat::Nextflow => nextflow(pipeline),
        })
    };
    let checked = emit_one(&pipeline)?;
    // make runs on one machine, where the file's values are the ones used: its text keeps them
    // (a make variable holding a path with spaces could not be both a prerequisite and a word).
    if args.format == EmitFormat::Make {
        return write_emitted(args, &checked);
    }
    let tokens = Overrides {
        vars: pipeline
            .vars
            .keys()
            .map(|name| (name.clone(), var_token(name)))
            .collect(),
        ..overrides
    };
    let mut templated = Pipeline::read_overridden(&args.pipeline, &tokens)?;
    templated.vars = pipeline.vars.clone();
    check_emitted_vars(
        &templated,
        match args.format {
            EmitFormat::Snakemake => "snakemake",
            _ => "nextflow",
        },
    )?;
    let text = emit_one(&templated)?;
    write_emitted(args, &text)
}

fn write_emitted(args: &EmitArgs, text: &str) -> anyhow::Result<()> {
    match &args.output {
        Some(path) => phenoflow_schemas::atomic_write(path, text.as_bytes())
            .with_context(|| format!("writing {}", path.display())),
        None => {
            print!("{text}");
            Ok(())
        }
    }
}

/// A var's stand-in while emitting: `⟦name⟧`, which no check refuses and no engine reads.
fn var_token(name: &str) -> String {
    format!("\u{27e6}{name}\u{27e7}")
}

/// The prerequisites whose path holds a var, numbered in their order.
fn var_input_paths(prerequisites: &[PathBuf]) -> BTreeMap<String, usize> {
    prerequisites
        .iter()
        .map(|path| path.display().to_string())
        .filter(|text| text.contains('\u{27e6}'))
        .enumerate()
        .map(|(index, text)| (text, index))
        .collect()
}

/// The conda environment of every emitted Snakemake rule, in the project.
const CONDA_ENV_FILE: &str = "pipelines/envs/phenoflow.yaml";

/// The stand-in of a merging step's k-th group of shards in its command while emitting.
fn gather_token(index: usize) -> String {
    format!("\u{27e6}#shards:{index}\u{27e7}")
}

/// Each output of a fan-out step → its shard index.
fn output_shards(pipeline: &Pipeline) -> BTreeMap<&Path, usize> {
    pipeline
        .steps
        .iter()
        .filter_map(|step| step.shard.map(|(index, _)| (step, index)))
        .flat_map(|(step, index)| {
            step.outputs
                .iter()
                .map(move |output| (output.path.as_path(), index))
        })
        .collect()
}

/// The stand-in of a rule's input k in its command while emitting.
fn input_token(index: usize) -> String {
    format!("\u{27e6}input:{index}\u{27e7}")
}

/// A var's name among a Snakemake rule's params: `var_<name>` (a Python identifier).
fn snakemake_param(name: &str) -> String {
    format!("var_{}", name.replace('-', "_"))
}

/// A var's Nextflow param name (`--data`): Groovy identifiers have no `-`.
fn nextflow_param(name: &str) -> String {
    name.replace('-', "_")
}

/// A path as a Python expression: a string literal, or, where it holds vars, an f-string whose
/// literal parts are escaped as string-literal text (quotes, backslashes) with braces doubled, and
/// whose only expressions are `config['<name>']` (names are identifiers). Never text pasted
/// between quotes.
fn python_path(pipeline: &Pipeline, text: &str) -> String {
    let literal = |part: &str| {
        let quoted = python_str(part);
        quoted[1..quoted.len() - 1]
            .replace('{', "{{")
            .replace('}', "}}")
    };
    let mut body = String::new();
    let mut rest = text;
    let mut any = false;
    while let Some((at, name)) = pipeline
        .vars
        .keys()
        .filter_map(|name| rest.find(&var_token(name)).map(|at| (at, name)))
        .min()
    {
        any = true;
        body.push_str(&literal(&rest[..at]));
        body.push_str(&format!("{{config['{name}']}}"));
        rest = &rest[at + var_token(name).len()..];
    }
    if !any {
        return python_str(text);
    }
    body.push_str(&literal(rest));
    format!("f\"{body}\"")
}

/// The var names an engine cannot take: its own settings (`bin_dir` of Snakemake's config and
/// Nextflow's params, `shards` and `conda_env` of Snakemake's, `root` of Nextflow's), and two names that differ only by `-` and `_` (one
/// param or config key in the emitted text); and a var in an output's file name, whose
/// extension decides whether the output is a folder and where its shard number goes.
fn check_emitted_vars(pipeline: &Pipeline, engine: &str) -> anyhow::Result<()> {
    let mut seen: BTreeMap<String, &str> = BTreeMap::new();
    for name in pipeline.vars.keys() {
        let key = nextflow_param(name);
        if ["bin_dir", "root", "shards", "conda_env"].contains(&key.as_str()) {
            return Err(phenoflow_schemas::InputError(format!(
                "pf-run emit {engine}: [vars] {name} is a setting of the emitted file itself; rename the var"
            ))
            .into());
        }
        if let Some(other) = seen.insert(key, name) {
            return Err(phenoflow_schemas::InputError(format!(
                "pf-run emit {engine}: [vars] {other} and {name} would be the same setting; rename one"
            ))
            .into());
        }
    }
    for step in &pipeline.steps {
        for output in &step.outputs {
            let file_name = output
                .path
                .file_name()
                .map(|name| name.to_string_lossy().into_owned())
                .unwrap_or_default();
            if file_name.contains('\u{27e6}') {
                return Err(phenoflow_schemas::InputError(format!(
                    "pf-run emit {engine}: step `{}`: an output's file name holds a var; put vars in its folder, or use pf-run run or emit make",
                    step.name
                ))
                .into());
            }
        }
    }
    Ok(())
}

/// Replaces each var's stand-in in `text` by what `reference` makes of the var's name.
fn with_vars(pipeline: &Pipeline, text: &str, reference: impl Fn(&str) -> String) -> String {
    let mut text = text.to_string();
    for name in pipeline.vars.keys() {
        text = text.replace(&var_token(name), &reference(name));
    }
    text
}

fn header(pipeline: &Pipeline, comment: &str, format: &str) -> String {
    format!(
        "{comment} Generated by `pf-run emit {format} {}` from the pipeline `{}`; do not edit.\n{comment} {}\n",
        comment_text(&pipeline.path.display().to_string()),
        pipeline.header.name,
        comment_text(&pipeline.header.description)
    )
}

/// Text that stays inside a one-line comment of make, Python and Groovy: no line break or other
/// control character, no backslash (make continues a comment line that ends in one).
fn comment_text(text: &str) -> String {
    text.chars()
        .map(|c| if c.is_control() || c == '\\' { ' ' } else { c })
        .collect()
}

/// Refuses a path holding a character the engine cannot express in a file name (`what` says
/// why), naming the path and the way out.
fn expressible(path: &Path, engine: &str, refused: &str, what: &str) -> anyhow::Result<String> {
    let text = path.display().to_string();
    match text.chars().find(|c| refused.contains(*c)) {
        Some(c) => Err(phenoflow_schemas::InputError(format!(
            "pf-run emit {engine}: the path `{text}` holds `{c}`, which {what}; \
             rename it, or use pf-run run or another emitter"
        ))
        .into()),
        None => Ok(text),
    }
}

/// A path as a make target or prerequisite, or why it cannot be one.
fn make_path(path: &Path) -> anyhow::Result<String> {
    let text = expressible(
        path,
        "make",
        "%:;*?[]\\\"'`|&<>()=",
        "a make target or prerequisite cannot hold",
    )?;
    // Spaces are escaped; `$` is make's expansion character and `#` starts a comment.
    Ok(text
        .replace('$', "$$")
        .replace('#', "\\#")
        .replace(' ', "\\ "))
}

/// A shell command in a make recipe: make expands `$` before the shell sees the line, even inside
/// single quotes, so every `$` of the (already shell-quoted) command is doubled.
fn make_recipe(command: &str) -> String {
    command.replace('$', "$$")
}

/// A Python string literal (JSON's escapes are Python's).
fn python_str(text: &str) -> String {
    serde_json::to_string(text).expect("a string serialises")
}

/// Text for a Snakemake `shell:` string, which Snakemake formats with `str.format`: literal
/// braces are doubled. (File patterns have no such escape; paths with braces are refused.)
fn snakemake_literal(text: &str) -> String {
    text.replace('{', "{{").replace('}', "}}")
}

/// Text inside a Groovy `\"\"\"` string (a Nextflow script block): no interpolation of `$`, and
/// backslashes and quotes kept as they are.
fn groovy_literal(text: &str) -> String {
    text.replace('\\', "\\\\")
        .replace('$', "\\$")
        .replace('"', "\\\"")
}

fn is_folder(path: &Path) -> bool {
    path.file_name()
        .is_some_and(|name| !name.to_string_lossy().contains('.'))
}

/// What a step waits for: each input's producing output (the folder, for a path inside one), or
/// the file itself.
fn prerequisites(pipeline: &Pipeline, step: &ConcreteStep) -> Vec<PathBuf> {
    let mut paths = Vec::new();
    let mut seen: BTreeSet<PathBuf> = BTreeSet::new();
    for input in &step.inputs {
        let path = match &input.source {
            Source::File => input.path.clone(),
            Source::Step(producer) => pipeline
                .step(producer)
                .and_then(|producer| {
                    producer
                        .outputs
                        .iter()
                        .find(|output| input.path.starts_with(&output.path))
                })
                .map(|output| output.path.clone())
                .unwrap_or_else(|| input.path.clone()),
        };
        if seen.insert(path.clone()) {
            paths.push(path);
        }
    }
    paths
}

/// The steps nobody reads from: what `all` builds.
fn final_outputs(pipeline: &Pipeline) -> Vec<PathBuf> {
    let read: BTreeSet<String> = pipeline
        .steps
        .iter()
        .flat_map(ConcreteStep::dependencies)
        .collect();
    pipeline
        .steps
        .iter()
        .filter(|step| !read.contains(&step.name))
        .flat_map(|step| step.outputs.iter().map(|output| output.path.clone()))
        .collect()
}

/// A GNU make (≥ 4.3, grouped targets) fragment: one rule per concrete step.
pub fn make(pipeline: &Pipeline) -> anyhow::Result<String> {
    let name = &pipeline.header.name;
    let mut out = header(pipeline, "#", "make");
    let _ = writeln!(out, "PF_BIN ?= target/release\n");
    let paths = |paths: &[PathBuf]| -> anyhow::Result<String> {
        Ok(paths
            .iter()
            .map(|path| make_path(path))
            .collect::<anyhow::Result<Vec<_>>>()?
            .join(" "))
    };
    let _ = writeln!(
        out,
        ".PHONY: pipeline-{name}\npipeline-{name}: {}\n",
        paths(&final_outputs(pipeline))?
    );
    for step in &pipeline.steps {
        let targets: Vec<PathBuf> = step.outputs.iter().map(|o| o.path.clone()).collect();
        let _ = writeln!(out, "# step {}", step.name);
        let _ = writeln!(
            out,
            "{} &: {}",
            paths(&targets)?,
            paths(&prerequisites(pipeline, step))?
        );
        for output in &step.outputs {
            if let Some(folder) = output
                .path
                .parent()
                .filter(|folder| !folder.as_os_str().is_empty())
            {
                let folder = shell_words(&[folder.display().to_string()]);
                let _ = writeln!(out, "\t@mkdir -p {}", make_recipe(&folder));
            }
        }
        let _ = writeln!(
            out,
            "\t\"$(PF_BIN)\"/{} {}\n",
            step.stage,
            make_recipe(&shell_words(&step.arguments()))
        );
    }
    Ok(out)
}

/// What a job of a stage asks a cluster for: cores, memory, wall time and GPUs. Defaults sized
/// for the full BBBC021 screen (55 plates, ~500k cells); override per rule with Snakemake's
/// `--set-threads` / `--set-resources` (or a profile's `set-resources:`) and Nextflow's
/// `withName:` selectors.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct JobResources {
    pub threads: u32,
    pub mem_mb: u64,
    /// Wall time in minutes.
    pub runtime: u64,
    pub gpu: u32,
    /// Whether the stage takes `--threads` (the rule passes its thread count).
    pub takes_threads: bool,
}

/// A stage's [`JobResources`].
pub fn job_resources(stage: &str) -> JobResources {
    let (threads, mem_mb, runtime, gpu, takes_threads) = match stage {
        "pf-synth" => (2, 4_000, 60, 0, true),
        "pf-preprocess" => (2, 8_000, 120, 0, true),
        "pf-train" => (8, 32_000, 1_440, 1, true),
        "pf-export" => (1, 8_000, 30, 0, false),
        "pf-embed" => (4, 16_000, 240, 1, true),
        // One image's objects at a time: memory stays flat whatever the backend's size.
        "pf-cellprofiler" => (1, 4_000, 240, 0, false),
        "pf-aggregate" => (4, 16_000, 120, 0, false),
        "pf-classify" => (1, 4_000, 30, 0, false),
        "pf-report" => (2, 8_000, 60, 0, false),
        "pf-baseline" => (4, 16_000, 240, 0, false),
        _ => (1, 4_000, 60, 0, false),
    };
    JobResources {
        threads,
        mem_mb,
        runtime,
        gpu,
        takes_threads,
    }
}

/// A step's thread count: its own `threads` param when it sets one, else its stage's default.
fn step_threads(step: &ConcreteStep) -> (u32, bool) {
    let Some((_, value)) = step.params.iter().find(|(flag, _)| flag == "threads") else {
        return (job_resources(&step.stage).threads, false);
    };
    // The step passes its own --threads: the rule asks for that many (or the stage's default
    // where the value is 0, "all cores", or not a number) and adds no second --threads.
    let threads = match value {
        ParamValue::Integer(threads) if *threads > 0 => u32::try_from(*threads).ok(),
        _ => None,
    };
    (
        threads.unwrap_or_else(|| job_resources(&step.stage).threads),
        true,
    )
}

/// A step's log or benchmark file under `<workdir>/<folder>/`: `<rule>.log`, or
/// `<rule>.<placeholder>.log` for a fan-out step.
fn job_file(
    pipeline: &Pipeline,
    folder: &str,
    rule: &str,
    shard: Option<&str>,
    extension: &str,
) -> String {
    let name = match shard {
        Some(placeholder) => format!("{rule}.{placeholder}.{extension}"),
        None => format!("{rule}.{extension}"),
    };
    Path::new(&pipeline.header.workdir)
        .join(folder)
        .join(name)
        .display()
        .to_string()
}

/// Shard 0 of a fan-out step, rewritten with a shard placeholder (`{shard}` in Snakemake
/// patterns, `{wildcards.shard}` in its commands, `${shard}` in Nextflow's) in place of its own
/// shard index, and `count_text` in place of the shard count of its `--shard 0/<count>` (the
/// count itself, or the setting that holds it).
fn with_shard_placeholder(text: &str, count: usize, placeholder: &str, count_text: &str) -> String {
    text.replace(".shard0", &format!(".shard{placeholder}"))
        .replace(
            &format!("--shard 0/{count}"),
            &format!("--shard {placeholder}/{count_text}"),
        )
}

/// Every shard of a fan-out step's output, from its shard-0 path: `expand(<path with {i}>,
/// i=range(SHARDS))`, the Snakefile's fan-out width.
fn expand_shards(pipeline: &Pipeline, shard0: &str) -> String {
    format!(
        "expand({}, i=range(SHARDS))",
        python_path(pipeline, &shard0.replace(".shard0", ".shard{i}"))
    )
}

/// The concrete steps of each step in the file, in order.
fn step_groups(pipeline: &Pipeline) -> Vec<(String, Vec<&ConcreteStep>)> {
    pipeline
        .specs
        .iter()
        .map(|spec| {
            let steps = pipeline
                .steps
                .iter()
                .filter(|step| step.spec_name == spec.name)
                .collect();
            (spec.name.clone(), steps)
        })
        .collect()
}

/// A Snakefile: one rule per step, with a `{shard}` wildcard for fan-out steps.
pub fn snakemake(pipeline: &Pipeline) -> anyhow::Result<String> {
    // Snakemake reads `{…}` in a file pattern as a wildcard and has no escape for it.
    for arg in pipeline
        .steps
        .iter()
        .flat_map(|step| step.inputs.iter().chain(&step.outputs))
    {
        expressible(
            &arg.path,
            "snakemake",
            "{}",
            "Snakemake reads as a wildcard",
        )?;
    }
    let shards = pipeline.header.shards;
    let mut out = header(pipeline, "#", "snakemake");
    let _ = writeln!(
        out,
        "# Run from the project root: snakemake -s <this file> --cores 2 [--config bin_dir=...{}]\n\
         # On SLURM: add --profile pipelines/profiles/slurm\n",
        pipeline
            .vars
            .keys()
            .map(|name| format!(" {name}=..."))
            .collect::<String>()
    );
    let _ = writeln!(out, "import os\nimport shlex\n");
    let _ = writeln!(out, "BIN = config.get(\"bin_dir\", \"target/release\")");
    // The stages' run-time libraries (libtorch, ONNX Runtime) as a conda environment, for
    // `--software-deployment-method conda`; its post-deploy script points the stages at them.
    // By default the project's own file, found from the binaries' folder (<root>/target/release);
    // binaries outside a checkout have none, and their jobs run in Snakemake's own environment.
    let _ = writeln!(
        out,
        "CONDA_ENV = os.path.abspath(config.get(\"conda_env\", os.path.join(BIN, os.pardir, os.pardir, {})))\n\
         if not os.path.isfile(CONDA_ENV):\n    \
         if \"conda_env\" in config:\n        \
         raise ValueError(\"config conda_env = %s: no such file\" % CONDA_ENV)\n    \
         CONDA_ENV = None",
        python_str(CONDA_ENV_FILE)
    );
    // The fan-out width is a setting too (`--config shards=55`: one job per plate of BBBC021).
    let _ = writeln!(
        out,
        "SHARDS = int(config.get(\"shards\", {shards}))\n\
         if not 1 <= SHARDS <= {MAX_SHARDS}:\n    \
         raise ValueError(\"config shards = %d: give between 1 and {MAX_SHARDS}\" % SHARDS)"
    );
    // The pipeline's [vars] as config keys (`--config data=/mnt/bbbc021`).
    for (name, value) in &pipeline.vars {
        let _ = writeln!(
            out,
            "config.setdefault({}, {})",
            python_str(name),
            python_str(value)
        );
    }
    let _ = writeln!(out);
    let shard_of = output_shards(pipeline);
    let _ = writeln!(
        out,
        "rule all:\n    input: [{}]\n",
        final_outputs(pipeline)
            .iter()
            .filter_map(|path| {
                let text = path.display().to_string();
                match shard_of.get(path.as_path()).copied() {
                    Some(0) => Some(format!("*{}", expand_shards(pipeline, &text))),
                    Some(_) => None,
                    None => Some(python_path(pipeline, &text)),
                }
            })
            .collect::<Vec<_>>()
            .join(", ")
    );
    for (name, steps) in step_groups(pipeline) {
        let step = steps[0];
        let sharded = step.shard.is_some();
        let rewrite = |text: String| {
            if sharded {
                with_shard_placeholder(&text, shards, "{shard}", "{params.shards}")
            } else {
                text
            }
        };
        let rule = name.replace('-', "_");
        let _ = writeln!(out, "rule {rule}:");
        // Inputs named by a var are named inputs (the command refers to them by name).
        let prerequisites = prerequisites(pipeline, step);
        let var_inputs = var_input_paths(&prerequisites);
        let mut inputs: Vec<String> = Vec::new();
        let mut named: Vec<String> = Vec::new();
        for path in &prerequisites {
            let text = path.display().to_string();
            // A step that merges a fan-out step's shards reads SHARDS of them.
            if !sharded {
                match shard_of.get(path.as_path()).copied() {
                    Some(0) => {
                        inputs.push(format!("*{}", expand_shards(pipeline, &text)));
                        continue;
                    }
                    Some(_) => continue,
                    None => {}
                }
            }
            let expression = python_path(pipeline, &rewrite(text.clone()));
            match var_inputs.get(&text) {
                Some(index) => named.push(format!("pf_in{index}={expression}")),
                None => inputs.push(expression),
            }
        }
        if !inputs.is_empty() || !named.is_empty() {
            let mut parts = Vec::new();
            if !inputs.is_empty() {
                parts.push(format!("[{}]", inputs.join(", ")));
            }
            parts.extend(named);
            let _ = writeln!(out, "    input: {}", parts.join(", "));
        }
        let outputs: Vec<String> = step
            .outputs
            .iter()
            .map(|output| {
                let path = python_path(pipeline, &rewrite(output.path.display().to_string()));
                if is_folder(&output.path) {
                    format!("directory({path})")
                } else {
                    path
                }
            })
            .collect();
        let _ = writeln!(out, "    output: [{}]", outputs.join(", "));
        let shard = sharded.then_some("{shard}");
        let _ = writeln!(
            out,
            "    log: {}",
            python_str(&job_file(pipeline, "logs", &rule, shard, "log"))
        );
        let _ = writeln!(
            out,
            "    benchmark: {}",
            python_str(&job_file(pipeline, "benchmarks", &rule, shard, "tsv"))
        );
        let _ = writeln!(out, "    conda: CONDA_ENV");
        let resources = job_resources(&step.stage);
        let (threads, explicit_threads) = step_threads(step);
        let _ = writeln!(out, "    threads: {threads}");
        let _ = writeln!(
            out,
            "    resources:\n        mem_mb={},\n        runtime={},",
            resources.mem_mb, resources.runtime
        );
        if resources.gpu > 0 {
            let _ = writeln!(out, "        gpu={},", resources.gpu);
        }
        let _ = writeln!(out, "    params:\n        bin=BIN,");
        if sharded && step.passes_shard_flag {
            let _ = writeln!(out, "        shards=SHARDS,");
        }
        // The shards a merging step reads, as many as SHARDS: one `--flag path` per shard, each
        // path shell-quoted, from a param.
        let mut gathered: Vec<(String, String)> = Vec::new();
        let mut step_arguments: Vec<String> = Vec::new();
        // Input path → the shard of the fan-out step it comes from (for a step that merges).
        let input_shards: BTreeMap<String, usize> = if sharded {
            BTreeMap::new()
        } else {
            step.inputs
                .iter()
                .filter_map(|input| match &input.source {
                    Source::Step(producer) => pipeline
                        .step(producer)
                        .and_then(|producer| producer.shard)
                        .map(|(index, _)| (input.path.display().to_string(), index)),
                    Source::File => None,
                })
                .collect()
        };
        let mut arguments_in = step.arguments().into_iter().peekable();
        while let Some(argument) = arguments_in.next() {
            let value_shard = arguments_in
                .peek()
                .and_then(|value| input_shards.get(value).copied());
            match (argument.strip_prefix("--"), value_shard) {
                (Some(flag), Some(index)) => {
                    let value = arguments_in.next().expect("peeked");
                    if index == 0 {
                        step_arguments.push(gather_token(gathered.len()));
                        gathered.push((flag.to_string(), value));
                    }
                }
                _ => step_arguments.push(argument),
            }
        }
        for (index, (flag, shard0)) in gathered.iter().enumerate() {
            let _ = writeln!(
                out,
                "        pf_shards{index}=\" \".join([f\"--{flag} {{shlex.quote(path)}}\" for path in {}]),",
                expand_shards(pipeline, shard0)
            );
        }
        // An argument that is an input holding a var is that input (`{input.pf_in<k>:q}`); vars
        // left in other arguments come in as params (Snakemake tracks them, and its linter asks).
        let step_arguments: Vec<String> = step_arguments
            .into_iter()
            .map(|argument| match var_inputs.get(&argument) {
                Some(&index) => input_token(index),
                None => argument,
            })
            .collect();
        let used = shell_words(&step_arguments);
        for name in pipeline.vars.keys() {
            if used.contains(&var_token(name)) {
                let _ = writeln!(
                    out,
                    "        {}=str(config[{}]),",
                    snakemake_param(name),
                    python_str(name)
                );
            }
        }
        let mut quoted = snakemake_literal(&used);
        for index in 0..gathered.len() {
            quoted = quoted.replace(
                &format!("'{}'", gather_token(index)),
                &format!("{{params.pf_shards{index}}}"),
            );
        }
        for index in var_inputs.values() {
            quoted = quoted.replace(
                &format!("'{}'", input_token(*index)),
                &format!("{{input.pf_in{index}:q}}"),
            );
        }
        let mut arguments = with_vars(
            pipeline,
            &quoted,
            // A var only stands inside a single-quoted word (its stand-in is not plain text):
            // the quote is closed around Snakemake's shell-quoted value.
            |name| format!("'{{params.{}:q}}'", snakemake_param(name)),
        );
        if resources.takes_threads && !explicit_threads {
            arguments.push_str(" --threads {threads}");
        }
        // Thread pools (rayon, Polars) sized to the rule's threads; every line of the job's
        // output in its log.
        let command = format!(
            "RAYON_NUM_THREADS={{threads}} POLARS_MAX_THREADS={{threads}} {{params.bin:q}}/{} {arguments} > {{log:q}} 2>&1",
            step.stage,
        );
        let command = if sharded {
            with_shard_placeholder(&command, shards, "{wildcards.shard}", "{params.shards}")
        } else {
            command
        };
        let _ = writeln!(out, "    shell: {}\n", python_str(&command));
    }
    Ok(out)
}

/// A Nextflow DSL2 script: one process per step (fan-out steps once per shard), run in the
/// launch folder with the same relative paths, ordered by the pipeline's dependencies.
pub fn nextflow(pipeline: &Pipeline) -> String {
    let shards = pipeline.header.shards;
    let mut out = header(pipeline, "//", "nextflow");
    let _ = writeln!(out, "// Run from the project root on a shared file system: nextflow run <this file> [--bin_dir ...]\n");
    let _ = writeln!(out, "nextflow.enable.dsl = 2\n");
    let _ = writeln!(
        out,
        "params.bin_dir = \"${{launchDir}}/target/release\"\nparams.root = \"${{launchDir}}\""
    );
    // The pipeline's [vars] as params (`--data /mnt/bbbc021`).
    for (name, value) in &pipeline.vars {
        let _ = writeln!(
            out,
            "params.{} = \"{}\"",
            nextflow_param(name),
            groovy_literal(value)
        );
    }
    let _ = writeln!(out);
    let groups = step_groups(pipeline);
    for (name, steps) in &groups {
        let step = steps[0];
        let process = name.replace('-', "_");
        let command = format!(
            "\"${{params.bin_dir}}\"/{} {}",
            step.stage,
            with_vars(
                pipeline,
                &groovy_literal(&shell_words(&step.arguments())),
                // Inside a single-quoted word: each `'` of the value becomes `'\''`.
                |name| format!(
                    "${{params.{}.toString().replace(\"'\", \"'\\\\''\")}}",
                    nextflow_param(name)
                )
            )
        );
        let (input, output, command) = match step.shard {
            Some(_) => (
                "val shard",
                "val shard",
                with_shard_placeholder(&command, shards, "${shard}", &shards.to_string()),
            ),
            None => ("val ready", "val true", command),
        };
        let resources = job_resources(&step.stage);
        let (threads, _) = step_threads(step);
        let accelerator = if resources.gpu > 0 {
            format!("    accelerator {}\n", resources.gpu)
        } else {
            String::new()
        };
        let _ = writeln!(
            out,
            "process {process} {{\n    cpus {threads}\n    memory '{} MB'\n    time '{}m'\n{accelerator}\n    input:\n    {input}\n\n    output:\n    {output}\n\n    script:\n    \"\"\"\n    cd \"${{params.root}}\"\n    {command}\n    \"\"\"\n}}\n",
            resources.mem_mb, resources.runtime
        );
    }
    let _ = writeln!(out, "workflow {{");
    for (name, steps) in &groups {
        let step = steps[0];
        let process = name.replace('-', "_");
        // The file steps this one reads from, and whether they fan out.
        let mut producers: Vec<(String, bool)> = Vec::new();
        for dependency in steps.iter().flat_map(|step| step.dependencies()) {
            let producer = pipeline.step(&dependency).expect("a known step");
            let entry = (
                producer.spec_name.replace('-', "_"),
                producer.shard.is_some(),
            );
            if !producers.contains(&entry) {
                producers.push(entry);
            }
        }
        let fan_producer = producers
            .iter()
            .find(|(_, fans)| *fans)
            .map(|(name, _)| name.clone());
        let waits: Vec<String> = producers
            .iter()
            .filter(|(producer, fans)| {
                !(step.shard.is_some() && *fans && Some(producer) == fan_producer.as_ref())
            })
            .map(|(producer, _)| format!("{producer}_done"))
            .collect();
        let ready = if waits.is_empty() {
            None
        } else {
            Some(format!(
                "Channel.of(true).concat({}).collect().map {{ true }}",
                waits.join(", ")
            ))
        };
        let channel = match (step.shard.is_some(), &fan_producer, ready) {
            (true, Some(producer), None) => format!("{producer}_done"),
            (true, Some(producer), Some(ready)) => {
                format!("{producer}_done.combine({ready}).map {{ it[0] }}")
            }
            (true, None, None) => format!("Channel.of(0..{})", shards - 1),
            (true, None, Some(ready)) => format!(
                "Channel.of(0..{}).combine({ready}).map {{ it[0] }}",
                shards - 1
            ),
            (false, _, None) => "Channel.of(true)".to_string(),
            (false, _, Some(ready)) => ready,
        };
        let _ = writeln!(out, "    {process}_done = {process}({channel})");
    }
    let _ = writeln!(out, "}}");
    out
}
