//! The rewrite rules. Each rule is a function that looks at one e-node of a
//! class (and the classes below it) and proposes an equal term; [`Rule`]
//! turns such a function into an egg searcher and applier, so egg's runner
//! schedules them, counts them by name and records them for explanations.
//!
//! Every proposed term is type-checked with the IR's type rules before it is
//! added, and must have exactly the type of the class it joins.
//!
//! What "equal" means: every rule here gives bit-identical results for all
//! inputs, infinities and NaNs included, with three documented exceptions:
//! - `matmul-reassociate` changes the order of floating-point operations
//!   (the design accepts this; results agree to rounding);
//! - `add-zero` and `sub-zero` turn `-0 + 0` (and `-0 - -0`) into `-0`
//!   where IEEE gives `+0`: only the sign of a zero can differ, and the two
//!   zeros compare equal. (`x·0 = 0` is *not* a rule: `inf·0` is NaN.)
//! - folding computes in f64, exactly as the interpreter's f64 runs do (i32
//!   wraps, i32 division by zero is never folded); an f32 run of the
//!   original graph rounds every intermediate to f32, so there a folded
//!   constant can differ by f32 roundings (one +, −, ×, ÷ or sqrt of f32
//!   values still folds to exactly the f32 result).
//!
//! A rule stops matching a class once what it proposes is already in that
//! class, so the runner sees saturation; its count in the report is the
//! number of unions it made.

use egg::{Applier, Id, Language, PatternAst, SearchMatches, Searcher, Subst, Symbol, Var};
use lpac_ir::interp::real::{maximum, minimum};
use lpac_ir::{BinaryOp, DType, TensorType, UnaryOp};

use super::lang::{EG, Term, binary_op, stored, type_of, unary_op};

/// What a rule proposes for a class.
#[derive(Clone, Debug)]
pub enum Rhs {
    /// The class equals this existing class.
    Class(Id),
    /// The class equals this new term.
    Node(Term),
    /// A new term `outer` whose operand `slot` is the new term `inner`.
    Nested { inner: Term, outer: Term, slot: usize },
}

/// Proposes terms equal to the class (second argument) that holds the node.
type Finder = fn(&EG, Id, &Term, &mut Vec<Rhs>);

/// A named rule: a finder run on every e-node of every class.
pub struct Rule {
    pub name: &'static str,
    find: Finder,
}

/// Every rule of the pass, in the order they are tried.
pub fn all_rules() -> Vec<Rule> {
    let rule = |name, find| Rule { name, find };
    vec![
        rule("matmul-reassociate", matmul_reassociate),
        rule("permute-permute", permute_permute),
        rule("permute-identity", permute_identity),
        rule("reshape-reshape", reshape_reshape),
        rule("reshape-identity", reshape_identity),
        rule("broadcast-identity", broadcast_identity),
        rule("broadcast-broadcast", broadcast_broadcast),
        rule("slice-identity", slice_identity),
        rule("concat-identity", concat_identity),
        rule("cast-identity", cast_identity),
        rule("fold-unary", fold_unary),
        rule("fold-binary", fold_binary),
        rule("fold-select", fold_select),
        rule("splat-const", splat_const),
        rule("mul-one", mul_one),
        rule("add-zero", add_zero),
        rule("sub-zero", sub_zero),
        rule("div-one", div_one),
        rule("neg-neg", neg_neg),
    ]
}

/// The names of all rules, the graph-level merge included.
pub fn rule_names() -> Vec<&'static str> {
    let mut names: Vec<&'static str> = all_rules().iter().map(|r| r.name).collect();
    names.push(super::merge::RULE);
    names
}

pub fn to_rewrites(rules: Vec<Rule>) -> Vec<egg::Rewrite<Term, super::lang::Types>> {
    rules
        .into_iter()
        .map(|r| {
            let name = r.name;
            let rule = std::sync::Arc::new(r);
            egg::Rewrite::new(name, Shared(rule.clone()), Shared(rule)).expect("rules bind no variables")
        })
        .collect()
}

/// Lets one [`Rule`] be both the searcher and the applier of a rewrite.
struct Shared(std::sync::Arc<Rule>);

impl Rule {
    /// The proposals for `class` that would change the e-graph, each with
    /// the e-node it rewrites.
    fn proposals(&self, egraph: &EG, class: Id) -> Vec<(Term, Rhs)> {
        let class = egraph.find(class);
        let mut found = Vec::new();
        let mut out = Vec::new();
        for node in &egraph[class].nodes {
            (self.find)(egraph, class, node, &mut out);
            for rhs in out.drain(..) {
                if is_new(egraph, class, &rhs) {
                    found.push((node.clone(), rhs));
                }
            }
        }
        found
    }
}

/// False when the proposal is already in `class` (so a rule that has done
/// its work stops matching and the runner can see saturation), or when it is
/// ill-typed or of another type than the class.
fn is_new(egraph: &EG, class: Id, rhs: &Rhs) -> bool {
    let ty = &egraph[class].data.ty;
    match rhs {
        Rhs::Class(id) => egraph.find(*id) != class && egraph[*id].data.ty == *ty,
        Rhs::Node(term) => type_of(egraph, term, None).as_ref() == Ok(ty) && egraph.lookup(term.clone()) != Some(class),
        Rhs::Nested { inner, outer, slot } => {
            let Ok(inner_ty) = type_of(egraph, inner, None) else { return false };
            if type_of(egraph, outer, Some((*slot, &inner_ty))).as_ref() != Ok(ty) {
                return false;
            }
            match egraph.lookup(inner.clone()) {
                None => true,
                Some(i) => {
                    let mut outer = outer.clone();
                    outer.children_mut()[*slot] = i;
                    egraph.lookup(outer) != Some(class)
                }
            }
        }
    }
}

impl Searcher<Term, super::lang::Types> for Shared {
    fn search_eclass_with_limit(&self, egraph: &EG, eclass: Id, limit: usize) -> Option<SearchMatches<'_, Term>> {
        if limit == 0 || self.0.proposals(egraph, eclass).is_empty() {
            return None;
        }
        Some(SearchMatches { eclass, substs: vec![Subst::default()], ast: None })
    }

    fn vars(&self) -> Vec<Var> {
        Vec::new()
    }
}

impl Applier<Term, super::lang::Types> for Shared {
    fn apply_one(
        &self,
        egraph: &mut EG,
        eclass: Id,
        _subst: &Subst,
        _searcher_ast: Option<&PatternAst<Term>>,
        rule_name: Symbol,
    ) -> Vec<Id> {
        let mut changed = Vec::new();
        for (lhs, rhs) in self.0.proposals(egraph, eclass) {
            // Uncanonical ids name the exact terms, for explanations.
            let from = egraph.add_uncanonical(lhs);
            let to = match rhs {
                Rhs::Class(id) => id,
                Rhs::Node(term) => egraph.add_uncanonical(term),
                Rhs::Nested { inner, mut outer, slot } => {
                    let inner = egraph.add_uncanonical(inner);
                    outer.children_mut()[slot] = inner;
                    egraph.add_uncanonical(outer)
                }
            };
            if egraph.union_trusted(from, to, rule_name) {
                changed.push(to);
            }
        }
        changed
    }
}

fn ty(egraph: &EG, id: Id) -> &TensorType {
    &egraph[id].data.ty
}

fn konst(egraph: &EG, id: Id) -> Option<f64> {
    egraph[id].data.konst
}

/// A placeholder operand, replaced before the term is added.
fn hole() -> Id {
    Id::from(0usize)
}

/// `(x·A)·B ⇔ x·(A·B)` where A and B are plain matrices (x may be batched):
/// both directions, so the extractor can pick either by cost.
fn matmul_reassociate(egraph: &EG, _class: Id, node: &Term, out: &mut Vec<Rhs>) {
    let Term::MatMul([l, r]) = *node else { return };
    let plain = |id: Id| ty(egraph, id).rank() == 2;
    if plain(r) {
        for inner in &egraph[l].nodes {
            if let Term::MatMul([x, a]) = *inner
                && plain(a)
            {
                out.push(Rhs::Nested { inner: Term::MatMul([a, r]), outer: Term::MatMul([x, hole()]), slot: 1 });
            }
        }
    }
    for inner in &egraph[r].nodes {
        if let Term::MatMul([a, b]) = *inner
            && plain(a)
            && plain(b)
        {
            out.push(Rhs::Nested { inner: Term::MatMul([l, a]), outer: Term::MatMul([hole(), b]), slot: 0 });
        }
    }
}

/// `permute(permute(x, p1), p2) = permute(x, i ↦ p1[p2[i]])`.
fn permute_permute(egraph: &EG, _class: Id, node: &Term, out: &mut Vec<Rhs>) {
    let Term::Permute { perm: p2, x: [c] } = node else { return };
    for inner in &egraph[*c].nodes {
        if let Term::Permute { perm: p1, x } = inner {
            let perm: Box<[usize]> = p2.iter().map(|&i| p1[i]).collect();
            out.push(Rhs::Node(Term::Permute { perm, x: *x }));
        }
    }
}

/// `permute(x, [0, 1, …]) = x`.
fn permute_identity(_: &EG, _class: Id, node: &Term, out: &mut Vec<Rhs>) {
    if let Term::Permute { perm, x: [x] } = node
        && perm.iter().enumerate().all(|(i, &p)| i == p)
    {
        out.push(Rhs::Class(*x));
    }
}

/// `reshape(reshape(x)) = reshape(x)` (to the outer shape).
fn reshape_reshape(egraph: &EG, _class: Id, node: &Term, out: &mut Vec<Rhs>) {
    let Term::Reshape { shape, x: [c] } = node else { return };
    for inner in &egraph[*c].nodes {
        if let Term::Reshape { x, .. } = inner {
            out.push(Rhs::Node(Term::Reshape { shape: shape.clone(), x: *x }));
        }
    }
}

/// `reshape(x)` to x's own shape is x.
fn reshape_identity(egraph: &EG, _class: Id, node: &Term, out: &mut Vec<Rhs>) {
    if let Term::Reshape { shape, x: [x] } = node
        && ty(egraph, *x).shape[..] == shape[..]
    {
        out.push(Rhs::Class(*x));
    }
}

/// `broadcast(x)` to x's own shape is x (its dims are then the identity).
fn broadcast_identity(egraph: &EG, _class: Id, node: &Term, out: &mut Vec<Rhs>) {
    if let Term::Broadcast { shape, x: [x], .. } = node
        && ty(egraph, *x).shape[..] == shape[..]
    {
        out.push(Rhs::Class(*x));
    }
}

/// `broadcast(broadcast(x, d1), d2) = broadcast(x, i ↦ d2[d1[i]])`: an axis
/// of x either keeps its size through both (and lands where the outer dims
/// send it) or has size 1 and is stretched, which one broadcast can do too.
fn broadcast_broadcast(egraph: &EG, _class: Id, node: &Term, out: &mut Vec<Rhs>) {
    let Term::Broadcast { dims: d2, shape, x: [c] } = node else { return };
    for inner in &egraph[*c].nodes {
        if let Term::Broadcast { dims: d1, x, .. } = inner {
            let dims: Box<[usize]> = d1.iter().map(|&i| d2[i]).collect();
            out.push(Rhs::Node(Term::Broadcast { dims, shape: shape.clone(), x: *x }));
        }
    }
}

/// A slice of a whole axis is its operand.
fn slice_identity(egraph: &EG, _class: Id, node: &Term, out: &mut Vec<Rhs>) {
    if let Term::Slice { axis, start: 0, end, x: [x] } = node
        && ty(egraph, *x).shape[*axis] == *end
    {
        out.push(Rhs::Class(*x));
    }
}

/// A concat of one operand is that operand.
fn concat_identity(_: &EG, _class: Id, node: &Term, out: &mut Vec<Rhs>) {
    if let Term::Concat { xs, .. } = node
        && xs.len() == 1
    {
        out.push(Rhs::Class(xs[0]));
    }
}

/// A cast to the operand's own dtype is the operand.
fn cast_identity(egraph: &EG, _class: Id, node: &Term, out: &mut Vec<Rhs>) {
    if let Term::Cast { dtype, x: [x] } = node
        && ty(egraph, *x).dtype == *dtype
    {
        out.push(Rhs::Class(*x));
    }
}

/// A unary op of a splat constant is a splat constant.
fn fold_unary(egraph: &EG, _class: Id, node: &Term, out: &mut Vec<Rhs>) {
    let Term::Unary(u, [x]) = *node else { return };
    let Some(v) = konst(egraph, x) else { return };
    let t = ty(egraph, x);
    if let Some(r) = unary_value(unary_op(u), t.dtype, v) {
        out.push(splat(stored(t.dtype, r), t));
    }
}

/// A binary op of two splat constants is a splat constant.
fn fold_binary(egraph: &EG, _class: Id, node: &Term, out: &mut Vec<Rhs>) {
    let Term::Binary(b, [x, y]) = *node else { return };
    let (Some(a), Some(c)) = (konst(egraph, x), konst(egraph, y)) else { return };
    let b = binary_op(b);
    let t = ty(egraph, x);
    let Some(r) = binary_value(b, t.dtype, a, c) else { return };
    let result = if b.is_comparison() { t.with_dtype(DType::Bool) } else { t.clone() };
    out.push(splat(stored(result.dtype, r), &result));
}

/// `select` with a constant condition is one of its branches.
fn fold_select(egraph: &EG, _class: Id, node: &Term, out: &mut Vec<Rhs>) {
    if let Term::Select([c, a, b]) = *node
        && let Some(v) = konst(egraph, c)
    {
        out.push(Rhs::Class(if v != 0.0 { a } else { b }));
    }
}

/// The canonical splat of `v` as type `ty`: `const v` for a scalar, else a
/// scalar `const v` broadcast to `ty` (a view, as the front end writes
/// splats, so no large constant is ever materialised).
fn splat(v: f64, ty: &TensorType) -> Rhs {
    let scalar = Term::constant(v, &TensorType::scalar(ty.dtype));
    if ty.rank() == 0 {
        return Rhs::Node(scalar);
    }
    let outer = Term::Broadcast { dims: Box::new([]), shape: ty.shape.clone().into(), x: [hole()] };
    Rhs::Nested { inner: scalar, outer, slot: 0 }
}

/// Splats of one value are one value: a class known to be the splat `v`
/// (a broadcast, reshape, slice, … of a constant) equals the canonical
/// splat, so all of them become one node per value and type.
fn splat_const(egraph: &EG, class: Id, node: &Term, out: &mut Vec<Rhs>) {
    if matches!(node, Term::Leaf(_)) {
        return;
    }
    let data = &egraph[class].data;
    if let Some(v) = data.konst {
        out.push(splat(v, &data.ty));
    }
}

fn is_value(egraph: &EG, id: Id, value: f64) -> bool {
    konst(egraph, id).is_some_and(|v| v == value)
}

/// `x·1 = x` and `1·x = x` (exact for every x, NaN and infinities included).
fn mul_one(egraph: &EG, _class: Id, node: &Term, out: &mut Vec<Rhs>) {
    if let Term::Binary(b, [x, y]) = *node
        && binary_op(b) == BinaryOp::Mul
    {
        if is_value(egraph, y, 1.0) {
            out.push(Rhs::Class(x));
        }
        if is_value(egraph, x, 1.0) {
            out.push(Rhs::Class(y));
        }
    }
}

/// `x+0 = x` and `0+x = x` (either zero; see the module docs on `-0 + 0`).
fn add_zero(egraph: &EG, _class: Id, node: &Term, out: &mut Vec<Rhs>) {
    if let Term::Binary(b, [x, y]) = *node
        && binary_op(b) == BinaryOp::Add
    {
        if is_value(egraph, y, 0.0) {
            out.push(Rhs::Class(x));
        }
        if is_value(egraph, x, 0.0) {
            out.push(Rhs::Class(y));
        }
    }
}

/// `x-0 = x` (either zero; see the module docs).
fn sub_zero(egraph: &EG, _class: Id, node: &Term, out: &mut Vec<Rhs>) {
    if let Term::Binary(b, [x, y]) = *node
        && binary_op(b) == BinaryOp::Sub
        && is_value(egraph, y, 0.0)
    {
        out.push(Rhs::Class(x));
    }
}

/// `x/1 = x` (exact, i32 too).
fn div_one(egraph: &EG, _class: Id, node: &Term, out: &mut Vec<Rhs>) {
    if let Term::Binary(b, [x, y]) = *node
        && binary_op(b) == BinaryOp::Div
        && is_value(egraph, y, 1.0)
    {
        out.push(Rhs::Class(x));
    }
}

/// `-(-x) = x` (exact; i32 negation wraps, so this holds for i32::MIN too).
fn neg_neg(egraph: &EG, _class: Id, node: &Term, out: &mut Vec<Rhs>) {
    let Term::Unary(u, [c]) = *node else { return };
    if unary_op(u) != UnaryOp::Neg {
        return;
    }
    for inner in &egraph[c].nodes {
        if let Term::Unary(u2, [x]) = *inner
            && unary_op(u2) == UnaryOp::Neg
        {
            out.push(Rhs::Class(x));
        }
    }
}

/// The interpreter's unary op on one element of `dtype` (in f64), or `None`
/// where it is undefined.
pub fn unary_value(u: UnaryOp, dtype: DType, v: f64) -> Option<f64> {
    match dtype {
        DType::I32 => {
            let a = v as i32;
            match u {
                UnaryOp::Neg => Some(a.wrapping_neg() as f64),
                UnaryOp::Abs => Some(a.wrapping_abs() as f64),
                _ => None,
            }
        }
        DType::Bool => (u == UnaryOp::Not).then(|| f64::from(u8::from(v == 0.0))),
        _ => Some(match u {
            UnaryOp::Neg => -v,
            UnaryOp::Exp => v.exp(),
            UnaryOp::Log => v.ln(),
            UnaryOp::Sqrt => v.sqrt(),
            UnaryOp::Rsqrt => 1.0 / v.sqrt(),
            UnaryOp::Recip => 1.0 / v,
            UnaryOp::Tanh => v.tanh(),
            UnaryOp::Sin => v.sin(),
            UnaryOp::Cos => v.cos(),
            UnaryOp::Abs => v.abs(),
            UnaryOp::Not => return None,
        }),
    }
}

/// The interpreter's binary op on elements of `dtype` (in f64), or `None`
/// where it is undefined or an error (i32 division by zero).
pub fn binary_value(b: BinaryOp, dtype: DType, x: f64, y: f64) -> Option<f64> {
    let truth = |t: bool| Some(f64::from(u8::from(t)));
    if b.is_comparison() {
        return match b {
            BinaryOp::Lt => truth(x < y),
            BinaryOp::Le => truth(x <= y),
            BinaryOp::Gt => truth(x > y),
            BinaryOp::Ge => truth(x >= y),
            BinaryOp::Eq => truth(x == y),
            _ => truth(x != y),
        };
    }
    match dtype {
        DType::Bool => match b {
            BinaryOp::And => truth(x != 0.0 && y != 0.0),
            BinaryOp::Or => truth(x != 0.0 || y != 0.0),
            _ => None,
        },
        DType::I32 => {
            let (a, c) = (x as i32, y as i32);
            let r = match b {
                BinaryOp::Add => a.wrapping_add(c),
                BinaryOp::Sub => a.wrapping_sub(c),
                BinaryOp::Mul => a.wrapping_mul(c),
                BinaryOp::Div if c != 0 => a.wrapping_div(c),
                BinaryOp::Max => a.max(c),
                BinaryOp::Min => a.min(c),
                _ => return None,
            };
            Some(r as f64)
        }
        _ => Some(match b {
            BinaryOp::Add => x + y,
            BinaryOp::Sub => x - y,
            BinaryOp::Mul => x * y,
            BinaryOp::Div => x / y,
            BinaryOp::Max => maximum(x, y),
            BinaryOp::Min => minimum(x, y),
            BinaryOp::Pow => x.powf(y),
            _ => return None,
        }),
    }
}
