//! Errors name the kernel and never panic; CLIF text is deterministic;
//! `compile_all` skips non-loop kernels.

use lpac_ir::kernel::{Expr, ExprId, GemmKernel, IndexMap, Kernel, Operand};
use lpac_ir::{BinaryOp, DType, ReduceOp, UnaryOp};

use super::*;
use crate::codegen::CodegenErrorKind;

fn compile_err(kb: &Kb) -> crate::codegen::CodegenError {
    let mut cg = codegen(true);
    match cg.compile(&kb.program, &kb.kernel) {
        Ok(_) => panic!("expected an error"),
        Err(e) => {
            assert_eq!(e.kernel, kb.kernel.name);
            assert!(e.to_string().contains(&format!("kernel `{}`", kb.kernel.name)), "{e}");
            e
        }
    }
}

fn simple() -> Kb {
    let mut kb = Kb::new(&[4, 5], &[]);
    kb.kernel.name = "fused_thing".into();
    kb
}

#[test]
fn narrow_floats_are_unsupported() {
    for d in [DType::BF16, DType::F16] {
        let mut kb = simple();
        let x = kb.buffer(d, &[4, 5]);
        let e = kb.load(x, 0, &[5, 1]);
        kb.output(e);
        let err = compile_err(&kb);
        assert_eq!(err.kind, CodegenErrorKind::Unsupported, "{err}");
        assert!(err.message.contains(d.name()), "{err}");
    }
}

#[test]
fn out_of_bounds_loads_are_rejected() {
    let mut kb = simple();
    let x = kb.buffer(DType::F32, &[4, 5]);
    let e = kb.load(x, 1, &[5, 1]);
    kb.output(e);
    let err = compile_err(&kb);
    assert_eq!(err.kind, CodegenErrorKind::Invalid);
    assert!(err.message.contains("b0"), "{err}");
}

#[test]
fn malformed_kernels_are_rejected() {
    type Case = (&'static str, Box<dyn Fn(&mut Kb)>);
    let cases: Vec<Case> = vec![
        (
            "exp of i32",
            Box::new(|kb| {
                let x = kb.buffer(DType::I32, &[4, 5]);
                let e = kb.load(x, 0, &[5, 1]);
                let y = kb.push(Expr::Unary(UnaryOp::Exp, e), DType::I32);
                kb.output(y);
            }),
        ),
        (
            "forward reference",
            Box::new(|kb| {
                let y = kb.push(Expr::Unary(UnaryOp::Neg, ExprId(3)), DType::F32);
                kb.output(y);
            }),
        ),
        (
            "acc without a reduction",
            Box::new(|kb| {
                let y = kb.push(Expr::Accumulated, DType::F32);
                kb.output(y);
            }),
        ),
        (
            "wrong number of strides",
            Box::new(|kb| {
                let x = kb.buffer(DType::F32, &[4, 5]);
                let y = kb.push(Expr::Load { buffer: x, index: IndexMap { offset: 0, strides: vec![1] } }, DType::F32);
                kb.output(y);
            }),
        ),
        (
            "output dtype differs from its buffer",
            Box::new(|kb| {
                let c = kb.konst(1.0, DType::F32);
                let b = kb.buffer(DType::I32, &[4, 5]);
                kb.kernel.outputs.push((b, c));
            }),
        ),
        (
            "output buffer of the wrong size",
            Box::new(|kb| {
                let c = kb.konst(1.0, DType::F32);
                let b = kb.buffer(DType::F32, &[4, 4]);
                kb.kernel.outputs.push((b, c));
            }),
        ),
        (
            "mixed operand dtypes",
            Box::new(|kb| {
                let a = kb.konst(1.0, DType::F32);
                let b = kb.konst(1.0, DType::I32);
                let y = kb.push(Expr::Binary(BinaryOp::Add, a, b), DType::F32);
                kb.output(y);
            }),
        ),
        (
            "missing buffer",
            Box::new(|kb| {
                let y =
                    kb.push(Expr::Load { buffer: lpac_ir::kernel::BufferId(9), index: kb.map(0, &[0, 0]) }, DType::F32);
                kb.output(y);
            }),
        ),
        (
            "random i32",
            Box::new(|kb| {
                let y = kb.push(Expr::Random { key: 0, counter: kb.map(0, &[0, 0]) }, DType::I32);
                kb.output(y);
            }),
        ),
    ];
    for (what, build) in cases {
        let mut kb = simple();
        build(&mut kb);
        let err = compile_err(&kb);
        assert_eq!(err.kind, CodegenErrorKind::Invalid, "{what}: {err}");
    }
}

#[test]
fn reduction_misuse_is_rejected() {
    // An output that depends on a reduce variable.
    let mut kb = Kb::new(&[4], &[3]);
    let x = kb.buffer(DType::F32, &[12]);
    let e = kb.load(x, 0, &[3, 1]);
    kb.reduce(ReduceOp::Sum, e);
    kb.output(e);
    assert_eq!(compile_err(&kb).kind, CodegenErrorKind::Invalid);
    // A bool reduction.
    let mut kb = Kb::new(&[4], &[3]);
    let c = kb.konst(1.0, DType::Bool);
    let acc = kb.reduce(ReduceOp::Sum, c);
    kb.output(acc);
    assert_eq!(compile_err(&kb).kind, CodegenErrorKind::Unsupported);
}

fn sample_kernel() -> Kb {
    let mut kb = Kb::new(&[8, 12], &[]);
    let x = kb.buffer(DType::F32, &[8, 12]);
    let xe = kb.load(x, 0, &[12, 1]);
    let t = kb.un(UnaryOp::Tanh, xe);
    let counter = kb.domain_map();
    let r = kb.push(Expr::Random { key: 2, counter }, DType::F32);
    let y = kb.bin(BinaryOp::Mul, t, r);
    kb.output(y);
    kb
}

#[test]
fn clif_text_is_deterministic() {
    let kb = sample_kernel();
    let mut a = codegen(true);
    let first = a.compile(&kb.program, &kb.kernel).unwrap().clif;
    let second = a.compile(&kb.program, &kb.kernel).unwrap().clif;
    let third = codegen(true).compile(&kb.program, &kb.kernel).unwrap().clif;
    assert_eq!(first, second);
    assert_eq!(first, third);
    assert!(first.contains("f32x4"), "{first}");
    assert!(first.starts_with("function %k("), "{first}");
}

#[test]
fn compile_all_skips_library_kernels() {
    let kb = sample_kernel();
    let mut program = kb.program.clone();
    let c = program
        .add_buffer(lpac_ir::TensorType { dtype: DType::F32, shape: vec![8, 8] }, lpac_ir::kernel::BufferKind::Temp);
    let operand = |row_stride, col_stride| Operand {
        buffer: lpac_ir::kernel::BufferId(0),
        offset: 0,
        batch_strides: vec![],
        row_stride,
        col_stride,
    };
    program.kernels.push(Kernel::Gemm(GemmKernel {
        name: "mm".into(),
        batch: vec![],
        m: 8,
        k: 12,
        n: 8,
        a: operand(12, 1),
        b: operand(1, 12),
        c,
        nodes: vec![],
    }));
    program.kernels.push(Kernel::Loop(kb.kernel.clone()));
    let compiled = codegen(true).compile_all(&program).unwrap();
    assert!(compiled[0].is_empty());
    assert_eq!(compiled[1].len(), 1);
    assert_eq!(compiled[1][0].name, "k");
}

#[test]
fn compiled_kernels_can_cross_threads() {
    fn send_sync<T: Send + Sync>() {}
    send_sync::<crate::codegen::CompiledKernel>();
    fn send<T: Send>() {}
    send::<crate::codegen::CpuCodegen>();
}

#[test]
fn ranges_past_the_domain_are_cut() {
    let kb = sample_kernel();
    let c = codegen(true).compile(&kb.program, &kb.kernel).unwrap();
    let mut bufs = random_buffers(&kb.program, &mut Rng::new(5));
    let before = bufs.clone();
    run_kernel(&c, &mut bufs, 200, 100, 0, 0); // empty
    run_kernel(&c, &mut bufs, 96, 1000, 0, 0); // starts at the end
    assert_same(&bufs, &before, "empty ranges");
    let mut full = before.clone();
    run_kernel(&c, &mut full, 0, 96, 0, 0);
    run_kernel(&c, &mut bufs, 0, u64::MAX as usize, 0, 0);
    assert_same(&bufs, &full, "a range past the end");
}
