//! Fused attention on the CPU, forward and backward, a tile at a time.
//!
//! For each batch index (the batch indices run in parallel, each on one
//! thread) and each block of [`BQ`] query rows:
//!
//! - **Forward** (online softmax): over blocks of [`BK`] keys (only those a
//!   causal query can see), the score tile `S = Q_i·K_jᵀ·scale` (a gemm),
//!   the running row maximum `m` and sum `l` updated and the running output
//!   `acc` rescaled by `exp(m_old − m_new)`, then `acc += exp(S − m)·V_j`
//!   (a gemm). At the end `out = acc / l`.
//!   With a log-sum-exp buffer, each row's `m + ln l` is kept for the
//!   backward pass.
//! - **Backward** (recomputation): each query row's log-sum-exp `lse` (kept
//!   by the forward kernel, or recomputed by a first sweep the same way) and
//!   `D = rowsum(dout ⊙ out)`; then for every (key block, query block) tile the probabilities
//!   `P = exp(S − lse)`, `dv += Pᵀ·dout`, `dP = dout·V_jᵀ`,
//!   `dS = P ⊙ (dP − D)·scale`, `dq += dS·K_j`, `dk += dSᵀ·Q_i`.
//!
//! Only `BQ × BK` tiles of scores exist at any time: memory is linear in
//! the sequence length. The tile products go to the gemm crate
//! (single-threaded each); exponentials use the code generator's
//! polynomial (`exp_ref`, within 2.5e-7 of `exp`), in loops the compiler
//! vectorises. Masked scores are exactly zero probabilities.

use gemm::Parallelism;
use lpac_ir::kernel::{AttentionKernel, AttentionPass, BufferId, Operand, Program};
use lpac_ir::types::DType;
use rayon::prelude::*;

use crate::check::affine_range;
use crate::codegen::math::exp_ref;
use crate::gemm::batch_offsets;
use crate::memory::BufferTable;

/// Query rows per tile.
pub const BQ: usize = 64;
/// Keys per tile.
pub const BK: usize = 64;

/// Checks an attention kernel against the program's buffers: f32
/// everywhere, operands inside their buffers, outputs of the right size.
pub fn check_attention(program: &Program, a: &AttentionKernel) -> Result<(), String> {
    let f32_len = |b: BufferId| -> Result<usize, String> {
        let ty = &program.buffer(b).ty;
        if ty.dtype != DType::F32 {
            return Err(format!("attention buffer b{} is {ty}; only f32 is supported", b.0));
        }
        Ok(ty.numel())
    };
    let operand = |name: &str, o: &Operand, rows: usize, cols: usize| -> Result<(), String> {
        let len = f32_len(o.buffer)?;
        if o.batch_strides.len() != a.batch.len() {
            return Err(format!("attention operand {name} needs {} batch strides", a.batch.len()));
        }
        let terms = o.batch_strides.iter().copied().zip(a.batch.iter().copied());
        match affine_range(o.offset, terms.chain([(o.row_stride, rows), (o.col_stride, cols)])) {
            Some((lo, hi)) if lo < 0 || hi >= len as i128 => Err(format!(
                "attention operand {name} (b{}) addresses elements {lo}..={hi}, outside 0..{len}",
                o.buffer.0
            )),
            _ => Ok(()),
        }
    };
    if a.causal && a.tq != a.tk {
        return Err(format!("causal attention needs tq = tk, not {} and {}", a.tq, a.tk));
    }
    operand("q", &a.q, a.tq, a.d)?;
    operand("k", &a.k, a.tk, a.d)?;
    operand("v", &a.v, a.tk, a.dv)?;
    let batches: usize = a.batch.iter().product();
    let output = |name: &str, o: &Operand, rows: usize, cols: usize| -> Result<(), String> {
        operand(name, o, rows, cols)?;
        if a.reads().contains(&o.buffer) {
            return Err(format!("attention writes b{}, which it also reads", o.buffer.0));
        }
        let mut terms: Vec<(i64, usize)> = o.batch_strides.iter().copied().zip(a.batch.iter().copied()).collect();
        terms.extend([(o.row_stride, rows), (o.col_stride, cols)]);
        if !one_to_one(&terms) {
            return Err(format!("attention output {name} (b{}) would write some element twice", o.buffer.0));
        }
        Ok(())
    };
    if let Some(lse) = a.lse {
        let len = f32_len(lse)?;
        if len != batches * a.tq {
            return Err(format!("attention log-sum-exp b{} has {len} elements, not {}", lse.0, batches * a.tq));
        }
    }
    match &a.pass {
        AttentionPass::Forward { out } => output("out", out, a.tq, a.dv),
        AttentionPass::Backward { out, dout, dq, dk, dv } => {
            operand("out", out, a.tq, a.dv)?;
            operand("dout", dout, a.tq, a.dv)?;
            for (name, b, rows, cols) in [("dq", dq, a.tq, a.d), ("dk", dk, a.tk, a.d), ("dv", dv, a.tk, a.dv)] {
                if let Some(b) = b {
                    output(name, b, rows, cols)?;
                }
            }
            Ok(())
        }
    }
}

/// Whether distinct indices of the box address distinct elements: sorted
/// by stride, each stride exceeds the span of all smaller ones (sufficient;
/// axes of extent 1 do not count).
fn one_to_one(terms: &[(i64, usize)]) -> bool {
    let mut terms: Vec<(i128, i128)> =
        terms.iter().filter(|(_, e)| *e > 1).map(|&(s, e)| (i128::from(s).abs(), e as i128)).collect();
    terms.sort();
    let mut span = 0i128;
    for (stride, extent) in terms {
        if stride <= span {
            return false;
        }
        span += stride * (extent - 1);
    }
    true
}

/// A strided matrix in memory: base pointer of one batch index and strides.
#[derive(Clone, Copy)]
struct Mat {
    ptr: *const f32,
    rs: isize,
    cs: isize,
}

/// A strided matrix the kernel writes (its elements are distinct: checked).
#[derive(Clone, Copy)]
struct MatMut {
    mat: Mat,
}

impl MatMut {
    fn rows_from(self, r: usize) -> MatMut {
        MatMut { mat: self.mat.rows_from(r) }
    }

    fn ptr(self) -> *mut f32 {
        self.mat.ptr.cast_mut()
    }

    /// Sets `rows × cols` elements to zero.
    fn zero(self, rows: usize, cols: usize) {
        for r in 0..rows {
            for c in 0..cols {
                // SAFETY: inside the checked extent of the output.
                unsafe { *self.ptr().offset(r as isize * self.mat.rs + c as isize * self.mat.cs) = 0.0 };
            }
        }
    }
}

impl Mat {
    /// Row `r` onwards.
    fn rows_from(self, r: usize) -> Mat {
        // SAFETY (of the add): rows up to the operand's extent were checked
        // to lie inside the buffer.
        Mat { ptr: unsafe { self.ptr.offset(r as isize * self.rs) }, ..self }
    }

    fn transposed(self) -> Mat {
        Mat { ptr: self.ptr, rs: self.cs, cs: self.rs }
    }
}

/// A contiguous `rows × cols` scratch matrix as a [`MatMut`].
fn scratch(buf: &mut [f32], cols: usize) -> MatMut {
    // From `as_mut_ptr`: the pointer may write.
    MatMut { mat: Mat { ptr: buf.as_mut_ptr().cast_const(), rs: cols as isize, cs: 1 } }
}

/// `dst (m×n) = [dst +] scale · a (m×k) · b (k×n)`.
///
/// # Safety
/// Every addressed element of `a`, `b` and `dst` must be valid, and `dst`
/// must not overlap `a` or `b`.
#[allow(clippy::too_many_arguments)]
unsafe fn product(m: usize, n: usize, k: usize, dst: MatMut, add: bool, a: Mat, b: Mat, scale: f32) {
    if m == 0 || n == 0 {
        return;
    }
    if k == 0 {
        if !add {
            dst.zero(m, n);
        }
        return;
    }
    // SAFETY: the caller's contract.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst.ptr(),
            dst.mat.cs,
            dst.mat.rs,
            add,
            a.ptr,
            a.cs,
            a.rs,
            b.ptr,
            b.cs,
            b.rs,
            if add { 1.0 } else { 0.0 },
            scale,
            false,
            false,
            false,
            Parallelism::None,
        )
    };
}

/// Raw pointers shared by the worker threads (each batch index writes its
/// own rows of the outputs).
#[derive(Clone, Copy)]
struct Shared {
    table: *const *mut u8,
}
// SAFETY: see the struct docs; the table outlives the call.
unsafe impl Send for Shared {}
unsafe impl Sync for Shared {}

impl Shared {
    fn ptr(&self, b: BufferId) -> *mut f32 {
        // SAFETY: `b` is a buffer of the table (checked program).
        unsafe { *self.table.add(b.index()) }.cast::<f32>()
    }
}

/// Runs an attention kernel of a checked program (see the module docs).
pub fn run_attention(a: &AttentionKernel, table: &BufferTable, threads: usize) -> Result<(), String> {
    let batches: usize = a.batch.iter().product();
    let offsets = |o: &Operand| batch_offsets(&a.batch, o);
    let (qo, ko, vo) = (offsets(&a.q), offsets(&a.k), offsets(&a.v));
    let backward = match &a.pass {
        AttentionPass::Backward { out, dout, .. } => Some((offsets(out), offsets(dout))),
        AttentionPass::Forward { .. } => None,
    };
    let results: Vec<Option<Vec<isize>>> = match &a.pass {
        AttentionPass::Forward { out } => vec![Some(offsets(out))],
        AttentionPass::Backward { dq, dk, dv, .. } => [dq, dk, dv].iter().map(|o| o.as_ref().map(offsets)).collect(),
    };
    let shared = Shared { table: table.as_ptr() };
    let one = |b: usize| {
        let mat = |o: &Operand, offs: &[isize]| Mat {
            // SAFETY (of the offset): checked to lie inside the buffer.
            ptr: unsafe { shared.ptr(o.buffer).offset(offs[b]) },
            rs: o.row_stride as isize,
            cs: o.col_stride as isize,
        };
        let (q, k, v) = (mat(&a.q, &qo), mat(&a.k, &ko), mat(&a.v, &vo));
        let result = |o: &Operand, offs: &[isize]| MatMut { mat: mat(o, offs) };
        match (&a.pass, &backward) {
            (AttentionPass::Forward { out }, _) => {
                let out = result(out, results[0].as_deref().expect("forward output offsets"));
                // SAFETY: lse is [batches, tq] (checked).
                let lse = a.lse.map(|l| unsafe { shared.ptr(l).add(b * a.tq) });
                forward(a, q, k, v, out, lse);
            }
            (AttentionPass::Backward { out, dout, dq, dk, dv }, Some((oo, doo))) => {
                let (o, d_o) = (mat(out, oo), mat(dout, doo));
                let grad = |g: &Option<Operand>, i: usize| {
                    g.as_ref().map(|g| result(g, results[i].as_deref().expect("offsets")))
                };
                let grads = Grads { dq: grad(dq, 0), dk: grad(dk, 1), dv: grad(dv, 2) };
                // SAFETY: as in the forward pass.
                let lse = a.lse.map(|l| unsafe { shared.ptr(l).add(b * a.tq) }.cast_const());
                backward_one(a, q, k, v, o, d_o, lse, grads);
            }
            _ => unreachable!("backward offsets exist for backward kernels"),
        }
    };
    if threads <= 1 || batches <= 1 {
        (0..batches).for_each(one);
    } else {
        (0..batches).into_par_iter().for_each(one);
    }
    Ok(())
}

/// The last key a query row `i` sees, plus one, in a block of keys ending
/// before `tk`.
fn key_end(a: &AttentionKernel, i_end: usize) -> usize {
    if a.causal { i_end.min(a.tk) } else { a.tk }
}

/// Scores of a tile, masked: `s[r, j] = q_{i0+r}·k_{j0+j}·scale`, `-inf`
/// where a causal query cannot see the key.
fn scores(a: &AttentionKernel, q: Mat, k: Mat, (i0, nq): (usize, usize), (j0, nk): (usize, usize), s: &mut [f32]) {
    // SAFETY: rows i0..i0+nq of q and j0..j0+nk of k are inside the
    // operands; s holds nq·nk elements.
    unsafe {
        product(nq, nk, a.d, scratch(s, nk), false, q.rows_from(i0), k.rows_from(j0).transposed(), a.scale as f32)
    };
    if a.causal {
        for r in 0..nq {
            let visible = (i0 + r + 1).saturating_sub(j0).min(nk);
            s[r * nk + visible..(r + 1) * nk].fill(f32::NEG_INFINITY);
        }
    }
}

fn forward(a: &AttentionKernel, q: Mat, k: Mat, v: Mat, out: MatMut, lse: Option<*mut f32>) {
    let (dv, bq) = (a.dv, BQ.min(a.tq.max(1)));
    let mut s = vec![0f32; bq * BK];
    let mut m = vec![0f32; bq];
    let mut l = vec![0f32; bq];
    let mut acc = vec![0f32; bq * dv];
    for i0 in (0..a.tq).step_by(BQ) {
        let nq = BQ.min(a.tq - i0);
        m[..nq].fill(f32::NEG_INFINITY);
        l[..nq].fill(0.0);
        acc[..nq * dv].fill(0.0);
        let kend = key_end(a, i0 + nq);
        for j0 in (0..kend).step_by(BK) {
            let nk = BK.min(kend - j0);
            let tile = &mut s[..nq * nk];
            scores(a, q, k, (i0, nq), (j0, nk), tile);
            for r in 0..nq {
                let correction = online_softmax(&mut tile[r * nk..(r + 1) * nk], &mut m[r], &mut l[r]);
                if correction != 1.0 {
                    acc[r * dv..(r + 1) * dv].iter_mut().for_each(|x| *x *= correction);
                }
            }
            let p = Mat { ptr: tile.as_ptr(), rs: nk as isize, cs: 1 };
            // SAFETY: acc holds nq·dv elements; rows j0..j0+nk of v are inside it.
            unsafe { product(nq, dv, nk, scratch(&mut acc, dv), true, p, v.rows_from(j0), 1.0) };
        }
        for r in 0..nq {
            if let Some(lse) = lse {
                // SAFETY: lse holds tq elements for this batch index.
                unsafe { *lse.add(i0 + r) = log_sum_exp(m[r], l[r]) };
            }
            let inv = if l[r] > 0.0 { 1.0 / l[r] } else { 0.0 };
            let row = out.rows_from(i0 + r);
            for (c, &x) in acc[r * dv..(r + 1) * dv].iter().enumerate() {
                // SAFETY: inside the checked extent of the output.
                unsafe { *row.ptr().offset(c as isize * row.mat.cs) = x * inv };
            }
        }
    }
}

/// The gradient outputs of one batch index (contiguous), where wanted.
struct Grads {
    dq: Option<MatMut>,
    dk: Option<MatMut>,
    dv: Option<MatMut>,
}

/// Element `(r, c)` of a strided matrix.
fn at(m: Mat, r: usize, c: usize) -> f32 {
    // SAFETY: callers stay inside the operand's checked extent.
    unsafe { *m.ptr.offset(r as isize * m.rs + c as isize * m.cs) }
}

/// Lanes of the row reductions below: independent partial results the
/// compiler keeps in vector registers (a single running value would be one
/// long dependency chain, which it may not reorder).
const LANES: usize = 8;

/// The largest element (`-inf` for an empty or fully masked row).
fn row_max(row: &[f32]) -> f32 {
    let mut lanes = [f32::NEG_INFINITY; LANES];
    let chunks = row.chunks_exact(LANES);
    let tail = chunks.remainder();
    for chunk in chunks {
        for (l, &x) in lanes.iter_mut().zip(chunk) {
            *l = if x > *l { x } else { *l };
        }
    }
    tail.iter().chain(&lanes).fold(f32::NEG_INFINITY, |a, &x| if x > a { x } else { a })
}

fn row_sum(row: &[f32]) -> f32 {
    let mut lanes = [0f32; LANES];
    let chunks = row.chunks_exact(LANES);
    let tail = chunks.remainder();
    for chunk in chunks {
        for (l, &x) in lanes.iter_mut().zip(chunk) {
            *l += x;
        }
    }
    lanes.iter().chain(tail).sum()
}

/// `x ← exp(x − shift)`, masked (`-inf`) scores to exactly zero.
fn exp_shifted(row: &mut [f32], shift: f32) {
    for x in row.iter_mut() {
        *x = if *x == f32::NEG_INFINITY { 0.0 } else { exp_ref(*x - shift, false) };
    }
}

/// One step of the online softmax for a query row: the tile's scores
/// become `exp(s − m)` under the new running maximum `m`, the running sum
/// `l` is rescaled and grows by the tile's sum. Returns the factor earlier
/// partial results must be rescaled by (1 when nothing changes; a fully
/// masked tile becomes zeros and changes nothing).
fn online_softmax(row: &mut [f32], m: &mut f32, l: &mut f32) -> f32 {
    let m_new = row_max(row).max(*m);
    if m_new == f32::NEG_INFINITY {
        row.fill(0.0);
        return 1.0;
    }
    let correction = exp_ref(*m - m_new, false);
    exp_shifted(row, m_new);
    *l = *l * correction + row_sum(row);
    *m = m_new;
    correction
}

/// A row's log-sum-exp from its running maximum and sum (`+inf` for a row
/// that sees no key: its probabilities are all zero).
fn log_sum_exp(m: f32, l: f32) -> f32 {
    if l > 0.0 { m + l.ln() } else { f32::INFINITY }
}

#[allow(clippy::too_many_arguments)]
fn backward_one(a: &AttentionKernel, q: Mat, k: Mat, v: Mat, out: Mat, dout: Mat, saved: Option<*const f32>, g: Grads) {
    let (d, dv) = (a.d, a.dv);
    // Zero the accumulated gradients.
    for (grad, rows, cols) in [(g.dq, a.tq, d), (g.dk, a.tk, d), (g.dv, a.tk, dv)] {
        if let Some(grad) = grad {
            grad.zero(rows, cols);
        }
    }
    // Sweep 1: D = rowsum(dout ⊙ out), and each query row's log-sum-exp
    // unless the forward kernel kept it.
    let delta: Vec<f32> = (0..a.tq).map(|i| (0..dv).map(|c| at(dout, i, c) * at(out, i, c)).sum()).collect();
    let mut lse = vec![0f32; a.tq];
    let mut s = vec![0f32; BQ * BK];
    if let Some(saved) = saved {
        // SAFETY: the saved log-sum-exp holds tq elements for this batch index.
        lse.copy_from_slice(unsafe { std::slice::from_raw_parts(saved, a.tq) });
    }
    for i0 in (0..a.tq).step_by(BQ).filter(|_| saved.is_none()) {
        let nq = BQ.min(a.tq - i0);
        let mut m = [f32::NEG_INFINITY; BQ];
        let mut l = [0f32; BQ];
        let kend = key_end(a, i0 + nq);
        for j0 in (0..kend).step_by(BK) {
            let nk = BK.min(kend - j0);
            let tile = &mut s[..nq * nk];
            scores(a, q, k, (i0, nq), (j0, nk), tile);
            for r in 0..nq {
                online_softmax(&mut tile[r * nk..(r + 1) * nk], &mut m[r], &mut l[r]);
            }
        }
        for r in 0..nq {
            lse[i0 + r] = log_sum_exp(m[r], l[r]);
        }
    }
    // Sweep 2: the gradients, tile by tile.
    let mut dp = vec![0f32; BQ * BK];
    let scale = a.scale as f32;
    for j0 in (0..a.tk).step_by(BK) {
        let nk = BK.min(a.tk - j0);
        // The first query block that sees any key of this block.
        let first = if a.causal { (j0 / BQ) * BQ } else { 0 };
        for i0 in (first..a.tq).step_by(BQ) {
            let nq = BQ.min(a.tq - i0);
            let p = &mut s[..nq * nk];
            scores(a, q, k, (i0, nq), (j0, nk), p);
            for r in 0..nq {
                exp_shifted(&mut p[r * nk..(r + 1) * nk], lse[i0 + r]);
            }
            let p_mat = Mat { ptr: p.as_ptr(), rs: nk as isize, cs: 1 };
            let dout_i = dout.rows_from(i0);
            if let Some(gv) = g.dv {
                // SAFETY: rows j0..j0+nk of dv; p and dout_i as above.
                unsafe { product(nk, dv, nq, gv.rows_from(j0), true, p_mat.transposed(), dout_i, 1.0) };
            }
            if g.dq.is_none() && g.dk.is_none() {
                continue;
            }
            let ds = &mut dp[..nq * nk];
            // SAFETY: dP = dout_i · V_jᵀ into the nq·nk scratch.
            unsafe { product(nq, nk, dv, scratch(ds, nk), false, dout_i, v.rows_from(j0).transposed(), 1.0) };
            for r in 0..nq {
                let dr = delta[i0 + r];
                for (x, &pr) in ds[r * nk..(r + 1) * nk].iter_mut().zip(&p[r * nk..(r + 1) * nk]) {
                    *x = pr * (*x - dr) * scale;
                }
            }
            let ds_mat = Mat { ptr: ds.as_ptr(), rs: nk as isize, cs: 1 };
            if let Some(gq) = g.dq {
                // SAFETY: rows i0..i0+nq of dq.
                unsafe { product(nq, d, nk, gq.rows_from(i0), true, ds_mat, k.rows_from(j0), 1.0) };
            }
            if let Some(gk) = g.dk {
                // SAFETY: rows j0..j0+nk of dk.
                unsafe { product(nk, d, nq, gk.rows_from(j0), true, ds_mat.transposed(), q.rows_from(i0), 1.0) };
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::memory::HostMemory;
    use lpac_ir::interp::Tensor;
    use lpac_ir::kernel::BufferKind;
    use lpac_ir::random::uniform;
    use lpac_ir::types::TensorType;

    /// The backward kernel gives the same gradients whether it reads the
    /// forward kernel's log-sum-exp or recomputes it (the numbers against
    /// the interpreter are in tests/fuse_property.rs).
    #[test]
    fn kept_and_recomputed_log_sum_exp_agree() {
        let (b, t, d) = (3usize, 90usize, 8usize);
        let mut p = Program::default();
        let ty = |rows: usize, cols: usize| TensorType::new(DType::F32, vec![b, rows, cols]);
        let [q, k, v, dout] = ["q", "k", "v", "dout"].map(|n| p.add_buffer(ty(t, d), BufferKind::Input(n.into())));
        let out = p.add_buffer(ty(t, d), BufferKind::Temp);
        let lse = p.add_buffer(TensorType::new(DType::F32, vec![b, t]), BufferKind::Temp);
        let grads: Vec<BufferId> = (0..6).map(|_| p.add_buffer(ty(t, d), BufferKind::Temp)).collect();
        let op = |buffer| Operand {
            buffer,
            offset: 0,
            batch_strides: vec![(t * d) as i64],
            row_stride: d as i64,
            col_stride: 1,
        };
        let kernel = |pass, lse| AttentionKernel {
            name: "attention".into(),
            batch: vec![b],
            tq: t,
            tk: t,
            d,
            dv: d,
            scale: 0.35,
            causal: true,
            q: op(q),
            k: op(k),
            v: op(v),
            pass,
            lse,
            nodes: vec![],
        };
        let mut mem = HostMemory::new(&p).unwrap();
        for (salt, buf) in [q, k, v, dout].into_iter().enumerate() {
            let data = (0..(b * t * d) as u64).map(|i| (uniform(salt as u64, i) * 2.0 - 1.0) as f32).collect();
            mem.write(buf, &Tensor::from_f32(vec![b, t, d], data)).unwrap();
        }
        let backward = |first: usize, lse| {
            let pass = AttentionPass::Backward {
                out: op(out),
                dout: op(dout),
                dq: Some(op(grads[first])),
                dk: Some(op(grads[first + 1])),
                dv: Some(op(grads[first + 2])),
            };
            kernel(pass, lse)
        };
        {
            let table = mem.table();
            run_attention(&kernel(AttentionPass::Forward { out: op(out) }, Some(lse)), &table, 2).unwrap();
            run_attention(&backward(0, Some(lse)), &table, 2).unwrap();
            run_attention(&backward(3, None), &table, 1).unwrap();
        }
        for g in 0..3 {
            let (kept, recomputed) = (mem.read(grads[g]), mem.read(grads[g + 3]));
            let (kept, recomputed) = (kept.as_f32().unwrap(), recomputed.as_f32().unwrap());
            for (i, (x, y)) in kept.iter().zip(recomputed).enumerate() {
                assert!((x - y).abs() <= 1e-5 * (1.0 + y.abs()), "gradient {g}, element {i}: {x} vs {y}");
            }
        }
    }
}
