//! Integrity: hostile inputs and environments give a clear error or a refused join, never a wrong
//! number (CODI joins, the DLA target, the compose baseline, the weights-hash memo, Python caches,
//! special files, full disks and read-only folders, atomic output folders, small option checks,
//! no module cycles).
//!
//! One test binary per area, one module per topic: the suite links a few binaries, not one per file.

#[path = "../support/mod.rs"]
mod support;
#[path = "../codi_support/mod.rs"]
mod codi_support;

mod allocation;
mod codi_join;
mod compose_empty;
mod dla_target;
mod environment;
mod hash_memo;
mod module_graph;
mod out_folder;
mod python_cache;
mod run_lock;
mod small_items;
