//! The race detector on hand-written kernels: each race it must find, next
//! to the same kernel made correct (which must run and give its answer).

use super::{Function, Memory, launch};

fn module(name: &str, params: &[&str], shared: usize, body: &str) -> Function {
    let params: Vec<String> = params.iter().map(|p| format!(".param .u64 {p}")).collect();
    let ptx = format!(
        ".version 8.0\n.target sm_90\n.address_size 64\n.visible .entry {name}(\n{}\n)\n{{\n.reg .b32 %r<16>;\n\
         .reg .b64 %rd<16>;\n.reg .pred %p<4>;\n.shared .align 4 .b8 s[{shared}];\n{body}\n}}\n",
        params.join(",\n")
    );
    Function::parse(&ptx).unwrap()
}

/// Thread `t` clears shared word `t` (a barrier after), stores `t` there,
/// then (after `sync`) reads word `t + 1 mod n` into `out[t]`.
fn neighbours(sync: &str, n: u32) -> Function {
    let body = format!(
        "ld.param.u64 %rd1, [out];\nmov.u32 %r1, %tid.x;\nmul.wide.u32 %rd2, %r1, 4;\nmov.u64 %rd3, s;\n\
         add.u64 %rd4, %rd3, %rd2;\nst.shared.u32 [%rd4], 0;\nbar.sync 0;\nst.shared.u32 [%rd4], %r1;\n{sync}\n\
         add.u32 %r2, %r1, 1;\nrem.u32 %r2, %r2, {n};\n\
         mul.wide.u32 %rd5, %r2, 4;\nadd.u64 %rd5, %rd3, %rd5;\nld.shared.u32 %r3, [%rd5];\nadd.u64 %rd6, %rd1, %rd2;\n\
         st.global.u32 [%rd6], %r3;\nret;"
    );
    module("neighbours", &["out"], 4 * n as usize, &body)
}

fn words(bytes: &[u8]) -> Vec<u32> {
    bytes.chunks_exact(4).map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect()
}

fn run(f: &Function, grid: u32, block: u32, buffers: Vec<Vec<u8>>) -> Result<Vec<Vec<u8>>, String> {
    let mut mem = Memory::new(buffers);
    let args: Vec<u64> = (0..mem.buffers.len()).map(Memory::address).collect();
    launch(f, grid, block, &args, &mut mem)?;
    Ok(mem.buffers)
}

#[test]
fn shared_memory_read_by_another_thread_needs_a_barrier() {
    let err = run(&neighbours("", 64), 1, 64, vec![vec![0; 256]]).unwrap_err();
    assert!(err.contains("a data race on shared byte") && err.contains("ld.shared.u32"), "{err}");
    assert!(err.contains("st.shared.u32 [%rd4], %r1;"), "{err}");
    // A warp barrier orders lanes of one warp, not the two warps here.
    let err = run(&neighbours("bar.warp.sync -1;", 64), 1, 64, vec![vec![0; 256]]).unwrap_err();
    assert!(err.contains("a data race on shared byte"), "{err}");

    let out = run(&neighbours("bar.sync 0;", 64), 1, 64, vec![vec![0; 256]]).unwrap();
    assert_eq!(words(&out[0]), (0..64).map(|t| (t + 1) % 64).collect::<Vec<u32>>());
    let out = run(&neighbours("bar.warp.sync -1;", 32), 1, 32, vec![vec![0; 128]]).unwrap();
    assert_eq!(words(&out[0]), (0..32).map(|t| (t + 1) % 32).collect::<Vec<u32>>());
}

#[test]
fn two_blocks_writing_one_word_race() {
    let f = module(
        "same_word",
        &["out"],
        4,
        "ld.param.u64 %rd1, [out];\nmov.u32 %r1, %ctaid.x;\nst.global.u32 [%rd1], %r1;\nret;",
    );
    let err = run(&f, 2, 1, vec![vec![0; 4]]).unwrap_err();
    assert!(err.contains("byte 0 of buffer 0: thread 0 of block 1 writes it"), "{err}");
    assert!(run(&f, 1, 1, vec![vec![0; 4]]).is_ok());
}

/// Every block writes a partial sum and counts itself in; the last sums
/// the partials (the block-level reductions' protocol), with `fence`
/// between the write and the count.
fn last_block_sums(fence: &str) -> Function {
    let body = format!(
        "ld.param.u64 %rd1, [partials];\nld.param.u64 %rd2, [counter];\nld.param.u64 %rd3, [out];\n\
         mov.u32 %r1, %ctaid.x;\nmul.wide.u32 %rd4, %r1, 4;\nadd.u64 %rd5, %rd1, %rd4;\nadd.u32 %r2, %r1, 10;\n\
         st.global.u32 [%rd5], %r2;\n{fence}\natom.global.add.u32 %r3, [%rd2], 1;\nsetp.ne.u32 %p1, %r3, 3;\n\
         @%p1 bra $L_end;\nld.global.u32 %r4, [%rd1];\nld.global.u32 %r5, [%rd1+4];\nadd.u32 %r4, %r4, %r5;\n\
         ld.global.u32 %r5, [%rd1+8];\nadd.u32 %r4, %r4, %r5;\nld.global.u32 %r5, [%rd1+12];\nadd.u32 %r4, %r4, %r5;\n\
         st.global.u32 [%rd3], %r4;\n$L_end:\nret;"
    );
    module("last_block_sums", &["partials", "counter", "out"], 4, &body)
}

#[test]
fn across_blocks_a_fence_and_an_atomic_order_writes_before_reads() {
    let buffers = || vec![vec![0; 16], vec![0; 4], vec![0; 4]];
    let out = run(&last_block_sums("membar.gl;"), 4, 1, buffers()).unwrap();
    assert_eq!(words(&out[2]), [10 + 11 + 12 + 13]);
    assert_eq!(words(&out[1]), [4], "every block counted");

    let err = run(&last_block_sums(""), 4, 1, buffers()).unwrap_err();
    assert!(
        err.contains("byte 0 of buffer 0: thread 0 of block 3 reads it") && err.contains("block 0 writes it"),
        "{err}"
    );
}

/// Threads below `writers` store their id in shared word `id`; after a
/// barrier, thread `t` reads word `(t + 1) mod 32` into `out[t]`.
fn some_write(writers: u32) -> Function {
    let body = format!(
        "ld.param.u64 %rd1, [out];\nmov.u32 %r1, %tid.x;\nmul.wide.u32 %rd2, %r1, 4;\nmov.u64 %rd3, s;\n\
         add.u64 %rd4, %rd3, %rd2;\nsetp.lt.u32 %p1, %r1, {writers};\n@%p1 st.shared.u32 [%rd4], %r1;\nbar.sync 0;\n\
         add.u32 %r2, %r1, 1;\nand.b32 %r2, %r2, 31;\nmul.wide.u32 %rd5, %r2, 4;\nadd.u64 %rd5, %rd3, %rd5;\n\
         ld.shared.u32 %r3, [%rd5];\nadd.u64 %rd6, %rd1, %rd2;\nst.global.u32 [%rd6], %r3;\nret;"
    );
    module("some_write", &["out"], 128, &body)
}

#[test]
fn reading_shared_memory_no_thread_wrote_is_an_error() {
    let err = run(&some_write(16), 1, 32, vec![vec![0; 128]]).unwrap_err();
    assert!(err.contains("reads shared byte") && err.contains("before any thread of the block wrote it"), "{err}");
    let out = run(&some_write(32), 1, 32, vec![vec![0; 128]]).unwrap();
    assert_eq!(words(&out[0]), (0..32).map(|t| (t + 1) % 32).collect::<Vec<u32>>());
}

#[test]
fn what_a_gpu_leaves_undefined_or_faults_on_is_an_error() {
    // A full-warp barrier in a block of 48 threads: the second warp has 16.
    let err = run(&neighbours("bar.warp.sync -1;", 48), 1, 48, vec![vec![0; 192]]).unwrap_err();
    assert!(err.contains("`bar.warp.sync -1;` names all 32 lanes, but 16 of the warp are live"), "{err}");
    // Threads from 32 on leave before the barrier the others wait at.
    let early_exit = neighbours("setp.ge.u32 %p1, %r1, 32;\n@%p1 ret;\nbar.sync 0;", 64);
    let err = run(&early_exit, 1, 64, vec![vec![0; 256]]).unwrap_err();
    assert!(err.contains("32 threads wait at `bar.sync 0;`, but thread 32 has exited"), "{err}");
    // A 4-byte store two bytes into a buffer.
    let f = module("misaligned", &["out"], 4, "ld.param.u64 %rd1, [out];\nst.global.u32 [%rd1+2], 7;\nret;");
    let err = run(&f, 1, 1, vec![vec![0; 8]]).unwrap_err();
    assert!(err.contains("not 4-byte aligned"), "{err}");
}

#[test]
fn loading_global_memory_nothing_wrote_is_an_error() {
    // out[t] = in[t]: from a temp nothing has computed yet, and once written.
    let f = module(
        "copy",
        &["input", "out"],
        4,
        "ld.param.u64 %rd1, [input];\nld.param.u64 %rd2, [out];\nmov.u32 %r1, %tid.x;\nmul.wide.u32 %rd3, %r1, 4;\n\
         add.u64 %rd4, %rd1, %rd3;\nld.global.u32 %r2, [%rd4];\nadd.u64 %rd5, %rd2, %rd3;\nst.global.u32 [%rd5], %r2;\nret;",
    );
    let mut mem = Memory::new(vec![vec![7; 16], vec![0; 16]]);
    mem.unwritten(0);
    let args = [Memory::address(0), Memory::address(1)];
    let err = launch(&f, 1, 4, &args, &mut mem).unwrap_err();
    assert!(err.contains("loads byte 0 of buffer b0, which nothing has written yet"), "{err}");
    mem.wrote(0);
    launch(&f, 1, 4, &args, &mut mem).unwrap();
    assert_eq!(words(&mem.buffers[1]), [0x0707_0707; 4]);
}
