//! `harness`: the longlora command line. Fine-tunes a Llama to a longer context with LongLoRA
//! (S²-Attn, LoRA + trainable embeddings and norms, linear RoPE interpolation) and evaluates
//! perplexity, on the CPU or on our CUDA kernels (`--device`).

mod builtin;
mod device_arg;
mod eval_cmd;
mod finetune;
mod progress;

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
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    longlora::memory::retain_freed_memory();
    let result = match cli.command {
        Command::Finetune(args) => finetune::run(args),
        Command::Eval(args) => eval_cmd::run(args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
