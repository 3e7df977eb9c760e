//! `harness merge`: folds a fine-tune's adapter into its base model and writes a plain Hugging Face
//! model directory that `transformers` loads without `peft`.

use std::fs;
use std::path::{Path, PathBuf};

use clap::Args;
use longlora::fs::write_atomic;
use longlora::hf::peft::load_with_adapter;
use longlora::hf::save_model_sharded;
use longlora::model::lora::merge_lora;
use longlora::{Error, Result};

use crate::run_dir::prepare_output;

#[derive(Args, Debug)]
pub struct MergeArgs {
    /// The base model the adapter was trained on (a Hugging Face Llama directory).
    #[arg(long)]
    model: PathBuf,
    /// A fine-tune's output directory: adapter_config.json, adapter_model.safetensors, and
    /// trainable_params.safetensors and run.json when the run wrote them (any PEFT LoRA adapter
    /// of q/k/v/o_proj works).
    #[arg(long)]
    adapter: PathBuf,
    /// Directory for the merged model.
    #[arg(long)]
    out: PathBuf,
    /// max_position_embeddings of the merged model. Default: the run's context from run.json,
    /// else the base model's.
    #[arg(long)]
    context: Option<usize>,
    /// Linear RoPE interpolation factor written to config.json. Default: the run's from run.json,
    /// else the base model's.
    #[arg(long)]
    rope_factor: Option<f64>,
    /// Largest safetensors shard, e.g. 5GB, 500MB or a byte count; a larger model is split into
    /// shards with an index, as transformers does.
    #[arg(long, default_value = "5GB", value_parser = parse_size)]
    max_shard_size: usize,
    /// Allow writing into a non-empty output directory.
    #[arg(long)]
    overwrite: bool,
}

/// Byte counts with transformers' decimal units (5GB = 5·10⁹ bytes).
fn parse_size(text: &str) -> std::result::Result<usize, String> {
    let upper = text.trim().to_ascii_uppercase();
    let digits = upper.trim_end_matches(|c: char| c.is_ascii_alphabetic());
    let scale: usize = match &upper[digits.len()..] {
        "" | "B" => 1,
        "KB" => 1_000,
        "MB" => 1_000_000,
        "GB" => 1_000_000_000,
        unit => return Err(format!("unknown unit `{unit}` (use B, KB, MB or GB)")),
    };
    let value: f64 = digits
        .trim()
        .parse()
        .map_err(|_| format!("`{text}` is not a size like 5GB"))?;
    let bytes = value * scale as f64;
    if !(bytes >= 1.0 && bytes.is_finite()) {
        return Err(format!("`{text}` must be at least one byte"));
    }
    Ok(bytes as usize)
}

/// Files of a model directory that belong to its tokenizer.
fn is_tokenizer_file(name: &str) -> bool {
    name.starts_with("tokenizer")
        || matches!(
            name,
            "special_tokens_map.json" | "added_tokens.json" | "generation_config.json"
        )
}

fn copy_tokenizer(from: &Path, to: &Path) -> Result<Vec<String>> {
    let mut copied = Vec::new();
    for entry in fs::read_dir(from).map_err(|e| Error::io(from, e))? {
        let path = entry.map_err(|e| Error::io(from, e))?.path();
        let Some(name) = path.file_name().and_then(|n| n.to_str()) else {
            continue;
        };
        if path.is_file() && is_tokenizer_file(name) {
            let bytes = fs::read(&path).map_err(|e| Error::io(&path, e))?;
            write_atomic(&to.join(name), &bytes)?;
            copied.push(name.to_string());
        }
    }
    copied.sort();
    Ok(copied)
}

/// Merges and writes the model.
pub fn run(args: MergeArgs) -> Result<()> {
    let (model, extension) = load_with_adapter(&args.model, &args.adapter)?;
    let mut config = model.config;
    let mut weights = model.weights;
    if extension.is_none() && (args.context.is_none() || args.rope_factor.is_none()) {
        eprintln!(
            "note: {} has no run.json; the merged config keeps the base model's {} unless given",
            args.adapter.display(),
            match (args.context, args.rope_factor) {
                (None, None) => "max_position_embeddings and RoPE factor",
                (None, Some(_)) => "max_position_embeddings",
                _ => "RoPE factor",
            }
        );
    }
    if let Some(context) = args.context.or(extension.map(|e| e.context)) {
        config.max_position_embeddings = context;
    }
    if let Some(factor) = args.rope_factor {
        config.rope_scaling_factor = factor;
    }
    config.validate()?;
    prepare_output(&args.out, args.overwrite, "out")?;
    merge_lora(&mut weights);
    save_model_sharded(&args.out, &config, &weights, args.max_shard_size)?;
    let tokenizer = copy_tokenizer(&args.model, &args.out)?;
    println!(
        "merged {} into {}: wrote {} (max_position_embeddings {}, RoPE factor {}){}",
        args.adapter.display(),
        args.model.display(),
        args.out.display(),
        config.max_position_embeddings,
        config.rope_scaling_factor,
        if tokenizer.is_empty() {
            String::new()
        } else {
            format!(", copied {}", tokenizer.join(", "))
        }
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::parse_size;

    #[test]
    fn shard_sizes_use_decimal_units_and_refuse_nonsense() {
        assert_eq!(parse_size("5GB"), Ok(5_000_000_000));
        assert_eq!(parse_size("500mb"), Ok(500_000_000));
        assert_eq!(parse_size("1.5KB"), Ok(1_500));
        assert_eq!(parse_size("4096"), Ok(4096));
        for bad in ["5XB", "GB", "0", "-3MB", "lots"] {
            assert!(parse_size(bad).is_err(), "`{bad}` was accepted");
        }
    }
}
