//! `harness train-tokenizer`: a Llama-2-like BPE with byte fallback trained on text, written as a
//! tokenizer directory that `pretrain --tokenizer` and `tokenize --model` read.

use std::path::PathBuf;
use std::time::Instant;

use clap::Args;
use longlora::data::bpe_training::train_bpe_tokenizer;
use longlora::data::text::text_files;
use longlora::data::tokenizer::TOKENIZER_FILE;
use longlora::{Error, Result};

#[derive(Args, Debug)]
pub struct TrainTokenizerArgs {
    /// Training text: a .txt file, or a directory of .txt files (searched recursively), UTF-8.
    #[arg(long)]
    data: PathBuf,
    /// Tokens in the vocabulary: <unk>, <s>, </s>, the 256 byte tokens <0x00>..<0xFF>, then
    /// characters and merges. Must exceed 259.
    #[arg(long)]
    vocab_size: usize,
    /// The directory to write tokenizer.json, tokenizer_config.json and special_tokens_map.json
    /// into.
    #[arg(long)]
    out: PathBuf,
    /// Replace a tokenizer.json already in --out.
    #[arg(long)]
    overwrite: bool,
}

/// Trains, writes the tokenizer directory and prints its vocabulary size and the time taken.
pub fn run(args: TrainTokenizerArgs) -> Result<()> {
    let started = Instant::now();
    let existing = args.out.join(TOKENIZER_FILE);
    if existing.exists() && !args.overwrite {
        return Err(Error::option(
            "out",
            format!(
                "{} already exists; pass --overwrite to replace it",
                existing.display()
            ),
        ));
    }
    let files = text_files(&args.data)?;
    let tokenizer =
        train_bpe_tokenizer(&files, args.vocab_size, &args.out).map_err(|e| match e {
            Error::InvalidOption { message, .. } => Error::option("vocab-size", message),
            e => e,
        })?;
    println!(
        "trained a {}-token BPE with byte fallback on {} files in {:.1} s; wrote {}",
        tokenizer.vocab_size(),
        files.len(),
        started.elapsed().as_secs_f64(),
        args.out.display()
    );
    Ok(())
}
