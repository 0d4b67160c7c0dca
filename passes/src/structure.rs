//! Structural analyses: finding attention and the projections around it from
//! the shape of the graph, never from parameter names, and sorting
//! parameters into groups (embeddings, attention, ffn, norms, head).
//!
//! An attention site is a matmul `mix = P @ V` whose left operand `P` is
//! computed — through elementwise ops, reductions and data movement only —
//! from exactly one other matmul `S = Q @ Kᵀ` of two activations, with an
//! `exp` and a sum-reduction in between (a softmax, however it is written).
//! Its projections are the parameter matmuls that produce Q, K and V (through
//! head splitting, rotary embeddings and the like), and the one that consumes
//! `mix` after the heads are merged.

use std::collections::{BTreeMap, HashSet};

use lpac_ir::{BinaryOp, Graph, NodeId, Op, ReduceOp, UnaryOp};

/// What a projection does in its attention site.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Role {
    Query,
    Key,
    Value,
    Output,
}

impl Role {
    pub fn name(self) -> &'static str {
        match self {
            Role::Query => "q",
            Role::Key => "k",
            Role::Value => "v",
            Role::Output => "o",
        }
    }
}

/// A linear map applied by one matmul with a parameter (or, once factored,
/// a chain of such matmuls: `x @ A @ B`), plus the biases added to it.
#[derive(Clone, Debug, PartialEq)]
pub struct Projection {
    /// The matmuls in order; the first consumes `input`.
    pub matmuls: Vec<NodeId>,
    /// The weight parameter of each matmul (same order).
    pub weights: Vec<NodeId>,
    /// Bias parameters added to any matmul of the chain.
    pub biases: Vec<NodeId>,
    /// The activation the projection reads.
    pub input: NodeId,
}

#[derive(Clone, Debug, PartialEq)]
pub struct AttentionSite {
    /// `S = Q @ Kᵀ`
    pub scores: NodeId,
    /// `P @ V`
    pub mix: NodeId,
    pub projections: Vec<(Role, Projection)>,
}

/// Facts about every node that the analyses share.
struct Facts<'g> {
    graph: &'g Graph,
    users: Vec<Vec<NodeId>>,
    /// Depends on a step input (is an activation, not a parameter expression).
    data: Vec<bool>,
}

impl<'g> Facts<'g> {
    fn new(graph: &'g Graph) -> Self {
        let mut data = vec![false; graph.len()];
        for id in graph.ids() {
            let node = graph.node(id);
            data[id.index()] = matches!(node.op, Op::Input { .. }) || node.inputs.iter().any(|i| data[i.index()]);
        }
        Facts { graph, users: graph.users(), data }
    }

    fn op(&self, id: NodeId) -> &Op {
        &self.graph.node(id).op
    }

    fn inputs(&self, id: NodeId) -> &[NodeId] {
        &self.graph.node(id).inputs
    }

    /// The parameter a value is, looking through views and casts.
    fn param_behind(&self, mut id: NodeId) -> Option<NodeId> {
        loop {
            match self.op(id) {
                Op::Param { .. } => return Some(id),
                Op::Reshape | Op::Broadcast { .. } | Op::Cast | Op::Permute { .. } => id = self.inputs(id)[0],
                _ => return None,
            }
        }
    }

    /// A matmul whose right operand is a parameter.
    fn is_param_matmul(&self, id: NodeId) -> bool {
        matches!(self.op(id), Op::MatMul) && self.param_behind(self.inputs(id)[1]).is_some()
    }
}

/// Every attention site of the graph, in graph order.
pub fn find_attention(graph: &Graph) -> Vec<AttentionSite> {
    let facts = Facts::new(graph);
    graph.ids().filter_map(|id| attention_at(&facts, id)).collect()
}

fn attention_at(f: &Facts, mix: NodeId) -> Option<AttentionSite> {
    if !matches!(f.op(mix), Op::MatMul) || !f.data[f.inputs(mix)[1].index()] {
        return None;
    }
    let scores = softmax_source(f, f.inputs(mix)[0])?;
    let mut projections = Vec::new();
    let starts =
        [(Role::Query, f.inputs(scores)[0]), (Role::Key, f.inputs(scores)[1]), (Role::Value, f.inputs(mix)[1])];
    for (role, start) in starts {
        if let Some(p) = projection_into(f, start, &[scores, mix]) {
            projections.push((role, p));
        }
    }
    if let Some(p) = projection_out_of(f, mix) {
        projections.push((Role::Output, p));
    }
    Some(AttentionSite { scores, mix, projections })
}

/// If `p` is a softmax of a score matmul, that matmul: the region behind `p`
/// (stopping at matmuls and leaves) holds an `exp` and a sum, and its only
/// matmul frontier is one product of two activations.
fn softmax_source(f: &Facts, p: NodeId) -> Option<NodeId> {
    let (mut has_exp, mut has_sum) = (false, false);
    let mut frontier = HashSet::new();
    let mut seen = HashSet::new();
    let mut stack = vec![p];
    while let Some(id) = stack.pop() {
        if !seen.insert(id) || !f.data[id.index()] {
            continue;
        }
        match f.op(id) {
            Op::MatMul => {
                frontier.insert(id);
                continue;
            }
            Op::Unary(UnaryOp::Exp) => has_exp = true,
            Op::Reduce { op: ReduceOp::Sum, .. } => has_sum = true,
            Op::Input { .. } | Op::Gather | Op::ScatterAdd => return None,
            _ => {}
        }
        stack.extend(f.inputs(id).iter().copied());
    }
    let s = (frontier.len() == 1).then(|| *frontier.iter().next().unwrap_or(&p))?;
    let both_activations = f.inputs(s).iter().all(|i| f.data[i.index()]);
    (has_exp && has_sum && both_activations).then_some(s)
}

/// The projection that produces `start`: walk back through data movement and
/// elementwise ops (head splitting, rotary embeddings) to parameter matmuls.
/// Every node passed on the way must be used only within the walk (or by the
/// attention itself), so a residual stream is never mistaken for a projection.
fn projection_into(f: &Facts, start: NodeId, consumers: &[NodeId]) -> Option<Projection> {
    let mut path = HashSet::new();
    let mut found = Vec::new();
    let mut stack = vec![start];
    while let Some(id) = stack.pop() {
        if !f.data[id.index()] || !path.insert(id) {
            continue;
        }
        if let Some(end) = bias_or_matmul_end(f, id) {
            found.push(end);
            continue;
        }
        match f.op(id) {
            Op::Reshape | Op::Permute { .. } | Op::Slice { .. } | Op::Concat { .. } | Op::Broadcast { .. } => {}
            Op::Unary(_) | Op::Binary(_) | Op::Select | Op::Cast | Op::Pad { .. } => {}
            _ => return None,
        }
        stack.extend(f.inputs(id).iter().copied());
    }
    let inside = |u: &NodeId| path.contains(u) || consumers.contains(u);
    let private = path.iter().all(|id| f.users[id.index()].iter().all(inside));
    if found.len() != 1 || !private {
        return None;
    }
    chain_ending_at(f, found[0])
}

/// If `id` is the end of a projection — a parameter matmul, or a bias added
/// to one — the node where the projection's chain ends.
fn bias_or_matmul_end(f: &Facts, id: NodeId) -> Option<NodeId> {
    if f.is_param_matmul(id) {
        return Some(id);
    }
    if let Op::Binary(BinaryOp::Add) = f.op(id) {
        let [a, b] = [f.inputs(id)[0], f.inputs(id)[1]];
        let biased = |x: NodeId, y: NodeId| f.is_param_matmul(x) && f.param_behind(y).is_some();
        if biased(a, b) || biased(b, a) {
            return Some(id);
        }
    }
    None
}

/// Collects the chain of parameter matmuls (and their biases) that ends at
/// `end`, walking back while each link's input is itself a parameter matmul
/// (optionally plus bias) used only by the next link.
fn chain_ending_at(f: &Facts, end: NodeId) -> Option<Projection> {
    let mut matmuls = Vec::new();
    let mut weights = Vec::new();
    let mut biases = Vec::new();
    let mut id = end;
    loop {
        let (matmul, bias) = split_bias(f, id)?;
        matmuls.push(matmul);
        weights.push(f.param_behind(f.inputs(matmul)[1])?);
        biases.extend(bias);
        let input = f.inputs(matmul)[0];
        let single_use = f.users[input.index()].len() == 1;
        if single_use && bias_or_matmul_end(f, input).is_some() {
            id = input;
            continue;
        }
        matmuls.reverse();
        weights.reverse();
        biases.reverse();
        return Some(Projection { matmuls, weights, biases, input });
    }
}

/// A projection end as (matmul, bias parameter if any).
fn split_bias(f: &Facts, id: NodeId) -> Option<(NodeId, Option<NodeId>)> {
    if f.is_param_matmul(id) {
        return Some((id, None));
    }
    let [a, b] = [f.inputs(id)[0], f.inputs(id)[1]];
    if f.is_param_matmul(a) {
        return Some((a, f.param_behind(b)));
    }
    Some((b, f.param_behind(a)))
}

/// The projection that consumes the attention output: follow single users
/// through data movement to a parameter matmul, then along its chain.
fn projection_out_of(f: &Facts, mix: NodeId) -> Option<Projection> {
    let mut id = mix;
    loop {
        let users = &f.users[id.index()];
        if users.len() != 1 {
            return None;
        }
        let next = users[0];
        match f.op(next) {
            Op::Reshape | Op::Permute { .. } => id = next,
            Op::MatMul if f.inputs(next)[0] == id && f.is_param_matmul(next) => return chain_starting_at(f, next),
            _ => return None,
        }
    }
}

/// The chain of parameter matmuls that starts at `first`, with its biases.
fn chain_starting_at(f: &Facts, first: NodeId) -> Option<Projection> {
    let mut end = first;
    loop {
        let users = &f.users[end.index()];
        if users.len() != 1 {
            break;
        }
        let next = users[0];
        let is_bias_add = matches!(f.op(next), Op::Binary(BinaryOp::Add)) && bias_or_matmul_end(f, next) == Some(next);
        let is_next_link = f.is_param_matmul(next) && f.inputs(next)[0] == end;
        if is_bias_add || is_next_link {
            end = next;
        } else {
            break;
        }
    }
    chain_ending_at(f, end)
}

/// The groups `lpac stats` reports parameters in.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ParamGroup {
    Embeddings,
    Attention,
    Ffn,
    Norms,
    Head,
    Other,
}

impl ParamGroup {
    pub const ALL: [ParamGroup; 6] = [
        ParamGroup::Embeddings,
        ParamGroup::Attention,
        ParamGroup::Ffn,
        ParamGroup::Norms,
        ParamGroup::Head,
        ParamGroup::Other,
    ];

    pub fn name(self) -> &'static str {
        match self {
            ParamGroup::Embeddings => "embeddings",
            ParamGroup::Attention => "attention",
            ParamGroup::Ffn => "ffn",
            ParamGroup::Norms => "norms",
            ParamGroup::Head => "head",
            ParamGroup::Other => "other",
        }
    }
}

/// Sorts every parameter into a group, from structure:
/// - attention: the weights and biases of the projections of attention sites;
/// - head: the parameter matmuls nearest the first output (the loss), with biases;
/// - embeddings: gather tables, and other parameters of rank 2 or more that
///   no matmul uses (learned positions);
/// - ffn: every other parameter matmul's weights and biases;
/// - norms: the remaining vectors (scales and shifts);
/// - other: anything else.
pub fn param_groups(graph: &Graph) -> BTreeMap<String, ParamGroup> {
    let f = Facts::new(graph);
    let mut group: BTreeMap<NodeId, ParamGroup> = BTreeMap::new();
    for site in find_attention(graph) {
        for (_, p) in &site.projections {
            for &w in p.weights.iter().chain(&p.biases) {
                group.insert(w, ParamGroup::Attention);
            }
        }
    }
    for p in head_projections(&f) {
        for &w in p.weights.iter().chain(&p.biases) {
            group.entry(w).or_insert(ParamGroup::Head);
        }
    }
    for id in graph.ids() {
        if f.is_param_matmul(id) {
            let end = linear_end(&f, id);
            if let Some((_, bias)) = split_bias(&f, end) {
                let weight = f.param_behind(f.inputs(id)[1]);
                for w in weight.into_iter().chain(bias) {
                    group.entry(w).or_insert(ParamGroup::Ffn);
                }
            }
        }
    }
    let mut out = BTreeMap::new();
    for (id, path) in graph.params() {
        let g = group.get(&id).copied().unwrap_or_else(|| leftover_group(&f, id));
        out.insert(path.to_string(), g);
    }
    out
}

/// The matmul itself, or the bias add that directly follows it.
fn linear_end(f: &Facts, matmul: NodeId) -> NodeId {
    match f.users[matmul.index()].as_slice() {
        [next] if bias_or_matmul_end(f, *next) == Some(*next) => *next,
        _ => matmul,
    }
}

fn leftover_group(f: &Facts, param: NodeId) -> ParamGroup {
    let ty = f.graph.ty(param);
    let gathered = f.users[param.index()].iter().any(|u| matches!(f.op(*u), Op::Gather) && f.inputs(*u)[0] == param);
    if gathered || ty.rank() >= 2 {
        ParamGroup::Embeddings
    } else if ty.rank() == 1 {
        ParamGroup::Norms
    } else {
        ParamGroup::Other
    }
}

/// The projections closest to the first output: walking back from it through
/// anything but matmuls, the parameter matmuls met first.
fn head_projections(f: &Facts) -> Vec<Projection> {
    head_ends(f).into_iter().filter_map(|end| chain_ending_at(f, end)).collect()
}

/// Where the projections nearest the first output end (the matmul, or the
/// bias add after it).
fn head_ends(f: &Facts) -> Vec<NodeId> {
    let Some(out) = f.graph.outputs.first() else { return Vec::new() };
    let mut seen = HashSet::new();
    let mut stack = vec![out.node];
    let mut found = Vec::new();
    while let Some(id) = stack.pop() {
        if !seen.insert(id) || !f.data[id.index()] {
            continue;
        }
        if let Some(end) = bias_or_matmul_end(f, id) {
            found.push(end);
            continue;
        }
        if matches!(f.op(id), Op::MatMul) {
            continue;
        }
        stack.extend(f.inputs(id).iter().copied());
    }
    found
}

/// The model's logits: the output of the one projection nearest the loss (the
/// LM head), if there is exactly one.
pub fn head_output(graph: &Graph) -> Option<NodeId> {
    let f = Facts::new(graph);
    match head_ends(&f).as_slice() {
        [one] => Some(*one),
        _ => None,
    }
}
