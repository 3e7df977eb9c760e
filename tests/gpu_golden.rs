//! GPU golden vectors (DESIGN §5): a session with a GPU records the probe kernel's raw per-lane
//! outputs on real hardware (`cargo test --test gpu_golden -- --ignored record`, into
//! `$LONGLORA_RECORD_GOLDEN` or the fixture directory, or `scripts/gpu-pack.sh`), the fixture is
//! committed under `tests/fixtures/gpu_golden/` (recorded on an NVIDIA H200, driver 580.159.04,
//! 2026-12-04), and every `cargo test` holds the emulator to the hardware's own answers.

mod common;

use std::path::{Path, PathBuf};

use common::device::gpu;
use common::probe::random_inputs;
use longlora::kernels::self_test::{probe, ProbeInputs, ProbeOutputs};
use longlora::kernels::Device;
use serde_json::{json, Value};

/// Seeds and shuffle widths of the recorded cases.
const CASES: [(u64, u32); 6] = [(100, 32), (101, 16), (102, 8), (103, 4), (104, 2), (105, 1)];

/// Tensor cores accumulate in their own order; DESIGN §5's layouts must match exactly, the sums
/// only to within that rounding (the same bound as the GPU-vs-definition test).
const MMA_TOLERANCE: f32 = 1.6e-4;

fn fixture_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/gpu_golden")
}

fn inputs_json(i: &ProbeInputs) -> Value {
    json!({
        "mma_bf16_a": i.mma_bf16_a.to_vec(), "mma_bf16_b": i.mma_bf16_b.to_vec(),
        "mma_f16_a": i.mma_f16_a.to_vec(), "mma_f16_b": i.mma_f16_b.to_vec(),
        "mma_c": i.mma_c.to_vec(), "ldmatrix_source": i.ldmatrix_source.to_vec(),
        "ldmatrix_rows": i.ldmatrix_rows.to_vec(), "shuffle_values": i.shuffle_values.to_vec(),
        "shuffle_sources": i.shuffle_sources.to_vec(), "shuffle_delta": i.shuffle_delta,
        "shuffle_xor_mask": i.shuffle_xor_mask, "shuffle_width": i.shuffle_width,
    })
}

fn outputs_json(o: &ProbeOutputs) -> Value {
    json!({"mma_bf16_d": o.mma_bf16_d, "mma_f16_d": o.mma_f16_d, "ldmatrix": o.ldmatrix, "shuffles": o.shuffles})
}

fn array<T: serde::de::DeserializeOwned, const N: usize>(v: &Value, key: &str) -> [T; N] {
    let items: Vec<T> =
        serde_json::from_value(v[key].clone()).unwrap_or_else(|e| panic!("fixture `{key}`: {e}"));
    items
        .try_into()
        .unwrap_or_else(|_| panic!("fixture `{key}` must have {N} entries"))
}

fn inputs_from(v: &Value) -> ProbeInputs {
    let scalar = |key: &str| v[key].as_u64().unwrap_or_else(|| panic!("fixture `{key}`")) as u32;
    ProbeInputs {
        mma_bf16_a: array(v, "mma_bf16_a"),
        mma_bf16_b: array(v, "mma_bf16_b"),
        mma_f16_a: array(v, "mma_f16_a"),
        mma_f16_b: array(v, "mma_f16_b"),
        mma_c: array(v, "mma_c"),
        ldmatrix_source: array(v, "ldmatrix_source"),
        ldmatrix_rows: array(v, "ldmatrix_rows"),
        shuffle_values: array(v, "shuffle_values"),
        shuffle_sources: array(v, "shuffle_sources"),
        shuffle_delta: scalar("shuffle_delta"),
        shuffle_xor_mask: scalar("shuffle_xor_mask"),
        shuffle_width: scalar("shuffle_width"),
    }
}

fn vec_of<T: serde::de::DeserializeOwned>(v: &Value, key: &str) -> Vec<T> {
    serde_json::from_value(v[key].clone()).unwrap_or_else(|e| panic!("fixture `{key}`: {e}"))
}

#[test]
#[ignore = "needs a CUDA GPU"]
fn record_gpu_golden_vectors() {
    let dir = std::env::var_os("LONGLORA_RECORD_GOLDEN").map_or_else(fixture_dir, PathBuf::from);
    let gpu = gpu();
    let cases: Vec<Value> = CASES
        .iter()
        .map(|&(seed, width)| {
            let inputs = random_inputs(seed, width);
            let outputs = probe(&gpu, &inputs).expect("probe runs on the GPU");
            json!({"seed": seed, "inputs": inputs_json(&inputs), "outputs": outputs_json(&outputs)})
        })
        .collect();
    let fixture = json!({"gpu": gpu.name(), "cases": cases});
    let path = Path::new(&dir).join("probe.json");
    std::fs::create_dir_all(&dir).expect("fixture directory");
    std::fs::write(&path, serde_json::to_string(&fixture).expect("JSON")).expect("fixture written");
    println!(
        "recorded {} probe cases from {} into {}",
        CASES.len(),
        gpu.name(),
        path.display()
    );
}

#[test]
fn emulator_matches_gpu_golden_vectors() {
    let path = fixture_dir().join("probe.json");
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{}: {e}: record it on a GPU first", path.display()));
    let fixture: Value = serde_json::from_str(&text).expect("valid fixture JSON");
    let cases = fixture["cases"].as_array().expect("fixture `cases`");
    assert!(!cases.is_empty(), "the fixture holds no cases");
    let emulator = Device::emulator();
    for case in cases {
        let seed = case["seed"].as_u64().unwrap_or(0);
        let got =
            probe(&emulator, &inputs_from(&case["inputs"])).expect("probe runs in the emulator");
        let want = &case["outputs"];
        assert_eq!(
            got.ldmatrix,
            vec_of::<u32>(want, "ldmatrix"),
            "ldmatrix differs from {} (seed {seed})",
            fixture["gpu"]
        );
        assert_eq!(
            got.shuffles,
            vec_of::<u32>(want, "shuffles"),
            "shuffles differ from {} (seed {seed})",
            fixture["gpu"]
        );
        for key in ["mma_bf16_d", "mma_f16_d"] {
            let got = if key == "mma_bf16_d" {
                &got.mma_bf16_d
            } else {
                &got.mma_f16_d
            };
            for (lane_reg, (g, w)) in got.iter().zip(vec_of::<f32>(want, key)).enumerate() {
                assert!(
                    (g - w).abs() <= MMA_TOLERANCE,
                    "{key} lane {} register {}: emulator {g}, {} {w} (seed {seed})",
                    lane_reg / 4,
                    lane_reg % 4,
                    fixture["gpu"]
                );
            }
        }
    }
}
