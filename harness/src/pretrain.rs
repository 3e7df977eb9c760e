//! `harness pretrain`: a Llama trained from scratch (all parameters, dense attention), written as a
//! Hugging Face model directory: the base models that LongLoRA then extends.

use std::path::PathBuf;
use std::time::Instant;

use clap::{Args, ValueEnum};
use longlora::backend::Engine;
use longlora::data::tokenizer::Tokenizer;
use longlora::data::WindowSampler;
use longlora::hf::save_model;
use longlora::model::{Llama, LlamaConfig, LlamaWeights, TrainableSet};
use longlora::ops::attention::AttnMode;
use longlora::rng::Rng;
use longlora::train::checkpoint::RunOptions;
use longlora::train::{RunCommand, RunRecord, RUN_FILE};
use longlora::Result;
use serde_json::json;

use crate::device_arg::{self, DeviceArg, Workload};
use crate::run_dir::{latest_checkpoint, no_checkpoint, RunArgs};
use crate::signals;
use crate::train_args::{RunShape, TrainArgs};
use crate::training_data::{load_tokens, TokenizerSource};
use crate::training_loop::{run_record, run_steps, start_run};

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
#[command(
    mut_arg("steps", |a| a.required(false).default_value("1000")),
    mut_arg("batch_size", |a| a.required(false).default_value("8")),
    mut_arg("lr", |a| a.default_value("0.001")),
    mut_arg("warmup_steps", |a| a.help("Linear warmup steps. Default: a tenth of --steps")),
    mut_arg("schedule", |a| a.required(false).default_value("cosine")),
    mut_arg("weight_decay", |a| a.required(false).default_value("0.1")),
)]
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
    #[command(flatten)]
    train: TrainArgs,
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

/// The options that define the run besides its training configuration: a resume must repeat
/// them.
fn run_options(args: &PretrainArgs, cfg: &LlamaConfig, data_tokens: usize) -> RunOptions {
    vec![
        ("model", longlora::hf::config_to_json(cfg)),
        ("data", json!({"path": args.data, "tokens": data_tokens})),
    ]
}

/// Trains and writes config.json, model.safetensors, the tokenizer, metrics.jsonl and run.json.
pub fn run(args: PretrainArgs) -> Result<()> {
    let started = Instant::now();
    signals::watch();
    let tokenizer = args.tokenizer.load()?;
    let cfg = model_config(&args, &tokenizer)?;
    let weights = LlamaWeights::random(&cfg, 0.02, &mut Rng::derive(args.train.seed, 1));
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
    let config = args.train.config(RunShape {
        seq_len: args.context,
        attn: AttnMode::Dense,
        group_ratio: 1.0,
        trainable: TrainableSet::Full,
        default_lr: 1e-3,
        default_warmup_steps: args.train.steps / 10,
    });
    let tokens = load_tokens(&args.data, Some(&tokenizer), cfg.vocab_size)?;
    let data_tokens = tokens.len();
    let sampler = WindowSampler::new(tokens, args.context)?;
    let options = run_options(&args, &cfg, data_tokens);
    let run = args.run.open("pretrain")?;
    let resume = match &args.run.resume {
        Some(dir) => Some(latest_checkpoint(dir)?.ok_or_else(|| no_checkpoint(dir))?),
        None => None,
    };
    let (mut trainer, checkpointing) =
        start_run(&args.run, run.path.clone(), options, config, engine, resume)?;
    describe(&args, &cfg, data_tokens);
    let reports = run_steps(&mut trainer, &sampler, &checkpointing, "pretrain")?;
    let model = trainer.model()?;
    save_model(&run.path, &model.config, &model.weights)?;
    tokenizer.save(&run.path)?;
    let record = RunRecord {
        tokenizer: Some(tokenizer.source()),
        data: Some(args.data.display().to_string()),
        data_tokens: Some(data_tokens),
        preset: Some(format!("{:?}", args.preset).to_lowercase()),
        model: Some(longlora::hf::config_to_json(&cfg)),
        ..run_record(
            RunCommand::Pretrain,
            &trainer,
            &checkpointing,
            &reports,
            started,
        )
    };
    record.save(&run.path.join(RUN_FILE))?;
    println!(
        "pre-training finished in {:.1} s: loss {:.4} first step -> {:.4} last step, {:.0} tokens/s",
        record.total_time_s, record.first_step_loss, record.last_step_loss, record.tokens_per_s
    );
    println!(
        "  wrote {}: config.json, model.safetensors, tokenizer.json, metrics.jsonl, run.json",
        run.path.display()
    );
    Ok(())
}

fn describe(args: &PretrainArgs, cfg: &LlamaConfig, data_tokens: usize) {
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
}
