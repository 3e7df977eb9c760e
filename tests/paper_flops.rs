//! The LongLoRA paper's FLOPs convention (forward only, attention 4·N²·d_model per layer, the rest
//! 2·P·N): its abstract's figure, one total counted by hand, and S²-Attn's quarter.

use longlora::cost::flops::paper_forward_flops;
use longlora::cost::llama2_7b;

#[test]
fn attention_at_8192_costs_16x_that_at_2048_as_the_abstract_says() {
    let cfg = llama2_7b();
    let (short, long) = (
        paper_forward_flops(&cfg, 2048, 1.0),
        paper_forward_flops(&cfg, 8192, 1.0),
    );
    assert_eq!(long.attention / short.attention, 16.0);
    // The rest grows only linearly, so the attention's share grows with the context.
    assert_eq!(long.other / short.other, 4.0);
    assert!(long.attention_share() > short.attention_share());
}

#[test]
fn llama2_7b_at_8192_matches_a_count_by_hand() {
    // Llama-2-7B: d = 4096, 32 layers, MLP 11008, vocabulary 32000, untied lm_head.
    //   per layer: q,k,v,o 4·4096² = 67_108_864; gate/up/down 3·4096·11008 = 135_266_304;
    //              two norms 2·4096 = 8_192; together 202_383_360
    //   all parameters: 32·202_383_360 + embed 32000·4096 + lm_head 32000·4096 + final norm 4096
    //                 = 6_476_267_520 + 131_072_000 + 131_072_000 + 4_096 = 6_738_415_616
    //   P (without the input embedding) = 6_738_415_616 − 131_072_000 = 6_607_343_616
    //   the rest:  2·P·N = 2 · 6_607_343_616 · 8192 = 108_254_717_804_544
    //   attention: 4·N²·d·layers = 4 · 8192² · 4096 · 32 = 35_184_372_088_832
    //   total 143_439_089_893_376 (143.4 TFLOPs), attention share 24.53 %
    let f = paper_forward_flops(&llama2_7b(), 8192, 1.0);
    assert_eq!(f.other, 108_254_717_804_544.0);
    assert_eq!(f.attention, 35_184_372_088_832.0);
    assert_eq!(f.total(), 143_439_089_893_376.0);
    assert!(
        (f.attention_share() - 0.245291).abs() < 1e-6,
        "{}",
        f.attention_share()
    );
}

#[test]
fn s2_attention_costs_a_quarter_of_full_attention_and_the_same_rest() {
    let cfg = llama2_7b();
    for n in [8192, 16384, 32768, 65536] {
        let (full, s2) = (
            paper_forward_flops(&cfg, n, 1.0),
            paper_forward_flops(&cfg, n, 0.25),
        );
        assert_eq!(full.attention / s2.attention, 4.0, "N = {n}");
        assert_eq!(full.other, s2.other, "N = {n}");
    }
}
