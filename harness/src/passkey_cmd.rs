//! `harness passkey`: LongLoRA's passkey retrieval accuracy per prompt length (and per depth).

use std::path::PathBuf;

use clap::Args;
use longlora::data::tokenizer::Tokenizer;
use longlora::eval::passkey::{run_passkey, PasskeyPlan};
use longlora::ops::attention::{AttnMask, AttnMode};
use longlora::Result;
use serde_json::json;

use crate::device_arg::DeviceArg;
use crate::inference::{self, ModelSource};
use crate::progress::bar;

#[derive(Args, Debug)]
pub struct PasskeyArgs {
    /// A Hugging Face Llama directory (config.json + safetensors; linear RoPE scaling in config.json
    /// is honoured).
    #[arg(long)]
    model: PathBuf,
    /// A fine-tune's output directory to test on top of --model without merging: its LoRA adapter,
    /// trained embeddings and norms, and the RoPE factor recorded in its run.json.
    #[arg(long)]
    adapter: Option<PathBuf>,
    /// Prompt lengths in tokens, comma-separated; each prompt (with its answer) fills its length as
    /// closely as the tokenizer allows without exceeding it. Default: max_position_embeddings.
    #[arg(long, value_delimiter = ',')]
    lengths: Vec<usize>,
    /// Trials (random pass keys) per length, and per depth when --depths is given.
    #[arg(long, default_value_t = 10)]
    trials: usize,
    /// Fixed depths of the key in the filler (0 = start, 1 = end), comma-separated, each reported
    /// separately. Default: a uniformly random depth per trial, as LongLoRA's test draws it.
    #[arg(long, value_delimiter = ',')]
    depths: Vec<f64>,
    /// Seed of the pass keys and depths.
    #[arg(long, default_value_t = 42)]
    seed: u64,
    /// Override the linear RoPE interpolation factor from config.json.
    #[arg(long, visible_alias = "rope-scale")]
    rope_factor: Option<f64>,
    /// Attention: dense (full causal, the default: what inference uses), s2, s2-roll or s2-noshift.
    #[arg(long, default_value = "dense")]
    attn: AttnMode,
    /// With the s2 modes: the group size as a fraction of each prompt's length (rounded down to an
    /// even number of tokens, at least 2).
    #[arg(long, default_value_t = 0.25)]
    group_ratio: f64,
    /// Do not start prompts with the tokenizer's BOS token (Llama tokenizers add it; models trained
    /// on EOS-joined documents without BOS may do better without it).
    #[arg(long)]
    no_bos: bool,
    /// Where the model runs: auto (a CUDA GPU if present, else the CPU), cpu, cuda or emu (the CUDA
    /// kernels in the CPU emulator).
    #[arg(long, value_enum, default_value = "auto")]
    device: DeviceArg,
}

/// Runs the trials and prints one JSON object on stdout.
pub fn run(args: PasskeyArgs) -> Result<()> {
    let model = inference::load(&ModelSource {
        dir: Some(&args.model),
        adapter: args.adapter.as_deref(),
        rope_factor: args.rope_factor,
        seed: 0,
    })?;
    let vocab = model.config.vocab_size;
    let tokenizer = Tokenizer::from_model_dir(&args.model)?;
    let bos = tokenizer.bos_id().filter(|_| !args.no_bos);
    let encode = |text: &str| {
        let mut tokens: Vec<u32> = bos.into_iter().collect();
        tokens.extend(tokenizer.encode(text)?);
        Ok(tokens)
    };
    let plan = PasskeyPlan {
        lengths: if args.lengths.is_empty() {
            vec![model.config.max_position_embeddings]
        } else {
            args.lengths.clone()
        },
        trials: args.trials,
        depths: args.depths.clone(),
        seed: args.seed,
    };
    let rope_scaling_factor = model.config.rope_scaling_factor;
    let mut engine = inference::engine(args.device, model)?;
    let pb = bar(0, "passkey");
    // Rejects a ratio outside (0, 1] before any prompt is built, whatever the mode.
    AttnMask::from_ratio(AttnMode::Dense, args.group_ratio, 2)?;
    let mask_for = |len: usize| match args.attn {
        AttnMode::Dense => Ok(AttnMask::dense()),
        mode => AttnMask::new(
            mode,
            ((len as f64 * args.group_ratio) as usize / 2 * 2).max(2),
        ),
    };
    let results = run_passkey(
        &plan,
        vocab,
        &encode,
        &mut |tokens| {
            let mask = mask_for(tokens.len())?;
            engine.forward(tokens, 1, tokens.len(), &mask)?;
            engine.logits()
        },
        &mut |done, total| {
            pb.set_length(total as u64);
            pb.set_position(done as u64);
        },
    )?;
    pb.finish_and_clear();
    let report = json!({
        "model": args.model.display().to_string(),
        "adapter": args.adapter.as_ref().map(|a| a.display().to_string()),
        "tokenizer": tokenizer.source(),
        "bos": bos,
        "rope_scaling_factor": rope_scaling_factor,
        "attn": args.attn.to_string(),
        "group_ratio": (args.attn != AttnMode::Dense).then_some(args.group_ratio),
        "trials": args.trials,
        "seed": args.seed,
        "results": results,
    });
    println!("{}", serde_json::to_string(&report).expect("serialisable"));
    Ok(())
}
