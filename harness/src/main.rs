//! `harness`: the longlora command line. Fine-tunes a Llama to a longer context with LongLoRA
//! (S²-Attn, LoRA + trainable embeddings and norms, linear RoPE interpolation) and evaluates
//! perplexity, on the CPU or on our CUDA kernels (`--device`).

mod builtin;
mod device_arg;
mod error_report;
mod eval_cmd;
mod finetune;
mod inference;
mod merge;
mod passkey_cmd;
mod passkey_corpus;
mod plot;
mod pretrain;
mod progress;
mod run_dir;
mod signals;
mod tokenize;
mod train_args;
mod train_tokenizer;
mod training_data;
mod training_loop;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "harness", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Extend a model's context with LongLoRA. With no options: pre-train a built-in tiny byte-level
    /// Llama on a synthetic long-range corpus at context 256, then extend it to 1024.
    Finetune(finetune::FinetuneArgs),
    /// Perplexity over sliding windows, as LongLoRA's evaluation computes it; prints one JSON object.
    Eval(eval_cmd::EvalArgs),
    /// Passkey retrieval (LongLoRA's test from Landmark Attention): a key hidden in filler text at
    /// several prompt lengths; prints the accuracy per length as one JSON object.
    Passkey(passkey_cmd::PasskeyArgs),
    /// Train a Llama from scratch (all parameters) and write a Hugging Face model directory with
    /// its tokenizer: the base models to extend.
    Pretrain(pretrain::PretrainArgs),
    /// Tokenize text documents into a token file (u16 or u32 little-endian, documents joined by
    /// EOS) with a JSON side file.
    Tokenize(tokenize::TokenizeArgs),
    /// Fold a fine-tune's LoRA adapter, trained embeddings and norms into the base model and write
    /// a Hugging Face directory with the extended context in config.json.
    Merge(merge::MergeArgs),
    /// Draw PNG charts: training loss, perplexity against context, passkey accuracy against
    /// length, and the LongLoRA paper's FLOPs figure.
    Plot(plot::PlotArgs),
    /// Train a Llama-2-like BPE tokenizer with byte fallback on text, for `pretrain --tokenizer`.
    TrainTokenizer(train_tokenizer::TrainTokenizerArgs),
    /// Write passkey-style training documents (the test's template, keys from another random
    /// stream than the test's), one .txt each, to mix into pretrain or finetune data.
    PasskeyCorpus(passkey_corpus::PasskeyCorpusArgs),
}

/// Large tensors on cache lines and 2 MiB pages (see `longlora::allocator`).
#[global_allocator]
static ALLOCATOR: longlora::allocator::LargeBlocks = longlora::allocator::LargeBlocks;

fn main() -> ExitCode {
    let cli = Cli::parse();
    longlora::allocator::retain_freed_memory();
    let result = match cli.command {
        Command::Finetune(args) => finetune::run(args),
        Command::Eval(args) => eval_cmd::run(args),
        Command::Passkey(args) => passkey_cmd::run(args),
        Command::Pretrain(args) => pretrain::run(args),
        Command::Tokenize(args) => tokenize::run(args),
        Command::Merge(args) => merge::run(args),
        Command::Plot(args) => plot::run(args),
        Command::TrainTokenizer(args) => train_tokenizer::run(args),
        Command::PasskeyCorpus(args) => passkey_corpus::run(args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => error_report::report(&e),
    }
}
