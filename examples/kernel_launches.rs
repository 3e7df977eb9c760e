//! Prints the launch configuration of every GPU kernel as its launch function chooses it, for
//! scripts/kernel-report.sh: one tab-separated line per distinct (case, kernel, configuration) with
//! the case, kernel, grid, threads per block, dynamic shared memory in bytes, and the static shared
//! memory the kernel's emulator entry point declares (the report checks it against ptxas's).
//!
//! Each case runs a small problem through the emulator inside `record_launches`. Threads and shared
//! memory depend only on what the case names (head dim, LoRA rank, hidden size, vocabulary); the
//! grids are those of these small problems, not of a training run.
//!
//!     cargo run --release --example kernel_launches

use longlora::kernels::self_test::{probe, reduce_sum, ProbeInputs};
use longlora::kernels::{
    self, adamw_step, attention_backward, attention_forward, bf16_to_f32, cross_entropy_backward,
    cross_entropy_forward, embedding_backward, embedding_forward, f32_to_bf16, grad_norm,
    lora_linear_backward, lora_linear_forward, rmsnorm_backward, rmsnorm_forward, rope_forward,
    scaled_f32_to_bf16, swiglu_backward, swiglu_forward, AdamwTensor, AttentionHeads,
    AttentionScratch, BackwardOptions, Buffer, Device, DeviceRopeTable, LinearScratch, LinearShape,
    LoraAdapter, LoraBackward, Sequences,
};
use longlora::ops::attention::AttnMask;
use longlora::train::optim::AdamWConfig;

type Result<T = ()> = std::result::Result<T, Box<dyn std::error::Error>>;
/// A named problem that exercises some kernels.
type Case = (&'static str, Box<dyn Fn(&Device) -> Result>);

/// A bf16 buffer of `len` small values (1/8: finite through every kernel).
fn bf16s(device: &Device, len: usize) -> Result<Buffer<u16>> {
    Ok(device.upload(&vec![0x3e00u16; len])?)
}

fn f32s(device: &Device, len: usize, value: f32) -> Result<Buffer<f32>> {
    Ok(device.upload(&vec![value; len])?)
}

fn attention(device: &Device, head_dim: usize) -> Result {
    let (tokens, n_heads) = (128, 2);
    let heads = AttentionHeads {
        n_heads,
        n_kv_heads: n_heads,
        head_dim,
    };
    let sequences = Sequences::equal(1, tokens);
    let len = tokens * n_heads * head_dim;
    let (q, k, v) = (
        bf16s(device, len)?,
        bf16s(device, len)?,
        bf16s(device, len)?,
    );
    let mut out = bf16s(device, len)?;
    let mut lse = f32s(device, tokens * n_heads, 0.0)?;
    let mask = AttnMask::dense();
    attention_forward(
        device, &mut out, &mut lse, &q, &k, &v, &sequences, heads, &mask, None,
    )?;
    let (mut dq, mut dk, mut dv) = (
        bf16s(device, len)?,
        bf16s(device, len)?,
        bf16s(device, len)?,
    );
    let mut scratch = AttentionScratch::new();
    for deterministic in [false, true] {
        let options = BackwardOptions {
            deterministic,
            accumulate: false,
        };
        attention_backward(
            device,
            &mut dq,
            &mut dk,
            &mut dv,
            &out,
            &q,
            &k,
            &v,
            &out,
            &lse,
            &sequences,
            heads,
            &mask,
            options,
            &mut scratch,
            None,
        )?;
    }
    Ok(())
}

fn lora(device: &Device, rank: usize) -> Result {
    let shape = LinearShape {
        rows: 256,
        in_features: 256,
        out_features: 256,
    };
    let (rows, n_in, n_out) = (shape.rows, shape.in_features, shape.out_features);
    let (x, weight) = (bf16s(device, rows * n_in)?, bf16s(device, n_out * n_in)?);
    let (a, b) = (bf16s(device, rank * n_in)?, bf16s(device, n_out * rank)?);
    let adapter = LoraAdapter {
        a: &a,
        b: &b,
        rank,
        scale: 2.0,
    };
    let mut y = bf16s(device, rows * n_out)?;
    let mut xa = f32s(device, rows * rank, 0.0)?;
    let forward_lora = (rank > 0).then_some((adapter, &mut xa));
    let mut scratch = LinearScratch::default();
    lora_linear_forward(
        device,
        shape,
        &x,
        &weight,
        forward_lora,
        &mut y,
        &mut scratch,
    )?;
    let mut grad_a = f32s(device, rank * n_in, 0.0)?;
    let mut grad_b = f32s(device, n_out * rank, 0.0)?;
    let xa = f32s(device, rows * rank, 0.0)?;
    let backward_lora = (rank > 0).then_some(LoraBackward {
        adapter,
        xa: &xa,
        grad_a: &mut grad_a,
        grad_b: &mut grad_b,
    });
    let mut dx = bf16s(device, rows * n_in)?;
    let lora = backward_lora;
    lora_linear_backward(device, shape, &y, &x, &weight, lora, &mut dx, &mut scratch)?;
    Ok(())
}

/// The per-row and elementwise kernels of a layer of hidden size `dim`.
fn layer_ops(device: &Device, dim: usize) -> Result {
    let rows = 4;
    let x = bf16s(device, rows * dim)?;
    let mut out = bf16s(device, rows * dim)?;
    let mut dx = bf16s(device, rows * dim)?;
    let weight = f32s(device, dim, 1.0)?;
    let mut dweight = f32s(device, dim, 0.0)?;
    let mut rstd = f32s(device, rows, 0.0)?;
    rmsnorm_forward(device, &mut out, &mut rstd, &x, &weight, dim, 1e-5)?;
    rmsnorm_backward(
        device,
        &mut dx,
        Some(&mut dweight),
        &out,
        &x,
        &weight,
        &rstd,
        dim,
    )?;
    swiglu_forward(device, &mut out, &x, &x)?;
    let mut dup = bf16s(device, rows * dim)?;
    swiglu_backward(device, &mut dx, &mut dup, &out, &x, &x)?;
    let mut wide = f32s(device, rows * dim, 0.0)?;
    bf16_to_f32(device, &x, &mut wide)?;
    f32_to_bf16(device, &wide, &mut out)?;
    scaled_f32_to_bf16(device, &wide, 2.0, &mut out, rows * dim)?;
    let head_dim = 128;
    let table = DeviceRopeTable::new(device, rows, head_dim, 10_000.0, 1.0)?;
    let positions = device.upload(&(0..rows as u32).collect::<Vec<_>>())?;
    rope_forward(device, &mut out, &table, &positions, dim / head_dim)?;
    let vocab = 16;
    let embeddings = bf16s(device, vocab * dim)?;
    let tokens = device.upload(&vec![1u32; rows])?;
    embedding_forward(device, &mut out, &tokens, &embeddings, dim)?;
    let mut dtable = f32s(device, vocab * dim, 0.0)?;
    embedding_backward(device, &mut dtable, &dx, &tokens, dim).map_err(|error| error.into())
}

fn cross_entropy(device: &Device, vocab: usize) -> Result {
    let rows = 4;
    let logits = bf16s(device, rows * vocab)?;
    let mut dlogits = bf16s(device, rows * vocab)?;
    let targets = device.upload(&vec![1i32; rows])?;
    let mut lse = f32s(device, rows, 0.0)?;
    let mut loss = f32s(device, rows, 0.0)?;
    cross_entropy_forward(device, &mut lse, &mut loss, &logits, &targets, vocab)?;
    cross_entropy_backward(device, &mut dlogits, &logits, &targets, &lse, vocab, 0.25)?;
    Ok(())
}

fn optimizer(device: &Device) -> Result {
    let len = 4096;
    let mut param = f32s(device, len, 1.0)?;
    let grad = f32s(device, len, 0.5)?;
    let (mut m, mut v) = (f32s(device, len, 0.0)?, f32s(device, len, 0.0)?);
    let mut copy = bf16s(device, len)?;
    grad_norm(device, &[&grad])?;
    let mut tensors = [AdamwTensor {
        param: &mut param,
        grad: &grad,
        m: &mut m,
        v: &mut v,
        param_bf16: Some(&mut copy),
    }];
    adamw_step(device, &mut tensors, &AdamWConfig::default(), 1, 1e-3, 1.0)?;
    Ok(())
}

/// The kernels that check the emulator and the GPU against each other.
fn self_tests(device: &Device) -> Result {
    let (rows, cols, threads) = (4, 1024, 256);
    let input = f32s(device, rows * cols, 1.0)?;
    let mut row_sums = f32s(device, rows, 0.0)?;
    let mut total = f32s(device, 1, 0.0)?;
    reduce_sum(
        device,
        &input,
        rows,
        cols,
        threads,
        &mut row_sums,
        &mut total,
    )?;
    let inputs = ProbeInputs {
        mma_bf16_a: [0; 128],
        mma_bf16_b: [0; 64],
        mma_f16_a: [0; 128],
        mma_f16_b: [0; 64],
        mma_c: [0.0; 128],
        ldmatrix_source: [0; 256],
        ldmatrix_rows: [0; 32],
        shuffle_values: [0; 32],
        shuffle_sources: [0; 32],
        shuffle_delta: 1,
        shuffle_xor_mask: 1,
        shuffle_width: 32,
    };
    probe(device, &inputs)?;
    Ok(())
}

fn main() -> Result {
    let device = Device::emulator();
    let cases: Vec<Case> = vec![
        ("attention D=64", Box::new(|d| attention(d, 64))),
        ("attention D=128", Box::new(|d| attention(d, 128))),
        ("linear, no adapter", Box::new(|d| lora(d, 0))),
        ("LoRA rank 4 (B padded)", Box::new(|d| lora(d, 4))),
        ("LoRA rank 8", Box::new(|d| lora(d, 8))),
        ("LoRA rank 64", Box::new(|d| lora(d, 64))),
        ("hidden 4096", Box::new(|d| layer_ops(d, 4096))),
        ("vocab 32000", Box::new(|d| cross_entropy(d, 32_000))),
        ("optimizer", Box::new(optimizer)),
        ("self-tests", Box::new(self_tests)),
    ];
    let mut seen = Vec::new();
    for (case, run) in cases {
        let (result, launches) = kernels::record_launches(|| run(&device));
        result.map_err(|error| format!("{case}: {error}"))?;
        for launch in launches {
            let line = format!(
                "{case}\t{}\t{}x{}x{}\t{}\t{}\t{}",
                launch.kernel,
                launch.grid[0],
                launch.grid[1],
                launch.grid[2],
                launch.threads(),
                launch.dynamic_shared_bytes,
                launch.static_shared_bytes
            );
            if !seen.contains(&line) {
                println!("{line}");
                seen.push(line);
            }
        }
    }
    Ok(())
}
