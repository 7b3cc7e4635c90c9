//! `pf-run`: runs a pipeline file as a DAG of stage subprocesses with content-aware incremental
//! re-runs, and emits it for make, Snakemake and Nextflow (see `emit.rs`).
//!
//! A step re-runs only when the content of one of its inputs, its command line (params, paths)
//! or its stage's version changed, when an output is missing, or when an output's content is no
//! longer what the step wrote. What each step saw and wrote is in a manifest per step under
//! `<workdir>/.pfrun/`, written only after the step succeeded; stages write their outputs to
//! temporary files and rename them, so an interrupted run leaves no half-written output and the
//! interrupted step simply runs again next time.

pub mod args;
pub mod emit;
pub mod hashing;
mod schedule;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use anyhow::{anyhow, Context};
use phenoflow_schemas::pipeline::{ConcreteStep, Pipeline, PipelineError, Source, StepRecord};
use phenoflow_schemas::InputError;

use crate::args::{Cli, Command as CliCommand, RunArgs};
use crate::hashing::HashCache;

/// The hidden first argument under which pf-run runs a stage for itself (see [`exec_stage`]).
pub const STAGE_WRAPPER: &str = "__stage";

/// `pf-run __stage PARENT BINARY ARGS...`: asks the kernel for SIGKILL when the parent (the
/// pf-run that started it) dies, checks the parent is still there, and becomes the stage. So a
/// killed pf-run, even by SIGKILL, leaves no stage writing on alone.
pub fn exec_stage(arguments: &[std::ffi::OsString]) -> std::process::ExitCode {
    use std::os::unix::process::CommandExt;
    let [parent, binary, rest @ ..] = arguments else {
        eprintln!("pf-run: {STAGE_WRAPPER} needs a parent pid and a binary");
        return std::process::ExitCode::from(2);
    };
    let parent: i32 = parent.to_string_lossy().parse().unwrap_or(-1);
    if let Err(error) =
        rustix::process::set_parent_process_death_signal(Some(rustix::process::Signal::KILL))
    {
        eprintln!("pf-run: cannot tie the stage to pf-run's life: {error}");
        return std::process::ExitCode::from(1);
    }
    if rustix::process::getppid().map(|pid| pid.as_raw_nonzero().get()) != Some(parent) {
        // pf-run died before the death signal was armed.
        return std::process::ExitCode::from(1);
    }
    let error = Command::new(binary).args(rest).exec();
    eprintln!(
        "pf-run: cannot start {}: {error}",
        Path::new(binary).display()
    );
    std::process::ExitCode::from(1)
}

/// One pf-run per workdir at a time: an exclusive `flock` on `.pfrun/lock`, held for the whole
/// run and released by the kernel however the run ends (a SIGKILL included). The file names the
/// owner (pid and host) for the message a second run prints.
#[derive(Debug)]
struct WorkdirLock {
    _file: std::fs::File,
}

impl WorkdirLock {
    fn take(state_dir: &Path) -> anyhow::Result<Self> {
        use std::io::{Read, Seek, Write};
        let path = state_dir.join("lock");
        let mut file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .with_context(|| format!("opening {}", path.display()))?;
        if let Err(error) =
            rustix::fs::flock(&file, rustix::fs::FlockOperation::NonBlockingLockExclusive)
        {
            if error == rustix::io::Errno::WOULDBLOCK {
                let mut owner = String::new();
                let _ = file.read_to_string(&mut owner);
                return Err(InputError(format!(
                    "{} is in use by another pf-run ({}); wait for it, or stop it",
                    state_dir.parent().unwrap_or(state_dir).display(),
                    owner.trim()
                ))
                .into());
            }
            return Err(std::io::Error::from(error))
                .with_context(|| format!("locking {}", path.display()));
        }
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
        file.set_len(0)
            .and_then(|()| file.rewind())
            .and_then(|()| write!(file, "pid {} on {}", std::process::id(), host.trim()))
            .with_context(|| format!("writing {}", path.display()))?;
        Ok(Self { _file: file })
    }
}

fn process_is_alive(pid: u32) -> bool {
    Path::new("/proc").join(pid.to_string()).exists()
}

/// Removes the temporary files (`.<name>.<pid>.tmp`, and folders of that form) that a stage
/// killed by a signal left in the step output folders, when their pid is gone.
fn remove_stale_temporaries(pipeline: &Pipeline) {
    let mut folders: BTreeSet<PathBuf> = BTreeSet::new();
    for step in &pipeline.steps {
        for output in &step.outputs {
            folders.insert(
                output
                    .path
                    .parent()
                    .filter(|p| !p.as_os_str().is_empty())
                    .unwrap_or(Path::new("."))
                    .to_path_buf(),
            );
            if output.path.is_dir() {
                folders.insert(output.path.clone());
            }
        }
    }
    for folder in folders {
        let Ok(entries) = std::fs::read_dir(&folder) else {
            continue;
        };
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            let Some(pid) = stale_temporary_pid(&name) else {
                continue;
            };
            if process_is_alive(pid) {
                continue;
            }
            let path = entry.path();
            let removed = if path.is_dir() {
                std::fs::remove_dir_all(&path)
            } else {
                std::fs::remove_file(&path)
            };
            if removed.is_ok() {
                eprintln!(
                    "pf-run: removed {}, left by process {pid}, which is gone",
                    path.display()
                );
            }
        }
    }
}

/// The pid in a temporary name `.<name>.<pid>.tmp`.
fn stale_temporary_pid(name: &str) -> Option<u32> {
    let inner = name.strip_prefix('.')?.strip_suffix(".tmp")?;
    let (_, pid) = inner.rsplit_once('.')?;
    pid.parse().ok()
}

/// What this stage's own errors count as bad input (exit 2; see `phenoflow_kit::main`).
pub fn is_input_error(cause: &(dyn std::error::Error + 'static)) -> bool {
    cause.downcast_ref::<PipelineError>().is_some()
}

pub fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        CliCommand::Run(args) => run_pipeline(&args),
        CliCommand::Emit(args) => emit::emit(&args),
    }
}

/// What pf-run knows about a stage binary.
#[derive(Debug, Clone)]
struct StageInfo {
    binary: PathBuf,
    version: String,
    /// The binary's content hash: an edited stage of the same version re-runs its steps.
    binary_hash: String,
}

fn bad(pipeline: &Pipeline, reason: String) -> anyhow::Error {
    PipelineError {
        path: pipeline.path.clone(),
        reason,
    }
    .into()
}

/// Checks every step against its stage binary: the binary exists, and it accepts every flag
/// the step passes (as the stage lists them, `--pf-flags`). Returns each stage's binary and
/// version.
fn check_stages(
    pipeline: &Pipeline,
    bin_dir: &Path,
) -> anyhow::Result<BTreeMap<String, StageInfo>> {
    let mut stages: BTreeMap<String, StageInfo> = BTreeMap::new();
    let mut flags_of: BTreeMap<String, BTreeMap<String, Vec<String>>> = BTreeMap::new();
    for step in &pipeline.steps {
        let binary = bin_dir.join(&step.stage);
        if !binary.is_file() {
            return Err(bad(
                pipeline,
                format!(
                    "step `{}`: unknown stage `{}` (no {})",
                    step.spec_name,
                    step.stage,
                    binary.display()
                ),
            ));
        }
        if !stages.contains_key(&step.stage) {
            let output = Command::new(&binary)
                .arg("--version")
                .output()
                .with_context(|| format!("running {} --version", binary.display()))?;
            let version = String::from_utf8_lossy(&output.stdout).trim().to_string();
            stages.insert(
                step.stage.clone(),
                StageInfo {
                    binary: binary.clone(),
                    version,
                    binary_hash: String::new(),
                },
            );
        }
        if !flags_of.contains_key(&step.stage) {
            // The stage lists its flags and its subcommands' (phenoflow_kit::flags): words in
            // help texts are not flags, hidden aliases of renamed flags are.
            let output = Command::new(&binary)
                .arg(phenoflow_kit::FLAGS_ARG)
                .output()
                .with_context(|| {
                    format!("running {} {}", binary.display(), phenoflow_kit::FLAGS_ARG)
                })?;
            let listed = output
                .status
                .success()
                .then(|| phenoflow_kit::parse_flags(&String::from_utf8_lossy(&output.stdout)).ok())
                .flatten()
                .ok_or_else(|| {
                    bad(
                        pipeline,
                        format!(
                            "step `{}`: {} does not list its flags ({}): not a phenoflow stage of this version",
                            step.spec_name,
                            binary.display(),
                            phenoflow_kit::FLAGS_ARG
                        ),
                    )
                })?;
            flags_of.insert(step.stage.clone(), listed);
        }
        let Some(flags) = flags_of[&step.stage].get(step.command.as_deref().unwrap_or("")) else {
            return Err(bad(
                pipeline,
                format!(
                    "step `{}`: {} does not know the command `{}`",
                    step.spec_name,
                    step.stage,
                    step.command.clone().unwrap_or_default()
                ),
            ));
        };
        let used = step
            .inputs
            .iter()
            .chain(&step.outputs)
            .map(|arg| arg.flag.clone())
            .chain(step.params.iter().map(|(flag, _)| flag.clone()))
            .chain(step.passes_shard_flag.then(|| "shard".to_string()));
        for flag in used {
            if !flags.contains(&flag) {
                let called = match &step.command {
                    Some(command) => format!("{} {command}", step.stage),
                    None => step.stage.clone(),
                };
                return Err(bad(
                    pipeline,
                    format!(
                        "step `{}`: {called} does not accept --{flag} (see `{called} --help`)",
                        step.spec_name,
                    ),
                ));
            }
        }
    }
    // Inputs that no step produces must exist before anything runs.
    for step in &pipeline.steps {
        for input in &step.inputs {
            if input.source == Source::File && !input.path.exists() {
                return Err(bad(
                    pipeline,
                    format!(
                        "step `{}`: input --{} {} does not exist and no step produces it",
                        step.spec_name,
                        input.flag,
                        input.path.display()
                    ),
                ));
            }
        }
    }
    Ok(stages)
}

/// The path whose content stands for an input: for a path inside another step's output folder,
/// that whole output (so a change anywhere in it counts).
fn input_key(step: &ConcreteStep, pipeline: &Pipeline, index: usize) -> PathBuf {
    let input = &step.inputs[index];
    if let Source::Step(producer) = &input.source {
        if let Some(producer) = pipeline.step(producer) {
            for output in &producer.outputs {
                if input.path.starts_with(&output.path) {
                    return output.path.clone();
                }
            }
        }
    }
    input.path.clone()
}

/// Why a step must run, or `None` when it is up to date.
fn reason_to_run(
    pipeline: &Pipeline,
    step: &ConcreteStep,
    stage: &StageInfo,
    cache: &mut HashCache,
) -> anyhow::Result<(Option<String>, BTreeMap<String, String>)> {
    let mut inputs = BTreeMap::new();
    for index in 0..step.inputs.len() {
        let key = input_key(step, pipeline, index);
        let hash = cache
            .hash(&key)
            .with_context(|| format!("hashing {}", key.display()))?
            .ok_or_else(|| {
                anyhow!(
                    "step `{}`: input {} does not exist",
                    step.name,
                    key.display()
                )
            })?;
        inputs.insert(key.display().to_string(), hash);
    }
    let Some(manifest) = StepRecord::read(&pipeline.record_path(step)) else {
        return Ok((Some("never run here".into()), inputs));
    };
    for output in &step.outputs {
        let current = cache
            .hash(&output.path)
            .with_context(|| format!("hashing {}", output.path.display()))?;
        let key = output.path.display().to_string();
        match current {
            None => return Ok((Some(format!("output {key} is missing")), inputs)),
            Some(hash) if manifest.outputs.get(&key) != Some(&hash) => {
                return Ok((
                    Some(format!("output {key} changed since it was written")),
                    inputs,
                ))
            }
            Some(_) => {}
        }
    }
    if manifest.binary_hash != stage.binary_hash {
        return Ok((
            Some(format!(
                "the binary {} changed since the step ran",
                stage.binary.display()
            )),
            inputs,
        ));
    }
    if manifest.stage_version != stage.version {
        return Ok((
            Some(format!(
                "{} is now `{}` (was `{}`)",
                step.stage, stage.version, manifest.stage_version
            )),
            inputs,
        ));
    }
    if manifest.definition_hash != phenoflow_schemas::hash_params(&step.definition()) {
        return Ok((Some("its params or paths changed".into()), inputs));
    }
    for (key, hash) in &inputs {
        if manifest.inputs.get(key) != Some(hash) {
            return Ok((Some(format!("input {key} changed")), inputs));
        }
    }
    Ok((None, inputs))
}

fn run_pipeline(args: &RunArgs) -> anyhow::Result<()> {
    let overrides = args.overrides.overrides();
    let pipeline = Pipeline::read_overridden(&args.pipeline, &overrides)?;
    let bin_dir = match &args.bin_dir {
        Some(bin_dir) => bin_dir.clone(),
        None => std::env::current_exe()?
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_else(|| PathBuf::from(".")),
    };
    let mut stages = check_stages(&pipeline, &bin_dir)?;
    let (forced, considered) = selected_steps(args, &pipeline)?;

    std::fs::create_dir_all(pipeline.state_dir())
        .with_context(|| format!("creating {}", pipeline.state_dir().display()))?;
    // The lock is held before anything is cleaned up or run.
    let _lock = WorkdirLock::take(&pipeline.state_dir())?;
    remove_stale_temporaries(&pipeline);
    let mut cache = HashCache::load(&pipeline.hash_cache_path());
    for stage in stages.values_mut() {
        stage.binary_hash = cache
            .hash(&stage.binary)
            .with_context(|| format!("hashing {}", stage.binary.display()))?
            .unwrap_or_default();
    }
    if args.dry_run {
        return dry_run(&pipeline, &stages, &forced, &considered, &mut cache);
    }
    let recorded = serde_json::to_vec_pretty(&overrides)?;
    phenoflow_schemas::atomic_write(&pipeline.overrides_path(), &recorded)
        .with_context(|| format!("writing {}", pipeline.overrides_path().display()))?;
    let started = Instant::now();
    let plan = schedule::Plan {
        pipeline: &pipeline,
        stages: &stages,
        forced: &forced,
        considered: &considered,
        jobs: args.jobs,
    };
    let n_ran = schedule::run(&plan, &mut cache)?;
    eprintln!(
        "pf-run: {} ran {n_ran} of {} steps in {:.1} s",
        pipeline.header.name,
        pipeline.steps.len(),
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

/// The steps `--force`, `--only` or `--from` force to run, and the steps considered at all
/// (`--only` considers only its own).
fn selected_steps(
    args: &RunArgs,
    pipeline: &Pipeline,
) -> anyhow::Result<(BTreeSet<String>, BTreeSet<String>)> {
    let select = |name: &str| -> anyhow::Result<BTreeSet<String>> {
        let selected = pipeline.select(name);
        if selected.is_empty() {
            let names: Vec<&str> = pipeline
                .specs
                .iter()
                .map(|spec| spec.name.as_str())
                .collect();
            return Err(bad(
                pipeline,
                format!("no step named `{name}` (steps: {})", names.join(", ")),
            ));
        }
        Ok(selected)
    };
    let every = || -> BTreeSet<String> {
        pipeline
            .steps
            .iter()
            .map(|step| step.name.clone())
            .collect()
    };
    let forced: BTreeSet<String> = if args.force {
        every()
    } else if let Some(only) = &args.only {
        select(only)?
    } else if let Some(from) = &args.from {
        pipeline.downstream_of(&select(from)?)
    } else {
        BTreeSet::new()
    };
    let considered = match &args.only {
        Some(_) => forced.clone(),
        None => every(),
    };
    Ok((forced, considered))
}

/// `--dry-run`: what would run and why, without running or writing anything but the hash cache.
fn dry_run(
    pipeline: &Pipeline,
    stages: &BTreeMap<String, StageInfo>,
    forced: &BTreeSet<String>,
    considered: &BTreeSet<String>,
    cache: &mut HashCache,
) -> anyhow::Result<()> {
    let mut will_run: BTreeSet<String> = BTreeSet::new();
    for step in pipeline
        .steps
        .iter()
        .filter(|step| considered.contains(&step.name))
    {
        let upstream = step
            .dependencies()
            .into_iter()
            .find(|dependency| will_run.contains(dependency));
        let reason = if forced.contains(&step.name) {
            Some("forced".to_string())
        } else if let Some(upstream) = upstream {
            Some(format!("`{upstream}` runs before it"))
        } else {
            reason_to_run(pipeline, step, &stages[&step.stage], cache)?.0
        };
        match reason {
            Some(reason) => {
                will_run.insert(step.name.clone());
                println!("would run   {:<16} because {reason}", step.name);
                println!(
                    "            {} {}",
                    step.stage,
                    shell_words(&step.arguments())
                );
            }
            None => println!("up to date  {}", step.name),
        }
    }
    cache.save().ok();
    Ok(())
}

/// Quotes arguments for a POSIX shell where needed.
pub fn shell_words(arguments: &[String]) -> String {
    arguments
        .iter()
        .map(|argument| {
            let plain = !argument.is_empty()
                && argument
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "_-./,:=@%+".contains(c));
            if plain {
                argument.clone()
            } else {
                format!("'{}'", argument.replace('\'', "'\\''"))
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}
