//! The `harness` binary end to end: a reduced default fine-tune lowers the held-out loss and writes
//! its outputs; eval prints one JSON object; bad input exits non-zero with a clear message.

mod common;

use common::{harness, json, stderr};

#[test]
fn reduced_default_finetune_lowers_the_heldout_loss_and_writes_its_outputs() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("run");
    let o = harness(&[
        "finetune",
        "--pretrain-steps",
        "40",
        "--steps",
        "20",
        "--context",
        "512",
        "--eval-windows",
        "2",
        "--output",
        out.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "finetune failed: {}", stderr(&o));
    let run = json(&out.join("run.json"));
    let before = run["heldout_loss_before"].as_f64().unwrap();
    let after = run["heldout_loss_after"].as_f64().unwrap();
    assert!(
        after < before,
        "held-out loss did not fall: {before} -> {after}"
    );
    assert_eq!(run["rope_factor"].as_f64(), Some(2.0));
    for f in [
        "adapter_model.safetensors",
        "adapter_config.json",
        "trainable_params.safetensors",
        "metrics.jsonl",
        "model/config.json",
        "model/model.safetensors",
        "base-model/model.safetensors",
    ] {
        assert!(out.join(f).is_file(), "missing output {f}");
    }
    let steps = std::fs::read_to_string(out.join("metrics.jsonl")).unwrap();
    assert_eq!(steps.lines().count(), 20);

    let text = dir.path().join("text.txt");
    std::fs::write(&text, "The quiet river rests near the stone. ".repeat(40)).unwrap();
    let model = out.join("model");
    let o = harness(&[
        "eval",
        "--model",
        model.to_str().unwrap(),
        "--data",
        text.to_str().unwrap(),
        "--context",
        "256",
        "--stride",
        "512",
    ]);
    assert!(o.status.success(), "eval failed: {}", stderr(&o));
    let result: serde_json::Value = serde_json::from_slice(&o.stdout).expect("one JSON object");
    assert_eq!(result["windows"], 3);
    assert_eq!(result["tokens_scored"], 3 * 256);
    let (loss, ppl) = (
        result["mean_loss"].as_f64().unwrap(),
        result["perplexity"].as_f64().unwrap(),
    );
    assert!((ppl - loss.exp()).abs() < 1e-9 * ppl);

    let again = harness(&[
        "finetune",
        "--steps",
        "1",
        "--output",
        out.to_str().unwrap(),
    ]);
    assert!(
        !again.status.success(),
        "a previous run's directory was overwritten"
    );
    assert!(stderr(&again).contains("--overwrite"), "{}", stderr(&again));
}

#[test]
fn a_context_the_group_ratio_cannot_split_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let o = harness(&[
        "finetune",
        "--pretrain-steps",
        "1",
        "--context",
        "1028",
        "--group-ratio",
        "0.25",
        "--output",
        dir.path().join("r").to_str().unwrap(),
    ]);
    assert!(!o.status.success());
    let e = stderr(&o);
    assert!(e.contains("error: invalid option --group-ratio:"), "{e}");
    assert!(!e.contains("panicked"), "{e}");
}

#[test]
fn missing_model_directory_is_a_clear_error() {
    let o = harness(&[
        "eval",
        "--model",
        "/nonexistent/model",
        "--data",
        "/nonexistent.txt",
        "--context",
        "8",
    ]);
    assert!(!o.status.success());
    let e = stderr(&o);
    assert!(
        e.contains("/nonexistent/model") && !e.contains("panicked"),
        "{e}"
    );
}

#[test]
fn eval_runs_on_the_emulated_kernels_and_cuda_without_a_gpu_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let text = dir.path().join("text.txt");
    std::fs::write(&text, "The quiet river rests near the stone. ".repeat(8)).unwrap();
    let eval = |device: &str| {
        harness(&[
            "eval",
            "--data",
            text.to_str().unwrap(),
            "--context",
            "64",
            "--max-windows",
            "1",
            "--device",
            device,
        ])
    };
    let emu = eval("emu");
    assert!(
        emu.status.success(),
        "eval on the emulator: {}",
        stderr(&emu)
    );
    assert!(stderr(&emu).contains("emulator"), "{}", stderr(&emu));
    let on_cpu: serde_json::Value = serde_json::from_slice(&eval("cpu").stdout).unwrap();
    let on_emu: serde_json::Value = serde_json::from_slice(&emu.stdout).unwrap();
    let (cpu_loss, emu_loss) = (
        on_cpu["mean_loss"].as_f64().unwrap(),
        on_emu["mean_loss"].as_f64().unwrap(),
    );
    assert!(
        (cpu_loss - emu_loss).abs() <= 1e-2 * cpu_loss,
        "loss on the CPU {cpu_loss}, on the emulated kernels {emu_loss}"
    );

    use longlora::kernels::{built_with_kernels, Device};
    if built_with_kernels() && Device::cuda_device_count() > 0 {
        println!("skipped the no-GPU error: a GPU is present");
        return;
    }
    let cuda = eval("cuda");
    assert!(!cuda.status.success(), "--device cuda ran without a GPU");
    let e = stderr(&cuda);
    assert!(e.contains("error: invalid option --device: cuda"), "{e}");
    assert!(!e.contains("panicked"), "{e}");
}

#[test]
fn full_fine_tuning_on_the_kernels_is_refused_before_any_work() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("run");
    let o = harness(&[
        "finetune",
        "--device",
        "emu",
        "--trainable",
        "full",
        "--output",
        out.to_str().unwrap(),
    ]);
    assert!(!o.status.success());
    let e = stderr(&o);
    assert!(
        e.contains("error: invalid option --trainable") && e.contains("--device cpu"),
        "{e}"
    );
    assert!(
        !out.exists(),
        "the refused run created its output directory"
    );
}
