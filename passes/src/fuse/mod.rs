//! `fuse`: from a graph to a kernel program (the kernel IR of
//! [`lpac_ir::kernel`]).
//!
//! 1. **What gets a buffer.** Inputs and parameters; the results of matmuls,
//!    gathers, scatter-adds and reductions; graph outputs; and any value used
//!    by more than one node (unless it is cheap to recompute: constants,
//!    iotas, views of buffers, and small elementwise values used a few times). Everything else — elementwise chains,
//!    broadcasts, permutes, slices, reshapes, pads, concats, constants,
//!    iotas, random numbers — is inlined into the kernel of the value that
//!    uses it.
//! 2. **Views are index maps.** A load through broadcasts, permutes, slices
//!    and (splitting or merging) reshapes is one affine [`IndexMap`](lpac_ir::kernel::IndexMap) over the
//!    kernel's loop variables: a transpose or a broadcast is a stride, never
//!    a copy. Pads and concats become guarded loads. Where a view cannot be
//!    expressed (a reshape that splits a non-contiguous axis, a pad of a
//!    computed value, a matmul operand that is not a strided buffer), the
//!    value under it gets a buffer: the builder asks for it, and fusion runs
//!    again until every kernel can be built.
//! 3. **Kernels.** A matmul becomes a [`GemmKernel`](lpac_ir::kernel::GemmKernel) whose operand strides
//!    absorb transposes and shared (stride-0) batches; a reduction a loop
//!    kernel with inner reduce loops, with its operand's producers fused in
//!    (so `sum(exp(x - m))` reads `x` and `m` once); gather and scatter-add
//!    their own kernels; every other buffer a loop kernel over its shape.
//! 4. **No identity copies** ([`copies`]): a kernel that only copies a
//!    buffer unchanged is dropped and its readers read the original.
//!    Attention results are stored straight into the layout a following
//!    permutation copy would produce ([`layouts`]).
//! 5. **Column reductions in two stages** ([`split`]): a long reduction over
//!    outer axes (a bias gradient) becomes partial sums over row chunks and
//!    a short sum of the partials, so no loop walks thousands of rows.
//! 6. **Row groups** ([`rows`]): consecutive kernels that only combine
//!    values of the same row (softmax, norms, cross-entropy, forward and
//!    backward) become one kernel that runs them a chunk of rows at a time.
//! 7. **Multi-output kernels** ([`merge`]): an elementwise value that is
//!    stored (an output) and also read by a later kernel over the same
//!    domain is computed inside that kernel, which stores it too.
//! 8. **One dispatch for independent kernels** ([`multi`]): runs of
//!    consecutive kernels where none reads what another writes — the
//!    optimiser's update of every parameter — become one kernel.

mod build;
pub mod copies;
pub mod index;
pub mod layouts;
pub mod merge;
pub mod multi;
pub mod rows;
pub mod split;

use std::collections::{BTreeSet, HashMap};

use lpac_ir::kernel::{BufferId, BufferKind, Program};
use lpac_ir::{Graph, NodeId, Op};

pub use build::FuseError;

/// Lowers a graph to a kernel program.
pub fn fuse(graph: &Graph) -> Result<Program, FuseError> {
    let mut forced: BTreeSet<NodeId> = BTreeSet::new();
    // Each round either succeeds or adds at least one node to `forced`, so
    // this ends after at most one round per node.
    for _ in 0..=graph.len() {
        let materialized = materialized(graph, &forced);
        match build::Builder::new(graph, &materialized).build() {
            Ok(mut program) => {
                copies::forward_copies(&mut program);
                layouts::store_through_permutes(&mut program);
                split::split_column_reductions(&mut program);
                merge::merge_producers(&mut program);
                rows::group_rows(&mut program);
                multi::group_independent(&mut program);
                return Ok(program);
            }
            Err(build::Failure::NeedsBuffer(node)) => {
                if !forced.insert(node) {
                    return Err(FuseError(format!("cannot give {node} a buffer (internal error)")));
                }
            }
            Err(build::Failure::Error(e)) => return Err(e),
        }
    }
    Err(FuseError("fusion did not converge (internal error)".into()))
}

/// The nodes that get buffers (see the module docs), plus `forced`.
fn materialized(graph: &Graph, forced: &BTreeSet<NodeId>) -> Vec<bool> {
    let users = graph.users();
    let outputs: BTreeSet<NodeId> = graph.outputs.iter().map(|o| o.node).collect();
    let mut materialized = vec![false; graph.len()];
    // The arithmetic an inlined node costs, counting its inlined producers.
    let mut inline_cost = vec![0usize; graph.len()];
    for id in graph.ids() {
        let node = graph.node(id);
        let always = matches!(
            node.op,
            Op::Input { .. }
                | Op::Param { .. }
                | Op::MatMul
                | Op::Gather
                | Op::ScatterAdd
                | Op::Reduce { .. }
                | Op::Attention { .. }
                | Op::AttentionGrad { .. }
        );
        let own = usize::from(matches!(node.op, Op::Unary(_) | Op::Binary(_) | Op::Select | Op::Cast));
        inline_cost[id.index()] = own
            + node.inputs.iter().filter(|i| !materialized[i.index()]).map(|i| inline_cost[i.index()]).sum::<usize>();
        let uses = users[id.index()].len();
        let shared = uses > 1 && !cheap(graph, id) && !recomputable(inline_cost[id.index()], uses);
        materialized[id.index()] = always || shared || outputs.contains(&id) || forced.contains(&id);
    }
    materialized
}

/// A value used a few times that costs a few operations is cheaper to
/// recompute in each user than to store and load again (a masked, scaled
/// score feeds both the row maximum and the exponential).
fn recomputable(cost: usize, uses: usize) -> bool {
    cost <= RECOMPUTE_MAX_OPS && uses <= RECOMPUTE_MAX_USES
}

const RECOMPUTE_MAX_OPS: usize = 3;
const RECOMPUTE_MAX_USES: usize = 3;

/// Values recomputed wherever they are used rather than stored: leaves that
/// are formulas of the index, and views (their cost is in what they view).
fn cheap(graph: &Graph, id: NodeId) -> bool {
    matches!(
        graph.node(id).op,
        Op::Const { .. } | Op::Iota { .. } | Op::Broadcast { .. } | Op::Reshape | Op::Permute { .. } | Op::Slice { .. }
    )
}

/// How many kernels of each kind, and the buffers: for summaries.
pub fn summary(program: &Program) -> String {
    let mut counts: HashMap<&str, usize> = HashMap::new();
    for k in &program.kernels {
        let kind = k.kind();
        *counts.entry(kind).or_default() += 1;
    }
    let mut kinds: Vec<_> = counts.into_iter().collect();
    kinds.sort();
    let temps = program.buffers.iter().filter(|b| b.kind == BufferKind::Temp).count();
    let parts: Vec<String> = kinds.iter().map(|(k, n)| format!("{n} {k}")).collect();
    format!("{} kernels ({}), {} temporary buffers", program.kernels.len(), parts.join(", "), temps)
}

/// The buffer of a graph output, by name.
pub fn output_buffer(program: &Program, name: &str) -> Option<BufferId> {
    program.outputs.iter().find(|(n, _)| n == name).map(|(_, b)| *b)
}
