//! `harness tokenize` and `harness pretrain` end to end, the model directory they make feeding
//! `finetune` with text, token-file and SFT data, and the data errors exiting non-zero with a
//! message that names what is wrong.

mod common;

use std::process::Output;

use common::{harness, json, s, stderr};
use longlora::data::tokenizer::Tokenizer;
use longlora::hf::load_model;

/// Fails with the command's stderr when it did not succeed.
fn ok(args: &[&str]) -> Output {
    let o = harness(args);
    assert!(o.status.success(), "{args:?} failed: {}", stderr(&o));
    o
}

/// Runs a command that must fail and returns its stderr.
fn fails(args: &[&str]) -> String {
    let o = harness(args);
    assert!(!o.status.success(), "{args:?} should have failed");
    let e = stderr(&o);
    assert!(e.lines().any(|l| l.starts_with("error: ")), "{e}");
    e
}

#[test]
fn tokenize_writes_u16_documents_joined_by_eos_and_a_side_file() {
    let dir = tempfile::tempdir().unwrap();
    let docs = dir.path().join("docs");
    std::fs::create_dir_all(docs.join("sub")).unwrap();
    std::fs::write(docs.join("b.txt"), "hi").unwrap();
    std::fs::write(docs.join("sub/c.txt"), "é").unwrap();
    std::fs::write(docs.join("ignored.md"), "not text").unwrap();
    let out = dir.path().join("t.bin");
    ok(&[
        "tokenize",
        "--data",
        s(&docs),
        "--model",
        "builtin",
        "--out",
        s(&out),
    ]);
    // "hi" EOS "é" EOS, with EOS = 257 = 0x0101 and é = C3 A9.
    assert_eq!(
        std::fs::read(&out).unwrap(),
        [b'h', 0, b'i', 0, 1, 1, 0xC3, 0, 0xA9, 0, 1, 1]
    );
    let side = json(&dir.path().join("t.bin.json"));
    assert_eq!(side["dtype"], "u16");
    assert_eq!(side["tokens"], 6);
    assert_eq!(side["documents"], 2);
    assert_eq!(side["vocab_size"], 258);
}

#[test]
fn pretrain_writes_a_model_directory_that_finetune_extends_with_text_bin_and_sft_data() {
    let dir = tempfile::tempdir().unwrap();
    let text = dir.path().join("text.txt");
    std::fs::write(&text, "The quiet river rests near the stone. ".repeat(30)).unwrap();
    let base = dir.path().join("base");
    ok(&[
        "pretrain",
        "--preset",
        "tiny",
        "--data",
        s(&text),
        "--context",
        "64",
        "--steps",
        "3",
        "--batch-size",
        "2",
        "--output",
        s(&base),
    ]);
    let (cfg, weights) = load_model(&base).expect("the output loads back as a model");
    assert_eq!(cfg.max_position_embeddings, 64);
    assert_eq!(
        (cfg.hidden_size, cfg.num_hidden_layers, cfg.head_dim()),
        (128, 5, 64)
    );
    assert_eq!(weights.embed_tokens.shape, vec![258, 128]);
    let tokenizer = Tokenizer::from_model_dir(&base).unwrap();
    assert!(
        matches!(tokenizer, Tokenizer::HuggingFace { .. }),
        "tokenizer.json is written"
    );
    assert_eq!(
        tokenizer.encode("ok é").unwrap(),
        vec![111, 107, 32, 0xC3, 0xA9]
    );
    let steps = std::fs::read_to_string(base.join("metrics.jsonl")).unwrap();
    assert_eq!(steps.lines().count(), 3);
    let run = json(&base.join("run.json"));
    assert_eq!(run["train"]["trainable"], "full");
    assert_eq!(run["train"]["schedule"], "cosine");

    let again = dir.path().join("again");
    ok(&[
        "pretrain",
        "--tokenizer",
        s(&base),
        "--data",
        s(&text),
        "--context",
        "64",
        "--steps",
        "1",
        "--hidden-size",
        "64",
        "--layers",
        "1",
        "--output",
        s(&again),
    ]);
    for f in ["tokenizer.json", "tokenizer_config.json"] {
        assert_eq!(
            std::fs::read(again.join(f)).unwrap(),
            std::fs::read(base.join(f)).unwrap(),
            "{f} is copied from --tokenizer"
        );
    }
    let cfg = load_model(&again).unwrap().0;
    assert_eq!(
        (
            cfg.num_attention_heads,
            cfg.intermediate_size,
            cfg.vocab_size
        ),
        (1, 192, 258)
    );

    let bin = dir.path().join("text.bin");
    ok(&[
        "tokenize",
        "--data",
        s(&text),
        "--model",
        s(&base),
        "--out",
        s(&bin),
    ]);
    assert!(json(&dir.path().join("text.bin.json"))["tokenizer"]
        .as_str()
        .unwrap()
        .ends_with("tokenizer.json"));

    let sft = dir.path().join("sft.jsonl");
    std::fs::write(
        &sft,
        format!(
            "{{\"instruction\": \"Name a river.\", \"output\": \"The quiet river.\"}}\n\
             {{\"instruction\": \"{}\", \"output\": \"yes\"}}\n",
            "Repeat the words. ".repeat(20)
        ),
    )
    .unwrap();
    for (data, name) in [(&text, "text"), (&bin, "bin"), (&sft, "sft")] {
        let out = dir.path().join(format!("ft-{name}"));
        let o = ok(&[
            "finetune",
            "--model",
            s(&base),
            "--data",
            s(data),
            "--context",
            "256",
            "--steps",
            "1",
            "--output",
            s(&out),
        ]);
        assert!(out.join("adapter_model.safetensors").is_file(), "{name}");
        assert!(
            out.join("model/tokenizer.json").is_file(),
            "{name}: merged model's tokenizer"
        );
        let warned = stderr(&o).contains("warning: 1 of 2 SFT records");
        assert_eq!(warned, name == "sft", "{name}: {}", stderr(&o));
    }
}

#[test]
fn data_errors_exit_non_zero_and_name_what_is_wrong() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("missing.txt");
    let out = dir.path().join("o.bin");
    let e = fails(&[
        "tokenize",
        "--data",
        s(&missing),
        "--model",
        "builtin",
        "--out",
        s(&out),
    ]);
    assert!(e.contains("missing.txt"), "{e}");

    let model = dir.path().join("model");
    std::fs::create_dir(&model).unwrap();
    let cfg = longlora::model::LlamaConfig {
        vocab_size: 1000,
        ..longlora::model::LlamaConfig::builtin()
    };
    let config = longlora::hf::config_to_json(&cfg).to_string();
    std::fs::write(model.join("config.json"), config).unwrap();
    let text = dir.path().join("a.txt");
    std::fs::write(&text, "abc").unwrap();
    let e = fails(&[
        "tokenize",
        "--data",
        s(&text),
        "--model",
        s(&model),
        "--out",
        s(&out),
    ]);
    assert!(
        e.contains("tokenizer/vocabulary mismatch") && e.contains("1000"),
        "{e}"
    );

    let bin = dir.path().join("bad.bin");
    std::fs::write(&bin, [65u8, 0, 0x2C, 0x01, 66, 0]).unwrap();
    let e = fails(&[
        "pretrain",
        "--data",
        s(&bin),
        "--steps",
        "1",
        "--output",
        s(&model),
    ]);
    assert!(
        e.contains("bad.bin") && e.contains("token 300") && e.contains("index 1"),
        "{e}"
    );

    let e = fails(&[
        "pretrain",
        "--data",
        s(&text),
        "--steps",
        "1",
        "--output",
        s(&model),
    ]);
    assert!(e.contains("fewer than one training window"), "{e}");

    std::fs::write(&text, "abc ".repeat(200)).unwrap();
    let e = fails(&[
        "pretrain",
        "--data",
        s(&text),
        "--steps",
        "1",
        "--output",
        s(&model),
    ]);
    assert!(e.contains("--overwrite"), "{e}");

    let e = fails(&[
        "pretrain",
        "--data",
        s(&text),
        "--hidden-size",
        "96",
        "--heads",
        "5",
        "--output",
        s(&dir.path().join("odd")),
    ]);
    assert!(e.contains("not divisible by num_attention_heads"), "{e}");

    let sft = dir.path().join("sft.json");
    std::fs::write(&sft, r#"[{"instruction": "a", "output": ""}]"#).unwrap();
    let e = fails(&[
        "finetune",
        "--data",
        s(&sft),
        "--steps",
        "1",
        "--pretrain-steps",
        "1",
        "--output",
        s(&dir.path().join("ft")),
    ]);
    assert!(
        e.contains("sft.json") && e.contains("record 0") && e.contains("empty"),
        "{e}"
    );
}
