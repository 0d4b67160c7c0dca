//! `precision{dtype=bf16}`: mixed precision. Every f32 matrix product
//! becomes `cast(matmul(cast(a, bf16), cast(b, bf16)), f32)`: operands
//! rounded to bf16, the product accumulated in f32 and stored as bf16 (half
//! the bytes), read back as f32. Everything else — elementwise work,
//! reductions, attention, the loss — stays f32, and so do the parameters:
//! they are the f32 master weights, cast on their way into a product. Run
//! before `autodiff`, the gradients' products are bf16 too (the derivative
//! of a cast is a cast back), and each weight's gradient reaches AdamW as
//! f32. Run after `attention`, whose fused op keeps its own products f32.
//!
//! It changes the numbers by design (bf16 has 8 significant bits), so it
//! does not preserve meaning.

use lpac_ir::{DType, Graph, Node, Op, TensorType};

use crate::pass::{GraphCopier, Pass, PassError, PassOption, PassOutcome};

pub const OPTIONS: &[PassOption] =
    &[PassOption { name: "dtype", help: "the products' operand and result type: bf16", default: "bf16" }];

#[derive(Clone, Copy, Debug, Default)]
pub struct Precision;

impl Precision {
    pub fn from_options(options: &std::collections::BTreeMap<String, String>) -> Result<Precision, String> {
        match options.get("dtype").map(String::as_str) {
            None | Some("bf16") => Ok(Precision),
            Some(other) => Err(format!("precision: dtype `{other}` is not supported (bf16 is)")),
        }
    }
}

impl Pass for Precision {
    fn name(&self) -> &'static str {
        "precision"
    }

    fn summary(&self) -> &'static str {
        "mixed precision: f32 matrix products take bf16 operands and give a bf16 result (f32 accumulation); \
         parameters stay f32"
    }

    fn preserves_meaning(&self) -> bool {
        false
    }

    fn run(&self, graph: &Graph) -> Result<PassOutcome, PassError> {
        let mut copier = GraphCopier::new(graph);
        for id in graph.ids() {
            let node = graph.node(id);
            let f32_product = node.op == Op::MatMul && node.ty.dtype == DType::F32;
            if !f32_product {
                copier.copy(id);
                continue;
            }
            let origin = node.origin.rewritten_by("precision");
            let cast = |copier: &mut GraphCopier, x, dtype: DType| {
                let ty = TensorType::new(dtype, copier.new.ty(x).shape.clone());
                copier.push(Node { op: Op::Cast, inputs: vec![x], ty, origin: origin.clone() }, Some(id))
            };
            let (a, b) = (copier.mapped(node.inputs[0]), copier.mapped(node.inputs[1]));
            let a = cast(&mut copier, a, DType::BF16);
            let b = cast(&mut copier, b, DType::BF16);
            let ty = TensorType::new(DType::BF16, node.ty.shape.clone());
            let product =
                copier.push(Node { op: Op::MatMul, inputs: vec![a, b], ty, origin: origin.clone() }, Some(id));
            let back = cast(&mut copier, product, DType::F32);
            copier.map[id.index()] = Some(back);
        }
        Ok(copier.finish())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use lpac_ir::interp::{Precision as Exact, RunContext, Tensor};
    use lpac_ir::{Origin, TensorType};
    use std::collections::BTreeMap;

    fn product_graph() -> Graph {
        let mut g = Graph::new("p");
        let f = |s: &[usize]| Some(TensorType::new(DType::F32, s.to_vec()));
        let x = g.add(Op::Input { name: "x".into() }, vec![], f(&[3, 4, 8]), Origin::default()).unwrap();
        let w = g.add(Op::Input { name: "w".into() }, vec![], f(&[8, 5]), Origin::default()).unwrap();
        let y = g.add(Op::MatMul, vec![x, w], None, Origin::default()).unwrap();
        let e = g.add(Op::Unary(lpac_ir::UnaryOp::Exp), vec![y], None, Origin::default()).unwrap();
        g.add_output("e", e);
        g
    }

    #[test]
    fn products_take_bf16_operands_and_give_f32_back() {
        let g = product_graph();
        let out = Precision.run(&g).unwrap().graph;
        lpac_ir::verify(&out).unwrap();
        assert_eq!(out.ids().filter(|&i| out.node(i).op == Op::Cast).count(), 3);
        let product = out.ids().find(|&i| out.node(i).op == Op::MatMul).unwrap();
        assert_eq!(out.ty(product).dtype, DType::BF16);
        // Values: within bf16's rounding of the f32 result, and not equal to
        // it (the pass does change the numbers).
        let inputs: BTreeMap<String, Tensor> = [("x", vec![3, 4, 8]), ("w", vec![8, 5])]
            .into_iter()
            .map(|(n, s)| {
                let len: usize = s.iter().product();
                (n.to_string(), Tensor::from_f32(s, (0..len).map(|i| ((i * 37 % 17) as f32 - 8.0) * 0.0731).collect()))
            })
            .collect();
        let ctx = RunContext::default();
        let run =
            |g: &Graph| lpac_ir::interp::run(g, Exact::F64, &inputs, &BTreeMap::new(), ctx).unwrap()[0].1.to_f64_vec();
        let (exact, mixed) = (run(&g), run(&out));
        let rel = exact.iter().zip(&mixed).map(|(a, b)| ((a - b) / a).abs()).fold(0.0, f64::max);
        assert!(rel > 0.0 && rel < 0.05, "largest relative difference {rel}");
    }
}
