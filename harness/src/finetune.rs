//! `harness finetune`: LongLoRA context extension of a base model.

use std::fs;
use std::path::{Path, PathBuf};
use std::time::Instant;

use clap::Args;
use longlora::backend::Engine;
use longlora::data::tokenizer::Tokenizer;
use longlora::eval::perplexity;
use longlora::fs::write_atomic;
use longlora::hf::peft::{save_adapter, save_trainable_params};
use longlora::hf::peft::{RUN_FILE, TRAINABLE_PARAMS_FILE};
use longlora::hf::{load_config, load_model, save_model};
use longlora::model::lora::merge_lora;
use longlora::model::{Llama, LlamaConfig, TrainableSet};
use longlora::ops::attention::{AttnMask, AttnMode};
use longlora::rng::Rng;
use longlora::train::checkpoint::RunOptions;
use longlora::train::optim::{AdamWConfig, Schedule};
use longlora::train::{TrainConfig, Trainer};
use longlora::{Error, Result};
use serde_json::json;

use crate::builtin;
use crate::device_arg::{self, DeviceArg, Workload};
use crate::progress::{bar, peak_memory_mib};
use crate::training_data::{load_tokens, load_train_data, TrainData};
use crate::training_loop::{optimizer_options, run_steps, show_step, Checkpointing, RunArgs};

#[derive(Args, Debug)]
pub struct FinetuneArgs {
    /// Base model: a Hugging Face Llama directory (config.json + safetensors). Default: pre-train
    /// the built-in tiny byte-level model first (see --pretrain-steps).
    #[arg(long)]
    model: Option<PathBuf>,
    /// Training data: text (a .txt file or a directory of .txt files, tokenized with the model's
    /// tokenizer.json, or byte level for a byte-vocabulary model), a .bin token file from `harness
    /// tokenize`, or SFT records (.json array or .jsonl of {instruction, input?, output}, one padded
    /// sequence each, only the answer scored). Default: the built-in synthetic long-range corpus.
    #[arg(long)]
    data: Option<PathBuf>,
    /// Target context length in tokens. Default: 4x the base model's max_position_embeddings.
    #[arg(long)]
    context: Option<usize>,
    /// Linear RoPE interpolation factor. Default: ceil(context / max_position_embeddings).
    #[arg(long)]
    rope_factor: Option<f64>,
    /// Attention during training: s2 (shifted sparse attention), s2-roll (the paper's Algorithm 1,
    /// which leaks future tokens; for reproduction only), s2-noshift (groups without the shifted
    /// half: the paper's "short attention" ablation) or dense.
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
    /// Held-out text or .bin token file for the before/after loss (default: built-in held-out
    /// documents when the built-in corpus is used, otherwise none).
    #[arg(long)]
    eval_data: Option<PathBuf>,
    /// Number of held-out windows at the target context for the before/after loss.
    #[arg(long, default_value_t = 8)]
    eval_windows: usize,
    #[command(flatten)]
    run: RunArgs,
    /// Where the model runs: auto (a CUDA GPU if present, else the CPU), cpu, cuda or emu (the CUDA
    /// kernels in the CPU emulator). The built-in model's pre-training always runs on the CPU.
    #[arg(long, value_enum, default_value = "auto")]
    device: DeviceArg,
    /// Keep only each layer's input in the forward pass and recompute the layer inside its backward
    /// (less activation memory, one more forward).
    #[arg(long)]
    recompute: bool,
}

/// UTC date-time for default run directory names.
pub fn utc_stamp() -> String {
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

/// Creates the output directory given by `option`, refusing to mix with a previous run's files.
pub fn prepare_output(dir: &Path, overwrite: bool, option: &'static str) -> Result<()> {
    let non_empty = fs::read_dir(dir).is_ok_and(|mut d| d.next().is_some());
    if non_empty && !overwrite {
        return Err(Error::option(
            option,
            format!(
                "{} exists and is not empty; choose another --{option} or pass --overwrite",
                dir.display()
            ),
        ));
    }
    fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))
}

/// Mean loss over the first `windows` held-out windows of `context + 1` tokens (full attention).
fn heldout_loss(
    engine: &mut Engine,
    tokens: &[u32],
    context: usize,
    windows: usize,
) -> Result<f64> {
    let usable = tokens.len().min(windows * context + 1);
    let ppl = perplexity(
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
    tokenizer: Tokenizer,
    train: TrainData,
    heldout: Option<Vec<u32>>,
    source: String,
}

/// Loads the data, then the base model (pre-training the built-in one, the slow part, last, unless
/// a resumed run saved it in `saved_builtin`).
fn load_base(args: &FinetuneArgs, vocab: usize, saved_builtin: Option<&Path>) -> Result<Base> {
    let tokenizer = match &args.model {
        Some(dir) => Tokenizer::from_model_dir(dir)?,
        None => Tokenizer::builtin(),
    };
    let (train, heldout) = match (&args.data, &args.model) {
        (Some(p), _) => (
            load_train_data(p, &tokenizer, vocab)?,
            args.eval_data
                .as_deref()
                .map(|p| load_tokens(p, &tokenizer, vocab))
                .transpose()?,
        ),
        (None, None) => (
            TrainData::Tokens(builtin::train_corpus(args.seed)),
            Some(builtin::heldout_corpus(args.seed)),
        ),
        (None, Some(_)) => {
            return Err(Error::option(
                "data",
                "a --model needs --data: the built-in corpus is byte-level and fits only the built-in model",
            ))
        }
    };
    let builtin_source = "built-in (pre-trained in this run)".to_string();
    let (model, source) = match (&args.model, saved_builtin) {
        (Some(dir), _) => {
            let (cfg, weights) = load_model(dir)?;
            (Llama::new(cfg, weights)?, dir.display().to_string())
        }
        (None, Some(dir)) => {
            let (cfg, weights) = load_model(dir)?;
            (Llama::new(cfg, weights)?, builtin_source)
        }
        (None, None) => {
            let pb = bar(args.pretrain_steps, "pretrain");
            let model = builtin::pretrain(args.seed, args.pretrain_steps, |r| show_step(&pb, r))?;
            pb.finish();
            (model, builtin_source)
        }
    };
    Ok(Base {
        model,
        tokenizer,
        train,
        heldout,
        source,
    })
}

/// The options that define the run: a resume must repeat them.
fn run_options(
    args: &FinetuneArgs,
    plan: &Plan,
    config: &TrainConfig,
    data_size: usize,
) -> RunOptions {
    let mut options = vec![
        ("model", json!(args.model)),
        // Before data: the built-in corpus is generated from the seed.
        ("seed", json!(config.seed)),
        ("data", json!({"path": args.data, "size": data_size})),
        (
            "pretrain-steps",
            json!(args.model.is_none().then_some(args.pretrain_steps)),
        ),
        ("context", json!(plan.context)),
        ("rope-factor", json!(plan.factor)),
        ("attn", json!(config.attn.to_string())),
        ("group-ratio", json!(config.group_ratio)),
        ("trainable", json!(config.trainable.to_string())),
        ("lora-rank", json!(args.lora_rank)),
        ("lora-alpha", json!(args.lora_alpha)),
    ];
    options.extend(optimizer_options(config));
    options
}

/// Runs the whole fine-tune and writes its outputs.
pub fn run(args: FinetuneArgs) -> Result<()> {
    let started = Instant::now();
    let (out, resume) = args.run.open("finetune")?;
    let base_config = match &args.model {
        Some(dir) => load_config(dir)?,
        None => builtin::config(),
    };
    let plan = plan(&args, &base_config)?;
    let Plan {
        original,
        context,
        factor,
    } = plan;
    let compute = device_arg::open(
        args.device,
        &Workload {
            config: &base_config,
            trainable: Some(args.trainable),
            lora_rank: if args.trainable.uses_lora() {
                args.lora_rank
            } else {
                0
            },
        },
    )?;
    if resume.is_none() {
        prepare_output(&out, args.run.overwrite, "output")?;
    }
    let saved_builtin = out.join("base-model");
    let Base {
        model,
        tokenizer,
        train,
        heldout,
        source,
    } = load_base(
        &args,
        base_config.vocab_size,
        resume.as_ref().map(|_| saved_builtin.as_path()),
    )?;
    if args.model.is_none() && resume.is_none() {
        save_model(&saved_builtin, &model.config, &model.weights)?;
        tokenizer.save(&saved_builtin)?;
    }
    let mut base_engine = Engine::new(compute, model, None, false)?;
    let saved_loss = |key: &str| resume.as_ref().and_then(|ck| ck.notes[key].as_f64());
    let base_loss = match (&heldout, &resume) {
        (Some(_), Some(_)) => saved_loss("heldout_loss_base_at_original_context"),
        (Some(t), None) => Some(heldout_loss(
            &mut base_engine,
            t,
            original,
            args.eval_windows * context / original,
        )?),
        (None, _) => None,
    };
    let (compute, mut model) = base_engine.into_parts()?;
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
    let options = run_options(&args, &plan, &config, train.fingerprint());
    let sampler = train.sampler(&tokenizer, context)?;
    let resumed_from = resume.as_ref().map(|ck| ck.dir.clone());
    let saved_loss_before = saved_loss("heldout_loss_before");
    let engine = Engine::new(compute, model, Some(args.trainable), args.recompute)?;
    let mut trainer = match resume {
        Some(ck) => ck.resume(engine, config.clone(), &options)?,
        None => Trainer::with_engine(engine, config.clone())?,
    };
    eprintln!(
        "extending {source} from context {original} to {context}: rope factor {factor}, attention {}, \
         group ratio {}, trainable {} ({} parameters)",
        args.attn,
        args.group_ratio,
        args.trainable,
        trainer.trained_params()
    );

    let loss_before = match (&heldout, &resumed_from) {
        (Some(_), Some(_)) => saved_loss_before,
        (Some(t), None) => Some(heldout_loss(
            trainer.engine(),
            t,
            context,
            args.eval_windows,
        )?),
        (None, _) => None,
    };
    let notes = json!({
        "heldout_loss_base_at_original_context": base_loss,
        "heldout_loss_before": loss_before,
    });
    let checkpointing = Checkpointing {
        run_dir: &out,
        save_every: args.run.save_every,
        resumed_from,
        options: &options,
        notes: &notes,
    };
    let reports = run_steps(&mut trainer, sampler.as_ref(), &checkpointing, "finetune")?;
    let loss_after = match &heldout {
        Some(t) => Some(heldout_loss(
            trainer.engine(),
            t,
            context,
            args.eval_windows,
        )?),
        None => None,
    };

    let trained_parameters = trainer.trained_params();
    let model = trainer.into_model()?;
    // A full fine-tune has no adapter; its trained tensors are all in trainable_params.
    if args.trainable.uses_lora() {
        save_adapter(&out, &model.weights, &source)?;
    }
    save_trainable_params(
        &out.join(TRAINABLE_PARAMS_FILE),
        &model.weights,
        args.trainable,
    )?;
    let mut merged = model.weights.clone();
    merge_lora(&mut merged);
    let mut merged_cfg = model.config.clone();
    merged_cfg.max_position_embeddings = context;
    save_model(&out.join("model"), &merged_cfg, &merged)?;
    tokenizer.save(&out.join("model"))?;

    let last = reports.last().expect("at least one step");
    let summary = json!({
        "base_model": source,
        "tokenizer": tokenizer.source(),
        "context": context,
        "original_context": original,
        "rope_factor": factor,
        "train": config,
        "trained_parameters": trained_parameters,
        "heldout_loss_base_at_original_context": base_loss,
        "heldout_loss_before": loss_before,
        "heldout_loss_after": loss_after,
        "first_step_loss": reports[0].loss,
        "last_step_loss": last.loss,
        "finetune_tokens_per_s": last.tokens_per_s,
        "total_time_s": started.elapsed().as_secs_f64(),
        "peak_memory_mib": peak_memory_mib(),
        "resumed_from": checkpointing.resumed_from,
        "version": env!("CARGO_PKG_VERSION"),
    });
    let run_json = serde_json::to_string_pretty(&summary).expect("serialisable");
    write_atomic(&out.join(RUN_FILE), run_json.as_bytes())?;

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
        "  wrote {}: {}trainable_params.safetensors, model/ (merged){}",
        out.display(),
        if args.trainable.uses_lora() {
            "adapter_model.safetensors, adapter_config.json, "
        } else {
            ""
        },
        if builtin_model { ", base-model/" } else { "" }
    );
    Ok(())
}
