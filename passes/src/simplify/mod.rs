//! `simplify`: algebraic simplification by equality saturation (egg).
//!
//! 1. The graph becomes an e-graph over [`lang::Term`]: one e-node per
//!    distinct node (identical nodes share an e-class), attributes inline,
//!    inputs/params/iotas/random draws as opaque leaves, constants visible.
//!    The analysis gives each class its type and, where known, its splat
//!    value.
//! 2. egg's [`Runner`] applies the rules of [`rules`] within the iteration,
//!    e-node and time limits.
//! 3. One e-node per class is chosen by a shape-aware cost (FLOPs + bytes
//!    moved, by [`crate::cost`]; see [`extract`]) and the graph is rebuilt,
//!    one node per class, in a deterministic topological order close to the
//!    input's. Every input and parameter of the input graph is kept, in
//!    order, at the start, used or not (dce removes unused ones).
//! 4. `merge-shared-input-projections` (see [`merge`]) then merges matmuls
//!    that share their left operand where the cost model says it pays.
//!
//! The output is deterministic for a given input and limits (egg's hash maps
//! are unseeded, and every choice here breaks ties by ids or node order);
//! only a run stopped by its time limit can end differently on a slower or
//! faster machine, which the report's stop reason shows.
//!
//! Origins: a node whose class holds an original node keeps that node's
//! origin, with `simplify` appended when the chosen form is not the original
//! node's own; nodes with no original in their class (a new `A·B`) take the
//! origin of the node they were built for, with `simplify` appended.
//!
//! Rules (their names are what the report and explanations show):
//! `matmul-reassociate` (`(x·A)·B ⇔ x·(A·B)` for plain matrices A and B,
//! both directions; the cost decides), `permute-permute`, `permute-identity`,
//! `reshape-reshape`, `reshape-identity`, `broadcast-broadcast`,
//! `broadcast-identity`, `slice-identity`, `concat-identity`,
//! `cast-identity`, `fold-unary`, `fold-binary`, `fold-select`,
//! `splat-const` (every splat of one value and type is one node: a scalar
//! `const` broadcast to the type), `mul-one`, `div-one`, `add-zero`,
//! `sub-zero`, `neg-neg`, and `merge-shared-input-projections`. What each
//! guarantees numerically is in [`rules`] (in short: exact, except that
//! reassociation rounds differently and `x + 0 → x` keeps a `-0`).
//!
//! Explanations: with [`Simplify::explain`] on, egg records why classes are
//! equal, and every node whose form changed gets the chain of rules that
//! proves its new form equal to the old one (`permute-permute ->
//! permute-identity`), within the time limit. In builds with debug
//! assertions egg's runner re-checks every recorded proof step after each
//! iteration by writing terms out as trees, which grows exponentially with
//! the depth of a network; there explanations are only recorded for graphs
//! whose largest term, written out as a tree, has at most
//! [`DEBUG_EXPLAIN_MAX_TREE`] nodes ([`max_tree_size`]), and the report says
//! `explanations: off` otherwise. Release builds have no such limit.

pub mod emit;
pub mod extract;
pub mod lang;
pub mod merge;
pub mod rules;

#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt::Write as _;
use std::rc::Rc;
use std::time::{Duration, Instant};

use egg::{BackoffScheduler, Id, Language, Runner, StopReason, TreeTerm};
use lpac_ir::{Graph, NodeId, Op};

use crate::pass::{Pass, PassError, PassOption, PassOutcome};
use emit::{Spec, emit};
use extract::{choose, graph_cost};
use lang::{EG, Term, Types};

/// Largest graph explained in builds with debug assertions, measured as the
/// size of the largest node's term written out as a tree (see the module docs).
pub const DEBUG_EXPLAIN_MAX_TREE: u64 = 2_000_000;

/// The size of the largest term of the graph written out as a tree
/// (saturating): what egg's debug checks of explanations cost per proof step.
pub fn max_tree_size(graph: &Graph) -> u64 {
    let mut sizes: Vec<u64> = Vec::with_capacity(graph.len());
    for node in &graph.nodes {
        let size = node.inputs.iter().fold(1u64, |acc, i| acc.saturating_add(sizes[i.index()]));
        sizes.push(size);
    }
    sizes.into_iter().max().unwrap_or(0)
}

/// The simplify pass and its limits.
#[derive(Clone, Debug)]
pub struct Simplify {
    /// Most rule-application rounds.
    pub iter_limit: usize,
    /// Stop growing the e-graph past this many e-nodes.
    pub node_limit: usize,
    /// Stop rewriting after this long (explanations stop too).
    pub time_limit: Duration,
    /// Record explanations (rule chains) for the nodes that changed.
    pub explain: bool,
}

/// The options of `simplify{key=value,...}`, for `lpac passes`.
pub const OPTIONS: &[PassOption] = &[
    PassOption { name: "iter_limit", help: "most rounds of rule application", default: "16" },
    PassOption { name: "node_limit", help: "stop growing the e-graph past this many e-nodes", default: "50000" },
    PassOption { name: "time_limit", help: "seconds of rewriting at most (explanations stop too)", default: "2" },
    PassOption { name: "explain", help: "record rule chains for the nodes that changed (true/false)", default: "true" },
];

impl Simplify {
    /// The pass with options from a pipeline (`simplify{iter_limit=8}`);
    /// unknown keys are the registry's to reject.
    pub fn from_options(options: &BTreeMap<String, String>) -> Result<Simplify, String> {
        let mut pass = Simplify::default();
        let count = |key: &str, v: &str| -> Result<usize, String> {
            v.parse::<usize>()
                .ok()
                .filter(|&n| n > 0)
                .ok_or_else(|| format!("simplify: {key} `{v}` is not a positive integer"))
        };
        for (key, v) in options {
            match key.as_str() {
                "iter_limit" => pass.iter_limit = count(key, v)?,
                "node_limit" => pass.node_limit = count(key, v)?,
                "time_limit" => {
                    let secs = v.parse::<f64>().ok().filter(|s| s.is_finite() && *s > 0.0 && *s <= 1e6);
                    let secs = secs.ok_or_else(|| format!("simplify: time_limit `{v}` is not a number of seconds"))?;
                    pass.time_limit = Duration::from_secs_f64(secs);
                }
                "explain" => {
                    pass.explain = match v.as_str() {
                        "true" | "on" | "1" => true,
                        "false" | "off" | "0" => false,
                        _ => return Err(format!("simplify: explain `{v}` is not true or false")),
                    }
                }
                _ => return Err(format!("simplify has no option `{key}`")),
            }
        }
        Ok(pass)
    }
}

impl Default for Simplify {
    fn default() -> Self {
        Simplify { iter_limit: 16, node_limit: 50_000, time_limit: Duration::from_secs(2), explain: true }
    }
}

/// What one run did, for reports, tests and benchmarks.
#[derive(Clone, Debug, Default)]
pub struct Stats {
    pub nodes_before: usize,
    pub nodes_after: usize,
    pub egraph_nodes: usize,
    pub egraph_classes: usize,
    pub iterations: usize,
    pub stop_reason: String,
    /// Each rule that fired and how often, in rule order.
    pub rules: Vec<(String, usize)>,
    /// (FLOPs, bytes) by [`crate::cost`].
    pub cost_before: (u64, u64),
    pub cost_after: (u64, u64),
    /// Whether explanations were recorded, and for how many nodes.
    pub explained: bool,
    pub explanations: usize,
    /// Explanations were asked for but skipped (see the module docs).
    pub explain_skipped: bool,
    pub runner_time: Duration,
    pub total_time: Duration,
}

impl Stats {
    /// How often `rule` fired (0 if it did not).
    pub fn fired(&self, rule: &str) -> usize {
        self.rules.iter().find(|(r, _)| r == rule).map_or(0, |(_, n)| *n)
    }

    pub fn report(&self) -> String {
        let mut s = String::new();
        let _ = writeln!(s, "simplify: {} -> {} nodes", self.nodes_before, self.nodes_after);
        let _ = writeln!(
            s,
            "  e-graph: {} e-nodes, {} e-classes, {} iteration(s), stopped: {}",
            self.egraph_nodes, self.egraph_classes, self.iterations, self.stop_reason
        );
        let _ = writeln!(
            s,
            "  time: {:.1} ms total ({:.1} ms rewriting)",
            self.total_time.as_secs_f64() * 1e3,
            self.runner_time.as_secs_f64() * 1e3
        );
        if self.rules.is_empty() {
            let _ = writeln!(s, "  rules fired: none");
        } else {
            let fired: Vec<String> = self.rules.iter().map(|(r, n)| format!("{r} x{n}")).collect();
            let _ = writeln!(s, "  rules fired: {}", fired.join(", "));
        }
        let (f0, b0) = self.cost_before;
        let (f1, b1) = self.cost_after;
        let _ = writeln!(
            s,
            "  cost (FLOPs + bytes): {} -> {} (FLOPs {} -> {}, bytes {} -> {})",
            f0 + b0,
            f1 + b1,
            f0,
            f1,
            b0,
            b1
        );
        if self.explained {
            let _ = writeln!(s, "  explanations: {} node(s)", self.explanations);
        } else if self.explain_skipped {
            let _ = writeln!(s, "  explanations: off (a debug build cannot check proofs on a graph this deep)");
        } else {
            let _ = writeln!(s, "  explanations: off");
        }
        s
    }
}

impl Pass for Simplify {
    fn name(&self) -> &'static str {
        "simplify"
    }

    fn summary(&self) -> &'static str {
        "algebraic simplification by equality saturation (egg), chosen by FLOPs and bytes moved"
    }

    fn preserves_meaning(&self) -> bool {
        true
    }

    fn run(&self, graph: &Graph) -> Result<PassOutcome, PassError> {
        self.run_with_stats(graph).map(|(outcome, _)| outcome)
    }
}

fn stop_text(reason: &Option<StopReason>) -> String {
    match reason {
        Some(StopReason::Saturated) => "saturated".into(),
        Some(StopReason::IterationLimit(n)) => format!("iteration limit ({n})"),
        Some(StopReason::NodeLimit(n)) => format!("e-node limit ({n})"),
        Some(StopReason::TimeLimit(t)) => format!("time limit ({t} s)"),
        Some(StopReason::Other(s)) => s.clone(),
        None => "not run".into(),
    }
}

impl Simplify {
    /// Runs the pass and also returns its statistics.
    pub fn run_with_stats(&self, graph: &Graph) -> Result<(PassOutcome, Stats), PassError> {
        let start = Instant::now();
        if let Err(errors) = lpac_ir::verify(graph) {
            let first = errors.first().map(|e| e.to_string()).unwrap_or_default();
            return Err(PassError::new("simplify", format!("the input graph does not verify: {first}")));
        }
        let explain = self.explain && (!cfg!(debug_assertions) || max_tree_size(graph) <= DEBUG_EXPLAIN_MAX_TREE);

        // 1. The e-graph.
        let mut egraph = EG::new(Types::new(graph));
        if explain {
            egraph = egraph.with_explanations_enabled().without_explanation_length_optimization();
        }
        let mut ids: Vec<Id> = Vec::with_capacity(graph.len());
        let mut terms: Vec<Term> = Vec::with_capacity(graph.len());
        for (i, node) in graph.nodes.iter().enumerate() {
            let kids: Vec<Id> = node.inputs.iter().map(|j| ids[j.index()]).collect();
            let term = Term::from_node(i, node, &kids);
            ids.push(egraph.add_uncanonical(term.clone()));
            terms.push(term);
        }
        egraph.rebuild();

        // 2. Saturation.
        let rewrites = rules::to_rewrites(rules::all_rules());
        let runner_start = Instant::now();
        let mut runner: Runner<Term, Types> = Runner::new(Types { leaf_types: Vec::new() })
            .with_egraph(egraph)
            .with_iter_limit(self.iter_limit)
            .with_node_limit(self.node_limit)
            .with_time_limit(self.time_limit)
            .with_scheduler(BackoffScheduler::default().with_initial_match_limit(20_000))
            .run(&rewrites);
        let runner_time = runner_start.elapsed();
        let mut fired: BTreeMap<usize, usize> = BTreeMap::new();
        let order = rules::rule_names();
        for it in &runner.iterations {
            for (name, n) in &it.applied {
                let i = order.iter().position(|r| *r == name.as_str()).unwrap_or(order.len());
                *fired.entry(i).or_default() += n;
            }
        }

        // 3. Extraction and rebuilding.
        let egraph = &runner.egraph;
        let class_of = |i: usize| egraph.find(ids[i]);
        let mut originals: HashMap<Id, Vec<usize>> = HashMap::new();
        for i in 0..graph.len() {
            originals.entry(class_of(i)).or_default().push(i);
        }
        let own_form = |i: usize| terms[i].clone().map_children(|c| egraph.find(c));
        let mut users: HashMap<Id, usize> = HashMap::new();
        let mut pairs: HashSet<(Id, Id)> = HashSet::new();
        for (i, node) in graph.nodes.iter().enumerate() {
            for j in &node.inputs {
                if pairs.insert((class_of(i), class_of(j.index()))) {
                    *users.entry(class_of(j.index())).or_default() += 1;
                }
            }
        }
        for out in &graph.outputs {
            *users.entry(class_of(out.node.index())).or_default() += 1;
        }
        let preferred: HashMap<Id, Term> = originals.iter().map(|(&c, members)| (c, own_form(members[0]))).collect();
        let choice = choose(egraph, graph, &users, &preferred);

        let rebuilt = rebuild(graph, egraph, &choice.best, &originals, &own_form, &ids)
            .map_err(|e| PassError::new("simplify", format!("internal error while rebuilding: {e}")))?;
        let Rebuilt { emitted, changed } = rebuilt;

        // Explanations for the nodes whose form changed.
        let mut explanations: BTreeMap<NodeId, String> = BTreeMap::new();
        if explain {
            let egraph = &mut runner.egraph;
            for (new_id, original, chosen) in changed {
                if start.elapsed() > self.time_limit {
                    break;
                }
                let right = egraph.add_uncanonical(chosen);
                let proof = egraph.explain_id_equivalence(ids[original], right);
                let chain = rule_chain(&proof.explanation_trees);
                if !chain.is_empty() {
                    explanations.insert(new_id, chain);
                }
            }
        }

        // 4. Merging projections that share an input.
        let mut graph_out = emitted.graph;
        let mut source = emitted.source;
        let name = |id: NodeId| source[id.index()].map_or_else(|| "a new node".to_string(), |s| s.to_string());
        let merged = merge::merge_projections(&graph_out, &name)
            .map_err(|e| PassError::new("simplify", format!("internal error while merging: {e}")))?;
        if let Some(m) = merged {
            fired.insert(order.len() - 1, m.groups);
            let moved: BTreeMap<NodeId, String> =
                explanations.into_iter().map(|(k, v)| (m.placed[k.index()], v)).collect();
            explanations = moved;
            for (id, note) in m.notes {
                explanations.insert(id, note);
            }
            source = m.source.iter().map(|s| s.and_then(|s| source[s.index()])).collect();
            graph_out = m.graph;
        }

        let report = runner.report();
        let stats = Stats {
            nodes_before: graph.len(),
            nodes_after: graph_out.len(),
            egraph_nodes: report.egraph_nodes,
            egraph_classes: report.egraph_classes,
            iterations: report.iterations,
            stop_reason: stop_text(&runner.stop_reason),
            rules: fired
                .iter()
                .filter(|(_, n)| **n > 0)
                .map(|(&i, &n)| (order.get(i).copied().unwrap_or("?").to_string(), n))
                .collect(),
            cost_before: graph_cost(graph),
            cost_after: graph_cost(&graph_out),
            explained: explain,
            explanations: explanations.len(),
            explain_skipped: self.explain && !explain,
            runner_time,
            total_time: start.elapsed(),
        };
        let outcome = PassOutcome { graph: graph_out, source, explanations, report: Some(stats.report()) };
        Ok((outcome, stats))
    }
}

/// The rebuilt graph, and the nodes whose form changed:
/// (new node, the original node it stands for, the chosen e-node).
struct Rebuilt {
    emitted: emit::Emitted,
    changed: Vec<(NodeId, usize, Term)>,
}

/// One node per needed class, from the chosen e-nodes.
fn rebuild(
    graph: &Graph,
    egraph: &EG,
    best: &HashMap<Id, (Term, f64)>,
    originals: &HashMap<Id, Vec<usize>>,
    own_form: &dyn Fn(usize) -> Term,
    ids: &[Id],
) -> Result<Rebuilt, String> {
    let chosen = |c: Id| best.get(&c).map(|(t, _)| t).ok_or_else(|| format!("e-class {c} has no choice"));
    let mut specs: Vec<Spec> = Vec::new();
    let mut spec_of: HashMap<Id, usize> = HashMap::new();
    let mut changed_specs: Vec<(usize, usize, Term)> = Vec::new();

    // Inputs and parameters first, in order, all of them.
    for (i, node) in graph.nodes.iter().enumerate() {
        if matches!(node.op, Op::Input { .. } | Op::Param { .. }) {
            let c = egraph.find(ids[i]);
            if *chosen(c)? == Term::Leaf(i as u32) {
                spec_of.insert(c, specs.len());
            }
            specs.push(Spec {
                op: node.op.clone(),
                inputs: vec![],
                ty: node.ty.clone(),
                origin: node.origin.clone(),
                source: Some(NodeId(i as u32)),
                // Before everything else, in their original order.
                key: (0, i as u32),
            });
        }
    }

    // Then every class the outputs need, operands first.
    let mut counter = 0u32;
    let roots: Vec<Id> = graph.outputs.iter().map(|o| egraph.find(ids[o.node.index()])).collect();
    // Stack of (class, the original node it is built for, operands done).
    let mut stack: Vec<(Id, usize, bool)> = Vec::new();
    let mut open: HashSet<Id> = HashSet::new();
    for &root in &roots {
        let context = originals.get(&root).map_or(0, |o| o[0]);
        stack.push((root, context, false));
        while let Some((c, context, done)) = stack.pop() {
            if spec_of.contains_key(&c) {
                continue;
            }
            let term = chosen(c)?;
            let mine = originals.get(&c);
            let context = mine.map_or(context, |o| o[0]);
            if !done {
                if !open.insert(c) {
                    return Err(format!("e-class {c} depends on itself"));
                }
                stack.push((c, context, true));
                for &kid in term.children().iter().rev() {
                    let kid = egraph.find(kid);
                    if !spec_of.contains_key(&kid) {
                        stack.push((kid, context, false));
                    }
                }
                continue;
            }
            let inputs: Vec<usize> = term
                .children()
                .iter()
                .map(|k| spec_of.get(&egraph.find(*k)).copied().ok_or_else(|| format!("operand of {c} is missing")))
                .collect::<Result<_, _>>()?;
            let (origin, source, key) = match mine {
                Some(members) => {
                    let own = members.iter().copied().find(|&i| own_form(i) == *term);
                    let n = own.unwrap_or(members[0]);
                    let origin = &graph.nodes[n].origin;
                    let origin = if own.is_some() { origin.clone() } else { origin.rewritten_by("simplify") };
                    if own.is_none() {
                        changed_specs.push((specs.len(), n, term.clone()));
                    }
                    (origin, n, (members[0] as u32 + 1, 0))
                }
                None => {
                    counter += 1;
                    // Right after its last operand (and after all parameters).
                    let after = inputs.iter().map(|&i| specs[i].key.0).max().unwrap_or(0).max(1);
                    (graph.nodes[context].origin.rewritten_by("simplify"), context, (after, counter))
                }
            };
            open.remove(&c);
            spec_of.insert(c, specs.len());
            specs.push(Spec {
                op: term.to_op(graph),
                inputs,
                ty: egraph[c].data.ty.clone(),
                origin,
                source: Some(NodeId(source as u32)),
                key,
            });
        }
    }
    let outputs: Vec<(String, usize)> =
        graph.outputs.iter().zip(&roots).map(|(o, r)| (o.name.clone(), spec_of[r])).collect();
    let emitted = emit(&graph.name, &specs, &outputs)?;
    let changed = changed_specs.into_iter().map(|(s, n, t)| (emitted.placed[s], n, t)).collect();
    Ok(Rebuilt { emitted, changed })
}

/// The rule names of a proof, in the order they apply, repeats collapsed
/// (`splat-const ×3 → fold-binary`), at most 16.
fn rule_chain(proof: &[Rc<TreeTerm<Term>>]) -> String {
    fn walk(proof: &[Rc<TreeTerm<Term>>], seen: &mut HashSet<*const TreeTerm<Term>>, out: &mut Vec<String>) {
        for step in proof {
            if !seen.insert(Rc::as_ptr(step)) {
                continue;
            }
            if let Some(rule) = step.forward_rule.or(step.backward_rule) {
                out.push(rule.to_string());
            }
            for child in &step.child_proofs {
                walk(child, seen, out);
            }
        }
    }
    let mut names = Vec::new();
    walk(proof, &mut HashSet::new(), &mut names);
    let mut parts: Vec<(String, usize)> = Vec::new();
    for name in names {
        match parts.last_mut() {
            Some((last, n)) if *last == name => *n += 1,
            _ => parts.push((name, 1)),
        }
    }
    let shown: Vec<String> =
        parts.iter().take(16).map(|(r, n)| if *n > 1 { format!("{r} x{n}") } else { r.clone() }).collect();
    let mut text = shown.join(" -> ");
    if parts.len() > 16 {
        text.push_str(" -> ...");
    }
    text
}
