//! The attention kernels (cuda/attention_fwd.cu, cuda/attention_bwd.cu): causal attention under the
//! S²-Attn masks of [`AttnMask`] (DESIGN §2), bf16 tensors with f32 accumulation, head dims 64 and
//! 128, GQA, batches of equal-length or packed (varlen) documents.
//!
//! Layouts (token-major, bf16 as `u16` bits): q, out, dout, dq `[tokens][n_heads][head_dim]`; k, v, dk,
//! dv `[tokens][n_kv_heads][head_dim]`; lse (natural log, f32) `[document][n_heads][its length]`,
//! which for equal lengths is `[batch][n_heads][seq_len]`, as in `ops::attention`.

use half::bf16;

use super::params::{
    AttentionBackwardParams, AttentionForwardParams, AttentionMaskMode, AttentionProblem,
    ATTENTION_BACKWARD_QUERIES, ATTENTION_BLOCK_ROWS, ATTENTION_DQ_KEYS,
    ATTENTION_FORWARD_KEYS_D128, ATTENTION_FORWARD_KEYS_D64,
};
use super::{check_len, invalid, Buffer, Device, LaunchConfig, Result};
use crate::ops::attention::{AttnMask, AttnMode};

/// The largest grid y: batch x heads must fit.
const MAX_GRID_Y: usize = 65_535;
/// Threads of the delta and dq-convert kernels (cuda/attention_bwd.cu).
const ELEMENTWISE_THREADS: u32 = 128;

/// The block and tile shapes of the attention kernels at one head dim (cuda/include/params.h,
/// FlashAttention-2's for A100 and H100), from which launches are sized and tests count the tiles a
/// kernel visits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AttentionTiles {
    /// Query rows of a forward block, and of a deterministic dq block (8 warps of 16).
    pub query_block: usize,
    /// Warps of a forward block: 4 of 32 rows at head dim 64, 8 of 16 at 128.
    pub forward_warps: usize,
    /// Keys of the forward's K/V tiles.
    pub forward_keys: usize,
    /// Keys of a dk/dv block.
    pub key_block: usize,
    /// Warps of a dk/dv block, 16 keys each.
    pub dkdv_warps: usize,
    /// Queries of the dk/dv kernel's query tiles.
    pub backward_queries: usize,
    /// Keys of the deterministic dq kernel's K/V tiles.
    pub dq_keys: usize,
}

/// The shapes the kernels use at `head_dim` (64 or 128).
pub fn attention_tiles(head_dim: usize) -> AttentionTiles {
    let d64 = head_dim == 64;
    AttentionTiles {
        query_block: ATTENTION_BLOCK_ROWS as usize,
        forward_warps: if d64 { 4 } else { 8 },
        forward_keys: if d64 {
            ATTENTION_FORWARD_KEYS_D64
        } else {
            ATTENTION_FORWARD_KEYS_D128
        } as usize,
        key_block: ATTENTION_BLOCK_ROWS as usize,
        dkdv_warps: 8,
        backward_queries: ATTENTION_BACKWARD_QUERIES as usize,
        dq_keys: ATTENTION_DQ_KEYS as usize,
    }
}

kernels! {
    FORWARD_D64 = attention_forward_d64_kernel
        / longlora_emu_attention_forward_d64_kernel(AttentionForwardParams);
    FORWARD_D128 = attention_forward_d128_kernel
        / longlora_emu_attention_forward_d128_kernel(AttentionForwardParams);
    DELTA = attention_backward_delta_kernel
        / longlora_emu_attention_backward_delta_kernel(AttentionBackwardParams);
    DKDV_D64 = attention_backward_dkdv_d64_kernel
        / longlora_emu_attention_backward_dkdv_d64_kernel(AttentionBackwardParams);
    DKDV_D128 = attention_backward_dkdv_d128_kernel
        / longlora_emu_attention_backward_dkdv_d128_kernel(AttentionBackwardParams);
    DQ_D64 = attention_backward_dq_d64_kernel
        / longlora_emu_attention_backward_dq_d64_kernel(AttentionBackwardParams);
    DQ_D128 = attention_backward_dq_d128_kernel
        / longlora_emu_attention_backward_dq_d128_kernel(AttentionBackwardParams);
    DQ_CONVERT = attention_backward_dq_convert_kernel
        / longlora_emu_attention_backward_dq_convert_kernel(AttentionBackwardParams);
}

/// The documents of a batch: `batch` of `seq_len` tokens each, or packed back to back as given by
/// `cu_seqlens` (document b is tokens `cu_seqlens[b]..cu_seqlens[b + 1]`). Positions and S²-Attn
/// groups restart in every document.
pub struct Sequences {
    batch: usize,
    max_len: usize,
    tokens: usize,
    cu_seqlens: Option<Buffer<i32>>,
}

impl Sequences {
    /// `batch` documents of `seq_len` tokens.
    pub fn equal(batch: usize, seq_len: usize) -> Sequences {
        Sequences {
            batch,
            max_len: seq_len,
            tokens: batch * seq_len,
            cu_seqlens: None,
        }
    }

    /// Packed documents: `cu_seqlens` starts at 0 and never decreases (zero-length documents are
    /// fine); its last entry is the number of tokens. Uploaded to `device` once, here.
    pub fn packed(device: &Device, cu_seqlens: &[i32]) -> Result<Sequences> {
        const NAME: &str = "attention";
        if cu_seqlens.len() < 2 || cu_seqlens[0] != 0 {
            return Err(invalid(
                NAME,
                "cu_seqlens",
                "at least two offsets, the first 0",
                format!("{cu_seqlens:?}"),
            ));
        }
        if let Some(w) = cu_seqlens.windows(2).find(|w| w[1] < w[0]) {
            return Err(invalid(
                NAME,
                "cu_seqlens",
                "non-decreasing offsets",
                format!("{} after {}", w[1], w[0]),
            ));
        }
        let max_len = cu_seqlens
            .windows(2)
            .map(|w| (w[1] - w[0]) as usize)
            .max()
            .unwrap_or(0);
        Ok(Sequences {
            batch: cu_seqlens.len() - 1,
            max_len,
            tokens: cu_seqlens[cu_seqlens.len() - 1] as usize,
            cu_seqlens: Some(device.upload(cu_seqlens)?),
        })
    }

    pub fn batch(&self) -> usize {
        self.batch
    }

    /// Rows of the token-major tensors.
    pub fn tokens(&self) -> usize {
        self.tokens
    }

    /// The longest document.
    pub fn max_len(&self) -> usize {
        self.max_len
    }
}

/// The heads of every token.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AttentionHeads {
    pub n_heads: usize,
    /// Divides `n_heads`: query head h reads kv head `h / (n_heads / n_kv_heads)`.
    pub n_kv_heads: usize,
    /// 64 or 128.
    pub head_dim: usize,
}

/// How [`attention_backward`] produces its gradients.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BackwardOptions {
    /// dq from a separate query-parallel kernel instead of f32 atomics in arbitrary order: bitwise
    /// reproducible, at the cost of computing the scores and dP a second time (7 tile products per
    /// pair of tiles instead of 5). Off by default, as in FlashAttention-2.
    pub deterministic: bool,
    /// Add the gradients to dq, dk, dv (rounding once to bf16) instead of overwriting them.
    pub accumulate: bool,
}

/// The backward's f32 scratch buffers, owned by the caller so that repeated backward passes (a
/// training step's layers) allocate them once: `delta` (one value per query row and head, which the
/// delta kernel writes in full, so it is never cleared) and, for the atomic dq path, `dq_accum`
/// (one f32 per element of dq, which the delta kernel clears as it goes). Each grows when a larger
/// problem needs it and is otherwise reused as is.
#[derive(Default)]
pub struct AttentionScratch {
    delta: Option<Buffer<f32>>,
    dq_accum: Option<Buffer<f32>>,
}

impl AttentionScratch {
    pub fn new() -> AttentionScratch {
        AttentionScratch::default()
    }

    /// f32 elements held, for callers that account for memory.
    pub fn len(&self) -> usize {
        [&self.delta, &self.dq_accum]
            .iter()
            .map(|b| b.as_ref().map_or(0, Buffer::len))
            .sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// `slot`'s buffer, replaced by a larger one (allocated on `device`) when it holds fewer than `len`.
fn scratch_buffer<'a>(
    device: &Device,
    slot: &'a mut Option<Buffer<f32>>,
    len: usize,
) -> Result<&'a mut Buffer<f32>> {
    if slot.as_ref().is_none_or(|b| b.len() < len) {
        *slot = Some(device.zeros::<f32>(len)?);
    }
    Ok(slot.as_mut().expect("just filled"))
}

/// f32 values as bf16 bits, rounded to nearest even.
pub fn to_bf16(values: &[f32]) -> Vec<u16> {
    values
        .iter()
        .map(|&v| bf16::from_f32(v).to_bits())
        .collect()
}

/// bf16 bits as f32 values (exact).
pub fn from_bf16(bits: &[u16]) -> Vec<f32> {
    bits.iter().map(|&b| bf16::from_bits(b).to_f32()).collect()
}

/// The validated problem, as the kernels see it.
fn problem(
    kernel: &'static str,
    device: &Device,
    sequences: &Sequences,
    heads: AttentionHeads,
    mask: &AttnMask,
) -> Result<AttentionProblem> {
    let AttentionHeads {
        n_heads,
        n_kv_heads,
        head_dim,
    } = heads;
    if head_dim != 64 && head_dim != 128 {
        return Err(invalid(kernel, "head_dim", "64 or 128", head_dim));
    }
    if n_heads == 0 || n_kv_heads == 0 || n_heads % n_kv_heads != 0 {
        return Err(invalid(
            kernel,
            "n_kv_heads",
            format!("a positive divisor of n_heads = {n_heads}"),
            n_kv_heads,
        ));
    }
    let (mask_mode, group_size) = match mask.mode {
        AttnMode::Dense => (AttentionMaskMode::ATTENTION_MASK_DENSE, 0),
        AttnMode::S2 => (AttentionMaskMode::ATTENTION_MASK_S2, mask.group_size),
        AttnMode::S2Roll => (AttentionMaskMode::ATTENTION_MASK_S2_ROLL, mask.group_size),
        AttnMode::S2NoShift => (
            AttentionMaskMode::ATTENTION_MASK_S2_NOSHIFT,
            mask.group_size,
        ),
    };
    if mask.mode != AttnMode::Dense && (group_size < 2 || group_size % 2 != 0) {
        return Err(invalid(
            kernel,
            "group_size",
            "an even number of at least 2",
            group_size,
        ));
    }
    let fits_i32 = |x: usize| i32::try_from(x).is_ok();
    let elements = sequences.tokens.checked_mul(n_heads * head_dim);
    if !fits_i32(sequences.tokens) || !fits_i32(group_size) || elements.is_none() {
        return Err(invalid(
            kernel,
            "tokens",
            "fewer than 2^31",
            sequences.tokens,
        ));
    }
    if sequences.batch * n_heads > MAX_GRID_Y {
        return Err(invalid(
            kernel,
            "batch x n_heads",
            format!("at most {MAX_GRID_Y}"),
            sequences.batch * n_heads,
        ));
    }
    let cu_seqlens = match &sequences.cu_seqlens {
        Some(buffer) => device.pointer(buffer, "cu_seqlens")?,
        None => std::ptr::null(),
    };
    let scale = 1.0 / (head_dim as f64).sqrt();
    Ok(AttentionProblem {
        cu_seqlens,
        batch: sequences.batch as u32,
        seq_len: sequences.max_len as u32,
        tokens: sequences.tokens as u32,
        n_heads: n_heads as u32,
        n_kv_heads: n_kv_heads as u32,
        head_dim: head_dim as u32,
        mask_mode: mask_mode as u32,
        group_size: group_size as u32,
        scale: scale as f32,
        scale_log2: (scale * std::f64::consts::LOG2_E) as f32,
    })
}

/// The pointer of an optional one-element debug counter.
fn counter(
    kernel: &'static str,
    device: &Device,
    counter: Option<&mut Buffer<u32>>,
) -> Result<*mut u32> {
    match counter {
        Some(counter) => {
            check_len(kernel, "tiles_visited", counter, 1)?;
            device.pointer_mut(counter, "tiles_visited")
        }
        None => Ok(std::ptr::null_mut()),
    }
}

/// One block per 128 rows of the longest document, for every (document, head), of `threads`
/// threads with `shared_bytes` of dynamic shared memory.
fn block_grid(
    sequences: &Sequences,
    heads: usize,
    threads: usize,
    shared_bytes: usize,
) -> LaunchConfig {
    LaunchConfig {
        grid: [
            sequences.max_len.div_ceil(ATTENTION_BLOCK_ROWS as usize) as u32,
            (sequences.batch * heads) as u32,
            1,
        ],
        block: [threads as u32, 1, 1],
        dynamic_shared_bytes: shared_bytes as u32,
    }
}

/// Bytes of `rows` bf16 rows of `head_dim`.
fn bf16_rows(rows: usize, head_dim: usize) -> usize {
    rows * head_dim * size_of::<u16>()
}

/// The forward pass: `out` and `lse` (natural log) from `q`, `k`, `v`, overwriting both. When
/// `tiles_visited` is given, every block adds the number of K/V tiles it visited to its one element
/// (a debug counter: tiles outside the causal-and-group range are never loaded).
#[allow(clippy::too_many_arguments)]
pub fn attention_forward(
    device: &Device,
    out: &mut Buffer<u16>,
    lse: &mut Buffer<f32>,
    q: &Buffer<u16>,
    k: &Buffer<u16>,
    v: &Buffer<u16>,
    sequences: &Sequences,
    heads: AttentionHeads,
    mask: &AttnMask,
    tiles_visited: Option<&mut Buffer<u32>>,
) -> Result<()> {
    let kernel = if heads.head_dim == 128 {
        FORWARD_D128
    } else {
        FORWARD_D64
    };
    let problem = problem(kernel.name, device, sequences, heads, mask)?;
    let q_len = sequences.tokens * heads.n_heads * heads.head_dim;
    let kv_len = sequences.tokens * heads.n_kv_heads * heads.head_dim;
    check_len(kernel.name, "q", q, q_len)?;
    check_len(kernel.name, "k", k, kv_len)?;
    check_len(kernel.name, "v", v, kv_len)?;
    check_len(kernel.name, "out", out, q_len)?;
    check_len(kernel.name, "lse", lse, sequences.tokens * heads.n_heads)?;
    let tiles_visited = counter(kernel.name, device, tiles_visited)?;
    if sequences.max_len == 0 {
        return Ok(());
    }
    let params = AttentionForwardParams {
        problem,
        q: device.pointer(q, "q")?,
        k: device.pointer(k, "k")?,
        v: device.pointer(v, "v")?,
        out: device.pointer_mut(out, "out")?,
        lse: device.pointer_mut(lse, "lse")?,
        tiles_visited,
    };
    // The Q block, and one K and one V tile.
    let tiles = attention_tiles(heads.head_dim);
    let shared = bf16_rows(tiles.query_block + 2 * tiles.forward_keys, heads.head_dim);
    let config = block_grid(sequences, heads.n_heads, 32 * tiles.forward_warps, shared);
    device.launch(&kernel, config, &params)
}

/// The backward pass: dq, dk, dv from dout and the forward's q, k, v, out, lse (FlashAttention-2:
/// delta = rowsum(dout ∘ out); a K/V-parallel kernel that recomputes P and keeps dk, dv in
/// registers; dq through f32 atomics, or a query-parallel kernel when `options.deterministic`).
/// Overwrites dq, dk, dv unless `options.accumulate`. `scratch` holds the f32 buffers between calls.
/// When `tiles_visited` is given, every block of the K/V-parallel kernel adds the number of Q tiles
/// it visited to its one element.
#[allow(clippy::too_many_arguments)]
pub fn attention_backward(
    device: &Device,
    dq: &mut Buffer<u16>,
    dk: &mut Buffer<u16>,
    dv: &mut Buffer<u16>,
    dout: &Buffer<u16>,
    q: &Buffer<u16>,
    k: &Buffer<u16>,
    v: &Buffer<u16>,
    out: &Buffer<u16>,
    lse: &Buffer<f32>,
    sequences: &Sequences,
    heads: AttentionHeads,
    mask: &AttnMask,
    options: BackwardOptions,
    scratch: &mut AttentionScratch,
    tiles_visited: Option<&mut Buffer<u32>>,
) -> Result<()> {
    let d128 = heads.head_dim == 128;
    let dkdv = if d128 { DKDV_D128 } else { DKDV_D64 };
    let problem = problem(dkdv.name, device, sequences, heads, mask)?;
    let q_len = sequences.tokens * heads.n_heads * heads.head_dim;
    let kv_len = sequences.tokens * heads.n_kv_heads * heads.head_dim;
    let rows = sequences.tokens * heads.n_heads;
    for (what, buffer, len) in [
        ("q", q, q_len),
        ("out", out, q_len),
        ("dout", dout, q_len),
        ("k", k, kv_len),
        ("v", v, kv_len),
    ] {
        check_len(dkdv.name, what, buffer, len)?;
    }
    check_len(dkdv.name, "dq", dq, q_len)?;
    check_len(dkdv.name, "dk", dk, kv_len)?;
    check_len(dkdv.name, "dv", dv, kv_len)?;
    check_len(dkdv.name, "lse", lse, rows)?;
    let tiles_visited = counter(dkdv.name, device, tiles_visited)?;
    if sequences.max_len == 0 {
        return Ok(());
    }

    let delta = scratch_buffer(device, &mut scratch.delta, rows)?;
    let delta = device.pointer_mut(delta, "delta")?;
    let dq_accum = match options.deterministic {
        true => std::ptr::null_mut(),
        false => {
            let accum = scratch_buffer(device, &mut scratch.dq_accum, q_len)?;
            device.pointer_mut(accum, "dq_accum")?
        }
    };
    let params = AttentionBackwardParams {
        problem,
        q: device.pointer(q, "q")?,
        k: device.pointer(k, "k")?,
        v: device.pointer(v, "v")?,
        out: device.pointer(out, "out")?,
        dout: device.pointer(dout, "dout")?,
        lse: device.pointer(lse, "lse")?,
        delta,
        dq_accum,
        dq: device.pointer_mut(dq, "dq")?,
        dk: device.pointer_mut(dk, "dk")?,
        dv: device.pointer_mut(dv, "dv")?,
        deterministic: options.deterministic.into(),
        accumulate: options.accumulate.into(),
        tiles_visited,
    };
    launch_backward(device, &params, sequences, heads, options.deterministic)
}

/// The backward's three launches: delta = rowsum(dO ∘ O); dK and dV (and dq through atomics
/// unless `deterministic`); then dq, by its own query-parallel kernel or converted from the f32
/// accumulator.
fn launch_backward(
    device: &Device,
    params: &AttentionBackwardParams,
    sequences: &Sequences,
    heads: AttentionHeads,
    deterministic: bool,
) -> Result<()> {
    let d = heads.head_dim;
    let d128 = d == 128;
    let dkdv = if d128 { DKDV_D128 } else { DKDV_D64 };
    let q_len = sequences.tokens * heads.n_heads * d;
    let tiles = attention_tiles(d);
    let threads = ELEMENTWISE_THREADS as usize;
    device.launch(
        &DELTA,
        block_grid(sequences, heads.n_heads, threads, 0),
        params,
    )?;
    // K and V; two buffers each of Q and dO; the dS tile (keys x queries); two buffers of lse and
    // delta.
    let shared = bf16_rows(2 * tiles.key_block + 4 * tiles.backward_queries, d)
        + tiles.key_block * tiles.backward_queries * size_of::<u16>()
        + 4 * tiles.backward_queries * size_of::<f32>();
    let config = block_grid(sequences, heads.n_kv_heads, 32 * tiles.dkdv_warps, shared);
    device.launch(&dkdv, config, params)?;
    if deterministic {
        let kernel = if d128 { DQ_D128 } else { DQ_D64 };
        // Q and dO; two buffers each of K and V.
        let shared = bf16_rows(2 * tiles.query_block + 4 * tiles.dq_keys, d);
        device.launch(
            &kernel,
            block_grid(sequences, heads.n_heads, 256, shared),
            params,
        )
    } else {
        let chunks = q_len / 8;
        let blocks = chunks.div_ceil(threads).min(65_535) as u32;
        let config = LaunchConfig {
            grid: [blocks, 1, 1],
            block: [ELEMENTWISE_THREADS, 1, 1],
            dynamic_shared_bytes: 0,
        };
        device.launch(&DQ_CONVERT, config, params)
    }
}
