//! Supervised fine-tuning data: the Alpaca prompt, prompt targets ignored and answer + EOS scored,
//! padding that scores nothing, truncation that is counted, and errors that name file and record.

use std::path::Path;

use longlora::data::sft::{load_records, SftRecord, SftSampler};
use longlora::data::tokenizer::Tokenizer;
use longlora::data::{BatchSource, BYTE_BOS, BYTE_EOS};
use longlora::model::{Llama, LlamaConfig, LlamaWeights, TrainableSet};
use longlora::ops::attention::AttnMode;
use longlora::ops::cross_entropy::IGNORE_INDEX;
use longlora::rng::Rng;
use longlora::train::optim::{AdamWConfig, Schedule};
use longlora::train::{TrainConfig, Trainer};

fn record(instruction: &str, input: Option<&str>, output: &str) -> SftRecord {
    SftRecord {
        instruction: instruction.into(),
        input: input.map(Into::into),
        output: output.into(),
    }
}

fn sampler(records: &[SftRecord], seq_len: usize) -> SftSampler {
    SftSampler::new(
        records,
        &Tokenizer::builtin(),
        seq_len,
        Path::new("sft.jsonl"),
    )
    .unwrap()
}

#[test]
fn prompts_follow_the_alpaca_template_with_and_without_input() {
    assert_eq!(
        record("Add.", Some("2 + 2"), "4").prompt(),
        "Below is an instruction that describes a task, paired with an input that provides \
         further context. Write a response that appropriately completes the request.\n\n\
         ### Instruction:\nAdd.\n\n### Input:\n2 + 2\n\n### Response:"
    );
    let no_input = "Below is an instruction that describes a task. Write a response that \
                    appropriately completes the request.\n\n### Instruction:\nAdd.\n\n### Response:";
    assert_eq!(record("Add.", None, "4").prompt(), no_input);
    assert_eq!(record("Add.", Some(""), "4").prompt(), no_input);
    let literal = record("Fill {input} in.", Some("{instruction}"), "x").prompt();
    assert!(
        literal.contains("### Instruction:\nFill {input} in.\n\n### Input:\n{instruction}\n"),
        "braces in a record are text, not template fields: {literal}"
    );
}

#[test]
fn prompt_targets_are_ignored_and_the_answer_and_eos_are_scored() {
    let r = record("Say hi.", None, "hi");
    let prompt_len = 1 + r.prompt().len();
    let seq_len = prompt_len + 8;
    let s = sampler(std::slice::from_ref(&r), seq_len);
    let (tokens, targets) = s.record(0);
    assert_eq!(tokens.len(), seq_len);
    assert_eq!(targets.len(), seq_len);
    assert_eq!(tokens[0], BYTE_BOS);
    assert_eq!(
        &tokens[1..prompt_len],
        r.prompt().bytes().map(u32::from).collect::<Vec<_>>()
    );
    assert_eq!(&tokens[prompt_len..prompt_len + 2], &[104, 105]);
    // Targets before the last prompt position predict prompt tokens: ignored.
    assert!(targets[..prompt_len - 1].iter().all(|&t| t == IGNORE_INDEX));
    assert_eq!(
        &targets[prompt_len - 1..prompt_len + 2],
        &[104, 105, BYTE_EOS as i32],
        "the answer and its EOS are scored"
    );
    assert!(
        targets[prompt_len + 2..].iter().all(|&t| t == IGNORE_INDEX),
        "padding scores nothing"
    );
    assert!(tokens[prompt_len + 2..].iter().all(|&t| t == BYTE_EOS));
    assert_eq!(s.truncated(), 0);
    assert_eq!(s.truncation_warning(), None);
}

#[test]
fn records_longer_than_the_context_are_truncated_and_counted() {
    let short = record("Hi.", None, "yes");
    let seq_len = 1 + short.prompt().len() + 4;
    let long_answer = record("Hi.", None, &"long answer ".repeat(10));
    let long_prompt = record(&"a very long instruction ".repeat(10), None, "no");
    let s = sampler(&[short, long_answer, long_prompt], seq_len);
    assert_eq!((s.len(), s.truncated(), s.answerless()), (3, 2, 1));
    let (_, targets) = s.record(1);
    assert!(
        targets.iter().all(|&t| t != BYTE_EOS as i32),
        "EOS was cut off"
    );
    assert_eq!(
        targets.iter().filter(|&&t| t != IGNORE_INDEX).count(),
        seq_len - (1 + s_prompt_len("Hi.")) + 1
    );
    let (_, targets) = s.record(2);
    assert!(targets.iter().all(|&t| t == IGNORE_INDEX));
    let w = s.truncation_warning().expect("truncation is never silent");
    assert!(
        w.contains("2 of 3 SFT records") && w.contains("sft.jsonl") && w.contains("1 of them"),
        "{w}"
    );
}

fn s_prompt_len(instruction: &str) -> usize {
    record(instruction, None, "x").prompt().len()
}

#[test]
fn batches_are_whole_records_and_a_trainer_steps_on_them() {
    let records = [record("One?", None, "1"), record("Two?", Some("x"), "2")];
    let seq_len = 256;
    let s = sampler(&records, seq_len);
    let batch = s.sample(3, &mut Rng::new(1));
    assert_eq!((batch.batch, batch.seq_len), (3, seq_len));
    for b in 0..3 {
        let row = &batch.tokens[b * seq_len..(b + 1) * seq_len];
        assert!(
            (0..2).any(|i| s.record(i).0 == row),
            "row {b} is not one record"
        );
    }
    let cfg = LlamaConfig {
        hidden_size: 64,
        intermediate_size: 96,
        num_hidden_layers: 1,
        num_attention_heads: 2,
        num_key_value_heads: 2,
        ..LlamaConfig::builtin()
    };
    let weights = LlamaWeights::random(&cfg, 0.02, &mut Rng::new(2));
    let model = Llama::new(cfg, weights).unwrap();
    let run = TrainConfig {
        steps: 1,
        batch_size: 2,
        grad_accum: 1,
        seq_len,
        lr: 1e-3,
        warmup_steps: 0,
        schedule: Schedule::Constant,
        adamw: AdamWConfig::default(),
        max_grad_norm: 1.0,
        attn: AttnMode::Dense,
        group_ratio: 1.0,
        trainable: TrainableSet::Full,
        seed: 3,
    };
    let mut trainer = Trainer::new(model, run).unwrap();
    let report = trainer.step(&s).unwrap();
    assert!(
        (report.loss - (258f64).ln()).abs() < 0.5,
        "an untrained model's loss on the scored tokens is near ln(258), got {}",
        report.loss
    );
}

#[test]
fn empty_answers_name_the_file_and_the_record() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("data.json");
    std::fs::write(
        &path,
        r#"[{"instruction": "a", "output": "b"}, {"instruction": "c", "input": "d", "output": "  "}]"#,
    )
    .unwrap();
    let e = load_records(&path).expect_err("empty answer").to_string();
    assert!(
        e.contains("data.json") && e.contains("record 1") && e.contains("empty"),
        "{e}"
    );
}

#[test]
fn malformed_json_names_the_file_and_line() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("data.jsonl");
    std::fs::write(
        &path,
        "{\"instruction\": \"a\", \"output\": \"b\"}\n\n{\"instruction\": \"c\", \"output\": }\n",
    )
    .unwrap();
    let e = load_records(&path).expect_err("bad line").to_string();
    assert!(e.contains("data.jsonl") && e.contains("line 3"), "{e}");

    std::fs::write(&path, "{\"instruction\": \"a\"}\n").unwrap();
    let e = load_records(&path).expect_err("no output").to_string();
    assert!(e.contains("line 1") && e.contains("output"), "{e}");

    let path = dir.path().join("data.json");
    std::fs::write(
        &path,
        "[\n{\"instruction\": \"a\", \"output\": \"b\"},\n{oops}\n]",
    )
    .unwrap();
    let e = load_records(&path).expect_err("bad array").to_string();
    assert!(e.contains("data.json") && e.contains("line 3"), "{e}");
}

#[test]
fn jsonl_and_json_arrays_read_the_same_records() {
    let dir = tempfile::tempdir().unwrap();
    let jsonl = dir.path().join("d.jsonl");
    let json = dir.path().join("d.json");
    let lines = [
        r#"{"instruction": "a", "input": "x", "output": "b", "file": "ignored"}"#,
        r#"{"instruction": "c", "input": null, "output": "d"}"#,
    ];
    std::fs::write(&jsonl, lines.join("\n")).unwrap();
    std::fs::write(&json, format!("[{}]", lines.join(","))).unwrap();
    let expected = vec![record("a", Some("x"), "b"), record("c", None, "d")];
    assert_eq!(load_records(&jsonl).unwrap(), expected);
    assert_eq!(load_records(&json).unwrap(), expected);
}

#[test]
fn a_sampler_needs_at_least_one_record() {
    let e = SftSampler::new(&[], &Tokenizer::builtin(), 16, Path::new("none.json"))
        .err()
        .expect("nothing to sample")
        .to_string();
    assert!(
        e.contains("none.json") && e.contains("no SFT records"),
        "{e}"
    );
}
