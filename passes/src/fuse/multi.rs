//! Independent loop kernels in a row become one [`MultiKernel`].
//!
//! The optimiser updates every parameter with the same few operations: after
//! [`merge`](super::merge) that is one kernel per parameter, dozens of them,
//! most small (a bias has a few hundred elements). Run one by one, each is a
//! dispatch and the small ones use one thread. As one kernel — every
//! parameter's elements in one pool of work shared among the threads — the
//! whole update is one dispatch (what PyTorch calls a multi-tensor apply).
//! The same holds for the per-parameter sums of squares of the gradient
//! norm, and for any other run of consecutive kernels where none reads what
//! another writes.

use lpac_ir::kernel::{Kernel, LoopKernel, MultiKernel, Program};

/// Groups runs of independent consecutive loop kernels (see the module docs).
pub fn group_independent(program: &mut Program) {
    let kernels = std::mem::take(&mut program.kernels);
    let mut run: Vec<LoopKernel> = Vec::new();
    for kernel in kernels {
        match kernel {
            Kernel::Loop(k) if independent_of(&run, &k) => run.push(k),
            other => {
                flush(program, &mut run);
                match other {
                    Kernel::Loop(k) => run.push(k),
                    other => program.kernels.push(other),
                }
            }
        }
    }
    flush(program, &mut run);
}

/// `k` reads nothing the run writes (the run reads nothing `k` writes:
/// every buffer is written once, after the kernels that read it cannot come
/// before it).
fn independent_of(run: &[LoopKernel], k: &LoopKernel) -> bool {
    let reads = k.reads();
    !run.iter().any(|m| m.outputs.iter().any(|(b, _)| reads.contains(b)))
}

fn flush(program: &mut Program, run: &mut Vec<LoopKernel>) {
    match run.len() {
        0 => {}
        1 => program.kernels.push(Kernel::Loop(run.pop().expect("one"))),
        n => {
            let members = std::mem::take(run);
            let first = &members[0].name;
            let name = format!("multi({first}, {} more)", n - 1);
            program.kernels.push(Kernel::Multi(MultiKernel { name, members }));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use lpac_ir::kernel::{BufferId, Expr, ExprId, IndexMap, Typed};
    use lpac_ir::types::DType;

    /// `to[i] = from[i]` over [4].
    fn copy(from: u32, to: u32) -> Kernel {
        Kernel::Loop(LoopKernel {
            name: format!("copy{from}"),
            domain: vec![4],
            reduce: vec![],
            exprs: vec![Typed {
                expr: Expr::Load { buffer: BufferId(from), index: IndexMap { offset: 0, strides: vec![1] } },
                dtype: DType::F32,
            }],
            reduction: None,
            outputs: vec![(BufferId(to), ExprId(0))],
            nodes: vec![],
        })
    }

    #[test]
    fn independent_runs_group_and_a_dependency_splits_them() {
        // 0->1, 0->2 independent; 1->3 reads what the run wrote.
        let mut p = Program { kernels: vec![copy(0, 1), copy(0, 2), copy(1, 3), copy(0, 4)], ..Program::default() };
        group_independent(&mut p);
        let sizes: Vec<usize> = p
            .kernels
            .iter()
            .map(|k| match k {
                Kernel::Multi(m) => {
                    m.validate().unwrap();
                    m.members.len()
                }
                _ => 1,
            })
            .collect();
        assert_eq!(sizes, [2, 2]);
        // A hand-made dependent group is refused by the check.
        let Kernel::Loop(a) = copy(0, 1) else { unreachable!() };
        let Kernel::Loop(b) = copy(1, 3) else { unreachable!() };
        let bad = MultiKernel { name: "bad".into(), members: vec![a, b] };
        assert!(bad.validate().unwrap_err().contains("b1"));
    }
}
