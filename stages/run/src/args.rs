//! Command-line interface of `pf-run` (clap derive; the doc comments are the help).

use std::path::PathBuf;

use clap::{Parser, Subcommand, ValueEnum};
use phenoflow_schemas::pipeline::Overrides;

#[derive(Debug, Parser)]
#[command(
    name = "pf-run",
    version,
    about = "Run a phenoflow pipeline file, re-running only what changed; or emit it for make, Snakemake, Nextflow",
    after_long_help = "Examples:\n  \
        pf-run run pipelines/demo.toml                   # everything that is out of date\n  \
        pf-run run pipelines/demo.toml --dry-run         # what would run, and why\n  \
        pf-run run pipelines/demo.toml --from train      # train and everything after it\n  \
        pf-run run pipelines/demo.toml --only classify   # just that step\n  \
        pf-run run pipelines/seed-cytovae.toml --seeds 0 # one replicate, not the file's three\n  \
        pf-run emit snakemake pipelines/demo.toml > Snakefile\n  \
        pf-run emit nextflow pipelines/bbbc021.toml --shards 110 --set data=/mnt/BBBC021 > main.nf"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the steps of a pipeline that are out of date (or forced), as a DAG.
    Run(RunArgs),
    /// Print the pipeline as a Makefile fragment, a Snakefile or a Nextflow DSL2 script.
    Emit(EmitArgs),
}

#[derive(Debug, clap::Args)]
pub struct RunArgs {
    /// The pipeline file (pipelines/*.toml).
    pub pipeline: PathBuf,

    /// Print what would run and why; run nothing.
    #[arg(long)]
    pub dry_run: bool,

    /// Run only this step (all its shards), whether or not it is out of date; its inputs must exist.
    #[arg(long, value_name = "STEP", conflicts_with = "from")]
    pub only: Option<String>,

    /// Run this step and everything downstream of it, whether or not they are out of date.
    #[arg(long, value_name = "STEP")]
    pub from: Option<String>,

    /// Run every step.
    #[arg(long)]
    pub force: bool,

    /// Independent steps run in parallel, up to this many at once (1 to 1024).
    #[arg(long, short, default_value_t = 1, value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..=1024))]
    pub jobs: usize,

    #[command(flatten)]
    pub overrides: OverrideArgs,

    /// Where the stage binaries are [default: the folder of pf-run itself].
    #[arg(long)]
    pub bin_dir: Option<PathBuf>,
}

#[derive(Debug, clap::Args)]
pub struct EmitArgs {
    /// What to emit.
    #[arg(value_enum)]
    pub format: EmitFormat,

    /// The pipeline file.
    pub pipeline: PathBuf,

    #[command(flatten)]
    pub overrides: OverrideArgs,

    /// Write here instead of standard output.
    #[arg(long, short)]
    pub output: Option<PathBuf>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum EmitFormat {
    Make,
    Snakemake,
    Nextflow,
}

/// What `run` and `emit` may change of the pipeline file without editing it.
#[derive(Debug, clap::Args)]
pub struct OverrideArgs {
    /// Override a `[vars]` value of the pipeline (repeatable), e.g. --set data=/mnt/bbbc021.
    #[arg(long = "set", value_name = "NAME=VALUE", value_parser = parse_var)]
    pub vars: Vec<(String, String)>,

    /// Run (or emit) the `per_seed` steps for these seeds instead of the file's
    /// `[pipeline] seeds`, e.g. --seeds 0 for one replicate.
    #[arg(long, value_name = "SEED,...", value_delimiter = ',', num_args = 1..)]
    pub seeds: Option<Vec<u64>>,

    /// Split the fan-out steps into this many shards instead of the file's `[pipeline] shards`
    /// (in emitted files: the Snakefile's default for its `shards` config key; make's and
    /// Nextflow's width).
    #[arg(long, value_name = "N")]
    pub shards: Option<usize>,
}

impl OverrideArgs {
    /// The overrides as the pipeline contract takes them.
    pub fn overrides(&self) -> Overrides {
        Overrides {
            vars: self.vars.iter().cloned().collect(),
            seeds: self.seeds.clone(),
            shards: self.shards,
        }
    }
}

fn parse_var(text: &str) -> Result<(String, String), String> {
    text.split_once('=')
        .map(|(name, value)| (name.to_string(), value.to_string()))
        .ok_or_else(|| format!("--set {text}: expected NAME=VALUE"))
}
