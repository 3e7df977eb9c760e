//! FLOPs and memory tables of LongLoRA training, S²-Attn against dense attention, for Llama-2-7B's
//! shape and the built-in default model (DESIGN §3). Counted, not timed: the timed benches are
//! `attention` and `train_step`.

use longlora::cost::flops::{
    attention_forward_flops, paper_forward_flops, train_step_flops, PAPER_FIGURE_CONTEXTS,
};
use longlora::cost::llama2_7b;
use longlora::cost::memory::train_memory;
use longlora::model::{LlamaConfig, TrainableSet};
use longlora::ops::attention::{AttnMask, AttnMode, AttnShape};

/// A unit to print in: divisor and name.
type Unit = (f64, &'static str);

fn s2_mask(n: usize) -> AttnMask {
    AttnMask::from_ratio(AttnMode::S2, 0.25, n).expect("N/4 is even at these lengths")
}

fn flops_table(name: &str, cfg: &LlamaConfig, lengths: &[usize], (scale, unit): Unit) {
    println!("\n{name}: one LongLoRA training step (lora+embed+norm), batch 1, FlashAttention convention");
    println!("(attention 4·D per unmasked causal pair forward, backward 2.5x; matrices 2 per multiply-add)");
    let heads = ["attn dense", "attn s2", "step dense", "step s2"].map(|h| format!("{h} {unit}"));
    println!(
        "{:>8} {:>15} {:>15} {:>15} {:>15} {:>8}",
        "N", heads[0], heads[1], heads[2], heads[3], "speedup"
    );
    for &n in lengths {
        let (dense, s2) = (AttnMask::dense(), s2_mask(n));
        let shape = AttnShape {
            batch: 1,
            seq_len: n,
            n_heads: cfg.num_attention_heads,
            n_kv_heads: cfg.num_key_value_heads,
            head_dim: cfg.head_dim(),
        };
        let layers = cfg.num_hidden_layers as f64;
        let attn = |m: &AttnMask| 3.5 * attention_forward_flops(&shape, m) * layers / scale;
        let step =
            |m: &AttnMask| train_step_flops(cfg, 1, n, m, TrainableSet::LoraEmbedNorm) / scale;
        println!(
            "{n:>8} {:>15.2} {:>15.2} {:>15.2} {:>15.2} {:>7.2}x",
            attn(&dense),
            attn(&s2),
            step(&dense),
            step(&s2),
            step(&dense) / step(&s2)
        );
    }
}

/// The LongLoRA paper's FLOPs figure: forward only, full attention against S²-Attn (G = N/4).
fn paper_flops_table(name: &str, cfg: &LlamaConfig, lengths: &[usize], (scale, unit): Unit) {
    println!("\n{name}: forward FLOPs in the LongLoRA paper's convention (its FLOPs figure)");
    println!(
        "(attention 4·N·G·d_model per layer, both N×N products, no causal halving, G = N for full, \
         N/4 for S²-Attn; the rest 2·P·N with P = all parameters but the input embedding)"
    );
    println!(
        "{:>8} {:>14} {:>11} {:>14} {:>11} {:>8}",
        "N",
        format!("full {unit}"),
        "full attn%",
        format!("s2 {unit}"),
        "s2 attn%",
        "ratio"
    );
    for &n in lengths {
        let (full, s2) = (
            paper_forward_flops(cfg, n, 1.0),
            paper_forward_flops(cfg, n, 0.25),
        );
        println!(
            "{n:>8} {:>14.2} {:>10.1}% {:>14.2} {:>10.1}% {:>7.2}x",
            full.total() / scale,
            100.0 * full.attention_share(),
            s2.total() / scale,
            100.0 * s2.attention_share(),
            full.total() / s2.total()
        );
    }
}

fn memory_table(name: &str, cfg: &LlamaConfig, n: usize, (scale, unit): Unit) {
    println!(
        "\n{name}: training memory at N = {n}, batch 1, LoRA r = 8, f32 weights, gradients and AdamW \
         state (as the CPU path stores them), {unit}"
    );
    println!(
        "{:>16} {:>9} {:>9} {:>9} {:>12} {:>14} {:>9} {:>12}",
        "set",
        "weights",
        "grads",
        "AdamW",
        "activations",
        "act. if recomp.",
        "total",
        "total if recomp."
    );
    for set in [
        TrainableSet::Full,
        TrainableSet::Lora,
        TrainableSet::LoraEmbedNorm,
    ] {
        let m = train_memory(cfg, set, 8, n);
        println!(
            "{:>16} {:>9.2} {:>9.2} {:>9.2} {:>12.2} {:>14.2} {:>9.2} {:>12.2}",
            set.to_string(),
            m.weights / scale,
            m.gradients / scale,
            m.optimizer / scale,
            m.activations / scale,
            m.activations_recomputed / scale,
            m.total(false) / scale,
            m.total(true) / scale
        );
    }
}

fn main() {
    const TFLOP: Unit = (1e12, "TF");
    const GFLOP: Unit = (1e9, "GF");
    const GIB: Unit = (1073741824.0, "GiB");
    const MIB: Unit = (1048576.0, "MiB");
    let lengths_7b = [8192, 16384, 32768, 65536, 102400];
    flops_table("Llama-2-7B", &llama2_7b(), &lengths_7b, TFLOP);
    paper_flops_table("Llama-2-7B", &llama2_7b(), &PAPER_FIGURE_CONTEXTS, TFLOP);
    memory_table("Llama-2-7B", &llama2_7b(), 8192, GIB);
    // The side-by-side bench's lengths (scripts/bench-vs-pytorch.sh): its model is this one.
    flops_table(
        "built-in model",
        &LlamaConfig::builtin(),
        &[1024, 4096, 16384],
        GFLOP,
    );
    paper_flops_table(
        "built-in model",
        &LlamaConfig::builtin(),
        &[1024, 4096],
        GFLOP,
    );
    memory_table("built-in model", &LlamaConfig::builtin(), 1024, MIB);
}
