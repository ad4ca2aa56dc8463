//! The seed's three next steps, on the model and problems of the seed's experiment:
//! - [`compose`]: ablating every pair and triplet of continuous thoughts with the seed's hook, and
//!   how far a set's effect departs from the sum of its members';
//! - [`routing`]: which question tokens each continuous thought attends to, by token type;
//! - [`decompose`]: the residual stream at each thought as attention and MLP contributions, their
//!   direct logit attribution, and the logit lens.
//!
//! Each step module computes and summarises; [`figures`] draws the summaries; [`analyze`] writes
//! the tables and figures of a run into the experiment folder and is what the CLI and the
//! pipeline call. The order is one-way — steps, then figures, then analyses — so no module of
//! the folder uses one above it.

pub mod analyze;
pub mod compose;
pub mod decompose;
pub mod figures;
pub mod routing;
