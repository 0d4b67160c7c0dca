//! Which form a loop kernel takes, decided from the kernel alone (see
//! [`super::threads`] for the forms).

use lpac_ir::DType;
use lpac_ir::kernel::{Expr, IndexMap, LoopKernel, Program};

/// Fewer outputs than this use block-level reductions…
pub(super) const BLOCK_REDUCE_OUTPUTS: u64 = 2048;
/// …when each reduces at least this many values; a block takes about
/// `SLICE` of them (16 a thread), and an output at most enough blocks for
/// `MAX_BLOCKS` in the grid.
pub(super) const BLOCK_REDUCE_MIN: u64 = 2048;
pub(super) const SLICE: u64 = 4096;
pub(super) const MAX_BLOCKS: u64 = 4096;

/// `(slices, len)` when `k` should reduce with whole blocks.
pub(super) fn block_reduce_shape(k: &LoopKernel) -> Option<(u64, u64)> {
    k.reduction.as_ref()?;
    let outputs: u64 = k.domain.iter().map(|&d| d as u64).product();
    let count: u64 = k.reduce.iter().map(|&d| d as u64).product();
    if outputs >= BLOCK_REDUCE_OUTPUTS || count < BLOCK_REDUCE_MIN {
        return None;
    }
    let wanted = count.div_ceil(SLICE).min((MAX_BLOCKS / outputs).max(1));
    let len = count.div_ceil(wanted);
    Some((count.div_ceil(len), len))
}

/// Outputs from which a reduction runs a thread per output…
pub(super) const THREAD_PER_OUTPUT_MIN: u64 = 65_536;
/// …reducing at most this many values each.
pub(super) const THREAD_PER_OUTPUT_MAX_LEN: u64 = 4096;

/// Whether a reduction should run a thread per output element, each summing
/// its values in order, rather than a warp per output: a column sum (the
/// gradient of a bias over a vocabulary: 32,001 columns of 4,096 rows).
/// With a warp per output the 32 lanes read 32 rows of one column — 32
/// memory sectors for 128 useful bytes — while with a thread each,
/// neighbouring threads read neighbouring columns of one row. Chosen when
/// there are enough outputs to fill the GPU a thread each, the reductions
/// are short enough, and every load the reduction makes steps along the
/// outputs' last axis one element at a time (not along the reduction's).
pub(super) fn thread_per_output(k: &LoopKernel) -> bool {
    if k.reduction.is_none() || k.domain.is_empty() || k.reduce.is_empty() {
        return false;
    }
    let outputs: u64 = k.domain.iter().map(|&d| d as u64).product();
    let count: u64 = k.reduce.iter().map(|&d| d as u64).product();
    if outputs < THREAD_PER_OUTPUT_MIN || count > THREAD_PER_OUTPUT_MAX_LEN {
        return false;
    }
    let (last_out, last_reduce) = (k.domain.len() - 1, k.domain.len() + k.reduce.len() - 1);
    let loads: Vec<&IndexMap> = k
        .exprs
        .iter()
        .filter_map(|t| match &t.expr {
            Expr::Load { index, .. } | Expr::LoadIf { index, .. } => Some(index),
            _ => None,
        })
        .filter(|m| m.strides.iter().skip(k.domain.len()).any(|&s| s != 0))
        .collect();
    !loads.is_empty()
        && loads.iter().all(|m| m.strides.get(last_out) == Some(&1) && m.strides.get(last_reduce) != Some(&1))
}

/// For an elementwise kernel whose elements come four at a time with
/// 16-byte accesses: the loads that read the element's own position (the
/// domain's row-major layout, offset a multiple of 4), which become one
/// `ld.global.v4` per four elements; other loads (broadcasts, transposes)
/// stay one per element. `None` when the kernel does not qualify: a
/// reduction, a domain not a multiple of 4 long, or a value that is not 4
/// bytes wide (bool) among the outputs. Buffers start 64-byte aligned (the
/// memory plan, cudaMalloc), so a multiple-of-4 element offset is aligned.
pub(super) fn vector_loads(program: &Program, k: &LoopKernel) -> Option<Vec<usize>> {
    let total: u64 = k.domain.iter().map(|&d| d as u64).product();
    if k.reduction.is_some() || total == 0 || !total.is_multiple_of(4) {
        return None;
    }
    let wide = |d: DType| matches!(d, DType::F32 | DType::I32);
    if k.outputs.iter().any(|(b, e)| !wide(k.exprs[e.index()].dtype) || program.buffers.get(b.index()).is_none()) {
        return None;
    }
    let contiguous = lpac_ir::types::strides(&k.domain);
    let own_position = |m: &IndexMap| {
        m.offset % 4 == 0
            && m.strides.len() == k.domain.len()
            && m.strides.iter().zip(&contiguous).all(|(&s, &c)| s == c as i64)
    };
    Some(
        k.exprs
            .iter()
            .enumerate()
            .filter(|(_, t)| matches!(&t.expr, Expr::Load { index, .. } if own_position(index) && wide(t.dtype)))
            .map(|(e, _)| e)
            .collect(),
    )
}

/// A row reduction at least this long takes a whole block (a cross-entropy
/// over a 32,000-word vocabulary: 1,000 loads a lane for a warp, 125 for a
/// block)…
pub(super) const BLOCK_ROW_MIN: u64 = 4096;

/// Whether a rows kernel runs a block per row rather than a warp: when its
/// longest reduction is at least [`BLOCK_ROW_MIN`], or when there are too
/// few rows to fill the GPU a warp each and the reductions are long enough
/// to share among a block ([`BLOCK_REDUCE_OUTPUTS`], [`BLOCK_REDUCE_MIN`]).
pub(super) fn rows_take_blocks(nrows: u64, stages: &[LoopKernel]) -> bool {
    let longest = stages
        .iter()
        .filter(|st| st.reduction.is_some())
        .map(|st| st.reduce.iter().map(|&d| d as u64).product::<u64>())
        .max()
        .unwrap_or(0);
    longest >= BLOCK_ROW_MIN || (nrows < BLOCK_REDUCE_OUTPUTS && longest >= BLOCK_REDUCE_MIN)
}

#[cfg(test)]
mod tests {
    use super::*;
    use lpac_ir::ReduceOp;
    use lpac_ir::kernel::{BufferId, ExprId, Reduction, Typed};

    fn sum_kernel(domain: &[usize], reduce: &[usize]) -> LoopKernel {
        LoopKernel {
            name: "sum".into(),
            domain: domain.to_vec(),
            reduce: reduce.to_vec(),
            exprs: vec![Typed { expr: Expr::Accumulated, dtype: DType::F32 }],
            reduction: Some(Reduction { op: ReduceOp::Sum, value: ExprId(0) }),
            outputs: vec![],
            nodes: vec![],
        }
    }

    #[test]
    fn few_outputs_with_long_reductions_use_blocks() {
        // The embedding gradient's sum of squares: 4,096 blocks of ~6,000.
        assert_eq!(block_reduce_shape(&sum_kernel(&[], &[32001, 768])), Some((4096, 6001)));
        // A few long rows: the blocks shared out, at most MAX_BLOCKS in all.
        let (slices, len) = block_reduce_shape(&sum_kernel(&[5], &[200_000])).unwrap();
        assert!(5 * slices <= MAX_BLOCKS && slices * len >= 200_000 && (slices - 1) * len < 200_000);
        // Short reductions, or many outputs: a warp per output.
        assert_eq!(block_reduce_shape(&sum_kernel(&[], &[1000])), None);
        assert_eq!(block_reduce_shape(&sum_kernel(&[4096], &[100_000])), None);
        // One slice when blocks would get less than a slice's worth.
        assert_eq!(block_reduce_shape(&sum_kernel(&[3], &[3000])), Some((1, 3000)));
    }

    /// A sum over the first axis of `[rows, cols]` (`column`) or the last.
    fn sum_of_loads(rows: usize, cols: usize, column: bool) -> LoopKernel {
        let (outputs, count) = if column { (cols, rows) } else { (rows, cols) };
        let strides = if column { vec![1, cols as i64] } else { vec![cols as i64, 1] };
        LoopKernel {
            exprs: vec![Typed {
                expr: Expr::Load { buffer: BufferId(0), index: IndexMap { offset: 0, strides } },
                dtype: DType::F32,
            }],
            ..sum_kernel(&[outputs], &[count])
        }
    }

    #[test]
    fn column_sums_with_many_outputs_take_a_thread_each() {
        // The head bias's gradient: 32,001 columns × 16 slices of 256 rows.
        assert!(thread_per_output(&sum_of_loads(256, 512_016, true)));
        // Rows (the reduction's step is 1), few columns, or long columns: a warp.
        assert!(!thread_per_output(&sum_of_loads(512_016, 256, false)));
        assert!(!thread_per_output(&sum_of_loads(4096, 768, true)));
        assert!(!thread_per_output(&sum_of_loads(100_000, 70_000, true)));
    }

    #[test]
    fn long_rows_take_a_block_each() {
        // Cross-entropy's 4,096 rows of 32,001; a few rows of 2,100; not
        // 4,096 rows of 768 (a norm), nor many rows of 2,100.
        assert!(rows_take_blocks(4096, &[sum_kernel(&[4096], &[32001])]));
        assert!(rows_take_blocks(12, &[sum_kernel(&[12], &[2100])]));
        assert!(!rows_take_blocks(4096, &[sum_kernel(&[4096], &[768])]));
        assert!(!rows_take_blocks(4096, &[sum_kernel(&[4096], &[2100])]));
    }
}
