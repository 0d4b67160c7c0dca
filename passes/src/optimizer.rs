//! `optimizer`: the parameter update as graph, so that forward, backward and
//! update are one training-step graph, fused and planned as one.
//!
//! # Input
//! The graph `autodiff` produces: the forward graph plus backward nodes, with
//! an output `loss` (a scalar) and, for every parameter in parameter (node)
//! order, an output `grad:<path>` of the parameter's type. Other outputs are
//! allowed and are dropped.
//!
//! # Output
//! The same nodes (copied, with the same ids) plus the update, and exactly
//! these outputs, in this order:
//!
//! 1. `loss`;
//! 2. `grad_norm`: the global L2 norm of all gradients *before* clipping, an
//!    f32 scalar: `sqrt(Σ_p Σ_i g_p[i]²)` (gradients of other float dtypes are
//!    cast to f32 first);
//! 3. `param:<path>` for every parameter, in parameter order: its new value;
//! 4. the optimiser state's new values, one group per state prefix of
//!    [`state_inputs`] and within a group in parameter order, each named like
//!    the state input it replaces: for AdamW all `adam_m:<path>`, then all
//!    `adam_v:<path>`; for SGD `momentum:<path>`;
//! 5. only with `keep_grads=true`: the `grad:<path>` outputs, in parameter
//!    order.
//!
//! # New inputs
//! Hyperparameters are step inputs, f32 scalars (`f32[]`), so changing the
//! learning rate (or anything else) never recompiles. AdamW reads `hp:lr`,
//! `hp:beta1`, `hp:beta2`, `hp:eps`, `hp:weight_decay`, `hp:clip` and
//! `hp:step` (the 1-based step t as f32, for the bias correction); SGD reads
//! `hp:lr`, `hp:momentum`, `hp:weight_decay` and `hp:clip` (see
//! [`hyper_inputs`]). The state is fed in as inputs of the parameter's type:
//! `adam_m:<path>` and `adam_v:<path>` (AdamW) or `momentum:<path>` (SGD),
//! zeros before the first step. An input that already exists under one of
//! these names with the right type is reused; with another type it is an
//! error.
//!
//! # The update
//! Clipping, for both kinds (as `torch.nn.utils.clip_grad_norm_`, applied to
//! every gradient, factor 1 included):
//! ```text
//! norm   = sqrt(Σ g²)                                  (output grad_norm)
//! factor = select(clip > 0, min(1, clip / (norm + 1e-6)), 1)
//! g      = g · factor
//! ```
//! AdamW, decoupled weight decay exactly as `torch.optim.AdamW` (single-tensor
//! path) orders it: the decay multiplies the parameter *before* the Adam step.
//! ```text
//! p  = p · (1 − lr·wd)                          (only where the decay mask allows)
//! m  = β1·m + (1 − β1)·g
//! v  = β2·v + (1 − β2)·g·g
//! step_size = lr / (1 − β1^t)
//! denom     = sqrt(v) / sqrt(1 − β2^t) + ε
//! p  = p − step_size · (m / denom)
//! ```
//! which is `p ← p − lr·(m̂/(sqrt(v̂)+ε) + wd·p)` with `m̂ = m/(1−β1^t)` and
//! `v̂ = v/(1−β2^t)`, up to rounding (torch's `exp_avg.lerp_(g, 1−β1)` is the
//! same `m` up to rounding, too).
//!
//! SGD with momentum as `torch.optim.SGD` (dampening 0, no Nesterov):
//! ```text
//! g   = g + wd·p                                (only where the decay mask allows)
//! buf = μ·buf + g
//! p   = p − lr·buf
//! ```
//! With a zero initial buffer the first step gives `buf = g`, as torch's
//! first step does; with `μ = 0` it is plain SGD.
//!
//! The decay mask (`decay_mask=true`, the default) applies weight decay only
//! to parameters of rank ≥ 2 (matrices, embeddings), leaving norms' gains and
//! biases out; `decay_mask=false` decays everything.
//!
//! Update arithmetic is done in the parameter's dtype (hyperparameters are
//! cast to it when it is not f32); the gradient norm in f32.
//!
//! # Provenance
//! Copied nodes keep their ids and map to themselves in
//! [`PassOutcome::source`]. New nodes that belong to one parameter (its state
//! inputs, its share of the norm, its update) map to that parameter's node
//! and carry its origin with `optimizer` appended; shared nodes (the
//! hyperparameter inputs, the norm, the clipping factor, the bias
//! corrections) map to `None` and carry an origin with no span and the pass
//! `optimizer`.
//!
//! # Host side
//! [`Hyper`] holds the hyperparameter values with the paper's defaults and
//! produces the `hp:` feeds for a step; [`Schedule`] gives the learning rate
//! of each step.

use std::collections::BTreeMap;
use std::f64::consts::PI;

use lpac_ir::typing::result_type;
use lpac_ir::{BinaryOp, DType, Graph, Node, NodeId, Op, Origin, ReduceOp, TensorType, UnaryOp};

use crate::pass::{GraphCopier, Pass, PassError, PassOption, PassOutcome};

const NAME: &str = "optimizer";

/// The name of the output (and of the input before the pass) holding a
/// parameter's gradient: `grad:<path>`.
pub const GRAD_PREFIX: &str = "grad:";
/// The name of the output holding a parameter's new value: `param:<path>`.
pub const PARAM_PREFIX: &str = "param:";
/// The output holding the global gradient norm before clipping.
pub const GRAD_NORM: &str = "grad_norm";
/// The `ε` added to the norm in the clipping factor, as torch's `clip_grad_norm_`.
pub const CLIP_EPS: f64 = 1e-6;

/// The pass's options, for `lpac passes` and `optimizer{kind=sgd}`.
pub const OPTIONS: &[PassOption] = &[
    PassOption { name: "kind", help: "adamw | sgd (with momentum)", default: "adamw" },
    PassOption {
        name: "decay_mask",
        help: "true: weight decay only on parameters of rank >= 2 (not norms, biases); false: on all",
        default: "true",
    },
    PassOption { name: "keep_grads", help: "also keep the grad:<path> outputs (true/false)", default: "false" },
];

/// Which update rule.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Kind {
    /// AdamW with decoupled weight decay, as `torch.optim.AdamW`.
    #[default]
    AdamW,
    /// SGD with momentum, as `torch.optim.SGD` (dampening 0, no Nesterov).
    Sgd,
}

impl Kind {
    pub fn name(self) -> &'static str {
        match self {
            Kind::AdamW => "adamw",
            Kind::Sgd => "sgd",
        }
    }

    pub fn parse(text: &str) -> Option<Kind> {
        match text {
            "adamw" => Some(Kind::AdamW),
            "sgd" => Some(Kind::Sgd),
            _ => None,
        }
    }
}

/// The prefixes of the state inputs (and outputs) of `kind`, in output order:
/// the state of parameter `P` under prefix `s` is named `s:P` (see
/// [`state_name`]), has `P`'s type and starts at zero.
pub fn state_inputs(kind: Kind) -> &'static [&'static str] {
    match kind {
        Kind::AdamW => &["adam_m", "adam_v"],
        Kind::Sgd => &["momentum"],
    }
}

/// The hyperparameter inputs `kind` reads, all `f32[]`.
pub fn hyper_inputs(kind: Kind) -> &'static [&'static str] {
    match kind {
        Kind::AdamW => &["hp:lr", "hp:beta1", "hp:beta2", "hp:eps", "hp:weight_decay", "hp:clip", "hp:step"],
        Kind::Sgd => &["hp:lr", "hp:momentum", "hp:weight_decay", "hp:clip"],
    }
}

/// `prefix:path`, the name of a state input and of its new value's output.
pub fn state_name(prefix: &str, path: &str) -> String {
    format!("{prefix}:{path}")
}

/// Whether weight decay applies to a parameter of type `ty`: with the mask
/// only to rank ≥ 2; without it to everything.
pub fn decays(ty: &TensorType, decay_mask: bool) -> bool {
    !decay_mask || ty.rank() >= 2
}

/// Hyperparameter values, fed as the `hp:` inputs each step. The defaults
/// are the paper's: AdamW with β = (0.9, 0.95), ε = 1e-5, no weight decay,
/// gradients clipped at norm 1.0, learning rate 1e-3 (before the schedule);
/// SGD's momentum 0.9.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Hyper {
    pub lr: f64,
    pub beta1: f64,
    pub beta2: f64,
    pub eps: f64,
    pub weight_decay: f64,
    /// Largest global gradient norm; ≤ 0 disables clipping.
    pub clip: f64,
    pub momentum: f64,
}

impl Default for Hyper {
    fn default() -> Self {
        Hyper { lr: 1e-3, beta1: 0.9, beta2: 0.95, eps: 1e-5, weight_decay: 0.0, clip: 1.0, momentum: 0.9 }
    }
}

impl Hyper {
    /// The value of hyperparameter input `name` (`hp:beta1`) at 1-based step
    /// `step` with learning rate `lr` (the schedule's, not `self.lr`), or
    /// `None` for a name that is not a hyperparameter.
    pub fn value(&self, name: &str, lr: f64, step: u64) -> Option<f64> {
        Some(match name {
            "hp:lr" => lr,
            "hp:beta1" => self.beta1,
            "hp:beta2" => self.beta2,
            "hp:eps" => self.eps,
            "hp:weight_decay" => self.weight_decay,
            "hp:clip" => self.clip,
            "hp:momentum" => self.momentum,
            "hp:step" => step as f64,
            _ => return None,
        })
    }

    /// The `hp:` feeds of one step, in [`hyper_inputs`] order: `step` is the
    /// 1-based step t, `lr` this step's learning rate
    /// (`schedule.lr_at(hyper.lr, step)`).
    pub fn feeds(&self, kind: Kind, lr: f64, step: u64) -> Vec<(&'static str, f64)> {
        hyper_inputs(kind)
            .iter()
            .map(|&name| (name, self.value(name, lr, step).expect("every hyper input has a value")))
            .collect()
    }
}

/// The learning rate as a function of the step. `step` is the 1-based step
/// t (the `hp:step` of the update it is used for); `w` is `warmup`, `T`
/// `total`, `f` `floor`, `b` the base rate:
///
/// - warm-up (every schedule, when `w > 0`): for `t ≤ w`, `lr = b·t/w` — a
///   line from 0 at t = 0 to `b` at t = w, so the first step already moves;
/// - `Constant`: `b` after the warm-up;
/// - `Cosine`: for `w < t < T`, with `progress = (t − w)/(T − w)`,
///   `lr = b·(f + (1 − f)·½(1 + cos(π·progress)))`; for `t ≥ T`,
///   `lr = f·b` (it stays at the floor beyond `T`);
/// - `Linear`: for `w < t < T`, `lr = b·(f + (1 − f)·(1 − progress))`; for
///   `t ≥ T`, `f·b`.
///
/// The warm-up takes precedence: with `T ≤ w` the rate reaches `b` at `w`
/// and is `f·b` after it ([`Schedule::check`] refuses that).
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Schedule {
    Constant { warmup: u64 },
    Cosine { warmup: u64, total: u64, floor: f64 },
    Linear { warmup: u64, total: u64, floor: f64 },
}

impl Default for Schedule {
    fn default() -> Self {
        Schedule::Constant { warmup: 0 }
    }
}

impl Schedule {
    /// The learning rate at 1-based step `step`.
    pub fn lr_at(&self, base_lr: f64, step: u64) -> f64 {
        let (warmup, decay) = match *self {
            Schedule::Constant { warmup } => (warmup, None),
            Schedule::Cosine { warmup, total, floor } => (warmup, Some((total, floor, true))),
            Schedule::Linear { warmup, total, floor } => (warmup, Some((total, floor, false))),
        };
        if warmup > 0 && step <= warmup {
            return base_lr * step as f64 / warmup as f64;
        }
        let Some((total, floor, cosine)) = decay else { return base_lr };
        if step >= total {
            return base_lr * floor;
        }
        let progress = (step - warmup) as f64 / (total - warmup) as f64;
        let shape = if cosine { 0.5 * (1.0 + (PI * progress).cos()) } else { 1.0 - progress };
        base_lr * (floor + (1.0 - floor) * shape)
    }

    /// Refuses schedules that make no sense: a decay that ends before the
    /// warm-up does, or a floor outside [0, 1].
    pub fn check(&self) -> Result<(), String> {
        match *self {
            Schedule::Constant { .. } => Ok(()),
            Schedule::Cosine { warmup, total, floor } | Schedule::Linear { warmup, total, floor } => {
                if total <= warmup {
                    return Err(format!("the schedule's total ({total}) must exceed its warm-up ({warmup})"));
                }
                if !(0.0..=1.0).contains(&floor) {
                    return Err(format!("the schedule's floor ({floor}) must lie in [0, 1]"));
                }
                Ok(())
            }
        }
    }
}

/// The pass. The default is AdamW with the decay mask, grads dropped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Optimizer {
    pub kind: Kind,
    /// Weight decay only on rank ≥ 2 parameters (true) or on all (false).
    pub decay_mask: bool,
    /// Keep the `grad:` outputs after the update's outputs.
    pub keep_grads: bool,
}

impl Default for Optimizer {
    fn default() -> Self {
        Optimizer::new(Kind::AdamW)
    }
}

impl Optimizer {
    pub fn new(kind: Kind) -> Self {
        Optimizer { kind, decay_mask: true, keep_grads: false }
    }

    /// The pass with options from a pipeline (`optimizer{kind=sgd}`).
    pub fn from_options(options: &BTreeMap<String, String>) -> Result<Optimizer, String> {
        let mut pass = Optimizer::new(Kind::AdamW);
        let flag = |key: &str, v: &str| match v {
            "true" | "on" | "1" => Ok(true),
            "false" | "off" | "0" => Ok(false),
            _ => Err(format!("optimizer: {key} `{v}` is not true or false")),
        };
        for (key, v) in options {
            match key.as_str() {
                "kind" => {
                    pass.kind =
                        Kind::parse(v).ok_or_else(|| format!("optimizer: kind `{v}` is not one of adamw, sgd"))?
                }
                "decay_mask" => pass.decay_mask = flag(key, v)?,
                "keep_grads" => pass.keep_grads = flag(key, v)?,
                _ => return Err(format!("optimizer has no option `{key}`")),
            }
        }
        Ok(pass)
    }
}

impl Pass for Optimizer {
    fn name(&self) -> &'static str {
        NAME
    }

    fn summary(&self) -> &'static str {
        "the parameter update (AdamW or SGD, clipping, weight decay) as graph (changes the outputs)"
    }

    fn preserves_meaning(&self) -> bool {
        false
    }

    fn run(&self, graph: &Graph) -> Result<PassOutcome, PassError> {
        let plan = Plan::of(graph)?;
        let mut b = Builder { copier: GraphCopier::new(graph), shared: Origin::default().rewritten_by(NAME) };
        for id in graph.ids() {
            b.copier.copy(id);
        }
        let mut hyper = BTreeMap::new();
        for &name in hyper_inputs(self.kind) {
            hyper.insert(name, b.input(name, TensorType::scalar(DType::F32), None)?);
        }
        // State inputs, prefix by prefix, each in parameter order.
        let mut state: BTreeMap<(&str, NodeId), NodeId> = BTreeMap::new();
        for &prefix in state_inputs(self.kind) {
            for p in &plan.params {
                let site = b.site(p.node);
                let id = b.input(&state_name(prefix, &p.path), graph.ty(p.node).clone(), Some(&site))?;
                state.insert((prefix, p.node), id);
            }
        }

        let norm = b.grad_norm(graph, &plan)?;
        let factor = b.clip_factor(norm, hyper["hp:clip"])?;
        let scalars = match self.kind {
            Kind::AdamW => b.adam_scalars(&hyper)?,
            Kind::Sgd => BTreeMap::new(),
        };

        let mut new_params = Vec::new();
        let mut new_state: BTreeMap<(&str, NodeId), NodeId> = BTreeMap::new();
        let mut decayed = 0;
        for p in &plan.params {
            let site = b.site(p.node);
            let decay = decays(graph.ty(p.node), self.decay_mask);
            decayed += usize::from(decay);
            let g = b.binary_scaled(BinaryOp::Mul, p.grad, factor, &site)?;
            let new = match self.kind {
                Kind::AdamW => {
                    let m = state[&("adam_m", p.node)];
                    let v = state[&("adam_v", p.node)];
                    let (p_new, m_new, v_new) = b.adamw(p.node, g, m, v, decay, &scalars, &hyper, &site)?;
                    new_state.insert(("adam_m", p.node), m_new);
                    new_state.insert(("adam_v", p.node), v_new);
                    p_new
                }
                Kind::Sgd => {
                    let buf = state[&("momentum", p.node)];
                    let (p_new, buf_new) = b.sgd(p.node, g, buf, decay, &hyper, &site)?;
                    new_state.insert(("momentum", p.node), buf_new);
                    p_new
                }
            };
            new_params.push(new);
        }

        let mut copier = b.copier;
        copier.new.add_output("loss", plan.loss);
        copier.new.add_output(GRAD_NORM, norm);
        for (p, &new) in plan.params.iter().zip(&new_params) {
            copier.new.add_output(format!("{PARAM_PREFIX}{}", p.path), new);
        }
        for &prefix in state_inputs(self.kind) {
            for p in &plan.params {
                copier.new.add_output(state_name(prefix, &p.path), new_state[&(prefix, p.node)]);
            }
        }
        if self.keep_grads {
            for p in &plan.params {
                copier.new.add_output(format!("{GRAD_PREFIX}{}", p.path), p.grad);
            }
        }

        let scalars_count: usize = plan.params.iter().map(|p| graph.ty(p.node).numel()).sum();
        let mut report = format!(
            "optimizer: {} over {} parameter tensor(s) ({} scalars); weight decay on {} of them ({})\n  \
             inputs: {}, state {}\n  {} -> {} nodes",
            self.kind.name(),
            plan.params.len(),
            scalars_count,
            decayed,
            if self.decay_mask { "rank >= 2" } else { "all" },
            hyper_inputs(self.kind).join(", "),
            state_inputs(self.kind).iter().map(|s| format!("{s}:*")).collect::<Vec<_>>().join(", "),
            graph.len(),
            copier.new.len(),
        );
        if !plan.dropped.is_empty() {
            report.push_str(&format!("\n  dropped outputs: {}", plan.dropped.join(", ")));
        }
        let source = copier.source;
        Ok(PassOutcome { graph: copier.new, source, explanations: BTreeMap::new(), report: Some(report) })
    }
}

/// One parameter to update.
struct ParamPlan {
    node: NodeId,
    path: String,
    grad: NodeId,
}

/// What the input graph provides: the loss, each parameter with its
/// gradient, and the outputs the pass drops.
struct Plan {
    loss: NodeId,
    params: Vec<ParamPlan>,
    dropped: Vec<String>,
}

impl Plan {
    fn of(graph: &Graph) -> Result<Plan, PassError> {
        let err = |m: String| PassError::new(NAME, m);
        let loss = graph.output("loss").ok_or_else(|| {
            err("the graph has no `loss` output; the optimizer runs after autodiff, on loss and grad:<path> outputs"
                .to_string())
        })?;
        let grads: BTreeMap<&str, NodeId> =
            graph.outputs.iter().filter_map(|o| o.name.strip_prefix(GRAD_PREFIX).map(|path| (path, o.node))).collect();
        let mut params = Vec::new();
        for (node, path) in graph.params() {
            let grad = *grads.get(path).ok_or_else(|| {
                err(format!("parameter `{path}` has no `{GRAD_PREFIX}{path}` output; run autodiff first"))
            })?;
            if graph.ty(grad) != graph.ty(node) {
                return Err(err(format!(
                    "output `{GRAD_PREFIX}{path}` is {} but parameter `{path}` is {}",
                    graph.ty(grad),
                    graph.ty(node)
                )));
            }
            params.push(ParamPlan { node, path: path.to_string(), grad });
        }
        if let Some(path) = grads.keys().find(|path| !params.iter().any(|p| p.path == **path)) {
            return Err(err(format!("output `{GRAD_PREFIX}{path}` names no parameter")));
        }
        if params.is_empty() {
            return Err(err("the graph has no parameters to update".to_string()));
        }
        let dropped = graph
            .outputs
            .iter()
            .filter(|o| o.name != "loss" && !o.name.starts_with(GRAD_PREFIX))
            .map(|o| o.name.clone())
            .collect();
        Ok(Plan { loss, params, dropped })
    }
}

/// Where new nodes of one parameter go: its origin and its node.
#[derive(Clone)]
struct Site {
    origin: Origin,
    param: NodeId,
}

/// Appends checked nodes to the copy.
struct Builder<'g> {
    copier: GraphCopier<'g>,
    /// The origin of shared nodes.
    shared: Origin,
}

impl Builder<'_> {
    fn site(&self, param: NodeId) -> Site {
        Site { origin: self.copier.old.node(param).origin.rewritten_by(NAME), param }
    }

    /// Adds a node after checking its type; `site` is the parameter it
    /// belongs to, or `None` for a shared node.
    fn node(
        &mut self,
        op: Op,
        inputs: Vec<NodeId>,
        given: Option<TensorType>,
        site: Option<&Site>,
    ) -> Result<NodeId, PassError> {
        let types: Vec<&TensorType> = inputs.iter().map(|&i| self.copier.new.ty(i)).collect();
        let ty = result_type(&op, &types, given.as_ref())
            .map_err(|e| PassError::new(NAME, format!("internal error building `{}`: {e}", op.name())))?;
        let (origin, source) = match site {
            Some(s) => (s.origin.clone(), Some(s.param)),
            None => (self.shared.clone(), None),
        };
        Ok(self.copier.push(Node { op, inputs, ty, origin }, source))
    }

    /// The input `name` of type `ty`: the existing one, or a new one.
    fn input(&mut self, name: &str, ty: TensorType, site: Option<&Site>) -> Result<NodeId, PassError> {
        let existing = self.copier.new.inputs().find(|(_, n)| *n == name).map(|(id, _)| id);
        match existing {
            Some(id) if *self.copier.new.ty(id) == ty => Ok(id),
            Some(id) => Err(PassError::new(
                NAME,
                format!(
                    "the graph already has an input `{name}` of type {}, but the optimizer needs {ty}",
                    self.copier.new.ty(id)
                ),
            )),
            None => self.node(Op::Input { name: name.to_string() }, vec![], Some(ty), site),
        }
    }

    fn scalar_const(&mut self, value: f64) -> Result<NodeId, PassError> {
        self.node(Op::Const { value }, vec![], Some(TensorType::scalar(DType::F32)), None)
    }

    fn binary(&mut self, op: BinaryOp, a: NodeId, b: NodeId, site: Option<&Site>) -> Result<NodeId, PassError> {
        self.node(Op::Binary(op), vec![a, b], None, site)
    }

    fn unary(&mut self, op: UnaryOp, a: NodeId, site: Option<&Site>) -> Result<NodeId, PassError> {
        self.node(Op::Unary(op), vec![a], None, site)
    }

    /// The f32 scalar `s` cast to the dtype of `ty` and broadcast to its shape.
    fn splat(&mut self, s: NodeId, ty: &TensorType, site: &Site) -> Result<NodeId, PassError> {
        let mut s = s;
        if self.copier.new.ty(s).dtype != ty.dtype {
            s = self.node(Op::Cast, vec![s], Some(TensorType::scalar(ty.dtype)), Some(site))?;
        }
        if ty.rank() == 0 {
            return Ok(s);
        }
        self.node(Op::Broadcast { dims: vec![] }, vec![s], Some(ty.clone()), Some(site))
    }

    /// `x op splat(s)`, for a tensor `x` and an f32 scalar `s`.
    fn binary_scaled(&mut self, op: BinaryOp, x: NodeId, s: NodeId, site: &Site) -> Result<NodeId, PassError> {
        let ty = self.copier.new.ty(x).clone();
        let s = self.splat(s, &ty, site)?;
        self.binary(op, x, s, Some(site))
    }

    /// `sqrt(Σ_p Σ_i g_p[i]²)` in f32, summed parameter by parameter in order.
    fn grad_norm(&mut self, graph: &Graph, plan: &Plan) -> Result<NodeId, PassError> {
        let mut total: Option<NodeId> = None;
        for p in &plan.params {
            let site = self.site(p.node);
            let ty = graph.ty(p.grad).clone();
            let mut g = p.grad;
            if ty.dtype != DType::F32 {
                g = self.node(Op::Cast, vec![g], Some(ty.with_dtype(DType::F32)), Some(&site))?;
            }
            let sq = self.binary(BinaryOp::Mul, g, g, Some(&site))?;
            let sum = if ty.rank() == 0 {
                sq
            } else {
                let axes = (0..ty.rank()).collect();
                self.node(Op::Reduce { op: ReduceOp::Sum, axes }, vec![sq], None, Some(&site))?
            };
            total = Some(match total {
                None => sum,
                Some(t) => self.binary(BinaryOp::Add, t, sum, None)?,
            });
        }
        let total = total.expect("the plan has at least one parameter");
        self.unary(UnaryOp::Sqrt, total, None)
    }

    /// `select(clip > 0, min(1, clip / (norm + 1e-6)), 1)`.
    fn clip_factor(&mut self, norm: NodeId, clip: NodeId) -> Result<NodeId, PassError> {
        let one = self.scalar_const(1.0)?;
        let zero = self.scalar_const(0.0)?;
        let eps = self.scalar_const(CLIP_EPS)?;
        let denom = self.binary(BinaryOp::Add, norm, eps, None)?;
        let ratio = self.binary(BinaryOp::Div, clip, denom, None)?;
        let clipped = self.binary(BinaryOp::Min, one, ratio, None)?;
        let enabled = self.binary(BinaryOp::Gt, clip, zero, None)?;
        self.node(Op::Select, vec![enabled, clipped, one], None, None)
    }

    /// The scalars every AdamW update shares: `1 − β1`, `1 − β2`,
    /// `step_size = lr / (1 − β1^t)`, `sqrt(1 − β2^t)` and the decay factor
    /// `1 − lr·wd`.
    fn adam_scalars(&mut self, hp: &BTreeMap<&str, NodeId>) -> Result<BTreeMap<&'static str, NodeId>, PassError> {
        let one = self.scalar_const(1.0)?;
        let (lr, b1, b2, t, wd) = (hp["hp:lr"], hp["hp:beta1"], hp["hp:beta2"], hp["hp:step"], hp["hp:weight_decay"]);
        let mut s = BTreeMap::new();
        s.insert("one_minus_beta1", self.binary(BinaryOp::Sub, one, b1, None)?);
        s.insert("one_minus_beta2", self.binary(BinaryOp::Sub, one, b2, None)?);
        let b1t = self.binary(BinaryOp::Pow, b1, t, None)?;
        let bc1 = self.binary(BinaryOp::Sub, one, b1t, None)?;
        s.insert("step_size", self.binary(BinaryOp::Div, lr, bc1, None)?);
        let b2t = self.binary(BinaryOp::Pow, b2, t, None)?;
        let bc2 = self.binary(BinaryOp::Sub, one, b2t, None)?;
        s.insert("bc2_sqrt", self.unary(UnaryOp::Sqrt, bc2, None)?);
        let lr_wd = self.binary(BinaryOp::Mul, lr, wd, None)?;
        s.insert("decay", self.binary(BinaryOp::Sub, one, lr_wd, None)?);
        Ok(s)
    }

    /// One AdamW update; returns the new parameter, `m` and `v`.
    #[allow(clippy::too_many_arguments)]
    fn adamw(
        &mut self,
        p: NodeId,
        g: NodeId,
        m: NodeId,
        v: NodeId,
        decay: bool,
        s: &BTreeMap<&str, NodeId>,
        hp: &BTreeMap<&str, NodeId>,
        site: &Site,
    ) -> Result<(NodeId, NodeId, NodeId), PassError> {
        use BinaryOp::{Add, Div, Mul, Sub};
        let at = Some(site);
        // torch.optim.AdamW: param.mul_(1 - lr * weight_decay) comes first.
        let p_decayed = if decay { self.binary_scaled(Mul, p, s["decay"], site)? } else { p };
        // m = β1·m + (1 − β1)·g
        let m_old = self.binary_scaled(Mul, m, hp["hp:beta1"], site)?;
        let g_part = self.binary_scaled(Mul, g, s["one_minus_beta1"], site)?;
        let m_new = self.binary(Add, m_old, g_part, at)?;
        // v = β2·v + (1 − β2)·g·g
        let v_old = self.binary_scaled(Mul, v, hp["hp:beta2"], site)?;
        let gg = self.binary(Mul, g, g, at)?;
        let gg_part = self.binary_scaled(Mul, gg, s["one_minus_beta2"], site)?;
        let v_new = self.binary(Add, v_old, gg_part, at)?;
        // denom = sqrt(v) / sqrt(1 − β2^t) + ε
        let root = self.unary(UnaryOp::Sqrt, v_new, at)?;
        let root = self.binary_scaled(Div, root, s["bc2_sqrt"], site)?;
        let denom = self.binary_scaled(Add, root, hp["hp:eps"], site)?;
        // p = p − step_size · (m / denom)
        let ratio = self.binary(Div, m_new, denom, at)?;
        let step = self.binary_scaled(Mul, ratio, s["step_size"], site)?;
        let p_new = self.binary(Sub, p_decayed, step, at)?;
        Ok((p_new, m_new, v_new))
    }

    /// One SGD-with-momentum update; returns the new parameter and buffer.
    fn sgd(
        &mut self,
        p: NodeId,
        g: NodeId,
        buf: NodeId,
        decay: bool,
        hp: &BTreeMap<&str, NodeId>,
        site: &Site,
    ) -> Result<(NodeId, NodeId), PassError> {
        use BinaryOp::{Add, Mul, Sub};
        let at = Some(site);
        // g = g + wd·p (torch: grad.add(param, alpha=weight_decay))
        let g = if decay {
            let wd_p = self.binary_scaled(Mul, p, hp["hp:weight_decay"], site)?;
            self.binary(Add, g, wd_p, at)?
        } else {
            g
        };
        // buf = μ·buf + g
        let kept = self.binary_scaled(Mul, buf, hp["hp:momentum"], site)?;
        let buf_new = self.binary(Add, kept, g, at)?;
        // p = p − lr·buf
        let step = self.binary_scaled(Mul, buf_new, hp["hp:lr"], site)?;
        let p_new = self.binary(Sub, p, step, at)?;
        Ok((p_new, buf_new))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() <= 1e-15 * b.abs().max(1.0)
    }

    #[test]
    fn hyper_defaults_are_the_papers() {
        let h = Hyper::default();
        assert_eq!((h.lr, h.beta1, h.beta2, h.eps, h.weight_decay, h.clip), (1e-3, 0.9, 0.95, 1e-5, 0.0, 1.0));
        let feeds = h.feeds(Kind::AdamW, 2e-4, 7);
        let names: Vec<&str> = feeds.iter().map(|(n, _)| *n).collect();
        assert_eq!(names, hyper_inputs(Kind::AdamW));
        assert_eq!(feeds[0], ("hp:lr", 2e-4));
        assert_eq!(feeds[6], ("hp:step", 7.0));
        let sgd = h.feeds(Kind::Sgd, 0.1, 1);
        assert_eq!(sgd, vec![("hp:lr", 0.1), ("hp:momentum", 0.9), ("hp:weight_decay", 0.0), ("hp:clip", 1.0)]);
        assert_eq!(h.value("hp:nope", 0.1, 1), None);
    }

    #[test]
    fn names_and_masks() {
        assert_eq!(state_inputs(Kind::AdamW), ["adam_m", "adam_v"]);
        assert_eq!(state_inputs(Kind::Sgd), ["momentum"]);
        assert_eq!(state_name("adam_m", "layers.0.w"), "adam_m:layers.0.w");
        let t = |s: &[usize]| TensorType::new(DType::F32, s.to_vec());
        assert!(decays(&t(&[4, 4]), true) && decays(&t(&[2, 4, 4]), true));
        assert!(!decays(&t(&[4]), true) && !decays(&t(&[]), true));
        assert!(decays(&t(&[4]), false) && decays(&t(&[]), false));
        assert_eq!(Kind::parse("adamw"), Some(Kind::AdamW));
        assert_eq!(Kind::parse("sgd").map(Kind::name), Some("sgd"));
        assert_eq!(Kind::parse("adam"), None);
    }

    #[test]
    fn options() {
        let opts = |kv: &[(&str, &str)]| kv.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        assert_eq!(Optimizer::from_options(&opts(&[])).unwrap(), Optimizer::new(Kind::AdamW));
        assert_eq!(Optimizer::default(), Optimizer { kind: Kind::AdamW, decay_mask: true, keep_grads: false });
        let p = Optimizer::from_options(&opts(&[("kind", "sgd"), ("decay_mask", "false"), ("keep_grads", "true")]))
            .unwrap();
        assert_eq!(p, Optimizer { kind: Kind::Sgd, decay_mask: false, keep_grads: true });
        let err = Optimizer::from_options(&opts(&[("kind", "lion")])).unwrap_err();
        assert!(err.contains("kind `lion`"), "{err}");
        assert!(Optimizer::from_options(&opts(&[("decay_mask", "maybe")])).is_err());
        assert!(Optimizer::from_options(&opts(&[("lr", "1")])).is_err());
    }

    #[test]
    fn constant_schedule_with_and_without_warmup() {
        let s = Schedule::Constant { warmup: 0 };
        assert_eq!(s.lr_at(0.1, 1), 0.1);
        assert_eq!(s.lr_at(0.1, 1_000_000), 0.1);
        let s = Schedule::Constant { warmup: 4 };
        assert_eq!(s.lr_at(0.1, 0), 0.0);
        assert!(close(s.lr_at(0.1, 1), 0.025)); // 0.1·1/4
        assert!(close(s.lr_at(0.1, 2), 0.05)); // 0.1·2/4
        assert_eq!(s.lr_at(0.1, 4), 0.1); // 0.1·4/4
        assert_eq!(s.lr_at(0.1, 5), 0.1);
        assert_eq!(Schedule::default(), Schedule::Constant { warmup: 0 });
    }

    #[test]
    fn cosine_schedule_at_specific_steps() {
        // warm-up 10 steps, cosine to 10% of base at step 110.
        let s = Schedule::Cosine { warmup: 10, total: 110, floor: 0.1 };
        let base = 6e-4;
        assert!(close(s.lr_at(base, 1), 6e-5)); // warm-up start: 6e-4·1/10
        assert!(close(s.lr_at(base, 5), 3e-4)); // warm-up middle: 6e-4·5/10
        assert_eq!(s.lr_at(base, 10), base); // warm-up end: 6e-4·10/10
        // Just after: progress 1/100, cos(π/100) = 0.99950656…
        let just_after = base * (0.1 + 0.9 * 0.5 * (1.0 + (PI / 100.0).cos()));
        assert!(close(s.lr_at(base, 11), just_after));
        assert!(s.lr_at(base, 11) < base && s.lr_at(base, 11) > 0.999 * base);
        // Mid-point of the decay: step 60, progress 1/2, cos(π/2) = 0:
        // 6e-4·(0.1 + 0.9·0.5) = 6e-4·0.55 = 3.3e-4.
        assert!(close(s.lr_at(base, 60), 3.3e-4));
        // Three quarters: progress 3/4, ½(1 + cos(3π/4)) = ½(1 − √2/2) = 0.14644660940672624.
        assert!(close(s.lr_at(base, 85), base * (0.1 + 0.9 * 0.14644660940672624)));
        // Floor at the end and beyond: 6e-4·0.1 = 6e-5.
        assert!(close(s.lr_at(base, 110), 6e-5));
        assert!(close(s.lr_at(base, 111), 6e-5));
        assert!(close(s.lr_at(base, 1_000_000), 6e-5));
        // Monotone after the warm-up.
        let lrs: Vec<f64> = (10..=120).map(|t| s.lr_at(base, t)).collect();
        assert!(lrs.windows(2).all(|w| w[1] <= w[0]));
        // No warm-up: starts at base.
        let s = Schedule::Cosine { warmup: 0, total: 100, floor: 0.0 };
        assert!(close(s.lr_at(1.0, 0), 1.0));
        assert!(close(s.lr_at(1.0, 50), 0.5));
        assert_eq!(s.lr_at(1.0, 100), 0.0);
    }

    #[test]
    fn linear_schedule_at_specific_steps() {
        let s = Schedule::Linear { warmup: 2, total: 12, floor: 0.0 };
        assert!(close(s.lr_at(1.0, 1), 0.5));
        assert_eq!(s.lr_at(1.0, 2), 1.0);
        assert!(close(s.lr_at(1.0, 7), 0.5)); // progress 5/10
        assert_eq!(s.lr_at(1.0, 12), 0.0);
        assert_eq!(s.lr_at(1.0, 13), 0.0);
    }

    #[test]
    fn schedules_are_checked() {
        assert!(Schedule::Constant { warmup: 5 }.check().is_ok());
        assert!(Schedule::Cosine { warmup: 10, total: 100, floor: 0.1 }.check().is_ok());
        assert!(Schedule::Cosine { warmup: 10, total: 10, floor: 0.1 }.check().is_err());
        assert!(Schedule::Linear { warmup: 0, total: 10, floor: 1.5 }.check().is_err());
        assert!(Schedule::Cosine { warmup: 0, total: 10, floor: f64::NAN }.check().is_err());
        // Degenerate but defined: the warm-up wins, then the floor.
        let s = Schedule::Cosine { warmup: 10, total: 5, floor: 0.1 };
        assert_eq!(s.lr_at(1.0, 10), 1.0);
        assert_eq!(s.lr_at(1.0, 11), 0.1);
    }
}
