//! `harness passkey-corpus` end to end: K documents per length in the test's template, each
//! filling its length in the chosen tokenizer's tokens, reproducible from the seed, with a
//! manifest of keys and depths; a non-empty output directory is refused.

mod common;

use std::fs;

use common::{harness, json, s, stderr};
use longlora::eval::passkey::{information_line, QUESTION, TASK};

#[test]
fn passkey_corpus_writes_documents_per_length_in_the_tests_template() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("corpus");
    let args = [
        "passkey-corpus",
        "--out",
        s(&out),
        "--count",
        "3",
        "--lengths",
        "300,500",
        "--seed",
        "7",
    ];
    let o = harness(&args);
    assert!(o.status.success(), "{}", stderr(&o));
    let manifest = json(&out.join("passkey-corpus.json"));
    let docs = manifest["documents"].as_array().unwrap();
    assert_eq!(docs.len(), 6);
    for doc in docs {
        let length = doc["length"].as_u64().unwrap() as usize;
        let passkey = doc["passkey"].as_u64().unwrap();
        let text = fs::read_to_string(out.join(doc["file"].as_str().unwrap())).unwrap();
        // The built-in tokenizer is byte level: a document of N tokens is N bytes.
        assert_eq!(text.len(), length, "{doc}");
        assert!(text.starts_with(TASK));
        assert!(text.ends_with(&format!("{QUESTION} {passkey}")), "{doc}");
        assert!(text.contains(&information_line(passkey as u32)), "{doc}");
    }
    let txt_files = fs::read_dir(&out)
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .path()
                .extension()
                .is_some_and(|x| x == "txt")
        })
        .count();
    assert_eq!(txt_files, 6);

    let again = dir.path().join("again");
    let o = harness(&[&args[..2], &[s(&again)], &args[3..]].concat());
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(
        json(&again.join("passkey-corpus.json"))["documents"],
        manifest["documents"]
    );

    let o = harness(&args);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("--overwrite"), "{}", stderr(&o));
    let short = dir.path().join("short");
    let o = harness(&[
        "passkey-corpus",
        "--out",
        s(&short),
        "--count",
        "1",
        "--lengths",
        "100",
    ]);
    assert!(!o.status.success());
    assert!(
        stderr(&o).contains("cannot hold the passkey prompt"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn passkey_corpus_writes_drills_with_their_keys() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("drills");
    let o = harness(&[
        "passkey-corpus",
        "--style",
        "drill",
        "--out",
        s(&out),
        "--count",
        "2",
        "--lengths",
        "300,600",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let manifest = json(&out.join("passkey-corpus.json"));
    assert_eq!(manifest["style"], "drill");
    let docs = manifest["documents"].as_array().unwrap();
    assert_eq!(docs.len(), 4);
    for doc in docs {
        let text = fs::read_to_string(out.join(doc["file"].as_str().unwrap())).unwrap();
        assert!(
            text.len() <= doc["length"].as_u64().unwrap() as usize,
            "{doc}"
        );
        let keys = doc["passkeys"].as_array().unwrap();
        assert!(keys.len() >= 2, "{doc}");
        for key in keys {
            let answer = format!("{QUESTION} {key}.");
            assert!(text.contains(&answer), "{doc}: {answer}");
        }
    }
    assert!(out.join("drill-600-00001.txt").exists());
}
