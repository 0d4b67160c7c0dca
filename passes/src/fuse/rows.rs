//! Row groups: consecutive loop kernels over the same rows become one
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
//! A group starts at a reduction over the last axes (domain `R`, the rows)
//! and takes each following loop kernel whose domain starts with `R` and
//! which reads the group's own buffers only within the same row. Anything
//! else ends the group; a group of one kernel is left as it was.

use lpac_ir::kernel::{Kernel, LoopKernel, Program, RowsKernel};

/// Groups the program's row-wise kernels (see the module docs).
pub fn group_rows(program: &mut Program) {
    let kernels = std::mem::take(&mut program.kernels);
    let mut group: Vec<LoopKernel> = Vec::new();
    let mut rows: Vec<usize> = Vec::new();
    for kernel in kernels {
        if let Kernel::Loop(k) = &kernel
            && !group.is_empty()
            && joins(&group, &rows, k)
        {
            group.push(k.clone());
            continue;
        }
        flush(program, &mut group, &rows);
        match kernel {
            Kernel::Loop(k) if starts_group(&k) => {
                rows = k.domain.clone();
                group.push(k);
            }
            other => program.kernels.push(other),
        }
    }
    flush(program, &mut group, &rows);
}

/// A reduction over trailing axes with at least two rows.
fn starts_group(k: &LoopKernel) -> bool {
    k.reduction.is_some() && !k.domain.is_empty() && k.domain.iter().product::<usize>() >= 2
}

fn flush(program: &mut Program, group: &mut Vec<LoopKernel>, rows: &[usize]) {
    match group.len() {
        0 => {}
        1 => program.kernels.push(Kernel::Loop(group.pop().expect("one"))),
        _ => {
            let stages = std::mem::take(group);
            let names: Vec<&str> = stages.iter().map(|s| s.name.as_str()).collect();
            let name = format!("rows({})", names.join(","));
            program.kernels.push(Kernel::Rows(RowsKernel { name, rows: rows.to_vec(), stages }));
        }
    }
}

/// Whether `k` can run row by row after the stages of `group`.
fn joins(group: &[LoopKernel], rows: &[usize], k: &LoopKernel) -> bool {
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
        let group = [row_max()];
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
