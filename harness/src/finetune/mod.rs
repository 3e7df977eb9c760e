//! `harness finetune`: LongLoRA context extension of a base model, in four steps: set up (plan,
//! data, base model, trainer), train, evaluate, write the outputs.

mod base;
mod outputs;
mod plan;
mod setup;

use std::path::PathBuf;
use std::time::Instant;

use clap::Args;
use longlora::model::TrainableSet;
use longlora::ops::attention::AttnMode;
use longlora::Result;

use crate::device_arg::DeviceArg;
use crate::run_dir::RunArgs;
use crate::signals;
use crate::train_args::TrainArgs;
use crate::training_loop::run_steps;

#[derive(Args, Debug)]
#[command(
    mut_arg("steps", |a| a.required(false).default_value("100")),
    mut_arg("batch_size", |a| a.required(false).default_value("1")),
    mut_arg("schedule", |a| a.required(false).default_value("constant")),
    mut_arg("weight_decay", |a| a.required(false).default_value("0")),
    mut_arg("lr", |a| a.help(
        "Peak learning rate. Default: 2e-5 (LongLoRA's) with --model, 1e-3 for the built-in tiny \
         model"
    )),
    mut_arg("warmup_steps", |a| a.help(
        "Linear warmup steps. Default: 20 (LongLoRA's) with --model, 5 for the built-in model"
    )),
    mut_arg("seed", |a| a.help(
        "Random seed: weights of the built-in model, LoRA init, data order"
    )),
)]
pub struct FinetuneArgs {
    /// Base model: a Hugging Face Llama directory (config.json + safetensors). Default: pre-train
    /// the built-in tiny byte-level model first (see --pretrain-steps).
    #[arg(long)]
    model: Option<PathBuf>,
    /// Training data: text (a .txt file or a directory of .txt files, tokenized with the model's
    /// tokenizer.json, or byte level for a byte-vocabulary model), a .bin token file from `harness
    /// tokenize` (no tokenizer needed), or SFT records (.json array or .jsonl of {instruction,
    /// input?, output}, one padded sequence each, only the answer scored). Default: the built-in
    /// synthetic long-range corpus.
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
    #[command(flatten)]
    train: TrainArgs,
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

impl FinetuneArgs {
    /// Whether the base model is the built-in one, pre-trained by this run.
    fn builtin_model(&self) -> bool {
        self.model.is_none()
    }
}

/// Runs the whole fine-tune and writes its outputs.
pub fn run(args: FinetuneArgs) -> Result<()> {
    let started = Instant::now();
    signals::watch();
    let mut run = setup::setup(&args)?;
    let reports = run_steps(
        &mut run.trainer,
        run.sampler.as_ref(),
        &run.checkpointing,
        "finetune",
    )?;
    let loss_after = run.heldout_loss(&args, run.plan.context)?;
    outputs::write(&args, &mut run, &reports, loss_after, started)
}
