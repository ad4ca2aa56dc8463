//! Whole runs of the binary under stress: killed at random moments (`scripts/fault-test.sh`) and
//! sharded over a real Slurm scheduler.
//!
//! One test binary per area, one module per topic: the suite links a few binaries, not one per file.

#[path = "../support/mod.rs"]
mod support;

mod fault_kill;
mod slurm_cluster;
