//! lpac's tensor graph IR.
//!
//! A [`Graph`] is a list of [`Node`]s in topological order. Each node applies a
//! primitive [`Op`] to earlier nodes and has a static [`TensorType`] and an
//! [`Origin`] (source span and the passes that touched it). The crate depends on
//! no other crate of the workspace: everything else is built on it.

pub mod dot;
pub mod graph;
pub mod interp;
pub mod json;
pub mod kernel;
pub mod op;
pub mod random;
pub mod text;
pub mod types;
pub mod typing;
pub mod verify;

pub use graph::{Graph, Node, NodeId, Origin, Output, Span};
pub use op::{BinaryOp, Init, Op, ReduceOp, UnaryOp};
pub use text::{ParseError, parse, print};
pub use types::{DType, TensorType};
pub use verify::{VerifyError, verify};
