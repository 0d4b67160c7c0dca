//! Running a kernel program on an NVIDIA GPU through cudarc.
//!
//! The driver library is loaded at run time (cudarc's dynamic loading), so
//! lpac builds and runs where CUDA is absent: [`Gpu::open`] then says so.
//! A [`CudaExecutor`] owns one device buffer per program buffer, loads every
//! emitted PTX function, and runs the kernels in order on one stream: loop
//! bodies, gather and scatter-add as the emitted functions; matrix products
//! (plain, or the product stages of a rows kernel, run over all rows) with
//! cuBLAS `sgemm`. A kernel with no GPU code is refused at construction, by
//! name. For training, parameters and optimiser state can stay on the GPU
//! between steps (`write_external`, `run_resident`, `carry`, `read_external`).
//!
//! Checked on an H200 by the GPU check (`bench/gpu-check.sh`, results in
//! `docs/gpu.md`); without a GPU, `tests/emulated.rs` runs the emitted
//! functions the way [`CudaExecutor`] launches them.

use std::collections::BTreeMap;
use std::sync::Arc;

use cudarc::cublas::{CudaBlas, result as blas, sys as blas_sys};
use cudarc::driver::{CudaContext, CudaFunction, CudaSlice, CudaStream, DevicePtr, LaunchConfig, PushKernelArg};
use cudarc::nvrtc::Ptx;
use lpac_ir::interp::Tensor;
use lpac_ir::kernel::{BufferId, BufferKind, Program};
use lpac_ir::types::{DType, TensorType};

use crate::profile::Profile;
use crate::schedule::{Binding, BlasCall, BlasOperand, Step};
use crate::{Arch, PtxProgram, emit_program};

/// An open GPU: context, stream, cuBLAS handle.
pub struct Gpu {
    ctx: Arc<CudaContext>,
    stream: Arc<CudaStream>,
    blas: CudaBlas,
}

impl Gpu {
    /// Device 0, or a message that says why there is none (no driver, no
    /// device, cuBLAS missing).
    pub fn open() -> Result<Gpu, String> {
        // SAFETY: only looks for the driver library.
        if !unsafe { cudarc::driver::sys::is_culib_present() } {
            return Err("no CUDA driver on this machine (libcuda.so was not found): --device cuda needs an NVIDIA \
                        GPU and its driver; use --device cpu"
                .into());
        }
        let ctx = std::panic::catch_unwind(|| CudaContext::new(0))
            .map_err(|_| "the CUDA driver failed to start (no usable GPU?)".to_string())?
            .map_err(|e| format!("no usable CUDA device: {e}"))?;
        let stream = ctx.default_stream();
        // SAFETY: only looks for the library.
        if !unsafe { cudarc::cublas::sys::is_culib_present() } {
            return Err("cuBLAS (libcublas.so) was not found: add its folder to LD_LIBRARY_PATH — e.g. the CUDA \
                        toolkit's lib64, or site-packages/nvidia/cublas/lib of a pip-installed CUDA \
                        (bench/gpu-check.sh does this)"
                .into());
        }
        let blas = std::panic::catch_unwind(|| CudaBlas::new(stream.clone()))
            .map_err(|_| "cuBLAS failed to start".to_string())?
            .map_err(|e| format!("cuBLAS is not available: {e}"))?;
        Ok(Gpu { ctx, stream, blas })
    }

    /// The compute capability as an [`Arch`] lpac emits for.
    pub fn arch(&self) -> Result<Arch, String> {
        use cudarc::driver::sys::CUdevice_attribute as A;
        let major = self.ctx.attribute(A::CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR).map_err(|e| e.to_string())?;
        let minor = self.ctx.attribute(A::CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR).map_err(|e| e.to_string())?;
        match (major, minor) {
            (8, _) => Ok(Arch::Sm80),
            (9, _) => Ok(Arch::Sm90),
            (m, n) => Err(format!("GPU of compute capability {m}.{n}: lpac emits PTX for sm_80 and sm_90 only")),
        }
    }
}

/// A program's buffers and functions on the GPU.
pub struct CudaExecutor {
    gpu: Gpu,
    /// Shared so a launch can hold a kernel while it borrows the executor
    /// mutably (no copy of the kernel per launch).
    program: Arc<Program>,
    emitted: PtxProgram,
    functions: Vec<CudaFunction>,
    /// Kernel index → its products and functions, in order (shared like
    /// `program`).
    schedule: Arc<Vec<Vec<Step>>>,
    /// Temps, placed by the memory plan (`lpac_ir::kernel::plan`).
    arena: CudaSlice<u8>,
    /// Inputs and parameters: an allocation each (temps: `None`).
    external: Vec<Option<CudaSlice<u8>>>,
    /// Every buffer's device address (kernel arguments).
    ptrs: Vec<u64>,
    /// Every temp's byte range in the arena (`None`: external or unused).
    ranges: Vec<Option<(usize, usize)>>,
    error_cell: CudaSlice<u32>,
    error_ptr: u64,
    /// Block-level reductions' counters and partial results (zeroed once;
    /// the kernels leave their counters at 0). Kernels get `scratch_ptr`;
    /// this owns the allocation.
    _scratch: CudaSlice<u8>,
    scratch_ptr: u64,
    /// `LPAC_CUDA_SYNC=1`: wait for every launch and product, so that a
    /// failing one is named (launches are asynchronous: without this a
    /// fault surfaces at the next copy, with no kernel to blame).
    sync_each: bool,
    /// `LPAC_CUDA_PROFILE=1`: every kernel waited for and timed; the report
    /// ([`Profile`]) goes to standard error when the executor is dropped.
    profile: Option<Profile>,
}

impl Drop for CudaExecutor {
    fn drop(&mut self) {
        if let Some(profile) = &self.profile {
            eprint!("{}", profile.report(&self.program));
        }
    }
}

fn gpu_err(what: &str) -> impl Fn(cudarc::driver::DriverError) -> String + '_ {
    move |e| format!("{what}: {e}")
}

impl CudaExecutor {
    /// Emits, checks the memory the program needs against the GPU's free
    /// memory, loads and allocates; refuses programs with kernels the
    /// backend cannot run yet.
    pub fn new(gpu: Gpu, program: Program) -> Result<CudaExecutor, String> {
        let arch = gpu.arch()?;
        let emitted = emit_program(&program, arch, None).map_err(|e| e.to_string())?;
        let schedule = emitted.schedule(&program)?;
        // Temps share one arena as the memory plan places them; inputs and
        // parameters have their own allocations. Refuse a program that does
        // not fit before loading or allocating any of it (the driver compiles
        // each module as it loads: seconds for a large model).
        let plan = lpac_ir::kernel::plan::plan_memory(&program);
        let own: usize =
            program.buffers.iter().filter(|b| b.kind != BufferKind::Temp).map(|b| b.ty.size_bytes().max(1)).sum();
        let needed = plan.arena_bytes + own;
        let gib = |b: usize| b as f64 / (1u64 << 30) as f64;
        if let Ok((free, _)) = gpu.ctx.mem_get_info()
            && needed > free
        {
            return Err(format!(
                "`{}` needs {:.2} GiB of GPU memory as planned ({:.2} GiB of temporaries, {:.2} GiB of parameters, \
                 optimiser state and inputs), but the GPU has {:.2} GiB free; reduce batch, seq or the model with --set",
                program.name,
                gib(needed),
                gib(plan.arena_bytes),
                gib(own),
                gib(free)
            ));
        }
        let mut functions = Vec::with_capacity(emitted.kernels.len());
        for k in &emitted.kernels {
            let module = gpu.ctx.load_module(Ptx::from_src(k.ptx.clone())).map_err(gpu_err(&k.entry))?;
            functions.push(module.load_function(&k.entry).map_err(gpu_err(&k.entry))?);
        }
        let alloc_err = |e: cudarc::driver::DriverError| format!("allocating {:.2} GiB on the GPU: {e}", gib(needed));
        let arena = gpu.stream.alloc_zeros::<u8>(plan.arena_bytes.max(1)).map_err(alloc_err)?;
        let arena_base = arena.device_ptr(&gpu.stream).0;
        let mut external = Vec::with_capacity(program.buffers.len());
        let mut ptrs = Vec::with_capacity(program.buffers.len());
        let mut ranges = Vec::with_capacity(program.buffers.len());
        for (i, b) in program.buffers.iter().enumerate() {
            if b.kind == BufferKind::Temp {
                let offset = plan.offsets[i];
                ptrs.push(arena_base + offset.unwrap_or(0) as u64);
                ranges.push(offset.map(|o| (o, b.ty.size_bytes())));
                external.push(None);
            } else {
                let slice = gpu.stream.alloc_zeros::<u8>(b.ty.size_bytes().max(1)).map_err(alloc_err)?;
                ptrs.push(slice.device_ptr(&gpu.stream).0);
                ranges.push(None);
                external.push(Some(slice));
            }
        }
        let error_cell = gpu.stream.alloc_zeros::<u32>(1).map_err(gpu_err("allocating the error cell"))?;
        let scratch_bytes = emitted.kernels.iter().map(|k| k.scratch_bytes).max().unwrap_or(0).max(4);
        let scratch = gpu.stream.alloc_zeros::<u8>(scratch_bytes).map_err(gpu_err("allocating the scratch area"))?;
        let (error_ptr, scratch_ptr) = (error_cell.device_ptr(&gpu.stream).0, scratch.device_ptr(&gpu.stream).0);
        let sync_each = std::env::var("LPAC_CUDA_SYNC").is_ok_and(|v| v == "1");
        let profile =
            std::env::var("LPAC_CUDA_PROFILE").is_ok_and(|v| v == "1").then(|| Profile::new(program.kernels.len()));
        Ok(CudaExecutor {
            gpu,
            program: Arc::new(program),
            emitted,
            functions,
            schedule: Arc::new(schedule),
            arena,
            external,
            ptrs,
            ranges,
            error_cell,
            error_ptr,
            _scratch: scratch,
            scratch_ptr,
            sync_each,
            profile,
        })
    }

    pub fn program(&self) -> &Program {
        &self.program
    }

    /// Runs the program: writes inputs and parameters, runs every kernel,
    /// reads every output.
    pub fn run(
        &mut self,
        inputs: &BTreeMap<String, Tensor>,
        params: &BTreeMap<String, Tensor>,
        seed: u64,
        step: u64,
    ) -> Result<BTreeMap<String, Tensor>, String> {
        let program = Arc::clone(&self.program);
        for b in &program.buffers {
            match &b.kind {
                BufferKind::Input(n) => {
                    let t = inputs.get(n).ok_or_else(|| format!("input `{n}` was not supplied"))?;
                    self.write_external(false, n, t)?;
                }
                BufferKind::Param(p) => {
                    let t = params.get(p).ok_or_else(|| format!("parameter `{p}` was not supplied"))?;
                    self.write_external(true, p, t)?;
                }
                BufferKind::Temp => {}
            }
        }
        let names: Vec<String> = self.program.outputs.iter().map(|(n, _)| n.clone()).collect();
        let wanted: Vec<&str> = names.iter().map(String::as_str).collect();
        self.run_kernels(seed, step)?;
        self.read_outputs(&wanted)
    }

    // ---- resident mode: parameters and optimiser state stay on the GPU ----

    /// The buffer of an input (`param == false`) or a parameter.
    fn external_id(&self, param: bool, name: &str) -> Option<usize> {
        self.program.external(param, name).map(BufferId::index)
    }

    /// Copies a tensor into an input or parameter buffer, where it stays.
    pub fn write_external(&mut self, param: bool, name: &str, t: &Tensor) -> Result<(), String> {
        let what = if param { "parameter" } else { "input" };
        let id = self.external_id(param, name).ok_or_else(|| format!("the program has no {what} `{name}`"))?;
        let bytes = to_bytes(&self.program.buffers[id].ty, t).map_err(|e| format!("{what} `{name}`: {e}"))?;
        let dst = self.external[id].as_mut().ok_or_else(|| format!("{what} `{name}` has no buffer of its own"))?;
        self.gpu.stream.memcpy_htod(&bytes, dst).map_err(gpu_err("copying to the GPU"))
    }

    /// The current contents of an input or parameter buffer.
    pub fn read_external(&self, param: bool, name: &str) -> Result<Tensor, String> {
        let what = if param { "parameter" } else { "input" };
        let id = self.external_id(param, name).ok_or_else(|| format!("the program has no {what} `{name}`"))?;
        let bytes = self.bytes_of(id)?;
        Ok(from_bytes(&self.program.buffers[id].ty, &bytes))
    }

    /// Runs with `inputs` written first and every other input and parameter
    /// as it is; returns the outputs named in `wanted`.
    pub fn run_resident(
        &mut self,
        inputs: &BTreeMap<String, Tensor>,
        wanted: &[&str],
        seed: u64,
        step: u64,
    ) -> Result<BTreeMap<String, Tensor>, String> {
        for (name, t) in inputs {
            self.write_external(false, name, t)?;
        }
        self.run_kernels(seed, step)?;
        self.read_outputs(wanted)
    }

    /// Copies outputs of the last run into input or parameter buffers on the
    /// GPU: `(output name, is a parameter, input name or parameter path)`.
    pub fn carry(&mut self, pairs: &[(String, bool, String)]) -> Result<(), String> {
        for (output, param, target) in pairs {
            let (_, src) = self
                .program
                .outputs
                .iter()
                .find(|(n, _)| n == output)
                .ok_or_else(|| format!("no output `{output}`"))?;
            let dst = self.external_id(*param, target).ok_or_else(|| format!("nothing to carry `{output}` into"))?;
            let src = src.index();
            if src == dst {
                continue;
            }
            if self.external[dst].is_none() {
                return Err(format!("`{target}` has no buffer of its own"));
            }
            match (self.ranges[src], self.external[src].is_some()) {
                (Some((offset, len)), _) => {
                    let from = self.arena.slice(offset..offset + len);
                    let to = self.external[dst].as_mut().expect("checked above");
                    self.gpu.stream.memcpy_dtod(&from, to).map_err(gpu_err("copying on the GPU"))?;
                }
                (None, true) => {
                    // An output that is itself an input or parameter: copy
                    // through the host (rare; never in a training step).
                    let bytes = self.bytes_of(src)?;
                    let to = self.external[dst].as_mut().expect("checked above");
                    self.gpu.stream.memcpy_htod(&bytes, to).map_err(gpu_err("copying to the GPU"))?;
                }
                (None, false) => return Err(format!("output `{output}` was never written")),
            }
        }
        Ok(())
    }

    /// A buffer's bytes, copied from the GPU.
    fn bytes_of(&self, id: usize) -> Result<Vec<u8>, String> {
        let copied = match (&self.ranges[id], &self.external[id]) {
            (Some((offset, len)), _) => self.gpu.stream.clone_dtoh(&self.arena.slice(*offset..offset + len)),
            (None, Some(own)) => self.gpu.stream.clone_dtoh(own),
            (None, None) => return Ok(vec![0; self.program.buffers[id].ty.size_bytes()]),
        };
        copied.map_err(gpu_err("copying from the GPU"))
    }

    fn run_kernels(&mut self, seed: u64, step: u64) -> Result<(), String> {
        self.gpu.stream.memcpy_htod(&[0u32], &mut self.error_cell).map_err(gpu_err("clearing the error cell"))?;
        for i in 0..self.program.kernels.len() {
            self.run_kernel(i, seed, step)?;
        }
        if let Some(p) = &mut self.profile {
            p.run_done();
        }
        let flag = self.gpu.stream.clone_dtoh(&self.error_cell).map_err(gpu_err("reading the error cell"))?;
        if flag.first().is_some_and(|&f| f != 0) {
            return Err("a gather or scatter-add index was out of range (a token id beyond the vocabulary?)".into());
        }
        Ok(())
    }

    fn read_outputs(&self, wanted: &[&str]) -> Result<BTreeMap<String, Tensor>, String> {
        let mut out = BTreeMap::new();
        for name in wanted {
            let (_, b) =
                self.program.outputs.iter().find(|(n, _)| n == name).ok_or_else(|| format!("no output `{name}`"))?;
            let bytes = self.bytes_of(b.index())?;
            out.insert(name.to_string(), from_bytes(&self.program.buffer(*b).ty, &bytes));
        }
        Ok(out)
    }

    fn run_kernel(&mut self, i: usize, seed: u64, step: u64) -> Result<(), String> {
        if self.profile.is_none() {
            return self.queue_kernel(i, seed, step);
        }
        let wait = |e| format!("{}: {e}", self.program.kernels[i].name());
        self.gpu.stream.synchronize().map_err(wait)?;
        let start = std::time::Instant::now();
        self.queue_kernel(i, seed, step)?;
        self.gpu.stream.synchronize().map_err(|e| format!("{}: {e}", self.program.kernels[i].name()))?;
        self.profile.as_mut().expect("profiling").record(i, start.elapsed());
        Ok(())
    }

    fn queue_kernel(&mut self, i: usize, seed: u64, step: u64) -> Result<(), String> {
        let schedule = Arc::clone(&self.schedule);
        for s in &schedule[i] {
            match s {
                Step::Product { name, calls } => self.gemm(name, calls)?,
                &Step::Function(f) => self.launch(f, seed, step)?,
            }
        }
        Ok(())
    }

    fn launch(&mut self, f: usize, seed: u64, step: u64) -> Result<(), String> {
        let k = &self.emitted.kernels[f];
        let values: Vec<u64> = k
            .bindings()
            .map(|b| match b {
                Binding::Buffer(id) => self.ptrs[id as usize],
                Binding::StreamKey(key) => lpac_ir::random::dropout_key(seed, step, key),
                Binding::Scratch => self.scratch_ptr,
                Binding::ErrorCell => self.error_ptr,
            })
            .collect();
        let cfg =
            LaunchConfig { grid_dim: (k.grid, 1, 1), block_dim: (k.block, 1, 1), shared_mem_bytes: k.shared_bytes };
        let mut args = self.gpu.stream.launch_builder(&self.functions[f]);
        for v in &values {
            args.arg(v);
        }
        // SAFETY: the arguments match the function's parameters (the
        // emitter's bindings), every buffer has its type's size, and the
        // program was checked by the emitter.
        unsafe { args.launch(cfg) }.map_err(gpu_err(&k.entry))?;
        self.settle(&k.entry)
    }

    /// With `LPAC_CUDA_SYNC=1`, waits for the work just queued and names
    /// `what` if it failed.
    fn settle(&self, what: &str) -> Result<(), String> {
        if self.sync_each {
            self.gpu.stream.synchronize().map_err(|e| format!("{what} failed on the GPU: {e}"))?;
        }
        Ok(())
    }

    /// A product `name` by cuBLAS, the calls [`crate::schedule::blas_calls`] planned
    /// (column-major `cᵀ = bᵀ · aᵀ`, a call per batch left after folding):
    /// `sgemm` in f32, or — bf16 operands and result (mixed precision) —
    /// `cublasGemmEx` with f32 accumulation.
    fn gemm(&self, name: &str, calls: &[BlasCall]) -> Result<(), String> {
        let Some(first) = calls.first() else { return Ok(()) };
        let dtype = |b: BufferId| self.program.buffers[b.index()].ty.dtype;
        let bf16 = match (dtype(first.a.buffer), dtype(first.b.buffer), dtype(first.c.0)) {
            (DType::F32, DType::F32, DType::F32) => false,
            (DType::BF16, DType::BF16, DType::BF16) => true,
            (a, b, c) => {
                return Err(format!(
                    "{name}: a product of {} and {} into {} (cuBLAS is called for f32 or bf16 alike)",
                    a.name(),
                    b.name(),
                    c.name()
                ));
            }
        };
        let size = if bf16 { 2u64 } else { 4 };
        let ptr = |buffer: BufferId, offset: i64| self.ptrs[buffer.index()] + offset as u64 * size;
        let op = |o: &BlasOperand| {
            use blas_sys::cublasOperation_t::{CUBLAS_OP_N, CUBLAS_OP_T};
            if o.transpose { CUBLAS_OP_T } else { CUBLAS_OP_N }
        };
        for call in calls {
            let (m, n, k) = (call.m as i32, call.n as i32, call.k as i32);
            let (lda, ldb, ldc) = (call.a.ld as i32, call.b.ld as i32, call.ldc as i32);
            // Everything runs on one stream, in order: plain addresses do.
            let a_ptr = ptr(call.a.buffer, call.a.offset);
            let b_ptr = ptr(call.b.buffer, call.b.offset);
            let c_ptr = ptr(call.c.0, call.c.1);
            let (alpha, beta) = (1.0f32, 0.0f32);
            let handle = *self.gpu.blas.handle();
            // SAFETY: the pointers address the operands' checked extents.
            let done = unsafe {
                if bf16 {
                    use blas_sys::cublasComputeType_t::CUBLAS_COMPUTE_32F;
                    use blas_sys::cublasGemmAlgo_t::CUBLAS_GEMM_DFALT;
                    use blas_sys::cudaDataType::CUDA_R_16BF;
                    blas::gemm_ex(
                        handle,
                        op(&call.a),
                        op(&call.b),
                        m,
                        n,
                        k,
                        (&alpha as *const f32).cast(),
                        a_ptr as *const std::ffi::c_void,
                        CUDA_R_16BF,
                        lda,
                        b_ptr as *const std::ffi::c_void,
                        CUDA_R_16BF,
                        ldb,
                        (&beta as *const f32).cast(),
                        c_ptr as *mut std::ffi::c_void,
                        CUDA_R_16BF,
                        ldc,
                        CUBLAS_COMPUTE_32F,
                        CUBLAS_GEMM_DFALT,
                    )
                } else {
                    blas::sgemm(
                        handle,
                        op(&call.a),
                        op(&call.b),
                        m,
                        n,
                        k,
                        &alpha,
                        a_ptr as *const f32,
                        lda,
                        b_ptr as *const f32,
                        ldb,
                        &beta,
                        c_ptr as *mut f32,
                        ldc,
                    )
                }
            };
            done.map_err(|e| format!("{name}: cuBLAS: {e:?}"))?;
        }
        self.settle(name)
    }
}

/// A host tensor as the bytes of a buffer of type `ty` (its shape checked;
/// bf16 rounded to nearest even), as the runtime copies it to the GPU.
pub fn to_bytes(ty: &TensorType, t: &Tensor) -> Result<Vec<u8>, String> {
    if t.shape != ty.shape {
        return Err(format!("a tensor of shape {:?} for a buffer of {ty}", t.shape));
    }
    Ok(match ty.dtype {
        DType::F32 => t.to_f64_vec().iter().flat_map(|&x| (x as f32).to_le_bytes()).collect(),
        DType::I32 => t.to_f64_vec().iter().flat_map(|&x| (x as i32).to_le_bytes()).collect(),
        DType::Bool => t.to_f64_vec().iter().map(|&x| u8::from(x != 0.0)).collect(),
        DType::BF16 => t.to_f64_vec().iter().flat_map(|&x| f32_to_bf16(x as f32).to_le_bytes()).collect(),
        other => return Err(format!("buffers of dtype {} are not supported on CUDA yet", other.name())),
    })
}

/// A buffer of type `ty`'s bytes as a host tensor (bf16 widened to f32).
pub fn from_bytes(ty: &TensorType, bytes: &[u8]) -> Tensor {
    let n = ty.numel();
    match ty.dtype {
        DType::I32 => Tensor::from_i32(
            ty.shape.clone(),
            bytes.chunks_exact(4).take(n).map(|c| i32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect(),
        ),
        DType::Bool => Tensor::from_bool(ty.shape.clone(), bytes.iter().take(n).map(|&b| b != 0).collect()),
        DType::BF16 => Tensor::from_f32(
            ty.shape.clone(),
            bytes
                .chunks_exact(2)
                .take(n)
                .map(|c| f32::from_bits(u32::from(u16::from_le_bytes([c[0], c[1]])) << 16))
                .collect(),
        ),
        _ => Tensor::from_f32(
            ty.shape.clone(),
            bytes.chunks_exact(4).take(n).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect(),
        ),
    }
}

/// To the nearest bf16, ties to even (NaN stays NaN): the bits of `x`'s top
/// half, as the GPU's `cvt.rn.bf16.f32`.
fn f32_to_bf16(x: f32) -> u16 {
    let b = x.to_bits();
    if x.is_nan() {
        return ((b >> 16) | 0x40) as u16;
    }
    (b.wrapping_add(0x7FFF + ((b >> 16) & 1)) >> 16) as u16
}

#[cfg(test)]
mod tests {
    use super::*;

    fn round_trip(ty: &TensorType, t: &Tensor) -> Tensor {
        let bytes = to_bytes(ty, t).unwrap();
        assert_eq!(bytes.len(), ty.size_bytes(), "{ty}: one element's bytes each");
        from_bytes(ty, &bytes)
    }

    #[test]
    fn tensors_go_to_buffer_bytes_and_back() {
        let f = TensorType::new(DType::F32, vec![2, 2]);
        let t = Tensor::from_f32(vec![2, 2], vec![1.5, -0.0, 3e-39, f32::MAX]);
        assert_eq!(round_trip(&f, &t).to_f64_vec(), t.to_f64_vec());
        let i = TensorType::new(DType::I32, vec![3]);
        let t = Tensor::from_i32(vec![3], vec![-7, 0, i32::MAX]);
        assert_eq!(round_trip(&i, &t).to_f64_vec(), t.to_f64_vec());
        let b = TensorType::new(DType::Bool, vec![2]);
        let t = Tensor::from_bool(vec![2], vec![true, false]);
        assert_eq!(round_trip(&b, &t).to_f64_vec(), [1.0, 0.0]);
        // A tensor of another shape is refused, not reinterpreted.
        let err = to_bytes(&f, &Tensor::from_f32(vec![4], vec![0.0; 4])).unwrap_err();
        assert!(err.contains("shape [4]"), "{err}");
    }

    #[test]
    fn bf16_buffers_round_to_nearest_even() {
        let ty = TensorType::new(DType::BF16, vec![5]);
        let ulp = 2f32.powi(-7); // bf16's spacing at 1
        let t = Tensor::from_f32(vec![5], vec![1.0 + ulp / 2.0, 1.0 + 1.5 * ulp, 1.0 + ulp * 0.75, -2.0, f32::NAN]);
        let back = round_trip(&ty, &t).to_f64_vec();
        // Ties go to the even neighbour (1.0, then 1 + 2 ulp); otherwise the nearest.
        assert_eq!(&back[..4], [1.0, f64::from(1.0 + 2.0 * ulp), f64::from(1.0 + ulp), -2.0]);
        assert!(back[4].is_nan(), "NaN stays NaN");
    }
}
