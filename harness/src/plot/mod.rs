//! `harness plot`: PNG charts of what the other commands write — training loss curves from
//! metrics.jsonl, perplexity against context from `eval`'s JSON, passkey accuracy against length
//! from `passkey`'s JSON — and the LongLoRA paper's FLOPs figure.

mod chart;
mod inputs;

use std::path::PathBuf;

use clap::{Args, Subcommand};
use longlora::cost::flops::{paper_forward_flops, PAPER_FIGURE_CONTEXTS};
use longlora::cost::llama2_7b;
use longlora::{Error, Result};

use chart::{draw_flops, draw_lines, LineChart, XAxis};
use inputs::{eval_series, loss_series, passkey_series, smoothed, EvalMetric, Series, SeriesArg};

#[derive(Args, Debug)]
pub struct PlotArgs {
    #[command(subcommand)]
    kind: PlotKind,
}

#[derive(Subcommand, Debug)]
enum PlotKind {
    /// Training loss against step, one curve per run.
    Loss(LossArgs),
    /// Perplexity (or mean loss) against evaluation context, one curve per model.
    Eval(EvalArgs),
    /// Passkey retrieval accuracy against prompt length, one curve per model.
    Passkey(PasskeyArgs),
    /// The LongLoRA paper's FLOPs figure for Llama-2-7B: forward FLOPs per sequence at 8k–64k,
    /// attention against the rest, full attention against S²-Attn.
    Flops(FlopsArgs),
}

/// Options every chart takes.
#[derive(Args, Debug)]
struct ChartArgs {
    /// The PNG to write (900×600).
    #[arg(long)]
    out: PathBuf,
    /// The chart's title. Default: one naming what is plotted.
    #[arg(long)]
    title: Option<String>,
}

#[derive(Args, Debug)]
struct LossArgs {
    #[command(flatten)]
    chart: ChartArgs,
    /// A curve: NAME=RUN (a run directory or its metrics.jsonl; several, comma-separated, are
    /// joined). Repeat for more curves.
    #[arg(long = "series", required = true, value_name = "NAME=RUN[,RUN...]")]
    series: Vec<SeriesArg>,
    /// Plot the mean of the last W steps' losses (the raw curve stays, faint, underneath).
    #[arg(long, default_value_t = 1, value_name = "W")]
    smooth: usize,
}

#[derive(Args, Debug)]
struct EvalArgs {
    #[command(flatten)]
    chart: ChartArgs,
    /// A curve: NAME=FILE,FILE,... with one `harness eval` output per context. A file whose JSON
    /// has no `context` is written CONTEXT:FILE (e.g. `base=512:ev/base-512.json`). Repeat for
    /// more curves.
    #[arg(
        long = "series",
        required = true,
        value_name = "NAME=[CONTEXT:]FILE[,...]"
    )]
    series: Vec<SeriesArg>,
    /// What to plot of each result.
    #[arg(long, value_enum, default_value = "perplexity")]
    metric: EvalMetric,
}

#[derive(Args, Debug)]
struct PasskeyArgs {
    #[command(flatten)]
    chart: ChartArgs,
    /// A curve: NAME=FILE with a `harness passkey` output (several files are joined). Repeat for
    /// more curves.
    #[arg(long = "series", required = true, value_name = "NAME=FILE[,FILE...]")]
    series: Vec<SeriesArg>,
}

#[derive(Args, Debug)]
struct FlopsArgs {
    #[command(flatten)]
    chart: ChartArgs,
}

/// Reads every series, or fails naming the file at fault.
fn read_all(
    args: &[SeriesArg],
    read: impl Fn(&SeriesArg) -> Result<Series>,
) -> Result<Vec<Series>> {
    args.iter().map(read).collect()
}

/// Draws the chart and says where it went.
pub fn run(args: PlotArgs) -> Result<()> {
    let out = match args.kind {
        PlotKind::Loss(a) => plot_loss(a)?,
        PlotKind::Eval(a) => plot_eval(a)?,
        PlotKind::Passkey(a) => plot_passkey(a)?,
        PlotKind::Flops(a) => plot_flops(a)?,
    };
    println!("wrote {}", out.display());
    Ok(())
}

fn plot_loss(a: LossArgs) -> Result<PathBuf> {
    if a.smooth == 0 {
        return Err(Error::option(
            "smooth",
            "the window must be at least 1 step",
        ));
    }
    let raw = read_all(&a.series, loss_series)?;
    let curves: Vec<Series> = raw.iter().map(|s| smoothed(s, a.smooth)).collect();
    let title = match a.smooth {
        1 => "Training loss".to_string(),
        w => format!("Training loss (mean of the last {w} steps)"),
    };
    draw_lines(
        &a.chart.out,
        &LineChart {
            title: a.chart.title.as_deref().unwrap_or(&title),
            x_desc: "optimizer step",
            y_desc: "training loss (nats/token)",
            x_axis: XAxis::Linear,
            y_range: None,
            series: &curves,
            faint: if a.smooth > 1 { &raw } else { &[] },
            markers: false,
        },
    )?;
    Ok(a.chart.out)
}

fn plot_eval(a: EvalArgs) -> Result<PathBuf> {
    let curves = read_all(&a.series, |s| eval_series(s, a.metric))?;
    let (title, y_desc) = match a.metric {
        EvalMetric::Perplexity => ("Perplexity against context", "perplexity"),
        EvalMetric::Loss => ("Evaluation loss against context", "mean loss (nats/token)"),
    };
    draw_lines(
        &a.chart.out,
        &LineChart {
            title: a.chart.title.as_deref().unwrap_or(title),
            x_desc: "evaluation context (tokens, log scale)",
            y_desc,
            x_axis: XAxis::Log2,
            y_range: None,
            series: &curves,
            faint: &[],
            markers: true,
        },
    )?;
    Ok(a.chart.out)
}

fn plot_passkey(a: PasskeyArgs) -> Result<PathBuf> {
    let curves = read_all(&a.series, passkey_series)?;
    draw_lines(
        &a.chart.out,
        &LineChart {
            title: a
                .chart
                .title
                .as_deref()
                .unwrap_or("Passkey retrieval accuracy"),
            x_desc: "prompt length (tokens, log scale)",
            y_desc: "accuracy (%)",
            x_axis: XAxis::Log2,
            y_range: Some(-4.0..104.0),
            series: &curves,
            faint: &[],
            markers: true,
        },
    )?;
    Ok(a.chart.out)
}

fn plot_flops(a: FlopsArgs) -> Result<PathBuf> {
    let cfg = llama2_7b();
    let bars: Vec<_> = PAPER_FIGURE_CONTEXTS
        .iter()
        .map(|&n| {
            let full = paper_forward_flops(&cfg, n, 1.0);
            let s2 = paper_forward_flops(&cfg, n, 0.25);
            (n, full, s2)
        })
        .collect();
    let title = "Llama-2-7B forward FLOPs, the LongLoRA paper's convention";
    draw_flops(
        &a.chart.out,
        a.chart.title.as_deref().unwrap_or(title),
        &bars,
    )?;
    Ok(a.chart.out)
}
