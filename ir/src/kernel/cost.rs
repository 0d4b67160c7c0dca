//! What a kernel costs, counted from its description: arithmetic operations
//! and bytes moved per run. `lpac kernels` lists them; the CUDA profile
//! divides them by measured time (achieved GB/s and GFLOP/s).

use super::{AttentionKernel, AttentionPass, BufferId, Expr, GemmKernel, Kernel, LoopKernel, Program, RowStage};

impl Kernel {
    /// Arithmetic operations per run: a product's multiply-adds ×2, a loop
    /// kernel's arithmetic expressions × iterations (a reduction counts its
    /// combine), attention's tile products; gather and scatter-add none.
    pub fn flops(&self) -> u64 {
        match self {
            Kernel::Loop(l) => loop_flops(l),
            Kernel::Rows(r) => r.stages.iter().map(stage_flops).sum(),
            Kernel::Multi(m) => m.members.iter().map(loop_flops).sum(),
            Kernel::Attention(a) => attention_flops(a),
            Kernel::Gemm(g) => gemm_flops(g),
            Kernel::Gather { .. } | Kernel::ScatterAdd { .. } => 0,
        }
    }

    /// Bytes moved per run, each distinct buffer read once and each written
    /// once: the least memory traffic the kernel can have. A gather reads
    /// only the rows it picks — at most its output's size — not its whole
    /// table (an embedding lookup of 4,096 tokens reads 12 MB of a 98 MB
    /// table).
    pub fn bytes_moved(&self, program: &Program) -> u64 {
        let size = |b: BufferId| program.buffer(b).ty.size_bytes() as u64;
        let mut ids = self.reads();
        ids.sort();
        ids.dedup();
        ids.extend(self.writes());
        let all: u64 = ids.iter().map(|&b| size(b)).sum();
        match self {
            Kernel::Gather { table, out, .. } => all - size(*table) + size(*table).min(size(*out)),
            _ => all,
        }
    }
}

fn gemm_flops(g: &GemmKernel) -> u64 {
    2 * (g.m * g.k * g.n) as u64 * g.batch.iter().product::<usize>() as u64
}

fn stage_flops(s: &RowStage) -> u64 {
    match s {
        RowStage::Loop(l) => loop_flops(l),
        RowStage::Gemm(g) => gemm_flops(g),
    }
}

fn loop_flops(l: &LoopKernel) -> u64 {
    let arithmetic =
        l.exprs.iter().filter(|t| matches!(t.expr, Expr::Unary(..) | Expr::Binary(..) | Expr::Select(..))).count()
            as u64;
    let domain: u64 = l.domain.iter().product::<usize>() as u64;
    let reduce: u64 = l.reduce.iter().product::<usize>() as u64;
    domain * reduce * (arithmetic + u64::from(l.reduction.is_some()))
}

/// Multiply-adds of the tile products (×2), counting only the pairs a
/// causal mask leaves (about half); the backward pass recomputes the scores
/// twice (log-sum-exp sweep and gradient sweep).
fn attention_flops(a: &AttentionKernel) -> u64 {
    let batches: u64 = a.batch.iter().product::<usize>() as u64;
    let pairs = (a.tq * a.tk) as u64 / if a.causal { 2 } else { 1 };
    let (d, dv) = (a.d as u64, a.dv as u64);
    let per_pair = match &a.pass {
        AttentionPass::Forward { .. } => d + dv,
        AttentionPass::Backward { .. } => 2 * d + 2 * dv + 2 * d,
    };
    2 * batches * pairs * per_pair
}
