//! scores (work in progress)
