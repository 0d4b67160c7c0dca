//! Passes over lpac's graph IR and the analyses they share.
//!
//! - [`cost`]: FLOPs and bytes per node and per graph (the cost model).
//! - [`structure`]: attention sites and their projections found from the
//!   graph's structure; parameter groups.
//! - [`pass`]: what a pass is; [`registry`]: every pass by name and the named
//!   pipelines; [`manager`]: running a pipeline with instrumentation;
//!   [`check`]: the numeric check behind `--check-each`.
//! - The passes: [`lowrank`] (LPA), [`cse`], [`dce`], [`verify_pass`].

pub mod attention;
pub mod autodiff;
pub mod check;
pub mod cost;
pub mod cse;
pub mod dce;
pub mod fuse;
pub mod lowrank;
pub mod manager;
pub mod optimizer;
pub mod pass;
pub mod precision;
pub mod registry;
pub mod simplify;
pub mod structure;
pub mod verify_pass;
