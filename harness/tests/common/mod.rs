//! Shared helpers of the `harness` end-to-end tests: running the binary and reading what it wrote.
#![allow(dead_code)]

use std::path::Path;
use std::process::{Command, Output};

/// Runs the harness binary with `args` and waits for it.
pub fn harness(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_harness"))
        .args(args)
        .output()
        .expect("the harness binary runs")
}

/// `pretrain` options for a run of well under a second: one layer of width 64, three steps of
/// two sequences at context 32.
pub const TINY_PRETRAIN: &[&str] = &[
    "--hidden-size",
    "64",
    "--layers",
    "1",
    "--context",
    "32",
    "--steps",
    "3",
    "--batch-size",
    "2",
];

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

pub fn json(path: &Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(path).expect("readable")).expect("valid JSON")
}

/// A path as a command-line argument.
pub fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// (step, loss bits, grad norm bits) of every line of a metrics file.
pub fn curve(metrics: &Path) -> Vec<(u64, u64, u64)> {
    std::fs::read_to_string(metrics)
        .expect("readable")
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).expect("valid JSON");
            (
                v["step"].as_u64().expect("a step"),
                v["loss"].as_f64().expect("a loss").to_bits(),
                v["grad_norm"].as_f64().expect("a gradient norm").to_bits(),
            )
        })
        .collect()
}
