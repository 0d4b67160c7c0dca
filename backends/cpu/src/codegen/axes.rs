//! Loop-axis simplification before code generation: axes of extent 1 are
//! dropped, and neighbouring axes that every index map walks as one (stride
//! of the outer = stride of the inner × extent of the inner) are merged, so
//! an element-wise kernel over contiguous tensors becomes one flat loop
//! (one division a call instead of one a row, and a longer vectorised run).
//!
//! Domain and reduce axes are simplified separately. Both keep the
//! row-major order of the iteration, so the flat output index, every index
//! map's value and the sequential reduction order are unchanged; only the
//! vectorised reduction's lane assignment follows the simplified shape.

use lpac_ir::kernel::{Expr, IndexMap, LoopKernel};

fn maps_mut(k: &mut LoopKernel) -> Vec<&mut IndexMap> {
    let mut maps = Vec::new();
    for t in &mut k.exprs {
        match &mut t.expr {
            Expr::Load { index, .. } | Expr::Index(index) => maps.push(index),
            Expr::Random { counter, .. } => maps.push(counter),
            Expr::LoadIf { index, bound, .. } => {
                maps.push(index);
                maps.push(bound);
            }
            _ => {}
        }
    }
    maps
}

/// Simplifies one block of axes (the domain's or the reduction's), whose
/// first loop variable is `first_var`: returns the new extents and, per new
/// axis, the old variable whose strides it keeps (its innermost).
fn plan(extents: &[usize], maps: &[&IndexMap], first_var: usize, keep_one: bool) -> (Vec<usize>, Vec<usize>) {
    // Each new axis: (extent, innermost old variable).
    let mut axes: Vec<(usize, usize)> = Vec::new();
    for (i, &e) in extents.iter().enumerate() {
        let v = first_var + i;
        if e == 1 {
            continue;
        }
        if let Some(last) = axes.last_mut() {
            // Merge the previous (outer) axis into this one when every map
            // steps the outer by exactly one full run of this one.
            let inner = last.1;
            let mergeable = maps.iter().all(|m| m.strides[v].checked_mul(e as i64) == Some(m.strides[inner]));
            if mergeable {
                *last = (last.0 * e, v);
                continue;
            }
        }
        axes.push((e, v));
    }
    // A reduction keeps at least one (unit) axis.
    if axes.is_empty() && keep_one && !extents.is_empty() {
        axes.push((1, first_var));
    }
    axes.into_iter().unzip()
}

/// The kernel with simplified axes (unchanged when an extent is 0 or a map
/// is malformed: analysis reports those).
pub(crate) fn simplify(k: &LoopKernel) -> LoopKernel {
    let nvars = k.domain.len() + k.reduce.len();
    let mut out = k.clone();
    let maps: Vec<IndexMap> = maps_mut(&mut out).into_iter().map(|m| m.clone()).collect();
    if maps.iter().any(|m| m.strides.len() != nvars) || k.domain.contains(&0) || k.reduce.contains(&0) {
        return out;
    }
    let refs: Vec<&IndexMap> = maps.iter().collect();
    let (domain, dvars) = plan(&k.domain, &refs, 0, false);
    let (reduce, rvars) = plan(&k.reduce, &refs, k.domain.len(), true);
    if domain == k.domain && reduce == k.reduce {
        return out;
    }
    for m in maps_mut(&mut out) {
        m.strides = dvars.iter().chain(&rvars).map(|&v| m.strides[v]).collect();
    }
    out.domain = domain;
    out.reduce = reduce;
    out
}

#[cfg(test)]
mod tests {
    use lpac_ir::DType;
    use lpac_ir::kernel::{BufferId, ExprId, Typed};

    use super::*;

    fn kernel(domain: &[usize], reduce: &[usize], maps: &[(i64, &[i64])]) -> LoopKernel {
        LoopKernel {
            name: "k".into(),
            domain: domain.to_vec(),
            reduce: reduce.to_vec(),
            exprs: maps
                .iter()
                .map(|(o, s)| Typed {
                    expr: Expr::Load { buffer: BufferId(0), index: IndexMap { offset: *o, strides: s.to_vec() } },
                    dtype: DType::F32,
                })
                .collect(),
            reduction: None,
            outputs: vec![(BufferId(1), ExprId(0))],
            nodes: vec![],
        }
    }

    fn strides(k: &LoopKernel, e: usize) -> Vec<i64> {
        match &k.exprs[e].expr {
            Expr::Load { index, .. } => index.strides.clone(),
            _ => unreachable!(),
        }
    }

    #[test]
    fn contiguous_and_broadcast_axes_merge() {
        let k = simplify(&kernel(&[2, 3, 4], &[], &[(0, &[12, 4, 1]), (5, &[0, 0, 0])]));
        assert_eq!(k.domain, vec![24]);
        assert_eq!(strides(&k, 0), vec![1]);
        assert_eq!(strides(&k, 1), vec![0]);
    }

    #[test]
    fn a_row_broadcast_stops_the_merge_and_unit_axes_vanish() {
        let k = simplify(&kernel(&[2, 1, 3, 4], &[1, 5], &[(0, &[12, 99, 4, 1, 7, 1]), (0, &[0, 0, 0, 1, 0, 0])]));
        assert_eq!(k.domain, vec![6, 4]);
        assert_eq!(k.reduce, vec![5]);
        assert_eq!(strides(&k, 0), vec![4, 1, 1]);
        assert_eq!(strides(&k, 1), vec![0, 1, 0]);
        // Transposes do not merge.
        let k = simplify(&kernel(&[3, 4], &[], &[(0, &[1, 3])]));
        assert_eq!(k.domain, vec![3, 4]);
    }
}
