//! Runs that survive and bad input that gets a clear error, through the `harness` binary:
//! Ctrl-C then --resume reproduces the uninterrupted run; a merged model evaluates like the base
//! model with the adapter; each bad input of the issue exits non-zero naming what is wrong.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::{curve, harness, s, stderr};

/// Asserts a clean failure whose message contains every one of `needles`.
fn fails_with(o: &Output, needles: &[&str]) -> String {
    let e = stderr(o);
    assert!(!o.status.success(), "expected a failure, got success: {e}");
    assert!(e.contains("error:") && !e.contains("panicked"), "{e}");
    for n in needles {
        assert!(e.contains(n), "expected `{n}` in: {e}");
    }
    e
}

/// A short fine-tune of the built-in model (one pre-training step) at context 512.
fn finetune_args(steps: usize, extra: &[&str]) -> Vec<String> {
    let mut v: Vec<String> = [
        "finetune",
        "--pretrain-steps",
        "1",
        "--context",
        "512",
        "--eval-windows",
        "1",
    ]
    .iter()
    .map(|a| a.to_string())
    .collect();
    v.extend(["--steps".into(), steps.to_string()]);
    v.extend(extra.iter().map(|a| a.to_string()));
    v
}

fn run_finetune(steps: usize, extra: &[&str]) -> Output {
    let args = finetune_args(steps, extra);
    harness(&args.iter().map(String::as_str).collect::<Vec<_>>())
}

#[test]
fn ctrl_c_saves_and_resume_reproduces_the_uninterrupted_run_bit_for_bit() {
    let dir = tempfile::tempdir().unwrap();
    let (straight, cut) = (dir.path().join("straight"), dir.path().join("cut"));
    const STEPS: usize = 24;
    let o = run_finetune(STEPS, &["--save-every", "5", "--output", s(&straight)]);
    assert!(o.status.success(), "{}", stderr(&o));

    let args = finetune_args(STEPS, &["--save-every", "5", "--output", s(&cut)]);
    let child = Command::new(env!("CARGO_BIN_EXE_harness"))
        .args(&args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let metrics = cut.join("metrics.jsonl");
    let deadline = Instant::now() + Duration::from_secs(120);
    while std::fs::read_to_string(&metrics).map_or(true, |t| t.is_empty()) {
        assert!(Instant::now() < deadline, "no step was ever written");
        std::thread::sleep(Duration::from_millis(20));
    }
    let killed = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    let o = child.wait_with_output().unwrap();
    assert_eq!(o.status.code(), Some(130), "SIGINT's exit status");
    let e = fails_with(
        &o,
        &["interrupted by SIGINT", "to continue:", "--resume", s(&cut)],
    );
    let done = curve(&cut.join("metrics.jsonl")).len();
    assert!(done < STEPS, "the run finished before the signal: {e}");
    let checkpoint = cut.join(format!("checkpoint-{done:06}"));
    assert!(checkpoint.join("state.json").is_file(), "{e}");

    let o = run_finetune(STEPS, &["--save-every", "5", "--resume", s(&cut)]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(
        curve(&cut.join("metrics.jsonl")),
        curve(&straight.join("metrics.jsonl")),
        "loss curves differ"
    );
    for f in ["adapter_model.safetensors", "trainable_params.safetensors"] {
        assert!(
            std::fs::read(cut.join(f)).unwrap() == std::fs::read(straight.join(f)).unwrap(),
            "{f} differs"
        );
    }
}

#[test]
fn a_resume_with_different_options_names_the_option() {
    let dir = tempfile::tempdir().unwrap();
    let run = dir.path().join("run");
    let o = run_finetune(2, &["--save-every", "1", "--output", s(&run)]);
    assert!(o.status.success(), "{}", stderr(&o));
    let o = run_finetune(2, &["--lr", "0.5", "--resume", s(&run)]);
    fails_with(&o, &["lr", "checkpoint-000002"]);
    let o = run_finetune(3, &["--resume", s(&dir.path().join("nothing-here"))]);
    fails_with(&o, &["resume", "nothing-here"]);
}

#[test]
fn a_non_finite_loss_stops_the_run_names_the_step_and_keeps_the_last_good_checkpoint() {
    let dir = tempfile::tempdir().unwrap();
    let run = dir.path().join("run");
    let o = run_finetune(
        20,
        &[
            "--lr",
            "1e30",
            "--warmup-steps",
            "0",
            "--save-every",
            "1",
            "--output",
            s(&run),
        ],
    );
    let e = fails_with(&o, &["diverged at step", "last good checkpoint"]);
    let steps = curve(&run.join("metrics.jsonl")).len();
    assert!(e.contains(&format!("step {}", steps + 1)), "{e}");
    let kept = run.join(format!("checkpoint-{steps:06}"));
    assert!(
        e.contains(s(&kept)) && kept.join("state.json").is_file(),
        "{e}"
    );
}

/// A finished built-in run in `dir/run` (with its base model in `run/base-model`).
fn finished_run(dir: &Path) -> PathBuf {
    let run = dir.join("run");
    let o = run_finetune(3, &["--lr", "1e-2", "--output", s(&run)]);
    assert!(o.status.success(), "{}", stderr(&o));
    run
}

fn eval_loss(args: &[&str]) -> f64 {
    let o = harness(args);
    assert!(o.status.success(), "{}", stderr(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    v["mean_loss"].as_f64().unwrap()
}

#[test]
fn merged_model_evaluates_like_eval_with_the_adapter() {
    let dir = tempfile::tempdir().unwrap();
    let run = finished_run(dir.path());
    let base = run.join("base-model");
    let merged = dir.path().join("merged");
    let o = harness(&[
        "merge",
        "--model",
        s(&base),
        "--adapter",
        s(&run),
        "--out",
        s(&merged),
        "--max-shard-size",
        "2MB",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(merged.join("model.safetensors.index.json").is_file());
    let shards = std::fs::read_dir(&merged)
        .unwrap()
        .filter(|e| {
            let name = e.as_ref().unwrap().file_name();
            let name = name.to_string_lossy();
            name.starts_with("model-0000") && name.ends_with(".safetensors")
        })
        .count();
    assert!(
        shards >= 4,
        "a 13 MB model in 2 MB shards, got {shards} files"
    );
    let read = |dir: &Path| std::fs::read(dir.join("tokenizer.json")).unwrap();
    assert_eq!(read(&merged), read(&base), "tokenizer.json copied");
    let config: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(merged.join("config.json")).unwrap())
            .unwrap();
    assert_eq!(config["max_position_embeddings"], 512);
    assert_eq!(config["rope_scaling"]["factor"], 2.0);

    let text = dir.path().join("text.txt");
    std::fs::write(&text, "The grass is green. The sky is blue. ".repeat(60)).unwrap();
    let common = ["--data", s(&text), "--context", "512", "--stride", "512"];
    let with_adapter = eval_loss(
        &[
            &["eval", "--model", s(&base), "--adapter", s(&run)][..],
            &common,
        ]
        .concat(),
    );
    let merged_loss = eval_loss(&[&["eval", "--model", s(&merged)][..], &common].concat());
    let base_loss = eval_loss(&[&["eval", "--model", s(&base)][..], &common].concat());
    let rel = (merged_loss - with_adapter).abs() / with_adapter;
    assert!(
        rel <= 1e-6,
        "merged {merged_loss} vs base + adapter {with_adapter}"
    );
    assert!(
        (base_loss - with_adapter).abs() > 1e-4,
        "the adapter must change the loss ({base_loss}) for this test to mean anything"
    );

    let o = harness(&[
        "merge",
        "--model",
        s(&base),
        "--adapter",
        s(&run),
        "--out",
        s(&merged),
    ]);
    fails_with(&o, &["--out", "--overwrite"]);
}

#[test]
fn an_existing_output_directory_is_not_overwritten_without_overwrite() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("run");
    std::fs::create_dir(&out).unwrap();
    std::fs::write(out.join("precious.txt"), "keep").unwrap();
    let o = run_finetune(1, &["--output", s(&out)]);
    fails_with(&o, &["--output", "--overwrite"]);
    assert_eq!(
        std::fs::read_to_string(out.join("precious.txt")).unwrap(),
        "keep"
    );
}

#[test]
fn missing_data_and_data_shorter_than_one_context_are_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("missing.txt");
    let o = run_finetune(
        1,
        &["--data", s(&missing), "--output", s(&dir.path().join("a"))],
    );
    fails_with(&o, &[s(&missing)]);

    let short = dir.path().join("short.txt");
    std::fs::write(&short, "too short for a 512-token window").unwrap();
    let o = run_finetune(
        1,
        &["--data", s(&short), "--output", s(&dir.path().join("b"))],
    );
    fails_with(&o, &["512"]);
}

#[test]
fn a_model_directory_without_config_or_weights_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let run = finished_run(dir.path());
    let text = dir.path().join("text.txt");
    std::fs::write(&text, "x".repeat(100)).unwrap();
    let no_config = dir.path().join("no-config");
    let no_weights = dir.path().join("no-weights");
    for d in [&no_config, &no_weights] {
        std::fs::create_dir(d).unwrap();
    }
    std::fs::copy(
        run.join("base-model/model.safetensors"),
        no_config.join("model.safetensors"),
    )
    .unwrap();
    std::fs::copy(
        run.join("base-model/config.json"),
        no_weights.join("config.json"),
    )
    .unwrap();
    let eval = |model: &Path| {
        harness(&[
            "eval",
            "--model",
            s(model),
            "--data",
            s(&text),
            "--context",
            "8",
        ])
    };
    fails_with(&eval(&no_config), &["config.json"]);
    fails_with(&eval(&no_weights), &["safetensors"]);
}

#[test]
fn out_of_range_token_ids_in_a_token_file_are_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let tokens = dir.path().join("tokens.bin");
    let mut bytes = Vec::new();
    for i in 0..64u16 {
        let id = if i == 40 { 9000 } else { i };
        bytes.extend_from_slice(&id.to_le_bytes());
    }
    std::fs::write(&tokens, bytes).unwrap();
    let o = harness(&[
        "eval",
        "--tokens",
        s(&tokens),
        "--context",
        "16",
        "--stride",
        "8",
    ]);
    fails_with(&o, &["9000", "index 40", s(&tokens)]);
}

#[test]
fn overwriting_a_run_directory_drops_the_previous_runs_checkpoints() {
    let dir = tempfile::tempdir().unwrap();
    let run = dir.path().join("run");
    let first = ["--seed", "1", "--save-every", "2", "--output", s(&run)];
    assert!(run_finetune(2, &first).status.success());
    let second = [
        "--seed",
        "2",
        "--save-every",
        "2",
        "--overwrite",
        "--output",
        s(&run),
    ];
    let o = run_finetune(2, &second);
    assert!(o.status.success(), "{}", stderr(&o));
    let o = run_finetune(2, &["--seed", "1", "--resume", s(&run)]);
    fails_with(&o, &["seed"]);
    let o = run_finetune(2, &["--seed", "2", "--resume", s(&run)]);
    assert!(o.status.success(), "{}", stderr(&o));
}

#[test]
fn a_full_fine_tune_saves_no_adapter_and_evaluates_through_its_trainable_params() {
    let dir = tempfile::tempdir().unwrap();
    let run = dir.path().join("run");
    let o = run_finetune(2, &["--trainable", "full", "--output", s(&run)]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(!run.join("adapter_config.json").exists());
    let text = dir.path().join("text.txt");
    std::fs::write(&text, "There and back again. ".repeat(60)).unwrap();
    let common = ["--data", s(&text), "--context", "512", "--stride", "512"];
    let base = run.join("base-model");
    let with_run = eval_loss(
        &[
            &["eval", "--model", s(&base), "--adapter", s(&run)][..],
            &common,
        ]
        .concat(),
    );
    let merged = eval_loss(&[&["eval", "--model", s(&run.join("model"))][..], &common].concat());
    assert_eq!(with_run.to_bits(), merged.to_bits());
    let o = harness(
        &[
            &["eval", "--model", s(&base), "--adapter", s(dir.path())][..],
            &common,
        ]
        .concat(),
    );
    fails_with(&o, &["adapter_config.json", "trainable_params.safetensors"]);
}
