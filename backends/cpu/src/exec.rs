//! The executor: runs a checked kernel program on planned memory.
//!
//! # Memory
//! Built once per program: temps live in one 64-byte aligned arena at the
//! offsets of the [`MemoryPlan`]; each input and parameter buffer has its own
//! aligned allocation, filled from the caller's tensors at every run (so the
//! caller keeps ownership of its tensors and f64-held data is rounded on the
//! way in). Outputs are copied out as tensors.
//!
//! # Kernels
//! - Loop kernels run their compiled function, or, where there is none, the
//!   [reference evaluator](crate::reference) (which has the same range
//!   contract).
//! - Gemm kernels go to the gemm crate ([`crate::gemm`]); gather and
//!   scatter_add to [`crate::movement`].
//!
//! # Threads
//! Loop kernels are split into contiguous ranges of their flattened domain,
//! one per thread, on rayon's pool (whose threads persist, so a kernel launch
//! costs no thread creation); a kernel with fewer than
//! [`Executor::parallel_min`] elements of work (domain × reduce, default
//! 16K) runs on the calling thread. `threads` defaults to
//! `std::thread::available_parallelism()`. Kernels run one after another.
//!
//! # Compiled kernels
//! A compiled loop kernel is `extern "C" fn(buffers, begin, end, seed, step)`:
//! `buffers[i]` is the base of `BufferId(i)` and the function computes
//! elements `begin..end` of the row-major domain. Whoever makes the function
//! pointer (the code generator) promises that it implements its kernel and
//! stays inside the buffers; the executor checks the program
//! ([`check_program`]) so that every load of a well-formed kernel is in
//! bounds, and never hands a compiled kernel a range outside its domain.

use std::collections::BTreeMap;

use lpac_ir::interp::Tensor;
use lpac_ir::kernel::{BufferId, Kernel, LoopKernel, Program};
use lpac_ir::types::TensorType;
use rayon::prelude::*;

use crate::check::check_program;
use crate::memory::{AlignedBuf, BufferTable, SharedTable, supplied, write_tensor};
use crate::{gemm, movement, reference};
use lpac_ir::kernel::plan::{MemoryPlan, plan_memory};

/// A compiled loop kernel: `(buffers, begin, end, seed, step)`.
pub type LoopFn = extern "C" fn(*const *mut u8, u64, u64, u64, u64);

/// Below this much work (domain × reduce elements) a loop kernel runs on one
/// thread.
pub const PARALLEL_MIN: usize = 16 * 1024;

pub struct Executor {
    program: Program,
    /// Per kernel, the compiled function of each loop body (one for a loop
    /// kernel, one per stage of a rows kernel), or none (reference).
    compiled: Vec<Vec<LoopFn>>,
    plan: MemoryPlan,
    arena: AlignedBuf,
    /// Own storage of each input and parameter buffer.
    external: Vec<Option<AlignedBuf>>,
    types: Vec<TensorType>,
    threads: usize,
    parallel_min: usize,
}

/// The `buffers` pointer handed to compiled kernels on worker threads.
#[derive(Clone, Copy)]
struct TablePtr(*const *mut u8);
// SAFETY: the table it points to outlives the (scoped) parallel loop, and
// compiled kernels write disjoint elements for disjoint ranges.
unsafe impl Send for TablePtr {}
unsafe impl Sync for TablePtr {}

impl Executor {
    /// An executor that runs every loop kernel on the reference evaluator.
    pub fn reference(program: Program) -> Result<Executor, String> {
        Executor::new(program, Vec::new())
    }

    /// Checks the program, plans its memory and allocates it. `compiled`
    /// holds, for each kernel (by position), the compiled functions of its
    /// loop bodies — one for a loop kernel, one per stage of a rows kernel —
    /// or none (reference evaluation); it may also be empty (no compiled
    /// kernels).
    pub fn new(program: Program, compiled: Vec<Vec<LoopFn>>) -> Result<Executor, String> {
        check_program(&program)?;
        let compiled = if compiled.is_empty() { vec![Vec::new(); program.kernels.len()] } else { compiled };
        if compiled.len() != program.kernels.len() {
            return Err(format!("{} compiled functions given for {} kernels", compiled.len(), program.kernels.len()));
        }
        for (i, (k, f)) in program.kernels.iter().zip(&compiled).enumerate() {
            let bodies = match k {
                Kernel::Loop(_) => 1,
                Kernel::Rows(r) => r.loops().count(),
                Kernel::Multi(m) => m.members.len(),
                _ => 0,
            };
            if !f.is_empty() && f.len() != bodies {
                return Err(format!(
                    "kernel k{i} {:?} has {bodies} loop bodies but was given {} compiled functions",
                    k.name(),
                    f.len()
                ));
            }
        }
        let plan = plan_memory(&program);
        let arena = AlignedBuf::zeroed(plan.arena_bytes);
        let external = program
            .buffers
            .iter()
            .map(|b| match b.kind {
                lpac_ir::kernel::BufferKind::Temp => None,
                _ => Some(AlignedBuf::zeroed(b.ty.size_bytes())),
            })
            .collect();
        let types = program.buffers.iter().map(|b| b.ty.clone()).collect();
        let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
        Ok(Executor { program, compiled, plan, arena, external, types, threads, parallel_min: PARALLEL_MIN })
    }

    pub fn program(&self) -> &Program {
        &self.program
    }

    pub fn plan(&self) -> &MemoryPlan {
        &self.plan
    }

    /// The arena's size: temps' memory at its planned peak.
    pub fn planned_peak_bytes(&self) -> usize {
        self.plan.arena_bytes
    }

    /// The temps' memory without reuse.
    pub fn sum_bytes(&self) -> usize {
        self.plan.sum_bytes
    }

    /// How many loop kernels run compiled code.
    pub fn compiled_count(&self) -> usize {
        self.compiled.iter().map(Vec::len).sum()
    }

    pub fn threads(&self) -> usize {
        self.threads
    }

    /// Sets the number of parts work is split into (at least 1).
    pub fn set_threads(&mut self, threads: usize) {
        self.threads = threads.max(1);
    }

    pub fn parallel_min(&self) -> usize {
        self.parallel_min
    }

    /// Sets the work below which a loop kernel runs on one thread.
    pub fn set_parallel_min(&mut self, elements: usize) {
        self.parallel_min = elements;
    }

    /// Runs the program once: checks and copies in the inputs and
    /// parameters (extra names are ignored), runs every kernel in order and
    /// returns the outputs by name. Errors name the input, or the kernel
    /// (`kernel k3 "gather": index 57 at position 3 is out of range 0..50`).
    pub fn run(
        &mut self,
        inputs: &BTreeMap<String, Tensor>,
        params: &BTreeMap<String, Tensor>,
        seed: u64,
        step: u64,
    ) -> Result<BTreeMap<String, Tensor>, String> {
        let fed = supplied(&self.program, inputs, params)?;
        for (i, tensor) in fed.iter().enumerate() {
            if let (Some(tensor), Some(buf)) = (tensor, self.external[i].as_mut()) {
                // SAFETY: the buffer has exactly the type's size, is aligned,
                // and `supplied` checked the tensor against the type.
                unsafe { write_tensor(buf.as_mut_ptr(), &self.types[i], tensor) };
            }
        }
        let table = self.table();
        self.run_kernels(&table, seed, step)?;
        Ok(self.program.outputs.iter().map(|(name, b)| (name.clone(), table.read_tensor(*b))).collect())
    }

    /// Every kernel in order; with `LPAC_PROFILE` set, times each one and
    /// reports after the run.
    fn run_kernels(&self, table: &BufferTable, seed: u64, step: u64) -> Result<(), String> {
        let profile = std::env::var_os("LPAC_PROFILE").is_some();
        let mut times = Vec::new();
        for (i, kernel) in self.program.kernels.iter().enumerate() {
            let started = std::time::Instant::now();
            self.run_kernel(table, kernel, &self.compiled[i], seed, step)
                .map_err(|e| format!("kernel k{i} {:?}: {e}", kernel.name()))?;
            if profile {
                times.push((started.elapsed().as_secs_f64(), i));
            }
        }
        if profile {
            report_profile(&self.program, &mut times);
        }
        Ok(())
    }

    // ---- resident mode -------------------------------------------------
    //
    // Training keeps the parameters and the optimiser state in the executor
    // between runs instead of copying them in and out every step: write them
    // once, run with only the batch and the hyperparameters, then `carry` the
    // step's new values into the buffers they replace.

    /// The external buffer of an input (`param == false`) or a parameter.
    fn external_id(&self, param: bool, name: &str) -> Option<usize> {
        self.program.external(param, name).map(BufferId::index)
    }

    /// Writes a tensor into an input or parameter buffer, where it stays
    /// until written again.
    pub fn write_external(&mut self, param: bool, name: &str, tensor: &Tensor) -> Result<(), String> {
        let what = if param { "parameter" } else { "input" };
        let id = self.external_id(param, name).ok_or_else(|| format!("the program has no {what} `{name}`"))?;
        crate::memory::check_tensor(what, name, &self.types[id], tensor)?;
        let buf = self.external[id].as_mut().expect("inputs and parameters have their own buffers");
        // SAFETY: the buffer has exactly the type's size and alignment, and
        // the tensor was checked against the type.
        unsafe { write_tensor(buf.as_mut_ptr(), &self.types[id], tensor) };
        Ok(())
    }

    /// The current contents of an input or parameter buffer.
    pub fn read_external(&self, param: bool, name: &str) -> Result<Tensor, String> {
        let what = if param { "parameter" } else { "input" };
        let id = self.external_id(param, name).ok_or_else(|| format!("the program has no {what} `{name}`"))?;
        Ok(self.table().read_tensor(lpac_ir::kernel::BufferId(id as u32)))
    }

    /// Runs the program with `inputs` written first and every other input
    /// and parameter as it is; returns the outputs named in `wanted`.
    pub fn run_resident(
        &mut self,
        inputs: &BTreeMap<String, Tensor>,
        wanted: &[&str],
        seed: u64,
        step: u64,
    ) -> Result<BTreeMap<String, Tensor>, String> {
        for (name, tensor) in inputs {
            self.write_external(false, name, tensor)?;
        }
        let table = self.table();
        self.run_kernels(&table, seed, step)?;
        let mut out = BTreeMap::new();
        for name in wanted {
            let (_, b) =
                self.program.outputs.iter().find(|(n, _)| n == name).ok_or_else(|| format!("no output `{name}`"))?;
            out.insert(name.to_string(), table.read_tensor(*b));
        }
        Ok(out)
    }

    /// Copies outputs of the last run into input or parameter buffers:
    /// `(output name, is a parameter, input name or parameter path)`.
    pub fn carry(&mut self, pairs: &[(String, bool, String)]) -> Result<(), String> {
        for (output, param, target) in pairs {
            let (_, src) = self
                .program
                .outputs
                .iter()
                .find(|(n, _)| n == output)
                .ok_or_else(|| format!("no output `{output}`"))?;
            let src = src.index();
            let dst = self.external_id(*param, target).ok_or_else(|| format!("no input or parameter `{target}`"))?;
            if self.types[src] != self.types[dst] {
                return Err(format!("output `{output}` is {}, `{target}` is {}", self.types[src], self.types[dst]));
            }
            let bytes = self.types[dst].size_bytes();
            let from: *const u8 = {
                let table = self.table();
                // SAFETY: `src` is a buffer id of this program, below the table's length.
                unsafe { *table.as_ptr().add(src) }
            };
            let to = self.external[dst].as_mut().expect("inputs and parameters have their own buffers").as_mut_ptr();
            if std::ptr::eq(from, to.cast_const()) {
                continue;
            }
            // SAFETY: both buffers are valid for `bytes` bytes (same type)
            // and distinct allocations or arena regions (an external buffer
            // never lies in the arena).
            unsafe { std::ptr::copy_nonoverlapping(from, to, bytes) };
        }
        Ok(())
    }

    /// The pointer table over the arena and the external buffers. Unplaced
    /// temps (used by no kernel) get a dangling, never-dereferenced pointer.
    fn table(&self) -> BufferTable<'_> {
        let base = self.arena.as_ptr().cast_mut();
        let ptrs = (0..self.types.len())
            .map(|i| match (&self.external[i], self.plan.offsets[i]) {
                (Some(buf), _) => buf.as_ptr().cast_mut(),
                // SAFETY (of the add): offsets lie inside the arena.
                (None, Some(offset)) => unsafe { base.add(offset) },
                (None, None) => crate::memory::ALIGN as *mut u8,
            })
            .collect();
        // SAFETY: every pointer is valid for its buffer's size, aligned (the
        // plan places temps at multiples of 64 in a 64-aligned arena), and
        // buffers that share memory are never live in the same kernel (the
        // plan's lifetimes are inclusive). The executor's `&self` borrow
        // lives as long as the table; `run` takes `&mut self`, so nothing
        // else touches the memory meanwhile. Unplaced temps are touched by
        // no kernel and are not outputs.
        unsafe { BufferTable::from_raw(ptrs, &self.types) }
    }

    fn run_kernel(
        &self,
        table: &BufferTable,
        kernel: &Kernel,
        compiled: &[LoopFn],
        seed: u64,
        step: u64,
    ) -> Result<(), String> {
        match kernel {
            Kernel::Loop(k) => self.run_loop(table, k, compiled.first().copied(), seed, step),
            Kernel::Rows(r) => self.run_rows(table, r, compiled, seed, step),
            Kernel::Multi(m) => self.run_multi(table, m, compiled, seed, step),
            Kernel::Attention(a) => crate::attention::run_attention(a, table, self.threads),
            Kernel::Gemm(g) => gemm::run_gemm(g, table, self.threads),
            Kernel::Gather { table: t, indices, out, .. } => movement::gather(table, *t, *indices, *out, self.threads),
            Kernel::ScatterAdd { indices, src, out, .. } => {
                movement::scatter_add(table, *indices, *src, *out, self.threads)
            }
        }
    }

    fn run_loop(
        &self,
        table: &BufferTable,
        k: &LoopKernel,
        compiled: Option<LoopFn>,
        seed: u64,
        step: u64,
    ) -> Result<(), String> {
        let numel: usize = k.domain.iter().product();
        let work = numel.saturating_mul(k.reduce.iter().product::<usize>().max(1));
        let parts = if work < self.parallel_min { 1 } else { self.threads.min(numel).max(1) };
        let ranges = split(numel, parts);
        match compiled {
            Some(f) => {
                let ptr = TablePtr(table.as_ptr());
                let call = move |(b, e): (usize, usize)| {
                    let ptr = ptr;
                    f(ptr.0, b as u64, e as u64, seed, step)
                };
                if ranges.len() == 1 {
                    call(ranges[0]);
                } else {
                    ranges.into_par_iter().for_each(call);
                }
                Ok(())
            }
            None => {
                if ranges.len() == 1 {
                    let (b, e) = ranges[0];
                    return reference::run_loop_range(k, table, b as u64, e as u64, seed, step);
                }
                let shared = SharedTable(table);
                let results: Vec<Result<(), String>> = ranges
                    .into_par_iter()
                    .map(move |(b, e)| {
                        let shared = shared;
                        reference::run_loop_range(k, shared.0, b as u64, e as u64, seed, step)
                    })
                    .collect();
                results.into_iter().collect()
            }
        }
    }
}

/// A chunk of rows of a rows kernel aims to touch about this many elements
/// per stage, so that it stays in the L1/L2 caches between stages.
const ROW_CHUNK_ELEMENTS: usize = 4096;

/// Rows per chunk of a rows kernel with a matrix product: one product call
/// per chunk costs no more than one call over all rows at 256 (measured:
/// `docs/backends.md`), and a chunk of a 256-wide result (256 KiB) stays in
/// L2 for the stages after it.
const GEMM_CHUNK_ROWS: usize = 256;

impl Executor {
    /// A rows kernel: its rows split across threads; each thread runs every
    /// stage on a chunk of its rows before moving to the next chunk.
    fn run_rows(
        &self,
        table: &BufferTable,
        r: &lpac_ir::kernel::RowsKernel,
        compiled: &[LoopFn],
        seed: u64,
        step: u64,
    ) -> Result<(), String> {
        use lpac_ir::kernel::RowStage;
        let nrows: usize = r.rows.iter().product();
        let per_row: Vec<usize> = r.stages.iter().map(|s| r.row_len(s)).collect();
        // Loop stage s runs compiled function fn_index[s].
        let fn_index: Vec<Option<usize>> = r
            .stages
            .iter()
            .scan(0, |next, s| {
                Some(matches!(s, RowStage::Loop(_)).then(|| {
                    *next += 1;
                    *next - 1
                }))
            })
            .collect();
        let widest = r
            .stages
            .iter()
            .map(|s| match s {
                RowStage::Loop(l) => r.row_len(s).saturating_mul(l.reduce.iter().product::<usize>().max(1)),
                RowStage::Gemm(g) => g.n.saturating_mul(g.k),
            })
            .max()
            .unwrap_or(1)
            .max(1);
        let has_gemm = r.stages.iter().any(|s| matches!(s, RowStage::Gemm(_)));
        let chunk = if has_gemm { GEMM_CHUNK_ROWS } else { (ROW_CHUNK_ELEMENTS / widest).max(1) };
        let work = nrows.saturating_mul(widest).saturating_mul(r.stages.len());
        let parts = if work < self.parallel_min { 1 } else { self.threads.min(nrows).max(1) };
        let ptr = TablePtr(table.as_ptr());
        let shared = SharedTable(table);
        let run_range = move |(begin, end): (usize, usize)| -> Result<(), String> {
            let (ptr, shared) = (ptr, shared);
            let mut row = begin;
            while row < end {
                let next = (row + chunk).min(end);
                for (s, stage) in r.stages.iter().enumerate() {
                    let (b, e) = ((row * per_row[s]) as u64, (next * per_row[s]) as u64);
                    let compiled = fn_index[s].and_then(|i| compiled.get(i));
                    match (stage, compiled) {
                        (RowStage::Gemm(g), _) => {
                            gemm::run_rows(g, shared.0, row, next).map_err(|e| format!("stage {s}: {e}"))?
                        }
                        (RowStage::Loop(_), Some(f)) => f(ptr.0, b, e, seed, step),
                        (RowStage::Loop(l), None) => reference::run_loop_range(l, shared.0, b, e, seed, step)
                            .map_err(|e| format!("stage {s}: {e}"))?,
                    }
                }
                row = next;
            }
            Ok(())
        };
        let ranges = split(nrows, parts);
        if ranges.len() == 1 {
            return run_range(ranges[0]);
        }
        let results: Vec<Result<(), String>> = ranges.into_par_iter().map(run_range).collect();
        results.into_iter().collect()
    }
}

impl Executor {
    /// A multi kernel: every member's domain cut into pieces of about equal
    /// work (a small member is one piece), all pieces in one parallel loop.
    fn run_multi(
        &self,
        table: &BufferTable,
        m: &lpac_ir::kernel::MultiKernel,
        compiled: &[LoopFn],
        seed: u64,
        step: u64,
    ) -> Result<(), String> {
        let work = |k: &LoopKernel| {
            let n: usize = k.domain.iter().product();
            (n, n.saturating_mul(k.reduce.iter().product::<usize>().max(1)))
        };
        let total: usize = m.members.iter().map(|k| work(k).1).sum();
        let piece = (total / (self.threads * 4)).max(self.parallel_min);
        let mut tasks: Vec<(usize, usize, usize)> = Vec::new();
        for (i, k) in m.members.iter().enumerate() {
            let (n, w) = work(k);
            let parts = w.div_ceil(piece).clamp(1, n.max(1));
            tasks.extend(split(n, parts).into_iter().map(|(b, e)| (i, b, e)));
        }
        let ptr = TablePtr(table.as_ptr());
        let shared = SharedTable(table);
        let run = move |&(i, b, e): &(usize, usize, usize)| -> Result<(), String> {
            let (ptr, shared) = (ptr, shared);
            match compiled.get(i) {
                Some(f) => {
                    f(ptr.0, b as u64, e as u64, seed, step);
                    Ok(())
                }
                None => reference::run_loop_range(&m.members[i], shared.0, b as u64, e as u64, seed, step)
                    .map_err(|err| format!("member {i}: {err}")),
            }
        };
        if self.threads <= 1 || total < self.parallel_min {
            return tasks.iter().try_for_each(run);
        }
        let results: Vec<Result<(), String>> = tasks.par_iter().map(run).collect();
        results.into_iter().collect()
    }
}

/// `0..n` in `parts` contiguous ranges of nearly equal length (none empty
/// unless `n` is 0).
pub fn split(n: usize, parts: usize) -> Vec<(usize, usize)> {
    let parts = parts.clamp(1, n.max(1));
    let (base, extra) = (n / parts, n % parts);
    let mut ranges = Vec::with_capacity(parts);
    let mut start = 0;
    for p in 0..parts {
        let len = base + usize::from(p < extra);
        ranges.push((start, start + len));
        start += len;
    }
    ranges
}

/// `LPAC_PROFILE=1`: time per kind of kernel and the slowest kernels, on
/// standard error, after every run.
fn report_profile(program: &Program, times: &mut [(f64, usize)]) {
    let total: f64 = times.iter().map(|t| t.0).sum();
    let mut by_kind: BTreeMap<&str, f64> = BTreeMap::new();
    for (t, i) in times.iter() {
        let kind = program.kernels[*i].kind();
        *by_kind.entry(kind).or_default() += t;
    }
    eprintln!("profile: {:.1} ms in {} kernels", total * 1e3, times.len());
    for (kind, t) in by_kind {
        eprintln!("  {kind:<12} {:>8.1} ms {:>5.1}%", t * 1e3, 100.0 * t / total);
    }
    times.sort_by(|a, b| b.0.total_cmp(&a.0));
    let top = std::env::var("LPAC_PROFILE_TOP").ok().and_then(|v| v.parse().ok()).unwrap_or(12);
    for (t, i) in times.iter().take(top) {
        eprintln!("  k{i:<4} {:>8.2} ms  {}", t * 1e3, program.kernels[*i].name());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use lpac_ir::kernel::{BufferId, BufferKind, Expr, ExprId, IndexMap, Typed};
    use lpac_ir::op::BinaryOp;
    use lpac_ir::types::DType;

    #[test]
    fn splits_cover_the_range() {
        assert_eq!(split(10, 3), vec![(0, 4), (4, 7), (7, 10)]);
        assert_eq!(split(2, 8), vec![(0, 1), (1, 2)]);
        assert_eq!(split(0, 4), vec![(0, 0)]);
        assert_eq!(split(5, 1), vec![(0, 5)]);
    }

    /// y = x * 2 + 1 over n elements.
    fn affine_program(n: usize) -> Program {
        let mut p = Program { name: "affine".into(), ..Program::default() };
        let x = p.add_buffer(TensorType::new(DType::F32, vec![n]), BufferKind::Input("x".into()));
        let y = p.add_buffer(TensorType::new(DType::F32, vec![n]), BufferKind::Temp);
        let t = |expr| Typed { expr, dtype: DType::F32 };
        p.kernels.push(Kernel::Loop(LoopKernel {
            name: "affine".into(),
            domain: vec![n],
            reduce: vec![],
            exprs: vec![
                t(Expr::Load { buffer: x, index: IndexMap { offset: 0, strides: vec![1] } }),
                t(Expr::Const(2.0)),
                t(Expr::Binary(BinaryOp::Mul, ExprId(0), ExprId(1))),
                t(Expr::Const(1.0)),
                t(Expr::Binary(BinaryOp::Add, ExprId(2), ExprId(3))),
            ],
            reduction: None,
            outputs: vec![(y, ExprId(4))],
            nodes: vec![],
        }));
        p.outputs.push(("y".into(), y));
        p
    }

    /// A hand-written "compiled" kernel for `affine_program`, with the
    /// compiled ABI.
    extern "C" fn affine_kernel(buffers: *const *mut u8, begin: u64, end: u64, _seed: u64, _step: u64) {
        // SAFETY: the executor passes the table of `affine_program`, whose
        // buffers 0 and 1 hold n f32s, and a range inside 0..n.
        unsafe {
            let x = (*buffers).cast::<f32>();
            let y = (*buffers.add(1)).cast::<f32>();
            for i in begin as usize..end as usize {
                *y.add(i) = *x.add(i) * 2.0 + 1.0;
            }
        }
    }

    fn inputs(n: usize) -> BTreeMap<String, Tensor> {
        BTreeMap::from([("x".to_string(), Tensor::from_f32(vec![n], (0..n).map(|i| i as f32).collect()))])
    }

    #[test]
    fn compiled_and_reference_kernels_agree_on_every_thread_count() {
        let n = 40_000;
        let expected: Vec<f32> = (0..n).map(|i| i as f32 * 2.0 + 1.0).collect();
        for threads in [1, 2, 3] {
            for compiled in [vec![vec![affine_kernel as LoopFn]], vec![]] {
                let mut ex = Executor::new(affine_program(n), compiled).unwrap();
                ex.set_threads(threads);
                let out = ex.run(&inputs(n), &BTreeMap::new(), 0, 0).unwrap();
                assert_eq!(out["y"].as_f32().unwrap(), expected.as_slice());
            }
        }
    }

    #[test]
    fn construction_errors() {
        let p = affine_program(4);
        let e = Executor::new(p.clone(), vec![vec![], vec![]]).err().unwrap();
        assert_eq!(e, "2 compiled functions given for 1 kernels");
        let mut bad = p;
        bad.outputs.push(("x".into(), BufferId(7)));
        assert!(Executor::reference(bad).is_err());
    }

    #[test]
    fn inputs_are_checked_by_name() {
        let mut ex = Executor::reference(affine_program(4)).unwrap();
        let e = ex.run(&BTreeMap::new(), &BTreeMap::new(), 0, 0).unwrap_err();
        assert_eq!(e, "input `x` was not provided");
        let wrong = BTreeMap::from([("x".to_string(), Tensor::from_f32(vec![5], vec![0.0; 5]))]);
        let e = ex.run(&wrong, &BTreeMap::new(), 0, 0).unwrap_err();
        assert_eq!(e, "input `x`: expected f32[4], got f32[5]");
        // Runs can repeat on the same executor.
        for _ in 0..2 {
            let out = ex.run(&inputs(4), &BTreeMap::new(), 0, 0).unwrap();
            assert_eq!(out["y"].as_f32().unwrap(), &[1.0, 3.0, 5.0, 7.0]);
        }
    }
}
