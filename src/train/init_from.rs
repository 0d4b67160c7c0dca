//! LPA from a dense checkpoint: each factored projection starts from the
//! truncated SVD of its dense weight, `W ≈ U_r Σ_r V_rᵀ`, split evenly:
//! `A = U_r √Σ_r`, `B = √Σ_r V_rᵀ`. Every other parameter is copied by path.
//!
//! A Q, K or V projection's dense bias `b[d_out]` has no exact counterpart on
//! the first factor (`(x·A + c)·B` adds `c·B`, which lies in the row space of
//! `B`); `c = b·V_r·Σ_r^{-1/2}` is the least-squares choice (`c·B` is `b`
//! projected onto that space), and its relative error is reported too.

use std::collections::BTreeMap;

use lpac_ir::interp::Tensor;
use lpac_ir::{Graph, TensorType};
use nalgebra::DMatrix;

use crate::error::CliError;

/// How well one factored projection reproduces its dense original.
pub struct Reconstruction {
    pub weight: String,
    /// ‖W − A·B‖_F / ‖W‖_F
    pub relative_error: f64,
    /// For a Q/K/V bias moved to the first factor: ‖b − c·B‖ / ‖b‖.
    pub bias_error: Option<f64>,
}

/// Parameters for the factored `graph` from the dense checkpoint's tensors.
pub fn from_dense(
    graph: &Graph,
    dense: &BTreeMap<String, Tensor>,
) -> Result<(BTreeMap<String, Tensor>, Vec<Reconstruction>), CliError> {
    let wanted: Vec<(String, TensorType)> =
        graph.params().map(|(id, p)| (p.to_string(), graph.ty(id).clone())).collect();
    let mut params = BTreeMap::new();
    let mut report = Vec::new();
    for (path, ty) in &wanted {
        if params.contains_key(path) {
            continue;
        }
        if let Some(t) = dense.get(path) {
            if t.shape != ty.shape {
                return Err(shape_error(path, &t.shape, ty));
            }
            params.insert(path.clone(), t.clone());
            continue;
        }
        let Some(prefix) = path.strip_suffix(".a.weight").or_else(|| path.strip_suffix(".b.weight")) else {
            if path.ends_with(".a.bias") {
                continue; // made with its projection's factors
            }
            return Err(CliError::Message(format!(
                "the dense checkpoint has no tensor `{path}`, which the model needs"
            )));
        };
        let (factors, rec) = factor(prefix, &wanted, dense)?;
        params.extend(factors);
        report.push(rec);
    }
    for (path, _) in &wanted {
        if !params.contains_key(path) {
            return Err(CliError::Message(format!("cannot initialise `{path}` from the dense checkpoint")));
        }
    }
    Ok((params, report))
}

/// A and B (and a first-factor bias) for the projection `prefix`.
fn factor(
    prefix: &str,
    wanted: &[(String, TensorType)],
    dense: &BTreeMap<String, Tensor>,
) -> Result<(BTreeMap<String, Tensor>, Reconstruction), CliError> {
    let find = |p: &str| wanted.iter().find(|(w, _)| w == p).map(|(_, t)| t.clone());
    let a_path = format!("{prefix}.a.weight");
    let b_path = format!("{prefix}.b.weight");
    let a_ty = find(&a_path).ok_or_else(|| CliError::Message(format!("`{b_path}` has no first factor `{a_path}`")))?;
    let rank = a_ty.shape[1];
    let weight_path =
        [format!("{prefix}.weight"), prefix.to_string()].into_iter().find(|p| dense.contains_key(p)).ok_or_else(
            || CliError::Message(format!("the dense checkpoint has no `{prefix}.weight` to factor into `{a_path}`")),
        )?;
    let w = &dense[&weight_path];
    let (d_in, d_out) = (a_ty.shape[0], find(&b_path).map(|t| t.shape[1]).unwrap_or(0));
    if w.shape != [d_in, d_out] {
        return Err(shape_error(&weight_path, &w.shape, &TensorType::new(lpac_ir::DType::F32, vec![d_in, d_out])));
    }
    let values = w.to_f64_vec();
    let matrix = DMatrix::from_row_slice(d_in, d_out, &values);
    let svd = matrix.clone().svd(true, true);
    let (u, v_t) = (svd.u.expect("requested U"), svd.v_t.expect("requested Vᵀ"));
    let order = descending(svd.singular_values.as_slice());
    let mut a = DMatrix::zeros(d_in, rank);
    let mut b = DMatrix::zeros(rank, d_out);
    for (j, &s) in order.iter().take(rank).enumerate() {
        let root = svd.singular_values[s].sqrt();
        a.set_column(j, &(u.column(s) * root));
        b.set_row(j, &(v_t.row(s) * root));
    }
    let relative_error = (&matrix - &a * &b).norm() / matrix.norm().max(f64::MIN_POSITIVE);
    let mut out = BTreeMap::from([(a_path, to_tensor(&a)), (b_path.clone(), to_tensor(&b))]);
    let mut bias_error = None;
    let a_bias_path = format!("{prefix}.a.bias");
    if find(&a_bias_path).is_some() {
        let bias = dense.get(&format!("{prefix}.bias")).ok_or_else(|| {
            CliError::Message(format!("the dense checkpoint has no `{prefix}.bias` to move onto `{a_bias_path}`"))
        })?;
        let bias = DMatrix::from_row_slice(1, d_out, &bias.to_f64_vec());
        // c = b·V_r·Σ_r^{-1/2}: with B = Σ_r^{1/2}·V_rᵀ, c·B = b·V_r·V_rᵀ.
        let mut c = DMatrix::zeros(1, rank);
        for (j, &s) in order.iter().take(rank).enumerate() {
            let sigma = svd.singular_values[s];
            let proj = (&bias * v_t.row(s).transpose())[(0, 0)];
            c[(0, j)] = if sigma > 0.0 { proj / sigma.sqrt() } else { 0.0 };
        }
        bias_error = Some((&bias - &c * &b).norm() / bias.norm().max(f64::MIN_POSITIVE));
        let values: Vec<f32> = (0..rank).map(|j| c[(0, j)] as f32).collect();
        out.insert(a_bias_path, Tensor::from_f32(vec![rank], values));
    }
    Ok((out, Reconstruction { weight: weight_path, relative_error, bias_error }))
}

/// Indices of singular values, largest first (nalgebra does not promise an order).
fn descending(values: &[f64]) -> Vec<usize> {
    let mut order: Vec<usize> = (0..values.len()).collect();
    order.sort_by(|&a, &b| values[b].total_cmp(&values[a]).then(a.cmp(&b)));
    order
}

fn to_tensor(m: &DMatrix<f64>) -> Tensor {
    let mut data = Vec::with_capacity(m.nrows() * m.ncols());
    for i in 0..m.nrows() {
        for j in 0..m.ncols() {
            data.push(m[(i, j)] as f32);
        }
    }
    Tensor::from_f32(vec![m.nrows(), m.ncols()], data)
}

fn shape_error(path: &str, found: &[usize], ty: &TensorType) -> CliError {
    CliError::Message(format!(
        "dense checkpoint tensor `{path}` is {}, the model expects {}",
        lpac_ir::types::format_shape(found),
        lpac_ir::types::format_shape(&ty.shape)
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A rank-2 matrix is reproduced exactly at r = 2, and the error at r = 1
    /// equals the dropped singular value's share.
    #[test]
    fn truncated_svd_factors() {
        let g = lpac_ir::parse(
            "graph g {\n  %0 : f32[1,3] = input \"x\"\n  %1 : f32[3,2] = param \"p.a.weight\" init=const(0.0)\n  %2 : f32[2,4] = param \"p.b.weight\" init=const(0.0)\n  %3 : f32[1,2] = matmul %0, %1\n  %4 : f32[1,4] = matmul %3, %2\n  %5 : f32[] = reduce_sum %4 axes=[0,1]\n  output loss = %5\n}\n",
            "t",
        )
        .unwrap();
        // W = u1 v1ᵀ·3 + u2 v2ᵀ·1 with orthonormal u, v.
        let w: Vec<f32> = vec![3.0, 0.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0];
        let dense = BTreeMap::from([("p.weight".to_string(), Tensor::from_f32(vec![3, 4], w))]);
        let (params, report) = from_dense(&g, &dense).unwrap();
        assert!(report[0].relative_error < 1e-6, "{}", report[0].relative_error);
        let a = params["p.a.weight"].to_f64_vec();
        let b = params["p.b.weight"].to_f64_vec();
        let ab00: f64 = (0..2).map(|j| a[j] * b[j * 4]).sum();
        assert!((ab00 - 3.0).abs() < 1e-5);
    }
}
