//! Tokenizers: the byte-level tokenizer written as a real tokenizer.json, a Llama-style BPE with
//! byte fallback read through the `tokenizers` crate, and the tokenizer/vocabulary checks of a
//! model directory. Every tokenizer.json is built in the test; nothing is downloaded.

use std::path::Path;

use longlora::data::byte_tokens;
use longlora::data::tokenizer::Tokenizer;
use longlora::hf::config_to_json;
use longlora::model::LlamaConfig;
use serde_json::{json, Value};

const SAMPLE: &str = "The pass key is 4821.\nRemember it: ünïcödé, 日本語, tabs\tand emoji 🦙 \
                      <angle> [brackets] ▁ and bytes \u{7f}.";

fn write_json(path: &Path, v: &Value) {
    std::fs::write(path, serde_json::to_string_pretty(v).unwrap()).unwrap();
}

fn write_config(dir: &Path, vocab_size: usize, eos: Option<u32>) {
    let cfg = LlamaConfig {
        vocab_size,
        eos_token_id: eos,
        bos_token_id: None,
        ..LlamaConfig::builtin()
    };
    write_json(&dir.join("config.json"), &config_to_json(&cfg));
}

/// A Llama-2-style tokenizer.json (its normalizer, decoder and BOS-adding post-processor):
/// `<unk>`, `<s>`, `</s>`, the 256 byte tokens, then a few pieces and merges that spell "▁hello";
/// everything else falls back to bytes.
fn llama_style_bpe() -> Value {
    let mut vocab = serde_json::Map::new();
    for (i, t) in ["<unk>", "<s>", "</s>"].iter().enumerate() {
        vocab.insert(t.to_string(), json!(i));
    }
    for b in 0..256u32 {
        vocab.insert(format!("<0x{b:02X}>"), json!(3 + b));
    }
    let pieces = [
        "▁", "h", "e", "l", "o", "▁h", "ll", "▁he", "▁hell", "▁hello",
    ];
    for (i, p) in pieces.iter().enumerate() {
        vocab.insert(p.to_string(), json!(259 + i));
    }
    let special = |id: u32, content: &str| {
        json!({"id": id, "content": content, "single_word": false, "lstrip": false,
               "rstrip": false, "normalized": false, "special": true})
    };
    json!({
        "version": "1.0",
        "truncation": null,
        "padding": null,
        "added_tokens": [special(0, "<unk>"), special(1, "<s>"), special(2, "</s>")],
        "normalizer": {"type": "Sequence", "normalizers": [
            {"type": "Prepend", "prepend": "▁"},
            {"type": "Replace", "pattern": {"String": " "}, "content": "▁"}
        ]},
        "pre_tokenizer": null,
        "post_processor": {
            "type": "TemplateProcessing",
            "single": [{"SpecialToken": {"id": "<s>", "type_id": 0}},
                       {"Sequence": {"id": "A", "type_id": 0}}],
            "pair": [{"SpecialToken": {"id": "<s>", "type_id": 0}},
                     {"Sequence": {"id": "A", "type_id": 0}},
                     {"SpecialToken": {"id": "<s>", "type_id": 1}},
                     {"Sequence": {"id": "B", "type_id": 1}}],
            "special_tokens": {"<s>": {"id": "<s>", "ids": [1], "tokens": ["<s>"]}}
        },
        "decoder": {"type": "Sequence", "decoders": [
            {"type": "Replace", "pattern": {"String": "▁"}, "content": " "},
            {"type": "ByteFallback"},
            {"type": "Fuse"},
            {"type": "Strip", "content": " ", "start": 1, "stop": 0}
        ]},
        "model": {
            "type": "BPE", "dropout": null, "unk_token": "<unk>",
            "continuing_subword_prefix": null, "end_of_word_suffix": null,
            "fuse_unk": true, "byte_fallback": true, "ignore_merges": false,
            "vocab": vocab,
            "merges": ["▁ h", "l l", "▁h e", "▁he ll", "▁hell o"]
        }
    })
}

#[test]
fn written_byte_level_tokenizer_json_encodes_exactly_like_byte_tokens() {
    let dir = tempfile::tempdir().unwrap();
    Tokenizer::builtin().save(dir.path()).unwrap();
    let file = dir.path().join("tokenizer.json");
    let hf = tokenizers::Tokenizer::from_file(&file).expect("the tokenizers crate reads it");
    let ids = hf.encode(SAMPLE, false).unwrap().get_ids().to_vec();
    assert_eq!(ids, byte_tokens(SAMPLE.as_bytes()), "tokenizers' encoding");
    assert_eq!(hf.get_vocab_size(true), 258);
    assert_eq!(hf.token_to_id("<s>"), Some(256));
    assert_eq!(hf.token_to_id("</s>"), Some(257));
    assert_eq!(hf.decode(&ids, true).unwrap(), SAMPLE);

    let loaded = Tokenizer::from_model_dir(dir.path()).unwrap();
    assert!(matches!(loaded, Tokenizer::HuggingFace { .. }));
    assert_eq!(
        loaded.encode(SAMPLE).unwrap(),
        byte_tokens(SAMPLE.as_bytes())
    );
    assert_eq!(
        (loaded.vocab_size(), loaded.bos_id(), loaded.eos_id()),
        (258, Some(256), 257)
    );
    assert!(dir.path().join("tokenizer_config.json").is_file());
}

#[test]
fn builtin_tokenizer_encodes_bytes_and_decodes_without_special_tokens() {
    let t = Tokenizer::builtin();
    let mut ids = vec![256];
    ids.extend(t.encode(SAMPLE).unwrap());
    ids.push(257);
    assert_eq!(&ids[1..ids.len() - 1], byte_tokens(SAMPLE.as_bytes()));
    assert_eq!(t.decode(&ids).unwrap(), SAMPLE);
    assert_eq!(
        (t.vocab_size(), t.bos_id(), t.eos_id()),
        (258, Some(256), 257)
    );
}

#[test]
fn bpe_with_byte_fallback_merges_known_words_and_spells_the_rest_in_bytes() {
    let dir = tempfile::tempdir().unwrap();
    write_json(&dir.path().join("tokenizer.json"), &llama_style_bpe());
    write_config(dir.path(), 300, Some(2));
    let t = Tokenizer::from_model_dir(dir.path()).unwrap();
    assert_eq!(t.vocab_size(), 269);
    assert_eq!(t.eos_id(), 2);
    assert_eq!(
        t.bos_id(),
        Some(1),
        "BOS found by name when config.json has none"
    );
    // "hello é" normalizes to "▁hello▁é": one merged piece, "▁", then é's two UTF-8 bytes; no
    // BOS, though the post-processor would add one (callers place BOS and EOS themselves).
    let ids = t.encode("hello é").unwrap();
    assert_eq!(ids, vec![268, 259, 3 + 0xC3, 3 + 0xA9]);
    assert_eq!(t.decode(&ids).unwrap(), "hello é");
    let file_ids = {
        let f = dir.path().join("doc.txt");
        std::fs::write(&f, "hello é").unwrap();
        t.encode_file(&f).unwrap()
    };
    assert_eq!(file_ids, ids);
}

#[test]
fn a_tokenizer_larger_than_the_model_vocabulary_is_a_mismatch() {
    let dir = tempfile::tempdir().unwrap();
    write_json(&dir.path().join("tokenizer.json"), &llama_style_bpe());
    write_config(dir.path(), 100, Some(2));
    let e = Tokenizer::from_model_dir(dir.path())
        .err()
        .expect("269 tokens cannot index 100 embedding rows")
        .to_string();
    assert!(
        e.contains("tokenizer/vocabulary mismatch") && e.contains("269") && e.contains("100"),
        "{e}"
    );
}

#[test]
fn without_tokenizer_json_only_the_byte_vocabulary_has_a_tokenizer() {
    let dir = tempfile::tempdir().unwrap();
    write_config(dir.path(), 258, Some(257));
    assert!(matches!(
        Tokenizer::from_model_dir(dir.path()).unwrap(),
        Tokenizer::Bytes
    ));
    write_config(dir.path(), 32000, Some(2));
    let e = Tokenizer::from_model_dir(dir.path())
        .err()
        .expect("no tokenizer for 32000 tokens")
        .to_string();
    assert!(
        e.contains("tokenizer/vocabulary mismatch")
            && e.contains("32000")
            && e.contains("tokenizer.json"),
        "{e}"
    );
}

#[test]
fn a_broken_tokenizer_json_and_an_empty_directory_are_errors_naming_the_path() {
    let dir = tempfile::tempdir().unwrap();
    let e = Tokenizer::from_model_dir(dir.path())
        .err()
        .expect("nothing to load")
        .to_string();
    assert!(e.contains("neither tokenizer.json nor config.json"), "{e}");
    std::fs::write(dir.path().join("tokenizer.json"), "{\"model\": 3}").unwrap();
    let e = Tokenizer::from_model_dir(dir.path())
        .err()
        .expect("not a tokenizer")
        .to_string();
    assert!(
        e.contains("tokenizer.json") && e.contains("not a Hugging Face tokenizer"),
        "{e}"
    );
}

#[test]
fn non_utf8_text_is_an_error_for_tokenizer_json_but_bytes_for_the_builtin() {
    let dir = tempfile::tempdir().unwrap();
    write_json(&dir.path().join("tokenizer.json"), &llama_style_bpe());
    let f = dir.path().join("latin1.txt");
    std::fs::write(&f, [b'h', 0xE9, b'!']).unwrap();
    assert_eq!(
        Tokenizer::builtin().encode_file(&f).unwrap(),
        vec![u32::from(b'h'), 0xE9, u32::from(b'!')]
    );
    let t = Tokenizer::from_model_dir(dir.path()).unwrap();
    let e = t.encode_file(&f).expect_err("not UTF-8").to_string();
    assert!(e.contains("latin1.txt") && e.contains("offset 1"), "{e}");
}
