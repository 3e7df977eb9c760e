//! matrixmultiply against the `gemm` and `faer` crates on the training step's projection products
//! at the default model's shapes (d = 256, SwiGLU 688), f32, row-major, on every core:
//! C[n×k_out] = A[n×k_in]·W[k_in×k_out] for the forward, and A·Wᵀ for the gradient of the input
//! (W read transposed, as `ops::linear` does). Prints the best of 5 timed runs after a warm-up per
//! (crate, shape), interleaved, with GFLOP/s and the ratio to matrixmultiply. longlora used
//! matrixmultiply, then faer; its own `ops::gemm` is timed by `cargo bench --bench gemm_probe`.

use std::time::Instant;

#[derive(Clone, Copy)]
struct Shape {
    name: &'static str,
    rows: usize,
    inner: usize,
    cols: usize,
    /// B is stored as its transpose (cols × inner), read with swapped strides.
    transposed_b: bool,
}

fn shapes(tokens: usize) -> Vec<Shape> {
    let s = |name, inner, cols, transposed_b| Shape {
        name,
        rows: tokens,
        inner,
        cols,
        transposed_b,
    };
    vec![
        s("q/k/v/o forward  N×256·256×256", 256, 256, false),
        s("gate/up forward  N×256·256×688", 256, 688, false),
        s("down forward     N×688·688×256", 688, 256, false),
        s("down input grad  N×256·(688×256)ᵀ", 256, 688, true),
        s("gate/up input grad N×688·(256×688)ᵀ", 688, 256, true),
    ]
}

/// B's (row stride, column stride) in elements.
fn b_strides(s: &Shape) -> (isize, isize) {
    if s.transposed_b {
        (1, s.inner as isize)
    } else {
        (s.cols as isize, 1)
    }
}

fn run_matrixmultiply(s: &Shape, a: &[f32], b: &[f32], c: &mut [f32]) {
    let (rsb, csb) = b_strides(s);
    // SAFETY: the slices hold rows × inner, inner × cols and rows × cols elements at these strides.
    unsafe {
        matrixmultiply::sgemm(
            s.rows,
            s.inner,
            s.cols,
            1.0,
            a.as_ptr(),
            s.inner as isize,
            1,
            b.as_ptr(),
            rsb,
            csb,
            0.0,
            c.as_mut_ptr(),
            s.cols as isize,
            1,
        );
    }
}

fn run_gemm(s: &Shape, a: &[f32], b: &[f32], c: &mut [f32], threads: usize) {
    let (rsb, csb) = b_strides(s);
    // SAFETY: as above; `read_dst: false` ignores C's old contents.
    unsafe {
        gemm::gemm(
            s.rows,
            s.cols,
            s.inner,
            c.as_mut_ptr(),
            1,
            s.cols as isize,
            false,
            a.as_ptr(),
            1,
            s.inner as isize,
            b.as_ptr(),
            csb,
            rsb,
            0.0,
            1.0,
            false,
            false,
            false,
            gemm::Parallelism::Rayon(threads),
        );
    }
}

fn run_faer(s: &Shape, a: &[f32], b: &[f32], c: &mut [f32], threads: usize) {
    let a = faer::MatRef::from_row_major_slice(a, s.rows, s.inner);
    let b = if s.transposed_b {
        faer::MatRef::from_row_major_slice(b, s.cols, s.inner).transpose()
    } else {
        faer::MatRef::from_row_major_slice(b, s.inner, s.cols)
    };
    let c = faer::MatMut::from_row_major_slice_mut(c, s.rows, s.cols);
    faer::linalg::matmul::matmul(
        c,
        faer::Accum::Replace,
        a,
        b,
        1.0,
        faer::Par::rayon(threads),
    );
}

fn max_error(want: &[f32], got: &[f32]) -> f32 {
    want.iter()
        .zip(got)
        .map(|(w, g)| (w - g).abs() / (1.0 + w.abs()))
        .fold(0.0, f32::max)
}

fn main() {
    let tokens: usize = std::env::args()
        .nth(1)
        .map(|t| t.parse().expect("the first argument is the token count N"))
        .unwrap_or(4096);
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    println!("N = {tokens}, {threads} threads, best of 5 after a warm-up, f32");
    println!("| product | matrixmultiply | gemm | faer | gemm / mm speed | faer / mm speed |");
    println!("| --- | --- | --- | --- | --- | --- |");
    let mut seed = 1u32;
    let mut random = |n: usize| -> Vec<f32> {
        (0..n)
            .map(|_| {
                seed = seed.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
                (seed >> 8) as f32 / (1u32 << 24) as f32 - 0.5
            })
            .collect()
    };
    for s in shapes(tokens) {
        let a = random(s.rows * s.inner);
        let b = random(s.inner * s.cols);
        let mut outputs = [
            vec![f32::NAN; s.rows * s.cols],
            vec![f32::NAN; s.rows * s.cols],
            vec![f32::NAN; s.rows * s.cols],
        ];
        let mut best = [f64::INFINITY; 3];
        for round in 0..6 {
            for (which, c) in outputs.iter_mut().enumerate() {
                let start = Instant::now();
                match which {
                    0 => run_matrixmultiply(&s, &a, &b, c),
                    1 => run_gemm(&s, &a, &b, c, threads),
                    _ => run_faer(&s, &a, &b, c, threads),
                }
                if round > 0 {
                    best[which] = best[which].min(start.elapsed().as_secs_f64());
                }
            }
        }
        for (name, c) in ["gemm", "faer"].iter().zip(&outputs[1..]) {
            let err = max_error(&outputs[0], c);
            assert!(
                err < 1e-4,
                "{name} disagrees with matrixmultiply on {}: {err}",
                s.name
            );
        }
        let gflops = |t: f64| 2.0 * (s.rows * s.inner * s.cols) as f64 / t / 1e9;
        println!(
            "| {} | {:.2} ms ({:.0} GFLOP/s) | {:.2} ms ({:.0}) | {:.2} ms ({:.0}) | {:.2}x | {:.2}x |",
            s.name,
            best[0] * 1e3,
            gflops(best[0]),
            best[1] * 1e3,
            gflops(best[1]),
            best[2] * 1e3,
            gflops(best[2]),
            best[0] / best[1],
            best[0] / best[2],
        );
    }
}
