//! Running a pipeline's steps: every step whose producers are finished starts, up to `--jobs`
//! at a time, each as a stage subprocess under `pf-run __stage` (tied to pf-run's life); a step
//! that succeeded is recorded (its inputs' and outputs' hashes, its wall time), one that failed
//! skips what depends on it, and SIGINT / SIGTERM / SIGHUP are passed on to the running stages
//! (SIGKILL 10 s later) before pf-run stops.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{anyhow, Context};
use phenoflow_schemas::pipeline::{ConcreteStep, Pipeline, StepRecord};
use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};

use crate::hashing::HashCache;
use crate::{reason_to_run, StageInfo, STAGE_WRAPPER};

/// What to run.
pub(crate) struct Plan<'a> {
    pub pipeline: &'a Pipeline,
    pub stages: &'a BTreeMap<String, StageInfo>,
    /// Steps that run whatever their records say.
    pub forced: &'a BTreeSet<String>,
    /// Steps looked at at all; the others count as up to date.
    pub considered: &'a BTreeSet<String>,
    pub jobs: usize,
}

#[derive(Debug, Clone, PartialEq)]
enum State {
    Pending,
    Running,
    Done,
    UpToDate,
    Failed,
    Skipped,
}

/// A step's end, as its thread reports it: its name and its wall time in seconds, or why it failed.
type Report = (String, anyhow::Result<f64>);

/// The steps' states and the running stages.
struct Scheduler<'a> {
    plan: &'a Plan<'a>,
    states: BTreeMap<String, State>,
    /// The input hashes of each running step, recorded when it succeeds.
    input_hashes: BTreeMap<String, BTreeMap<String, String>>,
    running: usize,
    n_ran: usize,
    sender: mpsc::Sender<Report>,
    receiver: mpsc::Receiver<Report>,
    /// The pid of each running stage, by step.
    children: Arc<Mutex<BTreeMap<String, u32>>>,
    interrupted: Arc<AtomicBool>,
    interrupted_at: Option<Instant>,
    signalled: BTreeSet<u32>,
    /// This very binary, even if a rebuild replaces the file while the pipeline runs.
    self_binary: PathBuf,
}

/// Runs the plan; returns how many steps ran.
pub(crate) fn run(plan: &Plan, cache: &mut HashCache) -> anyhow::Result<usize> {
    let mut scheduler = Scheduler::new(plan)?;
    loop {
        let progressed = scheduler.start_ready(cache)?;
        if scheduler.running == 0 {
            if progressed && !scheduler.is_interrupted() {
                continue;
            }
            break;
        }
        let (name, result) = scheduler.next_report();
        scheduler.finish(&name, result, cache)?;
    }
    cache.save().ok();
    scheduler.outcome()
}

impl<'a> Scheduler<'a> {
    fn new(plan: &'a Plan<'a>) -> anyhow::Result<Self> {
        let states = plan
            .pipeline
            .steps
            .iter()
            .map(|step| {
                let state = if plan.considered.contains(&step.name) {
                    State::Pending
                } else {
                    State::UpToDate
                };
                (step.name.clone(), state)
            })
            .collect();
        let (sender, receiver) = mpsc::channel::<Report>();
        let interrupted = Arc::new(AtomicBool::new(false));
        for signal in [SIGINT, SIGTERM, SIGHUP] {
            signal_hook::flag::register(signal, interrupted.clone())
                .context("installing the signal handlers")?;
        }
        let self_binary = if std::path::Path::new("/proc/self/exe").exists() {
            PathBuf::from("/proc/self/exe")
        } else {
            std::env::current_exe().context("finding pf-run's own binary")?
        };
        Ok(Self {
            plan,
            states,
            input_hashes: BTreeMap::new(),
            running: 0,
            n_ran: 0,
            sender,
            receiver,
            children: Arc::default(),
            interrupted,
            interrupted_at: None,
            signalled: BTreeSet::new(),
            self_binary,
        })
    }

    fn is_interrupted(&self) -> bool {
        self.interrupted.load(Ordering::Relaxed)
    }

    /// Starts every step whose producers are finished, up to --jobs at a time; marks up to date
    /// and skipped steps. Whether any step changed state.
    fn start_ready(&mut self, cache: &mut HashCache) -> anyhow::Result<bool> {
        let plan = self.plan;
        let mut progressed = false;
        for step in &plan.pipeline.steps {
            if self.running >= plan.jobs || self.is_interrupted() {
                break;
            }
            if self.states[&step.name] != State::Pending {
                continue;
            }
            let dependencies = step.dependencies();
            if dependencies.iter().any(|dependency| {
                matches!(
                    self.states.get(dependency),
                    Some(State::Failed | State::Skipped)
                )
            }) {
                self.states.insert(step.name.clone(), State::Skipped);
                eprintln!("pf-run: skip  {} (an upstream step failed)", step.name);
                progressed = true;
                continue;
            }
            if dependencies.iter().any(|dependency| {
                matches!(
                    self.states.get(dependency),
                    Some(State::Pending | State::Running)
                )
            }) {
                continue;
            }
            let stage = &plan.stages[&step.stage];
            let (reason, inputs) = if plan.forced.contains(&step.name) {
                let (_, inputs) = reason_to_run(plan.pipeline, step, stage, cache)?;
                (Some("forced".to_string()), inputs)
            } else {
                reason_to_run(plan.pipeline, step, stage, cache)?
            };
            progressed = true;
            let Some(reason) = reason else {
                self.states.insert(step.name.clone(), State::UpToDate);
                eprintln!("pf-run: ok    {} (up to date)", step.name);
                continue;
            };
            eprintln!("pf-run: run   {} ({reason})", step.name);
            self.input_hashes.insert(step.name.clone(), inputs);
            self.states.insert(step.name.clone(), State::Running);
            self.running += 1;
            self.spawn(step, stage)?;
        }
        Ok(progressed)
    }

    /// Starts a step's stage on a thread of its own, which reports how it ended. The stage runs
    /// under `pf-run __stage`, which asks the kernel to kill it when pf-run dies, even by
    /// SIGKILL, and then becomes the stage.
    fn spawn(&self, step: &ConcreteStep, stage: &StageInfo) -> anyhow::Result<()> {
        for output in &step.outputs {
            if let Some(parent) = output.path.parent() {
                std::fs::create_dir_all(parent)
                    .with_context(|| format!("creating {}", parent.display()))?;
            }
        }
        let binary = stage.binary.clone();
        let arguments = step.arguments();
        let name = step.name.clone();
        let sender = self.sender.clone();
        let (children, self_binary) = (self.children.clone(), self.self_binary.clone());
        let parent = std::process::id();
        std::thread::spawn(move || {
            let step_started = Instant::now();
            let result = Command::new(&self_binary)
                .arg(STAGE_WRAPPER)
                .arg(parent.to_string())
                .arg(&binary)
                .args(&arguments)
                .spawn()
                .map_err(|error| anyhow!("cannot start {}: {error}", binary.display()))
                .and_then(|mut child| {
                    children
                        .lock()
                        .expect("children")
                        .insert(name.clone(), child.id());
                    let status = child.wait();
                    children.lock().expect("children").remove(&name);
                    let status = status
                        .map_err(|error| anyhow!("waiting for {}: {error}", binary.display()))?;
                    if status.success() {
                        Ok(step_started.elapsed().as_secs_f64())
                    } else {
                        Err(anyhow!("{} exited with {status}", binary.display()))
                    }
                });
            let _ = sender.send((name, result));
        });
        Ok(())
    }

    /// Waits for a running step to end; once interrupted, passes the signal on to the running
    /// stages meanwhile.
    fn next_report(&mut self) -> Report {
        loop {
            if self.is_interrupted() {
                self.stop_children();
            }
            match self.receiver.recv_timeout(Duration::from_millis(100)) {
                Ok(report) => return report,
                Err(mpsc::RecvTimeoutError::Timeout) => continue,
                Err(mpsc::RecvTimeoutError::Disconnected) => unreachable!("a running step reports"),
            }
        }
    }

    /// SIGTERM to every running stage (also one that started a moment ago), and SIGKILL to what
    /// still runs 10 s later.
    fn stop_children(&mut self) {
        let since = *self.interrupted_at.get_or_insert_with(Instant::now);
        let kill = since.elapsed() > Duration::from_secs(10);
        for (step, pid) in self.children.lock().expect("children").iter() {
            let Some(process) = rustix::process::Pid::from_raw(*pid as i32) else {
                continue;
            };
            if kill {
                let _ = rustix::process::kill_process(process, rustix::process::Signal::KILL);
            } else if self.signalled.insert(*pid) {
                eprintln!("pf-run: interrupted: stopping {step} (pid {pid})");
                let _ = rustix::process::kill_process(process, rustix::process::Signal::TERM);
            }
        }
    }

    /// Records a step that succeeded (its outputs must exist), or marks it failed.
    fn finish(
        &mut self,
        name: &str,
        result: anyhow::Result<f64>,
        cache: &mut HashCache,
    ) -> anyhow::Result<()> {
        self.running -= 1;
        let plan = self.plan;
        let step = plan.pipeline.step(name).expect("a known step");
        let seconds = match result {
            Ok(seconds) => seconds,
            Err(error) => {
                eprintln!(
                    "pf-run: FAIL  {name}: {}",
                    phenoflow_schemas::chain_message(error.chain())
                );
                self.states.insert(name.to_string(), State::Failed);
                return Ok(());
            }
        };
        let mut outputs = BTreeMap::new();
        for output in &step.outputs {
            let hash = cache.hash(&output.path)?.ok_or_else(|| {
                anyhow!(
                    "step `{name}` succeeded but did not write {}",
                    output.path.display()
                )
            })?;
            outputs.insert(output.path.display().to_string(), hash);
        }
        let stage = &plan.stages[&step.stage];
        let manifest = StepRecord {
            step: name.to_string(),
            stage: step.stage.clone(),
            stage_version: stage.version.clone(),
            binary_hash: stage.binary_hash.clone(),
            definition_hash: phenoflow_schemas::hash_params(&step.definition()),
            inputs: self.input_hashes.remove(name).unwrap_or_default(),
            outputs,
            seconds: Some(seconds),
        };
        let text = serde_json::to_string_pretty(&manifest).expect("a manifest serialises");
        let record = plan.pipeline.record_path(step);
        phenoflow_schemas::atomic_write(&record, text.as_bytes())
            .with_context(|| format!("recording step `{name}` in {}", record.display()))?;
        cache.save().ok();
        eprintln!("pf-run: done  {name} in {seconds:.1} s");
        self.states.insert(name.to_string(), State::Done);
        self.n_ran += 1;
        Ok(())
    }

    /// How many steps ran, or why the run as a whole failed.
    fn outcome(&self) -> anyhow::Result<usize> {
        if self.is_interrupted() {
            return Err(anyhow!(
                "interrupted: the running steps were stopped; the finished steps' outputs are intact and the rest runs next time"
            ));
        }
        let failed: Vec<&str> = self
            .states
            .iter()
            .filter(|(_, state)| **state == State::Failed)
            .map(|(name, _)| name.as_str())
            .collect();
        let skipped = self
            .states
            .values()
            .filter(|state| **state == State::Skipped)
            .count();
        if !failed.is_empty() {
            return Err(anyhow!(
                "{} step(s) failed ({}), {skipped} skipped; the outputs of the other steps are intact",
                failed.len(),
                failed.join(", ")
            ));
        }
        Ok(self.n_ran)
    }
}
