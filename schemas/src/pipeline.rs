//! Pipeline files (`pipelines/*.toml`): named steps, each a stage binary with inputs, outputs and
//! params, typed with serde (unknown keys are rejected with their name and line) and checked as a
//! whole before anything runs: references, cycles, outputs written twice, missing inputs. The
//! result is a list of concrete steps (fan-out steps expanded into one step per shard) with their
//! command lines, which `pf-run` executes and from which it emits Makefiles, Snakefiles and
//! Nextflow scripts.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use serde::Deserialize;

/// A problem with a pipeline file; every message names the file.
#[derive(Debug, thiserror::Error)]
#[error("{path}: {reason}")]
pub struct PipelineError {
    pub path: PathBuf,
    pub reason: String,
}

/// A parameter value as written in the file.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(untagged)]
pub enum ParamValue {
    Flag(bool),
    Integer(i64),
    Float(f64),
    Text(String),
    List(Vec<ParamValue>),
}

impl ParamValue {
    fn render(&self) -> String {
        match self {
            ParamValue::Flag(value) => value.to_string(),
            ParamValue::Integer(value) => value.to_string(),
            ParamValue::Float(value) => format!("{value:?}"),
            ParamValue::Text(value) => value.clone(),
            ParamValue::List(values) => values
                .iter()
                .map(ParamValue::render)
                .collect::<Vec<_>>()
                .join(","),
        }
    }

    /// Whether the value (or an item of it) holds `text`.
    fn contains(&self, text: &str) -> bool {
        match self {
            ParamValue::Text(value) => value.contains(text),
            ParamValue::List(values) => values.iter().any(|value| value.contains(text)),
            _ => false,
        }
    }

    /// A replicate's seed in place of `placeholder`; a value that is only the placeholder
    /// becomes the integer.
    fn fill_seed(&mut self, placeholder: &str, seed: u64) {
        match self {
            ParamValue::Text(value) if value == placeholder => {
                *self = ParamValue::Integer(seed as i64);
            }
            ParamValue::Text(value) => *value = value.replace(placeholder, &seed.to_string()),
            ParamValue::List(values) => {
                for value in values {
                    value.fill_seed(placeholder, seed);
                }
            }
            _ => {}
        }
    }

    fn to_json(&self) -> serde_json::Value {
        match self {
            ParamValue::Flag(value) => serde_json::json!(value),
            ParamValue::Integer(value) => serde_json::json!(value),
            ParamValue::Float(value) => serde_json::json!(value),
            ParamValue::Text(value) => serde_json::json!(value),
            ParamValue::List(values) => {
                serde_json::Value::Array(values.iter().map(ParamValue::to_json).collect())
            }
        }
    }
}

/// `[pipeline]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PipelineHeader {
    pub name: String,
    #[serde(default)]
    pub description: String,
    /// Folder every step output lives under (relative to where the pipeline is run from).
    pub workdir: String,
    /// How many per-plate shards fan-out steps are split into.
    #[serde(default = "one")]
    pub shards: usize,
    /// Training seeds of the replicate runs: every `per_seed = true` step runs once per seed
    /// (outputs under `seed<s>/`, `${seed}` in its params), and a step that is not per seed reads
    /// the outputs of all of them (to summarise the spread across seeds).
    #[serde(default)]
    pub seeds: Option<Vec<u64>>,
}

fn one() -> usize {
    1
}

/// One input path or reference, or several (the flag repeated, in order).
#[derive(Debug, Clone, PartialEq, serde::Deserialize)]
#[serde(untagged)]
pub enum InputValue {
    One(String),
    Many(Vec<String>),
}

impl InputValue {
    pub fn references(&self) -> &[String] {
        match self {
            InputValue::One(one) => std::slice::from_ref(one),
            InputValue::Many(many) => many,
        }
    }

    fn references_mut(&mut self) -> std::slice::IterMut<'_, String> {
        match self {
            InputValue::One(one) => std::slice::from_mut(one).iter_mut(),
            InputValue::Many(many) => many.iter_mut(),
        }
    }
}

/// `[[step]]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StepSpec {
    pub name: String,
    /// The stage binary, e.g. `pf-embed`.
    pub stage: String,
    /// A subcommand of the stage (`bbbc021` for pf-preprocess).
    #[serde(default)]
    pub command: Option<String>,
    /// Flag → a file (relative to where the pipeline runs) or `@step.output[/sub/path]`, or a
    /// list of them (the flag repeated).
    #[serde(default)]
    pub inputs: BTreeMap<String, InputValue>,
    /// Flag → a path under the workdir.
    #[serde(default)]
    pub outputs: BTreeMap<String, String>,
    /// Flag → value (`true` = a bare flag, `false` = left out, a list = the flag repeated).
    #[serde(default)]
    pub params: BTreeMap<String, ParamValue>,
    /// `"shard"`: run once per per-plate shard (`--shard i/N`), each output split per shard.
    #[serde(default)]
    pub fan_out: Option<String>,
    /// Run once per seed of `[pipeline] seeds` (as the step `<name>-seed<s>`).
    #[serde(default)]
    pub per_seed: bool,
    /// For a step made from a `per_seed` step: the step in the file, and its seed.
    #[serde(skip)]
    pub replica_of: Option<(String, u64)>,
}

/// Step names that cannot be a Snakemake rule, a Nextflow process or a pf-run record: Python's
/// and Groovy's keywords, the names the emitted files define, and pf-run's own files.
const RESERVED_STEP_NAMES: &[&str] = &[
    "all",
    "workflow",
    "process",
    "params",
    "channel",
    "Channel",
    "include",
    "hash_cache",
    "lock",
    "False",
    "None",
    "True",
    "and",
    "as",
    "assert",
    "async",
    "await",
    "break",
    "class",
    "continue",
    "def",
    "del",
    "elif",
    "else",
    "except",
    "finally",
    "for",
    "from",
    "global",
    "if",
    "import",
    "in",
    "is",
    "lambda",
    "nonlocal",
    "not",
    "or",
    "pass",
    "raise",
    "return",
    "try",
    "while",
    "with",
    "yield",
    "abstract",
    "boolean",
    "byte",
    "case",
    "catch",
    "char",
    "const",
    "default",
    "do",
    "double",
    "enum",
    "extends",
    "final",
    "float",
    "goto",
    "implements",
    "instanceof",
    "int",
    "interface",
    "long",
    "native",
    "new",
    "null",
    "package",
    "private",
    "protected",
    "public",
    "short",
    "static",
    "strictfp",
    "super",
    "switch",
    "synchronized",
    "this",
    "throw",
    "throws",
    "transient",
    "true",
    "false",
    "var",
    "void",
    "volatile",
    "trait",
    "it",
];

/// The most per-plate shards a pipeline may fan out to.
pub const MAX_SHARDS: usize = 1024;

/// The most replicate seeds a pipeline may run.
pub const MAX_SEEDS: usize = 100;

/// The placeholder name of a replicate's seed: `${seed}` in a `per_seed` step.
const SEED: &str = "seed";

/// The name of a `per_seed` step's replicate for one seed: `train` → `train-seed1`.
pub fn seed_step_name(name: &str, seed: u64) -> String {
    format!("{name}-seed{seed}")
}

/// Replaces each `per_seed` step by one step per seed: named `<name>-seed<s>`, its outputs under
/// `seed<s>/`, `${seed}` in its params, inputs and outputs replaced by the seed (a param that is
/// exactly `"${seed}"` becomes the integer). A reference to a `per_seed` step's output reads the
/// same seed's replicate from a `per_seed` step, and every replicate, in seed order, from any
/// other step (the flag repeated).
fn expand_seeds(file: &mut PipelineFile) -> Result<(), String> {
    let placeholder = format!("${{{SEED}}}");
    let Some(seeds) = file.pipeline.seeds.clone() else {
        if let Some(spec) = file.steps.iter().find(|spec| spec.per_seed) {
            return Err(format!(
                "step `{}`: per_seed = true, but `[pipeline] seeds` is not set",
                spec.name
            ));
        }
        return Ok(());
    };
    if seeds.is_empty() || seeds.len() > MAX_SEEDS {
        return Err(format!(
            "[pipeline] seeds: {} seeds; give between 1 and {MAX_SEEDS}",
            seeds.len()
        ));
    }
    if let Some(seed) = seeds.iter().find(|&&seed| i64::try_from(seed).is_err()) {
        return Err(format!(
            "[pipeline] seeds: {seed} is larger than a seed can be ({})",
            i64::MAX
        ));
    }
    let distinct: BTreeSet<u64> = seeds.iter().copied().collect();
    if distinct.len() != seeds.len() {
        return Err(format!(
            "[pipeline] seeds = {seeds:?}: a seed is repeated; replicates need distinct seeds"
        ));
    }
    let replicated: BTreeSet<String> = file
        .steps
        .iter()
        .filter(|spec| spec.per_seed)
        .map(|spec| spec.name.clone())
        .collect();
    // A reference `@step.output[/path]` to a per-seed step: the step and what follows its name.
    let per_seed = |reference: &str| -> Option<(String, String)> {
        let target = reference.strip_prefix('@')?;
        let end = target.find(['.', '/']).unwrap_or(target.len());
        replicated
            .contains(&target[..end])
            .then(|| (target[..end].to_string(), target[end..].to_string()))
    };
    // The same reference to one seed's replicate.
    let for_seed = |(step, rest): &(String, String), seed: u64| {
        format!("@{}{rest}", seed_step_name(step, seed))
    };
    let mut expanded = Vec::new();
    for spec in std::mem::take(&mut file.steps) {
        if !spec.per_seed {
            let mut texts = spec
                .inputs
                .values()
                .flat_map(InputValue::references)
                .chain(spec.outputs.values());
            if texts.any(|text| text.contains(&placeholder))
                || spec
                    .params
                    .values()
                    .any(|value| value.contains(&placeholder))
            {
                return Err(format!(
                    "step `{}` uses {placeholder}, which only a `per_seed = true` step has",
                    spec.name
                ));
            }
            let mut spec = spec;
            for value in spec.inputs.values_mut() {
                let references = value.references();
                if references.iter().any(|r| per_seed(r).is_some()) {
                    let gathered: Vec<String> = references
                        .iter()
                        .flat_map(|reference| match per_seed(reference) {
                            Some(target) => {
                                seeds.iter().map(|&seed| for_seed(&target, seed)).collect()
                            }
                            None => vec![reference.clone()],
                        })
                        .collect();
                    *value = InputValue::Many(gathered);
                }
            }
            expanded.push(spec);
            continue;
        }
        for &seed in &seeds {
            let fill = |text: &str| text.replace(&placeholder, &seed.to_string());
            let mut replica = spec.clone();
            replica.name = seed_step_name(&spec.name, seed);
            replica.replica_of = Some((spec.name.clone(), seed));
            for value in replica.inputs.values_mut() {
                for reference in value.references_mut() {
                    *reference = match per_seed(reference) {
                        Some(target) => fill(&for_seed(&target, seed)),
                        None => fill(reference),
                    };
                }
            }
            for output in replica.outputs.values_mut() {
                *output = format!("seed{seed}/{}", fill(output));
            }
            for value in replica.params.values_mut() {
                value.fill_seed(&placeholder, seed);
            }
            expanded.push(replica);
        }
    }
    file.steps = expanded;
    Ok(())
}

/// Whether a name can stand unquoted in a shell command, a make target, a Snakemake rule and a
/// Nextflow process name: an ASCII letter, then letters, digits, `-` and `_`.
pub fn is_identifier(text: &str) -> bool {
    text.chars().next().is_some_and(|c| c.is_ascii_alphabetic())
        && text
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
}

/// Names must be identifiers (they are spliced into commands and the emitted make, Snakemake and
/// Nextflow files); free text may hold no control character (a newline would end the comment
/// it is emitted in); outputs stay inside the workdir. Checked after `${var}` substitution, so
/// `--set` values are checked too.
fn check_text_fields(file: &PipelineFile) -> Result<(), String> {
    let identifier = |what: String, text: &str| {
        if is_identifier(text) {
            Ok(())
        } else {
            Err(format!(
                "{what} `{}`: use an ASCII letter, then letters, digits, - and _",
                text.escape_debug()
            ))
        }
    };
    let text = |what: String, text: &str| match text.chars().find(|c| c.is_control()) {
        Some(c) => Err(format!(
            "{what} \"{}\" holds the control character {:?}",
            text.escape_debug(),
            c
        )),
        None => Ok(()),
    };
    // Outputs live under the workdir: no absolute path, no `..`.
    let inside_workdir = |what: String, path: &str| {
        let path = Path::new(path);
        if crate::leaves_its_root(path) {
            Err(format!(
                "{what} = \"{}\": must be a relative path inside the workdir (no leading /, no ..)",
                path.display()
            ))
        } else {
            Ok(())
        }
    };
    identifier("[pipeline] name".into(), &file.pipeline.name)?;
    text("[pipeline] description".into(), &file.pipeline.description)?;
    text("[pipeline] workdir".into(), &file.pipeline.workdir)?;
    for (name, value) in &file.vars {
        identifier("[vars] name".into(), name)?;
        text(format!("[vars] {name}"), value)?;
    }
    // Step names become Snakemake rules and Nextflow processes (with `-` as `_`) and record files.
    let mut emitted_names: BTreeMap<String, &str> = BTreeMap::new();
    for spec in &file.steps {
        identifier("step name".into(), &spec.name)?;
        let emitted = spec.name.replace('-', "_");
        if RESERVED_STEP_NAMES.contains(&emitted.as_str()) {
            return Err(format!(
                "step name `{}` is reserved (a word of Snakemake, Python, Groovy or Nextflow, or a file of pf-run's); rename the step",
                spec.name
            ));
        }
        if let Some(other) = emitted_names.insert(emitted, &spec.name) {
            if other != spec.name {
                return Err(format!(
                    "steps `{other}` and `{}` would both be the rule `{}` in Snakemake and Nextflow; rename one",
                    spec.name,
                    spec.name.replace('-', "_")
                ));
            }
        }
        let step = &spec.name;
        identifier(format!("step `{step}`: stage"), &spec.stage)?;
        if let Some(command) = &spec.command {
            identifier(format!("step `{step}`: command"), command)?;
        }
        for (flag, value) in &spec.inputs {
            identifier(format!("step `{step}`: input flag"), flag)?;
            for reference in value.references() {
                text(format!("step `{step}`: input {flag}"), reference)?;
                // Inside a step's output, a sub-path stays inside it.
                if let Some((_, sub_path)) =
                    reference.strip_prefix('@').and_then(|r| r.split_once('/'))
                {
                    inside_workdir(format!("step `{step}`: input {flag}"), sub_path)?;
                }
            }
        }
        for (flag, value) in &spec.outputs {
            identifier(format!("step `{step}`: output flag"), flag)?;
            text(format!("step `{step}`: output {flag}"), value)?;
            inside_workdir(format!("step `{step}`: output {flag}"), value)?;
        }
        for (flag, value) in &spec.params {
            identifier(format!("step `{step}`: param"), flag)?;
            let mut stack = vec![value];
            while let Some(value) = stack.pop() {
                match value {
                    ParamValue::Text(value) => text(format!("step `{step}`: param {flag}"), value)?,
                    ParamValue::List(values) => stack.extend(values),
                    _ => {}
                }
            }
        }
    }
    Ok(())
}

/// A pipeline file as written.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PipelineFile {
    pub pipeline: PipelineHeader,
    /// Values substituted for `${name}` in inputs, outputs and string params (a data folder, say),
    /// overridable from the command line (`pf-run run --set data=/mnt/bbbc021`).
    #[serde(default)]
    pub vars: BTreeMap<String, String>,
    #[serde(rename = "step")]
    pub steps: Vec<StepSpec>,
}

/// Where an argument's path comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// A file that exists before the pipeline runs.
    File,
    /// An output of another concrete step.
    Step(String),
}

/// One path argument of a concrete step.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PathArg {
    pub flag: String,
    pub path: PathBuf,
    pub source: Source,
}

/// A step as it runs: fan-out already expanded (`embed[1]`), every path resolved.
#[derive(Debug, Clone)]
pub struct ConcreteStep {
    /// Unique name: the step's name, with `[i]` for shard i of a fan-out step.
    pub name: String,
    /// The step in the file this came from.
    pub spec_name: String,
    pub stage: String,
    pub command: Option<String>,
    pub shard: Option<(usize, usize)>,
    /// Whether the step selects its shard itself (`--shard i/N`); not when it reads an
    /// already-sharded input, which holds only that shard's plates.
    pub passes_shard_flag: bool,
    pub inputs: Vec<PathArg>,
    pub outputs: Vec<PathArg>,
    pub params: Vec<(String, ParamValue)>,
}

impl ConcreteStep {
    /// The command line after the binary: subcommand, inputs, outputs, params, shard.
    pub fn arguments(&self) -> Vec<String> {
        let mut arguments: Vec<String> = self.command.iter().cloned().collect();
        for arg in self.inputs.iter().chain(&self.outputs) {
            arguments.push(format!("--{}", arg.flag));
            arguments.push(arg.path.display().to_string());
        }
        for (flag, value) in &self.params {
            match value {
                ParamValue::Flag(true) => arguments.push(format!("--{flag}")),
                ParamValue::Flag(false) => {}
                ParamValue::List(values) => {
                    for value in values {
                        arguments.push(format!("--{flag}"));
                        arguments.push(value.render());
                    }
                }
                other => {
                    arguments.push(format!("--{flag}"));
                    arguments.push(other.render());
                }
            }
        }
        if let (Some((index, count)), true) = (self.shard, self.passes_shard_flag) {
            arguments.push("--shard".into());
            arguments.push(format!("{index}/{count}"));
        }
        arguments
    }

    /// Everything about the step that changes its output, except input content (canonical JSON).
    pub fn definition(&self) -> serde_json::Value {
        serde_json::json!({
            "stage": self.stage,
            "arguments": self.arguments(),
            "params": self.params.iter().map(|(flag, value)| (flag.clone(), value.to_json())).collect::<BTreeMap<_, _>>(),
        })
    }

    /// The concrete steps this one reads from.
    pub fn dependencies(&self) -> BTreeSet<String> {
        self.inputs
            .iter()
            .filter_map(|input| match &input.source {
                Source::Step(step) => Some(step.clone()),
                Source::File => None,
            })
            .collect()
    }
}

/// What a step saw and wrote the last time it succeeded, as `pf-run` records it in
/// `<workdir>/.pfrun/` (and `pf-report` reads the wall times from).
#[derive(Debug, Clone, serde::Serialize, Deserialize, PartialEq)]
pub struct StepRecord {
    pub step: String,
    pub stage: String,
    pub stage_version: String,
    #[serde(default)]
    pub binary_hash: String,
    pub definition_hash: String,
    pub inputs: BTreeMap<String, String>,
    pub outputs: BTreeMap<String, String>,
    /// The step's wall time in seconds (absent in records of older versions).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seconds: Option<f64>,
}

impl StepRecord {
    /// The record at `path`, if there is a readable one.
    pub fn read(path: &Path) -> Option<Self> {
        std::fs::read_to_string(path)
            .ok()
            .and_then(|text| serde_json::from_str(&text).ok())
    }
}

/// A checked pipeline: its header and concrete steps in a topological order (file order among
/// independent steps).
#[derive(Debug, Clone)]
pub struct Pipeline {
    pub path: PathBuf,
    pub header: PipelineHeader,
    pub specs: Vec<StepSpec>,
    pub steps: Vec<ConcreteStep>,
    /// The `[vars]` as substituted (the file's values, with `--set` overrides).
    pub vars: BTreeMap<String, String>,
    /// Concrete step name → its position in `steps`.
    positions: BTreeMap<String, usize>,
}

/// A shard's output path: `cells.parquet` → `cells.shard1.parquet`.
pub fn shard_path(path: &str, index: usize) -> String {
    let file_start = path.rfind('/').map_or(0, |slash| slash + 1);
    match path[file_start..].find('.') {
        Some(dot) => format!(
            "{}.shard{index}{}",
            &path[..file_start + dot],
            &path[file_start + dot..]
        ),
        None => format!("{path}.shard{index}"),
    }
}

/// What a run or an emitted file changes of a pipeline file without editing it: `[vars]`
/// values (`--set`), the seeds of its replicate runs (`--seeds`) and its fan-out width
/// (`--shards`).
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, Deserialize)]
pub struct Overrides {
    pub vars: BTreeMap<String, String>,
    pub seeds: Option<Vec<u64>>,
    pub shards: Option<usize>,
}

impl Pipeline {
    /// Reads, parses and checks a pipeline file.
    pub fn read(path: &Path) -> Result<Self, PipelineError> {
        Self::read_overridden(path, &Overrides::default())
    }

    /// Parses and checks pipeline text; `path` names it in errors.
    pub fn parse(text: &str, path: &Path) -> Result<Self, PipelineError> {
        Self::parse_overridden(text, path, &Overrides::default())
    }

    /// Reads a pipeline file with some of its settings overridden (`pf-run --set`, `--seeds`,
    /// `--shards`).
    pub fn read_overridden(path: &Path, overrides: &Overrides) -> Result<Self, PipelineError> {
        let text = std::fs::read_to_string(path).map_err(|error| PipelineError {
            path: path.to_path_buf(),
            reason: error.to_string(),
        })?;
        Self::parse_overridden(&text, path, overrides)
    }

    /// Parses pipeline text with some of its settings overridden.
    pub fn parse_overridden(
        text: &str,
        path: &Path,
        overrides: &Overrides,
    ) -> Result<Self, PipelineError> {
        let bad = |reason: String| PipelineError {
            path: path.to_path_buf(),
            reason,
        };
        let mut file: PipelineFile =
            toml::from_str(text).map_err(|error| bad(error.to_string().trim_end().to_string()))?;
        if let Some(shards) = overrides.shards {
            file.pipeline.shards = shards;
        }
        if let Some(seeds) = &overrides.seeds {
            if file.pipeline.seeds.is_none() {
                return Err(bad(
                    "--seeds: the pipeline has no `[pipeline] seeds` (no step runs per seed)"
                        .into(),
                ));
            }
            file.pipeline.seeds = Some(seeds.clone());
        }
        let seeded = file.pipeline.seeds.is_some();
        if seeded && file.vars.contains_key(SEED) {
            return Err(bad(format!(
                "[vars] {SEED}: the name is taken by `[pipeline] seeds` (${{{SEED}}} is each replicate's seed); rename the var"
            )));
        }
        for (name, value) in &overrides.vars {
            if !file.vars.contains_key(name) {
                let known: Vec<&str> = file.vars.keys().map(String::as_str).collect();
                return Err(bad(format!(
                    "--set {name}: the pipeline has no var `{name}` (it has {})",
                    known.join(", ")
                )));
            }
            file.vars.insert(name.clone(), value.clone());
        }
        // One pass, left to right: a var's value is inserted as it is, never expanded again, so
        // a var that names itself (`a = "${a}x"`) cannot loop.
        let substitute = |text: &str| -> Result<String, PipelineError> {
            let mut result = String::with_capacity(text.len());
            let mut rest = text;
            while let Some(start) = rest.find("${") {
                let end = rest[start..]
                    .find('}')
                    .map(|end| start + end)
                    .ok_or_else(|| bad(format!("unclosed `${{` in \"{text}\"")))?;
                let name = &rest[start + 2..end];
                if seeded && name == SEED {
                    // Filled in per replicate by `expand_seeds`.
                    result.push_str(&rest[..=end]);
                    rest = &rest[end + 1..];
                    continue;
                }
                let value = file.vars.get(name).ok_or_else(|| {
                    if name == SEED {
                        bad(format!(
                            "\"{text}\" uses ${{{SEED}}}: a replicate's seed needs `[pipeline] seeds` and `per_seed = true` on the step"
                        ))
                    } else {
                        bad(format!(
                            "\"{text}\" uses ${{{name}}}, which [vars] does not define"
                        ))
                    }
                })?;
                result.push_str(&rest[..start]);
                result.push_str(value);
                rest = &rest[end + 1..];
            }
            result.push_str(rest);
            Ok(result)
        };
        for spec in &mut file.steps {
            for value in spec
                .inputs
                .values_mut()
                .flat_map(InputValue::references_mut)
                .chain(spec.outputs.values_mut())
            {
                *value = substitute(value)?;
            }
            for value in spec.params.values_mut() {
                if let ParamValue::Text(text) = value {
                    *text = substitute(text)?;
                }
            }
        }
        expand_seeds(&mut file).map_err(bad)?;
        check_text_fields(&file).map_err(bad)?;
        let header = file.pipeline.clone();
        if header.shards == 0 || header.shards > MAX_SHARDS {
            return Err(bad(format!(
                "{} = {}: must be between 1 and {MAX_SHARDS} (shards are per plate; BBBC021 has 55 plates)",
                if overrides.shards.is_some() { "--shards" } else { "[pipeline] shards" },
                header.shards
            )));
        }
        let mut specs_by_name: BTreeMap<&str, &StepSpec> = BTreeMap::new();
        for spec in &file.steps {
            if specs_by_name.insert(&spec.name, spec).is_some() {
                return Err(bad(format!("two steps are named `{}`", spec.name)));
            }
            if let Some(fan_out) = &spec.fan_out {
                if fan_out != "shard" {
                    return Err(bad(format!(
                        "step `{}`: fan_out = \"{fan_out}\", the only fan-out is \"shard\"",
                        spec.name
                    )));
                }
            }
        }
        let workdir = PathBuf::from(&header.workdir);
        let shards = header.shards;
        // Expand: a fan-out step becomes one concrete step per shard.
        let fans = |spec: &StepSpec| spec.fan_out.is_some() && shards > 1;
        let mut steps = Vec::new();
        let mut writers: BTreeMap<PathBuf, String> = BTreeMap::new();
        for spec in &file.steps {
            let instances: Vec<Option<usize>> = if fans(spec) {
                (0..shards).map(Some).collect()
            } else {
                vec![None]
            };
            for shard in instances {
                let name = match shard {
                    Some(index) => format!("{}[{index}]", spec.name),
                    None => spec.name.clone(),
                };
                let mut outputs = Vec::new();
                for (flag, output) in &spec.outputs {
                    let relative = match shard {
                        Some(index) => shard_path(output, index),
                        None => output.clone(),
                    };
                    let path = workdir.join(&relative);
                    if let Some(other) = writers.insert(path.clone(), name.clone()) {
                        return Err(bad(format!(
                            "{} is written by two steps: `{other}` and `{name}`",
                            path.display()
                        )));
                    }
                    outputs.push(PathArg {
                        flag: flag.clone(),
                        path,
                        source: Source::Step(name.clone()),
                    });
                }
                let mut inputs = Vec::new();
                let mut reads_a_shard = false;
                for (flag, reference) in spec
                    .inputs
                    .iter()
                    .flat_map(|(flag, value)| value.references().iter().map(move |r| (flag, r)))
                {
                    let Some(target) = reference.strip_prefix('@') else {
                        inputs.push(PathArg {
                            flag: flag.clone(),
                            path: PathBuf::from(reference),
                            source: Source::File,
                        });
                        continue;
                    };
                    let (step_output, sub_path) = match target.split_once('/') {
                        Some((head, tail)) => (head, Some(tail)),
                        None => (target, None),
                    };
                    let (producer_name, output_flag) = step_output.split_once('.').ok_or_else(|| {
                        bad(format!("step `{}`: input {flag} = \"{reference}\": expected @step.output[/path]", spec.name))
                    })?;
                    let producer = specs_by_name.get(producer_name).ok_or_else(|| {
                        bad(format!("step `{}`: input {flag} = \"{reference}\": no step named `{producer_name}`", spec.name))
                    })?;
                    let output = producer.outputs.get(output_flag).ok_or_else(|| {
                        bad(format!(
                            "step `{}`: input {flag} = \"{reference}\": step `{producer_name}` has no output `{output_flag}` (it has {})",
                            spec.name,
                            producer.outputs.keys().cloned().collect::<Vec<_>>().join(", ")
                        ))
                    })?;
                    // Shard i reads shard i of a fan-out producer; anything else reads all shards.
                    let producer_shards: Vec<Option<usize>> = match (fans(producer), shard) {
                        (false, _) => vec![None],
                        (true, Some(index)) => {
                            reads_a_shard = true;
                            vec![Some(index)]
                        }
                        (true, None) => (0..shards).map(Some).collect(),
                    };
                    for producer_shard in producer_shards {
                        let (relative, producer_step) = match producer_shard {
                            Some(index) => (
                                shard_path(output, index),
                                format!("{producer_name}[{index}]"),
                            ),
                            None => (output.clone(), producer_name.to_string()),
                        };
                        let mut path = workdir.join(relative);
                        if let Some(sub_path) = sub_path {
                            path = path.join(sub_path);
                        }
                        inputs.push(PathArg {
                            flag: flag.clone(),
                            path,
                            source: Source::Step(producer_step),
                        });
                    }
                }
                steps.push(ConcreteStep {
                    name,
                    spec_name: spec.name.clone(),
                    stage: spec.stage.clone(),
                    command: spec.command.clone(),
                    shard: shard.map(|index| (index, shards)),
                    passes_shard_flag: shard.is_some() && !reads_a_shard,
                    inputs,
                    outputs,
                    params: spec
                        .params
                        .iter()
                        .map(|(flag, value)| (flag.clone(), value.clone()))
                        .collect(),
                });
            }
        }
        let steps = topological_order(steps).map_err(bad)?;
        let positions = steps
            .iter()
            .enumerate()
            .map(|(position, step)| (step.name.clone(), position))
            .collect();
        Ok(Self {
            path: path.to_path_buf(),
            header,
            specs: file.steps,
            steps,
            vars: file.vars,
            positions,
        })
    }

    /// Where `pf-run` keeps its records: `<workdir>/.pfrun`.
    pub fn state_dir(&self) -> PathBuf {
        PathBuf::from(&self.header.workdir).join(".pfrun")
    }

    /// Where pf-run records the overrides of its latest run (`--set`, `--seeds`, `--shards`),
    /// so that a reader of its records (pf-report's wall times) plans the same steps. Two dots:
    /// no step's record (`<step>.json`, `<step>.shard<i>.json`) can have this name.
    pub fn overrides_path(&self) -> PathBuf {
        self.state_dir().join("run.overrides.json")
    }

    /// pf-run's cache of content hashes (`hash-cache` is a reserved step name).
    pub fn hash_cache_path(&self) -> PathBuf {
        self.state_dir().join("hash-cache.json")
    }

    /// `<step>.json`, or `<step>.shard<i>.json` for shard i of a fan-out step: step names hold
    /// no `.`, so no two steps share a record.
    pub fn record_path(&self, step: &ConcreteStep) -> PathBuf {
        let name = match step.shard {
            Some((index, _)) => format!("{}.shard{index}.json", step.spec_name),
            None => format!("{}.json", step.name),
        };
        self.state_dir().join(name)
    }

    pub fn step(&self, name: &str) -> Option<&ConcreteStep> {
        self.positions
            .get(name)
            .map(|&position| &self.steps[position])
    }

    /// The concrete steps that read, directly or not, from any of `names`.
    pub fn downstream_of(&self, names: &BTreeSet<String>) -> BTreeSet<String> {
        let mut reached = names.clone();
        for step in &self.steps {
            if step
                .dependencies()
                .iter()
                .any(|dependency| reached.contains(dependency))
            {
                reached.insert(step.name.clone());
            }
        }
        reached
    }

    /// Concrete steps whose name is `name` or `name[i]`, or that are a replicate of the
    /// `per_seed` step `name` (`name-seed<s>`, `name-seed<s>[i]`).
    pub fn select(&self, name: &str) -> BTreeSet<String> {
        let replicas: BTreeSet<&str> = self
            .specs
            .iter()
            .filter(|spec| {
                spec.replica_of
                    .as_ref()
                    .is_some_and(|(origin, _)| origin == name)
            })
            .map(|spec| spec.name.as_str())
            .collect();
        self.steps
            .iter()
            .filter(|step| {
                step.name == name
                    || step.spec_name == name
                    || replicas.contains(step.spec_name.as_str())
            })
            .map(|step| step.name.clone())
            .collect()
    }
}

/// Kahn's algorithm, keeping file order among ready steps (the earliest ready step in the file
/// comes first); a cycle is named. O(steps · log steps + edges), so a wide fan-out stays fast.
fn topological_order(steps: Vec<ConcreteStep>) -> Result<Vec<ConcreteStep>, String> {
    let index: BTreeMap<&str, usize> = steps
        .iter()
        .enumerate()
        .map(|(position, step)| (step.name.as_str(), position))
        .collect();
    let mut waiting_on = vec![0usize; steps.len()];
    let mut readers: Vec<Vec<usize>> = vec![Vec::new(); steps.len()];
    for (position, step) in steps.iter().enumerate() {
        for dependency in step.dependencies() {
            if let Some(&producer) = index.get(dependency.as_str()) {
                waiting_on[position] += 1;
                readers[producer].push(position);
            }
        }
    }
    let mut ready: BTreeSet<usize> = (0..steps.len())
        .filter(|&position| waiting_on[position] == 0)
        .collect();
    let mut order = Vec::with_capacity(steps.len());
    while let Some(position) = ready.pop_first() {
        order.push(position);
        for &reader in &readers[position] {
            waiting_on[reader] -= 1;
            if waiting_on[reader] == 0 {
                ready.insert(reader);
            }
        }
    }
    if order.len() < steps.len() {
        let placed: BTreeSet<usize> = order.iter().copied().collect();
        let cycle: Vec<&str> = steps
            .iter()
            .enumerate()
            .filter(|(position, _)| !placed.contains(position))
            .map(|(_, step)| step.name.as_str())
            .collect();
        return Err(format!(
            "the steps {} depend on each other in a cycle",
            cycle.join(", ")
        ));
    }
    let mut slots: Vec<Option<ConcreteStep>> = steps.into_iter().map(Some).collect();
    Ok(order
        .into_iter()
        .map(|position| slots[position].take().expect("each step placed once"))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Pipeline, String> {
        Pipeline::parse(text, Path::new("p.toml")).map_err(|error| error.to_string())
    }

    const HEADER: &str = "[pipeline]\nname = \"t\"\nworkdir = \"out\"\nshards = 2\n";

    #[test]
    fn a_list_of_inputs_repeats_the_flag_in_order() {
        let text = format!(
            "{HEADER}
[[step]]
name = \"a\"
stage = \"pf-x\"
outputs = {{ out = \"a\" }}

[[step]]
name = \"b\"
stage = \"pf-x\"
outputs = {{ out = \"b\" }}

[[step]]
name = \"report\"
stage = \"pf-report\"
inputs = {{ m = [\"@b.out/m.parquet\", \"@a.out/m.parquet\", \"extra.parquet\"] }}
outputs = {{ output = \"report\" }}
"
        );
        let pipeline = parse(&text).unwrap();
        assert_eq!(
            pipeline.step("report").unwrap().arguments(),
            [
                "--m",
                "out/b/m.parquet",
                "--m",
                "out/a/m.parquet",
                "--m",
                "extra.parquet",
                "--output",
                "out/report"
            ]
        );
    }

    #[test]
    fn fan_out_expands_per_shard_and_merges() {
        let text = format!(
            "{HEADER}
[[step]]
name = \"pre\"
stage = \"pf-preprocess\"
fan_out = \"shard\"
inputs = {{ image-csv = \"data/images.csv\" }}
outputs = {{ output = \"cells.parquet\" }}

[[step]]
name = \"train\"
stage = \"pf-train\"
command = \"generative\"
inputs = {{ cells = \"@pre.output\" }}
outputs = {{ out = \"model\" }}
params = {{ epochs = 2, quiet = true, model = \"cytovae\" }}
"
        );
        let pipeline = parse(&text).unwrap();
        let names: Vec<&str> = pipeline
            .steps
            .iter()
            .map(|step| step.name.as_str())
            .collect();
        assert_eq!(names, ["pre[0]", "pre[1]", "train"]);
        assert_eq!(
            pipeline.step("pre[1]").unwrap().arguments(),
            [
                "--image-csv",
                "data/images.csv",
                "--output",
                "out/cells.shard1.parquet",
                "--shard",
                "1/2"
            ]
        );
        assert_eq!(
            pipeline.step("train").unwrap().arguments(),
            [
                "generative",
                "--cells",
                "out/cells.shard0.parquet",
                "--cells",
                "out/cells.shard1.parquet",
                "--out",
                "out/model",
                "--epochs",
                "2",
                "--model",
                "cytovae",
                "--quiet"
            ]
        );
        assert_eq!(pipeline.downstream_of(&pipeline.select("pre")).len(), 3);
    }

    const SEEDED: &str = "[pipeline]
name = \"t\"
workdir = \"out\"
shards = 2
seeds = [0, 7]

[[step]]
name = \"pre\"
stage = \"pf-preprocess\"
fan_out = \"shard\"
inputs = { image-csv = \"data/images.csv\" }
outputs = { output = \"cells.parquet\" }

[[step]]
name = \"train\"
stage = \"pf-train\"
per_seed = true
inputs = { cells = \"@pre.output\" }
outputs = { out = \"model\" }
params = { seed = \"${seed}\", note = \"run-${seed}\" }

[[step]]
name = \"embed\"
stage = \"pf-embed\"
per_seed = true
fan_out = \"shard\"
inputs = { cells = \"@pre.output\", encoder = \"@train.out/encoder.onnx\" }
outputs = { output = \"embeddings.parquet\" }

[[step]]
name = \"summary\"
stage = \"pf-classify\"
command = \"summarize\"
inputs = { metrics = [\"@embed.output\", \"extra.parquet\"] }
outputs = { output = \"summary.parquet\" }
";

    #[test]
    fn per_seed_steps_run_once_per_seed_and_a_plain_step_gathers_them() {
        let pipeline = parse(SEEDED).unwrap();
        let names: Vec<&str> = pipeline
            .steps
            .iter()
            .map(|step| step.name.as_str())
            .collect();
        assert_eq!(
            names,
            [
                "pre[0]",
                "pre[1]",
                "train-seed0",
                "train-seed7",
                "embed-seed0[0]",
                "embed-seed0[1]",
                "embed-seed7[0]",
                "embed-seed7[1]",
                "summary"
            ]
        );
        // `${seed}` alone becomes the integer; inside text, the digits.
        assert_eq!(
            pipeline.step("train-seed7").unwrap().arguments(),
            [
                "--cells",
                "out/cells.shard0.parquet",
                "--cells",
                "out/cells.shard1.parquet",
                "--out",
                "out/seed7/model",
                "--note",
                "run-7",
                "--seed",
                "7"
            ]
        );
        assert_eq!(
            pipeline.step("embed-seed7[1]").unwrap().arguments(),
            [
                "--cells",
                "out/cells.shard1.parquet",
                "--encoder",
                "out/seed7/model/encoder.onnx",
                "--output",
                "out/seed7/embeddings.shard1.parquet"
            ]
        );
        // A step that is not per seed reads every seed's (every shard's) output, in seed order.
        assert_eq!(
            pipeline.step("summary").unwrap().arguments(),
            [
                "summarize",
                "--metrics",
                "out/seed0/embeddings.shard0.parquet",
                "--metrics",
                "out/seed0/embeddings.shard1.parquet",
                "--metrics",
                "out/seed7/embeddings.shard0.parquet",
                "--metrics",
                "out/seed7/embeddings.shard1.parquet",
                "--metrics",
                "extra.parquet",
                "--output",
                "out/summary.parquet"
            ]
        );
        assert_eq!(pipeline.select("train").len(), 2);
        assert_eq!(pipeline.select("embed").len(), 4);
        assert_eq!(
            pipeline
                .downstream_of(&pipeline.select("train-seed0"))
                .len(),
            4,
            "train-seed0, its two embed shards and the summary"
        );
        // --seeds overrides the file's.
        let seeds = |seeds: &[u64]| Overrides {
            seeds: Some(seeds.to_vec()),
            ..Overrides::default()
        };
        let one = Pipeline::parse_overridden(SEEDED, Path::new("p.toml"), &seeds(&[3])).unwrap();
        assert!(one.step("train-seed3").is_some() && one.step("train-seed0").is_none());
    }

    #[test]
    fn bad_seed_settings_are_named() {
        let error = |text: String| parse(&text).unwrap_err();
        assert!(error(SEEDED.replace("seeds = [0, 7]", "seeds = [1, 1]"))
            .contains("a seed is repeated"));
        assert!(error(SEEDED.replace("seeds = [0, 7]", "seeds = []")).contains("0 seeds"));
        assert!(error(SEEDED.replace("seeds = [0, 7]", "seeds = [-1]")).contains("seeds"));
        assert!(error(SEEDED.replace("seeds = [0, 7]\n", ""))
            .contains("uses ${seed}: a replicate's seed needs `[pipeline] seeds`"));
        assert!(error(SEEDED.replace("seeds = [0, 7]\n", "").replace(
            "params = { seed = \"${seed}\", note = \"run-${seed}\" }",
            ""
        ))
        .contains("step `train`: per_seed = true, but `[pipeline] seeds` is not set"));
        assert!(error(SEEDED.replace(
            "command = \"summarize\"",
            "command = \"summarize\"\nparams = { seed = \"${seed}\" }"
        ))
        .contains("step `summary` uses ${seed}, which only a `per_seed = true` step has"));
        assert!(error(format!("{SEEDED}\n[vars]\nseed = \"1\"\n")).contains("[vars] seed"));
        // A name the replicates take is a clash, named.
        assert!(
            error(SEEDED.replace("name = \"summary\"", "name = \"train-seed0\""))
                .contains("two steps are named `train-seed0`")
        );
        let override_without_seeds = Pipeline::parse_overridden(
            &format!("{HEADER}\n[[step]]\nname = \"a\"\nstage = \"pf-x\"\n"),
            Path::new("p.toml"),
            &Overrides {
                seeds: Some(vec![1]),
                ..Overrides::default()
            },
        )
        .unwrap_err();
        assert!(override_without_seeds.to_string().contains("--seeds"));
    }

    #[test]
    fn bad_pipelines_are_named() {
        let unknown = parse(&format!(
            "{HEADER}\n[[step]]\nname = \"a\"\nstage = \"pf-x\"\nbogus = 1\n"
        ))
        .unwrap_err();
        assert!(
            unknown.contains("unknown field `bogus`") && unknown.contains("line 9"),
            "{unknown}"
        );
        let cycle = parse(&format!(
            "{HEADER}\n[[step]]\nname = \"a\"\nstage = \"pf-x\"\ninputs = {{ i = \"@b.o\" }}\noutputs = {{ o = \"a\" }}\n\
             [[step]]\nname = \"b\"\nstage = \"pf-x\"\ninputs = {{ i = \"@a.o\" }}\noutputs = {{ o = \"b\" }}\n"
        ))
        .unwrap_err();
        assert!(cycle.contains("cycle") && cycle.contains("a, b"), "{cycle}");
        let twice = parse(&format!(
            "{HEADER}\n[[step]]\nname = \"a\"\nstage = \"pf-x\"\noutputs = {{ o = \"same\" }}\n\
             [[step]]\nname = \"b\"\nstage = \"pf-x\"\noutputs = {{ o = \"same\" }}\n"
        ))
        .unwrap_err();
        assert!(
            twice.contains("out/same is written by two steps: `a` and `b`"),
            "{twice}"
        );
        let no_output = parse(&format!(
            "{HEADER}\n[[step]]\nname = \"a\"\nstage = \"pf-x\"\noutputs = {{ o = \"x\" }}\n\
             [[step]]\nname = \"b\"\nstage = \"pf-x\"\ninputs = {{ i = \"@a.nope\" }}\n"
        ))
        .unwrap_err();
        assert!(
            no_output.contains("step `a` has no output `nope` (it has o)"),
            "{no_output}"
        );
    }
}
