//! Data movement as index plans: for every output element (row-major), which
//! operand and which flat element of it to copy. Reshape, permute, broadcast,
//! slice, concat, pad and gather are all plans, so one routine
//! ([`Value::pick`](super::value::Value::pick)) does the copying for every
//! element kind.

use crate::types::strides;

/// Calls `f` with every multi-index of `shape` in row-major order (once with
/// the empty index for a scalar; never for a shape with a zero dimension).
pub fn for_each_index(shape: &[usize], mut f: impl FnMut(&[usize])) {
    if shape.contains(&0) {
        return;
    }
    let mut index = vec![0; shape.len()];
    loop {
        f(&index);
        // Odometer step: bump the last axis, carrying into earlier ones.
        let mut axis = shape.len();
        loop {
            if axis == 0 {
                return;
            }
            axis -= 1;
            index[axis] += 1;
            if index[axis] < shape[axis] {
                break;
            }
            index[axis] = 0;
        }
    }
}

/// A plan built by asking `source` where each output element comes from.
pub fn plan(out_shape: &[usize], mut source: impl FnMut(&[usize]) -> (usize, usize)) -> Vec<(usize, usize)> {
    let mut plan = Vec::with_capacity(out_shape.iter().product());
    for_each_index(out_shape, |o| plan.push(source(o)));
    plan
}

fn dot(index: impl Iterator<Item = usize>, strides: &[usize]) -> usize {
    index.zip(strides).map(|(i, s)| i * s).sum()
}

/// Output axis `i` is input axis `perm[i]`.
pub fn permute(in_shape: &[usize], perm: &[usize], out_shape: &[usize]) -> Vec<(usize, usize)> {
    let in_strides = strides(in_shape);
    let permuted: Vec<usize> = perm.iter().map(|&p| in_strides[p]).collect();
    plan(out_shape, |o| (0, dot(o.iter().copied(), &permuted)))
}

/// Input axis `i` is output axis `dims[i]`; size-1 input axes repeat.
pub fn broadcast(in_shape: &[usize], dims: &[usize], out_shape: &[usize]) -> Vec<(usize, usize)> {
    let in_strides = strides(in_shape);
    plan(out_shape, |o| {
        let index = dims.iter().zip(in_shape).map(|(&d, &size)| if size == 1 { 0 } else { o[d] });
        (0, dot(index, &in_strides))
    })
}

pub fn slice(in_shape: &[usize], axis: usize, start: usize, out_shape: &[usize]) -> Vec<(usize, usize)> {
    let in_strides = strides(in_shape);
    plan(out_shape, |o| (0, dot(o.iter().copied(), &in_strides) + start * in_strides[axis]))
}

/// Operand `j` covers `offsets[j]..offsets[j] + size_j` of the output axis.
pub fn concat(in_shapes: &[&[usize]], axis: usize, out_shape: &[usize]) -> Vec<(usize, usize)> {
    let in_strides: Vec<Vec<usize>> = in_shapes.iter().map(|s| strides(s)).collect();
    plan(out_shape, |o| {
        let mut at = o[axis];
        let mut operand = 0;
        while at >= in_shapes[operand][axis] {
            at -= in_shapes[operand][axis];
            operand += 1;
        }
        let index = o.iter().enumerate().map(|(a, &i)| if a == axis { at } else { i });
        (operand, dot(index, &in_strides[operand]))
    })
}

/// Operand 0 is the input; operand 1 is the one-element fill value.
pub fn pad(in_shape: &[usize], axis: usize, lo: usize, out_shape: &[usize]) -> Vec<(usize, usize)> {
    let in_strides = strides(in_shape);
    plan(out_shape, |o| {
        let inside = o[axis] >= lo && o[axis] - lo < in_shape[axis];
        if !inside {
            return (1, 0);
        }
        let index = o.iter().enumerate().map(|(a, &i)| if a == axis { i - lo } else { i });
        (0, dot(index, &in_strides))
    })
}

/// Rows of a `[rows, row_len]` table, one per index; an out-of-range index is
/// an error naming its position.
pub fn gather(indices: &[i32], rows: usize, row_len: usize) -> Result<Vec<(usize, usize)>, String> {
    let mut plan = Vec::with_capacity(indices.len() * row_len);
    for (position, &index) in indices.iter().enumerate() {
        let row = checked_row(index, rows, position)?;
        plan.extend((0..row_len).map(|c| (0, row * row_len + c)));
    }
    Ok(plan)
}

/// `index` as a row number, if it is one of `0..rows`.
pub fn checked_row(index: i32, rows: usize, position: usize) -> Result<usize, String> {
    usize::try_from(index)
        .ok()
        .filter(|&row| row < rows)
        .ok_or_else(|| format!("index {} at position {} is out of range 0..{}", index, position, rows))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn indices_in_row_major_order() {
        let mut seen = Vec::new();
        for_each_index(&[2, 3], |i| seen.push(i.to_vec()));
        assert_eq!(seen, vec![vec![0, 0], vec![0, 1], vec![0, 2], vec![1, 0], vec![1, 1], vec![1, 2]]);
        let mut count = 0;
        for_each_index(&[], |i| {
            assert!(i.is_empty());
            count += 1
        });
        assert_eq!(count, 1, "a scalar has one element");
        for_each_index(&[3, 0], |_| panic!("no elements"));
    }
}
