//! `harness pretrain`: a Llama trained from scratch (all parameters, dense attention), written as a
//! Hugging Face model directory: the base models that LongLoRA then extends.

use std::path::PathBuf;
use std::time::Instant;

use clap::{Args, ValueEnum};
use longlora::backend::Engine;
use longlora::data::tokenizer::Tokenizer;
use longlora::data::WindowSampler;
use longlora::fs::write_atomic;
use longlora::hf::save_model;
use longlora::model::{Llama, LlamaConfig, LlamaWeights, TrainableSet};
use longlora::ops::attention::AttnMode;
use longlora::rng::Rng;
use longlora::train::checkpoint::RunOptions;
use longlora::train::optim::{AdamWConfig, Schedule};
use longlora::train::{TrainConfig, Trainer};
use longlora::Result;
use serde_json::json;

use crate::device_arg::{self, DeviceArg, Workload};
use crate::finetune::prepare_output;
use crate::progress::peak_memory_mib;
use crate::training_data::{load_tokens, TokenizerSource};
use crate::training_loop::{optimizer_options, run_steps, Checkpointing, RunArgs};

/// Width of every attention head: the GPU attention kernels are built for 64.
const HEAD_DIM: usize = 64;

/// Named model sizes (with the byte vocabulary: tiny ~1.1 M, small ~10.8 M parameters).
#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum Preset {
    /// hidden 128, 5 layers, 2 heads.
    Tiny,
    /// hidden 384, 6 layers, 6 heads.
    Small,
}

impl Preset {
    /// Hidden size and number of layers.
    fn dims(self) -> (usize, usize) {
        match self {
            Preset::Tiny => (128, 5),
            Preset::Small => (384, 6),
        }
    }
}

#[derive(Args, Debug)]
pub struct PretrainArgs {
    /// Training data: a .txt file or a directory of .txt files (tokenized with --tokenizer, each
    /// file one document followed by EOS), or a .bin token file from `harness tokenize`.
    #[arg(long)]
    data: PathBuf,
    /// Model size. The dimension options below override single fields of it.
    #[arg(long, value_enum, default_value_t = Preset::Tiny)]
    preset: Preset,
    /// Hidden size (d_model). Default: the preset's.
    #[arg(long)]
    hidden_size: Option<usize>,
    /// Decoder layers. Default: the preset's.
    #[arg(long)]
    layers: Option<usize>,
    /// Attention heads. Default: hidden size / 64, so heads are 64 wide as the GPU kernels need.
    #[arg(long)]
    heads: Option<usize>,
    /// Key/value heads (grouped-query attention when fewer than --heads). Default: --heads.
    #[arg(long)]
    kv_heads: Option<usize>,
    /// SwiGLU MLP width. Default: 8/3 of the hidden size rounded up to a multiple of 32 (Llama's).
    #[arg(long)]
    intermediate_size: Option<usize>,
    /// Training context in tokens; config.json's max_position_embeddings.
    #[arg(long, default_value_t = 256)]
    context: usize,
    /// Tokenizer: a directory with tokenizer.json (copied into the output) or `builtin` (byte
    /// level, 258 tokens). It sets the vocabulary size.
    #[arg(long, default_value = "builtin")]
    tokenizer: TokenizerSource,
    /// Optimizer steps.
    #[arg(long, default_value_t = 1000)]
    steps: usize,
    /// Sequences per micro-batch.
    #[arg(long, default_value_t = 8)]
    batch_size: usize,
    /// Micro-batches per optimizer step (gradient accumulation).
    #[arg(long, default_value_t = 1)]
    grad_accum: usize,
    /// Peak learning rate.
    #[arg(long, default_value_t = 1e-3)]
    lr: f64,
    /// Linear warmup steps. Default: a tenth of --steps.
    #[arg(long)]
    warmup_steps: Option<usize>,
    /// Learning-rate schedule after warmup: cosine (to zero at the last step) or constant.
    #[arg(long, default_value = "cosine")]
    schedule: Schedule,
    /// AdamW weight decay.
    #[arg(long, default_value_t = 0.1)]
    weight_decay: f64,
    /// Clip gradients to this global L2 norm.
    #[arg(long, default_value_t = 1.0)]
    max_grad_norm: f64,
    /// Random seed: initial weights and data order.
    #[arg(long, default_value_t = 42)]
    seed: u64,
    #[command(flatten)]
    run: RunArgs,
    /// Where the model runs: auto, cpu, cuda or emu, as for finetune. Pre-training trains every
    /// weight, which only the CPU backend does: auto picks the CPU, cuda and emu are refused.
    #[arg(long, value_enum, default_value = "auto")]
    device: DeviceArg,
}

/// The architecture the options describe, for a vocabulary from `tokenizer`.
fn model_config(args: &PretrainArgs, tokenizer: &Tokenizer) -> Result<LlamaConfig> {
    let (preset_hidden, preset_layers) = args.preset.dims();
    let hidden = args.hidden_size.unwrap_or(preset_hidden);
    let heads = args.heads.unwrap_or((hidden / HEAD_DIM).max(1));
    let cfg = LlamaConfig {
        vocab_size: tokenizer.vocab_size(),
        hidden_size: hidden,
        intermediate_size: args
            .intermediate_size
            .unwrap_or((8 * hidden).div_ceil(3).next_multiple_of(32)),
        num_hidden_layers: args.layers.unwrap_or(preset_layers),
        num_attention_heads: heads,
        num_key_value_heads: args.kv_heads.unwrap_or(heads),
        rope_theta: 10000.0,
        rms_norm_eps: 1e-5,
        max_position_embeddings: args.context,
        rope_scaling_factor: 1.0,
        bos_token_id: tokenizer.bos_id(),
        eos_token_id: Some(tokenizer.eos_id()),
    };
    cfg.validate()?;
    Ok(cfg)
}

/// The options that define the run: a resume must repeat them.
fn run_options(
    args: &PretrainArgs,
    cfg: &LlamaConfig,
    config: &TrainConfig,
    data_tokens: usize,
) -> RunOptions {
    let mut options = vec![
        ("model", longlora::hf::config_to_json(cfg)),
        ("data", json!({"path": args.data, "tokens": data_tokens})),
        ("seed", json!(config.seed)),
        ("context", json!(config.seq_len)),
    ];
    options.extend(optimizer_options(config));
    options
}

/// Trains and writes config.json, model.safetensors, the tokenizer, metrics.jsonl and run.json.
pub fn run(args: PretrainArgs) -> Result<()> {
    let started = Instant::now();
    let (out, resume) = args.run.open("pretrain")?;
    let tokenizer = args.tokenizer.load()?;
    let cfg = model_config(&args, &tokenizer)?;
    let weights = LlamaWeights::random(&cfg, 0.02, &mut Rng::derive(args.seed, 1));
    let model = Llama::new(cfg.clone(), weights)?;
    let compute = device_arg::open(
        args.device,
        &Workload {
            config: &cfg,
            trainable: Some(TrainableSet::Full),
            lora_rank: 0,
        },
    )?;
    let engine = Engine::new(compute, model, Some(TrainableSet::Full), false)?;
    let config = TrainConfig {
        steps: args.steps,
        batch_size: args.batch_size,
        grad_accum: args.grad_accum,
        seq_len: args.context,
        lr: args.lr,
        warmup_steps: args.warmup_steps.unwrap_or(args.steps / 10),
        schedule: args.schedule,
        adamw: AdamWConfig {
            weight_decay: args.weight_decay,
            ..AdamWConfig::default()
        },
        max_grad_norm: args.max_grad_norm,
        attn: AttnMode::Dense,
        group_ratio: 1.0,
        trainable: TrainableSet::Full,
        seed: args.seed,
    };
    let tokens = load_tokens(&args.data, &tokenizer, cfg.vocab_size)?;
    let data_tokens = tokens.len();
    let sampler = WindowSampler::new(tokens, args.context)?;
    let options = run_options(&args, &cfg, &config, data_tokens);
    let resumed_from = resume.as_ref().map(|ck| ck.dir.clone());
    let mut trainer = match resume {
        Some(ck) => ck.resume(engine, config.clone(), &options)?,
        None => {
            prepare_output(&out, args.run.overwrite, "output")?;
            Trainer::with_engine(engine, config.clone())?
        }
    };
    eprintln!(
        "pre-training a {} M-parameter Llama (d {}, {} layers, {} heads, vocabulary {}) at context \
         {} on {} tokens of {}",
        (cfg.num_params() as f64 / 1e6 * 100.0).round() / 100.0,
        cfg.hidden_size,
        cfg.num_hidden_layers,
        cfg.num_attention_heads,
        cfg.vocab_size,
        args.context,
        data_tokens,
        args.data.display()
    );
    let checkpointing = Checkpointing {
        run_dir: &out,
        save_every: args.run.save_every,
        resumed_from,
        options: &options,
        notes: &json!({}),
    };
    let reports = run_steps(&mut trainer, &sampler, &checkpointing, "pretrain")?;

    let model = trainer.into_model()?;
    save_model(&out, &model.config, &model.weights)?;
    tokenizer.save(&out)?;
    let (first, last) = (&reports[0], reports.last().expect("at least one step"));
    let summary = json!({
        "command": "pretrain",
        "preset": format!("{:?}", args.preset).to_lowercase(),
        "parameters": cfg.num_params(),
        "model": longlora::hf::config_to_json(&cfg),
        "train": config,
        "data": args.data.display().to_string(),
        "data_tokens": data_tokens,
        "tokenizer": tokenizer.source(),
        "first_step_loss": first.loss,
        "last_step_loss": last.loss,
        "tokens_per_s": last.tokens_per_s,
        "total_time_s": started.elapsed().as_secs_f64(),
        "peak_memory_mib": peak_memory_mib(),
        "resumed_from": checkpointing.resumed_from,
        "version": env!("CARGO_PKG_VERSION"),
    });
    let run_json = out.join("run.json");
    let text = serde_json::to_string_pretty(&summary).expect("a JSON value serialises");
    write_atomic(&run_json, text.as_bytes())?;
    println!(
        "pre-training finished in {:.1} s: loss {:.4} first step -> {:.4} last step, {:.0} tokens/s",
        started.elapsed().as_secs_f64(),
        first.loss,
        last.loss,
        last.tokens_per_s
    );
    println!(
        "  wrote {}: config.json, model.safetensors, tokenizer.json, metrics.jsonl, run.json",
        out.display()
    );
    Ok(())
}
