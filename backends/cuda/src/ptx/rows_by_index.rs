//! Gather and scatter-add as PTX.
//!
//! - **gather** `out[i, c] = table[idx[i], c]`: one thread per output
//!   element (grid-stride). An index outside `0..n` writes 0 and sets the
//!   error cell (`err`, a `u32` the runtime clears before and checks after
//!   the step), so a bad token id is reported, never read out of bounds.
//!   Many threads may set it at once: `red.global.or`, an atomic, so that
//!   is not a data race.
//! - **scatter-add** `out = 0; out[idx[j], c] += src[j, c]`: a block per
//!   output row `r` (grid-stride over rows). The block zeroes its row, then
//!   reads the indices [`BLOCK`] at a time; each warp's matches (`idx[j] ==
//!   r`) become a ballot mask in shared memory, and the block walks the
//!   masks in order, every thread adding `src[j, c]` into the columns it
//!   owns. So each output element gets the same additions in the same order
//!   (increasing `j`) as on the CPU backend and in the interpreter, with no
//!   atomics: the result does not depend on scheduling. An embedding's
//!   gradient (32,001 rows from 4,096 tokens) is then 32,001 blocks that
//!   each scan 16 KB of indices from cache, instead of one thread per
//!   column adding 4,096 rows one after another. The masks alternate
//!   between two shared arrays, so one barrier per chunk suffices: a thread
//!   cannot write a chunk's masks before every thread has passed the
//!   previous chunk's barrier, after it read the masks before those. Bad
//!   indices are skipped and reported as for gather.

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
    comment: &[String],
    buffers: [BufferId; 3],
    body: &str,
    (shared, grid): (&[String], u32),
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
    let regs = [(".pred", "%p", 4), (".b32", "%r", 16), (".b64", "%rd", 24), (".f32", "%f", 4)];
    let ptx =
        Module { comment, arch, entry: &entry, params: &params, shared, regs: &regs, body: &code, max_registers: None }
            .text();
    let args = buffers.iter().map(|b| b.0).collect();
    PtxKernel { error_flag: true, ..PtxKernel::new(entry, (kernel, 0), ptx, (grid, BLOCK), args) }
}

pub(super) fn gather(
    program: &Program,
    (table, indices, out): (BufferId, BufferId, BufferId),
    (kernel, nodes): (usize, &str),
    arch: Arch,
) -> Result<PtxKernel, PtxError> {
    let entry = format!("k{kernel}_0_gather");
    let (n, row) = shapes(program, &entry, table, indices)?;
    let total = program.buffer(out).ty.numel() as u64;
    // The element's row and column: 32-bit divisions where the elements'
    // indices fit (a 64-bit division by a constant is ~60 instructions).
    let split = if total <= u64::from(u32::MAX) {
        format!(
            "\tcvt.u32.u64 %r5, %rd4;\n\tdiv.u32 %r6, %r5, {row};\n\trem.u32 %r7, %r5, {row};\n\
             \tcvt.u64.u32 %rd7, %r6;\n\tcvt.u64.u32 %rd8, %r7;\n"
        )
    } else {
        format!("\tdiv.u64 %rd7, %rd4, {row};\n\trem.u64 %rd8, %rd4, {row};\n")
    };
    let body = format!(
        "$L_element:\n\tsetp.ge.u64 %p0, %rd4, {total};\n\t@%p0 bra $L_done;\n{split}\
         \tmad.lo.u64 %rd9, %rd7, 4, %rd1;\n\tld.global.s32 %r4, [%rd9];\n\
         \tsetp.lt.s32 %p1, %r4, 0;\n\tsetp.ge.or.s32 %p1, %r4, {n}, %p1;\n\
         \tmov.f32 %f0, 0f00000000;\n\
         \t@%p1 red.global.or.b32 [%rd3], 1;\n\
         \t@!%p1 cvt.s64.s32 %rd10, %r4;\n\t@!%p1 mad.lo.s64 %rd11, %rd10, {row}, %rd8;\n\
         \t@!%p1 mad.lo.s64 %rd12, %rd11, 4, %rd0;\n\t@!%p1 ld.global.f32 %f0, [%rd12];\n\
         \tmad.lo.u64 %rd13, %rd4, 4, %rd2;\n\tst.global.f32 [%rd13], %f0;\n\
         \tadd.u64 %rd4, %rd4, %rd6;\n\tbra.uni $L_element;\n\
         $L_done:\n\tret;\n"
    );
    let grid = total.div_ceil(u64::from(BLOCK)).clamp(1, 65_535) as u32;
    let comment = [
        format!("kernel k{kernel}: gather of rows of {row} from a table of {n} rows, {total} elements"),
        format!("graph nodes: {nodes}"),
        format!("launch: grid {grid} x block {BLOCK}, a thread per element, grid-stride"),
    ];
    Ok(function(entry, kernel, arch, &comment, [table, indices, out], &body, (&[], grid)))
}

pub(super) fn scatter_add(
    program: &Program,
    (indices, src, out): (BufferId, BufferId, BufferId),
    (kernel, nodes): (usize, &str),
    arch: Arch,
) -> Result<PtxKernel, PtxError> {
    let entry = format!("k{kernel}_0_scatter_add");
    let (n, row) = shapes(program, &entry, out, indices)?;
    let count = program.buffer(indices).ty.numel() as u64;
    let warps = BLOCK / 32;
    let mut body = format!(
        "\tcvt.u64.u32 %rd7, %r0;\n\tcvt.u64.u32 %rd8, %r3;\n\tcvt.u64.u32 %rd9, %r2;\n\
         \tand.b32 %r4, %r2, 31;\n\tsetp.eq.u32 %p3, %r4, 0;\n\tshr.u32 %r5, %r2, 5;\n\
         \tmul.wide.u32 %rd20, %r5, 4;\n\tmov.u64 %rd21, Masks;\n\tadd.u64 %rd20, %rd20, %rd21;\n\
         \tmov.u32 %r14, 0;\n\
         $L_row:\n\tsetp.ge.u64 %p0, %rd7, {n};\n\t@%p0 bra $L_done;\n\
         \tmad.lo.u64 %rd10, %rd7, {row_bytes}, %rd2;\n\tcvt.u32.u64 %r7, %rd7;\n\tmov.u64 %rd11, %rd9;\n\
         $L_zero:\n\tsetp.ge.u64 %p0, %rd11, {row};\n\t@%p0 bra $L_zeroed;\n\
         \tmad.lo.u64 %rd12, %rd11, 4, %rd10;\n\tst.global.f32 [%rd12], 0f00000000;\n\
         \tadd.u64 %rd11, %rd11, {BLOCK};\n\tbra.uni $L_zero;\n\
         $L_zeroed:\n\tmov.u64 %rd13, 0;\n\
         $L_chunk:\n\tsetp.ge.u64 %p0, %rd13, {count};\n\t@%p0 bra $L_next_row;\n\
         \tadd.u64 %rd14, %rd13, %rd9;\n\tsetp.lt.u64 %p1, %rd14, {count};\n\tmov.u32 %r6, -1;\n\
         \tmad.lo.u64 %rd15, %rd14, 4, %rd0;\n\t@%p1 ld.global.s32 %r6, [%rd15];\n\
         \tsetp.lt.s32 %p2, %r6, 0;\n\tsetp.ge.or.s32 %p2, %r6, {n}, %p2;\n\tand.pred %p2, %p2, %p1;\n\
         \t@%p2 red.global.or.b32 [%rd3], 1;\n\
         \tsetp.eq.s32 %p2, %r6, %r7;\n\tvote.sync.ballot.b32 %r8, %p2, -1;\n\
         \tmul.wide.u32 %rd22, %r14, {mask_bytes};\n\tadd.u64 %rd22, %rd22, %rd20;\n\
         \t@%p3 st.shared.u32 [%rd22], %r8;\n\tbar.sync 0;\n\
         \tmul.wide.u32 %rd23, %r14, {mask_bytes};\n\tadd.u64 %rd23, %rd23, %rd21;\n\
         \txor.b32 %r14, %r14, 1;\n\tmov.u32 %r9, 0;\n",
        row_bytes = row * 4,
        mask_bytes = warps * 4,
    );
    // Any match in the chunk? (the same answer in every thread: the branch
    // is uniform)
    for w in 0..warps {
        body.push_str(&format!("\tld.shared.u32 %r10, [%rd23+{}];\n\tor.b32 %r9, %r9, %r10;\n", w * 4));
    }
    body.push_str("\tsetp.eq.u32 %p0, %r9, 0;\n\t@%p0 bra $L_chunk_next;\n");
    // Each warp's matches in order: the lowest set bit first.
    for w in 0..warps {
        body.push_str(&format!(
            "\tld.shared.u32 %r11, [%rd23+{at}];\n\
             $L_bits{w}:\n\tsetp.eq.u32 %p0, %r11, 0;\n\t@%p0 bra $L_bits_done{w};\n\
             \tneg.s32 %r12, %r11;\n\tand.b32 %r12, %r12, %r11;\n\txor.b32 %r11, %r11, %r12;\n\
             \tsub.u32 %r13, %r12, 1;\n\tpopc.b32 %r13, %r13;\n\
             \tcvt.u64.u32 %rd16, %r13;\n\tadd.u64 %rd16, %rd16, %rd13;\n\tadd.u64 %rd16, %rd16, {first};\n\
             \tmad.lo.u64 %rd17, %rd16, {row_bytes}, %rd1;\n\tmov.u64 %rd11, %rd9;\n\
             $L_add{w}:\n\tsetp.ge.u64 %p0, %rd11, {row};\n\t@%p0 bra $L_bits{w};\n\
             \tmad.lo.u64 %rd12, %rd11, 4, %rd17;\n\tld.global.f32 %f0, [%rd12];\n\
             \tmad.lo.u64 %rd18, %rd11, 4, %rd10;\n\tld.global.f32 %f1, [%rd18];\n\
             \tadd.rn.f32 %f1, %f1, %f0;\n\tst.global.f32 [%rd18], %f1;\n\
             \tadd.u64 %rd11, %rd11, {BLOCK};\n\tbra.uni $L_add{w};\n\
             $L_bits_done{w}:\n",
            at = w * 4,
            first = w * 32,
            row_bytes = row * 4,
        ));
    }
    body.push_str(&format!(
        "$L_chunk_next:\n\tadd.u64 %rd13, %rd13, {BLOCK};\n\tbra.uni $L_chunk;\n\
         $L_next_row:\n\tadd.u64 %rd7, %rd7, %rd8;\n\tbra.uni $L_row;\n\
         $L_done:\n\tret;\n"
    ));
    let shared = [format!(".shared .align 4 .b32 Masks[{}]", 2 * warps)];
    let grid = (n as u64).clamp(1, 65_535) as u32;
    let comment = [
        format!("kernel k{kernel}: scatter-add of {count} rows of {row} into {n} rows"),
        format!("graph nodes: {nodes}"),
        format!(
            "launch: grid {grid} x block {BLOCK}, a block per output row (grid-stride), the indices scanned {BLOCK} at \
             a time (a ballot per warp), matches added in index order"
        ),
    ];
    Ok(function(entry, kernel, arch, &comment, [indices, src, out], &body, (&shared, grid)))
}
