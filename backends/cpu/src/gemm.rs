//! Gemm kernels through the gemm crate, with the operands' element strides
//! passed straight through (transposed, strided and broadcast operands are
//! never copied).
//!
//! # Threads
//! The executor runs kernels one after another and does not split a gemm
//! itself; this module decides:
//! - one big product per batch (`m·n·k` ≥ [`SMALL_PRODUCT`]) or a single
//!   batch: the batches run in order and each call is parallelised inside
//!   the gemm crate (`Parallelism::Rayon(threads)`);
//! - many small products (attention's per-head `T×T` scores): the batches
//!   are split across threads (rayon) and each call runs single-threaded
//!   (`Parallelism::None`), which avoids the crate's per-call threading
//!   overhead on small matrices.
//!
//! With `threads <= 1` everything runs on the calling thread.
//!
//! The gemm crate blocks and vectorises (with FMA where the host has it), so
//! results differ from the reference's in-order sums by rounding only.

use gemm::Parallelism;
use lpac_ir::kernel::{BufferId, GemmKernel, Operand};
use lpac_ir::types::DType;
use rayon::prelude::*;

use crate::check::affine_range;
use crate::memory::BufferTable;

/// Below this many multiply-adds per batch, batches are what run in parallel.
pub const SMALL_PRODUCT: usize = 1 << 20;

/// Raw operand pointers shared by the worker threads.
#[derive(Clone, Copy)]
struct Ptrs {
    a: *const f32,
    b: *const f32,
    c: *mut f32,
}
// SAFETY: the pointers are only used inside `run_gemm`, whose threads read
// the operands and write disjoint `m·n` blocks of `c`, which (checked) is not
// an operand buffer.
unsafe impl Send for Ptrs {}
unsafe impl Sync for Ptrs {}

impl Ptrs {
    // Methods, not fields, in the closures below, so that closures capture
    // the whole (Sync) struct rather than its raw-pointer fields.
    fn get(&self) -> (*const f32, *const f32, *mut f32) {
        (self.a, self.b, self.c)
    }
}

fn f32_buffer(table: &BufferTable, b: BufferId) -> Result<usize, String> {
    match table.ty(b) {
        Some(ty) if ty.dtype == DType::F32 => Ok(ty.numel()),
        Some(ty) => Err(format!("gemm operand b{} is {ty}; only f32 is supported", b.0)),
        None => Err(format!("gemm operand b{} does not exist", b.0)),
    }
}

fn check_operand(g: &GemmKernel, o: &Operand, len: usize, rows: usize, cols: usize) -> Result<(), String> {
    if o.batch_strides.len() != g.batch.len() {
        return Err(format!("gemm operand b{} needs {} batch strides", o.buffer.0, g.batch.len()));
    }
    let terms = o.batch_strides.iter().copied().zip(g.batch.iter().copied());
    match affine_range(o.offset, terms.chain([(o.row_stride, rows), (o.col_stride, cols)])) {
        Some((lo, hi)) if lo < 0 || hi >= len as i128 => {
            Err(format!("gemm operand b{} addresses elements {lo}..={hi}, outside 0..{len}", o.buffer.0))
        }
        _ => Ok(()),
    }
}

/// The element offset of each batch's matrix in an operand, row-major over
/// the batch axes.
pub(crate) fn batch_offsets(batch: &[usize], o: &Operand) -> Vec<isize> {
    let count: usize = batch.iter().product();
    let mut offsets = Vec::with_capacity(count);
    let mut index = vec![0usize; batch.len()];
    for _ in 0..count {
        let off = o.offset + index.iter().zip(&o.batch_strides).map(|(&i, &s)| i as i64 * s).sum::<i64>();
        offsets.push(off as isize);
        for v in (0..index.len()).rev() {
            index[v] += 1;
            if index[v] < batch[v] {
                break;
            }
            index[v] = 0;
        }
    }
    offsets
}

/// Runs a gemm kernel on the table's buffers (see the module docs for the
/// threading). Checks dtypes, `c`'s size and that every addressed operand
/// element exists, so a malformed kernel is an error, never a wild access.
pub fn run_gemm(g: &GemmKernel, table: &BufferTable, threads: usize) -> Result<(), String> {
    let (a_len, b_len, c_len) =
        (f32_buffer(table, g.a.buffer)?, f32_buffer(table, g.b.buffer)?, f32_buffer(table, g.c)?);
    if g.c == g.a.buffer || g.c == g.b.buffer {
        return Err(format!("gemm writes b{}, which it also reads", g.c.0));
    }
    let batches: usize = g.batch.iter().product();
    let (m, k, n) = (g.m, g.k, g.n);
    if batches * m * n != c_len {
        return Err(format!("gemm output b{} has {c_len} elements, not {}", g.c.0, batches * m * n));
    }
    check_operand(g, &g.a, a_len, m, k)?;
    check_operand(g, &g.b, b_len, k, n)?;
    let ptrs = Ptrs {
        a: table.ptr(g.a.buffer).cast::<f32>(),
        b: table.ptr(g.b.buffer).cast::<f32>(),
        c: table.ptr(g.c).cast::<f32>(),
    };
    if c_len == 0 {
        return Ok(());
    }
    if k == 0 {
        // SAFETY: `c` holds c_len f32 elements.
        unsafe { std::ptr::write_bytes(ptrs.c, 0, c_len) };
        return Ok(());
    }
    let folded = g.folded();
    let g = &folded;
    let (m, batches) = (g.m, g.batch.iter().product::<usize>());
    let a_offsets = batch_offsets(&g.batch, &g.a);
    let b_offsets = batch_offsets(&g.batch, &g.b);
    let one = |batch: usize, parallelism: Parallelism| {
        let (a, b, c) = ptrs.get();
        // SAFETY: every element the call addresses was checked to lie inside
        // its buffer (check_operand; c is contiguous and sized above); `c`
        // does not alias `a` or `b`, and each batch writes its own block.
        unsafe {
            gemm::gemm(
                m,
                n,
                k,
                c.add(batch * m * n),
                1,
                n as isize,
                false,
                a.offset(a_offsets[batch]),
                g.a.col_stride as isize,
                g.a.row_stride as isize,
                b.offset(b_offsets[batch]),
                g.b.col_stride as isize,
                g.b.row_stride as isize,
                0.0f32,
                1.0f32,
                false,
                false,
                false,
                parallelism,
            );
        }
    };
    if threads <= 1 {
        (0..batches).for_each(|b| one(b, Parallelism::None));
    } else if batches >= 2 * threads || (batches > 1 && m * n * k < SMALL_PRODUCT) {
        (0..batches)
            .into_par_iter()
            .with_min_len(batches.div_ceil(threads * 4))
            .for_each(|b| one(b, Parallelism::None));
    } else {
        (0..batches).for_each(|b| one(b, Parallelism::Rayon(threads)));
    }
    Ok(())
}

/// Rows `r0..r1` of an unbatched product whose rows are a rows kernel's
/// rows, on the calling thread (the rows kernel spreads its chunks over the
/// threads). The program was checked (`check_gemm`), so every addressed
/// element exists and `c` does not overlap the operands.
pub(crate) fn run_rows(g: &GemmKernel, table: &BufferTable, r0: usize, r1: usize) -> Result<(), String> {
    f32_buffer(table, g.a.buffer)?;
    f32_buffer(table, g.b.buffer)?;
    f32_buffer(table, g.c)?;
    if !g.batch.is_empty() || r1 > g.m {
        return Err(format!("rows {r0}..{r1} of a product over {} rows with batch {:?}", g.m, g.batch));
    }
    let (a, b, c) =
        (table.ptr(g.a.buffer).cast::<f32>(), table.ptr(g.b.buffer).cast::<f32>(), table.ptr(g.c).cast::<f32>());
    if r1 <= r0 || g.n == 0 {
        return Ok(());
    }
    // SAFETY: rows r0..r1 of c are inside it ([m, n], checked); a's rows and
    // all of b were checked to lie inside their buffers.
    unsafe {
        let c = c.add(r0 * g.n);
        if g.k == 0 {
            std::ptr::write_bytes(c, 0, (r1 - r0) * g.n);
            return Ok(());
        }
        gemm::gemm(
            r1 - r0,
            g.n,
            g.k,
            c,
            1,
            g.n as isize,
            false,
            a.offset(g.a.offset as isize + r0 as isize * g.a.row_stride as isize),
            g.a.col_stride as isize,
            g.a.row_stride as isize,
            b.offset(g.b.offset as isize),
            g.b.col_stride as isize,
            g.b.row_stride as isize,
            0.0f32,
            1.0f32,
            false,
            false,
            false,
            Parallelism::None,
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::memory::HostMemory;
    use crate::reference;
    use lpac_ir::interp::Tensor;
    use lpac_ir::kernel::{BufferKind, Program};
    use lpac_ir::random::uniform;
    use lpac_ir::types::TensorType;

    struct Case {
        batch: Vec<usize>,
        m: usize,
        k: usize,
        n: usize,
        a: Operand,
        b: Operand,
        a_len: usize,
        b_len: usize,
    }

    fn op(offset: i64, batch_strides: &[i64], row_stride: i64, col_stride: i64) -> Operand {
        Operand { buffer: BufferId(0), offset, batch_strides: batch_strides.to_vec(), row_stride, col_stride }
    }

    /// Runs the case through the gemm crate and the reference triple loop
    /// on the same operands and compares.
    fn check(case: Case, threads: usize) {
        let mut p = Program::default();
        let a = p.add_buffer(TensorType::new(DType::F32, vec![case.a_len]), BufferKind::Input("a".into()));
        let b = p.add_buffer(TensorType::new(DType::F32, vec![case.b_len]), BufferKind::Input("b".into()));
        let batches: usize = case.batch.iter().product();
        let c_shape = vec![batches * case.m * case.n];
        let c_fast = p.add_buffer(TensorType::new(DType::F32, c_shape.clone()), BufferKind::Temp);
        let c_ref = p.add_buffer(TensorType::new(DType::F32, c_shape), BufferKind::Temp);
        let mut mem = HostMemory::new(&p).unwrap();
        let data = |len: usize, salt: u64| (0..len as u64).map(|i| (uniform(salt, i) * 2.0 - 1.0) as f32).collect();
        mem.write(a, &Tensor::from_f32(vec![case.a_len], data(case.a_len, 1))).unwrap();
        mem.write(b, &Tensor::from_f32(vec![case.b_len], data(case.b_len, 2))).unwrap();
        let mut g = GemmKernel {
            name: "mm".into(),
            batch: case.batch,
            m: case.m,
            k: case.k,
            n: case.n,
            a: Operand { buffer: a, ..case.a },
            b: Operand { buffer: b, ..case.b },
            c: c_fast,
            nodes: vec![],
        };
        {
            let table = mem.table();
            run_gemm(&g, &table, threads).unwrap();
            g.c = c_ref;
            reference::run_gemm(&g, &table).unwrap();
        }
        let (fast, slow) = (mem.read(c_fast), mem.read(c_ref));
        let (fast, slow) = (fast.as_f32().unwrap(), slow.as_f32().unwrap());
        let tol = 1e-5 * (case.k as f32).sqrt().max(1.0);
        for (i, (x, y)) in fast.iter().zip(slow).enumerate() {
            assert!((x - y).abs() <= tol * (1.0 + y.abs()), "element {i}: gemm {x}, reference {y}");
        }
    }

    #[test]
    fn row_major_and_transposed_operands() {
        for threads in [1, 2] {
            // a [5,7] row-major, b [7,3] row-major.
            check(
                Case {
                    batch: vec![],
                    m: 5,
                    k: 7,
                    n: 3,
                    a: op(0, &[], 7, 1),
                    b: op(0, &[], 3, 1),
                    a_len: 35,
                    b_len: 21,
                },
                threads,
            );
            // aᵀ stored [7,5]; bᵀ stored [3,7].
            check(
                Case {
                    batch: vec![],
                    m: 5,
                    k: 7,
                    n: 3,
                    a: op(0, &[], 1, 5),
                    b: op(0, &[], 1, 7),
                    a_len: 35,
                    b_len: 21,
                },
                threads,
            );
        }
    }

    #[test]
    fn strided_offset_and_negative_strides() {
        // Every other column of a [4,10] matrix starting at column 1, and a
        // b read backwards through negative strides.
        let a = op(1, &[], 10, 2);
        let b = op(14, &[], -3, -1);
        check(Case { batch: vec![], m: 4, k: 5, n: 3, a, b, a_len: 40, b_len: 15 }, 1);
    }

    #[test]
    fn batched_and_broadcast_batches() {
        for threads in [1, 2] {
            // a [2,3,4,5] contiguous; b shared by every batch (strides 0).
            let a = op(0, &[60, 20], 5, 1);
            let b = op(0, &[0, 0], 6, 1);
            check(Case { batch: vec![2, 3], m: 4, k: 5, n: 6, a, b, a_len: 120, b_len: 30 }, threads);
            // Per-batch b, transposed (attention's q·kᵀ): b[batch] is k[batch]ᵀ.
            let a = op(0, &[32], 4, 1);
            let b = op(0, &[32], 1, 4);
            check(Case { batch: vec![6], m: 8, k: 4, n: 8, a, b, a_len: 192, b_len: 192 }, threads);
            // One operand broadcast along the first batch axis only.
            let a = op(0, &[0, 12], 4, 1);
            let b = op(0, &[8, 0], 2, 1);
            check(Case { batch: vec![3, 2], m: 3, k: 4, n: 2, a, b, a_len: 24, b_len: 24 }, threads);
        }
    }

    #[test]
    fn shared_weights_fold_batches_into_rows() {
        let g = |a: Operand, b: Operand| GemmKernel {
            name: "mm".into(),
            batch: vec![2, 3],
            m: 4,
            k: 5,
            n: 6,
            a,
            b,
            c: BufferId(1),
            nodes: vec![],
        };
        // Contiguous activations times one weight: a single [24,5]·[5,6].
        let folded = g(op(0, &[60, 20], 5, 1), op(0, &[0, 0], 6, 1)).folded();
        assert_eq!((folded.batch.clone(), folded.m), (vec![], 24));
        // Per-batch b (attention) cannot fold; a gap between batches cannot
        // either; folding stops at the first axis that does not fit.
        assert_eq!(g(op(0, &[60, 20], 5, 1), op(0, &[0, 30], 6, 1)).folded().m, 4);
        assert_eq!(g(op(0, &[60, 21], 5, 1), op(0, &[0, 0], 6, 1)).folded().m, 4);
        let partial = g(op(0, &[70, 20], 5, 1), op(0, &[0, 0], 6, 1)).folded();
        assert_eq!((partial.batch.clone(), partial.m, partial.a.batch_strides.clone()), (vec![2], 12, vec![70]));
    }

    #[test]
    fn large_products_use_the_crates_threads() {
        // m·n·k above SMALL_PRODUCT, two batches: sequential batches, each
        // parallel inside the crate.
        let (m, k, n) = (128, 96, 100);
        assert!(m * n * k >= SMALL_PRODUCT);
        let a = op(0, &[(m * k) as i64], k as i64, 1);
        let b = op(0, &[0], n as i64, 1);
        check(Case { batch: vec![2], m, k, n, a, b, a_len: 2 * m * k, b_len: k * n }, 2);
    }

    #[test]
    fn empty_dimensions() {
        // k = 0 gives zeros; m = 0 gives nothing.
        check(
            Case { batch: vec![2], m: 2, k: 0, n: 3, a: op(0, &[0], 0, 1), b: op(0, &[0], 3, 1), a_len: 1, b_len: 1 },
            2,
        );
        check(
            Case { batch: vec![], m: 0, k: 3, n: 3, a: op(0, &[], 3, 1), b: op(0, &[], 3, 1), a_len: 1, b_len: 9 },
            1,
        );
    }

    #[test]
    fn out_of_range_operands_are_errors() {
        let mut p = Program::default();
        let a = p.add_buffer(TensorType::new(DType::F32, vec![6]), BufferKind::Input("a".into()));
        let c = p.add_buffer(TensorType::new(DType::F32, vec![4]), BufferKind::Temp);
        let mut mem = HostMemory::new(&p).unwrap();
        let table = mem.table();
        let g = GemmKernel {
            name: "mm".into(),
            batch: vec![],
            m: 2,
            k: 3,
            n: 2,
            a: Operand { buffer: a, offset: 0, batch_strides: vec![], row_stride: 3, col_stride: 1 },
            b: Operand { buffer: a, offset: 1, batch_strides: vec![], row_stride: 2, col_stride: 1 },
            c,
            nodes: vec![],
        };
        let e = run_gemm(&g, &table, 1).unwrap_err();
        assert_eq!(e, "gemm operand b0 addresses elements 1..=6, outside 0..6");
        let bad_c = GemmKernel { c: a, ..g.clone() };
        assert!(run_gemm(&bad_c, &table, 1).unwrap_err().contains("also reads"));
        let short = GemmKernel { m: 1, ..g };
        assert!(run_gemm(&short, &table, 1).unwrap_err().contains("has 4 elements, not 2"));
    }
}
