//! The passkey test: the prompt builder (lengths in tokens, the key's depth) and the teacher-forced
//! scorer, on hand-made logits and on a real model against greedy decoding; training documents in
//! the test's template, with keys and depths the test never draws.

use longlora::data::{byte_tokens, BYTE_VOCAB};
use longlora::eval::passkey::{
    answer_nats, answered_correctly, build_prompt, corpus_cases, information_line,
    passkey_document, run_passkey, test_cases, PasskeyCase, PasskeyPlan, PasskeyPrompt, QUESTION,
    TASK,
};
use longlora::model::{Llama, LlamaConfig, LlamaWeights};
use longlora::ops::attention::AttnMask;
use longlora::rng::Rng;
use longlora::Result;

fn bytes(text: &str) -> Result<Vec<u32>> {
    Ok(byte_tokens(text.as_bytes()))
}

/// A subword-like tokenizer: one token per pair of bytes, so prompt lengths come in steps of two.
fn pairs(text: &str) -> Result<Vec<u32>> {
    Ok(text
        .as_bytes()
        .chunks(2)
        .map(|c| c.iter().fold(0u32, |acc, &b| acc * 256 + b as u32) % 1000)
        .collect())
}

fn decode(p: &PasskeyPrompt) -> String {
    p.tokens.iter().map(|&t| t as u8 as char).collect()
}

#[test]
fn byte_level_prompts_fill_the_length_exactly() {
    for length in [300, 512, 1024, 2048] {
        let p = build_prompt(&bytes, length, 31_337, 0.5).unwrap();
        assert_eq!(p.tokens.len(), length);
        assert_eq!(p.answer(), byte_tokens(b" 31337").as_slice());
        let text = decode(&p);
        assert!(text.starts_with(TASK));
        assert!(text[..p.prompt_len].ends_with(QUESTION));
        assert_eq!(text.matches(&information_line(31_337)).count(), 1);
    }
}

#[test]
fn subword_prompts_fit_within_the_length() {
    for length in [301, 512, 777] {
        let p = build_prompt(&pairs, length, 42, 0.3).unwrap();
        assert!(p.tokens.len() <= length && p.tokens.len() + 2 >= length);
        assert!(p.prompt_len < p.tokens.len());
    }
}

#[test]
fn depth_places_the_key_in_the_filler() {
    let needle = information_line(777);
    let position = |depth: f64| {
        let text = decode(&build_prompt(&bytes, 2048, 777, depth).unwrap());
        let at = text.find(&needle).unwrap();
        let filler_start = TASK.len() + 1;
        let filler_len = text.len() - filler_start - needle.len() - QUESTION.len() - 4 - 4;
        (at - filler_start) as f64 / filler_len as f64
    };
    assert!(position(0.0) < 1e-3);
    assert!((position(0.5) - 0.5).abs() < 1e-2);
    assert!((position(0.25) - 0.25).abs() < 1e-2);
    assert!(position(1.0) > 0.99);
}

#[test]
fn bad_lengths_and_depths_are_errors() {
    let short = build_prompt(&bytes, 100, 5, 0.5).unwrap_err().to_string();
    assert!(short.contains("100 tokens cannot hold"), "{short}");
    let deep = build_prompt(&bytes, 1000, 5, 1.5).unwrap_err().to_string();
    assert!(deep.contains("depth"), "{deep}");
}

/// Logits that put all mass on `choose(position)` for every row.
fn logits_choosing(rows: usize, vocab: usize, choose: impl Fn(usize) -> usize) -> Vec<f32> {
    let mut logits = vec![0.0; rows * vocab];
    for r in 0..rows {
        logits[r * vocab + choose(r)] = 5.0;
    }
    logits
}

#[test]
fn scorer_accepts_only_the_exact_answer() {
    let p = build_prompt(&bytes, 400, 12_345, 0.4).unwrap();
    let rows = p.tokens.len() - 1;
    let next = |r: usize| p.tokens[r + 1] as usize;
    let correct = logits_choosing(rows, BYTE_VOCAB, next);
    assert!(answered_correctly(&correct, BYTE_VOCAB, &p));

    let last_digit_wrong = logits_choosing(rows, BYTE_VOCAB, |r| {
        if r + 2 == p.tokens.len() {
            b'0' as usize + (next(r) + 1 - b'0' as usize) % 10
        } else {
            next(r)
        }
    });
    assert!(!answered_correctly(&last_digit_wrong, BYTE_VOCAB, &p));

    let mut nan = correct.clone();
    nan[(p.prompt_len - 1) * BYTE_VOCAB] = f32::NAN;
    assert!(!answered_correctly(&nan, BYTE_VOCAB, &p));

    // Only the answer is scored: wrong predictions inside the prompt do not matter.
    let prompt_wrong = logits_choosing(rows, BYTE_VOCAB, |r| {
        if r + 1 < p.prompt_len {
            0
        } else {
            next(r)
        }
    });
    assert!(answered_correctly(&prompt_wrong, BYTE_VOCAB, &p));
}

#[test]
fn answer_nats_is_the_mean_negative_log_likelihood_of_the_answer() {
    let p = build_prompt(&bytes, 400, 12_345, 0.4).unwrap();
    let rows = p.tokens.len() - 1;
    let next = |r: usize| p.tokens[r + 1] as usize;
    // A row with 5 on one token and 0 on the others gives that token ln(e^5 + V - 1) - 5.
    let norm = (5f64.exp() + (BYTE_VOCAB - 1) as f64).ln();
    let answer_len = p.answer().len() as f64;
    assert_eq!(answer_len, 6.0, "a space and five digits");

    let correct = logits_choosing(rows, BYTE_VOCAB, next);
    assert!((answer_nats(&correct, BYTE_VOCAB, &p) - (norm - 5.0)).abs() < 1e-9);

    let first_digit_wrong = logits_choosing(rows, BYTE_VOCAB, |r| match r == p.prompt_len {
        true => b'9' as usize,
        false => next(r),
    });
    let expected = norm - 5.0 + 5.0 / answer_len;
    assert!((answer_nats(&first_digit_wrong, BYTE_VOCAB, &p) - expected).abs() < 1e-9);

    let uniform = vec![0.25; rows * BYTE_VOCAB];
    let ln_vocab = (BYTE_VOCAB as f64).ln();
    assert!((answer_nats(&uniform, BYTE_VOCAB, &p) - ln_vocab).abs() < 1e-9);

    let mut nan = correct;
    nan[(p.prompt_len - 1) * BYTE_VOCAB + 3] = f32::NAN;
    assert!(answer_nats(&nan, BYTE_VOCAB, &p).is_nan());
}

fn tiny_byte_model() -> Llama<f32> {
    let config = LlamaConfig {
        vocab_size: BYTE_VOCAB,
        hidden_size: 32,
        intermediate_size: 48,
        num_hidden_layers: 2,
        num_attention_heads: 4,
        num_key_value_heads: 2,
        rope_theta: 10000.0,
        rms_norm_eps: 1e-5,
        max_position_embeddings: 512,
        rope_scaling_factor: 1.0,
        bos_token_id: None,
        eos_token_id: None,
    };
    let weights = LlamaWeights::random(&config, 0.5, &mut Rng::new(3));
    Llama::new(config, weights).unwrap()
}

fn logits(model: &Llama<f32>, tokens: &[u32]) -> Vec<f32> {
    let workspace = model
        .forward(tokens, 1, tokens.len(), &AttnMask::dense())
        .unwrap();
    workspace.logits().unwrap().clone()
}

fn greedy_argmax(row: &[f32]) -> u32 {
    let mut best = 0;
    for (i, &v) in row.iter().enumerate() {
        if v > row[best] {
            best = i;
        }
    }
    best as u32
}

#[test]
fn teacher_forced_scoring_agrees_with_greedy_decoding_on_a_real_model() {
    let model = tiny_byte_model();
    let vocab = BYTE_VOCAB;
    let base = build_prompt(&bytes, 320, 4242, 0.5).unwrap();
    let prompt = &base.tokens[..base.prompt_len];

    // Decode greedily, one token at a time, re-running the whole sequence (no cache).
    let mut generated = prompt.to_vec();
    for _ in 0..3 {
        let l = logits(&model, &generated);
        generated.push(greedy_argmax(&l[l.len() - vocab..]));
    }
    let as_greedy = PasskeyPrompt {
        tokens: generated.clone(),
        ..base.clone()
    };
    let l = logits(&model, &generated[..generated.len() - 1]);
    assert!(answered_correctly(&l, vocab, &as_greedy));

    let mut other = generated;
    let last = other.len() - 1;
    other[last] = (other[last] + 1) % vocab as u32;
    let not_greedy = PasskeyPrompt {
        tokens: other.clone(),
        ..base
    };
    let l = logits(&model, &other[..other.len() - 1]);
    assert!(!answered_correctly(&l, vocab, &not_greedy));
}

/// A "model" that reads the key from its input and always answers it, and one that never does.
#[test]
fn run_passkey_reports_accuracy_per_length_and_depth() {
    let oracle = |tokens: &[u32]| -> Result<Vec<f32>> {
        let text: String = tokens.iter().map(|&t| t as u8 as char).collect();
        let at = text.find("The pass key is ").unwrap() + "The pass key is ".len();
        let key: String = text[at..]
            .chars()
            .take_while(char::is_ascii_digit)
            .collect();
        let answer = byte_tokens(format!(" {key}").as_bytes());
        let prompt_len = tokens.len() + 1 - answer.len();
        Ok(logits_choosing(tokens.len(), BYTE_VOCAB, |r| {
            if r + 1 >= prompt_len {
                answer[r + 1 - prompt_len] as usize
            } else {
                0
            }
        }))
    };
    let plan = PasskeyPlan {
        lengths: vec![300, 600],
        trials: 3,
        depths: vec![0.0, 0.5, 1.0],
        seed: 9,
    };
    let mut calls = 0;
    let results = run_passkey(
        &plan,
        BYTE_VOCAB,
        &bytes,
        &mut |t| oracle(t),
        &mut |done, total| {
            calls += 1;
            assert_eq!((done, total), (calls, 18));
        },
    )
    .unwrap();
    assert_eq!(results.len(), 2);
    for (r, length) in results.iter().zip([300, 600]) {
        assert_eq!((r.length, r.max_prompt_tokens), (length, length));
        assert_eq!((r.accuracy.trials, r.accuracy.correct), (9, 9));
        assert_eq!(r.by_depth.len(), 3);
        assert!(r.by_depth.iter().all(|d| d.accuracy.correct == 3));
        let norm = (5f64.exp() + (BYTE_VOCAB - 1) as f64).ln();
        assert!((r.answer_nats - (norm - 5.0)).abs() < 1e-9);
    }

    let random_depths = PasskeyPlan {
        depths: Vec::new(),
        ..plan
    };
    let never = run_passkey(
        &random_depths,
        BYTE_VOCAB,
        &bytes,
        &mut |t| Ok(vec![0.0; t.len() * BYTE_VOCAB]),
        &mut |_, _| {},
    )
    .unwrap();
    assert!(never
        .iter()
        .all(|r| r.accuracy.correct == 0 && r.accuracy.trials == 3 && r.by_depth.is_empty()));
    let ln_vocab = (BYTE_VOCAB as f64).ln();
    assert!(never
        .iter()
        .all(|r| (r.answer_nats - ln_vocab).abs() < 1e-9));
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
