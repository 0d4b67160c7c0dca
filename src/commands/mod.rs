//! One module per subcommand.

pub mod check;
pub mod ir;
pub mod stats;
