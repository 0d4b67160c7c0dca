//! Static checks before evaluation: every name and callee is defined, calls
//! have the right arguments, blocks and config keys are unique, there is one
//! model. These run over every block, used or not, so a typo in a block the
//! model never calls is still caught.

use std::collections::{HashMap, HashSet};

use crate::ast::{Arg, BlockDef, ConfigEntry, Expr, ExprKind, File, Item, ModelDef, Stmt};
use crate::builtins;
use crate::diagnostic::Diagnostic;
use crate::source::Span;

/// What the user's file defines, after resolution.
pub struct Program<'a> {
    /// The prelude's blocks: what prelude code calls, whatever the user defines.
    pub prelude_blocks: HashMap<String, &'a BlockDef>,
    /// The user's blocks, which take precedence in the user's own code.
    pub user_blocks: HashMap<String, &'a BlockDef>,
    pub config: Vec<&'a ConfigEntry>,
    pub model: Option<&'a ModelDef>,
}

impl<'a> Program<'a> {
    /// The block a call names: prelude code sees only prelude blocks, so a
    /// user block of the same name never changes how the prelude works.
    pub fn block(&self, name: &str, from_prelude: bool) -> Option<&'a BlockDef> {
        let user = if from_prelude { None } else { self.user_blocks.get(name) };
        user.or_else(|| self.prelude_blocks.get(name)).copied()
    }

    fn block_names(&self, from_prelude: bool) -> Vec<&str> {
        let mut names: Vec<&str> = self.prelude_blocks.keys().map(String::as_str).collect();
        if !from_prelude {
            names.extend(self.user_blocks.keys().map(String::as_str));
        }
        names
    }
}

/// Collects the prelude's and the user's items and checks them. User blocks
/// may replace prelude blocks of the same name.
pub fn resolve<'a>(prelude: &'a File, user: &'a File, file_start: Span) -> (Program<'a>, Vec<Diagnostic>) {
    let mut r = Resolver { diagnostics: Vec::new(), from_prelude: false };
    let mut prelude_blocks: HashMap<String, &'a BlockDef> = HashMap::new();
    let mut user_blocks: HashMap<String, &'a BlockDef> = HashMap::new();
    for item in &prelude.items {
        if let Item::Block(b) = item {
            prelude_blocks.insert(b.name.name.clone(), b);
        }
    }
    let mut config = Vec::new();
    let mut config_span: Option<Span> = None;
    let mut seen_config = false;
    let mut model: Option<&'a ModelDef> = None;
    for item in &user.items {
        match item {
            Item::Block(b) => {
                if let Some(first) = user_blocks.insert(b.name.name.clone(), b) {
                    r.push(
                        Diagnostic::error(b.name.span, format!("block `{}` is defined twice", b.name.name))
                            .with_secondary(first.name.span, "first defined here"),
                    );
                } else if builtins::signature(&b.name.name).is_some() {
                    let msg = format!("`{}` is a built-in and cannot be redefined", b.name.name);
                    r.push(Diagnostic::error(b.name.span, msg));
                }
            }
            Item::Config(entries) => {
                if seen_config {
                    let span = entries.first().map(|e| e.name.span).or(config_span).unwrap_or(file_start);
                    let mut d = Diagnostic::error(span, "a file has one `config` section");
                    if let Some(first) = config_span {
                        d = d.with_secondary(first, "the first one");
                    }
                    r.push(d);
                }
                seen_config = true;
                config_span = config_span.or(entries.first().map(|e| e.name.span));
                config.extend(entries.iter());
            }
            Item::Model(m) => match model {
                Some(first) => r.push(
                    Diagnostic::error(m.name.span, "a file defines one model")
                        .with_secondary(first.name.span, "the first model is here"),
                ),
                None => model = Some(m),
            },
        }
    }
    if model.is_none() {
        r.push(
            Diagnostic::error(file_start, "this file defines no model")
                .with_note("add `model NAME(tokens: i32[batch, seq], targets: i32[batch, seq]) { ... return loss }`"),
        );
    }
    let program = Program { prelude_blocks, user_blocks, config, model };
    r.check_config(&program.config);
    let globals: HashSet<String> = program.config.iter().map(|e| e.name.name.clone()).collect();
    let no_globals = HashSet::new();
    let prelude_items = prelude.items.iter().map(|i| (i, true));
    for (item, from_prelude) in prelude_items.chain(user.items.iter().map(|i| (i, false))) {
        r.from_prelude = from_prelude;
        // Prelude blocks see only their arguments, never the user's config.
        let globals = if from_prelude { &no_globals } else { &globals };
        match item {
            Item::Block(b) => {
                let mut scope = Scope::new(globals);
                for p in &b.params {
                    if let Some(default) = &p.default {
                        r.expr(&program, &scope, default);
                    }
                    scope.define(&p.name.name);
                }
                r.body(&program, &mut scope, &b.body);
            }
            Item::Model(m) => {
                let mut scope = Scope::new(globals);
                for input in &m.inputs {
                    for dim in &input.ty.dims {
                        r.expr(&program, &scope, dim);
                    }
                    scope.define(&input.name.name);
                }
                r.body(&program, &mut scope, &m.body);
            }
            Item::Config(_) => {}
        }
    }
    (program, r.diagnostics)
}

/// Names visible at a point: block arguments and locals, then config keys.
struct Scope<'g> {
    locals: HashSet<String>,
    globals: &'g HashSet<String>,
}

impl<'g> Scope<'g> {
    fn new(globals: &'g HashSet<String>) -> Self {
        Scope { locals: HashSet::new(), globals }
    }

    fn define(&mut self, name: &str) {
        self.locals.insert(name.to_string());
    }

    fn knows(&self, name: &str) -> bool {
        self.locals.contains(name) || self.globals.contains(name) || builtins::constant(name).is_some()
    }

    fn candidates(&self) -> Vec<&str> {
        self.locals.iter().chain(self.globals.iter()).map(String::as_str).collect()
    }
}

struct Resolver {
    diagnostics: Vec<Diagnostic>,
    /// Whether the item being checked is the prelude's.
    from_prelude: bool,
}

impl Resolver {
    fn push(&mut self, d: Diagnostic) {
        self.diagnostics.push(d);
    }

    fn check_config(&mut self, entries: &[&ConfigEntry]) {
        let mut seen: HashMap<&str, Span> = HashMap::new();
        let mut defined = HashSet::new();
        let empty = HashSet::new();
        for entry in entries {
            if builtins::constant(&entry.name.name).is_some() {
                let msg =
                    format!("`{}` is a built-in name (a dtype or `inf`) and cannot be a config key", entry.name.name);
                self.push(Diagnostic::error(entry.name.span, msg));
            }
            if let Some(first) = seen.insert(&entry.name.name, entry.name.span) {
                self.push(
                    Diagnostic::error(entry.name.span, format!("config key `{}` is set twice", entry.name.name))
                        .with_secondary(first, "first set here"),
                );
            }
            let scope = Scope { locals: defined.clone(), globals: &empty };
            self.config_expr(&scope, &entry.value);
            defined.insert(entry.name.name.clone());
        }
    }

    /// Config values may use earlier keys, numbers and scalar math only.
    fn config_expr(&mut self, scope: &Scope, e: &Expr) {
        match &e.kind {
            ExprKind::Name(n) if !scope.knows(n) => {
                let d = unknown(e.span, n, "config key", scope.candidates())
                    .with_note("a config value may only use keys defined above it");
                self.push(d);
            }
            ExprKind::Call { callee, args, .. } => {
                if builtins::signature(&callee.name).is_none() {
                    self.push(Diagnostic::error(
                        callee.span,
                        format!("`{}` cannot be used in a config value", callee.name),
                    ));
                }
                for a in args {
                    self.config_expr(scope, &a.value);
                }
            }
            _ => for_each_child(e, |c| self.config_expr(scope, c)),
        }
    }

    fn body(&mut self, p: &Program, scope: &mut Scope, body: &[Stmt]) {
        for stmt in body {
            self.stmt(p, scope, stmt);
        }
    }

    fn stmt(&mut self, p: &Program, scope: &mut Scope, stmt: &Stmt) {
        match stmt {
            Stmt::Assign { name, value } => {
                self.expr(p, scope, value);
                scope.define(&name.name);
            }
            Stmt::Param { name, ty, init, .. } => {
                ty.dims.iter().for_each(|d| self.expr(p, scope, d));
                self.expr(p, scope, init);
                scope.define(&name.name);
            }
            Stmt::If { cond, then_body, else_body, .. } => {
                self.expr(p, scope, cond);
                self.body(p, scope, then_body);
                self.body(p, scope, else_body);
            }
            Stmt::For { var, start, end, body, .. } => {
                self.expr(p, scope, start);
                self.expr(p, scope, end);
                scope.define(&var.name);
                self.body(p, scope, body);
            }
            Stmt::Return { value, .. } => self.expr(p, scope, value),
            Stmt::Assert { cond, .. } => self.expr(p, scope, cond),
        }
    }

    fn expr(&mut self, p: &Program, scope: &Scope, e: &Expr) {
        match &e.kind {
            ExprKind::Name(n) if !scope.knows(n) => {
                self.push(unknown(e.span, n, "name", scope.candidates()));
            }
            ExprKind::Call { callee, args, .. } => {
                self.call(p, callee, args, e.span);
                for a in args {
                    self.expr(p, scope, &a.value);
                }
            }
            _ => for_each_child(e, |c| self.expr(p, scope, c)),
        }
    }

    fn call(&mut self, p: &Program, callee: &crate::ast::Ident, args: &[Arg], span: Span) {
        let (params, required): (Vec<String>, Vec<bool>) = if let Some(block) = p.block(&callee.name, self.from_prelude)
        {
            block.params.iter().map(|bp| (bp.name.name.clone(), bp.default.is_none())).unzip()
        } else if let Some(sig) = builtins::signature(&callee.name) {
            sig.iter().map(|s| (s.trim_end_matches('?').to_string(), !s.ends_with('?'))).unzip()
        } else {
            let mut names: Vec<&str> = p.block_names(self.from_prelude);
            for builtin in builtins::names() {
                names.push(builtin);
            }
            self.push(unknown(callee.span, &callee.name, "block or built-in", names));
            return;
        };
        let mut given = vec![false; params.len()];
        let mut positional = 0;
        for arg in args {
            let index = match &arg.name {
                None => {
                    positional += 1;
                    positional - 1
                }
                Some(name) => match params.iter().position(|q| *q == name.name) {
                    Some(i) => i,
                    None => {
                        let msg = format!(
                            "`{}` has no argument `{}` (it has: {})",
                            callee.name,
                            name.name,
                            params.join(", ")
                        );
                        self.push(Diagnostic::error(name.span, msg));
                        return;
                    }
                },
            };
            if index >= params.len() {
                let msg =
                    format!("`{}` takes {} argument(s), but {} were given", callee.name, params.len(), args.len());
                self.push(Diagnostic::error(arg.value.span, msg).with_label("unexpected argument"));
                return;
            }
            if given[index] {
                self.push(Diagnostic::error(arg.value.span, format!("argument `{}` is given twice", params[index])));
                return;
            }
            given[index] = true;
        }
        let missing: Vec<&str> = params
            .iter()
            .zip(&required)
            .zip(&given)
            .filter(|((_, r), g)| **r && !**g)
            .map(|((n, _), _)| n.as_str())
            .collect();
        if !missing.is_empty() {
            let msg = format!("`{}` is missing argument(s): {}", callee.name, missing.join(", "));
            self.push(Diagnostic::error(span, msg));
        }
    }
}

fn for_each_child(e: &Expr, mut f: impl FnMut(&Expr)) {
    match &e.kind {
        ExprKind::List(items) => items.iter().for_each(f),
        ExprKind::Unary { operand, .. } => f(operand),
        ExprKind::Binary { lhs, rhs, .. } => {
            f(lhs);
            f(rhs);
        }
        ExprKind::Call { args, .. } => args.iter().for_each(|a| f(&a.value)),
        _ => {}
    }
}

/// "unknown name `x`", with the closest known name as a suggestion.
fn unknown<'n>(span: Span, name: &str, what: &str, known: impl IntoIterator<Item = &'n str>) -> Diagnostic {
    let d = Diagnostic::error(span, format!("unknown {what} `{name}`")).with_label("not defined here");
    let best = known
        .into_iter()
        .map(|k| (edit_distance(name, k), k))
        .filter(|(dist, k)| *dist <= (name.len().max(k.len()) / 3).max(1))
        .min();
    match best {
        Some((_, k)) => d.with_note(format!("did you mean `{k}`?")),
        None => d,
    }
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut prev = row[0];
        row[0] = i + 1;
        for j in 0..b.len() {
            let cur = row[j + 1];
            row[j + 1] = if ca == b[j] { prev } else { 1 + prev.min(row[j]).min(row[j + 1]) };
            prev = cur;
        }
    }
    row[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn edit_distances() {
        assert_eq!(edit_distance("heads", "head"), 1);
        assert_eq!(edit_distance("layer_norm", "layer_nrom"), 2);
        assert_eq!(edit_distance("", "abc"), 3);
    }
}
