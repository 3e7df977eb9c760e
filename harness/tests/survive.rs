//! Runs that survive what a cluster does to a job, through the `harness` binary: SIGTERM and
//! SIGHUP (also during the built-in model's pre-training) save, exit with 128 + the signal and
//! resume bit for bit; a second run into a busy directory fails at once naming the first, and a
//! killed run's lock does not block; a damaged newest checkpoint falls back to the one before; a
//! constant-schedule run is extended by a resume with more steps; token files need no tokenizer.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::{curve, harness, json, s, stderr};
use longlora::hf::save_model;
use longlora::model::{LlamaConfig, LlamaWeights};
use longlora::rng::Rng;

/// A short fine-tune of the built-in model at its own context (256).
fn finetune_args(pretrain_steps: usize, steps: usize, extra: &[&str]) -> Vec<String> {
    let mut v: Vec<String> = ["finetune", "--context", "256", "--eval-windows", "1"]
        .iter()
        .map(|a| a.to_string())
        .collect();
    v.extend(["--pretrain-steps".into(), pretrain_steps.to_string()]);
    v.extend(["--steps".into(), steps.to_string()]);
    v.extend(extra.iter().map(|a| a.to_string()));
    v
}

fn run(args: &[String]) -> Output {
    harness(&args.iter().map(String::as_str).collect::<Vec<_>>())
}

fn succeeds(args: &[String]) -> Output {
    let o = run(args);
    assert!(o.status.success(), "{args:?}: {}", stderr(&o));
    o
}

fn spawn(args: &[String]) -> Child {
    Command::new(env!("CARGO_BIN_EXE_harness"))
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

/// Waits until `file` exists and is not empty.
fn wait_for(file: &Path) {
    let deadline = Instant::now() + Duration::from_secs(300);
    while std::fs::read(file).map_or(true, |t| t.is_empty()) {
        assert!(
            Instant::now() < deadline,
            "{} never appeared",
            file.display()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn signal(child: &Child, name: &str) {
    let sent = Command::new("kill")
        .args([&format!("-{name}"), &child.id().to_string()])
        .status()
        .unwrap();
    assert!(sent.success());
}

/// Every loss curve of a built-in run: the pre-training's and the fine-tune's.
fn curves(run: &Path) -> [Vec<(u64, u64, u64)>; 2] {
    [
        curve(&run.join("base-model/metrics.jsonl")),
        curve(&run.join("metrics.jsonl")),
    ]
}

fn checkpoints(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("checkpoint-"))
        .collect();
    names.sort();
    names
}

/// Stops a run of `args` with `name` once `progress` has a line, checks the exit status and
/// the saved checkpoint in `checkpoint_dir`, and resumes it to the end.
fn stop_and_resume(args: &[String], progress: &Path, name: &str, status: i32, out: &Path) {
    let child = spawn(args);
    wait_for(progress);
    signal(&child, name);
    let o = child.wait_with_output().unwrap();
    let e = stderr(&o);
    assert_eq!(o.status.code(), Some(status), "{name}: {e}");
    assert!(e.contains(&format!("interrupted by {name}")), "{e}");
    let command = e
        .lines()
        .find_map(|l| l.strip_prefix("to continue: "))
        .unwrap_or_else(|| panic!("no resume command in {e}"));
    assert!(
        command.ends_with(&format!("--resume {}", s(out))),
        "{command}"
    );
    let saved = checkpoints(progress.parent().unwrap());
    assert_eq!(saved.len(), 1, "{name}: {saved:?}: {e}");
    let resume: Vec<String> = args
        .iter()
        .map(|a| {
            if a == "--output" {
                "--resume".into()
            } else {
                a.clone()
            }
        })
        .collect();
    succeeds(&resume);
}

#[test]
fn sigterm_and_sighup_save_exit_with_the_signal_and_resume_bit_for_bit() {
    let dir = tempfile::tempdir().unwrap();
    let out = |name: &str| dir.path().join(name);
    let args = |o: &PathBuf| finetune_args(4, 4, &["--output", s(o)]);
    succeeds(&args(&out("straight")));
    assert_eq!(
        checkpoints(&out("straight")),
        ["checkpoint-000004"],
        "a constant-schedule run ends with a checkpoint"
    );

    // SIGHUP during the built-in model's pre-training, SIGTERM during the fine-tune.
    let during_pretraining = out("hup");
    stop_and_resume(
        &args(&during_pretraining),
        &during_pretraining.join("base-model/metrics.jsonl"),
        "SIGHUP",
        129,
        &during_pretraining,
    );
    let during_finetune = out("term");
    stop_and_resume(
        &args(&during_finetune),
        &during_finetune.join("metrics.jsonl"),
        "SIGTERM",
        143,
        &during_finetune,
    );
    let want = curves(&out("straight"));
    assert_eq!(want[0].len(), 4);
    assert_eq!(want[1].len(), 4);
    for run in [&during_pretraining, &during_finetune] {
        assert_eq!(curves(run), want, "{}", run.display());
        for f in ["adapter_model.safetensors", "base-model/model.safetensors"] {
            assert!(
                std::fs::read(run.join(f)).unwrap()
                    == std::fs::read(out("straight").join(f)).unwrap(),
                "{f} differs"
            );
        }
    }
}

#[test]
fn a_second_run_into_a_busy_directory_fails_at_once_and_a_killed_runs_lock_does_not_block() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("run");
    let first = spawn(&finetune_args(200, 1, &["--output", s(&out)]));
    wait_for(&out.join(".lock"));
    let started = Instant::now();
    let o = run(&finetune_args(1, 1, &["--output", s(&out), "--overwrite"]));
    let e = stderr(&o);
    assert!(!o.status.success(), "{e}");
    assert!(
        e.contains("locked") && e.contains(&format!("pid {}", first.id())),
        "{e}"
    );
    assert!(e.contains("finetune"), "the holder's command line: {e}");
    let o = run(&finetune_args(1, 1, &["--output", s(&out)]));
    assert!(stderr(&o).contains("locked"), "{}", stderr(&o));
    assert!(
        started.elapsed() < Duration::from_secs(60),
        "refused only after {:?}",
        started.elapsed()
    );

    let mut first = first;
    first.kill().unwrap();
    first.wait().unwrap();
    succeeds(&finetune_args(1, 1, &["--output", s(&out), "--overwrite"]));
}

#[test]
fn a_damaged_newest_checkpoint_is_named_and_the_run_resumes_from_the_one_before() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("run");
    let args = finetune_args(1, 4, &["--save-every", "1", "--output", s(&out)]);
    succeeds(&args);
    let want = curve(&out.join("metrics.jsonl"));
    assert_eq!(
        checkpoints(&out),
        ["checkpoint-000003", "checkpoint-000004"]
    );
    let damaged = out.join("checkpoint-000004/trained.safetensors");
    let mut bytes = std::fs::read(&damaged).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 1;
    std::fs::write(&damaged, bytes).unwrap();

    let o = succeeds(&finetune_args(
        1,
        4,
        &["--save-every", "1", "--resume", s(&out)],
    ));
    let e = stderr(&o);
    assert!(e.contains(s(&damaged)) && e.contains("falling back"), "{e}");
    assert!(e.contains("checkpoint-000003 at step 3"), "{e}");
    assert_eq!(curve(&out.join("metrics.jsonl")), want);
}

#[test]
fn a_resume_with_more_steps_extends_a_constant_run_and_not_a_cosine_one() {
    let dir = tempfile::tempdir().unwrap();
    let (short, long) = (dir.path().join("short"), dir.path().join("long"));
    succeeds(&finetune_args(1, 3, &["--output", s(&short)]));
    succeeds(&finetune_args(1, 5, &["--output", s(&long)]));
    succeeds(&finetune_args(1, 5, &["--resume", s(&short)]));
    assert_eq!(
        curve(&short.join("metrics.jsonl")),
        curve(&long.join("metrics.jsonl"))
    );
    let record = json(&short.join("run.json"));
    assert_eq!(record["step_targets"], serde_json::json!([3, 5]));
    assert_eq!(record["train"]["steps"], 5);

    let cosine = dir.path().join("cosine");
    let cos = ["--schedule", "cosine", "--save-every", "2"];
    succeeds(&finetune_args(
        1,
        2,
        &[&cos[..], &["--output", s(&cosine)]].concat(),
    ));
    let o = run(&finetune_args(
        1,
        4,
        &[&cos[..], &["--resume", s(&cosine)]].concat(),
    ));
    let e = stderr(&o);
    assert!(!o.status.success(), "{e}");
    assert!(
        e.contains("invalid option --steps") && e.contains("cosine"),
        "{e}"
    );
}

#[test]
fn a_token_file_trains_a_model_without_a_tokenizer() {
    let dir = tempfile::tempdir().unwrap();
    let model = dir.path().join("model");
    let cfg = LlamaConfig {
        vocab_size: 300,
        hidden_size: 64,
        intermediate_size: 96,
        num_hidden_layers: 1,
        num_attention_heads: 1,
        num_key_value_heads: 1,
        rope_theta: 10000.0,
        rms_norm_eps: 1e-5,
        max_position_embeddings: 32,
        rope_scaling_factor: 1.0,
        bos_token_id: None,
        eos_token_id: None,
    };
    save_model(
        &model,
        &cfg,
        &LlamaWeights::random(&cfg, 0.02, &mut Rng::new(1)),
    )
    .unwrap();
    let tokens = dir.path().join("tokens.bin");
    let ids: Vec<u8> = (0..2000u16).flat_map(|i| (i % 300).to_le_bytes()).collect();
    std::fs::write(&tokens, ids).unwrap();
    let out = dir.path().join("run");
    let common = ["finetune", "--model", s(&model), "--context", "64"];
    let o = harness(
        &[
            &common[..],
            &["--data", s(&tokens), "--steps", "2", "--output", s(&out)],
        ]
        .concat(),
    );
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(out.join("model/model.safetensors").is_file());
    assert!(!out.join("model/tokenizer.json").exists());

    let text = dir.path().join("text.txt");
    std::fs::write(&text, "text needs a tokenizer ".repeat(20)).unwrap();
    let o = harness(
        &[
            &common[..],
            &["--data", s(&text), "--output", s(&dir.path().join("t"))],
        ]
        .concat(),
    );
    let e = stderr(&o);
    assert!(!o.status.success() && e.contains("tokenizer"), "{e}");
}
