//! CODI: the checkpoint loader, the dataset sampler, the latent loop, ablation, attention to latents,
//! the analysis and the seed's next steps, from tiny fixtures to the CODI-shaped SmolLM2.
//!
//! One test binary per area, one module per topic: the suite links a few binaries, not one per file.

#[path = "../support/mod.rs"]
mod support;
#[path = "../codi_support/mod.rs"]
mod codi_support;

mod analysis;
mod dataset;
mod loader;
mod next_steps;
mod seed_layout;
mod smollm2;
mod tiny;
