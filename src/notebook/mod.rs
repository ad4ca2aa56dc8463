//! notebook (work in progress)
