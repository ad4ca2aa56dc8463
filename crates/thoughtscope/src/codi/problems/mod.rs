//! The problems every CODI step runs on: the seed's dataset schema and its stratified sample
//! ([`dataset`], reproducing CPython's `random.sample`), and the embedded synthetic set
//! ([`synthetic`], NOT GSM8K) used when no problem file is given. A folder of its own because the
//! step runner, every step and the pipeline all need [`dataset::Problem`], and it needs none of
//! them.

pub mod dataset;
pub mod synthetic;
