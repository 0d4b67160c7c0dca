//! `lowrank`: Low-dimensional Projected Attention (LPA) as a pass. Each chosen
//! projection `x·W` with `W[d_in, d_out]` becomes `x·A·B` with `A[d_in, r]`
//! and `B[r, d_out]`: nothing between the factors, one rank for all.
//!
//! Which projections: `attention` (the default) takes the Q, K, V and O
//! projections of every attention site, found from the graph's structure
//! (see [`crate::structure`]); `ffn` takes the parameter matmuls the
//! structural grouping puts in the feed-forward group; `all` both; anything
//! else is a glob over weight paths (`layers.*.attn.q.weight`; `*` stays
//! within one path segment, `**` crosses them).
//!
//! Parametrisation and initialisation follow the LPA reference
//! implementation: both factors are initialised as PyTorch's `nn.Linear`,
//! uniform on ±1/sqrt(fan_in) (`A` on ±1/sqrt(d_in), `B` on ±1/sqrt(r)). A
//! bias of a Q, K or V projection moves to the first factor (a new `[r]`
//! bias, the `[d_out]` one is dropped); a bias of any other projection (O,
//! FFN, glob targets) stays after the second factor. Parameter paths mirror a
//! two-layer `nn.Sequential`: `P.weight` becomes `P.a.weight` and
//! `P.b.weight`, a first-factor bias is `P.a.bias`, and a second-factor bias
//! keeps its path.

use std::collections::{BTreeMap, HashSet};

use lpac_ir::{BinaryOp, Graph, Init, Node, NodeId, Op, Origin, TensorType};

use crate::pass::{GraphCopier, Pass, PassError, PassOutcome};
use crate::structure::{ParamGroup, Role, find_attention, param_groups};

/// What `lowrank` factors.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Target {
    Attention,
    Ffn,
    All,
    /// A glob over weight parameter paths.
    Glob(String),
}

impl Target {
    pub fn parse(text: &str) -> Target {
        match text {
            "attention" => Target::Attention,
            "ffn" => Target::Ffn,
            "all" => Target::All,
            glob => Target::Glob(glob.to_string()),
        }
    }

    pub fn describe(&self) -> String {
        match self {
            Target::Attention => "attention".to_string(),
            Target::Ffn => "ffn".to_string(),
            Target::All => "all".to_string(),
            Target::Glob(g) => g.clone(),
        }
    }
}

pub struct Lowrank {
    pub rank: usize,
    pub target: Target,
}

/// Where the bias of a factored projection goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum BiasPlace {
    FirstFactor,
    SecondFactor,
}

/// One projection chosen for factoring.
#[derive(Clone, Debug)]
struct Chosen {
    matmul: NodeId,
    weight: NodeId,
    /// The `add` node that applies the bias, and the bias parameter.
    bias: Option<(NodeId, NodeId)>,
    place: BiasPlace,
}

/// The names of the factors that replace a weight path.
pub fn factor_paths(weight_path: &str) -> (String, String) {
    let prefix = weight_path.strip_suffix(".weight").unwrap_or(weight_path);
    (format!("{prefix}.a.weight"), format!("{prefix}.b.weight"))
}

/// The path of the first factor's bias that replaces a Q/K/V bias.
pub fn first_bias_path(weight_path: &str) -> String {
    let prefix = weight_path.strip_suffix(".weight").unwrap_or(weight_path);
    format!("{prefix}.a.bias")
}

impl Pass for Lowrank {
    fn name(&self) -> &'static str {
        "lowrank"
    }

    fn summary(&self) -> &'static str {
        "LPA: factor projections W[d_in,d_out] into A[d_in,r]·B[r,d_out] (changes the model)"
    }

    fn preserves_meaning(&self) -> bool {
        false
    }

    fn run(&self, graph: &Graph) -> Result<PassOutcome, PassError> {
        if self.rank == 0 {
            return Err(PassError::new("lowrank", "the rank must be at least 1"));
        }
        let chosen = self.choose(graph)?;
        self.check_ranks(graph, &chosen)?;
        let mut outcome = rebuild(graph, &chosen, self.rank);
        const LISTED: usize = 4;
        let mut factored: Vec<String> = chosen.iter().take(LISTED).map(|c| describe_param(graph, c.weight)).collect();
        if chosen.len() > LISTED {
            factored.push(format!("... and {} more", chosen.len() - LISTED));
        }
        let before = graph.param_count();
        outcome.report = Some(format!(
            "lowrank: factored {} projection(s) at r={} (target {}): {}\n  parameters {} -> {}",
            chosen.len(),
            self.rank,
            self.target.describe(),
            factored.join(", "),
            before,
            outcome.graph.param_count()
        ));
        Ok(outcome)
    }
}

impl Lowrank {
    fn choose(&self, graph: &Graph) -> Result<Vec<Chosen>, PassError> {
        let roles = attention_roles(graph);
        let groups = param_groups(graph);
        let in_group = |g: ParamGroup| move |weight_path: &str, _: Option<Role>| groups.get(weight_path) == Some(&g);
        let chosen: Vec<Chosen> = match &self.target {
            Target::Attention => select(graph, &roles, |_, role| role.is_some()),
            Target::Ffn => select(graph, &roles, in_group(ParamGroup::Ffn)),
            Target::All => {
                let ffn = in_group(ParamGroup::Ffn);
                select(graph, &roles, move |p, role| role.is_some() || ffn(p, role))
            }
            Target::Glob(glob) => select(graph, &roles, |p, _| glob_matches(glob, p)),
        };
        if chosen.is_empty() {
            let why = match &self.target {
                Target::Attention => "no attention pattern softmax(Q·Kᵀ)·V with parameter projections was found",
                Target::Ffn => "no feed-forward parameter matmul was found",
                Target::All => "no attention or feed-forward parameter matmul was found",
                Target::Glob(_) => "no weight path of a parameter matmul matches it",
            };
            return Err(PassError::new(
                "lowrank",
                format!("target `{}` matches nothing: {why}", self.target.describe()),
            ));
        }
        Ok(chosen)
    }

    fn check_ranks(&self, graph: &Graph, chosen: &[Chosen]) -> Result<(), PassError> {
        for c in chosen {
            let w = graph.ty(c.weight);
            let (d_in, d_out) = (w.shape[0], w.shape[1]);
            if self.rank >= d_in.min(d_out) {
                return Err(PassError::new(
                    "lowrank",
                    format!(
                        "rank {} does not reduce {}: r must be below min(d_in, d_out) = {}",
                        self.rank,
                        describe_param(graph, c.weight),
                        d_in.min(d_out)
                    ),
                ));
            }
        }
        Ok(())
    }
}

fn describe_param(graph: &Graph, id: NodeId) -> String {
    match &graph.node(id).op {
        Op::Param { path, .. } => format!("{path} {}", graph.ty(id)),
        _ => id.to_string(),
    }
}

/// The role of each single-matmul projection of every attention site.
fn attention_roles(graph: &Graph) -> BTreeMap<NodeId, Role> {
    let mut roles = BTreeMap::new();
    for site in find_attention(graph) {
        for (role, p) in site.projections {
            if p.matmuls.len() == 1 {
                roles.insert(p.matmuls[0], role);
            }
        }
    }
    roles
}

/// Every matmul `x·W` with a plain parameter matrix `W` used by it alone,
/// for which `wanted(path of W, role)` holds.
fn select(graph: &Graph, roles: &BTreeMap<NodeId, Role>, wanted: impl Fn(&str, Option<Role>) -> bool) -> Vec<Chosen> {
    let users = graph.users();
    let mut chosen = Vec::new();
    for id in graph.ids() {
        let node = graph.node(id);
        if !matches!(node.op, Op::MatMul) {
            continue;
        }
        let weight = node.inputs[1];
        let Op::Param { path, .. } = &graph.node(weight).op else { continue };
        if graph.ty(weight).rank() != 2 || users[weight.index()].len() != 1 {
            continue;
        }
        let role = roles.get(&id).copied();
        if !wanted(path, role) {
            continue;
        }
        let place = match role {
            Some(Role::Query | Role::Key | Role::Value) => BiasPlace::FirstFactor,
            _ => BiasPlace::SecondFactor,
        };
        chosen.push(Chosen { matmul: id, weight, bias: bias_of(graph, &users, id), place });
    }
    chosen
}

/// The bias added right after a matmul: `add(m, broadcast(param))` where the
/// matmul feeds only that add and the parameter feeds only that broadcast.
fn bias_of(graph: &Graph, users: &[Vec<NodeId>], matmul: NodeId) -> Option<(NodeId, NodeId)> {
    let [add] = users[matmul.index()].as_slice() else { return None };
    if graph.node(*add).op != Op::Binary(BinaryOp::Add) {
        return None;
    }
    let other = graph.node(*add).inputs.iter().copied().find(|&i| i != matmul)?;
    let param = match &graph.node(other).op {
        Op::Broadcast { .. } => graph.node(other).inputs[0],
        _ => other,
    };
    let is_vector_param = matches!(graph.node(param).op, Op::Param { .. }) && graph.ty(param).rank() == 1;
    let private = users[param.index()].len() == 1 && (other == param || users[other.index()].len() == 1);
    (is_vector_param && private).then_some((*add, param))
}

/// Copies the graph, replacing each chosen projection by its factors.
fn rebuild(graph: &Graph, chosen: &[Chosen], rank: usize) -> PassOutcome {
    let by_weight: BTreeMap<NodeId, &Chosen> = chosen.iter().map(|c| (c.weight, c)).collect();
    let by_matmul: BTreeMap<NodeId, &Chosen> = chosen.iter().map(|c| (c.matmul, c)).collect();
    // Q/K/V biases and their broadcasts disappear; the add becomes the factored value.
    let mut dropped: HashSet<NodeId> = HashSet::new();
    let mut replaced_add: BTreeMap<NodeId, NodeId> = BTreeMap::new();
    for c in chosen {
        if let (Some((add, bias)), BiasPlace::FirstFactor) = (c.bias, c.place) {
            dropped.insert(bias);
            dropped.extend(graph.node(add).inputs.iter().filter(|&&i| i != c.matmul));
            replaced_add.insert(add, c.matmul);
        }
    }
    let mut copier = GraphCopier::new(graph);
    let mut factors: BTreeMap<NodeId, Factors> = BTreeMap::new();
    for id in graph.ids() {
        if let Some(c) = by_weight.get(&id) {
            factors.insert(c.matmul, new_factors(&mut copier, graph, c, rank));
        } else if let Some(c) = by_matmul.get(&id) {
            let y = factored_product(&mut copier, graph, c, &factors[&id]);
            copier.map[id.index()] = Some(y);
        } else if let Some(matmul) = replaced_add.get(&id) {
            copier.map[id.index()] = copier.map[matmul.index()];
        } else if !dropped.contains(&id) {
            copier.copy(id);
        }
    }
    copier.finish()
}

/// The new parameters of one projection.
struct Factors {
    a: NodeId,
    a_bias: Option<NodeId>,
    b: NodeId,
}

fn new_factors(copier: &mut GraphCopier, graph: &Graph, c: &Chosen, rank: usize) -> Factors {
    let w = graph.node(c.weight);
    let Op::Param { path, .. } = &w.op else { unreachable!("chosen weights are parameters") };
    let (d_in, d_out) = (w.ty.shape[0], w.ty.shape[1]);
    let origin = w.origin.rewritten_by("lowrank");
    let (a_path, b_path) = factor_paths(path);
    let mut param = |path: String, shape: Vec<usize>, fan_in: usize| {
        let bound = 1.0 / (fan_in as f64).sqrt();
        let node = Node {
            op: Op::Param { path, init: Init::Uniform { lo: -bound, hi: bound } },
            inputs: Vec::new(),
            ty: TensorType::new(w.ty.dtype, shape),
            origin: origin.clone(),
        };
        copier.push(node, Some(c.weight))
    };
    let a = param(a_path, vec![d_in, rank], d_in);
    let a_bias =
        (c.bias.is_some() && c.place == BiasPlace::FirstFactor).then(|| param(first_bias_path(path), vec![rank], d_in));
    let b = param(b_path, vec![rank, d_out], rank);
    Factors { a, a_bias, b }
}

/// `x·A (+ a_bias) · B` in place of `x·W`.
fn factored_product(copier: &mut GraphCopier, graph: &Graph, c: &Chosen, f: &Factors) -> NodeId {
    let m = graph.node(c.matmul);
    let origin: Origin = m.origin.rewritten_by("lowrank");
    let x = copier.mapped(m.inputs[0]);
    let x_ty = copier.new.ty(x).clone();
    let rank = copier.new.ty(f.a).shape[1];
    let mut mid_shape = x_ty.shape.clone();
    *mid_shape.last_mut().expect("matmul operands have rank >= 2") = rank;
    let mid_ty = TensorType::new(x_ty.dtype, mid_shape);
    let node = |op: Op, inputs: Vec<NodeId>, ty: TensorType| Node { op, inputs, ty, origin: origin.clone() };
    let mut mid = copier.push(node(Op::MatMul, vec![x, f.a], mid_ty.clone()), Some(c.matmul));
    if let Some(bias) = f.a_bias {
        let dims = vec![mid_ty.rank() - 1];
        let wide = copier.push(node(Op::Broadcast { dims }, vec![bias], mid_ty.clone()), Some(c.matmul));
        mid = copier.push(node(Op::Binary(BinaryOp::Add), vec![mid, wide], mid_ty), Some(c.matmul));
    }
    copier.push(node(Op::MatMul, vec![mid, f.b], m.ty.clone()), Some(c.matmul))
}

/// `*` matches within one path segment, `**` across segments, `?` one character.
pub fn glob_matches(glob: &str, path: &str) -> bool {
    fn go(g: &[u8], p: &[u8]) -> bool {
        match g {
            [] => p.is_empty(),
            [b'*', b'*', rest @ ..] => (0..=p.len()).any(|i| go(rest, &p[i..])),
            [b'*', rest @ ..] => (0..=p.len()).take_while(|&i| i == 0 || p[i - 1] != b'.').any(|i| go(rest, &p[i..])),
            [b'?', rest @ ..] => !p.is_empty() && p[0] != b'.' && go(rest, &p[1..]),
            [c, rest @ ..] => p.first() == Some(c) && go(rest, &p[1..]),
        }
    }
    go(glob.as_bytes(), path.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs() {
        assert!(glob_matches("layers.*.attn.q.weight", "layers.3.attn.q.weight"));
        assert!(!glob_matches("layers.*.weight", "layers.3.attn.q.weight"));
        assert!(glob_matches("layers.**.weight", "layers.3.attn.q.weight"));
        assert!(glob_matches("**", "a.b"));
        assert!(glob_matches("w?", "w1"));
        assert!(!glob_matches("w?", "w"));
    }

    #[test]
    fn factor_names() {
        assert_eq!(
            factor_paths("layers.0.attn.q.weight"),
            ("layers.0.attn.q.a.weight".into(), "layers.0.attn.q.b.weight".into())
        );
        assert_eq!(factor_paths("mystery"), ("mystery.a.weight".into(), "mystery.b.weight".into()));
        assert_eq!(first_bias_path("x.q.weight"), "x.q.a.bias");
    }
}
