//! Printing a graph in the canonical text form. Every choice here (spacing,
//! attribute order, number formatting, quoting) is fixed, so equal graphs
//! print to equal bytes.

use std::fmt::Write;

use super::{is_bare_file, is_bare_name};
use crate::graph::{Graph, Node, Origin};
use crate::op::{Init, Op};
use crate::types::format_shape;

/// The canonical text of `graph`, ending in a newline.
pub fn print(graph: &Graph) -> String {
    let mut out = format!("graph {} {{\n", name_token(&graph.name));
    for (index, node) in graph.nodes.iter().enumerate() {
        print_node(&mut out, index, node);
    }
    for output in &graph.outputs {
        // Writing to a String cannot fail.
        let _ = writeln!(out, "  output {} = {}", name_token(&output.name), output.node);
    }
    out.push_str("}\n");
    out
}

fn print_node(out: &mut String, index: usize, node: &Node) {
    let _ = write!(out, "  %{} : {} = {}", index, node.ty, node.op.name());
    if !node.inputs.is_empty() {
        let operands: Vec<String> = node.inputs.iter().map(|id| id.to_string()).collect();
        let _ = write!(out, " {}", operands.join(", "));
    }
    for argument in op_arguments(&node.op) {
        let _ = write!(out, " {}", argument);
    }
    if let Some(comment) = provenance_comment(&node.origin) {
        let _ = write!(out, "   # {}", comment);
    }
    out.push('\n');
}

/// What follows the operands: positional values for leaves, then `name=value`
/// attributes in the order the op's fields are declared.
fn op_arguments(op: &Op) -> Vec<String> {
    match op {
        Op::Input { name } => vec![quote(name)],
        Op::Param { path, init } => vec![quote(path), format!("init={}", init_text(init))],
        Op::Const { value } => vec![float(*value)],
        Op::Iota { axis } => vec![format!("axis={axis}")],
        Op::RandomUniform { key } => vec![format!("key={key}")],
        Op::Reduce { axes, .. } => vec![format!("axes={}", format_shape(axes))],
        Op::Permute { perm } => vec![format!("perm={}", format_shape(perm))],
        Op::Broadcast { dims } => vec![format!("dims={}", format_shape(dims))],
        Op::Slice { axis, start, end } => vec![format!("axis={axis}"), format!("start={start}"), format!("end={end}")],
        Op::Concat { axis } => vec![format!("axis={axis}")],
        Op::Pad { axis, lo, hi, value } => {
            vec![format!("axis={axis}"), format!("lo={lo}"), format!("hi={hi}"), format!("value={}", float(*value))]
        }
        Op::Attention { scale, causal } => vec![format!("scale={}", float(*scale)), format!("causal={causal}")],
        Op::AttentionGrad { scale, causal, wrt } => vec![
            format!("scale={}", float(*scale)),
            format!("causal={causal}"),
            format!("wrt={}", ["q", "k", "v"].get(*wrt).unwrap_or(&"?")),
        ],
        Op::Unary(_)
        | Op::Binary(_)
        | Op::Select
        | Op::Reshape
        | Op::MatMul
        | Op::Gather
        | Op::ScatterAdd
        | Op::Cast => Vec::new(),
    }
}

fn init_text(init: &Init) -> String {
    match init {
        Init::Normal { mean, std } => format!("normal({}, {})", float(*mean), float(*std)),
        Init::Uniform { lo, hi } => format!("uniform({}, {})", float(*lo), float(*hi)),
        Init::Const { value } => format!("const({})", float(*value)),
    }
}

/// `file:line:col via p1,p2`, either part optional; `None` when both are absent.
fn provenance_comment(origin: &Origin) -> Option<String> {
    let mut parts = Vec::new();
    if let Some(span) = &origin.span {
        parts.push(format!("{}:{}:{}", file_token(&span.file), span.line, span.col));
    }
    if !origin.passes.is_empty() {
        let passes: Vec<String> = origin.passes.iter().map(|p| name_token(p)).collect();
        parts.push(format!("via {}", passes.join(",")));
    }
    if parts.is_empty() { None } else { Some(parts.join(" ")) }
}

/// Rust's `{:?}` for f64 is the shortest text that parses back to the same
/// bits (`0.02`, `1e-5`, `1.0`, `-inf`, `NaN`), which is what canonical needs.
pub(crate) fn float(value: f64) -> String {
    format!("{value:?}")
}

fn name_token(name: &str) -> String {
    if is_bare_name(name) { name.to_string() } else { quote(name) }
}

fn file_token(file: &str) -> String {
    if is_bare_file(file) { file.to_string() } else { quote(file) }
}

/// A double-quoted string; escapes keep it on one line (see the module docs).
pub(crate) fn quote(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 2);
    out.push('"');
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if c.is_control() => {
                let _ = write!(out, "\\u{{{:x}}}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}
