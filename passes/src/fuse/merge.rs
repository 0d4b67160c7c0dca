//! Elementwise producers merged into their consumer (multi-output
//! kernels).
//!
//! A value that is both an output of the step and an operand of a later
//! elementwise kernel over the same domain gets a buffer, and so its own
//! kernel: AdamW's new first and second moments are outputs and also feed
//! the parameter update. Computing them inside the consumer — which then
//! stores them as extra outputs — saves a kernel and a pass over memory:
//!
//! ```text
//! k1: m' = b1·m + (1−b1)·g            store m'
//! k2: v' = b2·v + (1−b2)·g²           store v'
//! k3: p' = p − lr·m'/(sqrt(v')+eps)   store p'
//!   ⇒
//! k3: m' = …; v' = …; p' = …          store m', v', p'
//! ```
//!
//! A producer is merged into the first later kernel that reads its output
//! when that kernel is an elementwise loop kernel over the same domain
//! reading the output at the same element (a row-major identity index), and
//! no kernel in between reads it (its value now appears later).

use lpac_ir::kernel::{BufferId, Expr, ExprId, Kernel, LoopKernel, Program, Typed};

/// Merges producers into consumers (see the module docs).
pub fn merge_producers(program: &mut Program) {
    let mut i = 0;
    while i < program.kernels.len() {
        if let Some(j) = merge_target(program, i) {
            let Kernel::Loop(producer) = program.kernels.remove(i) else { unreachable!("checked") };
            let Kernel::Loop(consumer) = &mut program.kernels[j - 1] else { unreachable!("checked") };
            *consumer = merged(&producer, consumer);
            // The kernel now at `i` may merge in turn.
            continue;
        }
        i += 1;
    }
}

/// The index of the kernel kernel `i` merges into, if any.
fn merge_target(program: &Program, i: usize) -> Option<usize> {
    let Kernel::Loop(p) = &program.kernels[i] else { return None };
    if p.reduction.is_some() {
        return None;
    }
    let outputs: Vec<BufferId> = p.outputs.iter().map(|(b, _)| *b).collect();
    let (j, reader) =
        program.kernels.iter().enumerate().skip(i + 1).find(|(_, k)| k.reads().iter().any(|b| outputs.contains(b)))?;
    let Kernel::Loop(c) = reader else { return None };
    if c.reduction.is_some() || c.domain != p.domain {
        return None;
    }
    let identity = row_major(&c.domain);
    let reads_ok = c.exprs.iter().all(|t| match &t.expr {
        Expr::Load { buffer, index } if outputs.contains(buffer) => index.offset == 0 && index.strides == identity,
        Expr::LoadIf { buffer, .. } => !outputs.contains(buffer),
        _ => true,
    });
    reads_ok.then_some(j)
}

fn row_major(shape: &[usize]) -> Vec<i64> {
    lpac_ir::types::strides(shape).into_iter().map(|s| s as i64).collect()
}

/// `consumer` computing `producer`'s expressions first and storing its
/// outputs too; its loads of them read the computed values instead.
fn merged(producer: &LoopKernel, consumer: &LoopKernel) -> LoopKernel {
    let mut exprs: Vec<Typed> = producer.exprs.clone();
    let stored: Vec<(BufferId, ExprId)> = producer.outputs.clone();
    let mut remap: Vec<ExprId> = Vec::with_capacity(consumer.exprs.len());
    for t in &consumer.exprs {
        let id = match &t.expr {
            Expr::Load { buffer, .. } if stored.iter().any(|(b, _)| b == buffer) => {
                stored.iter().find(|(b, _)| b == buffer).expect("found").1
            }
            other => {
                let f = |e: ExprId| remap[e.index()];
                let expr = match other {
                    Expr::Unary(op, a) => Expr::Unary(*op, f(*a)),
                    Expr::Binary(op, a, b) => Expr::Binary(*op, f(*a), f(*b)),
                    Expr::Select(c, a, b) => Expr::Select(f(*c), f(*a), f(*b)),
                    Expr::Cast(a) => Expr::Cast(f(*a)),
                    leaf => leaf.clone(),
                };
                exprs.push(Typed { expr, dtype: t.dtype });
                ExprId(exprs.len() as u32 - 1)
            }
        };
        remap.push(id);
    }
    let mut outputs: Vec<(BufferId, ExprId)> = consumer.outputs.iter().map(|(b, e)| (*b, remap[e.index()])).collect();
    outputs.extend(stored);
    let mut nodes = producer.nodes.clone();
    nodes.extend(&consumer.nodes);
    LoopKernel {
        name: format!("{}+{}", producer.name, consumer.name),
        domain: consumer.domain.clone(),
        reduce: Vec::new(),
        exprs,
        reduction: None,
        outputs,
        nodes,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use lpac_ir::kernel::{BufferKind, IndexMap};
    use lpac_ir::op::BinaryOp;
    use lpac_ir::types::{DType, TensorType};

    fn load(buffer: BufferId, strides: Vec<i64>) -> Typed {
        Typed { expr: Expr::Load { buffer, index: IndexMap { offset: 0, strides } }, dtype: DType::F32 }
    }

    /// out = a + b over [2, 3].
    fn add(name: &str, a: (BufferId, Vec<i64>), b: (BufferId, Vec<i64>), out: BufferId) -> Kernel {
        Kernel::Loop(LoopKernel {
            name: name.into(),
            domain: vec![2, 3],
            reduce: vec![],
            exprs: vec![
                load(a.0, a.1),
                load(b.0, b.1),
                Typed { expr: Expr::Binary(BinaryOp::Add, ExprId(0), ExprId(1)), dtype: DType::F32 },
            ],
            reduction: None,
            outputs: vec![(out, ExprId(2))],
            nodes: vec![],
        })
    }

    #[test]
    fn a_producer_read_at_the_same_element_is_merged() {
        let mut p = Program::default();
        let ty = TensorType::new(DType::F32, vec![2, 3]);
        let x = p.add_buffer(ty.clone(), BufferKind::Input("x".into()));
        let m = p.add_buffer(ty.clone(), BufferKind::Temp);
        let y = p.add_buffer(ty.clone(), BufferKind::Temp);
        let id = vec![3, 1];
        p.kernels = vec![add("m", (x, id.clone()), (x, id.clone()), m), add("y", (m, id.clone()), (x, id.clone()), y)];
        p.outputs = vec![("m".into(), m), ("y".into(), y)];
        merge_producers(&mut p);
        assert_eq!(p.kernels.len(), 1);
        let Kernel::Loop(k) = &p.kernels[0] else { panic!() };
        assert_eq!(k.name, "m+y");
        assert_eq!(k.outputs.iter().map(|(b, _)| *b).collect::<Vec<_>>(), vec![y, m]);
        assert!(k.reads().iter().all(|b| *b == x));
        // Read transposed (another element): not merged.
        let mut q = p.clone();
        q.kernels = vec![add("m", (x, id.clone()), (x, id.clone()), m), add("y", (m, vec![1, 2]), (x, id), y)];
        merge_producers(&mut q);
        assert_eq!(q.kernels.len(), 2);
    }
}
