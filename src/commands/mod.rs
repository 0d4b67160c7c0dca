//! One module per subcommand.

pub mod check;
pub mod explain;
pub mod ir;
pub mod passes;
pub mod stats;
