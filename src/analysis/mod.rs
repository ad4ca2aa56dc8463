//! analysis (work in progress)
