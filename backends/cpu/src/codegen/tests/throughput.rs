//! A measurement, not a test (ignored; speed is never asserted): a fused
//! `y = exp(x) * w + b` over 4M floats, compiled vectorised and scalar,
//! against a plain Rust loop. Run with
//! `cargo test --release -p lpac-cpu throughput -- --ignored --nocapture`.

use std::time::Instant;

use lpac_ir::{BinaryOp, DType, UnaryOp};

use super::*;

fn best_of<F: FnMut()>(runs: usize, mut f: F) -> f64 {
    (0..runs)
        .map(|_| {
            let t = Instant::now();
            f();
            t.elapsed().as_secs_f64()
        })
        .fold(f64::INFINITY, f64::min)
}

#[test]
#[ignore]
fn throughput_exp_mul_add() {
    let (rows, cols) = (1024, 4096);
    let n = rows * cols;
    let mut kb = Kb::new(&[rows, cols], &[]);
    let x = kb.buffer(DType::F32, &[rows, cols]);
    let w = kb.buffer(DType::F32, &[cols]);
    let b = kb.buffer(DType::F32, &[cols]);
    let xe = kb.load(x, 0, &[cols as i64, 1]);
    let we = kb.load(w, 0, &[0, 1]);
    let be = kb.load(b, 0, &[0, 1]);
    let e = kb.un(UnaryOp::Exp, xe);
    let m = kb.bin(BinaryOp::Mul, e, we);
    let y = kb.bin(BinaryOp::Add, m, be);
    kb.output(y);

    let mut rng = Rng::new(1);
    let xs: Vec<f32> = (0..n).map(|_| rng.range(-5.0, 5.0) as f32).collect();
    let ws: Vec<f32> = (0..cols).map(|_| rng.range(-1.0, 1.0) as f32).collect();
    let bs: Vec<f32> = (0..cols).map(|_| rng.range(-1.0, 1.0) as f32).collect();
    let gb = (n * 8) as f64 / 1e9; // bytes read of x and written of y
    let report = |what: &str, s: f64| {
        println!("{what:<28} {:>8.2} ms  {:>7.0} Melem/s  {:>6.2} GB/s", s * 1e3, n as f64 / s / 1e6, gb / s);
    };

    for vectorize in [true, false] {
        let mut cg = codegen(vectorize);
        let c = cg.compile(&kb.program, &kb.kernel).unwrap();
        let mut bufs = vec![Host::F(xs.clone()), Host::F(ws.clone()), Host::F(bs.clone()), Host::F(vec![0.0; n])];
        let s = best_of(10, || run_kernel(&c, &mut bufs, 0, n, 0, 0));
        report(&format!("cranelift {:?}", c.vectorization), s);
    }

    let mut out = vec![0.0f32; n];
    let s = best_of(10, || {
        for r in 0..rows {
            let (xr, yr) = (&xs[r * cols..(r + 1) * cols], &mut out[r * cols..(r + 1) * cols]);
            for j in 0..cols {
                yr[j] = xr[j].exp() * ws[j] + bs[j];
            }
        }
        std::hint::black_box(&out);
    });
    report("rust loop (std exp)", s);
    let s = best_of(10, || {
        for r in 0..rows {
            let (xr, yr) = (&xs[r * cols..(r + 1) * cols], &mut out[r * cols..(r + 1) * cols]);
            for j in 0..cols {
                yr[j] = xr[j] * ws[j] + bs[j];
            }
        }
        std::hint::black_box(&out);
    });
    report("rust loop (no exp: memory)", s);
}
