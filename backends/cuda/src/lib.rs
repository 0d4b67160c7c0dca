//! lpac's CUDA backend.
//!
//! - [`ptx`]: kernel programs as PTX text, one `.entry` per loop body, with a
//!   manifest (launch dimensions, arguments) for the runtime.
//! - [`ptxas`]: finding NVIDIA's assembler, assembling, and its register and
//!   spill report.
//!
//! - [`schedule`]: the order of products and launches that runs a program,
//!   and what each function parameter is bound to (the runtime and the
//!   tests' PTX emulator both follow it).
//! - [`runtime`]: running a kernel program on a GPU through cudarc (driver
//!   and cuBLAS loaded at run time, so lpac builds and runs without CUDA).
//!
//! Every kernel kind is emitted: loop kernels (elementwise and reducing; f32,
//! i32, bool), rows kernels (a warp per row through every stage), multi
//! kernels (one fused function, split where its parameters would pass PTX's
//! limit), attention forward and backward, gather and scatter-add. Matrix
//! products, and the product stages of rows kernels, are cuBLAS calls at run
//! time. `docs/gpu.md` says what has been measured on a GPU.

mod profile;
pub mod ptx;
pub mod ptxas;
pub mod runtime;
pub mod schedule;

pub use ptx::{Arch, PARAM_BYTES, PtxError, PtxKernel, PtxProgram, emit_program};
