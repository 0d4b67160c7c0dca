//! Buffer storage: what the reference evaluator, the library kernels (gemm,
//! gather, scatter_add), compiled kernels and the executor all read and write.
//!
//! # Design
//! A buffer is raw bytes, row-major, in its dtype's native layout: `f32` and
//! `i32` as 4 native-endian bytes, `bool` as one byte holding 0 or 1. Every
//! allocation is 64-byte aligned ([`AlignedBuf`]), and so is every buffer
//! placed in the executor's arena (offsets are multiples of 64), so typed
//! access is always aligned. Only f32, i32 and bool buffers are supported;
//! bf16/f16 are rejected with an error when a program is checked.
//!
//! Kernels see memory through a [`BufferTable`]: one base pointer per
//! [`BufferId`] (so `table.as_ptr()` is exactly the `buffers` argument of a
//! compiled kernel) plus each buffer's type. A table can only be made from
//! memory it borrows mutably ([`HostMemory::table`], or the executor's
//! arena), so every pointer in it is valid for its buffer's size while it
//! lives. Element access through the table is bounds-checked.
//!
//! Host data goes in and out as [`Tensor`]s: f32 tensors may hold f64 data
//! (rounded on the way in, like an F32 interpreter run), bool tensors hold
//! `Vec<bool>`.

use std::alloc::{Layout, alloc_zeroed, dealloc};
use std::collections::BTreeMap;
use std::marker::PhantomData;
use std::ptr::NonNull;

use lpac_ir::interp::{Tensor, TensorData};
use lpac_ir::kernel::{BufferId, BufferKind, Program};
use lpac_ir::types::{DType, TensorType};

/// Alignment of every allocation and of every buffer placed in an arena.
pub use lpac_ir::kernel::plan::ALIGN;

/// Whether buffers of `dtype` can be stored and computed on by this backend.
pub fn supported(dtype: DType) -> bool {
    matches!(dtype, DType::F32 | DType::I32 | DType::Bool)
}

/// An owned, zero-initialised, [`ALIGN`]-byte aligned byte allocation.
pub struct AlignedBuf {
    ptr: NonNull<u8>,
    len: usize,
}

// SAFETY: an AlignedBuf owns its allocation exclusively, like a Vec<u8>.
unsafe impl Send for AlignedBuf {}
// SAFETY: shared access only hands out `&[u8]` / `*const u8`.
unsafe impl Sync for AlignedBuf {}

impl AlignedBuf {
    /// `len` zero bytes. A zero-length buffer allocates nothing and has an
    /// aligned dangling pointer.
    pub fn zeroed(len: usize) -> AlignedBuf {
        if len == 0 {
            // An aligned, non-null address that is never dereferenced.
            let ptr = NonNull::new(ALIGN as *mut u8).expect("non-null");
            return AlignedBuf { ptr, len };
        }
        let layout = Layout::from_size_align(len, ALIGN).expect("allocation size overflows");
        // SAFETY: the layout has a non-zero size.
        let raw = unsafe { alloc_zeroed(layout) };
        let ptr = NonNull::new(raw).unwrap_or_else(|| std::alloc::handle_alloc_error(layout));
        AlignedBuf { ptr, len }
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn as_ptr(&self) -> *const u8 {
        self.ptr.as_ptr()
    }

    pub fn as_mut_ptr(&mut self) -> *mut u8 {
        self.ptr.as_ptr()
    }

    pub fn as_bytes(&self) -> &[u8] {
        // SAFETY: the allocation holds `len` initialised (zeroed) bytes.
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr(), self.len) }
    }

    pub fn as_bytes_mut(&mut self) -> &mut [u8] {
        // SAFETY: as above, and `&mut self` is exclusive.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.as_ptr(), self.len) }
    }
}

impl Drop for AlignedBuf {
    fn drop(&mut self) {
        if self.len > 0 {
            let layout = Layout::from_size_align(self.len, ALIGN).expect("layout was valid at allocation");
            // SAFETY: allocated in `zeroed` with this very layout.
            unsafe { dealloc(self.ptr.as_ptr(), layout) };
        }
    }
}

/// One element of any supported dtype.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Scalar {
    F32(f32),
    I32(i32),
    Bool(bool),
}

impl Scalar {
    pub fn dtype(self) -> DType {
        match self {
            Scalar::F32(_) => DType::F32,
            Scalar::I32(_) => DType::I32,
            Scalar::Bool(_) => DType::Bool,
        }
    }

    /// `value` converted to `dtype` the way a constant is: floats round to
    /// nearest, i32 truncates toward zero (saturating), bool is `value != 0`.
    pub fn from_f64(value: f64, dtype: DType) -> Scalar {
        match dtype {
            DType::I32 => Scalar::I32(value as i32),
            DType::Bool => Scalar::Bool(value != 0.0),
            _ => Scalar::F32(value as f32),
        }
    }
}

/// The base pointer and type of every buffer of a program, as a kernel sees
/// them. Borrows the memory it points into (mutably) for `'a`.
pub struct BufferTable<'a> {
    ptrs: Vec<*mut u8>,
    types: &'a [TensorType],
    _memory: PhantomData<&'a mut [u8]>,
}

impl<'a> BufferTable<'a> {
    /// # Safety
    /// `ptrs[i]` must be valid for reads and writes of `types[i].size_bytes()`
    /// bytes, aligned to [`ALIGN`], for all of `'a`, and nothing else may
    /// access that memory while the table lives. Buffers may overlap only if
    /// no kernel run through the table touches two overlapping buffers.
    pub(crate) unsafe fn from_raw(ptrs: Vec<*mut u8>, types: &'a [TensorType]) -> BufferTable<'a> {
        assert_eq!(ptrs.len(), types.len(), "one pointer per buffer");
        BufferTable { ptrs, types, _memory: PhantomData }
    }

    /// The `buffers` argument of a compiled kernel: `as_ptr()[i]` is the base
    /// of `BufferId(i)`.
    pub fn as_ptr(&self) -> *const *mut u8 {
        self.ptrs.as_ptr()
    }

    /// Number of buffers.
    pub fn len(&self) -> usize {
        self.ptrs.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ptrs.is_empty()
    }

    /// The type of a buffer, if it exists.
    pub fn ty(&self, id: BufferId) -> Option<&TensorType> {
        self.types.get(id.index())
    }

    pub(crate) fn ptr(&self, id: BufferId) -> *mut u8 {
        self.ptrs[id.index()]
    }

    /// Element `index` of buffer `id`, or `None` when the buffer or the
    /// element does not exist (or the dtype is unsupported).
    pub fn load(&self, id: BufferId, index: i64) -> Option<Scalar> {
        let ty = self.types.get(id.index())?;
        let i = usize::try_from(index).ok().filter(|&i| i < ty.numel())?;
        let base = self.ptrs[id.index()];
        // SAFETY: `i` is in range of the buffer, which `from_raw`'s contract
        // makes valid and aligned for its dtype.
        unsafe {
            Some(match ty.dtype {
                DType::F32 => Scalar::F32(base.cast::<f32>().add(i).read()),
                DType::I32 => Scalar::I32(base.cast::<i32>().add(i).read()),
                DType::Bool => Scalar::Bool(base.add(i).read() != 0),
                DType::BF16 | DType::F16 => return None,
            })
        }
    }

    /// Stores `value` at element `index` of buffer `id`; an error if the
    /// element does not exist or the value's dtype is not the buffer's.
    pub fn store(&self, id: BufferId, index: usize, value: Scalar) -> Result<(), String> {
        let ty = self.types.get(id.index()).ok_or_else(|| format!("buffer b{} does not exist", id.0))?;
        if index >= ty.numel() {
            return Err(format!("store to b{} at element {} is out of range 0..{}", id.0, index, ty.numel()));
        }
        let base = self.ptrs[id.index()];
        // SAFETY: in range and aligned, as in `load`. The table is not Sync,
        // so a safe caller cannot race with itself; the crate's threaded
        // paths only write disjoint elements.
        unsafe {
            match (ty.dtype, value) {
                (DType::F32, Scalar::F32(v)) => base.cast::<f32>().add(index).write(v),
                (DType::I32, Scalar::I32(v)) => base.cast::<i32>().add(index).write(v),
                (DType::Bool, Scalar::Bool(v)) => base.add(index).write(u8::from(v)),
                (dtype, v) => {
                    return Err(format!("cannot store a {} value into b{} of dtype {}", v.dtype(), id.0, dtype));
                }
            }
        }
        Ok(())
    }

    /// The buffer's contents as a host tensor.
    pub fn read_tensor(&self, id: BufferId) -> Tensor {
        let ty = &self.types[id.index()];
        // SAFETY: the pointer is valid for the buffer's size (from_raw).
        unsafe { read_tensor(self.ptrs[id.index()], ty) }
    }
}

/// A shared view of a table for worker threads.
///
/// SAFETY (of the Send/Sync impls): the crate only hands this to threads that
/// write disjoint elements of buffers no other thread reads in the same
/// kernel, and the table outlives the threads (scoped).
#[derive(Clone, Copy)]
pub(crate) struct SharedTable<'t, 'a>(pub &'t BufferTable<'a>);
unsafe impl Send for SharedTable<'_, '_> {}
unsafe impl Sync for SharedTable<'_, '_> {}

/// Checks a supplied tensor against the buffer type it feeds.
pub fn check_tensor(what: &str, name: &str, ty: &TensorType, tensor: &Tensor) -> Result<(), String> {
    if tensor.dtype != ty.dtype || tensor.shape != ty.shape {
        return Err(format!("{what} `{name}`: expected {ty}, got {}", tensor.ty()));
    }
    tensor.check().map_err(|e| format!("{what} `{name}`: {e}"))
}

/// For every Input and Param buffer, the tensor that feeds it, after checking
/// it is present and has the buffer's dtype and shape. Extra entries in the
/// maps are ignored (as the interpreter does).
pub fn supplied<'t>(
    program: &Program,
    inputs: &'t BTreeMap<String, Tensor>,
    params: &'t BTreeMap<String, Tensor>,
) -> Result<Vec<Option<&'t Tensor>>, String> {
    program
        .buffers
        .iter()
        .map(|b| {
            let (map, what, name) = match &b.kind {
                BufferKind::Input(name) => (inputs, "input", name),
                BufferKind::Param(path) => (params, "parameter", path),
                BufferKind::Temp => return Ok(None),
            };
            let tensor = map.get(name).ok_or_else(|| format!("{what} `{name}` was not provided"))?;
            check_tensor(what, name, &b.ty, tensor)?;
            Ok(Some(tensor))
        })
        .collect()
}

/// Writes a checked tensor's elements to `dst` in the buffer layout.
///
/// # Safety
/// `dst` must be valid for writes of `ty.size_bytes()` bytes and aligned for
/// the dtype; `tensor` must have passed [`check_tensor`] against `ty`.
pub(crate) unsafe fn write_tensor(dst: *mut u8, ty: &TensorType, tensor: &Tensor) {
    let n = ty.numel();
    // SAFETY: the caller's contract; the tensor holds exactly `n` elements.
    unsafe {
        match (&tensor.data, ty.dtype) {
            (TensorData::F32(v), _) => std::ptr::copy_nonoverlapping(v.as_ptr(), dst.cast::<f32>(), n),
            (TensorData::F64(v), _) => {
                let out = std::slice::from_raw_parts_mut(dst.cast::<f32>(), n);
                for (o, &x) in out.iter_mut().zip(v) {
                    *o = x as f32;
                }
            }
            (TensorData::I32(v), _) => std::ptr::copy_nonoverlapping(v.as_ptr(), dst.cast::<i32>(), n),
            (TensorData::Bool(v), _) => {
                let out = std::slice::from_raw_parts_mut(dst, n);
                for (o, &x) in out.iter_mut().zip(v) {
                    *o = u8::from(x);
                }
            }
        }
    }
}

/// Reads a buffer of type `ty` at `src` into a host tensor.
///
/// # Safety
/// `src` must be valid for reads of `ty.size_bytes()` bytes, aligned for the
/// dtype, and `ty.dtype` must be supported.
pub(crate) unsafe fn read_tensor(src: *const u8, ty: &TensorType) -> Tensor {
    let n = ty.numel();
    // SAFETY: the caller's contract.
    let data = unsafe {
        match ty.dtype {
            DType::I32 => TensorData::I32(std::slice::from_raw_parts(src.cast::<i32>(), n).to_vec()),
            DType::Bool => TensorData::Bool(std::slice::from_raw_parts(src, n).iter().map(|&b| b != 0).collect()),
            _ => TensorData::F32(std::slice::from_raw_parts(src.cast::<f32>(), n).to_vec()),
        }
    };
    Tensor { dtype: ty.dtype, shape: ty.shape.clone(), data }
}

/// One separate allocation per buffer of a program: the memory of the
/// reference evaluator and of tests (no sharing between buffers).
pub struct HostMemory {
    bufs: Vec<AlignedBuf>,
    types: Vec<TensorType>,
}

impl HostMemory {
    /// Zeroed storage for every buffer; an error for an unsupported dtype.
    pub fn new(program: &Program) -> Result<HostMemory, String> {
        let types: Vec<TensorType> = program.buffers.iter().map(|b| b.ty.clone()).collect();
        if let Some((i, t)) = types.iter().enumerate().find(|(_, t)| !supported(t.dtype)) {
            return Err(format!("buffer b{i} has dtype {}, which the CPU backend does not support", t.dtype));
        }
        let bufs = types.iter().map(|t| AlignedBuf::zeroed(t.size_bytes())).collect();
        Ok(HostMemory { bufs, types })
    }

    /// Copies `tensor` into buffer `id` after checking its dtype and shape.
    pub fn write(&mut self, id: BufferId, tensor: &Tensor) -> Result<(), String> {
        let ty = self.types.get(id.index()).ok_or_else(|| format!("buffer b{} does not exist", id.0))?;
        check_tensor("buffer", &format!("b{}", id.0), ty, tensor)?;
        // SAFETY: the allocation has exactly `ty.size_bytes()` bytes, aligned.
        unsafe { write_tensor(self.bufs[id.index()].as_mut_ptr(), ty, tensor) };
        Ok(())
    }

    /// Buffer `id` as a host tensor.
    pub fn read(&self, id: BufferId) -> Tensor {
        // SAFETY: as in `write`.
        unsafe { read_tensor(self.bufs[id.index()].as_ptr(), &self.types[id.index()]) }
    }

    /// The raw bytes of buffer `id`.
    pub fn bytes(&self, id: BufferId) -> &[u8] {
        self.bufs[id.index()].as_bytes()
    }

    /// The pointer table kernels run on.
    pub fn table(&mut self) -> BufferTable<'_> {
        let ptrs = self.bufs.iter_mut().map(AlignedBuf::as_mut_ptr).collect();
        // SAFETY: each pointer owns its buffer's bytes, aligned; the table
        // borrows `self` mutably, so nothing else touches them.
        unsafe { BufferTable::from_raw(ptrs, &self.types) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use lpac_ir::kernel::Buffer;

    fn program() -> Program {
        let mut p = Program { name: "m".into(), ..Program::default() };
        p.add_buffer(TensorType::new(DType::F32, vec![2, 3]), BufferKind::Input("x".into()));
        p.add_buffer(TensorType::new(DType::I32, vec![4]), BufferKind::Param("w".into()));
        p.add_buffer(TensorType::new(DType::Bool, vec![3]), BufferKind::Temp);
        p
    }

    #[test]
    fn aligned_buffers_are_zeroed_and_aligned() {
        for len in [0, 1, 63, 64, 1000] {
            let b = AlignedBuf::zeroed(len);
            assert_eq!(b.as_ptr() as usize % ALIGN, 0);
            assert_eq!(b.len(), len);
            assert!(b.as_bytes().iter().all(|&x| x == 0));
        }
    }

    #[test]
    fn tensors_round_trip_through_host_memory() {
        let p = program();
        let mut m = HostMemory::new(&p).unwrap();
        let x = Tensor::from_f64(vec![2, 3], vec![1.0, 2.5, -3.0, 0.1, 5.0, 6.0]);
        m.write(BufferId(0), &x).unwrap();
        assert_eq!(m.read(BufferId(0)), Tensor::from_f32(vec![2, 3], vec![1.0, 2.5, -3.0, 0.1, 5.0, 6.0]));
        let w = Tensor::from_i32(vec![4], vec![1, -2, 3, i32::MAX]);
        m.write(BufferId(1), &w).unwrap();
        assert_eq!(m.read(BufferId(1)), w);
        let c = Tensor::from_bool(vec![3], vec![true, false, true]);
        m.write(BufferId(2), &c).unwrap();
        assert_eq!(m.bytes(BufferId(2)), &[1, 0, 1]);
        assert_eq!(m.read(BufferId(2)), c);
        let err = m.write(BufferId(0), &Tensor::from_f32(vec![3, 2], vec![0.0; 6])).unwrap_err();
        assert!(err.contains("expected f32[2,3], got f32[3,2]"), "{err}");
    }

    #[test]
    fn table_access_is_bounds_and_type_checked() {
        let p = program();
        let mut m = HostMemory::new(&p).unwrap();
        let t = m.table();
        assert_eq!(t.len(), 3);
        t.store(BufferId(0), 5, Scalar::F32(7.0)).unwrap();
        assert_eq!(t.load(BufferId(0), 5), Some(Scalar::F32(7.0)));
        assert_eq!(t.load(BufferId(0), 6), None);
        assert_eq!(t.load(BufferId(0), -1), None);
        assert_eq!(t.load(BufferId(9), 0), None);
        assert!(t.store(BufferId(0), 6, Scalar::F32(0.0)).is_err());
        assert!(t.store(BufferId(1), 0, Scalar::F32(0.0)).unwrap_err().contains("dtype i32"));
        t.store(BufferId(2), 1, Scalar::Bool(true)).unwrap();
        assert_eq!(t.load(BufferId(2), 1), Some(Scalar::Bool(true)));
    }

    #[test]
    fn supplied_checks_names_dtypes_and_shapes() {
        let p = program();
        let mut inputs = BTreeMap::new();
        let mut params = BTreeMap::new();
        assert_eq!(supplied(&p, &inputs, &params).unwrap_err(), "input `x` was not provided");
        inputs.insert("x".to_string(), Tensor::from_i32(vec![2, 3], vec![0; 6]));
        let err = supplied(&p, &inputs, &params).unwrap_err();
        assert_eq!(err, "input `x`: expected f32[2,3], got i32[2,3]");
        inputs.insert("x".to_string(), Tensor::from_f32(vec![2, 3], vec![0.0; 5]));
        let err = supplied(&p, &inputs, &params).unwrap_err();
        assert!(err.starts_with("input `x`: 5 elements"), "{err}");
        inputs.insert("x".to_string(), Tensor::from_f32(vec![2, 3], vec![0.0; 6]));
        assert_eq!(supplied(&p, &inputs, &params).unwrap_err(), "parameter `w` was not provided");
        params.insert("w".to_string(), Tensor::from_i32(vec![4], vec![0; 4]));
        inputs.insert("unused".to_string(), Tensor::scalar_f32(1.0));
        let s = supplied(&p, &inputs, &params).unwrap();
        assert!(s[0].is_some() && s[1].is_some() && s[2].is_none());
    }

    #[test]
    fn unsupported_dtypes_are_refused() {
        let mut p = Program::default();
        p.buffers.push(Buffer { ty: TensorType::new(DType::BF16, vec![2]), kind: BufferKind::Temp });
        let err = HostMemory::new(&p).err().unwrap();
        assert!(err.contains("bf16"), "{err}");
    }
}
