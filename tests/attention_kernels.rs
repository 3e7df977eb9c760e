//! The attention kernels (cuda/attention_fwd.cu, cuda/attention_bwd.cu) against the f64 CPU reference
//! (`ops::attention`) run on the same bf16-rounded inputs: O, LSE, dQ, dK, dV by relative error
//! inside the bf16 band (DESIGN §4), for every mask (`AttnMode::ALL`), head dims 64 and 128, GQA, ragged lengths
//! and packed (varlen) batches. Outputs start as NaN, so anything left unwritten fails. Everything
//! runs in the CPU emulator; the `gpu_*` test repeats a subset on a CUDA GPU (ignored unless asked
//! for with `--include-ignored`).

mod common;

use common::assert_close;
use common::device::gpu;
use longlora::kernels::{
    attention_backward, attention_forward, attention_tiles, count_launches, from_bf16, to_bf16,
    AttentionHeads, AttentionScratch, BackwardOptions, Buffer, Device, LaunchCounters, Sequences,
};
use longlora::ops::attention::{self as reference, AttnMask, AttnMode, AttnShape};
use longlora::rng::Rng;
use proptest::prelude::*;

/// bf16 gradients and outputs carry about 3 significant digits; f32 statistics far more.
const BF16_TOLERANCE: f64 = 1e-2;
const LSE_TOLERANCE: f64 = 1e-5;
const BF16_NAN: u16 = 0x7fc0;

/// Document lengths of a case: `batch` equal ones, or packed.
#[derive(Clone, Debug)]
enum Lengths {
    Equal { batch: usize, seq_len: usize },
    Packed(Vec<usize>),
}

impl Lengths {
    /// (first token, length) of every document.
    fn documents(&self) -> Vec<(usize, usize)> {
        match self {
            Lengths::Equal { batch, seq_len } => {
                (0..*batch).map(|b| (b * seq_len, *seq_len)).collect()
            }
            Lengths::Packed(lens) => lens
                .iter()
                .scan(0, |start, &len| {
                    *start += len;
                    Some((*start - len, len))
                })
                .collect(),
        }
    }

    fn sequences(&self, device: &Device) -> Sequences {
        match self {
            Lengths::Equal { batch, seq_len } => Sequences::equal(*batch, *seq_len),
            Lengths::Packed(lens) => {
                let cu: Vec<i32> = std::iter::once(0)
                    .chain(self.documents().iter().map(|&(s, l)| (s + l) as i32))
                    .collect();
                assert_eq!(cu.len(), lens.len() + 1);
                Sequences::packed(device, &cu).unwrap()
            }
        }
    }
}

#[derive(Clone, Debug)]
struct Case {
    lengths: Lengths,
    heads: AttentionHeads,
    mask: AttnMask,
}

fn case(lengths: Lengths, h: usize, hkv: usize, d: usize, mode: AttnMode, g: usize) -> Case {
    let mask = if mode == AttnMode::Dense {
        AttnMask::dense()
    } else {
        AttnMask::new(mode, g).unwrap()
    };
    Case {
        lengths,
        heads: AttentionHeads {
            n_heads: h,
            n_kv_heads: hkv,
            head_dim: d,
        },
        mask,
    }
}

fn equal(batch: usize, seq_len: usize) -> Lengths {
    Lengths::Equal { batch, seq_len }
}

/// Random values in [-scale, scale), rounded to bf16: the kernel's input bits and their f64 values.
fn random_bf16(rng: &mut Rng, n: usize, scale: f64) -> (Vec<u16>, Vec<f64>) {
    let values: Vec<f32> = (0..n)
        .map(|_| rng.uniform_range(-scale, scale) as f32)
        .collect();
    let bits = to_bf16(&values);
    let exact = from_bf16(&bits).into_iter().map(f64::from).collect();
    (bits, exact)
}

fn to_f64(values: &[f32]) -> Vec<f64> {
    values.iter().map(|&v| f64::from(v)).collect()
}

/// The inputs of one case, and what the f64 reference makes of them.
struct Expected {
    q: Vec<u16>,
    k: Vec<u16>,
    v: Vec<u16>,
    dout: Vec<u16>,
    out: Vec<f64>,
    lse: Vec<f64>,
    dq: Vec<f64>,
    dk: Vec<f64>,
    dv: Vec<f64>,
}

/// Runs the reference per document (positions and groups restart in each) on bf16-rounded inputs.
fn expected(case: &Case, seed: u64) -> Expected {
    let AttentionHeads {
        n_heads: h,
        n_kv_heads: hkv,
        head_dim: d,
    } = case.heads;
    let docs = case.lengths.documents();
    let tokens: usize = docs.iter().map(|&(_, len)| len).sum();
    let mut rng = Rng::new(seed);
    // Scores of a few units: peaked enough that the softmax is far from uniform.
    let (q, qf) = random_bf16(&mut rng, tokens * h * d, 2.0);
    let (k, kf) = random_bf16(&mut rng, tokens * hkv * d, 2.0);
    let (v, vf) = random_bf16(&mut rng, tokens * hkv * d, 1.0);
    let (dout, doutf) = random_bf16(&mut rng, tokens * h * d, 1.0);
    let mut e = Expected {
        q,
        k,
        v,
        dout,
        out: vec![0.0; tokens * h * d],
        lse: vec![0.0; tokens * h],
        dq: vec![0.0; tokens * h * d],
        dk: vec![0.0; tokens * hkv * d],
        dv: vec![0.0; tokens * hkv * d],
    };
    for &(start, len) in &docs {
        if len == 0 {
            continue;
        }
        let shape = AttnShape {
            batch: 1,
            seq_len: len,
            n_heads: h,
            n_kv_heads: hkv,
            head_dim: d,
        };
        let (qs, ks) = (
            start * h * d..(start + len) * h * d,
            start * hkv * d..(start + len) * hkv * d,
        );
        let lse_rows = start * h..(start + len) * h;
        reference::attention_forward(
            &mut e.out[qs.clone()],
            &mut e.lse[lse_rows.clone()],
            &qf[qs.clone()],
            &kf[ks.clone()],
            &vf[ks.clone()],
            &shape,
            &case.mask,
        );
        // The kernels' backward reads the forward's outputs as stored: out in bf16, lse in f32.
        let out_stored = to_f64(&from_bf16(&to_bf16(
            &e.out[qs.clone()]
                .iter()
                .map(|&x| x as f32)
                .collect::<Vec<_>>(),
        )));
        let lse_stored: Vec<f64> = e.lse[lse_rows].iter().map(|&x| x as f32 as f64).collect();
        reference::attention_backward(
            &mut e.dq[qs.clone()],
            &mut e.dk[ks.clone()],
            &mut e.dv[ks.clone()],
            &doutf[qs.clone()],
            &qf[qs.clone()],
            &kf[ks.clone()],
            &vf[ks],
            &out_stored,
            &lse_stored,
            &shape,
            &case.mask,
        );
    }
    e
}

/// What the kernels produced.
struct Got {
    out: Vec<f64>,
    lse: Vec<f64>,
    dq: Vec<f64>,
    dk: Vec<f64>,
    dv: Vec<f64>,
}

fn upload<T: longlora::kernels::Element>(device: &Device, data: &[T]) -> Buffer<T> {
    device.upload(data).unwrap()
}

fn bf16_f64(device: &Device, buffer: &Buffer<u16>) -> Vec<f64> {
    to_f64(&from_bf16(&device.download(buffer).unwrap()))
}

/// Forward, then backward fed with the reference's out and lse (so each pass is checked on its own).
fn run(device: &Device, case: &Case, e: &Expected, options: BackwardOptions) -> Got {
    let sequences = case.lengths.sequences(device);
    let (q, k, v, dout) = (
        upload(device, &e.q),
        upload(device, &e.k),
        upload(device, &e.v),
        upload(device, &e.dout),
    );
    let mut out = upload(device, &vec![BF16_NAN; e.q.len()]);
    let mut lse = upload(device, &vec![f32::NAN; e.lse.len()]);
    attention_forward(
        device, &mut out, &mut lse, &q, &k, &v, &sequences, case.heads, &case.mask, None,
    )
    .unwrap();

    let out_stored = upload(
        device,
        &to_bf16(&e.out.iter().map(|&x| x as f32).collect::<Vec<_>>()),
    );
    let lse_stored = upload(device, &e.lse.iter().map(|&x| x as f32).collect::<Vec<_>>());
    let mut dq = upload(device, &vec![BF16_NAN; e.q.len()]);
    let mut dk = upload(device, &vec![BF16_NAN; e.k.len()]);
    let mut dv = upload(device, &vec![BF16_NAN; e.k.len()]);
    attention_backward(
        device,
        &mut dq,
        &mut dk,
        &mut dv,
        &dout,
        &q,
        &k,
        &v,
        &out_stored,
        &lse_stored,
        &sequences,
        case.heads,
        &case.mask,
        options,
        &mut AttentionScratch::new(),
        None,
    )
    .unwrap();
    Got {
        out: bf16_f64(device, &out),
        lse: to_f64(&device.download(&lse).unwrap()),
        dq: bf16_f64(device, &dq),
        dk: bf16_f64(device, &dk),
        dv: bf16_f64(device, &dv),
    }
}

/// Runs a case and checks every output against the reference; returns the outputs.
fn check_case(device: &Device, case: &Case, seed: u64, options: BackwardOptions) -> Got {
    let e = expected(case, seed);
    let got = run(device, case, &e, options);
    let name = |tensor: &str| format!("{tensor} of {case:?} (seed {seed}, {options:?})");
    assert_close(&name("O"), &got.out, &e.out, BF16_TOLERANCE);
    assert_close(&name("LSE"), &got.lse, &e.lse, LSE_TOLERANCE);
    assert_close(&name("dQ"), &got.dq, &e.dq, BF16_TOLERANCE);
    assert_close(&name("dK"), &got.dk, &e.dk, BF16_TOLERANCE);
    assert_close(&name("dV"), &got.dv, &e.dv, BF16_TOLERANCE);
    got
}

/// A group size for length n that divides neither n nor the tiles (and covers several groups).
fn ragged_group(n: usize) -> usize {
    ((n / 3) & !1).max(2)
}

/// At both head dims: a single token; one partial block; two whole blocks (no padding); three blocks,
/// the last partial, over several K/V tiles; GQA (4 query heads on 2 kv heads: each kv head serves
/// one half, shifted or not) and non-GQA; one kv head for four query heads (the backward's GQA loop
/// mixes shifted and unshifted heads); a packed batch with a zero-length document and lengths that
/// are multiples of neither the tile nor the group. Sized for the emulator: 128-row blocks make
/// every case at least one full block of work.
fn check_mode(mode: AttnMode, seed: u64) {
    let device = Device::emulator();
    let mut cases = Vec::new();
    for d in [64, 128] {
        for (i, (batch, n)) in [(2, 1), (2, 100), (1, 256), (2, 300)]
            .into_iter()
            .enumerate()
        {
            let (h, hkv) = if (i + d / 64) % 2 == 0 {
                (4, 2)
            } else {
                (2, 2)
            };
            cases.push(case(equal(batch, n), h, hkv, d, mode, ragged_group(n)));
        }
        cases.push(case(equal(1, 200), 4, 1, d, mode, 64));
        let packed = Lengths::Packed(vec![17, 0, 100, 64, 90]);
        cases.push(case(packed, 2, 1, d, mode, 24));
    }
    for (i, c) in cases.iter().enumerate() {
        check_case(&device, c, seed + i as u64, BackwardOptions::default());
    }
}

#[test]
fn dense_attention_kernels_match_reference() {
    check_mode(AttnMode::Dense, 100);
}

#[test]
fn s2_attention_kernels_match_reference() {
    check_mode(AttnMode::S2, 200);
}

#[test]
fn s2_roll_attention_kernels_match_reference() {
    check_mode(AttnMode::S2Roll, 300);
}

#[test]
fn s2_noshift_attention_kernels_match_reference() {
    check_mode(AttnMode::S2NoShift, 350);
}

#[test]
fn groups_at_least_as_long_as_the_document_are_dense() {
    let device = Device::emulator();
    for mode in [AttnMode::S2, AttnMode::S2Roll, AttnMode::S2NoShift] {
        check_case(
            &device,
            &case(equal(1, 90), 2, 2, 64, mode, 90),
            400,
            BackwardOptions::default(),
        );
    }
}

#[test]
fn deterministic_backward_matches_reference_and_repeats_bitwise() {
    let device = Device::emulator();
    let options = BackwardOptions {
        deterministic: true,
        accumulate: false,
    };
    for (i, c) in [
        case(equal(2, 150), 4, 2, 64, AttnMode::S2, 48),
        case(
            Lengths::Packed(vec![70, 0, 33]),
            2,
            1,
            64,
            AttnMode::S2Roll,
            20,
        ),
        case(equal(1, 100), 2, 1, 128, AttnMode::Dense, 0),
    ]
    .iter()
    .enumerate()
    {
        let first = check_case(&device, c, 500 + i as u64, options);
        let second = run(&device, c, &expected(c, 500 + i as u64), options);
        for (name, a, b) in [
            ("dQ", &first.dq, &second.dq),
            ("dK", &first.dk, &second.dk),
            ("dV", &first.dv, &second.dv),
        ] {
            let same = a.iter().zip(b).all(|(x, y)| x.to_bits() == y.to_bits());
            assert!(
                same,
                "{name} of {c:?} differs between two deterministic runs"
            );
        }
    }
}

#[test]
fn accumulating_backward_adds_to_the_gradients() {
    let device = Device::emulator();
    let c = case(equal(1, 80), 2, 1, 64, AttnMode::S2, 32);
    let e = expected(&c, 700);
    let sequences = c.lengths.sequences(&device);
    let mut rng = Rng::new(701);
    let (dq0, dq0f) = random_bf16(&mut rng, e.q.len(), 1.0);
    let (dk0, dk0f) = random_bf16(&mut rng, e.k.len(), 1.0);
    let (dv0, dv0f) = random_bf16(&mut rng, e.k.len(), 1.0);
    for deterministic in [false, true] {
        let (mut dq, mut dk, mut dv) = (
            upload(&device, &dq0),
            upload(&device, &dk0),
            upload(&device, &dv0),
        );
        attention_backward(
            &device,
            &mut dq,
            &mut dk,
            &mut dv,
            &upload(&device, &e.dout),
            &upload(&device, &e.q),
            &upload(&device, &e.k),
            &upload(&device, &e.v),
            &upload(
                &device,
                &to_bf16(&e.out.iter().map(|&x| x as f32).collect::<Vec<_>>()),
            ),
            &upload(
                &device,
                &e.lse.iter().map(|&x| x as f32).collect::<Vec<_>>(),
            ),
            &sequences,
            c.heads,
            &c.mask,
            BackwardOptions {
                deterministic,
                accumulate: true,
            },
            &mut AttentionScratch::new(),
            None,
        )
        .unwrap();
        let plus = |a: &[f64], b: &[f64]| a.iter().zip(b).map(|(x, y)| x + y).collect::<Vec<_>>();
        assert_close(
            "dQ (accumulated)",
            &bf16_f64(&device, &dq),
            &plus(&dq0f, &e.dq),
            BF16_TOLERANCE,
        );
        assert_close(
            "dK (accumulated)",
            &bf16_f64(&device, &dk),
            &plus(&dk0f, &e.dk),
            BF16_TOLERANCE,
        );
        assert_close(
            "dV (accumulated)",
            &bf16_f64(&device, &dv),
            &plus(&dv0f, &e.dv),
            BF16_TOLERANCE,
        );
    }
}

/// The tiles a kernel must visit, by the exact rule: for blocks of `rows` queries against tiles of
/// `cols` keys, or, `keys_in_rows`, blocks of `rows` keys against tiles of `cols` queries, the
/// positions (first, end) of every tile holding an allowed (query, key) pair with the block, for
/// every head and block of a document of n tokens.
fn visited_tiles(
    n: usize,
    h: usize,
    mask: &AttnMask,
    (rows, cols): (usize, usize),
    keys_in_rows: bool,
) -> Vec<(usize, usize)> {
    let mut tiles = Vec::new();
    for head in 0..h {
        for block in 0..n.div_ceil(rows) {
            for tile in 0..n.div_ceil(cols) {
                let block_positions = block * rows..((block + 1) * rows).min(n);
                let tile_positions = tile * cols..((tile + 1) * cols).min(n);
                let allowed = |a: usize, b: usize| match keys_in_rows {
                    false => mask.allows(head, h, a, b, n),
                    true => mask.allows(head, h, b, a, n),
                };
                if block_positions
                    .clone()
                    .any(|a| tile_positions.clone().any(|b| allowed(a, b)))
                {
                    tiles.push((tile_positions.start, tile_positions.end));
                }
            }
        }
    }
    tiles
}

fn tiles_needed(
    n: usize,
    h: usize,
    mask: &AttnMask,
    shape: (usize, usize),
    keys_in_rows: bool,
) -> u32 {
    visited_tiles(n, h, mask, shape, keys_in_rows).len() as u32
}

/// The forward's (query block, K/V tile) shape and the dk/dv kernel's (key block, query tile) shape.
fn forward_tiles(head_dim: usize) -> (usize, usize) {
    let t = attention_tiles(head_dim);
    (t.query_block, t.forward_keys)
}

fn backward_tiles(head_dim: usize) -> (usize, usize) {
    let t = attention_tiles(head_dim);
    (t.key_block, t.backward_queries)
}

#[test]
fn s2_attention_visits_a_quarter_of_the_dense_tiles() {
    let device = Device::emulator();
    let (n, g, h, d) = (1024, 256, 2, 64);
    let heads = AttentionHeads {
        n_heads: h,
        n_kv_heads: h,
        head_dim: d,
    };
    let mut rng = Rng::new(800);
    let (q, _) = random_bf16(&mut rng, n * h * d, 2.0);
    let (q, k, v) = (
        upload(&device, &q),
        upload(&device, &q),
        upload(&device, &q),
    );
    let sequences = Sequences::equal(1, n);
    let mut visited = Vec::new();
    for mask in [
        AttnMask::dense(),
        AttnMask::new(AttnMode::S2, g).unwrap(),
        AttnMask::new(AttnMode::S2Roll, g).unwrap(),
    ] {
        let mut counter = upload(&device, &[0u32]);
        let mut out = upload(&device, &vec![BF16_NAN; n * h * d]);
        let mut lse = upload(&device, &vec![f32::NAN; n * h]);
        attention_forward(
            &device,
            &mut out,
            &mut lse,
            &q,
            &k,
            &v,
            &sequences,
            heads,
            &mask,
            Some(&mut counter),
        )
        .unwrap();
        let count = device.download(&counter).unwrap()[0];
        assert_eq!(
            count,
            tiles_needed(n, h, &mask, forward_tiles(d), false),
            "tiles visited with {mask:?}"
        );
        visited.push(count);
    }
    let ratio = f64::from(visited[1]) / f64::from(visited[0]);
    // Exactly 23 of 72 with 128 x 128 tiles at head dim 64: a group is only two tiles long here, so
    // the causal diagonal tiles of each group push it above 1/4 (at N = 32k, G = 8k: 0.253).
    assert!(
        (0.25..0.33).contains(&ratio),
        "S2 visits {ratio:.3} of the dense tiles"
    );
    println!(
        "tiles visited: dense {}, s2 {}, s2-roll {}",
        visited[0], visited[1], visited[2]
    );
}

/// Tiles visited by the forward (K/V tiles per query block) and by the backward's K/V-parallel
/// kernel (query tiles per K/V block), which must both be exactly the tiles holding an allowed pair.
fn tiles_visited(device: &Device, n: usize, h: usize, mask: &AttnMask, seed: u64) -> (u32, u32) {
    let heads = AttentionHeads {
        n_heads: h,
        n_kv_heads: 1,
        head_dim: 64,
    };
    let mut rng = Rng::new(seed);
    let (q, _) = random_bf16(&mut rng, n * h * 64, 2.0);
    let (k, _) = random_bf16(&mut rng, n * 64, 2.0);
    let (q, k) = (upload(device, &q), upload(device, &k));
    let sequences = Sequences::equal(1, n);
    let mut forward = upload(device, &[0u32]);
    let mut backward = upload(device, &[0u32]);
    let mut out = upload(device, &vec![BF16_NAN; n * h * 64]);
    let mut lse = upload(device, &vec![f32::NAN; n * h]);
    attention_forward(
        device,
        &mut out,
        &mut lse,
        &q,
        &k,
        &k,
        &sequences,
        heads,
        mask,
        Some(&mut forward),
    )
    .unwrap();
    let (mut dq, mut dk, mut dv) = (
        upload(device, &vec![0u16; n * h * 64]),
        upload(device, &vec![0u16; n * 64]),
        upload(device, &vec![0u16; n * 64]),
    );
    attention_backward(
        device,
        &mut dq,
        &mut dk,
        &mut dv,
        &q,
        &q,
        &k,
        &k,
        &out,
        &lse,
        &sequences,
        heads,
        mask,
        BackwardOptions::default(),
        &mut AttentionScratch::new(),
        Some(&mut backward),
    )
    .unwrap();
    (
        device.download(&forward).unwrap()[0],
        device.download(&backward).unwrap()[0],
    )
}

#[test]
fn kernels_visit_exactly_the_tiles_with_allowed_pairs() {
    let device = Device::emulator();
    for n in [200, 330] {
        // Groups of a few positions (many per tile), around the tile sizes, ragged, and at least
        // the whole document (plain causal).
        for g in [2, 30, 64, 66, 126, 130, (n / 3) & !1, n + 2] {
            for mode in [AttnMode::S2, AttnMode::S2Roll, AttnMode::S2NoShift] {
                let mask = AttnMask::new(mode, g).unwrap();
                let needed = (
                    tiles_needed(n, 2, &mask, forward_tiles(64), false),
                    tiles_needed(n, 2, &mask, backward_tiles(64), true),
                );
                let visited = tiles_visited(&device, n, 2, &mask, (n * 1000 + g) as u64);
                assert_eq!(
                    visited, needed,
                    "tiles visited (forward, backward) at n = {n}, {mask:?}"
                );
            }
        }
    }
}

/// Rows of the visited tiles: what a kernel reads of the tensors it streams (padding rows past the
/// document's end are zero-filled, not read).
fn tile_rows(tiles: &[(usize, usize)]) -> u64 {
    tiles.iter().map(|&(first, end)| (end - first) as u64).sum()
}

/// What the emulator counted in each kernel of an S²-Attn forward and backward (GQA: 2 query heads
/// on 1 kv head) of one document of n tokens, with the launches' kernel names.
fn counted_launches(n: usize, d: usize, deterministic: bool) -> Vec<LaunchCounters> {
    let device = Device::emulator();
    let (h, hkv) = (2, 1);
    let heads = AttentionHeads {
        n_heads: h,
        n_kv_heads: hkv,
        head_dim: d,
    };
    let mask = AttnMask::new(AttnMode::S2, 100).unwrap();
    let mut rng = Rng::new(950 + d as u64);
    let mut random = |len: usize| upload(&device, &random_bf16(&mut rng, len, 1.0).0);
    let (q, k, v, dout) = (
        random(n * h * d),
        random(n * hkv * d),
        random(n * hkv * d),
        random(n * h * d),
    );
    let sequences = Sequences::equal(1, n);
    let mut out = upload(&device, &vec![BF16_NAN; n * h * d]);
    let mut lse = upload(&device, &vec![f32::NAN; n * h]);
    let (mut dq, mut dk, mut dv) = (random(n * h * d), random(n * hkv * d), random(n * hkv * d));
    let options = BackwardOptions {
        deterministic,
        accumulate: false,
    };
    let ((), launches) = count_launches(|| {
        attention_forward(
            &device, &mut out, &mut lse, &q, &k, &v, &sequences, heads, &mask, None,
        )
        .unwrap();
        attention_backward(
            &device,
            &mut dq,
            &mut dk,
            &mut dv,
            &dout,
            &q,
            &k,
            &v,
            &out,
            &lse,
            &sequences,
            heads,
            &mask,
            options,
            &mut AttentionScratch::new(),
            None,
        )
        .unwrap();
    });
    for l in &launches {
        assert_eq!(
            (
                l.ldmatrix_bank_conflicts(),
                l.shared_store_bank_conflicts(),
                l.shared_load_bank_conflicts()
            ),
            (0, 0, 0),
            "bank conflicts (ldmatrix, st.shared, ld.shared) in {l:?}"
        );
    }
    launches
}

/// FlashAttention-2's memory traffic, proven by the emulator's counters at both head dims, and no
/// shared-memory bank conflicts in any kernel: the forward reads Q once and K, V once for each
/// (query block, K/V tile) pair the mask needs, and writes O and LSE once; the backward reads O and
/// dO once for delta, K and V once per key block (the GQA group shares them), Q, dO, LSE and delta
/// once per (key block, query tile) pair, and writes dK and dV once; dQ goes through one f32 atomic
/// per element per visited pair. Every tile pair costs 2 tile products forward and 5 backward.
#[test]
fn kernels_move_each_tensor_the_flashattention_2_number_of_times() {
    let (n, h, hkv) = (300u64, 2u64, 1u64);
    let mask = AttnMask::new(AttnMode::S2, 100).unwrap();
    for d in [64u64, 128] {
        let t = attention_tiles(d as usize);
        let (q_bytes, kv_bytes, rows) = (n * h * d * 2, n * hkv * d * 2, n * h);
        let forward = visited_tiles(n as usize, 2, &mask, forward_tiles(d as usize), false);
        let backward = visited_tiles(n as usize, 2, &mask, backward_tiles(d as usize), true);
        let launches = counted_launches(n as usize, d as usize, false);
        let names: Vec<_> = launches.iter().map(|l| l.kernel).collect();
        assert_eq!(names.len(), 4, "{names:?}");
        let (fwd, delta, dkdv, convert) = (&launches[0], &launches[1], &launches[2], &launches[3]);
        let tile_product = |rows: usize, cols: usize| (rows * cols) as u64 * d / (16 * 8 * 16);
        let context = |what: &str| format!("{what} at head dim {d}");

        assert_eq!(
            fwd.global_read_bytes,
            q_bytes + 2 * tile_rows(&forward) * d * 2,
            "{}",
            context("forward reads")
        );
        assert_eq!(
            fwd.global_write_bytes,
            q_bytes + rows * 4,
            "{}",
            context("forward writes")
        );
        assert_eq!(fwd.global_atomic_bytes, 0);
        assert_eq!(
            fwd.mma,
            forward.len() as u64 * 2 * tile_product(t.query_block, t.forward_keys),
            "{}",
            context("forward mma")
        );

        assert_eq!(
            delta.global_read_bytes,
            2 * q_bytes,
            "{}",
            context("delta reads")
        );
        // delta, and the f32 dQ accumulator cleared.
        assert_eq!(delta.global_write_bytes, rows * 4 + n * h * d * 4);

        let query_rows = tile_rows(&backward);
        assert_eq!(
            dkdv.global_read_bytes,
            2 * kv_bytes + query_rows * (2 * d * 2 + 2 * 4),
            "{}",
            context("dk/dv reads (K, V; Q, dO, LSE, delta per visited pair)")
        );
        assert_eq!(
            dkdv.global_write_bytes,
            2 * kv_bytes,
            "{}",
            context("dk/dv writes")
        );
        assert_eq!(
            dkdv.global_atomic_bytes,
            query_rows * d * 4,
            "{}",
            context("dQ atomics")
        );
        assert_eq!(
            dkdv.mma,
            backward.len() as u64 * 5 * tile_product(t.key_block, t.backward_queries),
            "{}",
            context("dk/dv mma")
        );

        assert_eq!(convert.global_read_bytes, n * h * d * 4);
        assert_eq!(convert.global_write_bytes, q_bytes);
    }
}

/// The deterministic path's traffic: no atomics; dk/dv computes 4 tile products per pair, and the dQ
/// kernel reads Q, dO, LSE and delta once and K, V once per (query block, K/V tile) pair, computes
/// S, dP and dQ again (3 products), and writes dQ once.
#[test]
fn deterministic_dq_reads_kv_once_per_visited_tile_without_atomics() {
    let (n, h, d) = (300u64, 2u64, 64u64);
    let mask = AttnMask::new(AttnMode::S2, 100).unwrap();
    let t = attention_tiles(d as usize);
    let q_bytes = n * h * d * 2;
    let backward = visited_tiles(n as usize, 2, &mask, backward_tiles(d as usize), true);
    let dq_tiles = visited_tiles(n as usize, 2, &mask, (t.query_block, t.dq_keys), false);
    let launches = counted_launches(n as usize, d as usize, true);
    let (delta, dkdv, dq) = (&launches[1], &launches[2], &launches[3]);
    let tile_product = |rows: usize, cols: usize| (rows * cols) as u64 * d / (16 * 8 * 16);
    assert_eq!(
        delta.global_write_bytes,
        n * h * 4,
        "delta only: no dQ accumulator"
    );
    assert_eq!(dkdv.global_atomic_bytes + dq.global_atomic_bytes, 0);
    assert_eq!(
        dkdv.mma,
        backward.len() as u64 * 4 * tile_product(t.key_block, t.backward_queries)
    );
    assert_eq!(
        dq.global_read_bytes,
        2 * q_bytes + n * h * 2 * 4 + 2 * tile_rows(&dq_tiles) * d * 2
    );
    assert_eq!(dq.global_write_bytes, q_bytes);
    assert_eq!(
        dq.mma,
        dq_tiles.len() as u64 * 3 * tile_product(t.query_block, t.dq_keys)
    );
}

fn forward_error(device: &Device, c: &Case, q_len: usize, kv_len: usize) -> String {
    let sequences = c.lengths.sequences(device);
    let rows = sequences.tokens() * c.heads.n_heads;
    let q = upload(device, &vec![0u16; q_len]);
    let kv = upload(device, &vec![0u16; kv_len]);
    let mut out = upload(device, &vec![0u16; q_len]);
    let mut lse = upload(device, &vec![0f32; rows]);
    attention_forward(
        device, &mut out, &mut lse, &q, &kv, &kv, &sequences, c.heads, &c.mask, None,
    )
    .unwrap_err()
    .to_string()
}

#[test]
fn invalid_attention_arguments_are_rejected_with_clear_errors() {
    let device = Device::emulator();
    let sizes = |c: &Case| {
        let t = c.lengths.documents().iter().map(|&(_, l)| l).sum::<usize>();
        (
            t * c.heads.n_heads * c.heads.head_dim,
            t * c.heads.n_kv_heads * c.heads.head_dim,
        )
    };
    let c = case(equal(1, 8), 2, 2, 96, AttnMode::Dense, 0);
    let (ql, kl) = sizes(&c);
    assert_eq!(
        forward_error(&device, &c, ql, kl),
        "attention_forward_d64_kernel: invalid head_dim: expected 64 or 128, got 96"
    );
    let c = case(equal(1, 8), 3, 2, 64, AttnMode::Dense, 0);
    let (ql, kl) = sizes(&c);
    assert_eq!(
        forward_error(&device, &c, ql, kl),
        "attention_forward_d64_kernel: invalid n_kv_heads: expected a positive divisor of n_heads = 3, got 2"
    );
    let mut c = case(equal(1, 8), 2, 2, 64, AttnMode::S2, 4);
    c.mask.group_size = 5;
    let (ql, kl) = sizes(&c);
    assert_eq!(
        forward_error(&device, &c, ql, kl),
        "attention_forward_d64_kernel: invalid group_size: expected an even number of at least 2, got 5"
    );
    let c = case(equal(2, 8), 2, 1, 64, AttnMode::Dense, 0);
    let (ql, kl) = sizes(&c);
    assert_eq!(
        forward_error(&device, &c, ql - 1, kl),
        format!(
            "attention_forward_d64_kernel: invalid q: expected {ql} elements, got {} elements",
            ql - 1
        )
    );
    assert_eq!(
        forward_error(&device, &c, ql, kl + 64),
        format!(
            "attention_forward_d64_kernel: invalid k: expected {kl} elements, got {} elements",
            kl + 64
        )
    );
    let error = Sequences::packed(&device, &[0, 5, 3])
        .err()
        .unwrap()
        .to_string();
    assert_eq!(
        error,
        "attention: invalid cu_seqlens: expected non-decreasing offsets, got 3 after 5"
    );
    let error = Sequences::packed(&device, &[1, 5])
        .err()
        .unwrap()
        .to_string();
    assert_eq!(
        error,
        "attention: invalid cu_seqlens: expected at least two offsets, the first 0, got [1, 5]"
    );
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 6, ..ProptestConfig::default() })]

    #[test]
    fn attention_kernels_match_reference_on_small_shapes(
        lens in prop::collection::vec(0usize..140, 1..3),
        packed in any::<bool>(),
        heads in prop::sample::select(vec![(1, 1), (2, 1), (2, 2), (4, 2), (4, 1)]),
        mode in prop::sample::select(AttnMode::ALL.to_vec()),
        half_group in 1usize..80,
        seed in 0u64..1_000_000,
    ) {
        let lengths = if packed {
            Lengths::Packed(lens)
        } else {
            equal(lens.len(), lens[0].max(1))
        };
        let c = case(lengths, heads.0, heads.1, 64, mode, 2 * half_group);
        check_case(&Device::emulator(), &c, seed, BackwardOptions { deterministic: seed % 2 == 0, accumulate: false });
    }
}

#[test]
#[ignore = "needs a CUDA GPU"]
fn gpu_attention_kernels_match_reference() {
    let device = gpu();
    let mut seed = 900;
    for mode in AttnMode::ALL {
        for d in [64, 128] {
            for c in [
                case(equal(2, 320), 4, 2, d, mode, 80),
                case(equal(2, 17), 2, 2, d, mode, 4),
                case(Lengths::Packed(vec![17, 0, 100, 64, 90]), 4, 1, d, mode, 24),
            ] {
                for deterministic in [false, true] {
                    let options = BackwardOptions {
                        deterministic,
                        accumulate: false,
                    };
                    check_case(&device, &c, seed, options);
                    seed += 1;
                }
            }
        }
    }
}
