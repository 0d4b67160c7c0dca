//! Gather and scatter_add for the executor: whole rows at a time, split
//! across threads when large. Every index is checked before any data moves,
//! so an out-of-range index is an error (naming its position), never a wild
//! access.
//!
//! Gather splits the positions across threads. Scatter_add must add rows in
//! index order (so results do not depend on the thread count): it splits the
//! *columns* of a row across threads, and each thread adds all rows, in
//! order, into its columns.

use lpac_ir::kernel::BufferId;
use lpac_ir::types::{DType, TensorType};
use rayon::prelude::*;

use crate::memory::BufferTable;
use crate::reference::checked_row;

/// Below this many elements moved, one thread does the work.
pub const PARALLEL_MIN: usize = 1 << 16;

#[derive(Clone, Copy)]
struct Raw(*mut u8);
// SAFETY: used only inside this module's functions, whose threads write
// disjoint parts of an output buffer that no thread reads as an input.
unsafe impl Send for Raw {}
unsafe impl Sync for Raw {}

fn ty<'t>(table: &'t BufferTable, b: BufferId) -> Result<&'t TensorType, String> {
    table.ty(b).ok_or_else(|| format!("buffer b{} does not exist", b.0))
}

/// The rows named by `indices`, each checked against `rows`.
fn checked_rows(table: &BufferTable, indices: BufferId, rows: usize) -> Result<Vec<usize>, String> {
    let t = ty(table, indices)?;
    if t.dtype != DType::I32 {
        return Err(format!("indices b{} are {t}, not i32", indices.0));
    }
    // SAFETY: the table makes the pointer valid for numel i32 elements, and
    // no kernel writes the indices it reads (checked by the callers).
    let idx = unsafe { std::slice::from_raw_parts(table.ptr(indices).cast::<i32>(), t.numel()) };
    idx.iter().enumerate().map(|(p, &i)| checked_row(i, rows, p)).collect()
}

/// `out[i.., r..] = tbl[indices[i..], r..]`.
pub fn gather(
    table: &BufferTable,
    tbl: BufferId,
    indices: BufferId,
    out: BufferId,
    threads: usize,
) -> Result<(), String> {
    let (t, o) = (ty(table, tbl)?, ty(table, out)?);
    if out == tbl || out == indices {
        return Err(format!("gather writes b{}, which it also reads", out.0));
    }
    let rows = *t.shape.first().ok_or_else(|| format!("gather table b{} is a scalar", tbl.0))?;
    let row_len: usize = t.shape[1..].iter().product();
    let rows_at = checked_rows(table, indices, rows)?;
    if o.dtype != t.dtype || o.numel() != rows_at.len() * row_len {
        return Err(format!(
            "gather output b{} is {o}; expected {} elements of {}",
            out.0,
            rows_at.len() * row_len,
            t.dtype
        ));
    }
    let row_bytes = row_len * t.dtype.size_bytes();
    let (src, dst) = (Raw(table.ptr(tbl)), Raw(table.ptr(out)));
    let copy = |p: usize, row: usize| {
        let (src, dst) = (src, dst);
        // SAFETY: row < rows and p < positions (checked), so both ranges lie
        // inside their buffers; the buffers are distinct (checked above), so
        // the ranges do not overlap.
        unsafe { std::ptr::copy_nonoverlapping(src.0.add(row * row_bytes), dst.0.add(p * row_bytes), row_bytes) };
    };
    if threads > 1 && o.numel() >= PARALLEL_MIN {
        let chunk = rows_at.len().div_ceil(threads).max(1);
        rows_at.par_chunks(chunk).enumerate().for_each(|(c, part)| {
            for (i, &row) in part.iter().enumerate() {
                copy(c * chunk + i, row);
            }
        });
    } else {
        for (p, &row) in rows_at.iter().enumerate() {
            copy(p, row);
        }
    }
    Ok(())
}

/// `out = 0; out[indices[i..], r..] += src[i.., r..]`, rows added in index
/// order (f32 or wrapping i32).
pub fn scatter_add(
    table: &BufferTable,
    indices: BufferId,
    src: BufferId,
    out: BufferId,
    threads: usize,
) -> Result<(), String> {
    let (s, o) = (ty(table, src)?, ty(table, out)?);
    if out == src || out == indices {
        return Err(format!("scatter_add writes b{}, which it also reads", out.0));
    }
    let rows = *o.shape.first().ok_or_else(|| format!("scatter_add output b{} is a scalar", out.0))?;
    let row_len: usize = o.shape[1..].iter().product();
    let rows_at = checked_rows(table, indices, rows)?;
    if s.dtype != o.dtype || s.numel() != rows_at.len() * row_len {
        return Err(format!(
            "scatter_add source b{} is {s}; expected {} elements of {}",
            src.0,
            rows_at.len() * row_len,
            o.dtype
        ));
    }
    let (sp, op) = (Raw(table.ptr(src)), Raw(table.ptr(out)));
    // Adds every source row, in order, into columns `cols` of the output.
    let add_columns = |cols: std::ops::Range<usize>| {
        let (sp, op) = (sp, op);
        // SAFETY: row < rows, p < positions and cols within 0..row_len, so
        // every access is inside its buffer; src and out are distinct; the
        // callers give each thread its own columns of `out`.
        unsafe {
            match o.dtype {
                DType::F32 => {
                    let (s, d) = (sp.0.cast::<f32>(), op.0.cast::<f32>());
                    for c in cols.clone() {
                        for r in 0..rows {
                            *d.add(r * row_len + c) = 0.0;
                        }
                    }
                    for (p, &row) in rows_at.iter().enumerate() {
                        for c in cols.clone() {
                            *d.add(row * row_len + c) += *s.add(p * row_len + c);
                        }
                    }
                }
                _ => {
                    let (s, d) = (sp.0.cast::<i32>(), op.0.cast::<i32>());
                    for c in cols.clone() {
                        for r in 0..rows {
                            *d.add(r * row_len + c) = 0;
                        }
                    }
                    for (p, &row) in rows_at.iter().enumerate() {
                        for c in cols.clone() {
                            let o = d.add(row * row_len + c);
                            *o = (*o).wrapping_add(*s.add(p * row_len + c));
                        }
                    }
                }
            }
        }
    };
    if !matches!(o.dtype, DType::F32 | DType::I32) {
        return Err(format!("scatter_add of {} values is not defined", o.dtype));
    }
    let work = (rows_at.len() + rows) * row_len;
    if threads > 1 && work >= PARALLEL_MIN && row_len >= 32 {
        // Column blocks of whole cache lines (16 f32s).
        let block = row_len.div_ceil(threads).next_multiple_of(16);
        let starts: Vec<usize> = (0..row_len).step_by(block).collect();
        starts.into_par_iter().for_each(|c0| add_columns(c0..(c0 + block).min(row_len)));
    } else {
        add_columns(0..row_len);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::memory::HostMemory;
    use crate::reference;
    use lpac_ir::interp::Tensor;
    use lpac_ir::kernel::{BufferKind, Program};
    use lpac_ir::random::uniform;

    fn setup(rows: usize, positions: usize, row: &[usize], dtype: DType) -> (Program, [BufferId; 5]) {
        let mut p = Program::default();
        let shape = |lead: usize| std::iter::once(lead).chain(row.iter().copied()).collect::<Vec<_>>();
        let tbl = p.add_buffer(TensorType::new(dtype, shape(rows)), BufferKind::Input("t".into()));
        let idx = p.add_buffer(TensorType::new(DType::I32, vec![positions]), BufferKind::Input("i".into()));
        let g = p.add_buffer(TensorType::new(dtype, shape(positions)), BufferKind::Temp);
        let s = p.add_buffer(TensorType::new(dtype, shape(rows)), BufferKind::Temp);
        let s_ref = p.add_buffer(TensorType::new(dtype, shape(rows)), BufferKind::Temp);
        (p, [tbl, idx, g, s, s_ref])
    }

    fn fill(mem: &mut HostMemory, p: &Program, tbl: BufferId, idx: BufferId, rows: usize) {
        let t = &p.buffer(tbl).ty;
        let n = t.numel() as u64;
        let tensor = match t.dtype {
            DType::F32 => Tensor::from_f32(t.shape.clone(), (0..n).map(|i| uniform(3, i) as f32).collect()),
            _ => Tensor::from_i32(
                t.shape.clone(),
                (0..n).map(|i| ((uniform(3, i) * 1e9) as i32).wrapping_mul(3)).collect(),
            ),
        };
        mem.write(tbl, &tensor).unwrap();
        let positions = p.buffer(idx).ty.numel() as u64;
        let idx_data = (0..positions).map(|i| (uniform(4, i) * rows as f64) as i32).collect();
        mem.write(idx, &Tensor::from_i32(vec![positions as usize], idx_data)).unwrap();
    }

    /// Gather then scatter_add (of the gathered rows back into a table),
    /// compared with the reference, single- and multi-threaded.
    fn round_trip(rows: usize, positions: usize, row: &[usize], dtype: DType, threads: usize) {
        let (p, [tbl, idx, g, s, s_ref]) = setup(rows, positions, row, dtype);
        let mut mem = HostMemory::new(&p).unwrap();
        fill(&mut mem, &p, tbl, idx, rows);
        {
            let table = mem.table();
            gather(&table, tbl, idx, g, threads).unwrap();
            scatter_add(&table, idx, g, s, threads).unwrap();
            reference::run_scatter_add(&table, idx, g, s_ref).unwrap();
        }
        let (t, i, gathered) = (mem.read(tbl), mem.read(idx), mem.read(g));
        let row_len: usize = row.iter().product();
        let t = t.to_f64_vec();
        let g_vals = gathered.to_f64_vec();
        for (pos, &r) in i.as_i32().unwrap().iter().enumerate() {
            let r = r as usize;
            assert_eq!(&g_vals[pos * row_len..(pos + 1) * row_len], &t[r * row_len..(r + 1) * row_len]);
        }
        // Same additions in the same order: bit-identical.
        assert_eq!(mem.read(s), mem.read(s_ref));
    }

    #[test]
    fn small_tables() {
        for threads in [1, 2] {
            round_trip(5, 7, &[3], DType::F32, threads);
            round_trip(5, 7, &[2, 2], DType::I32, threads);
            round_trip(4, 6, &[], DType::F32, threads);
        }
    }

    #[test]
    fn large_tables_split_across_threads() {
        round_trip(50, 700, &[200], DType::F32, 2);
        round_trip(50, 700, &[200], DType::I32, 3);
        round_trip(50, 2000, &[33], DType::F32, 2);
    }

    #[test]
    fn bad_indices_are_errors() {
        let (p, [tbl, idx, g, s, _]) = setup(3, 2, &[2], DType::F32);
        let mut mem = HostMemory::new(&p).unwrap();
        mem.write(idx, &Tensor::from_i32(vec![2], vec![1, -1])).unwrap();
        {
            let table = mem.table();
            assert_eq!(gather(&table, tbl, idx, g, 1).unwrap_err(), "index -1 at position 1 is out of range 0..3");
            assert_eq!(scatter_add(&table, idx, g, s, 1).unwrap_err(), "index -1 at position 1 is out of range 0..3");
        }
        mem.write(idx, &Tensor::from_i32(vec![2], vec![1, 2])).unwrap();
        let table = mem.table();
        assert!(gather(&table, tbl, idx, s, 1).unwrap_err().contains("expected 4 elements"));
        assert!(gather(&table, tbl, idx, tbl, 1).unwrap_err().contains("also reads"));
        gather(&table, tbl, idx, g, 1).unwrap();
    }
}
