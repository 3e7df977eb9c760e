//! Passkey training documents: the test's exact template and length, keys and depths from a stream
//! the test never draws, so no document repeats a case the test asks.

use longlora::data::byte_tokens;
use longlora::eval::passkey::{
    build_prompt, corpus_cases, information_line, passkey_document, run_passkey, test_cases,
    PasskeyCase, PasskeyPlan, QUESTION, TASK,
};
use longlora::Result;

fn bytes(text: &str) -> Result<Vec<u32>> {
    Ok(byte_tokens(text.as_bytes()))
}

/// A subword-like tokenizer: one token per pair of bytes.
fn pairs(text: &str) -> Result<Vec<u32>> {
    Ok(text
        .as_bytes()
        .chunks(2)
        .map(|c| c.iter().fold(0u32, |acc, &b| acc * 256 + b as u32) % 1000)
        .collect())
}

#[test]
fn documents_are_the_tests_prompt_followed_by_its_answer() {
    for (length, passkey, depth) in [(300, 1, 0.0), (512, 31_337, 0.5), (2048, 50_000, 1.0)] {
        let case = PasskeyCase {
            length,
            passkey,
            depth,
        };
        let doc = passkey_document(&bytes, &case).unwrap();
        let prompt = build_prompt(&bytes, length, passkey, depth).unwrap();
        // Byte by byte what the test scores: its prompt and its answer.
        assert_eq!(byte_tokens(doc.as_bytes()), prompt.tokens, "N = {length}");
        assert_eq!(doc.len(), length);
        assert!(doc.starts_with(TASK));
        assert!(doc.ends_with(&format!("{QUESTION} {passkey}")));
        assert_eq!(doc.matches(&information_line(passkey)).count(), 1);
    }
    for length in [301, 777] {
        let case = PasskeyCase {
            length,
            passkey: 4242,
            depth: 0.3,
        };
        let tokens = pairs(&passkey_document(&pairs, &case).unwrap()).unwrap();
        assert!(
            tokens.len() <= length && tokens.len() + 2 >= length,
            "{}",
            tokens.len()
        );
    }
}

#[test]
fn corpus_cases_cover_every_length_reproducibly() {
    let cases = corpus_cases(&[512, 1024], 50, 42);
    assert_eq!(cases.len(), 100);
    assert!(cases[..50].iter().all(|c| c.length == 512));
    assert!(cases[50..].iter().all(|c| c.length == 1024));
    assert!(cases
        .iter()
        .all(|c| (1..=50_000).contains(&c.passkey) && (0.0..1.0).contains(&c.depth)));
    assert_eq!(cases, corpus_cases(&[512, 1024], 50, 42));
    assert_ne!(cases, corpus_cases(&[512, 1024], 50, 43));
}

#[test]
fn test_cases_are_the_keys_and_depths_run_passkey_asks_for() {
    let plan = PasskeyPlan {
        lengths: vec![300, 400],
        trials: 3,
        depths: vec![0.0, 1.0],
        seed: 42,
    };
    let mut prompts = Vec::new();
    run_passkey(
        &plan,
        256,
        &bytes,
        &mut |tokens| {
            prompts.push(tokens.iter().map(|&t| t as u8 as char).collect::<String>());
            Ok(vec![0.0; tokens.len() * 256])
        },
        &mut |_, _| {},
    )
    .unwrap();
    let cases = test_cases(&plan);
    assert_eq!(prompts.len(), cases.len());
    for (prompt, case) in prompts.iter().zip(&cases) {
        let expected = build_prompt(&bytes, case.length, case.passkey, case.depth).unwrap();
        assert!(prompt.contains(&information_line(case.passkey)), "{case:?}");
        assert_eq!(prompt.len(), expected.tokens.len() - 1, "{case:?}");
    }
}

/// The (key, depth) pairs of `a` that also occur in `b`.
fn shared_cases(a: &[PasskeyCase], b: &[PasskeyCase]) -> Vec<(u32, f64)> {
    a.iter()
        .filter(|x| {
            b.iter()
                .any(|y| x.passkey == y.passkey && x.depth == y.depth)
        })
        .map(|x| (x.passkey, x.depth))
        .collect()
}

#[test]
fn no_corpus_document_repeats_a_case_of_the_test_with_default_seeds() {
    // `harness passkey` and `harness passkey-corpus` both default to seed 42; the test's trials
    // at the usual lengths, random depths as LongLoRA draws them, and at fixed depths.
    let lengths = vec![256, 512, 1024, 2048, 4096];
    let corpus = corpus_cases(&lengths, 1000, 42);
    for depths in [vec![], vec![0.0, 0.25, 0.5, 0.75, 1.0]] {
        let test = test_cases(&PasskeyPlan {
            lengths: lengths.clone(),
            trials: 100,
            depths,
            seed: 42,
        });
        // The comparison does find shared cases when there are some.
        assert_eq!(shared_cases(&test, &test).len(), test.len());
        assert_eq!(shared_cases(&test, &corpus), vec![]);
    }
}
