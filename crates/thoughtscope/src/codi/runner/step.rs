//! The one per-problem runner every CODI step goes through (the seed's ablation and attention,
//! the next steps' compose, routing and decompose), so that resuming, merging shards and
//! recording failures behave the same everywhere:
//!
//! - **Resumable.** The results file (a JSON list) is rewritten atomically after every problem;
//!   a rerun keeps the finished problems, redoes the failed ones, and refuses a file written with
//!   other settings or weights (the `.meta.json` sidecar, [`RunMeta`]). Records of problems
//!   outside the requested ones that the file holds are kept after them.
//! - **Sharded.** A Slurm array task runs its share of the problems ([`for_shard`]) into a part
//!   file beside the output (`x.shard-1-of-4.json`); the same step without a shard takes every
//!   part's finished records as done (a part made with other settings is refused the same way),
//!   so the merged file equals an unsharded run's.
//! - **Failures are records.** A problem whose computation fails is written as the step's failed
//!   record (its `error` set) with a warning, and the run goes on; settings errors stop the run
//!   before it starts (each step checks them before calling [`run_step`]).

use std::path::{Path, PathBuf};

use serde::{de::DeserializeOwned, Serialize};

use super::files::{meta_path, read_records, shard_part_path, shard_parts, write_records, JsonStyle};
use super::meta::RunMeta;
use crate::codi::latent::codi_model::CodiModel;
use crate::codi::problems::dataset::Problem;
use crate::io::shard::Shard;
use crate::Result;

/// A per-problem record of a step.
pub trait ProblemRecord: Serialize + DeserializeOwned + Clone {
    fn problem_id(&self) -> &str;
    /// The error of a failed problem (redone on the next run).
    fn error(&self) -> Option<&str>;
    /// The record of a problem whose computation failed.
    fn failed(problem: &Problem, error: String) -> Self;
}

/// A step as the runner sees it: its name (in the sidecar and the progress line), its settings
/// (the sidecar compares them) and how its results file is written.
#[derive(Debug, Clone)]
pub struct Step<'a> {
    pub name: &'a str,
    pub settings: serde_json::Value,
    pub style: JsonStyle,
}

/// What [`run_step`] returns.
#[derive(Debug, Clone)]
pub struct StepOutcome<R> {
    /// The requested problems' records in their order, then those of other problems the file held.
    pub records: Vec<R>,
    /// Problems computed in this call (the others were already done).
    pub computed: usize,
    /// Problems whose computation failed in this call.
    pub failed: usize,
}

impl<R> Default for StepOutcome<R> {
    fn default() -> Self {
        StepOutcome { records: Vec::new(), computed: 0, failed: 0 }
    }
}

/// Run `compute` on every problem not yet done in `out` (see the module docs), rewriting `out`
/// after each one.
pub fn run_step<R: ProblemRecord>(
    codi: &CodiModel,
    step: &Step<'_>,
    problems: &[Problem],
    out: &Path,
    mut compute: impl FnMut(&Problem) -> Result<R>,
) -> Result<StepOutcome<R>> {
    let meta = RunMeta::new(codi, step.name, step.settings.clone());
    meta.check_or_write(&meta_path(out), out)?;
    // Taken after the settings check, so a refused run leaves the folder as it was.
    let lock = super::meta::lock_results(out, step.name)?;
    let mut done: Vec<R> = if out.is_file() { read_records(out)? } else { Vec::new() };
    // Records with errors are redone; finished ones are kept.
    done.retain(|r| r.error().is_none());
    for part in shard_parts(out) {
        meta.check_or_write(&meta_path(&part), &part)?;
        for record in read_records::<R>(&part)?.into_iter().filter(|r| r.error().is_none()) {
            if !done.iter().any(|d| d.problem_id() == record.problem_id()) {
                done.push(record);
            }
        }
    }

    let bar = crate::progress::progress(problems.len() as u64, step.name);
    let mut outcome = StepOutcome { records: Vec::with_capacity(problems.len()), computed: 0, failed: 0 };
    for problem in problems {
        if let Some(i) = done.iter().position(|r| r.problem_id() == problem.id) {
            outcome.records.push(done.swap_remove(i));
            bar.inc(1);
            continue;
        }
        bar.set_message(problem.id.clone());
        let record = compute(problem).unwrap_or_else(|e| {
            outcome.failed += 1;
            bar.println(format!("warning: {} of {} failed: {e}", step.name, problem.id));
            R::failed(problem, e.to_string())
        });
        outcome.records.push(record);
        outcome.computed += 1;
        // Keep also results of problems outside this sample that were in the file.
        let mut all = outcome.records.clone();
        all.extend(done.iter().cloned());
        write_records(out, &all, step.style)?;
        bar.inc(1);
    }
    bar.finish();
    outcome.records.extend(done);
    write_records(out, &outcome.records, step.style)?;
    lock.finish()?;
    Ok(outcome)
}

/// A Slurm array task's share of a step: its problems (by problem id) and the part file it
/// writes instead of `out`.
pub fn for_shard(problems: &[Problem], out: &Path, shard: Shard) -> (Vec<Problem>, PathBuf) {
    (shard.select(problems.iter().cloned(), |p| p.id.clone()), shard_part_path(out, shard))
}
