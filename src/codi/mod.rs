//! codi (work in progress)
