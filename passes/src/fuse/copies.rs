//! Identity copies removed.
//!
//! Fusion can leave a loop kernel that stores a buffer's elements unchanged
//! into a buffer of the same size and layout: a reshape that had to get its
//! own buffer because its operand (a permute) needed one first. Every
//! buffer is written by one kernel and never changed afterwards, so the copy
//! can be read in place of the original: readers of the copy read the
//! original instead and the kernel goes. (The copy's buffer is then touched
//! by nothing and gets no memory.)

use std::collections::HashMap;

use lpac_ir::kernel::{BufferId, BufferKind, Expr, Kernel, LoopKernel, Program};

/// Removes identity-copy kernels and redirects their readers (see the
/// module docs).
pub fn forward_copies(program: &mut Program) {
    let mut alias: HashMap<BufferId, BufferId> = HashMap::new();
    let kernels = std::mem::take(&mut program.kernels);
    for mut kernel in kernels {
        redirect_reads(&mut kernel, &alias);
        if let Kernel::Loop(k) = &kernel
            && let Some((src, dst)) = identity_copy(program, k)
        {
            alias.insert(dst, src);
            continue;
        }
        program.kernels.push(kernel);
    }
    for (_, b) in program.outputs.iter_mut() {
        if let Some(src) = alias.get(b) {
            *b = *src;
        }
    }
}

/// `(source, destination)` when `k` only copies one temp buffer's elements,
/// in order, into another of the same type.
fn identity_copy(program: &Program, k: &LoopKernel) -> Option<(BufferId, BufferId)> {
    let [(dst, e)] = k.outputs.as_slice() else { return None };
    if k.reduction.is_some() {
        return None;
    }
    let Expr::Load { buffer: src, index } = &k.exprs[e.index()].expr else { return None };
    let (s, d) = (program.buffer(*src), program.buffer(*dst));
    let contiguous = index.offset == 0 && index.strides == row_major(&k.domain);
    let same =
        s.ty.dtype == d.ty.dtype && s.ty.numel() == d.ty.numel() && d.ty.numel() == k.domain.iter().product::<usize>();
    // A parameter or input could be overwritten between steps by the
    // caller; only temps are forwarded.
    (contiguous && same && s.kind == BufferKind::Temp && d.kind == BufferKind::Temp).then_some((*src, *dst))
}

fn row_major(shape: &[usize]) -> Vec<i64> {
    lpac_ir::types::strides(shape).into_iter().map(|s| s as i64).collect()
}

fn redirect_reads(kernel: &mut Kernel, alias: &HashMap<BufferId, BufferId>) {
    let fix = |b: &mut BufferId| {
        if let Some(src) = alias.get(b) {
            *b = *src;
        }
    };
    let fix_loop = |k: &mut LoopKernel| {
        for t in &mut k.exprs {
            if let Expr::Load { buffer, .. } | Expr::LoadIf { buffer, .. } = &mut t.expr {
                fix(buffer);
            }
        }
    };
    match kernel {
        Kernel::Loop(k) => fix_loop(k),
        Kernel::Rows(r) => {
            for stage in &mut r.stages {
                match stage {
                    lpac_ir::kernel::RowStage::Loop(l) => fix_loop(l),
                    lpac_ir::kernel::RowStage::Gemm(g) => {
                        fix(&mut g.a.buffer);
                        fix(&mut g.b.buffer);
                    }
                }
            }
        }
        Kernel::Multi(m) => m.members.iter_mut().for_each(fix_loop),
        Kernel::Gemm(g) => {
            fix(&mut g.a.buffer);
            fix(&mut g.b.buffer);
        }
        Kernel::Attention(a) => {
            for operand in [&mut a.q, &mut a.k, &mut a.v] {
                fix(&mut operand.buffer);
            }
            if let lpac_ir::kernel::AttentionPass::Backward { out, dout, .. } = &mut a.pass {
                fix(&mut out.buffer);
                fix(&mut dout.buffer);
                if let Some(lse) = &mut a.lse {
                    fix(lse);
                }
            }
        }
        Kernel::Gather { table, indices, .. } => {
            fix(table);
            fix(indices);
        }
        Kernel::ScatterAdd { indices, src, .. } => {
            fix(indices);
            fix(src);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use lpac_ir::kernel::{ExprId, IndexMap, Typed};
    use lpac_ir::types::{DType, TensorType};

    fn load(buffer: BufferId, strides: Vec<i64>) -> Typed {
        Typed { expr: Expr::Load { buffer, index: IndexMap { offset: 0, strides } }, dtype: DType::F32 }
    }

    fn copy(name: &str, from: BufferId, to: BufferId, strides: Vec<i64>) -> Kernel {
        Kernel::Loop(LoopKernel {
            name: name.into(),
            domain: vec![2, 3],
            reduce: vec![],
            exprs: vec![load(from, strides)],
            reduction: None,
            outputs: vec![(to, ExprId(0))],
            nodes: vec![],
        })
    }

    #[test]
    fn identity_copies_go_and_their_readers_read_the_original() {
        let mut p = Program::default();
        let ty = TensorType::new(DType::F32, vec![2, 3]);
        let x = p.add_buffer(ty.clone(), BufferKind::Input("x".into()));
        let a = p.add_buffer(ty.clone(), BufferKind::Temp);
        let b = p.add_buffer(ty.clone(), BufferKind::Temp);
        let c = p.add_buffer(ty.clone(), BufferKind::Temp);
        p.kernels.push(copy("transpose-ish", x, a, vec![1, 2])); // not contiguous: stays
        p.kernels.push(copy("copy", a, b, vec![3, 1])); // identity: goes
        p.kernels.push(copy("use", b, c, vec![1, 2]));
        p.outputs = vec![("b".into(), b), ("c".into(), c)];
        forward_copies(&mut p);
        let names: Vec<&str> = p.kernels.iter().map(|k| k.name()).collect();
        assert_eq!(names, ["transpose-ish", "use"]);
        assert_eq!(p.kernels[1].reads(), vec![a]);
        assert_eq!(p.outputs, vec![("b".to_string(), a), ("c".to_string(), c)]);
        // A copy of an input is kept (the caller may rewrite inputs).
        let mut q = Program::default();
        let x = q.add_buffer(ty.clone(), BufferKind::Input("x".into()));
        let y = q.add_buffer(ty, BufferKind::Temp);
        q.kernels.push(copy("copy", x, y, vec![3, 1]));
        forward_copies(&mut q);
        assert_eq!(q.kernels.len(), 1);
    }
}
