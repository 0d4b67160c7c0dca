//! The canonical text form of a graph: one graph, one text, byte for byte.
//!
//! ```text
//! graph tiny {
//!   %0 : i32[16,128] = input "tokens"   # models/tiny.lpa:12:3
//!   %1 : f32[256,64] = param "embed.weight" init=normal(0.0, 0.02)   # models/tiny.lpa:14:3 via lowrank
//!   %2 : f32[16,128,64] = gather %1, %0
//!   %3 : f32[16,64] = reduce_sum %2 axes=[1]
//!   output loss = %3
//! }
//! ```
//!
//! [`print()`] writes exactly this layout; [`parse()`] reads it back (and is a little
//! more forgiving about spacing, blank lines and `#` comment lines), checking
//! every node with [`crate::typing::result_type`]. `parse(print(g)) == g` and
//! `print(parse(t)) == t` for every printed `t`. `docs/ir.md` has the grammar.
//!
//! Names that may hold any text are written bare when that cannot be misread
//! and as double-quoted strings otherwise, so every graph round-trips:
//! - graph, output and pass names are bare when they are made of
//!   `[A-Za-z0-9_.-]` only (see `is_bare_name`);
//! - source file names in provenance comments are bare unless they are empty or
//!   hold whitespace, control characters, `#`, `"` or `\` (see `is_bare_file`);
//! - input names and parameter paths are always quoted.
//!
//! Strings escape `"` as `\"`, `\` as `\\`, newline as `\n`, carriage return as
//! `\r`, tab as `\t` and any other control character as `\u{HEX}`, so a node
//! always stays on one line.

mod parse;
mod print;

pub use parse::{ParseError, parse};
pub use print::print;
pub(crate) use print::quote;

/// Whether a graph, output or pass name can be printed without quotes.
pub(crate) fn is_bare_name(name: &str) -> bool {
    !name.is_empty() && name.chars().all(is_name_char)
}

pub(crate) fn is_name_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-')
}

/// Whether a source file name can be printed without quotes in a provenance
/// comment. A bare file ends at the first whitespace, so it must hold none;
/// `#`, `"` and `\` are excluded too so that a quoted file is never ambiguous
/// with a bare one and a reader never mistakes part of it for a new comment.
pub(crate) fn is_bare_file(file: &str) -> bool {
    !file.is_empty() && !file.chars().any(|c| c.is_whitespace() || c.is_control() || matches!(c, '#' | '"' | '\\'))
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::graph::{Graph, NodeId, Origin, Span};
    use crate::op::{BinaryOp, Init, Op, ReduceOp, UnaryOp};
    use crate::types::{DType, TensorType};

    fn ty(dtype: DType, shape: &[usize]) -> TensorType {
        TensorType::new(dtype, shape.to_vec())
    }

    fn at(file: &str, line: u32, col: u32) -> Origin {
        Origin::at(Span { file: Arc::from(file), line, col })
    }

    /// Builds through `Graph::add`, so the graph is well-typed by construction.
    struct Builder(Graph);

    impl Builder {
        fn leaf(&mut self, op: Op, t: TensorType, origin: Origin) -> NodeId {
            self.0.add(op, vec![], Some(t), origin).unwrap()
        }

        fn op(&mut self, op: Op, inputs: &[NodeId]) -> NodeId {
            self.0.add(op, inputs.to_vec(), None, Origin::default()).unwrap()
        }

        fn typed(&mut self, op: Op, inputs: &[NodeId], t: TensorType) -> NodeId {
            self.0.add(op, inputs.to_vec(), Some(t), Origin::default()).unwrap()
        }
    }

    /// Every op, every unary and binary op, every init kind, and every shape
    /// of provenance (span, passes, both, quoted file and pass names).
    fn every_op_graph() -> Graph {
        let mut b = Builder(Graph::new("every-op.v1"));
        let f = |s: &[usize]| ty(DType::F32, s);
        let idx = b.leaf(Op::Input { name: "tokens".into() }, ty(DType::I32, &[2, 3]), at("models/tiny.lpa", 12, 3));
        let normal = Init::Normal { mean: 0.0, std: 0.02 };
        let table = b.leaf(Op::Param { path: "embed.weight".into(), init: normal }, f(&[10, 4]), Origin::default());
        let uniform = Init::Uniform { lo: -0.0625, hi: 0.0625 };
        let weight_origin = at("models/tiny.lpa", 14, 3).rewritten_by("lowrank").rewritten_by("cse");
        let w = b.leaf(Op::Param { path: "layers.0.attn.q.weight".into(), init: uniform }, f(&[4, 4]), weight_origin);
        let ones = Init::Const { value: 1.0 };
        b.leaf(
            Op::Param { path: "layers.0.ln.gain".into(), init: ones },
            f(&[4]),
            Origin::default().rewritten_by("dce"),
        );
        let rows = b.op(Op::Gather, &[table, idx]);
        let h = b.op(Op::MatMul, &[rows, w]);
        let half = b.leaf(Op::Const { value: 0.5 }, f(&[2, 3, 4]), Origin::default());
        b.leaf(Op::Const { value: 1e-5 }, f(&[]), at("dir with space/m#1.lpa", 1, 1));
        b.leaf(Op::Const { value: -1.0 }, ty(DType::I32, &[3]), at("", 7, 9).rewritten_by("odd pass,name"));
        for u in UnaryOp::ALL.into_iter().filter(|u| *u != UnaryOp::Not) {
            b.op(Op::Unary(u), &[h]);
        }
        let mut bools = Vec::new();
        for op in BinaryOp::ALL.into_iter().filter(|op| !op.is_logical()) {
            let r = b.op(Op::Binary(op), &[h, half]);
            if op.is_comparison() {
                bools.push(r);
            }
        }
        b.op(Op::Unary(UnaryOp::Not), &[bools[0]]);
        b.op(Op::Binary(BinaryOp::And), &[bools[0], bools[1]]);
        b.op(Op::Binary(BinaryOp::Or), &[bools[0], bools[1]]);
        b.op(Op::Select, &[bools[0], h, half]);
        b.op(Op::Reduce { op: ReduceOp::Sum, axes: vec![2] }, &[h]);
        let maxed = b.op(Op::Reduce { op: ReduceOp::Max, axes: vec![0, 2] }, &[h]);
        b.typed(Op::Reshape, &[h], f(&[6, 4]));
        b.op(Op::Permute { perm: vec![2, 0, 1] }, &[h]);
        b.typed(Op::Broadcast { dims: vec![1] }, &[maxed], f(&[2, 3]));
        b.op(Op::Slice { axis: 2, start: 1, end: 3 }, &[h]);
        b.op(Op::Concat { axis: 1 }, &[h, h, half]);
        let pad = b.op(Op::Pad { axis: 0, lo: 1, hi: 2, value: f64::NEG_INFINITY }, &[h]);
        b.leaf(Op::Iota { axis: 1 }, ty(DType::I32, &[2, 3]), Origin::default());
        b.leaf(Op::RandomUniform { key: 17 }, f(&[2, 3]), Origin::default());
        b.typed(Op::ScatterAdd, &[idx, h], f(&[10, 4]));
        b.typed(Op::Cast, &[idx], f(&[2, 3]));
        b.leaf(Op::Input { name: "quote \" back\\slash\nnewline\ttab\u{1}".into() }, f(&[1]), Origin::default());
        b.0.add_output("loss", pad);
        b.0.add_output("odd name", h);
        b.0
    }

    #[test]
    fn every_op_is_covered() {
        let g = every_op_graph();
        let mut seen: Vec<&str> = g.nodes.iter().map(|n| n.op.name()).collect();
        seen.sort();
        seen.dedup();
        let named = ["input", "param", "const", "iota", "random_uniform", "select", "reduce_sum", "reduce_max"];
        let moves = ["reshape", "permute", "broadcast", "slice", "concat", "pad", "matmul", "gather"];
        let mut expected: Vec<&str> = named.iter().chain(&moves).chain(&["scatter_add", "cast"]).copied().collect();
        expected.extend(UnaryOp::ALL.map(UnaryOp::name));
        expected.extend(BinaryOp::ALL.map(BinaryOp::name));
        expected.sort();
        assert_eq!(seen, expected);
    }

    #[test]
    fn every_op_round_trips_byte_for_byte() {
        let g = every_op_graph();
        let text = print(&g);
        let parsed = parse(&text, "every-op.ir").unwrap_or_else(|e| panic!("{}", e.render(&text)));
        assert_eq!(parsed, g);
        assert_eq!(print(&parsed), text);
        assert_eq!(crate::verify::verify(&parsed), Ok(()));
        insta::assert_snapshot!("every_op", text);
    }

    #[test]
    fn non_finite_and_extreme_floats_round_trip() {
        let mut b = Builder(Graph::new("floats"));
        for value in [f64::NAN, f64::INFINITY, -0.0, 1e300, 5e-324, 0.1 + 0.2, -123456789.125] {
            b.leaf(Op::Const { value }, ty(DType::F32, &[]), Origin::default());
        }
        let text = print(&b.0);
        assert!(text.contains("= const NaN\n") && text.contains("= const inf\n") && text.contains("= const -0.0\n"));
        let parsed = parse(&text, "floats.ir").unwrap();
        assert_eq!(print(&parsed), text);
        for (a, b) in parsed.nodes.iter().zip(&b.0.nodes) {
            let (Op::Const { value: x }, Op::Const { value: y }) = (&a.op, &b.op) else { unreachable!() };
            assert_eq!(x.to_bits(), y.to_bits());
        }
    }

    #[test]
    fn the_documented_example_parses() {
        let text = "graph tiny {\n  %0 : i32[16,128] = input \"tokens\"   # models/tiny.lpa:12:3\n  \
                    %1 : f32[256,64] = param \"layers.0.attn.q.weight\" init=uniform(-0.0625, 0.0625)   \
                    # models/tiny.lpa:14:3 via lowrank\n  %2 : f32[16,128,64] = gather %1, %0\n  \
                    %3 : f32[16,64] = reduce_sum %2 axes=[1]\n  output loss = %3\n}\n";
        let g = parse(text, "tiny.ir").unwrap_or_else(|e| panic!("{}", e.render(text)));
        assert_eq!(print(&g), text);
        assert_eq!(g.node(NodeId(1)).origin.passes, ["lowrank"]);
        assert_eq!(g.node(NodeId(0)).origin.span.as_ref().unwrap().to_string(), "models/tiny.lpa:12:3");
    }

    /// docs/ir.md's example is real text: it parses and prints back unchanged.
    #[test]
    fn the_example_in_the_reference_round_trips() {
        let doc = include_str!("../../../docs/ir.md");
        let start = doc.find("```text\ngraph tiny {").expect("docs/ir.md has the example") + "```text\n".len();
        let text = &doc[start..start + doc[start..].find("```").unwrap()];
        let g = parse(text, "docs/ir.md").unwrap_or_else(|e| panic!("{}", e.render(text)));
        assert_eq!(print(&g), text);
        assert_eq!(g.len(), 9);
    }

    #[test]
    fn names_are_quoted_only_when_needed() {
        assert!(is_bare_name("tiny-gpt.v2_1") && !is_bare_name("a b") && !is_bare_name("") && !is_bare_name("a+b"));
        assert!(is_bare_file("C:/models/x.lpa") && !is_bare_file("a b") && !is_bare_file("a#b") && !is_bare_file(""));
        let text = print(&every_op_graph());
        assert!(text.contains("# \"dir with space/m#1.lpa\":1:1\n"), "{text}");
        assert!(text.contains("# \"\":7:9 via \"odd pass,name\"\n"), "{text}");
        assert!(text.contains("# models/tiny.lpa:14:3 via lowrank,cse\n"), "{text}");
        assert!(text.contains("   # via dce\n"), "{text}");
        assert!(text.contains("  output \"odd name\" = %"), "{text}");
    }

    /// A small deterministic generator (xorshift64*), so the fuzz test needs
    /// no dependency and fails the same way every run.
    struct Rng(u64);

    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
        }

        fn below(&mut self, n: usize) -> usize {
            (self.next() % n as u64) as usize
        }
    }

    /// Parsing must never panic: every prefix of a printed graph, and many
    /// copies with bytes replaced, inserted or deleted, must give Ok or Err.
    /// Whatever does parse must print back to text that parses to the same.
    #[test]
    fn parse_never_panics_on_truncated_or_mutated_text() {
        let text = print(&every_op_graph());
        for end in (0..=text.len()).filter(|&i| text.is_char_boundary(i)) {
            let parsed = check_no_panic(&text[..end]);
            assert_eq!(parsed, end == text.len() || end == text.len() - 1, "only the whole text parses");
        }
        let interesting = b"%:=,[]()\"#\\\n 0123456789-.eainfNaxyz_{}\t\r\xc3\xa9";
        let mut rng = Rng(0x1234_5678_9abc_def1);
        let (mut parsed, mut rejected) = (0, 0);
        for _ in 0..4000 {
            let mut bytes = text.as_bytes().to_vec();
            for _ in 0..1 + rng.below(3) {
                let at = rng.below(bytes.len());
                let byte = interesting[rng.below(interesting.len())];
                match rng.below(3) {
                    0 => bytes[at] = byte,
                    1 => bytes.insert(at, byte),
                    _ => {
                        bytes.remove(at);
                    }
                }
            }
            if let Ok(mutated) = String::from_utf8(bytes) {
                if check_no_panic(&mutated) { parsed += 1 } else { rejected += 1 }
            }
        }
        // Both outcomes must be common, or the mutations explore nothing.
        assert!(parsed > 200 && rejected > 2000, "{parsed} parsed, {rejected} rejected");
    }

    /// Parses `text`; if it parses, checks it is canonical-stable and valid.
    fn check_no_panic(text: &str) -> bool {
        match parse(text, "fuzz.ir") {
            Ok(g) => {
                let again = print(&g);
                let reparsed = parse(&again, "fuzz.ir").unwrap_or_else(|e| panic!("{}", e.render(&again)));
                assert_eq!(print(&reparsed), again);
                assert_eq!(crate::verify::verify(&g), Ok(()));
                true
            }
            Err(e) => {
                assert!(!e.render(text).is_empty());
                false
            }
        }
    }
}
