//! `harness passkey` end to end on a small random byte-level model: one JSON object with the
//! accuracy per length and depth; impossible lengths exit non-zero with a clear message.

mod common;

use common::harness;
use longlora::data::BYTE_VOCAB;
use longlora::hf::save_model;
use longlora::model::{LlamaConfig, LlamaWeights};
use longlora::rng::Rng;

fn small_byte_model(dir: &std::path::Path) {
    let config = LlamaConfig {
        vocab_size: BYTE_VOCAB,
        hidden_size: 32,
        intermediate_size: 48,
        num_hidden_layers: 1,
        num_attention_heads: 2,
        num_key_value_heads: 2,
        rope_theta: 10000.0,
        rms_norm_eps: 1e-5,
        max_position_embeddings: 320,
        rope_scaling_factor: 1.0,
        bos_token_id: None,
        eos_token_id: None,
    };
    let weights = LlamaWeights::random(&config, 0.02, &mut Rng::new(1));
    save_model(dir, &config, &weights).unwrap();
}

#[test]
fn passkey_prints_accuracy_per_length_and_depth() {
    let dir = tempfile::tempdir().unwrap();
    small_byte_model(dir.path());
    let model = dir.path().to_str().unwrap();
    let o = harness(&[
        "passkey",
        "--model",
        model,
        "--lengths",
        "300,400",
        "--trials",
        "2",
        "--depths",
        "0,1",
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let report: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let results = report["results"].as_array().unwrap();
    assert_eq!(results.len(), 2);
    for (r, length) in results.iter().zip([300, 400]) {
        assert_eq!(r["length"], length);
        assert_eq!(r["max_prompt_tokens"], length);
        assert_eq!(r["trials"], 4);
        let accuracy = r["accuracy"].as_f64().unwrap();
        assert!((0.0..=1.0).contains(&accuracy));
        assert_eq!(r["by_depth"].as_array().unwrap().len(), 2);
    }

    let o = harness(&["passkey", "--model", model, "--lengths", "50"]);
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("error:") && err.contains("50 tokens cannot hold"),
        "{err}"
    );
}

/// `--rope-factor` is the option's name in every command; `--rope-scale`, its older name in `eval`
/// and `passkey`, still works.
#[test]
fn passkey_takes_the_rope_factor_under_both_names() {
    let dir = tempfile::tempdir().unwrap();
    small_byte_model(dir.path());
    let model = dir.path().to_str().unwrap();
    for name in ["--rope-factor", "--rope-scale"] {
        let o = harness(&[
            "passkey",
            "--model",
            model,
            "--lengths",
            "300",
            "--trials",
            "1",
            name,
            "2",
        ]);
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        let report: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
        assert_eq!(report["rope_scaling_factor"], 2.0, "{name}");
        let nats = report["results"][0]["answer_nats"].as_f64().unwrap();
        assert!(nats > 0.0 && nats.is_finite(), "{name}: answer_nats {nats}");
    }
}
