//! `harness finetune`: LongLoRA context extension of a base model.

use std::fs::{self, File};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

use clap::Args;
use longlora::backend::Engine;
use longlora::checkpoint::{load_config, load_model, save_model};
use longlora::data::{load_text_tokens, WindowSampler, BYTE_VOCAB};
use longlora::eval::perplexity;
use longlora::lora::{merge_lora, save_adapter, save_trainable_params};
use longlora::model::{Llama, LlamaConfig, TrainableSet};
use longlora::ops::attention::{AttnMask, AttnMode};
use longlora::optim::{AdamWConfig, Schedule};
use longlora::rng::Rng;
use longlora::train::{StepReport, TrainConfig, Trainer};
use longlora::{Error, Result};
use serde_json::json;

use crate::builtin;
use crate::device_arg::{self, DeviceArg};
use crate::progress::{bar, peak_memory_mib};

#[derive(Args, Debug)]
pub struct FinetuneArgs {
    /// Base model: a Hugging Face Llama directory (config.json + safetensors). Default: pre-train
    /// the built-in tiny byte-level model first (see --pretrain-steps).
    #[arg(long)]
    model: Option<PathBuf>,
    /// Training text: a .txt file or a directory of .txt files, byte-level tokens (needs a model with
    /// the byte vocabulary of 258). Default: the built-in synthetic long-range corpus.
    #[arg(long)]
    data: Option<PathBuf>,
    /// Target context length in tokens. Default: 4x the base model's max_position_embeddings.
    #[arg(long)]
    context: Option<usize>,
    /// Linear RoPE interpolation factor. Default: ceil(context / max_position_embeddings).
    #[arg(long)]
    rope_factor: Option<f64>,
    /// Attention during training: s2 (shifted sparse attention), s2-roll (the paper's Algorithm 1,
    /// which leaks future tokens; for reproduction only) or dense.
    #[arg(long, default_value = "s2")]
    attn: AttnMode,
    /// S²-Attn group size as a fraction of the context (the group size must come out even).
    #[arg(long, default_value_t = 0.25)]
    group_ratio: f64,
    /// LoRA rank r.
    #[arg(long, default_value_t = 8)]
    lora_rank: usize,
    /// LoRA alpha (the update is scaled by alpha / r).
    #[arg(long, default_value_t = 16.0)]
    lora_alpha: f64,
    /// Trainable parameters: lora, lora+embed+norm (LongLoRA) or full.
    #[arg(long, default_value = "lora+embed+norm")]
    trainable: TrainableSet,
    /// Optimizer steps.
    #[arg(long, default_value_t = 100)]
    steps: usize,
    /// Sequences per micro-batch.
    #[arg(long, default_value_t = 1)]
    batch_size: usize,
    /// Micro-batches per optimizer step (gradient accumulation).
    #[arg(long, default_value_t = 1)]
    grad_accum: usize,
    /// Peak learning rate. Default: 2e-5 (LongLoRA's) with --model, 1e-3 for the built-in tiny model.
    #[arg(long)]
    lr: Option<f64>,
    /// Linear warmup steps. Default: 20 (LongLoRA's) with --model, 5 for the built-in model.
    #[arg(long)]
    warmup_steps: Option<usize>,
    /// Learning-rate schedule after warmup: constant (LongLoRA's) or cosine.
    #[arg(long, default_value = "constant")]
    schedule: Schedule,
    /// AdamW weight decay.
    #[arg(long, default_value_t = 0.0)]
    weight_decay: f64,
    /// Clip gradients to this global L2 norm.
    #[arg(long, default_value_t = 1.0)]
    max_grad_norm: f64,
    /// Random seed: weights of the built-in model, LoRA init, data order.
    #[arg(long, default_value_t = 42)]
    seed: u64,
    /// Steps of pre-training for the built-in model (ignored with --model).
    #[arg(long, default_value_t = 200)]
    pretrain_steps: usize,
    /// Held-out text for the before/after loss (default: built-in held-out documents when the
    /// built-in corpus is used, otherwise none).
    #[arg(long)]
    eval_data: Option<PathBuf>,
    /// Number of held-out windows at the target context for the before/after loss.
    #[arg(long, default_value_t = 8)]
    eval_windows: usize,
    /// Output directory. Default: runs/finetune-<UTC date-time>.
    #[arg(long)]
    output: Option<PathBuf>,
    /// Allow writing into a non-empty output directory.
    #[arg(long)]
    overwrite: bool,
    /// Where the model runs: auto (a CUDA GPU if present, else the CPU), cpu, cuda or emu (the CUDA
    /// kernels in the CPU emulator). The built-in model's pre-training always runs on the CPU.
    #[arg(long, value_enum, default_value = "auto")]
    device: DeviceArg,
    /// Keep only each layer's input in the forward pass and recompute the layer inside its backward
    /// (less activation memory, one more forward).
    #[arg(long)]
    recompute: bool,
}

fn utc_stamp() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let (days, rem) = (secs / 86_400, secs % 86_400);
    // Civil-from-days (proleptic Gregorian), so run directories sort by time without a date crate.
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}{month:02}{day:02}-{:02}{:02}{:02}",
        rem / 3600,
        rem / 60 % 60,
        rem % 60
    )
}

/// Creates the output directory, refusing to mix with a previous run's files.
pub fn prepare_output(dir: &Path, overwrite: bool) -> Result<()> {
    let non_empty = fs::read_dir(dir).is_ok_and(|mut d| d.next().is_some());
    if non_empty && !overwrite {
        return Err(Error::option(
            "output",
            format!(
                "{} exists and is not empty; choose another --output or pass --overwrite",
                dir.display()
            ),
        ));
    }
    fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))
}

/// Mean loss over the first `windows` held-out windows of `context + 1` tokens (full attention).
fn heldout_loss(
    model: &Llama<f32>,
    engine: &mut Engine,
    tokens: &[u32],
    context: usize,
    windows: usize,
) -> Result<f64> {
    let usable = tokens.len().min(windows * context + 1);
    let ppl = perplexity(
        model,
        engine,
        usable,
        |s, n| Ok(tokens[s..s + n].to_vec()),
        context,
        context,
        &AttnMask::dense(),
        |_, _| {},
    )?;
    Ok(ppl.mean_loss)
}

/// The extension a run performs, validated before any expensive work starts.
struct Plan {
    original: usize,
    context: usize,
    factor: f64,
}

fn plan(args: &FinetuneArgs, base: &LlamaConfig) -> Result<Plan> {
    let original = base.max_position_embeddings;
    let context = args.context.unwrap_or(4 * original);
    let factor = match args.rope_factor {
        Some(f) => f,
        None => (context as f64 / original as f64).ceil().max(1.0),
    };
    AttnMask::from_ratio(args.attn, args.group_ratio, context)?;
    if args.trainable.uses_lora() && args.lora_rank == 0 {
        return Err(Error::option("lora-rank", "must be at least 1"));
    }
    let mut extended = base.clone();
    extended.rope_scaling_factor = factor;
    extended.validate()?;
    Ok(Plan {
        original,
        context,
        factor,
    })
}

struct Base {
    model: Llama<f32>,
    train_tokens: Vec<u32>,
    heldout: Option<Vec<u32>>,
    source: String,
}

fn text_tokens(p: &Path, vocab: usize) -> Result<Vec<u32>> {
    if vocab != BYTE_VOCAB {
        return Err(Error::option(
            "data",
            format!("text is tokenized byte-level, but the model's vocabulary has {vocab} tokens, not {BYTE_VOCAB}"),
        ));
    }
    load_text_tokens(p)
}

/// Loads the data, then the base model (pre-training the built-in one, the slow part, last).
fn load_base(args: &FinetuneArgs, vocab: usize) -> Result<Base> {
    let (train_tokens, heldout) = match (&args.data, &args.model) {
        (Some(p), _) => (
            text_tokens(p, vocab)?,
            args.eval_data.as_deref().map(|p| text_tokens(p, vocab)).transpose()?,
        ),
        (None, None) => (
            builtin::train_corpus(args.seed),
            Some(builtin::heldout_corpus(args.seed)),
        ),
        (None, Some(_)) => {
            return Err(Error::option(
                "data",
                "a --model needs --data: the built-in corpus is byte-level and fits only the built-in model",
            ))
        }
    };
    let (model, source) = match &args.model {
        Some(dir) => {
            let (cfg, weights) = load_model(dir)?;
            (Llama::new(cfg, weights)?, dir.display().to_string())
        }
        None => {
            let pb = bar(args.pretrain_steps, "pretrain");
            let model = builtin::pretrain(args.seed, args.pretrain_steps, |r| report(&pb, r))?;
            pb.finish();
            (model, "built-in (pre-trained in this run)".to_string())
        }
    };
    Ok(Base {
        model,
        train_tokens,
        heldout,
        source,
    })
}

fn report(pb: &indicatif::ProgressBar, r: &StepReport) {
    pb.set_position(r.step as u64);
    pb.set_message(format!(
        "loss {:.4} lr {:.2e} |g| {:.3} {:.0} tok/s",
        r.loss, r.lr, r.grad_norm, r.tokens_per_s
    ));
}

/// Runs the whole fine-tune and writes its outputs.
pub fn run(args: FinetuneArgs) -> Result<()> {
    let started = Instant::now();
    let out = args
        .output
        .clone()
        .unwrap_or_else(|| PathBuf::from(format!("runs/finetune-{}", utc_stamp())));
    let base_config = match &args.model {
        Some(dir) => load_config(dir)?,
        None => builtin::config(),
    };
    let Plan {
        original,
        context,
        factor,
    } = plan(&args, &base_config)?;
    let compute = device_arg::open(args.device)?;
    let lora_rank = if args.trainable.uses_lora() {
        args.lora_rank
    } else {
        0
    };
    compute.check_model(&base_config, Some(args.trainable), lora_rank)?;
    prepare_output(&out, args.overwrite)?;
    let Base {
        mut model,
        train_tokens,
        heldout,
        source,
    } = load_base(&args, base_config.vocab_size)?;
    if args.model.is_none() {
        save_model(&out.join("base-model"), &model.config, &model.weights)?;
    }
    let mut base_engine = Engine::new(compute, &model, None, false)?;
    let base_loss = match &heldout {
        Some(t) => Some(heldout_loss(
            &model,
            &mut base_engine,
            t,
            original,
            args.eval_windows * context / original,
        )?),
        None => None,
    };
    model.config.rope_scaling_factor = factor;
    if args.trainable.uses_lora() {
        model.weights.add_lora(
            args.lora_rank,
            args.lora_alpha,
            &mut Rng::derive(args.seed, 2),
        );
    }
    let builtin_model = args.model.is_none();
    let config = TrainConfig {
        steps: args.steps,
        batch_size: args.batch_size,
        grad_accum: args.grad_accum,
        seq_len: context,
        lr: args.lr.unwrap_or(if builtin_model { 1e-3 } else { 2e-5 }),
        warmup_steps: args
            .warmup_steps
            .unwrap_or(if builtin_model { 5 } else { 20 }),
        schedule: args.schedule,
        adamw: AdamWConfig {
            weight_decay: args.weight_decay,
            ..AdamWConfig::default()
        },
        max_grad_norm: args.max_grad_norm,
        attn: args.attn,
        group_ratio: args.group_ratio,
        trainable: args.trainable,
        seed: args.seed,
    };
    let sampler = WindowSampler::new(train_tokens, context)?;
    let engine = Engine::new(
        base_engine.into_compute(),
        &model,
        Some(args.trainable),
        args.recompute,
    )?;
    let mut trainer = Trainer::with_engine(&model, config.clone(), engine)?;
    eprintln!(
        "extending {source} from context {original} to {context}: rope factor {factor}, attention {}, \
         group ratio {}, trainable {} ({} parameters)",
        args.attn,
        args.group_ratio,
        args.trainable,
        trainer.trained_params()
    );

    let loss_before = match &heldout {
        Some(t) => Some(heldout_loss(
            &model,
            trainer.engine(),
            t,
            context,
            args.eval_windows,
        )?),
        None => None,
    };
    let mut metrics = File::create(out.join("metrics.jsonl")).map_err(|e| Error::io(&out, e))?;
    let pb = bar(args.steps, "finetune");
    let mut reports = Vec::with_capacity(args.steps);
    for _ in 0..args.steps {
        let r = trainer.step(&mut model, &sampler)?;
        report(&pb, &r);
        writeln!(
            metrics,
            "{}",
            serde_json::to_string(&r).expect("serialisable")
        )
        .map_err(|e| Error::io(out.join("metrics.jsonl"), e))?;
        reports.push(r);
    }
    pb.finish();
    let loss_after = match &heldout {
        Some(t) => Some(heldout_loss(
            &model,
            trainer.engine(),
            t,
            context,
            args.eval_windows,
        )?),
        None => None,
    };

    save_adapter(&out, &model.weights, &source)?;
    save_trainable_params(
        &out.join("trainable_params.safetensors"),
        &model.weights,
        args.trainable,
    )?;
    let mut merged = model.weights.clone();
    merge_lora(&mut merged);
    let mut merged_cfg = model.config.clone();
    merged_cfg.max_position_embeddings = context;
    save_model(&out.join("model"), &merged_cfg, &merged)?;

    let last = reports.last().expect("at least one step");
    let summary = json!({
        "base_model": source,
        "context": context,
        "original_context": original,
        "rope_factor": factor,
        "train": config,
        "trained_parameters": trainer.trained_params(),
        "heldout_loss_base_at_original_context": base_loss,
        "heldout_loss_before": loss_before,
        "heldout_loss_after": loss_after,
        "first_step_loss": reports[0].loss,
        "last_step_loss": last.loss,
        "finetune_tokens_per_s": last.tokens_per_s,
        "total_time_s": started.elapsed().as_secs_f64(),
        "peak_memory_mib": peak_memory_mib(),
        "version": env!("CARGO_PKG_VERSION"),
    });
    let run_json = serde_json::to_string_pretty(&summary).expect("serialisable");
    fs::write(out.join("run.json"), &run_json).map_err(|e| Error::io(out.join("run.json"), e))?;

    println!(
        "LongLoRA fine-tune finished in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    if let (Some(base), Some(b), Some(a)) = (base_loss, loss_before, loss_after) {
        println!(
            "  held-out loss (nats/token) of the base model at its context {original}: {base:.4}"
        );
        println!(
            "  held-out loss at context {context}: {b:.4} before -> {a:.4} after the fine-tune"
        );
    }
    println!(
        "  training loss: {:.4} first step -> {:.4} last step; {:.0} tokens/s",
        reports[0].loss, last.loss, last.tokens_per_s
    );
    if let Some(mib) = peak_memory_mib() {
        println!("  peak memory: {mib:.0} MiB");
    }
    println!(
        "  wrote {}: adapter_model.safetensors, adapter_config.json, trainable_params.safetensors, model/ (merged){}",
        out.display(),
        if builtin_model { ", base-model/" } else { "" }
    );
    Ok(())
}
