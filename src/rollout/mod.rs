//! rollout (work in progress)
