//! The stage kit: what every phenoflow stage does the same way, so that each `main.rs` is a
//! few lines. [`main`] parses the arguments, runs the stage, prints the whole error chain and
//! maps it to the exit-code policy (2 = bad usage or bad input, 1 = a failure of the machine:
//! disk, memory, a bug); it also answers [`FLAGS_ARG`], the machine-readable list of the flags
//! a stage and each of its subcommands accept, which `pf-run` checks pipeline steps against
//! (hidden aliases of renamed flags included, words in help texts not).
//!
//! It also holds the two things every long-running stage sets up the same way: the worker
//! threads of `--threads` ([`use_threads`]) and the progress bar ([`progress_bar`]).
//!
//! Light on purpose: clap, anyhow, indicatif, rayon and the contract crate, nothing heavy.

use std::collections::BTreeMap;
use std::process::ExitCode;

/// The argument that makes a stage print its flags as JSON and exit (see [`flags`]).
pub const FLAGS_ARG: &str = "--pf-flags";

/// Runs a stage: `stage` is its binary's name (for error lines), `run` the stage itself,
/// `is_stage_input_error` what the stage's own error types count as bad input (beyond the
/// contract's [`phenoflow_schemas::InputError`], schema errors and unreadable inputs).
pub fn main<C: clap::Parser>(
    stage: &str,
    run: impl FnOnce(C) -> anyhow::Result<()>,
    is_stage_input_error: impl Fn(&(dyn std::error::Error + 'static)) -> bool,
) -> ExitCode {
    let mut arguments = std::env::args_os().skip(1);
    if arguments.next().is_some_and(|first| first == FLAGS_ARG) && arguments.next().is_none() {
        println!("{}", flags(&C::command()));
        return ExitCode::SUCCESS;
    }
    let cli = C::parse();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!(
                "{stage}: error: {}",
                phenoflow_schemas::chain_message(error.chain())
            );
            ExitCode::from(exit_code(&error, is_stage_input_error))
        }
    }
}

/// The exit code of a stage's error: 2 for bad usage or input, 1 otherwise.
pub fn exit_code(
    error: &anyhow::Error,
    is_stage_input_error: impl Fn(&(dyn std::error::Error + 'static)) -> bool,
) -> u8 {
    phenoflow_schemas::exit_code(error.chain(), is_stage_input_error)
}

/// No stage-specific input errors beyond the contract's.
pub fn no_stage_input_errors(_: &(dyn std::error::Error + 'static)) -> bool {
    false
}

/// The long flags of a command and of each subcommand, with their aliases (hidden ones too), as
/// JSON: `{"": ["cells", "out", "output", ...], "summarize": [...]}` (`""` is the command
/// itself); `--help` and `--version` are left out.
pub fn flags(command: &clap::Command) -> String {
    let mut commands: BTreeMap<String, Vec<String>> = BTreeMap::new();
    commands.insert(String::new(), long_flags(command));
    for subcommand in command.get_subcommands() {
        commands.insert(subcommand.get_name().to_string(), long_flags(subcommand));
    }
    serde_json::to_string(&commands).expect("a map of strings is JSON")
}

fn long_flags(command: &clap::Command) -> Vec<String> {
    let mut names: Vec<String> = command
        .get_arguments()
        .filter(|argument| !argument.is_positional())
        // A step has no use for these (the stage would print and write nothing).
        .filter(|argument| !["help", "version"].contains(&argument.get_id().as_str()))
        .flat_map(|argument| {
            argument
                .get_long()
                .into_iter()
                .chain(argument.get_all_aliases().unwrap_or_default())
                .map(str::to_string)
                .collect::<Vec<_>>()
        })
        .collect();
    names.sort();
    names.dedup();
    names
}

/// `--threads`: the worker threads of a stage that spreads its work over cores (rayon's global
/// pool; see [`use_threads`]).
#[derive(Debug, Clone, Copy, clap::Args)]
pub struct ThreadsArgs {
    /// Worker threads (default: all cores; at most 1024).
    #[arg(long, value_parser = phenoflow_schemas::parse_threads)]
    pub threads: Option<usize>,
}

impl ThreadsArgs {
    /// Sets rayon's global pool to these threads.
    pub fn install(self) -> anyhow::Result<()> {
        use_threads(self.threads)
    }
}

/// `--no-progress` (the hidden alias `--quiet` is its old name in pf-train).
#[derive(Debug, Clone, Copy, clap::Args)]
pub struct ProgressArgs {
    /// Hide the progress bar (hidden anyway when stderr is not a terminal).
    #[arg(long, alias = "quiet")]
    pub no_progress: bool,
}

/// The seeded hold-out split of a supervised classifier, shared by `pf-train classifier` and
/// `pf-baseline` so that the same flags give the same split in both.
#[derive(Debug, Clone, clap::Args)]
pub struct SplitArgs {
    /// The label to predict: a column (`Metadata_Compound`, `Metadata_MoA`, ...) or `treatment`
    /// (compound at concentration, the second seed's label).
    #[arg(long, default_value = "treatment")]
    pub label: String,

    /// What the test split holds out: stratified (a seeded fraction of every label's rows, the
    /// second seed's split), compound (whole compounds) or plate (whole plates).
    #[arg(long, default_value = "stratified", value_parser = phenoflow_evaluation::classification::HoldOut::parse)]
    pub hold_out: phenoflow_evaluation::classification::HoldOut,

    /// Fraction held out for testing.
    #[arg(long, default_value_t = 0.2)]
    pub test_fraction: f64,
}

/// A table's provenance as every stage records it: `params`, the stage's serialisable settings
/// that change the output (one struct, not a hand-typed JSON object, so the record cannot drift
/// from what ran), and the content hash (BLAKE3) of each input file.
pub fn provenance(
    table: phenoflow_schemas::TableKind,
    stage: &str,
    stage_version: &str,
    params: &impl serde::Serialize,
    inputs: &[&std::path::Path],
) -> anyhow::Result<phenoflow_schemas::Provenance> {
    let params = serde_json::to_value(params)
        .map_err(|error| anyhow::anyhow!("recording the parameters: {error}"))?;
    let mut provenance = phenoflow_schemas::Provenance::new(table, stage, stage_version, params);
    for input in inputs {
        provenance.inputs.insert(
            input.display().to_string(),
            phenoflow_schemas::hash_file(input)?,
        );
    }
    Ok(provenance)
}

/// Sets rayon's global pool to `--threads` workers (all cores when not given; at least one).
pub fn use_threads(threads: Option<usize>) -> anyhow::Result<()> {
    if let Some(threads) = threads {
        rayon::ThreadPoolBuilder::new()
            .num_threads(threads.max(1))
            .build_global()
            .map_err(|error| anyhow::anyhow!("setting up {threads} threads: {error}"))?;
    }
    Ok(())
}

/// The progress bar every stage shows on stderr, `label [=====>   ] 12/340 unit, 25/s, eta 13s`
/// and the stage's message after it; hidden with `--no-progress` (`hidden`) and, by indicatif,
/// whenever stderr is not a terminal, so logs stay clean.
pub fn progress_bar(len: usize, label: &str, unit: &str, hidden: bool) -> indicatif::ProgressBar {
    if hidden {
        return indicatif::ProgressBar::hidden();
    }
    let bar = indicatif::ProgressBar::new(len as u64);
    bar.set_style(
        indicatif::ProgressStyle::with_template(&format!(
            "{label} [{{bar:30}}] {{pos}}/{{len}} {unit}, {{per_sec}}, eta {{eta}} {{msg}}"
        ))
        .expect("a valid template")
        .progress_chars("=> "),
    );
    bar
}

/// Reads what [`flags`] wrote.
pub fn parse_flags(text: &str) -> anyhow::Result<BTreeMap<String, Vec<String>>> {
    Ok(serde_json::from_str(text)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::{Parser, Subcommand};

    #[derive(Debug, Parser)]
    struct Cli {
        /// Where to write; see also --not-a-flag in this text.
        #[arg(long, alias = "out")]
        output: String,
        #[arg(long = "no-progress", alias = "quiet")]
        no_progress: bool,
        #[command(subcommand)]
        command: Option<Command>,
    }

    #[derive(Debug, Subcommand)]
    enum Command {
        Summarize {
            #[arg(long)]
            metrics: Vec<String>,
        },
    }

    #[test]
    fn flags_name_every_long_flag_and_hidden_alias_and_nothing_from_help_texts() {
        let listed = parse_flags(&flags(&<Cli as clap::CommandFactory>::command())).unwrap();
        assert_eq!(listed[""], ["no-progress", "out", "output", "quiet"]);
        assert_eq!(listed["summarize"], ["metrics"]);
        assert!(!listed[""].iter().any(|flag| flag == "not-a-flag"));
    }
}
