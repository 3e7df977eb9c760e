//! FLOP counts against hand-counted masks; training memory against the buffers a real step keeps.

use longlora::cost::flops::{attention_forward_flops, attention_pairs};
use longlora::ops::attention::{AttnMask, AttnMode, AttnShape};

/// The pairs `AttnMask::allows` admits, counted one by one.
fn brute_force_pairs(m: &AttnMask, n_heads: usize, n: usize) -> u64 {
    (0..n_heads)
        .map(|h| {
            (0..n)
                .map(|i| (0..n).filter(|&j| m.allows(h, n_heads, i, j, n)).count() as u64)
                .sum::<u64>()
        })
        .sum()
}

#[test]
fn closed_form_pairs_match_the_mask_element_by_element() {
    for n in [1, 2, 7, 16, 33, 64, 100] {
        for g in [2, 4, 6, 8, 16, 32, 64, 128] {
            for mode in [AttnMode::S2, AttnMode::S2Roll, AttnMode::S2NoShift] {
                for heads in [1, 2, 3, 4] {
                    let m = AttnMask::new(mode, g).unwrap();
                    assert_eq!(
                        attention_pairs(&m, heads, n),
                        brute_force_pairs(&m, heads, n),
                        "{mode} N={n} G={g} H={heads}"
                    );
                }
            }
        }
        assert_eq!(
            attention_pairs(&AttnMask::dense(), 2, n),
            brute_force_pairs(&AttnMask::dense(), 2, n)
        );
    }
}

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

mod common;

use longlora::cost::memory::{
    activation_elements, check_device_memory, device_train_memory, lora_params, train_memory,
    trained_params,
};
use longlora::model::{Llama, LlamaWeights, Param, TrainableSet};
use longlora::rng::Rng;
use longlora::Error;

#[test]
fn activation_count_matches_what_the_forward_keeps() {
    let cfg = common::tiny_config();
    let mut w = LlamaWeights::<Param<f32>>::random(&cfg, 0.1, &mut Rng::new(1));
    w.add_lora(3, 6.0, &mut Rng::new(2));
    let model = Llama::new(cfg.clone(), w).unwrap();
    let tokens: Vec<u32> = (0..14).map(|i| i % 11).collect();
    let acts = model.forward(&tokens, 2, 7, &AttnMask::dense()).unwrap();
    assert_eq!(acts.saved_elements(), activation_elements(&cfg, 14, 3));
}

#[test]
fn trained_parameter_count_matches_the_gradient_buffers() {
    let cfg = common::tiny_config();
    for set in [
        TrainableSet::Lora,
        TrainableSet::LoraEmbedNorm,
        TrainableSet::Full,
    ] {
        let mut w = LlamaWeights::<Param<f32>>::random(&cfg, 0.1, &mut Rng::new(1));
        if set.uses_lora() {
            w.add_lora(4, 8.0, &mut Rng::new(2));
        }
        let grads = set.grads_for(&w);
        let counted: usize = grads.present().iter().map(|(_, g)| g.data.len()).sum();
        assert_eq!(trained_params(&cfg, set, 4), counted, "{set}");
        let mem = train_memory(&cfg, set, 4, 100);
        assert_eq!(mem.gradients, 4.0 * counted as f64, "{set}");
        assert_eq!(mem.optimizer, 8.0 * counted as f64, "{set}");
        assert!(mem.activations_recomputed < mem.activations, "{set}");
    }
}

/// The GPU path keeps bf16 weights and activations, and f32 masters, gradients and moments of the
/// trained tensors; a step that does not fit is refused naming what it needs.
#[test]
fn device_memory_is_counted_in_bf16_and_a_step_too_large_is_refused() {
    let cfg = common::tiny_config();
    let set = TrainableSet::LoraEmbedNorm;
    let trained = trained_params(&cfg, set, 4) as f64;
    let need = device_train_memory(&cfg, set, 4, 1000);
    let host = train_memory(&cfg, set, 4, 1000);
    let weights = (cfg.num_params() + lora_params(&cfg, 4)) as f64;
    assert_eq!(need.weights, 2.0 * weights + 4.0 * trained);
    assert_eq!(need.gradients, 4.0 * trained);
    assert_eq!(need.optimizer, 8.0 * trained);
    assert_eq!(need.activations, host.activations / 2.0);

    for recompute in [false, true] {
        let bytes = need.total(recompute).ceil() as usize;
        check_device_memory(&need, recompute, bytes, 2 * bytes).expect("exactly enough fits");
        let err = check_device_memory(&need, recompute, bytes - 1, 2 * bytes).unwrap_err();
        let message = err.to_string();
        let Error::DeviceMemory {
            needed_mib,
            free_mib,
            ..
        } = err
        else {
            panic!("expected a device-memory error, got {message}");
        };
        assert_eq!(needed_mib, bytes.div_ceil(1 << 20));
        assert_eq!(free_mib, (bytes - 1) >> 20);
        assert!(
            message.contains("GPU memory") && !message.contains("--"),
            "{message}"
        );
        assert_eq!(message.contains("recomputed"), recompute, "{message}");
    }
}
