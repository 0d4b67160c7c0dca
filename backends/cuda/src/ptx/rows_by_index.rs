//! Gather and scatter-add as PTX.
//!
//! - **gather** `out[i, c] = table[idx[i], c]`: one thread per output
//!   element (grid-stride). An index outside `0..n` writes 0 and sets the
//!   error cell (`err`, a `u32` the runtime clears before and checks after
//!   the step), so a bad token id is reported, never read out of bounds.
//! - **scatter-add** `out = 0; out[idx[j], c] += src[j, c]`: one thread per
//!   column `c`, which zeroes its column and then adds the rows in index
//!   order — the same additions in the same order as the CPU backend and
//!   the interpreter (no atomics, so the result does not depend on
//!   scheduling). Bad indices are skipped and reported as for gather.

use lpac_ir::kernel::{BufferId, Program};
use lpac_ir::types::DType;

use super::{Arch, BLOCK, Module, PtxError, PtxKernel};

/// `(rows of the table, elements per row)`, checking dtypes.
fn shapes(
    program: &Program,
    entry: &str,
    table_or_out: BufferId,
    indices: BufferId,
) -> Result<(usize, usize), PtxError> {
    let t = &program.buffer(table_or_out).ty;
    let i = &program.buffer(indices).ty;
    if t.dtype != DType::F32 || i.dtype != DType::I32 || t.rank() == 0 {
        return Err(PtxError {
            kernel: entry.to_string(),
            message: format!("gather/scatter-add of {t} by {i} (f32 rows, i32 indices are emitted)"),
        });
    }
    Ok((t.shape[0], t.shape[1..].iter().product()))
}

/// The function around `body`: three buffer parameters (bases in `%rd0`,
/// `%rd1`, `%rd2`) and the error cell (`%rd3`); the thread's first index in
/// `%rd4` and the grid's stride in `%rd6`.
fn function(
    entry: String,
    kernel: usize,
    arch: Arch,
    comment: String,
    buffers: [BufferId; 3],
    body: &str,
    threads: u64,
) -> PtxKernel {
    let mut code = String::new();
    for (r, b) in buffers.iter().enumerate() {
        code.push_str(&format!("\tld.param.u64 %rd{r}, [b{}];\n\tcvta.to.global.u64 %rd{r}, %rd{r};\n", b.0));
    }
    code.push_str(
        "\tld.param.u64 %rd3, [err];\n\tcvta.to.global.u64 %rd3, %rd3;\n\
         \tmov.u32 %r0, %ctaid.x;\n\tmov.u32 %r1, %ntid.x;\n\tmov.u32 %r2, %tid.x;\n\tmov.u32 %r3, %nctaid.x;\n\
         \tmul.wide.u32 %rd4, %r0, %r1;\n\tcvt.u64.u32 %rd5, %r2;\n\tadd.u64 %rd4, %rd4, %rd5;\n\
         \tmul.wide.u32 %rd6, %r3, %r1;\n",
    );
    code.push_str(body);
    let mut params: Vec<String> = buffers.iter().map(|b| format!("b{}", b.0)).collect();
    params.push("err".into());
    let regs = [(".pred", "%p", 4), (".b32", "%r", 8), (".b64", "%rd", 24), (".f32", "%f", 4)];
    let ptx =
        Module { comment: &[comment], arch, entry: &entry, params: &params, shared: &[], regs: &regs, body: &code }
            .text();
    let grid = threads.div_ceil(u64::from(BLOCK)).clamp(1, 65_535) as u32;
    let args = buffers.iter().map(|b| b.0).collect();
    PtxKernel { error_flag: true, ..PtxKernel::new(entry, (kernel, 0), ptx, (grid, BLOCK), args) }
}

pub(super) fn gather(
    program: &Program,
    (table, indices, out): (BufferId, BufferId, BufferId),
    kernel: usize,
    arch: Arch,
) -> Result<PtxKernel, PtxError> {
    let entry = format!("k{kernel}_0_gather");
    let (n, row) = shapes(program, &entry, table, indices)?;
    let total = program.buffer(out).ty.numel() as u64;
    let body = format!(
        "$L_element:\n\tsetp.ge.u64 %p0, %rd4, {total};\n\t@%p0 bra $L_done;\n\
         \tdiv.u64 %rd7, %rd4, {row};\n\trem.u64 %rd8, %rd4, {row};\n\
         \tmad.lo.u64 %rd9, %rd7, 4, %rd1;\n\tld.global.s32 %r4, [%rd9];\n\
         \tsetp.lt.s32 %p1, %r4, 0;\n\tsetp.ge.or.s32 %p1, %r4, {n}, %p1;\n\
         \tmov.f32 %f0, 0f00000000;\n\
         \t@%p1 st.global.u32 [%rd3], 1;\n\
         \t@!%p1 cvt.s64.s32 %rd10, %r4;\n\t@!%p1 mad.lo.s64 %rd11, %rd10, {row}, %rd8;\n\
         \t@!%p1 mad.lo.s64 %rd12, %rd11, 4, %rd0;\n\t@!%p1 ld.global.f32 %f0, [%rd12];\n\
         \tmad.lo.u64 %rd13, %rd4, 4, %rd2;\n\tst.global.f32 [%rd13], %f0;\n\
         \tadd.u64 %rd4, %rd4, %rd6;\n\tbra.uni $L_element;\n\
         $L_done:\n\tret;\n"
    );
    let comment = format!("kernel k{kernel}: gather of rows of {row} from a table of {n} rows, {total} elements");
    Ok(function(entry, kernel, arch, comment, [table, indices, out], &body, total))
}

pub(super) fn scatter_add(
    program: &Program,
    (indices, src, out): (BufferId, BufferId, BufferId),
    kernel: usize,
    arch: Arch,
) -> Result<PtxKernel, PtxError> {
    let entry = format!("k{kernel}_0_scatter_add");
    let (n, row) = shapes(program, &entry, out, indices)?;
    let count = program.buffer(indices).ty.numel() as u64;
    let body = format!(
        "$L_column:\n\tsetp.ge.u64 %p0, %rd4, {row};\n\t@%p0 bra $L_done;\n\
         \tmov.u64 %rd7, 0;\n\
         $L_zero:\n\tsetp.ge.u64 %p0, %rd7, {n};\n\t@%p0 bra $L_add_start;\n\
         \tmad.lo.u64 %rd8, %rd7, {row}, %rd4;\n\tmad.lo.u64 %rd9, %rd8, 4, %rd2;\n\
         \tst.global.f32 [%rd9], 0f00000000;\n\tadd.u64 %rd7, %rd7, 1;\n\tbra.uni $L_zero;\n\
         $L_add_start:\n\tmov.u64 %rd7, 0;\n\
         $L_add:\n\tsetp.ge.u64 %p0, %rd7, {count};\n\t@%p0 bra $L_next;\n\
         \tmad.lo.u64 %rd10, %rd7, 4, %rd0;\n\tld.global.s32 %r4, [%rd10];\n\
         \tsetp.lt.s32 %p1, %r4, 0;\n\tsetp.ge.or.s32 %p1, %r4, {n}, %p1;\n\
         \t@%p1 st.global.u32 [%rd3], 1;\n\t@%p1 bra $L_skip;\n\
         \tmad.lo.u64 %rd11, %rd7, {row}, %rd4;\n\tmad.lo.u64 %rd12, %rd11, 4, %rd1;\n\tld.global.f32 %f0, [%rd12];\n\
         \tcvt.s64.s32 %rd13, %r4;\n\tmad.lo.s64 %rd14, %rd13, {row}, %rd4;\n\tmad.lo.s64 %rd15, %rd14, 4, %rd2;\n\
         \tld.global.f32 %f1, [%rd15];\n\tadd.rn.f32 %f1, %f1, %f0;\n\tst.global.f32 [%rd15], %f1;\n\
         $L_skip:\n\tadd.u64 %rd7, %rd7, 1;\n\tbra.uni $L_add;\n\
         $L_next:\n\tadd.u64 %rd4, %rd4, %rd6;\n\tbra.uni $L_column;\n\
         $L_done:\n\tret;\n"
    );
    let comment = format!(
        "kernel k{kernel}: scatter-add of {count} rows of {row} into {n} rows; one thread per column, rows in index order"
    );
    Ok(function(entry, kernel, arch, comment, [indices, src, out], &body, row as u64))
}
