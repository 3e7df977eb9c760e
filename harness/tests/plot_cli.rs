//! `harness plot`: every chart kind renders a 900×600 PNG that is not blank and shows its series'
//! colours, from hand-written inputs and from what `pretrain`, `eval` and `passkey` really write;
//! bad inputs fail naming the file and write nothing.

mod common;

use std::fs;
use std::path::Path;

use common::{harness, s, stderr, TINY_PRETRAIN};
use serde_json::json;

/// The first colours of the line palette and the FLOPs chart's attention colour.
const BLUE: [u8; 3] = [31, 119, 180];
const ORANGE: [u8; 3] = [255, 127, 14];
const ATTENTION_RED: [u8; 3] = [214, 39, 40];
/// A curve across the plot covers about 2000 pixels of its colour; its legend swatch and point
/// markers alone stay under 300, so this many proves the line itself was drawn.
const CURVE_PIXELS: usize = 800;

/// Decodes a PNG the command wrote, checking its signature and size; returns its RGB pixels.
fn read_png(path: &Path) -> Vec<[u8; 3]> {
    let bytes = fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    assert_eq!(
        &bytes[..8],
        b"\x89PNG\r\n\x1a\n",
        "PNG signature of {}",
        path.display()
    );
    let mut reader = png::Decoder::new(std::io::Cursor::new(bytes))
        .read_info()
        .unwrap();
    let mut buf = vec![0; reader.output_buffer_size().unwrap()];
    let info = reader.next_frame(&mut buf).unwrap();
    assert_eq!(
        (info.width, info.height),
        (900, 600),
        "size of {}",
        path.display()
    );
    assert_eq!(info.color_type, png::ColorType::Rgb);
    buf[..info.buffer_size()]
        .chunks_exact(3)
        .map(|p| [p[0], p[1], p[2]])
        .collect()
}

/// Asserts the chart is not blank and that each colour covers at least `min_pixels` pixels.
fn assert_drawn(path: &Path, colours: &[[u8; 3]], min_pixels: usize) {
    let pixels = read_png(path);
    let inked = pixels.iter().filter(|&&p| p != [255, 255, 255]).count();
    assert!(
        inked > pixels.len() / 50,
        "{}: only {inked} of {} pixels are not white",
        path.display(),
        pixels.len()
    );
    for c in colours {
        let n = pixels.iter().filter(|&&p| p == *c).count();
        assert!(
            n >= min_pixels,
            "{}: colour {c:?} on {n} pixels",
            path.display()
        );
    }
}

fn write_metrics(path: &Path, steps: usize, scale: f64) {
    let lines: Vec<String> = (1..=steps)
        .map(|step| {
            let loss = 1.5 + scale * (-(step as f64) / 20.0).exp() + 0.1 * ((step % 7) as f64);
            json!({"step": step, "loss": loss, "lr": 1e-3, "grad_norm": 1.0, "tokens": step * 64,
                   "elapsed_s": step as f64, "tokens_per_s": 64.0})
            .to_string()
        })
        .collect();
    fs::write(path, lines.join("\n") + "\n").unwrap();
}

fn write_eval(path: &Path, mean_loss: f64) {
    let v = json!({"windows": 4, "tokens_scored": 1024, "mean_loss": mean_loss,
                   "perplexity": mean_loss.exp()});
    fs::write(path, v.to_string()).unwrap();
}

fn write_passkey(path: &Path, accuracies: &[(usize, f64)]) {
    let results: Vec<_> = accuracies
        .iter()
        .map(|&(length, accuracy)| {
            json!({"length": length, "max_prompt_tokens": length, "trials": 10,
                   "correct": (accuracy * 10.0) as usize, "accuracy": accuracy})
        })
        .collect();
    fs::write(path, json!({"results": results}).to_string()).unwrap();
}

fn run_ok(args: &[&str]) {
    let o = harness(args);
    assert!(o.status.success(), "{args:?}: {}", stderr(&o));
}

/// `plot KIND` of two series (then `extra` options) draws both curves.
fn plot_two_curves(kind: &str, out: &Path, series: [String; 2], extra: &[&str]) {
    let args = [
        "plot",
        kind,
        "--out",
        s(out),
        "--series",
        &series[0],
        "--series",
        &series[1],
    ];
    run_ok(&[&args[..], extra].concat());
    assert_drawn(out, &[BLUE, ORANGE], CURVE_PIXELS);
}

#[test]
fn loss_chart_draws_every_run_smoothed_or_not() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (dir.path().join("run-a"), dir.path().join("b.jsonl"));
    fs::create_dir(&a).unwrap();
    write_metrics(&a.join("metrics.jsonl"), 120, 4.0);
    write_metrics(&b, 80, 6.0);
    for smooth in ["1", "10"] {
        let out = dir.path().join(format!("loss-{smooth}.png"));
        let series = [format!("dense={}", s(&a)), format!("s2={}", s(&b))];
        plot_two_curves("loss", &out, series, &["--smooth", smooth]);
    }
}

#[test]
fn eval_chart_draws_a_curve_per_model_over_contexts() {
    let dir = tempfile::tempdir().unwrap();
    let series = [("base", 2.0), ("lora", 1.8)].map(|(model, base)| {
        let files: Vec<String> = [512, 1024, 2048]
            .iter()
            .map(|&c| {
                let f = dir.path().join(format!("{model}-{c}.json"));
                write_eval(&f, base + c as f64 / 4096.0);
                format!("{c}:{}", s(&f))
            })
            .collect();
        format!("{model}={}", files.join(","))
    });
    for metric in ["perplexity", "loss"] {
        let out = dir.path().join(format!("eval-{metric}.png"));
        let title = "Perplexity of two models";
        plot_two_curves(
            "eval",
            &out,
            series.clone(),
            &["--metric", metric, "--title", title],
        );
    }
}

#[test]
fn passkey_chart_draws_accuracy_against_length() {
    let dir = tempfile::tempdir().unwrap();
    let (base, ext) = (dir.path().join("base.json"), dir.path().join("ext.json"));
    write_passkey(&base, &[(512, 1.0), (1024, 0.2), (2048, 0.0)]);
    write_passkey(&ext, &[(512, 1.0), (1024, 0.9), (2048, 0.8)]);
    let out = dir.path().join("passkey.png");
    let series = [
        format!("base={}", s(&base)),
        format!("extended={}", s(&ext)),
    ];
    plot_two_curves("passkey", &out, series, &[]);
}

#[test]
fn flops_chart_draws_the_papers_stacked_bars() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("flops.png");
    run_ok(&["plot", "flops", "--out", s(&out)]);
    // The attention bars at 64k alone are over a hundred pixels tall.
    assert_drawn(&out, &[ATTENTION_RED], 20_000);
}

/// Runs `plot KIND` on one series expecting failure; returns stderr and checks that no PNG was
/// written.
fn plot_fails(kind: &str, series: &str, out: &Path) -> String {
    let o = harness(&["plot", kind, "--out", s(out), "--series", series]);
    assert!(
        !o.status.success(),
        "plot {kind} --series {series} should fail"
    );
    assert!(!out.exists(), "{} written by a failing plot", out.display());
    stderr(&o)
}

#[test]
fn bad_inputs_fail_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("chart.png");
    let series = |path: &Path| format!("a={}", s(path));

    let metrics = dir.path().join("metrics.jsonl");
    fs::write(&metrics, "{\"step\": 1, \"loss\": 2.0}\nnot json\n").unwrap();
    let err = plot_fails("loss", &series(&metrics), &out);
    assert!(err.contains(s(&metrics)) && err.contains("line 2"), "{err}");

    let missing = dir.path().join("missing.json");
    let err = plot_fails("passkey", &series(&missing), &out);
    assert!(err.contains(s(&missing)), "{err}");

    let eval = dir.path().join("eval.json");
    write_eval(&eval, 2.0);
    let err = plot_fails("eval", &series(&eval), &out);
    assert!(
        err.contains(s(&eval)) && err.contains("CONTEXT:FILE"),
        "{err}"
    );

    let not_passkey = dir.path().join("not-passkey.json");
    fs::write(&not_passkey, "{\"results\": 3}").unwrap();
    let err = plot_fails("passkey", &series(&not_passkey), &out);
    assert!(err.contains(s(&not_passkey)), "{err}");

    let err = plot_fails("loss", "no-equals-sign", &out);
    assert!(err.contains("NAME=FILE"), "{err}");
}

#[test]
fn charts_read_what_pretrain_eval_and_passkey_write() {
    let dir = tempfile::tempdir().unwrap();
    let text = dir.path().join("text.txt");
    fs::write(&text, "The grass is green. The sky is blue. ".repeat(40)).unwrap();
    let run = dir.path().join("run");
    let pretrain = ["pretrain", "--data", s(&text), "--output", s(&run)];
    run_ok(&[&pretrain[..], TINY_PRETRAIN].concat());
    let mut evals = Vec::new();
    for context in ["16", "32"] {
        let o = harness(&[
            "eval",
            "--model",
            s(&run),
            "--data",
            s(&text),
            "--context",
            context,
        ]);
        assert!(o.status.success(), "{}", stderr(&o));
        let f = dir.path().join(format!("eval-{context}.json"));
        fs::write(&f, &o.stdout).unwrap();
        evals.push(format!("{context}:{}", s(&f)));
    }
    let o = harness(&[
        "passkey",
        "--model",
        s(&run),
        "--lengths",
        "300,400",
        "--trials",
        "1",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let passkey = dir.path().join("passkey.json");
    fs::write(&passkey, &o.stdout).unwrap();

    let charts = [
        ("loss", format!("run={}", s(&run))),
        ("eval", format!("run={}", evals.join(","))),
        ("passkey", format!("run={}", s(&passkey))),
    ];
    for (kind, series) in charts {
        let out = dir.path().join(format!("{kind}.png"));
        run_ok(&["plot", kind, "--out", s(&out), "--series", &series]);
        assert_drawn(&out, &[BLUE], CURVE_PIXELS);
    }
}
