//! lpac's CPU backend: kernel programs run on the host.
//!
//! - [`memory`]: buffer storage (64-byte aligned bytes), the pointer table
//!   kernels see, host tensors in and out;
//! - [`check`]: static checks of a program before it runs;
//! - [`reference`](mod@reference): the plain evaluator of every kernel kind (the oracle and
//!   the fallback for loop kernels without compiled code);
//! - [`gemm`]: matrix products through the gemm crate;
//! - [`attention`]: fused attention, forward and backward, over tiles;
//! - [`movement`]: gather and scatter_add;
//! - the memory plan (liveness and placement of temps in one arena) is
//!   `lpac_ir::kernel::plan`, shared by the backends;
//! - [`exec`]: the executor that runs a program with threads.

pub mod attention;
pub mod check;
pub mod codegen;
pub mod exec;
pub mod gemm;
pub mod memory;
pub mod movement;
pub mod reference;

pub use exec::{Executor, LoopFn};
pub use lpac_ir::kernel::plan::{MemoryPlan, plan_memory};
pub use memory::{BufferTable, HostMemory, Scalar};
