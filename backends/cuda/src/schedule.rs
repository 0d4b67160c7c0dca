//! How an emitted program runs: the order of products and function
//! launches for each kernel, what every function parameter is bound to,
//! and the cuBLAS calls of every product (transpose flags, leading
//! dimensions, offsets). The runtime follows it on a GPU and the PTX
//! emulator in the tests follows the same, so the tests check the launches
//! and calls a GPU gets.

use lpac_ir::kernel::{BufferId, GemmKernel, Kernel, Program, RowStage};

use crate::{PtxKernel, PtxProgram};

/// One thing done on the GPU's stream.
#[derive(Clone, Debug, PartialEq)]
pub enum Step {
    /// A matrix product (named for messages): its cuBLAS calls in order.
    Product { name: String, calls: Vec<BlasCall> },
    /// An emitted function: its index in [`PtxProgram::kernels`].
    Function(usize),
}

impl Step {
    fn product(g: &GemmKernel) -> Result<Step, String> {
        Ok(Step::Product { name: g.name.clone(), calls: blas_calls(g)? })
    }
}

/// What one parameter of an emitted function is bound to at launch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Binding {
    /// The address of buffer `id`.
    Buffer(u32),
    /// `lpac_ir::random::dropout_key(seed, step, key)` for this step.
    StreamKey(u64),
    /// The address of the scratch area (zeroed once when loaded; block-level
    /// reductions' counters and partial results).
    Scratch,
    /// The address of the `u32` error cell (an index out of range).
    ErrorCell,
}

impl PtxKernel {
    /// The function's parameters, in order: buffers, stream keys, then the
    /// scratch area and the error cell where it takes them.
    pub fn bindings(&self) -> impl Iterator<Item = Binding> + '_ {
        self.args
            .iter()
            .map(|&b| Binding::Buffer(b))
            .chain(self.stream_keys.iter().map(|&k| Binding::StreamKey(k)))
            .chain((self.scratch_bytes > 0).then_some(Binding::Scratch))
            .chain(self.error_flag.then_some(Binding::ErrorCell))
    }
}

impl PtxProgram {
    /// For every kernel of `program` (which this was emitted from), its
    /// steps in order: a product kernel is one product; a rows kernel with
    /// product stages runs stage by stage over all rows (its products, and
    /// its loop stages' functions in order); any other kernel, its
    /// functions in body order. An error names a kernel the program cannot
    /// run: one the emitter skipped that is not a product, or a product
    /// cuBLAS cannot be called for ([`blas_calls`]).
    pub fn schedule(&self, program: &Program) -> Result<Vec<Vec<Step>>, String> {
        let mut functions: Vec<Vec<usize>> = vec![Vec::new(); program.kernels.len()];
        for (f, k) in self.kernels.iter().enumerate() {
            functions[k.kernel].push(f);
        }
        let mut schedule = Vec::with_capacity(program.kernels.len());
        for (i, kernel) in program.kernels.iter().enumerate() {
            let steps = match kernel {
                Kernel::Gemm(g) => vec![Step::product(g)?],
                Kernel::Rows(r) if r.stages.iter().any(|s| matches!(s, RowStage::Gemm(_))) => {
                    let mut loops = functions[i].iter();
                    let mut steps = Vec::with_capacity(r.stages.len());
                    for stage in &r.stages {
                        steps.push(match stage {
                            RowStage::Gemm(g) => Step::product(g)?,
                            RowStage::Loop(_) => Step::Function(
                                *loops.next().ok_or_else(|| format!("k{i}: a rows stage without its function"))?,
                            ),
                        });
                    }
                    steps
                }
                _ => {
                    if let Some((_, why)) = self.skipped.iter().find(|(k, _)| *k == i) {
                        return Err(format!("kernel k{i} {:?} cannot run on CUDA yet: {why}", kernel.name()));
                    }
                    functions[i].iter().map(|&f| Step::Function(f)).collect()
                }
            };
            schedule.push(steps);
        }
        Ok(schedule)
    }
}

/// One matrix product as cuBLAS is asked for it. cuBLAS is column-major:
/// `C = op(A) · op(B)` with `C` `m × n` (element `(i, j)` at
/// `c + i + j·ldc`), `op(A)` `m × k` and `op(B)` `k × n`, where `op(X)` is
/// `X` (element `(i, j)` at `x + i + j·ldx`) or, transposed, `Xᵀ`. Offsets
/// are in elements of the buffers' dtype.
#[derive(Clone, Debug, PartialEq)]
pub struct BlasCall {
    pub m: usize,
    pub n: usize,
    pub k: usize,
    pub a: BlasOperand,
    pub b: BlasOperand,
    pub c: (BufferId, i64),
    pub ldc: usize,
}

/// An operand of a [`BlasCall`]: where it starts, its leading dimension,
/// and whether cuBLAS transposes it.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct BlasOperand {
    pub buffer: BufferId,
    pub offset: i64,
    pub ld: usize,
    pub transpose: bool,
}

/// The cuBLAS calls that compute `g` (row-major `c = a · b`): as
/// column-major `cᵀ = bᵀ · aᵀ`, one call per batch index left after
/// folding batch axes into rows ([`GemmKernel::folded`]). An operand
/// neither of whose strides is 1, or whose rows overlap (a broadcast), has
/// no cuBLAS form: an error naming the product.
pub fn blas_calls(g: &GemmKernel) -> Result<Vec<BlasCall>, String> {
    let g = g.folded();
    // bᵀ is cuBLAS's A (n × k), aᵀ its B (k × m).
    let b = column_major(&g.b, g.k, g.n).ok_or_else(|| refused(&g, &g.b))?;
    let a = column_major(&g.a, g.m, g.k).ok_or_else(|| refused(&g, &g.a))?;
    let batches: usize = g.batch.iter().product();
    Ok((0..batches.max(1))
        .map(|flat| BlasCall {
            m: g.n,
            n: g.m,
            k: g.k,
            a: BlasOperand { buffer: g.b.buffer, offset: batch_offset(&g.batch, &g.b, flat), ..b },
            b: BlasOperand { buffer: g.a.buffer, offset: batch_offset(&g.batch, &g.a, flat), ..a },
            c: (g.c, (flat * g.m * g.n) as i64),
            ldc: g.n.max(1),
        })
        .collect())
}

fn refused(g: &GemmKernel, o: &lpac_ir::kernel::Operand) -> String {
    format!(
        "{}: an operand with row stride {} and column stride {} (cuBLAS needs one of them 1, and rows that do not \
         overlap)",
        g.name, o.row_stride, o.col_stride
    )
}

/// How cuBLAS reads a row-major logical `[rows, cols]` operand `o` as the
/// transpose the call needs (`cols × rows`, column-major): untransposed
/// when its columns are adjacent (the leading dimension its row stride),
/// transposed when its rows are (the leading dimension its column stride).
/// A leading dimension must cover a column (cuBLAS checks `ld ≥` the
/// stored rows), so a broadcast (stride 0) has no form — unless there is
/// one line, whose leading dimension nothing reads. `buffer`/`offset` are
/// left for the caller.
fn column_major(o: &lpac_ir::kernel::Operand, rows: usize, cols: usize) -> Option<BlasOperand> {
    let operand = |ld: usize, transpose: bool| BlasOperand { buffer: o.buffer, offset: o.offset, ld, transpose };
    if (o.col_stride == 1 || cols <= 1) && (rows <= 1 || o.row_stride >= cols.max(1) as i64) {
        let ld = if rows <= 1 { cols.max(1) } else { o.row_stride as usize };
        Some(operand(ld, false))
    } else if (o.row_stride == 1 || rows <= 1) && (cols <= 1 || o.col_stride >= rows.max(1) as i64) {
        let ld = if cols <= 1 { rows.max(1) } else { o.col_stride as usize };
        Some(operand(ld, true))
    } else {
        None
    }
}

/// Operand `o`'s element offset at batch index `flat` (row-major over
/// `batch`).
fn batch_offset(batch: &[usize], o: &lpac_ir::kernel::Operand, mut flat: usize) -> i64 {
    let mut off = o.offset;
    for (d, &extent) in batch.iter().enumerate().rev() {
        off += (flat % extent) as i64 * o.batch_strides[d];
        flat /= extent;
    }
    off
}

#[cfg(test)]
mod tests {
    use lpac_ir::kernel::Operand;

    use super::*;

    fn operand(buffer: u32, row_stride: i64, col_stride: i64, batch_strides: &[i64]) -> Operand {
        Operand { buffer: BufferId(buffer), offset: 0, batch_strides: batch_strides.to_vec(), row_stride, col_stride }
    }

    fn product(a: Operand, b: Operand, batch: &[usize], (m, k, n): (usize, usize, usize)) -> GemmKernel {
        GemmKernel { name: "p".into(), batch: batch.to_vec(), m, k, n, a, b, c: BufferId(2), nodes: vec![] }
    }

    #[test]
    fn row_major_operands_become_the_transposed_column_major_call() {
        // [6, 4] · [4, 5], both row-major: cᵀ = bᵀ · aᵀ, nothing transposed.
        let calls = blas_calls(&product(operand(0, 4, 1, &[]), operand(1, 5, 1, &[]), &[], (6, 4, 5))).unwrap();
        assert_eq!(calls.len(), 1);
        let call = &calls[0];
        assert_eq!((call.m, call.n, call.k, call.ldc), (5, 6, 4, 5));
        assert_eq!((call.a.buffer, call.a.ld, call.a.transpose), (BufferId(1), 5, false));
        assert_eq!((call.b.buffer, call.b.ld, call.b.transpose), (BufferId(0), 4, false));
        // a stored transposed (a weight gradient's xᵀ): cuBLAS transposes it.
        let calls = blas_calls(&product(operand(0, 1, 6, &[]), operand(1, 5, 1, &[]), &[], (6, 4, 5))).unwrap();
        assert_eq!((calls[0].b.ld, calls[0].b.transpose), (6, true));
    }

    #[test]
    fn batches_fold_into_rows_or_become_one_call_each() {
        // 3 × [2, 4] · [4, 5] with b shared: one [6, 4] · [4, 5] call.
        let shared = product(operand(0, 4, 1, &[8]), operand(1, 5, 1, &[0]), &[3], (2, 4, 5));
        assert_eq!(blas_calls(&shared).unwrap().len(), 1);
        // b per batch: a call each, at its offsets.
        let own = product(operand(0, 4, 1, &[8]), operand(1, 5, 1, &[20]), &[3], (2, 4, 5));
        let calls = blas_calls(&own).unwrap();
        let offsets: Vec<_> = calls.iter().map(|c| (c.a.offset, c.b.offset, c.c.1)).collect();
        assert_eq!(offsets, [(0, 0, 0), (20, 8, 10), (40, 16, 20)]);
    }

    #[test]
    fn operands_cublas_cannot_read_are_refused_by_name() {
        // Rows broadcast (stride 0): a leading dimension cannot be 0.
        let err = blas_calls(&product(operand(0, 0, 1, &[]), operand(1, 5, 1, &[]), &[], (6, 4, 5))).unwrap_err();
        assert!(err.starts_with("p: an operand with row stride 0 and column stride 1"), "{err}");
        // Neither stride 1.
        assert!(blas_calls(&product(operand(0, 8, 2, &[]), operand(1, 5, 1, &[]), &[], (6, 4, 5))).is_err());
    }
}
