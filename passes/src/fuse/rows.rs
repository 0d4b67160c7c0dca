//! Row groups: consecutive kernels over the same rows become one
//! [`RowsKernel`].
//!
//! Softmax lowers to four loop kernels — the row maximum, the
//! exponentials, their sum, the quotient — each streaming the whole
//! `[rows, T]` tensor through memory. They only ever combine values of the
//! same row, so they can run together a chunk of rows at a time: the chunk
//! is read from memory once and every later stage finds it in cache. The
//! same holds for layer and RMS norms (statistics, then normalisation),
//! cross-entropy (log-sum-exp, then the loss) and their backward passes.
//!
//! Matrix products over the rows join too: a projection `[rows, k] · W`
//! followed by its bias, activation or residual add (the product's
//! *epilogue*), or by the second factor of a low-rank pair (`x·A·B`), runs a
//! chunk of rows at a time, so the epilogue and the second product read the
//! chunk while it is in cache. Measured here (the gemm crate, 2 cores):
//! products over chunks of 256 rows, one chunk per call, cost the same as
//! one call over all rows when `n ≤ 256` (1.11 against 1.13 ms for
//! `2048×256×256`), but 3–9% more for `n = 1024`, where every chunk packs a
//! 1 MiB right operand again; so only products with at most
//! [`GEMM_MAX_N`] columns are grouped.
//!
//! A group starts at a reduction over the last axes (domain `R`, the rows)
//! or at a product over rows `R`, and takes each following loop kernel
//! whose domain starts with `R` and which reads the group's own buffers only
//! within the same row, and each product that reads the group's rows whole.
//! Anything else ends the group; a group of one kernel is left as it was.

use lpac_ir::kernel::{GemmKernel, Kernel, LoopKernel, Program, RowStage, RowsKernel};

/// Products with more columns than this are not grouped (see the module
/// docs).
pub const GEMM_MAX_N: usize = 256;
/// Nor products with fewer: a 64-column product (LPA's `x·A` at r = 64)
/// over chunks of 256 rows took 8% longer than one call here (0.297
/// against 0.274 ms for `2048×256×64`), more than keeping its result in
/// cache for the next product saves.
pub const GEMM_MIN_N: usize = 128;

/// Groups the program's row-wise kernels (see the module docs).
pub fn group_rows(program: &mut Program) {
    let kernels = std::mem::take(&mut program.kernels);
    let mut group: Vec<RowStage> = Vec::new();
    let mut rows: Vec<usize> = Vec::new();
    for kernel in kernels {
        if !group.is_empty()
            && let Some(stage) = joining(&group, &rows, &kernel)
        {
            group.push(stage);
            continue;
        }
        flush(program, &mut group, &rows);
        match starting(program, &kernel) {
            Some((r, stage)) => {
                rows = r;
                group.push(stage);
            }
            None => program.kernels.push(kernel),
        }
    }
    flush(program, &mut group, &rows);
}

/// The stage `kernel` becomes when it can start a group, with the rows.
fn starting(program: &Program, kernel: &Kernel) -> Option<(Vec<usize>, RowStage)> {
    match kernel {
        Kernel::Loop(k) if k.reduction.is_some() && !k.domain.is_empty() && k.domain.iter().product::<usize>() >= 2 => {
            Some((k.domain.clone(), RowStage::Loop(k.clone())))
        }
        Kernel::Gemm(g) => {
            let folded = groupable(g)?;
            let shape = &program.buffer(g.c).ty.shape;
            let rows = shape[..shape.len() - 1].to_vec();
            (rows.iter().product::<usize>() == folded.m && folded.m >= 2).then_some((rows, RowStage::Gemm(folded)))
        }
        _ => None,
    }
}

/// The stage `kernel` becomes when it can run row by row after `group`.
fn joining(group: &[RowStage], rows: &[usize], kernel: &Kernel) -> Option<RowStage> {
    match kernel {
        Kernel::Loop(k) => joins(group, rows, k).then(|| RowStage::Loop(k.clone())),
        Kernel::Gemm(g) => {
            let folded = groupable(g)?;
            lpac_ir::kernel::gemm_fits_rows(group, rows, &folded).is_ok().then_some(RowStage::Gemm(folded))
        }
        _ => None,
    }
}

/// The product over all its rows in one unbatched call, if it folds so and
/// is narrow enough to pay (see [`GEMM_MAX_N`]).
fn groupable(g: &GemmKernel) -> Option<GemmKernel> {
    let folded = g.folded();
    (folded.batch.is_empty() && (GEMM_MIN_N..=GEMM_MAX_N).contains(&folded.n)).then_some(folded)
}

fn flush(program: &mut Program, group: &mut Vec<RowStage>, rows: &[usize]) {
    match group.len() {
        0 => {}
        1 => match group.pop().expect("one") {
            RowStage::Loop(l) => program.kernels.push(Kernel::Loop(l)),
            RowStage::Gemm(g) => program.kernels.push(Kernel::Gemm(g)),
        },
        _ => {
            let stages = std::mem::take(group);
            let names: Vec<&str> = stages.iter().map(RowStage::name).collect();
            let name = format!("rows({})", names.join(","));
            program.kernels.push(Kernel::Rows(RowsKernel { name, rows: rows.to_vec(), stages }));
        }
    }
}

/// Whether `k` can run row by row after the stages of `group`.
fn joins(group: &[RowStage], rows: &[usize], k: &LoopKernel) -> bool {
    lpac_ir::kernel::stage_fits_rows(group, rows, k).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use lpac_ir::kernel::{BufferId, Expr, ExprId, IndexMap, Reduction, Typed};
    use lpac_ir::op::ReduceOp;
    use lpac_ir::types::DType;

    fn load(buffer: u32, offset: i64, strides: &[i64]) -> Typed {
        Typed {
            expr: Expr::Load { buffer: BufferId(buffer), index: IndexMap { offset, strides: strides.to_vec() } },
            dtype: DType::F32,
        }
    }

    /// `out[i] = max_r x[i, r]` over rows [4] of 8.
    fn row_max() -> LoopKernel {
        LoopKernel {
            name: "max".into(),
            domain: vec![4],
            reduce: vec![8],
            exprs: vec![load(0, 0, &[8, 1]), Typed { expr: Expr::Accumulated, dtype: DType::F32 }],
            reduction: Some(Reduction { op: ReduceOp::Max, value: ExprId(0) }),
            outputs: vec![(BufferId(1), ExprId(1))],
            nodes: vec![],
        }
    }

    /// `out[i, j] = m[<map>]` over [4, 8].
    fn reader(m_index: Typed) -> LoopKernel {
        LoopKernel {
            name: "use".into(),
            domain: vec![4, 8],
            reduce: vec![],
            exprs: vec![m_index],
            reduction: None,
            outputs: vec![(BufferId(2), ExprId(0))],
            nodes: vec![],
        }
    }

    #[test]
    fn same_row_reads_join_and_other_rows_do_not() {
        let group = [RowStage::Loop(row_max())];
        // m[i] broadcast along the row: joins.
        assert!(joins(&group, &[4], &reader(load(1, 0, &[1, 0]))));
        // m[i + 1]: the next row's maximum: does not.
        assert!(!joins(&group, &[4], &reader(load(1, 1, &[1, 0]))));
        // m[0] for every row: does not.
        assert!(!joins(&group, &[4], &reader(load(1, 0, &[0, 0]))));
        // Buffers from outside the group may be read anyhow.
        assert!(joins(&group, &[4], &reader(load(0, 0, &[0, 1]))));
        // A different leading domain does not join.
        let mut other = reader(load(1, 0, &[1, 0]));
        other.domain = vec![2, 16];
        assert!(!joins(&group, &[4], &other));
    }

    #[test]
    fn groups_form_only_from_two_kernels() {
        let kernels = vec![Kernel::Loop(row_max()), Kernel::Loop(reader(load(1, 0, &[1, 0])))];
        let mut p = Program { kernels, ..Program::default() };
        group_rows(&mut p);
        assert!(matches!(&p.kernels[..], [Kernel::Rows(r)] if r.stages.len() == 2 && r.rows == [4]));
        let kernels = vec![Kernel::Loop(row_max()), Kernel::Loop(reader(load(1, 1, &[1, 0])))];
        let mut q = Program { kernels, ..Program::default() };
        group_rows(&mut q);
        assert!(matches!(&q.kernels[..], [Kernel::Loop(_), Kernel::Loop(_)]));
    }
}
