//! Loop kernels compiled to native code with Cranelift (JIT).
//!
//! [`CpuCodegen::compile`] turns one [`LoopKernel`] of a [`Program`] into a
//! function with the C ABI
//!
//! ```text
//! extern "C" fn(buffers: *const *mut u8, begin: u64, end: u64, seed: u64, step: u64)
//! ```
//!
//! `buffers[i]` is the base address of `BufferId(i)` (f32 and i32: 4 bytes an
//! element; bool: 1 byte holding 0 or 1). The function computes the outputs
//! for the flat (row-major) domain indices `begin..end`, so a caller splits a
//! kernel over threads by handing each thread a range. `seed` and `step` key
//! the random stream exactly as the reference interpreter does
//! (`lpac_ir::random::dropout_key(seed, step, key)`).
//!
//! # Code shape
//!
//! First the loop axes are simplified (`axes`): axes of extent 1 are
//! dropped and neighbouring axes that every index map walks as one are
//! merged, so an element-wise kernel over contiguous tensors is one flat
//! loop. Then the range (cut to the domain) is walked one domain *row* at a
//! time (a row is the innermost domain axis): the flat index is divided into
//! coordinates once a row (partial first and last rows included), then an
//! inner loop runs over the row. Every expression is computed at the
//! outermost loop level where its inputs are known: constants once a call,
//! expressions of the outer domain coordinates once a row, the rest once an
//! element or once a reduction step. Expressions that read the reduction's
//! result are computed after the reduction loops.
//!
//! # Vectorisation (f32x4: Cranelift has no 256-bit vectors)
//!
//! - Kernels without a reduction: the innermost domain axis runs four
//!   elements at a time when its extent is at least 4 and every load that
//!   moves along it has stride 1 (loads with stride 0 along it are computed
//!   once outside and splatted); a scalar loop finishes the row. The results
//!   are bit-identical to the scalar code: each lane does the same
//!   operations in the same order.
//! - Reducing kernels: the innermost *reduce* axis is vectorised under the
//!   same condition on its strides, with four running lanes (lane `l` takes
//!   the elements whose innermost reduce index is `l mod 4`; elements past
//!   the last multiple of four go to a scalar accumulator). The result is
//!   `((l0 + l1) + (l2 + l3)) + tail`. For `sum` this differs from the
//!   interpreter's one-at-a-time order, so results agree to rounding
//!   (relative ~1e-6 for well-conditioned sums), not bit for bit; `max` is
//!   order-independent and exact. When the innermost reduce axis cannot be
//!   vectorised but the innermost domain axis can (e.g. column sums), four
//!   domain elements are reduced side by side, each in the sequential
//!   order: bit-identical to the interpreter. (The lanes follow the
//!   simplified reduce axes: contiguous reduce axes merge into one.)
//! - Inside a vector loop, random numbers, `load_if`, `sin`, `cos`, `pow`,
//!   i32 division and bool loads/stores are computed lane by lane; `index`
//!   is computed as an i32x4 ramp when its values fit in i32.
//! - Loads with other strides along the candidate axis (transposed reads)
//!   keep the kernel scalar.
//!
//! # Numerics
//!
//! Arithmetic follows the reference interpreter (docs/ir.md): no FMA
//! contraction of user arithmetic (an `add` of a `mul` is two roundings, as
//! in the interpreter), `max`/`min` are IEEE 754-2019 `maximum`/`minimum`
//! (NaN-propagating, -0 < +0: CLIF `fmax`/`fmin` have exactly these
//! semantics; against a constant — ReLU, clamps — a compare and a select
//! that give the same results), comparisons are IEEE, i32 arithmetic wraps,
//! float to i32 truncates and saturates (NaN gives 0), a number to bool is
//! `x != 0`. So element-wise kernels without `exp`, `log` or `tanh` match the
//! interpreter's f32 run bit for bit (up to NaN payloads).
//! Differences, all documented:
//!
//! - `exp`, `log` and `tanh` are inline polynomial approximations on f32x4
//!   ([`math`]; Cephes-style range reduction and minimax polynomials, FMA in
//!   the polynomial when the host has it): max relative error about 2e-7 for
//!   `exp`/`log` in the normal range, `tanh` within 1e-6 absolute; ±inf, NaN,
//!   overflow, underflow to subnormals and 0 are handled. `sin`, `cos` and
//!   `pow` call Rust's `f32` functions (bit-identical to the interpreter).
//! - i32 division by zero gives 0 (the interpreter reports an error);
//!   `i32::MIN / -1` wraps to `i32::MIN` as in the interpreter.
//! - Vectorised `sum` reductions: the order above.
//!
//! # Lifetime
//!
//! Compiled code lives in the [`CpuCodegen`]'s JIT memory, which is never
//! unmapped (dropping the code generator leaks it), so a [`KernelFn`] stays
//! callable for the life of the process.

mod analysis;
mod axes;
mod emit;
pub mod math;
#[cfg(test)]
mod tests;

use std::fmt;

use cranelift_codegen::ir::{AbiParam, Signature, UserFuncName, types};
use cranelift_codegen::settings::{self, Configurable};
use cranelift_codegen::{Context, isa};
use cranelift_frontend::FunctionBuilderContext;
use cranelift_jit::{JITBuilder, JITModule};
use cranelift_module::{FuncId, Linkage, Module, default_libcall_names};
use lpac_ir::kernel::{Kernel, LoopKernel, Program};

pub use analysis::Vectorization;

/// A compiled loop kernel: `(buffers, begin, end, seed, step)`.
///
/// Calling it is only sound with `buffers` pointing at one valid base
/// address per buffer of the program, each large enough for its type, and
/// `begin <= end <= ` the domain's element count; the type is a safe `fn`
/// pointer for the convenience of callers that already hold that contract.
pub type KernelFn = extern "C" fn(buffers: *const *mut u8, begin: u64, end: u64, seed: u64, step: u64);

/// One kernel's native code and its CLIF text.
#[derive(Clone, Debug)]
pub struct CompiledKernel {
    /// The kernel's name (as in the kernel IR).
    pub name: String,
    pub func: KernelFn,
    /// The CLIF of the function as generated (before Cranelift's own
    /// optimisations): deterministic, for `lpac kernels` and snapshots.
    pub clif: String,
    /// Which axis, if any, runs four lanes at a time.
    pub vectorization: Vectorization,
}

impl CompiledKernel {
    /// Runs the kernel over the flat domain indices `begin..end`.
    ///
    /// # Safety
    /// `buffers` must hold one valid, suitably sized and typed base address
    /// for every buffer of the program the kernel was compiled from, and
    /// `begin..end` must lie within the kernel's domain.
    pub unsafe fn call(&self, buffers: &[*mut u8], begin: u64, end: u64, seed: u64, step: u64) {
        (self.func)(buffers.as_ptr(), begin, end, seed, step)
    }
}

/// What went wrong, and in which kernel.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CodegenError {
    /// The kernel's name.
    pub kernel: String,
    pub kind: CodegenErrorKind,
    pub message: String,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CodegenErrorKind {
    /// A dtype or construct this backend does not compile (bf16, f16, …).
    Unsupported,
    /// The kernel is malformed (ill-typed, out-of-bounds load, …).
    Invalid,
    /// Cranelift or the JIT failed.
    Backend,
}

impl CodegenError {
    pub(crate) fn new(kernel: &str, kind: CodegenErrorKind, message: impl Into<String>) -> Self {
        CodegenError { kernel: kernel.to_string(), kind, message: message.into() }
    }
}

impl fmt::Display for CodegenError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = match self.kind {
            CodegenErrorKind::Unsupported => "unsupported",
            CodegenErrorKind::Invalid => "invalid kernel",
            CodegenErrorKind::Backend => "code generation failed",
        };
        write!(f, "kernel `{}`: {kind}: {}", self.kernel, self.message)
    }
}

impl std::error::Error for CodegenError {}

/// Knobs, mostly for tests and benchmarks.
#[derive(Clone, Copy, Debug)]
pub struct CodegenOptions {
    /// Use f32x4 loops where the kernel allows (default true).
    pub vectorize: bool,
    /// Let Cranelift optimise (`opt_level=speed`; default true).
    pub optimize: bool,
}

impl Default for CodegenOptions {
    fn default() -> Self {
        CodegenOptions { vectorize: true, optimize: true }
    }
}

/// The Rust functions that generated code calls, by symbol name.
pub(crate) mod helpers {
    /// `dropout_key(seed, step, key)`: computed once per call of a kernel.
    pub extern "C" fn lpac_cpu_dropout_key(seed: u64, step: u64, key: u64) -> u64 {
        lpac_ir::random::dropout_key(seed, step, key)
    }

    /// `uniform_f32(key, counter)`.
    pub extern "C" fn lpac_cpu_uniform_f32(key: u64, counter: u64) -> f32 {
        lpac_ir::random::uniform_f32(key, counter)
    }

    pub extern "C" fn lpac_cpu_sinf(x: f32) -> f32 {
        x.sin()
    }

    pub extern "C" fn lpac_cpu_cosf(x: f32) -> f32 {
        x.cos()
    }

    pub extern "C" fn lpac_cpu_powf(x: f32, y: f32) -> f32 {
        x.powf(y)
    }
}

/// Module ids of the helpers, declared once, in a fixed order (so the CLIF
/// text names them the same way every time).
#[derive(Clone, Copy, Debug)]
pub(crate) struct HelperIds {
    pub dropout_key: FuncId,
    pub uniform: FuncId,
    pub sin: FuncId,
    pub cos: FuncId,
    pub pow: FuncId,
}

/// Owns the JIT module that holds every compiled kernel.
pub struct CpuCodegen {
    module: JITModule,
    ctx: Context,
    fctx: FunctionBuilderContext,
    helpers: HelperIds,
    use_fma: bool,
    options: CodegenOptions,
    next_id: u64,
}

impl CpuCodegen {
    /// A code generator for the host CPU with the default options.
    pub fn new() -> Result<Self, CodegenError> {
        Self::with_options(CodegenOptions::default())
    }

    pub fn with_options(options: CodegenOptions) -> Result<Self, CodegenError> {
        let err = |m: String| CodegenError::new("<jit>", CodegenErrorKind::Backend, m);
        let mut flags = settings::builder();
        let set = |flags: &mut settings::Builder, k: &str, v: &str| {
            flags.set(k, v).map_err(|e| err(format!("setting {k}={v}: {e}")))
        };
        set(&mut flags, "use_colocated_libcalls", "false")?;
        set(&mut flags, "is_pic", "false")?;
        set(&mut flags, "opt_level", if options.optimize { "speed" } else { "none" })?;
        let isa_builder =
            cranelift_native::builder().map_err(|m| err(format!("host machine is not supported: {m}")))?;
        let isa = isa_builder.finish(settings::Flags::new(flags)).map_err(|e| err(format!("building the ISA: {e}")))?;
        let use_fma = isa_has_flag(&*isa, "has_fma");
        let mut builder = JITBuilder::with_isa(isa, default_libcall_names());
        builder.symbol("lpac_cpu_dropout_key", helpers::lpac_cpu_dropout_key as *const u8);
        builder.symbol("lpac_cpu_uniform_f32", helpers::lpac_cpu_uniform_f32 as *const u8);
        builder.symbol("lpac_cpu_sinf", helpers::lpac_cpu_sinf as *const u8);
        builder.symbol("lpac_cpu_cosf", helpers::lpac_cpu_cosf as *const u8);
        builder.symbol("lpac_cpu_powf", helpers::lpac_cpu_powf as *const u8);
        let mut module = JITModule::new(builder);

        let mut declare = |name: &str, params: &[types::Type], ret: types::Type| -> Result<FuncId, CodegenError> {
            let mut sig = module.make_signature();
            sig.params.extend(params.iter().map(|&t| AbiParam::new(t)));
            sig.returns.push(AbiParam::new(ret));
            module.declare_function(name, Linkage::Import, &sig).map_err(|e| err(format!("declaring {name}: {e}")))
        };
        let helpers = HelperIds {
            dropout_key: declare("lpac_cpu_dropout_key", &[types::I64, types::I64, types::I64], types::I64)?,
            uniform: declare("lpac_cpu_uniform_f32", &[types::I64, types::I64], types::F32)?,
            sin: declare("lpac_cpu_sinf", &[types::F32], types::F32)?,
            cos: declare("lpac_cpu_cosf", &[types::F32], types::F32)?,
            pow: declare("lpac_cpu_powf", &[types::F32, types::F32], types::F32)?,
        };
        let ctx = module.make_context();
        Ok(CpuCodegen { module, ctx, fctx: FunctionBuilderContext::new(), helpers, use_fma, options, next_id: 0 })
    }

    /// Whether the polynomials of `exp`, `log` and `tanh` use FMA (the host
    /// has it). Their results differ in the last bit between the two.
    pub fn uses_fma(&self) -> bool {
        self.use_fma
    }

    pub fn options(&self) -> CodegenOptions {
        self.options
    }

    /// Compiles one loop kernel of `program`.
    pub fn compile(&mut self, program: &Program, kernel: &LoopKernel) -> Result<CompiledKernel, CodegenError> {
        let simplified = axes::simplify(kernel);
        let kernel = &simplified;
        let an = analysis::analyze(program, kernel, self.options.vectorize)?;
        let backend = |m: String| CodegenError::new(&kernel.name, CodegenErrorKind::Backend, m);

        let frontend = self.module.target_config();
        let ptr_ty = frontend.pointer_type();
        let mut sig = Signature::new(self.module.target_config().default_call_conv);
        sig.params.push(AbiParam::new(ptr_ty));
        for _ in 0..4 {
            sig.params.push(AbiParam::new(types::I64));
        }
        self.next_id += 1;
        let symbol = format!("lpac_kernel_{}_{}", self.next_id, sanitize(&kernel.name));
        let id = self
            .module
            .declare_function(&symbol, Linkage::Local, &sig)
            .map_err(|e| backend(format!("declaring the function: {e}")))?;

        self.module.clear_context(&mut self.ctx);
        self.ctx.func.signature = sig;
        self.ctx.func.name = UserFuncName::testcase(sanitize(&kernel.name));
        emit::emit_function(
            &mut self.module,
            &mut self.ctx.func,
            &mut self.fctx,
            emit::EmitConfig { helpers: self.helpers, use_fma: self.use_fma, ptr_ty, frontend },
            program,
            kernel,
            &an,
        )?;
        let clif = self.ctx.func.display().to_string();
        self.module.define_function(id, &mut self.ctx).map_err(|e| backend(format_module_error(&e)))?;
        self.module.clear_context(&mut self.ctx);
        self.module.finalize_definitions().map_err(|e| backend(format!("finalizing: {e}")))?;
        let code = self.module.get_finalized_function(id);
        // SAFETY: the function was declared with exactly this signature
        // (pointer, 4 x i64, no results) in the host's default calling
        // convention, which is `extern "C"`.
        let func = unsafe { std::mem::transmute::<*const u8, KernelFn>(code) };
        Ok(CompiledKernel { name: kernel.name.clone(), func, clif, vectorization: an.mode })
    }

    /// Compiles every loop body of the program: per kernel, one function for
    /// a loop kernel, one per loop stage of a rows kernel or member of a multi
    /// kernel, none for library
    /// kernels (GEMM, gather, scatter-add).
    pub fn compile_all(&mut self, program: &Program) -> Result<Vec<Vec<CompiledKernel>>, CodegenError> {
        program
            .kernels
            .iter()
            .map(|k| match k {
                Kernel::Loop(l) => Ok(vec![self.compile(program, l)?]),
                Kernel::Rows(r) => r.loops().map(|s| self.compile(program, s)).collect(),
                Kernel::Multi(m) => m.members.iter().map(|s| self.compile(program, s)).collect(),
                _ => Ok(Vec::new()),
            })
            .collect()
    }
}

fn isa_has_flag(isa: &dyn isa::TargetIsa, name: &str) -> bool {
    isa.isa_flags().iter().any(|v| v.name == name && v.as_bool() == Some(true))
}

fn format_module_error(e: &cranelift_module::ModuleError) -> String {
    match e {
        cranelift_module::ModuleError::Compilation(cranelift_codegen::CodegenError::Verifier(errors)) => {
            format!("the generated CLIF does not verify: {errors}")
        }
        other => other.to_string(),
    }
}

/// A kernel name as a symbol: ASCII letters, digits and `_`.
fn sanitize(name: &str) -> String {
    let s: String = name.chars().map(|c| if c.is_ascii_alphanumeric() { c } else { '_' }).collect();
    if s.is_empty() { "kernel".to_string() } else { s }
}
