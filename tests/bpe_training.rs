//! Training a byte-fallback BPE: Llama-2's id layout, the vocabulary size respected, exact round
//! trips of any text (bytes never seen in training fall back to byte tokens, never to <unk>), and
//! errors that name the file or option.

use std::fs;
use std::path::{Path, PathBuf};

use longlora::data::bpe_training::{train_bpe_tokenizer, RESERVED_TOKENS};
use longlora::data::synthetic::synthetic_document;
use longlora::data::Tokenizer;
use longlora::rng::Rng;
use longlora::Error;

/// Four synthetic documents (English-like prose with numbered facts, ~24 KB) as .txt files.
fn fixture_texts(dir: &Path) -> Vec<PathBuf> {
    let mut rng = Rng::new(7);
    (0..4)
        .map(|i| {
            let path = dir.join(format!("doc{i}.txt"));
            fs::write(&path, synthetic_document(&mut rng, 6000)).unwrap();
            path
        })
        .collect()
}

fn trained(vocab_size: usize) -> (tempfile::TempDir, Tokenizer) {
    let dir = tempfile::tempdir().unwrap();
    let files = fixture_texts(dir.path());
    let out = dir.path().join("tokenizer");
    let tokenizer = train_bpe_tokenizer(&files, vocab_size, &out).unwrap();
    (dir, tokenizer)
}

fn vocab_entry(dir: &Path, token: &str) -> Option<u64> {
    let json: serde_json::Value =
        serde_json::from_str(&fs::read_to_string(dir.join("tokenizer/tokenizer.json")).unwrap())
            .unwrap();
    json["model"]["vocab"][token].as_u64()
}

#[test]
fn ids_follow_llama2_specials_then_bytes_then_merges() {
    let (dir, tokenizer) = trained(400);
    assert_eq!(tokenizer.bos_id(), Some(1));
    assert_eq!(tokenizer.eos_id(), 2);
    for (token, id) in [
        ("<unk>", 0),
        ("<s>", 1),
        ("</s>", 2),
        ("<0x00>", 3),
        ("<0x0A>", 13),
        ("<0xFF>", 258),
    ] {
        assert_eq!(vocab_entry(dir.path(), token), Some(id), "{token}");
    }
    for file in ["tokenizer_config.json", "special_tokens_map.json"] {
        assert!(dir.path().join("tokenizer").join(file).is_file(), "{file}");
    }
}

#[test]
fn vocabulary_size_is_respected() {
    for v in [300, 400, 600] {
        let (_dir, tokenizer) = trained(v);
        assert_eq!(tokenizer.vocab_size(), v, "asked for {v}");
    }
}

#[test]
fn any_text_round_trips_with_unseen_bytes_as_byte_tokens() {
    let (_dir, tokenizer) = trained(400);
    let texts = [
        "The quiet river rests near the stone.\nRecall: bado is 4821.\n",
        "  leading spaces, double  spaces, a tab\tand a trailing space ",
        "naïve café, 日本語, emoji 🙂, a bell \u{7} and \u{0} a NUL",
        "\n\n\nonly newlines\n",
    ];
    for text in texts {
        let ids = tokenizer.encode(text).unwrap();
        assert!(
            !ids.contains(&0),
            "<unk> in the encoding of {text:?}: {ids:?}"
        );
        assert_eq!(tokenizer.decode(&ids).unwrap(), text);
    }
    // No Japanese in the training text: each of its UTF-8 bytes is its own byte token, id 3 + byte.
    let ids = tokenizer.encode("日").unwrap();
    let bytes: Vec<u32> = "日".bytes().map(|b| 3 + u32::from(b)).collect();
    assert_eq!(ids, bytes);
}

#[test]
fn merges_compress_the_training_text() {
    let (_dir, tokenizer) = trained(600);
    let text = "The gentle horse sleeps beside the bridge. Remember: kemo is 0042.\n";
    let ids = tokenizer.encode(text).unwrap();
    assert!(
        ids.len() * 2 < text.len(),
        "{} tokens for {} bytes",
        ids.len(),
        text.len()
    );
    // Digits stand alone, as in Llama-2, whatever the merges learnt.
    let digits = tokenizer.encode("0042").unwrap();
    assert_eq!(digits.len(), 4, "{digits:?}");
}

#[test]
fn bad_inputs_are_errors_naming_the_option_or_file() {
    let dir = tempfile::tempdir().unwrap();
    let files = fixture_texts(dir.path());
    let out = dir.path().join("tokenizer");
    match train_bpe_tokenizer(&files, RESERVED_TOKENS, &out) {
        Err(Error::InvalidOption { option, message }) => {
            assert_eq!(option, "vocab_size");
            assert!(message.contains("259"), "{message}");
        }
        other => panic!("expected an option error, got {:?}", other.err()),
    }
    let binary = dir.path().join("binary.txt");
    fs::write(&binary, [b'a', 0xff, 0xfe, b'b']).unwrap();
    let Err(err) = train_bpe_tokenizer(std::slice::from_ref(&binary), 400, &out) else {
        panic!("a file that is not UTF-8 trained a tokenizer");
    };
    let message = err.to_string();
    assert!(
        message.contains(binary.to_str().unwrap()) && message.contains("UTF-8"),
        "{message}"
    );
    assert!(!out.join("tokenizer.json").exists());
}
