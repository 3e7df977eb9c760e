//! `harness train-tokenizer` end to end: the tokenizer it writes drives a small `pretrain` (its
//! vocabulary size and BOS/EOS ids land in config.json) and `tokenize`; bad options are refused.

mod common;

use std::fs;

use common::{harness, json, s, stderr, TINY_PRETRAIN};
use longlora::data::synthetic::synthetic_document;
use longlora::rng::Rng;

#[test]
fn trained_tokenizer_drives_pretrain_and_tokenize() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("text");
    fs::create_dir(&data).unwrap();
    let mut rng = Rng::new(3);
    for i in 0..3 {
        fs::write(
            data.join(format!("{i}.txt")),
            synthetic_document(&mut rng, 4000),
        )
        .unwrap();
    }
    let tok = dir.path().join("tok");
    let o = harness(&[
        "train-tokenizer",
        "--data",
        s(&data),
        "--vocab-size",
        "384",
        "--out",
        s(&tok),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));

    let run = dir.path().join("run");
    let pretrain = [
        "pretrain",
        "--data",
        s(&data),
        "--tokenizer",
        s(&tok),
        "--output",
        s(&run),
    ];
    let o = harness(&[&pretrain[..], TINY_PRETRAIN].concat());
    assert!(o.status.success(), "{}", stderr(&o));
    let config = json(&run.join("config.json"));
    assert_eq!(config["vocab_size"], 384);
    assert_eq!(config["bos_token_id"], 1);
    assert_eq!(config["eos_token_id"], 2);
    assert_eq!(
        fs::read(run.join("tokenizer.json")).unwrap(),
        fs::read(tok.join("tokenizer.json")).unwrap()
    );
    let steps = fs::read_to_string(run.join("metrics.jsonl")).unwrap();
    assert_eq!(steps.lines().count(), 3);

    let bin = dir.path().join("tokens.bin");
    let o = harness(&[
        "tokenize",
        "--data",
        s(&data),
        "--model",
        s(&run),
        "--out",
        s(&bin),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let side = json(&dir.path().join("tokens.bin.json"));
    assert_eq!(side["vocab_size"], 384);
    assert_eq!(side["documents"], 3);
    // Fewer tokens than bytes: the merges compress (documents of ~4000 bytes, plus 3 EOS).
    assert!(side["tokens"].as_u64().unwrap() < 3 * 4000 / 2, "{side}");
}

#[test]
fn train_tokenizer_refuses_a_small_vocabulary_and_an_existing_tokenizer() {
    let dir = tempfile::tempdir().unwrap();
    let text = dir.path().join("a.txt");
    fs::write(&text, "a small text, a small text, a small text.\n").unwrap();
    let tok = dir.path().join("tok");
    let o = harness(&[
        "train-tokenizer",
        "--data",
        s(&text),
        "--vocab-size",
        "200",
        "--out",
        s(&tok),
    ]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("vocab-size"), "{}", stderr(&o));

    let args = [
        "train-tokenizer",
        "--data",
        s(&text),
        "--vocab-size",
        "270",
        "--out",
        s(&tok),
    ];
    assert!(harness(&args).status.success());
    let o = harness(&args);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("--overwrite"), "{}", stderr(&o));
    let o = harness(&[&args[..], &["--overwrite"]].concat());
    assert!(o.status.success(), "{}", stderr(&o));
}
