//! `harness eval`: sliding-window perplexity (LongLoRA's evaluation).

use std::path::PathBuf;

use clap::Args;
use longlora::data::token_file::TokenFile;
use longlora::data::tokenizer::Tokenizer;
use longlora::eval::perplexity;
use longlora::ops::attention::{AttnMask, AttnMode};
use longlora::{Error, Result};

use crate::device_arg::DeviceArg;
use crate::inference::{self, ModelSource};
use crate::progress::bar;
use crate::training_data::load_tokens;

#[derive(Args, Debug)]
pub struct EvalArgs {
    /// A Hugging Face Llama directory (config.json + safetensors; linear RoPE scaling in config.json
    /// is honoured). Default: the built-in tiny architecture with random weights (a smoke test).
    #[arg(long)]
    model: Option<PathBuf>,
    /// A fine-tune's output directory to evaluate on top of --model without merging: its LoRA
    /// adapter, trained embeddings and norms, and the RoPE factor recorded in its run.json.
    #[arg(long, requires = "model")]
    adapter: Option<PathBuf>,
    /// Token ids as little-endian u16 (LongLoRA's eval format), or as the side file FILE.json
    /// written by `harness tokenize` says (u16 or u32), memory-mapped.
    #[arg(long, conflicts_with = "data")]
    tokens: Option<PathBuf>,
    /// Text (a .txt file or a directory of .txt files, tokenized with the model's tokenizer.json, or
    /// byte level for a byte-vocabulary model) or a .bin token file.
    #[arg(long, required_unless_present = "tokens")]
    data: Option<PathBuf>,
    /// Tokens the model reads per window; each window has context + 1 tokens. Required: configs
    /// disagree on whether max_position_embeddings is the original or the extended context.
    #[arg(long)]
    context: usize,
    /// Distance between window starts.
    #[arg(long, default_value_t = 256)]
    stride: usize,
    /// Attention: dense (full causal, the default for evaluation), s2, s2-roll or s2-noshift.
    #[arg(long, default_value = "dense")]
    attn: AttnMode,
    /// S²-Attn group size as a fraction of the context (with the s2 modes).
    #[arg(long, default_value_t = 0.25)]
    group_ratio: f64,
    /// Override the linear RoPE interpolation factor from config.json (and from the run of
    /// --adapter).
    #[arg(long, visible_alias = "rope-scale")]
    rope_factor: Option<f64>,
    /// Evaluate only the first N windows.
    #[arg(long)]
    max_windows: Option<usize>,
    /// Seed of the built-in model's random weights (without --model).
    #[arg(long, default_value_t = 42)]
    seed: u64,
    /// Where the model runs: auto (a CUDA GPU if present, else the CPU), cpu, cuda or emu (the CUDA
    /// kernels in the CPU emulator).
    #[arg(long, value_enum, default_value = "auto")]
    device: DeviceArg,
}

/// Loads the model, evaluates, and prints one JSON object on stdout.
pub fn run(args: EvalArgs) -> Result<()> {
    let model = inference::load(&ModelSource {
        dir: args.model.as_deref(),
        adapter: args.adapter.as_deref(),
        rope_factor: args.rope_factor,
        seed: args.seed,
    })?;
    let context = args.context;
    let mask = AttnMask::from_ratio(args.attn, args.group_ratio, context)?;
    let vocab = model.config.vocab_size;
    let (file, text) = match (&args.tokens, &args.data) {
        (Some(p), _) => (Some(TokenFile::open(p)?), Vec::new()),
        (None, Some(p)) => {
            let tokenizer = match &args.model {
                Some(dir) => Tokenizer::from_model_dir(dir)?,
                None => Tokenizer::builtin(),
            };
            (None, load_tokens(p, Some(&tokenizer), vocab)?)
        }
        (None, None) => return Err(Error::option("tokens", "give --tokens FILE or --data PATH")),
    };
    let len = file.as_ref().map_or(text.len(), |f| f.len());
    let len = match args.max_windows {
        Some(n) => len.min(n.saturating_sub(1) * args.stride + context + 1),
        None => len,
    };
    let mut engine = inference::engine(args.device, model)?;
    let pb = bar(0, "eval");
    let result = perplexity(
        &mut engine,
        len,
        |s, n| match &file {
            Some(f) => f.window(s, n, vocab),
            None => Ok(text[s..s + n].to_vec()),
        },
        context,
        args.stride,
        &mask,
        |done, total| {
            pb.set_length(total as u64);
            pb.set_position(done as u64);
        },
    )?;
    pb.finish_and_clear();
    println!("{}", serde_json::to_string(&result).expect("serialisable"));
    Ok(())
}
