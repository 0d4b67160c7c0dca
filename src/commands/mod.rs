//! One module per subcommand.

pub mod check;
pub mod compare;
pub mod device_check;
pub mod eval;
pub mod explain;
pub mod ir;
pub mod kernels;
pub mod passes;
pub mod sample;
pub mod stats;
pub mod train;
