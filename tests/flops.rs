//! FLOP counts against hand-counted masks.

use longlora::flops::{attention_forward_flops, attention_pairs};
use longlora::ops::attention::{AttnMask, AttnMode, AttnShape};

#[test]
fn dense_causal_pairs_are_the_lower_triangle() {
    assert_eq!(attention_pairs(&AttnMask::dense(), 3, 10), 3 * 55);
}

#[test]
fn s2_pairs_count_each_group_exactly() {
    // N = 8, G = 4: head 0 has groups [0,4) and [4,8): 10 + 10 pairs; head 1 is shifted by 2:
    // groups [0,2), [2,6), [6,8): 3 + 10 + 3 pairs.
    let m = AttnMask::new(AttnMode::S2, 4).unwrap();
    assert_eq!(attention_pairs(&m, 2, 8), 36);
    let shape = AttnShape {
        batch: 2,
        seq_len: 8,
        n_heads: 2,
        n_kv_heads: 1,
        head_dim: 16,
    };
    assert_eq!(
        attention_forward_flops(&shape, &m),
        (4 * 16 * 36 * 2) as f64
    );
}

#[test]
fn s2_roll_counts_its_wrapped_pairs() {
    // The shifted head attends causally inside whole groups of 4 in rolled order (one of them
    // wraps around the end), so it has the unshifted head's 10 + 10 pairs.
    let m = AttnMask::new(AttnMode::S2Roll, 4).unwrap();
    assert_eq!(attention_pairs(&m, 2, 8), 40);
}
