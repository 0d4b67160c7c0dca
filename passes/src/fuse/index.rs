//! Logical indices: which element of a tensor a kernel iteration needs, as one
//! affine function of the kernel's loop variables per axis. Views transform
//! them (a permute reorders axes, a broadcast drops some, a slice shifts one,
//! a reshape merges or splits), and a load turns one into an [`IndexMap`].

use lpac_ir::kernel::IndexMap;

/// `offset + Σ coeffs[v] · var[v]`.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Affine {
    pub offset: i64,
    pub coeffs: Vec<i64>,
}

impl Affine {
    pub fn constant(value: i64, vars: usize) -> Affine {
        Affine { offset: value, coeffs: vec![0; vars] }
    }

    pub fn var(v: usize, vars: usize) -> Affine {
        let mut coeffs = vec![0; vars];
        coeffs[v] = 1;
        Affine { offset: 0, coeffs }
    }

    pub fn scaled(&self, k: i64) -> Affine {
        Affine { offset: self.offset * k, coeffs: self.coeffs.iter().map(|c| c * k).collect() }
    }

    pub fn plus(&self, other: &Affine) -> Affine {
        let coeffs = self.coeffs.iter().zip(&other.coeffs).map(|(a, b)| a + b).collect();
        Affine { offset: self.offset + other.offset, coeffs }
    }

    pub fn shifted(&self, k: i64) -> Affine {
        Affine { offset: self.offset + k, coeffs: self.coeffs.clone() }
    }

    pub fn to_map(&self) -> IndexMap {
        IndexMap { offset: self.offset, strides: self.coeffs.clone() }
    }
}

/// One affine function per axis of a tensor.
pub type Logical = Vec<Affine>;

/// The identity: axis `a` of a tensor is loop variable `first + a`.
pub fn identity(rank: usize, first: usize, vars: usize) -> Logical {
    (0..rank).map(|a| Affine::var(first + a, vars)).collect()
}

/// The element offset in a contiguous row-major buffer of `shape`.
pub fn flat(shape: &[usize], logical: &Logical, vars: usize) -> Affine {
    let strides = lpac_ir::types::strides(shape);
    let mut acc = Affine::constant(0, vars);
    for (a, s) in logical.iter().zip(strides) {
        acc = acc.plus(&a.scaled(s as i64));
    }
    acc
}

/// The operand's index for `broadcast dims` (operand axis `i` is output axis
/// `dims[i]`; a size-1 operand axis is always 0).
pub fn through_broadcast(out: &Logical, dims: &[usize], operand_shape: &[usize], vars: usize) -> Logical {
    dims.iter()
        .zip(operand_shape)
        .map(|(&d, &size)| if size == 1 { Affine::constant(0, vars) } else { out[d].clone() })
        .collect()
}

/// The operand's index for `permute perm` (output axis `i` is operand axis `perm[i]`).
pub fn through_permute(out: &Logical, perm: &[usize]) -> Logical {
    let mut operand = out.clone();
    for (i, &p) in perm.iter().enumerate() {
        operand[p] = out[i].clone();
    }
    operand
}

pub fn through_slice(out: &Logical, axis: usize, start: usize) -> Logical {
    let mut operand = out.clone();
    operand[axis] = out[axis].shifted(start as i64);
    operand
}

/// The operand's index for a reshape from `operand_shape` to `out_shape`, if
/// it is affine: the shapes split into groups of equal size, and every group
/// whose operand side has more than one axis (of size > 1) would need a
/// division, so it is not.
pub fn through_reshape(out: &Logical, out_shape: &[usize], operand_shape: &[usize], vars: usize) -> Option<Logical> {
    let mut operand: Logical = operand_shape.iter().map(|_| Affine::constant(0, vars)).collect();
    let (n_out, n_in) = (out_shape.len(), operand_shape.len());
    let (mut i, mut j) = (0, 0);
    while i < n_out || j < n_in {
        // One group: the shortest runs of axes on both sides with equal products.
        let (gi, gj) = (i, j);
        let (mut pi, mut pj) = (1usize, 1usize);
        if i < n_out {
            pi *= out_shape[i];
            i += 1;
        }
        if j < n_in {
            pj *= operand_shape[j];
            j += 1;
        }
        while pi != pj {
            if pi < pj && i < n_out {
                pi *= out_shape[i];
                i += 1;
            } else if pj < pi && j < n_in {
                pj *= operand_shape[j];
                j += 1;
            } else {
                return None;
            }
        }
        let big: Vec<usize> = (gj..j).filter(|&a| operand_shape[a] > 1).collect();
        match big.as_slice() {
            [] => {}
            [one] => {
                // Merge: the operand axis is the row-major flat index of the group.
                let mut acc = Affine::constant(0, vars);
                let mut stride = 1i64;
                // Size-1 axes are always 0 and contribute nothing.
                for a in (gi..i).rev().filter(|&a| out_shape[a] > 1) {
                    acc = acc.plus(&out[a].scaled(stride));
                    stride *= out_shape[a] as i64;
                }
                operand[*one] = acc;
            }
            _ => {
                // A split: affine only if the output side is the same axes.
                let out_big: Vec<usize> = (gi..i).filter(|&a| out_shape[a] > 1).collect();
                if out_big.len() != big.len()
                    || out_big.iter().zip(&big).any(|(&a, &b)| out_shape[a] != operand_shape[b])
                {
                    return None;
                }
                for (&a, &b) in out_big.iter().zip(&big) {
                    operand[b] = out[a].clone();
                }
            }
        }
    }
    Some(operand)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars(n: usize) -> Logical {
        identity(n, 0, n)
    }

    #[test]
    fn merging_reshape_is_affine() {
        // out [2, 3, 4] -> operand [6, 4]: operand axis 0 = 3·i0 + i1.
        let op = through_reshape(&vars(3), &[2, 3, 4], &[6, 4], 3).unwrap();
        assert_eq!(op[0].coeffs, vec![3, 1, 0]);
        assert_eq!(op[1].coeffs, vec![0, 0, 1]);
    }

    #[test]
    fn splitting_reshape_is_not_affine() {
        // out [6, 4] -> operand [2, 3, 4] needs i0 / 3 and i0 % 3.
        assert!(through_reshape(&vars(2), &[6, 4], &[2, 3, 4], 2).is_none());
    }

    #[test]
    fn unit_axes_are_free() {
        let op = through_reshape(&vars(3), &[2, 1, 4], &[2, 4, 1], 3).unwrap();
        assert_eq!(op[0].coeffs, vec![1, 0, 0]);
        assert_eq!(op[1].coeffs, vec![0, 0, 1]);
        assert_eq!(op[2].coeffs, vec![0, 0, 0]);
        let split_heads = through_reshape(&vars(4), &[16, 128, 4, 64], &[16, 128, 256], 4).unwrap();
        assert_eq!(split_heads[2].coeffs, vec![0, 0, 64, 1]);
    }

    #[test]
    fn permute_broadcast_slice() {
        let p = through_permute(&vars(3), &[0, 2, 1]);
        assert_eq!(p[1].coeffs, vec![0, 0, 1]);
        let b = through_broadcast(&vars(3), &[2], &[5], 3);
        assert_eq!(b[0].coeffs, vec![0, 0, 1]);
        let b1 = through_broadcast(&vars(3), &[1, 2], &[1, 5], 3);
        assert_eq!(b1[0], Affine::constant(0, 3));
        let s = through_slice(&vars(2), 1, 7);
        assert_eq!(s[1].offset, 7);
        assert_eq!(flat(&[4, 5], &vars(2), 2).coeffs, vec![5, 1]);
    }
}
