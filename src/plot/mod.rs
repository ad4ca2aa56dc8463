//! plot (work in progress)
