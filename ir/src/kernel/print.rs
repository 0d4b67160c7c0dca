//! The canonical text form of a kernel program, for `lpac kernels`, snapshot
//! tests and reading. One line per buffer, per expression and per store.
//!
//! ```text
//! program tiny.train
//!   buffer b0 : i32[16,128] input "tokens"
//!   buffer b7 : f32[2048] temp
//!   kernel k3 loop "reduce_sum" domain [2048] reduce [256]   # %7 %8
//!     e0 : f32 = load b5[256*i0 + r0]
//!     reduce sum e0
//!     e1 : f32 = acc
//!     store b7[i0] = e1
//!   kernel k4 gemm m=2048 k=256 n=256 batch [] a=b7[+0; r256 c1] b=b2[+0; r1 c256] -> b9
//!   output loss = b40
//! ```

use std::fmt::Write as _;

use super::{BufferKind, Expr, IndexMap, Kernel, LoopKernel, Operand, Program};
use crate::op::ReduceOp;

pub fn print(p: &Program) -> String {
    let mut out = format!("program {}\n", p.name);
    for (i, b) in p.buffers.iter().enumerate() {
        let kind = match &b.kind {
            BufferKind::Input(n) => format!("input {n:?}"),
            BufferKind::Param(n) => format!("param {n:?}"),
            BufferKind::Temp => "temp".to_string(),
        };
        let _ = writeln!(out, "  buffer b{i} : {} {kind}", b.ty);
    }
    for (i, k) in p.kernels.iter().enumerate() {
        print_kernel(&mut out, i, k);
    }
    for (name, b) in &p.outputs {
        let _ = writeln!(out, "  output {name:?} = b{}", b.0);
    }
    out
}

/// One kernel's text, as [`print()`] writes it inside the program.
pub fn print_kernel_text(p: &Program, index: usize) -> String {
    let mut out = String::new();
    print_kernel(&mut out, index, &p.kernels[index]);
    out
}

fn nodes_comment(nodes: &[crate::graph::NodeId]) -> String {
    if nodes.is_empty() {
        return String::new();
    }
    let ids: Vec<String> = nodes.iter().map(|n| n.to_string()).collect();
    format!("   # {}", ids.join(" "))
}

fn print_kernel(out: &mut String, i: usize, k: &Kernel) {
    match k {
        Kernel::Loop(l) => print_loop(out, i, l),
        Kernel::Attention(a) => {
            let batch: Vec<String> = a.batch.iter().map(|d| d.to_string()).collect();
            let pass = match &a.pass {
                super::AttentionPass::Forward { out } => format!("forward -> {}", operand(out)),
                super::AttentionPass::Backward { out, dout, dq, dk, dv } => {
                    let g = |b: &Option<Operand>| b.as_ref().map_or("_".to_string(), operand);
                    format!(
                        "backward out={} dout={} -> dq={} dk={} dv={}",
                        operand(out),
                        operand(dout),
                        g(dq),
                        g(dk),
                        g(dv)
                    )
                }
            };
            let lse = a.lse.map_or(String::new(), |b| format!(" lse=b{}", b.0));
            let _ = writeln!(
                out,
                "  kernel k{i} attention {:?} tq={} tk={} d={} dv={} batch [{}] scale={:?} causal={} q={} k={} v={}{lse} {pass}{}",
                a.name,
                a.tq,
                a.tk,
                a.d,
                a.dv,
                batch.join(","),
                a.scale,
                a.causal,
                operand(&a.q),
                operand(&a.k),
                operand(&a.v),
                nodes_comment(&a.nodes)
            );
        }
        Kernel::Multi(m) => {
            let _ = writeln!(out, "  kernel k{i} multi {:?} members {}", m.name, m.members.len());
            for (s, member) in m.members.iter().enumerate() {
                let mut text = String::new();
                print_loop(&mut text, i, member);
                let text = text.replacen(&format!("kernel k{i} loop"), &format!("member k{i}.{s} loop"), 1);
                for line in text.lines() {
                    let _ = writeln!(out, "  {line}");
                }
            }
        }
        Kernel::Rows(r) => {
            let rows: Vec<String> = r.rows.iter().map(|d| d.to_string()).collect();
            let _ =
                writeln!(out, "  kernel k{i} rows {:?} rows [{}] stages {}", r.name, rows.join(","), r.stages.len());
            for (s, stage) in r.stages.iter().enumerate() {
                let mut text = String::new();
                // Stages print as kernels named `k<i>.<s>`, indented.
                match stage {
                    super::RowStage::Loop(l) => {
                        print_loop(&mut text, i, l);
                        text = text.replacen(&format!("kernel k{i} loop"), &format!("stage k{i}.{s} loop"), 1);
                    }
                    super::RowStage::Gemm(g) => print_gemm(&mut text, &format!("stage k{i}.{s}"), g),
                }
                for line in text.lines() {
                    let _ = writeln!(out, "  {line}");
                }
            }
        }
        Kernel::Gemm(g) => print_gemm(out, &format!("kernel k{i}"), g),
        Kernel::Gather { name, table, indices, out: o, nodes } => {
            let _ = writeln!(
                out,
                "  kernel k{i} gather {name:?} b{}[b{}] -> b{}{}",
                table.0,
                indices.0,
                o.0,
                nodes_comment(nodes)
            );
        }
        Kernel::ScatterAdd { name, indices, src, out: o, nodes } => {
            let _ = writeln!(
                out,
                "  kernel k{i} scatter_add {name:?} b{} at b{} -> b{}{}",
                src.0,
                indices.0,
                o.0,
                nodes_comment(nodes)
            );
        }
    }
}

fn operand(o: &Operand) -> String {
    let batch: Vec<String> = o.batch_strides.iter().map(|s| s.to_string()).collect();
    format!(
        "b{}[+{}; batch {} r{} c{}]",
        o.buffer.0,
        o.offset,
        if batch.is_empty() { "-".into() } else { batch.join(",") },
        o.row_stride,
        o.col_stride
    )
}

fn dims(d: &[usize]) -> String {
    let v: Vec<String> = d.iter().map(|x| x.to_string()).collect();
    format!("[{}]", v.join(","))
}

fn print_gemm(out: &mut String, label: &str, g: &super::GemmKernel) {
    let batch: Vec<String> = g.batch.iter().map(|d| d.to_string()).collect();
    let _ = writeln!(
        out,
        "  {label} gemm {:?} m={} k={} n={} batch [{}] a={} b={} -> b{}{}",
        g.name,
        g.m,
        g.k,
        g.n,
        batch.join(","),
        operand(&g.a),
        operand(&g.b),
        g.c.0,
        nodes_comment(&g.nodes)
    );
}

fn print_loop(out: &mut String, i: usize, k: &LoopKernel) {
    let reduce = if k.reduce.is_empty() { String::new() } else { format!(" reduce {}", dims(&k.reduce)) };
    let _ =
        writeln!(out, "  kernel k{i} loop {:?} domain {}{reduce}{}", k.name, dims(&k.domain), nodes_comment(&k.nodes));
    let rank = k.domain.len();
    for (e, t) in k.exprs.iter().enumerate() {
        let body = match &t.expr {
            Expr::Load { buffer, index } => format!("load b{}[{}]", buffer.0, index_text(index, rank)),
            Expr::LoadIf { buffer, index, bound, lo, hi, default } => format!(
                "load_if {lo} <= {} < {hi} b{}[{}] else {default:?}",
                index_text(bound, rank),
                buffer.0,
                index_text(index, rank)
            ),
            Expr::Const(v) => format!("const {v:?}"),
            Expr::Index(m) => format!("index {}", index_text(m, rank)),
            Expr::Random { key, counter } => format!("random key={key} counter={}", index_text(counter, rank)),
            Expr::Unary(op, a) => format!("{} e{}", op.name(), a.0),
            Expr::Binary(op, a, b) => format!("{} e{}, e{}", op.name(), a.0, b.0),
            Expr::Select(c, a, b) => format!("select e{}, e{}, e{}", c.0, a.0, b.0),
            Expr::Cast(a) => format!("cast e{}", a.0),
            Expr::Accumulated => "acc".to_string(),
        };
        let _ = writeln!(out, "    e{e} : {} = {body}", t.dtype);
        if let Some(r) = &k.reduction
            && r.value.index() == e
        {
            let op = if r.op == ReduceOp::Sum { "sum" } else { "max" };
            let _ = writeln!(out, "    reduce {op} e{e}");
        }
    }
    for (b, e) in &k.outputs {
        let _ = writeln!(out, "    store b{}[{}] = e{}", b.0, contiguous(&k.domain), e.0);
    }
}

/// `256*i0 + r0 + 3`: loop variables are `i0..` (domain) then `r0..` (reduce).
pub fn index_text(m: &IndexMap, rank: usize) -> String {
    let mut terms = Vec::new();
    for (v, &s) in m.strides.iter().enumerate() {
        if s == 0 {
            continue;
        }
        let var = if v < rank { format!("i{v}") } else { format!("r{}", v - rank) };
        terms.push(if s == 1 { var } else { format!("{s}*{var}") });
    }
    if m.offset != 0 || terms.is_empty() {
        terms.push(m.offset.to_string());
    }
    terms.join(" + ")
}

/// The row-major index of the domain, as stores use it.
fn contiguous(domain: &[usize]) -> String {
    let strides = crate::types::strides(domain);
    let map = IndexMap { offset: 0, strides: strides.iter().map(|&s| s as i64).collect() };
    index_text(&map, domain.len())
}
