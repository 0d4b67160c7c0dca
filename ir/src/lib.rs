//! lpac's tensor graph IR.
//!
//! A [`Graph`] is a list of [`Node`]s in topological order. Each node applies a
//! primitive [`Op`] to earlier nodes and has a static [`TensorType`] and an
//! [`Origin`] (source span and the passes that touched it). The crate depends on
//! no other crate of the workspace: everything else is built on it.

pub mod graph;
pub mod op;
pub mod types;
pub mod typing;

pub use graph::{Graph, Node, NodeId, Origin, Output, Span};
pub use op::{BinaryOp, Init, Op, ReduceOp, UnaryOp};
pub use types::{DType, TensorType};
