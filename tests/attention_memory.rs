//! Peak heap use of the tiled attention, measured with a counting global allocator. It is its own
//! test binary because the allocator is process-wide: no other test may allocate meanwhile.

mod common;
#[path = "alloc/counting.rs"]
mod counting;

use std::sync::atomic::Ordering::SeqCst;

use common::random_vec;
use counting::{LIVE, PEAK};
use longlora::ops::attention::{attention_backward, attention_forward, AttnMask, AttnShape};
use longlora::rng::Rng;

/// Net peak bytes allocated by one forward + backward at `seq_len`, on a single thread so the
/// figure does not depend on how many tasks happen to run at once.
fn peak_bytes(seq_len: usize) -> usize {
    let s = AttnShape {
        batch: 1,
        seq_len,
        n_heads: 2,
        n_kv_heads: 2,
        head_dim: 64,
    };
    let (nq, nkv) = (seq_len * 2 * 64, seq_len * 2 * 64);
    let mut rng = Rng::new(seq_len as u64);
    let f32s = |n: usize, rng: &mut Rng| {
        random_vec(rng, n, 1.0)
            .into_iter()
            .map(|x| x as f32)
            .collect::<Vec<f32>>()
    };
    let (q, k, v, dout) = (
        f32s(nq, &mut rng),
        f32s(nkv, &mut rng),
        f32s(nkv, &mut rng),
        f32s(nq, &mut rng),
    );
    let (mut out, mut lse) = (vec![f32::NAN; nq], vec![f32::NAN; 2 * seq_len]);
    let (mut dq, mut dk, mut dv) = (vec![0.0; nq], vec![0.0; nkv], vec![0.0; nkv]);
    let mask = AttnMask::dense();
    let start = LIVE.load(SeqCst);
    PEAK.store(start, SeqCst);
    attention_forward(&mut out, &mut lse, &q, &k, &v, &s, &mask);
    attention_backward(
        &mut dq, &mut dk, &mut dv, &dout, &q, &k, &v, &out, &lse, &s, &mask,
    );
    let peak = PEAK.load(SeqCst) - start;
    assert!(
        out.iter().chain(&dq).all(|x| x.is_finite()),
        "attention at N={seq_len} produced non-finite values"
    );
    peak
}

#[test]
fn attention_peak_memory_grows_linearly_in_seq_len() {
    // The ops' pool reads its thread count once, at its first parallel region; this binary's
    // only test sets it before any.
    std::env::set_var("RAYON_NUM_THREADS", "1");
    assert_eq!(
        longlora::ops::pool::threads(),
        1,
        "the ops' pool started before this test"
    );
    // Warm up once so one-time initialisation (thread pools, thread-locals) is not counted. Each
    // worker thread keeps its tile buffers while the sequence length stays the same and replaces
    // them when it changes, so alternating lengths counts them in every measurement.
    peak_bytes(2048);
    let (short, long) = (peak_bytes(512), peak_bytes(2048));
    let again = peak_bytes(2048);
    assert_eq!(
        again, 0,
        "a second forward + backward at the same length allocated {again} bytes"
    );
    let ratio = long as f64 / short as f64;
    println!("peak heap above start: N=512 {short} bytes, N=2048 {long} bytes ({ratio:.2}x)");
    assert!(
        ratio <= 4.5,
        "peak grew {ratio:.2}x for 4x the length ({short} -> {long} bytes)"
    );
    let square = 2048 * 2048 * std::mem::size_of::<f32>();
    assert!(
        long * 16 < square,
        "peak {long} bytes at N=2048 is not far below one N×N f32 matrix ({square} bytes)"
    );
}
