//! `run.json`: the typed record round-trips, records written before it had a version still load,
//! and one from a newer layout or a broken file is refused naming the file.

use longlora::train::run_record::RUN_RECORD_VERSION;
use longlora::train::{Extension, RunCommand, RunRecord, RUN_FILE};
use longlora::Error;

/// What `harness pretrain` wrote before the record had a version.
const UNVERSIONED_PRETRAIN: &str = r#"{
  "command": "pretrain",
  "preset": "tiny",
  "parameters": 1100000,
  "model": {"hidden_size": 128, "vocab_size": 258},
  "train": {
    "steps": 1000, "batch_size": 8, "grad_accum": 1, "seq_len": 256, "lr": 0.001,
    "warmup_steps": 100, "schedule": "cosine",
    "adamw": {"beta1": 0.9, "beta2": 0.999, "eps": 1e-8, "weight_decay": 0.1},
    "max_grad_norm": 1.0, "attn": "dense", "group_ratio": 1.0, "trainable": "full", "seed": 42
  },
  "data": "books/",
  "data_tokens": 123456,
  "tokenizer": "builtin byte-level",
  "first_step_loss": 5.6,
  "last_step_loss": 1.9,
  "tokens_per_s": 2000.0,
  "total_time_s": 100.0,
  "peak_memory_mib": 300.0,
  "resumed_from": null,
  "version": "0.1.0"
}"#;

#[test]
fn an_unversioned_pretraining_record_loads_with_its_fields() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(RUN_FILE);
    std::fs::write(&path, UNVERSIONED_PRETRAIN).unwrap();
    let record = RunRecord::load(&path).unwrap();
    assert_eq!(record.format_version, 0);
    assert_eq!(record.command, RunCommand::Pretrain);
    assert_eq!(record.trained_parameters, 1_100_000);
    assert_eq!(record.tokens_per_s, 2000.0);
    assert_eq!(record.extension, None);
    assert_eq!(record.train.steps, 1000);
    assert!(record.step_targets.is_empty());

    // Written back, it is the current layout, and reads back the same.
    let current = RunRecord {
        format_version: RUN_RECORD_VERSION,
        extension: Some(Extension {
            context: 512,
            rope_factor: 2.0,
        }),
        step_targets: vec![1000],
        ..record
    };
    current.save(&path).unwrap();
    let text = std::fs::read_to_string(&path).unwrap();
    assert!(text.contains("\"rope_factor\": 2.0"), "{text}");
    assert_eq!(RunRecord::load(&path).unwrap(), current);
}

#[test]
fn a_newer_or_broken_record_is_refused_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(RUN_FILE);
    let newer = UNVERSIONED_PRETRAIN.replacen('{', "{\"format_version\": 99,", 1);
    std::fs::write(&path, newer).unwrap();
    let err = RunRecord::load(&path).unwrap_err();
    assert!(matches!(err, Error::BadFile { .. }), "{err}");
    assert!(err.to_string().contains("99"), "{err}");
    let no_train = UNVERSIONED_PRETRAIN.replace("\"train\"", "\"trane\"");
    std::fs::write(&path, no_train).unwrap();
    let err = RunRecord::load(&path).unwrap_err();
    assert!(err.to_string().contains(path.to_str().unwrap()), "{err}");
    assert!(err.to_string().contains("train"), "{err}");
}
