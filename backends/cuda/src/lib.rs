//! lpac's CUDA backend.
//!
//! - [`ptx`]: kernel programs as PTX text, one `.entry` per loop body, with a
//!   manifest (launch dimensions, arguments) for the runtime.
//! - [`ptxas`]: finding NVIDIA's assembler, assembling, and its register and
//!   spill report.
//!
//! Status: the PTX emitter covers loop kernels (and the loop stages of rows
//! and multi kernels) — elementwise and reducing, f32, i32 and bool. Matrix
//! products are for cuBLAS (the runtime); gather and scatter-add are PTX
//! too; attention kernels and rows kernels with product stages are reported
//! as not emitted yet, by name. The runtime (cudarc) is not built yet.

pub mod ptx;
pub mod ptxas;
pub mod runtime;

pub use ptx::{Arch, PtxError, PtxKernel, PtxProgram, emit_program};
