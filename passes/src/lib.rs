//! Passes over lpac's graph IR and the analyses they share.
//!
//! - [`cost`]: FLOPs and bytes per node and per graph (the cost model).
//! - [`structure`]: attention sites and their projections found from the
//!   graph's structure; parameter groups.

pub mod cost;
pub mod pass;
pub mod structure;
